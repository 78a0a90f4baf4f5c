//! Eviction: making room on the GPU for an allocation, a match or an upload, by freeing
//! adapters, dropping KV, evicting clean blocks or swapping out (waiting for those copies), and
//! pruning the host tier. Nodes leave in plan order (children first, see `plan`), so a
//! GPU-side block always has its parent (and adapter) on the GPU side.
use super::core::CacheCore;
use super::events::EventKind;
use super::flight::SwapOutBatch;
use super::plan::Tier;
use super::tree::{Kind, Residency};
use crate::backend::{Backend, BatchState};
use crate::error::{Error, Result};
use std::collections::{HashMap, HashSet};

/// What became of one planned victim of an eviction pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Departure {
    /// It stays this pass: a child is still on the GPU side.
    Stays,
    /// Its GPU blocks are free now (an adapter freed, a clean block evicted, a block dropped).
    Freed(usize),
    /// It joined the pass's swap-out batch, a host slot reserved for it.
    Copied,
    /// It wants a host copy and the host tier has no room for one.
    NoHostRoom,
}

/// How an eviction pass treats its victims.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Departing<'a> {
    /// Whether dirty KV blocks go to the host tier (else they are dropped).
    pub to_host: bool,
    /// Whether the host may still have room this pass (false once a copy found none).
    pub host_room: bool,
    /// Whether a block that finds no host room is dropped (the allocation path) or stays.
    pub drop_without_room: bool,
    /// The victims after this one: their clean copies are not given up for this one's room.
    pub plan_rest: &'a [u32],
}

impl CacheCore {
    /// Makes `need` GPU blocks free (of which `adapter_need` for an adapter, which the vLLM
    /// baseline counts against its adapter region), by dropping, freeing or swapping out
    /// unpinned GPU leaves.
    pub(crate) fn make_room(
        &mut self,
        io: &mut dyn Backend,
        need: usize,
        adapter_need: u32,
        now: u64,
    ) -> Result<()> {
        if self.cfg.policy.split_regions() {
            return self.make_room_split(io, need, adapter_need, now);
        }
        let mut rounds = 0;
        while (self.gpu.free_count() as usize) < need {
            rounds += 1;
            let short = need - self.gpu.free_count() as usize;
            let victims = self.plan(Tier::Gpu, short, now);
            if victims.is_empty() {
                if !self.freeing_copies_in_flight() || rounds > 64 {
                    return Err(Error::out_of_memory(format!(
                        "{need} GPU blocks needed, {} free, and every cached block is pinned or in flight",
                        self.gpu.free_count()
                    )));
                }
                self.wait_copies_out(io);
                if self.freeing_copies_in_flight() {
                    // Copies still running after `swap_wait_us` may free or unpin blocks: the
                    // caller retries later rather than being told the tier is exhausted.
                    return Err(Error::busy(
                        "every unpinned GPU block is in flight; retry after the copies complete",
                    ));
                }
                continue;
            }
            let to_host = self.cfg.policy.uses_host_tier() && self.host_copy_pays();
            if to_host {
                let kv = victims
                    .iter()
                    .filter(|&&v| self.tree.node(v).kind == Kind::Kv && !self.is_clean(v))
                    .count();
                self.prepare_host_room(kv, now);
            }
            let mut outgoing = SwapOutBatch::default();
            for (i, &v) in victims.iter().enumerate() {
                // On the allocation path a block without host room goes, with any host
                // subtree below it; the loop comes back for what stayed.
                let how = Departing {
                    to_host,
                    host_room: true,
                    drop_without_room: true,
                    plan_rest: &victims[i + 1..],
                };
                self.depart(v, &mut outgoing, how, now);
            }
            self.swap_out_and_wait(io, outgoing.nodes())?;
        }
        Ok(())
    }

