//! GPU tests of the CUDA backend. Each compares the CUDA backend with the CPU backend (the
//! reference semantics) after the same operations, byte for byte. They skip with a printed
//! reason when there is no libcuda or no device.
//!
//! Kernels come from NVRTC, or from the cubin cache in `LIBRA_KERNEL_CACHE_DIR` (how a machine
//! without NVRTC runs them: see scripts/gpu_check.sh).
use libra::backend::cpu::CpuBackend;
use libra::backend::cuda::{self, CopyPath, CopyPolicy, CudaBackend, CudaOptions};
use libra::backend::{Backend, BatchState, BlockMove, Direction, Segment};
use libra::Status;

fn gpu_or_skip(test: &str) -> bool {
    match cuda::device_count() {
        Ok(_) => true,
        Err(e) => {
            println!("skipped {test}: {}", e.message);
            false
        }
    }
}

fn options(policy: CopyPolicy) -> CudaOptions {
    CudaOptions { copy_policy: policy, ..CudaOptions::from_env() }
}

/// Kernel-path tests must run the kernels, not silently fall back to memcpy.
fn require_kernels(b: &mut CudaBackend) {
    if let Err(e) = b.prepare_kernels() {
        panic!("the swap kernels could not be loaded: {e} (provide NVRTC or LIBRA_KERNEL_CACHE_DIR)");
    }
}

fn pattern(block: u32, len: usize, salt: u8) -> Vec<u8> {
    (0..len)
        .map(|i| ((i as u32).wrapping_mul(2654435761) >> 13) as u8 ^ (block as u8).wrapping_mul(29) ^ salt)
        .collect()
}

fn wait_done(b: &mut dyn Backend, batch: u64) {
    match b.wait(batch, 20_000_000) {
        BatchState::Done => {}
        other => panic!("batch {batch}: {other:?}"),
    }
    b.retire(batch);
}

/// Every GPU and host block of both backends, byte for byte.
fn assert_same(cpu: &mut CpuBackend, gpu: &mut CudaBackend, what: &str) {
    let bb = cpu.gpu_layout().block_bytes() as usize;
    let (mut a, mut b) = (vec![0u8; bb], vec![0u8; bb]);
    for blk in 0..cpu.gpu_layout().blocks() {
        cpu.read_gpu_block(blk, &mut a).unwrap();
        gpu.read_gpu_block(blk, &mut b).unwrap();
        assert!(a == b, "{what}: GPU block {blk} differs");
    }
    for blk in 0..cpu.host_blocks() {
        cpu.read_host_block(blk, &mut a).unwrap();
        gpu.read_host_block(blk, &mut b).unwrap();
        assert!(a == b, "{what}: host block {blk} differs");
    }
}

