//! How one logical block maps onto memory: either one owned arena, or the engine's own KV
//! tensors described as segments (one per layer and K/V). A block's logical bytes are the
//! concatenation of its piece in each segment, in segment order.
use crate::error::{Error, Result};

/// One region holding a piece of every block: `base + block * stride` .. `+ bytes_per_block`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub struct Segment {
    pub base: u64,
    pub bytes_per_block: u64,
    pub stride: u64,
}

/// The GPU tier's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TierLayout {
    segments: Vec<Segment>,
    /// Offset of each segment's piece within a block's logical bytes.
    offsets: Vec<u64>,
    block_bytes: u64,
    blocks: u32,
}

impl TierLayout {
    /// Validates segments for `blocks` blocks: non-empty, non-zero pieces, strides that fit the
    /// piece, no overflow of the address range.
    pub fn new(segments: Vec<Segment>, blocks: u32) -> Result<Self> {
        if segments.is_empty() {
            return Err(Error::invalid("`segments` is empty"));
        }
        if blocks == 0 {
            return Err(Error::invalid("`gpu_blocks` must be at least 1"));
        }
        let mut offsets = Vec::with_capacity(segments.len());
        let mut total: u64 = 0;
        for (i, s) in segments.iter().enumerate() {
            if s.bytes_per_block == 0 {
                return Err(Error::invalid(format!("`segments[{i}].bytes_per_block` is 0")));
            }
            if s.stride < s.bytes_per_block {
                return Err(Error::invalid(format!(
                    "`segments[{i}].stride` ({}) is smaller than its bytes_per_block ({})",
                    s.stride, s.bytes_per_block
                )));
            }
            if s.base == 0 {
                return Err(Error::invalid(format!("`segments[{i}].base` is NULL")));
            }
            let span = s
                .stride
                .checked_mul(blocks as u64 - 1)
                .and_then(|v| v.checked_add(s.bytes_per_block))
                .and_then(|v| v.checked_add(s.base));
            if span.is_none() {
                return Err(Error::invalid(format!(
                    "`segments[{i}]` overflows the address space for {blocks} blocks"
                )));
            }
            offsets.push(total);
            total = total
                .checked_add(s.bytes_per_block)
                .ok_or_else(|| Error::invalid("total block size overflows"))?;
        }
        Ok(TierLayout { segments, offsets, block_bytes: total, blocks })
    }

    /// One contiguous arena at `base` of `blocks` blocks of `block_bytes`.
    pub fn contiguous(base: u64, block_bytes: u64, blocks: u32) -> Result<Self> {
        Self::new(vec![Segment { base, bytes_per_block: block_bytes, stride: block_bytes }], blocks)
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }
    pub fn block_bytes(&self) -> u64 {
        self.block_bytes
    }
    pub fn blocks(&self) -> u32 {
        self.blocks
    }
    /// Offset of segment `i`'s piece within a block's logical bytes.
    pub fn segment_offset(&self, i: usize) -> u64 {
        self.offsets[i]
    }
    /// Address of segment `segment` of block `block`.
    pub fn segment_addr(&self, block: u32, segment: usize) -> u64 {
        let s = &self.segments[segment];
        s.base + s.stride * block as u64
    }
}

/// Readiness groups of a swap: consecutive runs of `per_group` segments (the last run may be
/// shorter), in segment order. With segments ordered by layer (K and V of layer 0, then layer
/// 1, ...) a group is a run of layers, so an engine can compute the first layers while the
/// later ones are still being copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SegmentGroups {
    segments: u32,
    per_group: u32,
}

impl SegmentGroups {
    /// Groups of `per_group` segments over `segments` segments; `per_group` 0 (or at least
    /// `segments`) makes one group of every segment.
    pub fn new(segments: usize, per_group: u32) -> Self {
        let segments = u32::try_from(segments.max(1)).unwrap_or(u32::MAX);
        let per_group = if per_group == 0 { segments } else { per_group.min(segments) };
        SegmentGroups { segments, per_group }
    }
    /// One group holding every segment of `layout`.
    pub fn whole(layout: &TierLayout) -> Self {
        Self::new(layout.segments().len(), 0)
    }
    /// Number of segments the groups cover.
    pub fn segment_count(&self) -> usize {
        self.segments as usize
    }
    /// Number of groups (at least 1).
    pub fn count(&self) -> u32 {
        self.segments.div_ceil(self.per_group)
    }
    /// Segments of group `g`.
    pub fn segments(&self, g: u32) -> std::ops::Range<usize> {
        let start = (g.min(self.count()) as u64 * self.per_group as u64).min(self.segments as u64) as usize;
        let end = (start + self.per_group as usize).min(self.segments as usize);
        start..end
    }
    /// The group holding segment `s`.
    pub fn group_of(&self, s: usize) -> u32 {
        (s as u64 / self.per_group as u64).min(self.count() as u64 - 1) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_cover_every_segment_once_in_order() {
        for segments in 1..20usize {
            for per in 0..22u32 {
                let g = SegmentGroups::new(segments, per);
                let mut next = 0;
                for i in 0..g.count() {
                    let r = g.segments(i);
                    assert_eq!(r.start, next, "{segments} segments, {per} per group");
                    assert!(!r.is_empty());
                    for s in r.clone() {
                        assert_eq!(g.group_of(s), i);
                    }
                    next = r.end;
                }
                assert_eq!(next, segments);
            }
        }
        assert_eq!(SegmentGroups::new(64, 8).count(), 8);
        assert_eq!(SegmentGroups::new(64, 0).count(), 1);
        assert_eq!(SegmentGroups::new(5, 2).segments(2), 4..5);
    }
}
