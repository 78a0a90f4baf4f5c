//! Workloads: arrivals and lengths from a trace, from the built-in generator calibrated to one,
//! or from a Poisson process, plus what a trace lacks, generated from a seed: adapter
//! popularity (Zipf), multi-turn sessions whose later turns extend the previous turn's prompt
//! and answer, and a shared system prompt per adapter.
//!
//! Which conversation a follow-up continues is a model of the users behind the trace. By
//! default each user, after a turn, either leaves (probability `1 - follow_prob`) or comes back
//! after a think time (reading the answer and typing the next message); an arrival is the user
//! whose think time ended first, or a new user when nobody is due. The older model, a uniform
//! pick among every open conversation, stays available as `FollowupPick::Uniform`.
use super::rng::{Rng, Zipf};
use super::trace::TraceRow;
use std::fmt::Write;

/// Where arrivals and lengths come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Rows of a trace within [start_s, start_s + duration_s).
    Trace { rows: std::sync::Arc<Vec<TraceRow>>, label: String, start_s: f64, duration_s: f64 },
    /// A Poisson process at `rate` requests/s with log-normal lengths of the given means.
    Poisson { rate: f64, duration_s: f64, prompt_mean: f64, output_mean: f64 },
    /// The built-in generator calibrated to the Azure LLM 2023 conversation trace
    /// (`synth`), for `duration_s` seconds.
    Synthetic { duration_s: f64 },
}

/// How a follow-up arrival chooses the conversation it continues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FollowupPick {
    /// Uniformly among the open conversations that fit and have waited `min_gap_s`: how long a
    /// conversation has been idle says nothing about whether it continues.
    Uniform,
    /// After each turn the conversation continues with probability `follow_prob`, after a
    /// log-normal think time; an arrival continues the conversation whose think time ended
    /// first, and starts a new one when none has ended.
    ThinkTime,
}

impl FollowupPick {
    pub fn name(self) -> &'static str {
        match self {
            FollowupPick::Uniform => "uniform",
            FollowupPick::ThinkTime => "think-time",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "uniform" => Some(FollowupPick::Uniform),
            "think-time" => Some(FollowupPick::ThinkTime),
            _ => None,
        }
    }
}

/// Spread of the log-normal think time (sigma of its log): a median of 0.6 x the mean and a
/// tail of a few minutes at a 30 s mean. Log-normal is the usual shape of human response times.
pub const THINK_SIGMA: f64 = 1.0;

/// Everything that shapes the requests. Printed in the output and written to the JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSpec {
    pub name: String,
    pub source: Source,
    /// Arrival times are divided by this (2.0 = twice the load).
    pub rate_mult: f64,
    pub adapters: u32,
    pub zipf_s: f64,
    /// Adapter i gets rank `ranks[i % ranks.len()]`.
    pub ranks: Vec<u32>,
    /// Probability that a request continues an open conversation instead of starting one.
    pub follow_prob: f64,
    /// Shortest think time between a turn's arrival and the next turn's, trace seconds.
    pub min_gap_s: f64,
    pub followup_pick: FollowupPick,
    /// `ThinkTime`: mean time from a turn's arrival to the same user's next turn, in seconds of
    /// served time (not scaled by `rate_mult`: more load means more users, not faster ones).
    /// It includes generating the answer, a few seconds.
    pub think_mean_s: f64,
    /// A conversation idle longer than this is closed, seconds.
    pub session_timeout_s: f64,
    /// Tokens of the system prompt every conversation of an adapter starts with.
    pub system_tokens: u32,
    /// Longest prompt; a conversation that would exceed it starts over.
    pub max_context: u32,
    /// Every this many served seconds the adapters' popularity ranks are drawn anew (0: never):
    /// yesterday's popular adapter may be rare today.
    pub popularity_period_s: f64,
    pub seed: u64,
}

