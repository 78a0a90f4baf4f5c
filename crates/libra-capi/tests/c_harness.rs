//! Builds the C test programs in ffi_tests/ with gcc against the static and the shared library,
//! runs them, and checks that the committed header is what cbindgen generates.
use std::path::{Path, PathBuf};
use std::process::Command;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// target/<profile>, where cargo puts liblibra.a and liblibra.so.
fn artifact_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent().and_then(Path::parent).expect("target/<profile>").to_path_buf()
}

fn c_compiler() -> PathBuf {
    let tool = cc::Build::new()
        .target("x86_64-unknown-linux-gnu")
        .host("x86_64-unknown-linux-gnu")
        .opt_level(0)
        .cargo_metadata(false)
        .get_compiler();
    tool.path().to_path_buf()
}

fn run(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("could not run {cmd:?}: {e}"));
    if !out.status.success() {
        panic!(
            "{cmd:?} failed with {}\n--- stdout\n{}\n--- stderr\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

fn c_sources() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(manifest_dir().join("ffi_tests"))
        .expect("ffi_tests/")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "c"))
        .collect();
    v.sort();
    v
}

/// `cargo test` builds only what Rust tests link, and no Rust test links this crate's library;
/// the C programs need the static and shared libraries, so build them (same profile and target
/// directory) once.
fn ensure_c_libraries(art: &Path) {
    static BUILD: std::sync::Once = std::sync::Once::new();
    BUILD.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let target_dir = art.parent().expect("target dir");
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--lib", "--manifest-path"])
            .arg(manifest_dir().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(target_dir);
        if art.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        run(&mut cmd);
        // Programs linked against the library look for its soname at run time, as they would
        // in an installed prefix.
        let link = art.join(soname());
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("liblibra.so", &link).expect("soname symlink");
    });
}

/// liblibra.so.<major>, or liblibra.so.0.<minor> before 1.0 (see build.rs).
fn soname() -> String {
    match env!("CARGO_PKG_VERSION_MAJOR") {
        "0" => format!("liblibra.so.0.{}", env!("CARGO_PKG_VERSION_MINOR")),
        major => format!("liblibra.so.{major}"),
    }
}

const WARNINGS: &[&str] = &["-std=c11", "-Wall", "-Wextra", "-Werror", "-pedantic", "-g"];

fn build_and_run(linkage: &str) {
    let art = artifact_dir();
    let staticlib = art.join("liblibra.a");
    let shared = art.join("liblibra.so");
    ensure_c_libraries(&art);
    assert!(staticlib.exists() && shared.exists(), "libraries missing in {}", art.display());
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("ffi_{linkage}"));
    std::fs::create_dir_all(&out_dir).unwrap();
    let sources = c_sources();
    assert!(!sources.is_empty(), "no C tests in ffi_tests/");
    for src in sources {
        let name = src.file_stem().unwrap().to_string_lossy().to_string();
        let exe = out_dir.join(&name);
        let mut cmd = Command::new(c_compiler());
        cmd.args(WARNINGS).arg("-I").arg(manifest_dir().join("include")).arg(&src).arg("-o").arg(&exe);
        if linkage == "static" {
            cmd.arg(&staticlib).args(["-lpthread", "-ldl", "-lm"]);
        } else {
            cmd.arg(format!("-L{}", art.display()))
                .arg("-llibra")
                .arg(format!("-Wl,-rpath,{}", art.display()))
                .args(["-lpthread"]);
        }
        run(&mut cmd);
        let out = run(Command::new(&exe).current_dir(manifest_dir()));
        print!("{name} ({linkage}): {}", String::from_utf8_lossy(&out.stdout));
    }
}

/// Whether the C compiler builds, and the machine runs, an empty program with `flag`: a
/// compiler without the sanitizer's runtime cannot, and on some kernels a runtime cannot shadow
/// the memory map and dies at start-up.
fn sanitizer_runs(out_dir: &std::path::Path, flag: &str) -> bool {
    let probe = out_dir.join("probe");
    let probe_src = out_dir.join("probe.c");
    std::fs::write(&probe_src, "int main(void) { return 0; }\n").unwrap();
    let builds = Command::new(c_compiler())
        .arg(flag)
        .arg(&probe_src)
        .arg("-o")
        .arg(&probe)
        .output()
        .is_ok_and(|o| o.status.success());
    builds && Command::new(&probe).output().is_ok_and(|o| o.status.success())
}

