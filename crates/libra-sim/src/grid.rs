//! Load grids: each scenario is measured at several loads, from a tenth of the best policy's
//! peak (the highest load whose mean TTFT stays under a bound) up to that peak, and policies
//! are compared over the whole grid. Two summaries of a comparison are kept because they differ:
//! the mean of the per-load ratios (each load counts the same) and the ratio of the grid's
//! average TTFTs (the average of means that papers report, dominated by the highest loads).
use super::engine::{run, EngineConfig, RunResult};
use super::peers::SimPolicy;
use super::workload::{generate, Workload, WorkloadSpec};
use std::sync::{Arc, Mutex};

/// One simulation to run.
#[derive(Clone)]
pub struct Job {
    pub workload: Arc<Workload>,
    pub spec: WorkloadSpec,
    pub engine: EngineConfig,
    pub policy: SimPolicy,
}

/// Runs `jobs` on `threads` threads; results come back in job order. `progress` gets the
/// simulated seconds of every job that finishes.
pub fn run_all(
    jobs: &[Job],
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<RunResult>, String> {
    let next = Mutex::new(0usize);
    let out: Mutex<Vec<Option<Result<RunResult, String>>>> = Mutex::new(vec![None; jobs.len()]);
    std::thread::scope(|scope| {
        for _ in 0..threads.max(1).min(jobs.len()) {
            scope.spawn(|| loop {
                let i = {
                    let mut n = next.lock().unwrap();
                    *n += 1;
                    *n - 1
                };
                let Some(j) = jobs.get(i) else { break };
                let r = run(&j.workload, &j.spec, &j.engine, j.policy, &mut |_| {});
                progress(j.workload.duration_s() as u64);
                out.lock().unwrap()[i] = Some(r);
            });
        }
    });
    out.into_inner().unwrap().into_iter().map(|r| r.expect("every job ran")).collect()
}

/// Runs every job on `seeds` independent workload samples (seeds `spec.seed` and up, the first
/// being the job's own workload) and pools each job's runs (`RunResult::pool`): one sample's
/// mean TTFT near the peak is decided by its largest burst of arrivals, a few samples' by the
/// load.
pub fn run_seeded(
    jobs: &[Job],
    seeds: u32,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<RunResult>, String> {
    if seeds <= 1 {
        return run_all(jobs, threads, progress);
    }
    Ok(run_samples(jobs, seeds, threads, progress)?.iter().map(|s| RunResult::pool(s)).collect())
}

/// Every job's runs on `seeds` workload samples, job by job, sample by sample (see
/// `run_seeded`). Jobs that share a workload share its other samples too.
pub fn run_samples(
    jobs: &[Job],
    seeds: u32,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<Vec<RunResult>>, String> {
    let seeds = seeds.max(1) as usize;
    let mut samples: Vec<(*const Workload, Vec<Arc<Workload>>)> = Vec::new();
    let mut all = Vec::with_capacity(jobs.len() * seeds);
    for j in jobs {
        let key = Arc::as_ptr(&j.workload);
        let k = match samples.iter().position(|(p, _)| *p == key) {
            Some(k) => k,
            None => {
                let more =
                    (1..seeds as u64).map(|d| Arc::new(generate(&with_seed(&j.spec, j.spec.seed + d))));
                samples.push((key, std::iter::once(j.workload.clone()).chain(more).collect()));
                samples.len() - 1
            }
        };
        for (d, wl) in samples[k].1.iter().enumerate() {
            let spec = with_seed(&j.spec, j.spec.seed + d as u64);
            all.push(Job { workload: wl.clone(), spec, engine: j.engine.clone(), policy: j.policy });
        }
    }
    let res = run_all(&all, threads, progress)?;
    Ok(res.chunks(seeds).map(|c| c.to_vec()).collect())
}

fn with_seed(spec: &WorkloadSpec, seed: u64) -> WorkloadSpec {
    let mut s = spec.clone();
    s.seed = seed;
    s
}

/// The scenario at another load multiplier.
pub fn at_load(spec: &WorkloadSpec, rate_mult: f64) -> WorkloadSpec {
    let mut s = spec.clone();
    s.rate_mult = rate_mult;
    s
}

/// Requests per second of a workload.
pub fn load_rps(wl: &Workload) -> f64 {
    wl.requests.len() as f64 / wl.duration_s().max(1e-9)
}

/// How a peak is searched.
#[derive(Debug, Clone, Copy)]
pub struct PeakSearch {
    /// Mean TTFT that defines the peak, milliseconds.
    pub bound_ms: f64,
    /// Bisections after the bracket is found.
    pub bisections: u32,
    /// Doublings or halvings tried to find a bracket.
    pub max_steps: u32,
    /// A probe whose oldest waiting request waits this long fails at once, microseconds.
    pub give_up_wait_us: u64,
    /// Workload samples each probe runs on (`run_seeded`).
    pub seeds: u32,
}

impl Default for PeakSearch {
    fn default() -> Self {
        // A 20 s wait is 40 times the bound: the backlog of an overloaded engine.
        PeakSearch { bound_ms: 500.0, bisections: 4, max_steps: 5, give_up_wait_us: 20_000_000, seeds: 1 }
    }
}

/// The highest load multiplier (to within the bisections) at which each policy's mean TTFT is
/// under the bound, searched from `spec.rate_mult` for all policies at once; `None` where even
/// the lowest multiplier tried fails.
pub fn peaks(
    spec: &WorkloadSpec,
    ec: &[EngineConfig],
    policies: &[SimPolicy],
    search: PeakSearch,
    threads: usize,
    progress: &(dyn Fn(u64) + Sync),
) -> Result<Vec<Option<f64>>, String> {
    // Per policy: (highest passing, lowest failing) multipliers seen.
    let mut lo: Vec<Option<f64>> = vec![None; policies.len()];
    let mut hi: Vec<Option<f64>> = vec![None; policies.len()];
    let mut probe: Vec<Option<f64>> = vec![Some(spec.rate_mult); policies.len()];
    let mut steps = vec![0u32; policies.len()];
    let mut bisected = vec![0u32; policies.len()];
    loop {
        let open: Vec<usize> = (0..policies.len()).filter(|&i| probe[i].is_some()).collect();
        if open.is_empty() {
            break;
        }
        let mut jobs = Vec::new();
        for &i in &open {
            let s = at_load(spec, probe[i].expect("open"));
            let mut engine = ec[i].clone();
            engine.give_up_wait_us = Some(search.give_up_wait_us);
            jobs.push(Job { workload: Arc::new(generate(&s)), spec: s, engine, policy: policies[i] });
        }
        let res = run_seeded(&jobs, search.seeds, threads, progress)?;
        for (k, &i) in open.iter().enumerate() {
            let m = probe[i].expect("open");
            if res[k].ttft_mean_ms() < search.bound_ms && res[k].rejected == 0 && !res[k].gave_up {
                lo[i] = Some(lo[i].map_or(m, |x: f64| x.max(m)));
            } else {
                hi[i] = Some(hi[i].map_or(m, |x: f64| x.min(m)));
            }
            probe[i] = match (lo[i], hi[i]) {
                (Some(a), Some(b)) => {
                    bisected[i] += 1;
                    (bisected[i] <= search.bisections).then_some((a + b) / 2.0)
                }
                (Some(a), None) => {
                    steps[i] += 1;
                    (steps[i] <= search.max_steps).then_some(a * 2.0)
                }
                (None, Some(b)) => {
                    steps[i] += 1;
                    (steps[i] <= search.max_steps).then_some(b / 2.0)
                }
                (None, None) => unreachable!("a probe was just classified"),
            };
        }
    }
    Ok(lo)
}

/// `n` loads from a tenth of `peak` to `peak`, evenly spaced.
pub fn grid_loads(peak: f64, n: usize) -> Vec<f64> {
    if n <= 1 {
        return vec![peak];
    }
    (0..n).map(|k| peak * (0.1 + 0.9 * k as f64 / (n - 1) as f64)).collect()
}

/// `a` against `b` over a grid, from their mean TTFTs at each load.
#[derive(Debug, Clone, PartialEq)]
pub struct Comparison {
    /// a / b at each load.
    pub per_load: Vec<f64>,
    /// Mean of `per_load`.
    pub mean_of_ratios: f64,
    /// (mean of a over the grid) / (mean of b over the grid).
    pub ratio_of_means: f64,
}

pub fn compare(a: &[f64], b: &[f64]) -> Comparison {
    assert_eq!(a.len(), b.len(), "one value per load");
    let per_load: Vec<f64> = a.iter().zip(b).map(|(x, y)| x / y).collect();
    let n = per_load.len().max(1) as f64;
    Comparison {
        mean_of_ratios: per_load.iter().sum::<f64>() / n,
        ratio_of_means: a.iter().sum::<f64>() / b.iter().sum::<f64>(),
        per_load,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_summaries_differ_when_loads_weigh_differently() {
        // 2x better at low load, equal at the peak: each load counts once in the mean of
        // ratios, the peak dominates the ratio of means.
        let c = compare(&[10.0, 400.0], &[20.0, 400.0]);
        assert_eq!(c.per_load, vec![0.5, 1.0]);
        assert!((c.mean_of_ratios - 0.75).abs() < 1e-12);
        assert!((c.ratio_of_means - 410.0 / 420.0).abs() < 1e-12);
        let g = grid_loads(8.0, 4);
        assert!((g[0] - 0.8).abs() < 1e-12 && (g[3] - 8.0).abs() < 1e-12);
        assert!(g.windows(2).all(|w| w[0] < w[1]));
    }
}
