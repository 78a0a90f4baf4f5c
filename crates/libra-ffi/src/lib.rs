//! The C ABI. Nothing here decides anything: it checks arguments, converts types, catches
//! panics and maps errors to status codes. One file per area.
#![allow(non_camel_case_types)]
// Every entry point that takes a pointer is an `unsafe extern "C" fn`, and its pointer contract
// is written for C callers, as a "Pointers:" paragraph of its header comment, rather than under
// a Rust `# Safety` heading (which the header must not carry).
#![allow(clippy::missing_safety_doc)]
pub mod boundary;
pub mod cache;
pub mod common;
pub mod status;
pub mod topo;

pub use status::libra_status;
