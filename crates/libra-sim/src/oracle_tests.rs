//! The oracle plans whole chains by farthest next use, drops blocks never used again, and
//! writes the head of its plan through to the host in idle link time.
use super::*;
use libra::backend::cpu::CpuBackend;
use libra::cache::CacheConfig;
use libra_testkit::fixtures::{pattern, BLOCK_BYTES};
use std::collections::HashMap;

/// Future knowledge given by hand: next use per prefix key; unlisted keys are never used
/// again, the adapter is needed at once.
struct Table(HashMap<u128, u64>);

impl NextUse for Table {
    fn kv_next_use(&self, key: u128) -> u64 {
        self.0.get(&key).copied().unwrap_or(u64::MAX)
    }
    fn adapter_next_use(&self, _: u64) -> u64 {
        0
    }
}

fn chain(c: u32) -> [u32; 3] {
    [c * 10, c * 10 + 1, c * 10 + 2]
}

/// The oracle's tiers (`libra`'s, with no cost hints: every host copy pays) over 40 GPU and
/// 40 host blocks, copies completing only when told; ten 3-block chains and the adapter fill
/// 31 blocks, between the low swap-out mark (28) and the high one (32). Chain 9 is never used
/// again; chain c < 9 is next used at `100_000 + c`, so chain 8 is the next to leave after
/// chain 9.
fn setup() -> (CacheCore, CpuBackend, Table) {
    let cfg = CacheConfig {
        block_tokens: 1,
        policy: crate::peers::SimPolicy::Oracle.kind(),
        prefetch_interval_us: 0,
        swap_wait_us: 0,
        ..Default::default()
    };
    let mut io = CpuBackend::new(BLOCK_BYTES, 40, 40).unwrap();
    io.set_deferred(true);
    let mut core = CacheCore::new(cfg, BLOCK_BYTES, 40, 40).unwrap();
    core.register_adapter(1, &[7u8; 32], 4, 0).unwrap();
    let mut next = HashMap::new();
    for c in 0..10u32 {
        let toks = chain(c);
        let m = core.match_prefix(&mut io, 1, 0, &toks, 1_000 * c as u64).unwrap();
        if !m.ready {
            complete_all(&mut io);
            core.poll_copies(&mut io);
        }
        let blocks = core.allocate(&mut io, m.request, 3, 1_000 * c as u64).unwrap();
        let keys = core.prefix_keys(1, 0, &toks);
        for (&b, &k) in blocks.iter().zip(&keys) {
            io.write_gpu_block(b, &pattern(k)).unwrap();
            if c < 9 {
                next.insert(k, 100_000 + c as u64);
            }
        }
        core.commit(m.request, &toks, 1_000 * c as u64).unwrap();
        core.release(&mut io, m.request, 1_000 * c as u64).unwrap();
    }
    core.check_invariants().unwrap();
    let t = core.tier_blocks();
    assert_eq!(t.gpu_capacity - t.gpu_free, 31);
    (core, io, Table(next))
}

fn complete_all(io: &mut CpuBackend) {
    for b in io.pending_batches() {
        io.complete(b, true);
    }
}

fn on_gpu(core: &CacheCore, c: u32) -> usize {
    core.prefix_keys(1, 0, &chain(c))
        .iter()
        .filter(|&&k| core.node_by_key(k).is_some_and(|n| n.residency == Residency::Gpu))
        .count()
}

#[test]
fn whole_cold_chains_leave_before_any_block_needed_again() {
    let (mut core, mut io, next) = setup();
    // Three blocks more than are free: among the GPU leaves alone, Belady would take chain 9's
    // leaf and then the leaves of chains 8 and 7, which are needed again.
    let plan = plan(&core, 3, 20_000, &next);
    let chain9 = core.prefix_keys(1, 0, &chain(9));
    let want: Vec<u32> = chain9.iter().rev().map(|&k| core.node_by_key(k).unwrap().id).collect();
    assert_eq!(plan.iter().map(|&(_, n)| n).collect::<Vec<_>>(), want);
    assert!(plan.iter().all(|&(u, _)| u == u64::MAX));
    Oracle { core: &mut core, io: &mut io, hints: &next }.make_room(12, 20_000).unwrap();
    assert_eq!(core.stats().dropped_blocks, 3, "never-used-again blocks are dropped");
    assert_eq!(core.stats().swap_out_blocks, 0, "no block needed again leaves");
    assert!(io.pending_batches().is_empty());
    assert_eq!(on_gpu(&core, 9), 0);
    for c in 0..9 {
        assert_eq!(on_gpu(&core, c), 3, "chain {c}");
    }
    core.check_invariants().unwrap();
    core.verify_contents(&mut io, &mut |key, bytes| bytes == pattern(key)).unwrap();
}

