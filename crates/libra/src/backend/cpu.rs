//! Host-memory backend: plain memory stands in for both tiers. It is the default backend and
//! the one every test runs on. Copies run at submission, or, in deferred mode, when a test
//! completes the batch (so tests can complete batches out of order or fail them), or group by
//! group for a grouped swap.
use super::{
    upload_parts, Backend, BatchId, BatchState, BlockMove, Direction, Segment, SegmentGroups, TierLayout,
};
use crate::error::{Error, Result};
use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::collections::HashMap;

/// A zeroed, 256-byte aligned heap buffer with a stable address.
pub struct AlignedBuf {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the pointer is to plain bytes this value alone owns (no alias escapes it), so moving
// the value to another thread moves sole ownership; freeing needs no particular thread.
unsafe impl Send for AlignedBuf {}

impl AlignedBuf {
    pub fn new(len: usize) -> Result<Self> {
        if len == 0 {
            return Ok(AlignedBuf { ptr: std::ptr::NonNull::dangling().as_ptr(), len: 0 });
        }
        let layout = Layout::from_size_align(len, 256)
            .map_err(|_| Error::invalid(format!("buffer of {len} bytes is too large")))?;
        // SAFETY: layout has non-zero size.
        let ptr = unsafe { alloc_zeroed(layout) };
        if ptr.is_null() {
            return Err(Error::out_of_memory(format!("host allocation of {len} bytes failed")));
        }
        Ok(AlignedBuf { ptr, len })
    }
    pub fn addr(&self) -> u64 {
        self.ptr as u64
    }
    pub fn len(&self) -> usize {
        self.len
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl Drop for AlignedBuf {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: allocated in `new` with this exact layout.
            unsafe { dealloc(self.ptr, Layout::from_size_align_unchecked(self.len, 256)) };
        }
    }
}

enum Op {
    Moves(Direction, Vec<BlockMove>, SegmentGroups),
    /// Bytes, blocks, and the block count at the end of each group (one group: all blocks).
    Upload(Vec<u8>, Vec<u32>, Vec<u32>),
}

impl Op {
    fn groups(&self) -> u32 {
        match self {
            Op::Moves(_, _, g) => g.count(),
            Op::Upload(_, _, ends) => ends.len() as u32,
        }
    }
}

/// The CPU backend.
pub struct CpuBackend {
    layout: TierLayout,
    _gpu_arena: Option<AlignedBuf>,
    host: AlignedBuf,
    host_blocks: u32,
    next_batch: BatchId,
    deferred: bool,
    pending: HashMap<BatchId, Op>,
    /// Groups already copied of pending grouped batches (deferred mode).
    groups_copied: HashMap<BatchId, u32>,
    finished: HashMap<BatchId, BatchState>,
}

impl CpuBackend {
    /// Owns a GPU-tier arena of `gpu_blocks` x `block_bytes` and a host tier of `host_blocks`.
    pub fn new(block_bytes: u64, gpu_blocks: u32, host_blocks: u32) -> Result<Self> {
        let total = block_bytes
            .checked_mul(gpu_blocks as u64)
            .filter(|&t| t <= isize::MAX as u64)
            .ok_or_else(|| Error::invalid("gpu_blocks x block_bytes overflows"))?;
        let arena = AlignedBuf::new(total as usize)?;
        let layout = TierLayout::contiguous(arena.addr().max(1), block_bytes, gpu_blocks)?;
        Self::build(layout, Some(arena), host_blocks)
    }

    /// Adopts caller-owned memory as the GPU tier.
    ///
    /// # Safety
    /// Every segment must describe readable and writable host memory for `gpu_blocks` blocks
    /// that outlives the backend and is not resized.
    pub unsafe fn adopt(segments: Vec<Segment>, gpu_blocks: u32, host_blocks: u32) -> Result<Self> {
        let layout = TierLayout::new(segments, gpu_blocks)?;
        Self::build(layout, None, host_blocks)
    }

