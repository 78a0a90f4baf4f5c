//! Types of the topology C ABI: enumerations, the structs callers fill, the opaque handles,
//! and the conversions from C values to the Rust API's types.
use crate::boundary::null_arg;
use crate::boundary::Versioned;
use libra::error::Error;
use libra::topo::model::TimeModel;
use libra::topo::network::{DimKind, Network};
use libra::topo::presets::NetworkPreset;
use libra::topo::schedule::Schedule;
use libra::topo::workload::{CollectiveKind, Overlap, Workload};
use std::ffi::CStr;
use std::os::raw::c_char;

/// Most dimensions a network can have (2^32 NPUs of at least 2 per dimension).
pub(super) const MAX_DIMS: usize = 32;
/// Most extra linear constraints one optimisation accepts.
pub(super) const MAX_CONSTRAINTS: usize = 4096;

/// An enumeration of the C ABI. A field or parameter that holds one is a plain `i32` in Rust
/// (its `_raw` alias), so any value C passes is defined and an unknown one is rejected naming
/// the argument; the header gives it the enumeration's type (cbindgen.toml renames the alias),
/// so C++ and C23 callers cannot assign another enumeration's constant to it.
pub trait CEnum: Copy + 'static {
    /// Every value, for the conversion from C.
    const ALL: &'static [Self];
    /// How messages name the constants, e.g. "LIBRA_DIM_*".
    const CONSTANTS: &'static str;
    fn raw(self) -> i32;
    /// The value `v` stands for, or an error naming `field`.
    fn from_raw(v: i32, field: &str) -> Result<Self, Error> {
        Self::ALL
            .iter()
            .copied()
            .find(|e| e.raw() == v)
            .ok_or_else(|| Error::invalid(format!("`{field}` is {v}, not a {} value", Self::CONSTANTS)))
    }
}

macro_rules! c_enum {
    ($ty:ident, $raw:ident, $constants:literal, [$($v:ident),+ $(,)?]) => {
        /// The C ABI's storage of the enumeration of the same name without `_raw`.
        pub type $raw = i32;
        impl CEnum for $ty {
            const ALL: &'static [Self] = &[$($ty::$v),+];
            const CONSTANTS: &'static str = $constants;
            fn raw(self) -> i32 {
                self as i32
            }
        }
        impl From<$ty> for i32 {
            fn from(v: $ty) -> i32 {
                v as i32
            }
        }
    };
}
pub(crate) use c_enum;

/// Kind of a network dimension (`libra_dim_desc.kind`).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum libra_dim_kind {
    LIBRA_DIM_RING = 0,
    LIBRA_DIM_FULLY_CONNECTED = 1,
    LIBRA_DIM_SWITCH = 2,
}
c_enum!(
    libra_dim_kind,
    libra_dim_kind_raw,
    "LIBRA_DIM_*",
    [LIBRA_DIM_RING, LIBRA_DIM_FULLY_CONNECTED, LIBRA_DIM_SWITCH]
);

/// A collective operation (the `kind` of a phase or a schedule).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum libra_collective {
    /// No collective (a compute-only phase).
    LIBRA_COLLECTIVE_NONE = 0,
    LIBRA_COLLECTIVE_ALL_REDUCE = 1,
    LIBRA_COLLECTIVE_REDUCE_SCATTER = 2,
    LIBRA_COLLECTIVE_ALL_GATHER = 3,
    LIBRA_COLLECTIVE_ALL_TO_ALL = 4,
}
c_enum!(
    libra_collective,
    libra_collective_raw,
    "LIBRA_COLLECTIVE_*",
    [
        LIBRA_COLLECTIVE_NONE,
        LIBRA_COLLECTIVE_ALL_REDUCE,
        LIBRA_COLLECTIVE_REDUCE_SCATTER,
        LIBRA_COLLECTIVE_ALL_GATHER,
        LIBRA_COLLECTIVE_ALL_TO_ALL
    ]
);

/// How a phase's compute and communication combine (a workload's `overlap_mode`).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum libra_overlap {
    /// Phase time = compute + communication.
    LIBRA_OVERLAP_NONE = 0,
    /// Phase time = max(compute, communication).
    LIBRA_OVERLAP_FULL = 1,
}
c_enum!(libra_overlap, libra_overlap_raw, "LIBRA_OVERLAP_*", [LIBRA_OVERLAP_NONE, LIBRA_OVERLAP_FULL]);

/// Time model (`libra_optimize_config.model`, libra_iteration_time()'s `model`).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum libra_time_model {
    /// LIBRA's bandwidth-only model.
    LIBRA_MODEL_LIBRA = 0,
    /// Alpha-beta: adds per-step latency (ring, direct, halving-doubling by dimension kind).
    LIBRA_MODEL_ALPHA_BETA = 1,
}
c_enum!(libra_time_model, libra_time_model_raw, "LIBRA_MODEL_*", [LIBRA_MODEL_LIBRA, LIBRA_MODEL_ALPHA_BETA]);

