//! Mechanisms for placement policies written outside the crate. The product's policies
//! (`step`, allocation's `make_room`, write-through) are rankings composed of a few moves:
//! plan a chain-aware set of GPU blocks to leave, copy them to the host, free clean copies,
//! drop blocks, bring host blocks and adapters back. These methods expose those moves one by
//! one so that another ranking (a bound computed with future knowledge, an experiment) can
//! be composed from the same mechanisms without seeing the tree's fields.
//!
//! Every move checks its preconditions on the nodes it is given and refuses, with
//! `LIBRA_ERR_INVALID_ARGUMENT` naming the node, a move that would break the tree's
//! invariants (a GPU block under a host parent, a freed block still referenced, a pinned block
//! moved). Node ids are arena slots: an id read before a node was deleted may name another
//! node later, which the checks then judge by that node's own state, so a stale id can move
//! the wrong block but never corrupt the tree.
use super::core::CacheCore;
use super::events::EventKind;
use super::flight::SwapOutBatch;
use super::plan::{Scorer, Tier};
use super::tree::{Kind, Residency, NONE, ROOT};
use crate::backend::{Backend, BatchId};
use crate::error::{Error, Result};
use std::collections::HashSet;

/// What a node is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeKind {
    /// The tree's root, above every adapter.
    Root,
    /// A registered adapter, `blocks` GPU blocks when resident.
    Adapter { id: u64, blocks: u32 },
    /// One KV block, named by its prefix key (see `CacheCore::prefix_keys`).
    Kv { key: u128 },
}

/// A read-only snapshot of one tree node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeView {
    pub id: u32,
    pub kind: NodeKind,
    pub residency: Residency,
    /// The parent's id (`None` for the root).
    pub parent: Option<u32>,
    /// Held by an open request: no move takes it.
    pub pinned: bool,
    /// A KV block on the GPU that also has a complete host copy (leaves at once).
    pub clean: bool,
    /// Children holding or receiving a GPU block.
    pub gpu_children: u32,
    pub children: u32,
    /// Engine time of the last use.
    pub last_use: u64,
}

impl NodeView {
    /// GPU blocks the node occupies when resident.
    pub fn blocks(&self) -> usize {
        match self.kind {
            NodeKind::Adapter { blocks, .. } => blocks as usize,
            _ => 1,
        }
    }
}

/// Block counts of both tiers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TierBlocks {
    pub gpu_capacity: u32,
    pub gpu_free: u32,
    pub host_capacity: u32,
    pub host_free: u32,
}

impl CacheCore {
    fn live(&self, id: u32) -> Result<()> {
        if id >= self.tree.slots() || self.tree.node(id).kind == Kind::Vacant {
            return Err(Error::invalid(format!("node {id} does not exist")));
        }
        Ok(())
    }

    fn view_of(&self, id: u32) -> NodeView {
        let n = self.tree.node(id);
        let kind = match n.kind {
            Kind::Adapter => {
                let a = self.adapter(n.adapter);
                NodeKind::Adapter { id: a.id, blocks: a.blocks_needed }
            }
            Kind::Kv => NodeKind::Kv { key: n.key },
            _ => NodeKind::Root,
        };
        NodeView {
            id,
            kind,
            residency: n.residency,
            parent: (id != ROOT).then_some(n.parent),
            pinned: n.pins > 0,
            clean: self.is_clean(id),
            gpu_children: n.gpu_children,
            children: n.children,
            last_use: n.last_use,
        }
    }

    /// A live node's view, `None` for an id that names no node.
    pub fn node(&self, id: u32) -> Option<NodeView> {
        self.live(id).ok().map(|()| self.view_of(id))
    }

    /// The KV node holding prefix key `key`, if cached.
    pub fn node_by_key(&self, key: u128) -> Option<NodeView> {
        self.tree.lookup(key).map(|id| self.view_of(id))
    }

