//! C ABI of the topology half: networks, workloads, the bandwidth optimiser and collective
//! schedules. Enumerations cross as `int32_t` typedefs with named constants, so an out-of-range
//! value from C is an error, never undefined behaviour.
#![allow(non_camel_case_types)]
use crate::error::{libra_status, Error};
use crate::ffi::boundary::{check_struct_size, deref, deref_mut, guard, null_arg, slice, write_out};
use crate::topo::astra::{astra_iteration, parse_astra_workload, to_astra_sim_yaml};
use crate::topo::exec::execute;
use crate::topo::model::{iteration_time, TimeModel};
use crate::topo::network::{CostParams, DimKind, Dimension, Network};
use crate::topo::optimize::{optimize, Cmp, LinearConstraint, Objective, OptimizeSpec};
use crate::topo::parse::{parse_communicator, parse_network, parse_workload};
use crate::topo::presets::{NetworkPreset, WorkloadPreset};
use crate::topo::schedule::{Policy, Schedule, ScheduleConfig, StepOp};
use crate::topo::workload::{Collective, CollectiveKind, Overlap, Workload};
use std::ffi::CStr;
use std::os::raw::c_char;

/// Most dimensions a network can have (2^32 NPUs of at least 2 per dimension).
const MAX_DIMS: usize = 32;
/// Most extra linear constraints one optimisation accepts.
const MAX_CONSTRAINTS: usize = 4096;

/// Kind of a network dimension: one of the LIBRA_DIM_* constants.
pub type libra_dim_kind = i32;
pub const LIBRA_DIM_RING: libra_dim_kind = 0;
pub const LIBRA_DIM_FULLY_CONNECTED: libra_dim_kind = 1;
pub const LIBRA_DIM_SWITCH: libra_dim_kind = 2;

/// A collective operation: one of the LIBRA_COLLECTIVE_* constants.
pub type libra_collective = i32;
/// No collective (a compute-only phase).
pub const LIBRA_COLLECTIVE_NONE: libra_collective = 0;
pub const LIBRA_COLLECTIVE_ALL_REDUCE: libra_collective = 1;
pub const LIBRA_COLLECTIVE_REDUCE_SCATTER: libra_collective = 2;
pub const LIBRA_COLLECTIVE_ALL_GATHER: libra_collective = 3;
pub const LIBRA_COLLECTIVE_ALL_TO_ALL: libra_collective = 4;

/// How a phase's compute and communication combine: one of the LIBRA_OVERLAP_* constants.
pub type libra_overlap = i32;
/// Phase time = compute + communication.
pub const LIBRA_OVERLAP_NONE: libra_overlap = 0;
/// Phase time = max(compute, communication).
pub const LIBRA_OVERLAP_FULL: libra_overlap = 1;

/// Time model: one of the LIBRA_MODEL_* constants.
pub type libra_time_model = i32;
/// LIBRA's bandwidth-only model.
pub const LIBRA_MODEL_LIBRA: libra_time_model = 0;
/// Alpha-beta: adds per-step latency (ring, direct, halving-doubling by dimension kind).
pub const LIBRA_MODEL_ALPHA_BETA: libra_time_model = 1;

/// Optimisation objective: one of the LIBRA_OBJECTIVE_* constants.
pub type libra_objective = i32;
/// Minimise iteration time.
pub const LIBRA_OBJECTIVE_TIME: libra_objective = 0;
/// Minimise iteration time x network cost, with the bandwidths summing to exactly
/// `total_bandwidth` (required; LIBRA's budget is an equality).
pub const LIBRA_OBJECTIVE_TIME_COST: libra_objective = 1;

/// Comparison of a linear constraint: one of the LIBRA_CMP_* constants.
pub type libra_cmp = i32;
pub const LIBRA_CMP_LE: libra_cmp = 0;
pub const LIBRA_CMP_GE: libra_cmp = 1;
pub const LIBRA_CMP_EQ: libra_cmp = 2;

/// Scheduling policy: one of the LIBRA_POLICY_* constants.
pub type libra_policy = i32;
/// Every chunk crosses the dimensions in ascending order.
pub const LIBRA_POLICY_BASELINE: libra_policy = 0;
/// Per chunk, the order that best balances per-dimension load (Themis; greedy, O(chunks x
/// dims^2)); the ascending order is kept when it is predicted faster, so never slower than
/// LIBRA_POLICY_BASELINE.
pub const LIBRA_POLICY_THEMIS: libra_policy = 1;

/// Operation of a schedule step: one of the LIBRA_STEP_* constants.
pub type libra_step_op = i32;
pub const LIBRA_STEP_REDUCE_SCATTER: libra_step_op = 0;
pub const LIBRA_STEP_ALL_GATHER: libra_step_op = 1;
/// Every group along the step's dimension exchanges the chunk's range of every block: a rank
/// with coordinate `a` sends block position `p` to the peer whose coordinate is `p`'s along
/// the dimension, which stores it at `p` with that coordinate replaced by `a` (positions are
/// numbered like ranks). After every dimension, block `j` of rank `r` holds what block `r` of
/// rank `j` held.
pub const LIBRA_STEP_ALL_TO_ALL: libra_step_op = 2;

/// Preset networks: one of the LIBRA_NETWORK_PRESET_* constants.
pub type libra_network_preset = i32;
/// [ring, fully-connected, switch] of [16, 8, 32] NPUs.
pub const LIBRA_NETWORK_PRESET_3D: libra_network_preset = 0;
/// [ring, fully-connected, ring, switch] of [4, 8, 4, 32] NPUs.
pub const LIBRA_NETWORK_PRESET_4D: libra_network_preset = 1;

