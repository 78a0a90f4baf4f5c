//! The tables every swap kernel reads, laid out once on the host: the segment table (each
//! segment's base, piece size, stride and offset in a block's logical bytes) and the unit list
//! (each segment's piece cut into chunks one CTA copies). The CUDA backend uploads them; the
//! CPU mirror of the kernels (`backend::reference`) reads the same values.
use crate::backend::{SegmentGroups, TierLayout};

/// Largest range one unit covers. A multiple of 16, so every chunk of a piece keeps the piece's
/// alignment and gets the same vector width.
pub const DEFAULT_CHUNK_BYTES: u64 = 32 * 1024;

/// `LibraSegment` in the kernel.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DevSegment {
    pub base: u64,
    pub bytes: u64,
    pub stride: u64,
    /// Offset of this segment's piece in a block's logical bytes.
    pub offset: u64,
}

/// `LibraUnit` in the kernel: bytes [start, start + len) of one segment's piece.
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Unit {
    pub segment: u32,
    pub pad: u32,
    pub start: u64,
    pub len: u64,
}

/// The kernel's view of a layout's segments.
pub fn device_segments(layout: &TierLayout) -> Vec<DevSegment> {
    layout
        .segments()
        .iter()
        .enumerate()
        .map(|(i, s)| DevSegment {
            base: s.base,
            bytes: s.bytes_per_block,
            stride: s.stride,
            offset: layout.segment_offset(i),
        })
        .collect()
}

/// Splits every segment's piece into units of at most `chunk` bytes (rounded down to a multiple
/// of 16, at least 16), in segment order: the unit list is the same for every block.
pub fn build_units(layout: &TierLayout, chunk: u64) -> Vec<Unit> {
    let chunk = (chunk & !15).max(16);
    let mut units = Vec::new();
    for (i, s) in layout.segments().iter().enumerate() {
        let mut start = 0;
        while start < s.bytes_per_block {
            let len = chunk.min(s.bytes_per_block - start);
            units.push(Unit { segment: i as u32, pad: 0, start, len });
            start += len;
        }
    }
    units
}

/// The slice of the unit list each readiness group's launch reads: units are in segment order,
/// so a run of segments is a run of units, and a group's launch is the same kernel over a
/// shorter list (offset pointer, fewer units per block).
pub fn group_units(units: &[Unit], groups: SegmentGroups) -> Vec<std::ops::Range<u32>> {
    (0..groups.count())
        .map(|g| {
            let segs = groups.segments(g);
            let first = units.partition_point(|u| (u.segment as usize) < segs.start) as u32;
            let end = units.partition_point(|u| (u.segment as usize) < segs.end) as u32;
            first..end
        })
        .collect()
}
