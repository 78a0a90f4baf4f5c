//! Retention hints: the engine says which prefixes it will want back.
use super::types::*;
use crate::boundary::{entry, read_versioned, write_versioned, Versioned};
use crate::status::libra_status;
use libra::cache::RetentionHint;

/// A retention hint (`libra_cache_set_retention`). Set `struct_size = sizeof(libra_retention)`
/// and fill it with `libra_retention_default`,
/// then set either `expect_back_us` (when the engine expects the prefix back, e.g. a pending
/// tool call) with an optional grace in `duration_us`, or a `duration_us` alone (e.g. a chat
/// session that stays open), and optionally a `priority`.
///
/// Versioning as `libra_cache_config`: fields are only appended, `min(struct_size, sizeof)`
/// bytes are read and missing fields take their defaults; the current layout is the first
/// published one, so a smaller `struct_size` is refused.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct libra_retention {
    /// sizeof(libra_retention), set by the caller before `libra_retention_default`.
    pub struct_size: usize,
    /// Finite and positive (default 1): among hinted blocks, lower priorities leave first.
    pub priority: f64,
    /// Microseconds the hint holds: from `now_us`, or past `expect_back_us` when that is set.
    /// At most 2^40.
    pub duration_us: u64,
    /// Engine time (the same clock as `now_us`) at which the engine expects the prefix back,
    /// or 0 when it does not know. Must be after `now_us`.
    pub expect_back_us: u64,
}

// SAFETY: repr(C), `struct_size: usize` first, integer and float fields only.
unsafe impl Versioned for libra_retention {
    // Published first in this layout.
    const FIRST_SIZE: usize = std::mem::size_of::<libra_retention>();
    fn defaults() -> Self {
        let d = RetentionHint::default();
        libra_retention {
            struct_size: std::mem::size_of::<libra_retention>(),
            priority: d.priority,
            duration_us: d.duration_us,
            expect_back_us: d.expect_back_us,
        }
    }
}

/// Fills `*hint` with the defaults: priority 1, no duration, no expected return (so the caller
/// must set `duration_us` or `expect_back_us` before use). Set `hint->struct_size =
/// sizeof(libra_retention)` first: as for `libra_cache_config_default`, only
/// `min(struct_size, sizeof(libra_retention))` bytes are written and `struct_size` is kept.
/// Errors: LIBRA_ERR_NULL_ARGUMENT, LIBRA_ERR_INVALID_ARGUMENT (`hint` misaligned, or
/// `struct_size` below the first published layout, e.g. left unset: nothing written).
/// Thread-safe.
///
/// Pointers: `hint` NULL or a writable struct of the `struct_size` it declares.
#[no_mangle]
pub unsafe extern "C" fn libra_retention_default(hint: *mut libra_retention) -> libra_status {
    entry!({
        // SAFETY: `hint` is NULL or holds the `struct_size` writable bytes it declares, per the
        // contract above.
        unsafe { write_versioned(hint, libra_retention::defaults(), "hint") }
    })
}

/// Says that an open request's prefix will be wanted again: until the hint expires, its KV
/// blocks leave the GPU (and then the host tier) only after every unhinted block, lower
/// priorities first. The blocks the request holds now get the hint at once, the ones it
/// commits later get it at `libra_cache_release` (not at `libra_cache_abort`); call it right
/// after `libra_cache_match` or right before the release. A block shared by several hinted
/// requests keeps the highest priority and the latest expiry. A hint pins nothing: allocation
/// still evicts hinted blocks when nothing else can go. The `VLLM` baseline ignores hints.
///
/// `hint` is borrowed for the call. Fails with LIBRA_ERR_NULL_ARGUMENT (`hint` NULL),
/// LIBRA_ERR_NOT_FOUND (request not open) or LIBRA_ERR_INVALID_ARGUMENT naming the field:
/// `struct_size` too small, `priority` NaN, infinite or not positive, `expect_back_us` not
/// after `now_us`, `duration_us` 0 without `expect_back_us`, or a hint longer than 2^40 us.
/// Nothing changes on failure. Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create(); `hint` NULL or a struct of
/// the `struct_size` it declares.
#[no_mangle]
pub unsafe extern "C" fn libra_cache_set_retention(
    cache: *const libra_cache,
    request: u64,
    now_us: u64,
    hint: *const libra_retention,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        let c = unsafe { cache_ref(cache) }?;
        // SAFETY: NULL or a valid hint, per the contract above.
        let h = unsafe { read_versioned(hint, "hint") }?;
        let hint = RetentionHint {
            priority: h.priority,
            duration_us: h.duration_us,
            expect_back_us: h.expect_back_us,
        };
        c.cache.set_retention(request, hint, now_us)
    })
}

/// Says that none of an open request's own KV blocks will be read again once it ends: the
/// engine knows the session was closed, the call was a one-shot API request, or the agent task
/// returned its answer. The first `keep_tokens` tokens of its prompt (a system prompt, few-shot
/// template or tool list that later requests share) are left alone; pass 0 when nothing is
/// shared. At `libra_cache_release` (not at `libra_cache_abort`) the request's blocks past
/// them are marked, from the deepest up, stopping at the first block that another open
/// request holds, that has another branch below it, or that holds a retention hint. Marked
/// blocks leave the GPU (and the host tier) before every other block and are dropped rather
/// than copied to the host, so no host-link time or allocation wait is spent on them
/// (TensorRT-LLM's `secondary_offload_min_priority` keeps low-priority blocks out of host
/// memory the same way). A later match that reads a marked block takes its mark away. Marking
/// frees nothing by itself. `libra_cache_stats.no_reuse_blocks` counts marked blocks. The
/// `VLLM` baseline ignores it, as it ignores retention hints.
///
/// Fails with LIBRA_ERR_NULL_ARGUMENT (`cache` NULL) or LIBRA_ERR_NOT_FOUND (request not open);
/// nothing changes on failure. Calling it again replaces `keep_tokens`. Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create().
#[no_mangle]
pub unsafe extern "C" fn libra_cache_expect_no_reuse(
    cache: *const libra_cache,
    request: u64,
    now_us: u64,
    keep_tokens: u32,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        let c = unsafe { cache_ref(cache) }?;
        c.cache.expect_no_reuse(request, keep_tokens, now_us)
    })
}
