//! `Cache`: the core, its backend and one lock, so that one cache can be shared by threads.
//! Every method takes the lock for the duration of the call, except `wait`, which releases it
//! while it blocks; a panic inside poisons the cache and later calls report
//! `LIBRA_ERR_POISONED`.
use crate::backend::cpu::CpuBackend;
use crate::backend::cpu_async::AsyncCpuBackend;
use crate::backend::{cuda, deadline_after, Backend, Segment};
use crate::cache::config::MAX_BLOCKS_PER_TIER;
use crate::cache::{
    AdapterInfo, CacheConfig, CacheCore, Event, GroupReadiness, MatchResult, Readiness, Stats, StepReport,
};
use crate::error::{Error, Result, Status};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// Which backend moves the bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BackendChoice {
    Cpu,
    /// Host memory, with copies completed later by a worker thread paced at the config's
    /// `link_bytes_per_us` (see `backend::cpu_async`).
    CpuAsync,
    Cuda,
    /// CUDA when a device is usable, else CPU (the reason is kept for `backend_reason`).
    Auto,
}

/// Geometry and backend of a new cache.
#[derive(Debug, Clone)]
pub struct CacheOptions {
    pub config: CacheConfig,
    /// Bytes per block when the cache owns its arena (ignored with `segments`).
    pub block_bytes: u64,
    pub gpu_blocks: u32,
    pub host_blocks: u32,
    pub backend: BackendChoice,
    /// The engine's own KV memory, adopted as the GPU tier (None: the cache owns an arena).
    /// The memory must stay valid and unmoved for the cache's lifetime: device pointers for the
    /// CUDA backend, host pointers for the CPU backend. Only [`Cache::adopt`] (unsafe) takes
    /// them: [`Cache::new`] refuses options that carry segments.
    pub segments: Option<Vec<Segment>>,
}

impl Default for CacheOptions {
    fn default() -> Self {
        CacheOptions {
            config: CacheConfig::default(),
            block_bytes: 1 << 16,
            gpu_blocks: 1024,
            host_blocks: 4096,
            backend: BackendChoice::Cpu,
            segments: None,
        }
    }
}

/// Largest arena one cache may allocate on the CPU backend, and largest host tier on any
/// backend, to reject absurd sizes up front.
const MAX_CPU_ARENA_BYTES: u64 = 1 << 40;

struct Inner {
    core: CacheCore,
    io: Box<dyn Backend>,
}

/// A thread-safe cache.
pub struct Cache {
    inner: Mutex<Inner>,
    backend_reason: String,
}

impl Cache {
    /// A cache over its own arena, on the backend the options choose. Fails with
    /// `LIBRA_ERR_INVALID_ARGUMENT` when `opts.segments` is set: adopting raw addresses is
    /// [`Cache::adopt`]'s job, because only the caller can vouch for them.
    pub fn new(opts: CacheOptions) -> Result<Self> {
        if opts.segments.is_some() {
            return Err(Error::invalid(
                "`segments` is set: adopting the engine's memory is unsafe, use `Cache::adopt`",
            ));
        }
        Self::build(opts)
    }

    /// A cache whose GPU tier is the engine's memory described by `opts.segments` (with
    /// `segments: None` it is [`Cache::new`]).
    ///
    /// # Safety
    /// Every segment's `bytes_per_block` bytes at `base + b * stride`, for each block `b` below
    /// `opts.gpu_blocks`, must be memory the chosen backend can address (device memory for
    /// CUDA, host memory for the CPU backends) that stays valid, unmoved and otherwise unused
    /// while the cache lives: the cache reads and writes it without further checks.
    pub unsafe fn adopt(opts: CacheOptions) -> Result<Self> {
        Self::build(opts)
    }

