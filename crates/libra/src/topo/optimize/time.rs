//! The time-minimising conic solve: iteration time over `x_d = 1/B_d`, with the budget,
//! bounds and linear constraints as rows.
// Per-dimension quantities live in parallel arrays; indexing by dimension reads clearer.
#![allow(clippy::needless_range_loop)]
use super::spec::{Cmp, CompiledWorkload, OptimizeSpec};
use crate::error::{Error, Result, Status};
use crate::topo::network::Network;
use crate::topo::workload::Overlap;
use clarabel::algebra::CscMatrix;
use clarabel::solver::{
    DefaultSettings, DefaultSolver, IPSolver, SolverStatus, SupportedConeT,
    SupportedConeT::{NonnegativeConeT, SecondOrderConeT, ZeroConeT},
};

/// Minimises time; `max_cost` adds a cost cap (for the perf-per-cost search).
pub(crate) fn solve_time(
    net: &Network,
    cw: &CompiledWorkload,
    spec: &OptimizeSpec,
    max_cost: Option<f64>,
) -> Result<(Vec<f64>, u32)> {
    let d = net.num_dims();
    let coef = net.cost_coefficients();
    let active = cw.active_dims(d);
    let dollars = match (spec.dollar_budget, max_cost) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    };
    // Scale bandwidths and times to O(1) for the interior-point method.
    let finite_upper: Vec<f64> = spec.upper.iter().copied().filter(|u| u.is_finite()).collect();
    let b_ref = if let Some(t) = spec.total_bandwidth {
        t / d as f64
    } else if let Some(c) = dollars {
        c / coef.iter().sum::<f64>().max(f64::MIN_POSITIVE)
    } else if !finite_upper.is_empty() {
        finite_upper.iter().sum::<f64>() / finite_upper.len() as f64
    } else {
        1.0
    };
    let b_ref = if b_ref.is_finite() && b_ref > 0.0 { b_ref } else { 1.0 };
    let mut t_ref: f64 = 0.0;
    for (_, compute, t) in &cw.groups {
        t_ref = t_ref.max(*compute);
        for k in 0..d {
            t_ref = t_ref.max(t.latency[k] + t.bytes[k] / b_ref);
        }
    }
    let t_ref = if t_ref > 0.0 { t_ref } else { 1.0 };

    // Variables: b̂ (d), x̂ (one per active dim), t̂ (one per group).
    let x_index: Vec<Option<usize>> = {
        let mut next = d;
        active
            .iter()
            .map(|&a| {
                if a {
                    next += 1;
                    Some(next - 1)
                } else {
                    None
                }
            })
            .collect()
    };
    let nx = active.iter().filter(|&&a| a).count();
    let t0 = d + nx;
    let n = t0 + cw.groups.len();
    let weight_sum: f64 = cw.groups.iter().map(|g| g.0).sum::<f64>().max(1.0);
    let mut q = vec![0.0; n];
    for (k, g) in cw.groups.iter().enumerate() {
        q[t0 + k] = g.0 / weight_sum;
    }
    // Idle dimensions get the least bandwidth the constraints allow.
    for k in 0..d {
        if !active[k] {
            q[k] = 1e-6;
        }
    }

    let mut rows = Rows::default();
    // Equalities first (zero cone).
    for c in spec.linear.iter().filter(|c| c.cmp == Cmp::Eq) {
        rows.push_linear(c.coeffs.iter().map(|a| a * b_ref).enumerate().collect(), c.rhs);
    }
    let n_eq = rows.len();
    // Then inequalities `a·z <= b` (non-negative cone).
    for c in spec.linear.iter().filter(|c| c.cmp != Cmp::Eq) {
        let sign = if c.cmp == Cmp::Le { 1.0 } else { -1.0 };
        rows.push_linear(c.coeffs.iter().map(|a| sign * a * b_ref).enumerate().collect(), sign * c.rhs);
    }
    if let Some(total) = spec.total_bandwidth {
        rows.push((0..d).map(|k| (k, 1.0)).collect(), total / b_ref);
    }
    if let Some(c) = dollars {
        rows.push_linear(coef.iter().map(|a| a * b_ref).enumerate().collect(), c);
    }
    for k in 0..d {
        let lb = spec.lower.get(k).copied().unwrap_or(0.0);
        rows.push(vec![(k, -1.0)], -lb / b_ref);
        if let Some(&ub) = spec.upper.get(k) {
            if ub.is_finite() {
                rows.push(vec![(k, 1.0)], ub / b_ref);
            }
        }
    }
    for (g, (_, compute, terms)) in cw.groups.iter().enumerate() {
        let tk = t0 + g;
        for k in 0..d {
            if terms.bytes[k] > 0.0 {
                let xk = x_index[k].expect("active dimension has an x variable");
                rows.push(
                    vec![(xk, terms.bytes[k] / (b_ref * t_ref)), (tk, -1.0)],
                    -terms.latency[k] / t_ref,
                );
            } else if terms.latency[k] > 0.0 {
                rows.push(vec![(tk, -1.0)], -terms.latency[k] / t_ref);
            }
        }
        if cw.overlap == Overlap::Full && *compute > 0.0 {
            rows.push(vec![(tk, -1.0)], -compute / t_ref);
        }
    }
    let n_le = rows.len() - n_eq;
    // x̂_k · b̂_k >= 1  <=>  (x̂ + b̂, x̂ - b̂, 2) in the second-order cone.
    for k in 0..d {
        if let Some(xk) = x_index[k] {
            rows.push(vec![(xk, -1.0), (k, -1.0)], 0.0);
            rows.push(vec![(xk, -1.0), (k, 1.0)], 0.0);
            rows.push(vec![], 2.0);
        }
    }
    let mut cones: Vec<SupportedConeT<f64>> = Vec::new();
    if n_eq > 0 {
        cones.push(ZeroConeT(n_eq));
    }
    if n_le > 0 {
        cones.push(NonnegativeConeT(n_le));
    }
    cones.extend((0..nx).map(|_| SecondOrderConeT(3)));

    let p = CscMatrix::zeros((n, n));
    let a = CscMatrix::new_from_triplets(rows.len(), n, rows.i, rows.j, rows.v);
    let settings = DefaultSettings { verbose: false, max_iter: 200, ..DefaultSettings::default() };
    let mut solver = DefaultSolver::new(&p, &q, &a, &rows.b, &cones, settings)
        .map_err(|e| Error::invalid(format!("the conic problem was rejected: {e}")))?;
    solver.solve();
    let sol = &solver.solution;
    match sol.status {
        SolverStatus::Solved | SolverStatus::AlmostSolved => {}
        SolverStatus::PrimalInfeasible | SolverStatus::AlmostPrimalInfeasible => {
            return Err(Error::new(
                Status::LIBRA_ERR_INFEASIBLE,
                "no bandwidths satisfy `total_bandwidth`, `dollar_budget`, `lower`, `upper` and `linear` together",
            ))
        }
        SolverStatus::DualInfeasible | SolverStatus::AlmostDualInfeasible => {
            return Err(Error::invalid(
                "unbounded: give `total_bandwidth`, `dollar_budget` or `upper` bounds so bandwidth is limited",
            ))
        }
        s => return Err(Error::new(Status::LIBRA_ERR_INFEASIBLE, format!("the solver stopped without an optimum ({s:?})"))),
    }
    let mut bw: Vec<f64> = sol.x[..d].iter().map(|v| v * b_ref).collect();
    for (k, b) in bw.iter_mut().enumerate() {
        // The interior point sits strictly inside the bounds; clip round-off.
        let lb = spec.lower.get(k).copied().unwrap_or(0.0);
        *b = b.max(lb);
        if let Some(&ub) = spec.upper.get(k) {
            *b = b.min(ub);
        }
    }
    Ok((bw, sol.iterations))
}

/// Sparse rows of `A z + s = b`.
#[derive(Default)]
pub(crate) struct Rows {
    pub(crate) i: Vec<usize>,
    pub(crate) j: Vec<usize>,
    pub(crate) v: Vec<f64>,
    pub(crate) b: Vec<f64>,
}

impl Rows {
    pub(crate) fn len(&self) -> usize {
        self.b.len()
    }

    pub(crate) fn push(&mut self, entries: Vec<(usize, f64)>, rhs: f64) {
        let r = self.b.len();
        for (col, val) in entries {
            if val != 0.0 {
                self.i.push(r);
                self.j.push(col);
                self.v.push(val);
            }
        }
        self.b.push(rhs);
    }

    /// A user row, normalised so its largest coefficient is 1 (conditioning).
    pub(crate) fn push_linear(&mut self, entries: Vec<(usize, f64)>, rhs: f64) {
        let s = entries.iter().map(|e| e.1.abs()).fold(rhs.abs(), f64::max);
        let s = if s > 0.0 { s } else { 1.0 };
        self.push(entries.into_iter().map(|(c, v)| (c, v / s)).collect(), rhs / s);
    }
}