impl WorkloadSpec {
    /// Scenario presets modelled on ELORA's workloads.
    pub fn preset(name: &str, source: Source, seed: u64) -> Option<Self> {
        let mut s = WorkloadSpec {
            name: name.to_string(),
            source,
            // Four times the trace's request rate: a busy but not overloaded engine for elora.
            rate_mult: 4.0,
            adapters: 50,
            zipf_s: 1.0,
            ranks: vec![32, 64],
            follow_prob: 0.5,
            min_gap_s: 10.0,
            followup_pick: FollowupPick::ThinkTime,
            // The trace's mean answer (211 tokens, about 160 words) takes 40 s to read at the
            // 238 words/min of silent reading (Brysbaert 2019), a short reply 10-20 s to type,
            // and many users skim: tens of seconds, 30 s on average.
            think_mean_s: 30.0,
            session_timeout_s: 900.0,
            system_tokens: 256,
            max_context: 12_000,
            popularity_period_s: 0.0,
            seed,
        };
        match name {
            // Conversations with a persona per adapter, frequent follow-ups. Follow-ups grow the
            // prompts past the trace's, so the load is lower than translation's.
            "chatbot" => s.rate_mult = 2.5,
            // One long instruction with few-shot examples per language pair, single turns.
            "translation" => {
                s.follow_prob = 0.05;
                s.system_tokens = 768;
                s.zipf_s = 0.9;
            }
            // Tool descriptions shared per agent, tight loops of calls extending the context.
            "agent" => {
                s.follow_prob = 0.8;
                s.system_tokens = 1536;
                s.min_gap_s = 2.0;
                // The answer, then a tool call of a few seconds.
                s.think_mean_s = 8.0;
                s.session_timeout_s = 300.0;
                // Prompts three times longer than a chat's: half the chatbot's request rate.
                s.rate_mult = 2.0;
            }
            // Many adapters with a long tail of rare ones.
            "many-adapters" => {
                s.adapters = 1000;
                s.zipf_s = 0.9;
                s.rate_mult = 2.0;
            }
            // Chat on a 48 GB card (`hardware_preset`): 200 adapters, whose weights alone
            // (50 GB) are twice the GPU tier, and conversations' prefixes on top.
            "memory-constrained" => {
                s.adapters = 200;
                s.zipf_s = 0.9;
                s.rate_mult = 0.5;
            }
            _ => return None,
        }
        Some(s)
    }
    pub const PRESETS: [&'static str; 5] =
        ["chatbot", "translation", "agent", "many-adapters", "memory-constrained"];

    /// The hardware a scenario is defined on, when it is not the default.
    pub fn hardware_preset(&self) -> Option<&'static str> {
        (self.name == "memory-constrained").then_some("llama3-8b-l40s")
    }

    pub fn rank_of(&self, adapter: u32) -> u32 {
        self.ranks[adapter as usize % self.ranks.len()]
    }

    /// One line per knob.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        match &self.source {
            Source::Trace { rows, label, start_s, duration_s } => {
                let _ = writeln!(
                    s,
                    "arrivals and lengths: trace {label} ({} rows), window {start_s:.0}..{:.0} s",
                    rows.len(),
                    start_s + duration_s
                );
            }
            Source::Poisson { rate, duration_s, prompt_mean, output_mean } => {
                let _ = writeln!(
                    s,
                    "arrivals: Poisson {rate:.2} req/s for {duration_s:.0} s; lengths log-normal, \
                     prompt mean {prompt_mean:.0}, output mean {output_mean:.0}"
                );
            }
            Source::Synthetic { duration_s } => {
                let _ = writeln!(s, "{}", super::synth::describe(*duration_s));
            }
        }
        let _ = writeln!(
            s,
            "scenario {}: rate x{:.2}, {} adapters Zipf s={:.2} ranks {:?}, follow-up p={:.2} \
             (think >= {:.0} s, timeout {:.0} s), system prompt {} tokens/adapter, max context {}, \
             popularity {}, seed {}",
            self.name,
            self.rate_mult,
            self.adapters,
            self.zipf_s,
            self.ranks,
            self.follow_prob,
            self.min_gap_s,
            self.session_timeout_s,
            self.system_tokens,
            self.max_context,
            if self.popularity_period_s > 0.0 {
                format!("redrawn every {:.0} s", self.popularity_period_s)
            } else {
                "fixed".into()
            },
            self.seed
        );
        let _ = match self.followup_pick {
            FollowupPick::Uniform => writeln!(
                s,
                "follow-up pick uniform: a follow-up continues an open conversation chosen uniformly"
            ),
            FollowupPick::ThinkTime => writeln!(
                s,
                "follow-up pick think-time: a conversation continues with p={:.2} after a log-normal \
                 think time (mean {:.1} s served = {:.1} trace s, sigma {THINK_SIGMA}); an arrival \
                 continues the one due first, else starts one",
                self.follow_prob,
                self.think_mean_s,
                self.think_mean_s * self.rate_mult
            ),
        };
        s
    }
}