/// Preset workloads: one of the LIBRA_WORKLOAD_PRESET_* constants.
pub type libra_workload_preset = i32;
pub const LIBRA_WORKLOAD_PRESET_GPT3: libra_workload_preset = 0;
pub const LIBRA_WORKLOAD_PRESET_MSFT_1T: libra_workload_preset = 1;
pub const LIBRA_WORKLOAD_PRESET_TURING_NLG: libra_workload_preset = 2;
pub const LIBRA_WORKLOAD_PRESET_RESNET50: libra_workload_preset = 3;

/// A multi-dimensional network (opaque).
pub struct libra_network {
    inner: Network,
}

/// A workload: phases with compute times and collectives (opaque).
pub struct libra_workload {
    inner: Workload,
}

/// A chunked collective schedule (opaque).
pub struct libra_schedule {
    inner: Schedule,
}

/// One network dimension. Fill with libra_dim_desc_default() first.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct libra_dim_desc {
    /// sizeof(libra_dim_desc), set by libra_dim_desc_default().
    pub struct_size: usize,
    pub kind: libra_dim_kind,
    /// NPUs along the dimension (at least 2).
    pub size: u32,
    /// Bandwidth per NPU in GB/s (positive).
    pub bandwidth: f64,
    /// Latency per algorithm step in ns.
    pub latency: f64,
    /// Cost in $ per GB/s: link, switch and NIC (the last two count for switch dimensions).
    pub link_cost: f64,
    pub switch_cost: f64,
    pub nic_cost: f64,
}

/// One linear constraint `sum(coeffs[d] * B_d) (cmp) rhs` over per-NPU bandwidths.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct libra_linear_constraint {
    /// One coefficient per dimension; borrowed for the duration of the call.
    pub coeffs: *const f64,
    pub num_coeffs: usize,
    pub cmp: libra_cmp,
    pub rhs: f64,
}

/// Optimiser settings. Fill with libra_optimize_config_default() first.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct libra_optimize_config {
    /// sizeof(libra_optimize_config), set by libra_optimize_config_default().
    pub struct_size: usize,
    pub objective: libra_objective,
    pub model: libra_time_model,
    /// Budget on the sum of per-NPU bandwidths (GB/s); 0 = none; negative is an error.
    pub total_bandwidth: f64,
    /// Budget on the network cost ($); 0 = none; negative is an error.
    pub dollar_budget: f64,
    /// Per-dimension lower bounds (num_dims entries) or NULL for 0.
    pub lower: *const f64,
    /// Per-dimension upper bounds (num_dims entries, INFINITY allowed) or NULL for none.
    pub upper: *const f64,
    /// Entries in `lower` / `upper`: the network's dimension count when either is set (0 with a
    /// bound set is an error).
    pub num_bounds: usize,
    /// Extra linear constraints, or NULL when num_constraints is 0.
    pub constraints: *const libra_linear_constraint,
    pub num_constraints: usize,
}

/// The optimiser's summary. Set `struct_size = sizeof(libra_optimize_result)` before the call.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct libra_optimize_result {
    pub struct_size: usize,
    /// Iteration time at the optimum, ns.
    pub time_ns: f64,
    /// Network cost at the optimum, $.
    pub cost: f64,
    /// Iteration time with the same total bandwidth split equally, ns.
    pub equal_split_time_ns: f64,
    /// Iteration time with the same total bandwidth split in proportion to traffic, ns.
    pub proportional_split_time_ns: f64,
    pub speedup_vs_equal: f64,
    pub speedup_vs_proportional: f64,
}

/// Scheduling settings. Fill with libra_schedule_config_default() first.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct libra_schedule_config {
    /// sizeof(libra_schedule_config), set by libra_schedule_config_default().
    pub struct_size: usize,
    pub policy: libra_policy,
    /// Number of chunks (default 64; fewer when the collective has fewer elements).
    pub chunks: usize,
    /// Bytes per element (default 4).
    pub elem_size: usize,
}

/// One schedule step. Set `struct_size = sizeof(libra_step)` before libra_schedule_step().
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct libra_step {
    pub struct_size: usize,
    pub chunk: usize,
    /// Position within the chunk's stages.
    pub stage: usize,
    /// Network dimension whose groups run this step.
    pub dim: usize,
    pub op: libra_step_op,
    /// Group size along `dim`.
    pub group: u32,
    /// The most bytes any rank receives in this step (its segment less its own part; for an
    /// all-to-all, the blocks it gets), from the same integer splits as the element ranges.
    pub bytes: f64,
    /// The chunk's element range; for an all-to-all, its range within each of the
    /// communicator's equal blocks.
    pub chunk_offset: usize,
    pub chunk_count: usize,
    /// Earlier steps this one waits for (see libra_schedule_step_dep()), besides the previous
    /// step on the same dimension.
    pub num_deps: usize,
    /// Predicted start, and finish (the chunk's data arrived: the bytes' time on the dimension
    /// plus the step's latency, which does not hold the dimension for other chunks), ns.
    pub start_ns: f64,
    pub finish_ns: f64,
}

unsafe fn c_str<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, Error> {
    if ptr.is_null() {
        return Err(null_arg(name));
    }
    CStr::from_ptr(ptr).to_str().map_err(|_| Error::invalid(format!("`{name}` is not valid UTF-8")))
}

fn dim_kind(k: libra_dim_kind, name: &str) -> Result<DimKind, Error> {
    Ok(match k {
        LIBRA_DIM_RING => DimKind::Ring,
        LIBRA_DIM_FULLY_CONNECTED => DimKind::FullyConnected,
        LIBRA_DIM_SWITCH => DimKind::Switch,
        _ => return Err(Error::invalid(format!("`{name}` is {k}, not a LIBRA_DIM_* value"))),
    })
}

