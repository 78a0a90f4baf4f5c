//! The request lifecycle over the pool and the tree: register, match, allocate, commit,
//! release, abort. Byte moves go through the backend handed to each call; decisions depend only
//! on the call sequence and the `now` arguments.
use super::config::{CacheConfig, MAX_ADAPTERS, MAX_BLOCKS_PER_TIER, MAX_OPEN_REQUESTS, MAX_TOKENS_PER_CALL};
use super::cost::LoadStats;
use super::events::{Event, EventKind, EventLog};
use super::keyhash::{self, PrefixHasher};
use super::policy::PolicyKind;
use super::pool::BlockPool;
use super::tree::{Kind, Residency, Tree, NONE, ROOT};
use crate::backend::{Backend, BatchId, BatchWaiter};
use crate::error::{Error, Result, Status};
use std::collections::{HashMap, HashSet};

/// A registered adapter.
/// What `CacheCore::adapter_info` reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdapterInfo {
    pub weights_len: usize,
    pub rank: u32,
    pub blocks: u32,
    pub resident: bool,
}

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
}

/// What `match_prefix` found.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchResult {
    pub request: u64,
    /// Tokens whose KV is cached (a multiple of the block size).
    pub cached_tokens: usize,
    /// Block ids of the cached prefix, one per `block_tokens` tokens.
    pub kv_blocks: Vec<u32>,
    /// Block ids holding the adapter's weights, in order.
    pub adapter_blocks: Vec<u32>,
    /// Whether every block above is already usable on the GPU.
    pub ready: bool,
    /// Tokens found only in the host tier that were not loaded because recomputing them is
    /// faster than copying them (libra policy with cost hints). They are not in `kv_blocks`.
    pub recompute_tokens: usize,
}

/// Readiness of a request's blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    Pending,
    Failed(String),
}

/// Counters and gauges.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Stats {
    pub gpu_blocks_total: u32,
    pub gpu_blocks_used: u32,
    pub host_blocks_total: u32,
    pub host_blocks_used: u32,
    pub kv_nodes_gpu: u64,
    pub kv_nodes_host: u64,
    pub adapters_registered: u32,
    pub adapters_resident: u32,
    /// GPU-resident KV blocks whose adapter is not resident (0 except under `vllm`).
    pub invalid_kv_blocks: u64,
    pub hit_tokens: u64,
    pub miss_tokens: u64,
    pub matches: u64,
    pub swap_out_blocks: u64,
    pub swap_in_blocks: u64,
    pub dropped_blocks: u64,
    pub pruned_host_blocks: u64,
    pub adapter_loads: u64,
    pub bytes_to_host: u64,
    pub bytes_to_gpu: u64,
    pub failed_batches: u64,
    pub inflight_batches: u32,
    pub open_requests: u32,
    pub events_dropped: u64,
    /// KV blocks holding a retention hint that had not expired at the last `step`.
    pub hinted_blocks: u64,
    /// GPU KV blocks with a complete host copy, which leave at once under pressure.
    pub clean_blocks: u64,
    /// Bytes copied to the host by write-through (blocks that stayed on the GPU).
    pub write_through_bytes: u64,
    /// Blocks that left the GPU without a copy because they were clean (also counted in
    /// `swap_out_blocks`).
    pub instant_evictions: u64,
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
    request_tag: u16,
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
}

/// Request ids are `tag:16 | generation:26 | slot:22`. The tag is unique to this cache among
/// the first 65,535 caches of a process and the generation never 0, so no id is 0 (which C
/// code often reads as "none"), a released id stays stale for 2^26 reuses of its slot, and an
/// id from another cache is rejected instead of naming whatever request has that slot here.
const REQUEST_SLOT_BITS: u32 = 22;
const REQUEST_GENERATION_BITS: u32 = 26;
const REQUEST_GENERATION_MASK: u32 = (1 << REQUEST_GENERATION_BITS) - 1;
const _: () = assert!(MAX_OPEN_REQUESTS <= 1 << REQUEST_SLOT_BITS);

fn request_id(tag: u16, slot: u32, generation: u32) -> u64 {
    ((tag as u64) << (REQUEST_SLOT_BITS + REQUEST_GENERATION_BITS))
        | ((generation as u64) << REQUEST_SLOT_BITS)
        | slot as u64
}

/// The slot part of a request id (whether the id is open is `request_slot`'s question).
fn slot_bits(request: u64) -> u32 {
    (request & ((1 << REQUEST_SLOT_BITS) - 1)) as u32
}

