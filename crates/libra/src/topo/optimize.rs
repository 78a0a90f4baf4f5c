//! Bandwidth allocation. Minimising iteration time over per-NPU bandwidths `B_d` is convex in
//! `x_d = 1/B_d`: each collective's time is a max of affine functions of `x`, and the link
//! `x_d · B_d >= 1` is a rotated second-order cone. So one conic solve (clarabel) gives the
//! global optimum under a bandwidth budget, a dollar budget, bounds and linear constraints.
//! Perf-per-cost (time × cost) is a one-dimensional search over the dollar budget of such solves.
// Per-dimension quantities live in parallel arrays; indexing by dimension reads clearer.
#![allow(clippy::needless_range_loop)]
use crate::error::{Error, Result, Status};
pub use crate::topo::grid::grid_search;
use crate::topo::model::{collective_terms, traffic_per_dim, CollectiveTerms, TimeModel};
use crate::topo::network::{check_len, check_non_negative, check_positive, Network};
use crate::topo::optimize_cost::solve_time_cost;
use crate::topo::workload::{Overlap, Workload};
use clarabel::algebra::CscMatrix;
use clarabel::solver::{
    DefaultSettings, DefaultSolver, IPSolver, SolverStatus, SupportedConeT,
    SupportedConeT::{NonnegativeConeT, SecondOrderConeT, ZeroConeT},
};
use std::collections::HashMap;

/// Comparison of a linear constraint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Cmp {
    Le,
    Ge,
    Eq,
}

/// `Σ coeffs[d] · B_d (cmp) rhs`, e.g. `B0 - B1 >= 0` or `B2 + B3 = 200`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearConstraint {
    pub coeffs: Vec<f64>,
    pub cmp: Cmp,
    pub rhs: f64,
}

impl LinearConstraint {
    pub fn new(coeffs: Vec<f64>, cmp: Cmp, rhs: f64) -> Self {
        LinearConstraint { coeffs, cmp, rhs }
    }
}

/// What to minimise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Objective {
    /// Iteration time.
    #[default]
    Time,
    /// Iteration time × network cost (perf-per-cost), with `Σ B_d = total_bandwidth`.
    TimeCost,
}

/// The optimisation problem besides the network and the workload.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct OptimizeSpec {
    pub objective: Objective,
    pub model: TimeModel,
    /// `Σ B_d <= total_bandwidth` (GB/s per NPU); `=` under `Objective::TimeCost`, which needs it.
    pub total_bandwidth: Option<f64>,
    /// Network cost `<=` this many dollars.
    pub dollar_budget: Option<f64>,
    /// Per-dimension lower bounds; empty = 0.
    pub lower: Vec<f64>,
    /// Per-dimension upper bounds; empty or infinite = none.
    pub upper: Vec<f64>,
    pub linear: Vec<LinearConstraint>,
}

impl OptimizeSpec {
    pub fn bandwidth_budget(total: f64) -> Self {
        OptimizeSpec { total_bandwidth: Some(total), ..Default::default() }
    }

    pub fn dollar_budget(dollars: f64) -> Self {
        OptimizeSpec { dollar_budget: Some(dollars), ..Default::default() }
    }
}

/// The optimiser's answer, with the two baselines it is compared to. The baselines use the
/// same total bandwidth as the optimum (the same cost when only a dollar budget is given).
#[derive(Debug, Clone, PartialEq)]
pub struct Allocation {
    pub bandwidths: Vec<f64>,
    /// Iteration time in ns.
    pub time: f64,
    /// Network cost in dollars.
    pub cost: f64,
    pub equal_split: Vec<f64>,
    pub equal_split_time: f64,
    pub proportional_split: Vec<f64>,
    pub proportional_split_time: f64,
    /// Interior-point iterations of the final solve.
    pub iterations: u32,
}

impl Allocation {
    pub fn speedup_vs_equal(&self) -> f64 {
        self.equal_split_time / self.time
    }
    pub fn speedup_vs_proportional(&self) -> f64 {
        self.proportional_split_time / self.time
    }
}

/// A workload reduced to distinct collectives with multiplicities: iteration time =
/// `constant + Σ weight · phase_time(group)`.
#[derive(Debug, Clone)]
pub struct CompiledWorkload {
    pub overlap: Overlap,
    pub constant: f64,
    /// (weight, compute of the phase (full overlap only), terms)
    pub groups: Vec<(f64, f64, CollectiveTerms)>,
}