/// The libraries built and an output folder `name` for programs built with `flag`, or `None`
/// (after printing why the test skips) when the C compiler cannot build and run such a program.
fn sanitizer_setup(name: &str, flag: &str) -> Option<(PathBuf, PathBuf)> {
    let art = artifact_dir();
    ensure_c_libraries(&art);
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(name);
    std::fs::create_dir_all(&out_dir).unwrap();
    if !sanitizer_runs(&out_dir, flag) {
        println!("skipped: the C compiler cannot build and run a {flag} program here");
        return None;
    }
    Some((art, out_dir))
}

/// Builds every C test with AddressSanitizer and UndefinedBehaviorSanitizer against the static
/// library and runs it with leak detection: any leak, bad access or undefined behaviour in the
/// C programs or at the boundary fails the test.
#[test]
fn c_harness_sanitizers() {
    let Some((art, out_dir)) = sanitizer_setup("ffi_asan", "-fsanitize=address,undefined") else {
        return;
    };
    for src in c_sources() {
        let name = src.file_stem().unwrap().to_string_lossy().to_string();
        let exe = out_dir.join(&name);
        run(Command::new(c_compiler())
            .args(WARNINGS)
            .args(["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"])
            .arg("-I")
            .arg(manifest_dir().join("include"))
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .arg(art.join("liblibra.a"))
            .args(["-lpthread", "-ldl", "-lm"]));
        let out = run(Command::new(&exe)
            .current_dir(manifest_dir())
            .env("ASAN_OPTIONS", "detect_leaks=1:abort_on_error=0:halt_on_error=1:exitcode=23")
            .env("UBSAN_OPTIONS", "halt_on_error=1:print_stacktrace=1"));
        print!("{name} (asan+ubsan): {}", String::from_utf8_lossy(&out.stdout));
    }
}

/// Builds the C tests that share a cache between threads with ThreadSanitizer and runs them:
/// a data race in the C programs or on memory they share with the library fails the test.
/// (The library itself is not instrumented here; `tests/stress_threads.rs` covers its side.)
#[test]
fn c_harness_thread_sanitizer() {
    let Some((art, out_dir)) = sanitizer_setup("ffi_tsan", "-fsanitize=thread") else {
        return;
    };
    let threaded: Vec<PathBuf> = c_sources()
        .into_iter()
        .filter(|src| std::fs::read_to_string(src).is_ok_and(|text| text.contains("pthread_create")))
        .collect();
    assert!(!threaded.is_empty(), "no threaded C test in ffi_tests/");
    // The library's own locks are futexes, which this runtime cannot see, so its uninstrumented
    // copies inside the library would be reported as races: only the C side is judged here.
    let suppressions = out_dir.join("tsan.supp");
    std::fs::write(&suppressions, "called_from_lib:liblibra.so\n").unwrap();
    for src in threaded {
        let name = src.file_stem().unwrap().to_string_lossy().to_string();
        let exe = out_dir.join(&name);
        run(Command::new(c_compiler())
            .args(WARNINGS)
            .args(["-fsanitize=thread", "-fno-omit-frame-pointer"])
            .arg("-I")
            .arg(manifest_dir().join("include"))
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .arg(format!("-L{}", art.display()))
            .arg("-llibra")
            .arg(format!("-Wl,-rpath,{}", art.display()))
            .arg("-lpthread"));
        let out = run(Command::new(&exe).current_dir(manifest_dir()).env(
            "TSAN_OPTIONS",
            format!("halt_on_error=1:exitcode=66:suppressions={}", suppressions.display()),
        ));
        print!("{name} (tsan): {}", String::from_utf8_lossy(&out.stdout));
    }
}

/// Runs every C test, linked against the shared library, under valgrind memcheck with full
/// leak checking; skips with a reason when valgrind is not installed.
#[test]
fn c_harness_valgrind() {
    let has_valgrind = Command::new("valgrind").arg("--version").output().is_ok_and(|o| o.status.success());
    if !has_valgrind {
        println!("skipped: valgrind is not installed (.ci/run installs it)");
        return;
    }
    let art = artifact_dir();
    ensure_c_libraries(&art);
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ffi_valgrind");
    std::fs::create_dir_all(&out_dir).unwrap();
    for src in c_sources() {
        let name = src.file_stem().unwrap().to_string_lossy().to_string();
        let exe = out_dir.join(&name);
        run(Command::new(c_compiler())
            .args(WARNINGS)
            .arg("-I")
            .arg(manifest_dir().join("include"))
            .arg(&src)
            .arg("-o")
            .arg(&exe)
            .arg(format!("-L{}", art.display()))
            .arg("-llibra")
            .arg(format!("-Wl,-rpath,{}", art.display()))
            .arg("-lpthread"));
        let out = run(Command::new("valgrind")
            .args(["--error-exitcode=1", "--leak-check=full", "--show-leak-kinds=definite,indirect,possible"])
            .args(["--errors-for-leak-kinds=definite,indirect,possible", "--quiet"])
            .arg(&exe)
            .current_dir(manifest_dir()));
        print!("{name} (valgrind): {}", String::from_utf8_lossy(&out.stdout));
    }
}

