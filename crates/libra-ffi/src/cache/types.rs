//! The cache handle, its enumerations and the conversions to the Rust types.
use crate::boundary::deref;
use crate::topo::{c_enum, CEnum};
use libra::cache::PolicyKind;
use libra::error::Error;
use libra::handle::{BackendChoice, Cache};
use std::ffi::CString;

/// Opaque cache handle, created by `libra_cache_create` and released by `libra_cache_free`.
pub struct libra_cache {
    pub(crate) cache: Cache,
    pub(crate) backend_name: CString,
    pub(crate) backend_reason: CString,
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
    /// The tree with KV blocks ranked by ELORA's cost model and resident adapters freed only
    /// after every KV block that may leave, the host tier kept full (pruned only for room),
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
    /// each direction one batch at a time in submission order, each taking its bytes /
    /// `link_bytes_per_us` (the two directions at once, as on full-duplex PCIe): requests are
    /// pending, waits block and allocations may be busy as on a GPU. Named "cpu-async".
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

/// Borrows the handle behind `cache`, or fails naming the argument when it is NULL.
///
/// # Safety
/// `cache` is NULL or a handle from `libra_cache_create` that was not freed, for `'a`.
pub(crate) unsafe fn cache_ref<'a>(cache: *const libra_cache) -> Result<&'a libra_cache, Error> {
    // SAFETY: as this function's contract.
    unsafe { deref(cache, "cache") }
}

pub(crate) fn policy_from(v: libra_policy_raw) -> Result<PolicyKind, Error> {
    Ok(match libra_policy::from_raw(v, "config.policy")? {
        libra_policy::LIBRA_POLICY_ELORA => PolicyKind::Elora,
        libra_policy::LIBRA_POLICY_LRU => PolicyKind::Lru,
        libra_policy::LIBRA_POLICY_VLLM => PolicyKind::Vllm,
        libra_policy::LIBRA_POLICY_SLORA => PolicyKind::Slora,
        libra_policy::LIBRA_POLICY_LIBRA => PolicyKind::Libra,
    })
}

pub(crate) fn backend_from(v: libra_backend_raw) -> Result<BackendChoice, Error> {
    Ok(match libra_backend::from_raw(v, "config.backend")? {
        libra_backend::LIBRA_BACKEND_CPU => BackendChoice::Cpu,
        libra_backend::LIBRA_BACKEND_CUDA => BackendChoice::Cuda,
        libra_backend::LIBRA_BACKEND_AUTO => BackendChoice::Auto,
        libra_backend::LIBRA_BACKEND_CPU_ASYNC => BackendChoice::CpuAsync,
    })
}
