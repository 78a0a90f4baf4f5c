//! The cache core: the state every part of the cache works on (pools, tree, adapters, open
//! requests, copies in flight, counters), the helpers they share, and what it reports. The
//! request lifecycle, adapters, the match walk, eviction, copies in flight and the watermark
//! driver each have their own file, which imports this one and never the other way round. Byte
//! moves go through the backend handed to each call; decisions depend only on the call sequence
//! and the `now` arguments.
use super::config::{CacheConfig, MAX_BLOCKS_PER_TIER};
use super::cost::LoadStats;
use super::events::{Event, EventKind, EventLog};
use super::keyhash::PrefixHasher;
use super::pool::BlockPool;
use super::request_ids::next_cache_tag;
use super::reuse::{bin_of, smoothed_gap, ReuseClass, ReuseModel};
use super::stats::{KvNodeInfo, Stats};
use super::tree::{Kind, Residency, Tree, NONE, NO_BIN};
use crate::backend::BatchId;
use crate::error::{Error, Result};
use std::collections::{HashMap, HashSet};

/// A registered adapter.
pub(crate) struct Adapter {
    pub id: u64,
    /// The registered host copy: adapters are never lost, whatever the tiers do.
    pub weights: Vec<u8>,
    pub blocks_needed: u32,
    /// The rank the engine gave at registration, 0 when unknown: reported back, never used in
    /// a decision (the block count follows from the byte length).
    pub rank: u32,
    /// GPU blocks while resident or uploading.
    pub gpu_blocks: Vec<u32>,
    /// Smoothed time between this adapter's uses, microseconds; 0 before its second use
    /// (see `reuse::adapter_rate`).
    pub mean_gap_us: f64,
    pub node: u32,
    pub chain_key: u128,
}

/// An open request.
pub(crate) struct Request {
    /// Pinned tree nodes (adapter node first).
    pub pinned: Vec<u32>,
    /// Node the next committed block hangs under, and its chain key.
    pub tail_node: u32,
    pub tail_hash: PrefixHasher,
    /// Allocated blocks not yet committed, in order.
    pub fresh: Vec<u32>,
    pub fresh_pos: usize,
    /// Blocks this request filled but the tree already had: freed at release.
    pub spare: Vec<u32>,
    /// Nodes this request inserted (dropped by abort).
    pub inserted: Vec<u32>,
    /// Batches this request waits for.
    pub waits: HashSet<BatchId>,
    pub failure: Option<String>,
    /// Retention hint for the request's blocks, applied again at release.
    pub retention: Option<super::tree::Hint>,
    /// Set by `expect_no_reuse`: the prompt tokens to leave unmarked at release.
    pub no_reuse_after: Option<u32>,
}

/// What a batch in flight carries.
pub(crate) enum Flight {
    ToHost(Vec<u32>),
    ToGpu(Vec<u32>),
    Upload(u32),
    /// Write-through copies: the nodes stay on the GPU and become clean.
    Clean(Vec<u32>),
}

/// The cache core.
pub struct CacheCore {
    pub(crate) cfg: CacheConfig,
    pub(crate) block_bytes: u64,
    pub(crate) gpu: BlockPool,
    pub(crate) host: BlockPool,
    pub(crate) tree: Tree,
    pub(crate) adapters: Vec<Option<Adapter>>,
    pub(crate) adapter_slots: HashMap<u64, u32>,
    /// Slots of unregistered adapters, reused first: registration is O(1).
    pub(crate) free_adapter_slots: Vec<u32>,
    pub(crate) requests: Vec<Option<Request>>,
    pub(crate) request_gen: Vec<u32>,
    /// This cache's part of every request id (see `request_id`).
    pub(crate) request_tag: u16,
    pub(crate) free_requests: Vec<u32>,
    pub(crate) inflight: HashMap<BatchId, Flight>,
    pub(crate) waiters: HashMap<BatchId, Vec<u32>>,
    /// GPU blocks still being written by a batch in flight whose node went back to the host
    /// tier (its parent's copy failed): freed when that batch finishes, not before.
    pub(crate) orphans: HashMap<BatchId, Vec<u32>>,
    pub(crate) load: LoadStats,
    pub(crate) stats: Stats,
    pub(crate) events: EventLog,
    /// GPU blocks held by adapters (the vLLM baseline caps them).
    pub(crate) adapter_gpu_blocks: u32,
    pub(crate) last_now: u64,
    pub(crate) last_prefetch: Option<u64>,
    /// GPU KV nodes with a complete host copy (see `writethrough`).
    pub(crate) clean_blocks: u64,
    pub(crate) last_write_through: Option<u64>,
    /// Observed reuse by age, which `libra`'s plans rank by (see `reuse`).
    pub(crate) reuse: ReuseModel,
}

