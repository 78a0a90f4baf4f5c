//! Test machinery for libra, never linked into what ships: a backend that injects the faults a
//! real copy engine can produce, the harnesses the fuzz targets and the corpus replay share, and
//! the fixtures the tests agree on.
pub mod c_config;
pub mod faulty;
pub mod fixtures;
mod fuzz_input;
pub mod fuzzing;
mod fuzzing_topo;
pub mod requests;
