//! The shape and argument list of one swap-kernel launch, laid out once: the CUDA backend hands
//! it to `cuLaunchKernel`, and the host-compiled kernels in the tests decode the same `void **`
//! array from the kernels' own signatures. A pure function of its inputs, so both see identical
//! bytes.
use crate::backend::Direction;
use std::ffi::c_void;

/// Threads per CTA.
pub const THREADS_PER_CTA: u32 = 256;
/// Resident CTAs per SM the launch aims for. The kernels use 72-80 registers per thread
/// (ptxas, sm_80 to sm_120; tests/kernels_nvrtc.rs measures and checks it), so 3 CTAs of 256
/// threads fit a 64 Ki-register SM; forcing 4 with `__launch_bounds__` makes ptxas spill.
pub const CTAS_PER_SM: u32 = 3;

/// Grid size for `work` (block, unit) items: one CTA per item up to what the device keeps
/// resident; a grid-stride loop takes the rest.
pub fn grid_size(work: u64, sm_count: u32) -> u32 {
    let cap = (sm_count.max(1) as u64) * CTAS_PER_SM as u64;
    work.clamp(1, cap) as u32
}

/// Grid and CTA size of one launch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    pub grid: u32,
    pub threads: u32,
}

impl Launch {
    /// The shape the CUDA backend uses for `work` items on a device with `sm_count` SMs.
    pub fn for_work(work: u64, sm_count: u32) -> Self {
        Launch { grid: grid_size(work, sm_count), threads: THREADS_PER_CTA }
    }
}

/// One kernel argument, stored at its own address for the `void **` array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    U32(u32),
    U64(u64),
}

impl Arg {
    /// Bytes the kernel parameter occupies.
    pub fn size(&self) -> usize {
        match self {
            Arg::U32(_) => 4,
            Arg::U64(_) => 8,
        }
    }
}

/// The swap kernels, by the list their fourth parameter points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SwapKernel {
    /// GPU blocks -> flat slots; list of (gpu block, slot); tail (flat base, block bytes).
    Gather,
    /// Flat slots -> GPU blocks; as `Gather`.
    Scatter,
    /// Contiguous bytes -> blocks; list of block ids; tail (flat base, block bytes, length).
    Upload,
}

impl SwapKernel {
    /// The direction its copies go, which picks the stream it runs on.
    pub fn direction(self) -> Direction {
        match self {
            SwapKernel::Gather => Direction::GpuToHost,
            SwapKernel::Scatter | SwapKernel::Upload => Direction::HostToGpu,
        }
    }

    /// The kernel's symbol in `kernels/swap.cu`.
    pub fn name(self) -> &'static str {
        match self {
            SwapKernel::Gather => "libra_gather",
            SwapKernel::Scatter => "libra_scatter",
            SwapKernel::Upload => "libra_upload",
        }
    }
    /// How many 64-bit arguments follow the shared leading five.
    pub fn tail_len(self) -> usize {
        match self {
            SwapKernel::Gather | SwapKernel::Scatter => 2,
            SwapKernel::Upload => 3,
        }
    }
}

/// The device tables every swap kernel reads: segment table, unit list, units per block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tables {
    pub segments: u64,
    pub units: u64,
    pub units_per_block: u32,
}

/// A launch ready for `cuLaunchKernel`: kernel, grid shape and arguments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SwapLaunch {
    pub kernel: SwapKernel,
    pub shape: Launch,
    pub args: Vec<Arg>,
}

/// Lays out a launch of `kernel` over `entries` entries of the device list at `list` (block ids
/// or pairs): every kernel takes (segments, units, units per block, list, entries) and then its
/// 64-bit `tail`. The grid covers entries x units per block work items on `sm_count` SMs.
/// Panics when `tail` does not match the kernel (a programming error, not an input).
pub fn swap_launch(
    kernel: SwapKernel,
    tables: Tables,
    list: u64,
    entries: u32,
    tail: &[u64],
    sm_count: u32,
) -> SwapLaunch {
    assert_eq!(
        tail.len(),
        kernel.tail_len(),
        "{} takes {} trailing arguments",
        kernel.name(),
        kernel.tail_len()
    );
    let mut args = vec![
        Arg::U64(tables.segments),
        Arg::U64(tables.units),
        Arg::U32(tables.units_per_block),
        Arg::U64(list),
        Arg::U32(entries),
    ];
    args.extend(tail.iter().map(|&v| Arg::U64(v)));
    let work = entries as u64 * tables.units_per_block as u64;
    SwapLaunch { kernel, shape: Launch::for_work(work, sm_count), args }
}

impl SwapLaunch {
    /// The `void **kernelParams` array: entry i points at argument i, valid while `self` is
    /// borrowed mutably (the driver copies the values during the launch call).
    pub fn param_pointers(&mut self) -> Vec<*mut c_void> {
        self.args
            .iter_mut()
            .map(|a| match a {
                Arg::U32(v) => v as *mut u32 as *mut c_void,
                Arg::U64(v) => v as *mut u64 as *mut c_void,
            })
            .collect()
    }
    /// Each argument's size in bytes, in order.
    pub fn param_sizes(&self) -> Vec<usize> {
        self.args.iter().map(Arg::size).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kernel_gets_its_signature() {
        let t = Tables { segments: 0x1000, units: 0x2000, units_per_block: 3 };
        let l = swap_launch(SwapKernel::Upload, t, 0x3000, 5, &[7, 8, 9], 4);
        assert_eq!(l.param_sizes(), vec![8, 8, 4, 8, 4, 8, 8, 8]);
        assert_eq!(l.args[4], Arg::U32(5));
        assert_eq!(l.shape.grid, 12, "15 work items, at most CTAS_PER_SM x 4 SMs resident");
        let l = swap_launch(SwapKernel::Gather, t, 0x3000, 0, &[0x4000, 64], 4);
        assert_eq!(l.param_sizes(), vec![8, 8, 4, 8, 4, 8, 8]);
        assert_eq!(l.shape.grid, 1, "an empty launch still has one CTA");
    }

    #[test]
    fn pointers_point_at_the_values() {
        let t = Tables { segments: 11, units: 22, units_per_block: 33 };
        let mut l = swap_launch(SwapKernel::Gather, t, 44, 55, &[66, 77], 1);
        let p = l.param_pointers();
        // SAFETY: the pointers lead into `l.args`, alive and unaliased here.
        unsafe {
            assert_eq!(*(p[2] as *const u32), 33);
            assert_eq!(*(p[4] as *const u32), 55);
            assert_eq!(*(p[6] as *const u64), 77);
        }
    }
}
