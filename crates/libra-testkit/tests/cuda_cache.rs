//! The CUDA backend in the situations an engine puts it in: several batches in flight, a waiter
//! that outlives the backend, an engine busy on the device when the cache starts, the engine's
//! own KV tensors as the GPU tier, the whole swapper cycle under a cache, and a kernel that
//! faults. Each skips with a printed reason when there is no CUDA device; tests/cuda_standin.rs
//! runs them against the CPU stand-in for libcuda, and on a GPU machine they run on the device.
use libra::backend::cuda::{self, CopyPolicy, CudaBackend, CudaOptions};
use libra::backend::{Backend, BatchState, BlockMove, Direction, Segment};
use libra::{BackendChoice, Cache, CacheConfig, CacheOptions, PolicyKind, Readiness, Status};
use std::time::{Duration, Instant};

fn gpu_or_skip(test: &str) -> bool {
    match cuda::device_count() {
        Ok(_) => true,
        Err(e) => {
            println!("skipped {test}: {}", e.message);
            false
        }
    }
}

/// Whether the libcuda in this process is libra's CPU stand-in (its marker symbol is there).
fn standin_loaded() -> bool {
    ["libcuda.so.1", "libcuda.so"].iter().any(|name| {
        let c = std::ffi::CString::new(*name).unwrap();
        // SAFETY: RTLD_NOLOAD only looks up an already loaded library; the handle is closed.
        unsafe {
            let h = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD);
            if h.is_null() {
                return false;
            }
            let found = !libc::dlsym(h, c"libra_cuda_standin".as_ptr()).is_null();
            libc::dlclose(h);
            found
        }
    })
}

fn current_context() -> usize {
    let mut c: cudarc::driver::sys::CUcontext = std::ptr::null_mut();
    // SAFETY: writes one handle into `c`.
    unsafe { cudarc::driver::sys::cuCtxGetCurrent(&mut c).result().unwrap() };
    c as usize
}

fn pattern(block: u32, len: usize, salt: u8) -> Vec<u8> {
    (0..len).map(|i| (i as u8).wrapping_mul(31) ^ (block as u8).wrapping_mul(7) ^ salt).collect()
}

/// Opens on drop.
struct Gate(std::sync::atomic::AtomicBool);

impl Drop for Gate {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }
}

/// Holds the backend's swap stream of `direction` with a host function until the returned gate
/// opens (on `store(true)` or on drop, so a failing test still lets the stream drain).
fn hold_swap_stream(gpu: &CudaBackend, direction: Direction) -> Box<Gate> {
    extern "C" fn hold(gate: *mut std::ffi::c_void) {
        // SAFETY: `gate` is the AtomicBool inside the boxed Gate, which the caller keeps until
        // it has opened and the stream has drained.
        let gate = unsafe { &*(gate as *const std::sync::atomic::AtomicBool) };
        while !gate.load(std::sync::atomic::Ordering::Acquire) {
            std::thread::sleep(Duration::from_micros(100));
        }
    }
    let gate = Box::new(Gate(std::sync::atomic::AtomicBool::new(false)));
    gpu.context().bind_to_thread().unwrap();
    let stream = gpu.stream_handle(direction) as cudarc::driver::sys::CUstream;
    let gate_ptr = &gate.0 as *const std::sync::atomic::AtomicBool as *mut std::ffi::c_void;
    // SAFETY: `hold` only reads the gate, which lives in a box the caller holds until the host
    // function has returned (opening it on drop at the latest).
    unsafe { cudarc::driver::sys::cuLaunchHostFunc(stream, Some(hold), gate_ptr).result().unwrap() };
    gate
}