/// Runs the same swap-out / swap-in / copy / upload sequence on both backends.
fn exercise(cpu: &mut CpuBackend, gpu: &mut CudaBackend, batch_sizes: &[usize], what: &str) {
    let bb = cpu.gpu_layout().block_bytes() as usize;
    let gpu_blocks = cpu.gpu_layout().blocks();
    let host_blocks = cpu.host_blocks();
    for blk in 0..gpu_blocks {
        let p = pattern(blk, bb, 1);
        cpu.write_gpu_block(blk, &p).unwrap();
        gpu.write_gpu_block(blk, &p).unwrap();
    }
    assert_same(cpu, gpu, &format!("{what}: after writes"));
    for (round, &n) in batch_sizes.iter().enumerate() {
        let n = n.min(gpu_blocks as usize).min(host_blocks as usize);
        let moves: Vec<BlockMove> = (0..n as u32)
            .map(|i| BlockMove {
                gpu_block: (i * 7 + round as u32) % gpu_blocks,
                host_block: (i * 5 + 3 * round as u32) % host_blocks,
            })
            .collect();
        // Distinct destinations keep the result independent of copy order.
        let mut moves_out = moves.clone();
        moves_out.sort_by_key(|m| m.host_block);
        moves_out.dedup_by_key(|m| m.host_block);
        let mut moves_in = moves.clone();
        moves_in.sort_by_key(|m| m.gpu_block);
        moves_in.dedup_by_key(|m| m.gpu_block);
        for (dir, moves) in [(Direction::GpuToHost, &moves_out), (Direction::HostToGpu, &moves_in)] {
            let c = cpu.submit_moves(dir, moves).unwrap();
            let g = gpu.submit_moves(dir, moves).unwrap();
            wait_done(cpu, c);
            wait_done(gpu, g);
            assert_same(cpu, gpu, &format!("{what}: {dir:?} of {} blocks", moves.len()));
        }
        // Upload of an odd number of bytes: the last block is partly filled.
        let blocks: Vec<u32> = (0..n.min(4) as u32).map(|i| (i * 11 + round as u32) % gpu_blocks).collect();
        let mut uniq = blocks.clone();
        uniq.sort_unstable();
        uniq.dedup();
        let len = (uniq.len() * bb).saturating_sub(bb / 3 + 1).max(1);
        let data = pattern(round as u32, len, 0x77);
        let c = cpu.submit_upload(&data, &uniq).unwrap();
        let g = gpu.submit_upload(&data, &uniq).unwrap();
        wait_done(cpu, c);
        wait_done(gpu, g);
        assert_same(cpu, gpu, &format!("{what}: upload of {len} bytes"));
        // The same upload in layer groups (one empty): the same bytes, one event per group.
        let n = uniq.len() as u32;
        let ends = [n.div_ceil(2), n.div_ceil(2), n];
        let data = pattern(round as u32, len, 0x5a);
        let c = cpu.submit_upload_grouped(&data, &uniq, &ends).unwrap();
        let g = gpu.submit_upload_grouped(&data, &uniq, &ends).unwrap();
        let events: Vec<_> = (0..ends.len() as u32).map(|k| gpu.group_event(g, k)).collect();
        assert!(events.iter().all(|e| !e.is_null()), "{what}: a grouped upload has an event per group");
        assert!(events.windows(2).all(|w| w[0] != w[1]), "{what}: one event per group");
        assert_eq!(gpu.wait(g, 20_000_000), BatchState::Done);
        assert_eq!(gpu.groups_done(g, ends.len() as u32), ends.len() as u32);
        wait_done(cpu, c);
        wait_done(gpu, g);
        assert_same(cpu, gpu, &format!("{what}: grouped upload of {len} bytes"));
    }
}

const SIZES: &[usize] = &[1, 2, 3, 7, 16, 31, 64, 100];

#[test]
fn owned_arena_round_trips_on_both_paths() {
    if !gpu_or_skip("owned_arena_round_trips_on_both_paths") {
        return;
    }
    for (policy, name) in [(CopyPolicy::kernel(), "kernel"), (CopyPolicy::memcpy(), "memcpy")] {
        // An odd block size: vectors plus a ragged tail in every block.
        let bb = 4096 + 13;
        let mut cpu = CpuBackend::new(bb, 64, 48).unwrap();
        let mut gpu = CudaBackend::new(bb, 64, 48, options(policy)).unwrap();
        if policy == CopyPolicy::kernel() {
            require_kernels(&mut gpu);
            assert_eq!(gpu.path_for(8), CopyPath::Kernel);
        } else {
            assert_eq!(gpu.path_for(8), CopyPath::Memcpy);
        }
        exercise(&mut cpu, &mut gpu, SIZES, name);
    }
}

/// Device buffers standing in for an engine's KV tensors.
struct EngineTensors {
    ptrs: Vec<u64>,
}

impl EngineTensors {
    fn alloc(ctx: &std::sync::Arc<cudarc::driver::CudaContext>, sizes: &[usize]) -> Self {
        ctx.bind_to_thread().unwrap();
        // SAFETY: plain allocations in the context bound above; freed once, on drop.
        let ptrs =
            sizes.iter().map(|&n| unsafe { cudarc::driver::result::malloc_sync(n) }.unwrap()).collect();
        EngineTensors { ptrs }
    }
}

impl Drop for EngineTensors {
    fn drop(&mut self) {
        for &p in &self.ptrs {
            // SAFETY: allocated by `alloc`, freed only here; every backend using it is gone.
            unsafe { cudarc::driver::result::free_sync(p) }.unwrap();
        }
    }
}

