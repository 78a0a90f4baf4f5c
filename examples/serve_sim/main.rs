//! Serving simulator: runs a request workload (built-in, calibrated to the Azure LLM 2023
//! conversation trace, or a replayed trace CSV) through a simulated continuous-batching
//! multi-LoRA engine whose cache is libra's own `CacheCore`, once per policy on the same
//! requests, and prints TTFT, TPOT, throughput, hit ratios and host-link traffic.
//!
//! Run `cargo run --release --example serve_sim -- --help` for every knob.
mod plots;

use indicatif::{ProgressBar, ProgressStyle};
use libra::sim::grid::{self, Job, PeakSearch};
use libra::sim::summary::{self, ScenarioGrid, SummaryRow};
use libra::sim::{self, report, EngineConfig, Hardware, RunResult, SimPolicy, Source, WorkloadSpec};
use libra::PolicyKind;
use std::sync::Arc;
use std::time::Instant;

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
  --hints              the engine gives retention hints when a turn ends and its conversation
                       continues: agent, a pending tool call expected back after the mean
                       think time; other scenarios, an open session held until the timeout

Policies and output
  --policies LIST      vllm,vllm-offload,slora,lru,elora,elora-authors,libra,oracle [all]
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

struct Args {
    scenarios: Vec<String>,
    trace: Option<String>,
    start: f64,
    duration: f64,
    poisson: Option<f64>,
    prompt_mean: f64,
    output_mean: f64,
    rate_mult: Option<f64>,
    adapters: Option<u32>,
    zipf: Option<f64>,
    ranks: Option<Vec<u32>>,
    follow: Option<f64>,
    think: Option<f64>,
    followup_pick: Option<sim::FollowupPick>,
    think_mean: Option<f64>,
    session_timeout: Option<f64>,
    system_tokens: Option<u32>,
    max_context: Option<u32>,
    seed: u64,
    preset: Option<String>,
    tp: Option<u32>,
    host_gb: Option<f64>,
    mem_util: Option<f64>,
    compute_eff: Option<f64>,
    mem_eff: Option<f64>,
    link_gbps: Option<f64>,
    gpu_blocks: Option<u32>,
    host_blocks: Option<u32>,
    max_batch_tokens: Option<u32>,
    max_seqs: Option<u32>,
    vllm_fraction: Option<f64>,
    policies: Vec<SimPolicy>,
    grid_points: usize,
    drift: Option<f64>,
    json: Option<String>,
    plots: Option<String>,
    jobs: usize,
    quiet: bool,
    hints: bool,
}