    /// Carries out how planned victim `v` leaves the GPU in an eviction pass (see `Departure`).
    /// Victims come in plan order, children first: a node whose GPU child is still there, or
    /// on its way out in this pass, stays until that copy completes (or joins `outgoing`
    /// behind it).
    pub(crate) fn depart(
        &mut self,
        v: u32,
        outgoing: &mut SwapOutBatch,
        how: Departing,
        now: u64,
    ) -> Departure {
        let node = self.tree.node(v);
        let (kind, slot, waits_for_child) = (node.kind, node.adapter, node.gpu_children > 0);
        let (gpu_children, parent) = (node.gpu_children, node.parent);
        if kind == Kind::Adapter {
            if waits_for_child {
                return Departure::Stays;
            }
            let blocks = self.adapter(slot).blocks_needed as usize;
            self.evict_adapter(slot);
            return Departure::Freed(blocks);
        }
        if self.is_clean(v) {
            // Its host copy is complete: it leaves without one.
            if waits_for_child {
                return Departure::Stays;
            }
            self.evict_clean(v);
            return Departure::Freed(1);
        }
        if !how.to_host || self.unwanted(v) {
            // Not worth a host copy, or nobody will read it again.
            if waits_for_child {
                return Departure::Stays;
            }
            self.drop_subtree(v);
            return Departure::Freed(1);
        }
        if !how.host_room {
            return Departure::NoHostRoom;
        }
        if !outgoing.may_take(v, gpu_children) {
            // A child stays on the GPU this pass (a clean one still waiting for its own
            // child): so does this node.
            return Departure::Stays;
        }
        if self.host_slot_available(outgoing.len(), now, how.plan_rest) {
            // Reserve the slot now so the next availability check sees it taken.
            outgoing.push(v, parent);
            return Departure::Copied;
        }
        if how.drop_without_room && !waits_for_child {
            self.drop_subtree(v);
            return Departure::Freed(1);
        }
        Departure::NoHostRoom
    }

    /// Copies `nodes` to the host and waits (up to `swap_wait_us`) for their GPU blocks.
    fn swap_out_and_wait(&mut self, io: &mut dyn Backend, nodes: &[u32]) -> Result<()> {
        if nodes.is_empty() {
            return Ok(());
        }
        let batch = self.swap_out(io, nodes)?;
        if io.wait(batch, self.cfg.swap_wait_us) == BatchState::Pending {
            return Err(Error::busy(
                "swap-outs that would free GPU blocks are still in flight; retry after they complete",
            ));
        }
        self.poll_inflight(io);
        Ok(())
    }

    /// vLLM's static split: adapters and KV each evict by LRU inside their own region, and an
    /// adapter leaves without regard to the KV computed under it.
    fn make_room_split(
        &mut self,
        io: &mut dyn Backend,
        need: usize,
        adapter_need: u32,
        now: u64,
    ) -> Result<()> {
        let kv_need = need - adapter_need as usize;
        while self.adapter_gpu_blocks + adapter_need > self.adapter_block_limit() {
            let victim = self
                .adapters
                .iter()
                .flatten()
                .filter(|a| {
                    let n = self.tree.node(a.node);
                    n.residency == Residency::Gpu && n.pins == 0
                })
                .min_by_key(|a| (self.tree.node(a.node).last_use, a.node))
                .map(|a| self.tree.node(a.node).adapter);
            match victim {
                Some(slot) => self.evict_adapter(slot),
                None => return Err(Error::out_of_memory("the adapter region is full of adapters in use")),
            }
        }
        let kv_over = |c: &Self| {
            let kv_used = c.gpu.used_count() - c.adapter_gpu_blocks;
            (kv_used as usize + kv_need).saturating_sub(c.kv_block_limit() as usize)
        };
        // The offloading connector stores the KV region's LRU victims in its host tier.
        let mut rounds = 0;
        while self.cfg.policy.uses_host_tier() && self.host_copy_pays() && kv_over(self) > 0 && rounds < 64 {
            rounds += 1;
            let over = kv_over(self);
            let victims: Vec<u32> =
                self.tree.gpu_leaves().iter().filter(|c| !c.adapter).take(over).map(|c| c.id).collect();
            if victims.is_empty() {
                if !self.freeing_copies_in_flight() {
                    break;
                }
                self.wait_copies_out(io);
                continue;
            }
            let copies = victims.iter().filter(|&&v| !self.is_clean(v)).count();
            self.prepare_host_room(copies, now);
            let mut outgoing = Vec::new();
            for (i, &v) in victims.iter().enumerate() {
                if self.is_clean(v) {
                    // Written through (HiCache): its host copy is complete.
                    self.evict_clean(v);
                } else if self.host_slot_available(outgoing.len(), now, &victims[i + 1..]) {
                    outgoing.push(v);
                } else {
                    self.drop_subtree(v);
                }
            }
            self.swap_out_and_wait(io, &outgoing)?;
        }
        let mut over = kv_over(self);
        while over > 0 {
            let victim = self.tree.gpu_leaves().iter().find(|c| !c.adapter).copied();
            match victim {
                Some(c) if self.is_clean(c.id) => {
                    self.evict_clean(c.id);
                    over -= 1;
                }
                Some(c) => {
                    // Offloaded KV below it goes with it.
                    self.drop_subtree(c.id);
                    over -= 1;
                }
                None => return Err(Error::out_of_memory("the KV region is full of blocks in use")),
            }
        }
        debug_assert!(self.gpu.free_count() as usize >= need);
        Ok(())
    }

