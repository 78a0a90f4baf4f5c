//! Clairvoyant placement, as an upper bound for the policies: a caller that knows the future
//! (a simulator replaying a trace) supplies, for every block, when it is next needed. Eviction
//! then follows Belady (farthest next use leaves first; never-used-again blocks are dropped, not
//! copied to the host) and prefetch brings back the nearest-needed host blocks and adapters.
//! Eviction plans whole chains, as the policies' plans do, and in idle link time the head of
//! the plan is written through to the host, so the oracle has every mechanism the policies
//! have and differs from them only in its ranking. It runs on `libra`'s tiers, so its
//! matches recompute a host run that is cheaper to recompute than to load, as `libra`'s do.
//! It is built only on `CacheCore`'s public mechanisms (see `cache::mechanism`), which keep
//! the tree legal.
use libra::backend::{Backend, BatchState};
use libra::cache::{CacheCore, NodeKind, NodeView, Residency, StepReport, SwapOutBatch};
use libra::error::{Error, Result};

/// When a block or adapter is next needed, in the engine clock; `u64::MAX` for never.
pub trait NextUse {
    /// Next use of the KV block whose prefix key is `key` (see `CacheCore::prefix_keys`).
    fn kv_next_use(&self, key: u128) -> u64;
    /// Next use of an adapter.
    fn adapter_next_use(&self, adapter_id: u64) -> u64;
}

/// The oracle over one cache: the cache, its backend and the future.
pub struct Oracle<'a> {
    pub core: &'a mut CacheCore,
    pub io: &'a mut dyn Backend,
    pub hints: &'a dyn NextUse,
}

fn next_use_of(view: &NodeView, hints: &dyn NextUse) -> u64 {
    match view.kind {
        NodeKind::Adapter { id, .. } => hints.adapter_next_use(id),
        NodeKind::Kv { key } => hints.kv_next_use(key),
        NodeKind::Root => u64::MAX,
    }
}

/// The chain-aware plan (see `CacheCore::plan_gpu_by`) for `blocks` GPU blocks, farthest next
/// use first: a parent follows once all its GPU children are planned. Every use of a block
/// passes through its ancestors, so a parent is never needed later than its children and the
/// plan is Belady's order among the blocks that may legally leave. Pairs are (next use, node).
pub fn plan(core: &CacheCore, blocks: usize, now: u64, hints: &dyn NextUse) -> Vec<(u64, u32)> {
    let value = |v: &NodeView| -(next_use_of(v, hints) as f64);
    let plan = core.plan_gpu_by(blocks, now, &value);
    plan.into_iter().map(|n| (core.node(n).map_or(u64::MAX, |v| next_use_of(&v, hints)), n)).collect()
}

