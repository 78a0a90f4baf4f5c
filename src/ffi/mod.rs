//! The C ABI. Nothing here decides anything: it checks arguments, converts types, catches
//! panics and maps errors to status codes. One file per area.
#![allow(non_camel_case_types)]
pub mod boundary;
pub mod cache;
pub mod common;
