//! Fuzz target: see `libra_testkit::fuzzing::cache_ops` (the corpus replay test runs the same code).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| libra_testkit::fuzzing::cache_ops(data));