/// Batches are polled while in flight; whenever `poll` says Done the host bytes must already be
/// there, with no synchronisation in between. A host function holds the swap stream until the
/// first round of polls is over, so every batch is still queued then, and a `poll` that said
/// Done too early would see the host slots' old bytes.
#[test]
fn batches_in_flight_are_polled_before_any_sync() {
    if !gpu_or_skip("batches_in_flight_are_polled_before_any_sync") {
        return;
    }
    let bb = 8192 + 5;
    for policy in [CopyPolicy::kernel(), CopyPolicy::memcpy()] {
        let mut gpu =
            CudaBackend::new(bb, 64, 64, CudaOptions { copy_policy: policy, ..CudaOptions::from_env() })
                .unwrap();
        if policy == CopyPolicy::kernel() {
            gpu.prepare_kernels().expect("the swap kernels load");
        }
        for b in 0..64 {
            gpu.write_gpu_block(b, &pattern(b, bb as usize, 1)).unwrap();
        }
        // One batch first: the backend's list buffer exists before the gate (growing it waits
        // for the stream).
        let warm =
            gpu.submit_moves(Direction::GpuToHost, &[BlockMove { gpu_block: 0, host_block: 0 }]).unwrap();
        assert_eq!(gpu.wait(warm, 20_000_000), BatchState::Done);
        gpu.retire(warm);
        // Held until the first round of polls is over.
        let gate = hold_swap_stream(&gpu, Direction::GpuToHost);
        let batches: Vec<(u64, Vec<BlockMove>)> = (0..8u32)
            .map(|k| {
                let moves: Vec<BlockMove> = (0..6)
                    .map(|i| BlockMove { gpu_block: k * 8 + i, host_block: 63 - (k * 8 + i) })
                    .collect();
                (gpu.submit_moves(Direction::GpuToHost, &moves).unwrap(), moves)
            })
            .collect();
        let mut pending_seen = 0;
        let mut first_round = true;
        let mut done = vec![false; batches.len()];
        let deadline = Instant::now() + Duration::from_secs(30);
        let mut out = vec![0u8; bb as usize];
        while done.iter().any(|d| !d) {
            assert!(Instant::now() < deadline, "batches never completed");
            for (i, (id, moves)) in batches.iter().enumerate() {
                if done[i] {
                    continue;
                }
                match gpu.poll(*id) {
                    BatchState::Pending => pending_seen += 1,
                    BatchState::Done => {
                        for m in moves {
                            gpu.read_host_block(m.host_block, &mut out).unwrap();
                            assert!(
                                out == pattern(m.gpu_block, bb as usize, 1),
                                "{policy:?}: batch {id} polled Done but host block {} lacks its bytes",
                                m.host_block
                            );
                        }
                        done[i] = true;
                    }
                    BatchState::Failed(e) => panic!("batch {id} failed: {e}"),
                }
            }
            if std::mem::take(&mut first_round) {
                assert_eq!(pending_seen, batches.len(), "{policy:?}: every batch waits behind the gate");
                gate.0.store(true, std::sync::atomic::Ordering::Release);
            }
        }
        for (id, _) in &batches {
            gpu.retire(*id);
        }
        println!("{policy:?}: {pending_seen} polls saw a batch still in flight");
    }
}

