//! The bandwidth optimiser.
use crate::boundary::Versioned;
use crate::boundary::{
    check_aligned, check_ptr, deref, entry, read_versioned, slice, versioned_size, write_versioned,
};
use crate::status::libra_status;
use libra::error::Error;
use libra::topo::optimize::{optimize, Cmp, LinearConstraint, Objective, OptimizeSpec};

use super::types::*;

/// Fills `*config` with the defaults: minimise time under the LIBRA model, no budget, bounds or
/// constraints (then set `total_bandwidth` or `dollar_budget`). Set `config->struct_size =
/// sizeof(libra_optimize_config)` first: only `min(struct_size, sizeof(libra_optimize_config))`
/// bytes are written and `struct_size` is kept, so a struct declared from another header is
/// filled with the fields it has and nothing past it is written. Errors:
/// LIBRA_ERR_NULL_ARGUMENT, LIBRA_ERR_INVALID_ARGUMENT (`config` misaligned, or `struct_size`
/// below the first published layout, e.g. 0: nothing written). Thread-safe.
///
/// Pointers: `config` NULL or a writable struct of the `struct_size` it declares.
#[no_mangle]
pub unsafe extern "C" fn libra_optimize_config_default(config: *mut libra_optimize_config) -> libra_status {
    entry!({
        // SAFETY: `config` is NULL or holds the `struct_size` writable bytes it declares, per
        // the contract above.
        unsafe { write_versioned(config, libra_optimize_config::defaults(), "config") }
    })
}

fn budget(v: f64, name: &str) -> Result<Option<f64>, Error> {
    if v == 0.0 {
        Ok(None)
    } else if v.is_finite() && v > 0.0 {
        Ok(Some(v))
    } else {
        Err(Error::invalid(format!("`config.{name}` is {v}, must be positive (or 0 for none)")))
    }
}

/// Finds the per-NPU bandwidths that minimise the objective for `workload` on `network` (the
/// network's own bandwidths are ignored) under `config`'s budgets, bounds and constraints,
/// exactly (a conic solve). A dimension no phase uses gets its lower bound, or 0.001 GB/s when
/// that is 0, so the answer is always accepted by libra_network_set_bandwidths().
/// Writes `num_dims` bandwidths (GB/s) to `bandwidths_out` and the
/// summary to `*out` (whose `struct_size` the caller sets), only on success. Fails with
/// LIBRA_ERR_INFEASIBLE when no allocation satisfies the constraints (e.g. a budget below the
/// lower bounds) and LIBRA_ERR_INVALID_ARGUMENT naming the field for bad input. Thread-safe on
/// const handles.
///
/// Pointers: Handles valid or NULL; `config` valid or NULL, with its pointers valid for their counts;
/// `bandwidths_out` NULL or `num_dims` writable values; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_optimize(
    network: *const libra_network,
    workload: *const libra_workload,
    config: *const libra_optimize_config,
    bandwidths_out: *mut f64,
    num_dims: usize,
    out: *mut libra_optimize_result,
) -> libra_status {
    entry!({
        // SAFETY: `network` is NULL or points to a live value, per the contract above.
        let n = unsafe { deref(network, "network") }?;
        // SAFETY: `workload` is NULL or points to a live value, per the contract above.
        let wl = unsafe { deref(workload, "workload") }?;
        // SAFETY: `config` is NULL or holds the `struct_size` bytes it declares, per the contract above.
        let cfg = unsafe { read_versioned(config, "config") }?;
        check_ptr(bandwidths_out, "bandwidths_out")?;
        check_aligned(bandwidths_out, "bandwidths_out")?;
        // SAFETY: `out` is NULL or holds the `struct_size` bytes it declares, per the contract above.
        unsafe { versioned_size(out, "out") }?;
        let d = n.inner.num_dims();
        if num_dims != d {
            return Err(Error::invalid(format!("`num_dims` is {num_dims}, the network has {d} dimensions")));
        }
        let objective = match libra_objective::from_raw(cfg.objective, "config.objective")? {
            libra_objective::LIBRA_OBJECTIVE_TIME => Objective::Time,
            libra_objective::LIBRA_OBJECTIVE_TIME_COST => Objective::TimeCost,
        };
        if cfg.num_constraints > MAX_CONSTRAINTS {
            return Err(Error::invalid(format!(
                "`config.num_constraints` is {}; at most {MAX_CONSTRAINTS}",
                cfg.num_constraints
            )));
        }
        let mut linear = Vec::with_capacity(cfg.num_constraints);
        // SAFETY: `cfg.constraints` points to `cfg.num_constraints` readable elements (or the
        // count is 0), per the contract above.
        let constraints = unsafe { slice(cfg.constraints, cfg.num_constraints, "config.constraints") }?;
        for (i, c) in constraints.iter().enumerate() {
            let cmp = match libra_cmp::from_raw(c.cmp, &format!("config.constraints[{i}].cmp"))? {
                libra_cmp::LIBRA_CMP_LE => Cmp::Le,
                libra_cmp::LIBRA_CMP_GE => Cmp::Ge,
                libra_cmp::LIBRA_CMP_EQ => Cmp::Eq,
            };
            // SAFETY: `c.coeffs` points to `c.num_coeffs` readable elements (or the count is 0), per the contract above.
            let coeffs =
                unsafe { slice(c.coeffs, c.num_coeffs, &format!("config.constraints[{i}].coeffs")) }?
                    .to_vec();
            linear.push(LinearConstraint::new(coeffs, cmp, c.rhs));
        }
        if cfg.num_bounds == 0 && !(cfg.lower.is_null() && cfg.upper.is_null()) {
            let which = if cfg.lower.is_null() { "upper" } else { "lower" };
            return Err(Error::invalid(format!(
                "`config.{which}` is set but `config.num_bounds` is 0; set it to the network's {d} dimensions"
            )));
        }
        let spec = OptimizeSpec {
            objective,
            model: time_model(cfg.model)?,
            total_bandwidth: budget(cfg.total_bandwidth, "total_bandwidth")?,
            dollar_budget: budget(cfg.dollar_budget, "dollar_budget")?,
            lower: if cfg.lower.is_null() {
                Vec::new()
            } else {
                // SAFETY: `cfg.lower` points to `cfg.num_bounds` readable elements (or the count is 0), per the contract above.
                unsafe { slice(cfg.lower, cfg.num_bounds, "config.lower") }?.to_vec()
            },
            upper: if cfg.upper.is_null() {
                Vec::new()
            } else {
                // SAFETY: `cfg.upper` points to `cfg.num_bounds` readable elements (or the count is 0), per the contract above.
                unsafe { slice(cfg.upper, cfg.num_bounds, "config.upper") }?.to_vec()
            },
            linear,
        };
        let a = optimize(&n.inner, &wl.inner, &spec)?;
        // SAFETY: non-NULL and aligned (checked above), with `num_dims == d` writable doubles,
        // per the contract above.
        unsafe { std::slice::from_raw_parts_mut(bandwidths_out, d) }.copy_from_slice(&a.bandwidths);
        let result = libra_optimize_result {
            struct_size: 0,
            time_ns: a.time,
            cost: a.cost,
            equal_split_time_ns: a.equal_split_time,
            proportional_split_time_ns: a.proportional_split_time,
            speedup_vs_equal: a.speedup_vs_equal(),
            speedup_vs_proportional: a.speedup_vs_proportional(),
            solver_iterations: a.iterations,
        };
        // SAFETY: `out` is NULL or holds the `struct_size` writable bytes it declares, per the contract above.
        unsafe { write_versioned(out, result, "out") }?;
        Ok(())
    })
}
