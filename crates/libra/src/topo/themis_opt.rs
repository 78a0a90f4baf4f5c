//! Themis-aware bandwidth optimisation. LIBRA sizes bandwidths for a pipeline whose chunks all
//! cross the dimensions in one order. Under Themis each chunk picks its order, so a collective
//! can spread its traffic over the dimensions: with many chunks its load vector is any mixture
//! of the load vectors of the orders, and it takes `max_k (latency_k + load_k / B_k)` for the
//! best mixture (the balanced-load model; an all-to-all has one load vector).
//!
//! Joint in loads and bandwidths the problem is bilinear, so it is solved by alternation, each
//! half exact: for fixed bandwidths, every collective's best mixture is a linear program; for
//! fixed loads, the bandwidths are LIBRA's convex problem (one conic solve). The iteration time
//! never increases along an alternation; it runs from LIBRA's optimum (so the answer is never
//! worse than "LIBRA, then Themis") and from the equal and traffic-proportional splits, and the
//! best end point is kept. It is a local optimum: under a plain total-bandwidth budget,
//! `lower_bound` (every collective's traffic over the whole budget) bounds how far it can be
//! from the global one.
// Per-dimension quantities live in parallel arrays; indexing by dimension reads clearer.
#![allow(clippy::needless_range_loop)]
use crate::error::{Error, Result, Status};
use crate::topo::model::{collective_terms, CollectiveTerms, TimeModel};
use crate::topo::network::Network;
use crate::topo::optimize::{
    optimize, solve_time, solver_spec, CompiledWorkload, Objective, OptimizeSpec, Rows,
};
use crate::topo::schedule::{Policy, Schedule, ScheduleConfig};
use crate::topo::workload::{Collective, CollectiveKind, Overlap, Workload};
use clarabel::algebra::CscMatrix;
use clarabel::solver::{
    DefaultSettings, DefaultSolver, IPSolver, SolverStatus,
    SupportedConeT::{NonnegativeConeT, ZeroConeT},
};
use std::collections::HashMap;

/// Most involved dimensions a collective may have here: its orders are enumerated (7! = 5040).
pub const MAX_THEMIS_DIMS: usize = 7;

/// Most alternation rounds.
const MAX_ROUNDS: u32 = 50;

/// Relative improvement below which another split ties with LIBRA's (LIBRA's is kept: the
/// model's optimum is often a whole face of splits, and solver tolerance is about 1e-8).
const TIE: f64 = 1e-6;

/// The Themis-aware answer beside LIBRA's.
#[derive(Debug, Clone, PartialEq)]
pub struct ThemisAllocation {
    pub bandwidths: Vec<f64>,
    /// Iteration time under the balanced-load model at `bandwidths`, ns.
    pub time: f64,
    /// LIBRA's fixed-order optimum under the same spec.
    pub libra_bandwidths: Vec<f64>,
    /// Iteration time under the balanced-load model at LIBRA's bandwidths ("LIBRA, then
    /// Themis"), ns.
    pub libra_then_themis_time: f64,
    /// A lower bound on the model's global optimum, when the only constraint is
    /// `total_bandwidth`.
    pub lower_bound: Option<f64>,
    /// Alternation rounds run, over all starts.
    pub rounds: u32,
}

impl ThemisAllocation {
    pub fn gain_over_libra_then_themis(&self) -> f64 {
        self.libra_then_themis_time / self.time
    }
}

/// A distinct collective: multiplicity, its phase's compute (full overlap only), one load
/// vector per order, and per-dimension latency.
struct Coll {
    weight: f64,
    compute: f64,
    vertices: Vec<Vec<f64>>,
    latency: Vec<f64>,
}

/// Every ordering of `items` (for the few involved dimensions of one collective).
pub fn all_orders(items: &[usize]) -> Vec<Vec<usize>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in all_orders(&rest) {
            p.insert(0, first);
            out.push(p);
        }
    }
    out
}

