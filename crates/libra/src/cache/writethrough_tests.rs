//! Write-through: clean copies land in idle link time, clean blocks leave without a copy, and
//! no failure, match or full host tier loses a GPU copy.
use super::*;
use crate::backend::cpu::CpuBackend;
use crate::cache::test_blocks::{fill_and_commit, pattern, BLOCK_BYTES};
use crate::cache::{CacheConfig, PolicyKind};

/// `libra` over 40 GPU and `host` host blocks, copies completing only when told; ten 3-block
/// chains and the adapter fill 31 blocks, past the low swap-out mark (28) and below the high
/// one (32): the next swap-out would take 4 blocks, and write-through copies those.
fn setup(host: u32) -> (CacheCore, CpuBackend) {
    let cfg = CacheConfig {
        block_tokens: 1,
        policy: PolicyKind::Libra,
        prefetch_interval_us: 0,
        swap_wait_us: 0,
        ..Default::default()
    };
    let mut io = CpuBackend::new(BLOCK_BYTES, 40, host).unwrap();
    io.set_deferred(true);
    let mut core = CacheCore::new(cfg, BLOCK_BYTES, 40, host).unwrap();
    core.register_adapter(1, &[7u8; 32], 4, 0).unwrap();
    for c in 0..10u32 {
        let toks = [c * 10, c * 10 + 1, c * 10 + 2];
        put(&mut core, &mut io, &toks, 1_000 * c as u64);
    }
    complete_all(&mut io, true);
    core.poll_inflight(&mut io);
    core.check_invariants().unwrap();
    (core, io)
}

fn put(core: &mut CacheCore, io: &mut CpuBackend, toks: &[u32], now: u64) {
    let m = core.match_prefix(io, 1, 0, toks, now).unwrap();
    if !m.ready {
        complete_all(io, true);
        core.poll_inflight(io);
    }
    fill_and_commit(core, io, m.request, toks, m.cached_tokens, now);
    core.release(io, m.request, now).unwrap();
}

/// Allocates, completing the swap-outs it waits for (copies complete only when told).
fn allocate(core: &mut CacheCore, io: &mut CpuBackend, req: u64, n: usize, now: u64, ok: bool) {
    for _ in 0..8 {
        match core.allocate(io, req, n, now) {
            Ok(_) => return,
            Err(e) if e.status == crate::error::Status::LIBRA_ERR_BUSY => complete_all(io, ok),
            Err(e) => panic!("{e:?}"),
        }
    }
    panic!("allocation never succeeded");
}

fn complete_all(io: &mut CpuBackend, ok: bool) {
    for b in io.pending_batches() {
        io.complete(b, ok);
    }
}

fn check(core: &CacheCore, io: &mut CpuBackend) {
    core.check_invariants().unwrap();
    core.verify_contents(io, &mut |key, bytes| bytes == pattern(key)).unwrap();
}

#[test]
fn clean_blocks_leave_without_a_copy() {
    let (mut core, mut io) = setup(40);
    let next = core.plan_swap_out(4, 20_000);
    let r = core.step(&mut io, 20_000, 1, false).unwrap();
    assert_eq!(r.written_through, 4);
    check(&core, &mut io);
    complete_all(&mut io, true);
    core.step(&mut io, 20_000, 1, false).unwrap();
    let s = core.stats();
    assert_eq!((s.clean_blocks, s.write_through_bytes), (4, 4 * BLOCK_BYTES));
    assert!(next.iter().all(|&n| core.is_clean(n)), "the head of the plan is clean");
    check(&core, &mut io);
    // 9 free blocks; 11 more need 2 of the clean ones, freed at once: no batch, no bytes.
    let m = core.match_prefix(&mut io, 1, 0, &[500], 30_000).unwrap();
    core.allocate(&mut io, m.request, 11, 30_000).unwrap();
    let t = core.stats();
    assert_eq!(t.instant_evictions, 2);
    assert_eq!((t.inflight_batches, t.bytes_to_host, t.clean_blocks), (0, s.bytes_to_host, 2));
    assert_eq!(t.kv_nodes_host, 2);
    core.release(&mut io, m.request, 30_000).unwrap();
    check(&core, &mut io);
}

#[test]
fn failed_clean_copy_keeps_the_gpu_copy() {
    let (mut core, mut io) = setup(40);
    assert_eq!(core.step(&mut io, 20_000, 1, false).unwrap().written_through, 4);
    let used = core.stats().host_blocks_used;
    assert_eq!(used, 4);
    complete_all(&mut io, false);
    core.step(&mut io, 20_000, 1, false).unwrap();
    let s = core.stats();
    assert_eq!((s.clean_blocks, s.write_through_bytes, s.failed_batches), (0, 0, 1));
    assert_eq!(s.host_blocks_used, 4, "the next pass copied them again");
    assert_eq!(s.kv_nodes_gpu, 30);
    check(&core, &mut io);
}

#[test]
fn refused_clean_copy_changes_nothing() {
    let (mut core, mut io) = setup(40);
    // A backend that refuses the submission: modelled by a host tier of the CPU backend that
    // is smaller than the core's, so the move names a host block out of range.
    let mut small = CpuBackend::new(BLOCK_BYTES, 40, 2).unwrap();
    let before = core.stats();
    assert!(core.step(&mut small, 20_000, 1, false).is_err());
    let s = core.stats();
    assert_eq!((s.host_blocks_used, s.clean_blocks, s.failed_batches), (0, 0, before.failed_batches + 1));
    check(&core, &mut io);
}

