//! libra: a multi-LoRA KV/adapter cache (FastLibra / ELORA) and topology-aware collectives
//! (LIBRA, Themis), usable from Rust and, through `libra-capi` (liblibra and `libra.h`), from C and C++.
//!
//! ```
//! use libra::{Cache, CacheConfig, CacheOptions};
//!
//! let config = CacheConfig { block_tokens: 4, ..Default::default() };
//! let cache = Cache::new(CacheOptions { config, block_bytes: 64, gpu_blocks: 32, host_blocks: 32, ..Default::default() })?;
//! cache.register_adapter(7, &[0u8; 100], 8, 0)?;
//! let prompt: Vec<u32> = (0..10).collect();
//! let first = cache.match_prefix(7, 0, &prompt, 1)?;
//! cache.allocate(first.request, prompt.len() - first.cached_tokens, 1)?;
//! cache.commit(first.request, &prompt[..8], 2)?; // the two full blocks
//! cache.release(first.request, 3)?;
//! let again = cache.match_prefix(7, 0, &prompt, 4)?;
//! assert_eq!(again.cached_tokens, 8);
//! cache.release(again.request, 5)?;
//! # Ok::<(), libra::Error>(())
//! ```
pub mod backend;
pub mod cache;
pub mod error;
pub mod handle;
pub mod topo;

pub use cache::{CacheConfig, MatchResult, PolicyKind, Readiness, Stats, StepReport};
pub use error::{Error, Result, Status};
pub use handle::{BackendChoice, Cache, CacheOptions};
