//! Turns memory pressure and the policy's ranking into moves, and tracks the moves in flight.
//! Nodes leave in plan order (children first, see `plan`) and only host nodes under a
//! GPU-side parent come back, so a GPU-side block always has its parent (and adapter) on the
//! GPU side. A GPU copy is freed only after its host copy completed, and a host copy only after
//! the GPU copy it fed completed.
use super::core::{CacheCore, Flight};
use super::events::EventKind;
use super::plan::Tier;
use super::policy::retention_value;
#[cfg(test)]
use super::policy::PolicyKind;
use super::tree::{Kind, Residency, NONE};
use crate::backend::{Backend, BatchId, BatchState, BlockMove, Direction};
use crate::error::{Error, Result};
use std::collections::HashMap;

/// What one `step` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepReport {
    pub swapped_out: u32,
    pub swapped_in: u32,
    pub adapters_loaded: u32,
    pub pruned: u32,
    pub completed_batches: u32,
    /// Blocks copied to the host ahead of their swap-out (write-through), staying on the GPU.
    pub written_through: u32,
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
                if self.inflight.is_empty() || rounds > 64 {
                    return Err(Error::out_of_memory(format!(
                        "{need} GPU blocks needed, {} free, and every cached block is pinned or in flight",
                        self.gpu.free_count()
                    )));
                }
                self.wait_all(io);
                if !self.inflight.is_empty() {
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
            let mut outgoing = Vec::new();
            for v in victims {
                let node = self.tree.node(v);
                // A planned child may be on its way to the host in this pass: its parent then
                // leaves in the same batch, or not before the copy completes.
                let (kind, slot, waits_for_child) = (node.kind, node.adapter, node.gpu_children > 0);
                if kind == Kind::Adapter {
                    if !waits_for_child {
                        self.evict_adapter(slot);
                    }
                } else if self.is_clean(v) {
                    if !waits_for_child {
                        self.evict_clean(v);
                    }
                } else if to_host && self.host_slot_available(outgoing.len(), now) {
                    outgoing.push(v);
                } else if waits_for_child {
                    continue;
                } else if self.tree.node(v).children == 0 {
                    self.delete_node(v, EventKind::Removed);
                    self.stats.dropped_blocks += 1;
                } else {
                    // A GPU leaf with host children and no room on the host: drop its host
                    // subtree first, then the node itself.
                    self.drop_subtree(v);
                }
            }
            self.swap_out_and_wait(io, &outgoing)?;
        }
        Ok(())
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
                if self.inflight.is_empty() {
                    break;
                }
                self.wait_all(io);
                continue;
            }
            let copies = victims.iter().filter(|&&v| !self.is_clean(v)).count();
            self.prepare_host_room(copies, now);
            let mut outgoing = Vec::new();
            for v in victims {
                if self.is_clean(v) {
                    // Written through (HiCache): its host copy is complete.
                    self.evict_clean(v);
                } else if self.host_slot_available(outgoing.len(), now) {
                    outgoing.push(v);
                } else if self.tree.node(v).children == 0 {
                    self.delete_node(v, EventKind::Removed);
                    self.stats.dropped_blocks += 1;
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
                Some(c) if self.tree.node(c.id).children > 0 => {
                    // Offloaded KV below it goes with it.
                    self.drop_subtree(c.id);
                    over -= 1;
                }
                Some(c) => {
                    self.delete_node(c.id, EventKind::Removed);
                    self.stats.dropped_blocks += 1;
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
        let node = self.adapter(slot).node;
        let blocks = std::mem::take(&mut self.adapter_mut(slot).gpu_blocks);
        self.adapter_gpu_blocks -= blocks.len() as u32;
        for b in blocks {
            self.free_gpu(b);
        }
        self.tree.set_residency(node, Residency::Absent, NONE, NONE);
        self.emit(EventKind::Removed, node);
    }

    /// Deletes a GPU node and all of its (host-resident) descendants, deepest first.
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
    /// pruning one cold host leaf.
    fn host_slot_available(&mut self, reserved: usize, now: u64) -> bool {
        if self.host.free_count() as usize > reserved {
            return true;
        }
        self.prune_host(1, now) > 0 && self.host.free_count() as usize > reserved
    }

    /// Under a policy that keeps the host tier full, prunes in one pass the cold host leaves that
    /// `blocks` swap-outs will displace, so that they go out as one batch.
    fn prepare_host_room(&mut self, blocks: usize, now: u64) {
        if !self.cfg.policy.fills_host_tier() {
            return;
        }
        let free = self.host.free_count() as usize;
        if blocks > free {
            self.prune_host(blocks - free, now);
        }
    }

    /// Deletes up to `k` cold host blocks (lowest value first, whole cold chains when they are
    /// the coldest); returns how many.
    pub(crate) fn prune_host(&mut self, k: usize, now: u64) -> u32 {
        let victims = self.plan(Tier::Host, k, now);
        // Children come before their parents in a plan: each is childless when deleted.
        for &v in &victims {
            self.delete_node(v, EventKind::Removed);
        }
        self.stats.pruned_host_blocks += victims.len() as u64;
        victims.len() as u32
    }

    /// Submits one batch that copies `nodes` (GPU leaves) to the host tier. Host blocks must be
    /// available for all of them.
    pub(crate) fn swap_out(&mut self, io: &mut dyn Backend, nodes: &[u32]) -> Result<BatchId> {
        debug_assert!(nodes.iter().all(|&n| !self.is_clean(n)), "clean blocks leave without a copy");
        self.copy_to_host(io, nodes, Flight::ToHost)
    }

    /// Submits one GPU -> host batch of `nodes` into fresh host blocks; the nodes are `ToHost`
    /// (readable on the GPU) until `flight`'s completion decides where they end.
    pub(crate) fn copy_to_host(
        &mut self,
        io: &mut dyn Backend,
        nodes: &[u32],
        flight: fn(Vec<u32>) -> Flight,
    ) -> Result<BatchId> {
        let host =
            self.host.allocate_many(nodes.len()).ok_or_else(|| Error::out_of_memory("host tier is full"))?;
        let moves: Vec<BlockMove> = nodes
            .iter()
            .zip(&host)
            .map(|(&n, &h)| BlockMove { gpu_block: self.tree.node(n).gpu_block, host_block: h })
            .collect();
        let batch = match io.submit_moves(Direction::GpuToHost, &moves) {
            Ok(b) => b,
            Err(e) => {
                for h in host {
                    self.free_host(h);
                }
                self.stats.failed_batches += 1;
                return Err(e);
            }
        };
        for (&n, &h) in nodes.iter().zip(&host) {
            let g = self.tree.node(n).gpu_block;
            self.tree.set_residency(n, Residency::ToHost, g, h);
        }
        self.inflight.insert(batch, flight(nodes.to_vec()));
        Ok(batch)
    }

    /// Submits one batch that copies host `nodes` back to the GPU, parents before children.
    /// Free GPU blocks must be available.
    pub(crate) fn swap_in(&mut self, io: &mut dyn Backend, nodes: &[u32]) -> Result<BatchId> {
        let gpu =
            self.gpu.allocate_many(nodes.len()).ok_or_else(|| Error::out_of_memory("GPU tier is full"))?;
        let moves: Vec<BlockMove> = nodes
            .iter()
            .zip(&gpu)
            .map(|(&n, &g)| BlockMove { gpu_block: g, host_block: self.tree.node(n).host_block })
            .collect();
        let groups = self.layer_groups(io);
        let batch = match io.submit_moves_grouped(Direction::HostToGpu, &moves, groups) {
            Ok(b) => b,
            Err(e) => {
                for g in gpu {
                    self.free_gpu(g);
                }
                self.stats.failed_batches += 1;
                return Err(e);
            }
        };
        for (&n, &g) in nodes.iter().zip(&gpu) {
            let h = self.tree.node(n).host_block;
            self.tree.set_residency(n, Residency::ToGpu, g, h);
        }
        self.inflight.insert(batch, Flight::ToGpu(nodes.to_vec()));
        Ok(batch)
    }

    /// Uploads an adapter's registered weights into fresh GPU blocks.
    pub(crate) fn load_adapter(&mut self, io: &mut dyn Backend, slot: u32) -> Result<BatchId> {
        let n = self.adapter(slot).blocks_needed as usize;
        let blocks = self.gpu.allocate_many(n).ok_or_else(|| Error::out_of_memory("GPU tier is full"))?;
        let submitted = {
            let a = self.adapter(slot);
            io.submit_upload(&a.weights, &blocks)
        };
        let batch = match submitted {
            Ok(b) => b,
            Err(e) => {
                for b in blocks {
                    self.free_gpu(b);
                }
                self.stats.failed_batches += 1;
                return Err(e);
            }
        };
        self.adapter_gpu_blocks += n as u32;
        self.stats.adapter_loads += 1;
        self.stats.bytes_to_gpu += self.adapter(slot).weights.len() as u64;
        let node = self.adapter(slot).node;
        self.adapter_mut(slot).gpu_blocks = blocks;
        self.tree.set_residency(node, Residency::ToGpu, NONE, NONE);
        self.inflight.insert(batch, Flight::Upload(slot));
        Ok(batch)
    }

    /// Waits for every batch in flight (used when nothing else can free memory).
    pub(crate) fn wait_all(&mut self, io: &mut dyn Backend) {
        let mut ids: Vec<BatchId> = self.inflight.keys().copied().collect();
        ids.sort_unstable();
        for b in ids {
            io.wait(b, self.cfg.swap_wait_us);
        }
        self.poll_inflight(io);
    }

    /// Finishes every batch the backend reports complete or failed, in submission order.
    pub(crate) fn poll_inflight(&mut self, io: &mut dyn Backend) -> u32 {
        if self.inflight.is_empty() {
            return 0;
        }
        let mut ids: Vec<BatchId> = self.inflight.keys().copied().collect();
        ids.sort_unstable();
        let mut done = 0;
        for b in ids {
            match io.poll(b) {
                BatchState::Pending => continue,
                // A swap-in is accepted only after its parents' copies: were a parent's copy
                // to fail later, a GPU block would sit under a parent that is not there.
                BatchState::Done if self.waits_for_parent(b) => continue,
                BatchState::Done => self.finish_batch(b, None),
                BatchState::Failed(why) => self.finish_batch(b, Some(why)),
            }
            io.retire(b);
            done += 1;
        }
        done
    }

    /// Whether a swap-in batch carries a node whose parent is still on its way to the GPU in
    /// another batch.
    fn waits_for_parent(&self, batch: BatchId) -> bool {
        match self.inflight.get(&batch) {
            Some(Flight::ToGpu(nodes)) => nodes.iter().any(|&n| {
                let p = self.tree.node(n).parent;
                self.tree.node(p).residency == Residency::ToGpu && !nodes.contains(&p)
            }),
            _ => false,
        }
    }

    /// After a copy to the GPU failed, nodes below it that other batches are still copying
    /// to the GPU go back to their host copy; their GPU blocks stay reserved until those
    /// batches finish writing them.
    fn strand_orphans(&mut self) {
        loop {
            let mut stranded: Vec<(BatchId, u32)> = Vec::new();
            for (&b, f) in &self.inflight {
                if let Flight::ToGpu(nodes) = f {
                    for &n in nodes {
                        let node = self.tree.node(n);
                        if node.residency == Residency::ToGpu
                            && !self.tree.node(node.parent).residency.gpu_side()
                        {
                            stranded.push((b, n));
                        }
                    }
                }
            }
            if stranded.is_empty() {
                return;
            }
            for (b, n) in stranded {
                let node = self.tree.node(n).clone();
                self.tree.set_residency(n, Residency::Host, NONE, node.host_block);
                self.orphans.entry(b).or_default().push(node.gpu_block);
                if let Some(Flight::ToGpu(nodes)) = self.inflight.get_mut(&b) {
                    nodes.retain(|&x| x != n);
                }
            }
        }
    }

    fn finish_batch(&mut self, batch: BatchId, failure: Option<String>) {
        let flight = self.inflight.remove(&batch).expect("batch in flight");
        if failure.is_some() {
            self.stats.failed_batches += 1;
        }
        let bb = self.block_bytes;
        match flight {
            Flight::ToHost(nodes) => {
                for n in nodes {
                    let node = self.tree.node(n).clone();
                    let keep_on_gpu = failure.is_some() || node.pins > 0 || node.gpu_children > 0;
                    if keep_on_gpu {
                        // Failed, or wanted again meanwhile: the GPU copy stays authoritative.
                        self.tree.set_residency(n, Residency::Gpu, node.gpu_block, NONE);
                        self.free_host(node.host_block);
                    } else {
                        self.tree.set_residency(n, Residency::Host, NONE, node.host_block);
                        self.free_gpu(node.gpu_block);
                        self.stats.swap_out_blocks += 1;
                        self.stats.bytes_to_host += bb;
                        self.emit(EventKind::ToHost, n);
                    }
                }
            }
            Flight::ToGpu(nodes) => {
                // Children before parents on failure, so a parent never leaves a GPU-side child.
                let order: Vec<u32> =
                    if failure.is_some() { nodes.iter().rev().copied().collect() } else { nodes };
                for n in order {
                    let node = self.tree.node(n).clone();
                    if failure.is_some() {
                        self.tree.set_residency(n, Residency::Host, NONE, node.host_block);
                        self.free_gpu(node.gpu_block);
                    } else {
                        self.tree.set_residency(n, Residency::Gpu, node.gpu_block, NONE);
                        self.free_host(node.host_block);
                        self.stats.swap_in_blocks += 1;
                        self.stats.bytes_to_gpu += bb;
                        self.emit(EventKind::ToGpu, n);
                    }
                }
            }
            Flight::Clean(nodes) => self.finish_clean(nodes, failure.is_some()),
            Flight::Upload(slot) => {
                if self.adapters.get(slot as usize).is_some_and(Option::is_some) {
                    let node = self.adapter(slot).node;
                    if failure.is_some() {
                        let blocks = std::mem::take(&mut self.adapter_mut(slot).gpu_blocks);
                        self.adapter_gpu_blocks -= blocks.len() as u32;
                        for b in blocks {
                            self.free_gpu(b);
                        }
                        self.tree.set_residency(node, Residency::Absent, NONE, NONE);
                    } else {
                        self.tree.set_residency(node, Residency::Gpu, NONE, NONE);
                        self.emit(EventKind::ToGpu, node);
                    }
                }
            }
        }
        if failure.is_some() {
            self.strand_orphans();
        }
        for b in self.orphans.remove(&batch).unwrap_or_default() {
            self.free_gpu(b);
        }
        if let Some(slots) = self.waiters.remove(&batch) {
            for s in slots {
                let mut unpin = Vec::new();
                if let Some(Some(r)) = self.requests.get_mut(s as usize) {
                    r.waits.remove(&batch);
                    if let Some(why) = &failure {
                        if r.failure.is_none() {
                            r.failure = Some(format!("a copy this request needs failed: {why}"));
                            // The request can only be aborted now: its pins go at once, so a
                            // node that went back to the host tier is never left pinned there.
                            unpin = std::mem::take(&mut r.pinned);
                        }
                    }
                }
                let now = self.last_now;
                for n in unpin.into_iter().rev() {
                    self.tree.unpin(n, now);
                }
            }
        }
    }

    /// One scheduler iteration: finish completed copies, swap out above the high watermark,
    /// prefetch below the idle mark when the engine is not prefill-bound, prune the host tier.
    pub fn step(
        &mut self,
        io: &mut dyn Backend,
        now: u64,
        batch_size: u32,
        prefill_bound: bool,
    ) -> Result<StepReport> {
        let now = self.clock(now);
        self.load.record_batch(batch_size, now);
        self.tree.expire_hints(now);
        let mut report = StepReport { completed_batches: self.poll_inflight(io), ..Default::default() };
        if !self.cfg.policy.uses_host_tier() {
            return Ok(report);
        }
        let cap = self.gpu.capacity() as f64;
        let used = self.gpu.used_count() as f64;
        if used > self.cfg.swap_out_high * cap {
            let target =
                ((used - self.cfg.swap_out_low * cap).ceil() as usize).min(self.host.capacity() as usize);
            report.swapped_out = self.swap_out_some(io, target, now)?;
        } else if used < self.cfg.swap_in_idle * cap
            && !prefill_bound
            && (self.last_prefetch.is_none()
                || now.saturating_sub(self.last_prefetch.unwrap_or(0)) >= self.cfg.prefetch_interval_us)
        {
            // Finding host roots scans the tree, so it runs at most once per interval.
            self.last_prefetch = Some(now);
            let budget = (self.cfg.swap_in_target * cap - used).floor().max(0.0) as usize;
            let (kv, adapters) = self.prefetch(io, budget, now)?;
            report.swapped_in = kv;
            report.adapters_loaded = adapters;
        }
        let host_cap = self.host.capacity() as f64;
        if host_cap > 0.0
            && !self.cfg.policy.fills_host_tier()
            && self.host.used_count() as f64 > self.cfg.host_high * host_cap
        {
            let excess = (self.host.used_count() as f64 - self.cfg.host_low * host_cap).ceil() as usize;
            report.pruned = self.prune_host(excess, now);
        }
        report.written_through = self.write_through(io, now)?;
        Ok(report)
    }

    /// Swaps out up to `blocks` blocks' worth of the plan (adapters are freed, their host copy
    /// being the registered one; KV blocks not worth a host copy are dropped).
    fn swap_out_some(&mut self, io: &mut dyn Backend, blocks: usize, now: u64) -> Result<u32> {
        let victims = self.plan(Tier::Gpu, blocks, now);
        let to_host = self.host_copy_pays();
        if to_host {
            let kv =
                victims.iter().filter(|&&v| self.tree.node(v).kind == Kind::Kv && !self.is_clean(v)).count();
            self.prepare_host_room(kv.min(blocks), now);
        }
        let mut outgoing = Vec::new();
        let mut freed = 0usize;
        let mut host_full = false;
        for v in victims {
            if freed >= blocks {
                break;
            }
            let node = self.tree.node(v);
            let (kind, slot, waits_for_child) = (node.kind, node.adapter, node.gpu_children > 0);
            if kind == Kind::Adapter {
                // Its KV may still be on the way out in this pass: it goes in a later one.
                if !waits_for_child {
                    freed += self.adapter(slot).blocks_needed as usize;
                    self.evict_adapter(slot);
                }
            } else if self.is_clean(v) {
                // Its host copy is complete: it leaves without one, unless a child is still
                // on its way out.
                if !waits_for_child {
                    self.evict_clean(v);
                    freed += 1;
                }
            } else if host_full {
                continue;
            } else if !to_host {
                if self.tree.node(v).children == 0 {
                    self.delete_node(v, EventKind::Removed);
                    self.stats.dropped_blocks += 1;
                } else {
                    self.drop_subtree(v);
                }
                freed += 1;
            } else if self.host_slot_available(outgoing.len(), now) {
                // Reserve the slot now so the next availability check sees it taken.
                outgoing.push(v);
                freed += 1;
                if self.host.free_count() as usize <= outgoing.len() {
                    let batch_now = std::mem::take(&mut outgoing);
                    self.swap_out(io, &batch_now)?;
                }
            } else {
                // The host tier is full of blocks that may not be pruned: only clean blocks
                // can still go.
                host_full = true;
            }
        }
        if !outgoing.is_empty() {
            self.swap_out(io, &outgoing)?;
        }
        Ok(freed as u32)
    }

    /// Prefetches host subtree roots and recently popular adapters, highest value first, within
    /// `budget` GPU blocks. Returns (KV blocks, adapters) started.
    fn prefetch(&mut self, io: &mut dyn Backend, budget: usize, now: u64) -> Result<(u32, u32)> {
        if budget == 0 {
            return Ok((0, 0));
        }
        let policy = self.cfg.policy;
        let ctx = self.rank_ctx(now);
        let mut roots: Vec<(f64, u32)> = Vec::new();
        for id in self.tree.live_ids() {
            let n = self.tree.node(id);
            let candidate = match n.kind {
                Kind::Kv => {
                    n.residency == Residency::Host && self.tree.node(n.parent).residency == Residency::Gpu
                }
                Kind::Adapter => n.residency == Residency::Absent && self.load.probability(n.adapter) > 0.0,
                _ => false,
            };
            if candidate {
                let value = if policy.uses_cost_model() {
                    retention_value(policy, n, self.node_blocks(id), false, &ctx)
                } else {
                    n.last_use as f64
                };
                roots.push((value, id));
            }
        }
        roots.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let mut left = budget;
        let mut kv = Vec::new();
        let mut adapters = 0;
        for (_, id) in roots {
            let blocks = self.node_blocks(id) as usize;
            if blocks > left || self.gpu.free_count() as usize <= kv.len() + blocks {
                continue;
            }
            if self.tree.node(id).kind == Kind::Adapter {
                self.load_adapter(io, self.tree.node(id).adapter)?;
                adapters += 1;
            } else {
                kv.push(id);
            }
            left -= blocks;
        }
        let n = kv.len() as u32;
        if !kv.is_empty() {
            self.swap_in(io, &kv)?;
        }
        Ok((n, adapters))
    }
}

#[cfg(test)]
#[path = "swapper_tests.rs"]
mod tests;
