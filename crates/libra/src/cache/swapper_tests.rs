//! Tests of the swapper's moves: host room, pruning, recompute-or-load, subtree drops.
use super::*;
use crate::backend::cpu::CpuBackend;
use crate::cache::test_blocks::small_core;
use crate::cache::CacheConfig;

/// Inserts one single-block prompt and releases it.
fn put(core: &mut CacheCore, io: &mut CpuBackend, toks: &[u32], now: u64) -> usize {
    let m = core.match_prefix(io, 1, 0, toks, now).unwrap();
    let rest = toks.len() - m.cached_tokens;
    core.allocate(io, m.request, rest, now).unwrap();
    core.commit(m.request, &toks[m.cached_tokens..], now).unwrap();
    core.release(io, m.request, now).unwrap();
    m.cached_tokens
}

/// Dropping a GPU leaf drops exactly its host subtree (two branches over several levels),
/// frees their host blocks, and leaves everything beside it.
#[test]
fn drop_subtree_takes_exactly_the_host_descendants() {
    let cfg = CacheConfig { block_tokens: 1, policy: PolicyKind::Elora, ..Default::default() };
    let mut io = CpuBackend::new(8, 32, 32).unwrap();
    let mut core = CacheCore::new(cfg, 8, 32, 32).unwrap();
    core.register_adapter(1, &[0u8; 8], 4, 0).unwrap();
    put(&mut core, &mut io, &[1, 2, 3, 4, 5], 10);
    put(&mut core, &mut io, &[1, 2, 3, 6], 20);
    put(&mut core, &mut io, &[9, 8], 30);
    let node = |core: &CacheCore, t: &[u32]| core.tree.lookup(*core.prefix_keys(1, 0, t).last().unwrap());
    // Leaves go to the host bottom-up until [1 2 3] is a GPU leaf over [4 5] and [6].
    for t in [&[1, 2, 3, 4, 5][..], &[1, 2, 3, 6], &[1, 2, 3, 4]] {
        let n = node(&core, t).unwrap();
        core.swap_out(&mut io, &[n]).unwrap();
        core.poll_inflight(&mut io);
        assert_eq!(core.tree.node(n).residency, Residency::Host);
    }
    let top = node(&core, &[1, 2, 3]).unwrap();
    assert_eq!(core.tree.node(top).residency, Residency::Gpu);
    assert_eq!((core.tree.node(top).children, core.tree.node(top).gpu_children), (2, 0));
    let (host_used, gpu_used) = (core.host.used_count(), core.gpu.used_count());
    core.drop_subtree(top);
    for gone in [&[1, 2, 3][..], &[1, 2, 3, 4], &[1, 2, 3, 4, 5], &[1, 2, 3, 6]] {
        assert_eq!(node(&core, gone), None, "{gone:?} was in the subtree");
    }
    for kept in [&[1][..], &[1, 2], &[9], &[9, 8]] {
        assert!(node(&core, kept).is_some(), "{kept:?} was not");
    }
    assert_eq!(core.host.used_count(), host_used - 3);
    assert_eq!(core.gpu.used_count(), gpu_used - 1);
    core.check_invariants().unwrap();
    // A plain GPU leaf goes alone.
    let leaf = node(&core, &[9, 8]).unwrap();
    core.drop_subtree(leaf);
    assert_eq!(node(&core, &[9, 8]), None);
    assert!(node(&core, &[9]).is_some());
    core.check_invariants().unwrap();
}

/// `elora` prunes the host tier from 0.8 down to 0.7 of its 10 blocks; `libra` keeps it
/// full and prunes only what swap-outs displace.
#[test]
fn libra_keeps_the_host_tier_full() {
    for (policy, host_after) in [(PolicyKind::Elora, 7..=8), (PolicyKind::Libra, 10..=10)] {
        let cfg = CacheConfig { block_tokens: 1, policy, ..Default::default() };
        let mut io = CpuBackend::new(8, 20, 10).unwrap();
        let mut core = CacheCore::new(cfg, 8, 20, 10).unwrap();
        core.register_adapter(1, &[0u8; 8], 4, 0).unwrap();
        for i in 0..60u32 {
            let now = i as u64 * 1_000;
            put(&mut core, &mut io, &[1000 + i], now);
            core.step(&mut io, now, 1, false).unwrap();
            core.check_invariants().unwrap();
        }
        let s = core.stats();
        assert!(host_after.contains(&s.host_blocks_used), "{policy:?}: host {}", s.host_blocks_used);
        // Every block that left the GPU went to the host; the host sheds what it cannot hold.
        assert_eq!(s.dropped_blocks, 0, "{policy:?}");
        assert_eq!(s.swap_out_blocks, s.host_blocks_used as u64 + s.pruned_host_blocks, "{policy:?}");
    }
}

