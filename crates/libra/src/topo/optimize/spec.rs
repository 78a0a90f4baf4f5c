//! What the optimiser is asked (objective, budget, bounds, constraints), what it answers, and
//! the workload compiled to per-dimension terms that every solve reads.
use crate::error::{Error, Result};
use crate::topo::model::{collective_terms, CollectiveTerms, TimeModel};
use crate::topo::network::Network;
use crate::topo::workload::{Overlap, Workload};
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
