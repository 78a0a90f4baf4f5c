//! Command line of serve_sim: every knob, and the engine and workload they describe.
use clap::builder::{PossibleValue, PossibleValuesParser, TypedValueParser};
use clap::{ArgAction, Parser};
use libra_sim::{self as sim, EngineConfig, FollowupPick, Hardware, SimPolicy, Source, WorkloadSpec};
use std::sync::Arc;

const WORKLOAD: &str = "Workload";
const ENGINE: &str = "Engine and hardware";
const OUTPUT: &str = "Policies and output";

/// Run a multi-LoRA serving workload through libra's cache under every policy and compare TTFT.
///
/// By default arrivals and lengths come from a built-in generator calibrated to the Azure LLM
/// inference trace 2023 (conversation service); --trace replays the real CSV.
// Later occurrences of an option replace earlier ones, as `--no-plots` and `--plots` do.
#[derive(Parser)]
#[command(
    name = "serve_sim",
    override_usage = "cargo run --release --example serve_sim -- [OPTIONS]",
    args_override_self = true
)]
pub struct Args {
    /// Scenarios to run, comma-separated, or all [default: all]
    #[arg(long = "scenario", value_name = "LIST", help_heading = WORKLOAD, value_delimiter = ',',
          action = ArgAction::Set, value_parser = scenario_names())]
    pub scenarios: Vec<String>,
    /// Replay a trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens, as the Azure LLM inference
    /// trace 2023) instead of the built-in generator calibrated to its conversation service
    #[arg(long, value_name = "PATH", help_heading = WORKLOAD, conflicts_with = "poisson")]
    pub trace: Option<String>,
    /// Trace window start, seconds
    #[arg(long, value_name = "S", help_heading = WORKLOAD, default_value_t = 0.0)]
    pub start: f64,
    /// Trace seconds of arrivals (trace window length)
    #[arg(long, value_name = "S", help_heading = WORKLOAD, default_value_t = 300.0)]
    pub duration: f64,
    /// Redraw the adapters' popularity ranks every S served seconds [default: never]
    #[arg(long, value_name = "S", help_heading = WORKLOAD)]
    pub drift: Option<f64>,
    /// Poisson arrivals at RATE req/s with log-normal lengths instead
    #[arg(long, value_name = "RATE", help_heading = WORKLOAD)]
    pub poisson: Option<f64>,
    /// Poisson: mean prompt tokens (log-normal)
    #[arg(long, value_name = "N", help_heading = WORKLOAD, default_value_t = 1155.0)]
    pub prompt_mean: f64,
    /// Poisson: mean output tokens (log-normal)
    #[arg(long, value_name = "N", help_heading = WORKLOAD, default_value_t = 211.0)]
    pub output_mean: f64,
    /// Divide arrival times by X (load multiplier) [default: chatbot 2.5, translation 4, agent 2,
    /// many-adapters 2, memory-constrained 0.5]
    #[arg(long, value_name = "X", help_heading = WORKLOAD)]
    pub rate_mult: Option<f64>,
    /// Number of LoRA adapters [default: the scenario's]
    #[arg(long, value_name = "N", help_heading = WORKLOAD)]
    pub adapters: Option<u32>,
    /// Zipf exponent of adapter popularity [default: the scenario's]
    #[arg(long, value_name = "S", help_heading = WORKLOAD)]
    pub zipf: Option<f64>,
    /// Adapter ranks, comma-separated, assigned round-robin [default: 32,64]
    #[arg(long, value_name = "LIST", help_heading = WORKLOAD, value_delimiter = ',', action = ArgAction::Set)]
    pub ranks: Option<Vec<u32>>,
    /// Probability that a request continues an open conversation [default: the scenario's]
    #[arg(long, value_name = "P", help_heading = WORKLOAD)]
    pub follow: Option<f64>,
    /// Which open conversation a follow-up continues [default: think-time]
    #[arg(long, value_name = "M", help_heading = WORKLOAD, value_parser = followup_picks())]
    pub followup_pick: Option<FollowupPick>,
    /// think-time: mean time between a turn and the user's next, served seconds, not scaled by
    /// --rate-mult [default: 30; agent 8]
    #[arg(long, value_name = "S", help_heading = WORKLOAD)]
    pub think_mean: Option<f64>,
    /// Shortest time between turns of a conversation, trace seconds [default: the scenario's]
    #[arg(long, value_name = "S", help_heading = WORKLOAD)]
    pub think: Option<f64>,
    /// A conversation idle this long ends, trace seconds [default: the scenario's]
    #[arg(long, value_name = "S", help_heading = WORKLOAD)]
    pub session_timeout: Option<f64>,
    /// Shared system-prompt tokens per adapter [default: the scenario's]
    #[arg(long, value_name = "N", help_heading = WORKLOAD)]
    pub system_tokens: Option<u32>,
    /// Longest prompt; longer conversations start over [default: 12000]
    #[arg(long, value_name = "N", help_heading = WORKLOAD)]
    pub max_context: Option<u32>,
    /// Seed of everything generated
    #[arg(long, value_name = "N", help_heading = WORKLOAD, default_value_t = 1)]
    pub seed: u64,
    /// Workload samples per run (seeds SEED, SEED+1, ...), pooled: near the peak one sample's
    /// mean TTFT is decided by its largest burst of arrivals
    #[arg(long, value_name = "N", help_heading = WORKLOAD, default_value_t = 3,
          value_parser = clap::value_parser!(u32).range(1..=64))]
    pub seeds: u32,

    /// Model and hardware [default: llama3-8b-h800; the scenario's own where it has one]
    #[arg(long, value_name = "NAME", help_heading = ENGINE, value_parser = hardware_presets())]
    pub preset: Option<String>,
    /// Tensor-parallel degree [default: the preset's]
    #[arg(long, value_name = "N", help_heading = ENGINE)]
    pub tp: Option<u32>,
    /// Host-tier memory per GPU, GB [default: 128]
    #[arg(long, value_name = "G", help_heading = ENGINE)]
    pub host_gb: Option<f64>,
    /// Share of GPU memory the engine uses [default: 0.9]
    #[arg(long, value_name = "F", help_heading = ENGINE)]
    pub mem_util: Option<f64>,
    /// Achieved share of peak FLOP/s [default: 0.6]
    #[arg(long, value_name = "F", help_heading = ENGINE)]
    pub compute_eff: Option<f64>,
    /// Achieved share of HBM bandwidth [default: 0.8]
    #[arg(long, value_name = "F", help_heading = ENGINE)]
    pub mem_eff: Option<f64>,
    /// Host-link bandwidth per GPU, GB/s [default: 50]
    #[arg(long, value_name = "G", help_heading = ENGINE)]
    pub link_gbps: Option<f64>,
    /// Override the GPU pool size in blocks
    #[arg(long, value_name = "N", help_heading = ENGINE)]
    pub gpu_blocks: Option<u32>,
    /// Override the host tier size in blocks
    #[arg(long, value_name = "N", help_heading = ENGINE)]
    pub host_blocks: Option<u32>,
    /// Tokens per engine step (decode + prefill chunks) [default: 4096]
    #[arg(long, value_name = "N", help_heading = ENGINE)]
    pub max_batch_tokens: Option<u32>,
    /// Most sequences in flight [default: 256]
    #[arg(long, value_name = "N", help_heading = ENGINE)]
    pub max_seqs: Option<u32>,
    /// Layer-wise readiness: a request whose prefix is being copied in joins the step its copy
    /// lands in, layer L waiting for its group of N layers; 0: it waits for the step after its
    /// copy [default: 4]
    #[arg(long, value_name = "N", help_heading = ENGINE)]
    pub layers_per_group: Option<u32>,
    /// The engine gives retention hints when a turn ends: whether its conversation continues
    ///
    /// When it continues, agent: a pending tool call expected back after the mean think time;
    /// other scenarios: an open session held until the timeout. When it ended (the session was
    /// closed, the agent returned its answer, a single-turn request): the turn's blocks past
    /// the shared system prompt will not be read again (libra_cache_expect_no_reuse).
    #[arg(long, help_heading = ENGINE)]
    pub hints: bool,
    /// Adapters are registered whole: no policy may run a layer before its whole adapter is
    /// in (by default they are registered layer by layer, which libra and the oracle use)
    #[arg(long, help_heading = ENGINE)]
    pub whole_adapters: bool,

    /// Policies to run, comma-separated [default: all but oracle-copies and libra-density]
    ///
    /// oracle-copies: the oracle without knowing which blocks are never read again (it copies
    /// every block it evicts to the host), an ablation of the bound. libra-density: libra
    /// ranking GPU eviction by hit density by idle age, an ablation of the ranking.
    #[arg(long, value_name = "LIST", help_heading = OUTPUT, value_delimiter = ',',
          action = ArgAction::Set, value_parser = policies())]
    pub policies: Vec<SimPolicy>,
    /// Share of GPU blocks in vllm's adapter region; without it, each scenario's is tuned: the
    /// best mean TTFT over 0.05-0.6 at 70% of the run's highest load, sweep printed
    #[arg(long = "vllm-adapter-fraction", value_name = "F", help_heading = OUTPUT)]
    pub vllm_fraction: Option<f64>,
    /// Loads per scenario, from 10% to the peak load; 0: only the scenario's own load
    /// (--rate-mult)
    ///
    /// The peak load is the highest with a mean TTFT under 500 ms of libra, lru, elora,
    /// vllm-offload and vllm, found by doubling or halving from the scenario's load, then 4
    /// bisections.
    #[arg(long = "grid", value_name = "N", help_heading = OUTPUT, default_value_t = 4)]
    pub grid_points: usize,
    /// Write scenario parameters and results as JSON
    #[arg(long, value_name = "FILE", help_heading = OUTPUT)]
    pub json: Option<String>,
    /// Write SVG plots (TTFT CDF, TTFT vs load) into DIR
    #[arg(long = "plots", value_name = "DIR", help_heading = OUTPUT, default_value = "sim_out",
          overrides_with = "no_plots")]
    plots_dir: String,
    /// Write no plots
    #[arg(long, help_heading = OUTPUT, overrides_with = "plots_dir")]
    no_plots: bool,
    /// Policies simulated in parallel (0 counts as 1)
    #[arg(long, value_name = "N", help_heading = OUTPUT, default_value_t = 2)]
    pub jobs: usize,
    /// No progress bar
    #[arg(long, help_heading = OUTPUT)]
    pub quiet: bool,
}

