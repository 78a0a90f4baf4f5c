//! The request lifecycle after a match: allocate, commit, release or abort, and readiness.
use super::config::MAX_TOKENS_PER_CALL;
use super::core::CacheCore;
use super::core::Request;
use super::events::EventKind;
use super::keyhash::PrefixHasher;
use super::request_ids::{next_generation, parse, request_id};
use super::tree::{Kind, Residency, NONE};
use crate::backend::{Backend, BatchId, BatchWaiter};
use crate::error::{Error, Result};
use std::collections::HashSet;

/// Readiness of a request's blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Pending,
    Failed(String),
}

impl CacheCore {
    pub(crate) fn request_slot(&self, request: u64) -> Result<u32> {
        let (tag, generation, slot) = parse(request);
        match (self.requests.get(slot as usize), self.request_gen.get(slot as usize)) {
            (Some(Some(_)), Some(&g)) if g == generation && tag == self.request_tag => Ok(slot),
            _ => Err(Error::not_found(format!("request {request} is not open (already released?)"))),
        }
    }

    /// Opens a request holding the pins of `pinned` (its adapter first), to go on committing
    /// below `tail_node`, once the copies in `waits` have landed. Returns its id.
    pub(crate) fn open_request(
        &mut self,
        pinned: Vec<u32>,
        tail_node: u32,
        tail_hash: PrefixHasher,
        waits: HashSet<BatchId>,
    ) -> u64 {
        let slot = match self.free_requests.pop() {
            Some(s) => s,
            None => {
                self.requests.push(None);
                self.request_gen.push(1);
                (self.requests.len() - 1) as u32
            }
        };
        for &b in &waits {
            self.waiters.entry(b).or_default().push(slot);
        }
        self.requests[slot as usize] = Some(Request {
            pinned,
            tail_node,
            tail_hash,
            fresh: Vec::new(),
            fresh_pos: 0,
            spare: Vec::new(),
            inserted: Vec::new(),
            waits,
            failure: None,
            retention: None,
            no_reuse_after: None,
        });
        self.stats.open_requests += 1;
        request_id(self.request_tag, slot, self.request_gen[slot as usize])
    }

    fn close_request(&mut self, slot: u32) -> Request {
        let req = self.requests[slot as usize].take().expect("open request");
        self.request_gen[slot as usize] = next_generation(self.request_gen[slot as usize]);
        self.free_requests.push(slot);
        self.stats.open_requests -= 1;
        for b in &req.waits {
            if let Some(w) = self.waiters.get_mut(b) {
                w.retain(|&s| s != slot);
            }
        }
        req
    }

    /// Allocates GPU blocks for `n_tokens` more tokens of a request (ceil(n / block_tokens)
    /// blocks), evicting or swapping out cached blocks when the tier is full.
    pub fn allocate(
        &mut self,
        io: &mut dyn Backend,
        request: u64,
        n_tokens: usize,
        now: u64,
    ) -> Result<Vec<u32>> {
        let now = self.clock(now);
        let slot = self.request_slot(request)?;
        if n_tokens > MAX_TOKENS_PER_CALL {
            return Err(Error::invalid(format!(
                "`n_tokens` is {n_tokens}; the limit is {MAX_TOKENS_PER_CALL}"
            )));
        }
        let n = n_tokens.div_ceil(self.block_tokens());
        if n == 0 {
            return Ok(Vec::new());
        }
        // Never satisfiable: refuse before evicting anything for it.
        if n > self.gpu.capacity() as usize {
            return Err(Error::invalid(format!(
                "`n_tokens` ({n_tokens}) needs {n} blocks, more than the GPU tier's {}",
                self.gpu.capacity()
            )));
        }
        self.poll_inflight(io);
        self.make_room(io, n, 0, now)?;
        let blocks = self.gpu.allocate_many(n).expect("make_room guarantees free blocks");
        self.req_mut(slot).fresh.extend_from_slice(&blocks);
        Ok(blocks)
    }

