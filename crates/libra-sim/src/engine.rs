//! The engine: continuous batching with chunked prefill over `CacheCore`. Every cache decision
//! (what is cached, what is evicted, swapped, prefetched or loaded) is the library's; this file
//! only schedules requests, charges step times and moves the clock. Copies complete when the
//! simulated host link finishes them.
use super::hw::{Hardware, StepLoad};
use super::layerwise;
use super::peers;
pub use super::peers::SimPolicy;
use super::workload::{Workload, WorkloadSpec};
use crate::oracle::{NextUse, Oracle};
use libra::backend::{
    Backend, BatchId, BatchState, BlockMove, Direction, Segment, SegmentGroups, TierLayout,
};
use libra::cache::{CacheConfig, CacheCore, Readiness, RetentionHint};
use libra::error::Result as LibResult;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};

/// Engine knobs.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineConfig {
    pub hw: Hardware,
    pub block_tokens: u32,
    /// Tokens one step may process (decode tokens + prefill chunks).
    pub max_batch_tokens: u32,
    /// Most sequences admitted at once.
    pub max_seqs: u32,
    /// How often the invalid-KV fraction is sampled, microseconds.
    pub sample_every_us: u64,
    /// Overrides of the pool sizes derived from the hardware (tests).
    pub gpu_blocks: Option<u32>,
    pub host_blocks: Option<u32>,
    /// Stop a run once a request has waited this long for admission, microseconds: an
    /// overloaded engine is recognised without simulating its whole backlog.
    pub give_up_wait_us: Option<u64>,
    /// Share of GPU blocks in `vllm`'s adapter region (tuned per workload by the caller).
    pub vllm_adapter_fraction: f64,
    /// Layers per readiness group of a swap-in. A request whose blocks are still being copied
    /// in joins the step in which its copy lands, layer L of its prefill waiting for its group.
    /// 0: it waits for the step after its copy has completed.
    pub layers_per_group: u32,
    /// Link time one more readiness group adds to a swap-in (one more launch), microseconds.
    pub group_latency_us: f64,
    /// Longest a joining request may make the step's layers wait for its copy, as a share of
    /// the step: it would otherwise wait for the whole next step, and everyone in the batch
    /// waits with it.
    pub join_slack: f64,
    /// Give retention hints at release where a real engine knows the conversation continues
    /// (see `retention_hint`); the oracle never gets them.
    pub retention_hints: bool,
}

impl EngineConfig {
    pub fn new(hw: Hardware) -> Self {
        EngineConfig {
            hw,
            block_tokens: 16,
            max_batch_tokens: 4096,
            max_seqs: 256,
            sample_every_us: 5_000_000,
            gpu_blocks: None,
            host_blocks: None,
            give_up_wait_us: None,
            vllm_adapter_fraction: CacheConfig::default().vllm_adapter_fraction,
            layers_per_group: 4,
            group_latency_us: 3.0,
            join_slack: 0.5,
            retention_hints: false,
        }
    }
    pub fn gpu_blocks(&self) -> u32 {
        self.gpu_blocks.unwrap_or_else(|| self.hw.gpu_blocks(self.block_tokens))
    }
    pub fn host_blocks(&self) -> u32 {
        self.host_blocks.unwrap_or_else(|| self.hw.host_blocks(self.block_tokens))
    }
}

/// A backend that moves no bytes: each block stands for `real_block_bytes` on one GPU, and a
/// batch completes when the host link, one FIFO queue shared by every transfer, has carried it.
/// The GPU tier has one segment per model layer, so a grouped swap-in lands layer group by
/// layer group, each group one more launch. Blocking waits advance the engine clock (the engine
/// thread is stalled meanwhile).
pub struct TimingBackend {
    layout: TierLayout,
    host_blocks: u32,
    real_block_bytes: f64,
    link_bytes_per_us: f64,
    batch_latency_us: f64,
    group_latency_us: f64,
    /// The engine clock, microseconds.
    pub now: u64,
    link_free_at: u64,
    next: BatchId,
    pending: BTreeMap<BatchId, u64>,
    /// When each group of a grouped batch lands.
    group_done: HashMap<BatchId, Vec<u64>>,
    pub bytes_to_gpu: u64,
    pub bytes_to_host: u64,
    /// KV blocks copied host -> GPU (adapter uploads excluded).
    pub kv_blocks_to_gpu: u64,
    /// Microseconds the engine spent blocked in `wait`.
    pub stalled_us: u64,
}