#[test]
fn block_matched_during_its_clean_copy_stays_and_is_clean() {
    let (mut core, mut io) = setup(40);
    core.step(&mut io, 20_000, 1, false).unwrap();
    // Find a chain being copied and match it while the copy is in flight.
    let copying: Vec<u32> =
        core.tree.live_ids().filter(|&n| core.tree.node(n).residency == Residency::ToHost).collect();
    assert_eq!(copying.len(), 4);
    let key = core.tree.node(copying[0]).key;
    let chain = (0..10u32)
        .map(|c| [c * 10, c * 10 + 1, c * 10 + 2])
        .find(|t| core.prefix_keys(1, 0, t).contains(&key))
        .unwrap();
    let m = core.match_prefix(&mut io, 1, 0, &chain, 21_000).unwrap();
    assert_eq!(m.cached_tokens, 3, "a block being copied is a GPU hit");
    assert!(m.ready);
    complete_all(&mut io, true);
    core.step(&mut io, 22_000, 1, false).unwrap();
    assert!(core.is_clean(copying[0]), "pinned meanwhile, still clean");
    // Under pressure, pinned clean blocks stay.
    let m2 = core.match_prefix(&mut io, 1, 0, &[900], 23_000).unwrap();
    let _ = core.allocate(&mut io, m2.request, 13, 23_000);
    complete_all(&mut io, true);
    core.poll_inflight(&mut io);
    assert_eq!(core.tree.node(copying[0]).residency, Residency::Gpu);
    core.release(&mut io, m2.request, 23_000).unwrap();
    core.release(&mut io, m.request, 23_000).unwrap();
    check(&core, &mut io);
}

#[test]
fn full_host_tier_never_costs_a_gpu_copy() {
    // Two host blocks: at most two clean copies; the rest of a swap-out needs the host room
    // they hold, and then the blocks are dropped, but never one whose only copy is the GPU's
    // while its host copy is incomplete.
    let (mut core, mut io) = setup(2);
    assert_eq!(core.step(&mut io, 20_000, 1, false).unwrap().written_through, 2);
    complete_all(&mut io, true);
    core.step(&mut io, 20_000, 1, false).unwrap();
    assert_eq!(core.stats().clean_blocks, 2);
    check(&core, &mut io);
    for round in 0..4u64 {
        let m = core.match_prefix(&mut io, 1, 0, &[700 + round as u32], 30_000 + round).unwrap();
        allocate(&mut core, &mut io, m.request, 12, 30_000 + round, round % 2 == 0);
        core.release(&mut io, m.request, 30_000 + round).unwrap();
        complete_all(&mut io, round % 2 == 0);
        core.step(&mut io, 40_000 + round, 1, false).unwrap();
        check(&core, &mut io);
    }
    assert!(core.stats().instant_evictions >= 2);
}

#[test]
fn unregister_frees_both_copies_of_clean_blocks() {
    let (mut core, mut io) = setup(40);
    core.step(&mut io, 20_000, 1, false).unwrap();
    complete_all(&mut io, true);
    core.step(&mut io, 20_000, 1, false).unwrap();
    assert_eq!(core.stats().clean_blocks, 4);
    core.unregister_adapter(1).unwrap();
    let s = core.stats();
    assert_eq!((s.clean_blocks, s.host_blocks_used, s.gpu_blocks_used), (0, 0, 0));
    check(&core, &mut io);
}

/// A request that recomputes a block (the same tokens, filled again into a fresh GPU block)
/// while its clean copy is in flight does not replace it: the tree keeps the block and the
/// copy lands; once it is clean, a recompute (a use) keeps both copies, since committed KV
/// never changes. The fresh blocks are freed at release.
#[test]
fn recomputing_a_clean_block_keeps_both_copies() {
    let (mut core, mut io) = setup(40);
    core.step(&mut io, 20_000, 1, false).unwrap();
    let n = core.tree.live_ids().find(|&n| core.tree.node(n).residency == Residency::ToHost).unwrap();
    let key = core.tree.node(n).key;
    let chain = (0..10u32)
        .map(|c| [c * 10, c * 10 + 1, c * 10 + 2])
        .find(|t| core.prefix_keys(1, 0, t).contains(&key))
        .unwrap();
    let keys = core.prefix_keys(1, 0, &chain);
    for round in 0..2u64 {
        let now = 21_000 + round;
        let (gpu, host) = (core.tree.node(n).gpu_block, core.tree.node(n).host_block);
        // An empty match: the engine recomputes the whole prompt.
        let m = core.match_prefix(&mut io, 1, 0, &[], now).unwrap();
        let blocks = core.allocate(&mut io, m.request, 3, now).unwrap();
        for (i, &b) in blocks.iter().enumerate() {
            io.write_gpu_block(b, &pattern(keys[i])).unwrap();
        }
        assert_eq!(core.commit(m.request, &chain, now).unwrap(), 0, "every block was already cached");
        assert_eq!((core.tree.node(n).gpu_block, core.tree.node(n).host_block), (gpu, host));
        core.release(&mut io, m.request, now).unwrap();
        check(&core, &mut io);
        // The copy lands between the rounds: the second round recomputes a clean block.
        complete_all(&mut io, true);
        core.poll_inflight(&mut io);
        assert!(core.is_clean(n));
    }
}
