//! The dependency tree: a root, one node per adapter, and under each adapter a prefix tree of KV
//! blocks. A KV node's key is a keyed 128-bit SipHash chained over (adapter, namespace, every
//! token of its prefix), so equal keys mean equal prefixes except with probability ~n^2 / 2^128
//! for an adversary who does not know the key; tokens are not stored.
//!
//! Residency rule (the invariant the swapper keeps): a node that holds or is receiving a GPU
//! block has a parent that holds or is receiving one too. Only GPU *leaves* (no child on the
//! GPU side) may leave the GPU, and only host nodes whose parent is GPU-side may come back.
use super::index::{prefetch, PrefixIndex};
use super::keyhash::PrefixHasher;
use siphasher::sip128::{Hasher128, SipHasher13};
use std::collections::{BTreeSet, HashMap};
use std::hash::Hasher;

pub use super::ids::NONE;
pub use sets::{Candidate, CandidateOrder};
use sets::{IN_GPU_LEAVES, IN_HINTED_GPU_LEAVES, IN_HINTED_HOST_LEAVES, IN_HOST_LEAVES};
pub const ROOT: u32 = 0;

/// Where a node's data lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Residency {
    /// No copy anywhere (the root, or an adapter whose weights are only in its registered copy).
    Absent,
    Gpu,
    Host,
    /// Being copied GPU -> host; the GPU copy stays valid and readable until completion.
    ToHost,
    /// Being copied host -> GPU (or an adapter upload); not readable until completion.
    ToGpu,
}

impl Residency {
    /// Holds or is receiving a GPU block.
    pub fn gpu_side(self) -> bool {
        matches!(self, Residency::Gpu | Residency::ToHost | Residency::ToGpu)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Kind {
    Root,
    Adapter,
    Kv,
    /// A recycled slot.
    Vacant,
}

/// One tree node. 64 bytes; the prefix index adds an 8-byte slot per node, at most 7/8 full.
#[derive(Debug, Clone)]
pub struct Node {
    pub key: u128,
    pub last_use: u64,
    pub parent: u32,
    /// Adapter slot this node belongs to (its own slot for an adapter node).
    pub adapter: u32,
    pub gpu_block: u32,
    pub host_block: u32,
    pub pins: u32,
    pub visits: u32,
    /// Children on the GPU side.
    pub gpu_children: u32,
    pub children: u32,
    pub residency: Residency,
    pub kind: Kind,
    /// Which candidate set holds the node (IN_GPU_LEAVES / IN_HOST_LEAVES, or their hinted
    /// twins), so that pinning an interior node costs no set operation.
    pub listed: u8,
    /// Holds a retention hint (see `Hint`): listed in the hinted sets instead of the others.
    pub hinted: bool,
    /// The age bin at which the node last left the GPU, counted then as an end of its
    /// lifetime there (see `reuse`), or `NO_BIN`; a later use turns that end into a reuse.
    pub left_gpu: u8,
}

/// `Node::left_gpu` of a node that has not left the GPU since its last use.
pub const NO_BIN: u8 = u8::MAX;

impl Node {
    /// A node without blocks, pins, visits or children, listed nowhere yet.
    fn new(kind: Kind, key: u128, parent: u32, adapter: u32, residency: Residency, now: u64) -> Node {
        Node {
            key,
            last_use: now,
            parent,
            adapter,
            gpu_block: NONE,
            host_block: NONE,
            pins: 0,
            visits: 0,
            gpu_children: 0,
            children: 0,
            residency,
            kind,
            listed: 0,
            hinted: false,
            left_gpu: NO_BIN,
        }
    }
}

/// A retention hint on a KV node: until `expires` (engine time) the node leaves its tier only
/// after every unhinted candidate, lowest `priority` first; or, at priority `NO_REUSE`, before
/// every other candidate, without a host copy (see `CacheCore::expect_no_reuse`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hint {
    pub priority: f64,
    pub expires: u64,
}

/// The priority of a block the engine expects never to be read again: the lowest there is. Such
/// a mark never expires and never merges with a real hint (see `Tree::set_hint`).
pub const NO_REUSE: f64 = f64::NEG_INFINITY;

/// KV gauges kept in step with every residency change, so reading them costs nothing under the
/// cache's lock however large the tree.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KvCounts {
    /// KV nodes holding or receiving a GPU block.
    pub gpu: u64,
    /// KV nodes whose only copy is on the host tier.
    pub host: u64,
    /// GPU-side KV nodes whose adapter is not GPU-side (only the uncoupled vLLM baseline).
    pub invalid: u64,
}

