//! Cache configuration shared by the Rust API and the C ABI.
use super::policy::PolicyKind;
use crate::error::{Error, Result};

/// Everything the core needs besides the backend's geometry.
#[derive(Debug, Clone)]
pub struct CacheConfig {
    /// Tokens per KV block (vLLM and ELORA use 16).
    pub block_tokens: u32,
    pub policy: PolicyKind,
    /// Swap out above `swap_out_high` GPU use, down to `swap_out_low`.
    pub swap_out_high: f64,
    pub swap_out_low: f64,
    /// Prefetch below `swap_in_idle` GPU use, up to `swap_in_target`.
    pub swap_in_idle: f64,
    pub swap_in_target: f64,
    /// Prune the host tier above `host_high`, down to `host_low`.
    pub host_high: f64,
    pub host_low: f64,
    /// vLLM baseline: share of GPU blocks reserved for adapters (the rest holds KV).
    pub vllm_adapter_fraction: f64,
    /// Key of the prefix hash. Keep it secret and shared by every instance that must agree on
    /// block hashes (tensor-parallel ranks, a cluster router).
    pub hash_key: (u64, u64),
    /// Host-link bandwidth in bytes per microsecond (cost of a move; PCIe 5.0 x16 ~ 50,000).
    pub link_bytes_per_us: f64,
    /// Prefill throughput in tokens per microsecond, 0 when unknown (recompute-or-load hint).
    pub prefill_tokens_per_us: f64,
    /// Adapter popularity window, microseconds.
    pub popularity_window_us: u64,
    /// Unit of `t` in Eq. 5's `1 - sigmoid(t)`, microseconds: a block's retention value decays
    /// by about e per unit of idle time (`elora`). 0 picks the default, 1 s.
    pub value_time_unit_us: u64,
    /// Longest a blocking allocation waits for each copy to the host in flight (swap-outs,
    /// write-through), microseconds. Copies to the GPU are never waited for.
    pub swap_wait_us: u64,
    /// Least engine time between two prefetch passes, microseconds (a pass scans the tree);
    /// also between two write-through passes.
    pub prefetch_interval_us: u64,
    /// Most blocks one write-through pass copies to the host ahead of their swap-out (policies
    /// that write through: `libra`); 0 disables write-through.
    pub write_through_blocks: u32,
    /// Keep a log of residency changes for `drain_events`.
    pub events: bool,
    /// Most events kept before the oldest are dropped (and counted).
    pub event_capacity: usize,
    /// Segments per layer group of a swap-in: a swap-in completes group by group (group g holds
    /// segments g x n .. (g + 1) x n), so with segments ordered by layer an engine can start
    /// prefill when the first layers' KV are in. One K and one V segment per layer: 2 x layers
    /// per group. 0: one group holding every segment.
    pub segments_per_group: u32,
    /// Adapter weights are registered layer by layer, each layer's the same size: an upload
    /// then lands in the swap-ins' layer groups (group g of G is bytes g x len / G ..
    /// (g + 1) x len / G), and a request's layer L waits only for its adapter's group of L.
    /// False: an adapter upload lands whole, before any layer may read it.
    pub layered_adapters: bool,
    /// `libra` only: rank GPU eviction by the observed hit density by age (see `reuse`)
    /// instead of ELoRA's value. Measured slower at every scenario's highest load once
    /// swap-ins keep their host copies; kept for comparison.
    pub rank_by_hit_density: bool,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            block_tokens: 16,
            policy: PolicyKind::Elora,
            swap_out_high: 0.8,
            swap_out_low: 0.7,
            swap_in_idle: 0.6,
            swap_in_target: 0.7,
            host_high: 0.8,
            host_low: 0.7,
            vllm_adapter_fraction: 0.2,
            hash_key: (0x6c69_6272_612d_6b31, 0x7072_6566_6978_2d31),
            link_bytes_per_us: 50_000.0,
            prefill_tokens_per_us: 0.0,
            popularity_window_us: 30_000_000,
            value_time_unit_us: 0,
            swap_wait_us: 100_000,
            prefetch_interval_us: 50_000,
            write_through_blocks: 1024,
            events: false,
            event_capacity: 1 << 16,
            segments_per_group: 0,
            layered_adapters: false,
            rank_by_hit_density: false,
        }
    }
}

