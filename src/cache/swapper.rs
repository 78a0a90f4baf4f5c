//! Turns memory pressure and the policy's ranking into moves, and tracks the moves in flight.
//! Only GPU leaves leave and only host nodes under a GPU-side parent come back, so a GPU-side
//! block always has its parent (and adapter) on the GPU side. A GPU copy is freed only after
//! its host copy completed, and a host copy only after the GPU copy it fed completed.
use super::core::{CacheCore, Flight};
use super::cost;
use super::events::EventKind;
#[cfg(test)]
use super::policy::PolicyKind;
use super::policy::{retention_value, RankContext};
use super::tree::{Candidate, Kind, Residency, NONE, ROOT};
use crate::backend::{Backend, BatchId, BatchState, BlockMove, Direction};
use crate::error::{Error, Result};
use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeSet, BinaryHeap, HashMap};

/// A candidate with its exact log-value; ordered by (value, set key, id).
#[derive(Debug, Clone, Copy)]
struct Scored {
    value: f64,
    key: u64,
    node: u32,
}

impl PartialEq for Scored {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scored {
    fn cmp(&self, o: &Self) -> Ordering {
        self.value.total_cmp(&o.value).then(self.key.cmp(&o.key)).then(self.node.cmp(&o.node))
    }
}

/// A KV block's log retention value: the same order as Eq. 6, no underflow for long-idle
/// blocks, and no exponential at all once a block has been idle for more than ~36 units.
struct KvLogValue {
    now: u64,
    time_unit_us: f64,
    /// ln(LoRA_Eval x cost), shared by every KV block.
    log_const: f64,
}

impl KvLogValue {
    fn new(ctx: &RankContext) -> Self {
        let log_const = (cost::lora_eval(ctx.resident_adapters, ctx.low_lora) * ctx.block_cost_us).ln();
        KvLogValue { now: ctx.now, time_unit_us: ctx.time_unit_us, log_const }
    }

    #[inline]
    fn of(&self, c: &Candidate) -> f64 {
        let t = c.last_use as f64 / self.time_unit_us;
        let idle = self.now.saturating_sub(c.last_use) as f64 / self.time_unit_us;
        // ln(visits) = key - t; ln(1 - sigmoid(idle)) = -softplus(idle).
        let softplus = if idle > 36.0 { idle } else { idle.exp().ln_1p() };
        self.log_const + (f64::from_bits(c.key) - t) - softplus
    }
}

/// The (up to) `k` lowest KV entries of a value-ordered candidate set, in order, for a finite
/// `log_const` (the log-value terms shared by every KV block).
///
/// Why a walk in set order may hand entries out early: an entry's log value is
/// `log_const + key - now_s - eps` (with `key - t = ln(visits) >= 0` and `t + idle = now_s`),
/// where `eps = ln(1 + e^(-idle)) <= ln 2` shrinks as idle time grows and
/// `idle >= now_s - key`. So every entry with key at most `y` has
/// `eps <= ln(1 + e^(min(y - now_s, 0)))`, and since `y - ln(1 + e^(min(y - now_s, 0)))` grows
/// with `y`, the same bound holds, for entries past `y`, with `y`'s eps. A pending entry whose
/// value is below the bound for the current entry therefore precedes it and everything after
/// it, and can be handed out.
fn lowest_in_order(
    set: &BTreeSet<Candidate>,
    k: usize,
    now_s: f64,
    log_const: f64,
    score: impl Fn(&Candidate) -> Scored,
) -> Vec<Scored> {
    // The eps bound is refreshed once per unit of key, so the exponential is rarely taken.
    const SEGMENT: f64 = 1.0;
    let mut out: Vec<Scored> = Vec::with_capacity(k.min(set.len()));
    let mut pending: BinaryHeap<Reverse<Scored>> = BinaryHeap::new();
    let mut segment_end = f64::NEG_INFINITY;
    let mut eps = std::f64::consts::LN_2;
    let mut slack = 0.0;
    'walk: for c in set.iter().filter(|c| !c.adapter) {
        let key = f64::from_bits(c.key);
        if key > segment_end {
            segment_end = key + SEGMENT;
            eps = (segment_end - now_s).min(0.0).exp().ln_1p();
            // Rounding of sums of this magnitude, with a wide margin.
            slack = 1e-9 + 1e-13 * (log_const.abs() + now_s.abs() + segment_end.abs());
        }
        let bound = log_const + key - now_s - eps - slack;
        while let Some(&Reverse(top)) = pending.peek() {
            if top.value >= bound {
                break;
            }
            pending.pop();
            out.push(top);
            if out.len() == k {
                break 'walk;
            }
        }
        pending.push(Reverse(score(c)));
    }
    while out.len() < k {
        match pending.pop() {
            Some(Reverse(s)) => out.push(s),
            None => break,
        }
    }
    out
}