/// The two directions run on their own streams: with every copy to the host held back, a
/// swap-in completes, and both land their bytes once the hold is released.
#[test]
fn a_swap_in_does_not_queue_behind_a_held_swap_out() {
    if !gpu_or_skip("a_swap_in_does_not_queue_behind_a_held_swap_out") {
        return;
    }
    let bb = 8192 + 5;
    let moves = |gpu: std::ops::Range<u32>, host: u32| -> Vec<BlockMove> {
        gpu.enumerate().map(|(i, g)| BlockMove { gpu_block: g, host_block: host + i as u32 }).collect()
    };
    for policy in [CopyPolicy::kernel(), CopyPolicy::memcpy()] {
        let mut gpu =
            CudaBackend::new(bb, 64, 64, CudaOptions { copy_policy: policy, ..CudaOptions::from_env() })
                .unwrap();
        for b in 0..64 {
            gpu.write_gpu_block(b, &pattern(b, bb as usize, 5)).unwrap();
        }
        // Host blocks 32..40 get GPU blocks 32..40's bytes; both list buffers exist before the
        // hold (growing one waits for its stream).
        let out = gpu.submit_moves(Direction::GpuToHost, &moves(32..40, 32)).unwrap();
        assert_eq!(gpu.wait(out, 20_000_000), BatchState::Done);
        gpu.retire(out);
        let warm = gpu.submit_moves(Direction::HostToGpu, &moves(48..56, 32)).unwrap();
        assert_eq!(gpu.wait(warm, 20_000_000), BatchState::Done);
        gpu.retire(warm);
        let gate = hold_swap_stream(&gpu, Direction::GpuToHost);
        let held = gpu.submit_moves(Direction::GpuToHost, &moves(0..8, 0)).unwrap();
        let back = gpu.submit_moves(Direction::HostToGpu, &moves(40..48, 32)).unwrap();
        assert_eq!(gpu.wait(back, 20_000_000), BatchState::Done, "{policy:?}: the swap-in waited");
        assert_eq!(gpu.poll(held), BatchState::Pending, "{policy:?}: the swap-out is still held");
        gate.0.store(true, std::sync::atomic::Ordering::Release);
        assert_eq!(gpu.wait(held, 20_000_000), BatchState::Done);
        let mut buf = vec![0u8; bb as usize];
        for i in 0..8u32 {
            gpu.read_host_block(i, &mut buf).unwrap();
            assert!(buf == pattern(i, bb as usize, 5), "{policy:?}: host block {i} after the swap-out");
            gpu.read_gpu_block(40 + i, &mut buf).unwrap();
            assert!(
                buf == pattern(32 + i, bb as usize, 5),
                "{policy:?}: GPU block {} after the swap-in",
                40 + i
            );
        }
        gpu.retire(held);
        gpu.retire(back);
    }
}

/// A waiter may outlive the backend (an engine thread still waiting when the cache is freed):
/// it reports completion, and its drop, which releases the last reference to the context,
/// leaves the caller's context (here: none) current.
#[test]
fn a_waiter_outlives_its_backend() {
    if !gpu_or_skip("a_waiter_outlives_its_backend") {
        return;
    }
    // SAFETY: unbinding leaves no context current; nothing on this thread relies on one.
    unsafe { cudarc::driver::sys::cuCtxSetCurrent(std::ptr::null_mut()).result().unwrap() };
    let mut gpu = CudaBackend::new(4096, 8, 8, CudaOptions::from_env()).unwrap();
    gpu.write_gpu_block(1, &[5u8; 4096]).unwrap();
    let b = gpu.submit_moves(Direction::GpuToHost, &[BlockMove { gpu_block: 1, host_block: 2 }]).unwrap();
    let w = gpu.waiter(b).expect("an in-flight batch has a waiter");
    drop(gpu);
    assert_eq!(current_context(), 0, "after the backend's drop");
    assert!(w.wait_until(Instant::now() + Duration::from_secs(20)), "the batch completes");
    assert_eq!(current_context(), 0, "after waiting");
    drop(w);
    assert_eq!(current_context(), 0, "after the waiter's drop released the context");
    // The device is usable again afterwards.
    let mut again = CudaBackend::new(4096, 2, 2, CudaOptions::from_env()).unwrap();
    again.write_gpu_block(0, &[1u8; 4096]).unwrap();
}

/// Device memory the engine owns, in the primary context.
struct EngineTensor {
    ctx: std::sync::Arc<cudarc::driver::CudaContext>,
    ptr: u64,
}

impl EngineTensor {
    fn new(ctx: &std::sync::Arc<cudarc::driver::CudaContext>, bytes: usize) -> Self {
        ctx.bind_to_thread().unwrap();
        // SAFETY: a plain allocation in the context bound above; freed once, on drop.
        EngineTensor { ctx: ctx.clone(), ptr: unsafe { cudarc::driver::result::malloc_sync(bytes) }.unwrap() }
    }
}