impl CacheCore {
    pub fn new(cfg: CacheConfig, block_bytes: u64, gpu_blocks: u32, host_blocks: u32) -> Result<Self> {
        cfg.validate()?;
        if block_bytes == 0 {
            return Err(Error::invalid("`block_bytes` must be positive"));
        }
        if gpu_blocks == 0 {
            return Err(Error::invalid("`gpu_blocks` must be at least 1"));
        }
        if gpu_blocks > MAX_BLOCKS_PER_TIER || host_blocks > MAX_BLOCKS_PER_TIER {
            return Err(Error::invalid(format!(
                "`gpu_blocks` ({gpu_blocks}) and `host_blocks` ({host_blocks}) must each be at most {MAX_BLOCKS_PER_TIER}"
            )));
        }
        let bytes = |blocks: u32| block_bytes.checked_mul(blocks as u64);
        if bytes(gpu_blocks).is_none() || bytes(host_blocks).is_none() {
            return Err(Error::invalid(format!(
                "`block_bytes` ({block_bytes}) x the block count overflows 64 bits"
            )));
        }
        let events = EventLog::new(cfg.events, cfg.event_capacity);
        Ok(CacheCore {
            tree: Tree::new(
                cfg.hash_key,
                super::policy::candidate_order(cfg.uses_cost_model(), cfg.time_unit_us()),
            ),
            load: LoadStats::new(cfg.popularity_window_us, 5_000_000),
            cfg,
            block_bytes,
            gpu: BlockPool::new(gpu_blocks),
            host: BlockPool::new(host_blocks),
            adapters: Vec::new(),
            adapter_slots: HashMap::new(),
            free_adapter_slots: Vec::new(),
            requests: Vec::new(),
            request_gen: Vec::new(),
            request_tag: next_cache_tag(),
            free_requests: Vec::new(),
            inflight: HashMap::new(),
            waiters: HashMap::new(),
            orphans: HashMap::new(),
            stats: Stats::default(),
            events,
            adapter_gpu_blocks: 0,
            last_now: 0,
            last_prefetch: None,
            clean_blocks: 0,
            last_write_through: None,
            reuse: ReuseModel::default(),
        })
    }

    pub fn config(&self) -> &CacheConfig {
        &self.cfg
    }
    pub fn block_tokens(&self) -> usize {
        self.cfg.block_tokens as usize
    }

    /// The engine's clock may only move forward; an earlier `now` counts as the latest seen.
    pub(crate) fn clock(&mut self, now: u64) -> u64 {
        self.last_now = self.last_now.max(now);
        self.last_now
    }

    pub(crate) fn adapter(&self, slot: u32) -> &Adapter {
        self.adapters[slot as usize].as_ref().expect("live adapter slot")
    }
    pub(crate) fn adapter_mut(&mut self, slot: u32) -> &mut Adapter {
        self.adapters[slot as usize].as_mut().expect("live adapter slot")
    }

    pub(crate) fn req(&self, slot: u32) -> &Request {
        self.requests[slot as usize].as_ref().expect("open request")
    }
    pub(crate) fn req_mut(&mut self, slot: u32) -> &mut Request {
        self.requests[slot as usize].as_mut().expect("open request")
    }

    pub(crate) fn emit(&mut self, kind: EventKind, node: u32) {
        if !self.events.enabled() {
            return;
        }
        let n = self.tree.node(node);
        let adapter_id = if n.adapter == NONE { 0 } else { self.adapter(n.adapter).id };
        let key = n.key;
        let adapter_event = n.kind == Kind::Adapter;
        self.events.push(Event { kind, block_hash: key, adapter_id, adapter: adapter_event });
    }

    pub(crate) fn free_gpu(&mut self, block: u32) {
        self.gpu.free(block).expect("GPU block owned exactly once");
    }
    pub(crate) fn free_host(&mut self, block: u32) {
        self.host.free(block).expect("host block owned exactly once");
    }

    fn reuse_class(&self, n: u32) -> ReuseClass {
        if self.tree.node(n).kind == Kind::Adapter {
            ReuseClass::Adapter
        } else {
            ReuseClass::Kv
        }
    }

