//! C ABI of the cache: configuration, creation, the request lifecycle, stepping, stats and
//! events. Thread safety: every function taking a `libra_cache *` may be called concurrently
//! from several threads on the same cache (an internal lock serialises them), except
//! `libra_cache_free`, which must not race with any other call on that cache.
use super::boundary::{deref, guard, null_arg, read_versioned, slice, write_out, write_versioned, Versioned};
use super::cache_engine::match_into;
use super::topo::{c_enum, CEnum};
use crate::status::libra_status;
use libra::backend::Segment;
use libra::cache::{CacheConfig, EventKind, PolicyKind, Readiness, RetentionHint};
use libra::error::Error;
use libra::handle::{BackendChoice, Cache, CacheOptions};
use std::ffi::{c_char, c_void, CString};

/// Opaque cache handle, created by `libra_cache_create` and released by `libra_cache_free`.
pub struct libra_cache {
    cache: Cache,
    backend_name: CString,
    backend_reason: CString,
}

/// Swap policy (`libra_cache_config.policy`).
#[allow(non_camel_case_types)]
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum libra_policy {
    /// ELORA's unified cost model over the dependency tree (the default).
    LIBRA_POLICY_ELORA = 0,
    /// Same tree and tiers, least recently used.
    LIBRA_POLICY_LRU = 1,
    /// Baseline: vLLM's separate adapter/KV regions with independent LRU.
    LIBRA_POLICY_VLLM = 2,
    /// Baseline: S-LoRA's unified pool without reuse of finished requests' KV.
    LIBRA_POLICY_SLORA = 3,
    /// The tree ranked by last use, with the host tier kept full (pruned only for room),
    /// write-through host copies of the blocks next in line to leave, and recompute-or-load
    /// from the cost hints (blocks not worth loading are not copied out).
    LIBRA_POLICY_LIBRA = 4,
}
c_enum!(
    libra_policy,
    libra_policy_raw,
    "LIBRA_POLICY_*",
    [LIBRA_POLICY_ELORA, LIBRA_POLICY_LRU, LIBRA_POLICY_VLLM, LIBRA_POLICY_SLORA, LIBRA_POLICY_LIBRA]
);

/// Backend choice (`libra_cache_config.backend`).
#[allow(non_camel_case_types)]
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum libra_backend {
    /// Host memory stands in for both tiers.
    LIBRA_BACKEND_CPU = 0,
    /// CUDA; creation fails with LIBRA_ERR_DEVICE when no device is usable.
    LIBRA_BACKEND_CUDA = 1,
    /// CUDA when usable, else CPU; `libra_cache_backend_name` says which and why.
    LIBRA_BACKEND_AUTO = 2,
    /// Host memory like LIBRA_BACKEND_CPU, but a worker thread carries out every copy later,
    /// one batch at a time in submission order, each taking its bytes / `link_bytes_per_us`:
    /// requests are pending, waits block and allocations may be busy as on a GPU. Named
    /// "cpu-async".
    LIBRA_BACKEND_CPU_ASYNC = 3,
}
c_enum!(
    libra_backend,
    libra_backend_raw,
    "LIBRA_BACKEND_*",
    [LIBRA_BACKEND_CPU, LIBRA_BACKEND_CUDA, LIBRA_BACKEND_AUTO, LIBRA_BACKEND_CPU_ASYNC]
);

/// One region of the engine's KV memory holding a piece of every block:
/// piece of block b = base + b * stride, `bytes_per_block` long.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct libra_segment {
    pub base: u64,
    pub bytes_per_block: u64,
    pub stride: u64,
}