/// Largest token count one call accepts: bounds work done for untrusted input.
pub const MAX_TOKENS_PER_CALL: usize = 1 << 24;

/// Most blocks in one tier: bounds the per-block metadata a config can make the cache allocate
/// (about 6 bytes per block, plus the invariant checker's scratch) to well under a gigabyte.
pub const MAX_BLOCKS_PER_TIER: u32 = 1 << 26;

/// Most requests open at once: each holds a slot, so a caller that never releases is stopped.
pub const MAX_OPEN_REQUESTS: u32 = 1 << 22;

/// Most adapters registered at once.
pub const MAX_ADAPTERS: u32 = 1 << 20;

impl CacheConfig {
    /// Whether GPU eviction ranks by the observed hit density by age (see `cache::reuse`).
    pub fn ranks_by_density(&self) -> bool {
        self.policy == PolicyKind::Libra && self.rank_by_hit_density
    }

    /// Whether KV blocks are ranked by ELoRA's value (Eq. 6): `elora`, and `libra` unless it
    /// ranks by hit density.
    pub fn uses_cost_model(&self) -> bool {
        match self.policy {
            PolicyKind::Elora => true,
            PolicyKind::Libra => !self.rank_by_hit_density,
            _ => false,
        }
    }

    /// The unit of idle time in the cost model, after applying the policy default.
    pub fn time_unit_us(&self) -> f64 {
        match self.value_time_unit_us {
            0 => 1_000_000.0,
            u => u as f64,
        }
    }

    pub fn validate(&self) -> Result<()> {
        if self.block_tokens == 0 || self.block_tokens > 1 << 16 {
            return Err(Error::invalid("`block_tokens` must be in 1..=65536"));
        }
        let frac = |name: &str, v: f64| -> Result<()> {
            if !(0.0..=1.0).contains(&v) || v.is_nan() {
                return Err(Error::invalid(format!("`{name}` must be a fraction in [0, 1], got {v}")));
            }
            Ok(())
        };
        frac("swap_out_high", self.swap_out_high)?;
        frac("swap_out_low", self.swap_out_low)?;
        frac("swap_in_idle", self.swap_in_idle)?;
        frac("swap_in_target", self.swap_in_target)?;
        frac("host_high", self.host_high)?;
        frac("host_low", self.host_low)?;
        frac("vllm_adapter_fraction", self.vllm_adapter_fraction)?;
        if self.swap_out_low > self.swap_out_high {
            return Err(Error::invalid("`swap_out_low` must not exceed `swap_out_high`"));
        }
        if self.swap_in_idle > self.swap_in_target {
            return Err(Error::invalid("`swap_in_idle` must not exceed `swap_in_target`"));
        }
        if self.host_low > self.host_high {
            return Err(Error::invalid("`host_low` must not exceed `host_high`"));
        }
        if !self.link_bytes_per_us.is_finite() || self.link_bytes_per_us <= 0.0 {
            return Err(Error::invalid("`link_bytes_per_us` must be positive"));
        }
        if !self.prefill_tokens_per_us.is_finite() || self.prefill_tokens_per_us < 0.0 {
            return Err(Error::invalid("`prefill_tokens_per_us` must be zero or positive"));
        }
        if self.value_time_unit_us > 1 << 40 {
            return Err(Error::invalid("`value_time_unit_us` must be at most 2^40"));
        }
        if self.event_capacity > 1 << 24 {
            return Err(Error::invalid("`event_capacity` must be at most 16777216"));
        }
        Ok(())
    }
}
