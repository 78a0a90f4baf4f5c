//! Write-through host copies. While the host link is idle, the blocks next in line to leave
//! the GPU (the head of the swap-out plan) are copied to the host tier and stay on the GPU,
//! "clean": a GPU block with a complete host copy. Under pressure a clean block leaves at once
//! by freeing its GPU block, so no copy sits on the allocation path.
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
use crate::backend::Backend;
use crate::error::Result;

impl CacheCore {
    /// Whether node `n` is clean: on the GPU with a complete host copy.
    pub(crate) fn is_clean(&self, n: u32) -> bool {
        let node = self.tree.node(n);
        node.kind == Kind::Kv && node.residency == Residency::Gpu && node.host_block != NONE
    }

    /// Frees a clean node's GPU block: it is on the host tier now, without a copy.
    pub(crate) fn evict_clean(&mut self, n: u32) {
        let node = self.tree.node(n).clone();
        debug_assert!(self.is_clean(n) && node.gpu_children == 0);
        self.tree.set_residency(n, Residency::Host, NONE, node.host_block);
        self.free_gpu(node.gpu_block);
        self.clean_blocks -= 1;
        self.stats.instant_evictions += 1;
        self.stats.swap_out_blocks += 1;
        self.emit(EventKind::ToHost, n);
    }

    /// Blocks used again are no longer next in line to leave: their clean host copies go, so
    /// clean copies stay a window at the head of the plan and never fill the host tier with
    /// duplicates of hot blocks. (Blocks still being copied become clean when they land.)
    pub(crate) fn used_again(&mut self, nodes: &[u32]) {
        if self.cfg.policy.backs_up_everything() {
            return;
        }
        for &n in nodes {
            if self.is_clean(n) {
                let node = self.tree.node(n).clone();
                self.tree.set_residency(n, Residency::Gpu, node.gpu_block, NONE);
                self.free_host(node.host_block);
                self.clean_blocks -= 1;
            }
        }
    }

    /// One write-through pass: when the link is idle and the GPU is past the low swap-out mark
    /// (a swap-out is coming), copies up to `write_through_blocks` of the blocks the next
    /// swap-out would take, in plan order, that are not clean yet. Returns the blocks started.
    pub(crate) fn write_through(&mut self, io: &mut dyn Backend, now: u64) -> Result<u32> {
        let limit = self.cfg.write_through_blocks as usize;
        if !self.cfg.policy.writes_through()
            || limit == 0
            || !self.inflight.is_empty()
            || !self.host_copy_pays()
        {
            return Ok(0);
        }
        let cap = self.gpu.capacity() as f64;
        let all = self.cfg.policy.backs_up_everything();
        if (!all && (self.gpu.used_count() as f64) < self.cfg.swap_out_low * cap) || self.host.capacity() == 0
        {
            return Ok(0);
        }
        if self.last_write_through.is_some_and(|t| now.saturating_sub(t) < self.cfg.prefetch_interval_us) {
            return Ok(0);
        }
        self.last_write_through = Some(now);
        // What the next swap-out takes: from the high mark down to the low one.
        let window = ((self.cfg.swap_out_high - self.cfg.swap_out_low) * cap).round().max(1.0) as usize;
        let unbacked = |c: &Self, n: u32| {
            let node = c.tree.node(n);
            node.kind == Kind::Kv && node.residency == Residency::Gpu && node.host_block == NONE
        };
        let mut todo: Vec<u32> = if all {
            // Every unpinned block without a copy, coldest first: one scan of the tree, where
            // a plan of the whole tier would rank every block on it.
            let mut c: Vec<u32> =
                self.tree.live_ids().filter(|&n| unbacked(self, n) && self.tree.node(n).pins == 0).collect();
            if c.len() > limit {
                c.select_nth_unstable_by_key(limit, |&n| self.tree.node(n).last_use);
                c.truncate(limit);
            }
            c
        } else {
            self.plan(Tier::Gpu, window, now).into_iter().filter(|&n| unbacked(self, n)).take(limit).collect()
        };
        let free = self.host.free_count() as usize;
        if todo.len() > free && self.cfg.policy.fills_host_tier() {
            self.prune_host(todo.len() - free, now);
        }
        todo.truncate(self.host.free_count() as usize);
        if todo.is_empty() {
            return Ok(0);
        }
        // In flight like a swap-out: readable on the GPU, not a candidate until it lands.
        self.copy_to_host(io, &todo, Flight::Clean)?;
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
                self.tree.set_residency(n, Residency::Gpu, node.gpu_block, NONE);
                self.free_host(node.host_block);
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