impl Drop for EngineTensor {
    fn drop(&mut self) {
        self.ctx.bind_to_thread().unwrap();
        // SAFETY: allocated by `new`, freed only here; every backend adopting it is gone.
        unsafe { cudarc::driver::result::free_sync(self.ptr) }.unwrap();
    }
}

/// Creating a cache over the engine's tensors must not wait for the engine's queued work
/// (cudarc's first stream would call cuCtxSynchronize). The engine's stream is kept busy, and
/// the adopt must return while that work is still pending.
#[test]
fn adopt_does_not_wait_for_the_engines_work() {
    if !gpu_or_skip("adopt_does_not_wait_for_the_engines_work") {
        return;
    }
    let ctx = cudarc::driver::CudaContext::new(0).unwrap();
    let engine = ctx.new_stream().unwrap();
    let big = 64 << 20;
    let (a, b) = (EngineTensor::new(&ctx, big), EngineTensor::new(&ctx, big));
    for _ in 0..400 {
        // SAFETY: both tensors hold `big` bytes and outlive the stream's work (synchronised
        // below).
        unsafe {
            cudarc::driver::sys::cuMemcpyAsync(b.ptr, a.ptr, big, engine.cu_stream()).result().unwrap()
        };
    }
    let busy = ctx.new_event(None).unwrap();
    busy.record(&engine).unwrap();
    let segs = vec![Segment { base: a.ptr, bytes_per_block: 4096, stride: 4096 }];
    // SAFETY: `a` holds 64 blocks of 4096 bytes and outlives the backend.
    let gpu = unsafe { CudaBackend::adopt(segs, 64, 16, CudaOptions::from_env()) }.unwrap();
    assert!(!busy.is_complete(), "adopt waited for the engine's queued work");
    drop(gpu);
    engine.synchronize().unwrap();
}

fn weights(a: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (a * 41 + i * 7) as u8).collect()
}

/// Swap-out under pressure, swap-in on a later match, adapter uploads: the whole
/// cycle under a cache, with every cached block's bytes checked at the end.
fn swapper_cycle(c: &Cache, bb: usize, what: &str) {
    for a in 1..=3 {
        c.register_adapter(a, &weights(a, 3 * bb + 17), 8, 0).unwrap();
    }
    let toks = |seed: u32, n: usize| (0..n as u32).map(|i| seed * 1000 + i).collect::<Vec<u32>>();
    let fill = |k: u32, blk: usize| -> Vec<u8> { pattern(k * 64 + blk as u32, bb, 9) };
    let mut now = 10;
    let mut prompts = Vec::new();
    for k in 0..6u32 {
        let adapter = 1 + (k as u64 % 3);
        let prompt = toks(k + 1, 16);
        let m = c.match_prefix(adapter, 0, &prompt, now).unwrap();
        assert_eq!(c.wait(m.request, 20_000_000).unwrap(), Readiness::Ready, "{what}: adapter upload");
        let blocks = c.allocate(m.request, 16, now).unwrap();
        c.with_backend_mut(|io| {
            for (i, &b) in blocks.iter().enumerate() {
                io.write_gpu_block(b, &fill(k, i)).unwrap();
            }
        })
        .unwrap();
        c.commit(m.request, &prompt, now + 1).unwrap();
        c.release(m.request, now + 2).unwrap();
        prompts.push((adapter, prompt));
        now += 1_000_000;
        c.step(now, 1, true).unwrap();
    }
    c.step(now + 1, 1, true).unwrap();
    let s = c.stats().unwrap();
    assert!(s.swap_out_blocks > 0, "{what}: pressure swapped blocks out: {s:?}");
    // Every prompt again: swapped blocks come back and hold what was written.
    for (k, (adapter, prompt)) in prompts.iter().enumerate() {
        now += 1_000_000;
        let m = c.match_prefix(*adapter, 0, prompt, now).unwrap();
        assert_eq!(c.wait(m.request, 20_000_000).unwrap(), Readiness::Ready, "{what}: prompt {k}");
        let mut buf = vec![0u8; bb];
        c.with_backend_mut(|io| {
            for (i, &b) in m.kv_blocks.iter().enumerate() {
                io.read_gpu_block(b, &mut buf).unwrap();
                assert!(buf == fill(k as u32, i), "{what}: prompt {k} block {i} after the round trip");
            }
        })
        .unwrap();
        c.release(m.request, now + 1).unwrap();
        c.step(now + 2, 1, true).unwrap();
    }
    let s = c.stats().unwrap();
    assert!(s.swap_in_blocks > 0, "{what}: matches swapped blocks back in: {s:?}");
    c.check_invariants().unwrap();
    println!("{what}: {} blocks out, {} in", s.swap_out_blocks, s.swap_in_blocks);
}

