//! Copies in flight: submitting swap-outs, swap-ins and adapter uploads, and finishing them when
//! the backend reports them done or failed. Only host nodes under a GPU-side parent come back;
//! a GPU copy is freed only after its host copy completed, and a host copy only after the GPU
//! copy it fed completed.
use super::core::{CacheCore, Flight};
use super::events::EventKind;
use super::plan::Tier;
use super::tree::{Kind, Residency, NONE};
use crate::backend::{Backend, BatchId, BatchState, BlockMove, Direction};
use crate::error::{Error, Result};
use std::collections::HashMap;

/// A swap-out batch being put together. A node may join only once all its GPU-side children
/// are in (in this batch, or in a part submitted earlier in the same pass): no node leaves
/// the GPU while a child stays there. `take` hands out the part gathered so far and keeps the
/// counts, for a pass that submits as it goes.
#[derive(Debug, Default)]
pub struct SwapOutBatch {
    nodes: Vec<u32>,
    children_in: HashMap<u32, u32>,
}

impl SwapOutBatch {
    /// Whether node `id`, with `gpu_children` children on the GPU side, has all of them in.
    pub fn may_take(&self, id: u32, gpu_children: u32) -> bool {
        self.children_in.get(&id).copied().unwrap_or(0) == gpu_children
    }

    /// Adds node `id`, whose parent is `parent`.
    pub fn push(&mut self, id: u32, parent: u32) {
        self.nodes.push(id);
        *self.children_in.entry(parent).or_default() += 1;
    }

    /// Nodes gathered and not yet taken.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The nodes gathered and not yet taken, children before parents.
    pub fn nodes(&self) -> &[u32] {
        &self.nodes
    }

    /// Hands out the nodes gathered so far; what is in stays counted.
    pub fn take(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.nodes)
    }
}

impl CacheCore {
    /// The batch in flight that carries node `n`, if any.
    pub(crate) fn inflight_batch_of(&self, n: u32) -> Option<BatchId> {
        let adapter_slot = self.tree.node(n).adapter;
        let is_adapter = self.tree.node(n).kind == Kind::Adapter;
        self.inflight.iter().find_map(|(&b, f)| match f {
            Flight::ToGpu(nodes) | Flight::ToHost(nodes) | Flight::Clean(nodes) if nodes.contains(&n) => {
                Some(b)
            }
            Flight::Upload(slot) if is_adapter && *slot == adapter_slot => Some(b),
            _ => None,
        })
    }

    /// Submits one batch that copies `nodes` (GPU leaves) to the host tier. Host blocks must be
    /// available for all of them.
    pub(crate) fn swap_out(&mut self, io: &mut dyn Backend, nodes: &[u32]) -> Result<BatchId> {
        debug_assert!(nodes.iter().all(|&n| !self.is_clean(n)), "clean blocks leave without a copy");
        for &n in nodes {
            self.note_left_gpu(n);
        }
        self.copy(io, Direction::GpuToHost, nodes, Flight::ToHost)
    }

    /// Submits one batch that copies host `nodes` back to the GPU, parents before children.
    /// Free GPU blocks must be available.
    pub(crate) fn swap_in(&mut self, io: &mut dyn Backend, nodes: &[u32]) -> Result<BatchId> {
        self.copy(io, Direction::HostToGpu, nodes, Flight::ToGpu)
    }

    /// Submits one batch copying `nodes` into fresh blocks of the other tier. The nodes are
    /// `ToHost` (still readable on the GPU) or `ToGpu` (not readable yet) until the completion
    /// of `flight` decides where they end. A swap-in is submitted by layer group.
    pub(crate) fn copy(
        &mut self,
        io: &mut dyn Backend,
        direction: Direction,
        nodes: &[u32],
        flight: fn(Vec<u32>) -> Flight,
    ) -> Result<BatchId> {
        let to_gpu = direction == Direction::HostToGpu;
        let fresh = if to_gpu {
            self.gpu.allocate_many(nodes.len()).ok_or_else(|| Error::out_of_memory("GPU tier is full"))?
        } else {
            self.host.allocate_many(nodes.len()).ok_or_else(|| Error::out_of_memory("host tier is full"))?
        };
        let moves: Vec<BlockMove> = nodes
            .iter()
            .zip(&fresh)
            .map(|(&n, &b)| {
                let node = self.tree.node(n);
                if to_gpu {
                    BlockMove { gpu_block: b, host_block: node.host_block }
                } else {
                    BlockMove { gpu_block: node.gpu_block, host_block: b }
                }
            })
            .collect();
        let submitted = if to_gpu {
            let groups = self.layer_groups(io);
            io.submit_moves_grouped(direction, &moves, groups)
        } else {
            io.submit_moves(direction, &moves)
        };
        let batch = match submitted {
            Ok(b) => b,
            Err(e) => {
                for b in fresh {
                    if to_gpu {
                        self.free_gpu(b);
                    } else {
                        self.free_host(b);
                    }
                }
                self.stats.failed_batches += 1;
                return Err(e);
            }
        };
        let moving = if to_gpu { Residency::ToGpu } else { Residency::ToHost };
        for (&n, m) in nodes.iter().zip(&moves) {
            self.tree.set_residency(n, moving, m.gpu_block, m.host_block);
        }
        self.inflight.insert(batch, flight(nodes.to_vec()));
        Ok(batch)
    }

