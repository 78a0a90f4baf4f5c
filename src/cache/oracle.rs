//! Clairvoyant placement, as an upper bound for the policies: a caller that knows the future
//! (a simulator replaying a trace) supplies, for every block, when it is next needed. Eviction
//! then follows Belady (farthest next use leaves first; never-used-again blocks are dropped, not
//! copied to the host) and prefetch brings back the nearest-needed host blocks and adapters.
//! Eviction plans whole chains, as the policies' plans do, and in idle link time the head of
//! the plan is written through to the host, so the oracle has every mechanism the policies
//! have and differs from them only in its ranking. Tree legality is the swapper's.
use super::core::CacheCore;
use super::events::EventKind;
use super::plan::{Scorer, Tier};
use super::swapper::StepReport;
use super::tree::{Kind, Residency};
use crate::backend::{Backend, BatchState};
use crate::error::{Error, Result};

/// When a block or adapter is next needed, in the engine clock; `u64::MAX` for never.
pub trait NextUse {
    /// Next use of the KV block whose prefix key is `key` (see `CacheCore::prefix_keys`).
    fn kv_next_use(&self, key: u128) -> u64;
    /// Next use of an adapter.
    fn adapter_next_use(&self, adapter_id: u64) -> u64;
}

impl CacheCore {
    fn next_use_of(&self, n: u32, hints: &dyn NextUse) -> u64 {
        let node = self.tree.node(n);
        match node.kind {
            Kind::Adapter => hints.adapter_next_use(self.adapter(node.adapter).id),
            Kind::Kv => hints.kv_next_use(node.key),
            _ => u64::MAX,
        }
    }

