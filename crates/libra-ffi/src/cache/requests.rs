//! The request lifecycle: match, allocate, commit, release or abort, and readiness (poll, wait,
//! events, layer groups).
use super::adapters::copy_blocks_out;
use super::types::*;
use crate::boundary::{check_aligned, check_ptr, entry, null_arg, slice, write_out};
use crate::status::libra_status;
use libra::cache::Readiness;
use libra::error::Error;
use std::ffi::c_void;

/// What `libra_cache_match` found.
///
/// Frozen for the 0.x ABI: the library writes this struct (no `struct_size`), so its size and
/// fields never change; a later result grows through a new function with a new,
/// `struct_size`-versioned struct, and this one keeps its meaning.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct libra_match {
    /// The request handle for allocate / commit / release / abort / poll / wait. Never 0 (free
    /// for "no request" in engine code); valid only on the cache that issued it, which refuses
    /// an id of another cache or of a released request with LIBRA_ERR_NOT_FOUND.
    pub request: u64,
    /// Tokens whose KV is cached (a whole number of blocks).
    pub cached_tokens: usize,
    /// Blocks written to the caller's array: cached_tokens / block_tokens.
    pub cached_blocks: usize,
    /// Blocks holding the adapter's weights (see `libra_cache_adapter_blocks`).
    pub adapter_blocks: usize,
    /// Host-resident tokens left for recomputation because that is faster than loading them.
    pub recompute_tokens: usize,
    /// True when every block is usable now; else wait with poll, wait or wait_event.
    pub ready: bool,
}

/// Readiness of a request's blocks.
#[allow(non_camel_case_types)]
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum libra_readiness {
    LIBRA_READY = 0,
    LIBRA_PENDING = 1,
    /// A copy failed: abort the request (and match again if wanted).
    LIBRA_FAILED = 2,
}

/// Looks up the longest cached prefix of `tokens` (`n_tokens` ids) for `adapter_id` in
/// `namespace_id` (0: shared; another value salts the prefix keys, e.g. per tenant), pins it
/// and the adapter, and starts the copies that make them usable. The cached prefix's block ids
/// go to `blocks_out` (room for `blocks_capacity` ids; n_tokens / block_tokens always
/// suffices; NULL only with capacity 0), the rest to `*out`. A request is opened: end it with
/// `libra_cache_release` or `libra_cache_abort`. The prefix may cover every token (a prompt of
/// whole cached blocks), leaving none to compute logits from: `libra_cache_match_leaving`
/// keeps some uncached. Errors: LIBRA_ERR_NOT_FOUND (unknown adapter),
/// LIBRA_ERR_OUT_OF_MEMORY (no room for the adapter), LIBRA_ERR_INVALID_ARGUMENT (capacity too
/// small, or more than 2^24 tokens: nothing changes), LIBRA_ERR_BUSY (2^22 requests already
/// open). Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create(); `tokens` NULL only with
/// `n_tokens` 0, else `n_tokens` readable ids; `blocks_out` NULL or room for `blocks_capacity` ids;
/// `out` NULL or writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn libra_cache_match(
    cache: *const libra_cache,
    adapter_id: u64,
    namespace_id: u64,
    tokens: *const u32,
    n_tokens: usize,
    now: u64,
    blocks_out: *mut u32,
    blocks_capacity: usize,
    out: *mut libra_match,
) -> libra_status {
    entry!({
        // SAFETY: the pointers are as this function's contract says, which is `match_into`'s.
        unsafe {
            match_into(
                cache,
                adapter_id,
                namespace_id,
                tokens,
                n_tokens,
                0,
                now,
                blocks_out,
                blocks_capacity,
                out,
            )
        }
    })
}

