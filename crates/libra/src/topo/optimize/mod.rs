//! Bandwidth allocation. Minimising iteration time over per-NPU bandwidths `B_d` is convex in
//! `x_d = 1/B_d`: each collective's time is a max of affine functions of `x`, and the link
//! `x_d · B_d >= 1` is a rotated second-order cone. So one conic solve (clarabel) gives the
//! global optimum under a bandwidth budget, a dollar budget, bounds and linear constraints.
//! Perf-per-cost (time × cost) is a one-dimensional search over the dollar budget of such solves.
// Per-dimension quantities live in parallel arrays; indexing by dimension reads clearer.
#![allow(clippy::needless_range_loop)]
mod cost;
mod spec;
mod time;

use crate::error::{Error, Result, Status};
pub use crate::topo::grid::grid_search;
use crate::topo::model::traffic_per_dim;
use crate::topo::network::{check_len, check_non_negative, check_positive, Network};
use crate::topo::workload::Workload;
use cost::solve_time_cost;
pub use spec::{Allocation, Cmp, CompiledWorkload, LinearConstraint, Objective, OptimizeSpec};
pub(crate) use time::{solve_time, Rows};

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
