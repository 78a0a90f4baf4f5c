//! What a CUDA backend is opened with, and the rule that picks kernel or memcpy per batch.
use super::tables;
use std::path::PathBuf;

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
            chunk_bytes: tables::DEFAULT_CHUNK_BYTES,
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
}
