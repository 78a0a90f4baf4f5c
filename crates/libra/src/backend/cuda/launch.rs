//! Submitting a batch: staging its lists and bytes in pinned memory, then one launch of the swap
//! kernels (or a run of `cuMemcpyAsync` calls, where the copy policy says so) per batch, or per
//! readiness group of a grouped swap.
use super::memory::as_bytes;
use super::module::KernelState;
use super::probe::dev_err;
use super::tables;
use super::{params, CopyPath, CudaBackend};
use crate::backend::{upload_parts, BatchId, BlockMove, Direction, SegmentGroups};
use crate::error::{Error, Result};
use cudarc::driver::result as cu;
use cudarc::driver::sys;
use cudarc::driver::CudaEvent;
use std::sync::Arc;

impl CudaBackend {
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
            params::SwapKernel::Upload => &k.upload,
        };
        let entries = u32::try_from(entries).map_err(|_| Error::invalid("too many blocks in one batch"))?;
        let tables = params::Tables {
            segments: self.dev_segments.ptr,
            units: self.dev_units.ptr + units.start as u64 * std::mem::size_of::<tables::Unit>() as u64,
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
                self.stream(kernel.direction()).cu_stream(),
                &mut ptrs,
            )
        }
        .map_err(|e| dev_err("cuLaunchKernel", e))
    }

    /// One copy on `direction`'s stream.
    fn memcpy(&self, direction: Direction, dst: u64, src: u64, len: u64) -> Result<()> {
        // SAFETY: both ranges were validated at submission (unified addressing: any direction).
        unsafe { sys::cuMemcpyAsync(dst, src, len as usize, self.stream(direction).cu_stream()) }
            .result()
            .map_err(|e| dev_err("cuMemcpyAsync", e))
    }

    /// Enqueues one batch on `direction`'s stream and registers it. A failed submission waits
    /// for what it queued before its staging buffer can be reused.
    pub(super) fn submit(
        &mut self,
        direction: Direction,
        enqueue: impl FnOnce(&mut Self) -> Result<BatchId>,
    ) -> Result<BatchId> {
        let r = enqueue(self);
        if let Some(slot) = self.staged.take() {
            let stream = self.stream(direction).clone();
            self.staging.release_after(slot, &stream);
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
                // SAFETY: the slot holds `total` bytes, of which this part takes
                // [off, off + len); no queued work reads the slot, and `p` is caller memory
                // distinct from it.
                unsafe { std::ptr::copy_nonoverlapping(p.as_ptr(), host.add(off), p.len()) };
                (host.wrapping_add(off) as *const u8, dev + off as u64)
            })
            .collect())
    }

    /// Stages a block list and enqueues its copy to the device on `direction`'s stream; the
    /// device address.
    fn stage_list(&mut self, direction: Direction, list: &[u8]) -> Result<sys::CUdeviceptr> {
        let (host, _) = self.stage(&[list])?[0];
        self.fill_list(direction, host, list.len())
    }

    /// Enqueues the copy of a staged block list into `direction`'s list buffer.
    fn fill_list(&mut self, direction: Direction, host: *const u8, len: usize) -> Result<sys::CUdeviceptr> {
        let stream = self.streams[direction.lane()].clone();
        self.lists[direction.lane()].fill_from_pinned(&stream, host, len)
    }

    /// Enqueues a swap: per readiness group, one launch (or its memcpy run) over the group's
    /// segments of every block, then that group's event. A swap submitted whole is one group.
    pub(super) fn enqueue_grouped(
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
                self.stage_list(direction, as_bytes(&pairs))?
            }
            CopyPath::Memcpy => 0,
        };
        let unit_ranges = tables::group_units(&self.units, groups);
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
            self.record_group_event(direction, &mut events)?;
        }
        Ok(events)
    }

    /// Records the next group's event; on failure the groups' events so far go back to the
    /// spares and the batch is abandoned.
    fn record_group_event(&mut self, direction: Direction, events: &mut Vec<Arc<CudaEvent>>) -> Result<()> {
        match self.record_event(direction) {
            Ok(e) => {
                events.push(e);
                Ok(())
            }
            Err(e) => {
                self.spare_events.append(events);
                Err(e)
            }
        }
    }

    /// One `cuMemcpyAsync` per block per segment in `segments`.
    fn memcpy_moves(
        &self,
        direction: Direction,
        moves: &[BlockMove],
        segments: std::ops::Range<usize>,
    ) -> Result<()> {
        for s in self.layout.move_spans(moves, segments, self.host.dev) {
            match direction {
                Direction::GpuToHost => self.memcpy(direction, s.other, s.gpu, s.len)?,
                Direction::HostToGpu => self.memcpy(direction, s.gpu, s.other, s.len)?,
            }
        }
        Ok(())
    }

    pub(super) fn enqueue_upload(&mut self, bytes: &[u8], blocks: &[u32]) -> Result<()> {
        self.enqueue_upload_parts(bytes, blocks, &[blocks.len() as u32], false).map(|_| ())
    }

    /// An upload in groups: group g copies blocks `group_ends[g - 1]..group_ends[g]` (their
    /// share of `bytes`) and records its event, so the first layers' weights can be read while
    /// the rest are on the link. One staging of the bytes and the block list for all groups.
    pub(super) fn enqueue_upload_grouped(
        &mut self,
        bytes: &[u8],
        blocks: &[u32],
        group_ends: &[u32],
    ) -> Result<Vec<Arc<CudaEvent>>> {
        self.enqueue_upload_parts(bytes, blocks, group_ends, true)
    }

    /// Enqueues the upload part by part; records an event after each part when `events`.
    fn enqueue_upload_parts(
        &mut self,
        bytes: &[u8],
        blocks: &[u32],
        group_ends: &[u32],
        events: bool,
    ) -> Result<Vec<Arc<CudaEvent>>> {
        let mut recorded = Vec::with_capacity(if events { group_ends.len() } else { 0 });
        let staged = if bytes.is_empty() || blocks.is_empty() {
            None
        } else {
            // The kernel (or the copies) read the adapter bytes straight from pinned memory.
            let staged = self.stage(&[bytes, as_bytes(blocks)])?;
            let path = self.path_for(blocks.len());
            let list = match path {
                CopyPath::Kernel => {
                    self.fill_list(Direction::HostToGpu, staged[1].0, std::mem::size_of_val(blocks))?
                }
                CopyPath::Memcpy => 0,
            };
            Some((staged[0].1, list, path))
        };
        let bb = self.layout.block_bytes();
        for part in upload_parts(group_ends, bb, bytes.len()) {
            if let Some((flat, list, path)) = staged.filter(|_| !part.blocks.is_empty()) {
                let (lo, len) = (part.bytes.start as u64, part.bytes.len() as u64);
                let blocks = &blocks[part.blocks.clone()];
                match path {
                    CopyPath::Kernel => self.launch_over(
                        params::SwapKernel::Upload,
                        list + (part.blocks.start * std::mem::size_of::<u32>()) as u64,
                        blocks.len(),
                        &[flat + lo, bb, len],
                    )?,
                    CopyPath::Memcpy => {
                        for s in self.layout.upload_spans(blocks, len) {
                            self.memcpy(Direction::HostToGpu, s.gpu, flat + lo + s.other, s.len)?;
                        }
                    }
                }
            }
            if events {
                self.record_group_event(Direction::HostToGpu, &mut recorded)?;
            }
        }
        Ok(recorded)
    }
}