fn cycle_config() -> CacheConfig {
    CacheConfig { block_tokens: 4, policy: PolicyKind::Libra, events: true, ..Default::default() }
}

#[test]
fn the_whole_swapper_cycle_on_the_device() {
    if !gpu_or_skip("the_whole_swapper_cycle_on_the_device") {
        return;
    }
    let bb = 2048 + 24;
    let opts = CacheOptions {
        config: cycle_config(),
        block_bytes: bb as u64,
        gpu_blocks: 24,
        host_blocks: 64,
        backend: BackendChoice::Cuda,
        segments: None,
    };
    let c = Cache::new(opts).unwrap();
    assert_eq!(c.backend_name().unwrap(), "cuda");
    swapper_cycle(&c, bb, "owned arena");
}

/// The engine's K and V tensors, adopted as the GPU tier (several segments per block, odd
/// offsets), through the whole cycle.
#[test]
fn adopted_engine_segments_through_the_whole_cycle() {
    if !gpu_or_skip("adopted_engine_segments_through_the_whole_cycle") {
        return;
    }
    let ctx = cudarc::driver::CudaContext::new(0).unwrap();
    let blocks = 24u32;
    let (k, v) = (EngineTensor::new(&ctx, 1 << 20), EngineTensor::new(&ctx, 1 << 20));
    let segs = vec![
        Segment { base: k.ptr, bytes_per_block: 1024, stride: 1024 },
        Segment { base: v.ptr + 8, bytes_per_block: 1000, stride: 1040 },
        Segment { base: k.ptr + (blocks as u64) * 1024 + 3, bytes_per_block: 48, stride: 61 },
    ];
    let bb: u64 = segs.iter().map(|s| s.bytes_per_block).sum();
    let opts = CacheOptions {
        config: cycle_config(),
        block_bytes: 0,
        gpu_blocks: blocks,
        host_blocks: 64,
        backend: BackendChoice::Cuda,
        segments: Some(segs),
    };
    // SAFETY: the segments lie in `k` and `v`, device allocations of this test that outlive
    // the cache (dropped below, before them).
    let c = unsafe { Cache::adopt(opts) }.unwrap();
    swapper_cycle(&c, bb as usize, "adopted segments");
    drop(c);
}

