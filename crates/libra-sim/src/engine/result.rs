//! What a run measured: the per-request records and the cache's counters turned into one
//! policy's figures, and the invalid-KV share sampled while it runs.
use super::Sim;

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
    /// Nothing measured yet.
    pub(super) fn new(policy: &str) -> Self {
        RunResult {
            policy: policy.to_string(),
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
        }
    }
    /// Runs of one policy on independent workload samples taken as one: TTFT figures over all
    /// their requests, counts and times summed, TPOT weighted by completed requests and the
    /// invalid-KV share averaged. Given up if any run was.
    pub fn pool(runs: &[RunResult]) -> RunResult {
        let Some(first) = runs.first() else { return RunResult::new("") };
        let mut p = RunResult::new(&first.policy);
        let mut tpot_weighted = 0.0;
        for r in runs {
            p.ttft_us.extend_from_slice(&r.ttft_us);
            tpot_weighted += r.tpot_mean_ms * r.completed as f64;
            p.completed += r.completed;
            p.rejected += r.rejected;
            p.prompt_tokens += r.prompt_tokens;
            p.gpu_hit_tokens += r.gpu_hit_tokens;
            p.host_hit_tokens += r.host_hit_tokens;
            p.invalid_kv_fraction += r.invalid_kv_fraction / runs.len() as f64;
            p.host_link_bytes += r.host_link_bytes;
            p.adapter_loads += r.adapter_loads;
            p.swap_out_blocks += r.swap_out_blocks;
            p.swap_in_blocks += r.swap_in_blocks;
            p.preemptions += r.preemptions;
            p.stalled_ms += r.stalled_ms;
            p.joined_loading += r.joined_loading;
            p.layer_wait_ms += r.layer_wait_ms;
            p.sim_s += r.sim_s;
            p.gave_up |= r.gave_up;
        }
        p.tpot_mean_ms = if p.completed > 0 { tpot_weighted / p.completed as f64 } else { 0.0 };
        p.throughput_rps = if p.sim_s > 0.0 { p.completed as f64 / p.sim_s } else { 0.0 };
        p
    }

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

impl Sim<'_> {
    /// Samples the share of the GPU tier's KV blocks that are invalid, every
    /// `EngineConfig::sample_every_us`.
    pub(super) fn sample_invalid_kv(&mut self) {
        if self.io.now < self.next_sample {
            return;
        }
        let st = self.core.stats();
        if st.kv_nodes_gpu > 0 {
            self.invalid_sum += st.invalid_kv_blocks as f64 / st.kv_nodes_gpu as f64;
            self.invalid_n += 1;
        }
        self.next_sample = self.io.now + self.ec.sample_every_us;
    }

    /// The run's figures, once the cache's invariants are checked.
    pub(super) fn finish(self) -> Result<RunResult, String> {
        let reqs = &self.wl.requests;
        let mut res = self.res;
        let st = self.core.stats();
        let mut tpot_sum = 0.0;
        let mut tpot_n = 0u64;
        let mut last_finish = 0u64;
        for (i, rec) in self.recs.iter().enumerate() {
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
        res.invalid_kv_fraction =
            if self.invalid_n > 0 { self.invalid_sum / self.invalid_n as f64 } else { 0.0 };
        res.host_link_bytes = self.io.bytes_to_gpu + self.io.bytes_to_host;
        res.adapter_loads = st.adapter_loads;
        res.swap_out_blocks = st.swap_out_blocks;
        res.swap_in_blocks = st.swap_in_blocks;
        res.stalled_ms = self.io.stalled_us as f64 / 1e3;
        self.core
            .check_invariants()
            .map_err(|e| format!("{} policy broke an invariant: {e}", self.policy.name()))?;
        Ok(res)
    }
}
