//! The FastLibra core: pool, dependency tree, cost model, policies and swapper. Deterministic:
//! time is an argument and no clock or thread is touched here; bytes move only through the
//! backend handed to each call.
pub mod config;
pub mod core;
pub mod cost;
pub mod events;
pub mod index;
pub mod keyhash;
pub mod layers;
pub mod mechanism;
pub mod plan;
pub mod policy;
pub mod pool;
pub mod retention;
pub mod swapper;
#[cfg(test)]
mod test_blocks;
pub mod tree;
pub mod verify;
pub mod writethrough;

pub use config::CacheConfig;
pub use core::{AdapterInfo, CacheCore, KvNodeInfo, MatchResult, Readiness, Stats};
pub use events::{Event, EventKind};
pub use layers::GroupReadiness;
pub use mechanism::{NodeKind, NodeView, TierBlocks};
pub use policy::PolicyKind;
pub use retention::RetentionHint;
pub use swapper::StepReport;
pub use tree::Residency;