/// Loading a block costs 8 B / 0.5 B/us = 16 us; recomputing its 16 tokens costs 16 / 2 = 8 us
/// at 2 tokens/us but 32 us at 0.5 tokens/us. Only in the first case is a host copy useless,
/// and `libra` then drops what leaves the GPU instead of copying it.
#[test]
fn libra_drops_instead_of_copying_when_recompute_is_cheaper() {
    for (prefill, policy, pays) in
        [(2.0, PolicyKind::Libra, false), (0.5, PolicyKind::Libra, true), (2.0, PolicyKind::Elora, true)]
    {
        let cfg = CacheConfig {
            block_tokens: 16,
            policy,
            link_bytes_per_us: 0.5,
            prefill_tokens_per_us: prefill,
            swap_out_high: 0.0,
            swap_out_low: 0.0,
            ..Default::default()
        };
        let mut io = CpuBackend::new(8, 8, 8).unwrap();
        let mut core = CacheCore::new(cfg, 8, 8, 8).unwrap();
        core.register_adapter(1, &[0u8; 8], 4, 0).unwrap();
        assert_eq!(core.host_copy_pays(), pays, "{policy:?} at {prefill} tokens/us");
        let toks: Vec<u32> = (0..32).collect();
        put(&mut core, &mut io, &toks, 0);
        for t in 1..4 {
            core.step(&mut io, t, 1, false).unwrap();
            core.check_invariants().unwrap();
        }
        let s = core.stats();
        assert_eq!(s.kv_nodes_gpu, 0, "{policy:?}: everything left the GPU");
        if pays {
            assert_eq!((s.swap_out_blocks, s.host_blocks_used, s.dropped_blocks), (2, 2, 0), "{policy:?}");
        } else {
            assert_eq!((s.swap_out_blocks, s.host_blocks_used, s.dropped_blocks), (0, 0, 2), "{policy:?}");
        }
    }
}

/// A match whose prefix is on a full host tier must make room without pruning that prefix.
#[test]
fn making_room_for_a_match_keeps_its_host_prefix() {
    for policy in [PolicyKind::Elora, PolicyKind::Libra] {
        let cfg = CacheConfig {
            block_tokens: 1,
            policy,
            swap_out_high: 0.0,
            swap_out_low: 0.0,
            // No watermark pruning: the host tier is full when the match comes.
            host_high: 1.0,
            host_low: 1.0,
            ..Default::default()
        };
        let mut io = CpuBackend::new(8, 6, 2).unwrap();
        let mut core = CacheCore::new(cfg, 8, 6, 2).unwrap();
        core.register_adapter(1, &[0u8; 8], 4, 0).unwrap();
        put(&mut core, &mut io, &[1, 2], 0);
        for t in 1..4 {
            core.step(&mut io, t, 1, false).unwrap();
        }
        assert_eq!(core.stats().host_blocks_used, 2, "{policy:?}: the prefix fills the host tier");
        // Fill the GPU (adapter + 5 blocks) without another step.
        put(&mut core, &mut io, &[10, 11, 12, 13, 14], 10);
        assert_eq!(core.stats().gpu_blocks_used, 6);
        let m = core.match_prefix(&mut io, 1, 0, &[1, 2, 3], 20).unwrap();
        assert_eq!(m.cached_tokens, 2, "{policy:?}");
        core.check_invariants().unwrap();
        core.poll(&mut io, m.request).unwrap();
        core.allocate(&mut io, m.request, 1, 20).unwrap();
        core.commit(m.request, &[3], 20).unwrap();
        core.release(&mut io, m.request, 20).unwrap();
        core.check_invariants().unwrap();
    }
}

/// A clean block whose dirty child is leaving in the same pass stays on the GPU (it waits for
/// its child), and so does its dirty parent, without a copy: a copy of a node whose GPU child
/// stays could not free its block, only take link time and a host block.
#[test]
fn a_parent_stays_while_its_clean_child_waits() {
    let (mut core, mut io) = small_core(PolicyKind::Lru, 32);
    put(&mut core, &mut io, &[1, 2, 3], 10);
    let ids: Vec<u32> =
        core.prefix_keys(1, 0, &[1, 2, 3]).iter().map(|&k| core.tree.lookup(k).unwrap()).collect();
    assert_eq!(core.write_through_nodes(&mut io, &ids[1..2]).unwrap(), 1);
    core.poll_inflight(&mut io);
    assert!(core.is_clean(ids[1]) && !core.is_clean(ids[2]));
    // The whole chain is planned, leaf first.
    assert_eq!(core.plan(Tier::Gpu, 3, 20), vec![ids[2], ids[1], ids[0]]);
    let host_used = core.host.used_count();
    assert_eq!(core.swap_out_some(&mut io, 3, 20).unwrap(), 1, "only the leaf is copied out");
    assert_eq!(core.host.used_count(), host_used + 1);
    core.poll_inflight(&mut io);
    assert_eq!(core.tree.node(ids[2]).residency, Residency::Host, "the leaf left");
    assert_eq!(core.tree.node(ids[1]).residency, Residency::Gpu, "its clean parent waited");
    assert_eq!(core.tree.node(ids[0]).residency, Residency::Gpu, "and so did the root");
    assert!(!core.is_clean(ids[0]), "the root got no copy");
    core.check_invariants().unwrap();
}
