//! The swap kernels against plain copies, over many layouts: odd piece sizes, misaligned bases
//! and strides, interleaved segments, pieces split into several chunks, every launch shape.
//! Every case runs twice: on `backend::reference` (the index math in Rust) and on the real
//! `kernels/swap.cu` compiled for the host (tests/cuda_host), launched with the argument array
//! the CUDA backend builds. A last test applies mutations to swap.cu and requires each to be
//! caught.
mod cuda_host;

use cuda_host::HostKernels;
use libra::backend::cuda::params::{self, Launch, SwapKernel};
use libra::backend::cuda::tables::{self, DevSegment, Unit, DEFAULT_CHUNK_BYTES};
use libra::backend::reference;
use libra::backend::{Segment, TierLayout};
use proptest::prelude::*;
use std::sync::OnceLock;

/// Set in a child process: the host kernels to check instead of the unmodified source.
const KERNELS_ENV: &str = "LIBRA_TEST_HOST_KERNELS";

fn host_kernels() -> &'static HostKernels {
    static K: OnceLock<HostKernels> = OnceLock::new();
    K.get_or_init(|| {
        let built = match std::env::var_os(KERNELS_ENV) {
            Some(so) => HostKernels::load(std::path::Path::new(&so)),
            None => HostKernels::build(&cuda_host::swap_cu(), &cuda_host::out_dir("host_kernels"), "swap"),
        };
        built.unwrap_or_else(|e| panic!("host kernels: {e}"))
    })
}

/// What runs a kernel: the Rust mirror, or the kernel source itself on the host.
#[derive(Clone, Copy)]
enum Exec {
    Reference,
    Host,
}

impl Exec {
    /// Runs one kernel over `list` with the tail arguments.
    ///
    /// # Safety
    /// The addresses must be valid for the kernel's accesses.
    unsafe fn run(
        self,
        kernel: SwapKernel,
        launch: Launch,
        segs: &[DevSegment],
        units: &[Unit],
        list: &[u32],
        tail: &[u64],
    ) -> Result<(), String> {
        let pairs = || list.chunks(2).map(|p| [p[0], p[1]]).collect::<Vec<[u32; 2]>>();
        match self {
            Exec::Reference => {
                // SAFETY: the caller's promise: every address is valid for the kernel's accesses.
                unsafe {
                    match kernel {
                        SwapKernel::Gather => {
                            reference::gather(launch, segs, units, &pairs(), tail[0], tail[1])
                        }
                        SwapKernel::Scatter => {
                            reference::scatter(launch, segs, units, &pairs(), tail[0], tail[1])
                        }
                        SwapKernel::Upload => {
                            reference::upload(launch, segs, units, list, tail[0], tail[1], tail[2])
                        }
                    }
                }
                Ok(())
            }
            Exec::Host => {
                let entries = match kernel {
                    SwapKernel::Upload => list.len(),
                    _ => list.len() / 2,
                };
                let tables = params::Tables {
                    segments: segs.as_ptr() as u64,
                    units: units.as_ptr() as u64,
                    units_per_block: units.len() as u32,
                };
                let mut l =
                    params::swap_launch(kernel, tables, list.as_ptr() as u64, entries as u32, tail, 1);
                l.shape = launch;
                // SAFETY: the caller's promise: every address is valid for the kernel's accesses.
                unsafe { host_kernels().run(&mut l) }.map_err(|e| format!("{}: {e}", kernel.name()))
            }
        }
    }
}

/// Runs `check` on both executors; the first failure, labelled.
fn on_both(check: impl Fn(Exec) -> Result<(), String>) -> Result<(), String> {
    check(Exec::Reference).map_err(|e| format!("reference: {e}"))?;
    check(Exec::Host).map_err(|e| format!("swap.cu on the host: {e}"))
}

fn flatten(pairs: &[[u32; 2]]) -> Vec<u32> {
    pairs.iter().flatten().copied().collect()
}

