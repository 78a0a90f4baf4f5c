//! Host copies kept at swap-in: a block that comes back from the host stays clean, leaves the
//! GPU again without a copy, and gives its host copy up only when the host tier has no
//! host-only block left to make room with.
use super::*;
use crate::backend::cpu::CpuBackend;
use crate::cache::test_blocks::{fill_and_commit, pattern, BLOCK_BYTES};
use crate::cache::{CacheConfig, PolicyKind};

/// One token per block; the adapter takes one GPU block. Copies complete at submission.
fn core_with(policy: PolicyKind, gpu: u32, host: u32) -> (CacheCore, CpuBackend) {
    let cfg = CacheConfig { block_tokens: 1, policy, write_through_blocks: 0, ..Default::default() };
    let io = CpuBackend::new(BLOCK_BYTES, gpu, host).unwrap();
    let mut core = CacheCore::new(cfg, BLOCK_BYTES, gpu, host).unwrap();
    core.register_adapter(1, &[7u8; BLOCK_BYTES as usize], 4, 0).unwrap();
    (core, io)
}

/// Matches `toks`, fills the blocks the cache lacks with their patterns and commits them;
/// returns the open request.
fn open(core: &mut CacheCore, io: &mut CpuBackend, toks: &[u32], now: u64) -> u64 {
    let m = core.match_prefix(io, 1, 0, toks, now).unwrap();
    assert!(m.ready, "copies complete at submission");
    fill_and_commit(core, io, m.request, toks, m.cached_tokens, now);
    m.request
}

fn serve(core: &mut CacheCore, io: &mut CpuBackend, toks: &[u32], now: u64) {
    let r = open(core, io, toks, now);
    core.release(io, r, now).unwrap();
}

fn nodes_of(core: &CacheCore, toks: &[u32]) -> Vec<u32> {
    core.prefix_keys(1, 0, toks).iter().map(|&k| core.tree.lookup(k).expect("cached")).collect()
}

/// The first prompt of the tests, four blocks.
const A: [u32; 4] = [1, 2, 3, 4];
/// A nine-block prompt: on ten GPU blocks (one the adapter's) every other KV block leaves.
const NINE: [u32; 9] = [20, 21, 22, 23, 24, 25, 26, 27, 28];

/// Serves `A`, then `NINE`.
fn serve_a_then_nine(core: &mut CacheCore, io: &mut CpuBackend) {
    serve(core, io, &A, 10);
    serve(core, io, &NINE, 20);
}

fn check(core: &CacheCore, io: &mut CpuBackend) {
    core.check_invariants().unwrap();
    core.verify_contents(io, &mut |key, bytes| bytes == pattern(key)).unwrap();
}

/// A chain pushed to the host, matched back and pushed out again is copied to the host once:
/// the swap-in leaves it clean on its old host blocks, and the second departure is an
/// instant eviction.
#[test]
fn a_block_swapped_back_in_leaves_again_without_a_copy() {
    for policy in [PolicyKind::Lru, PolicyKind::Elora, PolicyKind::Libra] {
        // Ten GPU blocks: the adapter, then room for nine KV blocks.
        let (mut core, mut io) = core_with(policy, 10, 40);
        let a = A;
        // Nine blocks for another prompt: every unpinned KV block must leave, `a` included.
        serve_a_then_nine(&mut core, &mut io);
        let an = nodes_of(&core, &a);
        assert!(an.iter().all(|&n| core.tree.node(n).residency == Residency::Host), "{policy:?}");
        let host_blocks: Vec<u32> = an.iter().map(|&n| core.tree.node(n).host_block).collect();
        let r = open(&mut core, &mut io, &a, 30);
        for (&n, &h) in an.iter().zip(&host_blocks) {
            let node = core.tree.node(n);
            assert_eq!((node.residency, node.host_block), (Residency::Gpu, h), "{policy:?}: kept its copy");
            assert!(core.is_clean(n));
        }
        assert!(core.stats().clean_blocks >= 4, "{policy:?}");
        check(&core, &mut io);
        core.release(&mut io, r, 30).unwrap();
        let before = core.stats();
        serve(&mut core, &mut io, &[40, 41, 42, 43, 44, 45, 46, 47, 48], 40);
        let after = core.stats();
        for (&n, &h) in an.iter().zip(&host_blocks) {
            let node = core.tree.node(n);
            assert_eq!((node.residency, node.host_block), (Residency::Host, h), "{policy:?}");
        }
        assert!(after.instant_evictions >= before.instant_evictions + 4, "{policy:?}: {after:?}");
        // The nine blocks that left: `a`'s four without a copy, the others copied.
        let copied = after.bytes_to_host - before.bytes_to_host;
        let left = after.swap_out_blocks - before.swap_out_blocks;
        let instant = after.instant_evictions - before.instant_evictions;
        assert_eq!(copied, (left - instant) * BLOCK_BYTES, "{policy:?}");
        check(&core, &mut io);
    }
}

