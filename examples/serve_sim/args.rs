//! Command line of serve_sim: every knob, and the engine and workload they describe.
use libra::sim::{self, EngineConfig, Hardware, SimPolicy, Source, WorkloadSpec};
use std::sync::Arc;

const HELP: &str = "\
serve_sim: run a multi-LoRA serving workload through libra's cache under every policy and
compare TTFT. By default arrivals and lengths come from a built-in generator calibrated to the
Azure LLM inference trace 2023 (conversation service); --trace replays the real CSV.

USAGE: cargo run --release --example serve_sim -- [OPTIONS]

Workload
  --scenario LIST      chatbot, translation, agent, many-adapters, memory-constrained,
                       or all [all]
                       chatbot: 50 adapters, Zipf 1.0, follow-up p=0.5, 256-token persona prompt
                       translation: 768-token few-shot instruction per adapter, single turns
                       agent: 1536-token tool descriptions, follow-up p=0.8, 8 s mean think
                       time (at least 2 trace s)
                       many-adapters: chatbot with 1000 adapters, Zipf 0.9
                       memory-constrained: chatbot with 200 adapters (Zipf 0.9) on one
                       48 GB L40S (llama3-8b-l40s unless --preset is given)
  --trace PATH         replay a trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens, as the
                       Azure LLM inference trace 2023) instead of the built-in generator
                       calibrated to its conversation service
  --start S            trace window start, seconds [0]
  --duration S         trace seconds of arrivals (trace window length) [300]
  --drift S            redraw the adapters' popularity ranks every S served seconds [never]
  --poisson RATE       Poisson arrivals at RATE req/s with log-normal lengths instead
  --prompt-mean N      Poisson: mean prompt tokens (log-normal) [1155]
  --output-mean N      Poisson: mean output tokens (log-normal) [211]
  --rate-mult X        divide arrival times by X (load multiplier) [chatbot 2.5,
                       translation 4, agent 2, many-adapters 2]
  --adapters N         number of LoRA adapters [scenario]
  --zipf S             Zipf exponent of adapter popularity [scenario]
  --ranks LIST         adapter ranks, assigned round-robin [32,64]
  --follow P           probability that a request continues an open conversation [scenario]
  --followup-pick M    which open conversation a follow-up continues [think-time]
                       think-time: after each turn the user leaves (p = 1 - follow-up p) or
                       comes back after a log-normal think time (sigma 1); an arrival is the
                       user whose think time ended first, or a new one when nobody is due
                       uniform: a follow-up (probability --follow) continues any open
                       conversation, uniformly (idle time says nothing)
  --think-mean S       think-time: mean time between a turn and the user's next, served
                       seconds, not scaled by --rate-mult [30; agent 8]
  --think S            shortest time between turns of a conversation, trace seconds [scenario]
  --session-timeout S  a conversation idle this long ends, trace seconds [scenario]
  --system-tokens N    shared system-prompt tokens per adapter [scenario]
  --max-context N      longest prompt; longer conversations start over [12000]
  --seed N             seed of everything generated [1]