    /// Both constructors; the adopted memory, if any, is vouched for by `adopt`'s caller.
    fn build(opts: CacheOptions) -> Result<Self> {
        opts.config.validate()?;
        // Checked before the backend allocates its tiers, not only by the core after.
        if opts.gpu_blocks > MAX_BLOCKS_PER_TIER || opts.host_blocks > MAX_BLOCKS_PER_TIER {
            return Err(Error::invalid(format!(
                "`gpu_blocks` ({}) and `host_blocks` ({}) must each be at most {MAX_BLOCKS_PER_TIER}",
                opts.gpu_blocks, opts.host_blocks
            )));
        }
        // Named here: the backends see only a tier layout and would report `blocks`.
        if opts.gpu_blocks == 0 {
            return Err(Error::invalid("`gpu_blocks` must be at least 1"));
        }
        // Adopted segments set the block size; the host tier is ours to allocate either way.
        let (block_bytes, size_name) = match &opts.segments {
            Some(segments) => (
                segments.iter().fold(0u128, |sum, s| sum + s.bytes_per_block as u128),
                "the segments' block size",
            ),
            None => (opts.block_bytes as u128, "`block_bytes`"),
        };
        let host_bytes = block_bytes * opts.host_blocks as u128;
        if host_bytes > MAX_CPU_ARENA_BYTES as u128 {
            return Err(Error::invalid(format!(
                "`host_blocks` ({}) x {size_name} ({block_bytes}) = {host_bytes} bytes exceeds the limit of {MAX_CPU_ARENA_BYTES}",
                opts.host_blocks
            )));
        }
        let (io, reason): (Box<dyn Backend>, String) = match opts.backend {
            BackendChoice::Cpu => (cpu_backend(&opts)?, "cpu backend requested".into()),
            BackendChoice::CpuAsync => (
                Box::new(AsyncCpuBackend::new(cpu_host_backend(&opts)?, opts.config.link_bytes_per_us)?),
                "cpu backend with asynchronous copies requested".into(),
            ),
            BackendChoice::Cuda => (cuda_backend(&opts)?, "cuda backend requested".into()),
            BackendChoice::Auto => match cuda::device_count() {
                Ok(n) if n > 0 => match cuda_backend(&opts) {
                    Ok(b) => (b, format!("auto: {n} CUDA device(s) found")),
                    Err(e) => (cpu_backend(&opts)?, format!("auto: fell back to cpu ({})", e.message)),
                },
                Ok(_) => (cpu_backend(&opts)?, "auto: fell back to cpu (no CUDA device)".into()),
                Err(e) => (cpu_backend(&opts)?, format!("auto: fell back to cpu ({})", e.message)),
            },
        };
        Self::with_backend(opts.config, io, reason)
    }