/// The next generation of a request slot: wraps within its bits and skips 0.
fn next_generation(generation: u32) -> u32 {
    match (generation + 1) & REQUEST_GENERATION_MASK {
        0 => 1,
        g => g,
    }
}

/// A tag per cache from a process-wide counter that skips 0.
fn next_cache_tag() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let tag = (NEXT.fetch_add(1, Ordering::Relaxed) + 1) as u16;
        if tag != 0 {
            return tag;
        }
    }
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
            tree: Tree::new(cfg.hash_key, super::policy::candidate_order(cfg.policy, cfg.time_unit_us())),
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

    fn slot_of(&self, adapter_id: u64) -> Result<u32> {
        self.adapter_slots
            .get(&adapter_id)
            .copied()
            .ok_or_else(|| Error::not_found(format!("adapter {adapter_id} is not registered")))
    }

    pub(crate) fn request_slot(&self, request: u64) -> Result<u32> {
        let slot = slot_bits(request);
        let generation = ((request >> REQUEST_SLOT_BITS) as u32) & REQUEST_GENERATION_MASK;
        let tag = (request >> (REQUEST_SLOT_BITS + REQUEST_GENERATION_BITS)) as u16;
        match (self.requests.get(slot as usize), self.request_gen.get(slot as usize)) {
            (Some(Some(_)), Some(&g)) if g == generation && tag == self.request_tag => Ok(slot),
            _ => Err(Error::not_found(format!("request {request} is not open (already released?)"))),
        }
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

    // ---- adapters ---------------------------------------------------------------------

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
        let blocks = std::mem::take(&mut self.adapter_mut(slot).gpu_blocks);
        self.adapter_gpu_blocks -= blocks.len() as u32;
        for b in blocks {
            self.free_gpu(b);
        }
        self.tree.set_residency(anode, Residency::Absent, NONE, NONE);
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

    // ---- block helpers ------------------------------------------------------------------

    pub(crate) fn free_gpu(&mut self, block: u32) {
        self.gpu.free(block).expect("GPU block owned exactly once");
    }
    pub(crate) fn free_host(&mut self, block: u32) {
        self.host.free(block).expect("host block owned exactly once");
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
        self.emit(why, n);
        self.tree.remove(n);
    }

    // ---- requests -----------------------------------------------------------------------

    fn open_request(&mut self, req: Request) -> u64 {
        let slot = match self.free_requests.pop() {
            Some(s) => s,
            None => {
                self.requests.push(None);
                self.request_gen.push(1);
                (self.requests.len() - 1) as u32
            }
        };
        self.requests[slot as usize] = Some(req);
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

    /// Looks up the longest cached prefix of `tokens` for `adapter_id` in `namespace`, pins it
    /// and the adapter, and starts whatever copies make them usable on the GPU.
    pub fn match_prefix(
        &mut self,
        io: &mut dyn Backend,
        adapter_id: u64,
        namespace: u64,
        tokens: &[u32],
        now: u64,
    ) -> Result<MatchResult> {
        let now = self.clock(now);
        if tokens.len() > MAX_TOKENS_PER_CALL {
            return Err(Error::invalid(format!(
                "`tokens` has {} entries; the limit is {MAX_TOKENS_PER_CALL}",
                tokens.len()
            )));
        }
        let slot = self.slot_of(adapter_id)?;
        if self.stats.open_requests >= MAX_OPEN_REQUESTS {
            return Err(Error::busy(format!(
                "{MAX_OPEN_REQUESTS} requests are open: release or abort some first"
            )));
        }
        self.poll_inflight(io);
        let bt = self.block_tokens();
        let adapter_node = self.adapter(slot).node;
        let root_key = if namespace == 0 {
            self.adapter(slot).chain_key
        } else {
            self.tree.chain_root(adapter_id, namespace)
        };

        // Walk the chain: GPU-side nodes are hits; a run of host nodes may be loaded.
        let reuse = self.cfg.policy.keeps_finished_kv();
        let mut path: Vec<u32> = Vec::with_capacity(if reuse { tokens.len() / bt + 1 } else { 1 });
        let root_hash = self.tree.prefix_hasher(root_key);
        let mut tail_hash = root_hash;
        let mut parent = adapter_node;
        if reuse {
            // A software pipeline over groups of blocks: while the running hash absorbs group
            // g + 1 (a serial chain of rounds, bound by latency), the index probes of group g
            // use the idle issue slots. A group's keys are finalised together and their index
            // slots prefetched a group before they are probed.
            const GROUP: usize = 16;
            let blocks = tokens.len() / bt;
            let groups = blocks.div_ceil(GROUP);
            let group_len = |g: usize| (blocks - g * GROUP).min(GROUP);
            let mut states = [[root_hash; GROUP]; 2];
            let mut keys = [[0u128; GROUP]; 2];
            let mut probed = [NONE; GROUP];
            let mut running = root_hash;
            let absorb = |running: &mut PrefixHasher, block: usize| {
                running.extend(&tokens[block * bt..(block + 1) * bt]);
                *running
            };
            if groups > 0 {
                let n = group_len(0);
                for (j, state) in states[0][..n].iter_mut().enumerate() {
                    *state = absorb(&mut running, j);
                }
                keyhash::keys_of(&states[0][..n], &mut keys[0][..n]);
                self.tree.prefetch_slots(&keys[0][..n]);
            }
            'walk: for g in 0..groups {
                let (cur, next) = (g % 2, (g + 1) % 2);
                let n = group_len(g);
                let next_n = if g + 1 < groups { group_len(g + 1) } else { 0 };
                for j in 0..n.max(next_n) {
                    if j < next_n {
                        states[next][j] = absorb(&mut running, (g + 1) * GROUP + j);
                    }
                    if j < n {
                        probed[j] = self.tree.probe(keys[cur][j]);
                    }
                }
                if next_n > 0 {
                    let (k, s) = (&mut keys[next][..next_n], &states[next][..next_n]);
                    keyhash::keys_of(s, k);
                    self.tree.prefetch_slots(k);
                }
                for j in 0..n {
                    let node = self.tree.confirm(probed[j], keys[cur][j]);
                    if node == NONE || self.tree.node(node).parent != parent {
                        break 'walk;
                    }
                    path.push(node);
                    tail_hash = states[cur][j];
                    parent = node;
                }
            }
        }
        // Host-resident suffix of the path: load it, or advise recomputation.
        let first_host =
            path.iter().position(|&n| !self.tree.node(n).residency.gpu_side()).unwrap_or(path.len());
        let host_run = path.len() - first_host;
        let mut recompute_tokens = 0;
        if host_run > 0 && self.should_recompute(host_run) {
            recompute_tokens = host_run * bt;
            path.truncate(first_host);
            tail_hash = root_hash;
            tail_hash.extend(&tokens[..path.len() * bt]);
        }
        let to_load: Vec<u32> = path[first_host.min(path.len())..].to_vec();

        // Make room for the adapter and the swap-ins before touching anything else.
        let adapter_missing = !self.tree.node(adapter_node).residency.gpu_side();
        let adapter_need = if adapter_missing { self.adapter(slot).blocks_needed } else { 0 };
        let need = adapter_need as usize + to_load.len();
        // Pin what we will use first, the host-resident run included, so that making room
        // can neither evict nor prune it.
        self.tree.pin(adapter_node, now);
        for &n in &path {
            self.tree.pin(n, now);
        }
        if self.clean_blocks > 0 {
            self.used_again(&path);
        }
        let unpin_all = |core: &mut Self| {
            core.tree.unpin(adapter_node, now);
            for &n in &path {
                core.tree.unpin(n, now);
            }
        };
        if let Err(e) = self.make_room(io, need, adapter_need, now) {
            unpin_all(self);
            return Err(e);
        }
        let mut waits = HashSet::new();
        // Blocks already on their way to the GPU: wait for the copies that carry them.
        for &n in std::iter::once(&adapter_node).chain(&path[..first_host.min(path.len())]) {
            if self.tree.node(n).residency == Residency::ToGpu {
                if let Some(b) = self.inflight_batch_of(n) {
                    waits.insert(b);
                }
            }
        }
        if adapter_missing {
            match self.load_adapter(io, slot) {
                Ok(b) => {
                    waits.insert(b);
                }
                Err(e) => {
                    // No request will own these pins: drop them, or the prefix and the
                    // adapter stay pinned for good.
                    unpin_all(self);
                    return Err(e);
                }
            }
        }
        if !to_load.is_empty() {
            match self.swap_in(io, &to_load) {
                Ok(b) => {
                    waits.insert(b);
                }
                Err(e) => {
                    unpin_all(self);
                    return Err(e);
                }
            }
        }
        self.load.record_request(slot, now);
        let kv_blocks: Vec<u32> = path.iter().map(|&n| self.tree.node(n).gpu_block).collect();
        let cached_tokens = path.len() * bt;
        self.stats.matches += 1;
        self.stats.hit_tokens += cached_tokens as u64;
        self.stats.miss_tokens += (tokens.len() - cached_tokens) as u64;
        let tail_node = path.last().copied().unwrap_or(adapter_node);
        // The pinned list is the path behind the adapter: reuse its buffer.
        let mut pinned = path;
        pinned.insert(0, adapter_node);
        let req = Request {
            pinned,
            tail_node,
            tail_hash,
            fresh: Vec::new(),
            fresh_pos: 0,
            spare: Vec::new(),
            inserted: Vec::new(),
            waits: waits.clone(),
            failure: None,
            retention: None,
        };
        let request = self.open_request(req);
        let rslot = slot_bits(request);
        for b in waits {
            self.waiters.entry(b).or_default().push(rslot);
        }
        // Synchronous backends finish at submission: report ready without another round trip.
        self.poll_inflight(io);
        let ready = {
            let r = self.req(rslot);
            r.waits.is_empty() && r.failure.is_none()
        };
        let adapter_blocks = self.adapter(slot).gpu_blocks.clone();
        Ok(MatchResult { request, cached_tokens, kv_blocks, adapter_blocks, ready, recompute_tokens })
    }

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

    /// Whether a block copied to the host tier could ever be worth loading back: not when the
    /// cost hints say recomputing it is faster (recompute-or-load would never load it), so the
    /// copy would only spend link time and host room.
    pub(crate) fn host_copy_pays(&self) -> bool {
        !self.should_recompute(1)
    }

    /// Recompute-or-load (libra policy): loading `blocks` over the host link versus
    /// recomputing their tokens, with the engine's cost hints.
    fn should_recompute(&self, blocks: usize) -> bool {
        if self.cfg.policy != PolicyKind::Libra || self.cfg.prefill_tokens_per_us <= 0.0 {
            return false;
        }
        let load_us = blocks as f64 * self.block_bytes as f64 / self.cfg.link_bytes_per_us;
        let recompute_us = (blocks * self.block_tokens()) as f64 / self.cfg.prefill_tokens_per_us;
        recompute_us < load_us
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
                    self.tree.pin(existing, now);
                    if self.clean_blocks > 0 {
                        self.used_again(&[existing]);
                    }
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
        s.clean_blocks = self.clean_blocks;
        s
    }

    pub(crate) fn resident_adapters(&self) -> usize {
        self.adapters.iter().flatten().filter(|a| self.tree.node(a.node).residency == Residency::Gpu).count()
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
}

impl CacheCore {
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

    /// `match_prefix` that leaves at least `min_uncached` tokens of `tokens` uncached, so the
    /// engine has tokens to compute the next token's logits from (1 suffices) or to meet a
    /// kernel's batch shape. The left tokens count as misses.
    pub fn match_prefix_leaving(
        &mut self,
        io: &mut dyn Backend,
        adapter_id: u64,
        namespace: u64,
        tokens: &[u32],
        min_uncached: usize,
        now: u64,
    ) -> Result<MatchResult> {
        if min_uncached > tokens.len() {
            return Err(Error::invalid(format!(
                "`min_uncached` is {min_uncached} but `tokens` has only {} entries",
                tokens.len()
            )));
        }
        let m = self.match_prefix(io, adapter_id, namespace, &tokens[..tokens.len() - min_uncached], now)?;
        self.stats.miss_tokens += min_uncached as u64;
        Ok(m)
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
}

/// A KV node as seen from outside, for tests and debugging tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KvNodeInfo {
    pub key: u128,
    pub adapter_id: u64,
    pub residency: super::tree::Residency,
    pub gpu_block: u32,
    pub host_block: u32,
    pub pinned: bool,
}

impl CacheCore {
    /// Chain keys of the full blocks of `tokens` for an adapter and namespace.
    pub fn prefix_keys(&self, adapter_id: u64, namespace: u64, tokens: &[u32]) -> Vec<u128> {
        let mut hash = self.tree.prefix_hasher(self.tree.chain_root(adapter_id, namespace));
        tokens
            .chunks_exact(self.block_tokens())
            .map(|c| {
                hash.extend(c);
                hash.key()
            })
            .collect()
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