fn collective_kind(k: libra_collective, name: &str) -> Result<Option<CollectiveKind>, Error> {
    Ok(match k {
        LIBRA_COLLECTIVE_NONE => None,
        LIBRA_COLLECTIVE_ALL_REDUCE => Some(CollectiveKind::AllReduce),
        LIBRA_COLLECTIVE_REDUCE_SCATTER => Some(CollectiveKind::ReduceScatter),
        LIBRA_COLLECTIVE_ALL_GATHER => Some(CollectiveKind::AllGather),
        LIBRA_COLLECTIVE_ALL_TO_ALL => Some(CollectiveKind::AllToAll),
        _ => return Err(Error::invalid(format!("`{name}` is {k}, not a LIBRA_COLLECTIVE_* value"))),
    })
}

fn overlap(o: libra_overlap) -> Result<Overlap, Error> {
    match o {
        LIBRA_OVERLAP_NONE => Ok(Overlap::None),
        LIBRA_OVERLAP_FULL => Ok(Overlap::Full),
        _ => Err(Error::invalid(format!("`overlap` is {o}, not a LIBRA_OVERLAP_* value"))),
    }
}

fn time_model(m: libra_time_model) -> Result<TimeModel, Error> {
    match m {
        LIBRA_MODEL_LIBRA => Ok(TimeModel::Libra),
        LIBRA_MODEL_ALPHA_BETA => Ok(TimeModel::AlphaBeta(Vec::new())),
        _ => Err(Error::invalid(format!("`model` is {m}, not a LIBRA_MODEL_* value"))),
    }
}

fn network_preset(p: libra_network_preset) -> Result<NetworkPreset, Error> {
    match p {
        LIBRA_NETWORK_PRESET_3D => Ok(NetworkPreset::ThreeD),
        LIBRA_NETWORK_PRESET_4D => Ok(NetworkPreset::FourD),
        _ => Err(Error::invalid(format!("`network_preset` is {p}, not a LIBRA_NETWORK_PRESET_* value"))),
    }
}

/// Group sizes from C: -1 or 1 mean "not involved".
fn groups_from_c(g: &[i32], name: &str) -> Result<Vec<u32>, Error> {
    g.iter()
        .enumerate()
        .map(|(i, &v)| match v {
            -1 => Ok(1),
            v if v >= 1 => Ok(v as u32),
            v => Err(Error::invalid(format!("`{name}[{i}]` is {v}, expected -1 or a positive group size"))),
        })
        .collect()
}

fn boxed<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}

/// Returns a libra_dim_desc with struct_size set, a ring of 2 NPUs at 1 GB/s, no latency and
/// no cost. Thread-safe.
#[no_mangle]
pub extern "C" fn libra_dim_desc_default() -> libra_dim_desc {
    libra_dim_desc {
        struct_size: std::mem::size_of::<libra_dim_desc>(),
        kind: LIBRA_DIM_RING,
        size: 2,
        bandwidth: 1.0,
        latency: 0.0,
        link_cost: 0.0,
        switch_cost: 0.0,
        nic_cost: 0.0,
    }
}

/// Builds a network from `num_dims` dimension descriptions (dimension 0 first; NPU coordinates
/// are mixed-radix with dimension 0 fastest). `dims` is borrowed for the call; its elements are
/// `dims[0].struct_size` bytes apart. On success `*out` receives a new network that the caller
/// frees with libra_network_free(). Fails with LIBRA_ERR_INVALID_ARGUMENT naming the field for
/// an empty network, a size below 2 or a zero, negative or non-finite bandwidth.
/// Thread-safe.
///
/// # Safety
/// `dims` must point to `num_dims` descriptions; `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn libra_network_new(
    dims: *const libra_dim_desc,
    num_dims: usize,
    out: *mut *mut libra_network,
) -> libra_status {
    guard("libra_network_new", || {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        if num_dims == 0 {
            return Err(Error::invalid("`num_dims` is 0: a network needs at least one dimension"));
        }
        // Every dimension has at least 2 NPUs and a network at most 2^32: more is never valid,
        // and `num_dims` must not size an allocation unchecked.
        if num_dims > MAX_DIMS {
            return Err(Error::invalid(format!("`num_dims` is {num_dims}; at most {MAX_DIMS} dimensions")));
        }
        let first = deref(dims, "dims")?;
        let stride = first.struct_size;
        check_struct_size(stride, std::mem::size_of::<libra_dim_desc>(), "dims[0]")?;
        let mut v = Vec::with_capacity(num_dims);
        for i in 0..num_dims {
            let d = &*((dims as *const u8).add(i * stride) as *const libra_dim_desc);
            v.push(Dimension {
                kind: dim_kind(d.kind, &format!("dims[{i}].kind"))?,
                size: d.size,
                bandwidth: d.bandwidth,
                latency: d.latency,
                cost: CostParams { link: d.link_cost, switch: d.switch_cost, nic: d.nic_cost },
            });
        }
        let net = Network::new(v)?;
        write_out(out, boxed(libra_network { inner: net }));
        Ok(())
    })
}

/// Builds a preset network (LIBRA_NETWORK_PRESET_*), with a starting bandwidth split, per-step
/// latencies and LIBRA's reference costs. `*out` is freed with libra_network_free().
/// Thread-safe.
///
/// # Safety
/// `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn libra_network_preset_new(
    preset: libra_network_preset,
    out: *mut *mut libra_network,
) -> libra_status {
    guard("libra_network_preset_new", || {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        let net = network_preset(preset)?.network();
        write_out(out, boxed(libra_network { inner: net }));
        Ok(())
    })
}

