//! Copy benchmark for the swap path, on a Llama3-8B KV layout: 32 layers x (K, V) = 64
//! segments, 16-token blocks, 8 KV heads x 128 dims in bf16, so 32 KiB per segment piece and
//! 2 MiB per block. For batches of 1..1024 blocks, both directions, it times side by side:
//! - `kernel`: libra's kernels, one launch per batch;
//! - `memcpy`: one cudaMemcpyAsync per block per segment (how vLLM swaps);
//! - `peak`:   one contiguous pinned memcpy of the same bytes (the link's practical peak).
//!
//! Then, on each path, a swap-out and a swap-in of half the largest batch each, one after the
//! other and submitted together: the backend runs each direction on its own stream, so on a
//! full-duplex link together takes about half the serial time (`duplex_speedup` near 2).
//!
//! Prints a table and writes JSON (`--json PATH`, default bench_copy.json). Without a GPU it
//! says why and exits 0; on the libcuda stand-in it refuses (exit 3). `--precompile DIR` only
//! compiles the kernels (cubins for `kernels::PREBUILT_ARCHS`, PTX for `kernels::PTX_ARCHS`) into a
//! kernel cache directory (needs NVRTC, not a GPU) and exits.
use clap::Parser;
use libra::backend::cuda::{self, kernels, CopyPolicy, CudaBackend, CudaOptions};
use libra::backend::{Backend, BatchState, BlockMove, Direction, Segment};
use std::time::Instant;

const SEGMENTS: usize = 64;
const PIECE: u64 = 16 * 8 * 128 * 2;

#[derive(Parser)]
#[command(
    name = "bench_copy",
    about = "Time libra's swap kernels against per-block memcpy and the link's peak"
)]
struct Args {
    /// Write the results as JSON to PATH.
    #[arg(long, value_name = "PATH", default_value = "bench_copy.json")]
    json: String,
    /// Largest batch in blocks (batches double from 1).
    #[arg(long, value_name = "N", default_value_t = 1024)]
    max_blocks: u32,
    /// Timed repetitions per measurement, after one warm-up (the median is reported).
    #[arg(long, value_name = "N", default_value_t = 5)]
    reps: usize,
    /// Only compile the kernels into the kernel cache directory DIR (needs NVRTC, not a GPU) and exit.
    #[arg(long, value_name = "DIR")]
    precompile: Option<String>,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// Median seconds of `reps` runs of `f` after one warm-up.
fn time(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    median(
        (0..reps.max(1))
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64()
            })
            .collect(),
    )
}

/// A swap-out of `out` and a swap-in of `back`, submitted together, both waited for.
fn run_both(b: &mut CudaBackend, out: &[BlockMove], back: &[BlockMove]) {
    let ids = [
        b.submit_moves(Direction::GpuToHost, out).expect("submit"),
        b.submit_moves(Direction::HostToGpu, back).expect("submit"),
    ];
    for id in ids {
        finish(b, id);
    }
}

fn run_batch(b: &mut CudaBackend, dir: Direction, moves: &[BlockMove]) {
    let id = b.submit_moves(dir, moves).expect("submit");
    finish(b, id);
}

/// Waits for batch `id` and retires it; a failed copy ends the benchmark.
fn finish(b: &mut CudaBackend, id: u64) {
    match b.wait(id, 60_000_000) {
        BatchState::Done => b.retire(id),
        other => panic!("batch failed: {other:?}"),
    }
}

struct Row {
    dir: &'static str,
    blocks: u32,
    bytes: u64,
    kernel_s: f64,
    memcpy_s: f64,
    peak_s: f64,
}