/// What one `step` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepReport {
    pub swapped_out: u32,
    pub swapped_in: u32,
    pub adapters_loaded: u32,
    pub pruned: u32,
    pub completed_batches: u32,
}

impl CacheCore {
    fn rank_ctx(&self, now: u64) -> RankContext {
        RankContext {
            now,
            resident_adapters: self.resident_adapters() as f64,
            low_lora: self.load.low_lora(),
            block_cost_us: self.block_bytes as f64 / self.cfg.link_bytes_per_us,
            time_unit_us: self.cfg.time_unit_us(),
        }
    }

    fn node_blocks(&self, n: u32) -> u32 {
        let node = self.tree.node(n);
        if node.kind == Kind::Adapter {
            self.adapter(node.adapter).blocks_needed
        } else {
            1
        }
    }

    /// Up to `k` nodes of a candidate set, lowest retention value first (ties by set order).
    ///
    /// Under the cost model the set is ordered by a key from which a KV block's log value
    /// differs by `-now - eps`, eps in (0, ln 2] (see `CandidateOrder::Value`), so a walk in set
    /// order can hand out a block as soon as no later entry can beat it, and stops once it has
    /// handed out k: exact, already in order, and it touches about k entries plus a band instead
    /// of every leaf. Adapters have other constants and are scored apart.
    fn lowest(&self, set: &BTreeSet<Candidate>, k: usize, now: u64) -> Vec<u32> {
        // An empty set has no adapter leaves either (they are listed like KV leaves), and the
        // ranking context costs a power per adapter: a full host tier asks for every victim.
        if k == 0 || set.is_empty() {
            return Vec::new();
        }
        let policy = self.cfg.policy;
        if !policy.uses_cost_model() {
            // The candidate sets are already ordered by last use.
            return set.iter().take(k).map(|c| c.id).collect();
        }
        let ctx = self.rank_ctx(now);
        let kv_log = KvLogValue::new(&ctx);
        let score = |c: &Candidate| Scored { value: kv_log.of(c), key: c.key, node: c.id };
        let kv = if kv_log.log_const.is_finite() {
            lowest_in_order(set, k, now as f64 / ctx.time_unit_us, kv_log.log_const, score)
        } else {
            // Every KV value is the same infinity: the first k in set order, by key and id.
            let mut first: Vec<Scored> = set.iter().filter(|c| !c.adapter).take(k).map(score).collect();
            first.sort_unstable();
            first
        };
        // The walk may stop before reaching an adapter: score adapter leaves exactly.
        let gpu_set = std::ptr::eq(set, self.tree.gpu_leaves());
        let mut adapters: Vec<Scored> = Vec::new();
        if gpu_set {
            for a in self.adapters.iter().flatten() {
                let node = self.tree.node(a.node);
                if node.residency == Residency::Gpu && node.pins == 0 && node.gpu_children == 0 {
                    let value = retention_value(policy, node, self.node_blocks(a.node), true, &ctx).ln();
                    adapters.push(Scored { value, key: self.tree.order_key(node), node: a.node });
                }
            }
            adapters.sort_unstable();
        }
        // Merge the two ordered lists.
        let mut out = Vec::with_capacity(k.min(kv.len() + adapters.len()));
        let (mut i, mut j) = (0, 0);
        while out.len() < k && (i < kv.len() || j < adapters.len()) {
            if j == adapters.len() || (i < kv.len() && kv[i] < adapters[j]) {
                out.push(kv[i].node);
                i += 1;
            } else {
                out.push(adapters[j].node);
                j += 1;
            }
        }
        out
    }

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
            let victims = self.lowest(self.tree.gpu_leaves(), short, now);
            if victims.is_empty() {
                if self.inflight.is_empty() || rounds > 64 {
                    return Err(Error::out_of_memory(format!(
                        "{need} GPU blocks needed, {} free, and every cached block is pinned or in flight",
                        self.gpu.free_count()
                    )));
                }
                self.wait_all(io);
                continue;
            }
            let to_host = self.cfg.policy.uses_host_tier() && self.host_copy_pays();
            if to_host {
                let kv = victims.iter().filter(|&&v| self.tree.node(v).kind == Kind::Kv).count();
                self.prepare_host_room(kv, now);
            }
            let mut outgoing = Vec::new();
            for v in victims {
                if self.tree.node(v).kind == Kind::Adapter {
                    self.evict_adapter(self.tree.node(v).adapter);
                } else if to_host && self.host_slot_available(outgoing.len(), now) {
                    outgoing.push(v);
                } else if self.tree.node(v).children == 0 {
                    self.delete_node(v, EventKind::Removed);
                    self.stats.dropped_blocks += 1;
                } else {
                    // A GPU leaf with host children and no room on the host: drop its host
                    // subtree first, then the node itself.
                    self.drop_subtree(v);
                }
            }
            if !outgoing.is_empty() {
                let batch = self.swap_out(io, &outgoing)?;
                let state = io.wait(batch, self.cfg.swap_wait_us);
                if state == BatchState::Pending {
                    return Err(Error::busy(
                        "swap-outs that would free GPU blocks are still in flight; retry after they complete",
                    ));
                }
                self.poll_inflight(io);
            }
        }
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
            self.prepare_host_room(victims.len(), now);
            let mut outgoing = Vec::new();
            for v in victims {
                if self.host_slot_available(outgoing.len(), now) {
                    outgoing.push(v);
                } else if self.tree.node(v).children == 0 {
                    self.delete_node(v, EventKind::Removed);
                    self.stats.dropped_blocks += 1;
                } else {
                    self.drop_subtree(v);
                }
            }
            if !outgoing.is_empty() {
                let batch = self.swap_out(io, &outgoing)?;
                if io.wait(batch, self.cfg.swap_wait_us) == BatchState::Pending {
                    return Err(Error::busy(
                        "swap-outs that would free GPU blocks are still in flight; retry after they complete",
                    ));
                }
                self.poll_inflight(io);
            }
        }
        let mut over = kv_over(self);
        while over > 0 {
            let victim = self.tree.gpu_leaves().iter().find(|c| !c.adapter).copied();
            match victim {
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

    /// Deletes up to `k` cold host leaves (lowest value first); returns how many.
    pub(crate) fn prune_host(&mut self, k: usize, now: u64) -> u32 {
        let mut pruned = 0;
        while (pruned as usize) < k {
            let victims = self.lowest(self.tree.host_leaves(), k - pruned as usize, now);
            if victims.is_empty() {
                break;
            }
            for v in victims {
                self.delete_node(v, EventKind::Removed);
                pruned += 1;
            }
        }
        self.stats.pruned_host_blocks += pruned as u64;
        pruned
    }

    /// Submits one batch that copies `nodes` (GPU leaves) to the host tier. Host blocks must be
    /// available for all of them.
    pub(crate) fn swap_out(&mut self, io: &mut dyn Backend, nodes: &[u32]) -> Result<BatchId> {
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
        self.inflight.insert(batch, Flight::ToHost(nodes.to_vec()));
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
        let batch = match io.submit_moves(Direction::HostToGpu, &moves) {
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
    fn wait_all(&mut self, io: &mut dyn Backend) {
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
        Ok(report)
    }

    /// The GPU leaves the policy would move out first to free `blocks` blocks, lowest value
    /// first (a plan only: nothing moves).
    pub fn plan_swap_out(&self, blocks: usize, now: u64) -> Vec<u32> {
        self.lowest(self.tree.gpu_leaves(), blocks, now)
    }

    /// Swaps out up to `blocks` blocks' worth of GPU leaves in one batch (adapters are freed,
    /// their host copy being the registered one; KV blocks not worth a host copy are dropped).
    fn swap_out_some(&mut self, io: &mut dyn Backend, blocks: usize, now: u64) -> Result<u32> {
        let victims = self.plan_swap_out(blocks, now);
        let to_host = self.host_copy_pays();
        if to_host {
            let kv = victims.iter().filter(|&&v| self.tree.node(v).kind == Kind::Kv).count();
            self.prepare_host_room(kv.min(blocks), now);
        }
        let mut outgoing = Vec::new();
        let mut freed = 0usize;
        for v in victims {
            if freed >= blocks {
                break;
            }
            if self.tree.node(v).kind == Kind::Adapter {
                freed += self.adapter(self.tree.node(v).adapter).blocks_needed as usize;
                self.evict_adapter(self.tree.node(v).adapter);
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
            }
        }
        let n = outgoing.len() as u32;
        if !outgoing.is_empty() {
            self.swap_out(io, &outgoing)?;
        }
        Ok(n.max(freed as u32))
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

    /// Checks every invariant: tree structure, each block owned exactly once, tier counts.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        self.tree.check(self.cfg.policy.uncoupled())?;
        let mut gpu_owner = vec![0u8; self.gpu.capacity() as usize];
        let mut host_owner = vec![0u8; self.host.capacity() as usize];
        let own = |v: &mut Vec<u8>, b: u32, what: &str| -> std::result::Result<(), String> {
            let slot = v.get_mut(b as usize).ok_or(format!("{what} block {b} out of range"))?;
            *slot += 1;
            if *slot > 1 {
                return Err(format!("{what} block {b} is owned twice"));
            }
            Ok(())
        };
        for id in self.tree.live_ids() {
            let n = self.tree.node(id);
            if n.kind != Kind::Kv {
                continue;
            }
            match n.residency {
                Residency::Gpu => own(&mut gpu_owner, n.gpu_block, "GPU")?,
                Residency::Host => own(&mut host_owner, n.host_block, "host")?,
                Residency::ToHost | Residency::ToGpu => {
                    own(&mut gpu_owner, n.gpu_block, "GPU")?;
                    own(&mut host_owner, n.host_block, "host")?;
                }
                Residency::Absent => return Err(format!("KV node {id} has no copy")),
            }
        }
        let mut adapter_blocks = 0;
        for a in self.adapters.iter().flatten() {
            let r = self.tree.node(a.node).residency;
            if r.gpu_side() == a.gpu_blocks.is_empty() {
                return Err(format!("adapter {} residency {r:?} disagrees with its blocks", a.id));
            }
            for &b in &a.gpu_blocks {
                own(&mut gpu_owner, b, "GPU")?;
            }
            adapter_blocks += a.gpu_blocks.len() as u32;
        }
        if adapter_blocks != self.adapter_gpu_blocks {
            return Err("adapter block count is stale".into());
        }
        // Every pin belongs to an open request: a pin left by a failed call would keep a
        // block on the GPU (and its adapter registered) forever.
        let mut pins: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
        for b in self.orphans.values().flatten() {
            own(&mut gpu_owner, *b, "GPU")?;
        }
        for r in self.requests.iter().flatten() {
            for &b in r.fresh[r.fresh_pos..].iter().chain(&r.spare) {
                own(&mut gpu_owner, b, "GPU")?;
            }
            for &n in &r.pinned {
                *pins.entry(n).or_default() += 1;
            }
        }
        for id in self.tree.live_ids() {
            let n = self.tree.node(id);
            let want = pins.get(&id).copied().unwrap_or(0);
            if n.kind != Kind::Root && n.pins != want {
                return Err(format!("node {id} has {} pins but open requests hold {want}", n.pins));
            }
        }
        for (b, &c) in gpu_owner.iter().enumerate() {
            if (c == 1) != self.gpu.is_used(b as u32) {
                return Err(format!(
                    "GPU block {b}: {c} owners but pool says used={}",
                    self.gpu.is_used(b as u32)
                ));
            }
        }
        for (b, &c) in host_owner.iter().enumerate() {
            if (c == 1) != self.host.is_used(b as u32) {
                return Err(format!(
                    "host block {b}: {c} owners but pool says used={}",
                    self.host.is_used(b as u32)
                ));
            }
        }
        if self.tree.node(ROOT).kind != Kind::Root {
            return Err("root lost".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::cache::CacheConfig;

    /// The banded walk must pick exactly what scoring every leaf would.
    #[test]
    fn banded_selection_equals_brute_force() {
        for policy in [PolicyKind::Elora, PolicyKind::Libra] {
            let cfg = CacheConfig { block_tokens: 1, policy, ..Default::default() };
            let mut io = CpuBackend::new(8, 600, 0).unwrap();
            let mut core = CacheCore::new(cfg, 8, 600, 0).unwrap();
            for a in 0..4u64 {
                core.register_adapter(a, &[0u8; 16], 4, 0).unwrap();
            }
            let mut x: u64 = 12345;
            let mut rnd = || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            // Prompts of 1-3 blocks at scattered times, some matched again to raise visits.
            for i in 0..150u64 {
                let now = (rnd() % 2_000_000) + i * 1_000;
                let len = 1 + (rnd() % 3) as usize;
                let toks: Vec<u32> = (0..len as u32).map(|t| (rnd() % 40) as u32 + t * 100).collect();
                let a = rnd() % 4;
                let m = core.match_prefix(&mut io, a, 0, &toks, now).unwrap();
                let rest = toks.len() - m.cached_tokens;
                core.allocate(&mut io, m.request, rest, now).unwrap();
                core.commit(m.request, &toks[m.cached_tokens..], now).unwrap();
                core.release(&mut io, m.request, now).unwrap();
            }
            let now = core.last_now + 100_000;
            let ctx = core.rank_ctx(now);
            let mut brute: Vec<Scored> = core
                .tree
                .gpu_leaves()
                .iter()
                .map(|c| Scored {
                    value: retention_value(policy, core.tree.node(c.id), core.node_blocks(c.id), true, &ctx),
                    key: c.key,
                    node: c.id,
                })
                .collect();
            brute.sort_unstable();
            for k in [1, 5, 17, 60, brute.len()] {
                let want: Vec<u32> = brute.iter().take(k).map(|s| s.node).collect();
                assert_eq!(core.lowest(core.tree.gpu_leaves(), k, now), want, "{policy:?} k={k}");
            }
        }
    }

    /// The selection as it was before the ordered walk, kept to show that no decision changed.
    fn lowest_before(core: &CacheCore, set: &BTreeSet<Candidate>, k: usize, now: u64) -> Vec<u32> {
        if k == 0 {
            return Vec::new();
        }
        let policy = core.cfg.policy;
        if !policy.uses_cost_model() {
            // The candidate sets are already ordered by last use.
            return set.iter().take(k).map(|c| c.id).collect();
        }
        let ctx = core.rank_ctx(now);
        let now_s = now as f64 / ctx.time_unit_us;
        let kv_log_const = (cost::lora_eval(ctx.resident_adapters, ctx.low_lora) * ctx.block_cost_us).ln();
        // Scores are log-values: the same order as Eq. 6, no underflow for long-idle blocks,
        // and no exponential at all once a block has been idle for more than ~36 units.
        let kv_log_value = |c: &Candidate| -> f64 {
            let t = c.last_use as f64 / ctx.time_unit_us;
            let idle = now.saturating_sub(c.last_use) as f64 / ctx.time_unit_us;
            // ln(visits) = key - t; ln(1 - sigmoid(idle)) = -softplus(idle).
            let softplus = if idle > 36.0 { idle } else { idle.exp().ln_1p() };
            kv_log_const + (f64::from_bits(c.key) - t) - softplus
        };
        let mut walk = set.iter().filter(|c| !c.adapter);
        // The first k in set order fill the heap at once (O(k)); the band after them may
        // displace some.
        let mut best: BinaryHeap<Scored> = walk
            .by_ref()
            .take(k)
            .map(|c| Scored { value: kv_log_value(c), key: c.key, node: c.id })
            .collect();
        if best.len() == k && kv_log_const.is_finite() {
            let mut worst = best.peek().expect("k > 0").value;
            for c in walk {
                let bound = kv_log_const + f64::from_bits(c.key) - now_s - std::f64::consts::LN_2 - 1e-9;
                if bound > worst {
                    break;
                }
                let candidate = Scored { value: kv_log_value(c), key: c.key, node: c.id };
                if candidate < *best.peek().expect("k > 0") {
                    best.pop();
                    best.push(candidate);
                    worst = best.peek().expect("k > 0").value;
                }
            }
        }
        // The walk may stop before reaching an adapter: score adapter leaves exactly.
        let gpu_set = std::ptr::eq(set, core.tree.gpu_leaves());
        let adapters: Vec<u32> = core
            .adapters
            .iter()
            .flatten()
            .map(|a| a.node)
            .filter(|&n| {
                let node = core.tree.node(n);
                gpu_set && node.residency == Residency::Gpu && node.pins == 0 && node.gpu_children == 0
            })
            .collect();
        let mut all: Vec<Scored> = best.into_vec();
        for n in adapters {
            let node = core.tree.node(n);
            let value = retention_value(policy, node, core.node_blocks(n), true, &ctx).ln();
            all.push(Scored { value, key: core.tree.order_key(node), node: n });
        }
        all.sort_unstable();
        all.truncate(k);
        all.into_iter().map(|s| s.node).collect()
    }

    /// Brute force: score every entry of the set (and every adapter leaf) exactly, then sort.
    fn brute_force(core: &CacheCore, gpu_set: bool, k: usize, now: u64) -> Vec<u32> {
        let ctx = core.rank_ctx(now);
        let policy = core.cfg.policy;
        let set = if gpu_set { core.tree.gpu_leaves() } else { core.tree.host_leaves() };
        let kv_log = KvLogValue::new(&ctx);
        let mut all: Vec<Scored> = set
            .iter()
            .map(|c| {
                let node = core.tree.node(c.id);
                let value = if c.adapter {
                    retention_value(policy, node, core.node_blocks(c.id), true, &ctx).ln()
                } else {
                    kv_log.of(c)
                };
                Scored { value, key: c.key, node: c.id }
            })
            .collect();
        all.sort_unstable();
        all.iter().take(k).map(|s| s.node).collect()
    }

    /// Trees whose leaves span idle times from zero to far past the ln 2 band, with visits
    /// from 1 to dozens and runs of equal last-use times; each with and without a host tier.
    #[test]
    fn ordered_walk_equals_brute_force_across_idle_times() {
        for (policy, unit) in [
            (PolicyKind::Elora, 0),
            (PolicyKind::Libra, 0),
            (PolicyKind::Elora, 50_000),
            (PolicyKind::Libra, 3_000_000),
        ] {
            for seed in 1..=6u64 {
                let cfg = CacheConfig {
                    block_tokens: 1,
                    policy,
                    value_time_unit_us: unit,
                    swap_out_high: 0.6,
                    swap_out_low: 0.5,
                    ..Default::default()
                };
                let mut io = CpuBackend::new(8, 400, 120).unwrap();
                let mut core = CacheCore::new(cfg, 8, 400, 120).unwrap();
                for a in 0..3u64 {
                    core.register_adapter(a, &[0u8; 16], 2, 0).unwrap();
                }
                let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15);
                let mut rnd = move || {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x
                };
                let mut now = 1_000u64;
                for i in 0..260u64 {
                    // Mostly small steps (dense, equal or close last uses), sometimes long gaps.
                    now += match rnd() % 10 {
                        0 => 0,
                        1 => rnd() % 40_000_000,
                        _ => rnd() % 300_000,
                    };
                    let len = 1 + (rnd() % 4) as usize;
                    let family = (rnd() % 90) as u32;
                    let toks: Vec<u32> = (0..len as u32).map(|t| family * 10 + t).collect();
                    let Ok(m) = core.match_prefix(&mut io, rnd() % 3, 0, &toks, now) else { continue };
                    let rest = toks.len() - m.cached_tokens;
                    if core.allocate(&mut io, m.request, rest, now).is_ok() {
                        core.commit(m.request, &toks[m.cached_tokens..], now).unwrap();
                    }
                    core.release(&mut io, m.request, now).unwrap();
                    if i % 16 == 15 {
                        core.step(&mut io, now, 4, false).unwrap();
                    }
                }
                core.check_invariants().unwrap();
                for later in [0, 200_000, 5_000_000, 90_000_000] {
                    let at = core.last_now + later;
                    for gpu_set in [true, false] {
                        let set = if gpu_set { core.tree.gpu_leaves() } else { core.tree.host_leaves() };
                        let n = set.len();
                        for k in [1, 2, 7, 30, n / 2, n, n + 5] {
                            let got = core.lowest(set, k, at);
                            let what = format!(
                                "{policy:?} unit {unit} seed {seed} +{later} gpu {gpu_set} k {k} of {n}"
                            );
                            assert_eq!(got, brute_force(&core, gpu_set, k, at), "{what}");
                            assert_eq!(got, lowest_before(&core, set, k, at), "{what}");
                        }
                    }
                }
            }
        }
    }

    /// A block used twice long ago can be worth more than one used once just now, although
    /// it comes first in set order: the walk must look past it (the ln 2 band).
    #[test]
    fn band_catches_recent_low_value_block() {
        let cfg = CacheConfig { block_tokens: 1, policy: PolicyKind::Elora, ..Default::default() };
        let mut io = CpuBackend::new(8, 64, 0).unwrap();
        let mut core = CacheCore::new(cfg, 8, 64, 0).unwrap();
        core.register_adapter(1, &[0u8; 8], 4, 0).unwrap();
        let mut run = |core: &mut CacheCore, tok: u32, now: u64| {
            let m = core.match_prefix(&mut io, 1, 0, &[tok], now).unwrap();
            if m.cached_tokens == 0 {
                core.allocate(&mut io, m.request, 1, now).unwrap();
                core.commit(m.request, &[tok], now).unwrap();
            }
            core.release(&mut io, m.request, now).unwrap();
        };
        run(&mut core, 10, 0);
        run(&mut core, 10, 0); // visits 2 at t = 0 s
        run(&mut core, 20, 900_000); // visits 1 at t = 0.9 s
        let old = core.tree.lookup(core.prefix_keys(1, 0, &[10])[0]).unwrap();
        let recent = core.tree.lookup(core.prefix_keys(1, 0, &[20])[0]).unwrap();
        let first_in_set = core.tree.gpu_leaves().iter().next().unwrap().id;
        assert_eq!(first_in_set, old, "set order puts the old block first");
        // 2 x (1 - sigmoid(0.9)) = 0.578 > 1 x (1 - sigmoid(0)) = 0.5.
        assert_eq!(core.lowest(core.tree.gpu_leaves(), 1, 900_000), vec![recent]);
    }
}

#[cfg(test)]
mod policy_tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::cache::CacheConfig;

    /// Inserts one single-block prompt and releases it.
    fn put(core: &mut CacheCore, io: &mut CpuBackend, toks: &[u32], now: u64) -> usize {
        let m = core.match_prefix(io, 1, 0, toks, now).unwrap();
        let rest = toks.len() - m.cached_tokens;
        core.allocate(io, m.request, rest, now).unwrap();
        core.commit(m.request, &toks[m.cached_tokens..], now).unwrap();
        core.release(io, m.request, now).unwrap();
        m.cached_tokens
    }

    /// Dropping a GPU leaf drops exactly its host subtree (two branches over several levels),
    /// frees their host blocks, and leaves everything beside it.
    #[test]
    fn drop_subtree_takes_exactly_the_host_descendants() {
        let cfg = CacheConfig { block_tokens: 1, policy: PolicyKind::Elora, ..Default::default() };
        let mut io = CpuBackend::new(8, 32, 32).unwrap();
        let mut core = CacheCore::new(cfg, 8, 32, 32).unwrap();
        core.register_adapter(1, &[0u8; 8], 4, 0).unwrap();
        put(&mut core, &mut io, &[1, 2, 3, 4, 5], 10);
        put(&mut core, &mut io, &[1, 2, 3, 6], 20);
        put(&mut core, &mut io, &[9, 8], 30);
        let node = |core: &CacheCore, t: &[u32]| core.tree.lookup(*core.prefix_keys(1, 0, t).last().unwrap());
        // Leaves go to the host bottom-up until [1 2 3] is a GPU leaf over [4 5] and [6].
        for t in [&[1, 2, 3, 4, 5][..], &[1, 2, 3, 6], &[1, 2, 3, 4]] {
            let n = node(&core, t).unwrap();
            core.swap_out(&mut io, &[n]).unwrap();
            core.poll_inflight(&mut io);
            assert_eq!(core.tree.node(n).residency, Residency::Host);
        }
        let top = node(&core, &[1, 2, 3]).unwrap();
        assert_eq!(core.tree.node(top).residency, Residency::Gpu);
        assert_eq!((core.tree.node(top).children, core.tree.node(top).gpu_children), (2, 0));
        let (host_used, gpu_used) = (core.host.used_count(), core.gpu.used_count());
        core.drop_subtree(top);
        for gone in [&[1, 2, 3][..], &[1, 2, 3, 4], &[1, 2, 3, 4, 5], &[1, 2, 3, 6]] {
            assert_eq!(node(&core, gone), None, "{gone:?} was in the subtree");
        }
        for kept in [&[1][..], &[1, 2], &[9], &[9, 8]] {
            assert!(node(&core, kept).is_some(), "{kept:?} was not");
        }
        assert_eq!(core.host.used_count(), host_used - 3);
        assert_eq!(core.gpu.used_count(), gpu_used - 1);
        core.check_invariants().unwrap();
        // A plain GPU leaf goes alone.
        let leaf = node(&core, &[9, 8]).unwrap();
        core.drop_subtree(leaf);
        assert_eq!(node(&core, &[9, 8]), None);
        assert!(node(&core, &[9]).is_some());
        core.check_invariants().unwrap();
    }

    /// `elora` prunes the host tier from 0.8 down to 0.7 of its 10 blocks; `libra` keeps it
    /// full and prunes only what swap-outs displace.
    #[test]
    fn libra_keeps_the_host_tier_full() {
        for (policy, host_after) in [(PolicyKind::Elora, 7..=8), (PolicyKind::Libra, 10..=10)] {
            let cfg = CacheConfig { block_tokens: 1, policy, ..Default::default() };
            let mut io = CpuBackend::new(8, 20, 10).unwrap();
            let mut core = CacheCore::new(cfg, 8, 20, 10).unwrap();
            core.register_adapter(1, &[0u8; 8], 4, 0).unwrap();
            for i in 0..60u32 {
                let now = i as u64 * 1_000;
                put(&mut core, &mut io, &[1000 + i], now);
                core.step(&mut io, now, 1, false).unwrap();
                core.check_invariants().unwrap();
            }
            let s = core.stats();
            assert!(host_after.contains(&s.host_blocks_used), "{policy:?}: host {}", s.host_blocks_used);
            // Every block that left the GPU went to the host; the host sheds what it cannot hold.
            assert_eq!(s.dropped_blocks, 0, "{policy:?}");
            assert_eq!(s.swap_out_blocks, s.host_blocks_used as u64 + s.pruned_host_blocks, "{policy:?}");
        }
    }

    /// Loading a block costs 8 B / 0.5 B/us = 16 us; recomputing its 16 tokens costs 16 / 2 = 8 us
    /// at 2 tokens/us but 32 us at 0.5 tokens/us. Only in the first case is a host copy useless,
    /// and `libra` then drops what leaves the GPU instead of copying it.
    #[test]
    fn libra_drops_instead_of_copying_when_recompute_is_cheaper() {
        for (prefill, policy, pays) in
            [(2.0, PolicyKind::Libra, false), (0.5, PolicyKind::Libra, true), (2.0, PolicyKind::Elora, true)]
        {
            let cfg = CacheConfig {
                block_tokens: 16,
                policy,
                link_bytes_per_us: 0.5,
                prefill_tokens_per_us: prefill,
                swap_out_high: 0.0,
                swap_out_low: 0.0,
                ..Default::default()
            };
            let mut io = CpuBackend::new(8, 8, 8).unwrap();
            let mut core = CacheCore::new(cfg, 8, 8, 8).unwrap();
            core.register_adapter(1, &[0u8; 8], 4, 0).unwrap();
            assert_eq!(core.host_copy_pays(), pays, "{policy:?} at {prefill} tokens/us");
            let toks: Vec<u32> = (0..32).collect();
            put(&mut core, &mut io, &toks, 0);
            for t in 1..4 {
                core.step(&mut io, t, 1, false).unwrap();
                core.check_invariants().unwrap();
            }
            let s = core.stats();
            assert_eq!(s.kv_nodes_gpu, 0, "{policy:?}: everything left the GPU");
            if pays {
                assert_eq!(
                    (s.swap_out_blocks, s.host_blocks_used, s.dropped_blocks),
                    (2, 2, 0),
                    "{policy:?}"
                );
            } else {
                assert_eq!(
                    (s.swap_out_blocks, s.host_blocks_used, s.dropped_blocks),
                    (0, 0, 2),
                    "{policy:?}"
                );
            }
        }
    }

    /// A match whose prefix is on a full host tier must make room without pruning that prefix.
    #[test]
    fn making_room_for_a_match_keeps_its_host_prefix() {
        for policy in [PolicyKind::Elora, PolicyKind::Libra] {
            let cfg = CacheConfig {
                block_tokens: 1,
                policy,
                swap_out_high: 0.0,
                swap_out_low: 0.0,
                // No watermark pruning: the host tier is full when the match comes.
                host_high: 1.0,
                host_low: 1.0,
                ..Default::default()
            };
            let mut io = CpuBackend::new(8, 6, 2).unwrap();
            let mut core = CacheCore::new(cfg, 8, 6, 2).unwrap();
            core.register_adapter(1, &[0u8; 8], 4, 0).unwrap();
            put(&mut core, &mut io, &[1, 2], 0);
            for t in 1..4 {
                core.step(&mut io, t, 1, false).unwrap();
            }
            assert_eq!(core.stats().host_blocks_used, 2, "{policy:?}: the prefix fills the host tier");
            // Fill the GPU (adapter + 5 blocks) without another step.
            put(&mut core, &mut io, &[10, 11, 12, 13, 14], 10);
            assert_eq!(core.stats().gpu_blocks_used, 6);
            let m = core.match_prefix(&mut io, 1, 0, &[1, 2, 3], 20).unwrap();
            assert_eq!(m.cached_tokens, 2, "{policy:?}");
            core.check_invariants().unwrap();
            core.wait(&mut io, m.request, 0).unwrap();
            core.allocate(&mut io, m.request, 1, 20).unwrap();
            core.commit(m.request, &[3], 20).unwrap();
            core.release(&mut io, m.request, 20).unwrap();
            core.check_invariants().unwrap();
        }
    }
}
