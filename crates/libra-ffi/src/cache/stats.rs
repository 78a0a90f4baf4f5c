//! Cache statistics.
use super::types::*;
use crate::boundary::{entry, write_versioned, Versioned};
use crate::status::libra_status;

/// Cache statistics. Set `struct_size` to sizeof(libra_cache_stats) before the call.
///
/// Versioning: the struct grows only by appending fields; `libra_cache_get_stats` writes
/// `min(struct_size, sizeof(libra_cache_stats))` bytes, never past the caller's struct, so a
/// caller built against an older header gets the fields it knows. A `struct_size` below the
/// first published layout (160 bytes on 64-bit targets, ending at `events_dropped`) is refused.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct libra_cache_stats {
    pub struct_size: usize,
    pub gpu_blocks_total: u32,
    pub gpu_blocks_used: u32,
    pub host_blocks_total: u32,
    pub host_blocks_used: u32,
    pub kv_blocks_gpu: u64,
    pub kv_blocks_host: u64,
    pub adapters_registered: u32,
    pub adapters_resident: u32,
    /// GPU-resident KV blocks whose adapter is not resident: 0 except under the vLLM baseline.
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
    /// KV blocks holding a retention hint not yet expired at the last `libra_cache_step`.
    /// Fields from here on were appended after the first published layout.
    pub hinted_blocks: u64,
    /// GPU KV blocks with a complete host copy (written through, or kept when the block was
    /// swapped in), which leave the GPU at once, without a copy.
    pub clean_blocks: u64,
    /// Bytes copied to the host by write-through, for blocks that stayed on the GPU.
    pub write_through_bytes: u64,
    /// Blocks that left the GPU without a copy because they were clean (also counted in
    /// `swap_out_blocks`).
    pub instant_evictions: u64,
    /// Cached KV blocks marked by `libra_cache_expect_no_reuse`: the first to leave, dropped
    /// rather than copied to the host (not counted in `hinted_blocks`).
    pub no_reuse_blocks: u64,
    /// Host copies of GPU blocks given up because the host tier needed room and held no
    /// host-only block to prune (the blocks stay on the GPU, nothing is lost).
    pub reclaimed_host_copies: u64,
}

/// `sizeof(libra_cache_stats)` as first published (ending at `events_dropped`), on 64-bit
/// targets: the least `struct_size` accepted.
const LIBRA_CACHE_STATS_FIRST_SIZE: usize = 160;
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::offset_of!(libra_cache_stats, hinted_blocks) == LIBRA_CACHE_STATS_FIRST_SIZE);

// SAFETY: repr(C), `struct_size: usize` first, integer fields only.
unsafe impl Versioned for libra_cache_stats {
    const FIRST_SIZE: usize = LIBRA_CACHE_STATS_FIRST_SIZE;
    fn defaults() -> Self {
        libra_cache_stats { struct_size: std::mem::size_of::<Self>(), ..Default::default() }
    }
}

/// Fills `*out` with statistics. Set `out->struct_size = sizeof(libra_cache_stats)` first: only
/// `min(struct_size, sizeof(libra_cache_stats))` bytes are written and `struct_size` is kept,
/// so a struct from an older header gets the fields it has. Errors: LIBRA_ERR_NULL_ARGUMENT,
/// LIBRA_ERR_INVALID_ARGUMENT (`out` misaligned, or `struct_size` below the first published
/// layout: nothing written). Cheap enough to call every scheduler iteration: the cost grows
/// with the number of registered adapters, not with the number of cached blocks. Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create(); `out` NULL or a writable
/// struct of the `struct_size` it declares.
#[no_mangle]
pub unsafe extern "C" fn libra_cache_get_stats(
    cache: *const libra_cache,
    out: *mut libra_cache_stats,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        let c = unsafe { cache_ref(cache) }?;
        // Checked before the stats are gathered, so a bad struct fails early; no reference to
        // the caller's struct is made, as it may be an older, smaller one.
        // SAFETY: NULL or `struct_size` readable bytes, per the contract above.
        unsafe { crate::boundary::versioned_size(out, "out") }?;
        let s = c.cache.stats()?;
        let full = libra_cache_stats {
            struct_size: std::mem::size_of::<libra_cache_stats>(),
            gpu_blocks_total: s.gpu_blocks_total,
            gpu_blocks_used: s.gpu_blocks_used,
            host_blocks_total: s.host_blocks_total,
            host_blocks_used: s.host_blocks_used,
            kv_blocks_gpu: s.kv_nodes_gpu,
            kv_blocks_host: s.kv_nodes_host,
            adapters_registered: s.adapters_registered,
            adapters_resident: s.adapters_resident,
            invalid_kv_blocks: s.invalid_kv_blocks,
            hit_tokens: s.hit_tokens,
            miss_tokens: s.miss_tokens,
            matches: s.matches,
            swap_out_blocks: s.swap_out_blocks,
            swap_in_blocks: s.swap_in_blocks,
            dropped_blocks: s.dropped_blocks,
            pruned_host_blocks: s.pruned_host_blocks,
            adapter_loads: s.adapter_loads,
            bytes_to_host: s.bytes_to_host,
            bytes_to_gpu: s.bytes_to_gpu,
            failed_batches: s.failed_batches,
            inflight_batches: s.inflight_batches,
            open_requests: s.open_requests,
            events_dropped: s.events_dropped,
            hinted_blocks: s.hinted_blocks,
            clean_blocks: s.clean_blocks,
            write_through_bytes: s.write_through_bytes,
            instant_evictions: s.instant_evictions,
            no_reuse_blocks: s.no_reuse_blocks,
            reclaimed_host_copies: s.reclaimed_host_copies,
        };
        // SAFETY: `out` holds `struct_size` writable bytes, per the contract above.
        unsafe { write_versioned(out, full, "out") }
    })
}
