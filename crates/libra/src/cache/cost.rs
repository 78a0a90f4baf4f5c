//! ELORA's unified cost model (HPCA 2026, Eq. 3-6), as pure functions plus the sliding-window
//! statistics they need.
//!
//! Choices the paper leaves open, made here:
//! - `t_i` (time since last use) is in units of `CacheConfig::value_time_unit_us` of the engine
//!   clock, 1 s by default (so `1 - sigmoid(t)` shrinks a block's value about e-fold per idle
//!   second). `libra` ranks by last use instead (see `PolicyKind::Libra`).
//! - Adapter popularity `prob_i` is adapter i's share of the requests that arrived in the last
//!   `popularity_window_us` (default 30 s); `BS` is the mean batch size reported to `step` over
//!   the last 5 s.
//! - `Now_LoRA_i` is the number of GPU-resident adapters after the move of node i: one fewer
//!   than now when an adapter leaves, one more when it arrives, unchanged for a KV block.
//! - `cost_i` is node i's host-link transfer time in microseconds: bytes / link bandwidth.
use std::cell::Cell;
use std::collections::{HashMap, VecDeque};

/// Eq. 3: the number of distinct adapters a batch of `batch_size` requests is expected to need.
pub fn low_lora<I: IntoIterator<Item = f64>>(probabilities: I, batch_size: f64) -> f64 {
    probabilities.into_iter().map(|p| 1.0 - (1.0 - p.clamp(0.0, 1.0)).powf(batch_size.max(0.0))).sum()
}

/// Eq. 4: `min(1, Now_LoRA / Low_lora)`; 1 when no adapter is expected.
pub fn lora_eval(now_lora: f64, low_lora: f64) -> f64 {
    if low_lora <= 0.0 {
        1.0
    } else {
        (now_lora / low_lora).min(1.0)
    }
}

pub fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Eq. 5: `cost x visits x (1 - sigmoid(t))`.
pub fn retain_eval(cost_us: f64, visits: f64, since_last_use_s: f64) -> f64 {
    cost_us * visits * (1.0 - sigmoid(since_last_use_s))
}

/// Eq. 6.
pub fn eval(lora_eval: f64, retain_eval: f64) -> f64 {
    lora_eval * retain_eval
}

/// Sliding-window statistics the cost model reads: adapter popularity and recent batch sizes.
#[derive(Debug, Clone)]
pub struct LoadStats {
    popularity_window_us: u64,
    batch_window_us: u64,
    arrivals: VecDeque<(u64, u32)>,
    per_adapter: HashMap<u32, u32>,
    batches: VecDeque<(u64, u32)>,
    batch_sum: u64,
    /// Eq. 3 for the window as it stands: every victim choice reads it, and computing it takes
    /// a power per adapter. Cleared whenever the window changes.
    low_lora_memo: Cell<Option<f64>>,
}

impl LoadStats {
    pub fn new(popularity_window_us: u64, batch_window_us: u64) -> Self {
        LoadStats {
            popularity_window_us,
            batch_window_us,
            arrivals: VecDeque::new(),
            per_adapter: HashMap::new(),
            batches: VecDeque::new(),
            batch_sum: 0,
            low_lora_memo: Cell::new(None),
        }
    }

    pub fn record_request(&mut self, adapter_slot: u32, now: u64) {
        self.low_lora_memo.set(None);
        self.arrivals.push_back((now, adapter_slot));
        *self.per_adapter.entry(adapter_slot).or_insert(0) += 1;
        self.expire(now);
    }

    pub fn record_batch(&mut self, batch_size: u32, now: u64) {
        self.low_lora_memo.set(None);
        self.batches.push_back((now, batch_size));
        self.batch_sum += batch_size as u64;
        self.expire(now);
    }

    pub fn forget_adapter(&mut self, adapter_slot: u32) {
        self.low_lora_memo.set(None);
        self.arrivals.retain(|&(_, a)| a != adapter_slot);
        self.per_adapter.remove(&adapter_slot);
    }

    fn expire(&mut self, now: u64) {
        while let Some(&(t, a)) = self.arrivals.front() {
            if now.saturating_sub(t) <= self.popularity_window_us {
                break;
            }
            self.arrivals.pop_front();
            if let Some(c) = self.per_adapter.get_mut(&a) {
                *c -= 1;
                if *c == 0 {
                    self.per_adapter.remove(&a);
                }
            }
        }
        while let Some(&(t, b)) = self.batches.front() {
            if now.saturating_sub(t) <= self.batch_window_us {
                break;
            }
            self.batches.pop_front();
            self.batch_sum -= b as u64;
        }
    }

