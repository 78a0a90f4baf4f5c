//! Creating and freeing a cache, and what a handle reports about itself: its backend, block
//! addresses and invariants.
use super::config::{cache_options, libra_cache_config};
use super::types::*;
use crate::boundary::{check_ptr, entry, read_versioned, write_out};
use crate::status::libra_status;
use libra::handle::Cache;
use std::ffi::c_char;

/// Creates a cache. `config` is borrowed for the call (its `segments` array is copied); only
/// its first `struct_size` bytes are read.
/// On success `*out` receives a new handle owned by the caller, to be released with
/// `libra_cache_free`. Fails with LIBRA_ERR_INVALID_ARGUMENT naming the bad field (including
/// more than 2^26 blocks in a tier, or an owned arena over 2^40 bytes), or LIBRA_ERR_DEVICE
/// when the CUDA backend was requested and is unavailable. Under CUDA the cache works in the
/// device's primary context, and no call changes the calling thread's current context.
/// Thread-safe.
///
/// Pointers: `config` NULL or a struct of the `struct_size` it declares; `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn libra_cache_create(
    config: *const libra_cache_config,
    out: *mut *mut libra_cache,
) -> libra_status {
    entry!({
        // SAFETY: NULL or a valid config, per the contract above.
        let cfg = &unsafe { read_versioned(config, "config") }?;
        check_ptr(out, "out")?;
        let opts = cache_options(cfg)?;
        let cache = if opts.segments.is_some() {
            // SAFETY: the caller vouches for the memory its `segments` describe, as the header
            // says of `libra_cache_config.segments` (it must outlive the cache).
            unsafe { Cache::adopt(opts) }?
        } else {
            Cache::new(opts)?
        };
        let handle = libra_cache::from_cache(cache)?;
        // SAFETY: checked non-NULL and aligned above; writable per the contract above.
        unsafe { write_out(out, Box::into_raw(handle)) };
        Ok(())
    })
}

/// Releases a cache and everything it owns, including open requests and copies in flight
/// (waited for first). NULL is a no-op. Must not race with any other call on this cache.
///
/// Pointers: `cache` NULL or a handle from libra_cache_create(), not yet freed.
#[no_mangle]
pub unsafe extern "C" fn libra_cache_free(cache: *mut libra_cache) {
    entry!(void {
        if !cache.is_null() {
            // SAFETY: a handle from libra_cache_create, freed once, per the contract above.
            drop(unsafe { Box::from_raw(cache) });
        }
    })
}

/// Name of the backend moving the bytes ("cpu" or "cuda"), owned by the cache and valid until
/// `libra_cache_free`. NULL when `cache` is NULL. Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create().
#[no_mangle]
pub unsafe extern "C" fn libra_cache_backend_name(cache: *const libra_cache) -> *const c_char {
    entry!(or std::ptr::null(), {
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        let c = unsafe { cache_ref(cache) }?;
        Ok(c.backend_name.as_ptr())
    })
}

/// Why this backend was chosen (e.g. why `auto` fell back to CPU). Owned by the cache, valid
/// until `libra_cache_free`. NULL when `cache` is NULL. Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create().
#[no_mangle]
pub unsafe extern "C" fn libra_cache_backend_reason(cache: *const libra_cache) -> *const c_char {
    entry!(or std::ptr::null(), {
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        let c = unsafe { cache_ref(cache) }?;
        Ok(c.backend_reason.as_ptr())
    })
}

/// `*addr_out` receives the address of block `block`'s piece in segment `segment` (0 for an
/// owned arena): a device pointer under CUDA, a host pointer on the CPU backend. The memory is
/// owned by the cache (or the engine, for adopted segments). Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create(); `addr_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn libra_cache_block_address(
    cache: *const libra_cache,
    block: u32,
    segment: usize,
    addr_out: *mut u64,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        let c = unsafe { cache_ref(cache) }?;
        check_ptr(addr_out, "addr_out")?;
        let a = c.cache.block_address(block, segment)?;
        // SAFETY: checked non-NULL and aligned above; writable per the contract above.
        unsafe { write_out(addr_out, a) };
        Ok(())
    })
}

/// Verifies every internal invariant (blocks owned once, tier counts, the dependency rule);
/// LIBRA_ERR_PANIC with a description when one is broken. For tests and debug builds: O(n).
/// Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create().
#[no_mangle]
pub unsafe extern "C" fn libra_cache_check(cache: *const libra_cache) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        unsafe { cache_ref(cache) }?.cache.check_invariants()
    })
}