/// Optimisation objective (`libra_optimize_config.objective`).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum libra_objective {
    /// Minimise iteration time.
    LIBRA_OBJECTIVE_TIME = 0,
    /// Minimise iteration time x network cost, with the bandwidths summing to exactly
    /// `total_bandwidth` (required; LIBRA's budget is an equality).
    LIBRA_OBJECTIVE_TIME_COST = 1,
}
c_enum!(
    libra_objective,
    libra_objective_raw,
    "LIBRA_OBJECTIVE_*",
    [LIBRA_OBJECTIVE_TIME, LIBRA_OBJECTIVE_TIME_COST]
);

/// Comparison of a linear constraint (`libra_linear_constraint.cmp`).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum libra_cmp {
    LIBRA_CMP_LE = 0,
    LIBRA_CMP_GE = 1,
    LIBRA_CMP_EQ = 2,
}
c_enum!(libra_cmp, libra_cmp_raw, "LIBRA_CMP_*", [LIBRA_CMP_LE, LIBRA_CMP_GE, LIBRA_CMP_EQ]);

/// Scheduling policy (`libra_schedule_config.policy`); not the cache's `libra_policy`.
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum libra_schedule_policy {
    /// Every chunk crosses the dimensions in ascending order.
    LIBRA_SCHEDULE_POLICY_BASELINE = 0,
    /// Per chunk, the order that best balances per-dimension load (Themis; greedy, O(chunks x
    /// dims^2)); the ascending order is kept when it is predicted faster, so never slower than
    /// LIBRA_SCHEDULE_POLICY_BASELINE.
    LIBRA_SCHEDULE_POLICY_THEMIS = 1,
}
c_enum!(
    libra_schedule_policy,
    libra_schedule_policy_raw,
    "LIBRA_SCHEDULE_POLICY_*",
    [LIBRA_SCHEDULE_POLICY_BASELINE, LIBRA_SCHEDULE_POLICY_THEMIS]
);

/// Operation of a schedule step (`libra_step.op`).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum libra_step_op {
    LIBRA_STEP_REDUCE_SCATTER = 0,
    LIBRA_STEP_ALL_GATHER = 1,
    /// Every group along the step's dimension exchanges the chunk's range of every block: a
    /// rank with coordinate `a` sends block position `p` to the peer whose coordinate is `p`'s
    /// along the dimension, which stores it at `p` with that coordinate replaced by `a`
    /// (positions are numbered like ranks). After every dimension, block `j` of rank `r` holds
    /// what block `r` of rank `j` held.
    LIBRA_STEP_ALL_TO_ALL = 2,
}
c_enum!(
    libra_step_op,
    libra_step_op_raw,
    "LIBRA_STEP_*",
    [LIBRA_STEP_REDUCE_SCATTER, LIBRA_STEP_ALL_GATHER, LIBRA_STEP_ALL_TO_ALL]
);

/// Preset networks (libra_network_preset_new(), libra_workload_preset_new()).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum libra_network_preset {
    /// [ring, fully-connected, switch] of [16, 8, 32] NPUs.
    LIBRA_NETWORK_PRESET_3D = 0,
    /// [ring, fully-connected, ring, switch] of [4, 8, 4, 32] NPUs.
    LIBRA_NETWORK_PRESET_4D = 1,
}
c_enum!(
    libra_network_preset,
    libra_network_preset_raw,
    "LIBRA_NETWORK_PRESET_*",
    [LIBRA_NETWORK_PRESET_3D, LIBRA_NETWORK_PRESET_4D]
);

/// Preset workloads (libra_workload_preset_new()).
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum libra_workload_preset {
    LIBRA_WORKLOAD_PRESET_GPT3 = 0,
    LIBRA_WORKLOAD_PRESET_MSFT_1T = 1,
    LIBRA_WORKLOAD_PRESET_TURING_NLG = 2,
    LIBRA_WORKLOAD_PRESET_RESNET50 = 3,
}
c_enum!(
    libra_workload_preset,
    libra_workload_preset_raw,
    "LIBRA_WORKLOAD_PRESET_*",
    [
        LIBRA_WORKLOAD_PRESET_GPT3,
        LIBRA_WORKLOAD_PRESET_MSFT_1T,
        LIBRA_WORKLOAD_PRESET_TURING_NLG,
        LIBRA_WORKLOAD_PRESET_RESNET50
    ]
);

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

/// One network dimension. Set `struct_size = sizeof(libra_dim_desc)`, fill it with
/// libra_dim_desc_default(), then change fields.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct libra_dim_desc {
    /// sizeof(libra_dim_desc), set by the caller before libra_dim_desc_default().
    pub struct_size: usize,
    pub kind: libra_dim_kind_raw,
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
    pub cmp: libra_cmp_raw,
    pub rhs: f64,
}