/// Bytes per dimension when every chunk splits along `order` (LIBRA's rule, in that order).
fn order_loads(c: &Collective, order: &[usize]) -> Vec<f64> {
    let mut out = vec![0.0; c.groups.len()];
    let total: f64 = c.groups.iter().map(|&g| g as f64).product();
    let (mut m, factor) = match c.kind {
        CollectiveKind::AllReduce => (c.bytes, 2.0),
        CollectiveKind::ReduceScatter => (c.bytes, 1.0),
        // Gathering along `order` reversed is splitting the gathered buffer along `order`.
        CollectiveKind::AllGather => (c.bytes * total, 1.0),
        CollectiveKind::AllToAll => (c.bytes, 1.0),
    };
    for &k in order {
        let g = c.groups[k] as f64;
        out[k] = factor * m * (g - 1.0) / g;
        if c.kind != CollectiveKind::AllToAll {
            m /= g;
        }
    }
    out
}

fn compile(wl: &Workload, net: &Network, model: &TimeModel) -> Result<(f64, Vec<Coll>)> {
    wl.validate(net)?;
    let mut constant = 0.0;
    let mut index: HashMap<(CollectiveKind, u64, Vec<u32>, u64), usize> = HashMap::new();
    let mut colls: Vec<Coll> = Vec::new();
    for p in &wl.phases {
        let compute = match wl.overlap {
            Overlap::None => {
                constant += p.compute;
                0.0
            }
            Overlap::Full => p.compute,
        };
        let Some(c) = p.collective.as_ref().filter(|c| c.bytes > 0.0 && c.group_npus() > 1) else {
            constant += compute;
            continue;
        };
        let key = (c.kind, c.bytes.to_bits(), c.groups.clone(), compute.to_bits());
        if let Some(&i) = index.get(&key) {
            colls[i].weight += 1.0;
            continue;
        }
        let active: Vec<usize> = (0..c.groups.len()).filter(|&k| c.groups[k] > 1).collect();
        if active.len() > MAX_THEMIS_DIMS {
            return Err(Error::invalid(format!(
                "`{}` spans {} dimensions; Themis-aware optimisation enumerates orders of at most {MAX_THEMIS_DIMS}",
                p.name,
                active.len()
            )));
        }
        let vertices = if c.kind == CollectiveKind::AllToAll {
            vec![order_loads(c, &active)]
        } else {
            all_orders(&active).iter().map(|o| order_loads(c, o)).collect()
        };
        if vertices.iter().flatten().any(|v| !v.is_finite()) {
            return Err(Error::invalid(format!(
                "`{}`: its traffic overflows (`bytes` is too large)",
                p.name
            )));
        }
        let CollectiveTerms { latency, .. } = collective_terms(c, net, model)?;
        index.insert(key, colls.len());
        colls.push(Coll { weight: 1.0, compute, vertices, latency });
    }
    Ok((constant, colls))
}