/// Cache configuration. Fill it with `libra_cache_config_default`, then change fields.
///
/// Versioning: the struct grows only by appending fields. `libra_cache_create` reads
/// `min(struct_size, sizeof(libra_cache_config))` bytes, so a caller built against an older
/// header keeps working and gets the defaults of the fields it lacks; a `struct_size` below the
/// first published layout (184 bytes on 64-bit targets, ending at `event_capacity`) is refused.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct libra_cache_config {
    /// sizeof(libra_cache_config), set by `libra_cache_config_default`.
    pub struct_size: usize,
    /// Tokens per KV block (default 16).
    pub block_tokens: u32,
    /// GPU-tier blocks.
    pub gpu_blocks: u32,
    /// Host-tier blocks (0: no host tier).
    pub host_blocks: u32,
    /// Swap policy (default LIBRA_POLICY_ELORA).
    pub policy: libra_policy_raw,
    /// Backend (default LIBRA_BACKEND_CPU).
    pub backend: libra_backend_raw,
    /// Bytes per block when the cache owns its arena (ignored when `segments` is set).
    pub block_bytes: u64,
    /// Optional: the engine's KV memory to adopt as the GPU tier, `segment_count` entries.
    /// Borrowed: copied during `libra_cache_create`; the memory it describes must outlive the
    /// cache. NULL: the cache allocates its own arena.
    pub segments: *const libra_segment,
    pub segment_count: usize,
    /// Swap out above this GPU use, down to `swap_out_low` (default 0.8 -> 0.7).
    pub swap_out_high: f64,
    pub swap_out_low: f64,
    /// Prefetch below this GPU use, up to `swap_in_target` (default 0.6 -> 0.7).
    pub swap_in_idle: f64,
    pub swap_in_target: f64,
    /// Prune the host tier above this use, down to `host_low` (default 0.8 -> 0.7).
    pub host_high: f64,
    pub host_low: f64,
    /// vLLM baseline: share of GPU blocks reserved for adapters (default 0.2).
    pub vllm_adapter_fraction: f64,
    /// Key of the keyed 128-bit SipHash that names prefixes. Keep it secret and equal on every
    /// instance that must agree on block hashes.
    pub hash_key: [u64; 2],
    /// Host-link bandwidth in bytes per microsecond (default 50000, PCIe 5.0 x16).
    pub link_bytes_per_us: f64,
    /// Prefill throughput in tokens per microsecond; 0 disables recompute-or-load.
    pub prefill_tokens_per_us: f64,
    /// Adapter popularity window in microseconds (default 30 s).
    pub popularity_window_us: u64,
    /// Unit of idle time in the cost model, microseconds; 0 = the default (1 s).
    pub value_time_unit_us: u64,
    /// Longest an allocation waits for its own swap-outs, microseconds (default 100 ms).
    pub swap_wait_us: u64,
    /// Least time between two prefetch passes, microseconds (default 50 ms; a pass scans the
    /// tree).
    pub prefetch_interval_us: u64,
    /// Nonzero: keep a residency event log for `libra_cache_drain_events` (a `uint8_t` holding
    /// `true` or `false`, the size of a C `bool`, so that any byte is a defined value).
    pub events: u8,
    /// Events kept before the oldest are dropped (and counted in stats).
    pub event_capacity: u32,
    /// Layer-wise readiness: segments per layer group of a swap-in (default 0: one group). A
    /// swap-in lands group by group (group g = segments g x n .. (g + 1) x n - 1 of `segments`),
    /// so with segments ordered by layer the engine can run a prefill's first layers while the
    /// later ones are still being copied: see `libra_cache_poll_groups` and
    /// `libra_cache_group_event`. With one K and one V segment per layer, 2 x layers per group.
    /// Callers whose `struct_size` ends before this field get the default.
    pub segments_per_group: u32,
    /// Most blocks one write-through pass copies to the host ahead of their swap-out, under
    /// `LIBRA_POLICY_LIBRA` (default 1024; 0 disables write-through). Callers whose
    /// `struct_size` ends before this field get the default.
    pub write_through_blocks: u32,
}

/// `sizeof(libra_cache_config)` as first published (ending at `event_capacity`), on 64-bit
/// targets: the least `struct_size` accepted.
const LIBRA_CACHE_CONFIG_FIRST_SIZE: usize = 184;
// The first layout ends where the first appended field starts: nothing was inserted before it.
#[cfg(target_pointer_width = "64")]
const _: () =
    assert!(std::mem::offset_of!(libra_cache_config, segments_per_group) == LIBRA_CACHE_CONFIG_FIRST_SIZE);

// SAFETY: repr(C), `struct_size: usize` first; integers, floats and a raw pointer only
// (`events` is a `uint8_t`, not a `bool`, so no byte from C is an invalid value).
unsafe impl Versioned for libra_cache_config {
    const FIRST_SIZE: usize = LIBRA_CACHE_CONFIG_FIRST_SIZE;
    fn defaults() -> Self {
        default_config()
    }
}

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
    /// GPU KV blocks with a complete host copy (write-through), which leave at once.
    pub clean_blocks: u64,
    /// Bytes copied to the host by write-through, for blocks that stayed on the GPU.
    pub write_through_bytes: u64,
    /// Blocks that left the GPU without a copy because they were clean (also counted in
    /// `swap_out_blocks`).
    pub instant_evictions: u64,
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

/// A retention hint (`libra_cache_set_retention`). Fill it with `libra_retention_default`,
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
    /// sizeof(libra_retention), set by `libra_retention_default`.
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