/// `libra_cache_match`, but the cached prefix leaves at least `min_uncached` of the `n_tokens`
/// tokens uncached (0 <= min_uncached <= n_tokens). Plain `libra_cache_match` may report every
/// token cached when the prompt is a whole number of cached blocks, which leaves nothing to
/// compute the next token's logits from: pass 1 for that, or more when the engine's kernels
/// need a minimum batch (e.g. identical numerics). The tokens left count as misses in the
/// stats. Same outputs, errors and thread safety as `libra_cache_match`, plus
/// LIBRA_ERR_INVALID_ARGUMENT when `min_uncached` exceeds `n_tokens` (nothing changes).
///
/// Reproducibility: every decision is a function of the calls and their `now` values, so an
/// engine that passes a logical clock (e.g. a step counter) gets the same hits, swaps and
/// events on every run of the same call sequence (with the synchronous CPU backend, or when
/// copy completions are awaited at the same points).
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create(); `tokens` NULL only with
/// `n_tokens` 0, else `n_tokens` readable ids; `blocks_out` NULL or room for `blocks_capacity` ids;
/// `out` NULL or writable.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn libra_cache_match_leaving(
    cache: *const libra_cache,
    adapter_id: u64,
    namespace_id: u64,
    tokens: *const u32,
    n_tokens: usize,
    min_uncached: usize,
    now: u64,
    blocks_out: *mut u32,
    blocks_capacity: usize,
    out: *mut libra_match,
) -> libra_status {
    entry!({
        // SAFETY: the pointers are as this function's contract says, which is `match_into`'s.
        unsafe {
            match_into(
                cache,
                adapter_id,
                namespace_id,
                tokens,
                n_tokens,
                min_uncached,
                now,
                blocks_out,
                blocks_capacity,
                out,
            )
        }
    })
}

/// The body of `libra_cache_match` and `libra_cache_match_leaving`.
///
/// # Safety
/// As those functions' pointer contracts.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn match_into(
    cache: *const libra_cache,
    adapter_id: u64,
    namespace_id: u64,
    tokens: *const u32,
    n_tokens: usize,
    min_uncached: usize,
    now: u64,
    blocks_out: *mut u32,
    blocks_capacity: usize,
    out: *mut libra_match,
) -> Result<(), Error> {
    // SAFETY: `cache` is NULL or a live handle, per the contract above.
    let c = unsafe { cache_ref(cache) }?;
    // SAFETY: the caller passes `n_tokens` readable ids.
    let t = unsafe { slice(tokens, n_tokens, "tokens") }?;
    check_ptr(out, "out")?;
    if min_uncached > n_tokens {
        return Err(Error::invalid(format!(
            "`min_uncached` is {min_uncached} but `n_tokens` is only {n_tokens}"
        )));
    }
    let bt = c.cache().block_tokens()?;
    let most = (n_tokens - min_uncached) / bt;
    if blocks_capacity < most {
        return Err(Error::invalid(format!(
            "`blocks_capacity` is {blocks_capacity}; up to {most} ids may be returned"
        )));
    }
    if blocks_out.is_null() && most > 0 {
        return Err(null_arg("blocks_out"));
    }
    // Checked before the match opens a request, so a bad array changes nothing.
    check_aligned(blocks_out, "blocks_out")?;
    let m = c.cache().match_prefix_leaving(adapter_id, namespace_id, t, min_uncached, now)?;
    // SAFETY: `blocks_out` is NULL or holds `blocks_capacity` writable ids, per the contract.
    unsafe { copy_blocks_out(&m.kv_blocks, blocks_out, blocks_capacity, "blocks_out") }?;
    let value = libra_match {
        request: m.request,
        cached_tokens: m.cached_tokens,
        cached_blocks: m.kv_blocks.len(),
        adapter_blocks: m.adapter_blocks.len(),
        recompute_tokens: m.recompute_tokens,
        ready: m.ready,
    };
    // SAFETY: checked non-NULL and aligned above; writable per the contract above.
    unsafe { write_out(out, value) };
    Ok(())
}

/// Allocates ceil(n_tokens / block_tokens) GPU blocks for `request`, evicting or swapping out
/// unpinned cached blocks when the tier is full. Ids go to `blocks_out` (room for `capacity`),
/// their number to `*count_out`. Errors: LIBRA_ERR_NOT_FOUND (request not open),
/// LIBRA_ERR_OUT_OF_MEMORY (everything pinned, or on its way to the GPU for open requests:
/// nothing allocated), LIBRA_ERR_BUSY (copies that would free blocks still in flight; retry
/// after `libra_cache_step`), LIBRA_ERR_INVALID_ARGUMENT (capacity too small, or more blocks
/// than the whole GPU tier: nothing allocated). It waits (`swap_wait_us`) only for copies to
/// the host, never for loads. Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create(); `blocks_out` NULL or room for
/// `capacity` ids; `count_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn libra_cache_allocate(
    cache: *const libra_cache,
    request: u64,
    n_tokens: usize,
    now: u64,
    blocks_out: *mut u32,
    capacity: usize,
    count_out: *mut usize,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        let c = unsafe { cache_ref(cache) }?;
        check_ptr(count_out, "count_out")?;
        let need = n_tokens.div_ceil(c.cache.block_tokens()?);
        if need > capacity {
            return Err(Error::invalid(format!("`capacity` is {capacity} but {need} blocks are needed")));
        }
        if blocks_out.is_null() && need > 0 {
            return Err(null_arg("blocks_out"));
        }
        // Checked before anything is allocated, so a bad array changes nothing.
        check_aligned(blocks_out, "blocks_out")?;
        let blocks = c.cache.allocate(request, n_tokens, now)?;
        // SAFETY: `blocks_out` is NULL or holds `capacity` writable ids, per the contract above.
        unsafe { copy_blocks_out(&blocks, blocks_out, capacity, "blocks_out") }?;
        // SAFETY: checked non-NULL and aligned above; writable per the contract above.
        unsafe { write_out(count_out, blocks.len()) };
        Ok(())
    })
}

