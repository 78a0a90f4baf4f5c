//! Copies in flight: submitting swap-outs, swap-ins and adapter uploads, and finishing them when
//! the backend reports them done or failed. Only host nodes under a GPU-side parent come back;
//! a GPU copy is freed only after its host copy completed, and a host copy only after the GPU
//! copy it fed completed.
use super::core::CacheCore;
use super::events::EventKind;
use super::tree::{Kind, Residency, NONE};
use crate::backend::{Backend, BatchId, BatchState, BlockMove, Direction};
use crate::error::{Error, Result};

/// What a batch in flight carries.
pub(crate) enum Flight {
    ToHost(Vec<u32>),
    ToGpu(Vec<u32>),
    Upload(u32),
    /// Write-through copies: the nodes stay on the GPU and become clean.
    Clean(Vec<u32>),
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
}
