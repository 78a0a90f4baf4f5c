//! The engine: continuous batching with chunked prefill over `CacheCore`. Every cache decision
//! (what is cached, what is evicted, swapped, prefetched or loaded) is the library's; the
//! engine only schedules requests, charges step times and moves the clock. Copies complete
//! when the simulated host link finishes them.
//!
//! This file holds the knobs, the engine's state and the step loop; `sched` decides which
//! requests run (admission, block growth, preemption), `step` what one step runs and how long
//! it takes, `timing` is the host link, `knowledge` what the engine knows of the future and
//! `result` what a run measured.
mod knowledge;
mod result;
mod sched;
#[cfg(test)]
mod sched_tests;
mod step;
mod timing;

pub use self::result::RunResult;
pub use self::timing::TimingBackend;
pub use crate::peers::SimPolicy;

use self::knowledge::Future;
use crate::hw::Hardware;
use crate::workload::{Workload, WorkloadSpec};
use libra::backend::Backend;
use libra::cache::{CacheConfig, CacheCore};
use std::collections::VecDeque;

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
    /// Most delay a joining request may add to the batch, as a share of the step: its layers'
    /// wait for their groups times the sequences already in the batch, each of which waits
    /// with it. The joiner gains about a step (it would otherwise wait for the next one), so
    /// at 1.0 a request joins when the batch loses less than it gains.
    pub join_slack: f64,
    /// Give retention hints at release where a real engine knows the conversation continues
    /// (see `retention_hint`), and say that a turn's own blocks will not be read again where
    /// it knows the conversation ended (`expect_no_reuse`, past the shared system prompt); the
    /// oracle never gets either.
    pub retention_hints: bool,
    /// Adapters are registered layer by layer, so that policies that can (`libra`, the oracle)
    /// let layer L of a loading request wait only for its group of the adapter's upload.
    /// False: every policy waits for the whole adapter.
    pub layered_adapters: bool,
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
            join_slack: 1.0,
            retention_hints: false,
            layered_adapters: true,
        }
    }
    pub fn gpu_blocks(&self) -> u32 {
        self.gpu_blocks.unwrap_or_else(|| self.hw.gpu_blocks(self.block_tokens))
    }
    pub fn host_blocks(&self) -> u32 {
        self.host_blocks.unwrap_or_else(|| self.hw.host_blocks(self.block_tokens))
    }
}

/// Where a running request is: its prefix still on the host link, prefilling, or decoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Loading,
    Prefill,
    Decode,
}

/// A request being served.
struct Seq {
    /// Index in the workload's requests.
    idx: u32,
    /// The cache's request id.
    cache_req: u64,
    phase: Phase,
    /// Tokens to prefill (prompt, plus the output produced before a preemption).
    target: u32,
    /// Tokens whose KV exists.
    computed: u32,
    /// Tokens committed to the cache, where later requests can share them.
    committed: u32,
    /// Tokens the allocated blocks can hold.
    cap: u32,
    /// Admission order: the youngest is preempted first.
    order: u64,
}

/// What happened to one request so far.
#[derive(Default, Clone)]
struct Rec {
    first_token: Option<u64>,
    finish: Option<u64>,
    generated: u32,
    admitted: bool,
}

/// One policy's run in progress: the cache, the clock and every request's state.
struct Sim<'a> {
    wl: &'a Workload,
    spec: &'a WorkloadSpec,
    ec: &'a EngineConfig,
    policy: SimPolicy,
    gpu_blocks: u32,
    core: CacheCore,
    io: TimingBackend,
    /// Blocks each adapter's weights take.
    adapter_blocks: Vec<u32>,
    /// Whether each request's conversation has a later turn the engine knows of.
    continues: Vec<bool>,
    /// The oracle's future; `None` for every other policy.
    future: Option<Future>,
    recs: Vec<Rec>,
    waiting: VecDeque<u32>,
    running: Vec<Seq>,
    next_arrival: usize,
    done: usize,
    /// Admissions so far: a sequence's `order`.
    order: u64,
    res: RunResult,
    invalid_sum: f64,
    invalid_n: u64,
    next_sample: u64,
}

fn adapter_id(a: u32) -> u64 {
    a as u64 + 1
}

fn err(e: libra::error::Error) -> String {
    e.to_string()
}

impl<'a> Sim<'a> {
    /// The cache and the host link sized for `policy`, every adapter registered.
    fn new(
        wl: &'a Workload,
        spec: &'a WorkloadSpec,
        ec: &'a EngineConfig,
        policy: SimPolicy,
    ) -> Result<Self, String> {
        let hw = &ec.hw;
        let bt = ec.block_tokens;
        let real_bb = hw.kv_block_bytes(bt);
        let gpu_blocks = ec.gpu_blocks();
        let host_blocks = policy.host_blocks(ec.host_blocks(), gpu_blocks, ec.vllm_adapter_fraction);
        let io = TimingBackend::new(gpu_blocks, host_blocks, real_bb, hw, ec.group_latency_us);
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
        cfg.layered_adapters = ec.layered_adapters && policy.layered_adapters();
        let mut core = CacheCore::new(cfg, logical_bb, gpu_blocks, host_blocks).map_err(err)?;
        let mut adapter_blocks = Vec::new();
        for a in 0..spec.adapters.max(1) {
            let blocks = (hw.adapter_bytes(spec.rank_of(a)) / real_bb).ceil().max(1.0) as usize;
            adapter_blocks.push(blocks as u32);
            core.register_adapter(
                adapter_id(a),
                &vec![0u8; blocks * logical_bb as usize],
                spec.rank_of(a),
                0,
            )
            .map_err(err)?;
        }
        let n = wl.requests.len();
        let continues = knowledge::continues(&wl.requests, ec.retention_hints && !policy.knows_the_future());
        let future =
            policy.knows_the_future().then(|| Future::of(wl, spec, &core, policy == SimPolicy::Oracle));
        Ok(Sim {
            wl,
            spec,
            ec,
            policy,
            gpu_blocks,
            core,
            io,
            adapter_blocks,
            continues,
            future,
            recs: vec![Rec::default(); n],
            waiting: VecDeque::new(),
            running: Vec::new(),
            next_arrival: 0,
            done: 0,
            order: 0,
            res: RunResult::new(policy.name()),
            invalid_sum: 0.0,
            invalid_n: 0,
            next_sample: 0,
        })
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
    let mut sim = Sim::new(wl, spec, ec, policy)?;
    let n = wl.requests.len();
    let mut iter = 0u64;
    while sim.done < n {
        iter += 1;
        if iter % 512 == 0 {
            progress(sim.io.now as f64 / 1e6);
        }
        if !sim.arrive() {
            sim.res.gave_up = true;
            break;
        }
        sim.sample_invalid_kv();
        sim.cache_step()?;
        let budget = sim.schedule()?;
        let mut batch = sim.batch(budget);
        sim.join_loading(&mut batch)?;
        if batch.is_empty() {
            if sim.idle(batch.join_at)? {
                continue;
            }
            break;
        }
        sim.execute(batch)?;
    }
    progress(sim.io.now as f64 / 1e6);
    sim.finish()
}