    /// Inserts the request's next filled blocks into the tree: `tokens` are the token ids of
    /// those blocks, a whole number of blocks. Returns the blocks now shared through the tree.
    pub fn commit(&mut self, request: u64, tokens: &[u32], now: u64) -> Result<usize> {
        let now = self.clock(now);
        let slot = self.request_slot(request)?;
        let bt = self.block_tokens();
        if tokens.len() % bt != 0 {
            return Err(Error::invalid(format!(
                "`tokens` has {} entries, not a multiple of the block size {bt}",
                tokens.len()
            )));
        }
        let n = tokens.len() / bt;
        let (available, failed) = {
            let r = self.req(slot);
            (r.fresh.len() - r.fresh_pos, r.failure.clone())
        };
        if let Some(f) = failed {
            return Err(Error::invalid(format!("request {request} failed and must be aborted: {f}")));
        }
        if !self.req(slot).waits.is_empty() {
            return Err(Error::busy(format!(
                "request {request} is not ready: wait until its adapter and prefix copies complete"
            )));
        }
        if n > available {
            return Err(Error::invalid(format!(
                "`tokens` covers {n} blocks but the request has {available} allocated, uncommitted blocks"
            )));
        }
        if !self.cfg.policy.keeps_finished_kv() {
            // S-LoRA keeps no prefix cache: blocks stay private to the request.
            let r = self.req_mut(slot);
            let moved: Vec<u32> = r.fresh[r.fresh_pos..r.fresh_pos + n].to_vec();
            r.fresh_pos += n;
            r.spare.extend(moved);
            return Ok(0);
        }
        if !self.tree.node(self.req(slot).tail_node).residency.gpu_side() {
            return Err(Error::invalid(format!("request {request}'s prefix is not on the GPU")));
        }
        // A block this commit would share may still be on its way in from the host tier for
        // another request. Blocks hung below it could outlive a failure of that copy, and its
        // block id is already in that request's hands: refuse, before changing anything, until
        // the copy finishes.
        let mut running = self.req(slot).tail_hash;
        let states: Vec<(PrefixHasher, u128)> = tokens
            .chunks_exact(bt)
            .map(|chunk| {
                running.extend(chunk);
                (running, running.key())
            })
            .collect();
        for &(_, key) in &states {
            if let Some(n) = self.tree.lookup(key) {
                if self.tree.node(n).residency == Residency::ToGpu {
                    return Err(Error::busy(format!(
                        "a block of request {request} is still being copied in for another request; retry after libra_cache_step"
                    )));
                }
            }
        }
        let mut shared = 0;
        for (hash, key) in states {
            let (parent, block) = {
                let r = self.req_mut(slot);
                let b = r.fresh[r.fresh_pos];
                r.fresh_pos += 1;
                (r.tail_node, b)
            };
            let node = match self.tree.lookup(key) {
                Some(existing) => {
                    self.pin_used(existing, now);
                    let e = self.tree.node(existing).clone();
                    if e.residency == Residency::Host {
                        // Recomputed a block the host tier had: keep the fresh GPU copy.
                        self.tree.set_residency(existing, Residency::Gpu, block, NONE);
                        self.free_host(e.host_block);
                        self.emit(EventKind::ToGpu, existing);
                    } else {
                        self.req_mut(slot).spare.push(block);
                    }
                    existing
                }
                None => {
                    let id = self.tree.add_kv(parent, key, block, now, 1);
                    self.req_mut(slot).inserted.push(id);
                    self.emit(EventKind::Stored, id);
                    shared += 1;
                    id
                }
            };

            let r = self.req_mut(slot);
            r.pinned.push(node);
            r.tail_node = node;
            r.tail_hash = hash;
        }
        Ok(shared)
    }

    /// Ends a request: unpins its blocks and frees those it did not share. Its committed
    /// blocks stay cached (except under `slora`, which keeps no finished KV).
    pub fn release(&mut self, io: &mut dyn Backend, request: u64, now: u64) -> Result<()> {
        self.finish(io, request, now, false)
    }

    /// Ends a failed request: like release, and the blocks it inserted that nobody else uses
    /// are dropped, since their contents may be incomplete.
    pub fn abort(&mut self, io: &mut dyn Backend, request: u64, now: u64) -> Result<()> {
        self.finish(io, request, now, true)
    }

    fn finish(&mut self, io: &mut dyn Backend, request: u64, now: u64, aborted: bool) -> Result<()> {
        let now = self.clock(now);
        let slot = self.request_slot(request)?;
        self.poll_inflight(io);
        let req = self.close_request(slot);
        if let Some(h) = req.retention.filter(|h| !aborted && h.expires > now) {
            // Before unpinning, so the blocks enter the hinted candidate sets directly.
            self.hint_nodes(&req.pinned, h);
        }
        if let Some(keep_tokens) = req.no_reuse_after.filter(|_| !aborted) {
            self.mark_no_reuse(&req.pinned, keep_tokens);
        }
        for &n in req.pinned.iter().rev() {
            self.tree.unpin(n, now);
        }
        for &b in &req.fresh[req.fresh_pos..] {
            self.free_gpu(b);
        }
        for &b in &req.spare {
            self.free_gpu(b);
        }
        let drop_inserted = aborted || !self.cfg.policy.keeps_finished_kv();
        if drop_inserted {
            for &n in req.inserted.iter().rev() {
                let node = self.tree.node(n);
                if node.kind == Kind::Kv
                    && node.pins == 0
                    && node.children == 0
                    && node.residency == Residency::Gpu
                {
                    self.delete_node(n, EventKind::Removed);
                }
            }
        }
        Ok(())
    }

    /// Whether the request's blocks are usable; finishes completed copies first. One
    /// non-blocking step: a caller that must block (`Cache::wait`) waits on `request_waiters`
    /// with its own deadline and polls again, so no clock is read here.
    pub fn poll(&mut self, io: &mut dyn Backend, request: u64) -> Result<Readiness> {
        let slot = self.request_slot(request)?;
        self.poll_inflight(io);
        let r = self.req(slot);
        Ok(if let Some(f) = &r.failure {
            Readiness::Failed(f.clone())
        } else if r.waits.is_empty() {
            Readiness::Ready
        } else {
            Readiness::Pending
        })
    }

    /// Waiters for the copies a request still waits on, for waiting without the core borrowed.
    /// Empty when none can help (see `Backend::waiter`).
    pub fn request_waiters(&self, io: &dyn Backend, request: u64) -> Result<Vec<Box<dyn BatchWaiter>>> {
        let slot = self.request_slot(request)?;
        Ok(self.req(slot).waits.iter().filter_map(|&b| io.waiter(b)).collect())
    }

    /// A handle (CUevent under CUDA) the engine's stream can wait on, or NULL when ready.
    pub fn wait_event(&self, io: &dyn Backend, request: u64) -> Result<*mut std::ffi::c_void> {
        let slot = self.request_slot(request)?;
        Ok(self.req(slot).waits.iter().max().map(|&b| io.batch_event(b)).unwrap_or(std::ptr::null_mut()))
    }
}