impl TimingBackend {
    /// `group_latency_us`: link time one more readiness group costs a swap-in (its launch).
    pub fn new(
        gpu_blocks: u32,
        host_blocks: u32,
        real_block_bytes: f64,
        hw: &Hardware,
        group_latency_us: f64,
    ) -> Self {
        // One logical byte per block and layer: the cache keeps no real data, only ids.
        let segments = (0..hw.model.layers.max(1) as u64)
            .map(|l| Segment { base: (1 << 20) + l * gpu_blocks as u64, bytes_per_block: 1, stride: 1 })
            .collect();
        TimingBackend {
            layout: TierLayout::new(segments, gpu_blocks).expect("valid layout"),
            host_blocks,
            real_block_bytes,
            link_bytes_per_us: hw.gpu.link_bytes_per_s / 1e6,
            batch_latency_us: hw.link_batch_latency_s * 1e6,
            group_latency_us,
            now: 0,
            link_free_at: 0,
            next: 1,
            pending: BTreeMap::new(),
            group_done: HashMap::new(),
            bytes_to_gpu: 0,
            bytes_to_host: 0,
            kv_blocks_to_gpu: 0,
            stalled_us: 0,
        }
    }
    fn count_moves(&mut self, direction: Direction, blocks: usize) {
        let bytes = (blocks as f64 * self.real_block_bytes) as u64;
        match direction {
            Direction::GpuToHost => self.bytes_to_host += bytes,
            Direction::HostToGpu => {
                self.bytes_to_gpu += bytes;
                self.kv_blocks_to_gpu += blocks as u64;
            }
        }
    }
    fn enqueue(&mut self, blocks: usize) -> BatchId {
        let id = self.enqueue_groups(blocks, 1);
        self.group_done.remove(&id);
        id
    }
    /// Whether a batch in flight was submitted grouped (a swap-in, not an adapter upload).
    pub fn is_grouped(&self, batch: BatchId) -> bool {
        self.group_done.contains_key(&batch)
    }
    /// A batch whose bytes cross the link in `groups` equal parts, one after the other.
    fn enqueue_groups(&mut self, blocks: usize, groups: u32) -> BatchId {
        let bytes = blocks as f64 * self.real_block_bytes;
        let start = self.now.max(self.link_free_at) as f64 + self.batch_latency_us;
        let g = groups.max(1) as f64;
        let per_group = bytes / self.link_bytes_per_us / g + self.group_latency_us;
        let times: Vec<u64> = (1..=groups.max(1))
            .map(|k| (start + k as f64 * per_group - self.group_latency_us).ceil() as u64)
            .collect();
        let done = *times.last().expect("at least one group");
        self.link_free_at = done;
        let id = self.next;
        self.next += 1;
        self.pending.insert(id, done);
        self.group_done.insert(id, times);
        id
    }
    /// When group `group` of a batch in flight lands (the whole batch, for an ungrouped one).
    pub fn group_ready_at(&self, batch: BatchId, group: u32) -> Option<u64> {
        match self.group_done.get(&batch) {
            Some(t) => t.get(group as usize).or(t.last()).copied(),
            None => self.pending.get(&batch).copied(),
        }
    }
    /// When the next copy in flight completes.
    pub fn next_completion(&self) -> Option<u64> {
        self.pending.values().copied().filter(|&t| t > self.now).min()
    }
}

