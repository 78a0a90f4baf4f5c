//! C ABI of the topology half: networks, workloads, the bandwidth optimiser and collective
//! schedules. Enumerations cross as `int32_t` typedefs with named constants, so an out-of-range
//! value from C is an error, never undefined behaviour.
#![allow(non_camel_case_types)]
mod network;
mod optimize;
mod schedule;
mod types;
mod workload;

pub use network::*;
pub use optimize::*;
pub use schedule::*;
pub use types::*;
pub use workload::*;
