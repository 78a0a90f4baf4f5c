//! CUDA backend (cudarc, loaded at run time). The GPU tier is one owned device arena or the
//! engine's own KV tensors (segments); the host tier is pinned, mapped host memory, so the swap
//! kernels address it directly. Every batch runs on one dedicated stream, is one kernel launch
//! (or, where that is measured to be faster, a run of `cuMemcpyAsync` calls) and records one
//! event, which an engine's compute stream can wait on. A grouped swap is one launch and one
//! event per readiness group, in group order on the same stream.
//!
//! Nothing here touches the driver before [`driver_present`] says libcuda can be loaded:
//! cudarc panics when it cannot find the library.
pub mod kernels;
mod memory;
mod module;
pub mod params;

use super::reference;
use super::{
    poll_until, Backend, BatchId, BatchState, BatchWaiter, BlockMove, Direction, Segment, SegmentGroups,
    TierLayout,
};
use crate::error::{Error, Result};
use cudarc::driver::result as cu;
use cudarc::driver::sys;
use cudarc::driver::{CudaContext, CudaEvent, CudaStream, DriverError};
use memory::{as_bytes, DeviceBuf, DeviceList, KeepCurrent, PinnedBuf, Staging};
use module::Kernels;
use std::collections::HashMap;
use std::ffi::c_void;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

pub use kernels::{nvrtc_present, nvrtc_version};

/// Whether the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: probing only tries to dlopen the library.
    unsafe { sys::is_culib_present() }
}

/// Number of CUDA devices, or the reason there are none usable.
pub fn device_count() -> Result<usize> {
    if !driver_present() {
        return Err(no_driver());
    }
    cu::init().map_err(|e| dev_err("cuInit", e))?;
    let n = cu::device::get_count().map_err(|e| dev_err("cuDeviceGetCount", e))?;
    if n <= 0 {
        return Err(Error::device("the CUDA driver is loaded but reports no device"));
    }
    Ok(n as usize)
}

/// Explains why the CUDA backend cannot be used here (`LIBRA_ERR_DEVICE`).
pub fn unavailable_reason() -> Error {
    match device_count() {
        Err(e) => e,
        Ok(_) => Error::device("a CUDA device is present; the CUDA backend should be usable"),
    }
}

/// Whether a CUDA device is usable: what `auto` backend selection asks.
pub fn usable() -> bool {
    device_count().is_ok()
}

fn no_driver() -> Error {
    Error::device("libcuda could not be loaded: no NVIDIA driver on this machine")
}

fn dev_err(what: &str, e: DriverError) -> Error {
    Error::device(format!("{what} failed: {e}"))
}

/// How a batch's bytes are moved.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CopyPath {
    /// One launch of libra's kernels for the whole batch.
    Kernel,
    /// One `cuMemcpyAsync` per block per segment (what engines usually do).
    Memcpy,
}

/// When to use `cuMemcpyAsync` instead of the kernel. The default always uses the kernel; the
/// copy benchmark measures where the crossover lies on a given machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CopyPolicy {
    /// Batches with fewer pieces (blocks x segments) than this use memcpy.
    pub memcpy_below_pieces: u64,
    /// Batches whose largest piece has at least this many bytes use memcpy (copy engines beat
    /// SMs on large contiguous pieces, and leave the SMs to compute).
    pub memcpy_min_piece_bytes: u64,
}

impl Default for CopyPolicy {
    fn default() -> Self {
        CopyPolicy { memcpy_below_pieces: 0, memcpy_min_piece_bytes: u64::MAX }
    }
}

impl CopyPolicy {
    /// Always the kernel.
    pub fn kernel() -> Self {
        Self::default()
    }
    /// Always memcpy.
    pub fn memcpy() -> Self {
        CopyPolicy { memcpy_below_pieces: u64::MAX, memcpy_min_piece_bytes: 0 }
    }
    /// The path for a batch of `pieces` pieces, the largest `max_piece_bytes` long.
    pub fn choose(&self, pieces: u64, max_piece_bytes: u64) -> CopyPath {
        if pieces < self.memcpy_below_pieces || max_piece_bytes >= self.memcpy_min_piece_bytes {
            CopyPath::Memcpy
        } else {
            CopyPath::Kernel
        }
    }
}

/// Options of the CUDA backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaOptions {
    /// Device ordinal.
    pub device: usize,
    /// Where compiled kernels are cached across processes (none: compile once per process).
    pub kernel_cache_dir: Option<PathBuf>,
    /// Kernel or memcpy, per batch shape.
    pub copy_policy: CopyPolicy,
    /// Largest range of a piece one CTA copies at a time (rounded down to a multiple of 16).
    pub chunk_bytes: u64,
}