    /// A cache over any backend (a custom one, a fault-injecting wrapper, a timing model).
    pub fn with_backend(config: CacheConfig, io: Box<dyn Backend>, reason: String) -> Result<Self> {
        let layout = io.gpu_layout();
        let core = CacheCore::new(config, layout.block_bytes(), layout.blocks(), io.host_blocks())?;
        Ok(Cache { inner: Mutex::new(Inner { core, io }), backend_reason: reason })
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| {
            Error::new(
                Status::LIBRA_ERR_POISONED,
                "an earlier call panicked inside this cache; free it and create a new one",
            )
        })
    }

    pub fn backend_name(&self) -> Result<String> {
        Ok(self.lock()?.io.name().to_string())
    }
    pub fn backend_reason(&self) -> &str {
        &self.backend_reason
    }
    pub fn block_tokens(&self) -> Result<usize> {
        Ok(self.lock()?.core.block_tokens())
    }
    pub fn block_bytes(&self) -> Result<u64> {
        Ok(self.lock()?.io.gpu_layout().block_bytes())
    }

    pub fn register_adapter(&self, id: u64, weights: &[u8], rank: u32, now: u64) -> Result<()> {
        self.lock()?.core.register_adapter(id, weights, rank, now)
    }
    pub fn unregister_adapter(&self, id: u64) -> Result<()> {
        self.lock()?.core.unregister_adapter(id)
    }
    pub fn adapter_blocks(&self, id: u64) -> Result<Vec<u32>> {
        self.lock()?.core.adapter_gpu_blocks(id)
    }
    pub fn match_prefix(
        &self,
        adapter: u64,
        namespace: u64,
        tokens: &[u32],
        now: u64,
    ) -> Result<MatchResult> {
        let mut g = self.lock()?;
        let Inner { core, io } = &mut *g;
        core.match_prefix(io.as_mut(), adapter, namespace, tokens, now)
    }
    /// `match_prefix` leaving at least `min_uncached` tokens uncached.
    pub fn match_prefix_leaving(
        &self,
        adapter: u64,
        namespace: u64,
        tokens: &[u32],
        min_uncached: usize,
        now: u64,
    ) -> Result<MatchResult> {
        let mut g = self.lock()?;
        let Inner { core, io } = &mut *g;
        core.match_prefix_leaving(io.as_mut(), adapter, namespace, tokens, min_uncached, now)
    }
    pub fn adapter_info(&self, id: u64) -> Result<AdapterInfo> {
        self.lock()?.core.adapter_info(id)
    }
    pub fn allocate(&self, request: u64, n_tokens: usize, now: u64) -> Result<Vec<u32>> {
        let mut g = self.lock()?;
        let Inner { core, io } = &mut *g;
        core.allocate(io.as_mut(), request, n_tokens, now)
    }
    pub fn commit(&self, request: u64, tokens: &[u32], now: u64) -> Result<usize> {
        let mut g = self.lock()?;
        let Inner { core, io } = &mut *g;
        // Finish completed copies first, so a block that has arrived does not make it busy.
        core.poll_inflight(io.as_mut());
        core.commit(request, tokens, now)
    }
    pub fn release(&self, request: u64, now: u64) -> Result<()> {
        let mut g = self.lock()?;
        let Inner { core, io } = &mut *g;
        core.release(io.as_mut(), request, now)
    }
    pub fn set_retention(&self, request: u64, hint: crate::cache::RetentionHint, now: u64) -> Result<()> {
        self.lock()?.core.set_retention(request, hint, now)
    }
    pub fn expect_no_reuse(&self, request: u64, keep_tokens: u32, now: u64) -> Result<()> {
        self.lock()?.core.expect_no_reuse(request, keep_tokens, now)
    }
    pub fn abort(&self, request: u64, now: u64) -> Result<()> {
        let mut g = self.lock()?;
        let Inner { core, io } = &mut *g;
        core.abort(io.as_mut(), request, now)
    }
    pub fn poll(&self, request: u64) -> Result<Readiness> {
        let mut g = self.lock()?;
        let Inner { core, io } = &mut *g;
        core.poll(io.as_mut(), request)
    }
    /// Blocks until the request's copies complete or `timeout_us` passes, with the lock
    /// released while it blocks, so other threads keep using the cache meanwhile.
    pub fn wait(&self, request: u64, timeout_us: u64) -> Result<Readiness> {
        let deadline = deadline_after(timeout_us);
        loop {
            let waiters = {
                let mut g = self.lock()?;
                let Inner { core, io } = &mut *g;
                let readiness = core.poll(io.as_mut(), request)?;
                if readiness != Readiness::Pending || Instant::now() >= deadline {
                    return Ok(readiness);
                }
                let waiters = core.request_waiters(io.as_ref(), request)?;
                if waiters.is_empty() {
                    // Nothing completes these copies but a later call on this cache.
                    return Ok(readiness);
                }
                waiters
            };
            // A copy that finishes lets the loop re-poll: the request may be released or
            // aborted meanwhile by another thread, which poll then reports.
            for w in &waiters {
                if !w.wait_until(deadline) {
                    break;
                }
            }
        }
    }
    pub fn wait_event(&self, request: u64) -> Result<*mut std::ffi::c_void> {
        let g = self.lock()?;
        g.core.wait_event(g.io.as_ref(), request)
    }
    /// Readiness per layer group (see `CacheCore::poll_groups`).
    pub fn poll_groups(&self, request: u64) -> Result<GroupReadiness> {
        let mut g = self.lock()?;
        let Inner { core, io } = &mut *g;
        core.poll_groups(io.as_mut(), request)
    }
    /// The event to wait on before layer group `group` reads the request's blocks, or NULL.
    pub fn group_event(&self, request: u64, group: u32) -> Result<*mut std::ffi::c_void> {
        let g = self.lock()?;
        g.core.group_event(g.io.as_ref(), request, group)
    }
    pub fn step(&self, now: u64, batch_size: u32, prefill_bound: bool) -> Result<StepReport> {
        let mut g = self.lock()?;
        let Inner { core, io } = &mut *g;
        core.step(io.as_mut(), now, batch_size, prefill_bound)
    }
    pub fn stats(&self) -> Result<Stats> {
        Ok(self.lock()?.core.stats())
    }
    pub fn drain_events(&self, max: usize) -> Result<Vec<Event>> {
        Ok(self.lock()?.core.drain_events(max))
    }
    pub fn set_cost_hints(&self, prefill_tokens_per_us: f64, link_bytes_per_us: f64) -> Result<()> {
        self.lock()?.core.set_cost_hints(prefill_tokens_per_us, link_bytes_per_us)
    }
    /// Address of a block's piece in one segment (segment 0 for an owned arena).
    pub fn block_address(&self, block: u32, segment: usize) -> Result<u64> {
        let g = self.lock()?;
        let layout = g.io.gpu_layout();
        if block >= layout.blocks() {
            return Err(Error::invalid(format!(
                "`block` {block} is out of range (the tier has {})",
                layout.blocks()
            )));
        }
        if segment >= layout.segments().len() {
            return Err(Error::invalid(format!(
                "`segment` {segment} is out of range (the tier has {})",
                layout.segments().len()
            )));
        }
        Ok(g.io.gpu_block_addr(block, segment))
    }
    pub fn check_invariants(&self) -> Result<()> {
        self.lock()?.core.check_invariants().map_err(|m| Error::new(Status::LIBRA_ERR_PANIC, m))
    }
    pub fn metadata_bytes_per_node(&self) -> Result<f64> {
        Ok(self.lock()?.core.metadata_bytes_per_node())
    }
    /// Runs `f` with the backend (tests write and read block patterns through it).
    pub fn with_backend_mut<R>(&self, f: impl FnOnce(&mut dyn Backend) -> R) -> Result<R> {
        let mut g = self.lock()?;
        Ok(f(g.io.as_mut()))
    }
    /// Runs `f` with the core and the backend.
    pub fn with_parts<R>(&self, f: impl FnOnce(&mut CacheCore, &mut dyn Backend) -> R) -> Result<R> {
        let mut g = self.lock()?;
        let Inner { core, io } = &mut *g;
        Ok(f(core, io.as_mut()))
    }
}

