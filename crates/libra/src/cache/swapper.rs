//! The watermark driver: each `step` finishes completed copies, swaps out above the high
//! watermark, prefetches below the idle mark, prunes the host tier and writes through.
use super::core::CacheCore;
use super::eviction::{Departing, Departure};
use super::flight::SwapOutBatch;
use super::plan::Tier;
use super::policy::retention_value;
#[cfg(test)]
use super::policy::PolicyKind;
use super::tree::{Kind, Residency};
use crate::backend::Backend;
use crate::error::Result;

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
        let mut outgoing = SwapOutBatch::default();
        let mut freed = 0usize;
        let mut host_full = false;
        for (i, &v) in victims.iter().enumerate() {
            if freed >= blocks {
                break;
            }
            let how = Departing {
                to_host,
                host_room: !host_full,
                drop_without_room: false,
                plan_rest: &victims[i + 1..],
            };
            match self.depart(v, &mut outgoing, how, now) {
                Departure::Stays => {}
                Departure::Freed(n) => freed += n,
                Departure::Copied => {
                    freed += 1;
                    if self.host.free_count() as usize <= outgoing.len() {
                        let batch_now = outgoing.take();
                        self.swap_out(io, &batch_now)?;
                    }
                }
                // The host tier is full of blocks that may not be pruned: only blocks that
                // need no copy can still go.
                Departure::NoHostRoom => host_full = true,
            }
        }
        if !outgoing.is_empty() {
            self.swap_out(io, outgoing.nodes())?;
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
                let value = if self.cfg.uses_cost_model() {
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
