//! Which requests run, in vLLM v1's order: running sequences first (a decoding sequence that
//! needs a block and cannot get one preempts the youngest, recompute preemption), then, only
//! in a step that preempted nothing, arrivals first come first served while the step has
//! prefill budget.
use super::{adapter_id, err, Phase, Seq, Sim};
use crate::oracle::Oracle;
use crate::peers;
use crate::workload::Request;
use libra::cache::Readiness;

/// Waiting requests passed over per step when the head cannot be admitted.
const ADMIT_LOOKAHEAD: usize = 16;

/// What became of one admission attempt.
enum Admission {
    Admitted(Seq),
    /// The cache cannot place it now: try again in a later step.
    Later,
    /// It cannot fit even on an idle engine.
    Rejected,
}

/// S-LoRA's admission test over the batch so far: tokens each sequence holds and has still to
/// generate, and the adapters the batch uses.
struct ConservativeFit {
    held: Vec<(u64, u64)>,
    adapters: Vec<u32>,
}

impl ConservativeFit {
    /// Whether the batch with one more sequence (`seq`, using `adapter`) fits; it joins the
    /// batch if so.
    fn admits(&mut self, seq: (u64, u64), adapter: u32, sim: &Sim) -> bool {
        let bt = sim.ec.block_tokens as u64;
        let mut seqs = self.held.clone();
        seqs.push(seq);
        let mut ads = self.adapters.clone();
        ads.push(adapter);
        ads.sort_unstable();
        ads.dedup();
        let ad_tokens: u64 = ads.iter().map(|&a| sim.adapter_blocks[a as usize] as u64 * bt).sum();
        if !peers::conservative_admits(&mut seqs, sim.gpu_blocks as u64 * bt, ad_tokens, bt) {
            return false;
        }
        self.held = seqs;
        self.adapters = ads;
        true
    }
}

