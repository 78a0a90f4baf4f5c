//! Adapters: registration, their blocks in the pool and what the cache knows about them.
use super::types::*;
use crate::boundary::{
    check_aligned, check_ptr, entry, null_arg, slice, versioned_size, write_out, write_versioned, Versioned,
};
use crate::status::libra_status;
use libra::error::Error;
use std::ffi::c_void;

/// Registers adapter `adapter_id`: the library copies `weights_len` bytes from `weights` (the
/// caller keeps ownership) into its host store and loads them into pool blocks on first use.
/// `rank` is the LoRA rank, or LIBRA_RANK_UNKNOWN: a hint reported back by
/// `libra_cache_adapter_info`, used in no decision. `now` is the engine clock in microseconds.
/// Errors: LIBRA_ERR_ALREADY_EXISTS, LIBRA_ERR_INVALID_ARGUMENT (empty weights,
/// larger than the pool, or 2^20 adapters already registered). Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create(); `weights` NULL only with
/// `weights_len` 0, else `weights_len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn libra_cache_register_adapter(
    cache: *const libra_cache,
    adapter_id: u64,
    weights: *const c_void,
    weights_len: usize,
    rank: u32,
    now: u64,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        let c = unsafe { cache_ref(cache) }?;
        // SAFETY: the caller passes `weights_len` readable bytes.
        let w = unsafe { slice(weights as *const u8, weights_len, "weights") }?;
        c.cache.register_adapter(adapter_id, w, rank, now)
    })
}

/// Unregisters an adapter and drops every KV block computed under it. LIBRA_ERR_BUSY while
/// an open request or a copy uses it; LIBRA_ERR_NOT_FOUND for an unknown id. Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create().
#[no_mangle]
pub unsafe extern "C" fn libra_cache_unregister_adapter(
    cache: *const libra_cache,
    adapter_id: u64,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        unsafe { cache_ref(cache) }?.cache.unregister_adapter(adapter_id)
    })
}

/// Copies the GPU block ids holding `adapter_id`'s weights, in the order their bytes run (the
/// layout is under `libra_cache_adapter_info`), into `blocks_out` (capacity
/// `capacity`) and their number into `*count_out`. Fails with LIBRA_ERR_INVALID_ARGUMENT when
/// the capacity is too small (nothing written). Empty while the adapter is not resident.
/// `blocks_out` may be NULL only when `capacity` is 0. Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create(); `blocks_out` NULL or room for
/// `capacity` ids; `count_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn libra_cache_adapter_blocks(
    cache: *const libra_cache,
    adapter_id: u64,
    blocks_out: *mut u32,
    capacity: usize,
    count_out: *mut usize,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        let c = unsafe { cache_ref(cache) }?;
        check_ptr(count_out, "count_out")?;
        let blocks = c.cache.adapter_blocks(adapter_id)?;
        // SAFETY: `blocks_out` is NULL or holds `capacity` writable ids, per the contract above.
        unsafe { copy_blocks_out(&blocks, blocks_out, capacity, "blocks_out") }?;
        // SAFETY: checked non-NULL and aligned above; writable per the contract above.
        unsafe { write_out(count_out, blocks.len()) };
        Ok(())
    })
}

/// Copies `blocks` to the caller's array `out` of `capacity` ids, or fails naming it (too
/// small, or NULL while there is something to copy).
///
/// # Safety
/// `out` is NULL or holds `capacity` writable, aligned ids.
pub(crate) unsafe fn copy_blocks_out(
    blocks: &[u32],
    out: *mut u32,
    capacity: usize,
    name: &str,
) -> Result<(), Error> {
    if blocks.len() > capacity {
        return Err(Error::invalid(format!("`{name}` holds {capacity} ids but {} are needed", blocks.len())));
    }
    if blocks.is_empty() {
        return Ok(());
    }
    if out.is_null() {
        return Err(null_arg(name));
    }
    check_aligned(out as *const u32, name)?;
    // SAFETY: non-NULL and aligned, holding `capacity >= blocks.len()` writable ids, as this
    // function requires; `blocks` is our own memory, so the two do not overlap.
    unsafe { std::ptr::copy_nonoverlapping(blocks.as_ptr(), out, blocks.len()) };
    Ok(())
}