/// Shares the request's next filled blocks through the tree. Only whole blocks are shared: the
/// tokens of a partial last block (fewer than block_tokens) are not cached, so a later request
/// recomputes up to block_tokens - 1 tokens; their block is freed on release. `tokens`
/// (`n_tokens` ids, a whole number of blocks) are the token ids those blocks hold, in order, continuing the request's
/// prefix; they consume the request's allocated blocks in allocation order. `*shared_out`
/// (may be NULL) receives how many became new cache entries. Errors:
/// LIBRA_ERR_INVALID_ARGUMENT (not a whole number of blocks, or more blocks than allocated),
/// LIBRA_ERR_NOT_FOUND (request not open), LIBRA_ERR_BUSY (the request's own copies have not
/// completed, or a block it would share is still being copied in for another request: nothing
/// changed; retry after `libra_cache_step`). Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create(); `tokens` NULL only with
/// `n_tokens` 0, else `n_tokens` readable ids; `shared_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn libra_cache_commit(
    cache: *const libra_cache,
    request: u64,
    tokens: *const u32,
    n_tokens: usize,
    now: u64,
    shared_out: *mut usize,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        let c = unsafe { cache_ref(cache) }?;
        // SAFETY: the caller passes `n_tokens` readable ids.
        let t = unsafe { slice(tokens, n_tokens, "tokens") }?;
        // Optional, but checked before the commit changes anything.
        check_aligned(shared_out, "shared_out")?;
        let shared = c.cache.commit(request, t, now)?;
        if !shared_out.is_null() {
            // SAFETY: non-NULL and aligned (checked above), writable per the contract above.
            unsafe { write_out(shared_out, shared) };
        }
        Ok(())
    })
}

/// Ends a request: unpins its blocks, frees the ones it did not share; the request id becomes
/// invalid (a second release gives LIBRA_ERR_NOT_FOUND). Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create().
#[no_mangle]
pub unsafe extern "C" fn libra_cache_release(
    cache: *const libra_cache,
    request: u64,
    now: u64,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        unsafe { cache_ref(cache) }?.cache.release(request, now)
    })
}

/// Ends a failed request like `libra_cache_release`, and drops the blocks it shared that no
/// other request uses, since their contents may be incomplete. Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create().
#[no_mangle]
pub unsafe extern "C" fn libra_cache_abort(
    cache: *const libra_cache,
    request: u64,
    now: u64,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        unsafe { cache_ref(cache) }?.cache.abort(request, now)
    })
}

fn readiness(r: Readiness) -> libra_readiness {
    match r {
        Readiness::Ready => libra_readiness::LIBRA_READY,
        Readiness::Pending => libra_readiness::LIBRA_PENDING,
        Readiness::Failed(_) => libra_readiness::LIBRA_FAILED,
    }
}

/// Non-blocking: whether the request's blocks are usable. `*out` receives a libra_readiness.
/// Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create(); `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn libra_cache_poll(
    cache: *const libra_cache,
    request: u64,
    out: *mut libra_readiness,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        let c = unsafe { cache_ref(cache) }?;
        check_ptr(out, "out")?;
        let r = c.cache.poll(request)?;
        // SAFETY: checked non-NULL and aligned above; writable per the contract above.
        unsafe { write_out(out, readiness(r)) };
        Ok(())
    })
}

/// Blocks the calling thread until the request's copies complete or `timeout_us` passes in
/// all; `*out` receives the readiness then (LIBRA_PENDING after a timeout). The cache's lock is
/// released while the thread blocks, so other threads keep calling the cache. Returns at once
/// with LIBRA_PENDING when nothing but a later call could complete the copies, and with
/// LIBRA_ERR_NOT_FOUND if another thread releases or aborts the request meanwhile. On a GPU,
/// `libra_cache_wait_event` avoids blocking the CPU at all. Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create(); `out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn libra_cache_wait(
    cache: *const libra_cache,
    request: u64,
    timeout_us: u64,
    out: *mut libra_readiness,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        let c = unsafe { cache_ref(cache) }?;
        check_ptr(out, "out")?;
        let r = c.cache.wait(request, timeout_us)?;
        // SAFETY: checked non-NULL and aligned above; writable per the contract above.
        unsafe { write_out(out, readiness(r)) };
        Ok(())
    })
}

