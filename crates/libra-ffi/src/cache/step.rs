//! One scheduler iteration and the cost hints it plans with.
use super::types::*;
use crate::boundary::{check_aligned, entry, write_out};
use crate::status::libra_status;

/// What one `libra_cache_step` did.
///
/// Frozen for the 0.x ABI: the library writes this struct (no `struct_size`), so its size and
/// fields never change; a later result grows through a new function with a new,
/// `struct_size`-versioned struct, and this one keeps its meaning.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct libra_step_report {
    pub swapped_out: u32,
    pub swapped_in: u32,
    pub adapters_loaded: u32,
    pub pruned: u32,
    pub completed_batches: u32,
}

/// One scheduler iteration: finishes completed copies, swaps out above the high watermark,
/// prefetches below the idle mark unless `prefill_bound`, prunes the host tier. `batch_size` is
/// the running batch. `report_out` may be NULL. Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create(); `report_out` NULL or
/// writable.
#[no_mangle]
pub unsafe extern "C" fn libra_cache_step(
    cache: *const libra_cache,
    now: u64,
    batch_size: u32,
    prefill_bound: bool,
    report_out: *mut libra_step_report,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        let c = unsafe { cache_ref(cache) }?;
        // Optional, but checked before the step changes anything.
        check_aligned(report_out, "report_out")?;
        let r = c.cache.step(now, batch_size, prefill_bound)?;
        if !report_out.is_null() {
            let v = libra_step_report {
                swapped_out: r.swapped_out,
                swapped_in: r.swapped_in,
                adapters_loaded: r.adapters_loaded,
                pruned: r.pruned,
                completed_batches: r.completed_batches,
            };
            // SAFETY: non-NULL and aligned (checked above), writable per the contract above.
            unsafe { write_out(report_out, v) };
        }
        Ok(())
    })
}

/// Updates the engine's cost hints: prefill throughput (tokens per microsecond, 0 disables
/// recompute-or-load) and host-link bandwidth (bytes per microsecond, positive). Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create().
#[no_mangle]
pub unsafe extern "C" fn libra_cache_set_cost_hints(
    cache: *const libra_cache,
    prefill_tokens_per_us: f64,
    link_bytes_per_us: f64,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        unsafe { cache_ref(cache) }?.cache.set_cost_hints(prefill_tokens_per_us, link_bytes_per_us)
    })
}

// A frozen result keeps its published layout (64-bit targets; ffi_tests/cache_compat.c checks
// the same size from C).
#[cfg(target_pointer_width = "64")]
const _: () = assert!(std::mem::size_of::<libra_step_report>() == 20);
