//! Tests of the tree: node size, chain keys, candidate sets.
use super::*;

#[test]
fn node_stays_small() {
    assert!(std::mem::size_of::<Node>() <= 64, "Node is {} bytes", std::mem::size_of::<Node>());
}

#[test]
fn chain_keys_depend_on_everything() {
    let t = Tree::new((1, 2), CandidateOrder::LastUse);
    let key = |tree: &Tree, adapter: u64, ns: u64, tokens: &[u32]| {
        let mut h = tree.prefix_hasher(tree.chain_root(adapter, ns));
        h.extend(tokens);
        h.key()
    };
    let r = t.chain_root(7, 0);
    assert_ne!(r, t.chain_root(8, 0), "adapter id");
    assert_ne!(r, t.chain_root(7, 1), "namespace");
    let a = key(&t, 7, 0, &[1, 2, 3, 4]);
    assert_ne!(a, key(&t, 7, 0, &[1, 2, 3, 5]), "tokens");
    assert_ne!(a, key(&t, 7, 1, &[1, 2, 3, 4]), "namespace of the prefix");
    assert_ne!(a, key(&t, 8, 0, &[1, 2, 3, 4]), "adapter of the prefix");
    assert_ne!(a, key(&Tree::new((1, 3), CandidateOrder::LastUse), 7, 0, &[1, 2, 3, 4]), "hash key");
    assert_eq!(a, key(&t, 7, 0, &[1, 2, 3, 4]), "deterministic");
}

#[test]
fn leaves_follow_residency() {
    let mut t = Tree::new((0, 0), CandidateOrder::LastUse);
    let a = t.add_adapter(0, 1, 0);
    t.set_residency(a, Residency::Gpu, NONE, NONE);
    let k1 = t.add_kv(a, 10, 0, 1, 0);
    let k2 = t.add_kv(k1, 11, 1, 2, 0);
    assert!(t.gpu_leaves().contains(&t.candidate(k2)));
    assert!(!t.gpu_leaves().contains(&t.candidate(k1)));
    t.set_residency(k2, Residency::Host, NONE, 0);
    assert!(t.gpu_leaves().contains(&t.candidate(k1)));
    assert!(t.host_leaves().contains(&t.candidate(k2)));
    t.check(false).unwrap();
    t.remove(k2);
    t.check(false).unwrap();
    assert_eq!(t.lookup(11), None);
    assert_eq!(t.lookup(10), Some(k1));
}
