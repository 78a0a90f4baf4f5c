//! C ABI of the topology half: networks, workloads, the bandwidth optimiser and collective
//! schedules. Enumerations are stored as `i32` (see `types::CEnum`), so an out-of-range value
//! from C is an error, never undefined behaviour.
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
// The cache's enumerations follow the same convention.
pub(crate) use types::c_enum;
