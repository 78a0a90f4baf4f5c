//! The C ABI. Nothing here decides anything: it checks arguments, converts types, catches
//! panics and maps errors to status codes. One file per area.
#![allow(non_camel_case_types)]
// Entry points are called from C, where `unsafe` means nothing; each documents its pointer
// contract in the header instead.
#![allow(clippy::not_unsafe_ptr_arg_deref)]
pub mod boundary;
pub mod cache;
pub mod common;
pub mod status;
pub mod topo;

pub use status::libra_status;
