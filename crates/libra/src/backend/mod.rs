//! Backends move bytes between the GPU tier and the host tier. They know nothing about trees
//! or policies: the cache hands them batches of block moves and polls for completion.
pub mod cpu;
pub mod cpu_async;
pub mod cuda;
pub mod layout;
pub mod pieces;
/// The swap kernels' index math on the CPU, for tests: a mirror, not used in production.
pub mod reference;

use crate::error::{Error, Result};
pub use layout::{Segment, SegmentGroups, TierLayout};
use std::time::{Duration, Instant};

/// Which way a batch copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// GPU block -> host slot (swap-out).
    GpuToHost,
    /// Host slot -> GPU block (swap-in).
    HostToGpu,
}

impl Direction {
    /// 0 for copies to the GPU, 1 for copies to the host: the index of a direction's queue or
    /// stream, where a backend keeps one per direction (the link is full duplex).
    pub fn lane(self) -> usize {
        match self {
            Direction::HostToGpu => 0,
            Direction::GpuToHost => 1,
        }
    }
}

/// One block move: a GPU-tier block id and a host-tier block id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockMove {
    pub gpu_block: u32,
    pub host_block: u32,
}

/// One group of a grouped upload (`Backend::submit_upload_grouped`): the blocks it copies,
/// as indices into the upload's block list, and their share of the upload's bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UploadPart {
    pub blocks: std::ops::Range<usize>,
    pub bytes: std::ops::Range<usize>,
}

/// The groups of an upload of `len` bytes into blocks of `block_bytes`, from its `group_ends`
/// (validated by `Backend::check_upload_groups`), in order; an empty group is an empty part.
pub fn upload_parts(
    group_ends: &[u32],
    block_bytes: u64,
    len: usize,
) -> impl Iterator<Item = UploadPart> + '_ {
    let bb = block_bytes as usize;
    let starts = std::iter::once(0).chain(group_ends.iter().map(|&e| e as usize));
    starts.zip(group_ends.iter().map(|&e| e as usize)).map(move |(first, end)| UploadPart {
        blocks: first..end,
        bytes: (first * bb).min(len)..(end * bb).min(len),
    })
}

/// Identifies a submitted batch; unique per backend instance.
pub type BatchId = u64;

/// Where a batch stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BatchState {
    Pending,
    Done,
    /// The copy failed; the destination holds no valid data, the source is untouched.
    Failed(String),
}

/// Blocks until one batch may have finished. The backend's `poll` gives the verdict after.
pub trait BatchWaiter: Send {
    /// Returns true when the batch may have finished, false when `deadline` passed first.
    fn wait_until(&self, deadline: Instant) -> bool;
}

/// Calls `finished` until it returns true or `deadline` passes (then false): spins briefly,
/// since swaps are usually short, then sleeps so a long wait costs no CPU.
pub(crate) fn poll_until(deadline: Instant, mut finished: impl FnMut() -> bool) -> bool {
    let mut spins = 0u32;
    loop {
        if finished() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        spins += 1;
        if spins < 64 {
            std::thread::yield_now();
        } else {
            std::thread::sleep(Duration::from_micros(20));
        }
    }
}

/// `timeout_us` from now, saturating far in the future instead of overflowing.
pub(crate) fn deadline_after(timeout_us: u64) -> Instant {
    let now = Instant::now();
    now.checked_add(Duration::from_micros(timeout_us))
        .or_else(|| now.checked_add(Duration::from_secs(1 << 32)))
        .unwrap_or(now)
}

/// Moves bytes. Implementations: `cpu` (host memory stands in for both tiers) and `cuda`.
///
/// Contract: a submitted batch either completes (every destination holds the source bytes) or
/// fails (no destination may be trusted); sources are never modified. `poll` and `wait` may be
/// called any number of times for a batch until `retire` forgets it.
pub trait Backend: Send {
    /// A short name for stats and logs ("cpu", "cuda").
    fn name(&self) -> &str;
    /// The layout of the GPU tier (owned arena or adopted segments).
    fn gpu_layout(&self) -> &TierLayout;
    /// Number of host-tier blocks (each `gpu_layout().block_bytes()` bytes, contiguous).
    fn host_blocks(&self) -> u32;
    /// Address of segment `segment` of GPU block `block`: a device pointer under CUDA, a host
    /// pointer on the CPU backend.
    fn gpu_block_addr(&self, block: u32, segment: usize) -> u64 {
        self.gpu_layout().segment_addr(block, segment)
    }
    /// Address of a host-tier block.
    fn host_block_addr(&self, block: u32) -> u64;