Engine and hardware
  --preset NAME        llama3-8b-h800 (1 GPU), llama2-34b-h800 (TP 4), llama3-70b-h800 (TP 8),
                       llama3-8b-h200, llama3-70b-h200 (TP 4), llama3-8b-l40s [llama3-8b-h800;
                       the scenario's own where it has one]
  --tp N               tensor-parallel degree [preset]
  --host-gb G          host-tier memory per GPU, GB [128]
  --mem-util F         share of GPU memory the engine uses [0.9]
  --compute-eff F      achieved share of peak FLOP/s [0.6]
  --mem-eff F          achieved share of HBM bandwidth [0.8]
  --link-gbps G        host-link bandwidth per GPU, GB/s [50]
  --gpu-blocks N       override the GPU pool size in blocks
  --host-blocks N      override the host tier size in blocks
  --max-batch-tokens N tokens per engine step (decode + prefill chunks) [4096]
  --max-seqs N         most sequences in flight [256]
  --layers-per-group N layer-wise readiness: a request whose prefix is being copied in joins
                       the step its copy lands in, layer L waiting for its group of N layers;
                       0: it waits for the step after its copy [4]
  --hints              the engine gives retention hints when a turn ends and its conversation
                       continues: agent, a pending tool call expected back after the mean
                       think time; other scenarios, an open session held until the timeout

Policies and output
  --policies LIST      vllm,vllm-offload,hicache,slora,lru,elora,elora-authors,libra,oracle [all]
  --vllm-adapter-fraction F
                       share of GPU blocks in vllm's adapter region; without it, each
                       scenario's is tuned: the best mean TTFT over 0.02-0.4, sweep printed
  --grid N             loads per scenario, from 10% to the peak load (the highest mean TTFT
                       under 500 ms of libra, lru, elora, vllm-offload and vllm, doubled or
                       halved from the scenario's load, then 4 bisections); 0: only the
                       scenario's own load (--rate-mult) [4]
  --json FILE          write scenario parameters and results as JSON
  --plots DIR          write SVG plots (TTFT CDF, TTFT vs load) into DIR [sim_out]
  --no-plots           write no plots
  --jobs N             policies simulated in parallel [2]
  --quiet              no progress bar
  -h, --help           this text
";

pub struct Args {
    pub scenarios: Vec<String>,
    pub trace: Option<String>,
    pub start: f64,
    pub duration: f64,
    pub poisson: Option<f64>,
    pub prompt_mean: f64,
    pub output_mean: f64,
    pub rate_mult: Option<f64>,
    pub adapters: Option<u32>,
    pub zipf: Option<f64>,
    pub ranks: Option<Vec<u32>>,
    pub follow: Option<f64>,
    pub think: Option<f64>,
    pub followup_pick: Option<sim::FollowupPick>,
    pub think_mean: Option<f64>,
    pub session_timeout: Option<f64>,
    pub system_tokens: Option<u32>,
    pub max_context: Option<u32>,
    pub seed: u64,
    pub preset: Option<String>,
    pub tp: Option<u32>,
    pub host_gb: Option<f64>,
    pub mem_util: Option<f64>,
    pub compute_eff: Option<f64>,
    pub mem_eff: Option<f64>,
    pub link_gbps: Option<f64>,
    pub gpu_blocks: Option<u32>,
    pub host_blocks: Option<u32>,
    pub max_batch_tokens: Option<u32>,
    pub max_seqs: Option<u32>,
    pub layers_per_group: Option<u32>,
    pub vllm_fraction: Option<f64>,
    pub policies: Vec<SimPolicy>,
    pub grid_points: usize,
    pub drift: Option<f64>,
    pub json: Option<String>,
    pub plots: Option<String>,
    pub jobs: usize,
    pub quiet: bool,
    pub hints: bool,
}

pub fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        scenarios: WorkloadSpec::PRESETS.iter().map(|s| s.to_string()).collect(),
        trace: None,
        start: 0.0,
        duration: 300.0,
        poisson: None,
        prompt_mean: 1155.0,
        output_mean: 211.0,
        rate_mult: None,
        adapters: None,
        zipf: None,
        ranks: None,
        follow: None,
        think: None,
        followup_pick: None,
        think_mean: None,
        session_timeout: None,
        system_tokens: None,
        max_context: None,
        seed: 1,
        preset: None,
        tp: None,
        host_gb: None,
        mem_util: None,
        compute_eff: None,
        mem_eff: None,
        link_gbps: None,
        gpu_blocks: None,
        host_blocks: None,
        max_batch_tokens: None,
        max_seqs: None,
        layers_per_group: None,
        vllm_fraction: None,
        policies: SimPolicy::ALL.to_vec(),
        grid_points: 4,
        drift: None,
        json: None,
        plots: Some("sim_out".into()),
        jobs: 2,
        quiet: false,
        hints: false,
    };
    let mut it = std::env::args().skip(1);
    fn val<T: std::str::FromStr>(it: &mut impl Iterator<Item = String>, flag: &str) -> Result<T, String> {
        let v = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        v.parse().map_err(|_| format!("{flag}: cannot parse {v:?}"))
    }
    fn list<T: std::str::FromStr>(
        it: &mut impl Iterator<Item = String>,
        flag: &str,
    ) -> Result<Vec<T>, String> {
        let v: String = val(it, flag)?;
        v.split(',').map(|x| x.trim().parse().map_err(|_| format!("{flag}: cannot parse {x:?}"))).collect()
    }
    while let Some(flag) = it.next() {
        let f = flag.as_str();
        match f {
            "-h" | "--help" => {
                print!("{HELP}");
                std::process::exit(0);
            }
            "--scenario" => {
                let v: Vec<String> = list(&mut it, f)?;
                a.scenarios = if v.iter().any(|s| s == "all") {
                    WorkloadSpec::PRESETS.iter().map(|s| s.to_string()).collect()
                } else {
                    v
                };
            }
            "--trace" => a.trace = Some(val(&mut it, f)?),
            "--start" => a.start = val(&mut it, f)?,
            "--duration" => a.duration = val(&mut it, f)?,
            "--poisson" => a.poisson = Some(val(&mut it, f)?),
            "--prompt-mean" => a.prompt_mean = val(&mut it, f)?,
            "--output-mean" => a.output_mean = val(&mut it, f)?,
            "--rate-mult" => a.rate_mult = Some(val(&mut it, f)?),
            "--adapters" => a.adapters = Some(val(&mut it, f)?),
            "--zipf" => a.zipf = Some(val(&mut it, f)?),
            "--ranks" => a.ranks = Some(list(&mut it, f)?),
            "--follow" => a.follow = Some(val(&mut it, f)?),
            "--think" => a.think = Some(val(&mut it, f)?),
            "--followup-pick" => {
                let v: String = val(&mut it, f)?;
                a.followup_pick = Some(
                    sim::FollowupPick::parse(&v)
                        .ok_or_else(|| format!("{f}: {v:?} is not uniform or think-time"))?,
                );
            }
            "--think-mean" => a.think_mean = Some(val(&mut it, f)?),
            "--session-timeout" => a.session_timeout = Some(val(&mut it, f)?),
            "--system-tokens" => a.system_tokens = Some(val(&mut it, f)?),
            "--max-context" => a.max_context = Some(val(&mut it, f)?),
            "--seed" => a.seed = val(&mut it, f)?,
            "--preset" => a.preset = Some(val(&mut it, f)?),
            "--tp" => a.tp = Some(val(&mut it, f)?),
            "--host-gb" => a.host_gb = Some(val(&mut it, f)?),
            "--mem-util" => a.mem_util = Some(val(&mut it, f)?),
            "--compute-eff" => a.compute_eff = Some(val(&mut it, f)?),
            "--mem-eff" => a.mem_eff = Some(val(&mut it, f)?),
            "--link-gbps" => a.link_gbps = Some(val(&mut it, f)?),
            "--gpu-blocks" => a.gpu_blocks = Some(val(&mut it, f)?),
            "--host-blocks" => a.host_blocks = Some(val(&mut it, f)?),
            "--max-batch-tokens" => a.max_batch_tokens = Some(val(&mut it, f)?),
            "--max-seqs" => a.max_seqs = Some(val(&mut it, f)?),
            "--layers-per-group" => a.layers_per_group = Some(val(&mut it, f)?),
            "--vllm-adapter-fraction" => a.vllm_fraction = Some(val(&mut it, f)?),
            "--policies" => {
                let v: Vec<String> = list(&mut it, f)?;
                a.policies = v
                    .iter()
                    .map(|p| SimPolicy::parse(p).ok_or_else(|| format!("unknown policy {p:?}")))
                    .collect::<Result<_, _>>()?;
            }
            "--grid" => a.grid_points = val(&mut it, f)?,
            "--drift" => a.drift = Some(val(&mut it, f)?),
            "--json" => a.json = Some(val(&mut it, f)?),
            "--plots" => a.plots = Some(val(&mut it, f)?),
            "--no-plots" => a.plots = None,
            "--jobs" => a.jobs = val::<usize>(&mut it, f)?.max(1),
            "--quiet" => a.quiet = true,
            "--hints" => a.hints = true,
            _ => return Err(format!("unknown option {f:?} (see --help)")),
        }
    }
    if a.trace.is_some() && a.poisson.is_some() {
        return Err("--trace and --poisson exclude each other".into());
    }
    Ok(a)
}