/// The tree arena, the prefix index and the candidate sets.
pub struct Tree {
    nodes: Vec<Node>,
    vacant: Vec<u32>,
    index: PrefixIndex,
    hash_key: (u64, u64),
    /// GPU nodes that may leave the GPU: resident, unpinned, no GPU-side child.
    gpu_leaves: BTreeSet<Candidate>,
    /// Host nodes with no children at all: the only ones host pruning may delete.
    host_leaves: BTreeSet<Candidate>,
    order: CandidateOrder,
    counts: KvCounts,
    /// Per adapter slot: its node, and its GPU-side KV nodes (to update `counts.invalid` when
    /// the adapter itself moves).
    adapter_nodes: Vec<u32>,
    gpu_kv_per_adapter: Vec<u64>,
    /// Retention hints by node, their expiry order, and the hinted nodes that would otherwise
    /// be in `gpu_leaves` / `host_leaves` (few: about one per hinted prefix).
    hints: HashMap<u32, Hint>,
    hint_expiry: BTreeSet<(u64, u32)>,
    hinted_gpu_leaves: BTreeSet<u32>,
    hinted_host_leaves: BTreeSet<u32>,
    /// How many of `hints` are `NO_REUSE` marks.
    no_reuse_marks: usize,
}

impl Tree {
    pub fn new(hash_key: (u64, u64), order: CandidateOrder) -> Self {
        Tree {
            nodes: vec![Node::new(Kind::Root, 0, NONE, NONE, Residency::Gpu, 0)],
            vacant: Vec::new(),
            index: PrefixIndex::new(),
            hash_key,
            gpu_leaves: BTreeSet::new(),
            host_leaves: BTreeSet::new(),
            order,
            counts: KvCounts::default(),
            adapter_nodes: Vec::new(),
            gpu_kv_per_adapter: Vec::new(),
            hints: HashMap::new(),
            hint_expiry: BTreeSet::new(),
            hinted_gpu_leaves: BTreeSet::new(),
            hinted_host_leaves: BTreeSet::new(),
            no_reuse_marks: 0,
        }
    }

    pub fn kv_counts(&self) -> KvCounts {
        self.counts
    }

    fn adapter_gpu_side(&self, slot: u32) -> bool {
        let node = self.adapter_nodes[slot as usize];
        node != NONE && self.nodes[node as usize].residency.gpu_side()
    }

    /// Updates `counts` for node `id` going from `before` to `after` (Absent for a node being
    /// created or deleted).
    fn count_move(&mut self, id: u32, before: Residency, after: Residency) {
        let n = &self.nodes[id as usize];
        let (kind, slot) = (n.kind, n.adapter);
        match kind {
            Kind::Kv => {
                let (was, is) = (before.gpu_side(), after.gpu_side());
                if was != is {
                    let invalid = !self.adapter_gpu_side(slot);
                    let per = &mut self.gpu_kv_per_adapter[slot as usize];
                    if is {
                        *per += 1;
                        self.counts.gpu += 1;
                        self.counts.invalid += invalid as u64;
                    } else {
                        *per -= 1;
                        self.counts.gpu -= 1;
                        self.counts.invalid -= invalid as u64;
                    }
                }
                self.counts.host += (after == Residency::Host) as u64;
                self.counts.host -= (before == Residency::Host) as u64;
            }
            Kind::Adapter if before.gpu_side() != after.gpu_side() => {
                let kv = self.gpu_kv_per_adapter[slot as usize];
                if after.gpu_side() {
                    self.counts.invalid -= kv;
                } else {
                    self.counts.invalid += kv;
                }
            }
            _ => {}
        }
    }

