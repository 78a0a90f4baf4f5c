//! Types of the topology C ABI: enumerations, the structs callers fill, the opaque handles,
//! and the conversions from C values to the Rust API's types.
use crate::error::Error;
use crate::ffi::boundary::null_arg;
use crate::topo::model::TimeModel;
use crate::topo::network::{DimKind, Network};
use crate::topo::presets::NetworkPreset;
use crate::topo::schedule::Schedule;
use crate::topo::workload::{CollectiveKind, Overlap, Workload};
use std::ffi::CStr;
use std::os::raw::c_char;

/// Most dimensions a network can have (2^32 NPUs of at least 2 per dimension).
pub(super) const MAX_DIMS: usize = 32;
/// Most extra linear constraints one optimisation accepts.
pub(super) const MAX_CONSTRAINTS: usize = 4096;

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
    pub(super) inner: Network,
}

/// A workload: phases with compute times and collectives (opaque).
pub struct libra_workload {
    pub(super) inner: Workload,
}

/// A chunked collective schedule (opaque).
pub struct libra_schedule {
    pub(super) inner: Schedule,
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

pub(super) unsafe fn c_str<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, Error> {
    if ptr.is_null() {
        return Err(null_arg(name));
    }
    CStr::from_ptr(ptr).to_str().map_err(|_| Error::invalid(format!("`{name}` is not valid UTF-8")))
}

pub(super) fn dim_kind(k: libra_dim_kind, name: &str) -> Result<DimKind, Error> {
    Ok(match k {
        LIBRA_DIM_RING => DimKind::Ring,
        LIBRA_DIM_FULLY_CONNECTED => DimKind::FullyConnected,
        LIBRA_DIM_SWITCH => DimKind::Switch,
        _ => return Err(Error::invalid(format!("`{name}` is {k}, not a LIBRA_DIM_* value"))),
    })
}

pub(super) fn collective_kind(k: libra_collective, name: &str) -> Result<Option<CollectiveKind>, Error> {
    Ok(match k {
        LIBRA_COLLECTIVE_NONE => None,
        LIBRA_COLLECTIVE_ALL_REDUCE => Some(CollectiveKind::AllReduce),
        LIBRA_COLLECTIVE_REDUCE_SCATTER => Some(CollectiveKind::ReduceScatter),
        LIBRA_COLLECTIVE_ALL_GATHER => Some(CollectiveKind::AllGather),
        LIBRA_COLLECTIVE_ALL_TO_ALL => Some(CollectiveKind::AllToAll),
        _ => return Err(Error::invalid(format!("`{name}` is {k}, not a LIBRA_COLLECTIVE_* value"))),
    })
}

pub(super) fn overlap(o: libra_overlap) -> Result<Overlap, Error> {
    match o {
        LIBRA_OVERLAP_NONE => Ok(Overlap::None),
        LIBRA_OVERLAP_FULL => Ok(Overlap::Full),
        _ => Err(Error::invalid(format!("`overlap` is {o}, not a LIBRA_OVERLAP_* value"))),
    }
}

pub(super) fn time_model(m: libra_time_model) -> Result<TimeModel, Error> {
    match m {
        LIBRA_MODEL_LIBRA => Ok(TimeModel::Libra),
        LIBRA_MODEL_ALPHA_BETA => Ok(TimeModel::AlphaBeta(Vec::new())),
        _ => Err(Error::invalid(format!("`model` is {m}, not a LIBRA_MODEL_* value"))),
    }
}

pub(super) fn network_preset(p: libra_network_preset) -> Result<NetworkPreset, Error> {
    match p {
        LIBRA_NETWORK_PRESET_3D => Ok(NetworkPreset::ThreeD),
        LIBRA_NETWORK_PRESET_4D => Ok(NetworkPreset::FourD),
        _ => Err(Error::invalid(format!("`network_preset` is {p}, not a LIBRA_NETWORK_PRESET_* value"))),
    }
}

/// Group sizes from C: -1 or 1 mean "not involved".
pub(super) fn groups_from_c(g: &[i32], name: &str) -> Result<Vec<u32>, Error> {
    g.iter()
        .enumerate()
        .map(|(i, &v)| match v {
            -1 => Ok(1),
            v if v >= 1 => Ok(v as u32),
            v => Err(Error::invalid(format!("`{name}[{i}]` is {v}, expected -1 or a positive group size"))),
        })
        .collect()
}

pub(super) fn boxed<T>(value: T) -> *mut T {
    Box::into_raw(Box::new(value))
}