pub fn engine_config(a: &Args, scenario_preset: Option<&str>) -> Result<EngineConfig, String> {
    let preset = a.preset.as_deref().or(scenario_preset).unwrap_or("llama3-8b-h800");
    let mut hw = Hardware::preset(preset)
        .ok_or_else(|| format!("unknown preset {preset:?}; one of {:?}", Hardware::PRESETS))?;
    if let Some(v) = a.tp {
        hw.tp = v.max(1);
    }
    if let Some(v) = a.host_gb {
        hw.host_bytes_per_gpu = v * 1e9;
    }
    if let Some(v) = a.mem_util {
        hw.mem_util = v;
    }
    if let Some(v) = a.compute_eff {
        hw.compute_eff = v;
    }
    if let Some(v) = a.mem_eff {
        hw.mem_eff = v;
    }
    if let Some(v) = a.link_gbps {
        hw.gpu.link_bytes_per_s = v * 1e9;
    }
    let mut ec = EngineConfig::new(hw);
    ec.gpu_blocks = a.gpu_blocks;
    ec.host_blocks = a.host_blocks;
    ec.retention_hints = a.hints;
    if let Some(v) = a.max_batch_tokens {
        ec.max_batch_tokens = v;
    }
    if let Some(v) = a.max_seqs {
        ec.max_seqs = v;
    }
    if let Some(v) = a.layers_per_group {
        ec.layers_per_group = v;
    }
    Ok(ec)
}