impl CompiledWorkload {
    pub fn new(wl: &Workload, net: &Network, model: &TimeModel) -> Result<Self> {
        wl.validate(net)?;
        let mut constant = 0.0;
        let mut index: HashMap<Vec<u64>, usize> = HashMap::new();
        let mut groups: Vec<(f64, f64, CollectiveTerms)> = Vec::new();
        for p in &wl.phases {
            let terms = match &p.collective {
                Some(c) => collective_terms(c, net, model)?,
                None => {
                    CollectiveTerms { bytes: vec![0.0; net.num_dims()], latency: vec![0.0; net.num_dims()] }
                }
            };
            let compute = match wl.overlap {
                Overlap::None => {
                    constant += p.compute;
                    0.0
                }
                Overlap::Full => p.compute,
            };
            if terms.bytes.iter().chain(&terms.latency).any(|v| !v.is_finite()) {
                return Err(Error::invalid(format!(
                    "`{}`: its traffic overflows (`bytes` is too large to model)",
                    p.name
                )));
            }
            if terms.is_empty() {
                constant += compute;
                continue;
            }
            let mut key: Vec<u64> = terms.bytes.iter().chain(&terms.latency).map(|v| v.to_bits()).collect();
            key.push(compute.to_bits());
            match index.get(&key) {
                Some(&i) => groups[i].0 += 1.0,
                None => {
                    index.insert(key, groups.len());
                    groups.push((1.0, compute, terms));
                }
            }
        }
        Ok(CompiledWorkload { overlap: wl.overlap, constant, groups })
    }

    /// Iteration time with bandwidths `bw` (no validation: for inner loops).
    pub fn time(&self, bw: &[f64]) -> f64 {
        let mut t = self.constant;
        for (w, compute, terms) in &self.groups {
            let comm = terms.time(bw);
            t += w * match self.overlap {
                Overlap::None => comm,
                Overlap::Full => comm.max(*compute),
            };
        }
        t
    }

    /// Dimensions that carry traffic (or latency) in some phase.
    pub fn active_dims(&self, dims: usize) -> Vec<bool> {
        let mut a = vec![false; dims];
        for (_, _, t) in &self.groups {
            for d in 0..dims {
                a[d] |= t.bytes[d] > 0.0;
            }
        }
        a
    }
}

/// Solves the allocation problem exactly.
pub fn optimize(net: &Network, wl: &Workload, spec: &OptimizeSpec) -> Result<Allocation> {
    let cw = CompiledWorkload::new(wl, net, &spec.model)?;
    validate_spec(net, spec)?;
    let spec = &solver_spec(net, &cw, spec);
    let coef = net.cost_coefficients();
    let (bandwidths, iterations) = match spec.objective {
        Objective::Time => solve_time(net, &cw, spec, None)?,
        Objective::TimeCost => solve_time_cost(net, &cw, spec, &coef)?,
    };
    let time = cw.time(&bandwidths);
    if !time.is_finite() {
        return Err(Error::invalid(format!(
            "the iteration time is {time}: a phase's `bytes` or `compute` is too large to model"
        )));
    }
    let cost: f64 = coef.iter().zip(&bandwidths).map(|(c, b)| c * b).sum();

    // Baselines at the same total bandwidth, or at the same cost for a pure dollar budget.
    let d = net.num_dims();
    let traffic = traffic_per_dim(wl, d);
    let scale_to = |shape: &[f64]| -> Vec<f64> {
        if spec.total_bandwidth.is_none() && spec.dollar_budget.is_some() {
            let c: f64 = coef.iter().zip(shape).map(|(c, b)| c * b).sum();
            shape.iter().map(|b| b * cost / c).collect()
        } else {
            let total: f64 = bandwidths.iter().sum();
            let s: f64 = shape.iter().sum();
            shape.iter().map(|b| b * total / s).collect()
        }
    };
    let equal_split = scale_to(&vec![1.0; d]);
    let proportional_split =
        if traffic.iter().sum::<f64>() > 0.0 { scale_to(&traffic) } else { equal_split.clone() };
    Ok(Allocation {
        time,
        cost,
        equal_split_time: cw.time(&equal_split),
        proportional_split_time: cw.time(&proportional_split),
        equal_split,
        proportional_split,
        bandwidths,
        iterations,
    })
}

/// Least bandwidth (GB/s per NPU) a dimension that no phase uses is given, so that every answer
/// is a valid network: its lower bound when that is positive, else this (or less, when an upper
/// bound or a small total budget asks for less).
pub const UNUSED_DIM_BANDWIDTH: f64 = 1e-3;

