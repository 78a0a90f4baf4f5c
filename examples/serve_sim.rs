//! Serving simulator: runs a request workload (built-in, calibrated to the Azure LLM 2023
//! conversation trace, or a replayed trace CSV) through a simulated continuous-batching
//! multi-LoRA engine whose cache is libra's own `CacheCore`, once per policy on the same
//! requests, and prints TTFT, TPOT, throughput, hit ratios and host-link traffic.
//!
//! Run `cargo run --release --example serve_sim -- --help` for every knob.
use indicatif::{ProgressBar, ProgressStyle};
use libra::sim::report;
use libra::sim::{self, EngineConfig, Hardware, RunResult, SimPolicy, Source, WorkloadSpec};
use plotters::prelude::*;
use std::sync::{Arc, Mutex};
use std::time::Instant;

const HELP: &str = "\
serve_sim: run a multi-LoRA serving workload through libra's cache under every policy and
compare TTFT. By default arrivals and lengths come from a built-in generator calibrated to the
Azure LLM inference trace 2023 (conversation service); --trace replays the real CSV.

USAGE: cargo run --release --example serve_sim -- [OPTIONS]

Workload
  --scenario LIST      chatbot, translation, agent, many-adapters, or all [all]
                       chatbot: 50 adapters, Zipf 1.0, follow-up p=0.5, 256-token persona prompt
                       translation: 768-token few-shot instruction per adapter, single turns
                       agent: 1536-token tool descriptions, follow-up p=0.8, 8 s mean think
                       time (at least 2 trace s)
                       many-adapters: chatbot with 1000 adapters, Zipf 0.9
  --trace PATH         replay a trace CSV (TIMESTAMP,ContextTokens,GeneratedTokens, as the
                       Azure LLM inference trace 2023) instead of the built-in generator
                       calibrated to its conversation service
  --start S            trace window start, seconds [0]
  --duration S         seconds of arrivals (trace window length) [900]
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
                       llama3-8b-h200, llama3-70b-h200 (TP 4) [llama3-8b-h800]
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

Policies and output
  --policies LIST      vllm,slora,lru,elora,elora-authors,libra,oracle [all]
  --vllm-adapter-fraction F
                       share of GPU blocks in vllm's adapter region; without it, each
                       scenario's is tuned: the best mean TTFT over 0.02-0.4, sweep printed
  --sweep              also sweep the load and report the peak load (mean TTFT < 500 ms),
                       bisected between the sweep's points to 1/32 of their step
  --sweep-mults LIST   load multipliers of the sweep [1,2,3,4,5,6,8,10,12]
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
    preset: String,
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
    sweep: bool,
    sweep_mults: Vec<f64>,
    json: Option<String>,
    plots: Option<String>,
    jobs: usize,
    quiet: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        scenarios: WorkloadSpec::PRESETS.iter().map(|s| s.to_string()).collect(),
        trace: None,
        start: 0.0,
        duration: 900.0,
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
        preset: "llama3-8b-h800".into(),
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
        sweep: false,
        sweep_mults: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0, 12.0],
        json: None,
        plots: Some("sim_out".into()),
        jobs: 2,
        quiet: false,
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
            "--preset" => a.preset = val(&mut it, f)?,
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
            "--sweep" => a.sweep = true,
            "--sweep-mults" => a.sweep_mults = list(&mut it, f)?,
            "--json" => a.json = Some(val(&mut it, f)?),
            "--plots" => a.plots = Some(val(&mut it, f)?),
            "--no-plots" => a.plots = None,
            "--jobs" => a.jobs = val::<usize>(&mut it, f)?.max(1),
            "--quiet" => a.quiet = true,
            _ => return Err(format!("unknown option {f:?} (see --help)")),
        }
    }
    if a.trace.is_some() && a.poisson.is_some() {
        return Err("--trace and --poisson exclude each other".into());
    }
    Ok(a)
}