    /// Refuses a GPU-tier block id outside the tier.
    fn check_gpu_block(&self, block: u32) -> Result<()> {
        if block >= self.gpu_layout().blocks() {
            return Err(Error::invalid(format!("GPU block {block} is out of range")));
        }
        Ok(())
    }
    /// Refuses a host-tier block id outside the tier.
    fn check_host_block(&self, block: u32) -> Result<()> {
        if block >= self.host_blocks() {
            return Err(Error::invalid(format!("host block {block} is out of range")));
        }
        Ok(())
    }
    /// Refuses moves naming a block outside either tier.
    fn check_moves(&self, moves: &[BlockMove]) -> Result<()> {
        for m in moves {
            self.check_gpu_block(m.gpu_block)?;
            self.check_host_block(m.host_block)?;
        }
        Ok(())
    }
    /// Refuses an upload naming a block outside the GPU tier, or larger than its blocks.
    fn check_upload(&self, bytes: &[u8], blocks: &[u32]) -> Result<()> {
        for &b in blocks {
            self.check_gpu_block(b)?;
        }
        if bytes.len() as u64 > blocks.len() as u64 * self.gpu_layout().block_bytes() {
            return Err(Error::invalid(format!(
                "upload of {} bytes does not fit {} blocks",
                bytes.len(),
                blocks.len()
            )));
        }
        Ok(())
    }
    /// Refuses upload groups that are not non-decreasing block counts ending at `blocks`.
    fn check_upload_groups(&self, blocks: usize, group_ends: &[u32]) -> Result<()> {
        let ordered = group_ends.windows(2).all(|w| w[0] <= w[1]);
        if group_ends.is_empty() || !ordered || group_ends.last() != Some(&(blocks as u32)) {
            return Err(Error::invalid(format!(
                "`group_ends` {group_ends:?} must be non-decreasing block counts ending at the upload's {blocks} blocks"
            )));
        }
        Ok(())
    }
    /// Refuses groups drawn over a different number of segments than the GPU tier has.
    fn check_groups(&self, groups: SegmentGroups) -> Result<()> {
        let n = self.gpu_layout().segments().len();
        if groups.segment_count() != n {
            return Err(Error::invalid(format!(
                "`groups` covers {} segments but the GPU tier has {n}",
                groups.segment_count()
            )));
        }
        Ok(())
    }

    /// Starts copying a batch of blocks between the tiers, all segments, in one submission.
    fn submit_moves(&mut self, direction: Direction, moves: &[BlockMove]) -> Result<BatchId>;
    /// Starts copying a batch like `submit_moves`, one readiness group at a time: group g's
    /// segments of every block are copied after group g - 1's, and `groups_done` reports each
    /// group as it lands, so an engine can start computing the first layers early. Groups
    /// complete in order. The default submits the batch whole: every group completes with it.
    fn submit_moves_grouped(
        &mut self,
        direction: Direction,
        moves: &[BlockMove],
        groups: SegmentGroups,
    ) -> Result<BatchId> {
        let _ = groups;
        self.submit_moves(direction, moves)
    }
    /// How many leading groups of `batch` (submitted with `groups` groups) have completed: their
    /// segments of every destination block hold the source bytes. Non-blocking, never more
    /// than `groups`, and it never goes back while the batch has not failed. Once a batch has
    /// failed the count promises nothing: `poll` gives the verdict, and no group of a failed
    /// batch may be trusted. The default reports all or nothing from `poll`.
    fn groups_done(&mut self, batch: BatchId, groups: u32) -> u32 {
        if self.poll(batch) == BatchState::Done {
            groups
        } else {
            0
        }
    }
    /// A handle (a CUevent under CUDA) an engine's stream can wait on before reading group
    /// `group` of `batch`, or NULL. Valid under the same terms as `batch_event`. The default is
    /// the batch's own event, which completes after every group.
    fn group_event(&self, batch: BatchId, group: u32) -> *mut std::ffi::c_void {
        let _ = group;
        self.batch_event(batch)
    }
    /// Starts writing `bytes` (e.g. adapter weights) into GPU `blocks`, filling each block's
    /// logical bytes in order; the last block may be partly filled.
    fn submit_upload(&mut self, bytes: &[u8], blocks: &[u32]) -> Result<BatchId>;
    /// Starts an upload like `submit_upload` that completes in `group_ends.len()` groups, in
    /// order: group g is the leading `group_ends[g]` blocks (non-decreasing, the last one
    /// `blocks.len()`), and `groups_done` and `group_event` report each group as it lands, as
    /// for a grouped swap-in. Adapter weights laid out layer by layer thus land layer group by
    /// layer group. The default submits the upload whole: every group completes with it.
    fn submit_upload_grouped(&mut self, bytes: &[u8], blocks: &[u32], group_ends: &[u32]) -> Result<BatchId> {
        self.check_upload_groups(blocks.len(), group_ends)?;
        self.submit_upload(bytes, blocks)
    }
    /// Non-blocking completion check.
    fn poll(&mut self, batch: BatchId) -> BatchState;
    /// Blocks until the batch completes or `timeout_us` passes (then `Pending`).
    fn wait(&mut self, batch: BatchId, timeout_us: u64) -> BatchState;
    /// Forgets a finished batch (releases its event).
    fn retire(&mut self, batch: BatchId);
    /// A handle an engine's stream can wait on (a CUevent under CUDA), or NULL.
    fn batch_event(&self, _batch: BatchId) -> *mut std::ffi::c_void {
        std::ptr::null_mut()
    }
    /// Something that blocks until `batch` may have finished without borrowing the backend, so
    /// a cache can wait with its lock released. None when waiting cannot help: the batch has
    /// already finished (or is unknown), or the backend completes batches only when called.
    fn waiter(&self, _batch: BatchId) -> Option<Box<dyn BatchWaiter>> {
        None
    }

    /// Reads a GPU block's logical bytes into `out` (tests, checksums). Synchronous.
    fn read_gpu_block(&mut self, block: u32, out: &mut [u8]) -> Result<()>;
    /// Writes a GPU block's logical bytes. Synchronous.
    fn write_gpu_block(&mut self, block: u32, data: &[u8]) -> Result<()>;
    /// Reads a host block. Synchronous.
    fn read_host_block(&mut self, block: u32, out: &mut [u8]) -> Result<()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_parts_split_blocks_and_bytes_by_group() {
        // 3 blocks of 256 bytes holding 700 bytes, in groups ending at blocks 1, 1 and 3.
        let parts: Vec<UploadPart> = upload_parts(&[1, 1, 3], 256, 700).collect();
        assert_eq!(
            parts,
            vec![
                UploadPart { blocks: 0..1, bytes: 0..256 },
                UploadPart { blocks: 1..1, bytes: 256..256 },
                UploadPart { blocks: 1..3, bytes: 256..700 },
            ]
        );
    }
}