/// A kernel that faults (the stand-in's LIBRA_STANDIN_FAULT_LAUNCH makes the first launch
/// fault) fails its batch: the request reads LIBRA_FAILED through the C API, the cache's
/// invariants hold, later calls fail cleanly, and once the cache is freed a new one works.
/// A real device gives no way to fault on demand, so elsewhere this says so and returns.
#[test]
fn a_faulting_launch_fails_its_request_and_the_cache_recovers() {
    use libra_ffi::cache::*;
    if !gpu_or_skip("a_faulting_launch_fails_its_request_and_the_cache_recovers") {
        return;
    }
    if !standin_loaded() || std::env::var("LIBRA_STANDIN_FAULT_LAUNCH").as_deref() != Ok("1") {
        println!("skipped: faults on demand need the libcuda stand-in with LIBRA_STANDIN_FAULT_LAUNCH=1");
        return;
    }
    let mut cfg = libra_testkit::c_config::default_cache_config();
    cfg.block_tokens = 4;
    cfg.block_bytes = 1024;
    cfg.gpu_blocks = 32;
    cfg.host_blocks = 32;
    cfg.backend = libra_backend::LIBRA_BACKEND_CUDA as i32;
    let mut h: *mut libra_cache = std::ptr::null_mut();
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    assert_eq!(unsafe { libra_cache_create(&cfg, &mut h) }, Status::LIBRA_OK);
    let w = weights(1, 2500);
    assert_eq!(
        // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
        unsafe { libra_cache_register_adapter(h, 1, w.as_ptr().cast(), w.len(), 8, 0) },
        Status::LIBRA_OK
    );
    let toks: Vec<u32> = (0..8).collect();
    let mut blocks = [0u32; 8];
    let mut m = libra_match::default();
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    let st =
        unsafe { libra_cache_match(h, 1, 0, toks.as_ptr(), toks.len(), 1, blocks.as_mut_ptr(), 8, &mut m) };
    assert_eq!(st, Status::LIBRA_OK);
    // The adapter's upload is the process's first launch: it faults.
    let mut r = libra_readiness::LIBRA_PENDING;
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    assert_eq!(unsafe { libra_cache_wait(h, m.request, 20_000_000, &mut r) }, Status::LIBRA_OK);
    assert_eq!(r, libra_readiness::LIBRA_FAILED, "a faulted upload reads LIBRA_FAILED");
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    assert_eq!(unsafe { libra_cache_poll(h, m.request, &mut r) }, Status::LIBRA_OK);
    assert_eq!(r, libra_readiness::LIBRA_FAILED);
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    assert_eq!(unsafe { libra_cache_abort(h, m.request, 2) }, Status::LIBRA_OK);
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    assert_eq!(unsafe { libra_cache_check(h) }, Status::LIBRA_OK, "invariants hold after the fault");
    // The context's error is sticky: later work fails, reported, never hangs or crashes.
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    let st =
        unsafe { libra_cache_match(h, 1, 0, toks.as_ptr(), toks.len(), 3, blocks.as_mut_ptr(), 8, &mut m) };
    if st == Status::LIBRA_OK {
        // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
        assert_eq!(unsafe { libra_cache_wait(h, m.request, 20_000_000, &mut r) }, Status::LIBRA_OK);
        assert_ne!(r, libra_readiness::LIBRA_READY, "nothing completes in a faulted context");
        // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
        assert_eq!(unsafe { libra_cache_abort(h, m.request, 4) }, Status::LIBRA_OK);
    } else {
        assert_eq!(st, Status::LIBRA_ERR_DEVICE);
    }
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    assert_eq!(unsafe { libra_cache_check(h) }, Status::LIBRA_OK);
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    unsafe { libra_cache_free(h) };
    // Freeing the cache released the primary context; a new cache starts on a fresh one.
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    assert_eq!(unsafe { libra_cache_create(&cfg, &mut h) }, Status::LIBRA_OK);
    assert_eq!(
        // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
        unsafe { libra_cache_register_adapter(h, 1, w.as_ptr().cast(), w.len(), 8, 0) },
        Status::LIBRA_OK
    );
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    let st =
        unsafe { libra_cache_match(h, 1, 0, toks.as_ptr(), toks.len(), 5, blocks.as_mut_ptr(), 8, &mut m) };
    assert_eq!(st, Status::LIBRA_OK);
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    assert_eq!(unsafe { libra_cache_wait(h, m.request, 20_000_000, &mut r) }, Status::LIBRA_OK);
    assert_eq!(r, libra_readiness::LIBRA_READY, "the new cache works");
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    assert_eq!(unsafe { libra_cache_release(h, m.request, 6) }, Status::LIBRA_OK);
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    unsafe { libra_cache_free(h) };
}