    /// Mean batch size over the window (1 when nothing was reported yet).
    pub fn mean_batch(&self) -> f64 {
        if self.batches.is_empty() {
            1.0
        } else {
            self.batch_sum as f64 / self.batches.len() as f64
        }
    }

    /// Adapter's share of recent requests.
    pub fn probability(&self, adapter_slot: u32) -> f64 {
        let total = self.arrivals.len();
        if total == 0 {
            return 0.0;
        }
        self.per_adapter.get(&adapter_slot).copied().unwrap_or(0) as f64 / total as f64
    }

    /// Eq. 3 over the current window.
    pub fn low_lora(&self) -> f64 {
        if let Some(v) = self.low_lora_memo.get() {
            return v;
        }
        let total = self.arrivals.len() as f64;
        let v = if total == 0.0 {
            0.0
        } else {
            // Sorted so the floating-point sum does not depend on hash-map order.
            let mut counts: Vec<u32> = self.per_adapter.values().copied().collect();
            counts.sort_unstable();
            low_lora(counts.into_iter().map(|c| c as f64 / total), self.mean_batch())
        };
        self.low_lora_memo.set(Some(v));
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9 * b.abs().max(1.0)
    }

    #[test]
    fn equations_match_hand_values() {
        // Two adapters at 0.5 each, batch of 2: 2 x (1 - 0.25) = 1.5.
        assert!(close(low_lora([0.5, 0.5], 2.0), 1.5));
        // One adapter with all requests: exactly 1 whatever the batch.
        assert!(close(low_lora([1.0], 7.0), 1.0));
        assert!(close(lora_eval(1.0, 1.5), 2.0 / 3.0));
        assert!(close(lora_eval(3.0, 1.5), 1.0));
        assert!(close(lora_eval(0.0, 0.0), 1.0));
        // sigmoid(0) = 0.5: a block used just now keeps half its cost x visits.
        assert!(close(retain_eval(100.0, 4.0, 0.0), 200.0));
        // t = ln 3 -> sigmoid = 0.75 -> 1 - 0.75 = 0.25.
        assert!(close(retain_eval(100.0, 4.0, 3f64.ln()), 100.0));
        assert!(close(eval(0.5, 100.0), 50.0));
    }

    #[test]
    fn windows_expire() {
        let mut s = LoadStats::new(10, 5);
        s.record_request(0, 0);
        s.record_request(1, 1);
        s.record_request(1, 2);
        assert!(close(s.probability(1), 2.0 / 3.0));
        s.record_batch(4, 2);
        s.record_batch(2, 3);
        assert!(close(s.mean_batch(), 3.0));
        s.record_request(2, 12); // expires t=0 and t=1 arrivals
        assert!(close(s.probability(0), 0.0));
        assert!(close(s.probability(1), 0.5));
        s.record_batch(8, 12); // expires both earlier batches
        assert!(close(s.mean_batch(), 8.0));
        // Low_lora for {0.5, 0.5} at BS = 8: 2 x (1 - 0.5^8).
        assert!(close(s.low_lora(), 2.0 * (1.0 - 0.5f64.powi(8))));
    }

    /// The remembered Eq. 3 follows every change of the window.
    #[test]
    fn low_lora_follows_the_window() {
        let mut l = LoadStats::new(1_000, 1_000);
        assert_eq!(l.low_lora(), 0.0);
        l.record_request(0, 10);
        l.record_request(1, 20);
        assert!(close(l.low_lora(), low_lora([0.5, 0.5], 1.0)));
        l.record_batch(4, 30);
        assert!(close(l.low_lora(), low_lora([0.5, 0.5], 4.0)));
        l.record_request(1, 40);
        assert!(close(l.low_lora(), low_lora([1.0 / 3.0, 2.0 / 3.0], 4.0)));
        l.forget_adapter(1);
        assert!(close(l.low_lora(), low_lora([1.0], 4.0)));
        // Everything older than the window expires.
        l.record_batch(2, 5_000);
        assert_eq!(l.low_lora(), 0.0);
    }
}
