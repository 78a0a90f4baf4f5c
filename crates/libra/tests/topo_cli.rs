//! The libra-topo command-line tool (examples/libra_topo.rs) on small files it writes and, when
//! present, on LIBRA's own inputs: its answers equal the library's.
use libra::topo::parse::{parse_communicator, parse_network, parse_workload};
use libra::topo::*;
use std::path::{Path, PathBuf};
use std::process::Command;

fn manifest_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Builds the example once (same profile and target directory as this test) and returns it.
fn tool() -> PathBuf {
    static BUILD: std::sync::Once = std::sync::Once::new();
    let exe = std::env::current_exe().unwrap();
    let art = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    BUILD.call_once(|| {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--example", "libra-topo", "--manifest-path"])
            .arg(manifest_dir().join("Cargo.toml"))
            .arg("--target-dir")
            .arg(art.parent().unwrap());
        if art.file_name().is_some_and(|n| n == "release") {
            cmd.arg("--release");
        }
        let out = cmd.output().unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    });
    art.join("examples/libra-topo")
}

fn run_owned(args: &[String]) -> (bool, String, String) {
    run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(tool()).args(args).output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The number after `"key": ` in the tool's JSON.
fn json_number(json: &str, key: &str) -> f64 {
    let at = json.find(&format!("\"{key}\": ")).unwrap_or_else(|| panic!("{key} in {json}")) + key.len() + 4;
    json[at..].split([',', '\n', '}']).next().unwrap().trim().parse().unwrap()
}

fn json_list(json: &str, key: &str) -> Vec<f64> {
    let at = json.find(&format!("\"{key}\": [")).unwrap() + key.len() + 5;
    json[at..json[at..].find(']').unwrap() + at].split(',').map(|v| v.trim().parse().unwrap()).collect()
}

fn scratch(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("libra-topo-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p.to_str().unwrap().to_string()
}

#[test]
fn optimize_and_schedule_on_small_files() {
    let net =
        scratch("net.yml", "Topology: [ Ring, Switch ]\nNpusCount: [ 4, 8 ]\nCostDimension: [ A, B ]\n");
    let cost = scratch("cost.yml", "A:\n  Link: 2\nB:\n  Link: 7.8\n  Switch: 18\n  Nic: 31.6\n");
    let wl = scratch(
        "wl.txt",
        "HYBRID_DATA_MODEL\n1\nl -1 1000 ALLREDUCE 1048576 1000 NONE 0 1000 ALLREDUCE 4194304 1\n",
    );
    let base = ["optimize", "--network", &net, "--cost", &cost, "--workload", &wl, "--budget", "150"];
    let with = |extra: &[&str]| -> Vec<String> { base.iter().chain(extra).map(|s| s.to_string()).collect() };
    let (ok, out, err) = run_owned(&with(&["--json"]));
    assert!(ok, "{err}");
    // The same problem through the library.
    let n = parse_network(
        &std::fs::read_to_string(&net).unwrap(),
        Some(&std::fs::read_to_string(&cost).unwrap()),
    )
    .unwrap();
    let w = libra::topo::astra::parse_astra_workload(&std::fs::read_to_string(&wl).unwrap()).unwrap();
    let w = libra::topo::astra::astra_iteration(&w, &n, None, Overlap::None).unwrap();
    let a = optimize(&n, &w, &OptimizeSpec::bandwidth_budget(150.0)).unwrap();
    assert_eq!(json_list(&out, "bandwidths_gbps"), a.bandwidths);
    assert_eq!(json_number(&out, "iteration_time_ns"), a.time);
    assert_eq!(json_number(&out, "cost_usd"), a.cost);
    let (ok, out, err) = run_owned(&with(&["--json", "--themis-aware"]));
    assert!(ok, "{err}");
    let t =
        libra::topo::themis_opt::optimize_for_themis(&n, &w, &OptimizeSpec::bandwidth_budget(150.0)).unwrap();
    assert_eq!(json_number(&out, "gain"), t.gain_over_libra_then_themis());
    assert!(json_number(&out, "gain") >= 1.0);
    // The table names every dimension; the export parses back to the optimum.
    let export = scratch("out.yml", "");
    let (ok, table, err) = run_owned(&with(&["--export-astra-sim", &export]));
    assert!(ok, "{err}");
    assert!(
        table.contains("ring") && table.contains("switch") && table.contains("speedup vs an equal split"),
        "{table}"
    );
    let back = parse_network(&std::fs::read_to_string(&export).unwrap(), None).unwrap();
    for (b, want) in back.bandwidths().iter().zip(&a.bandwidths) {
        assert!((b - want).abs() <= 1e-9 * want, "{b} vs {want}");
    }
    // Schedule: both policies and the gain.
    let (ok, out, err) =
        run(&["schedule", "--network", &net, "--bytes", "1048576", "--groups", "4,-1", "--json"]);
    assert!(ok, "{err}");
    assert!(out.contains("\"policy\": \"baseline\"") && out.contains("\"policy\": \"themis\""), "{out}");
    let (ok, out, _) = run(&["schedule", "--network", &net, "--bytes", "1048576"]);
    assert!(ok && out.contains("utilisation") && out.contains("themis vs baseline"), "{out}");
    // Errors name the problem and exit non-zero.
    let (ok, _, err) = run(&["optimize", "--network", &cost, "--workload", &wl]);
    assert!(!ok && err.contains("unknown key"), "{err}");
    let (ok, _, err) = run(&["schedule", "--network", &net, "--bytes", "10", "--elem-size", "4"]);
    assert!(!ok && err.contains("--elem-size"), "{err}");
    let (ok, _, err) = run(&[
        "optimize",
        "--network",
        &net,
        "--workload",
        &wl,
        "--objective",
        "perf-per-cost",
        "--dollars",
        "5",
    ]);
    assert!(!ok && err.contains("total_bandwidth"), "{err}");
}

#[test]
fn optimize_on_libras_inputs() {
    let root = manifest_dir().join("../../../shared/topology_inputs/libra");
    if !root.is_dir() {
        println!("skipped: {} is absent (public LIBRA inputs)", root.display());
        return;
    }
    let p = |s: &str| root.join(s).to_str().unwrap().to_string();
    let (net, cost, wl, comm) = (
        p("network/4d_network.yml"),
        p("cost_model/4d_cost_model.yml"),
        p("workload/MSFT_1T.txt"),
        p("communicator/MSFT_1T_4d.yml"),
    );
    let (ok, out, err) = run(&[
        "optimize",
        "--network",
        &net,
        "--cost",
        &cost,
        "--workload",
        &wl,
        "--communicator",
        &comm,
        "--budget",
        "500",
        "--json",
    ]);
    assert!(ok, "{err}");
    let read = |s: &str| std::fs::read_to_string(s).unwrap();
    let n = parse_network(&read(&net), Some(&read(&cost))).unwrap();
    parse_communicator(&read(&comm), 4).unwrap();
    let w = parse_workload(&read(&wl), &read(&comm), 4, Overlap::None).unwrap();
    let a = optimize(&n, &w, &OptimizeSpec::bandwidth_budget(500.0)).unwrap();
    assert_eq!(json_list(&out, "bandwidths_gbps"), a.bandwidths);
    assert!(json_number(&out, "speedup_vs_equal") >= 1.0);
}
