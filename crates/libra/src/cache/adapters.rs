//! Adapters: registration (the library keeps the weights' host copy), removal, and how many
//! GPU blocks adapters may hold.
use super::core::{Adapter, CacheCore};
use super::events::EventKind;
use super::tree::{Residency, NONE, ROOT};
use crate::cache::config::MAX_ADAPTERS;
use crate::error::{Error, Result, Status};

/// What `CacheCore::adapter_info` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdapterInfo {
    pub weights_len: usize,
    pub rank: u32,
    pub blocks: u32,
    pub resident: bool,
}

impl CacheCore {
    pub(crate) fn slot_of(&self, adapter_id: u64) -> Result<u32> {
        self.adapter_slots
            .get(&adapter_id)
            .copied()
            .ok_or_else(|| Error::not_found(format!("adapter {adapter_id} is not registered")))
    }

    /// Registers an adapter: the library keeps its own copy of `weights`. The adapter is
    /// loaded onto the GPU on first use.
    pub fn register_adapter(&mut self, id: u64, weights: &[u8], rank: u32, now: u64) -> Result<()> {
        let now = self.clock(now);
        if self.adapter_slots.contains_key(&id) {
            return Err(Error::new(
                Status::LIBRA_ERR_ALREADY_EXISTS,
                format!("adapter {id} is already registered"),
            ));
        }
        if weights.is_empty() {
            return Err(Error::invalid("`weights` is empty"));
        }
        if self.adapter_slots.len() >= MAX_ADAPTERS as usize {
            return Err(Error::invalid(format!("at most {MAX_ADAPTERS} adapters may be registered")));
        }
        let blocks_needed = weights.len().div_ceil(self.block_bytes as usize);
        let limit = self.adapter_block_limit();
        if blocks_needed as u64 > limit as u64 {
            return Err(Error::invalid(format!(
                "adapter {id} needs {blocks_needed} blocks but at most {limit} can hold adapters"
            )));
        }
        let slot = match self.free_adapter_slots.pop() {
            Some(s) => s,
            None => {
                self.adapters.push(None);
                (self.adapters.len() - 1) as u32
            }
        };
        let chain_key = self.tree.chain_root(id, 0);
        let node = self.tree.add_adapter(slot, chain_key, now);
        self.adapters[slot as usize] = Some(Adapter {
            id,
            weights: weights.to_vec(),
            blocks_needed: blocks_needed as u32,
            rank,
            gpu_blocks: Vec::new(),
            mean_gap_us: 0.0,
            node,
            chain_key,
        });
        self.adapter_slots.insert(id, slot);
        self.stats.adapters_registered += 1;
        Ok(())
    }

    /// Unregisters an adapter and drops every KV block under it. Fails with BUSY while a
    /// request or an in-flight copy uses it.
    pub fn unregister_adapter(&mut self, id: u64) -> Result<()> {
        let slot = self.slot_of(id)?;
        let anode = self.adapter(slot).node;
        let members: Vec<u32> = self.tree.live_ids().filter(|&n| self.tree.node(n).adapter == slot).collect();
        for &n in &members {
            let node = self.tree.node(n);
            if node.pins > 0 || matches!(node.residency, Residency::ToGpu | Residency::ToHost) {
                return Err(Error::busy(format!("adapter {id} is in use by an open request or a copy")));
            }
        }
        // Delete deepest first: a node goes once its children are gone.
        let mut order = members.clone();
        order.sort_by_key(|&n| std::cmp::Reverse(self.depth(n)));
        for n in order {
            if n == anode {
                continue;
            }
            self.delete_node(n, EventKind::Removed);
        }
        self.drop_adapter_blocks(slot);
        self.tree.remove(anode);
        self.adapters[slot as usize] = None;
        self.free_adapter_slots.push(slot);
        self.adapter_slots.remove(&id);
        self.load.forget_adapter(slot);
        self.stats.adapters_registered -= 1;
        Ok(())
    }

    fn depth(&self, mut n: u32) -> u32 {
        let mut d = 0;
        while n != ROOT && n != NONE {
            n = self.tree.node(n).parent;
            d += 1;
        }
        d
    }

    /// Frees the GPU blocks an adapter holds or is receiving; its registered host copy
    /// remains.
    pub(crate) fn drop_adapter_blocks(&mut self, slot: u32) {
        let node = self.adapter(slot).node;
        let blocks = std::mem::take(&mut self.adapter_mut(slot).gpu_blocks);
        self.adapter_gpu_blocks -= blocks.len() as u32;
        for b in blocks {
            self.free_gpu(b);
        }
        self.tree.set_residency(node, Residency::Absent, NONE, NONE);
    }

    pub(crate) fn adapter_block_limit(&self) -> u32 {
        if self.cfg.policy.split_regions() {
            ((self.gpu.capacity() as f64 * self.cfg.vllm_adapter_fraction).floor() as u32).max(1)
        } else {
            self.gpu.capacity()
        }
    }

    pub(crate) fn kv_block_limit(&self) -> u32 {
        if self.cfg.policy.split_regions() {
            self.gpu.capacity() - self.adapter_block_limit()
        } else {
            self.gpu.capacity()
        }
    }

    pub(crate) fn resident_adapters(&self) -> usize {
        self.adapters.iter().flatten().filter(|a| self.tree.node(a.node).residency == Residency::Gpu).count()
    }

    /// GPU blocks holding an adapter's weights (empty while it is not resident).
    pub fn adapter_gpu_blocks(&self, id: u64) -> Result<Vec<u32>> {
        let slot = self.slot_of(id)?;
        Ok(self.adapter(slot).gpu_blocks.clone())
    }

    /// An adapter's byte length, rank (0: unknown), block count and whether its blocks are
    /// usable on the GPU now.
    pub fn adapter_info(&self, id: u64) -> Result<AdapterInfo> {
        let slot = self.slot_of(id)?;
        let a = self.adapter(slot);
        Ok(AdapterInfo {
            weights_len: a.weights.len(),
            rank: a.rank,
            blocks: a.blocks_needed,
            resident: self.tree.node(a.node).residency == Residency::Gpu,
        })
    }
}