fn engine_config(a: &Args) -> Result<EngineConfig, String> {
    let mut hw = Hardware::preset(&a.preset)
        .ok_or_else(|| format!("unknown preset {:?}; one of {:?}", a.preset, Hardware::PRESETS))?;
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
    Ok(s)
}

/// Runs every (workload, policy) job on `jobs` threads; results come back in job order.
/// Mean TTFT that defines the peak load.
const PEAK_TTFT_MS: f64 = 500.0;
/// Bisections of the bracket around each policy's peak.
const PEAK_BISECTIONS: u32 = 5;

fn run_jobs(
    jobs: &[(Arc<sim::Workload>, WorkloadSpec, SimPolicy)],
    ec: &EngineConfig,
    threads: usize,
    bar: &ProgressBar,
) -> Result<Vec<RunResult>, String> {
    let next = Mutex::new(0usize);
    let out: Mutex<Vec<Option<Result<RunResult, String>>>> = Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..threads.min(jobs.len()) {
            scope.spawn(|| loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    let i = *n;
                    *n += 1;
                    i
                };
                let Some((wl, spec, policy)) = jobs.get(i) else { break };
                let mut last = 0u64;
                let mut progress = |t: f64| {
                    let t = t as u64;
                    if t > last {
                        bar.inc(t - last);
                        last = t;
                    }
                };
                let r = sim::run(wl, spec, ec, *policy, &mut progress);
                // Count the rest of this job's span even if it finished early.
                let span = wl.duration_s() as u64;
                if span > last {
                    bar.inc(span - last);
                }
                out.lock().unwrap()[i] = Some(r);
            });
        }
    });
    out.into_inner().unwrap().into_iter().map(|r| r.expect("every job ran")).collect()
}

const COLORS: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(60, 60, 60),
];