impl Backend for TimingBackend {
    fn name(&self) -> &str {
        "timing"
    }
    fn gpu_layout(&self) -> &TierLayout {
        &self.layout
    }
    fn host_blocks(&self) -> u32 {
        self.host_blocks
    }
    fn host_block_addr(&self, block: u32) -> u64 {
        block as u64
    }
    fn submit_moves(&mut self, direction: Direction, moves: &[BlockMove]) -> LibResult<BatchId> {
        self.count_moves(direction, moves.len());
        Ok(self.enqueue(moves.len()))
    }
    fn submit_moves_grouped(
        &mut self,
        direction: Direction,
        moves: &[BlockMove],
        groups: SegmentGroups,
    ) -> LibResult<BatchId> {
        self.check_groups(groups)?;
        self.count_moves(direction, moves.len());
        Ok(self.enqueue_groups(moves.len(), groups.count()))
    }
    fn groups_done(&mut self, batch: BatchId, groups: u32) -> u32 {
        let now = self.now;
        match self.group_done.get(&batch) {
            Some(t) => t.iter().take_while(|&&t| t <= now).count() as u32,
            None if self.pending.get(&batch).is_some_and(|&t| t <= now) => groups,
            None => 0,
        }
    }
    fn submit_upload(&mut self, bytes: &[u8], blocks: &[u32]) -> LibResult<BatchId> {
        let _ = bytes;
        self.bytes_to_gpu += (blocks.len() as f64 * self.real_block_bytes) as u64;
        Ok(self.enqueue(blocks.len()))
    }
    fn submit_device_copies(&mut self, pairs: &[(u32, u32)]) -> LibResult<BatchId> {
        // Device-local copies are not on the host link: done at once.
        let _ = pairs;
        let id = self.next;
        self.next += 1;
        self.pending.insert(id, self.now);
        Ok(id)
    }
    fn poll(&mut self, batch: BatchId) -> BatchState {
        match self.pending.get(&batch) {
            Some(&t) if t <= self.now => BatchState::Done,
            Some(_) => BatchState::Pending,
            None => BatchState::Failed(format!("unknown batch {batch}")),
        }
    }
    fn wait(&mut self, batch: BatchId, timeout_us: u64) -> BatchState {
        if let Some(&t) = self.pending.get(&batch) {
            let until = t.min(self.now + timeout_us);
            if until > self.now {
                self.stalled_us += until - self.now;
                self.now = until;
            }
        }
        self.poll(batch)
    }
    fn retire(&mut self, batch: BatchId) {
        self.pending.remove(&batch);
        self.group_done.remove(&batch);
    }
    fn read_gpu_block(&mut self, _block: u32, out: &mut [u8]) -> LibResult<()> {
        out.fill(0);
        Ok(())
    }
    fn write_gpu_block(&mut self, _block: u32, _data: &[u8]) -> LibResult<()> {
        Ok(())
    }
    fn read_host_block(&mut self, _block: u32, out: &mut [u8]) -> LibResult<()> {
        out.fill(0);
        Ok(())
    }
}

/// What one policy's run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct RunResult {
    pub policy: String,
    /// TTFT of every completed request, microseconds, in request order.
    pub ttft_us: Vec<u64>,
    pub tpot_mean_ms: f64,
    pub completed: u64,
    pub rejected: u64,
    pub throughput_rps: f64,
    pub prompt_tokens: u64,
    /// Prompt tokens found on the GPU side at match time.
    pub gpu_hit_tokens: u64,
    /// Prompt tokens loaded from the host tier.
    pub host_hit_tokens: u64,
    pub invalid_kv_fraction: f64,
    pub host_link_bytes: u64,
    pub adapter_loads: u64,
    pub swap_out_blocks: u64,
    pub swap_in_blocks: u64,
    pub preemptions: u64,
    pub stalled_ms: f64,
    /// Loading requests that joined the step their copy landed in.
    pub joined_loading: u64,
    /// Time steps spent with a layer waiting for its group to land, milliseconds.
    pub layer_wait_ms: f64,
    /// Simulated time from the first arrival to the last completion, seconds.
    pub sim_s: f64,
    /// The run stopped early: a request waited longer than `EngineConfig::give_up_wait_us`.
    pub gave_up: bool,
}

impl RunResult {
    pub fn ttft_ms_sorted(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.ttft_us.iter().map(|&t| t as f64 / 1e3).collect();
        v.sort_by(f64::total_cmp);
        v
    }
    pub fn ttft_mean_ms(&self) -> f64 {
        if self.ttft_us.is_empty() {
            return 0.0;
        }
        self.ttft_us.iter().sum::<u64>() as f64 / self.ttft_us.len() as f64 / 1e3
    }
    /// Nearest-rank percentile of TTFT, milliseconds.
    pub fn ttft_pct_ms(&self, p: f64) -> f64 {
        let v = self.ttft_ms_sorted();
        if v.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
        v[rank.min(v.len()) - 1]
    }
    pub fn gpu_hit_ratio(&self) -> f64 {
        ratio(self.gpu_hit_tokens, self.prompt_tokens)
    }
    pub fn host_hit_ratio(&self) -> f64 {
        ratio(self.host_hit_tokens, self.prompt_tokens)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        0.0
    } else {
        a as f64 / b as f64
    }
}

/// Future knowledge for the oracle: which requests read each prefix block and adapter.
struct Future {
    kv: HashMap<u128, Vec<u32>>,
    adapter: Vec<Vec<u32>>,
    arrival: Vec<u64>,
    /// Requests before this index have all been admitted (or are being served).
    cursor: u32,
}

impl Future {
    fn next(&self, list: &[u32]) -> u64 {
        let i = list.partition_point(|&r| r < self.cursor);
        list.get(i).map_or(u64::MAX, |&r| self.arrival[r as usize])
    }
}