/// The host tier holds only copies of GPU blocks: a swap-out of a block whose only copy is on
/// the GPU gives one of those copies up (counted) instead of dropping the block, and never
/// one of a block leaving in the same pass (see `full_host_tier_never_costs_a_gpu_copy`).
#[test]
fn a_full_host_tier_gives_up_a_copy_before_dropping_a_block() {
    // Ten GPU blocks, four host blocks.
    let (mut core, mut io) = core_with(PolicyKind::Lru, 10, 4);
    let (a, c) = (A, NINE);
    serve_a_then_nine(&mut core, &mut io);
    // `a` fills the host; matching it brings it back, pinned, and drops four of `c`'s blocks
    // (the host has no room but `a`'s, which the match holds).
    let r = open(&mut core, &mut io, &a, 30);
    core.release(&mut io, r, 31).unwrap();
    let s = core.stats();
    assert_eq!((s.clean_blocks, s.host_blocks_used, s.reclaimed_host_copies), (4, 4, 0));
    // `c`'s five blocks left on the GPU are older than `a`: LRU takes them first, and their
    // only copy is on the GPU.
    let c_left: Vec<u32> = nodes_of(&core, &c[..5])
        .into_iter()
        .filter(|&n| core.tree.node(n).residency == Residency::Gpu)
        .collect();
    assert_eq!(c_left.len(), 5);
    let dropped = s.dropped_blocks;
    let m = core.match_prefix(&mut io, 1, 0, &[90], 40).unwrap();
    core.allocate(&mut io, m.request, 1, 40).unwrap();
    let t = core.stats();
    assert_eq!(t.dropped_blocks, dropped, "a copy of `a` gave way instead");
    assert_eq!(t.reclaimed_host_copies, 1);
    assert_eq!((t.clean_blocks, t.host_blocks_used), (3, 4));
    let on_host = c_left.iter().filter(|&&n| core.tree.node(n).residency == Residency::Host).count();
    assert_eq!(on_host, 1, "the deepest of `c`'s blocks went to the host");
    core.release(&mut io, m.request, 41).unwrap();
    check(&core, &mut io);
}

/// A failed swap-in leaves no clean block behind: the host copy stays the only one.
#[test]
fn a_failed_swap_in_leaves_no_clean_copy() {
    // Room for both prompts: `a` leaves by an explicit swap-out, so the match below needs no
    // eviction and its only copy is the swap-in.
    let (mut core, mut io) = core_with(PolicyKind::Libra, 14, 40);
    let a = A;
    serve_a_then_nine(&mut core, &mut io);
    let mut deepest_first = nodes_of(&core, &a);
    deepest_first.reverse();
    core.swap_out(&mut io, &deepest_first).unwrap();
    core.poll_inflight(&mut io);
    io.set_deferred(true);
    let m = core.match_prefix(&mut io, 1, 0, &a, 30).unwrap();
    assert!(!m.ready);
    for b in io.pending_batches() {
        io.complete(b, false);
    }
    core.poll_inflight(&mut io);
    core.release(&mut io, m.request, 31).unwrap();
    for n in nodes_of(&core, &a) {
        assert_eq!(core.tree.node(n).residency, Residency::Host);
    }
    assert_eq!(core.stats().clean_blocks, 0);
    check(&core, &mut io);
}