/// One request of the generated workload.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    pub arrival_us: u64,
    pub adapter: u32,
    pub session: u32,
    pub turn: u32,
    /// Prompt tokens: the session's stream `[..prompt]`.
    pub prompt: u32,
    /// Output tokens: the session's stream `[prompt..prompt + output]`.
    pub output: u32,
}

/// Requests in arrival order and the token stream of every session.
#[derive(Debug, Clone)]
pub struct Workload {
    pub requests: Vec<Request>,
    pub sessions: Vec<Vec<u32>>,
}

impl Workload {
    pub fn tokens(&self, r: &Request) -> &[u32] {
        &self.sessions[r.session as usize][..(r.prompt + r.output) as usize]
    }
    pub fn prompt_tokens(&self) -> u64 {
        self.requests.iter().map(|r| r.prompt as u64).sum()
    }
    pub fn duration_s(&self) -> f64 {
        self.requests.last().map_or(0.0, |r| r.arrival_us as f64 / 1e6)
    }
    /// Served seconds between each follow-up and the previous turn of its conversation, in
    /// request order.
    pub fn turn_gaps_s(&self) -> Vec<f64> {
        let mut last: Vec<Option<u64>> = vec![None; self.sessions.len()];
        let mut gaps = Vec::new();
        for r in &self.requests {
            if let Some(t) = last[r.session as usize].replace(r.arrival_us) {
                gaps.push((r.arrival_us - t) as f64 / 1e6);
            }
        }
        gaps
    }
    /// One line: how far apart the turns of a conversation are.
    pub fn describe_turns(&self) -> String {
        let mut g = self.turn_gaps_s();
        if g.is_empty() {
            return "no follow-ups\n".into();
        }
        g.sort_by(f64::total_cmp);
        let pct = |p: f64| g[((g.len() - 1) as f64 * p).round() as usize];
        format!(
            "{} follow-ups ({:.1}%), served s since the previous turn: mean {:.1}, P50 {:.1}, P90 {:.1}\n",
            g.len(),
            100.0 * g.len() as f64 / self.requests.len() as f64,
            g.iter().sum::<f64>() / g.len() as f64,
            pct(0.5),
            pct(0.9)
        )
    }
}

struct OpenSession {
    id: u32,
    adapter: u32,
    last_t: f64,
    turn: u32,
    /// `ThinkTime`: trace time at which the user sends the next turn.
    due_t: f64,
}

