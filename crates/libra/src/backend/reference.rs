//! The swap kernels' index math, executed on the CPU: a mirror for tests, used by nothing in
//! production. `kernels/swap.cu` and this file make the same decisions over the tables the
//! CUDA backend builds (`cuda::tables`) and the launch shape it picks (`cuda::params`): the
//! same walk of CTAs over (block, unit) work items, the same head / vector / tail split of
//! every range and the same thread-to-vector mapping. Tests compare it byte for byte with plain
//! copies, so a mistake in the shared math shows up on machines without a GPU.
use super::cuda::params::Launch;
use super::cuda::tables::{DevSegment, Unit};

/// Vector loads each thread keeps in flight (LIBRA_UNROLL in the kernel).
pub const UNROLL: u64 = 4;

/// How one range is copied: `head` bytes one at a time, `nvec` accesses of `width` bytes, then
/// `tail` bytes one at a time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RangeSplit {
    pub head: u64,
    pub width: u64,
    pub nvec: u64,
    pub tail: u64,
}

/// The widest access both addresses allow (they must agree modulo the width), and the split.
pub fn split_range(src: u64, dst: u64, len: u64) -> RangeSplit {
    let rel = (src ^ dst) & 15;
    let width = if rel == 0 {
        16
    } else if rel & 7 == 0 {
        8
    } else if rel & 3 == 0 {
        4
    } else if rel & 1 == 0 {
        2
    } else {
        1
    };
    let head = ((width - (src & (width - 1))) & (width - 1)).min(len);
    let nvec = (len - head) / width;
    let tail = len - head - nvec * width;
    RangeSplit { head, width, nvec, tail }
}

/// The vector indices thread `tid` of a CTA of `threads` touches, in the order it touches them.
pub fn thread_vectors(tid: u64, threads: u64, nvec: u64) -> impl Iterator<Item = u64> {
    let step = threads * UNROLL;
    (tid..nvec)
        .step_by(step as usize)
        .flat_map(move |base| (0..UNROLL).map(move |j| base + j * threads).filter(move |&i| i < nvec))
}

/// `libra_copy_range`: every thread of the CTA does its share.
///
/// # Safety
/// Both ranges must be valid for `len` bytes and must not overlap.
unsafe fn copy_range(src: u64, dst: u64, len: u64, threads: u64) {
    let sp = split_range(src, dst, len);
    let s = src as *const u8;
    let d = dst as *mut u8;
    for tid in 0..threads {
        for i in (tid..sp.head).step_by(threads as usize) {
            // SAFETY: i < head <= len, inside both ranges (the caller's promise).
            unsafe { *d.add(i as usize) = *s.add(i as usize) };
        }
        for i in thread_vectors(tid, threads, sp.nvec) {
            let off = (sp.head + i * sp.width) as usize;
            debug_assert_eq!((src as usize + off) % sp.width as usize, 0);
            debug_assert_eq!((dst as usize + off) % sp.width as usize, 0);
            // SAFETY: i < nvec, so [off, off + width) lies within head + nvec * width <= len;
            // the ranges do not overlap (the caller's promise).
            unsafe { std::ptr::copy_nonoverlapping(s.add(off), d.add(off), sp.width as usize) };
        }
        let t0 = sp.head + sp.nvec * sp.width;
        for i in (tid..sp.tail).step_by(threads as usize) {
            // SAFETY: t0 + i < head + nvec * width + tail = len.
            unsafe { *d.add((t0 + i) as usize) = *s.add((t0 + i) as usize) };
        }
    }
}

/// The grid-stride walk over (list entry, unit) work items: CTA `cta` handles items `cta`,
/// `cta + grid`, ...; `f` gets the entry's index, the entry, the unit and its segment.
fn for_each_item<T: Copy>(
    launch: Launch,
    list: &[T],
    segs: &[DevSegment],
    units: &[Unit],
    mut f: impl FnMut(usize, T, &Unit, &DevSegment),
) {
    let upb = units.len() as u64;
    let total = list.len() as u64 * upb;
    for cta in 0..launch.grid as u64 {
        let mut w = cta;
        while w < total {
            let entry = (w / upb) as usize;
            let u = &units[(w % upb) as usize];
            f(entry, list[entry], u, &segs[u.segment as usize]);
            w += launch.grid as u64;
        }
    }
}

