//! CUDA backend (cudarc, loaded at run time). The GPU tier is one owned device arena or the
//! engine's own KV tensors (segments); the host tier is pinned, mapped host memory, so the swap
//! kernels address it directly. Every batch runs on the dedicated stream of its direction, is
//! one kernel launch (or, where that is measured to be faster, a run of `cuMemcpyAsync` calls)
//! and records one event, which an engine's compute stream can wait on. A grouped swap is one
//! launch and one event per readiness group, in group order on the same stream.
//!
//! Why a stream per direction: PCIe is full duplex, so a swap-in need not queue behind a
//! write-back that is still on the link (vLLM's CPU offloading and SGLang's HiCache keep one
//! stream per direction too). No copy depends on one in the other direction: the cache frees a
//! GPU block only after its copy out completed, and a host block only after the copy in that
//! it fed completed.
//!
//! Nothing here touches the driver before [`driver_present`] says libcuda can be loaded:
//! cudarc panics when it cannot find the library.
//!
//! The parts: `probe` finds the driver and devices, `options` says how the backend is opened,
//! `context` owns the context it runs in, `memory` the buffers, `tables` and `params` lay out
//! what a launch reads, `kernels` and `module` build and load the kernels, `launch` submits
//! batches and `events` tracks their completion; this file holds the backend and its
//! [`Backend`] implementation.
mod context;
mod events;
pub mod kernels;
mod launch;
mod memory;
mod module;
mod options;
pub mod params;
mod probe;
pub mod tables;

use super::{
    poll_until, Backend, BatchId, BatchState, BatchWaiter, BlockMove, Direction, Segment, SegmentGroups,
    TierLayout,
};
use crate::error::{Error, Result};
use context::KeepCurrent;
use cudarc::driver::sys;
use cudarc::driver::{CudaContext, CudaEvent, CudaStream};
use events::EventWaiter;
use memory::{as_bytes, DeviceBuf, DeviceList, PinnedBuf, Staging};
use module::{KernelState, Kernels};
use probe::dev_err;
use std::collections::HashMap;
use std::ffi::c_void;
use std::sync::Arc;
use tables::Unit;

pub use kernels::{nvrtc_present, nvrtc_version};
pub use options::{CopyPath, CopyPolicy, CudaOptions};
pub use probe::{device_count, driver_present, unavailable_reason, usable};

/// The CUDA backend.
pub struct CudaBackend {
    ctx: Arc<CudaContext>,
    /// The swap streams, indexed by `Direction::lane`.
    streams: [Arc<CudaStream>; 2],
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
    units: Vec<Unit>,
    max_piece: u64,
    /// Device copy of each launch's block list, one per stream (read in that stream's order).
    lists: [DeviceList; 2],
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
        let ctx = context::open_device(options.device)?;
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
        let ctx = context::open_device(options.device)?;
        context::check_accessible(&layout)?;
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
        let caps = context::device_caps(&ctx)?;
        let new_stream = || ctx.new_stream().map_err(|e| dev_err("cuStreamCreate", e));
        let streams = [new_stream()?, new_stream()?];
        let stream = &*streams[0];
        let host = PinnedBuf::new(&ctx, host_total as usize)?;
        let segs = tables::device_segments(&layout);
        let units = tables::build_units(&layout, options.chunk_bytes);
        let units_per_block = u32::try_from(units.len())
            .map_err(|_| Error::invalid("too many units per block: raise `chunk_bytes`"))?;
        let dev_segments = DeviceBuf::upload_sync(&ctx, stream, as_bytes(&segs))?;
        let dev_units = DeviceBuf::upload_sync(&ctx, stream, as_bytes(&units))?;
        let max_piece = layout.segments().iter().map(|s| s.bytes_per_block).max().unwrap_or(0);
        Ok(CudaBackend {
            ctx,
            streams,
            layout,
            options,
            arch: caps.arch,
            sm_count: caps.sm_count,
            host,
            host_blocks,
            dev_segments,
            dev_units,
            units_per_block,
            units,
            max_piece,
            lists: [DeviceList::new(), DeviceList::new()],
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

    /// The swap stream of `direction` (a `CUstream`), for engines that order their own work
    /// against it. Adapter uploads run on the host-to-GPU stream.
    pub fn stream_handle(&self, direction: Direction) -> *mut c_void {
        self.stream(direction).cu_stream() as *mut c_void
    }

    fn stream(&self, direction: Direction) -> &Arc<CudaStream> {
        &self.streams[direction.lane()]
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

    /// Host address of a host-tier block; only dereferenced for validated ids.
    fn host_ptr(&self, block: u32) -> *mut u8 {
        self.host.host.wrapping_add(block as usize * self.layout.block_bytes() as usize)
    }

    /// Waits for everything queued in both directions.
    fn sync(&self) -> Result<()> {
        for s in &self.streams {
            s.synchronize().map_err(|e| dev_err("cuStreamSynchronize", e))?;
        }
        Ok(())
    }
}

impl Drop for CudaBackend {
    fn drop(&mut self) {
        self.restore_on_drop = KeepCurrent::save().ok();
        // Nothing may be freed while queued work can still touch it.
        let _ = self.ctx.bind_to_thread();
        for s in &self.streams {
            let _ = s.synchronize();
        }
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
        let whole = SegmentGroups::whole(&self.layout);
        self.submit_moves_grouped(direction, moves, whole)
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
        self.submit(direction, |b| {
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
        self.submit(Direction::HostToGpu, |b| {
            b.enqueue_upload(bytes, blocks)?;
            b.finish_batch(Direction::HostToGpu)
        })
    }
    fn submit_upload_grouped(&mut self, bytes: &[u8], blocks: &[u32], group_ends: &[u32]) -> Result<BatchId> {
        self.check_upload(bytes, blocks)?;
        self.check_upload_groups(blocks.len(), group_ends)?;
        let _keep = self.enter()?;
        self.submit(Direction::HostToGpu, |b| {
            let events = b.enqueue_upload_grouped(bytes, blocks, group_ends)?;
            Ok(b.register(events))
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
        // Ordered after every queued copy, in either direction, that may touch the block.
        self.sync()?;
        for s in self.layout.block_spans(block, out.len() as u64) {
            // SAFETY: validated block id; the span lies inside the piece and inside `out`,
            // which outlives the synchronisation below.
            unsafe {
                sys::cuMemcpyDtoHAsync_v2(
                    out.as_mut_ptr().add(s.other as usize) as *mut c_void,
                    s.gpu,
                    s.len as usize,
                    self.stream(Direction::GpuToHost).cu_stream(),
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
        self.sync()?;
        for s in self.layout.block_spans(block, data.len() as u64) {
            // SAFETY: validated block id; the span lies inside the piece and inside `data`,
            // which outlives the synchronisation below.
            unsafe {
                sys::cuMemcpyHtoDAsync_v2(
                    s.gpu,
                    data.as_ptr().add(s.other as usize) as *const c_void,
                    s.len as usize,
                    self.stream(Direction::HostToGpu).cu_stream(),
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