#[test]
fn c_harness_static() {
    build_and_run("static");
}

#[test]
fn c_harness_shared() {
    build_and_run("shared");
}

#[test]
fn header_compiles_as_cpp17() {
    let gxx = c_compiler().with_file_name("g++");
    let gxx = if gxx.exists() { gxx } else { PathBuf::from("g++") };
    run(Command::new(gxx)
        .args(["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic", "-fsyntax-only", "-x", "c++"])
        .arg(manifest_dir().join("include/libra.h")));
}

#[test]
fn header_declares_only_prefixed_names() {
    // A public Rust constant or type outside the C ABI leaks into the header unless marked
    // `cbindgen:ignore`; a C user would then get unprefixed names that can clash with theirs.
    let header = std::fs::read_to_string(manifest_dir().join("include/libra.h")).expect("include/libra.h");
    let ident = |s: &str| {
        s.trim_start_matches('*').chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect::<String>()
    };
    let mut bad = Vec::new();
    for line in header.lines() {
        let name = if let Some(rest) = line.strip_prefix("#define ") {
            ident(rest)
        } else if line.starts_with("typedef ") && line.ends_with(';') {
            ident(line.trim_end_matches(';').rsplit(' ').next().unwrap_or(""))
        } else if let Some(rest) = line.strip_prefix("typedef struct ").or(line.strip_prefix("typedef enum "))
        {
            ident(rest)
        } else {
            continue;
        };
        if !(name.starts_with("libra_") || name.starts_with("LIBRA_")) {
            bad.push(line.to_string());
        }
    }
    assert!(bad.is_empty(), "unprefixed names in include/libra.h:\n{}", bad.join("\n"));
}

#[test]
fn committed_header_is_fresh() {
    let generated = std::fs::read_to_string(Path::new(env!("OUT_DIR")).join("libra.h"))
        .expect("build.rs generated the header");
    let committed = std::fs::read_to_string(manifest_dir().join("include/libra.h")).expect("include/libra.h");
    assert!(
        generated == committed,
        "include/libra.h is stale: run `LIBRA_UPDATE_HEADER=1 cargo build` and commit it"
    );
}

fn cxx_compiler() -> PathBuf {
    let gxx = c_compiler().with_file_name("g++");
    if gxx.exists() {
        gxx
    } else {
        PathBuf::from("g++")
    }
}

const CXX_WARNINGS: &[&str] = &["-std=c++17", "-Wall", "-Wextra", "-Werror", "-pedantic"];

/// Every `LIBRA_*` constant of the header: enumerators and `#define`s, less the include guard
/// and the version macros.
fn header_constants(header: &str) -> Vec<String> {
    let ident =
        |s: &str| s.chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect::<String>();
    let mut names = Vec::new();
    for line in header.lines() {
        let name = if let Some(rest) = line.strip_prefix("#define ") {
            ident(rest)
        } else if line.starts_with("  LIBRA_") && line.contains(" = ") {
            ident(line.trim_start())
        } else {
            continue;
        };
        if name != "LIBRA_H" && !name.starts_with("LIBRA_VERSION_") {
            names.push(name);
        }
    }
    names
}

/// ffi_tests/header_constants.cpp assigns every constant to the field, parameter or variable
/// it belongs to and runs the calls, built as C++17 with -Werror, so a constant declared with
/// another field's type fails to build; and every constant of the header must appear there.
#[test]
fn header_constants_belong_to_their_fields_cpp17() {
    let header = std::fs::read_to_string(manifest_dir().join("include/libra.h")).expect("include/libra.h");
    let src = manifest_dir().join("ffi_tests/header_constants.cpp");
    let text = std::fs::read_to_string(&src).expect("ffi_tests/header_constants.cpp");
    let constants = header_constants(&header);
    assert!(constants.len() > 40, "found only {} constants in the header", constants.len());
    let missing: Vec<&String> = constants.iter().filter(|c| !text.contains(c.as_str())).collect();
    assert!(
        missing.is_empty(),
        "constants of include/libra.h not assigned in {}: {missing:?}",
        src.display()
    );

    let art = artifact_dir();
    ensure_c_libraries(&art);
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ffi_cpp");
    std::fs::create_dir_all(&out_dir).unwrap();
    let exe = out_dir.join("header_constants");
    run(Command::new(cxx_compiler())
        .args(CXX_WARNINGS)
        .arg("-I")
        .arg(manifest_dir().join("include"))
        .arg(&src)
        .arg("-o")
        .arg(&exe)
        .arg(art.join("liblibra.a"))
        .args(["-lpthread", "-ldl", "-lm"]));
    let out = run(Command::new(&exe).current_dir(manifest_dir()));
    print!("{}", String::from_utf8_lossy(&out.stdout));
}