    /// Frees an unpinned resident adapter's GPU blocks; its registered host copy remains.
    pub(crate) fn evict_adapter(&mut self, slot: u32) {
        self.note_left_gpu(self.adapter(slot).node);
        self.drop_adapter_blocks(slot);
        self.emit(EventKind::Removed, self.adapter(slot).node);
    }

    /// Deletes a GPU leaf and all of its (host-resident) descendants, deepest first, counting
    /// each as dropped: a leaf without children goes alone.
    pub(crate) fn drop_subtree(&mut self, top: u32) {
        // Below a GPU leaf every node is on the host only. One pass files the host nodes under
        // their parents (in arena order), then a breadth-first walk from `top` collects its
        // subtree: one scan of the tree however large the subtree, none for a plain leaf.
        let mut host_children: HashMap<u32, Vec<u32>> = HashMap::new();
        if self.tree.node(top).children > 0 {
            for id in self.tree.live_ids() {
                let n = self.tree.node(id);
                if n.residency == Residency::Host {
                    host_children.entry(n.parent).or_default().push(id);
                }
            }
        }
        let mut members = vec![top];
        let mut i = 0;
        while i < members.len() {
            if let Some(c) = host_children.remove(&members[i]) {
                members.extend(c);
            }
            i += 1;
        }
        for &n in members.iter().rev() {
            self.delete_node(n, EventKind::Removed);
            self.stats.dropped_blocks += 1;
        }
    }

    /// Whether a host block beyond the `reserved` ones already promised is free now, or after
    /// pruning one cold host leaf, or (when no host-only block may go) after giving up host
    /// copies of GPU blocks other than those of `leaving` (the rest of the caller's plan, whose
    /// clean blocks are about to leave on their copies).
    pub(crate) fn host_slot_available(&mut self, reserved: usize, now: u64, leaving: &[u32]) -> bool {
        if self.host.free_count() as usize > reserved {
            return true;
        }
        if self.prune_host(1, now) == 0 {
            self.reclaim_host_copies(1, leaving);
        }
        self.host.free_count() as usize > reserved
    }

    /// Under a policy that keeps the host tier full, prunes in one pass the cold host leaves that
    /// `blocks` swap-outs will displace, so that they go out as one batch.
    pub(crate) fn prepare_host_room(&mut self, blocks: usize, now: u64) {
        if !self.cfg.policy.fills_host_tier() {
            return;
        }
        let free = self.host.free_count() as usize;
        if blocks > free {
            self.prune_host(blocks - free, now);
        }
    }

    /// Deletes up to `k` cold host-only blocks (lowest value first, whole cold chains when they
    /// are the coldest); returns how many.
    pub(crate) fn prune_host(&mut self, k: usize, now: u64) -> u32 {
        let victims = self.plan(Tier::Host, k, now);
        // Children come before their parents in a plan: each is childless when deleted.
        for &v in &victims {
            self.delete_node(v, EventKind::Removed);
        }
        self.stats.pruned_host_blocks += victims.len() as u64;
        victims.len() as u32
    }

    /// Gives up the host copies of at least `k` clean GPU blocks not in `leaving` (fewer if
    /// there are not that many), which stay on the GPU as their only copy: nothing is lost, a later
    /// eviction copies them again. Blocks in use go first (they cannot leave before their
    /// requests end), then the most recently used, the least likely to leave soon. One scan
    /// of the tree frees a batch (at least 1/64 of the host tier), so that a full host tier
    /// does not scan the tree per swapped-out block.
    pub(crate) fn reclaim_host_copies(&mut self, k: usize, leaving: &[u32]) -> u32 {
        if self.clean_blocks == 0 {
            return 0;
        }
        let batch = k.max(self.host.capacity() as usize / 64);
        let leaving: HashSet<u32> = leaving.iter().copied().collect();
        let mut copies: Vec<(bool, std::cmp::Reverse<u64>, u32)> = self
            .tree
            .live_ids()
            .filter(|&n| self.is_clean(n) && !leaving.contains(&n))
            .map(|n| {
                let node = self.tree.node(n);
                (node.pins == 0, std::cmp::Reverse(node.last_use), n)
            })
            .collect();
        if copies.len() > batch {
            copies.select_nth_unstable(batch);
            copies.truncate(batch);
        }
        for &(_, _, n) in &copies {
            self.settle(n, Tier::Gpu);
            self.clean_blocks -= 1;
        }
        self.stats.reclaimed_host_copies += copies.len() as u64;
        copies.len() as u32
    }
}