impl Args {
    /// The plot directory, unless `--no-plots` came last.
    pub fn plots(&self) -> Option<&str> {
        (!self.no_plots).then_some(self.plots_dir.as_str())
    }
}

fn scenario_names() -> PossibleValuesParser {
    let help = [
        "50 adapters, Zipf 1.0, follow-up p=0.5, 256-token persona prompt",
        "768-token few-shot instruction per adapter, single turns",
        "1536-token tool descriptions, follow-up p=0.8, 8 s mean think time (at least 2 trace s)",
        "chatbot with 1000 adapters, Zipf 0.9",
        "chatbot with 200 adapters (Zipf 0.9) on one 48 GB L40S (llama3-8b-l40s unless --preset is given)",
    ];
    let named = WorkloadSpec::PRESETS.iter().zip(help).map(|(n, h)| PossibleValue::new(*n).help(h));
    PossibleValuesParser::new(named.chain([PossibleValue::new("all").help("every scenario above")]))
}

fn hardware_presets() -> PossibleValuesParser {
    let help = ["1 GPU", "TP 4", "TP 8", "1 GPU", "TP 4", "1 GPU"];
    PossibleValuesParser::new(Hardware::PRESETS.iter().zip(help).map(|(n, h)| PossibleValue::new(*n).help(h)))
}