#[test]
fn adopted_segments_round_trip_on_both_paths() {
    if !gpu_or_skip("adopted_segments_round_trip_on_both_paths") {
        return;
    }
    let ctx = cudarc::driver::CudaContext::new(0).unwrap();
    let blocks = 40u32;
    // K and V of 3 layers with different shapes: aligned, odd-sized, misaligned, and one pair
    // interleaved inside a shared stride.
    let t = EngineTensors::alloc(&ctx, &[1 << 20, 1 << 20, 1 << 20, 1 << 20]);
    // (tensor, offset of the first piece, bytes per block, stride)
    let shape: [(usize, u64, u64, u64); 5] =
        [(0, 0, 2048, 2048), (1, 3, 1000, 1003), (2, 8, 512, 1040), (2, 8 + 520, 512, 1040), (3, 1, 77, 96)];
    let segs: Vec<Segment> = shape
        .iter()
        .map(|&(t_i, off, bytes, stride)| Segment { base: t.ptrs[t_i] + off, bytes_per_block: bytes, stride })
        .collect();
    for (policy, name) in [(CopyPolicy::kernel(), "kernel"), (CopyPolicy::memcpy(), "memcpy")] {
        // The same shapes in host memory, for the CPU backend.
        let mut host_mem: Vec<Vec<u8>> = vec![vec![0u8; 1 << 20]; 4];
        let host_segs: Vec<Segment> = shape
            .iter()
            .map(|&(t_i, off, bytes, stride)| Segment {
                base: host_mem[t_i].as_mut_ptr() as u64 + off,
                bytes_per_block: bytes,
                stride,
            })
            .collect();
        // SAFETY: `host_mem` and the tensors hold every segment's `blocks` pieces and outlive
        // both backends.
        let mut cpu = unsafe { CpuBackend::adopt(host_segs, blocks, 24) }.unwrap();
        // SAFETY: as above.
        let mut gpu = unsafe { CudaBackend::adopt(segs.clone(), blocks, 24, options(policy)) }.unwrap();
        if policy == CopyPolicy::kernel() {
            require_kernels(&mut gpu);
        }
        exercise(&mut cpu, &mut gpu, SIZES, name);
        drop(gpu);
        drop(cpu);
        drop(host_mem);
    }
}

#[test]
fn adopt_rejects_host_pointers() {
    if !gpu_or_skip("adopt_rejects_host_pointers") {
        return;
    }
    let mut v = vec![0u8; 4096];
    let segs = vec![Segment { base: v.as_mut_ptr() as u64, bytes_per_block: 64, stride: 64 }];
    // SAFETY: `v` outlives the call, which must refuse it before any copy.
    let e = unsafe { CudaBackend::adopt(segs, 8, 8, CudaOptions::from_env()) }.err().expect("must fail");
    assert_eq!(e.status, Status::LIBRA_ERR_INVALID_ARGUMENT, "{e}");
}

#[test]
fn batch_events_order_another_stream() {
    if !gpu_or_skip("batch_events_order_another_stream") {
        return;
    }
    let bb = 64 * 1024;
    let mut gpu = CudaBackend::new(bb, 32, 32, CudaOptions::from_env()).unwrap();
    require_kernels(&mut gpu);
    for blk in 0..32 {
        gpu.write_gpu_block(blk, &pattern(blk, bb as usize, 3)).unwrap();
    }
    let moves: Vec<BlockMove> = (0..32).map(|i| BlockMove { gpu_block: i, host_block: 31 - i }).collect();
    let batch = gpu.submit_moves(Direction::GpuToHost, &moves).unwrap();
    let ev = gpu.batch_event(batch);
    assert!(!ev.is_null());
    // An engine's stream waits on the event, then its own work sees the copied bytes.
    let ctx = gpu.context().clone();
    let other = ctx.new_stream().unwrap();
    // SAFETY: `ev` is the batch's live CUevent (the batch is not retired yet) and `other` a live
    // stream of the same context.
    unsafe {
        cudarc::driver::sys::cuStreamWaitEvent(other.cu_stream(), ev as cudarc::driver::sys::CUevent, 0)
            .result()
            .unwrap()
    };
    other.synchronize().unwrap();
    assert_eq!(gpu.poll(batch), BatchState::Done, "the waiting stream finished, so the batch did");
    let mut out = vec![0u8; bb as usize];
    for i in 0..32 {
        gpu.read_host_block(31 - i, &mut out).unwrap();
        assert!(out == pattern(i, bb as usize, 3), "host block {}", 31 - i);
    }
    gpu.retire(batch);
    assert!(gpu.batch_event(batch).is_null());
    assert!(matches!(gpu.poll(batch), BatchState::Failed(_)));
    // Many small batches in flight at once, completing in order.
    let ids: Vec<u64> = (0..200)
        .map(|i| {
            gpu.submit_moves(Direction::HostToGpu, &[BlockMove { gpu_block: i % 32, host_block: i % 32 }])
                .unwrap()
        })
        .collect();
    let last = *ids.last().unwrap();
    assert_eq!(gpu.wait(last, 20_000_000), BatchState::Done);
    for id in ids {
        assert_eq!(gpu.poll(id), BatchState::Done);
        gpu.retire(id);
    }
}