/// One buffer holding all segments, and the layout pointing into it.
#[derive(Clone)]
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
    exec: Exec,
    mut arena: Arena,
    slots: u32,
    moves: &[(u32, u32)],
    launch: Launch,
    chunk: u64,
    mis: usize,
) -> Result<(), String> {
    let layout = arena.layout();
    let segs = tables::device_segments(&layout);
    let units = tables::build_units(&layout, chunk);
    let bb = arena.block_bytes();
    let pairs: Vec<[u32; 2]> = moves.iter().map(|&(g, h)| [g, h]).collect();

    // Gather: GPU blocks -> flat slots.
    let (mut flat, off) = flat_buffer(bb * slots as usize, mis, 0x5a);
    let mut expected = flat.clone();
    for &(g, h) in moves {
        let at = off + h as usize * bb;
        expected[at..at + bb].copy_from_slice(&arena.read_block(g));
    }
    let tail = [flat.as_mut_ptr() as u64 + off as u64, bb as u64];
    // SAFETY: the tables describe `arena`, the pairs name its blocks and slots of `flat`, which
    // holds `off` bytes before the slots; both outlive the call.
    unsafe { exec.run(SwapKernel::Gather, launch, &segs, &units, &flatten(&pairs), &tail)? };
    if flat != expected {
        return Err("gather differs".into());
    }

    // Scatter: flat slots -> GPU blocks (fresh bytes in the slots).
    for (i, b) in flat.iter_mut().enumerate() {
        *b = (i as u8).wrapping_mul(13).wrapping_add(1);
    }
    let mut want = arena.clone();
    for &(g, h) in moves {
        let at = off + h as usize * bb;
        want.write_block(g, &flat[at..at + bb]);
    }
    let layout = arena.layout();
    let segs = tables::device_segments(&layout);
    let tail = [flat.as_ptr() as u64 + off as u64, bb as u64];
    // SAFETY: as for the gather: the tables describe `arena`, the pairs name its blocks and
    // slots of `flat`.
    unsafe { exec.run(SwapKernel::Scatter, launch, &segs, &units, &flatten(&pairs), &tail)? };
    if arena.mem != want.mem {
        return Err("scatter differs".into());
    }
    Ok(())
}

/// Uploads `len` bytes (at misalignment `mis`) into `blocks`.
#[allow(clippy::too_many_arguments)]
fn check_upload(
    exec: Exec,
    mut arena: Arena,
    blocks: &[u32],
    len: usize,
    launch: Launch,
    chunk: u64,
    mis: usize,
    seed: u8,
) -> Result<(), String> {
    let bb = arena.block_bytes();
    let (src, off) = flat_buffer(len, mis, seed ^ 0xff);
    let data = &src[off..off + len];
    let mut want = arena.clone();
    for (i, &b) in blocks.iter().enumerate() {
        let lo = (i * bb).min(len);
        let hi = ((i + 1) * bb).min(len);
        want.write_block(b, &data[lo..hi]);
    }
    let layout = arena.layout();
    let segs = tables::device_segments(&layout);
    let units = tables::build_units(&layout, chunk);
    let tail = [data.as_ptr() as u64, bb as u64, len as u64];
    // SAFETY: the tables describe `arena`, the list names its blocks, and `data` holds `len`
    // bytes.
    unsafe { exec.run(SwapKernel::Upload, launch, &segs, &units, blocks, &tail)? };
    if arena.mem != want.mem {
        return Err("upload differs".into());
    }
    Ok(())
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
        let moves: Vec<(u32, u32)> = gpu.into_iter().zip(host).collect();
        let r = on_both(|e| check_gather_scatter(e, arena.clone(), slots, &moves, launch, chunk, mis));
        prop_assert_eq!(r, Ok(()));
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
        let arena = sequential(&pieces, 6, seed);
        let bb = arena.block_bytes();
        // Anything from one byte to all k blocks: the last block may be partly filled.
        let len = (((k * bb) as f64 * fill) as usize).clamp(1, k * bb);
        let blocks = &order[..k];
        prop_assert_eq!(on_both(|e| check_upload(e, arena.clone(), blocks, len, launch, chunk, mis, seed)), Ok(()));
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
        let launch = Launch { grid: 2, threads };
        on_both(|e| check_gather_scatter(e, arena.clone(), 3, &moves, launch, 32, 5)).unwrap();
    }
}