/// `*event_out` receives a CUevent (as void *) that the engine's stream can wait on before
/// using the request's blocks, or NULL when nothing is pending or the backend has no events
/// (CPU). The event is owned by the cache and stays a valid CUevent until the cache is freed;
/// once the request's copies have completed the cache may record later copies on it, so make
/// the stream wait on it right away rather than keeping it. Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create(); `event_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn libra_cache_wait_event(
    cache: *const libra_cache,
    request: u64,
    event_out: *mut *mut c_void,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        let c = unsafe { cache_ref(cache) }?;
        check_ptr(event_out, "event_out")?;
        let e = c.cache.wait_event(request)?;
        // SAFETY: checked non-NULL and aligned above; writable per the contract above.
        unsafe { write_out(event_out, e) };
        Ok(())
    })
}

/// Layer-wise readiness, non-blocking: `*readiness_out` receives the request's libra_readiness
/// (as `libra_cache_poll`), `*ready_groups_out` how many leading layer groups of its cached
/// blocks are usable now (all of them when LIBRA_READY, 0 when LIBRA_FAILED), and
/// `*groups_out` (may be NULL) the number of layer groups (`segments_per_group` of the config;
/// at least 1). The engine may run layer group g of the request's prefill once g < ready
/// groups; commit still waits for LIBRA_READY. An adapter upload the request waits for counts
/// group by group when the config sets `layered_adapters`, else as a whole (0 ready groups
/// until it lands). Should a later group's copy fail, the request
/// turns LIBRA_FAILED and whatever was computed from it must be discarded with an abort.
/// Errors: LIBRA_ERR_NULL_ARGUMENT, LIBRA_ERR_NOT_FOUND (request not open). Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create(); `readiness_out` NULL or
/// writable; `ready_groups_out` NULL or writable; `groups_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn libra_cache_poll_groups(
    cache: *const libra_cache,
    request: u64,
    readiness_out: *mut libra_readiness,
    ready_groups_out: *mut u32,
    groups_out: *mut u32,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        let c = unsafe { cache_ref(cache) }?;
        check_ptr(readiness_out, "readiness_out")?;
        check_ptr(ready_groups_out, "ready_groups_out")?;
        check_aligned(groups_out, "groups_out")?;
        let r = c.cache.poll_groups(request)?;
        // SAFETY: the three are aligned and writable, per the contract above; the first two
        // were checked non-NULL, `groups_out` is just below.
        unsafe {
            write_out(readiness_out, readiness(r.readiness));
            write_out(ready_groups_out, r.ready_groups);
            if !groups_out.is_null() {
                write_out(groups_out, r.groups);
            }
        }
        Ok(())
    })
}

/// `*event_out` receives a CUevent (as void *) that the engine's stream waits on before its
/// kernels of layer group `group` (0-based) read the request's cached blocks (and, with
/// `layered_adapters`, that group's layers of its adapter), or NULL when nothing is pending or
/// the backend has no events (CPU). Like `libra_cache_wait_event`'s, the
/// event is owned by the cache, stays a valid CUevent until the cache is freed, and may be
/// recorded again for later copies once the request's copies have completed: make the stream
/// wait on it right away (e.g. `cuStreamWaitEvent` before launching that group's layers)
/// rather than keeping it. Errors: LIBRA_ERR_NULL_ARGUMENT, LIBRA_ERR_NOT_FOUND (request not
/// open), LIBRA_ERR_INVALID_ARGUMENT (`group` is not below the number of layer groups).
/// Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create(); `event_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn libra_cache_group_event(
    cache: *const libra_cache,
    request: u64,
    group: u32,
    event_out: *mut *mut c_void,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        let c = unsafe { cache_ref(cache) }?;
        check_ptr(event_out, "event_out")?;
        let e = c.cache.group_event(request, group)?;
        // SAFETY: checked non-NULL and aligned above; writable per the contract above.
        unsafe { write_out(event_out, e) };
        Ok(())
    })
}

// A frozen result keeps its published layout (64-bit targets; ffi_tests/cache_compat.c checks
// the same sizes from C).
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<libra_match>() == 48);
    assert!(std::mem::offset_of!(libra_match, ready) == 40);
};
