//! The FastLibra core: pool, dependency tree, cost model, policies and swapper. Deterministic:
//! time is an argument and no clock or thread is touched here; bytes move only through the
//! backend handed to each call.
pub mod adapters;
pub mod config;
pub mod core;
pub mod cost;
pub mod events;
pub mod eviction;
pub mod flight;
pub mod ids;
pub mod index;
pub mod keyhash;
pub mod layers;
pub mod matching;
pub mod mechanism;
pub mod plan;
pub mod policy;
pub mod pool;
pub mod request_ids;
pub mod requests;
pub mod retention;
mod reuse;
pub mod stats;
pub mod swapper;
#[cfg(test)]
mod test_blocks;
pub mod tree;
pub mod verify;
pub mod writethrough;

pub use adapters::AdapterInfo;
pub use config::CacheConfig;
pub use core::CacheCore;
pub use events::{Event, EventKind};
pub use flight::SwapOutBatch;
pub use layers::GroupReadiness;
pub use matching::MatchResult;
pub use mechanism::{NodeKind, NodeView, TierBlocks};
pub use policy::PolicyKind;
pub use requests::Readiness;
pub use retention::RetentionHint;
pub use stats::{KvNodeInfo, Stats};
pub use swapper::StepReport;
pub use tree::Residency;