/// The benchmark's Llama3-8B layout: 64 segments of 32 KiB, one launch shape of a real device.
#[test]
fn llama_layout_with_device_launch_shape() {
    let pieces = vec![(32 * 1024, 0, 0); 64];
    let mut arena = sequential(&pieces, 3, 9);
    let layout = arena.layout();
    let units = tables::build_units(&layout, DEFAULT_CHUNK_BYTES);
    drop(layout);
    assert_eq!(units.len(), 64, "one unit per 32 KiB piece");
    let launch = Launch::for_work(2 * units.len() as u64, 132);
    assert_eq!((launch.grid, launch.threads), (128, 256));
    on_both(|e| check_gather_scatter(e, arena.clone(), 2, &[(2, 1), (0, 0)], launch, DEFAULT_CHUNK_BYTES, 0))
        .unwrap();
}

#[test]
fn units_cover_every_piece_exactly() {
    let mut arena = sequential(&[(1, 0, 0), (100, 3, 1), (33, 0, 7)], 2, 0);
    let layout = arena.layout();
    for chunk in [1u64, 16, 17, 32, 1 << 20] {
        let units = tables::build_units(&layout, chunk);
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

/// A fixed set of cases covering every kernel, misalignments, ragged tails, several chunks per
/// piece, grid-stride loops and partial uploads. What the mutation check runs.
fn fixed_checks(exec: Exec) -> Result<(), String> {
    let shapes =
        [Launch { grid: 1, threads: 1 }, Launch { grid: 3, threads: 32 }, Launch { grid: 2, threads: 256 }];
    let layouts: [&[(usize, usize, usize)]; 3] = [
        &[(4096 + 13, 0, 0)],
        &[(100, 3, 1), (33, 0, 7), (200, 8, 0)],
        &[(64, 0, 0), (1000, 24, 3), (17, 5, 9)],
    ];
    for (li, pieces) in layouts.iter().enumerate() {
        for &launch in &shapes {
            for chunk in [16u64, 48, DEFAULT_CHUNK_BYTES] {
                for mis in [0usize, 3, 8] {
                    let arena = sequential(pieces, 6, li as u8 * 7 + 1);
                    let what = format!("layout {li}, {launch:?}, chunk {chunk}, misalignment {mis}");
                    let ctx = |e: String| format!("{what}: {e}");
                    check_gather_scatter(
                        exec,
                        arena.clone(),
                        5,
                        &[(5, 0), (0, 3), (2, 4)],
                        launch,
                        chunk,
                        mis,
                    )
                    .map_err(ctx)?;
                    let bb = arena.block_bytes();
                    for len in [1, bb - 1, 2 * bb + bb / 2] {
                        check_upload(exec, arena.clone(), &[4, 1, 2], len, launch, chunk, mis, 3)
                            .map_err(ctx)?;
                    }
                }
            }
        }
    }
    Ok(())
}

/// Runs the fixed cases on the kernels named by the environment (a mutant, in a child process
/// of `mutants_of_swap_cu_are_caught`), or on the unmodified source.
#[test]
fn fixed_cases_pass() {
    on_both(fixed_checks).unwrap();
}

/// Each mutation of swap.cu must make the fixed cases fail (wrong bytes, a fault or a crash). A
/// child process runs each mutant, so a mutant that corrupts memory cannot take this test down.
#[test]
fn mutants_of_swap_cu_are_caught() {
    if std::env::var_os(KERNELS_ENV).is_some() {
        return; // a child runs only `fixed_cases_pass`
    }
    let source = std::fs::read_to_string(cuda_host::swap_cu()).unwrap();
    let mutations: &[(&str, &str, &str)] = &[
        ("drops a segment's offset", "seg.offset + u.start;\n}", "u.start;\n}"),
        ("skips work items", "w += gridDim.x)", "w += gridDim.x + 1)"),
        ("drops the last tail byte", "i < tail; i += blockDim.x", "i + 1 < tail; i += blockDim.x"),
        ("widens 8-byte vectors", "(rel & 7) == 0 ? 8", "(rel & 7) == 0 ? 16"),
        ("does not clip uploads", "const u64 len = u.len < avail ? u.len : avail;", "const u64 len = u.len;"),
        (
            "unrolls onto the same vector",
            "const u64 i = base + (u64)j * blockDim.x;",
            "const u64 i = base + (u64)j;",
        ),
    ];
    let dir = cuda_host::out_dir("swap_mutants");
    let exe = std::env::current_exe().unwrap();
    let run_child = |so: &std::path::Path| {
        std::process::Command::new(&exe)
            .args(["--exact", "fixed_cases_pass", "--test-threads=1"])
            .env(KERNELS_ENV, so)
            .output()
            .unwrap()
    };
    let control = dir.join("control.so");
    cuda_host::build_shared(
        &[cuda_host::dir().join("host_kernels.cpp")],
        &cuda_host::swap_cu(),
        &[],
        &control,
    )
    .unwrap();
    let o = run_child(&control);
    assert!(
        o.status.success(),
        "the unmodified kernels fail in a child:\n{}",
        String::from_utf8_lossy(&o.stdout)
    );
    for (i, &(what, from, to)) in mutations.iter().enumerate() {
        assert!(source.contains(from), "mutation `{what}` no longer applies: `{from}` is not in swap.cu");
        let mutant = source.replacen(from, to, 1);
        let cu = dir.join(format!("mutant{i}.cu"));
        std::fs::write(&cu, mutant).unwrap();
        let so = dir.join(format!("mutant{i}.so"));
        cuda_host::build_shared(&[cuda_host::dir().join("host_kernels.cpp")], &cu, &[], &so)
            .unwrap_or_else(|e| panic!("mutant `{what}` does not compile: {e}"));
        let o = run_child(&so);
        assert!(!o.status.success(), "mutation `{what}` survived the fixed cases");
        println!("mutation `{what}`: caught ({})", o.status);
    }
}

/// The launcher runs every kernel of the source, with the parameter sizes the backend lays out.
#[test]
fn launcher_knows_every_kernel_and_its_signature() {
    let k = host_kernels();
    let mut names = k.names();
    names.sort();
    let mut want: Vec<String> =
        libra::backend::cuda::kernels::KERNEL_NAMES.iter().map(|s| s.to_string()).collect();
    want.sort();
    assert_eq!(names, want);
    // Every `__global__` function in the source is in the list.
    let source = std::fs::read_to_string(cuda_host::swap_cu()).unwrap();
    let globals = source.matches("__global__ void ").count();
    assert_eq!(globals, want.len(), "a kernel in swap.cu is missing from the launcher or KERNEL_NAMES");
    let tables = params::Tables { segments: 0, units: 0, units_per_block: 1 };
    for kernel in [SwapKernel::Gather, SwapKernel::Scatter, SwapKernel::Upload] {
        let tail = vec![0u64; kernel.tail_len()];
        let l = params::swap_launch(kernel, tables, 0, 1, &tail, 1);
        assert_eq!(k.param_sizes(kernel.name()), Some(l.param_sizes()), "{}", kernel.name());
    }
}

/// Features sequential execution cannot model do not compile against the shim.
#[test]
fn shim_rejects_what_it_cannot_run() {
    let dir = cuda_host::out_dir("shim_rejects");
    for (i, body) in [
        "__shared__ int s[32]; s[threadIdx.x] = 1;",
        "__syncthreads();",
        "unsigned v = __shfl_sync(0xffffffffu, 1u, 0);",
        "atomicAdd((unsigned*)0, 1u);",
        "asm volatile(\"membar.gl;\");",
    ]
    .iter()
    .enumerate()
    {
        let cu = dir.join(format!("feature{i}.cu"));
        std::fs::write(&cu, format!("extern \"C\" __global__ void libra_gather() {{ {body} }}\n")).unwrap();
        let e = cuda_host::build_shared(
            &[cuda_host::dir().join("host_kernels.cpp")],
            &cu,
            &[],
            &dir.join("x.so"),
        )
        .expect_err(body);
        assert!(e.contains("poisoned"), "`{body}` was not rejected by the shim: {e}");
    }
}