/// The best mixture of `c`'s orders at bandwidths `bw`: (time, load vector), a linear program.
fn best_mixture(c: &Coll, bw: &[f64]) -> Result<(f64, Vec<f64>)> {
    let d = bw.len();
    let time_of = |l: &[f64]| -> f64 {
        (0..d)
            .filter(|&k| l[k] > 0.0 || c.latency[k] > 0.0)
            .map(|k| c.latency[k] + l[k] / bw[k])
            .fold(0.0, f64::max)
    };
    let (mut best_t, mut best_l) = (f64::INFINITY, Vec::new());
    for v in &c.vertices {
        let t = time_of(v);
        if t < best_t {
            (best_t, best_l) = (t, v.clone());
        }
    }
    if c.vertices.len() == 1 {
        return Ok((best_t, best_l));
    }
    // min T  s.t.  sum z = 1, z >= 0, latency_k + (sum_p z_p v_pk) / B_k <= T, scaled by the
    // best single order's time.
    let n = c.vertices.len();
    let t_ref = best_t.max(f64::MIN_POSITIVE);
    let mut q = vec![0.0; n + 1];
    q[n] = 1.0;
    let mut rows = Rows::default();
    rows.push((0..n).map(|p| (p, 1.0)).collect(), 1.0);
    for p in 0..n {
        rows.push(vec![(p, -1.0)], 0.0);
    }
    for k in 0..d {
        if c.vertices.iter().any(|v| v[k] > 0.0) {
            let mut e: Vec<(usize, f64)> = (0..n).map(|p| (p, c.vertices[p][k] / (bw[k] * t_ref))).collect();
            e.push((n, -1.0));
            rows.push(e, -c.latency[k] / t_ref);
        }
    }
    let cones = [ZeroConeT(1), NonnegativeConeT(rows.len() - 1)];
    let p = CscMatrix::zeros((n + 1, n + 1));
    let a = CscMatrix::new_from_triplets(rows.len(), n + 1, rows.i, rows.j, rows.v);
    let settings = DefaultSettings { verbose: false, ..DefaultSettings::default() };
    let mut solver = DefaultSolver::new(&p, &q, &a, &rows.b, &cones, settings)
        .map_err(|e| Error::invalid(format!("the mixture problem was rejected: {e}")))?;
    solver.solve();
    if !matches!(solver.solution.status, SolverStatus::Solved | SolverStatus::AlmostSolved) {
        return Ok((best_t, best_l));
    }
    let z: Vec<f64> = solver.solution.x[..n].iter().map(|v| v.max(0.0)).collect();
    let s: f64 = z.iter().sum();
    let l: Vec<f64> = (0..d).map(|k| (0..n).map(|p| z[p] / s * c.vertices[p][k]).sum()).collect();
    let t = time_of(&l);
    // The interior point can trail the best vertex by its tolerance: keep the better.
    Ok(if t < best_t { (t, l) } else { (best_t, best_l) })
}

/// Iteration time under the balanced-load model, and each collective's load vector.
fn themis_model_time(
    overlap: Overlap,
    constant: f64,
    colls: &[Coll],
    bw: &[f64],
) -> Result<(f64, Vec<Vec<f64>>)> {
    let mut total = constant;
    let mut loads = Vec::with_capacity(colls.len());
    for c in colls {
        let (t, l) = best_mixture(c, bw)?;
        total += c.weight
            * match overlap {
                Overlap::None => t,
                Overlap::Full => t.max(c.compute),
            };
        loads.push(l);
    }
    Ok((total, loads))
}