/// Kind of a residency event (`libra_event.kind`).
#[allow(non_camel_case_types)]
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum libra_event_kind {
    LIBRA_EVENT_STORED = 0,
    LIBRA_EVENT_REMOVED = 1,
    LIBRA_EVENT_TO_HOST = 2,
    LIBRA_EVENT_TO_GPU = 3,
}
c_enum!(
    libra_event_kind,
    libra_event_kind_raw,
    "LIBRA_EVENT_*",
    [LIBRA_EVENT_STORED, LIBRA_EVENT_REMOVED, LIBRA_EVENT_TO_HOST, LIBRA_EVENT_TO_GPU]
);

/// One residency change. An adapter event with kind LIBRA_EVENT_REMOVED means the adapter's
/// GPU blocks were freed and may be reused at once: an engine that built its own copy of the
/// weights from those blocks keeps that copy (the library never frees it), but must stop every
/// computation reading the blocks themselves first; it frees its copy only once no running
/// batch uses it.
///
/// Frozen for the 0.x ABI: events are written as an array (`sizeof(libra_event)` apart) with
/// no `struct_size`, so the size and fields never change; richer events would come from a new
/// drain function with a new, `struct_size`-versioned struct. A `kind` outside
/// `libra_event_kind` is never written.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct libra_event {
    pub kind: libra_event_kind_raw,
    /// True when the event concerns an adapter's weights rather than a KV block.
    pub adapter: bool,
    pub adapter_id: u64,
    /// The block's 128-bit prefix hash, low and high halves.
    pub block_hash_lo: u64,
    pub block_hash_hi: u64,
}

// The frozen results keep their published layouts (64-bit targets; ffi_tests/cache_compat.c
// checks the same sizes from C).
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<libra_match>() == 48);
    assert!(std::mem::offset_of!(libra_match, ready) == 40);
    assert!(std::mem::size_of::<libra_step_report>() == 20);
    assert!(std::mem::size_of::<libra_event>() == 32);
    assert!(std::mem::offset_of!(libra_event, block_hash_hi) == 24);
};

impl libra_cache {
    /// Wraps a cache built in Rust (over any backend, e.g. an engine's own copy engine or a
    /// test's fault-injecting one) in a C handle for `libra_cache_*`; free it with
    /// `libra_cache_free` after `Box::into_raw`.
    pub fn from_cache(cache: Cache) -> Result<Box<Self>, Error> {
        let backend_name = CString::new(cache.backend_name()?).unwrap_or_default();
        let backend_reason = CString::new(cache.backend_reason()).unwrap_or_default();
        Ok(Box::new(libra_cache { cache, backend_name, backend_reason }))
    }
    /// The Rust cache behind the handle.
    pub fn cache(&self) -> &Cache {
        &self.cache
    }
}

pub(super) fn cache_ref<'a>(cache: *const libra_cache) -> Result<&'a libra_cache, Error> {
    // SAFETY: the caller passes NULL or a handle from libra_cache_create that was not freed.
    unsafe { deref(cache, "cache") }
}

fn policy_from(v: libra_policy_raw) -> Result<PolicyKind, Error> {
    Ok(match libra_policy::from_raw(v, "config.policy")? {
        libra_policy::LIBRA_POLICY_ELORA => PolicyKind::Elora,
        libra_policy::LIBRA_POLICY_LRU => PolicyKind::Lru,
        libra_policy::LIBRA_POLICY_VLLM => PolicyKind::Vllm,
        libra_policy::LIBRA_POLICY_SLORA => PolicyKind::Slora,
        libra_policy::LIBRA_POLICY_LIBRA => PolicyKind::Libra,
    })
}

fn backend_from(v: libra_backend_raw) -> Result<BackendChoice, Error> {
    Ok(match libra_backend::from_raw(v, "config.backend")? {
        libra_backend::LIBRA_BACKEND_CPU => BackendChoice::Cpu,
        libra_backend::LIBRA_BACKEND_CUDA => BackendChoice::Cuda,
        libra_backend::LIBRA_BACKEND_AUTO => BackendChoice::Auto,
        libra_backend::LIBRA_BACKEND_CPU_ASYNC => BackendChoice::CpuAsync,
    })
}

/// Fills `*config` with the defaults (ELORA policy, CPU backend, 16-token blocks, 1024 GPU and
/// 4096 host blocks of 64 KiB). Writes the whole current `sizeof(libra_cache_config)`: a
/// caller must pass a struct declared from the header of the library it runs with (a caller
/// built against an older header fills its struct itself and sets its own `struct_size`).
/// Returns LIBRA_ERR_NULL_ARGUMENT when `config` is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_config_default(config: *mut libra_cache_config) -> libra_status {
    guard("libra_cache_config_default", || {
        if config.is_null() {
            return Err(null_arg("config"));
        }
        // SAFETY: checked non-NULL; the caller provides a writable libra_cache_config.
        unsafe { write_out(config, default_config()) };
        Ok(())
    })
}