fn gpu_addr(seg: &DevSegment, block: u32, u: &Unit) -> u64 {
    seg.base + block as u64 * seg.stride + u.start
}

fn flat_addr(flat_base: u64, block_bytes: u64, seg: &DevSegment, slot: u32, u: &Unit) -> u64 {
    flat_base + slot as u64 * block_bytes + seg.offset + u.start
}

/// `libra_gather`: pairs are (GPU block, flat slot).
///
/// # Safety
/// Every address the layout and pairs produce must be valid, and sources and destinations must
/// not overlap.
pub unsafe fn gather(
    launch: Launch,
    segs: &[DevSegment],
    units: &[Unit],
    pairs: &[[u32; 2]],
    flat_base: u64,
    block_bytes: u64,
) {
    for_each_item(launch, pairs, segs, units, |_, p, u, seg| {
        let (src, dst) = (gpu_addr(seg, p[0], u), flat_addr(flat_base, block_bytes, seg, p[1], u));
        // SAFETY: valid, disjoint ranges (the caller's promise).
        unsafe { copy_range(src, dst, u.len, launch.threads as u64) };
    });
}

/// `libra_scatter`: pairs are (GPU block, flat slot).
///
/// # Safety
/// As for [`gather`].
pub unsafe fn scatter(
    launch: Launch,
    segs: &[DevSegment],
    units: &[Unit],
    pairs: &[[u32; 2]],
    flat_base: u64,
    block_bytes: u64,
) {
    for_each_item(launch, pairs, segs, units, |_, p, u, seg| {
        let (src, dst) = (flat_addr(flat_base, block_bytes, seg, p[1], u), gpu_addr(seg, p[0], u));
        // SAFETY: valid, disjoint ranges (the caller's promise).
        unsafe { copy_range(src, dst, u.len, launch.threads as u64) };
    });
}

/// `libra_upload`: `flat_len` bytes at `flat_base` fill `blocks` in logical order.
///
/// # Safety
/// As for [`gather`].
#[allow(clippy::too_many_arguments)]
pub unsafe fn upload(
    launch: Launch,
    segs: &[DevSegment],
    units: &[Unit],
    blocks: &[u32],
    flat_base: u64,
    block_bytes: u64,
    flat_len: u64,
) {
    for_each_item(launch, blocks, segs, units, |slot, block, u, seg| {
        let logical = slot as u64 * block_bytes + seg.offset + u.start;
        if logical >= flat_len {
            return;
        }
        let len = u.len.min(flat_len - logical);
        // SAFETY: valid, disjoint ranges (the caller's promise); `len` stays within the bytes.
        unsafe { copy_range(flat_base + logical, gpu_addr(seg, block, u), len, launch.threads as u64) };
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_picks_the_widest_shared_alignment() {
        assert_eq!(split_range(0, 16, 100), RangeSplit { head: 0, width: 16, nvec: 6, tail: 4 });
        assert_eq!(split_range(3, 19, 100), RangeSplit { head: 13, width: 16, nvec: 5, tail: 7 });
        assert_eq!(split_range(8, 16, 40), RangeSplit { head: 0, width: 8, nvec: 5, tail: 0 });
        assert_eq!(split_range(1, 2, 5), RangeSplit { head: 0, width: 1, nvec: 5, tail: 0 });
        assert_eq!(split_range(5, 21, 3), RangeSplit { head: 3, width: 16, nvec: 0, tail: 0 });
        assert_eq!(split_range(6, 8, 9), RangeSplit { head: 0, width: 2, nvec: 4, tail: 1 });
    }

    #[test]
    fn threads_cover_every_vector_once() {
        for threads in [1u64, 3, 32, 256] {
            for nvec in [0u64, 1, 5, 255, 256, 1023, 1024, 1025, 4097] {
                let mut seen = vec![0u8; nvec as usize];
                for tid in 0..threads {
                    for i in thread_vectors(tid, threads, nvec) {
                        seen[i as usize] += 1;
                    }
                }
                assert!(seen.iter().all(|&c| c == 1), "threads {threads} nvec {nvec}");
            }
        }
    }
}