    /// Up to `k` candidates, farthest next use first (ties: oldest last use, then id).
    fn farthest<I: Iterator<Item = (u64, u32)>>(
        &self,
        candidates: I,
        k: usize,
        hints: &dyn NextUse,
    ) -> Vec<(u64, u32)> {
        let mut v: Vec<(u64, u64, u32)> =
            candidates.map(|(t, n)| (self.next_use_of(n, hints), t, n)).collect();
        let cmp =
            |a: &(u64, u64, u32), b: &(u64, u64, u32)| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2));
        if v.len() > k {
            v.select_nth_unstable_by(k, cmp);
            v.truncate(k);
        }
        v.sort_unstable_by(cmp);
        v.into_iter().map(|(u, _, n)| (u, n)).collect()
    }

    /// Frees GPU blocks until `need` are free, choosing victims by farthest next use. Blocks that
    /// will be used again go to the host tier (displacing host blocks needed later than them);
    /// the others are dropped. Waits for its swap-outs like allocation does.
    pub fn oracle_make_room(
        &mut self,
        io: &mut dyn Backend,
        need: usize,
        now: u64,
        hints: &dyn NextUse,
    ) -> Result<()> {
        let now = self.clock(now);
        self.poll_inflight(io);
        let mut rounds = 0;
        while (self.gpu.free_count() as usize) < need {
            rounds += 1;
            let short = need - self.gpu.free_count() as usize;
            let submitted = self.oracle_evict(io, short, now, hints)?;
            if submitted.0 == 0 && submitted.1.is_none() {
                if self.inflight.is_empty() || rounds > 64 {
                    return Err(Error::out_of_memory(format!(
                        "{need} GPU blocks needed, {} free, and every cached block is pinned or in flight",
                        self.gpu.free_count()
                    )));
                }
                let mut ids: Vec<u64> = self.inflight.keys().copied().collect();
                ids.sort_unstable();
                for b in ids {
                    io.wait(b, self.cfg.swap_wait_us);
                }
                self.poll_inflight(io);
                continue;
            }
            if let Some(batch) = submitted.1 {
                if io.wait(batch, self.cfg.swap_wait_us) == BatchState::Pending {
                    return Err(Error::busy("swap-outs that would free GPU blocks are still in flight"));
                }
                self.poll_inflight(io);
            }
        }
        Ok(())
    }

    /// The chain-aware plan (see `plan`) for `blocks` GPU blocks, farthest next use first:
    /// a parent follows once all its GPU children are planned. Every use of a block passes
    /// through its ancestors, so a parent is never needed later than its children and the
    /// plan is Belady's order among the blocks that may legally leave.
    fn oracle_plan(&self, blocks: usize, now: u64, hints: &dyn NextUse) -> Vec<(u64, u32)> {
        let value = |n: u32| -(self.next_use_of(n, hints) as f64);
        let plan = self.plan_with(Tier::Gpu, blocks, now, &Scorer::Given(&value));
        plan.into_iter().map(|n| (self.next_use_of(n, hints), n)).collect()
    }

    /// Moves `blocks` blocks' worth of the oracle's plan off the GPU. Returns the blocks freed
    /// at once and the swap-out batch submitted, if any.
    fn oracle_evict(
        &mut self,
        io: &mut dyn Backend,
        blocks: usize,
        now: u64,
        hints: &dyn NextUse,
    ) -> Result<(usize, Option<u64>)> {
        let victims = self.oracle_plan(blocks, now, hints);
        let mut freed = 0;
        let mut outgoing = Vec::new();
        for (next, v) in victims {
            if freed + outgoing.len() >= blocks {
                break;
            }
            let node = self.tree.node(v);
            // A planned child may be on its way to the host in this pass: its parent then
            // leaves in the same batch, or not before the copy completes.
            let (kind, slot, waits_for_child) = (node.kind, node.adapter, node.gpu_children > 0);
            if kind == Kind::Adapter {
                if !waits_for_child {
                    freed += self.adapter(slot).blocks_needed as usize;
                    self.evict_adapter(slot);
                }
                continue;
            }
            if next == u64::MAX || !self.cfg.policy.uses_host_tier() {
                // Belady: never needed again, dropped rather than copied (a clean copy too).
                if waits_for_child {
                    continue;
                }
                self.oracle_drop(v);
                freed += 1;
            } else if self.is_clean(v) {
                if !waits_for_child {
                    self.evict_clean(v);
                    freed += 1;
                }
            } else if self.oracle_host_slot(next, outgoing.len(), hints) {
                outgoing.push(v);
            } else if !waits_for_child {
                self.oracle_drop(v);
                freed += 1;
            }
        }
        let batch = if outgoing.is_empty() { None } else { Some(self.swap_out(io, &outgoing)?) };
        Ok((freed + outgoing.len(), batch))
    }

    /// Drops a GPU node and whatever it holds on the host (its host copy, its host subtree).
    fn oracle_drop(&mut self, v: u32) {
        if self.tree.node(v).children == 0 {
            self.delete_node(v, EventKind::Removed);
            self.stats.dropped_blocks += 1;
        } else {
            self.drop_subtree(v);
        }
    }

    /// Write-through with future knowledge: in idle link time, copies the head of the oracle's
    /// plan to the host while it stays on the GPU (see `write_through`). Blocks never needed
    /// again get no copy; a full host tier gives way only to blocks needed sooner than what it
    /// holds.
    fn oracle_write_through(&mut self, io: &mut dyn Backend, now: u64, hints: &dyn NextUse) -> Result<u32> {
        if !self.cfg.policy.uses_host_tier() {
            return Ok(0);
        }
        let Some(window) = self.write_through_window(now) else {
            return Ok(0);
        };
        let plan: Vec<u32> = self
            .oracle_plan(window, now, hints)
            .into_iter()
            .filter(|&(u, _)| u != u64::MAX)
            .map(|(_, n)| n)
            .collect();
        let mut todo = Vec::new();
        for n in self.write_through_candidates(plan) {
            if !self.oracle_host_slot(self.next_use_of(n, hints), todo.len(), hints) {
                break;
            }
            todo.push(n);
        }
        self.write_through_start(io, &todo)
    }

    /// Whether a host block can take a block next used at `next`, pruning a host leaf that is
    /// needed later (or never) when the tier is full. `reserved` blocks are already promised.
    fn oracle_host_slot(&mut self, next: u64, reserved: usize, hints: &dyn NextUse) -> bool {
        if self.host.free_count() as usize > reserved {
            return true;
        }
        let cand = self.farthest(self.tree.host_leaves().iter().map(|c| (c.last_use, c.id)), 1, hints);
        match cand.first() {
            Some(&(u, h)) if u > next => {
                self.delete_node(h, EventKind::Removed);
                self.stats.pruned_host_blocks += 1;
                true
            }
            _ => false,
        }
    }

    /// One scheduler iteration with future knowledge: finish copies; above the high watermark,
    /// move out the farthest-needed leaves; below the idle mark (when not prefill-bound),
    /// prefetch the host roots and adapters needed soonest. Takes the place of `step`.
    pub fn oracle_step(
        &mut self,
        io: &mut dyn Backend,
        now: u64,
        batch_size: u32,
        prefill_bound: bool,
        hints: &dyn NextUse,
    ) -> Result<StepReport> {
        let now = self.clock(now);
        self.load.record_batch(batch_size, now);
        let mut report = StepReport { completed_batches: self.poll_inflight(io), ..Default::default() };
        let cap = self.gpu.capacity() as f64;
        let used = self.gpu.used_count() as f64;
        if used > self.cfg.swap_out_high * cap {
            let target = (used - self.cfg.swap_out_low * cap).ceil() as usize;
            let (n, _) = self.oracle_evict(io, target, now, hints)?;
            report.swapped_out = n as u32;
        } else if used < self.cfg.swap_in_idle * cap && !prefill_bound && self.cfg.policy.uses_host_tier() {
            let budget = (self.cfg.swap_in_target * cap - used).floor().max(0.0) as usize;
            let mut roots: Vec<(u64, u32)> = Vec::new();
            for id in self.tree.live_ids() {
                let n = self.tree.node(id);
                let candidate = match n.kind {
                    Kind::Kv => {
                        n.residency == Residency::Host && self.tree.node(n.parent).residency == Residency::Gpu
                    }
                    Kind::Adapter => n.residency == Residency::Absent,
                    _ => false,
                };
                if candidate {
                    let u = self.next_use_of(id, hints);
                    if u != u64::MAX {
                        roots.push((u, id));
                    }
                }
            }
            roots.sort_unstable();
            let mut left = budget;
            let mut kv = Vec::new();
            for (_, id) in roots {
                let node = self.tree.node(id);
                let blocks = if node.kind == Kind::Adapter {
                    self.adapter(node.adapter).blocks_needed as usize
                } else {
                    1
                };
                if blocks > left || self.gpu.free_count() as usize <= kv.len() + blocks {
                    continue;
                }
                if node.kind == Kind::Adapter {
                    self.load_adapter(io, node.adapter)?;
                    report.adapters_loaded += 1;
                } else {
                    kv.push(id);
                }
                left -= blocks;
            }
            report.swapped_in = kv.len() as u32;
            if !kv.is_empty() {
                self.swap_in(io, &kv)?;
            }
        }
        report.written_through = self.oracle_write_through(io, now, hints)?;
        Ok(report)
    }
}

#[cfg(test)]
#[path = "oracle_tests.rs"]
mod tests;
