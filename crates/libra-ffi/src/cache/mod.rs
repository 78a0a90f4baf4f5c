//! C ABI of the cache: configuration, creation, adapters, the request lifecycle, retention
//! hints, stepping, stats and events, one file each. Thread safety: every function taking a
//! `libra_cache *` may be called concurrently from several threads on the same cache (an
//! internal lock serialises them), except `libra_cache_free`, which must not race with any
//! other call on that cache.
mod adapters;
mod config;
mod events;
mod lifecycle;
mod requests;
mod retention;
mod stats;
mod step;
mod types;

pub use adapters::*;
pub use config::*;
pub use events::*;
pub use lifecycle::*;
pub use requests::*;
pub use retention::*;
pub use stats::*;
pub use step::*;
pub use types::*;