fn default_config() -> libra_cache_config {
    let d = CacheOptions::default();
    let c = &d.config;
    libra_cache_config {
        struct_size: std::mem::size_of::<libra_cache_config>(),
        block_tokens: c.block_tokens,
        gpu_blocks: d.gpu_blocks,
        host_blocks: d.host_blocks,
        policy: libra_policy::LIBRA_POLICY_ELORA.raw(),
        backend: libra_backend::LIBRA_BACKEND_CPU.raw(),
        block_bytes: d.block_bytes,
        segments: std::ptr::null(),
        segment_count: 0,
        swap_out_high: c.swap_out_high,
        swap_out_low: c.swap_out_low,
        swap_in_idle: c.swap_in_idle,
        swap_in_target: c.swap_in_target,
        host_high: c.host_high,
        host_low: c.host_low,
        vllm_adapter_fraction: c.vllm_adapter_fraction,
        hash_key: [c.hash_key.0, c.hash_key.1],
        link_bytes_per_us: c.link_bytes_per_us,
        prefill_tokens_per_us: c.prefill_tokens_per_us,
        popularity_window_us: c.popularity_window_us,
        value_time_unit_us: c.value_time_unit_us,
        swap_wait_us: c.swap_wait_us,
        prefetch_interval_us: c.prefetch_interval_us,
        events: u8::from(c.events),
        event_capacity: c.event_capacity as u32,
        segments_per_group: c.segments_per_group,
        write_through_blocks: c.write_through_blocks,
    }
}

/// Creates a cache. `config` is borrowed for the call (its `segments` array is copied); only
/// its first `struct_size` bytes are read.
/// On success `*out` receives a new handle owned by the caller, to be released with
/// `libra_cache_free`. Fails with LIBRA_ERR_INVALID_ARGUMENT naming the bad field (including
/// more than 2^26 blocks in a tier, or an owned arena over 2^40 bytes), or LIBRA_ERR_DEVICE
/// when the CUDA backend was requested and is unavailable. Under CUDA the cache works in the
/// device's primary context, and no call changes the calling thread's current context.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_create(
    config: *const libra_cache_config,
    out: *mut *mut libra_cache,
) -> libra_status {
    guard("libra_cache_create", || {
        // SAFETY: NULL or a valid config, per the contract above.
        let cfg = &unsafe { read_versioned(config, "config") }?;
        if out.is_null() {
            return Err(null_arg("out"));
        }
        if cfg.event_capacity == 0 && cfg.events != 0 {
            return Err(Error::invalid(
                "`config.event_capacity` must be positive when `config.events` is set",
            ));
        }
        let segments = if cfg.segment_count > 0 || !cfg.segments.is_null() {
            if cfg.segment_count > 4096 {
                return Err(Error::invalid("`config.segment_count` must be at most 4096"));
            }
            // SAFETY: the caller passes `segment_count` readable segments.
            let s = unsafe { slice(cfg.segments, cfg.segment_count, "config.segments") }?;
            if s.is_empty() {
                return Err(Error::invalid("`config.segments` is set but `config.segment_count` is 0"));
            }
            Some(
                s.iter()
                    .map(|x| Segment { base: x.base, bytes_per_block: x.bytes_per_block, stride: x.stride })
                    .collect(),
            )
        } else {
            None
        };
        let config = CacheConfig {
            block_tokens: cfg.block_tokens,
            policy: policy_from(cfg.policy)?,
            swap_out_high: cfg.swap_out_high,
            swap_out_low: cfg.swap_out_low,
            swap_in_idle: cfg.swap_in_idle,
            swap_in_target: cfg.swap_in_target,
            host_high: cfg.host_high,
            host_low: cfg.host_low,
            vllm_adapter_fraction: cfg.vllm_adapter_fraction,
            hash_key: (cfg.hash_key[0], cfg.hash_key[1]),
            link_bytes_per_us: cfg.link_bytes_per_us,
            prefill_tokens_per_us: cfg.prefill_tokens_per_us,
            popularity_window_us: cfg.popularity_window_us,
            value_time_unit_us: cfg.value_time_unit_us,
            swap_wait_us: cfg.swap_wait_us,
            prefetch_interval_us: cfg.prefetch_interval_us,
            events: cfg.events != 0,
            event_capacity: cfg.event_capacity.max(1) as usize,
            segments_per_group: cfg.segments_per_group,
            write_through_blocks: cfg.write_through_blocks,
        };
        let opts = CacheOptions {
            config,
            block_bytes: cfg.block_bytes,
            gpu_blocks: cfg.gpu_blocks,
            host_blocks: cfg.host_blocks,
            backend: backend_from(cfg.backend)?,
            segments,
        };
        let handle = libra_cache::from_cache(Cache::new(opts)?)?;
        // SAFETY: checked non-NULL.
        unsafe { write_out(out, Box::into_raw(handle)) };
        Ok(())
    })
}