    /// Every live node, in arena order (for a policy's own scan, e.g. prefetch roots).
    pub fn nodes(&self) -> impl Iterator<Item = NodeView> + '_ {
        self.tree.live_ids().map(|id| self.view_of(id))
    }

    /// The host nodes without children: the only ones `prune_host_leaf` takes.
    pub fn host_leaves(&self) -> impl Iterator<Item = NodeView> + '_ {
        self.tree.host_leaves().iter().map(|c| self.view_of(c.id))
    }

    /// Both tiers' block counts.
    pub fn tier_blocks(&self) -> TierBlocks {
        TierBlocks {
            gpu_capacity: self.gpu.capacity(),
            gpu_free: self.gpu.free_count(),
            host_capacity: self.host.capacity(),
            host_free: self.host.free_count(),
        }
    }

    /// Advances the engine clock as every entry point does (it only moves forward) and returns
    /// the time decisions use.
    pub fn advance_clock(&mut self, now: u64) -> u64 {
        self.clock(now)
    }

    /// Records a scheduler iteration's batch size, as `step` does (the load statistics that
    /// rank adapters).
    pub fn record_batch(&mut self, batch_size: u32, now: u64) {
        self.load.record_batch(batch_size, now);
    }

    /// Finishes every copy the backend reports complete or failed; returns how many.
    pub fn poll_copies(&mut self, io: &mut dyn Backend) -> u32 {
        self.poll_inflight(io)
    }

    /// The chain-aware plan for `blocks` GPU blocks under a caller's ranking, lowest `value`
    /// first, in the order the nodes may leave: a parent follows once all its GPU children are
    /// in the plan; pinned and in-flight nodes never appear. The same walk the policies' own
    /// plans use, with the caller's value in place of theirs (every candidate is scored).
    pub fn plan_gpu_by(&self, blocks: usize, now: u64, value: &dyn Fn(&NodeView) -> f64) -> Vec<u32> {
        let by_id = |id: u32| value(&self.view_of(id));
        self.plan_with(Tier::Gpu, blocks, now, &Scorer::Given(&by_id))
    }

    /// Deletes an unpinned GPU KV node with no GPU-side child, and whatever it holds on the
    /// host (its clean copy, its host subtree), without a copy: counted as dropped.
    pub fn drop_node(&mut self, id: u32) -> Result<()> {
        self.live(id)?;
        let n = self.tree.node(id);
        if n.kind != Kind::Kv || n.residency != Residency::Gpu || n.pins > 0 || n.gpu_children > 0 {
            return Err(Error::invalid(format!(
                "node {id} cannot be dropped: only an unpinned GPU KV block without GPU children can"
            )));
        }
        self.drop_subtree(id);
        Ok(())
    }

    /// Frees a clean node's GPU block (unpinned, no GPU-side child): it stays cached on the
    /// host without a copy.
    pub fn evict_clean_node(&mut self, id: u32) -> Result<()> {
        self.live(id)?;
        let n = self.tree.node(id);
        if !self.is_clean(id) || n.pins > 0 || n.gpu_children > 0 {
            return Err(Error::invalid(format!(
                "node {id} is not an unpinned clean GPU block without GPU children"
            )));
        }
        self.evict_clean(id);
        Ok(())
    }

    /// Frees a resident adapter's GPU blocks (unpinned, no GPU-side child); its registered
    /// weights remain for a later upload.
    pub fn unload_adapter_node(&mut self, id: u32) -> Result<()> {
        self.live(id)?;
        let n = self.tree.node(id);
        if n.kind != Kind::Adapter || n.residency != Residency::Gpu || n.pins > 0 || n.gpu_children > 0 {
            return Err(Error::invalid(format!(
                "node {id} is not an unpinned resident adapter without GPU children"
            )));
        }
        self.evict_adapter(n.adapter);
        Ok(())
    }

    /// Starts uploading an absent adapter's registered weights into free GPU blocks.
    pub fn upload_adapter_node(&mut self, io: &mut dyn Backend, id: u32) -> Result<BatchId> {
        self.live(id)?;
        let n = self.tree.node(id);
        if n.kind != Kind::Adapter || n.residency != Residency::Absent {
            return Err(Error::invalid(format!("node {id} is not an adapter absent from the GPU")));
        }
        self.load_adapter(io, n.adapter)
    }

    /// Deletes an unpinned host KV node without children (a host leaf): counted as pruned.
    pub fn prune_host_leaf(&mut self, id: u32) -> Result<()> {
        self.live(id)?;
        let n = self.tree.node(id);
        if n.kind != Kind::Kv || n.residency != Residency::Host || n.children > 0 || n.pins > 0 {
            return Err(Error::invalid(format!("node {id} is not an unpinned host KV leaf")));
        }
        self.delete_node(id, EventKind::Removed);
        self.stats.pruned_host_blocks += 1;
        Ok(())
    }

    /// Gives up the host copies of at least `k` clean GPU blocks (in use first, then the most
    /// recently used), which stay on the GPU; returns how many host blocks were freed.
    pub fn give_up_host_copies(&mut self, k: usize) -> u32 {
        self.reclaim_host_copies(k, &[])
    }

    /// Submits one batch copying `ids` to the host tier, after which their GPU blocks are
    /// freed. Each must be an unpinned GPU KV block without a host copy whose GPU-side children
    /// all come earlier in `ids` (children leave first), each once; free host blocks must be there for all.
    pub fn swap_out_nodes(&mut self, io: &mut dyn Backend, ids: &[u32]) -> Result<BatchId> {
        let mut batch = SwapOutBatch::default();
        let mut seen = HashSet::new();
        for &id in ids {
            self.live(id)?;
            let n = self.tree.node(id);
            if n.kind != Kind::Kv
                || n.residency != Residency::Gpu
                || n.host_block != NONE
                || n.pins > 0
                || !batch.may_take(id, n.gpu_children)
                || !seen.insert(id)
            {
                return Err(Error::invalid(format!(
                    "node {id} cannot be swapped out: not an unpinned dirty GPU KV block whose GPU children all precede it"
                )));
            }
            batch.push(id, n.parent);
        }
        self.swap_out(io, ids)
    }

    /// Submits one batch copying host `ids` back to the GPU. Each must be a host KV block
    /// whose parent is on the GPU or earlier in `ids`; free GPU blocks must be there for all.
    pub fn swap_in_nodes(&mut self, io: &mut dyn Backend, ids: &[u32]) -> Result<BatchId> {
        let mut earlier = HashSet::new();
        for &id in ids {
            self.live(id)?;
            let n = self.tree.node(id);
            let parent_ok =
                self.tree.node(n.parent).residency == Residency::Gpu || earlier.contains(&n.parent);
            if n.kind != Kind::Kv || n.residency != Residency::Host || !parent_ok || !earlier.insert(id) {
                return Err(Error::invalid(format!(
                    "node {id} cannot be swapped in: not a host KV block under a GPU parent"
                )));
            }
        }
        self.swap_in(io, ids)
    }

    /// Whether a write-through pass is due now (the link is idle, the GPU is past the low
    /// swap-out mark, the last pass is an interval old); if so, marks the pass and returns
    /// how many blocks the next swap-out takes. The policy's own pass starts the same way.
    pub fn begin_write_through(&mut self, now: u64) -> Option<usize> {
        self.write_through_window(now)
    }

    /// The KV blocks of `plan` that are on the GPU without a host copy, at most
    /// `write_through_blocks`, in plan order: what a write-through pass may copy.
    pub fn write_through_targets(&self, plan: Vec<u32>) -> Vec<u32> {
        self.write_through_candidates(plan.into_iter().filter(|&id| self.live(id).is_ok()).collect())
    }

    /// Starts clean copies of `ids` (GPU KV blocks without a host copy, each once): they stay
    /// on the GPU and, once copied, leave at once under pressure. Free host blocks must be
    /// there for all. Returns the blocks started.
    pub fn write_through_nodes(&mut self, io: &mut dyn Backend, ids: &[u32]) -> Result<u32> {
        let mut seen = HashSet::new();
        for &id in ids {
            self.live(id)?;
            let n = self.tree.node(id);
            if n.kind != Kind::Kv || n.residency != Residency::Gpu || n.host_block != NONE || !seen.insert(id)
            {
                return Err(Error::invalid(format!(
                    "node {id} cannot be written through: not a GPU KV block without a host copy"
                )));
            }
        }
        self.write_through_start(io, ids)
    }
}

#[cfg(test)]
#[path = "mechanism_tests.rs"]
mod tests;
