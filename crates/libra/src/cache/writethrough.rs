//! Write-through host copies. While the host link is idle, the blocks next in line to leave
//! the GPU (the head of the swap-out plan) are copied to the host tier and stay on the GPU,
//! "clean": a GPU block with a complete host copy. Under pressure a clean block leaves at once
//! by freeing its GPU block, so no copy sits on the allocation path.
//!
//! A swap-in leaves a clean block too: the host keeps its copy, as vLLM's CPU offloading
//! connector and SGLang's HiCache keep theirs, because committed KV never changes. A block
//! that churns between the tiers is then copied to the host once, not at every departure.
//! Clean copies stay until their block leaves the GPU or is deleted, or until the host tier
//! needs room and has no host-only block left to prune (`reclaim_host_copies`).
//!
//! Safety rules (checked by `check_invariants` and `verify_contents`):
//! - A clean copy in flight never frees the GPU block; a failed one frees only the host block.
//! - A node is clean only once its copy completed; only then may its GPU block be freed
//!   without a copy, and only when no child of it is still on the GPU side.
//! - Write-through never takes host room a swap-out needs: it uses free host blocks, and under
//!   `libra`, which keeps the host tier full, only displaces the coldest host leaves, which the
//!   coming swap-out would displace anyway, never a block whose only copy is on the GPU.
use super::core::{CacheCore, Flight};
use super::events::EventKind;
use super::plan::Tier;
use super::tree::{Kind, Residency, NONE};
use crate::backend::{Backend, Direction};
use crate::error::Result;

impl CacheCore {
    /// Whether node `n` is clean: on the GPU with a complete host copy.
    pub(crate) fn is_clean(&self, n: u32) -> bool {
        let node = self.tree.node(n);
        node.kind == Kind::Kv && node.residency == Residency::Gpu && node.host_block != NONE
    }

    /// Frees a clean node's GPU block: it is on the host tier now, without a copy.
    pub(crate) fn evict_clean(&mut self, n: u32) {
        debug_assert!(self.is_clean(n) && self.tree.node(n).gpu_children == 0);
        self.note_left_gpu(n);
        self.settle(n, Tier::Host);
        self.clean_blocks -= 1;
        self.stats.instant_evictions += 1;
        self.stats.swap_out_blocks += 1;
        self.emit(EventKind::ToHost, n);
    }

    /// One write-through pass: when the link is idle and the GPU is past the low swap-out mark
    /// (a swap-out is coming), copies up to `write_through_blocks` of the blocks the next
    /// swap-out would take, in plan order, that are not clean yet. Returns the blocks started.
    pub(crate) fn write_through(&mut self, io: &mut dyn Backend, now: u64) -> Result<u32> {
        if !self.cfg.policy.writes_through() {
            return Ok(0);
        }
        let Some(window) = self.write_through_window(now) else {
            return Ok(0);
        };
        let mut todo = if self.cfg.policy.backs_up_everything() {
            self.unbacked_coldest_first()
        } else {
            self.write_through_candidates(self.plan(Tier::Gpu, window, now))
        };
        let free = self.host.free_count() as usize;
        if todo.len() > free && self.cfg.policy.fills_host_tier() {
            // Host-only blocks only: giving up one clean copy to make another gains nothing.
            self.prune_host(todo.len() - free, now);
        }
        todo.truncate(self.host.free_count() as usize);
        self.write_through_start(io, &todo)
    }

    /// Whether a write-through pass is due now (the link is idle, a swap-out is coming, and
    /// the last pass is an interval old); if so, marks the pass and returns how many blocks the
    /// next swap-out takes, from the high mark down to the low one.
    pub(crate) fn write_through_window(&mut self, now: u64) -> Option<usize> {
        if self.cfg.write_through_blocks == 0 || !self.inflight.is_empty() || !self.host_copy_pays() {
            return None;
        }
        let cap = self.gpu.capacity() as f64;
        let all = self.cfg.policy.backs_up_everything();
        if (!all && (self.gpu.used_count() as f64) < self.cfg.swap_out_low * cap) || self.host.capacity() == 0
        {
            return None;
        }
        if self.last_write_through.is_some_and(|t| now.saturating_sub(t) < self.cfg.prefetch_interval_us) {
            return None;
        }
        self.last_write_through = Some(now);
        Some(((self.cfg.swap_out_high - self.cfg.swap_out_low) * cap).round().max(1.0) as usize)
    }

    /// The KV blocks of `plan` without a host copy yet, at most `write_through_blocks`; blocks
    /// nobody will read again get none.
    pub(crate) fn write_through_candidates(&self, plan: Vec<u32>) -> Vec<u32> {
        plan.into_iter()
            .filter(|&n| {
                let node = self.tree.node(n);
                node.kind == Kind::Kv
                    && node.residency == Residency::Gpu
                    && node.host_block == NONE
                    && !self.tree.is_no_reuse(n)
            })
            .take(self.cfg.write_through_blocks as usize)
            .collect()
    }

    /// The coldest `write_through_blocks` unpinned KV blocks on the GPU without a host copy
    /// (in no order): one scan of the tree, where a plan of the whole tier would rank
    /// every block on it (policies that back up everything).
    fn unbacked_coldest_first(&self) -> Vec<u32> {
        let limit = self.cfg.write_through_blocks as usize;
        let mut c: Vec<u32> = self
            .tree
            .live_ids()
            .filter(|&n| {
                let node = self.tree.node(n);
                node.kind == Kind::Kv
                    && node.residency == Residency::Gpu
                    && node.host_block == NONE
                    && node.pins == 0
            })
            .collect();
        if c.len() > limit {
            c.select_nth_unstable_by_key(limit, |&n| self.tree.node(n).last_use);
            c.truncate(limit);
        }
        c
    }

    /// Starts the clean copies of `todo` (free host blocks must be there for all of them).
    pub(crate) fn write_through_start(&mut self, io: &mut dyn Backend, todo: &[u32]) -> Result<u32> {
        if todo.is_empty() {
            return Ok(0);
        }
        // In flight like a swap-out: readable on the GPU, not a candidate until it lands.
        self.copy(io, Direction::GpuToHost, todo, Flight::Clean)?;
        Ok(todo.len() as u32)
    }

    /// Completes a write-through batch: each node is clean, or on failure keeps its GPU copy
    /// alone.
    pub(crate) fn finish_clean(&mut self, nodes: Vec<u32>, failed: bool) {
        for n in nodes {
            let node = self.tree.node(n).clone();
            if node.residency != Residency::ToHost {
                continue;
            }
            if failed {
                self.settle(n, Tier::Gpu);
            } else {
                self.tree.set_residency(n, Residency::Gpu, node.gpu_block, node.host_block);
                self.clean_blocks += 1;
                self.stats.write_through_bytes += self.block_bytes;
            }
        }
    }
}

#[cfg(test)]
#[path = "writethrough_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "host_copies_tests.rs"]
mod host_copies_tests;