    /// Uploads an adapter's registered weights into fresh GPU blocks.
    pub(crate) fn load_adapter(&mut self, io: &mut dyn Backend, slot: u32) -> Result<BatchId> {
        let n = self.adapter(slot).blocks_needed as usize;
        let blocks = self.gpu.allocate_many(n).ok_or_else(|| Error::out_of_memory("GPU tier is full"))?;
        let groups = if self.cfg.layered_adapters { self.layer_groups(io).count() } else { 1 };
        let submitted = {
            let a = self.adapter(slot);
            if groups > 1 {
                let ends =
                    upload_group_ends(a.weights.len() as u64, io.gpu_layout().block_bytes(), n, groups);
                io.submit_upload_grouped(&a.weights, &blocks, &ends)
            } else {
                io.submit_upload(&a.weights, &blocks)
            }
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

    /// Whether a batch in flight can free or unpin a GPU block when it lands: a copy to the
    /// host does (a swap-out frees its blocks, a write-through makes them clean), a swap-in or
    /// an upload only when a node it carries is pinned by no request (an aborted one's).
    fn frees_on_landing(&self, f: &Flight) -> bool {
        match f {
            Flight::ToHost(_) | Flight::Clean(_) => true,
            Flight::ToGpu(nodes) => nodes.iter().any(|&n| self.tree.node(n).pins == 0),
            Flight::Upload(slot) => {
                self.adapters[*slot as usize].as_ref().is_some_and(|a| self.tree.node(a.node).pins == 0)
            }
        }
    }

    /// Whether a copy in flight can free or unpin a GPU block when it lands (see
    /// `frees_on_landing`). When none can, an allocation that found no victim is out of memory
    /// rather than busy; placement policies outside the crate follow the same rule.
    pub fn freeing_copies_in_flight(&self) -> bool {
        self.inflight.values().any(|f| self.frees_on_landing(f))
    }

    /// Waits (up to `swap_wait_us` each) for the copies to the host in flight, then finishes
    /// every batch done. Used when nothing else can free memory. Copies to the GPU are not
    /// waited for: most carry blocks their requests pin, so they would free nothing, and even
    /// an unpinned one lands only after every load queued before it on the link.
    pub fn wait_copies_out(&mut self, io: &mut dyn Backend) {
        let mut ids: Vec<BatchId> = self
            .inflight
            .iter()
            .filter(|(_, f)| matches!(f, Flight::ToHost(_) | Flight::Clean(_)))
            .map(|(&b, _)| b)
            .collect();
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
        match flight {
            Flight::ToHost(nodes) => self.land(Direction::GpuToHost, nodes, failure.is_some()),
            Flight::ToGpu(nodes) => self.land(Direction::HostToGpu, nodes, failure.is_some()),
            Flight::Clean(nodes) => self.finish_clean(nodes, failure.is_some()),
            Flight::Upload(slot) => {
                if self.adapters.get(slot as usize).is_some_and(Option::is_some) {
                    let node = self.adapter(slot).node;
                    if failure.is_some() {
                        self.drop_adapter_blocks(slot);
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

    /// Ends a swap of `nodes` in `direction`: each node settles in the destination tier (a
    /// swap-in keeps the host copy too), or (the copy failed, or a swap-out's node was wanted
    /// again meanwhile) back in the source tier, whose copy stays authoritative.
    fn land(&mut self, direction: Direction, nodes: Vec<u32>, failed: bool) {
        let to_gpu = direction == Direction::HostToGpu;
        let (source, destination) = if to_gpu { (Tier::Host, Tier::Gpu) } else { (Tier::Gpu, Tier::Host) };
        // Children before parents on a failed swap-in, so a parent never leaves a GPU-side child.
        let order: Vec<u32> = if failed && to_gpu { nodes.iter().rev().copied().collect() } else { nodes };
        for n in order {
            let node = self.tree.node(n);
            let wanted_on_gpu = !to_gpu && (node.pins > 0 || node.gpu_children > 0);
            if failed || wanted_on_gpu {
                self.settle(n, source);
                continue;
            }
            if to_gpu {
                // The host keeps its copy: KV never changes once committed, so the block is
                // clean and leaves the GPU again without a copy (see `writethrough`).
                let (g, h) = (self.tree.node(n).gpu_block, self.tree.node(n).host_block);
                self.tree.set_residency(n, Residency::Gpu, g, h);
                self.clean_blocks += 1;
                self.stats.swap_in_blocks += 1;
                self.stats.bytes_to_gpu += self.block_bytes;
                self.emit(EventKind::ToGpu, n);
            } else {
                self.settle(n, destination);
                self.stats.swap_out_blocks += 1;
                self.stats.bytes_to_host += self.block_bytes;
                self.emit(EventKind::ToHost, n);
            }
        }
    }

    /// Leaves node `n` resident in `tier` alone, freeing its block in the other tier.
    pub(crate) fn settle(&mut self, n: u32, tier: Tier) {
        let (g, h) = (self.tree.node(n).gpu_block, self.tree.node(n).host_block);
        match tier {
            Tier::Gpu => {
                self.tree.set_residency(n, Residency::Gpu, g, NONE);
                self.free_host(h);
            }
            Tier::Host => {
                self.tree.set_residency(n, Residency::Host, NONE, h);
                self.free_gpu(g);
            }
        }
    }
}

/// Blocks each layer group of a layered adapter upload needs: group g of `groups` holds bytes
/// up to (g + 1) x `len` / `groups`, so it ends at the block holding that byte (the last group
/// at the upload's last block).
pub(crate) fn upload_group_ends(len: u64, block_bytes: u64, blocks: usize, groups: u32) -> Vec<u32> {
    let g = groups.max(1) as u64;
    let end_of = |k: u64| ((k * len).div_ceil(g).div_ceil(block_bytes.max(1)) as usize).min(blocks) as u32;
    (1..=g).map(|k| if k == g { blocks as u32 } else { end_of(k) }).collect()
}
