//! The example programs' command lines (serve_sim, bench_step, bench_tree, bench_copy, topo):
//! `--help` lists every option, malformed arguments end with a usage error (status 2, no
//! panic), and the options given reach the run.
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// target/<profile>, where cargo puts the examples it builds.
fn artifact_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_path_buf()
}

const EXAMPLES: [&str; 5] = ["serve_sim", "bench_step", "bench_tree", "bench_copy", "topo"];

/// Builds the examples once (same profile and target directory as this test) and runs `name`.
fn run(name: &str, args: &[&str]) -> Output {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let art = artifact_dir();
    BUILD.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.arg("build");
        for e in EXAMPLES {
            cmd.args(["--example", e]);
        }
        cmd.arg("--manifest-path")
            // The workspace's manifest: serve_sim is this crate's, the others the library's.
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/../../Cargo.toml"))
            .arg("--target-dir")
            .arg(art.parent().unwrap());
        if art.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    });
    let dir = std::env::temp_dir().join(format!("libra-example-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    Command::new(art.join("examples").join(name)).args(args).current_dir(dir).output().unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// `args` is refused the way clap refuses a command line: status 2 and `error:` on stderr.
fn assert_usage_error(name: &str, args: &[&str], says: &str) {
    let out = run(name, args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{name} {args:?}: {err}");
    assert!(err.starts_with("error:") && err.contains(says), "{name} {args:?}: {err}");
    assert!(!err.contains("panicked"), "{err}");
}

/// Every option of serve_sim, under its heading, as the README documents them.
const SERVE_SIM_OPTIONS: [(&str, &[&str]); 3] = [
    (
        "Workload:",
        &[
            "--scenario",
            "--trace",
            "--start",
            "--duration",
            "--drift",
            "--poisson",
            "--prompt-mean",
            "--output-mean",
            "--rate-mult",
            "--adapters",
            "--zipf",
            "--ranks",
            "--follow",
            "--followup-pick",
            "--think-mean",
            "--think",
            "--session-timeout",
            "--system-tokens",
            "--max-context",
            "--seed",
            "--seeds",
        ],
    ),
    (
        "Engine and hardware:",
        &[
            "--preset",
            "--tp",
            "--host-gb",
            "--mem-util",
            "--compute-eff",
            "--mem-eff",
            "--link-gbps",
            "--gpu-blocks",
            "--host-blocks",
            "--max-batch-tokens",
            "--max-seqs",
            "--layers-per-group",
            "--hints",
            "--whole-adapters",
        ],
    ),
    (
        "Policies and output:",
        &[
            "--policies",
            "--vllm-adapter-fraction",
            "--grid",
            "--json",
            "--plots",
            "--no-plots",
            "--jobs",
            "--quiet",
        ],
    ),
];

#[test]
fn serve_sim_help_lists_every_option_under_its_heading() {
    for flag in ["--help", "-h"] {
        let out = run("serve_sim", &[flag]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let help = text(&out.stdout);
        assert!(help.contains("Usage: cargo run --release --example serve_sim -- [OPTIONS]"), "{help}");
        let mut headings =
            SERVE_SIM_OPTIONS.iter().map(|(h, _)| help.find(h).unwrap_or_else(|| panic!("{h}")));
        let at: Vec<usize> = headings.by_ref().collect();
        assert!(at.windows(2).all(|w| w[0] < w[1]), "headings out of order:\n{help}");
        for (i, (_, opts)) in SERVE_SIM_OPTIONS.iter().enumerate() {
            let end = at.get(i + 1).copied().unwrap_or(help.len());
            for o in *opts {
                let listed =
                    help[at[i]..end].lines().any(|l| l.trim_start().split([' ', '\t']).next() == Some(o));
                assert!(listed, "{flag}: {o} not under {}:\n{help}", SERVE_SIM_OPTIONS[i].0);
            }
        }
        assert!(help.contains("[default: 300]") && help.contains("[default: sim_out]"), "{help}");
        assert!(help.contains("memory-constrained") && help.contains("elora-authors"), "{help}");
    }
}

#[test]
fn serve_sim_refuses_malformed_command_lines_with_status_2() {
    assert_usage_error("serve_sim", &["--no-such-flag"], "--no-such-flag");
    assert_usage_error("serve_sim", &["--seed", "x"], "--seed");
    assert_usage_error("serve_sim", &["--seeds", "0"], "--seeds");
    assert_usage_error("serve_sim", &["--duration"], "--duration");
    assert_usage_error("serve_sim", &["--scenario", "chatbot,nope"], "nope");
    assert_usage_error("serve_sim", &["--policies", "lru,fifo"], "fifo");
    assert_usage_error("serve_sim", &["--followup-pick", "random"], "random");
    assert_usage_error("serve_sim", &["--preset", "llama9"], "llama9");
    assert_usage_error("serve_sim", &["--trace", "t.csv", "--poisson", "2"], "cannot be used with");
}

/// A short run: the scenario supplies what is not given (memory-constrained's L40S), given
/// options reach the run, and a later occurrence of an option replaces an earlier one.
#[test]
fn serve_sim_options_reach_the_run() {
    let base = ["--policies", "lru,libra", "--grid", "0", "--duration", "5", "--quiet", "--no-plots"];
    fn with<'a>(base: &[&'a str], extra: &[&'a str]) -> Vec<&'a str> {
        base.iter().chain(extra).copied().collect()
    }
    let out =
        run("serve_sim", &with(&base, &["--scenario", "memory-constrained", "--seed", "2", "--seed", "3"]));
    let so = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(so.contains("l40s"), "the scenario's own hardware:\n{so}");
    assert!(so.contains("seed 3") && so.contains("lru ") && so.contains("libra "), "{so}");
    assert!(!so.contains("scenario chatbot"), "{so}");
    let out = run(
        "serve_sim",
        &with(&base, &["--scenario", "chatbot", "--preset", "llama3-8b-h200", "--ranks", "16"]),
    );
    let so = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(so.contains("h200") && so.contains("ranks [16]"), "{so}");
}

/// With several workload samples, every figure pools them and the closing report shows each
/// sample's ratios at the highest load.
#[test]
fn serve_sim_pools_workload_samples() {
    let args = [
        "--scenario",
        "translation",
        "--policies",
        "libra,elora,oracle",
        "--grid",
        "2",
        "--seeds",
        "2",
        "--duration",
        "20",
        "--quiet",
        "--no-plots",
    ];
    let out = run("serve_sim", &args);
    let so = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(so.contains("every run below is 2 workload samples (seeds 1-2"), "{so}");
    assert!(so.contains("libra vs oracle at the highest load, per workload sample: "), "{so}");
    let table = so.split("on each workload sample (seeds 1-2").nth(1).unwrap_or_else(|| panic!("{so}"));
    let row = table.lines().find(|l| l.starts_with("translation")).unwrap_or_else(|| panic!("{so}"));
    assert!(row.contains("ahead in ") && row.contains("/2)"), "{row}");
}

#[test]
fn other_examples_have_generated_help_and_usage_errors() {
    let cases: [(&str, &[&str], &str); 4] = [
        ("bench_step", &["--reps"], "--reps x"),
        ("bench_tree", &["--nodes", "--policy"], "--policy fifo"),
        ("bench_copy", &["--json", "--max-blocks", "--reps", "--precompile"], "--max-blocks x"),
        ("topo", &["--json"], "--json"),
    ];
    for (name, opts, bad) in cases {
        let out = run(name, &["--help"]);
        let help = text(&out.stdout);
        assert!(out.status.success() && help.contains(&format!("Usage: {name}")), "{name}: {help}");
        for o in opts {
            assert!(help.contains(&format!("{o} <")), "{name}: {o} not in\n{help}");
        }
        let bad: Vec<&str> = bad.split(' ').collect();
        assert_usage_error(name, &bad, bad[0]);
        assert_usage_error(name, &["--no-such-flag"], "--no-such-flag");
    }
}

#[test]
fn bench_tree_runs_the_sizes_and_policy_given() {
    let out = run("bench_tree", &["--nodes", "600", "--policy", "elora"]);
    let so = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(so.matches("nodes in tree:").count(), 1, "{so}");
    assert!(so.contains("policy elora"), "{so}");
}