impl NextUse for Future {
    fn kv_next_use(&self, key: u128) -> u64 {
        self.kv.get(&key).map_or(u64::MAX, |l| self.next(l))
    }
    fn adapter_next_use(&self, adapter_id: u64) -> u64 {
        self.adapter.get(adapter_id as usize - 1).map_or(u64::MAX, |l| self.next(l))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Loading,
    Prefill,
    Decode,
}

struct Seq {
    idx: u32,
    cache_req: u64,
    phase: Phase,
    /// Tokens to prefill (prompt, plus the output produced before a preemption).
    target: u32,
    /// Tokens whose KV exists.
    computed: u32,
    committed: u32,
    /// Tokens the allocated blocks can hold.
    cap: u32,
    order: u64,
}

#[derive(Default, Clone)]
struct Rec {
    first_token: Option<u64>,
    finish: Option<u64>,
    generated: u32,
    admitted: bool,
}

/// Waiting requests passed over per step when the head cannot be admitted.
const ADMIT_LOOKAHEAD: usize = 16;

fn adapter_id(a: u32) -> u64 {
    a as u64 + 1
}

/// The retention hint an engine can give when a turn ends and its conversation continues:
/// an agent framework knows a tool call is pending and how long its tools take (the
/// scenario's mean think time; kept as long again past it), a chat server knows the session
/// is still open (kept until the session timeout). Neither knows when the turn comes back.
fn retention_hint(spec: &WorkloadSpec, now: u64) -> RetentionHint {
    if spec.name == "agent" {
        let tool_us = (spec.think_mean_s * 1e6) as u64;
        RetentionHint { priority: 1.0, duration_us: tool_us, expect_back_us: now + tool_us.max(1) }
    } else {
        let open_us = (spec.session_timeout_s / spec.rate_mult * 1e6) as u64;
        RetentionHint { priority: 1.0, duration_us: open_us.max(1), expect_back_us: 0 }
    }
}

/// Runs one policy over the workload. `progress` is called now and then with the simulated
/// time in seconds.
pub fn run(
    wl: &Workload,
    spec: &WorkloadSpec,
    ec: &EngineConfig,
    policy: SimPolicy,
    progress: &mut dyn FnMut(f64),
) -> Result<RunResult, String> {
    let hw = &ec.hw;
    let bt = ec.block_tokens;
    let real_bb = hw.kv_block_bytes(bt);
    let gpu_blocks = ec.gpu_blocks();
    let host_blocks = policy.host_blocks(ec.host_blocks(), gpu_blocks, ec.vllm_adapter_fraction);
    let mut io = TimingBackend::new(gpu_blocks, host_blocks, real_bb, hw, ec.group_latency_us);
    // A block is one logical byte per layer.
    let logical_bb = io.gpu_layout().block_bytes();
    let mut cfg = CacheConfig {
        block_tokens: bt,
        vllm_adapter_fraction: ec.vllm_adapter_fraction,
        // Cost hints in the cache's units.
        link_bytes_per_us: hw.gpu.link_bytes_per_s / 1e6 / real_bb * logical_bb as f64,
        prefill_tokens_per_us: hw.prefill_tokens_per_us(ec.max_batch_tokens),
        segments_per_group: ec.layers_per_group,
        ..CacheConfig::default()
    };
    policy.configure(&mut cfg);
    let mut core = CacheCore::new(cfg, logical_bb, gpu_blocks, host_blocks).map_err(|e| e.to_string())?;
    let mut adapter_blocks = Vec::new();
    for a in 0..spec.adapters.max(1) {
        let blocks = (hw.adapter_bytes(spec.rank_of(a)) / real_bb).ceil().max(1.0) as usize;
        adapter_blocks.push(blocks as u32);
        core.register_adapter(adapter_id(a), &vec![0u8; blocks * logical_bb as usize], spec.rank_of(a), 0)
            .map_err(|e| e.to_string())?;
    }
    let reqs = &wl.requests;
    let n = reqs.len();
    let layers = hw.model.layers.max(1);
    // Whether each request's conversation has a later turn (the user stays, or the tool call
    // returns): what an engine holding the session knows.
    let continues: Vec<bool> = if ec.retention_hints && policy != SimPolicy::Oracle {
        let turns: HashSet<(u32, u32)> = reqs.iter().map(|r| (r.session, r.turn)).collect();
        reqs.iter().map(|r| turns.contains(&(r.session, r.turn + 1))).collect()
    } else {
        vec![false; n]
    };
    let mut future = if policy == SimPolicy::Oracle {
        let mut kv: HashMap<u128, Vec<u32>> = HashMap::new();
        let mut adapter = vec![Vec::new(); spec.adapters.max(1) as usize];
        for (i, r) in reqs.iter().enumerate() {
            let toks = &wl.tokens(r)[..r.prompt as usize];
            for k in core.prefix_keys(adapter_id(r.adapter), 0, toks) {
                kv.entry(k).or_default().push(i as u32);
            }
            adapter[r.adapter as usize].push(i as u32);
        }
        Some(Future { kv, adapter, arrival: reqs.iter().map(|r| r.arrival_us).collect(), cursor: 0 })
    } else {
        None
    };

    let mut recs = vec![Rec::default(); n];
    let mut waiting: VecDeque<u32> = VecDeque::new();
    let mut running: Vec<Seq> = Vec::new();
    let mut next_arrival = 0usize;
    let mut done = 0usize;
    let mut order = 0u64;
    let mut res = RunResult {
        policy: policy.name().to_string(),
        ttft_us: Vec::new(),
        tpot_mean_ms: 0.0,
        completed: 0,
        rejected: 0,
        throughput_rps: 0.0,
        prompt_tokens: 0,
        gpu_hit_tokens: 0,
        host_hit_tokens: 0,
        invalid_kv_fraction: 0.0,
        host_link_bytes: 0,
        adapter_loads: 0,
        swap_out_blocks: 0,
        swap_in_blocks: 0,
        preemptions: 0,
        stalled_ms: 0.0,
        joined_loading: 0,
        layer_wait_ms: 0.0,
        sim_s: 0.0,
        gave_up: false,
    };
    let (mut invalid_sum, mut invalid_n) = (0.0, 0u64);
    let mut next_sample = 0u64;
    let mut iter = 0u64;
    let err = |e: libra::error::Error| e.to_string();

    while done < n {
        iter += 1;
        if iter % 512 == 0 {
            progress(io.now as f64 / 1e6);
        }
        while next_arrival < n && reqs[next_arrival].arrival_us <= io.now {
            waiting.push_back(next_arrival as u32);
            next_arrival += 1;
        }
        if let (Some(limit), Some(&w)) = (ec.give_up_wait_us, waiting.front()) {
            if io.now.saturating_sub(reqs[w as usize].arrival_us) > limit {
                res.gave_up = true;
                break;
            }
        }
        if let Some(f) = future.as_mut() {
            f.cursor = waiting.iter().copied().min().unwrap_or(next_arrival as u32);
        }
        if io.now >= next_sample {
            let st = core.stats();
            if st.kv_nodes_gpu > 0 {
                invalid_sum += st.invalid_kv_blocks as f64 / st.kv_nodes_gpu as f64;
                invalid_n += 1;
            }
            next_sample = io.now + ec.sample_every_us;
        }
        let prefill_bound = !waiting.is_empty() || running.iter().any(|s| s.phase == Phase::Prefill);
        let now = io.now;
        match future.as_ref() {
            Some(f) => Oracle { core: &mut core, io: &mut io, hints: f }
                .step(now, running.len() as u32, prefill_bound)
                .map_err(err)?,
            None => core.step(&mut io, now, running.len() as u32, prefill_bound).map_err(err)?,
        };

        // Copies that completed make their requests ready.
        for s in running.iter_mut().filter(|s| s.phase == Phase::Loading) {
            match core.poll(&mut io, s.cache_req).map_err(err)? {
                Readiness::Ready => s.phase = Phase::Prefill,
                Readiness::Pending => {}
                Readiness::Failed(why) => return Err(format!("a copy failed in the timing backend: {why}")),
            }
        }

        let decoding = running.iter().filter(|s| s.phase == Phase::Decode).count() as u32;
        let mut budget = ec.max_batch_tokens.saturating_sub(decoding);
        let mut prefill_demand: u32 = running
            .iter()
            .filter(|s| s.phase == Phase::Prefill)
            .map(|s| s.target - s.computed.min(s.target))
            .sum();

        // Admission, first come first served, while the step has prefill budget left. A request
        // that cannot get memory (or, under a static split, an adapter slot) is passed over for
        // a few later ones, as vLLM's scheduler skips requests whose LoRA cannot be scheduled.
        let mut pos = 0usize;
        let mut skipped = 0usize;
        let mut held: Vec<(u64, u64)> = Vec::new();
        let mut batch_adapters: Vec<u32> = Vec::new();
        if policy.conservative_admission() {
            for s in &running {
                let r = &reqs[s.idx as usize];
                let g = recs[s.idx as usize].generated;
                held.push(((r.prompt + g) as u64, r.output.saturating_sub(g + 1) as u64));
                batch_adapters.push(r.adapter);
            }
        }
        while let Some(&idx) = waiting.get(pos) {
            if running.len() >= ec.max_seqs as usize || prefill_demand >= budget || skipped > ADMIT_LOOKAHEAD
            {
                break;
            }
            let r = &reqs[idx as usize];
            let rec = &recs[idx as usize];
            let target = r.prompt + rec.generated;
            let toks = &wl.tokens(r)[..target as usize];
            if policy.conservative_admission() {
                // S-LoRA admits in order and stops at the first request that does not fit.
                let mut seqs = held.clone();
                seqs.push((target as u64 + 1, r.output.saturating_sub(rec.generated + 1) as u64));
                let mut ads = batch_adapters.clone();
                ads.push(r.adapter);
                ads.sort_unstable();
                ads.dedup();
                let ad_tokens: u64 = ads.iter().map(|&a| adapter_blocks[a as usize] as u64 * bt as u64).sum();
                if !peers::conservative_admits(&mut seqs, gpu_blocks as u64 * bt as u64, ad_tokens, bt as u64)
                {
                    break;
                }
                held = seqs;
                batch_adapters = ads;
            }
            if let Some(f) = future.as_ref() {
                let absent = core.adapter_gpu_blocks(adapter_id(r.adapter)).map_err(err)?.is_empty();
                let need = target.div_ceil(bt) + if absent { adapter_blocks[r.adapter as usize] } else { 0 };
                let now = io.now;
                if (Oracle { core: &mut core, io: &mut io, hints: f }).make_room(need as usize, now).is_err()
                {
                    pos += 1;
                    skipped += 1;
                    continue;
                }
            }
            let h2d_before = io.kv_blocks_to_gpu;
            let now = io.now;
            let m = match core.match_prefix(&mut io, adapter_id(r.adapter), 0, toks, now) {
                Ok(m) => m,
                Err(_) => {
                    if running.is_empty() && io.next_completion().is_none() {
                        // Cannot fit even on an idle engine.
                        waiting.remove(pos);
                        res.rejected += 1;
                        done += 1;
                        continue;
                    }
                    pos += 1;
                    skipped += 1;
                    continue;
                }
            };
            let loaded = ((io.kv_blocks_to_gpu - h2d_before) * bt as u64).min(m.cached_tokens as u64);
            let cached = m.cached_tokens as u32;
            let now = io.now;
            let blocks = match core.allocate(&mut io, m.request, (target - cached) as usize, now) {
                Ok(b) => b,
                Err(_) => {
                    let now = io.now;
                    core.release(&mut io, m.request, now).map_err(err)?;
                    if running.is_empty() && io.next_completion().is_none() {
                        waiting.remove(pos);
                        res.rejected += 1;
                        done += 1;
                        continue;
                    }
                    pos += 1;
                    skipped += 1;
                    continue;
                }
            };
            waiting.remove(pos);
            let rec = &mut recs[idx as usize];
            if !rec.admitted {
                rec.admitted = true;
                res.prompt_tokens += r.prompt as u64;
                let hit = (cached.min(r.prompt)) as u64;
                res.host_hit_tokens += loaded.min(hit);
                res.gpu_hit_tokens += hit - loaded.min(hit);
            }
            // A fully cached prompt still recomputes its last token to get logits.
            let computed = cached.min(target - 1);
            order += 1;
            let seq = Seq {
                idx,
                cache_req: m.request,
                phase: if m.ready { Phase::Prefill } else { Phase::Loading },
                target,
                computed,
                committed: cached,
                cap: cached + blocks.len() as u32 * bt,
                order,
            };
            if m.ready {
                prefill_demand += target - computed;
            }
            running.push(seq);
        }

        // Decode slots: a sequence crossing a block boundary needs a new block; when none can
        // be had, the youngest sequence is preempted (vLLM's recompute preemption).
        let mut i = 0;
        running.sort_by_key(|s| s.order);
        while i < running.len() {
            if running[i].phase != Phase::Decode || running[i].computed < running[i].cap {
                i += 1;
                continue;
            }
            if let Some(f) = future.as_ref() {
                let now = io.now;
                let _ = Oracle { core: &mut core, io: &mut io, hints: f }.make_room(1, now);
            }
            let now = io.now;
            match core.allocate(&mut io, running[i].cache_req, bt as usize, now) {
                Ok(_) => {
                    running[i].cap += bt;
                    i += 1;
                }
                Err(_) => {
                    let victim = running.len() - 1;
                    let s = running.remove(victim);
                    let now = io.now;
                    core.release(&mut io, s.cache_req, now).map_err(err)?;
                    waiting.push_front(s.idx);
                    res.preemptions += 1;
                    if victim == i {
                        continue;
                    }
                }
            }
        }

        // Build the step: every decoding sequence, then prefill chunks in admission order.
        let mut load = StepLoad::default();
        let mut chunks: Vec<(usize, u32)> = Vec::new();
        let mut adapters_in_batch: Vec<u32> = Vec::new();
        for (k, s) in running.iter().enumerate() {
            let r = &reqs[s.idx as usize];
            let rank = spec.rank_of(r.adapter);
            match s.phase {
                Phase::Decode => {
                    load.decode_seqs += 1;
                    load.decode_context += s.computed as u64;
                    load.lora_param_tokens += hw.model.lora_params(rank);
                    adapters_in_batch.push(r.adapter);
                }
                Phase::Prefill if budget > 0 => {
                    let c = (s.target - s.computed).min(budget);
                    budget -= c;
                    load.prefill.push((c, s.computed));
                    load.lora_param_tokens += c as f64 * hw.model.lora_params(rank);
                    adapters_in_batch.push(r.adapter);
                    chunks.push((k, c));
                }
                _ => {}
            }
        }
        // Loading requests join the step in which their copies land (layer-wise readiness), as
        // long as their layers would wait at most `join_slack` of the step for their groups.
        let mut gates: Vec<u64> = Vec::new();
        let mut joined: Vec<usize> = Vec::new();
        let mut join_at = u64::MAX;
        if ec.layers_per_group > 0 {
            for (k, s) in running.iter().enumerate() {
                if s.phase != Phase::Loading || budget == 0 {
                    continue;
                }
                let r = &reqs[s.idx as usize];
                let Some(landing) =
                    layerwise::landing_times(&core, &io, s.cache_req, layers, ec.layers_per_group)
                        .map_err(err)?
                else {
                    continue;
                };
                let c = (s.target - s.computed).min(budget);
                let mut trial = load.clone();
                trial.prefill.push((c, s.computed));
                trial.lora_param_tokens += c as f64 * hw.model.lora_params(spec.rank_of(r.adapter));
                let mut with: Vec<u32> = adapters_in_batch.iter().copied().chain([r.adapter]).collect();
                with.sort_unstable();
                with.dedup();
                trial.adapter_bytes = with.iter().map(|&a| hw.adapter_bytes(spec.rank_of(a))).sum();
                let dt = (hw.step_time_s(&trial) * 1e6).ceil() as u64;
                let (ov, lt) = (hw.step_overhead_s * 1e6, hw.layer_time_s(&trial) * 1e6);
                let mut merged = gates.clone();
                layerwise::merge_gates(&mut merged, &landing);
                let slack = (dt as f64 * ec.join_slack) as u64;
                let stall = layerwise::stalled_end(io.now, ov, lt, &merged).saturating_sub(io.now + dt);
                if stall > slack {
                    // Not in this step; an idle engine starts the step its copy lands in.
                    let t = layerwise::earliest_start(ov, lt, &landing).saturating_sub(slack);
                    join_at = join_at.min(t.max(io.now + 1));
                    continue;
                }
                budget -= c;
                load = trial;
                adapters_in_batch.push(r.adapter);
                chunks.push((k, c));
                layerwise::merge_gates(&mut gates, &landing);
                joined.push(k);
            }
            for &k in &joined {
                running[k].phase = Phase::Prefill;
            }
            res.joined_loading += joined.len() as u64;
        }
        if load.decode_seqs == 0 && chunks.is_empty() {
            // Idle: jump to the next arrival or copy completion.
            let mut next = join_at;
            if next_arrival < n {
                next = next.min(reqs[next_arrival].arrival_us);
            }
            if let Some(t) = io.next_completion() {
                next = next.min(t);
            }
            if next == u64::MAX {
                if waiting.is_empty() && running.is_empty() {
                    break;
                }
                // A copy may have landed while this step's admissions waited on the link (a
                // blocking swap-out advances the clock): poll again before calling it a stall.
                let mut ready = false;
                for s in running.iter_mut().filter(|s| s.phase == Phase::Loading) {
                    if core.poll(&mut io, s.cache_req).map_err(err)? == Readiness::Ready {
                        s.phase = Phase::Prefill;
                        ready = true;
                    }
                }
                if ready {
                    continue;
                }
                return Err(format!(
                    "{} policy stalled at {:.3} s with {} waiting and {} running requests",
                    policy.name(),
                    io.now as f64 / 1e6,
                    waiting.len(),
                    running.len()
                ));
            }
            io.now = next.max(io.now + 1);
            continue;
        }
        adapters_in_batch.sort_unstable();
        adapters_in_batch.dedup();
        load.adapter_bytes = adapters_in_batch.iter().map(|&a| hw.adapter_bytes(spec.rank_of(a))).sum();
        let dt = (hw.step_time_s(&load) * 1e6).ceil() as u64;
        let end = if gates.is_empty() {
            io.now + dt
        } else {
            let ov = hw.step_overhead_s * 1e6;
            let end =
                layerwise::stalled_end(io.now, ov, hw.layer_time_s(&load) * 1e6, &gates).max(io.now + dt);
            res.layer_wait_ms += (end - io.now - dt) as f64 / 1e3;
            end
        };
        io.now = end.max(io.now + 1);
        let t_end = io.now;
        // The joiners' copies have landed: finish them, so their blocks can be shared.
        for &k in &joined {
            core.poll(&mut io, running[k].cache_req).map_err(err)?;
        }

        for (k, c) in chunks {
            running[k].computed += c;
        }
        for s in running.iter_mut() {
            match s.phase {
                Phase::Decode => {
                    s.computed += 1;
                    recs[s.idx as usize].generated += 1;
                }
                Phase::Prefill if s.computed >= s.target => {
                    s.computed = s.target;
                    s.phase = Phase::Decode;
                    let rec = &mut recs[s.idx as usize];
                    rec.generated += 1;
                    rec.first_token.get_or_insert(t_end);
                }
                _ => {}
            }
        }
        // Commit filled blocks so later requests can share them; finish completed requests.
        let mut k = 0;
        while k < running.len() {
            let s = &mut running[k];
            if s.phase == Phase::Loading {
                k += 1;
                continue;
            }
            let r = &reqs[s.idx as usize];
            let fill = s.computed / bt * bt;
            if fill > s.committed {
                let toks = &wl.tokens(r)[s.committed as usize..fill as usize];
                match core.commit(s.cache_req, toks, t_end) {
                    Ok(_) => s.committed = fill,
                    // A block it would share is still being copied in for another request,
                    // which will hold the same tokens: commit after a later step, or never if
                    // this request ends first.
                    Err(e) if e.status == libra::error::Status::LIBRA_ERR_BUSY => {}
                    Err(e) => return Err(err(e)),
                }
            }
            let rec = &mut recs[s.idx as usize];
            if rec.generated >= r.output {
                rec.finish = Some(t_end);
                let s = running.remove(k);
                if continues[s.idx as usize] {
                    core.set_retention(s.cache_req, retention_hint(spec, t_end), t_end).map_err(err)?;
                }
                core.release(&mut io, s.cache_req, t_end).map_err(err)?;
                done += 1;
            } else {
                k += 1;
            }
        }
    }
    progress(io.now as f64 / 1e6);

    let st = core.stats();
    let mut tpot_sum = 0.0;
    let mut tpot_n = 0u64;
    let mut last_finish = 0u64;
    for (i, rec) in recs.iter().enumerate() {
        let (Some(ft), Some(fin)) = (rec.first_token, rec.finish) else { continue };
        let r = &reqs[i];
        res.ttft_us.push(ft - r.arrival_us);
        res.completed += 1;
        last_finish = last_finish.max(fin);
        if r.output > 1 {
            tpot_sum += (fin - ft) as f64 / (r.output - 1) as f64 / 1e3;
            tpot_n += 1;
        }
    }
    let first = reqs.first().map_or(0, |r| r.arrival_us);
    res.sim_s = last_finish.saturating_sub(first) as f64 / 1e6;
    res.tpot_mean_ms = if tpot_n > 0 { tpot_sum / tpot_n as f64 } else { 0.0 };
    res.throughput_rps = if res.sim_s > 0.0 { res.completed as f64 / res.sim_s } else { 0.0 };
    res.invalid_kv_fraction = if invalid_n > 0 { invalid_sum / invalid_n as f64 } else { 0.0 };
    res.host_link_bytes = io.bytes_to_gpu + io.bytes_to_host;
    res.adapter_loads = st.adapter_loads;
    res.swap_out_blocks = st.swap_out_blocks;
    res.swap_in_blocks = st.swap_in_blocks;
    res.stalled_ms = io.stalled_us as f64 / 1e3;
    core.check_invariants().map_err(|e| format!("{} policy broke an invariant: {e}", policy.name()))?;
    Ok(res)
}
