//! The policies under test and how each is configured: libra's own, the peers a user would
//! deploy instead (each following the documented behaviour of the real project), and the
//! clairvoyant bound. What a peer does differently lives in the library's `PolicyKind`, in the
//! cache configuration below, or (S-LoRA's admission) in the engine's scheduler.
use libra::cache::{CacheConfig, PolicyKind};

/// A policy under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SimPolicy {
    Lib(PolicyKind),
    /// ELoRA as released by its authors (a vLLM 0.4 fork): idle time is scaled by 1e-13 per
    /// second, so `1 - sigmoid(t)` is 0.5 for any age and the order is visits x size, recency
    /// breaking ties. Run as `elora` with the longest time unit the cache accepts (2^40 us, 12.7
    /// days): below some days of idle time and 1,000 visits the order is the same.
    EloraAuthors,
    Oracle,
    /// The oracle without knowing which blocks are never read again: it knows the order of
    /// next uses, with "never" as later than every use, so it copies to the host every block
    /// it evicts, as an online policy must. An ablation of the bound, run only on request.
    OracleCopies,
    /// `libra` ranking GPU eviction by the observed hit density by age instead of ELoRA's
    /// value (`CacheConfig::rank_by_hit_density`), an ablation of the ranking, run only on
    /// request.
    LibraDensity,
}

/// Time unit of `elora-authors`: the cache's largest.
pub const AUTHORS_TIME_UNIT_US: u64 = 1 << 40;

/// SGLang's `--hicache-ratio` default: the host KV pool is twice the device KV pool
/// (`python/sglang/srt/server_args.py`; HiCache design document).
pub const HICACHE_RATIO: f64 = 2.0;

impl SimPolicy {
    pub fn name(self) -> &'static str {
        match self {
            SimPolicy::Lib(k) => k.name(),
            SimPolicy::EloraAuthors => "elora-authors",
            SimPolicy::Oracle => "oracle",
            SimPolicy::OracleCopies => "oracle-copies",
            SimPolicy::LibraDensity => "libra-density",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "oracle" => Some(SimPolicy::Oracle),
            "oracle-copies" => Some(SimPolicy::OracleCopies),
            "libra-density" => Some(SimPolicy::LibraDensity),
            "elora-authors" => Some(SimPolicy::EloraAuthors),
            _ => PolicyKind::parse(s).map(SimPolicy::Lib),
        }
    }
    pub const ALL: [SimPolicy; 9] = [
        SimPolicy::Lib(PolicyKind::Vllm),
        SimPolicy::Lib(PolicyKind::VllmOffload),
        SimPolicy::Lib(PolicyKind::HiCache),
        SimPolicy::Lib(PolicyKind::Slora),
        SimPolicy::Lib(PolicyKind::Lru),
        SimPolicy::Lib(PolicyKind::Elora),
        SimPolicy::EloraAuthors,
        SimPolicy::Lib(PolicyKind::Libra),
        SimPolicy::Oracle,
    ];
    /// Policies that may be run by name besides `ALL`.
    pub const ABLATIONS: [SimPolicy; 2] = [SimPolicy::OracleCopies, SimPolicy::LibraDensity];
    /// Whether the policy places blocks with the workload's future (the oracle and its
    /// ablation); such a policy gets no hints from the engine.
    pub fn knows_the_future(self) -> bool {
        matches!(self, SimPolicy::Oracle | SimPolicy::OracleCopies)
    }
    /// The library policy that runs underneath. The oracle places blocks itself on top of
    /// `libra`'s tiers, so it also gets `libra`'s recompute-or-load (a host run cheaper to
    /// recompute than to load is recomputed, and gets no host copy).
    pub fn kind(self) -> PolicyKind {
        match self {
            SimPolicy::Lib(k) => k,
            SimPolicy::EloraAuthors => PolicyKind::Elora,
            SimPolicy::Oracle | SimPolicy::OracleCopies | SimPolicy::LibraDensity => PolicyKind::Libra,
        }
    }
    /// The policy's adjustments to the cache configuration.
    pub fn configure(self, cfg: &mut CacheConfig) {
        cfg.policy = self.kind();
        if self == SimPolicy::EloraAuthors {
            cfg.value_time_unit_us = AUTHORS_TIME_UNIT_US;
        }
        cfg.rank_by_hit_density = self == SimPolicy::LibraDensity;
    }
    /// Whether the policy loads adapters layer by layer when the engine registers them so
    /// (`EngineConfig::layered_adapters`): `libra`'s mechanism, which the oracle gets too. The
    /// peers load an adapter whole before its request runs, as vLLM's and SGLang's LoRA
    /// managers do, and `lru` and `elora` are libra's tree without libra's own mechanisms.
    pub fn layered_adapters(self) -> bool {
        matches!(self, SimPolicy::Lib(PolicyKind::Libra) | SimPolicy::LibraDensity) || self.knows_the_future()
    }
    /// Host tier blocks the policy uses out of `available`: `hicache` sizes its host pool at
    /// `HICACHE_RATIO` times its device KV pool (the KV region of the split), as SGLang does by
    /// default; the others use the whole host tier.
    pub fn host_blocks(self, available: u32, gpu_blocks: u32, adapter_fraction: f64) -> u32 {
        if self != SimPolicy::Lib(PolicyKind::HiCache) {
            return available;
        }
        // The split as `CacheCore` draws it: the adapter region's floor, at least one block.
        let adapter = ((gpu_blocks as f64 * adapter_fraction).floor() as u32).max(1);
        let kv = gpu_blocks.saturating_sub(adapter) as f64;
        available.min((kv * HICACHE_RATIO).floor() as u32)
    }
    /// Whether the engine admits as S-LoRA's scheduler does (`conservative_admits`).
    pub fn conservative_admission(self) -> bool {
        self == SimPolicy::Lib(PolicyKind::Slora)
    }
}