impl Default for CudaOptions {
    fn default() -> Self {
        CudaOptions {
            device: 0,
            kernel_cache_dir: None,
            copy_policy: CopyPolicy::default(),
            chunk_bytes: reference::DEFAULT_CHUNK_BYTES,
        }
    }
}

impl CudaOptions {
    /// Defaults, with `kernel_cache_dir` taken from `LIBRA_KERNEL_CACHE_DIR` when it is set.
    pub fn from_env() -> Self {
        CudaOptions {
            kernel_cache_dir: std::env::var_os("LIBRA_KERNEL_CACHE_DIR").map(PathBuf::from),
            ..Self::default()
        }
    }
}

enum KernelState {
    NotLoaded,
    Loaded(Kernels),
    /// The kernels could not be built (e.g. no NVRTC and no cached cubin): memcpy only.
    Unavailable(String),
}

/// Waits on one batch's event without the backend. An error counts as finished: the backend's
/// `poll` reports it.
struct EventWaiter {
    /// Always `Some` until the drop, which releases both with the caller's context kept.
    held: Option<(Arc<CudaContext>, Arc<CudaEvent>)>,
}

impl BatchWaiter for EventWaiter {
    fn wait_until(&self, deadline: Instant) -> bool {
        let Some((ctx, event)) = &self.held else { return true };
        let Ok(_keep) = KeepCurrent::save() else { return true };
        if memory::bind(ctx).is_err() {
            return true;
        }
        poll_until(deadline, || event.try_is_complete().unwrap_or(true))
    }
}

impl Drop for EventWaiter {
    fn drop(&mut self) {
        // A waiter can be the last owner of its event and of the context (the backend dropped
        // first): destroying them binds the context and releases it, which must not leave a
        // released context current on the caller's thread.
        let keep = KeepCurrent::save().ok();
        self.held = None;
        drop(keep);
    }
}

/// The CUDA backend.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    stream: Arc<CudaStream>,
    layout: TierLayout,
    options: CudaOptions,
    arch: (i32, i32),
    sm_count: u32,
    host: PinnedBuf,
    host_blocks: u32,
    /// Segment table and unit list, on the device, read by every launch.
    dev_segments: DeviceBuf,
    dev_units: DeviceBuf,
    units_per_block: u32,
    /// The unit list, kept to slice it per readiness group.
    units: Vec<reference::Unit>,
    max_piece: u64,
    /// Device copy of each launch's block list.
    list: DeviceList,
    /// Pinned copies of caller bytes, and the slot the batch being submitted uses.
    staging: Staging,
    staged: Option<usize>,
    kernels: KernelState,
    next_batch: BatchId,
    /// Each batch's events, one per readiness group (the last completes the batch). Shared with
    /// waiters, which wait on an event with the cache unlocked.
    batches: HashMap<BatchId, Vec<Arc<CudaEvent>>>,
    /// Events of retired batches. Never destroyed before the backend, so a CUevent handed to an
    /// engine stays a valid handle; reused only when no waiter still holds it.
    spare_events: Vec<Arc<CudaEvent>>,
    /// Owned arena, when the GPU tier is not adopted. Freed after the rest.
    _arena: Option<DeviceBuf>,
    /// Set when the backend is dropped: restores the caller's context after every field has
    /// been freed (fields drop in declaration order, this one last).
    restore_on_drop: Option<KeepCurrent>,
}

impl CudaBackend {
    /// Owns a device arena of `gpu_blocks` x `block_bytes` and a pinned host tier of
    /// `host_blocks` blocks. Fails with `LIBRA_ERR_DEVICE` when CUDA is unusable.
    pub fn new(block_bytes: u64, gpu_blocks: u32, host_blocks: u32, options: CudaOptions) -> Result<Self> {
        let total = block_bytes
            .checked_mul(gpu_blocks as u64)
            .filter(|&t| t <= isize::MAX as u64)
            .ok_or_else(|| Error::invalid("gpu_blocks x block_bytes overflows"))?;
        if block_bytes == 0 || gpu_blocks == 0 {
            return Err(Error::invalid("`block_bytes` and `gpu_blocks` must be at least 1"));
        }
        device_count()?;
        let _keep = KeepCurrent::save()?;
        let ctx = open_device(options.device)?;
        let arena = DeviceBuf::new(&ctx, total as usize)?;
        let layout = TierLayout::contiguous(arena.ptr, block_bytes, gpu_blocks)?;
        Self::build(ctx, layout, Some(arena), host_blocks, options)
    }