/// Parses a network YAML file's text, told apart by its keys: LIBRA's (`Topology`,
/// `NpusCount`, optional `CostDimension`, and our optional `Bandwidth` in GB/s per NPU, default
/// 100, and `Latency` in ns per step) or ASTRA-sim 2.0's analytical one (`topology`,
/// `npus_count`, `bandwidth` in GB/s per link with ASTRA-sim's 2^30-byte GB, `latency` in ns per
/// link; converted to per-NPU bandwidth: x2 for a ring, x(n-1) fully-connected, x1 switch, and
/// a switch step's latency is two links'). `cost_yaml`, if not NULL, is a LIBRA cost-model text
/// (`Link` for every dimension, plus `Switch` and `Nic` for switch dimensions, positive $ per
/// GB/s) and needs a LIBRA network with `CostDimension`. Both strings are borrowed,
/// NUL-terminated UTF-8. Fails with LIBRA_ERR_PARSE and a message naming the key or line for
/// unknown keys, values of the wrong shape or out of range, nesting deeper than 16 levels, and
/// YAML outside the supported subset (flow mappings, anchors, several documents).
/// `*out` is freed with libra_network_free(). Thread-safe.
///
/// # Safety
/// `network_yaml` must be a NUL-terminated string; `cost_yaml` NULL or one; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn libra_network_parse(
    network_yaml: *const c_char,
    cost_yaml: *const c_char,
    out: *mut *mut libra_network,
) -> libra_status {
    guard("libra_network_parse", || {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        let text = c_str(network_yaml, "network_yaml")?;
        let cost = if cost_yaml.is_null() { None } else { Some(c_str(cost_yaml, "cost_yaml")?) };
        let net = parse_network(text, cost)?;
        write_out(out, boxed(libra_network { inner: net }));
        Ok(())
    })
}

/// Writes `network` as an ASTRA-sim 2.0 analytical network YAML text (the inverse of the
/// conversion in libra_network_parse(); costs are not part of that format). With `buf` NULL,
/// writes the size needed (including the terminating NUL) to `*len_out` and succeeds. Otherwise
/// `buf` must hold `cap` bytes: fails with LIBRA_ERR_INVALID_ARGUMENT when `cap` is smaller than
/// the size needed (nothing written), and on success writes the NUL-terminated text to `buf` and
/// its size including the NUL to `*len_out`. Thread-safe on a const network.
///
/// # Safety
/// `network` valid or NULL; `buf` NULL or `cap` writable bytes; `len_out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_network_export_astra_sim(
    network: *const libra_network,
    buf: *mut c_char,
    cap: usize,
    len_out: *mut usize,
) -> libra_status {
    guard("libra_network_export_astra_sim", || {
        let n = deref(network, "network")?;
        deref_mut(len_out, "len_out")?;
        let text = to_astra_sim_yaml(&n.inner);
        let need = text.len() + 1;
        if !buf.is_null() {
            if cap < need {
                return Err(Error::invalid(format!("`cap` is {cap}; the text needs {need} bytes")));
            }
            std::ptr::copy_nonoverlapping(text.as_ptr(), buf as *mut u8, text.len());
            *buf.add(text.len()) = 0;
        }
        write_out(len_out, need);
        Ok(())
    })
}

/// Frees a network. NULL is a no-op. The network must not be in use by another thread.
///
/// # Safety
/// `network` must be NULL or a handle from a libra_network_* constructor, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn libra_network_free(network: *mut libra_network) {
    if !network.is_null() {
        drop(Box::from_raw(network));
    }
}

/// Writes the number of dimensions to `*out`. Thread-safe on a const network.
///
/// # Safety
/// `network` must be a valid handle or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_network_num_dims(
    network: *const libra_network,
    out: *mut usize,
) -> libra_status {
    guard("libra_network_num_dims", || {
        let n = deref(network, "network")?;
        deref_mut(out, "out")?;
        write_out(out, n.inner.num_dims());
        Ok(())
    })
}

/// Writes the total number of NPUs to `*out`. Thread-safe on a const network.
///
/// # Safety
/// `network` must be a valid handle or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_network_npus(network: *const libra_network, out: *mut u64) -> libra_status {
    guard("libra_network_npus", || {
        let n = deref(network, "network")?;
        deref_mut(out, "out")?;
        write_out(out, n.inner.npus());
        Ok(())
    })
}

/// Copies dimension `index` into `*out`, whose `struct_size` the caller sets (e.g. from
/// libra_dim_desc_default()); LIBRA_ERR_INVALID_ARGUMENT if `index` is out of range.
/// Thread-safe on a const network.
///
/// # Safety
/// `network` must be a valid handle or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_network_dim(
    network: *const libra_network,
    index: usize,
    out: *mut libra_dim_desc,
) -> libra_status {
    guard("libra_network_dim", || {
        let n = deref(network, "network")?;
        let o = deref_mut(out, "out")?;
        check_struct_size(o.struct_size, std::mem::size_of::<libra_dim_desc>(), "out")?;
        let d = n.inner.dims().get(index).ok_or_else(|| {
            Error::invalid(format!("`index` is {index}, the network has {} dimensions", n.inner.num_dims()))
        })?;
        let kind = match d.kind {
            DimKind::Ring => LIBRA_DIM_RING,
            DimKind::FullyConnected => LIBRA_DIM_FULLY_CONNECTED,
            DimKind::Switch => LIBRA_DIM_SWITCH,
        };
        *o = libra_dim_desc {
            struct_size: o.struct_size,
            kind,
            size: d.size,
            bandwidth: d.bandwidth,
            latency: d.latency,
            link_cost: d.cost.link,
            switch_cost: d.cost.switch,
            nic_cost: d.cost.nic,
        };
        Ok(())
    })
}

/// Writes LIBRA's network cost ($) of `bandwidths` (`num_dims` per-NPU GB/s values), or of
/// the network's own bandwidths when `bandwidths` is NULL, to `*out`. Thread-safe on a const
/// network.
///
/// # Safety
/// `network` valid or NULL; `bandwidths` NULL or `num_dims` values; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_network_cost(
    network: *const libra_network,
    bandwidths: *const f64,
    num_dims: usize,
    out: *mut f64,
) -> libra_status {
    guard("libra_network_cost", || {
        let n = deref(network, "network")?;
        deref_mut(out, "out")?;
        let cost = if bandwidths.is_null() {
            n.inner.cost()
        } else {
            n.inner.cost_of(slice(bandwidths, num_dims, "bandwidths")?)?
        };
        write_out(out, cost);
        Ok(())
    })
}