impl Sim<'_> {
    /// Queues the requests that have arrived. False once the head of the queue has waited
    /// longer than `EngineConfig::give_up_wait_us`.
    pub(super) fn arrive(&mut self) -> bool {
        let reqs = &self.wl.requests;
        while self.next_arrival < reqs.len() && reqs[self.next_arrival].arrival_us <= self.io.now {
            self.waiting.push_back(self.next_arrival as u32);
            self.next_arrival += 1;
        }
        if let (Some(limit), Some(&w)) = (self.ec.give_up_wait_us, self.waiting.front()) {
            if self.io.now.saturating_sub(reqs[w as usize].arrival_us) > limit {
                return false;
            }
        }
        if let Some(f) = self.future.as_mut() {
            f.cursor = self.waiting.iter().copied().min().unwrap_or(self.next_arrival as u32);
        }
        true
    }

    /// The cache's step (the oracle's own, for `oracle`); then copies that completed make
    /// their requests ready.
    pub(super) fn cache_step(&mut self) -> Result<(), String> {
        let prefill_bound =
            !self.waiting.is_empty() || self.running.iter().any(|s| s.phase == Phase::Prefill);
        let now = self.io.now;
        let seqs = self.running.len() as u32;
        match self.future.as_ref() {
            Some(f) => Oracle { core: &mut self.core, io: &mut self.io, hints: f }
                .step(now, seqs, prefill_bound)
                .map_err(err)?,
            None => self.core.step(&mut self.io, now, seqs, prefill_bound).map_err(err)?,
        };
        for s in self.running.iter_mut().filter(|s| s.phase == Phase::Loading) {
            match self.core.poll(&mut self.io, s.cache_req).map_err(err)? {
                Readiness::Ready => s.phase = Phase::Prefill,
                Readiness::Pending => {}
                Readiness::Failed(why) => return Err(format!("a copy failed in the timing backend: {why}")),
            }
        }
        Ok(())
    }

    /// vLLM v1's order: running sequences get their next blocks first, and new requests are
    /// admitted only in a step that preempted none. Returns the step's token budget.
    pub(super) fn schedule(&mut self) -> Result<u32, String> {
        if self.grow_decodes()? == 0 {
            self.admit()?;
        }
        Ok(self.token_budget())
    }

    /// The step's token budget: what decoding sequences leave of `max_batch_tokens`.
    fn token_budget(&self) -> u32 {
        let decoding = self.running.iter().filter(|s| s.phase == Phase::Decode).count() as u32;
        self.ec.max_batch_tokens.saturating_sub(decoding)
    }

    /// Admission, first come first served, while the step has prefill budget left. A request
    /// that cannot get memory (or, under a static split, an adapter slot) is passed over for
    /// a few later ones, as vLLM's scheduler skips requests whose LoRA cannot be scheduled.
    /// The caller skips it in a step that preempted: the pool is oversubscribed, and a new
    /// request would take the blocks the next decode needs, to be preempted in its turn.
    fn admit(&mut self) -> Result<(), String> {
        let wl = self.wl;
        let budget = self.token_budget();
        let mut prefill_demand: u32 = self
            .running
            .iter()
            .filter(|s| s.phase == Phase::Prefill)
            .map(|s| s.target - s.computed.min(s.target))
            .sum();
        let mut fit = self.policy.conservative_admission().then(|| self.conservative_fit());
        let mut pos = 0usize;
        let mut skipped = 0usize;
        while let Some(&idx) = self.waiting.get(pos) {
            if self.running.len() >= self.ec.max_seqs as usize
                || prefill_demand >= budget
                || skipped > ADMIT_LOOKAHEAD
            {
                break;
            }
            let r = &wl.requests[idx as usize];
            let generated = self.recs[idx as usize].generated;
            let target = r.prompt + generated;
            if let Some(fit) = fit.as_mut() {
                // S-LoRA admits in order and stops at the first request that does not fit.
                let seq = (target as u64 + 1, r.output.saturating_sub(generated + 1) as u64);
                if !fit.admits(seq, r.adapter, self) {
                    break;
                }
            }
            match self.try_admit(idx, r, target)? {
                Admission::Admitted(seq) => {
                    self.waiting.remove(pos);
                    if seq.phase == Phase::Prefill {
                        prefill_demand += target - seq.computed;
                    }
                    self.running.push(seq);
                }
                Admission::Later => {
                    pos += 1;
                    skipped += 1;
                }
                Admission::Rejected => {
                    self.waiting.remove(pos);
                    self.res.rejected += 1;
                    self.done += 1;
                }
            }
        }
        Ok(())
    }

    /// The running batch as S-LoRA's admission sees it.
    fn conservative_fit(&self) -> ConservativeFit {
        let mut fit = ConservativeFit { held: Vec::new(), adapters: Vec::new() };
        for s in &self.running {
            let r = &self.wl.requests[s.idx as usize];
            let g = self.recs[s.idx as usize].generated;
            fit.held.push(((r.prompt + g) as u64, r.output.saturating_sub(g + 1) as u64));
            fit.adapters.push(r.adapter);
        }
        fit
    }

    /// Matches request `idx`'s first `target` tokens against the cache and allocates blocks
    /// for the rest.
    fn try_admit(&mut self, idx: u32, r: &Request, target: u32) -> Result<Admission, String> {
        let wl = self.wl;
        let bt = self.ec.block_tokens;
        let toks = &wl.tokens(r)[..target as usize];
        if let Some(f) = self.future.as_ref() {
            let absent = self.core.adapter_gpu_blocks(adapter_id(r.adapter)).map_err(err)?.is_empty();
            // Room for what the prompt lacks on the GPU: the blocks it finds there need none,
            // and freeing room for them too would evict blocks the oracle wants kept.
            let on_gpu = self
                .core
                .prefix_keys(adapter_id(r.adapter), 0, toks)
                .iter()
                .map_while(|&k| self.core.node_by_key(k))
                .take_while(|v| v.residency.gpu_side())
                .count() as u32;
            let adapter_need = if absent { self.adapter_blocks[r.adapter as usize] } else { 0 };
            let need = target.div_ceil(bt).saturating_sub(on_gpu) + adapter_need;
            let now = self.io.now;
            let mut oracle = Oracle { core: &mut self.core, io: &mut self.io, hints: f };
            if oracle.make_room(need as usize, now).is_err() {
                return Ok(Admission::Later);
            }
        }
        let h2d_before = self.io.kv_blocks_to_gpu;
        let now = self.io.now;
        let m = match self.core.match_prefix(&mut self.io, adapter_id(r.adapter), 0, toks, now) {
            Ok(m) => m,
            Err(_) => return Ok(self.later_or_rejected()),
        };
        let loaded = ((self.io.kv_blocks_to_gpu - h2d_before) * bt as u64).min(m.cached_tokens as u64);
        let cached = m.cached_tokens as u32;
        let now = self.io.now;
        let blocks = match self.core.allocate(&mut self.io, m.request, (target - cached) as usize, now) {
            Ok(b) => b,
            Err(_) => {
                let now = self.io.now;
                self.core.release(&mut self.io, m.request, now).map_err(err)?;
                return Ok(self.later_or_rejected());
            }
        };
        let rec = &mut self.recs[idx as usize];
        if !rec.admitted {
            rec.admitted = true;
            self.res.prompt_tokens += r.prompt as u64;
            let hit = (cached.min(r.prompt)) as u64;
            self.res.host_hit_tokens += loaded.min(hit);
            self.res.gpu_hit_tokens += hit - loaded.min(hit);
        }
        self.order += 1;
        Ok(Admission::Admitted(Seq {
            idx,
            cache_req: m.request,
            phase: if m.ready { Phase::Prefill } else { Phase::Loading },
            target,
            // A fully cached prompt still recomputes its last token to get logits.
            computed: cached.min(target - 1),
            committed: cached,
            cap: cached + blocks.len() as u32 * bt,
            order: self.order,
        }))
    }

    /// A request the cache cannot place is rejected when nothing could make room for it:
    /// nothing runs and no copy is in flight.
    fn later_or_rejected(&self) -> Admission {
        if self.running.is_empty() && self.io.next_completion().is_none() {
            Admission::Rejected
        } else {
            Admission::Later
        }
    }

    /// Decode slots: a sequence crossing a block boundary needs a new block; when none can be
    /// had, the youngest sequence is preempted (vLLM's recompute preemption). Returns how many
    /// were preempted.
    fn grow_decodes(&mut self) -> Result<u32, String> {
        let mut preempted = 0;
        let bt = self.ec.block_tokens;
        let mut i = 0;
        self.running.sort_by_key(|s| s.order);
        while i < self.running.len() {
            let s = &self.running[i];
            if s.phase != Phase::Decode || s.computed < s.cap {
                i += 1;
                continue;
            }
            let cache_req = s.cache_req;
            if let Some(f) = self.future.as_ref() {
                let now = self.io.now;
                let _ = Oracle { core: &mut self.core, io: &mut self.io, hints: f }.make_room(1, now);
            }
            let now = self.io.now;
            if self.core.allocate(&mut self.io, cache_req, bt as usize, now).is_ok() {
                self.running[i].cap += bt;
                i += 1;
                continue;
            }
            let victim = self.running.pop().expect("sequence i is running");
            let now = self.io.now;
            self.core.release(&mut self.io, victim.cache_req, now).map_err(err)?;
            self.waiting.push_front(victim.idx);
            self.res.preemptions += 1;
            preempted += 1;
        }
        Ok(preempted)
    }
}