/// A waiter outlives its batch's retirement: its event is not recycled for a later batch while
/// the waiter holds it, and it reports completion without the backend.
#[test]
fn waiters_keep_their_event() {
    if !gpu_or_skip("waiters_keep_their_event") {
        return;
    }
    let bb = 64 * 1024;
    let mut gpu = CudaBackend::new(bb, 16, 16, CudaOptions::from_env()).unwrap();
    let moves: Vec<BlockMove> = (0..16).map(|i| BlockMove { gpu_block: i, host_block: i }).collect();
    let first = gpu.submit_moves(Direction::GpuToHost, &moves).unwrap();
    let held_event = gpu.batch_event(first);
    let waiter = gpu.waiter(first).expect("a pending or finished CUDA batch has a waiter");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    assert!(waiter.wait_until(deadline), "the batch completes");
    assert_eq!(gpu.poll(first), BatchState::Done);
    gpu.retire(first);
    assert!(gpu.waiter(first).is_none(), "a retired batch has nothing to wait for");
    let second = gpu.submit_moves(Direction::HostToGpu, &moves).unwrap();
    assert_ne!(gpu.batch_event(second), held_event, "an event still held by a waiter is not reused");
    wait_done(&mut gpu, second);
    drop(waiter);
    let third = gpu.submit_moves(Direction::HostToGpu, &moves).unwrap();
    assert!(!gpu.batch_event(third).is_null());
    wait_done(&mut gpu, third);
}

/// No call leaves the backend's context current on the calling thread, so an engine that
/// drives several devices from one thread keeps the device it selected.
#[test]
fn calls_keep_the_callers_context() {
    if !gpu_or_skip("calls_keep_the_callers_context") {
        return;
    }
    use cudarc::driver::sys;
    let current = || {
        let mut c: sys::CUcontext = std::ptr::null_mut();
        // SAFETY: writes one handle into `c`.
        unsafe { sys::cuCtxGetCurrent(&mut c).result().unwrap() };
        c
    };
    // SAFETY: unbinding leaves no context current; nothing on this thread relies on one.
    unsafe { sys::cuCtxSetCurrent(std::ptr::null_mut()).result().unwrap() };
    let mut gpu = CudaBackend::new(4096, 8, 8, CudaOptions::from_env()).unwrap();
    assert!(current().is_null(), "after new");
    gpu.write_gpu_block(0, &[7u8; 4096]).unwrap();
    assert!(current().is_null(), "after write_gpu_block");
    let b = gpu.submit_moves(Direction::GpuToHost, &[BlockMove { gpu_block: 0, host_block: 3 }]).unwrap();
    assert!(current().is_null(), "after submit_moves");
    let w = gpu.waiter(b).unwrap();
    assert!(w.wait_until(std::time::Instant::now() + std::time::Duration::from_secs(20)));
    assert!(current().is_null(), "after a waiter");
    wait_done(&mut gpu, b);
    assert!(current().is_null(), "after wait and retire");
    let mut out = vec![0u8; 4096];
    gpu.read_host_block(3, &mut out).unwrap();
    assert_eq!(out, vec![7u8; 4096]);
    drop(w);
    drop(gpu);
    assert!(current().is_null(), "after drop");
}

#[test]
fn empty_batches_complete_and_bad_ids_are_rejected() {
    if !gpu_or_skip("empty_batches_complete_and_bad_ids_are_rejected") {
        return;
    }
    let mut gpu = CudaBackend::new(4096, 4, 4, CudaOptions::from_env()).unwrap();
    let b = gpu.submit_moves(Direction::GpuToHost, &[]).unwrap();
    assert_eq!(gpu.wait(b, 1_000_000), BatchState::Done);
    let e = gpu.submit_moves(Direction::GpuToHost, &[BlockMove { gpu_block: 4, host_block: 0 }]).unwrap_err();
    assert_eq!(e.status, Status::LIBRA_ERR_INVALID_ARGUMENT);
    let e = gpu.submit_upload(&[0u8; 4097], &[0]).unwrap_err();
    assert_eq!(e.status, Status::LIBRA_ERR_INVALID_ARGUMENT);
    assert_eq!(gpu.name(), "cuda");
}