/// Replaces the network's per-NPU bandwidths (`num_dims` positive GB/s values, e.g. an
/// optimiser's answer). On error the network is unchanged. Not thread-safe: needs exclusive
/// access to `network`.
///
/// # Safety
/// `network` valid or NULL; `bandwidths` NULL or `num_dims` values.
#[no_mangle]
pub unsafe extern "C" fn libra_network_set_bandwidths(
    network: *mut libra_network,
    bandwidths: *const f64,
    num_dims: usize,
) -> libra_status {
    guard("libra_network_set_bandwidths", || {
        let n = deref_mut(network, "network")?;
        let bw = slice(bandwidths, num_dims, "bandwidths")?;
        if bandwidths.is_null() {
            return Err(null_arg("bandwidths"));
        }
        n.inner = n.inner.with_bandwidths(bw)?;
        Ok(())
    })
}

/// Creates an empty workload with an overlap mode (LIBRA_OVERLAP_*). `*out` is freed with
/// libra_workload_free(). Thread-safe.
///
/// # Safety
/// `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn libra_workload_new(
    overlap_mode: libra_overlap,
    out: *mut *mut libra_workload,
) -> libra_status {
    guard("libra_workload_new", || {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        let wl = Workload::new(overlap(overlap_mode)?);
        write_out(out, boxed(libra_workload { inner: wl }));
        Ok(())
    })
}

/// Appends a phase: `compute_ns` of compute and a collective of `kind` (LIBRA_COLLECTIVE_NONE
/// for none; then `bytes` and `groups` are ignored and `groups` may be NULL) of `bytes` per
/// NPU over a communicator with `groups[d]` NPUs along dimension d (-1 or 1 = not involved).
/// `name` may be NULL. The communicator is checked against a network when the workload is used
/// (a group size must divide its dimension). Not thread-safe: needs exclusive access.
///
/// # Safety
/// `workload` valid or NULL; `name` NULL or a NUL-terminated string; `groups` NULL or
/// `num_groups` values.
#[no_mangle]
pub unsafe extern "C" fn libra_workload_add_phase(
    workload: *mut libra_workload,
    name: *const c_char,
    compute_ns: f64,
    kind: libra_collective,
    bytes: f64,
    groups: *const i32,
    num_groups: usize,
) -> libra_status {
    guard("libra_workload_add_phase", || {
        let wl = deref_mut(workload, "workload")?;
        let name = if name.is_null() {
            format!("phase{}", wl.inner.phases.len())
        } else {
            c_str(name, "name")?.to_string()
        };
        if !(compute_ns.is_finite() && compute_ns >= 0.0) {
            return Err(Error::invalid(format!("`compute_ns` is {compute_ns}, must be non-negative")));
        }
        let collective = match collective_kind(kind, "kind")? {
            None => None,
            Some(k) => {
                if !(bytes.is_finite() && bytes >= 0.0) {
                    return Err(Error::invalid(format!("`bytes` is {bytes}, must be non-negative")));
                }
                if groups.is_null() {
                    return Err(null_arg("groups"));
                }
                let g = groups_from_c(slice(groups, num_groups, "groups")?, "groups")?;
                if g.is_empty() {
                    return Err(Error::invalid("`num_groups` is 0"));
                }
                Some(Collective::new(k, bytes, g))
            }
        };
        wl.inner.push(name, compute_ns, collective);
        Ok(())
    })
}

/// Builds a preset training iteration (LIBRA_WORKLOAD_PRESET_*) laid out for a preset network
/// (LIBRA_NETWORK_PRESET_*), with no compute/communication overlap. `*out` is freed with
/// libra_workload_free(). Thread-safe.
///
/// # Safety
/// `out` must be writable.
#[no_mangle]
pub unsafe extern "C" fn libra_workload_preset_new(
    preset: libra_workload_preset,
    network: libra_network_preset,
    out: *mut *mut libra_workload,
) -> libra_status {
    guard("libra_workload_preset_new", || {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        let w = match preset {
            LIBRA_WORKLOAD_PRESET_GPT3 => WorkloadPreset::Gpt3,
            LIBRA_WORKLOAD_PRESET_MSFT_1T => WorkloadPreset::Msft1T,
            LIBRA_WORKLOAD_PRESET_TURING_NLG => WorkloadPreset::TuringNlg,
            LIBRA_WORKLOAD_PRESET_RESNET50 => WorkloadPreset::ResNet50,
            p => return Err(Error::invalid(format!("`preset` is {p}, not a LIBRA_WORKLOAD_PRESET_* value"))),
        };
        let wl = w.workload(network_preset(network)?);
        write_out(out, boxed(libra_workload { inner: wl }));
        Ok(())
    })
}

/// Parses an ASTRA-sim 1.0 workload text and a LIBRA communicator YAML text for a network of
/// `num_dims` dimensions into one training iteration (forward of every layer, then input- and
/// weight-gradient from the last layer back). Strings are borrowed, NUL-terminated UTF-8.
/// Fails with LIBRA_ERR_PARSE naming the line or key. `*out` is freed with
/// libra_workload_free(). Thread-safe.
///
/// # Safety
/// Both strings must be NUL-terminated; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn libra_workload_parse(
    workload_text: *const c_char,
    communicator_yaml: *const c_char,
    num_dims: usize,
    overlap_mode: libra_overlap,
    out: *mut *mut libra_workload,
) -> libra_status {
    guard("libra_workload_parse", || {
        if out.is_null() {
            return Err(null_arg("out"));
        }
        let text = c_str(workload_text, "workload_text")?;
        let comm = c_str(communicator_yaml, "communicator_yaml")?;
        let wl = parse_workload(text, comm, num_dims, overlap(overlap_mode)?)?;
        write_out(out, boxed(libra_workload { inner: wl }));
        Ok(())
    })
}

