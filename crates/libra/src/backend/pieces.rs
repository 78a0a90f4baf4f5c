//! The per-segment walks every backend's copies follow, written once: a block's logical bytes
//! are its piece in each segment, in segment order, so every copy of a block between the GPU
//! tier and a contiguous buffer (a host-tier block, caller bytes) or another GPU block breaks
//! into one span per segment. The CPU backend copies each span with a memory move, the CUDA
//! backend with `cuMemcpyAsync`.
use super::{BlockMove, TierLayout};
use std::ops::Range;

/// One contiguous copy: `len` bytes at `gpu` in the GPU tier, and the other side at `other`,
/// whose meaning each walk below states.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub gpu: u64,
    pub other: u64,
    pub len: u64,
}

impl TierLayout {
    /// Block `block`'s pieces in `segments`, in order, cut to the block's first `limit` logical
    /// bytes: a piece starting at or past `limit` ends the walk. `other` is the piece's offset
    /// in the block's logical bytes.
    pub fn logical_spans(
        &self,
        block: u32,
        segments: Range<usize>,
        limit: u64,
    ) -> impl Iterator<Item = Span> + '_ {
        segments.map_while(move |s| {
            let offset = self.segment_offset(s);
            (offset < limit).then(|| Span {
                gpu: self.segment_addr(block, s),
                other: offset,
                len: self.segments()[s].bytes_per_block.min(limit - offset),
            })
        })
    }

    /// Every piece of block `block` that holds one of its first `limit` logical bytes.
    pub fn block_spans(&self, block: u32, limit: u64) -> impl Iterator<Item = Span> + '_ {
        self.logical_spans(block, 0..self.segments().len(), limit)
    }

    /// The pieces in `segments` of every move, whole; `other` is the address of the piece in
    /// the host tier, whose block 0 is at `host_base` (blocks contiguous, each holding its
    /// logical bytes in order).
    pub fn move_spans<'a>(
        &'a self,
        moves: &'a [BlockMove],
        segments: Range<usize>,
        host_base: u64,
    ) -> impl Iterator<Item = Span> + 'a {
        let bb = self.block_bytes();
        moves.iter().flat_map(move |m| {
            let host = host_base + m.host_block as u64 * bb;
            self.logical_spans(m.gpu_block, segments.clone(), u64::MAX)
                .map(move |s| Span { other: host + s.other, ..s })
        })
    }

    /// The pieces `len` bytes fill when written over `blocks` in order, each block taking the
    /// next `block_bytes` (the last may be partly filled); `other` is the offset in the bytes.
    pub fn upload_spans<'a>(&'a self, blocks: &'a [u32], len: u64) -> impl Iterator<Item = Span> + 'a {
        let bb = self.block_bytes();
        blocks.iter().enumerate().flat_map(move |(i, &b)| {
            let start = i as u64 * bb;
            self.block_spans(b, len.saturating_sub(start)).map(move |s| Span { other: start + s.other, ..s })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Segment;

    fn two_segments() -> TierLayout {
        let segs = vec![
            Segment { base: 0x1000, bytes_per_block: 16, stride: 64 },
            Segment { base: 0x9000, bytes_per_block: 8, stride: 8 },
        ];
        TierLayout::new(segs, 4).unwrap()
    }

    #[test]
    fn spans_follow_the_segments_and_stop_at_the_limit() {
        let l = two_segments();
        let all: Vec<Span> = l.block_spans(2, u64::MAX).collect();
        assert_eq!(
            all,
            vec![Span { gpu: 0x1000 + 128, other: 0, len: 16 }, Span { gpu: 0x9000 + 16, other: 16, len: 8 }]
        );
        let cut: Vec<Span> = l.block_spans(2, 20).collect();
        assert_eq!(cut[1], Span { gpu: 0x9000 + 16, other: 16, len: 4 });
        assert_eq!(l.block_spans(2, 16).count(), 1, "a piece starting at the limit is not copied");
        assert_eq!(l.block_spans(2, 0).count(), 0);
    }

    #[test]
    fn moves_and_uploads_address_both_sides() {
        let l = two_segments();
        let mv = [BlockMove { gpu_block: 1, host_block: 3 }];
        let m: Vec<Span> = l.move_spans(&mv, 1..2, 0x10_0000).collect();
        assert_eq!(m, vec![Span { gpu: 0x9000 + 8, other: 0x10_0000 + 3 * 24 + 16, len: 8 }]);
        // 30 bytes over blocks 3 then 0: all of block 3 (24 bytes), then 6 bytes of block 0.
        let u: Vec<Span> = l.upload_spans(&[3, 0], 30).collect();
        assert_eq!(u.len(), 3);
        assert_eq!(u[2], Span { gpu: 0x1000, other: 24, len: 6 });
    }
}
