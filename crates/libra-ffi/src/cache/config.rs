//! `libra_cache_config`: its layout, versioning and defaults, and its conversion into the
//! Rust cache's options.
use super::types::*;
use crate::boundary::{entry, slice, write_versioned, Versioned};
use crate::status::libra_status;
use crate::topo::CEnum;
use libra::backend::Segment;
use libra::cache::CacheConfig;
use libra::error::Error;
use libra::handle::CacheOptions;

/// Cache configuration. Set `struct_size = sizeof(libra_cache_config)`, fill it with
/// `libra_cache_config_default`, then change fields.
///
/// Versioning: the struct grows only by appending fields. `libra_cache_config_default` writes
/// and `libra_cache_create` reads `min(struct_size, sizeof(libra_cache_config))` bytes, so a
/// caller built against an older header keeps working and gets the defaults of the fields it
/// lacks; a `struct_size` below the first published layout (184 bytes on 64-bit targets,
/// ending at `event_capacity`) is refused.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct libra_cache_config {
    /// sizeof(libra_cache_config), set by the caller before `libra_cache_config_default`.
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
    /// Longest an allocation waits for each copy to the host in flight (its swap-outs,
    /// write-through), microseconds (default 100 ms). Loads are never waited for.
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
    /// Nonzero (a `uint8_t` holding `true` or `false`): adapter weights are registered layer by
    /// layer, every layer's the same number of bytes, so an adapter upload lands in the same
    /// layer groups as a swap-in (group g of G holds bytes g x len / G .. (g + 1) x len / G of
    /// the weights) and `libra_cache_poll_groups` / `libra_cache_group_event` report a
    /// request's adapter group by group: layer L may run once group(L) of its adapter and KV
    /// is in. Zero (the default): an upload lands whole. Callers whose `struct_size` ends
    /// before this field get the default.
    pub layered_adapters: u8,
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

/// Fills `*config` with the defaults (ELORA policy, CPU backend, 16-token blocks, 1024 GPU and
/// 4096 host blocks of 64 KiB). Set `config->struct_size = sizeof(libra_cache_config)` first:
/// only `min(struct_size, sizeof(libra_cache_config))` bytes are written and `struct_size` is
/// kept, so a struct declared from an older header (a smaller `struct_size`) is filled with
/// the fields it has and nothing past it is written. Errors: LIBRA_ERR_NULL_ARGUMENT,
/// LIBRA_ERR_INVALID_ARGUMENT (`config` misaligned, or `struct_size` below the first published
/// layout, e.g. left unset: nothing written). Thread-safe.
///
/// Pointers: `config` NULL or a writable struct of the `struct_size` it declares.
#[no_mangle]
pub unsafe extern "C" fn libra_cache_config_default(config: *mut libra_cache_config) -> libra_status {
    entry!({
        // SAFETY: `config` is NULL or holds the `struct_size` writable bytes it declares, per
        // the contract above.
        unsafe { write_versioned(config, default_config(), "config") }
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
        layered_adapters: u8::from(c.layered_adapters),
    }
}

/// The Rust cache's options from a caller's config (already read with its `struct_size`),
/// with the adopted segments copied out of the caller's array.
pub(crate) fn cache_options(cfg: &libra_cache_config) -> Result<CacheOptions, Error> {
    if cfg.event_capacity == 0 && cfg.events != 0 {
        return Err(Error::invalid("`config.event_capacity` must be positive when `config.events` is set"));
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
        layered_adapters: cfg.layered_adapters != 0,
        // The measured-slower alternative ranking stays out of the C ABI.
        rank_by_hit_density: false,
    };
    Ok(CacheOptions {
        config,
        block_bytes: cfg.block_bytes,
        gpu_blocks: cfg.gpu_blocks,
        host_blocks: cfg.host_blocks,
        backend: backend_from(cfg.backend)?,
        segments,
    })
}
