//! What one step runs and how long it takes: every decoding sequence, prefill chunks in
//! admission order, and loading requests whose copies land in time to join (layer-wise
//! readiness). The step's time comes from the roofline model, stretched where a layer waits
//! for its group to land; then sequences advance, filled blocks are committed and finished
//! requests released.
use super::knowledge::retention_hint;
use super::{err, Phase, Sim};
use crate::hw::StepLoad;
use crate::layerwise;
use libra::cache::Readiness;
use libra::error::Status;

/// One step's batch.
pub(super) struct Batch {
    load: StepLoad,
    /// (index in the running list, tokens) of every prefill chunk.
    chunks: Vec<(usize, u32)>,
    /// Adapters the batch uses, with repeats.
    adapters: Vec<u32>,
    /// When each readiness group the joiners wait for lands (see `layerwise`).
    gates: Vec<u64>,
    /// Running-list indices of the loading requests that joined.
    joined: Vec<usize>,
    /// Prefill tokens the step can still take.
    budget: u32,
    /// When an idle engine should start the step a loading request's copy lands in.
    pub(super) join_at: u64,
}

impl Batch {
    /// Nothing to run: no decoding sequence and no prefill chunk.
    pub(super) fn is_empty(&self) -> bool {
        self.load.decode_seqs == 0 && self.chunks.is_empty()
    }
}

