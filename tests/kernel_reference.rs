//! The kernels' index math (run on the CPU by `backend::reference`) against plain copies, over
//! many layouts: odd piece sizes, misaligned bases and strides, interleaved segments, pieces
//! split into several chunks, every launch shape.
use libra::backend::reference::{self, Launch, DEFAULT_CHUNK_BYTES};
use libra::backend::{Segment, TierLayout};
use proptest::prelude::*;

/// One buffer holding all segments, and the layout pointing into it.
struct Arena {
    mem: Vec<u8>,
    /// (offset of segment base in `mem`, bytes, stride)
    segs: Vec<(usize, usize, usize)>,
    blocks: u32,
}

impl Arena {
    /// The layout over `mem`; taken through `&mut` because the copies write through it.
    fn layout(&mut self) -> TierLayout {
        let base = self.mem.as_mut_ptr() as u64;
        let segs = self
            .segs
            .iter()
            .map(|&(o, b, s)| Segment { base: base + o as u64, bytes_per_block: b as u64, stride: s as u64 })
            .collect();
        TierLayout::new(segs, self.blocks).unwrap()
    }
    fn block_bytes(&self) -> usize {
        self.segs.iter().map(|s| s.1).sum()
    }
    /// Plain read of a block's logical bytes.
    fn read_block(&self, block: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for &(o, b, s) in &self.segs {
            let at = o + block as usize * s;
            out.extend_from_slice(&self.mem[at..at + b]);
        }
        out
    }
    /// Plain write of (a prefix of) a block's logical bytes.
    fn write_block(&mut self, block: u32, data: &[u8]) {
        let mut off = 0;
        for &(o, b, s) in &self.segs {
            if off >= data.len() {
                break;
            }
            let n = b.min(data.len() - off);
            let at = o + block as usize * s;
            self.mem[at..at + n].copy_from_slice(&data[off..off + n]);
            off += b;
        }
    }
}

/// Segments laid out one after another, each with its own misalignment and padding.
fn sequential(pieces: &[(usize, usize, usize)], blocks: u32, seed: u8) -> Arena {
    let mut segs = Vec::new();
    let mut cursor = 0;
    for &(bytes, pad, mis) in pieces {
        let stride = bytes + pad;
        let base = cursor + mis;
        segs.push((base, bytes, stride));
        cursor = base + stride * blocks as usize + 16;
    }
    let mem = (0..cursor + 16).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed)).collect();
    Arena { mem, segs, blocks }
}

fn piece() -> impl Strategy<Value = (usize, usize, usize)> {
    (1usize..200, 0usize..40, 0usize..16)
}

fn launch() -> impl Strategy<Value = Launch> {
    (1u32..6, prop::sample::select(vec![1u32, 3, 32, 256]))
        .prop_map(|(grid, threads)| Launch { grid, threads })
}

fn flat_buffer(len: usize, mis: usize, seed: u8) -> (Vec<u8>, usize) {
    let v = (0..len + mis + 16).map(|i| (i as u8).wrapping_mul(7) ^ seed).collect();
    (v, mis)
}

fn check_gather_scatter(
    mut arena: Arena,
    slots: u32,
    moves: Vec<(u32, u32)>,
    launch: Launch,
    chunk: u64,
    mis: usize,
) {
    let layout = arena.layout();
    let segs = reference::device_segments(&layout);
    let units = reference::build_units(&layout, chunk);
    let bb = arena.block_bytes();
    let pairs: Vec<[u32; 2]> = moves.iter().map(|&(g, h)| [g, h]).collect();

    // Gather: GPU blocks -> flat slots.
    let (mut flat, off) = flat_buffer(bb * slots as usize, mis, 0x5a);
    let mut expected = flat.clone();
    for &(g, h) in &moves {
        let at = off + h as usize * bb;
        expected[at..at + bb].copy_from_slice(&arena.read_block(g));
    }
    unsafe {
        reference::gather(launch, &segs, &units, &pairs, flat.as_mut_ptr() as u64 + off as u64, bb as u64)
    };
    assert!(flat == expected, "gather differs");

    // Scatter: flat slots -> GPU blocks (fresh bytes in the slots).
    for (i, b) in flat.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13).wrapping_add(1);
    }
    let mut want = Arena { mem: arena.mem.clone(), segs: arena.segs.clone(), blocks: arena.blocks };
    for &(g, h) in &moves {
        let at = off + h as usize * bb;
        want.write_block(g, &flat[at..at + bb]);
    }
    let layout = arena.layout();
    let segs = reference::device_segments(&layout);
    unsafe {
        reference::scatter(launch, &segs, &units, &pairs, flat.as_ptr() as u64 + off as u64, bb as u64)
    };
    assert!(arena.mem == want.mem, "scatter differs");
}