    /// Pins `n` for a request; an idle node's reuse is recorded at its age. A node that left
    /// the GPU was counted as ended there: had it stayed, this would have been its hit.
    pub(crate) fn pin_used(&mut self, n: u32, now: u64) {
        if self.tree.is_no_reuse(n) {
            // Read again after all: it ranks like any other block from now on.
            self.tree.drop_hint(n);
        }
        let class = self.reuse_class(n);
        let node = self.tree.node(n);
        if node.pins == 0 {
            let (age, left) = (now.saturating_sub(node.last_use), node.left_gpu);
            if left != NO_BIN {
                self.reuse.unend(class, left as usize);
                self.tree.set_left_gpu(n, NO_BIN);
            }
            self.reuse.hit(class, age);
            if class == ReuseClass::Adapter {
                let slot = self.tree.node(n).adapter;
                if let Some(a) = self.adapters[slot as usize].as_mut() {
                    a.mean_gap_us = smoothed_gap(a.mean_gap_us, age);
                }
            }
        }
        self.tree.pin(n, now);
    }

    /// `n` leaves the GPU (swapped out, evicted clean, or an adapter freed): its lifetime
    /// there ends at its age, unless it left before and has not been used since. Blocks marked
    /// `NO_REUSE` are not observed: the ranking learns from the blocks the engine did not
    /// classify, which are the ones it ranks.
    pub(crate) fn note_left_gpu(&mut self, n: u32) {
        let node = self.tree.node(n);
        if node.left_gpu != NO_BIN || self.tree.is_no_reuse(n) {
            return;
        }
        let age = self.last_now.saturating_sub(node.last_use);
        self.reuse.end(self.reuse_class(n), age);
        self.tree.set_left_gpu(n, bin_of(age) as u8);
    }

    /// Deletes a childless node, freeing whatever blocks it holds.
    pub(crate) fn delete_node(&mut self, n: u32, why: EventKind) {
        let node = self.tree.node(n).clone();
        debug_assert!(node.kind == Kind::Kv);
        if node.gpu_block != NONE {
            self.free_gpu(node.gpu_block);
        }
        if node.host_block != NONE {
            if node.residency == Residency::Gpu {
                self.clean_blocks -= 1;
            }
            self.free_host(node.host_block);
        }
        if node.left_gpu == NO_BIN && !self.tree.is_no_reuse(n) {
            self.reuse.end(ReuseClass::Kv, self.last_now.saturating_sub(node.last_use));
        }
        self.emit(why, n);
        self.tree.remove(n);
    }

    /// Metadata bytes per tree node (node, index entry, candidate sets).
    pub fn metadata_bytes_per_node(&self) -> f64 {
        self.tree.metadata_bytes_per_node()
    }

    pub fn live_nodes(&self) -> usize {
        self.tree.live_nodes()
    }

    pub fn drain_events(&mut self, max: usize) -> Vec<Event> {
        self.events.drain(max)
    }

    /// Updates the engine's cost hints (0 prefill rate disables recompute-or-load).
    pub fn set_cost_hints(&mut self, prefill_tokens_per_us: f64, link_bytes_per_us: f64) -> Result<()> {
        let mut cfg = self.cfg.clone();
        cfg.prefill_tokens_per_us = prefill_tokens_per_us;
        cfg.link_bytes_per_us = link_bytes_per_us;
        cfg.validate()?;
        self.cfg = cfg;
        Ok(())
    }

    /// Counters and gauges; O(adapters), independent of the tree's size.
    pub fn stats(&self) -> Stats {
        let mut s = self.stats.clone();
        s.gpu_blocks_total = self.gpu.capacity();
        s.gpu_blocks_used = self.gpu.used_count();
        s.host_blocks_total = self.host.capacity();
        s.host_blocks_used = self.host.used_count();
        s.inflight_batches = self.inflight.len() as u32;
        s.events_dropped = self.events.dropped();
        s.adapters_resident = self.resident_adapters() as u32;
        let kv = self.tree.kv_counts();
        s.kv_nodes_gpu = kv.gpu;
        s.kv_nodes_host = kv.host;
        s.invalid_kv_blocks = kv.invalid;
        s.hinted_blocks = self.tree.hinted_nodes() as u64;
        s.no_reuse_blocks = self.tree.no_reuse_nodes() as u64;
        s.clean_blocks = self.clean_blocks;
        s
    }

    /// Every KV node, in arena order.
    pub fn kv_nodes(&self) -> Vec<KvNodeInfo> {
        self.tree
            .live_ids()
            .map(|id| self.tree.node(id))
            .filter(|n| n.kind == Kind::Kv)
            .map(|n| KvNodeInfo {
                key: n.key,
                adapter_id: self.adapter(n.adapter).id,
                residency: n.residency,
                gpu_block: n.gpu_block,
                host_block: n.host_block,
                pinned: n.pins > 0,
            })
            .collect()
    }
}
