//! C ABI additions an engine embedding the cache needs beyond the request loop: an adapter's
//! length, rank and block layout, and a match that leaves tokens to compute. Same thread-safety
//! rules as the rest of `libra_cache_*`.
use super::boundary::{check_struct_size, deref_mut, guard, null_arg, slice, write_out};
use super::cache::{cache_ref, copy_blocks_out, libra_cache, libra_match};
use crate::status::libra_status;
use libra::error::Error;

/// What `libra_cache_adapter_info` reports about a registered adapter.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct libra_adapter_info {
    /// sizeof(libra_adapter_info): set it before the call; only that many bytes are written.
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
    /// True when the blocks are on the GPU tier with their copy complete.
    pub resident: bool,
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
/// LIBRA_ERR_NULL_ARGUMENT, LIBRA_ERR_INVALID_ARGUMENT (struct_size too small). Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_adapter_info(
    cache: *const libra_cache,
    adapter_id: u64,
    out: *mut libra_adapter_info,
) -> libra_status {
    guard("libra_cache_adapter_info", || {
        let c = cache_ref(cache)?;
        // SAFETY: NULL or a caller-provided info struct.
        let o = unsafe { deref_mut(out, "out") }?;
        check_struct_size(o.struct_size, std::mem::size_of::<libra_adapter_info>(), "out")?;
        let i = c.cache().adapter_info(adapter_id)?;
        *o = libra_adapter_info {
            struct_size: o.struct_size,
            weights_len: i.weights_len as u64,
            rank: i.rank,
            blocks: i.blocks,
            block_bytes: c.cache().block_bytes()?,
            resident: i.resident,
        };
        Ok(())
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
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn libra_cache_match_leaving(
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
    guard("libra_cache_match_leaving", || {
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
    })
}

#[allow(clippy::too_many_arguments)]
pub(super) fn match_into(
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
    let c = cache_ref(cache)?;
    // SAFETY: the caller passes `n_tokens` readable ids.
    let t = unsafe { slice(tokens, n_tokens, "tokens") }?;
    if out.is_null() {
        return Err(null_arg("out"));
    }
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
    let m = c.cache().match_prefix_leaving(adapter_id, namespace_id, t, min_uncached, now)?;
    copy_blocks_out(&m.kv_blocks, blocks_out, blocks_capacity, "blocks_out")?;
    let value = libra_match {
        request: m.request,
        cached_tokens: m.cached_tokens,
        cached_blocks: m.kv_blocks.len(),
        adapter_blocks: m.adapter_blocks.len(),
        recompute_tokens: m.recompute_tokens,
        ready: m.ready,
    };
    // SAFETY: checked non-NULL.
    unsafe { write_out(out, value) };
    Ok(())
}