#[test]
fn the_head_of_the_plan_is_written_through_and_leaves_without_a_copy() {
    let (mut core, mut io, next) = setup();
    // Past the low mark: the next swap-out takes 4 blocks, chain 9 (no copy: never used
    // again) and chain 8's leaf, which gets a clean copy.
    let r = Oracle { core: &mut core, io: &mut io, hints: &next }.step(20_000, 1, false).unwrap();
    assert_eq!(r.written_through, 1);
    complete_all(&mut io);
    core.poll_copies(&mut io);
    let leaf8 = core.node_by_key(core.prefix_keys(1, 0, &chain(8))[2]).unwrap();
    assert!(leaf8.clean);
    assert_eq!(core.stats().write_through_bytes, BLOCK_BYTES);
    core.check_invariants().unwrap();
    // Four blocks more than are free: chain 9 is dropped, chain 8's leaf leaves at once.
    Oracle { core: &mut core, io: &mut io, hints: &next }.make_room(13, 20_000).unwrap();
    assert_eq!(core.stats().dropped_blocks, 3);
    assert_eq!(core.stats().instant_evictions, 1);
    assert!(io.pending_batches().is_empty(), "no copy on the allocation path");
    assert_eq!(core.node(leaf8.id).unwrap().residency, Residency::Host);
    assert_eq!(on_gpu(&core, 8), 2);
    core.check_invariants().unwrap();
    core.verify_contents(&mut io, &mut |key, bytes| bytes == pattern(key)).unwrap();
}

/// Recompute-or-load, as under `libra`: when the cost hints say a block is cheaper to
/// recompute than to load, blocks needed again are dropped instead of copied, nothing is
/// written through, and a match recomputes a host run instead of loading it.
#[test]
fn blocks_cheaper_to_recompute_get_no_host_copy() {
    let (mut core, mut io, next) = setup();
    // Prefill of a one-token block in 1 ns; loading a block over the link takes 1 us.
    core.set_cost_hints(1_000.0, BLOCK_BYTES as f64).unwrap();
    let r = Oracle { core: &mut core, io: &mut io, hints: &next }.step(20_000, 1, false).unwrap();
    assert_eq!(r.written_through, 0);
    // Four blocks more than are free: chain 9 and chain 8's leaf, needed again, are dropped.
    Oracle { core: &mut core, io: &mut io, hints: &next }.make_room(13, 20_000).unwrap();
    assert_eq!(core.stats().dropped_blocks, 4);
    assert_eq!(core.stats().swap_out_blocks, 0);
    assert!(io.pending_batches().is_empty());
    assert_eq!(on_gpu(&core, 8), 2);
    core.check_invariants().unwrap();
    // With loading cheaper again, a block that did go to the host is loaded, not recomputed.
    core.set_cost_hints(1e-9, BLOCK_BYTES as f64).unwrap();
    // Copies complete only when told, so the swap-out is still in flight when it returns.
    let r = Oracle { core: &mut core, io: &mut io, hints: &next }.make_room(16, 20_000);
    assert_eq!(r.unwrap_err().status, libra::error::Status::LIBRA_ERR_BUSY);
    complete_all(&mut io);
    core.poll_copies(&mut io);
    assert_eq!(on_gpu(&core, 7), 2, "chain 7's leaf went to the host");
    // A match recomputes that host run while recomputing is cheaper, and loads it otherwise.
    core.set_cost_hints(1_000.0, BLOCK_BYTES as f64).unwrap();
    let m = core.match_prefix(&mut io, 1, 0, &chain(7), 30_000).unwrap();
    assert_eq!((m.cached_tokens, m.recompute_tokens), (2, 1));
    core.release(&mut io, m.request, 30_000).unwrap();
    core.set_cost_hints(1e-9, BLOCK_BYTES as f64).unwrap();
    let m = core.match_prefix(&mut io, 1, 0, &chain(7), 31_000).unwrap();
    assert_eq!((m.cached_tokens, m.recompute_tokens), (3, 0));
    complete_all(&mut io);
    core.poll_copies(&mut io);
    core.release(&mut io, m.request, 31_000).unwrap();
    core.check_invariants().unwrap();
    core.verify_contents(&mut io, &mut |key, bytes| bytes == pattern(key)).unwrap();
}

/// A clean block whose dirty child is on its way out stays on the GPU this pass, and so does
/// its parent: the parent may not leave while a GPU child stays (this once made the oracle's
/// swap-out batch illegal).
#[test]
fn a_parent_stays_while_its_clean_child_waits_for_its_own_child() {
    let (mut core, mut io, next) = setup();
    let ids: Vec<u32> =
        core.prefix_keys(1, 0, &chain(8)).iter().map(|&k| core.node_by_key(k).unwrap().id).collect();
    // Only the middle block of chain 8 gets a clean copy.
    assert_eq!(core.write_through_nodes(&mut io, &ids[1..2]).unwrap(), 1);
    complete_all(&mut io);
    core.poll_copies(&mut io);
    assert!(core.node(ids[1]).unwrap().clean && !core.node(ids[2]).unwrap().clean);
    // Six blocks more than are free: chain 9 is dropped, then chain 8 is planned leaf first.
    let r = Oracle { core: &mut core, io: &mut io, hints: &next }.make_room(15, 20_000);
    if let Err(e) = &r {
        assert_eq!(e.status, libra::error::Status::LIBRA_ERR_BUSY, "{e:?}");
    }
    assert_eq!(core.node(ids[2]).unwrap().residency, Residency::ToHost, "the leaf leaves");
    assert_eq!(core.node(ids[1]).unwrap().residency, Residency::Gpu, "its clean parent waits");
    assert_eq!(core.node(ids[0]).unwrap().residency, Residency::Gpu, "and so does the root");
    core.check_invariants().unwrap();
    complete_all(&mut io);
    core.poll_copies(&mut io);
    core.check_invariants().unwrap();
    core.verify_contents(&mut io, &mut |key, bytes| bytes == pattern(key)).unwrap();
}