    pub fn node(&self, id: u32) -> &Node {
        &self.nodes[id as usize]
    }
    fn node_mut(&mut self, id: u32) -> &mut Node {
        &mut self.nodes[id as usize]
    }
    /// Slots in the arena (live + vacant), for scans.
    pub fn slots(&self) -> u32 {
        self.nodes.len() as u32
    }
    pub fn live_nodes(&self) -> usize {
        self.nodes.len() - self.vacant.len()
    }
    /// Approximate metadata bytes per live node: the node, its index entry, its share of the
    /// candidate sets.
    pub fn metadata_bytes_per_node(&self) -> f64 {
        let live = self.live_nodes().max(1) as f64;
        let node = std::mem::size_of::<Node>() as f64 * self.nodes.capacity() as f64;
        let index = (PrefixIndex::SLOT_BYTES * self.index.slot_count()) as f64;
        // A B-tree entry costs its key plus about a third of a node's overhead.
        let sets = (self.gpu_leaves.len() + self.host_leaves.len()) as f64 * 24.0;
        (node + index + sets) / live
    }

    /// The key of an adapter's namespace root: where its KV chains start.
    pub fn chain_root(&self, adapter_id: u64, namespace: u64) -> u128 {
        let mut h = SipHasher13::new_with_keys(self.hash_key.0, self.hash_key.1);
        h.write(b"libra/adapter");
        h.write_u64(adapter_id);
        h.write_u64(namespace);
        h.finish128().as_u128()
    }

    /// A running hash for prefixes under `root` (see `keyhash`): after absorbing the tokens
    /// of blocks 0..=i, its key is block i's key.
    pub fn prefix_hasher(&self, root: u128) -> PrefixHasher {
        PrefixHasher::new(self.hash_key, root)
    }

    pub fn lookup(&self, key: u128) -> Option<u32> {
        let nodes = &self.nodes;
        self.index.find(key as u64, |&id| nodes[id as usize].key == key).copied()
    }

    /// A lookup in steps whose memory accesses can be in flight for many keys together:
    /// `prefetch_slots`, then `probe` (the index slots only), then `confirm` (the node).
    /// `confirm(probe(key), key)` equals `lookup(key)`, with `NONE` for absent.
    pub fn prefetch_slots(&self, keys: &[u128]) {
        for &key in keys {
            self.index.prefetch(key as u64);
        }
    }

    /// The node the index holds under `key`'s tag (`NONE` when the key is absent), whose
    /// cache lines are then prefetched. Touches no node.
    #[inline]
    pub fn probe(&self, key: u128) -> u32 {
        let id = self.index.first_tag_match(key as u64);
        if let Some(n) = self.nodes.get(id as usize) {
            // A node may straddle two cache lines.
            let p: *const Node = n;
            prefetch(p);
            prefetch(p.cast::<u8>().wrapping_add(std::mem::size_of::<Node>() - 1));
        }
        id
    }

    /// The probed node if its key is `key`; otherwise (another key with the same tag came
    /// first on the probe path, or none) the full lookup.
    #[inline]
    pub fn confirm(&self, probed: u32, key: u128) -> u32 {
        match self.nodes.get(probed as usize) {
            Some(n) if n.key == key => probed,
            Some(_) => self.lookup(key).unwrap_or(NONE),
            None => NONE,
        }
    }

    fn alloc_node(&mut self, node: Node) -> u32 {
        if let Some(id) = self.vacant.pop() {
            self.nodes[id as usize] = node;
            id
        } else {
            if self.nodes.len() == self.nodes.capacity() {
                // Grow by a quarter, not Vec's doubling: the arena is most of the metadata,
                // and doubling would leave up to half of it unused right after a growth.
                self.nodes.reserve_exact((self.nodes.len() / 4).max(1024));
            }
            self.nodes.push(node);
            (self.nodes.len() - 1) as u32
        }
    }

    /// Adds an adapter node under the root, without GPU residency.
    pub fn add_adapter(&mut self, slot: u32, key: u128, now: u64) -> u32 {
        let id = self.alloc_node(Node::new(Kind::Adapter, key, ROOT, slot, Residency::Absent, now));
        self.node_mut(ROOT).children += 1;
        let i = slot as usize;
        if self.adapter_nodes.len() <= i {
            self.adapter_nodes.resize(i + 1, NONE);
            self.gpu_kv_per_adapter.resize(i + 1, 0);
        }
        self.adapter_nodes[i] = id;
        debug_assert_eq!(self.gpu_kv_per_adapter[i], 0, "a reused adapter slot starts empty");
        id
    }