/// The problem as solved: unused dimensions get a positive lower bound, and perf-per-cost makes
/// the total budget an equality (LIBRA's constraint; under `<=` time x cost has no minimum).
pub(crate) fn solver_spec(net: &Network, cw: &CompiledWorkload, spec: &OptimizeSpec) -> OptimizeSpec {
    let d = net.num_dims();
    let mut s = spec.clone();
    let active = cw.active_dims(d);
    if s.lower.is_empty() {
        s.lower = vec![0.0; d];
    }
    let idle = active.iter().filter(|a| !**a).count().max(1) as f64;
    for k in (0..d).filter(|&k| !active[k]) {
        if s.lower[k] > 0.0 {
            continue;
        }
        let mut floor = UNUSED_DIM_BANDWIDTH;
        if let Some(&u) = spec.upper.get(k) {
            floor = floor.min(u / 2.0);
        }
        if let Some(t) = spec.total_bandwidth {
            let room = t - spec.lower.iter().sum::<f64>();
            floor = floor.min(room / (1000.0 * idle));
        }
        s.lower[k] = floor.max(0.0);
    }
    if let (Objective::TimeCost, Some(t)) = (s.objective, s.total_bandwidth) {
        s.linear.push(LinearConstraint::new(vec![1.0; d], Cmp::Eq, t));
    }
    s
}

pub(crate) fn validate_spec(net: &Network, spec: &OptimizeSpec) -> Result<()> {
    let d = net.num_dims();
    if let Some(t) = spec.total_bandwidth {
        check_positive(t, "total_bandwidth")?;
    }
    if let Some(t) = spec.dollar_budget {
        check_positive(t, "dollar_budget")?;
    }
    if !spec.lower.is_empty() {
        check_len(spec.lower.len(), d, "lower")?;
        for (i, &l) in spec.lower.iter().enumerate() {
            check_non_negative(l, &format!("lower[{i}]"))?;
        }
    }
    if !spec.upper.is_empty() {
        check_len(spec.upper.len(), d, "upper")?;
        for (i, &u) in spec.upper.iter().enumerate() {
            if u.is_nan() || u <= 0.0 {
                return Err(Error::invalid(format!("`upper[{i}]` is {u}, must be positive (or infinite)")));
            }
            if let Some(&l) = spec.lower.get(i) {
                if l > u {
                    return Err(Error::new(
                        Status::LIBRA_ERR_INFEASIBLE,
                        format!("`lower[{i}]` ({l}) exceeds `upper[{i}]` ({u})"),
                    ));
                }
            }
        }
    }
    for (i, c) in spec.linear.iter().enumerate() {
        check_len(c.coeffs.len(), d, &format!("linear[{i}].coeffs"))?;
        if !c.rhs.is_finite() || c.coeffs.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid(format!("`linear[{i}]` has a non-finite coefficient")));
        }
    }
    let lower_sum: f64 = spec.lower.iter().sum();
    if let Some(t) = spec.total_bandwidth {
        if lower_sum > t * (1.0 + 1e-12) {
            return Err(Error::new(
                Status::LIBRA_ERR_INFEASIBLE,
                format!("`total_bandwidth` ({t}) is below the sum of `lower` ({lower_sum})"),
            ));
        }
    }
    if let Some(b) = spec.dollar_budget {
        let min_cost: f64 = net.cost_coefficients().iter().zip(&spec.lower).map(|(c, l)| c * l).sum();
        if min_cost > b * (1.0 + 1e-12) {
            return Err(Error::new(
                Status::LIBRA_ERR_INFEASIBLE,
                format!("`dollar_budget` ({b}) is below the cost of `lower` ({min_cost})"),
            ));
        }
    }
    let capped = (0..d).all(|k| spec.upper.get(k).is_some_and(|u| u.is_finite()));
    if spec.total_bandwidth.is_none() && spec.dollar_budget.is_none() && !capped && spec.linear.is_empty() {
        return Err(Error::invalid(
            "unbounded: give `total_bandwidth`, `dollar_budget`, finite `upper` bounds or `linear` constraints",
        ));
    }
    if spec.objective == Objective::TimeCost && spec.total_bandwidth.is_none() {
        return Err(Error::invalid(
            "objective time x cost needs `total_bandwidth`, met with equality as in LIBRA: under a `<=` budget \
             time x cost keeps falling as every bandwidth shrinks",
        ));
    }
    if spec.objective == Objective::TimeCost && net.cost_coefficients().iter().all(|&c| c == 0.0) {
        return Err(Error::invalid(
            "objective time x cost needs cost parameters: every `dims[].cost` is zero",
        ));
    }
    Ok(())
}

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