    fn build(layout: TierLayout, arena: Option<AlignedBuf>, host_blocks: u32) -> Result<Self> {
        let host_total = layout
            .block_bytes()
            .checked_mul(host_blocks as u64)
            .filter(|&t| t <= isize::MAX as u64)
            .ok_or_else(|| Error::invalid("host_blocks x block_bytes overflows"))?;
        let host = AlignedBuf::new(host_total as usize)?;
        Ok(CpuBackend {
            layout,
            _gpu_arena: arena,
            host,
            host_blocks,
            next_batch: 1,
            deferred: false,
            pending: HashMap::new(),
            groups_copied: HashMap::new(),
            finished: HashMap::new(),
        })
    }

    /// In deferred mode nothing is copied until `complete` is called for the batch.
    pub fn set_deferred(&mut self, deferred: bool) {
        self.deferred = deferred;
    }

    /// Batches submitted but not yet completed (deferred mode).
    pub fn pending_batches(&self) -> Vec<BatchId> {
        let mut v: Vec<BatchId> = self.pending.keys().copied().collect();
        v.sort_unstable();
        v
    }

    /// Completes a deferred batch: copies its bytes when `success`, else marks it failed and
    /// leaves every destination untouched (beyond the groups `complete_groups` already
    /// copied).
    pub fn complete(&mut self, batch: BatchId, success: bool) {
        if let Some(op) = self.pending.remove(&batch) {
            let from = self.groups_copied.remove(&batch).unwrap_or(0);
            let state = if success {
                self.execute(&op, from);
                BatchState::Done
            } else {
                BatchState::Failed("copy failed (injected)".into())
            };
            self.finished.insert(batch, state);
        }
    }

    fn host_ptr(&self, block: u32) -> *mut u8 {
        (self.host.addr() + block as u64 * self.layout.block_bytes()) as *mut u8
    }

    /// Copies the next `n` groups of a deferred grouped batch (the last ones complete it).
    pub fn complete_groups(&mut self, batch: BatchId, n: u32) {
        let Some(op) = self.pending.get(&batch) else { return };
        let count = op.groups();
        let from = self.groups_copied.get(&batch).copied().unwrap_or(0);
        let to = from.saturating_add(n).min(count);
        self.execute_groups(op, from..to);
        if to == count {
            self.pending.remove(&batch);
            self.groups_copied.remove(&batch);
            self.finished.insert(batch, BatchState::Done);
        } else {
            self.groups_copied.insert(batch, to);
        }
    }

    /// Copies `segments` of every move.
    fn copy_segments(&self, dir: Direction, moves: &[BlockMove], segments: std::ops::Range<usize>) {
        for s in self.layout.move_spans(moves, segments, self.host.addr()) {
            let (g, h, n) = (s.gpu as *mut u8, s.other as *mut u8, s.len as usize);
            // SAFETY: ids were validated at submission, so both pieces lie inside their tiers;
            // `copy` allows the (never expected) overlap of adopted memory.
            unsafe {
                match dir {
                    Direction::GpuToHost => std::ptr::copy(g, h, n),
                    Direction::HostToGpu => std::ptr::copy(h, g, n),
                }
            }
        }
    }

    /// Runs `op`; a grouped batch from group `from_group` on (earlier ones were copied).
    fn execute(&self, op: &Op, from_group: u32) {
        self.execute_groups(op, from_group..op.groups());
    }

    /// Copies groups `range` of `op`.
    fn execute_groups(&self, op: &Op, range: std::ops::Range<u32>) {
        match op {
            Op::Moves(dir, moves, groups) => {
                for g in range {
                    self.copy_segments(*dir, moves, groups.segments(g));
                }
            }
            Op::Upload(bytes, blocks, ends) => {
                let parts = upload_parts(ends, self.layout.block_bytes(), bytes.len());
                for part in parts.skip(range.start as usize).take(range.len()) {
                    let part_bytes = &bytes[part.bytes];
                    for s in self.layout.upload_spans(&blocks[part.blocks], part_bytes.len() as u64) {
                        // SAFETY: validated block ids; the span lies inside the piece and
                        // inside `part_bytes`.
                        unsafe {
                            std::ptr::copy(
                                part_bytes.as_ptr().add(s.other as usize),
                                s.gpu as *mut u8,
                                s.len as usize,
                            )
                        };
                    }
                }
            }
        }
    }