/// What `libra_cache_adapter_info` reports about a registered adapter.
///
/// Versioning as `libra_cache_stats`: fields are only appended, and `min(struct_size,
/// sizeof(libra_adapter_info))` bytes are written, never past the caller's struct; the current
/// layout (40 bytes on 64-bit targets) is the first published one, so a smaller `struct_size`
/// is refused.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct libra_adapter_info {
    /// sizeof(libra_adapter_info): set it before the call; `struct_size` is kept.
    pub struct_size: usize,
    /// Length in bytes of the weights given to `libra_cache_register_adapter`.
    pub weights_len: u64,
    /// The rank given at registration; LIBRA_RANK_UNKNOWN (0) when the engine did not know it.
    pub rank: u32,
    /// Blocks the weights occupy while resident: ceil(weights_len / block bytes). The bytes run
    /// block by block in the order `libra_cache_adapter_blocks` lists the blocks, each block
    /// holding its logical bytes (its segment pieces in segment order); the last block holds
    /// weights_len - (blocks - 1) x block bytes of them, the rest of it is unspecified.
    pub blocks: u32,
    /// Bytes per block (the pool's block size).
    pub block_bytes: u64,
    /// Nonzero (1) when the blocks are on the GPU tier with their copy complete, else 0. A
    /// `uint8_t`, the size of a C `bool`, like `libra_cache_config.events`.
    pub resident: u8,
}

// The first published layout: `resident` last, padded to 40 bytes (64-bit targets;
// ffi_tests/cache_compat.c checks the same from C).
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<libra_adapter_info>() == 40);
    assert!(std::mem::offset_of!(libra_adapter_info, resident) == 32);
};

// SAFETY: repr(C), `struct_size: usize` first, integer fields only (`resident` is a `u8`, not
// a `bool`).
unsafe impl Versioned for libra_adapter_info {
    const FIRST_SIZE: usize = std::mem::size_of::<libra_adapter_info>();
    fn defaults() -> Self {
        libra_adapter_info { struct_size: std::mem::size_of::<Self>(), ..Default::default() }
    }
}

/// `rank` value for an adapter whose rank the engine does not know (GGUF LoRA files carry
/// none). The rank is only reported back by `libra_cache_adapter_info`: no decision uses it,
/// since an adapter's block count follows from its byte length.
pub const LIBRA_RANK_UNKNOWN: u32 = 0;

/// Fills `*out` with adapter `adapter_id`'s byte length, rank, block count and residency. Set
/// `out->struct_size = sizeof(libra_adapter_info)` first. To rebuild the weights from the
/// pool: while a request of this adapter is open and ready (it pins the adapter), read
/// `blocks` blocks from `libra_cache_adapter_blocks` in order, taking `block_bytes` bytes of
/// each and `weights_len` bytes in all. Errors: LIBRA_ERR_NOT_FOUND (unknown adapter),
/// LIBRA_ERR_NULL_ARGUMENT, LIBRA_ERR_INVALID_ARGUMENT (`out` misaligned or its `struct_size`
/// below the first published layout: nothing written). Only `min(struct_size,
/// sizeof(libra_adapter_info))` bytes are written and `struct_size` is kept. Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create(); `out` NULL or a writable
/// struct of the `struct_size` it declares.
#[no_mangle]
pub unsafe extern "C" fn libra_cache_adapter_info(
    cache: *const libra_cache,
    adapter_id: u64,
    out: *mut libra_adapter_info,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        let c = unsafe { cache_ref(cache) }?;
        // Checked first, so a bad struct fails before the lookup; no reference to the caller's
        // struct is made, as it may be an older, smaller one.
        // SAFETY: `out` is NULL or holds the `struct_size` bytes it declares, per the contract.
        unsafe { versioned_size(out, "out") }?;
        let i = c.cache().adapter_info(adapter_id)?;
        let full = libra_adapter_info {
            struct_size: std::mem::size_of::<libra_adapter_info>(),
            weights_len: i.weights_len as u64,
            rank: i.rank,
            blocks: i.blocks,
            block_bytes: c.cache().block_bytes()?,
            resident: u8::from(i.resident),
        };
        // SAFETY: as above: `struct_size` writable bytes.
        unsafe { write_versioned(out, full, "out") }
    })
}