impl Sim<'_> {
    /// The step's batch: every decoding sequence, then prefill chunks in admission order
    /// within `budget` tokens.
    pub(super) fn batch(&self, mut budget: u32) -> Batch {
        let hw = &self.ec.hw;
        let mut load = StepLoad::default();
        let mut chunks: Vec<(usize, u32)> = Vec::new();
        let mut adapters: Vec<u32> = Vec::new();
        for (k, s) in self.running.iter().enumerate() {
            let r = &self.wl.requests[s.idx as usize];
            let rank = self.spec.rank_of(r.adapter);
            match s.phase {
                Phase::Decode => {
                    load.decode_seqs += 1;
                    load.decode_context += s.computed as u64;
                    load.lora_param_tokens += hw.model.lora_params(rank);
                    adapters.push(r.adapter);
                }
                Phase::Prefill if budget > 0 => {
                    let c = (s.target - s.computed).min(budget);
                    budget -= c;
                    load.prefill.push((c, s.computed));
                    load.lora_param_tokens += c as f64 * hw.model.lora_params(rank);
                    adapters.push(r.adapter);
                    chunks.push((k, c));
                }
                _ => {}
            }
        }
        Batch { load, chunks, adapters, gates: Vec::new(), joined: Vec::new(), budget, join_at: u64::MAX }
    }

    /// Loading requests join the step in which their copies land (layer-wise readiness), as
    /// long as the wait they add (their layers' stall times the sequences in the batch) stays
    /// within `join_slack` of the step.
    pub(super) fn join_loading(&mut self, b: &mut Batch) -> Result<(), String> {
        let (ec, spec) = (self.ec, self.spec);
        if ec.layers_per_group == 0 {
            return Ok(());
        }
        let hw = &ec.hw;
        let layers = hw.model.layers.max(1);
        let now = self.io.now;
        for (k, s) in self.running.iter().enumerate() {
            if s.phase != Phase::Loading || b.budget == 0 {
                continue;
            }
            let r = &self.wl.requests[s.idx as usize];
            let Some(landing) =
                layerwise::landing_times(&self.core, &self.io, s.cache_req, layers, ec.layers_per_group)
                    .map_err(err)?
            else {
                continue;
            };
            let c = (s.target - s.computed).min(b.budget);
            let mut trial = b.load.clone();
            trial.prefill.push((c, s.computed));
            trial.lora_param_tokens += c as f64 * hw.model.lora_params(spec.rank_of(r.adapter));
            let mut with: Vec<u32> = b.adapters.iter().copied().chain([r.adapter]).collect();
            with.sort_unstable();
            with.dedup();
            trial.adapter_bytes = with.iter().map(|&a| hw.adapter_bytes(spec.rank_of(a))).sum();
            let dt = (hw.step_time_s(&trial) * 1e6).ceil() as u64;
            let (ov, lt) = (hw.step_overhead_s * 1e6, hw.layer_time_s(&trial) * 1e6);
            let mut merged = b.gates.clone();
            layerwise::merge_gates(&mut merged, &landing);
            let in_batch = b.load.decode_seqs as usize + b.chunks.len();
            let slack = layerwise::join_allowance(dt, in_batch, ec.join_slack);
            let stall = layerwise::stalled_end(now, ov, lt, &merged).saturating_sub(now + dt);
            if stall > slack {
                // Not in this step; an idle engine starts the step its copy lands in.
                let t = layerwise::earliest_start(ov, lt, &landing).saturating_sub(slack);
                b.join_at = b.join_at.min(t.max(now + 1));
                continue;
            }
            b.budget -= c;
            b.load = trial;
            b.adapters.push(r.adapter);
            b.chunks.push((k, c));
            layerwise::merge_gates(&mut b.gates, &landing);
            b.joined.push(k);
        }
        for &k in &b.joined {
            self.running[k].phase = Phase::Prefill;
        }
        self.res.joined_loading += b.joined.len() as u64;
        Ok(())
    }

    /// Nothing to run: the clock jumps to the next arrival, copy completion or join time.
    /// False when nothing is left to wait for; an error when requests wait on nothing.
    pub(super) fn idle(&mut self, join_at: u64) -> Result<bool, String> {
        let reqs = &self.wl.requests;
        let mut next = join_at;
        if self.next_arrival < reqs.len() {
            next = next.min(reqs[self.next_arrival].arrival_us);
        }
        if let Some(t) = self.io.next_completion() {
            next = next.min(t);
        }
        if next != u64::MAX {
            self.io.now = next.max(self.io.now + 1);
            return Ok(true);
        }
        if self.waiting.is_empty() && self.running.is_empty() {
            return Ok(false);
        }
        // A copy may have landed while this step's admissions waited on the link (a blocking
        // swap-out advances the clock): poll again before calling it a stall.
        let mut ready = false;
        for s in self.running.iter_mut().filter(|s| s.phase == Phase::Loading) {
            if self.core.poll(&mut self.io, s.cache_req).map_err(err)? == Readiness::Ready {
                s.phase = Phase::Prefill;
                ready = true;
            }
        }
        if ready {
            return Ok(true);
        }
        Err(format!(
            "{} policy stalled at {:.3} s with {} waiting and {} running requests",
            self.policy.name(),
            self.io.now as f64 / 1e6,
            self.waiting.len(),
            self.running.len()
        ))
    }

    /// Runs the batch: the clock moves by its step time, every sequence in it advances, filled
    /// blocks are committed and finished requests released.
    pub(super) fn execute(&mut self, b: Batch) -> Result<(), String> {
        let (ec, spec) = (self.ec, self.spec);
        let hw = &ec.hw;
        let Batch { mut load, chunks, mut adapters, gates, joined, .. } = b;
        adapters.sort_unstable();
        adapters.dedup();
        load.adapter_bytes = adapters.iter().map(|&a| hw.adapter_bytes(spec.rank_of(a))).sum();
        let now = self.io.now;
        let dt = (hw.step_time_s(&load) * 1e6).ceil() as u64;
        let end = if gates.is_empty() {
            now + dt
        } else {
            let ov = hw.step_overhead_s * 1e6;
            let end = layerwise::stalled_end(now, ov, hw.layer_time_s(&load) * 1e6, &gates).max(now + dt);
            self.res.layer_wait_ms += (end - now - dt) as f64 / 1e3;
            end
        };
        self.io.now = end.max(now + 1);
        let t_end = self.io.now;
        // The joiners' copies have landed: finish them, so their blocks can be shared.
        for &k in &joined {
            self.core.poll(&mut self.io, self.running[k].cache_req).map_err(err)?;
        }
        for (k, c) in chunks {
            self.running[k].computed += c;
        }
        for s in self.running.iter_mut() {
            match s.phase {
                Phase::Decode => {
                    s.computed += 1;
                    self.recs[s.idx as usize].generated += 1;
                }
                Phase::Prefill if s.computed >= s.target => {
                    s.computed = s.target;
                    s.phase = Phase::Decode;
                    let rec = &mut self.recs[s.idx as usize];
                    rec.generated += 1;
                    rec.first_token.get_or_insert(t_end);
                }
                _ => {}
            }
        }
        self.complete(t_end)
    }

    /// Commits filled blocks so later requests can share them; finishes completed requests.
    fn complete(&mut self, t_end: u64) -> Result<(), String> {
        let wl = self.wl;
        let bt = self.ec.block_tokens;
        let mut k = 0;
        while k < self.running.len() {
            let s = &mut self.running[k];
            if s.phase == Phase::Loading {
                k += 1;
                continue;
            }
            let r = &wl.requests[s.idx as usize];
            let fill = s.computed / bt * bt;
            if fill > s.committed {
                let toks = &wl.tokens(r)[s.committed as usize..fill as usize];
                match self.core.commit(s.cache_req, toks, t_end) {
                    Ok(_) => s.committed = fill,
                    // A block it would share is still being copied in for another request,
                    // which will hold the same tokens: commit after a later step, or never if
                    // this request ends first.
                    Err(e) if e.status == Status::LIBRA_ERR_BUSY => {}
                    Err(e) => return Err(err(e)),
                }
            }
            let rec = &mut self.recs[s.idx as usize];
            if rec.generated < r.output {
                k += 1;
                continue;
            }
            rec.finish = Some(t_end);
            let s = self.running.remove(k);
            if self.continues[s.idx as usize] {
                self.core.set_retention(s.cache_req, retention_hint(self.spec, t_end), t_end).map_err(err)?;
            } else if self.ec.retention_hints && !self.policy.knows_the_future() {
                // The session was closed, or the agent returned its answer: past the system
                // prompt every later request shares, nobody reads this turn's blocks again.
                self.core.expect_no_reuse(s.cache_req, self.spec.system_tokens, t_end).map_err(err)?;
            }
            self.core.release(&mut self.io, s.cache_req, t_end).map_err(err)?;
            self.done += 1;
        }
        Ok(())
    }
}
