//! libra inside llama.cpp: builds the engine in examples/llamacpp against an installed libra
//! (scripts/install.sh, pkg-config) and the llama.cpp of llama-cpp-python==0.3.36, generates a
//! small random-weight model and three LoRA adapters with gguf==0.19.0, and runs the engine's
//! check mode: every turn of every conversation, under every policy, in a tight and a roomy
//! pool, on the asynchronous CPU backend, must give next-token logits bit for bit equal to a
//! from-scratch prefill (and equal greedy answers), with the negative control, the restored
//! bytes, `libra_cache_check`, tenant isolation and logical-clock reproducibility checked.
//! Skips with the reason when a requirement is missing, except under CI=true, where it fails.
use std::path::PathBuf;
use std::process::Command;

mod process_common;
use process_common::*;

const LLAMA_CPP_PYTHON: &str = "0.3.36";
const GGUF: &str = "0.19.0";

fn works(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Where the llama-cpp-python wheel put libllama.so and llama.h, or why it cannot be used.
fn llama_dirs() -> Result<(PathBuf, PathBuf), String> {
    let out = works(Command::new("python3").arg(manifest_dir().join("examples/llamacpp/find_llama.py")))
        .ok_or_else(|| {
            format!("llama-cpp-python=={LLAMA_CPP_PYTHON} is not installed (.ci/run installs it)")
        })?;
    let mut lines = out.lines();
    let version = lines.next().unwrap_or("").trim().to_string();
    let lib = PathBuf::from(lines.next().unwrap_or("").trim());
    let include = PathBuf::from(lines.next().unwrap_or("").trim());
    if version.is_empty() {
        return Err(format!("llama-cpp-python=={LLAMA_CPP_PYTHON} is not installed (.ci/run installs it)"));
    }
    if version != LLAMA_CPP_PYTHON {
        return Err(format!(
            "llama-cpp-python {version} is installed, but the engine reads the state format of {LLAMA_CPP_PYTHON}"
        ));
    }
    if !lib.join("libllama.so").exists() || !include.join("llama.h").exists() {
        return Err(format!("no libllama.so in {} or no llama.h in {}", lib.display(), include.display()));
    }
    Ok((lib, include))
}

fn requirements() -> Result<(PathBuf, PathBuf), String> {
    for tool in ["g++", "make", "pkg-config"] {
        if works(Command::new(tool).arg("--version")).is_none() {
            return Err(format!("{tool} is not installed"));
        }
    }
    let gguf =
        works(Command::new("python3").args([
            "-c",
            "import importlib.metadata, numpy, gguf; print(importlib.metadata.version('gguf'))",
        ]));
    match gguf.as_deref().map(str::trim) {
        Some(GGUF) => {}
        Some(v) => return Err(format!("gguf {v} is installed, the model generator is pinned to {GGUF}")),
        None => {
            return Err(format!(
                "python3 with gguf=={GGUF} and numpy is not available (.ci/run installs them)"
            ))
        }
    }
    llama_dirs()
}

#[test]
fn llama_cpp_engine_restores_kv_bit_for_bit() {
    let (llama_lib, llama_include) = match requirements() {
        Ok(d) => d,
        Err(reason) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("the llama.cpp engine test must run under CI, but: {reason}")
        }
        Err(reason) => {
            println!("skipped: {reason}");
            return;
        }
    };
    let art = artifact_dir();
    let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("llamacpp");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).unwrap();

    // libra the one supported way for programs: installed into a prefix (soname links made).
    build_libraries();
    let prefix = tmp.join("prefix");
    run(Command::new("bash")
        .arg(workspace_root().join("scripts/install.sh"))
        .arg(&prefix)
        .arg("--from")
        .arg(&art));

    let model = tmp.join("model");
    run(Command::new("python3")
        .arg(manifest_dir().join("examples/llamacpp/gen_model.py"))
        .arg("--out")
        .arg(&model)
        .args(["--seed", "7", "--layers", "4", "--width", "256"]));

    run(Command::new("make")
        .arg("-C")
        .arg(manifest_dir().join("examples/llamacpp"))
        .arg(format!("OUT={}", tmp.display()))
        .arg(format!("LLAMA_LIB={}", llama_lib.display()))
        .arg(format!("LLAMA_INCLUDE={}", llama_include.display()))
        .env("PKG_CONFIG_PATH", prefix.join("lib/pkgconfig")));

    let out =
        Command::new(tmp.join("llamacpp_engine")).arg("check").arg(&model).output().expect("run the engine");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary: Vec<&str> = stdout.lines().filter(|l| !l.contains(" turn ")).collect();
    println!("{}", summary.join("\n"));
    assert!(
        out.status.success(),
        "engine check failed ({})\n{stdout}\n--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains(" passed, 0 failed"), "{stdout}");
}