/// Releases a cache and everything it owns, including open requests and copies in flight
/// (waited for first). NULL is a no-op. Must not race with any other call on this cache.
#[no_mangle]
pub extern "C" fn libra_cache_free(cache: *mut libra_cache) {
    if cache.is_null() {
        return;
    }
    let _ = guard("libra_cache_free", || {
        // SAFETY: a handle from libra_cache_create, freed once, per the contract.
        drop(unsafe { Box::from_raw(cache) });
        Ok(())
    });
}

/// Name of the backend moving the bytes ("cpu" or "cuda"), owned by the cache and valid until
/// `libra_cache_free`. NULL when `cache` is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_backend_name(cache: *const libra_cache) -> *const c_char {
    match cache_ref(cache) {
        Ok(c) => c.backend_name.as_ptr(),
        Err(_) => std::ptr::null(),
    }
}

/// Why this backend was chosen (e.g. why `auto` fell back to CPU). Owned by the cache, valid
/// until `libra_cache_free`. NULL when `cache` is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_backend_reason(cache: *const libra_cache) -> *const c_char {
    match cache_ref(cache) {
        Ok(c) => c.backend_reason.as_ptr(),
        Err(_) => std::ptr::null(),
    }
}

/// Registers adapter `adapter_id`: the library copies `weights_len` bytes from `weights` (the
/// caller keeps ownership) into its host store and loads them into pool blocks on first use.
/// `rank` is the LoRA rank, or LIBRA_RANK_UNKNOWN: a hint reported back by
/// `libra_cache_adapter_info`, used in no decision. `now` is the engine clock in microseconds.
/// Errors: LIBRA_ERR_ALREADY_EXISTS, LIBRA_ERR_INVALID_ARGUMENT (empty weights,
/// larger than the pool, or 2^20 adapters already registered). Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_register_adapter(
    cache: *const libra_cache,
    adapter_id: u64,
    weights: *const c_void,
    weights_len: usize,
    rank: u32,
    now: u64,
) -> libra_status {
    guard("libra_cache_register_adapter", || {
        let c = cache_ref(cache)?;
        // SAFETY: the caller passes `weights_len` readable bytes.
        let w = unsafe { slice(weights as *const u8, weights_len, "weights") }?;
        c.cache.register_adapter(adapter_id, w, rank, now)
    })
}

/// Unregisters an adapter and drops every KV block computed under it. LIBRA_ERR_BUSY while
/// an open request or a copy uses it; LIBRA_ERR_NOT_FOUND for an unknown id. Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_unregister_adapter(cache: *const libra_cache, adapter_id: u64) -> libra_status {
    guard("libra_cache_unregister_adapter", || cache_ref(cache)?.cache.unregister_adapter(adapter_id))
}

/// Copies the GPU block ids holding `adapter_id`'s weights, in the order their bytes run (the
/// layout is under `libra_cache_adapter_info`), into `blocks_out` (capacity
/// `capacity`) and their number into `*count_out`. Fails with LIBRA_ERR_INVALID_ARGUMENT when
/// the capacity is too small (nothing written). Empty while the adapter is not resident.
/// `blocks_out` may be NULL only when `capacity` is 0. Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_adapter_blocks(
    cache: *const libra_cache,
    adapter_id: u64,
    blocks_out: *mut u32,
    capacity: usize,
    count_out: *mut usize,
) -> libra_status {
    guard("libra_cache_adapter_blocks", || {
        let c = cache_ref(cache)?;
        if count_out.is_null() {
            return Err(null_arg("count_out"));
        }
        let blocks = c.cache.adapter_blocks(adapter_id)?;
        copy_blocks_out(&blocks, blocks_out, capacity, "blocks_out")?;
        // SAFETY: checked non-NULL.
        unsafe { write_out(count_out, blocks.len()) };
        Ok(())
    })
}