/// Parses an ASTRA-sim 1.0 workload text into one training iteration on `network`. With
/// `communicator_yaml` NULL, each layer's communicators follow the file's parallelism as
/// ASTRA-sim 1.0 assigns them (`DATA`, `MODEL`, `HYBRID_DATA_MODEL`: model parallel on
/// dimension 0, `HYBRID_MODEL_DATA`: data parallel on dimension 0, `HYBRID_TRANSFORMER`:
/// model parallel over the first `model_parallel_NPU_group` NPUs, `HYBRID_DLRM`, `MICRO`, and
/// `HYBRID_CUSTOMIZED`, whose layers name their own in a 13th field); otherwise the LIBRA
/// communicator applies to every layer. Strings are borrowed, NUL-terminated UTF-8. Fails with
/// LIBRA_ERR_PARSE naming the line or key, and LIBRA_ERR_INVALID_ARGUMENT when a file without a
/// parallelism header comes without a communicator or a model-parallel group does not fit the
/// network. `*out` is freed with libra_workload_free(). Thread-safe on a const network.
///
/// # Safety
/// `network` valid or NULL; `workload_text` NUL-terminated; `communicator_yaml` NULL or
/// NUL-terminated; `out` writable.
#[no_mangle]
pub unsafe extern "C" fn libra_workload_parse_astra(
    network: *const libra_network,
    workload_text: *const c_char,
    communicator_yaml: *const c_char,
    overlap_mode: libra_overlap,
    out: *mut *mut libra_workload,
) -> libra_status {
    guard("libra_workload_parse_astra", || {
        let n = deref(network, "network")?;
        if out.is_null() {
            return Err(null_arg("out"));
        }
        let text = c_str(workload_text, "workload_text")?;
        let comm = if communicator_yaml.is_null() {
            None
        } else {
            Some(parse_communicator(c_str(communicator_yaml, "communicator_yaml")?, n.inner.num_dims())?)
        };
        let w = parse_astra_workload(text)?;
        let wl = astra_iteration(&w, &n.inner, comm.as_ref(), overlap(overlap_mode)?)?;
        write_out(out, boxed(libra_workload { inner: wl }));
        Ok(())
    })
}

/// Frees a workload. NULL is a no-op. The workload must not be in use by another thread.
///
/// # Safety
/// `workload` must be NULL or a handle from a libra_workload_* constructor, not yet freed.
#[no_mangle]
pub unsafe extern "C" fn libra_workload_free(workload: *mut libra_workload) {
    if !workload.is_null() {
        drop(Box::from_raw(workload));
    }
}

/// Writes the number of phases to `*out`. Thread-safe on a const workload.
///
/// # Safety
/// `workload` valid or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_workload_num_phases(
    workload: *const libra_workload,
    out: *mut usize,
) -> libra_status {
    guard("libra_workload_num_phases", || {
        let wl = deref(workload, "workload")?;
        deref_mut(out, "out")?;
        write_out(out, wl.inner.phases.len());
        Ok(())
    })
}

/// Writes the iteration time (ns) of `workload` on `network` with its own bandwidths under
/// `model` (LIBRA_MODEL_*) to `*out_ns`. Fails with LIBRA_ERR_INVALID_ARGUMENT naming the phase
/// and field when a communicator does not fit the network. Thread-safe on const handles.
///
/// # Safety
/// Handles valid or NULL; `out_ns` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_iteration_time(
    network: *const libra_network,
    workload: *const libra_workload,
    model: libra_time_model,
    out_ns: *mut f64,
) -> libra_status {
    guard("libra_iteration_time", || {
        let n = deref(network, "network")?;
        let wl = deref(workload, "workload")?;
        deref_mut(out_ns, "out_ns")?;
        let t = iteration_time(&wl.inner, &n.inner, &time_model(model)?, None)?;
        write_out(out_ns, t);
        Ok(())
    })
}