    /// Adds a GPU-resident KV node under `parent` and indexes it, with `pins` pins already
    /// held (the committing request's), so it never enters a candidate set in between.
    pub fn add_kv(&mut self, parent: u32, key: u128, gpu_block: u32, now: u64, pins: u32) -> u32 {
        debug_assert!(self.node(parent).residency.gpu_side(), "parent must be GPU-side");
        let adapter = self.node(parent).adapter;
        let id = self.alloc_node(Node {
            gpu_block,
            pins,
            visits: pins,
            ..Node::new(Kind::Kv, key, parent, adapter, Residency::Gpu, now)
        });
        let nodes = &self.nodes;
        self.index.insert_unique(key as u64, id, |&n| nodes[n as usize].key as u64);
        self.count_move(id, Residency::Absent, Residency::Gpu);
        let p = self.node_mut(parent);
        p.children += 1;
        p.gpu_children += 1;
        self.refresh(parent);
        self.refresh(id);
        id
    }

    /// Deletes a node with no children. The caller has freed its blocks.
    pub fn remove(&mut self, id: u32) {
        let n = self.node(id).clone();
        assert!(n.children == 0 && n.kind != Kind::Root && n.kind != Kind::Vacant, "remove of a non-leaf");
        self.unlist(id);
        if n.hinted {
            self.clear_hint(id);
        }
        self.count_move(id, n.residency, Residency::Absent);
        if n.kind == Kind::Adapter {
            self.adapter_nodes[n.adapter as usize] = NONE;
        }
        if n.kind == Kind::Kv {
            let nodes = &self.nodes;
            if let Ok(entry) = self.index.find_entry(n.key as u64, |&x| nodes[x as usize].key == n.key) {
                entry.remove();
            }
        }
        let p = self.node_mut(n.parent);
        p.children -= 1;
        if n.residency.gpu_side() {
            p.gpu_children -= 1;
        }
        self.refresh(n.parent);
        let slot = self.node_mut(id);
        slot.kind = Kind::Vacant;
        slot.residency = Residency::Absent;
        slot.pins = 0;
        slot.hinted = false;
        self.vacant.push(id);
    }

    /// Changes residency and blocks, keeping the parent's GPU-child count and the candidate
    /// sets in step.
    pub fn set_residency(&mut self, id: u32, residency: Residency, gpu_block: u32, host_block: u32) {
        let old = self.node(id).residency;
        let before = old.gpu_side();
        self.unlist(id);
        self.count_move(id, old, residency);
        {
            let n = self.node_mut(id);
            n.residency = residency;
            n.gpu_block = gpu_block;
            n.host_block = host_block;
        }
        let after = residency.gpu_side();
        let parent = self.node(id).parent;
        if before != after && parent != NONE {
            let p = self.node_mut(parent);
            if after {
                p.gpu_children += 1;
            } else {
                p.gpu_children -= 1;
            }
            self.refresh(parent);
        }
        self.refresh(id);
    }

    pub fn pin(&mut self, id: u32, now: u64) {
        self.unlist(id);
        let n = self.node_mut(id);
        n.pins += 1;
        n.visits = n.visits.saturating_add(1);
        n.last_use = n.last_use.max(now);
    }

    /// Records the age bin at which `id` left the GPU (see `Node::left_gpu`).
    pub fn set_left_gpu(&mut self, id: u32, bin: u8) {
        self.node_mut(id).left_gpu = bin;
    }

    pub fn unpin(&mut self, id: u32, now: u64) {
        let n = self.node_mut(id);
        debug_assert!(n.pins > 0, "unpin of an unpinned node");
        n.pins = n.pins.saturating_sub(1);
        n.last_use = n.last_use.max(now);
        self.refresh(id);
    }

    /// Every live node id, in arena order.
    pub fn live_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.nodes.iter().enumerate().filter(|(_, n)| n.kind != Kind::Vacant).map(|(i, _)| i as u32)
    }
}

#[path = "tree_check.rs"]
mod check;
#[path = "tree_hints.rs"]
mod hints;
#[path = "tree_sets.rs"]
mod sets;
#[cfg(test)]
#[path = "tree_tests.rs"]
mod tests;