/// A grouped swap-in (one launch and one event per group of layers) lands group by group: the
/// swap stream is held first, so no group is done; once released, `groups_done` only grows,
/// every group has its own event, and the bytes are right on both copy paths.
#[test]
fn grouped_swap_ins_land_group_by_group() {
    use libra::backend::SegmentGroups;
    if !gpu_or_skip("grouped_swap_ins_land_group_by_group") {
        return;
    }
    let ctx = cudarc::driver::CudaContext::new(0).unwrap();
    let blocks = 16u32;
    let t = EngineTensor::new(&ctx, 1 << 20);
    // Three layers, K and V each: six segments of different sizes.
    let sizes = [512u64, 512, 300, 300, 1024, 1024];
    let mut at = t.ptr;
    let segs: Vec<Segment> = sizes
        .iter()
        .map(|&n| {
            let s = Segment { base: at, bytes_per_block: n, stride: n + 16 };
            at += (n + 16) * blocks as u64;
            s
        })
        .collect();
    let bb: u64 = sizes.iter().sum();
    for policy in [CopyPolicy::kernel(), CopyPolicy::memcpy()] {
        let opts = CudaOptions { copy_policy: policy, ..CudaOptions::from_env() };
        // SAFETY: the segments lie inside `t` (1 MiB) for `blocks` blocks, and `t` outlives the
        // backend.
        let mut gpu = unsafe { CudaBackend::adopt(segs.clone(), blocks, blocks, opts) }.unwrap();
        for b in 0..blocks {
            gpu.write_gpu_block(b, &pattern(b, bb as usize, 3)).unwrap();
        }
        let all: Vec<BlockMove> = (0..blocks).map(|b| BlockMove { gpu_block: b, host_block: b }).collect();
        let out = gpu.submit_moves(Direction::GpuToHost, &all).unwrap();
        assert_eq!(gpu.wait(out, 20_000_000), BatchState::Done);
        gpu.retire(out);
        // The swap-in stream's list buffer exists before the gate (growing it waits for the
        // stream).
        let warm = gpu.submit_moves(Direction::HostToGpu, &all).unwrap();
        assert_eq!(gpu.wait(warm, 20_000_000), BatchState::Done);
        gpu.retire(warm);
        for b in 0..blocks {
            gpu.write_gpu_block(b, &vec![0u8; bb as usize]).unwrap();
        }
        let gate = hold_swap_stream(&gpu, Direction::HostToGpu);
        let groups = SegmentGroups::new(segs.len(), 2);
        let back = gpu.submit_moves_grouped(Direction::HostToGpu, &all, groups).unwrap();
        assert_eq!(gpu.groups_done(back, groups.count()), 0, "{policy:?}: held, nothing landed");
        let events: Vec<_> = (0..groups.count()).map(|g| gpu.group_event(back, g)).collect();
        assert!(events.iter().all(|e| !e.is_null()));
        assert!(events.windows(2).all(|w| w[0] != w[1]), "{policy:?}: one event per group");
        gate.0.store(true, std::sync::atomic::Ordering::Release);
        let (mut last, deadline) = (0, Instant::now() + Duration::from_secs(30));
        while last < groups.count() {
            assert!(Instant::now() < deadline, "{policy:?}: groups never landed");
            let done = gpu.groups_done(back, groups.count());
            assert!(done >= last, "{policy:?}: groups_done went back from {last} to {done}");
            last = done;
        }
        assert_eq!(gpu.wait(back, 20_000_000), BatchState::Done);
        gpu.retire(back);
        let mut buf = vec![0u8; bb as usize];
        for b in 0..blocks {
            gpu.read_gpu_block(b, &mut buf).unwrap();
            assert!(buf == pattern(b, bb as usize, 3), "{policy:?}: block {b} after the grouped swap-in");
        }
    }
}