fn followup_picks() -> impl TypedValueParser<Value = FollowupPick> {
    PossibleValuesParser::new([
        PossibleValue::new("think-time").help(
            "after each turn the user leaves (p = 1 - follow-up p) or comes back after a log-normal \
             think time (sigma 1); an arrival is the user whose think time ended first, or a new one \
             when nobody is due",
        ),
        PossibleValue::new("uniform").help(
            "a follow-up (probability --follow) continues any open conversation, uniformly (idle \
             time says nothing)",
        ),
    ])
    .map(|s| FollowupPick::parse(&s).expect("a listed value"))
}

fn policies() -> impl TypedValueParser<Value = SimPolicy> {
    PossibleValuesParser::new(SimPolicy::ALL.iter().chain(&SimPolicy::ABLATIONS).map(|p| p.name()))
        .map(|s| SimPolicy::parse(&s).expect("a listed value"))
}

/// The command line, with list defaults filled in; malformed arguments end the process with
/// clap's message and status 2.
pub fn parse_args() -> Args {
    let mut a = Args::parse();
    if a.scenarios.is_empty() || a.scenarios.iter().any(|s| s == "all") {
        a.scenarios = WorkloadSpec::PRESETS.iter().map(|s| s.to_string()).collect();
    }
    if a.policies.is_empty() {
        a.policies = SimPolicy::ALL.to_vec();
    }
    a.jobs = a.jobs.max(1);
    a
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
    ec.layered_adapters = !a.whole_adapters;
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