/// Runs everywhere: without a device the constructors fail with LIBRA_ERR_DEVICE and say why.
#[test]
fn constructors_report_a_missing_device() {
    if cuda::device_count().is_ok() {
        println!("a device is present: nothing to check here");
        return;
    }
    let e = CudaBackend::new(4096, 4, 4, CudaOptions::default()).err().expect("no device");
    assert_eq!(e.status, Status::LIBRA_ERR_DEVICE);
    assert!(!e.message.is_empty());
    println!("without a device: {}", e.message);
    let segs = vec![Segment { base: 0x1000, bytes_per_block: 64, stride: 64 }];
    // SAFETY: without a device the call fails before it touches the (made-up) address.
    let e = unsafe { CudaBackend::adopt(segs, 4, 4, CudaOptions::default()) }.err().expect("no device");
    assert_eq!(e.status, Status::LIBRA_ERR_DEVICE);
    assert_eq!(cuda::unavailable_reason().status, Status::LIBRA_ERR_DEVICE);
    assert!(!cuda::usable());
}

/// A grouped swap is one launch and one event per layer group: every group's event is its
/// own, each completes, and the bytes match the CPU backend's grouped copy on both paths.
#[test]
fn grouped_swaps_land_group_by_group() {
    use libra::backend::SegmentGroups;
    if !gpu_or_skip("grouped_swaps_land_group_by_group") {
        return;
    }
    let ctx = cudarc::driver::CudaContext::new(0).unwrap();
    let blocks = 32u32;
    // Five segments (K and V of two layers, one odd one) in groups of two: 3 groups.
    let t = EngineTensors::alloc(&ctx, &[1 << 18; 5]);
    let shape: [(u64, u64); 5] = [(4096, 4096), (4096, 4096), (1000, 1003), (1000, 1003), (77, 96)];
    let segs: Vec<Segment> = shape
        .iter()
        .enumerate()
        .map(|(i, &(bytes, stride))| Segment { base: t.ptrs[i], bytes_per_block: bytes, stride })
        .collect();
    let groups = SegmentGroups::new(segs.len(), 2);
    assert_eq!(groups.count(), 3);
    for (policy, name) in [(CopyPolicy::kernel(), "kernel"), (CopyPolicy::memcpy(), "memcpy")] {
        let mut host_mem: Vec<Vec<u8>> = vec![vec![0u8; 1 << 18]; 5];
        let host_segs: Vec<Segment> = shape
            .iter()
            .enumerate()
            .map(|(i, &(bytes, stride))| Segment {
                base: host_mem[i].as_mut_ptr() as u64,
                bytes_per_block: bytes,
                stride,
            })
            .collect();
        // SAFETY: `host_mem` and the tensors hold every segment's `blocks` pieces and outlive
        // both backends.
        let mut cpu = unsafe { CpuBackend::adopt(host_segs, blocks, 24) }.unwrap();
        // SAFETY: as above.
        let mut gpu = unsafe { CudaBackend::adopt(segs.clone(), blocks, 24, options(policy)) }.unwrap();
        if policy == CopyPolicy::kernel() {
            require_kernels(&mut gpu);
        }
        let bb = cpu.gpu_layout().block_bytes() as usize;
        for blk in 0..blocks {
            let p = pattern(blk, bb, 9);
            cpu.write_gpu_block(blk, &p).unwrap();
            gpu.write_gpu_block(blk, &p).unwrap();
        }
        let moves: Vec<BlockMove> = (0..20).map(|i| BlockMove { gpu_block: i, host_block: i }).collect();
        let back: Vec<BlockMove> = (0..20).map(|i| BlockMove { gpu_block: 31 - i, host_block: i }).collect();
        for (dir, moves) in [(Direction::GpuToHost, &moves), (Direction::HostToGpu, &back)] {
            let c = cpu.submit_moves_grouped(dir, moves, groups).unwrap();
            let g = gpu.submit_moves_grouped(dir, moves, groups).unwrap();
            let events: Vec<_> = (0..groups.count()).map(|k| gpu.group_event(g, k)).collect();
            assert!(events.iter().all(|e| !e.is_null()), "{name}: a group has no event");
            let mut distinct = events.clone();
            distinct.sort();
            distinct.dedup();
            assert_eq!(distinct.len(), events.len(), "{name}: groups share an event");
            assert_eq!(gpu.batch_event(g), events[events.len() - 1], "{name}: the last group ends the batch");
            assert_eq!(gpu.wait(g, 20_000_000), BatchState::Done);
            assert_eq!(gpu.groups_done(g, groups.count()), groups.count());
            wait_done(&mut cpu, c);
            gpu.retire(g);
            assert_same(&mut cpu, &mut gpu, &format!("{name}: grouped {dir:?}"));
        }
        let e = gpu.submit_moves_grouped(Direction::HostToGpu, &back, SegmentGroups::new(4, 2)).unwrap_err();
        assert_eq!(e.status, Status::LIBRA_ERR_INVALID_ARGUMENT);
        drop(gpu);
        drop(cpu);
        drop(host_mem);
    }
}