fn plot_cdf(path: &str, title: &str, results: &[RunResult]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let all: Vec<Vec<f64>> = results.iter().map(|r| r.ttft_ms_sorted()).collect();
    let lo = all.iter().filter_map(|v| v.first()).fold(f64::MAX, |a, &b| a.min(b)).max(0.1);
    let hi = all.iter().filter_map(|v| v.last()).fold(1.0f64, |a, &b| a.max(b)) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)?;
    chart.configure_mesh().x_desc("TTFT (ms, log)").y_desc("fraction of requests").draw()?;
    for (k, (r, v)) in results.iter().zip(&all).enumerate() {
        let c = COLORS[k % COLORS.len()];
        let n = v.len().max(1) as f64;
        // At most ~2000 points per curve keeps the SVG small.
        let step = (v.len() / 2000).max(1);
        let pts: Vec<(f64, f64)> =
            v.iter().enumerate().step_by(step).map(|(i, &x)| (x.max(lo), (i + 1) as f64 / n)).collect();
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
            .label(r.policy.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

fn plot_load(
    path: &str,
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let xs = series.iter().flat_map(|(_, v)| v.iter().map(|p| p.0));
    let xmax = xs.fold(1.0f64, f64::max) * 1.05;
    let ys: Vec<f64> = series.iter().flat_map(|(_, v)| v.iter().map(|p| p.1)).collect();
    let ymin = ys.iter().copied().fold(f64::MAX, f64::min).max(1.0) * 0.8;
    let ymax = ys.iter().copied().fold(10.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..xmax, (ymin..ymax).log_scale())?;
    chart.configure_mesh().x_desc("load (req/s)").y_desc("mean TTFT (ms, log)").draw()?;
    chart.draw_series(LineSeries::new(vec![(0.0, 500.0), (xmax, 500.0)], BLACK.mix(0.4)))?;
    for (k, (name, pts)) in series.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
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

fn real_main(a: Args) -> Result<(), String> {
    let wall = Instant::now();
    let ec = engine_config(&a)?;
    let rows = match (&a.trace, a.poisson) {
        (Some(path), None) => {
            let text = std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))?;
            Some(Arc::new(sim::parse_azure_csv(&text)?))
        }
        _ => None,
    };
    let mut specs = Vec::new();
    let mut workloads = Vec::new();
    for name in &a.scenarios {
        let spec = workload_spec(&a, name, &rows)?;
        workloads.push(Arc::new(sim::generate(&spec)));
        specs.push(spec);
    }
    let mut jobs = Vec::new();
    for (spec, wl) in specs.iter().zip(&workloads) {
        for &p in &a.policies {
            jobs.push((wl.clone(), spec.clone(), p));
        }
    }
    let total: u64 = jobs.iter().map(|(wl, _, _)| wl.duration_s() as u64).sum();
    let bar = if a.quiet { ProgressBar::hidden() } else { ProgressBar::new(total) };
    bar.set_style(
        ProgressStyle::with_template("{elapsed:>4} [{bar:40}] {pos}/{len} simulated s ({eta} left)")
            .map_err(|e| e.to_string())?
            .progress_chars("=> "),
    );
    print!("{}", ec.hw.describe(ec.block_tokens));
    println!(
        "engine: continuous batching, chunked prefill {} tokens/step, at most {} sequences, FCFS, \
         recompute preemption; every cache decision by libra's CacheCore",
        ec.max_batch_tokens, ec.max_seqs
    );
    let results = run_jobs(&jobs, &ec, a.jobs, &bar)?;
    bar.finish_and_clear();
    let sim_total: f64 = results.iter().map(|r| r.sim_s).sum();

    let mut json_parts = Vec::new();
    for (si, (spec, wl)) in specs.iter().zip(&workloads).enumerate() {
        let res = &results[si * a.policies.len()..(si + 1) * a.policies.len()];
        println!();
        print!("{}", spec.describe());
        println!(
            "{} requests, {} prompt tokens, {} conversations, {:.0} s of arrivals",
            wl.requests.len(),
            wl.prompt_tokens(),
            wl.sessions.len(),
            wl.duration_s()
        );
        print!("{}", wl.describe_turns());
        let mut peaks: Vec<Option<f64>> = vec![None; res.len()];
        let mut load_series: Vec<(String, Vec<(f64, f64)>)> = Vec::new();
        if a.sweep {
            let base_rate = wl.requests.len() as f64 / wl.duration_s().max(1e-9) / spec.rate_mult;
            let mut sweep_jobs = Vec::new();
            let mut sweep_wls = Vec::new();
            for &m in &a.sweep_mults {
                let mut s = spec.clone();
                s.rate_mult = m;
                let w = Arc::new(sim::generate(&s));
                for &p in &a.policies {
                    sweep_jobs.push((w.clone(), s.clone(), p));
                }
                sweep_wls.push((m, w));
            }
            let total: u64 = sweep_jobs.iter().map(|(w, _, _)| w.duration_s() as u64).sum();
            let sbar = if a.quiet { ProgressBar::hidden() } else { ProgressBar::new(total) };
            sbar.set_style(bar.style());
            let sres = run_jobs(&sweep_jobs, &ec, a.jobs, &sbar)?;
            sbar.finish_and_clear();
            // Per policy: the sweep's points, and the bracket [passing, failing] of multipliers
            // around the highest passing one, refined below.
            let mut brackets: Vec<Option<(f64, f64)>> = Vec::new();
            for (pi, p) in a.policies.iter().enumerate() {
                let mut pts = Vec::new();
                let mut peak = None;
                let mut bracket = None;
                for (mi, (m, _)) in sweep_wls.iter().enumerate() {
                    let r = &sres[mi * a.policies.len() + pi];
                    pts.push((base_rate * m, r.ttft_mean_ms()));
                    if r.ttft_mean_ms() < PEAK_TTFT_MS {
                        peak = Some(peak.map_or(*m, |x: f64| x.max(*m)));
                    }
                }
                if let Some(lo) = peak {
                    bracket = sweep_wls
                        .iter()
                        .map(|(m, _)| *m)
                        .filter(|&m| m > lo)
                        .reduce(f64::min)
                        .map(|hi| (lo, hi));
                }
                peaks[pi] = peak.map(|m| base_rate * m);
                brackets.push(bracket);
                load_series.push((p.name().to_string(), pts));
            }
            // Bisect each bracket: the peak to 1/32 of the grid step, not just a grid point.
            for _ in 0..PEAK_BISECTIONS {
                let open: Vec<usize> = (0..brackets.len()).filter(|&i| brackets[i].is_some()).collect();
                let mut jobs = Vec::new();
                for &pi in &open {
                    let (lo, hi) = brackets[pi].expect("open bracket");
                    let mut s = spec.clone();
                    s.rate_mult = (lo + hi) / 2.0;
                    jobs.push((Arc::new(sim::generate(&s)), s, a.policies[pi]));
                }
                let rres = run_jobs(&jobs, &ec, a.jobs, &ProgressBar::hidden())?;
                for (k, &pi) in open.iter().enumerate() {
                    let (lo, hi) = brackets[pi].expect("open bracket");
                    let mid = (lo + hi) / 2.0;
                    let ttft = rres[k].ttft_mean_ms();
                    load_series[pi].1.push((base_rate * mid, ttft));
                    brackets[pi] = Some(if ttft < PEAK_TTFT_MS { (mid, hi) } else { (lo, mid) });
                }
            }
            for (pi, b) in brackets.iter().enumerate() {
                if let Some((lo, _)) = b {
                    peaks[pi] = Some(base_rate * lo);
                }
                load_series[pi].1.sort_by(|x, y| x.0.total_cmp(&y.0));
            }
        }
        print!("{}", report::table(res));
        if a.sweep {
            let cells: Vec<String> = a
                .policies
                .iter()
                .zip(&peaks)
                .map(|(p, k)| format!("{} {}", p.name(), k.map_or("<lowest".into(), |v| format!("{v:.2}"))))
                .collect();
            println!(
                "peak load (req/s with mean TTFT < 500 ms, bisected to 1/{} of the sweep's step): {}",
                1 << PEAK_BISECTIONS,
                cells.join(", ")
            );
        }
        print!("{}", report::ratios(res));
        if let Some(dir) = &a.plots {
            std::fs::create_dir_all(dir).map_err(|e| format!("{dir}: {e}"))?;
            let title = format!("{} / {} ({}x load)", spec.name, ec.hw.model.name, spec.rate_mult);
            let p = format!("{dir}/ttft_cdf_{}.svg", spec.name);
            plot_cdf(&p, &title, res).map_err(|e| format!("{p}: {e}"))?;
            println!("plot: {p}");
            if a.sweep {
                let p = format!("{dir}/ttft_vs_load_{}.svg", spec.name);
                plot_load(&p, &format!("{} / {}", spec.name, ec.hw.model.name), &load_series)
                    .map_err(|e| format!("{p}: {e}"))?;
                println!("plot: {p}");
            }
        }
        let sj = report::scenario_json(spec, &ec, wl.requests.len(), wl.prompt_tokens());
        json_parts.push(report::scenario_results_json(&sj, res, &peaks));
    }
    if let Some(path) = &a.json {
        // The first scenario in the top-level shape; every scenario under "scenarios".
        let first = json_parts.first().cloned().unwrap_or_else(|| "{}".into());
        let inner = first.trim_end().strip_suffix('}').unwrap_or(&first).to_string();
        let all: Vec<String> = json_parts.iter().map(|p| p.replace('\n', "\n  ")).collect();
        let doc = format!("{inner},\n  \"scenarios\": [\n  {}\n  ]\n}}\n", all.join(",\n  "));
        std::fs::write(path, doc).map_err(|e| format!("{path}: {e}"))?;
        println!("json: {path}");
    }
    let secs = wall.elapsed().as_secs_f64();
    println!(
        "\nsimulated {:.0} s of serving in {:.1} s of wall time ({:.0}x real time over {} runs on {} threads)",
        sim_total,
        secs,
        sim_total / secs.max(1e-9),
        results.len(),
        a.jobs
    );
    Ok(())
}
