//! The mechanisms move what they are asked to when the move is legal, and refuse, leaving the
//! tree as it was, every move that would break an invariant.
use super::*;
use crate::backend::cpu::CpuBackend;
use crate::cache::test_blocks::{pattern, BLOCK_BYTES};
use crate::cache::{CacheConfig, PolicyKind};
use crate::error::Status;

/// `lru` over 16 GPU and 16 host blocks, copies completing at once; one 3-block chain under
/// adapter 1, released, and a second chain still held by request `held`.
fn setup() -> (CacheCore, CpuBackend, [u32; 3], u64) {
    let cfg = CacheConfig { block_tokens: 1, policy: PolicyKind::Lru, swap_wait_us: 0, ..Default::default() };
    let mut io = CpuBackend::new(BLOCK_BYTES, 16, 16).unwrap();
    let mut core = CacheCore::new(cfg, BLOCK_BYTES, 16, 16).unwrap();
    core.register_adapter(1, &[7u8; 32], 4, 0).unwrap();
    let mut held = 0;
    let mut chain = [0; 3];
    for (c, toks) in [[1u32, 2, 3], [4, 5, 6]].iter().enumerate() {
        let m = core.match_prefix(&mut io, 1, 0, toks, 10).unwrap();
        core.poll_copies(&mut io);
        let blocks = core.allocate(&mut io, m.request, 3, 10).unwrap();
        let keys = core.prefix_keys(1, 0, toks);
        for (&b, &k) in blocks.iter().zip(&keys) {
            io.write_gpu_block(b, &pattern(k)).unwrap();
        }
        core.commit(m.request, toks, 10).unwrap();
        if c == 0 {
            core.release(&mut io, m.request, 10).unwrap();
            for (i, &k) in keys.iter().enumerate() {
                chain[i] = core.node_by_key(k).unwrap().id;
            }
        } else {
            held = m.request;
        }
    }
    check(&core, &mut io);
    (core, io, chain, held)
}

fn check(core: &CacheCore, io: &mut CpuBackend) {
    core.check_invariants().unwrap();
    core.verify_contents(io, &mut |key, bytes| bytes == pattern(key)).unwrap();
}

fn refused(r: Result<impl std::fmt::Debug>) {
    assert_eq!(r.unwrap_err().status, Status::LIBRA_ERR_INVALID_ARGUMENT);
}

#[test]
fn illegal_moves_are_refused_and_change_nothing() {
    let (mut core, mut io, [a, b, c], held) = setup();
    let before = (core.stats(), core.nodes().collect::<Vec<_>>());
    refused(core.drop_node(a)); // a GPU child below it
    refused(core.drop_node(u32::MAX));
    refused(core.swap_out_nodes(&mut io, &[b, c])); // parent before child
    refused(core.swap_out_nodes(&mut io, &[c, c]));
    refused(core.evict_clean_node(c)); // no host copy
    refused(core.swap_in_nodes(&mut io, &[c])); // not on the host
    refused(core.prune_host_leaf(c));
    let pinned = core.node_by_key(core.prefix_keys(1, 0, &[4, 5, 6])[2]).unwrap();
    assert!(pinned.pinned);
    refused(core.drop_node(pinned.id));
    refused(core.swap_out_nodes(&mut io, &[pinned.id]));
    let adapter = core.node(a).unwrap().parent.unwrap();
    refused(core.unload_adapter_node(adapter)); // pinned by the open request, GPU children
    refused(core.upload_adapter_node(&mut io, adapter)); // already resident
    assert_eq!(before, (core.stats(), core.nodes().collect::<Vec<_>>()));
    check(&core, &mut io);
    core.release(&mut io, held, 20).unwrap();
}

#[test]
fn a_chain_leaves_children_first_and_comes_back_parents_first() {
    let (mut core, mut io, [a, b, c], _) = setup();
    let plan = core.plan_gpu_by(3, 20, &|v: &NodeView| v.last_use as f64);
    assert_eq!(plan, vec![c, b, a], "the released chain, leaf first");
    core.swap_out_nodes(&mut io, &plan).unwrap();
    core.poll_copies(&mut io);
    assert!(plan.iter().all(|&n| core.node(n).unwrap().residency == Residency::Host));
    check(&core, &mut io);
    refused(core.swap_in_nodes(&mut io, &[b])); // its parent is on the host
    core.swap_in_nodes(&mut io, &[a, b]).unwrap();
    core.poll_copies(&mut io);
    check(&core, &mut io);
    core.prune_host_leaf(c).unwrap();
    core.drop_node(b).unwrap();
    assert_eq!((core.stats().pruned_host_blocks, core.stats().dropped_blocks), (1, 1));
    assert!(core.node(c).is_none() && core.node(b).is_none());
    check(&core, &mut io);
}

#[test]
fn written_through_blocks_leave_without_a_copy() {
    let (mut core, mut io, [a, b, c], _) = setup();
    assert_eq!(core.write_through_targets(vec![c, b, u32::MAX]), vec![c, b]);
    refused(core.write_through_nodes(&mut io, &[c, c]));
    assert_eq!(core.write_through_nodes(&mut io, &[c]).unwrap(), 1);
    core.poll_copies(&mut io);
    assert!(core.node(c).unwrap().clean);
    refused(core.evict_clean_node(a)); // dirty
    core.evict_clean_node(c).unwrap();
    assert_eq!(core.node(c).unwrap().residency, Residency::Host);
    assert_eq!(core.stats().instant_evictions, 1);
    check(&core, &mut io);
}
