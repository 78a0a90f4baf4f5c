//! Topology-aware collectives: LIBRA's bandwidth optimiser and Themis's collective scheduler.
//! Pure and deterministic: no clocks, threads or I/O (parsers take `&str`).
pub mod astra;
pub mod exec;
mod fields;
pub mod grid;
pub mod model;
pub mod network;
pub mod optimize;
pub mod parse;
pub mod presets;
pub mod schedule;
pub mod themis_opt;
pub mod workload;
pub mod yaml;

pub use model::{Algorithm, TimeModel};
pub use network::{CostParams, DimKind, Dimension, Network};
pub use optimize::{optimize, Allocation, Cmp, LinearConstraint, Objective, OptimizeSpec};
pub use schedule::{Policy, Schedule, ScheduleConfig, Step, StepOp};
pub use workload::{Collective, CollectiveKind, Overlap, Phase, Workload};