/// Returns a libra_optimize_config with struct_size set: minimise time under the LIBRA model,
/// no budget, bounds or constraints (set `total_bandwidth` or `dollar_budget`). Thread-safe.
#[no_mangle]
pub extern "C" fn libra_optimize_config_default() -> libra_optimize_config {
    libra_optimize_config {
        struct_size: std::mem::size_of::<libra_optimize_config>(),
        objective: LIBRA_OBJECTIVE_TIME,
        model: LIBRA_MODEL_LIBRA,
        total_bandwidth: 0.0,
        dollar_budget: 0.0,
        lower: std::ptr::null(),
        upper: std::ptr::null(),
        num_bounds: 0,
        constraints: std::ptr::null(),
        num_constraints: 0,
    }
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
/// # Safety
/// Handles valid or NULL; `config` valid or NULL, with its pointers valid for their counts;
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
    guard("libra_optimize", || {
        let n = deref(network, "network")?;
        let wl = deref(workload, "workload")?;
        let cfg = deref(config, "config")?;
        check_struct_size(cfg.struct_size, std::mem::size_of::<libra_optimize_config>(), "config")?;
        if bandwidths_out.is_null() {
            return Err(null_arg("bandwidths_out"));
        }
        let o = deref_mut(out, "out")?;
        check_struct_size(o.struct_size, std::mem::size_of::<libra_optimize_result>(), "out")?;
        let d = n.inner.num_dims();
        if num_dims != d {
            return Err(Error::invalid(format!("`num_dims` is {num_dims}, the network has {d} dimensions")));
        }
        let objective = match cfg.objective {
            LIBRA_OBJECTIVE_TIME => Objective::Time,
            LIBRA_OBJECTIVE_TIME_COST => Objective::TimeCost,
            v => {
                return Err(Error::invalid(format!(
                    "`config.objective` is {v}, not a LIBRA_OBJECTIVE_* value"
                )))
            }
        };
        if cfg.num_constraints > MAX_CONSTRAINTS {
            return Err(Error::invalid(format!(
                "`config.num_constraints` is {}; at most {MAX_CONSTRAINTS}",
                cfg.num_constraints
            )));
        }
        let mut linear = Vec::with_capacity(cfg.num_constraints);
        for (i, c) in slice(cfg.constraints, cfg.num_constraints, "config.constraints")?.iter().enumerate() {
            let cmp = match c.cmp {
                LIBRA_CMP_LE => Cmp::Le,
                LIBRA_CMP_GE => Cmp::Ge,
                LIBRA_CMP_EQ => Cmp::Eq,
                v => {
                    return Err(Error::invalid(format!(
                        "`config.constraints[{i}].cmp` is {v}, not a LIBRA_CMP_* value"
                    )))
                }
            };
            let coeffs = slice(c.coeffs, c.num_coeffs, &format!("config.constraints[{i}].coeffs"))?.to_vec();
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
                slice(cfg.lower, cfg.num_bounds, "config.lower")?.to_vec()
            },
            upper: if cfg.upper.is_null() {
                Vec::new()
            } else {
                slice(cfg.upper, cfg.num_bounds, "config.upper")?.to_vec()
            },
            linear,
        };
        let a = optimize(&n.inner, &wl.inner, &spec)?;
        std::slice::from_raw_parts_mut(bandwidths_out, d).copy_from_slice(&a.bandwidths);
        *o = libra_optimize_result {
            struct_size: o.struct_size,
            time_ns: a.time,
            cost: a.cost,
            equal_split_time_ns: a.equal_split_time,
            proportional_split_time_ns: a.proportional_split_time,
            speedup_vs_equal: a.speedup_vs_equal(),
            speedup_vs_proportional: a.speedup_vs_proportional(),
        };
        Ok(())
    })
}

/// Returns a libra_schedule_config with struct_size set: Themis, 64 chunks, 4-byte elements.
/// Thread-safe.
#[no_mangle]
pub extern "C" fn libra_schedule_config_default() -> libra_schedule_config {
    let d = ScheduleConfig::default();
    libra_schedule_config {
        struct_size: std::mem::size_of::<libra_schedule_config>(),
        policy: LIBRA_POLICY_THEMIS,
        chunks: d.chunks,
        elem_size: d.elem_size,
    }
}

/// Schedules a collective `kind` (all-reduce, reduce-scatter, all-gather, or all-to-all, whose
/// `count` must be a multiple of the communicator's rank count) of `count` elements per rank
/// over the communicator `groups` (`num_groups` = the network's dimension
/// count, -1 or 1 = not involved; NULL = every NPU) on `network`. `config` may be NULL for the
/// defaults. Ranks of the communicator are numbered mixed-radix over the group sizes, dimension
/// 0 fastest. `*out` is freed with libra_schedule_free(). Thread-safe on a const network.
///
/// # Safety
/// `network` valid or NULL; `groups` NULL or `num_groups` values; `config` NULL or valid;
/// `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_new(
    network: *const libra_network,
    kind: libra_collective,
    count: usize,
    groups: *const i32,
    num_groups: usize,
    config: *const libra_schedule_config,
    out: *mut *mut libra_schedule,
) -> libra_status {
    guard("libra_schedule_new", || {
        let n = deref(network, "network")?;
        if out.is_null() {
            return Err(null_arg("out"));
        }
        let kind = collective_kind(kind, "kind")?
            .ok_or_else(|| Error::invalid("`kind` is LIBRA_COLLECTIVE_NONE"))?;
        let groups = if groups.is_null() {
            None
        } else {
            Some(groups_from_c(slice(groups, num_groups, "groups")?, "groups")?)
        };
        let mut cfg = ScheduleConfig::default();
        if !config.is_null() {
            let c = &*config;
            check_struct_size(c.struct_size, std::mem::size_of::<libra_schedule_config>(), "config")?;
            cfg.policy = match c.policy {
                LIBRA_POLICY_BASELINE => Policy::Baseline,
                LIBRA_POLICY_THEMIS => Policy::Themis,
                v => {
                    return Err(Error::invalid(format!("`config.policy` is {v}, not a LIBRA_POLICY_* value")))
                }
            };
            cfg.chunks = c.chunks;
            cfg.elem_size = c.elem_size;
        }
        let s = Schedule::new(&n.inner, kind, count, groups.as_deref(), &cfg)?;
        write_out(out, boxed(libra_schedule { inner: s }));
        Ok(())
    })
}

/// Frees a schedule. NULL is a no-op. The schedule must not be in use by another thread.
///
/// # Safety
/// `schedule` must be NULL or a handle from libra_schedule_new(), not yet freed.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_free(schedule: *mut libra_schedule) {
    if !schedule.is_null() {
        drop(Box::from_raw(schedule));
    }
}

/// Writes the number of steps to `*out`. Steps are numbered in a valid issue order: every
/// step's dependencies come before it, and steps on one dimension are in start order.
/// Thread-safe on a const schedule.
///
/// # Safety
/// `schedule` valid or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_num_steps(
    schedule: *const libra_schedule,
    out: *mut usize,
) -> libra_status {
    guard("libra_schedule_num_steps", || {
        let s = deref(schedule, "schedule")?;
        deref_mut(out, "out")?;
        write_out(out, s.inner.steps.len());
        Ok(())
    })
}

/// Writes the number of ranks in the schedule's communicator to `*out`. Thread-safe on a const
/// schedule.
///
/// # Safety
/// `schedule` valid or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_num_ranks(
    schedule: *const libra_schedule,
    out: *mut usize,
) -> libra_status {
    guard("libra_schedule_num_ranks", || {
        let s = deref(schedule, "schedule")?;
        deref_mut(out, "out")?;
        write_out(out, s.inner.ranks());
        Ok(())
    })
}

