//! Perf-per-cost: time x cost is minimised by a one-dimensional search over the network's cost,
//! each point an exact time-optimal conic solve under a cost cap.
use super::spec::{Cmp, CompiledWorkload, OptimizeSpec};
use super::time::{solve_time, Rows};
use crate::error::{Error, Result, Status};
use crate::topo::network::Network;
use clarabel::algebra::CscMatrix;
use clarabel::solver::{
    DefaultSettings, DefaultSolver, IPSolver, SolverStatus,
    SupportedConeT::{NonnegativeConeT, ZeroConeT},
};

/// min over cost c of c · T*(c), where T*(c) is the least time at cost <= c: a golden-section
/// search over c between the cheapest feasible network and the time optimum's cost.
pub(crate) fn solve_time_cost(
    net: &Network,
    cw: &CompiledWorkload,
    spec: &OptimizeSpec,
    coef: &[f64],
) -> Result<(Vec<f64>, u32)> {
    let (best_time_bw, _) = solve_time(net, cw, spec, None)?;
    let c_hi: f64 = coef.iter().zip(&best_time_bw).map(|(c, b)| c * b).sum();
    let c_lo = min_cost(net, spec, coef)?;
    let f = |c: f64| -> Result<(f64, Vec<f64>, u32)> {
        let (bw, it) = solve_time(net, cw, spec, Some(c))?;
        let cost: f64 = coef.iter().zip(&bw).map(|(c, b)| c * b).sum();
        Ok((cw.time(&bw) * cost, bw, it))
    };
    let mut best = (cw.time(&best_time_bw) * c_hi, best_time_bw, 0);
    if c_hi - c_lo <= 1e-9 * c_hi.max(1.0) {
        return Ok((best.1, best.2));
    }
    // Coarse scan (the product need not be unimodal far from the optimum), then golden section.
    let samples = 12;
    let mut values = Vec::with_capacity(samples);
    for i in 1..=samples {
        let c = c_lo + (c_hi - c_lo) * i as f64 / samples as f64;
        let r = f(c)?;
        values.push((c, r.0));
        if r.0 < best.0 {
            best = r;
        }
    }
    let i_best = (0..samples).min_by(|&a, &b| values[a].1.total_cmp(&values[b].1)).unwrap_or(0);
    let mut lo = if i_best == 0 { c_lo + (c_hi - c_lo) * 1e-6 } else { values[i_best - 1].0 };
    let mut hi = if i_best + 1 < samples { values[i_best + 1].0 } else { c_hi };
    let g = (5f64.sqrt() - 1.0) / 2.0;
    let mut m1 = hi - g * (hi - lo);
    let mut m2 = lo + g * (hi - lo);
    let mut f1 = f(m1)?;
    let mut f2 = f(m2)?;
    for _ in 0..30 {
        if (hi - lo) <= 1e-7 * hi {
            break;
        }
        if f1.0 < f2.0 {
            hi = m2;
            m2 = m1;
            f2 = f1;
            m1 = hi - g * (hi - lo);
            f1 = f(m1)?;
        } else {
            lo = m1;
            m1 = m2;
            f1 = f2;
            m2 = lo + g * (hi - lo);
            f2 = f(m2)?;
        }
    }
    for r in [f1, f2] {
        if r.0 < best.0 {
            best = r;
        }
    }
    Ok((best.1, best.2))
}

/// The cheapest network the constraints allow (a linear program).
fn min_cost(net: &Network, spec: &OptimizeSpec, coef: &[f64]) -> Result<f64> {
    let d = net.num_dims();
    let scale = coef.iter().cloned().fold(0.0, f64::max).max(f64::MIN_POSITIVE);
    let q: Vec<f64> = coef.iter().map(|c| c / scale).collect();
    let mut rows = Rows::default();
    for c in spec.linear.iter().filter(|c| c.cmp == Cmp::Eq) {
        rows.push_linear(c.coeffs.iter().copied().enumerate().collect(), c.rhs);
    }
    let n_eq = rows.len();
    for c in spec.linear.iter().filter(|c| c.cmp != Cmp::Eq) {
        let sign = if c.cmp == Cmp::Le { 1.0 } else { -1.0 };
        rows.push_linear(c.coeffs.iter().map(|a| sign * a).enumerate().collect(), sign * c.rhs);
    }
    if let Some(t) = spec.total_bandwidth {
        rows.push_linear((0..d).map(|k| (k, 1.0)).collect(), t);
    }
    for k in 0..d {
        rows.push(vec![(k, -1.0)], -spec.lower.get(k).copied().unwrap_or(0.0));
        if let Some(&ub) = spec.upper.get(k) {
            if ub.is_finite() {
                rows.push_linear(vec![(k, 1.0)], ub);
            }
        }
    }
    let n_le = rows.len() - n_eq;
    let mut cones = Vec::new();
    if n_eq > 0 {
        cones.push(ZeroConeT(n_eq));
    }
    cones.push(NonnegativeConeT(n_le));
    let p = CscMatrix::zeros((d, d));
    let a = CscMatrix::new_from_triplets(rows.len(), d, rows.i, rows.j, rows.v);
    let settings = DefaultSettings { verbose: false, ..DefaultSettings::default() };
    let mut solver = DefaultSolver::new(&p, &q, &a, &rows.b, &cones, settings)
        .map_err(|e| Error::invalid(format!("the cost problem was rejected: {e}")))?;
    solver.solve();
    match solver.solution.status {
        SolverStatus::Solved | SolverStatus::AlmostSolved => {
            Ok(coef.iter().zip(&solver.solution.x).map(|(c, b)| c * b.max(0.0)).sum())
        }
        _ => Err(Error::new(Status::LIBRA_ERR_INFEASIBLE, "no bandwidths satisfy the constraints")),
    }
}