fn cuda_backend(opts: &CacheOptions) -> Result<Box<dyn Backend>> {
    let options = cuda::CudaOptions::from_env();
    match &opts.segments {
        // SAFETY: segments reach here only through `Cache::adopt`, whose caller vouches for the
        // memory.
        Some(segs) => Ok(Box::new(unsafe {
            cuda::CudaBackend::adopt(segs.clone(), opts.gpu_blocks, opts.host_blocks, options)?
        })),
        None => Ok(Box::new(cuda::CudaBackend::new(
            opts.block_bytes,
            opts.gpu_blocks,
            opts.host_blocks,
            options,
        )?)),
    }
}

fn cpu_backend(opts: &CacheOptions) -> Result<Box<dyn Backend>> {
    Ok(Box::new(cpu_host_backend(opts)?))
}

fn cpu_host_backend(opts: &CacheOptions) -> Result<CpuBackend> {
    match &opts.segments {
        Some(segs) => {
            // SAFETY: segments reach here only through `Cache::adopt`, whose caller vouches for
            // the memory (documented there and in the C header).
            Ok(unsafe { CpuBackend::adopt(segs.clone(), opts.gpu_blocks, opts.host_blocks)? })
        }
        None => {
            if opts.block_bytes == 0 {
                return Err(Error::invalid("`block_bytes` must be positive"));
            }
            let total = (opts.block_bytes as u128) * (opts.gpu_blocks as u128 + opts.host_blocks as u128);
            if total > MAX_CPU_ARENA_BYTES as u128 {
                return Err(Error::invalid(format!(
                    "block_bytes x (gpu_blocks + host_blocks) = {total} bytes exceeds the limit of {MAX_CPU_ARENA_BYTES}"
                )));
            }
            CpuBackend::new(opts.block_bytes, opts.gpu_blocks, opts.host_blocks)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Raw addresses reach a cache only through the unsafe constructor.
    #[test]
    fn new_refuses_segments_and_adopt_takes_them() {
        let mut mem = vec![0u8; 4 * 64];
        let opts = CacheOptions {
            gpu_blocks: 4,
            host_blocks: 2,
            segments: Some(vec![Segment { base: mem.as_mut_ptr() as u64, bytes_per_block: 64, stride: 64 }]),
            ..CacheOptions::default()
        };
        let e = Cache::new(opts.clone()).err().expect("segments refused");
        assert_eq!(e.status, Status::LIBRA_ERR_INVALID_ARGUMENT);
        assert!(e.message.contains("`segments`") && e.message.contains("Cache::adopt"), "{}", e.message);
        // SAFETY: the segment is `mem`'s 4 x 64 bytes, host memory that outlives the cache.
        let cache = unsafe { Cache::adopt(opts) }.unwrap();
        assert_eq!(cache.block_address(3, 0).unwrap(), mem.as_ptr() as u64 + 3 * 64);
        drop(cache);
        drop(mem);
    }
}
