//! libra: a multi-LoRA KV/adapter cache (FastLibra / ELORA) and topology-aware collectives
//! (LIBRA, Themis), usable from Rust and, through `include/libra.h`, from C and C++.
pub mod backend;
pub mod error;
pub mod ffi;
pub mod topo;

pub use error::{Error, Result, Status};
