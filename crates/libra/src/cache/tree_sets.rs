//! The candidate sets: the GPU nodes that may leave the GPU and the host nodes that may be
//! pruned, ordered for the swapper's plans, kept in step with every change to a node.
use super::*;

pub(super) const IN_GPU_LEAVES: u8 = 1;
pub(super) const IN_HOST_LEAVES: u8 = 2;
pub(super) const IN_HINTED_GPU_LEAVES: u8 = 4;
pub(super) const IN_HINTED_HOST_LEAVES: u8 = 8;

/// An entry of a candidate set: ordered by key, then age and id (ties broken
/// deterministically). Carries what ranking needs so a walk of the set touches no node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Candidate {
    pub key: u64,
    pub last_use: u64,
    pub id: u32,
    pub adapter: bool,
}

/// How candidate sets are ordered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum CandidateOrder {
    /// By last use: least recently used first.
    LastUse,
    /// By `ln(visits) + last_use / time_unit`. Under ELORA's Eq. 5 a block's
    /// log value is this key minus `now` minus a term in (0, ln 2], so walking the set in key
    /// order finds the lowest values exactly after a short band (see the swapper).
    Value { time_unit_us: f64 },
}

impl Tree {
    /// The node's position key in the candidate sets. Depends only on fields that do not change
    /// while the node is listed.
    pub fn order_key(&self, n: &Node) -> u64 {
        match self.order {
            CandidateOrder::LastUse => n.last_use,
            CandidateOrder::Value { time_unit_us } => {
                let key = (n.visits.max(1) as f64).ln() + n.last_use as f64 / time_unit_us;
                // Non-negative floats order like their bit patterns.
                key.max(0.0).to_bits()
            }
        }
    }

    /// The node's entry in a candidate set.
    pub fn candidate(&self, id: u32) -> Candidate {
        let n = &self.nodes[id as usize];
        Candidate { key: self.order_key(n), last_use: n.last_use, id, adapter: n.kind == Kind::Adapter }
    }

    pub fn order(&self) -> CandidateOrder {
        self.order
    }

    pub fn gpu_leaves(&self) -> &BTreeSet<Candidate> {
        &self.gpu_leaves
    }

    pub fn host_leaves(&self) -> &BTreeSet<Candidate> {
        &self.host_leaves
    }

    pub(super) fn unlist(&mut self, id: u32) {
        let listed = self.nodes[id as usize].listed;
        // Most pinned nodes are interior and unlisted: no set entry (and no logarithm) to make.
        if listed == 0 {
            return;
        }
        if listed & (IN_GPU_LEAVES | IN_HOST_LEAVES) != 0 {
            let c = self.candidate(id);
            if listed & IN_GPU_LEAVES != 0 {
                self.gpu_leaves.remove(&c);
            }
            if listed & IN_HOST_LEAVES != 0 {
                self.host_leaves.remove(&c);
            }
        }
        if listed & IN_HINTED_GPU_LEAVES != 0 {
            self.hinted_gpu_leaves.remove(&id);
        }
        if listed & IN_HINTED_HOST_LEAVES != 0 {
            self.hinted_host_leaves.remove(&id);
        }
        self.nodes[id as usize].listed = 0;
    }

    /// Re-derives the node's candidate-set membership from its state.
    pub(super) fn refresh(&mut self, id: u32) {
        let n = &self.nodes[id as usize];
        if matches!(n.kind, Kind::Root | Kind::Vacant) {
            return;
        }
        let gpu_leaf = n.residency == Residency::Gpu && n.pins == 0 && n.gpu_children == 0;
        let host_leaf = n.residency == Residency::Host && n.pins == 0 && n.children == 0;
        let mut want = if gpu_leaf { IN_GPU_LEAVES } else { 0 } | if host_leaf { IN_HOST_LEAVES } else { 0 };
        if n.hinted {
            // The hinted twins of the same bits.
            want <<= 2;
        }
        let have = n.listed;
        if want == have {
            return;
        }
        if (have | want) & (IN_HINTED_GPU_LEAVES | IN_HINTED_HOST_LEAVES) != 0 {
            // A hint moves a node between the plain and the hinted sets: start from neither.
            self.unlist(id);
            self.nodes[id as usize].listed = 0;
            if want & IN_HINTED_GPU_LEAVES != 0 {
                self.hinted_gpu_leaves.insert(id);
            }
            if want & IN_HINTED_HOST_LEAVES != 0 {
                self.hinted_host_leaves.insert(id);
            }
            if want & (IN_GPU_LEAVES | IN_HOST_LEAVES) != 0 {
                self.refresh_plain(id, 0, want);
            }
            self.nodes[id as usize].listed = want;
            return;
        }
        self.refresh_plain(id, have, want);
        self.nodes[id as usize].listed = want;
    }

    /// Moves a node between the plain candidate sets from membership `have` to `want`.
    fn refresh_plain(&mut self, id: u32, have: u8, want: u8) {
        let (gpu_leaf, host_leaf) = (want & IN_GPU_LEAVES != 0, want & IN_HOST_LEAVES != 0);
        let c = self.candidate(id);
        if (have ^ want) & IN_GPU_LEAVES != 0 {
            if gpu_leaf {
                self.gpu_leaves.insert(c);
            } else {
                self.gpu_leaves.remove(&c);
            }
        }
        if (have ^ want) & IN_HOST_LEAVES != 0 {
            if host_leaf {
                self.host_leaves.insert(c);
            } else {
                self.host_leaves.remove(&c);
            }
        }
    }
}
