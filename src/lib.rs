//! libra: a multi-LoRA KV/adapter cache (FastLibra / ELORA) and topology-aware collectives
//! (LIBRA, Themis), usable from Rust and, through `include/libra.h`, from C and C++.
pub mod backend;
pub mod cache;
pub mod error;
pub mod ffi;
/// Harnesses shared by the fuzz targets and the corpus replay test.
#[doc(hidden)]
pub mod fuzzing;
pub mod handle;
pub mod topo;

pub use cache::{CacheConfig, MatchResult, PolicyKind, Readiness, Stats, StepReport};
pub use error::{Error, Result, Status};
pub use handle::{BackendChoice, Cache, CacheOptions};