fn main() {
    let args = Args::parse();
    if let Some(dir) = &args.precompile {
        let dir = std::path::Path::new(dir);
        let images = kernels::PREBUILT_ARCHS
            .iter()
            .map(|&a| (a, kernels::Output::Cubin))
            .chain(kernels::PTX_ARCHS.iter().map(|&a| (a, kernels::Output::Ptx)));
        for (arch, output) in images {
            match kernels::swap_image(arch, output, Some(dir)) {
                Ok(c) => println!(
                    "{} bytes -> {}",
                    c.len(),
                    dir.join(kernels::image_file_name(arch, output)).display()
                ),
                Err(e) => {
                    eprintln!("cannot precompile: {e}");
                    std::process::exit(1);
                }
            }
        }
        return;
    }
    if let Err(e) = cuda::device_count() {
        println!("bench_copy: no GPU benchmark here: {}", e.message);
        return;
    }
    let n = args.max_blocks.max(1);
    let block_bytes = PIECE * SEGMENTS as u64;

    // The engine's KV tensors: one device tensor per layer and K/V, blocks contiguous in each.
    let ctx = cudarc::driver::CudaContext::new(0).expect("device 0");
    let tensors: Vec<u64> = (0..SEGMENTS)
        .map(|_| {
            // SAFETY: a plain allocation in the context just made current; written before read.
            unsafe { cudarc::driver::result::malloc_sync((PIECE * n as u64) as usize) }.expect("cuMemAlloc")
        })
        .collect();
    let segs: Vec<Segment> =
        tensors.iter().map(|&base| Segment { base, bytes_per_block: PIECE, stride: PIECE }).collect();
    // SAFETY: the tensors hold `n` blocks of every segment and are freed only after `b`.
    let mut b = unsafe { CudaBackend::adopt(segs, n, n, CudaOptions::from_env()) }.expect("CUDA backend");
    if let Err(e) = b.prepare_kernels() {
        println!("bench_copy: the swap kernels are unavailable: {}", e.message);
        std::process::exit(1);
    }
    // SAFETY: a plain allocation; only the copies below touch it.
    let scratch =
        unsafe { cudarc::driver::result::malloc_sync((block_bytes * n as u64) as usize) }.expect("scratch");
    let host = b.host_tier_device_ptr();
    let device = ctx.name().unwrap_or_default();
    // A stand-in driver (tests/cuda_standin) measures nothing about a GPU.
    if device.contains("stand-in") {
        println!("bench_copy: refusing to benchmark `{device}`: not a GPU");
        std::process::exit(3);
    }
    println!(
        "device: {device} (sm_{}{}), {SEGMENTS} segments x {} KiB = {} MiB per block; {}",
        b.arch().0,
        b.arch().1,
        PIECE / 1024,
        block_bytes >> 20,
        b.kernel_status()
    );

    let mut sizes = vec![];
    let mut s = 1;
    while s <= n {
        sizes.push(s);
        s *= 2;
    }
    if *sizes.last().unwrap() != n {
        sizes.push(n);
    }
    let mut rows = vec![];
    for &k in &sizes {
        // Scattered block ids on both sides, as a real swap batch has.
        let moves: Vec<BlockMove> =
            (0..k).map(|i| BlockMove { gpu_block: (i * 7 + 3) % n, host_block: (i * 13 + 1) % n }).collect();
        let distinct = |f: fn(&BlockMove) -> u32| {
            let mut v: Vec<u32> = moves.iter().map(f).collect();
            v.sort_unstable();
            v.dedup();
            v.len() == moves.len()
        };
        // 7 and 13 are coprime with powers of two; other n can collide: then use identity.
        let moves = if distinct(|m| m.gpu_block) && distinct(|m| m.host_block) {
            moves
        } else {
            (0..k).map(|i| BlockMove { gpu_block: i, host_block: i }).collect()
        };
        let bytes = k as u64 * block_bytes;
        for (dir, name) in [(Direction::GpuToHost, "gpu_to_host"), (Direction::HostToGpu, "host_to_gpu")] {
            b.set_copy_policy(CopyPolicy::kernel());
            let kernel_s = time(args.reps, || run_batch(&mut b, dir, &moves));
            b.set_copy_policy(CopyPolicy::memcpy());
            let memcpy_s = time(args.reps, || run_batch(&mut b, dir, &moves));
            let peak_s = time(args.reps, || {
                let (dst, src) = match dir {
                    Direction::GpuToHost => (host, scratch),
                    Direction::HostToGpu => (scratch, host),
                };
                let stream = b.stream_handle(dir) as cudarc::driver::sys::CUstream;
                // SAFETY: both ranges hold `bytes` bytes (the host tier and the scratch buffer
                // each span `n` blocks), and the copy is finished before the next one starts.
                unsafe {
                    ctx.bind_to_thread().unwrap();
                    cudarc::driver::sys::cuMemcpyAsync(dst, src, bytes as usize, stream).result().unwrap();
                    cudarc::driver::sys::cuStreamSynchronize(stream).result().unwrap();
                }
            });
            rows.push(Row { dir: name, blocks: k, bytes, kernel_s, memcpy_s, peak_s });
        }
    }

    // Both directions at once, on disjoint blocks: out takes blocks 0..h, back h..2h (none
    // below 2 blocks).
    let h = n / 2;
    let out: Vec<BlockMove> = (0..h).map(|i| BlockMove { gpu_block: i, host_block: i }).collect();
    let back: Vec<BlockMove> = (h..2 * h).map(|i| BlockMove { gpu_block: i, host_block: i }).collect();
    let mut duplex = vec![];
    let paths = if h == 0 {
        vec![]
    } else {
        vec![("kernel", CopyPolicy::kernel()), ("memcpy", CopyPolicy::memcpy())]
    };
    for (name, policy) in paths {
        b.set_copy_policy(policy);
        let serial_s = time(args.reps, || {
            run_batch(&mut b, Direction::GpuToHost, &out);
            run_batch(&mut b, Direction::HostToGpu, &back);
        });
        let together_s = time(args.reps, || run_both(&mut b, &out, &back));
        duplex.push((name, serial_s, together_s));
    }

    let gbps = |bytes: u64, s: f64| bytes as f64 / s / 1e9;
    println!(
        "{:<12} {:>6} {:>10} {:>10} {:>10} {:>9} {:>9}",
        "direction", "blocks", "kernel", "memcpy", "peak", "%peak", "x memcpy"
    );
    println!("{:<12} {:>6} {:>10} {:>10} {:>10}", "", "", "GB/s", "GB/s", "GB/s");
    for r in &rows {
        println!(
            "{:<12} {:>6} {:>10.2} {:>10.2} {:>10.2} {:>8.1}% {:>9.2}",
            r.dir,
            r.blocks,
            gbps(r.bytes, r.kernel_s),
            gbps(r.bytes, r.memcpy_s),
            gbps(r.bytes, r.peak_s),
            100.0 * r.peak_s / r.kernel_s,
            r.memcpy_s / r.kernel_s
        );
    }
    // Crossover: the smallest batch from which the kernel beats memcpy in both directions at
    // every larger size; below it memcpy is the better path.
    let mut crossover_blocks = 0u32;
    for &k in sizes.iter().rev() {
        if rows.iter().filter(|r| r.blocks == k).all(|r| r.kernel_s <= r.memcpy_s) {
            crossover_blocks = k;
        } else {
            break;
        }
    }
    let suggested = if crossover_blocks == 0 {
        "memcpy wins at the largest size: use CopyPolicy::memcpy()".to_string()
    } else {
        format!("memcpy_below_pieces = {}", crossover_blocks as u64 * SEGMENTS as u64)
    };
    println!("kernel beats memcpy from {crossover_blocks} blocks up: {suggested}");
    for (name, serial_s, together_s) in &duplex {
        println!(
            "{name}: {h} blocks out and {h} in, one after the other {:.2} ms, together {:.2} ms (x{:.2})",
            serial_s * 1e3,
            together_s * 1e3,
            serial_s / together_s
        );
    }

    let mut json = String::new();
    json.push_str(&format!(
        "{{\n  \"device\": \"{}\",\n  \"arch\": \"sm_{}{}\",\n  \"segments\": {SEGMENTS},\n  \"piece_bytes\": {PIECE},\n  \"block_bytes\": {block_bytes},\n  \"reps\": {},\n  \"kernel_status\": \"{}\",\n  \"kernel_beats_memcpy_from_blocks\": {crossover_blocks},\n  \"suggested_policy\": \"{}\",\n  \"rows\": [\n",
        device.replace('"', "'"),
        b.arch().0,
        b.arch().1,
        args.reps,
        b.kernel_status().replace('"', "'"),
        suggested
    ));
    for (i, r) in rows.iter().enumerate() {
        json.push_str(&format!(
            "    {{\"direction\": \"{}\", \"blocks\": {}, \"bytes\": {}, \"kernel_s\": {:.9}, \"memcpy_s\": {:.9}, \"peak_s\": {:.9}, \"kernel_gbps\": {:.3}, \"memcpy_gbps\": {:.3}, \"peak_gbps\": {:.3}, \"kernel_pct_of_peak\": {:.2}, \"kernel_x_memcpy\": {:.3}}}{}\n",
            r.dir,
            r.blocks,
            r.bytes,
            r.kernel_s,
            r.memcpy_s,
            r.peak_s,
            gbps(r.bytes, r.kernel_s),
            gbps(r.bytes, r.memcpy_s),
            gbps(r.bytes, r.peak_s),
            100.0 * r.peak_s / r.kernel_s,
            r.memcpy_s / r.kernel_s,
            if i + 1 == rows.len() { "" } else { "," }
        ));
    }
    json.push_str("  ],\n  \"duplex\": [\n");
    for (i, (name, serial_s, together_s)) in duplex.iter().enumerate() {
        json.push_str(&format!(
            "    {{\"path\": \"{name}\", \"blocks_each_way\": {h}, \"serial_s\": {serial_s:.9}, \"together_s\": {together_s:.9}, \"duplex_speedup\": {:.3}}}{}\n",
            serial_s / together_s,
            if i + 1 == duplex.len() { "" } else { "," }
        ));
    }
    json.push_str("  ]\n}\n");
    std::fs::write(&args.json, json).expect("write JSON");
    println!("wrote {}", args.json);

    drop(b);
    // SAFETY: the backend that used the tensors and the scratch buffer is gone, and its drop
    // synchronised its stream.
    unsafe {
        for t in tensors {
            let _ = cudarc::driver::result::free_sync(t);
        }
        let _ = cudarc::driver::result::free_sync(scratch);
    }
}