    /// Writes `data` (at most one block's logical bytes) into a GPU block's segment pieces.
    fn scatter_logical(&self, block: u32, data: &[u8]) {
        for s in self.layout.block_spans(block, data.len() as u64) {
            // SAFETY: validated block id; the span lies inside the piece and inside `data`.
            unsafe { std::ptr::copy(data.as_ptr().add(s.other as usize), s.gpu as *mut u8, s.len as usize) };
        }
    }

    fn enqueue(&mut self, op: Op) -> BatchId {
        let id = self.next_batch;
        self.next_batch += 1;
        if self.deferred {
            self.pending.insert(id, op);
        } else {
            self.execute(&op, 0);
            self.finished.insert(id, BatchState::Done);
        }
        id
    }
}

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
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
        Ok(self.enqueue(Op::Moves(direction, moves.to_vec(), SegmentGroups::whole(&self.layout))))
    }
    fn submit_moves_grouped(
        &mut self,
        direction: Direction,
        moves: &[BlockMove],
        groups: SegmentGroups,
    ) -> Result<BatchId> {
        self.check_moves(moves)?;
        self.check_groups(groups)?;
        Ok(self.enqueue(Op::Moves(direction, moves.to_vec(), groups)))
    }
    fn groups_done(&mut self, batch: BatchId, groups: u32) -> u32 {
        if self.pending.contains_key(&batch) {
            return self.groups_copied.get(&batch).copied().unwrap_or(0);
        }
        match self.finished.get(&batch) {
            Some(BatchState::Done) => groups,
            _ => 0,
        }
    }
    fn submit_upload(&mut self, bytes: &[u8], blocks: &[u32]) -> Result<BatchId> {
        self.check_upload(bytes, blocks)?;
        Ok(self.enqueue(Op::Upload(bytes.to_vec(), blocks.to_vec(), vec![blocks.len() as u32])))
    }
    fn submit_upload_grouped(&mut self, bytes: &[u8], blocks: &[u32], group_ends: &[u32]) -> Result<BatchId> {
        self.check_upload(bytes, blocks)?;
        self.check_upload_groups(blocks.len(), group_ends)?;
        Ok(self.enqueue(Op::Upload(bytes.to_vec(), blocks.to_vec(), group_ends.to_vec())))
    }
    fn poll(&mut self, batch: BatchId) -> BatchState {
        if self.pending.contains_key(&batch) {
            return BatchState::Pending;
        }
        self.finished
            .get(&batch)
            .cloned()
            .unwrap_or_else(|| BatchState::Failed(format!("unknown batch {batch}")))
    }
    fn wait(&mut self, batch: BatchId, _timeout_us: u64) -> BatchState {
        // Deferred batches complete only when a test says so: waiting cannot help.
        self.poll(batch)
    }
    fn retire(&mut self, batch: BatchId) {
        self.finished.remove(&batch);
        self.groups_copied.remove(&batch);
        self.pending.remove(&batch);
    }
    fn read_gpu_block(&mut self, block: u32, out: &mut [u8]) -> Result<()> {
        self.check_gpu_block(block)?;
        for s in self.layout.block_spans(block, out.len() as u64) {
            // SAFETY: validated block id; the span lies inside the piece and inside `out`.
            unsafe {
                std::ptr::copy(s.gpu as *const u8, out.as_mut_ptr().add(s.other as usize), s.len as usize)
            };
        }
        Ok(())
    }
    fn write_gpu_block(&mut self, block: u32, data: &[u8]) -> Result<()> {
        self.check_gpu_block(block)?;
        if data.len() as u64 > self.layout.block_bytes() {
            return Err(Error::invalid("data is larger than a block"));
        }
        self.scatter_logical(block, data);
        Ok(())
    }
    fn read_host_block(&mut self, block: u32, out: &mut [u8]) -> Result<()> {
        self.check_host_block(block)?;
        let n = out.len().min(self.layout.block_bytes() as usize);
        // SAFETY: validated block id; n within the block.
        unsafe { std::ptr::copy(self.host_ptr(block), out.as_mut_ptr(), n) };
        Ok(())
    }
}
