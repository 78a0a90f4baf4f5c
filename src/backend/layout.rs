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
