//! What the core reports: counters and gauges, and KV nodes as seen from outside.

/// Counters and gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub gpu_blocks_total: u32,
    pub gpu_blocks_used: u32,
    pub host_blocks_total: u32,
    pub host_blocks_used: u32,
    pub kv_nodes_gpu: u64,
    pub kv_nodes_host: u64,
    pub adapters_registered: u32,
    pub adapters_resident: u32,
    /// GPU-resident KV blocks whose adapter is not resident (0 except under `vllm`).
    pub invalid_kv_blocks: u64,
    pub hit_tokens: u64,
    pub miss_tokens: u64,
    pub matches: u64,
    pub swap_out_blocks: u64,
    pub swap_in_blocks: u64,
    pub dropped_blocks: u64,
    pub pruned_host_blocks: u64,
    pub adapter_loads: u64,
    pub bytes_to_host: u64,
    pub bytes_to_gpu: u64,
    pub failed_batches: u64,
    pub inflight_batches: u32,
    pub open_requests: u32,
    pub events_dropped: u64,
    /// KV blocks holding a retention hint that had not expired at the last `step`.
    pub hinted_blocks: u64,
    /// GPU KV blocks with a complete host copy (written through, or kept at swap-in), which
    /// leave at once under pressure.
    pub clean_blocks: u64,
    /// Bytes copied to the host by write-through (blocks that stayed on the GPU).
    pub write_through_bytes: u64,
    /// Blocks that left the GPU without a copy because they were clean (also counted in
    /// `swap_out_blocks`).
    pub instant_evictions: u64,
    /// Cached KV blocks the engine expects never to be read again (`expect_no_reuse`): the
    /// first to leave, dropped rather than copied to the host.
    pub no_reuse_blocks: u64,
    /// Host copies of GPU blocks given up because the host tier needed room and held no
    /// host-only block to prune; those blocks stay on the GPU.
    pub reclaimed_host_copies: u64,
}

/// A KV node as seen from outside, for tests and debugging tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvNodeInfo {
    pub key: u128,
    pub adapter_id: u64,
    pub residency: super::tree::Residency,
    pub gpu_block: u32,
    pub host_block: u32,
    pub pinned: bool,
}
