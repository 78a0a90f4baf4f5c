//! Helpers of the tests that build and run other programs (the install and llama.cpp tests).
#![allow(dead_code)] // each test uses a different subset

use std::path::{Path, PathBuf};
use std::process::Command;

pub fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The workspace root (scripts/ lives there).
pub fn workspace_root() -> PathBuf {
    manifest_dir().join("../..")
}

/// Builds liblibra.a and liblibra.so (this crate's library) into the profile folder this
/// test runs from: `cargo test` builds only what tests link, and these are linked by C.
pub fn build_libraries() {
    let art = artifact_dir();
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--lib", "--manifest-path"]).arg(manifest_dir().join("Cargo.toml"));
    build.arg("--target-dir").arg(art.parent().unwrap());
    if art.file_name().is_some_and(|n| n == "release") {
        build.arg("--release");
    }
    run(&mut build);
}

/// The profile folder (target/debug or target/release) holding this test's binary.
pub fn artifact_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

/// Runs `cmd` and returns its stdout; fails the test with both outputs if it fails.
pub fn run(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Whether `tool --version` runs.
pub fn have(tool: &str) -> bool {
    Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success())
}
