//! The C ABI. Nothing here decides anything: it checks arguments, converts types, catches
//! panics and maps errors to status codes. One file per area.
pub mod boundary;
pub mod common;
pub mod topo;