/// Optimiser settings. Set `struct_size = sizeof(libra_optimize_config)`, fill it with
/// libra_optimize_config_default(), then change fields.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct libra_optimize_config {
    /// sizeof(libra_optimize_config), set by the caller before libra_optimize_config_default().
    pub struct_size: usize,
    pub objective: libra_objective_raw,
    pub model: libra_time_model_raw,
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

/// The optimiser's summary. Set `struct_size = sizeof(libra_optimize_result)` before the call;
/// only that many bytes are written.
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
    /// Interior-point iterations of the final conic solve. Added in 0.2: a caller whose
    /// `struct_size` predates it gets every field before it.
    pub solver_iterations: u32,
}

/// Scheduling settings. Set `struct_size = sizeof(libra_schedule_config)`, fill it with
/// libra_schedule_config_default(), then change fields.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct libra_schedule_config {
    /// sizeof(libra_schedule_config), set by the caller before libra_schedule_config_default().
    pub struct_size: usize,
    pub policy: libra_schedule_policy_raw,
    /// Number of chunks (default 64; fewer when the collective has fewer elements).
    pub chunks: usize,
    /// Bytes per element (default 4).
    pub elem_size: usize,
}

/// One schedule step. Set `struct_size = sizeof(libra_step)` before libra_schedule_step(); only
/// that many bytes are written.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct libra_step {
    pub struct_size: usize,
    pub chunk: usize,
    /// Position within the chunk's stages.
    pub stage: usize,
    /// Network dimension whose groups run this step.
    pub dim: usize,
    pub op: libra_step_op_raw,
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

// Compatible structs. Each one's first published layout (0.1.0) is the smallest `struct_size`
// accepted; a field appended later is read from a smaller struct as its default, and a smaller
// output struct gets only the fields it has. Every field is an integer, float or raw pointer
// (enumerations are `i32`), and each starts with `struct_size: usize`, as `Versioned` needs.

/// `sizeof(libra_optimize_result)` in 0.1.0, before `solver_iterations`.
pub const OPTIMIZE_RESULT_FIRST_SIZE: usize = std::mem::offset_of!(libra_optimize_result, solver_iterations);

// SAFETY: repr(C), `struct_size: usize` first, integer and float fields only.
unsafe impl Versioned for libra_dim_desc {
    const FIRST_SIZE: usize = std::mem::size_of::<Self>();
    /// What `libra_dim_desc_default` writes.
    fn defaults() -> Self {
        libra_dim_desc {
            struct_size: std::mem::size_of::<libra_dim_desc>(),
            kind: libra_dim_kind::LIBRA_DIM_RING as i32,
            size: 2,
            bandwidth: 1.0,
            latency: 0.0,
            link_cost: 0.0,
            switch_cost: 0.0,
            nic_cost: 0.0,
        }
    }
}

// SAFETY: repr(C), `struct_size: usize` first, integer, float and raw-pointer fields only.
unsafe impl Versioned for libra_optimize_config {
    const FIRST_SIZE: usize = std::mem::size_of::<Self>();
    /// What `libra_optimize_config_default` writes.
    fn defaults() -> Self {
        libra_optimize_config {
            struct_size: std::mem::size_of::<libra_optimize_config>(),
            objective: libra_objective::LIBRA_OBJECTIVE_TIME as i32,
            model: libra_time_model::LIBRA_MODEL_LIBRA as i32,
            total_bandwidth: 0.0,
            dollar_budget: 0.0,
            lower: std::ptr::null(),
            upper: std::ptr::null(),
            num_bounds: 0,
            constraints: std::ptr::null(),
            num_constraints: 0,
        }
    }
}

// SAFETY: repr(C), `struct_size: usize` first, integer and float fields only.
unsafe impl Versioned for libra_optimize_result {
    const FIRST_SIZE: usize = OPTIMIZE_RESULT_FIRST_SIZE;
    fn defaults() -> Self {
        libra_optimize_result {
            struct_size: std::mem::size_of::<Self>(),
            time_ns: 0.0,
            cost: 0.0,
            equal_split_time_ns: 0.0,
            proportional_split_time_ns: 0.0,
            speedup_vs_equal: 0.0,
            speedup_vs_proportional: 0.0,
            solver_iterations: 0,
        }
    }
}

// SAFETY: repr(C), `struct_size: usize` first, integer fields only.
unsafe impl Versioned for libra_schedule_config {
    const FIRST_SIZE: usize = std::mem::size_of::<Self>();
    /// What `libra_schedule_config_default` writes.
    fn defaults() -> Self {
        let d = libra::topo::schedule::ScheduleConfig::default();
        libra_schedule_config {
            struct_size: std::mem::size_of::<libra_schedule_config>(),
            policy: libra_schedule_policy::LIBRA_SCHEDULE_POLICY_THEMIS as i32,
            chunks: d.chunks,
            elem_size: d.elem_size,
        }
    }
}