/// `n` distinct values below `limit` (a prefix of a shuffle).
fn distinct(limit: u32, n: usize) -> impl Strategy<Value = Vec<u32>> {
    Just((0..limit).collect::<Vec<u32>>()).prop_shuffle().prop_map(move |v| v.into_iter().take(n).collect())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn gather_and_scatter_match_plain_copies(
        pieces in prop::collection::vec(piece(), 1..6),
        blocks in 1u32..7,
        slots in 1u32..7,
        launch in launch(),
        chunk in prop::sample::select(vec![16u64, 48, 64, 100, DEFAULT_CHUNK_BYTES]),
        mis in 0usize..16,
        seed in any::<u8>(),
        perm in any::<prop::sample::Index>(),
    ) {
        let arena = sequential(&pieces, blocks, seed);
        let n = (blocks.min(slots) as usize).max(1);
        // Distinct GPU blocks and distinct slots, so the result does not depend on order.
        let k = perm.index(n) + 1;
        let gpu: Vec<u32> = (0..blocks).rev().take(k).collect();
        let host: Vec<u32> = (0..slots).take(k).collect();
        let moves = gpu.into_iter().zip(host).collect();
        check_gather_scatter(arena, slots, moves, launch, chunk, mis);
    }

    #[test]
    fn device_copies_match_plain_copies(
        pieces in prop::collection::vec(piece(), 1..5),
        order in distinct(8, 8),
        k in 1usize..4,
        launch in launch(),
        chunk in prop::sample::select(vec![16u64, 32, 80, DEFAULT_CHUNK_BYTES]),
        seed in any::<u8>(),
    ) {
        let mut arena = sequential(&pieces, 8, seed);
        // Sources and destinations disjoint: the first k are sources, the next k destinations.
        let pairs: Vec<[u32; 2]> = (0..k).map(|i| [order[i], order[k + i]]).collect();
        let mut want = Arena { mem: arena.mem.clone(), segs: arena.segs.clone(), blocks: 8 };
        for p in &pairs {
            let b = arena.read_block(p[0]);
            want.write_block(p[1], &b);
        }
        let layout = arena.layout();
        let segs = reference::device_segments(&layout);
        let units = reference::build_units(&layout, chunk);
        unsafe { reference::copy_blocks(launch, &segs, &units, &pairs) };
        prop_assert!(arena.mem == want.mem);
    }

    #[test]
    fn uploads_match_plain_copies(
        pieces in prop::collection::vec(piece(), 1..5),
        order in distinct(6, 6),
        k in 1usize..5,
        fill in 0.0f64..=1.0,
        launch in launch(),
        chunk in prop::sample::select(vec![16u64, 64, DEFAULT_CHUNK_BYTES]),
        mis in 0usize..16,
        seed in any::<u8>(),
    ) {
        let mut arena = sequential(&pieces, 6, seed);
        let bb = arena.block_bytes();
        let blocks: Vec<u32> = order[..k].to_vec();
        // Anything from one byte to all k blocks: the last block may be partly filled.
        let len = (((k * bb) as f64 * fill) as usize).clamp(1, k * bb);
        let (src, off) = flat_buffer(len, mis, seed ^ 0xff);
        let data = &src[off..off + len];
        let mut want = Arena { mem: arena.mem.clone(), segs: arena.segs.clone(), blocks: 6 };
        for (i, &b) in blocks.iter().enumerate() {
            let lo = (i * bb).min(len);
            let hi = ((i + 1) * bb).min(len);
            want.write_block(b, &data[lo..hi]);
        }
        let layout = arena.layout();
        let segs = reference::device_segments(&layout);
        let units = reference::build_units(&layout, chunk);
        unsafe {
            reference::upload(launch, &segs, &units, &blocks, data.as_ptr() as u64, bb as u64, len as u64)
        };
        prop_assert!(arena.mem == want.mem);
    }
}

/// vLLM-style K/V interleaving: two segments share one stride, the second starts mid-stride.
#[test]
fn interleaved_segments() {
    let (blocks, piece) = (5u32, 72usize);
    let stride = 2 * piece + 8;
    let mem: Vec<u8> = (0..stride * blocks as usize + 64).map(|i| (i * 17 % 251) as u8).collect();
    let arena = Arena { mem, segs: vec![(3, piece, stride), (3 + piece + 5, piece, stride)], blocks };
    let moves = vec![(4, 0), (0, 2), (2, 1)];
    for threads in [1, 32, 256] {
        let a = Arena { mem: arena.mem.clone(), segs: arena.segs.clone(), blocks };
        check_gather_scatter(a, 3, moves.clone(), Launch { grid: 2, threads }, 32, 5);
    }
}

/// The benchmark's Llama3-8B layout: 64 segments of 32 KiB, one launch shape of a real device.
#[test]
fn llama_layout_with_device_launch_shape() {
    let pieces = vec![(32 * 1024, 0, 0); 64];
    let mut arena = sequential(&pieces, 3, 9);
    let layout = arena.layout();
    let units = reference::build_units(&layout, DEFAULT_CHUNK_BYTES);
    assert_eq!(units.len(), 64, "one unit per 32 KiB piece");
    let launch = Launch::for_work(2 * units.len() as u64, 132);
    assert_eq!((launch.grid, launch.threads), (128, 256));
    check_gather_scatter(arena, 2, vec![(2, 1), (0, 0)], launch, DEFAULT_CHUNK_BYTES, 0);
}

#[test]
fn units_cover_every_piece_exactly() {
    let mut arena = sequential(&[(1, 0, 0), (100, 3, 1), (33, 0, 7)], 2, 0);
    let layout = arena.layout();
    for chunk in [1u64, 16, 17, 32, 1 << 20] {
        let units = reference::build_units(&layout, chunk);
        for (i, s) in layout.segments().iter().enumerate() {
            let mine: Vec<_> = units.iter().filter(|u| u.segment == i as u32).collect();
            let mut at = 0;
            for u in mine {
                assert_eq!(u.start, at);
                assert!(u.len > 0 && u.len <= (chunk & !15).max(16));
                assert_eq!(u.start % 16, 0, "chunks keep the piece's alignment");
                at += u.len;
            }
            assert_eq!(at, s.bytes_per_block);
        }
    }
}