    /// Adopts the engine's device memory as the GPU tier: `segments` hold device pointers in
    /// the device's primary context (what the CUDA runtime and frameworks use).
    ///
    /// # Safety
    /// Every segment must describe device memory valid for `gpu_blocks` blocks that outlives the
    /// backend, and the engine must not write a block while a batch involving it is in flight.
    pub unsafe fn adopt(
        segments: Vec<Segment>,
        gpu_blocks: u32,
        host_blocks: u32,
        options: CudaOptions,
    ) -> Result<Self> {
        let layout = TierLayout::new(segments, gpu_blocks)?;
        device_count()?;
        let _keep = KeepCurrent::save()?;
        let ctx = open_device(options.device)?;
        for (i, s) in layout.segments().iter().enumerate() {
            let last = s.base + s.stride * (gpu_blocks as u64 - 1) + s.bytes_per_block - 1;
            for addr in [s.base, last] {
                let mut dptr: sys::CUdeviceptr = 0;
                let r = sys::cuPointerGetAttribute(
                    &mut dptr as *mut _ as *mut c_void,
                    sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_POINTER,
                    addr,
                );
                if r != sys::CUresult::CUDA_SUCCESS {
                    return Err(Error::invalid(format!(
                        "`segments[{i}]`: address {addr:#x} is not memory this device can access ({:?})",
                        r
                    )));
                }
            }
        }
        Self::build(ctx, layout, None, host_blocks, options)
    }