// SAFETY: repr(C), `struct_size: usize` first, integer and float fields only.
unsafe impl Versioned for libra_step {
    const FIRST_SIZE: usize = std::mem::size_of::<Self>();
    fn defaults() -> Self {
        libra_step {
            struct_size: std::mem::size_of::<Self>(),
            chunk: 0,
            stage: 0,
            dim: 0,
            op: 0,
            group: 0,
            bytes: 0.0,
            chunk_offset: 0,
            chunk_count: 0,
            num_deps: 0,
            start_ns: 0.0,
            finish_ns: 0.0,
        }
    }
}

// The first published sizes on 64-bit targets, where they were released; a layout change that
// would move them fails to build.
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(<libra_dim_desc as Versioned>::FIRST_SIZE == 56);
    assert!(<libra_optimize_config as Versioned>::FIRST_SIZE == 72);
    assert!(<libra_optimize_result as Versioned>::FIRST_SIZE == 56);
    assert!(<libra_schedule_config as Versioned>::FIRST_SIZE == 32);
    assert!(<libra_step as Versioned>::FIRST_SIZE == 88);
};

/// Borrows a C string as UTF-8, or fails naming the argument.
///
/// # Safety
/// `ptr` is NULL or a NUL-terminated string that lives and does not change for `'a`.
pub(super) unsafe fn c_str<'a>(ptr: *const c_char, name: &str) -> Result<&'a str, Error> {
    if ptr.is_null() {
        return Err(null_arg(name));
    }
    // SAFETY: non-NULL, so a NUL-terminated string valid for `'a`, as this function requires.
    unsafe { CStr::from_ptr(ptr) }
        .to_str()
        .map_err(|_| Error::invalid(format!("`{name}` is not valid UTF-8")))
}

pub(super) fn dim_kind(k: libra_dim_kind_raw, name: &str) -> Result<DimKind, Error> {
    Ok(match libra_dim_kind::from_raw(k, name)? {
        libra_dim_kind::LIBRA_DIM_RING => DimKind::Ring,
        libra_dim_kind::LIBRA_DIM_FULLY_CONNECTED => DimKind::FullyConnected,
        libra_dim_kind::LIBRA_DIM_SWITCH => DimKind::Switch,
    })
}

pub(super) fn dim_kind_to_c(k: DimKind) -> libra_dim_kind {
    match k {
        DimKind::Ring => libra_dim_kind::LIBRA_DIM_RING,
        DimKind::FullyConnected => libra_dim_kind::LIBRA_DIM_FULLY_CONNECTED,
        DimKind::Switch => libra_dim_kind::LIBRA_DIM_SWITCH,
    }
}

pub(super) fn collective_kind(k: libra_collective_raw, name: &str) -> Result<Option<CollectiveKind>, Error> {
    use libra_collective as C;
    Ok(match C::from_raw(k, name)? {
        C::LIBRA_COLLECTIVE_NONE => None,
        C::LIBRA_COLLECTIVE_ALL_REDUCE => Some(CollectiveKind::AllReduce),
        C::LIBRA_COLLECTIVE_REDUCE_SCATTER => Some(CollectiveKind::ReduceScatter),
        C::LIBRA_COLLECTIVE_ALL_GATHER => Some(CollectiveKind::AllGather),
        C::LIBRA_COLLECTIVE_ALL_TO_ALL => Some(CollectiveKind::AllToAll),
    })
}

pub(super) fn overlap(o: libra_overlap_raw) -> Result<Overlap, Error> {
    Ok(match libra_overlap::from_raw(o, "overlap")? {
        libra_overlap::LIBRA_OVERLAP_NONE => Overlap::None,
        libra_overlap::LIBRA_OVERLAP_FULL => Overlap::Full,
    })
}

pub(super) fn time_model(m: libra_time_model_raw) -> Result<TimeModel, Error> {
    Ok(match libra_time_model::from_raw(m, "model")? {
        libra_time_model::LIBRA_MODEL_LIBRA => TimeModel::Libra,
        libra_time_model::LIBRA_MODEL_ALPHA_BETA => TimeModel::AlphaBeta(Vec::new()),
    })
}

pub(super) fn network_preset(p: libra_network_preset_raw) -> Result<NetworkPreset, Error> {
    Ok(match libra_network_preset::from_raw(p, "network_preset")? {
        libra_network_preset::LIBRA_NETWORK_PRESET_3D => NetworkPreset::ThreeD,
        libra_network_preset::LIBRA_NETWORK_PRESET_4D => NetworkPreset::FourD,
    })
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