/// S-LoRA's admission check (`ReqQueue._can_add_new_req` in `slora/server/router/req_queue.py`
/// of the S-LoRA repository): with `seqs` the (tokens held, output tokens still to come) of the
/// running sequences and the candidate, sorted by tokens to come, descending, the pool must hold
/// `max_i (left_i x (i + 1) + sum_{j <= i} held_j)` tokens, the peak if every sequence runs to
/// its maximum output, plus the adapters of the batch. S-LoRA's benchmarks set each request's
/// maximum output to its real output length, and so does the engine. S-LoRA pages one token at
/// a time; with `block_tokens`-token blocks each sequence may leave one block partly empty.
pub fn conservative_admits(
    seqs: &mut [(u64, u64)],
    pool_tokens: u64,
    adapter_tokens: u64,
    block_tokens: u64,
) -> bool {
    seqs.sort_by_key(|&(_, left)| std::cmp::Reverse(left));
    let mut cum = 0u64;
    let mut need = 0u64;
    for (i, &(held, left)) in seqs.iter().enumerate() {
        cum += held;
        need = need.max(left * (i as u64 + 1) + cum);
    }
    need + adapter_tokens + seqs.len() as u64 * block_tokens.saturating_sub(1) < pool_tokens
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conservative_admission_reserves_the_peak() {
        // Two sequences: 100 held / 50 to come, 10 held / 200 to come. Sorted: (10, 200),
        // (100, 50): peaks 200 + 10 = 210 and 50 x 2 + 110 = 210.
        let mut s = [(100, 50), (10, 200)];
        assert!(conservative_admits(&mut s, 211, 0, 1));
        assert!(!conservative_admits(&mut s, 210, 0, 1));
        assert!(!conservative_admits(&mut s, 220, 10, 1));
        // 16-token blocks: 15 tokens of slack per sequence.
        assert!(!conservative_admits(&mut s, 211, 0, 16));
        assert!(conservative_admits(&mut s, 241, 0, 16));
        for p in SimPolicy::ALL {
            assert_eq!(SimPolicy::parse(p.name()), Some(p));
        }
    }
}