/// Minimises iteration time under the balanced-load (Themis) model; see the module comment.
pub fn optimize_for_themis(net: &Network, wl: &Workload, spec: &OptimizeSpec) -> Result<ThemisAllocation> {
    if spec.objective != Objective::Time {
        return Err(Error::invalid("Themis-aware optimisation minimises time: `objective` must be Time"));
    }
    let libra = optimize(net, wl, spec)?;
    let (constant, colls) = compile(wl, net, &spec.model)?;
    let cw0 = CompiledWorkload::new(wl, net, &spec.model)?;
    let sspec = solver_spec(net, &cw0, spec);
    let (libra_time, _) = themis_model_time(wl.overlap, constant, &colls, &libra.bandwidths)?;
    let (mut best_t, mut best_bw) = (libra_time, libra.bandwidths.clone());
    let mut rounds = 0;
    // Alternation from LIBRA's optimum and from the equal and traffic-proportional splits (a
    // fixed point of one start need not be one of another).
    for start in [&libra.bandwidths, &libra.equal_split, &libra.proportional_split] {
        let (mut t_cur, mut loads) = themis_model_time(wl.overlap, constant, &colls, start)?;
        // Ties keep LIBRA's answer: only a real improvement replaces it.
        if t_cur < best_t * (1.0 - TIE) {
            (best_t, best_bw) = (t_cur, start.clone());
        }
        for _ in 0..MAX_ROUNDS {
            rounds += 1;
            let groups = colls
                .iter()
                .zip(&loads)
                .map(|(c, l)| {
                    (c.weight, c.compute, CollectiveTerms { bytes: l.clone(), latency: c.latency.clone() })
                })
                .collect();
            let cw = CompiledWorkload { overlap: wl.overlap, constant, groups };
            let (bw, _) = match solve_time(net, &cw, &sspec, None) {
                Ok(r) => r,
                // A numerically hard round ends this start; the best answer so far stands.
                Err(e) if e.status == Status::LIBRA_ERR_INFEASIBLE => break,
                Err(e) => return Err(e),
            };
            let (t, l) = themis_model_time(wl.overlap, constant, &colls, &bw)?;
            // Also stops on NaN.
            if t.partial_cmp(&(t_cur * (1.0 - 1e-9))) != Some(std::cmp::Ordering::Less) {
                break;
            }
            (t_cur, loads) = (t, l);
            if t < best_t * (1.0 - TIE) {
                (best_t, best_bw) = (t, bw);
            }
        }
    }
    let plain = spec.dollar_budget.is_none()
        && spec.lower.is_empty()
        && spec.upper.is_empty()
        && spec.linear.is_empty();
    let lower_bound = match (spec.total_bandwidth, plain) {
        (Some(budget), true) => {
            let mut lb = constant;
            for c in &colls {
                let traffic: f64 = c.vertices[0].iter().sum();
                let lat = c.latency.iter().cloned().fold(0.0, f64::max);
                let t = (traffic / budget).max(lat);
                lb += c.weight
                    * match wl.overlap {
                        Overlap::None => t,
                        Overlap::Full => t.max(c.compute),
                    };
            }
            Some(lb)
        }
        _ => None,
    };
    Ok(ThemisAllocation {
        bandwidths: best_bw,
        time: best_t,
        libra_bandwidths: libra.bandwidths,
        libra_then_themis_time: libra_time,
        lower_bound,
        rounds,
    })
}

/// Iteration time with every collective run by the scheduler (`cfg.policy`, `cfg.chunks`;
/// elements of one byte) on `net` with bandwidths `bw`: the check of the model's prediction.
/// An all-to-all's bytes are rounded up to a multiple of its ranks.
pub fn scheduled_iteration_time(
    net: &Network,
    wl: &Workload,
    bw: &[f64],
    cfg: &ScheduleConfig,
) -> Result<f64> {
    wl.validate(net)?;
    let net = net.with_bandwidths(bw)?;
    let cfg = ScheduleConfig { elem_size: 1, ..cfg.clone() };
    let mut cache: HashMap<(CollectiveKind, u64, Vec<u32>), f64> = HashMap::new();
    let mut total = 0.0;
    for p in &wl.phases {
        let comm = match p.collective.as_ref().filter(|c| c.bytes >= 1.0 && c.group_npus() > 1) {
            None => 0.0,
            Some(c) => {
                let key = (c.kind, c.bytes.to_bits(), c.groups.clone());
                match cache.get(&key) {
                    Some(&t) => t,
                    None => {
                        let ranks = c.group_npus() as usize;
                        let mut count = c.bytes.round() as usize;
                        if c.kind == CollectiveKind::AllToAll {
                            count = count.div_ceil(ranks) * ranks;
                        }
                        let t = Schedule::new(&net, c.kind, count, Some(&c.groups), &cfg)?.finish_time;
                        cache.insert(key, t);
                        t
                    }
                }
            }
        };
        total += match wl.overlap {
            Overlap::None => p.compute + comm,
            Overlap::Full => p.compute.max(comm),
        };
    }
    Ok(total)
}

/// Convenience: the Themis scheduler's iteration time at `bw` with `chunks` chunks.
pub fn themis_iteration_time(net: &Network, wl: &Workload, bw: &[f64], chunks: usize) -> Result<f64> {
    scheduled_iteration_time(net, wl, bw, &ScheduleConfig { policy: Policy::Themis, chunks, elem_size: 1 })
}