fn parse_args() -> Result<Args, String> {
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

fn engine_config(a: &Args, scenario_preset: Option<&str>) -> Result<EngineConfig, String> {
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
    Ok(ec)
}

fn workload_spec(
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

fn main() {
    let a = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("serve_sim: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = real_main(a) {
        eprintln!("serve_sim: {e}");
        std::process::exit(1);
    }
}

/// Adapter shares of GPU blocks tried for `vllm`.
const VLLM_FRACTIONS: [f64; 6] = [0.05, 0.1, 0.2, 0.3, 0.45, 0.6];
/// Policies whose peak is searched; the grid ends at the highest.
const PEAK_POLICIES: [&str; 5] = ["libra", "elora", "vllm-offload", "vllm", "hicache"];
/// `vllm`'s adapter share is tuned at this share of the other policies' peak: a high load that
/// the engine still sustains, where the split matters most.
const TUNE_AT: f64 = 0.7;

struct Ctx {
    jobs: usize,
    bar: ProgressBar,
    runs: std::sync::atomic::AtomicUsize,
    sim_s: std::sync::atomic::AtomicU64,
}

impl Ctx {
    /// One finished run of `s` seconds of arrivals.
    fn tick(&self, s: u64) {
        use std::sync::atomic::Ordering;
        self.bar.inc(s);
        self.runs.fetch_add(1, Ordering::Relaxed);
        self.sim_s.fetch_add(s, Ordering::Relaxed);
    }
    fn run(&self, jobs: &[Job]) -> Result<Vec<RunResult>, String> {
        grid::run_all(jobs, self.jobs, &|s| self.tick(s))
    }
}

fn jobs_for(spec: &WorkloadSpec, ec: &EngineConfig, policies: &[SimPolicy]) -> Vec<Job> {
    let wl = Arc::new(sim::generate(spec));
    policies
        .iter()
        .map(|&p| Job { workload: wl.clone(), spec: spec.clone(), engine: ec.clone(), policy: p })
        .collect()
}

/// Picks `vllm`'s adapter share by mean TTFT at the scenario's load and prints the sweep.
fn tune_vllm(ctx: &Ctx, spec: &WorkloadSpec, ec: &EngineConfig) -> Result<f64, String> {
    let wl = Arc::new(sim::generate(spec));
    let jobs: Vec<Job> = VLLM_FRACTIONS
        .iter()
        .map(|&f| {
            let mut e = ec.clone();
            e.vllm_adapter_fraction = f;
            e.give_up_wait_us = Some(PeakSearch::default().give_up_wait_us);
            Job {
                workload: wl.clone(),
                spec: spec.clone(),
                engine: e,
                policy: SimPolicy::Lib(PolicyKind::Vllm),
            }
        })
        .collect();
    let res = ctx.run(&jobs)?;
    // A run given up as overloaded ranks below every completed one, and among them by how long
    // it lasted.
    let (best, _) = VLLM_FRACTIONS
        .iter()
        .zip(&res)
        .min_by(|a, b| {
            (a.1.gave_up, a.1.ttft_mean_ms(), -a.1.sim_s)
                .partial_cmp(&(b.1.gave_up, b.1.ttft_mean_ms(), -b.1.sim_s))
                .expect("finite")
        })
        .expect("fractions");
    let cells: Vec<String> =
        VLLM_FRACTIONS
            .iter()
            .zip(&res)
            .map(|(f, r)| {
                if r.gave_up {
                    format!("{f} overloaded")
                } else {
                    format!("{f} {:.1} ms", r.ttft_mean_ms())
                }
            })
            .collect();
    println!(
        "vllm adapter share of GPU blocks, mean TTFT at load x{:.2}: {}; tuned: {best} (also vllm-offload's)",
        spec.rate_mult,
        cells.join(", ")
    );
    Ok(*best)
}

fn real_main(a: Args) -> Result<(), String> {
    let wall = Instant::now();
    let rows = match (&a.trace, a.poisson) {
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            Some(Arc::new(sim::parse_azure_csv(&text)?))
        }
        _ => None,
    };
    let bar = if a.quiet { ProgressBar::hidden() } else { ProgressBar::no_length() };
    bar.set_style(ProgressStyle::with_template("{elapsed:>4} {pos} simulated s").map_err(|e| e.to_string())?);
    let ctx = Ctx { jobs: a.jobs, bar, runs: Default::default(), sim_s: Default::default() };
    let mut described = Vec::new();
    let mut summary = Vec::new();
    let mut json_parts = Vec::new();
    for name in &a.scenarios {
        let spec = workload_spec(&a, name, &rows)?;
        let mut ec = engine_config(&a, spec.hardware_preset())?;
        ctx.bar.suspend(|| {
            println!();
            let hw = ec.hw.describe(ec.block_tokens);
            if !described.contains(&hw) {
                print!("{hw}");
                println!(
                    "engine: continuous batching, chunked prefill {} tokens/step, at most {} sequences, FCFS, \
                     recompute preemption; every cache decision by libra's CacheCore",
                    ec.max_batch_tokens, ec.max_seqs
                );
                described.push(hw);
            }
            print!("{}", spec.describe());
        });
        let wl = sim::generate(&spec);
        let ws = report::working_set(&spec, &ec, &wl);
        println!(
            "{} requests, {} prompt tokens, {} conversations, {:.0} s of arrivals ({:.2} req/s); {ws}",
            wl.requests.len(),
            wl.prompt_tokens(),
            wl.sessions.len(),
            wl.duration_s(),
            grid::load_rps(&wl)
        );
        print!("{}", wl.describe_turns());
        let has = |p: &str| a.policies.iter().any(|x| x.name() == p);
        let split = |p: &SimPolicy| p.kind().split_regions();
        let search: Vec<SimPolicy> =
            a.policies.iter().copied().filter(|p| PEAK_POLICIES.contains(&p.name())).collect();
        let mut peaks: Vec<(SimPolicy, Option<f64>)> = Vec::new();
        let find_peaks =
            |ps: Vec<SimPolicy>, ec: &EngineConfig| -> Result<Vec<(SimPolicy, Option<f64>)>, String> {
                let engines = vec![ec.clone(); ps.len()];
                let pk = grid::peaks(&spec, &engines, &ps, PeakSearch::default(), a.jobs, &|s| ctx.tick(s))?;
                Ok(ps.into_iter().zip(pk).collect())
            };
        let top = |peaks: &[(SimPolicy, Option<f64>)]| peaks.iter().filter_map(|p| p.1).reduce(f64::max);
        if a.grid_points > 0 {
            // The policies without vLLM's split first: `vllm` is tuned below their peak.
            peaks.extend(find_peaks(search.iter().copied().filter(|p| !split(p)).collect(), &ec)?);
        }
        ec.vllm_adapter_fraction = match a.vllm_fraction {
            Some(f) => f,
            None if has("vllm") || has("vllm-offload") => {
                let m = top(&peaks).map_or(spec.rate_mult, |t| TUNE_AT * t);
                tune_vllm(&ctx, &grid::at_load(&spec, m), &ec)?
            }
            None => ec.vllm_adapter_fraction,
        };
        let mut peaks_json = Vec::new();
        let loads: Vec<f64> = if a.grid_points == 0 {
            vec![spec.rate_mult]
        } else {
            peaks.extend(find_peaks(search.iter().copied().filter(split).collect(), &ec)?);
            let base = grid::load_rps(&wl) / spec.rate_mult;
            let cells: Vec<String> = peaks
                .iter()
                .map(|(p, m)| {
                    format!("{} {}", p.name(), m.map_or("-".into(), |m| format!("{:.2}", m * base)))
                })
                .collect();
            let ps = PeakSearch::default();
            println!(
                "peak load, req/s with mean TTFT < {:.0} ms ({} bisections): {}",
                ps.bound_ms,
                ps.bisections,
                cells.join(", ")
            );
            peaks_json = peaks.iter().map(|(p, m)| (p.name().to_string(), m.map(|m| m * base))).collect();
            match top(&peaks) {
                Some(t) => grid::grid_loads(t, a.grid_points),
                None => {
                    println!(
                        "no policy stays under the bound at any load tried; one load, the scenario's own"
                    );
                    vec![spec.rate_mult]
                }
            }
        };
        let mut jobs = Vec::new();
        let mut specs = Vec::new();
        for &m in &loads {
            let s = grid::at_load(&spec, m);
            jobs.extend(jobs_for(&s, &ec, &a.policies));
            specs.push(s);
        }
        let res = ctx.run(&jobs)?;
        let per_load: Vec<Vec<RunResult>> = res.chunks(a.policies.len()).map(|c| c.to_vec()).collect();
        let loads_rps: Vec<f64> =
            jobs.chunks(a.policies.len()).map(|c| grid::load_rps(&c[0].workload)).collect();
        let g = ScenarioGrid { name: spec.name.clone(), loads_rps, results: per_load };
        ctx.bar.suspend(|| {
            if loads.len() > 1 {
                print!("{}", summary::grid_table(&g));
            }
            let top = g.results.last().expect("one load at least");
            println!("at {:.2} req/s (load x{:.2}):", g.loads_rps.last().unwrap(), loads.last().unwrap());
            print!("{}", report::table(top));
            print!("{}", summary::comparisons(&g));
        });
        if let Some(dir) = &a.plots {
            std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
            let title =
                format!("{} / {} ({:.2} req/s)", spec.name, ec.hw.model.name, g.loads_rps.last().unwrap());
            let p = format!("{dir}/ttft_cdf_{}.svg", spec.name);
            plots::plot_cdf(&p, &title, g.results.last().unwrap()).map_err(|e| format!("{p}: {e}"))?;
            println!("plot: {p}");
            if g.loads_rps.len() > 1 {
                let series: Vec<(String, Vec<(f64, f64)>)> = a
                    .policies
                    .iter()
                    .map(|p| {
                        let v = g.series(p.name(), |r| r.ttft_mean_ms()).unwrap_or_default();
                        (p.name().to_string(), g.loads_rps.iter().copied().zip(v).collect())
                    })
                    .collect();
                let p = format!("{dir}/ttft_vs_load_{}.svg", spec.name);
                plots::plot_load(&p, &format!("{} / {}", spec.name, ec.hw.model.name), &series)
                    .map_err(|e| format!("{p}: {e}"))?;
                println!("plot: {p}");
            }
        }
        let sj = report::scenario_json(&spec, &ec, wl.requests.len(), wl.prompt_tokens());
        json_parts.push(report::grid_json(&sj, &g, &loads, &peaks_json));
        if let Some(row) = SummaryRow::of(&g) {
            summary.push(row);
        }
    }
    ctx.bar.finish_and_clear();
    if !summary.is_empty() {
        println!(
            "\nlibra against the best peer per scenario (mean TTFT; best peer: lowest average over the grid)"
        );
        print!("{}", summary::final_table(&summary));
    }
    if let Some(path) = &a.json {
        let all: Vec<String> = json_parts.iter().map(|p| p.replace('\n', "\n  ")).collect();
        let doc = format!("{{\n  \"scenarios\": [\n  {}\n  ]\n}}\n", all.join(",\n  "));
        std::fs::write(path, doc).map_err(|e| format!("{path}: {e}"))?;
        println!("json: {path}");
    }
    let secs = wall.elapsed().as_secs_f64();
    let sim_total = ctx.sim_s.load(std::sync::atomic::Ordering::Relaxed) as f64;
    println!(
        "\nsimulated {:.0} s of arrivals in {:.1} s of wall time ({:.0}x real time over {} runs on {} threads)",
        sim_total,
        secs,
        sim_total / secs.max(1e-9),
        ctx.runs.load(std::sync::atomic::Ordering::Relaxed),
        a.jobs
    );
    Ok(())
}
