//! Replays every committed fuzz corpus input (fuzz/corpus/<target>/) through the same harness
//! code the fuzz targets run, plus a batch of seeded random inputs, so `cargo test` keeps the
//! fuzzers' findings fixed without nightly or cargo-fuzz.
use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no corpus in {}", dir.display());
    files.into_iter().map(|p| (p.clone(), std::fs::read(&p).unwrap())).collect()
}

fn replay(target: &str, harness: fn(&[u8])) {
    let inputs = corpus(target);
    for (path, data) in &inputs {
        // Name the input in the failure: a panic inside the harness says what broke.
        let r = std::panic::catch_unwind(|| harness(data));
        assert!(r.is_ok(), "{target}: {} fails", path.display());
    }
    println!("{target}: {} corpus inputs replayed", inputs.len());
}

/// Seeded random inputs: the cheap part of a fuzz run, on stable.
fn random_inputs(harness: fn(&[u8]), count: usize, max_len: usize) {
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..count {
        let len = (next() as usize) % max_len;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        let r = std::panic::catch_unwind(|| harness(&data));
        assert!(r.is_ok(), "random input {i} fails: {data:?}");
    }
}

#[test]
fn cache_ops_corpus() {
    replay("cache_ops", libra_testkit::fuzzing::cache_ops);
    random_inputs(libra_testkit::fuzzing::cache_ops, 200, 2048);
}

#[test]
fn parse_network_corpus() {
    replay("parse_network", libra_testkit::fuzzing::parse_network);
    random_inputs(libra_testkit::fuzzing::parse_network, 500, 256);
}

#[test]
fn parse_workload_corpus() {
    replay("parse_workload", libra_testkit::fuzzing::parse_workload);
    random_inputs(libra_testkit::fuzzing::parse_workload, 500, 256);
}