pub(super) fn copy_blocks_out(
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
    // SAFETY: the caller provides `capacity` writable ids; blocks.len() <= capacity.
    unsafe { std::ptr::copy_nonoverlapping(blocks.as_ptr(), out, blocks.len()) };
    Ok(())
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
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub extern "C" fn libra_cache_match(
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
    guard("libra_cache_match", || {
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
    })
}

/// Allocates ceil(n_tokens / block_tokens) GPU blocks for `request`, evicting or swapping out
/// unpinned cached blocks when the tier is full. Ids go to `blocks_out` (room for `capacity`),
/// their number to `*count_out`. Errors: LIBRA_ERR_NOT_FOUND (request not open),
/// LIBRA_ERR_OUT_OF_MEMORY (everything pinned: nothing allocated), LIBRA_ERR_BUSY (swap-outs
/// still in flight; retry after `libra_cache_step`), LIBRA_ERR_INVALID_ARGUMENT (capacity too
/// small, or more blocks than the whole GPU tier: nothing allocated). Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_allocate(
    cache: *const libra_cache,
    request: u64,
    n_tokens: usize,
    now: u64,
    blocks_out: *mut u32,
    capacity: usize,
    count_out: *mut usize,
) -> libra_status {
    guard("libra_cache_allocate", || {
        let c = cache_ref(cache)?;
        if count_out.is_null() {
            return Err(null_arg("count_out"));
        }
        let need = n_tokens.div_ceil(c.cache.block_tokens()?);
        if need > capacity {
            return Err(Error::invalid(format!("`capacity` is {capacity} but {need} blocks are needed")));
        }
        if blocks_out.is_null() && need > 0 {
            return Err(null_arg("blocks_out"));
        }
        let blocks = c.cache.allocate(request, n_tokens, now)?;
        copy_blocks_out(&blocks, blocks_out, capacity, "blocks_out")?;
        // SAFETY: checked non-NULL.
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
#[no_mangle]
pub extern "C" fn libra_cache_commit(
    cache: *const libra_cache,
    request: u64,
    tokens: *const u32,
    n_tokens: usize,
    now: u64,
    shared_out: *mut usize,
) -> libra_status {
    guard("libra_cache_commit", || {
        let c = cache_ref(cache)?;
        // SAFETY: the caller passes `n_tokens` readable ids.
        let t = unsafe { slice(tokens, n_tokens, "tokens") }?;
        let shared = c.cache.commit(request, t, now)?;
        if !shared_out.is_null() {
            // SAFETY: non-NULL, provided by the caller.
            unsafe { write_out(shared_out, shared) };
        }
        Ok(())
    })
}

/// Ends a request: unpins its blocks, frees the ones it did not share; the request id becomes
/// invalid (a second release gives LIBRA_ERR_NOT_FOUND). Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_release(cache: *const libra_cache, request: u64, now: u64) -> libra_status {
    guard("libra_cache_release", || cache_ref(cache)?.cache.release(request, now))
}

/// Ends a failed request like `libra_cache_release`, and drops the blocks it shared that no
/// other request uses, since their contents may be incomplete. Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_abort(cache: *const libra_cache, request: u64, now: u64) -> libra_status {
    guard("libra_cache_abort", || cache_ref(cache)?.cache.abort(request, now))
}

/// Fills `*hint` with the defaults: priority 1, no duration, no expected return (so the caller
/// must set `duration_us` or `expect_back_us` before use). Returns LIBRA_ERR_NULL_ARGUMENT when
/// `hint` is NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn libra_retention_default(hint: *mut libra_retention) -> libra_status {
    guard("libra_retention_default", || {
        if hint.is_null() {
            return Err(null_arg("hint"));
        }
        // SAFETY: checked non-NULL; the caller provides a writable libra_retention.
        unsafe { write_out(hint, libra_retention::defaults()) };
        Ok(())
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
#[no_mangle]
pub extern "C" fn libra_cache_set_retention(
    cache: *const libra_cache,
    request: u64,
    now_us: u64,
    hint: *const libra_retention,
) -> libra_status {
    guard("libra_cache_set_retention", || {
        let c = cache_ref(cache)?;
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

fn readiness(r: Readiness) -> libra_readiness {
    match r {
        Readiness::Ready => libra_readiness::LIBRA_READY,
        Readiness::Pending => libra_readiness::LIBRA_PENDING,
        Readiness::Failed(_) => libra_readiness::LIBRA_FAILED,
    }
}

/// Non-blocking: whether the request's blocks are usable. `*out` receives a libra_readiness.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_poll(
    cache: *const libra_cache,
    request: u64,
    out: *mut libra_readiness,
) -> libra_status {
    guard("libra_cache_poll", || {
        let c = cache_ref(cache)?;
        if out.is_null() {
            return Err(null_arg("out"));
        }
        let r = c.cache.poll(request)?;
        // SAFETY: checked non-NULL.
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
#[no_mangle]
pub extern "C" fn libra_cache_wait(
    cache: *const libra_cache,
    request: u64,
    timeout_us: u64,
    out: *mut libra_readiness,
) -> libra_status {
    guard("libra_cache_wait", || {
        let c = cache_ref(cache)?;
        if out.is_null() {
            return Err(null_arg("out"));
        }
        let r = c.cache.wait(request, timeout_us)?;
        // SAFETY: checked non-NULL.
        unsafe { write_out(out, readiness(r)) };
        Ok(())
    })
}

/// `*event_out` receives a CUevent (as void *) that the engine's stream can wait on before
/// using the request's blocks, or NULL when nothing is pending or the backend has no events
/// (CPU). The event is owned by the cache and stays a valid CUevent until the cache is freed;
/// once the request's copies have completed the cache may record later copies on it, so make
/// the stream wait on it right away rather than keeping it. Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_wait_event(
    cache: *const libra_cache,
    request: u64,
    event_out: *mut *mut c_void,
) -> libra_status {
    guard("libra_cache_wait_event", || {
        let c = cache_ref(cache)?;
        if event_out.is_null() {
            return Err(null_arg("event_out"));
        }
        let e = c.cache.wait_event(request)?;
        // SAFETY: checked non-NULL.
        unsafe { write_out(event_out, e) };
        Ok(())
    })
}

/// Layer-wise readiness, non-blocking: `*readiness_out` receives the request's libra_readiness
/// (as `libra_cache_poll`), `*ready_groups_out` how many leading layer groups of its cached
/// blocks are usable now (all of them when LIBRA_READY, 0 when LIBRA_FAILED), and
/// `*groups_out` (may be NULL) the number of layer groups (`segments_per_group` of the config;
/// at least 1). The engine may run layer group g of the request's prefill once g < ready
/// groups; commit still waits for LIBRA_READY. Should a later group's copy fail, the request
/// turns LIBRA_FAILED and whatever was computed from it must be discarded with an abort.
/// Errors: LIBRA_ERR_NULL_ARGUMENT, LIBRA_ERR_NOT_FOUND (request not open). Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_poll_groups(
    cache: *const libra_cache,
    request: u64,
    readiness_out: *mut libra_readiness,
    ready_groups_out: *mut u32,
    groups_out: *mut u32,
) -> libra_status {
    guard("libra_cache_poll_groups", || {
        let c = cache_ref(cache)?;
        if readiness_out.is_null() {
            return Err(null_arg("readiness_out"));
        }
        if ready_groups_out.is_null() {
            return Err(null_arg("ready_groups_out"));
        }
        let r = c.cache.poll_groups(request)?;
        // SAFETY: checked non-NULL (groups_out just below).
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
/// kernels of layer group `group` (0-based) read the request's cached blocks, or NULL when
/// nothing is pending or the backend has no events (CPU). Like `libra_cache_wait_event`'s, the
/// event is owned by the cache, stays a valid CUevent until the cache is freed, and may be
/// recorded again for later copies once the request's copies have completed: make the stream
/// wait on it right away (e.g. `cuStreamWaitEvent` before launching that group's layers)
/// rather than keeping it. Errors: LIBRA_ERR_NULL_ARGUMENT, LIBRA_ERR_NOT_FOUND (request not
/// open), LIBRA_ERR_INVALID_ARGUMENT (`group` is not below the number of layer groups).
/// Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_group_event(
    cache: *const libra_cache,
    request: u64,
    group: u32,
    event_out: *mut *mut c_void,
) -> libra_status {
    guard("libra_cache_group_event", || {
        let c = cache_ref(cache)?;
        if event_out.is_null() {
            return Err(null_arg("event_out"));
        }
        let e = c.cache.group_event(request, group)?;
        // SAFETY: checked non-NULL.
        unsafe { write_out(event_out, e) };
        Ok(())
    })
}

/// One scheduler iteration: finishes completed copies, swaps out above the high watermark,
/// prefetches below the idle mark unless `prefill_bound`, prunes the host tier. `batch_size` is
/// the running batch. `report_out` may be NULL. Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_step(
    cache: *const libra_cache,
    now: u64,
    batch_size: u32,
    prefill_bound: bool,
    report_out: *mut libra_step_report,
) -> libra_status {
    guard("libra_cache_step", || {
        let r = cache_ref(cache)?.cache.step(now, batch_size, prefill_bound)?;
        if !report_out.is_null() {
            let v = libra_step_report {
                swapped_out: r.swapped_out,
                swapped_in: r.swapped_in,
                adapters_loaded: r.adapters_loaded,
                pruned: r.pruned,
                completed_batches: r.completed_batches,
            };
            // SAFETY: non-NULL, provided by the caller.
            unsafe { write_out(report_out, v) };
        }
        Ok(())
    })
}

/// Updates the engine's cost hints: prefill throughput (tokens per microsecond, 0 disables
/// recompute-or-load) and host-link bandwidth (bytes per microsecond, positive). Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_set_cost_hints(
    cache: *const libra_cache,
    prefill_tokens_per_us: f64,
    link_bytes_per_us: f64,
) -> libra_status {
    guard("libra_cache_set_cost_hints", || {
        cache_ref(cache)?.cache.set_cost_hints(prefill_tokens_per_us, link_bytes_per_us)
    })
}

/// Fills `*out` with statistics. Set `out->struct_size = sizeof(libra_cache_stats)` first: only
/// `min(struct_size, sizeof(libra_cache_stats))` bytes are written and `struct_size` is kept,
/// so a struct from an older header gets the fields it has. Errors: LIBRA_ERR_NULL_ARGUMENT,
/// LIBRA_ERR_INVALID_ARGUMENT (`out` misaligned, or `struct_size` below the first published
/// layout: nothing written). Cheap enough to call every scheduler iteration: the cost grows
/// with the number of registered adapters, not with the number of cached blocks. Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_get_stats(
    cache: *const libra_cache,
    out: *mut libra_cache_stats,
) -> libra_status {
    guard("libra_cache_get_stats", || {
        let c = cache_ref(cache)?;
        // Checked before the stats are gathered, so a bad struct fails early; no reference to
        // the caller's struct is made, as it may be an older, smaller one.
        // SAFETY: NULL or `struct_size` readable bytes, per the contract above.
        unsafe { super::boundary::versioned_size(out, "out") }?;
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
        };
        // SAFETY: `out` holds `struct_size` writable bytes, per the contract above.
        unsafe { write_versioned(out, full, "out") }
    })
}

/// `*addr_out` receives the address of block `block`'s piece in segment `segment` (0 for an
/// owned arena): a device pointer under CUDA, a host pointer on the CPU backend. The memory is
/// owned by the cache (or the engine, for adopted segments). Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_block_address(
    cache: *const libra_cache,
    block: u32,
    segment: usize,
    addr_out: *mut u64,
) -> libra_status {
    guard("libra_cache_block_address", || {
        let c = cache_ref(cache)?;
        if addr_out.is_null() {
            return Err(null_arg("addr_out"));
        }
        let a = c.cache.block_address(block, segment)?;
        // SAFETY: checked non-NULL.
        unsafe { write_out(addr_out, a) };
        Ok(())
    })
}

/// Moves up to `capacity` of the oldest residency events into `events_out` and their number
/// into `*count_out` (0 when the log is off). Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_drain_events(
    cache: *const libra_cache,
    events_out: *mut libra_event,
    capacity: usize,
    count_out: *mut usize,
) -> libra_status {
    guard("libra_cache_drain_events", || {
        let c = cache_ref(cache)?;
        if count_out.is_null() {
            return Err(null_arg("count_out"));
        }
        if events_out.is_null() && capacity > 0 {
            return Err(null_arg("events_out"));
        }
        let events = c.cache.drain_events(capacity)?;
        for (i, e) in events.iter().enumerate() {
            let kind = match e.kind {
                EventKind::Stored => libra_event_kind::LIBRA_EVENT_STORED,
                EventKind::Removed => libra_event_kind::LIBRA_EVENT_REMOVED,
                EventKind::ToHost => libra_event_kind::LIBRA_EVENT_TO_HOST,
                EventKind::ToGpu => libra_event_kind::LIBRA_EVENT_TO_GPU,
            };
            let v = libra_event {
                kind: kind.raw(),
                adapter: e.adapter,
                adapter_id: e.adapter_id,
                block_hash_lo: e.block_hash as u64,
                block_hash_hi: (e.block_hash >> 64) as u64,
            };
            // SAFETY: i < events.len() <= capacity writable slots.
            unsafe { write_out(events_out.add(i), v) };
        }
        // SAFETY: checked non-NULL.
        unsafe { write_out(count_out, events.len()) };
        Ok(())
    })
}

/// Verifies every internal invariant (blocks owned once, tier counts, the dependency rule);
/// LIBRA_ERR_PANIC with a description when one is broken. For tests and debug builds: O(n).
/// Thread-safe.
#[no_mangle]
pub extern "C" fn libra_cache_check(cache: *const libra_cache) -> libra_status {
    guard("libra_cache_check", || cache_ref(cache)?.cache.check_invariants())
}