/// Writes the predicted completion time (ns) to `*out_ns`. Thread-safe on a const schedule.
///
/// # Safety
/// `schedule` valid or NULL; `out_ns` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_finish_time(
    schedule: *const libra_schedule,
    out_ns: *mut f64,
) -> libra_status {
    guard("libra_schedule_finish_time", || {
        let s = deref(schedule, "schedule")?;
        deref_mut(out_ns, "out_ns")?;
        write_out(out_ns, s.inner.finish_time);
        Ok(())
    })
}

fn step_at(s: &libra_schedule, index: usize) -> Result<&crate::topo::schedule::Step, Error> {
    s.inner.steps.get(index).ok_or_else(|| {
        Error::invalid(format!("`index` is {index}, the schedule has {} steps", s.inner.steps.len()))
    })
}

/// Copies step `index` into `*out` (whose `struct_size` the caller sets to
/// sizeof(libra_step)). Thread-safe on a const schedule.
///
/// # Safety
/// `schedule` valid or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_step(
    schedule: *const libra_schedule,
    index: usize,
    out: *mut libra_step,
) -> libra_status {
    guard("libra_schedule_step", || {
        let s = deref(schedule, "schedule")?;
        let o = deref_mut(out, "out")?;
        check_struct_size(o.struct_size, std::mem::size_of::<libra_step>(), "out")?;
        let st = step_at(s, index)?;
        *o = libra_step {
            struct_size: o.struct_size,
            chunk: st.chunk,
            stage: st.stage,
            dim: st.dim,
            op: match st.op {
                StepOp::ReduceScatter => LIBRA_STEP_REDUCE_SCATTER,
                StepOp::AllGather => LIBRA_STEP_ALL_GATHER,
                StepOp::AllToAll => LIBRA_STEP_ALL_TO_ALL,
            },
            group: st.group,
            bytes: st.bytes,
            chunk_offset: st.chunk_offset,
            chunk_count: st.chunk_count,
            num_deps: st.deps.len(),
            start_ns: st.start,
            finish_ns: st.finish,
        };
        Ok(())
    })
}

/// Writes the index of dependency `dep` (0 <= dep < num_deps) of step `index` to `*out`.
/// Thread-safe on a const schedule.
///
/// # Safety
/// `schedule` valid or NULL; `out` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_step_dep(
    schedule: *const libra_schedule,
    index: usize,
    dep: usize,
    out: *mut usize,
) -> libra_status {
    guard("libra_schedule_step_dep", || {
        let s = deref(schedule, "schedule")?;
        deref_mut(out, "out")?;
        let st = step_at(s, index)?;
        let d = *st.deps.get(dep).ok_or_else(|| {
            Error::invalid(format!("`dep` is {dep}, step {index} has {} dependencies", st.deps.len()))
        })?;
        write_out(out, d);
        Ok(())
    })
}

/// Writes the element range (`*offset`, `*count`) that `rank` passes to step `index`: the
/// reduce-scatter's input or the all-gather's output. The rank's own part of it is part
/// `coordinate along step.dim` of `step.group` parts, the first `count % group` parts one
/// element longer. For an all-to-all step: the range within each block that the step moves
/// (see LIBRA_STEP_ALL_TO_ALL), the same for every rank. Thread-safe on a const schedule.
///
/// # Safety
/// `schedule` valid or NULL; `offset` and `count` writable or NULL.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_step_segment(
    schedule: *const libra_schedule,
    index: usize,
    rank: usize,
    offset: *mut usize,
    count: *mut usize,
) -> libra_status {
    guard("libra_schedule_step_segment", || {
        let s = deref(schedule, "schedule")?;
        deref_mut(offset, "offset")?;
        deref_mut(count, "count")?;
        step_at(s, index)?;
        if rank >= s.inner.ranks() {
            return Err(Error::invalid(format!(
                "`rank` is {rank}, the communicator has {} ranks",
                s.inner.ranks()
            )));
        }
        let (o, c) = s.inner.segment(index, rank);
        write_out(offset, o);
        write_out(count, c);
        Ok(())
    })
}

/// Runs the schedule on host buffers: `buffers[r]` is rank r's `count` doubles (count = the
/// schedule's element count), updated in place with the reference executor. All-reduce leaves
/// the element-wise sum in every buffer. Buffers must not overlap. Thread-safe on a const
/// schedule; the buffers need exclusive access.
///
/// # Safety
/// `buffers` NULL or `num_ranks` pointers, each to `count` writable doubles.
#[no_mangle]
pub unsafe extern "C" fn libra_schedule_execute_f64(
    schedule: *const libra_schedule,
    buffers: *const *mut f64,
    num_ranks: usize,
    count: usize,
) -> libra_status {
    guard("libra_schedule_execute_f64", || {
        let s = deref(schedule, "schedule")?;
        let ptrs = slice(buffers, num_ranks, "buffers")?;
        if buffers.is_null() {
            return Err(null_arg("buffers"));
        }
        if num_ranks != s.inner.ranks() {
            return Err(Error::invalid(format!(
                "`num_ranks` is {num_ranks}, the schedule has {}",
                s.inner.ranks()
            )));
        }
        if count != s.inner.count {
            return Err(Error::invalid(format!("`count` is {count}, the schedule has {}", s.inner.count)));
        }
        let mut bufs = Vec::with_capacity(num_ranks);
        for (r, &p) in ptrs.iter().enumerate() {
            bufs.push(slice(p, count, &format!("buffers[{r}]"))?.to_vec());
        }
        execute(&s.inner, &mut bufs)?;
        for (&p, b) in ptrs.iter().zip(&bufs) {
            std::slice::from_raw_parts_mut(p, count).copy_from_slice(b);
        }
        Ok(())
    })
}