pub fn workload_spec(
    a: &Args,
    name: &str,
    rows: &Option<Arc<Vec<sim::TraceRow>>>,
) -> Result<WorkloadSpec, String> {
    let source = match (a.poisson, rows, &a.trace) {
        (Some(rate), _, _) => Source::Poisson {
            rate,
            duration_s: a.duration,
            prompt_mean: a.prompt_mean,
            output_mean: a.output_mean,
        },
        (None, Some(rows), Some(path)) => Source::Trace {
            rows: rows.clone(),
            label: std::path::Path::new(path)
                .file_name()
                .map_or(path.clone(), |f| f.to_string_lossy().into()),
            start_s: a.start,
            duration_s: a.duration,
        },
        _ => Source::Synthetic { duration_s: a.duration },
    };
    let mut s = WorkloadSpec::preset(name, source, a.seed)
        .ok_or_else(|| format!("unknown scenario {name:?}; one of {:?}", WorkloadSpec::PRESETS))?;
    if let Some(v) = a.rate_mult {
        s.rate_mult = v;
    }
    if let Some(v) = a.adapters {
        s.adapters = v.max(1);
    }
    if let Some(v) = a.zipf {
        s.zipf_s = v;
    }
    if let Some(v) = &a.ranks {
        s.ranks = v.clone();
    }
    if let Some(v) = a.follow {
        s.follow_prob = v;
    }
    if let Some(v) = a.think {
        s.min_gap_s = v;
    }
    if let Some(v) = a.followup_pick {
        s.followup_pick = v;
    }
    if let Some(v) = a.think_mean {
        s.think_mean_s = v;
    }
    if let Some(v) = a.session_timeout {
        s.session_timeout_s = v;
    }
    if let Some(v) = a.system_tokens {
        s.system_tokens = v;
    }
    if let Some(v) = a.max_context {
        s.max_context = v;
    }
    if let Some(v) = a.drift {
        s.popularity_period_s = v;
    }
    Ok(s)
}
