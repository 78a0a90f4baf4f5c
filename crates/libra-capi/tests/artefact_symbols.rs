//! What ships holds only the product: no symbol of liblibra.a or liblibra.so comes from the
//! simulator, the fuzz harnesses or the fault-injecting backend (or its clairvoyant oracle),
//! which live in development crates that the artefacts never link.
use std::path::Path;
use std::process::Command;

mod process_common;
use process_common::*;

/// Demangled names that would mean development code was linked in.
const FORBIDDEN: &[&str] = &["libra_sim", "libra_testkit", "faulty", "Faulty", "fuzzing", "oracle", "Oracle"];

/// Every symbol `nm` lists for `lib` (defined or not), demangled.
fn symbols(lib: &Path, dynamic: bool) -> Vec<String> {
    let mut cmd = Command::new("nm");
    cmd.arg("--demangle");
    if dynamic {
        cmd.arg("--dynamic");
    }
    let text = run(cmd.arg(lib));
    text.lines().filter_map(|l| l.split_whitespace().last().map(str::to_string)).collect()
}

fn offending(symbols: &[String]) -> Vec<&String> {
    symbols.iter().filter(|s| FORBIDDEN.iter().any(|f| s.contains(f))).collect()
}

#[test]
fn the_artefacts_hold_no_development_code() {
    if !have("nm") {
        panic!("nm (binutils) is needed to read the artefacts' symbols");
    }
    build_libraries();
    let art = artifact_dir();
    for (file, dynamic) in [("liblibra.a", false), ("liblibra.so", false), ("liblibra.so", true)] {
        let syms = symbols(&art.join(file), dynamic);
        // The scan reads real symbols: the C entry points are there, and (in the full symbol
        // tables) the Rust library's own code.
        assert!(
            syms.iter().any(|s| s == "libra_cache_create"),
            "{file}: no libra_cache_create among {} symbols",
            syms.len()
        );
        if !dynamic {
            assert!(syms.iter().any(|s| s.contains("libra::cache::")), "{file}: no libra::cache:: symbol");
        }
        let bad = offending(&syms);
        assert!(
            bad.is_empty(),
            "{file} ({}) holds development code: {bad:?}",
            if dynamic { "dynamic" } else { "full" }
        );
    }
}

/// The filter catches the names the development crates' code gets.
#[test]
fn the_filter_catches_development_symbols() {
    let syms: Vec<String> = [
        "libra_sim::engine::run",
        "<libra_testkit::faulty::FaultyBackend as libra::backend::Backend>::submit",
        "libra_testkit::fuzzing::cache_ops",
        "libra::cache::core::CacheCore::step",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    assert_eq!(offending(&syms).len(), 3);
}
