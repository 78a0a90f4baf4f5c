//! Backends move bytes between the GPU tier and the host tier. They know nothing about trees
//! or policies: the cache hands them batches of block moves and polls for completion.
pub mod cpu;
pub mod cuda;
pub mod faulty;
pub mod layout;
/// The swap kernels' index math on the CPU (Rust API only, not part of the C header).
///
/// cbindgen:ignore
pub mod reference;

use crate::error::Result;
pub use layout::{Segment, TierLayout};

/// Which way a batch copies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// GPU block -> host slot (swap-out).
    GpuToHost,
    /// Host slot -> GPU block (swap-in).
    HostToGpu,
}

/// One block move: a GPU-tier block id and a host-tier block id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockMove {
    pub gpu_block: u32,
    pub host_block: u32,
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
            return Err(crate::Error::invalid(format!("GPU block {block} is out of range")));
        }
        Ok(())
    }
    /// Refuses a host-tier block id outside the tier.
    fn check_host_block(&self, block: u32) -> Result<()> {
        if block >= self.host_blocks() {
            return Err(crate::Error::invalid(format!("host block {block} is out of range")));
        }
        Ok(())
    }

    /// Starts copying a batch of blocks between the tiers, all segments, in one submission.
    fn submit_moves(&mut self, direction: Direction, moves: &[BlockMove]) -> Result<BatchId>;
    /// Starts writing `bytes` (e.g. adapter weights) into GPU `blocks`, filling each block's
    /// logical bytes in order; the last block may be partly filled.
    fn submit_upload(&mut self, bytes: &[u8], blocks: &[u32]) -> Result<BatchId>;
    /// Starts GPU-to-GPU block copies (copy-on-write of a shared prefix block, compaction).
    fn submit_device_copies(&mut self, pairs: &[(u32, u32)]) -> Result<BatchId>;
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

    /// Reads a GPU block's logical bytes into `out` (tests, checksums). Synchronous.
    fn read_gpu_block(&mut self, block: u32, out: &mut [u8]) -> Result<()>;
    /// Writes a GPU block's logical bytes. Synchronous.
    fn write_gpu_block(&mut self, block: u32, data: &[u8]) -> Result<()>;
    /// Reads a host block. Synchronous.
    fn read_host_block(&mut self, block: u32, out: &mut [u8]) -> Result<()>;
}