/// Builds the workload. Deterministic in the spec.
pub fn generate(spec: &WorkloadSpec) -> Workload {
    let mut rng = Rng::new(spec.seed);
    let rows: Vec<TraceRow> = match &spec.source {
        Source::Trace { rows, start_s, duration_s, .. } => rows
            .iter()
            .filter(|r| r.t_s >= *start_s && r.t_s < start_s + duration_s)
            .map(|r| TraceRow { t_s: r.t_s - start_s, ..*r })
            .collect(),
        Source::Poisson { rate, duration_s, prompt_mean, output_mean } => {
            let mut t = 0.0;
            let mut v = Vec::new();
            // Log-normal with sigma 1: mean = exp(mu + 1/2).
            let lognormal = |rng: &mut Rng, mean: f64| (mean.ln() - 0.5 + rng.normal()).exp();
            loop {
                t += rng.exp(1.0 / rate);
                if t >= *duration_s {
                    break;
                }
                let prompt = lognormal(&mut rng, *prompt_mean).clamp(1.0, 16_000.0) as u32;
                let output = lognormal(&mut rng, *output_mean).clamp(1.0, 2_000.0) as u32;
                v.push(TraceRow { t_s: t, prompt, output });
            }
            v
        }
        Source::Synthetic { duration_s } => super::synth::rows(&mut rng, *duration_s),
    };
    let zipf = Zipf::new(spec.adapters.max(1) as usize, spec.zipf_s);
    // A random permutation so popularity does not follow the rank pattern of adapter ids.
    let mut perm: Vec<u32> = (0..spec.adapters.max(1)).collect();
    for i in (1..perm.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        perm.swap(i, j);
    }
    let system: Vec<Vec<u32>> = (0..spec.adapters.max(1))
        .map(|_| (0..spec.system_tokens).map(|_| rng.next_u64() as u32).collect())
        .collect();
    let mut sessions: Vec<Vec<u32>> = Vec::new();
    let mut open: Vec<OpenSession> = Vec::new();
    let mut requests = Vec::with_capacity(rows.len());
    let mut next_redraw = spec.popularity_period_s;
    for row in rows {
        let t = row.t_s;
        // Served seconds; drawn only when drift is on, so other workloads stay as they were.
        while spec.popularity_period_s > 0.0 && t / spec.rate_mult >= next_redraw {
            for i in (1..perm.len()).rev() {
                let j = rng.below(i as u64 + 1) as usize;
                perm.swap(i, j);
            }
            next_redraw += spec.popularity_period_s;
        }
        open.retain(|s| t - s.last_t <= spec.session_timeout_s);
        let mut chosen = None;
        // A follow-up needs a conversation whose history fits under the trace's prompt length
        // (the trace counts history in the prompt) and whose user has had time to read the
        // answer.
        let want_of = |s: &OpenSession| row.prompt.max(sessions[s.id as usize].len() as u32 + 16);
        match spec.followup_pick {
            FollowupPick::Uniform => {
                if !open.is_empty() && rng.f64() < spec.follow_prob {
                    // A few random draws.
                    for _ in 0..8 {
                        let k = rng.below(open.len() as u64) as usize;
                        let s = &open[k];
                        let want = want_of(s);
                        if t - s.last_t >= spec.min_gap_s && want <= spec.max_context {
                            chosen = Some((k, want));
                            break;
                        }
                    }
                }
            }
            FollowupPick::ThinkTime => {
                // The arrival is the user whose think time ended first (ties: the older
                // conversation); with nobody due, a new conversation. The arrival itself is not
                // a coin flip: an independent coin would make the supply of due users and the
                // demand for them two processes of equal rate, and one would run ahead.
                while let Some(k) = (0..open.len()).filter(|&k| open[k].due_t <= t).min_by(|&a, &b| {
                    open[a].due_t.total_cmp(&open[b].due_t).then(open[a].id.cmp(&open[b].id))
                }) {
                    let want = want_of(&open[k]);
                    if want <= spec.max_context {
                        chosen = Some((k, want));
                        break;
                    }
                    if row.prompt > spec.max_context {
                        // This arrival fits no history; the user stays due.
                        break;
                    }
                    // Too long to continue: the user starts over, as a new conversation.
                    open.swap_remove(k);
                }
            }
        }
        let (sid, adapter, turn, prompt) = match chosen {
            Some((k, want)) => {
                let s = &mut open[k];
                s.last_t = t;
                s.turn += 1;
                let v = (s.id, s.adapter, s.turn, want);
                if spec.followup_pick == FollowupPick::ThinkTime {
                    // Whether and when this user comes back is decided below, after this turn.
                    open.swap_remove(k);
                }
                v
            }
            None => {
                let adapter = perm[zipf.sample(&mut rng)];
                let id = sessions.len() as u32;
                let prompt = row.prompt.min(spec.max_context);
                let sys = spec.system_tokens.min(prompt.saturating_sub(16));
                sessions.push(system[adapter as usize][..sys as usize].to_vec());
                if spec.followup_pick == FollowupPick::Uniform {
                    open.push(OpenSession { id, adapter, last_t: t, turn: 0, due_t: t });
                }
                (id, adapter, 0, prompt)
            }
        };
        if spec.followup_pick == FollowupPick::ThinkTime && rng.f64() < spec.follow_prob {
            // Log-normal with the given mean: exp(mu + sigma^2 / 2) = mean. Served seconds to
            // trace seconds: arrivals are divided by `rate_mult`.
            let think = (spec.think_mean_s.max(1e-9).ln() - THINK_SIGMA * THINK_SIGMA / 2.0
                + THINK_SIGMA * rng.normal())
            .exp()
                * spec.rate_mult;
            let due_t = t + think.max(spec.min_gap_s);
            open.push(OpenSession { id: sid, adapter, last_t: t, turn, due_t });
        }
        let stream = &mut sessions[sid as usize];
        // The user's new message, then the answer the model will give.
        while (stream.len() as u32) < prompt + row.output {
            stream.push(rng.next_u64() as u32);
        }
        requests.push(Request {
            arrival_us: (t / spec.rate_mult * 1e6).round() as u64,
            adapter,
            session: sid,
            turn,
            prompt,
            output: row.output,
        });
    }
    Workload { requests, sessions }
}