    fn build(
        ctx: Arc<CudaContext>,
        layout: TierLayout,
        arena: Option<DeviceBuf>,
        host_blocks: u32,
        options: CudaOptions,
    ) -> Result<Self> {
        let host_total = layout
            .block_bytes()
            .checked_mul(host_blocks as u64)
            .filter(|&t| t <= isize::MAX as u64)
            .ok_or_else(|| Error::invalid("host_blocks x block_bytes overflows"))?;
        let major = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)
            .map_err(|e| dev_err("cuDeviceGetAttribute", e))?;
        let minor = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)
            .map_err(|e| dev_err("cuDeviceGetAttribute", e))?;
        let sm_count = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
            .map_err(|e| dev_err("cuDeviceGetAttribute", e))?;
        let can_map = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY)
            .map_err(|e| dev_err("cuDeviceGetAttribute", e))?;
        let uva = ctx
            .attribute(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING)
            .map_err(|e| dev_err("cuDeviceGetAttribute", e))?;
        if can_map == 0 || uva == 0 {
            return Err(Error::device(
                "the device cannot map pinned host memory with unified addressing, which the host tier needs",
            ));
        }
        let stream = ctx.new_stream().map_err(|e| dev_err("cuStreamCreate", e))?;
        let host = PinnedBuf::new(&ctx, host_total as usize)?;
        let segs = reference::device_segments(&layout);
        let units = reference::build_units(&layout, options.chunk_bytes);
        let units_per_block = u32::try_from(units.len())
            .map_err(|_| Error::invalid("too many units per block: raise `chunk_bytes`"))?;
        let dev_segments = upload_sync(&ctx, &stream, as_bytes(&segs))?;
        let dev_units = upload_sync(&ctx, &stream, as_bytes(&units))?;
        let max_piece = layout.segments().iter().map(|s| s.bytes_per_block).max().unwrap_or(0);
        Ok(CudaBackend {
            ctx,
            stream,
            layout,
            options,
            arch: (major, minor),
            sm_count: sm_count.max(1) as u32,
            host,
            host_blocks,
            dev_segments,
            dev_units,
            units_per_block,
            units,
            max_piece,
            list: DeviceList::new(),
            staging: Staging::new(),
            staged: None,
            kernels: KernelState::NotLoaded,
            next_batch: 1,
            batches: HashMap::new(),
            spare_events: Vec::new(),
            _arena: arena,
            restore_on_drop: None,
        })
    }

    /// Compute capability of the device.
    pub fn arch(&self) -> (i32, i32) {
        self.arch
    }

    /// The swap stream (a `CUstream`), for engines that order their own work against it.
    pub fn stream_handle(&self) -> *mut c_void {
        self.stream.cu_stream() as *mut c_void
    }

    /// The context the backend runs in (the device's primary context).
    pub fn context(&self) -> &Arc<CudaContext> {
        &self.ctx
    }

    /// Device pointer of the host tier (equal to the host pointer under unified addressing).
    pub fn host_tier_device_ptr(&self) -> u64 {
        self.host.dev
    }

    /// Changes when batches use memcpy instead of the kernel.
    pub fn set_copy_policy(&mut self, policy: CopyPolicy) {
        self.options.copy_policy = policy;
    }

    /// The current copy policy.
    pub fn copy_policy(&self) -> CopyPolicy {
        self.options.copy_policy
    }

    /// Builds and loads the kernels now instead of at the first batch. On failure the backend
    /// keeps working with memcpy only, and this returns why.
    pub fn prepare_kernels(&mut self) -> Result<()> {
        let _keep = self.enter()?;
        self.ensure_kernels();
        match &self.kernels {
            KernelState::Loaded(_) => Ok(()),
            KernelState::Unavailable(why) => Err(Error::device(why.clone())),
            KernelState::NotLoaded => unreachable!("ensure_kernels sets a state"),
        }
    }

    /// "kernel" when the kernels are loaded, or why batches fall back to memcpy.
    pub fn kernel_status(&self) -> String {
        match &self.kernels {
            KernelState::NotLoaded => "kernels not built yet (built on first use)".into(),
            KernelState::Loaded(k) => {
                format!("kernels loaded for sm_{}{} from the {}", self.arch.0, self.arch.1, k.from)
            }
            KernelState::Unavailable(why) => format!("memcpy only: {why}"),
        }
    }

    fn ensure_kernels(&mut self) {
        if !matches!(self.kernels, KernelState::NotLoaded) {
            return;
        }
        self.kernels = match self.load_kernels() {
            Ok(k) => KernelState::Loaded(k),
            Err(e) => KernelState::Unavailable(e.message),
        };
    }

    fn load_kernels(&self) -> Result<Kernels> {
        module::load(&self.ctx, self.arch, self.options.kernel_cache_dir.as_deref())
    }

    /// The path a batch of `blocks` whole blocks takes.
    pub fn path_for(&mut self, blocks: usize) -> CopyPath {
        let _keep = self.enter().ok();
        let pieces = blocks as u64 * self.layout.segments().len() as u64;
        match self.options.copy_policy.choose(pieces, self.max_piece) {
            CopyPath::Memcpy => CopyPath::Memcpy,
            CopyPath::Kernel => {
                self.ensure_kernels();
                if matches!(self.kernels, KernelState::Loaded(_)) {
                    CopyPath::Kernel
                } else {
                    CopyPath::Memcpy
                }
            }
        }
    }

    /// Makes the backend's context current until the returned value drops.
    fn enter(&self) -> Result<KeepCurrent> {
        let keep = KeepCurrent::save()?;
        memory::bind(&self.ctx)?;
        Ok(keep)
    }

    /// Launches one of the swap kernels over `entries` entries of the device list `list`, with
    /// the arguments laid out by [`params::swap_launch`].
    fn launch_over(
        &self,
        kernel: params::SwapKernel,
        list: sys::CUdeviceptr,
        entries: usize,
        tail: &[u64],
    ) -> Result<()> {
        self.launch_units(kernel, 0..self.units_per_block, list, entries, tail)
    }

    /// `launch_over` restricted to the units `units` of every block (a run of segments).
    fn launch_units(
        &self,
        kernel: params::SwapKernel,
        units: std::ops::Range<u32>,
        list: sys::CUdeviceptr,
        entries: usize,
        tail: &[u64],
    ) -> Result<()> {
        let upb = units.end.saturating_sub(units.start);
        if upb == 0 {
            return Ok(());
        }
        let KernelState::Loaded(k) = &self.kernels else { unreachable!("path_for checked") };
        let f = match kernel {
            params::SwapKernel::Gather => &k.gather,
            params::SwapKernel::Scatter => &k.scatter,
            params::SwapKernel::CopyBlocks => &k.copy_blocks,
            params::SwapKernel::Upload => &k.upload,
        };
        let entries = u32::try_from(entries).map_err(|_| Error::invalid("too many blocks in one batch"))?;
        let tables = params::Tables {
            segments: self.dev_segments.ptr,
            units: self.dev_units.ptr + units.start as u64 * std::mem::size_of::<reference::Unit>() as u64,
            units_per_block: upb,
        };
        let mut launch = params::swap_launch(kernel, tables, list, entries, tail, self.sm_count);
        let shape = launch.shape;
        let mut ptrs = launch.param_pointers();
        // SAFETY: the parameters match the kernel's signature and every address they lead to
        // was validated at submission; the buffers stay alive until the stream has run them.
        unsafe {
            cu::launch_kernel(
                f.cu_function(),
                (shape.grid, 1, 1),
                (shape.threads, 1, 1),
                0,
                self.stream.cu_stream(),
                &mut ptrs,
            )
        }
        .map_err(|e| dev_err("cuLaunchKernel", e))
    }

    fn memcpy(&self, dst: u64, src: u64, len: u64) -> Result<()> {
        // SAFETY: both ranges were validated at submission (unified addressing: any direction).
        unsafe { sys::cuMemcpyAsync(dst, src, len as usize, self.stream.cu_stream()) }
            .result()
            .map_err(|e| dev_err("cuMemcpyAsync", e))
    }

    /// Records an event after the work just enqueued.
    fn record_event(&mut self) -> Result<Arc<CudaEvent>> {
        let free_spare = self.spare_events.iter().position(|e| Arc::strong_count(e) == 1);
        let event = match free_spare {
            Some(i) => self.spare_events.swap_remove(i),
            None => Arc::new(self.ctx.new_event(None).map_err(|e| dev_err("cuEventCreate", e))?),
        };
        if let Err(e) = event.record(&self.stream) {
            self.spare_events.push(event);
            return Err(dev_err("cuEventRecord", e));
        }
        Ok(event)
    }

    /// Records a new batch's event after the work just enqueued.
    fn finish_batch(&mut self) -> Result<BatchId> {
        let event = self.record_event()?;
        Ok(self.register(vec![event]))
    }

    /// A new batch completed by `events` (one per group, in stream order).
    fn register(&mut self, events: Vec<Arc<CudaEvent>>) -> BatchId {
        if let (Some(slot), Some(last)) = (self.staged, events.last()) {
            self.staging.busy_until(slot, last.clone());
            self.staged = None;
        }
        let id = self.next_batch;
        self.next_batch += 1;
        self.batches.insert(id, events);
        id
    }

    /// Enqueues one batch and registers it. A failed submission waits for what it queued
    /// before its staging buffer can be reused.
    fn submit(&mut self, enqueue: impl FnOnce(&mut Self) -> Result<BatchId>) -> Result<BatchId> {
        let r = enqueue(self);
        if let Some(slot) = self.staged.take() {
            self.staging.release_after(slot, &self.stream);
        }
        r
    }

    /// Copies `parts` into one pinned staging buffer for the batch being submitted, each at a
    /// 256-byte aligned offset; their (host, device) addresses.
    fn stage(&mut self, parts: &[&[u8]]) -> Result<Vec<(*const u8, u64)>> {
        let offsets: Vec<usize> = parts
            .iter()
            .scan(0usize, |at, p| {
                let off = *at;
                *at += p.len().div_ceil(256) * 256;
                Some(off)
            })
            .collect();
        let total = offsets.last().map_or(0, |&o| o) + parts.last().map_or(0, |p| p.len());
        let slot = self.staging.acquire(&self.ctx, total)?;
        self.staged = Some(slot);
        let (host, dev) = self.staging.addr(slot);
        Ok(parts
            .iter()
            .zip(offsets)
            .map(|(p, off)| {
                // SAFETY: the slot holds `total` bytes and no queued work reads it.
                unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), host.add(off), p.len()) };
                (host.wrapping_add(off) as *const u8, dev + off as u64)
            })
            .collect())
    }

    /// Stages a block list and enqueues its copy to the device; the device address.
    fn stage_list(&mut self, list: &[u8]) -> Result<sys::CUdeviceptr> {
        let (host, _) = self.stage(&[list])?[0];
        self.list.fill_from_pinned(&self.stream, host, list.len())
    }

    /// Enqueues a grouped swap: per group, one launch (or its memcpy run) over the group's
    /// segments of every block, then that group's event.
    fn enqueue_grouped(
        &mut self,
        direction: Direction,
        moves: &[BlockMove],
        groups: SegmentGroups,
    ) -> Result<Vec<Arc<CudaEvent>>> {
        let bb = self.layout.block_bytes();
        let path = if moves.is_empty() { CopyPath::Memcpy } else { self.path_for(moves.len()) };
        let pairs_ptr = match path {
            CopyPath::Kernel => {
                let pairs: Vec<[u32; 2]> = moves.iter().map(|m| [m.gpu_block, m.host_block]).collect();
                self.stage_list(as_bytes(&pairs))?
            }
            CopyPath::Memcpy => 0,
        };
        let unit_ranges = reference::group_units(&self.units, groups);
        let mut events = Vec::with_capacity(groups.count() as usize);
        for (g, units) in (0..groups.count()).zip(unit_ranges) {
            let segs = groups.segments(g);
            match path {
                CopyPath::Kernel => {
                    let kernel = match direction {
                        Direction::GpuToHost => params::SwapKernel::Gather,
                        Direction::HostToGpu => params::SwapKernel::Scatter,
                    };
                    self.launch_units(kernel, units, pairs_ptr, moves.len(), &[self.host.dev, bb])?;
                }
                CopyPath::Memcpy => self.memcpy_moves(direction, moves, segs)?,
            }
            match self.record_event() {
                Ok(e) => events.push(e),
                Err(e) => {
                    self.spare_events.extend(events);
                    return Err(e);
                }
            }
        }
        Ok(events)
    }

    /// One `cuMemcpyAsync` per block per segment in `segments`.
    fn memcpy_moves(
        &self,
        direction: Direction,
        moves: &[BlockMove],
        segments: std::ops::Range<usize>,
    ) -> Result<()> {
        let bb = self.layout.block_bytes();
        for m in moves {
            for s in segments.clone() {
                let len = self.layout.segments()[s].bytes_per_block;
                let g = self.layout.segment_addr(m.gpu_block, s);
                let h = self.host.dev + m.host_block as u64 * bb + self.layout.segment_offset(s);
                match direction {
                    Direction::GpuToHost => self.memcpy(h, g, len)?,
                    Direction::HostToGpu => self.memcpy(g, h, len)?,
                }
            }
        }
        Ok(())
    }

    fn enqueue_moves(&mut self, direction: Direction, moves: &[BlockMove]) -> Result<()> {
        if moves.is_empty() {
            return Ok(());
        }
        let bb = self.layout.block_bytes();
        match self.path_for(moves.len()) {
            CopyPath::Kernel => {
                let pairs: Vec<[u32; 2]> = moves.iter().map(|m| [m.gpu_block, m.host_block]).collect();
                let pairs_ptr = self.stage_list(as_bytes(&pairs))?;
                let kernel = match direction {
                    Direction::GpuToHost => params::SwapKernel::Gather,
                    Direction::HostToGpu => params::SwapKernel::Scatter,
                };
                self.launch_over(kernel, pairs_ptr, moves.len(), &[self.host.dev, bb])
            }
            CopyPath::Memcpy => self.memcpy_moves(direction, moves, 0..self.layout.segments().len()),
        }
    }

    fn enqueue_upload(&mut self, bytes: &[u8], blocks: &[u32]) -> Result<()> {
        if bytes.is_empty() || blocks.is_empty() {
            return Ok(());
        }
        let bb = self.layout.block_bytes();
        // The kernel (or the copies) read the adapter bytes straight from pinned memory.
        let staged = self.stage(&[bytes, as_bytes(blocks)])?;
        let flat = staged[0].1;
        match self.path_for(blocks.len()) {
            CopyPath::Kernel => {
                let blocks_ptr =
                    self.list.fill_from_pinned(&self.stream, staged[1].0, std::mem::size_of_val(blocks))?;
                self.launch_over(
                    params::SwapKernel::Upload,
                    blocks_ptr,
                    blocks.len(),
                    &[flat, bb, bytes.len() as u64],
                )
            }
            CopyPath::Memcpy => {
                let len = bytes.len() as u64;
                for (i, &b) in blocks.iter().enumerate() {
                    for (s, seg) in self.layout.segments().iter().enumerate() {
                        let logical = i as u64 * bb + self.layout.segment_offset(s);
                        if logical >= len {
                            break;
                        }
                        let n = seg.bytes_per_block.min(len - logical);
                        self.memcpy(self.layout.segment_addr(b, s), flat + logical, n)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn enqueue_device_copies(&mut self, pairs: &[(u32, u32)]) -> Result<()> {
        if pairs.is_empty() {
            return Ok(());
        }
        match self.path_for(pairs.len()) {
            CopyPath::Kernel => {
                let flat: Vec<[u32; 2]> = pairs.iter().map(|&(a, b)| [a, b]).collect();
                let pairs_ptr = self.stage_list(as_bytes(&flat))?;
                self.launch_over(params::SwapKernel::CopyBlocks, pairs_ptr, pairs.len(), &[])
            }
            CopyPath::Memcpy => {
                for &(src, dst) in pairs {
                    for (s, seg) in self.layout.segments().iter().enumerate() {
                        let a = self.layout.segment_addr(src, s);
                        let b = self.layout.segment_addr(dst, s);
                        self.memcpy(b, a, seg.bytes_per_block)?;
                    }
                }
                Ok(())
            }
        }
    }

    fn host_ptr(&self, block: u32) -> *mut u8 {
        // SAFETY: callers validate `block`.
        unsafe { self.host.host.add(block as usize * self.layout.block_bytes() as usize) }
    }

    fn sync(&self) -> Result<()> {
        self.stream.synchronize().map_err(|e| dev_err("cuStreamSynchronize", e))
    }
}

fn open_device(ordinal: usize) -> Result<Arc<CudaContext>> {
    let n = device_count()?;
    if ordinal >= n {
        return Err(Error::invalid(format!("CUDA device {ordinal} does not exist ({n} present)")));
    }
    let ctx = CudaContext::new(ordinal).map_err(|e| dev_err(&format!("opening CUDA device {ordinal}"), e))?;
    // cudarc's event tracking orders its own CudaSlice uses across streams, which libra does not
    // use; left on, creating the first stream calls cuCtxSynchronize, which waits for all of
    // the engine's work in the primary context.
    // SAFETY: libra allocates through the driver directly and orders its work with events.
    unsafe { ctx.disable_event_tracking() };
    Ok(ctx)
}

fn upload_sync(ctx: &Arc<CudaContext>, stream: &CudaStream, bytes: &[u8]) -> Result<DeviceBuf> {
    let buf = DeviceBuf::new(ctx, bytes.len())?;
    // SAFETY: buf holds bytes.len() bytes.
    unsafe {
        sys::cuMemcpyHtoDAsync_v2(buf.ptr, bytes.as_ptr() as *const c_void, bytes.len(), stream.cu_stream())
            .result()
            .map_err(|e| dev_err("cuMemcpyHtoDAsync", e))?;
    }
    stream.synchronize().map_err(|e| dev_err("cuStreamSynchronize", e))?;
    Ok(buf)
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        self.restore_on_drop = KeepCurrent::save().ok();
        // Nothing may be freed while queued work can still touch it.
        let _ = self.ctx.bind_to_thread();
        let _ = self.stream.synchronize();
    }
}

impl Backend for CudaBackend {
    fn name(&self) -> &str {
        "cuda"
    }
    fn gpu_layout(&self) -> &TierLayout {
        &self.layout
    }
    fn host_blocks(&self) -> u32 {
        self.host_blocks
    }
    fn host_block_addr(&self, block: u32) -> u64 {
        self.host_ptr(block) as u64
    }
    fn submit_moves(&mut self, direction: Direction, moves: &[BlockMove]) -> Result<BatchId> {
        self.check_moves(moves)?;
        let _keep = self.enter()?;
        self.submit(|b| {
            b.enqueue_moves(direction, moves)?;
            b.finish_batch()
        })
    }
    fn submit_moves_grouped(
        &mut self,
        direction: Direction,
        moves: &[BlockMove],
        groups: SegmentGroups,
    ) -> Result<BatchId> {
        self.check_moves(moves)?;
        self.check_groups(groups)?;
        let _keep = self.enter()?;
        self.submit(|b| {
            let events = b.enqueue_grouped(direction, moves, groups)?;
            Ok(b.register(events))
        })
    }
    fn groups_done(&mut self, batch: BatchId, groups: u32) -> u32 {
        let Some(events) = self.batches.get(&batch) else { return 0 };
        let Ok(_keep) = self.enter() else { return 0 };
        let done = events.iter().take_while(|e| e.try_is_complete().unwrap_or(false)).count() as u32;
        // An ungrouped batch has one event for every group.
        if events.len() == 1 && done == 1 {
            groups
        } else {
            done.min(groups)
        }
    }
    fn submit_upload(&mut self, bytes: &[u8], blocks: &[u32]) -> Result<BatchId> {
        self.check_upload(bytes, blocks)?;
        let _keep = self.enter()?;
        self.submit(|b| {
            b.enqueue_upload(bytes, blocks)?;
            b.finish_batch()
        })
    }
    fn submit_device_copies(&mut self, pairs: &[(u32, u32)]) -> Result<BatchId> {
        self.check_device_copies(pairs)?;
        let _keep = self.enter()?;
        self.submit(|b| {
            b.enqueue_device_copies(pairs)?;
            b.finish_batch()
        })
    }
    fn poll(&mut self, batch: BatchId) -> BatchState {
        let Some(event) = self.batches.get(&batch).and_then(|e| e.last()) else {
            return BatchState::Failed(format!("unknown batch {batch}"));
        };
        let _keep = match self.enter() {
            Ok(k) => k,
            Err(e) => return BatchState::Failed(e.message),
        };
        match event.try_is_complete() {
            Ok(true) => BatchState::Done,
            Ok(false) => BatchState::Pending,
            Err(e) => BatchState::Failed(format!("batch {batch} failed on the device: {e}")),
        }
    }
    fn wait(&mut self, batch: BatchId, timeout_us: u64) -> BatchState {
        let deadline = super::deadline_after(timeout_us);
        let mut state = BatchState::Pending;
        poll_until(deadline, || {
            state = self.poll(batch);
            state != BatchState::Pending
        });
        state
    }
    fn retire(&mut self, batch: BatchId) {
        if let Some(events) = self.batches.remove(&batch) {
            // Re-recording an event replaces its previous work, so it can serve a later batch.
            self.spare_events.extend(events);
        }
    }
    fn batch_event(&self, batch: BatchId) -> *mut c_void {
        self.batches
            .get(&batch)
            .and_then(|e| e.last())
            .map_or(std::ptr::null_mut(), |e| e.cu_event() as *mut c_void)
    }
    fn group_event(&self, batch: BatchId, group: u32) -> *mut c_void {
        // Past the last group (an ungrouped batch): the batch's own event covers it.
        let Some(events) = self.batches.get(&batch) else { return std::ptr::null_mut() };
        events
            .get(group as usize)
            .or(events.last())
            .map_or(std::ptr::null_mut(), |e| e.cu_event() as *mut c_void)
    }
    fn waiter(&self, batch: BatchId) -> Option<Box<dyn BatchWaiter>> {
        let event = self.batches.get(&batch)?.last()?.clone();
        Some(Box::new(EventWaiter { held: Some((self.ctx.clone(), event)) }))
    }
    fn read_gpu_block(&mut self, block: u32, out: &mut [u8]) -> Result<()> {
        self.check_gpu_block(block)?;
        let _keep = self.enter()?;
        for s in 0..self.layout.segments().len() {
            let off = self.layout.segment_offset(s) as usize;
            if off >= out.len() {
                break;
            }
            let n = (self.layout.segments()[s].bytes_per_block as usize).min(out.len() - off);
            // SAFETY: validated block id; n is within the piece and within `out`, which outlives
            // the synchronisation below.
            unsafe {
                sys::cuMemcpyDtoHAsync_v2(
                    out.as_mut_ptr().add(off) as *mut c_void,
                    self.layout.segment_addr(block, s),
                    n,
                    self.stream.cu_stream(),
                )
                .result()
                .map_err(|e| dev_err("cuMemcpyDtoHAsync", e))?;
            }
        }
        self.sync()
    }
    fn write_gpu_block(&mut self, block: u32, data: &[u8]) -> Result<()> {
        self.check_gpu_block(block)?;
        if data.len() as u64 > self.layout.block_bytes() {
            return Err(Error::invalid("data is larger than a block"));
        }
        let _keep = self.enter()?;
        for s in 0..self.layout.segments().len() {
            let off = self.layout.segment_offset(s) as usize;
            if off >= data.len() {
                break;
            }
            let n = (self.layout.segments()[s].bytes_per_block as usize).min(data.len() - off);
            // SAFETY: validated block id; n is within the piece and within `data`.
            unsafe {
                sys::cuMemcpyHtoDAsync_v2(
                    self.layout.segment_addr(block, s),
                    data.as_ptr().add(off) as *const c_void,
                    n,
                    self.stream.cu_stream(),
                )
                .result()
                .map_err(|e| dev_err("cuMemcpyHtoDAsync", e))?;
            }
        }
        self.sync()
    }
    fn read_host_block(&mut self, block: u32, out: &mut [u8]) -> Result<()> {
        self.check_host_block(block)?;
        let n = out.len().min(self.layout.block_bytes() as usize);
        // SAFETY: validated block id; n within the block.
        unsafe { std::ptr::copy(self.host_ptr(block), out.as_mut_ptr(), n) };
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copy_policy_chooses_by_batch_shape() {
        assert_eq!(CopyPolicy::default().choose(1, 1 << 30), CopyPath::Kernel);
        assert_eq!(CopyPolicy::memcpy().choose(1 << 20, 1), CopyPath::Memcpy);
        let p = CopyPolicy { memcpy_below_pieces: 128, memcpy_min_piece_bytes: 1 << 20 };
        assert_eq!(p.choose(64, 4096), CopyPath::Memcpy);
        assert_eq!(p.choose(128, 4096), CopyPath::Kernel);
        assert_eq!(p.choose(4096, 1 << 20), CopyPath::Memcpy);
    }

    #[test]
    fn cache_names_differ_per_architecture() {
        let a = kernels::cache_file_name((8, 0));
        let b = kernels::cache_file_name((9, 0));
        assert_ne!(a, b);
        assert!(a.starts_with("libra_swap_sm80_") && a.ends_with(".cubin"));
    }

    #[test]
    fn without_a_driver_nothing_touches_cuda() {
        if driver_present() {
            return;
        }
        assert_eq!(device_count().unwrap_err().status, crate::Status::LIBRA_ERR_DEVICE);
        let e = CudaBackend::new(4096, 1, 1, CudaOptions::default()).err().expect("no driver");
        assert!(e.message.contains("libcuda"), "{}", e.message);
    }
}