impl Oracle<'_> {
    fn next_use(&self, n: u32) -> u64 {
        self.core.node(n).map_or(u64::MAX, |v| next_use_of(&v, self.hints))
    }

    /// Whether evicted blocks go to the host tier: it exists, and loading a block back beats
    /// recomputing it (`libra`'s recompute-or-load, which the oracle runs on).
    fn uses_host_tier(&self) -> bool {
        self.core.config().policy.uses_host_tier() && self.core.host_copy_pays()
    }

    /// Frees GPU blocks until `need` are free, choosing victims by farthest next use. Blocks that
    /// will be used again go to the host tier (displacing host blocks needed later than them);
    /// the others are dropped. Waits for its swap-outs like allocation does.
    pub fn make_room(&mut self, need: usize, now: u64) -> Result<()> {
        let now = self.core.advance_clock(now);
        self.core.poll_copies(self.io);
        let mut rounds = 0;
        while (self.core.tier_blocks().gpu_free as usize) < need {
            rounds += 1;
            let short = need - self.core.tier_blocks().gpu_free as usize;
            let submitted = self.evict(short, now)?;
            if submitted.0 == 0 && submitted.1.is_none() {
                if !self.core.freeing_copies_in_flight() || rounds > 64 {
                    return Err(Error::out_of_memory(format!(
                        "{need} GPU blocks needed, {} free, and every cached block is pinned or in flight",
                        self.core.tier_blocks().gpu_free
                    )));
                }
                // As allocation does: wait for the copies to the host only.
                self.core.wait_copies_out(self.io);
                if self.core.freeing_copies_in_flight() {
                    return Err(Error::busy("every unpinned GPU block is in flight"));
                }
                continue;
            }
            if let Some(batch) = submitted.1 {
                if self.io.wait(batch, self.core.config().swap_wait_us) == BatchState::Pending {
                    return Err(Error::busy("swap-outs that would free GPU blocks are still in flight"));
                }
                self.core.poll_copies(self.io);
            }
        }
        Ok(())
    }

    /// Moves `blocks` blocks' worth of the oracle's plan off the GPU. Returns the blocks freed
    /// at once and the swap-out batch submitted, if any.
    fn evict(&mut self, blocks: usize, now: u64) -> Result<(usize, Option<u64>)> {
        let victims = plan(self.core, blocks, now, self.hints);
        let mut freed = 0;
        // A node joins the batch only with all its GPU children (a child left on the GPU this
        // pass keeps its parent there).
        let mut outgoing = SwapOutBatch::default();
        for (next, v) in victims {
            if freed + outgoing.len() >= blocks {
                break;
            }
            let Some(node) = self.core.node(v) else { continue };
            // A planned child may be on its way to the host in this pass: its parent then
            // leaves in the same batch, or not before the copy completes.
            let waits_for_child = node.gpu_children > 0;
            if let NodeKind::Adapter { blocks, .. } = node.kind {
                if !waits_for_child {
                    self.core.unload_adapter_node(v)?;
                    freed += blocks as usize;
                }
                continue;
            }
            if next == u64::MAX || !self.uses_host_tier() {
                // Belady: never needed again, dropped rather than copied (a clean copy too).
                if waits_for_child {
                    continue;
                }
                self.core.drop_node(v)?;
                freed += 1;
            } else if node.clean {
                if !waits_for_child {
                    self.core.evict_clean_node(v)?;
                    freed += 1;
                }
            } else if !outgoing.may_take(v, node.gpu_children) {
                // A child stays on the GPU this pass: so does this node.
                continue;
            } else if self.host_slot(next, outgoing.len(), true) {
                outgoing.push(v, node.parent.expect("a KV node has a parent"));
            } else if !waits_for_child {
                self.core.drop_node(v)?;
                freed += 1;
            }
        }
        let batch = if outgoing.is_empty() {
            None
        } else {
            Some(self.core.swap_out_nodes(self.io, outgoing.nodes())?)
        };
        Ok((freed + outgoing.len(), batch))
    }

    /// Write-through with future knowledge: in idle link time, copies the head of the oracle's
    /// plan to the host while it stays on the GPU. Blocks never needed again get no copy; a
    /// full host tier gives way only to blocks needed sooner than what it holds.
    fn write_through(&mut self, now: u64) -> Result<u32> {
        if !self.uses_host_tier() {
            return Ok(0);
        }
        let Some(window) = self.core.begin_write_through(now) else {
            return Ok(0);
        };
        let head: Vec<u32> = plan(self.core, window, now, self.hints)
            .into_iter()
            .filter(|&(u, _)| u != u64::MAX)
            .map(|(_, n)| n)
            .collect();
        let mut todo = Vec::new();
        for n in self.core.write_through_targets(head) {
            if !self.host_slot(self.next_use(n), todo.len(), false) {
                break;
            }
            todo.push(n);
        }
        self.core.write_through_nodes(self.io, &todo)
    }

    /// Whether a host block can take a block next used at `next`, pruning a host leaf that is
    /// needed later (or never) when the tier is full, else (`may_reclaim`) giving up host
    /// copies of GPU blocks. `reserved` blocks are already promised.
    fn host_slot(&mut self, next: u64, reserved: usize, may_reclaim: bool) -> bool {
        if self.core.tier_blocks().host_free as usize > reserved {
            return true;
        }
        // Farthest next use first; ties: oldest last use, then id.
        let cand = self
            .core
            .host_leaves()
            .map(|v| (next_use_of(&v, self.hints), v.last_use, v.id))
            .min_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        let pruned = match cand {
            Some((u, _, h)) if u > next => self.core.prune_host_leaf(h).is_ok(),
            _ => false,
        };
        // As the policies do: for a swap-out (not for write-through, which would trade one
        // clean copy for another), host copies of GPU blocks give way once no host-only
        // block may.
        pruned
            || (may_reclaim
                && self.core.give_up_host_copies(1) > 0
                && self.core.tier_blocks().host_free as usize > reserved)
    }

    /// One scheduler iteration with future knowledge: finish copies; above the high watermark,
    /// move out the farthest-needed leaves; below the idle mark (when not prefill-bound),
    /// prefetch the host roots and adapters needed soonest. Takes the place of `step`.
    pub fn step(&mut self, now: u64, batch_size: u32, prefill_bound: bool) -> Result<StepReport> {
        let now = self.core.advance_clock(now);
        self.core.record_batch(batch_size, now);
        let mut report =
            StepReport { completed_batches: self.core.poll_copies(self.io), ..Default::default() };
        let cfg = self.core.config().clone();
        let tiers = self.core.tier_blocks();
        let cap = tiers.gpu_capacity as f64;
        let used = (tiers.gpu_capacity - tiers.gpu_free) as f64;
        if used > cfg.swap_out_high * cap {
            let target = (used - cfg.swap_out_low * cap).ceil() as usize;
            let (n, _) = self.evict(target, now)?;
            report.swapped_out = n as u32;
        } else if used < cfg.swap_in_idle * cap && !prefill_bound && self.uses_host_tier() {
            let budget = (cfg.swap_in_target * cap - used).floor().max(0.0) as usize;
            let mut roots: Vec<(u64, NodeView)> = Vec::new();
            for v in self.core.nodes() {
                let candidate = match v.kind {
                    NodeKind::Kv { .. } => {
                        v.residency == Residency::Host
                            && v.parent.and_then(|p| self.core.node(p)).map(|p| p.residency)
                                == Some(Residency::Gpu)
                    }
                    NodeKind::Adapter { .. } => v.residency == Residency::Absent,
                    NodeKind::Root => false,
                };
                if candidate {
                    let u = next_use_of(&v, self.hints);
                    if u != u64::MAX {
                        roots.push((u, v));
                    }
                }
            }
            roots.sort_unstable_by_key(|&(u, v)| (u, v.id));
            let mut left = budget;
            let mut kv = Vec::new();
            for (_, v) in roots {
                let blocks = v.blocks();
                if blocks > left || self.core.tier_blocks().gpu_free as usize <= kv.len() + blocks {
                    continue;
                }
                if matches!(v.kind, NodeKind::Adapter { .. }) {
                    self.core.upload_adapter_node(self.io, v.id)?;
                    report.adapters_loaded += 1;
                } else {
                    kv.push(v.id);
                }
                left -= blocks;
            }
            report.swapped_in = kv.len() as u32;
            if !kv.is_empty() {
                self.core.swap_in_nodes(self.io, &kv)?;
            }
        }
        report.written_through = self.write_through(now)?;
        Ok(report)
    }
}

#[cfg(test)]
#[path = "oracle_tests.rs"]
mod tests;
