//! Serving simulator: runs a request workload (built-in, calibrated to the Azure LLM 2023
//! conversation trace, or a replayed trace CSV) through a simulated continuous-batching
//! multi-LoRA engine whose cache is libra's own `CacheCore`, once per policy on the same
//! requests, and prints TTFT, TPOT, throughput, hit ratios and host-link traffic.
//!
//! Run `cargo run --release --example serve_sim -- --help` for every knob.
mod args;
mod plots;

use args::{engine_config, parse_args, workload_spec, Args};
use indicatif::{ProgressBar, ProgressStyle};
use libra::PolicyKind;
use libra_sim::grid::{self, Job, PeakSearch};
use libra_sim::summary::{self, ScenarioGrid, SummaryRow};
use libra_sim::{self as sim, report, EngineConfig, RunResult, SimPolicy, WorkloadSpec};
use std::sync::Arc;
use std::time::Instant;

fn main() {
    let a = parse_args();
    if let Err(e) = real_main(a) {
        eprintln!("serve_sim: {e}");
        std::process::exit(1);
    }
}

/// Adapter shares of GPU blocks tried for `vllm`.
const VLLM_FRACTIONS: [f64; 6] = [0.05, 0.1, 0.2, 0.3, 0.45, 0.6];
/// Policies whose peak is searched; the grid ends at the highest.
const PEAK_POLICIES: [&str; 5] = ["libra", "elora", "vllm-offload", "vllm", "hicache"];
/// `vllm`'s adapter share is tuned at this share of the other policies' peak (of the one load, with
/// `--grid 0`): a high load that the engine still sustains, where the split matters most.
const TUNE_AT: f64 = 0.7;

struct Ctx {
    jobs: usize,
    /// Workload samples every job runs on.
    seeds: u32,
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
        grid::run_seeded(jobs, self.seeds, self.jobs, &|s| self.tick(s))
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
        "vllm adapter share of GPU blocks, mean TTFT at load x{:.2}: {}; tuned: {best} (also vllm-offload's and hicache's)",
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
    let ctx = Ctx { jobs: a.jobs, seeds: a.seeds, bar, runs: Default::default(), sim_s: Default::default() };
    let mut described = Vec::new();
    let mut summary = Vec::new();
    let mut grids = Vec::new();
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
                     running sequences scheduled first and no admission in a step that preempted \
                     (vLLM v1), recompute preemption; every cache decision by libra's CacheCore",
                    ec.max_batch_tokens, ec.max_seqs
                );
                if ec.layers_per_group > 0 {
                    println!(
                        "layer-wise readiness: a loading request joins the step its copy lands in, layer L \
                         waiting for its group of {} layers ({:.0} us per extra group on the link)",
                        ec.layers_per_group, ec.group_latency_us
                    );
                } else {
                    println!("no layer-wise readiness: a loading request waits for the step after its copy");
                }
                if ec.layered_adapters && ec.layers_per_group > 0 {
                    println!(
                        "adapters registered layer by layer: under libra and oracle layer L also waits only for \
                         its group of the adapter's upload (the peers, lru and elora load an adapter whole)"
                    );
                } else {
                    println!("adapters registered whole: a request waits for its whole adapter");
                }
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
        if a.seeds > 1 {
            println!(
                "every run below is {} workload samples (seeds {}-{}, the figures above are seed {}'s): TTFT over \
                 all their requests, counts summed",
                a.seeds,
                spec.seed,
                spec.seed + a.seeds as u64 - 1,
                spec.seed
            );
        }
        let has = |p: &str| a.policies.iter().any(|x| x.name() == p);
        let split = |p: &SimPolicy| p.kind().split_regions();
        let search: Vec<SimPolicy> =
            a.policies.iter().copied().filter(|p| PEAK_POLICIES.contains(&p.name())).collect();
        let mut peaks: Vec<(SimPolicy, Option<f64>)> = Vec::new();
        let find_peaks =
            |ps: Vec<SimPolicy>, ec: &EngineConfig| -> Result<Vec<(SimPolicy, Option<f64>)>, String> {
                let engines = vec![ec.clone(); ps.len()];
                let search = PeakSearch { seeds: a.seeds, ..PeakSearch::default() };
                let pk = grid::peaks(&spec, &engines, &ps, search, a.jobs, &|s| ctx.tick(s))?;
                Ok(ps.into_iter().zip(pk).collect())
            };
        let top = |peaks: &[(SimPolicy, Option<f64>)]| peaks.iter().filter_map(|p| p.1).reduce(f64::max);
        if a.grid_points > 0 {
            // The policies without vLLM's split first: `vllm` is tuned below their peak.
            peaks.extend(find_peaks(search.iter().copied().filter(|p| !split(p)).collect(), &ec)?);
        }
        ec.vllm_adapter_fraction = match a.vllm_fraction {
            Some(f) => f,
            None if has("vllm") || has("vllm-offload") || has("hicache") => {
                // Below the run's highest load (the top peak, or the one load of `--grid 0`):
                // at an overloaded load every share fails and the sweep would say nothing.
                let m = TUNE_AT * top(&peaks).unwrap_or(spec.rate_mult);
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
        let samples = grid::run_samples(&jobs, a.seeds, a.jobs, &|s| ctx.tick(s))?;
        let res: Vec<RunResult> = samples.iter().map(|s| RunResult::pool(s)).collect();
        let per_load: Vec<Vec<RunResult>> = res.chunks(a.policies.len()).map(|c| c.to_vec()).collect();
        let loads_rps: Vec<f64> =
            jobs.chunks(a.policies.len()).map(|c| grid::load_rps(&c[0].workload)).collect();
        let top_samples =
            if a.seeds > 1 { samples[samples.len() - a.policies.len()..].to_vec() } else { Vec::new() };
        let g = ScenarioGrid { name: spec.name.clone(), loads_rps, results: per_load, top_samples };
        ctx.bar.suspend(|| {
            if loads.len() > 1 {
                print!("{}", summary::grid_table(&g));
            }
            let top = g.results.last().expect("one load at least");
            println!("at {:.2} req/s (load x{:.2}):", g.loads_rps.last().unwrap(), loads.last().unwrap());
            print!("{}", report::table(top));
            print!("{}", summary::comparisons(&g));
        });
        if let Some(dir) = a.plots() {
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
        let sj = report::scenario_json(&spec, &ec, wl.requests.len(), wl.prompt_tokens(), a.seeds);
        json_parts.push(report::grid_json(&sj, &g, &loads, &peaks_json));
        if let Some(row) = SummaryRow::of(&g) {
            summary.push(row);
        }
        grids.push(g);
    }
    ctx.bar.finish_and_clear();
    if !summary.is_empty() {
        println!(
            "\nlibra against the best peer per scenario (mean TTFT; best peer: lowest average over the grid)"
        );
        print!("{}", summary::final_table(&summary));
        let per_sample = summary::samples_table(&grids.iter().collect::<Vec<_>>());
        if !per_sample.is_empty() {
            println!(
                "\nat the highest load, on each workload sample (seeds {}-{}; mean TTFT, a sample's own):",
                a.seed,
                a.seed + a.seeds as u64 - 1
            );
            print!("{per_sample}");
        }
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