/// The check above can fail: a constant of one enumeration assigned to another's field or
/// parameter does not compile as C++17, while the same statement with the right constant does.
#[test]
fn header_rejects_a_constant_of_another_enumeration_cpp17() {
    let out_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("ffi_cpp_mismatch");
    std::fs::create_dir_all(&out_dir).unwrap();
    let cases = [
        (
            "libra_schedule_config c; c.policy = {}; (void)c;",
            "LIBRA_SCHEDULE_POLICY_THEMIS",
            "LIBRA_POLICY_LRU",
        ),
        ("libra_dim_desc d; d.kind = {}; (void)d;", "LIBRA_DIM_SWITCH", "LIBRA_CMP_EQ"),
        ("libra_linear_constraint l; l.cmp = {}; (void)l;", "LIBRA_CMP_GE", "LIBRA_DIM_RING"),
        (
            "libra_optimize_config o; o.model = {}; (void)o;",
            "LIBRA_MODEL_ALPHA_BETA",
            "LIBRA_OBJECTIVE_TIME_COST",
        ),
        ("libra_optimize_config o; o.objective = {}; (void)o;", "LIBRA_OBJECTIVE_TIME", "LIBRA_MODEL_LIBRA"),
        ("libra_step s; s.op = {}; (void)s;", "LIBRA_STEP_ALL_GATHER", "LIBRA_COLLECTIVE_ALL_GATHER"),
        (
            "libra_workload *w = nullptr; (void)libra_workload_new({}, &w);",
            "LIBRA_OVERLAP_FULL",
            "LIBRA_MODEL_LIBRA",
        ),
        (
            "libra_network *n = nullptr; (void)libra_network_preset_new({}, &n);",
            "LIBRA_NETWORK_PRESET_4D",
            "LIBRA_WORKLOAD_PRESET_GPT3",
        ),
        ("libra_cache_config c; c.policy = {}; (void)c;", "LIBRA_POLICY_LRU", "LIBRA_SCHEDULE_POLICY_THEMIS"),
        ("libra_cache_config c; c.backend = {}; (void)c;", "LIBRA_BACKEND_CUDA", "LIBRA_POLICY_VLLM"),
        ("libra_cache_config c; c.policy = {}; (void)c;", "LIBRA_POLICY_SLORA", "LIBRA_BACKEND_AUTO"),
        ("libra_event e; e.kind = {}; (void)e;", "LIBRA_EVENT_TO_HOST", "LIBRA_READY"),
        ("libra_event e; e.kind = {}; (void)e;", "LIBRA_EVENT_REMOVED", "LIBRA_DIM_RING"),
    ];
    for (i, (statement, right, wrong)) in cases.iter().enumerate() {
        for (constant, should_build) in [(right, true), (wrong, false)] {
            let src = out_dir.join(format!("case{i}_{should_build}.cpp"));
            let body = statement.replace("{}", constant);
            std::fs::write(&src, format!("#include \"libra.h\"\nint main() {{ {body} return 0; }}\n"))
                .unwrap();
            let out = Command::new(cxx_compiler())
                .args(CXX_WARNINGS)
                .arg("-fsyntax-only")
                .arg("-I")
                .arg(manifest_dir().join("include"))
                .arg(&src)
                .output()
                .expect("g++ runs");
            assert_eq!(
                out.status.success(),
                should_build,
                "`{body}` {} as C++17:\n{}",
                if should_build { "did not build" } else { "built" },
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

/// The header speaks to C callers: no Rust `# Safety` headings (pointer contracts are plain
/// sentences in each function's comment).
#[test]
fn header_has_no_rust_safety_headings() {
    let header = std::fs::read_to_string(manifest_dir().join("include/libra.h")).expect("include/libra.h");
    let found: Vec<&str> = header.lines().filter(|l| l.contains("# Safety")).collect();
    assert!(found.is_empty(), "Rust `# Safety` headings in include/libra.h: {found:?}");
}
