//! Runs LIBRA's presets through the optimiser and Themis's scheduler and prints what they buy.
//!
//!     cargo run --release --example topo [-- --json FILE]
//!
//! For each preset network and workload: the optimal bandwidth split under the preset's total
//! bandwidth, its speedup over an equal split and over a traffic-proportional split, its gap to
//! a brute-force grid search, the solve time, and the perf-per-cost optimum (the bandwidths sum to
//! the budget). Then Themis for one all-reduce against the ascending dimension order and against
//! the best fixed order of each network, on the presets and on sweeps of realistic (bandwidth
//! non-increasing outward) and asymmetric networks, and for one all-to-all on the presets.
//! Solve times are measured in this run on this machine; collective times are the schedule
//! model's predictions.
use clap::Parser;
use libra::topo::optimize::{grid_search, CompiledWorkload};
use libra::topo::parse::{parse_network, parse_workload};
use libra::topo::presets::{asymmetric_sweep, is_realistic, realistic_sweep, NetworkPreset, WorkloadPreset};
use libra::topo::themis_opt::{all_orders, optimize_for_themis, themis_iteration_time};
use libra::topo::*;
use std::fmt::Write as _;
use std::time::Instant;

fn fmt_vec(v: &[f64]) -> String {
    let items: Vec<String> = v.iter().map(|x| format!("{x:.3}")).collect();
    format!("[{}]", items.join(", "))
}

fn median_solve_us(net: &Network, wl: &Workload, spec: &OptimizeSpec, runs: usize) -> f64 {
    let mut t: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            optimize(net, wl, spec).expect("preset solves");
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[runs / 2]
}

/// One collective of `count` elements over every NPU, 64 chunks: (baseline ns, themis ns,
/// share of the time the busiest dimension is busy under themis).
fn collective_times(net: &Network, kind: CollectiveKind, count: usize) -> (f64, f64, f64) {
    let base = ScheduleConfig { policy: Policy::Baseline, chunks: 64, elem_size: 2 };
    let themis = ScheduleConfig { policy: Policy::Themis, ..base.clone() };
    let b = Schedule::new(net, kind, count, None, &base).expect("schedules");
    let t = Schedule::new(net, kind, count, None, &themis).expect("schedules");
    (b.finish_time, t.finish_time, t.bottleneck_utilisation())
}

/// One all-reduce over every NPU, 64 chunks: (ascending order ns, best fixed order ns, themis ns).
fn all_reduce_times(net: &Network, count: usize) -> (f64, f64, f64) {
    let base = ScheduleConfig { policy: Policy::Baseline, chunks: 64, elem_size: 2 };
    let themis = ScheduleConfig { policy: Policy::Themis, ..base.clone() };
    let b = Schedule::new(net, CollectiveKind::AllReduce, count, None, &base).expect("schedules").finish_time;
    let t =
        Schedule::new(net, CollectiveKind::AllReduce, count, None, &themis).expect("schedules").finish_time;
    let dims: Vec<usize> = (0..net.num_dims()).collect();
    let best = all_orders(&dims)
        .iter()
        .map(|o| {
            Schedule::with_order(net, CollectiveKind::AllReduce, count, None, &base, o)
                .expect("schedules")
                .finish_time
        })
        .fold(f64::INFINITY, f64::min);
    (b, best, t)
}

/// avg, geomean, median, max, min.
fn stats(v: &[f64]) -> (f64, f64, f64, f64, f64) {
    let mut sorted = v.to_vec();
    sorted.sort_by(f64::total_cmp);
    let avg = v.iter().sum::<f64>() / v.len() as f64;
    let geo = (v.iter().map(|g| g.ln()).sum::<f64>() / v.len() as f64).exp();
    (avg, geo, sorted[sorted.len() / 2], sorted[sorted.len() - 1], sorted[0])
}

/// Themis against the ascending order and against the best fixed order of each network, on the
/// presets and separately on realistic (bandwidth non-increasing outward) and asymmetric sweeps.
fn themis_all_reduce_figures(json: &mut String) {
    let count = 32 << 20;
    println!(
        "\n== Themis, one 64 MiB all-reduce over every NPU, 64 chunks (predicted by the schedule model) =="
    );
    json.push_str("\n  ],\n  \"themis_presets\": [\n");
    for (i, np) in NetworkPreset::all().into_iter().enumerate() {
        let (b, best, t) = all_reduce_times(&np.network(), count);
        println!(
            "{:>2} preset bandwidths: ascending {:.1} us  best fixed order {:.1} us  themis {:.1} us  x{:.3} vs ascending  x{:.3} vs best fixed",
            np.name(),
            b / 1e3,
            best / 1e3,
            t / 1e3,
            b / t,
            best / t
        );
        let _ = write!(
            json,
            "{}    {{\"network\": \"{}\", \"ascending_ns\": {b}, \"best_fixed_ns\": {best}, \"themis_ns\": {t}}}",
            if i > 0 { ",\n" } else { "" },
            np.name()
        );
    }
    json.push_str("\n  ],\n  \"themis_sweeps\": [\n");
    let realistic = realistic_sweep();
    let asymmetric: Vec<Network> = asymmetric_sweep().into_iter().filter(|n| !is_realistic(n)).collect();
    for (i, (name, nets)) in [("realistic", &realistic), ("asymmetric", &asymmetric)].into_iter().enumerate()
    {
        let (mut vs_asc, mut vs_best) = (Vec::new(), Vec::new());
        for net in nets.iter() {
            let (b, best, t) = all_reduce_times(net, count);
            vs_asc.push(b / t);
            vs_best.push(best / t);
        }
        let a = stats(&vs_asc);
        let f = stats(&vs_best);
        println!(
            "{} {name} 2D-4D networks: themis vs ascending avg x{:.3} geomean x{:.3} median x{:.3} max x{:.3} min x{:.3}",
            nets.len(),
            a.0,
            a.1,
            a.2,
            a.3,
            a.4
        );
        println!(
            "{:>w$} themis vs best fixed order avg x{:.3} geomean x{:.3} median x{:.3} max x{:.3} min x{:.3}",
            "",
            f.0,
            f.1,
            f.2,
            f.3,
            f.4,
            w = format!("{} {name} 2D-4D networks:", nets.len()).len()
        );
        let _ = write!(
            json,
            "{}    {{\"kind\": \"{name}\", \"networks\": {}, \"vs_ascending\": {{\"avg\": {}, \"geomean\": {}, \"median\": {}, \"max\": {}, \"min\": {}}}, \"vs_best_fixed\": {{\"avg\": {}, \"geomean\": {}, \"median\": {}, \"max\": {}, \"min\": {}}}}}",
            if i > 0 { ",\n" } else { "" },
            nets.len(),
            a.0, a.1, a.2, a.3, a.4, f.0, f.1, f.2, f.3, f.4
        );
    }
    json.push_str("\n  ]");
}

/// Themis-aware bandwidths against LIBRA's run under Themis, on LIBRA's own inputs (when
/// ../shared/topology_inputs is there) with LIBRA's 500 GB/s total: the model's gain, its bound,
/// and the scheduler's (Themis, 64 chunks) time at both splits.
fn themis_aware_figures(json: &mut String) {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/topology_inputs/libra");
    println!("\n== Themis-aware bandwidths vs LIBRA's, both run under Themis (LIBRA's inputs, 500 GB/s) ==");
    json.push_str(",\n  \"themis_aware\": [");
    if !root.is_dir() {
        println!("skipped: {} is absent", root.display());
        json.push(']');
        return;
    }
    let read = |p: &str| std::fs::read_to_string(root.join(p)).expect("LIBRA input");
    let mut first = true;
    for dims in [3, 4] {
        let net = parse_network(&read(&format!("network/{dims}d_network.yml")), None).expect("parses");
        for model in ["GPT_3", "MSFT_1T", "Turing_NLG", "ResNet_50"] {
            // Upstream spells Turing-NLG's communicator files with a capital D.
            let suffix = if model == "Turing_NLG" { format!("{dims}D") } else { format!("{dims}d") };
            let comm = read(&format!("communicator/{model}_{suffix}.yml"));
            let wl = parse_workload(&read(&format!("workload/{model}.txt")), &comm, dims, Overlap::None)
                .expect("parses");
            let a = optimize_for_themis(&net, &wl, &OptimizeSpec::bandwidth_budget(500.0)).expect("solves");
            let libra = themis_iteration_time(&net, &wl, &a.libra_bandwidths, 64).expect("schedules");
            let ours = themis_iteration_time(&net, &wl, &a.bandwidths, 64).expect("schedules");
            let bound = a.libra_then_themis_time / a.lower_bound.expect("plain budget");
            println!(
                "{dims}d {model:<10} LIBRA {}  themis-aware {}  model x{:.4} (at most x{bound:.4})  scheduler x{:.4}",
                fmt_vec(&a.libra_bandwidths),
                fmt_vec(&a.bandwidths),
                a.gain_over_libra_then_themis(),
                libra / ours
            );
            let _ = write!(
                json,
                "{}\n    {{\"network\": \"{dims}d\", \"workload\": \"{model}\", \"model_gain\": {}, \"gain_bound\": {bound}, \"scheduler_gain\": {}}}",
                if first { "" } else { "," },
                a.gain_over_libra_then_themis(),
                libra / ours
            );
            first = false;
        }
    }
    json.push_str("\n  ]");
}

#[derive(Parser)]
#[command(name = "topo", about = "LIBRA's presets through the bandwidth optimiser and Themis's scheduler")]
struct Cli {
    /// Also write the results as JSON to FILE.
    #[arg(long, value_name = "FILE")]
    json: Option<String>,
}

fn main() {
    let json_path = Cli::parse().json;
    let mut json = String::from("{\n  \"optimizer\": [\n");
    let mut first = true;
    let mut worst_grid_gap: f64 = 0.0;

    println!("== LIBRA bandwidth optimiser (budget = the preset's total GB/s per NPU) ==");
    for np in NetworkPreset::all() {
        let net = np.network();
        let budget = np.budget();
        for wp in WorkloadPreset::all() {
            let wl = wp.workload(np);
            let spec = OptimizeSpec::bandwidth_budget(budget);
            let a = optimize(&net, &wl, &spec).expect("preset solves");
            let us = median_solve_us(&net, &wl, &spec, 21);
            let cw = CompiledWorkload::new(&wl, &net, &TimeModel::Libra).expect("valid");
            let steps = if net.num_dims() == 3 { 150 } else { 40 };
            let (_, grid) = grid_search(&cw, net.num_dims(), budget, steps, 24);
            let gap = (a.time - grid) / grid;
            worst_grid_gap = worst_grid_gap.max(gap.abs());
            // Perf-per-cost spends exactly the budget (LIBRA's equality constraint).
            let ppc_spec =
                OptimizeSpec { objective: Objective::TimeCost, ..OptimizeSpec::bandwidth_budget(budget) };
            let ppc = optimize(&net, &wl, &ppc_spec).expect("preset solves");
            println!(
                "{:>2} {:<10} split {}  time {:.3} ms  x{:.3} vs equal  x{:.3} vs traffic-proportional  grid gap {:+.4}%  solve {:.0} us",
                np.name(),
                wp.name(),
                fmt_vec(&a.bandwidths),
                a.time / 1e6,
                a.speedup_vs_equal(),
                a.speedup_vs_proportional(),
                gap * 100.0,
                us
            );
            println!(
                "   {:<10} perf-per-cost split {}  time {:.3} ms  cost ${:.3}M (time-optimal ${:.3}M)  time x cost {:.3} of time-optimal",
                "",
                fmt_vec(&ppc.bandwidths),
                ppc.time / 1e6,
                ppc.cost / 1e6,
                a.cost / 1e6,
                ppc.time * ppc.cost / (a.time * a.cost)
            );
            if !first {
                json.push_str(",\n");
            }
            first = false;
            let _ = write!(
                json,
                "    {{\"network\": \"{}\", \"workload\": \"{}\", \"bandwidths\": {}, \"time_ns\": {}, \"cost\": {}, \"speedup_vs_equal\": {}, \"speedup_vs_proportional\": {}, \"grid_gap\": {}, \"solve_us\": {}, \"ppc_bandwidths\": {}, \"ppc_time_ns\": {}, \"ppc_cost\": {}}}",
                np.name(),
                wp.name(),
                fmt_vec(&a.bandwidths),
                a.time,
                a.cost,
                a.speedup_vs_equal(),
                a.speedup_vs_proportional(),
                gap,
                us,
                fmt_vec(&ppc.bandwidths),
                ppc.time,
                ppc.cost
            );
        }
    }
    println!("worst |optimiser - grid| / grid: {:.4}%", worst_grid_gap * 100.0);

    themis_all_reduce_figures(&mut json);
    json.push_str(",\n  \"all_to_all_presets\": [\n");

    // All-to-all moves the same volume over each dimension in any order, so ordering can only
    // shorten the pipeline's fill: expect a gain near 1 and a busiest dimension never idle.
    println!("\n== Themis vs baseline, one all-to-all of 16 KiB to every peer, 64 chunks ==");
    for (i, np) in NetworkPreset::all().into_iter().enumerate() {
        let net = np.network();
        let ranks: usize = net.dims().iter().map(|d| d.size as usize).product();
        let (b, t, busy) = collective_times(&net, CollectiveKind::AllToAll, ranks * 8192);
        println!(
            "{:>2} preset bandwidths: baseline {:.1} us  themis {:.1} us  gain x{:.3}  busiest dimension busy {:.1}%",
            np.name(),
            b / 1e3,
            t / 1e3,
            b / t,
            busy * 100.0
        );
        let _ = write!(
            json,
            "{}    {{\"network\": \"{}\", \"baseline_ns\": {b}, \"themis_ns\": {t}, \"gain\": {}, \"bottleneck_busy\": {busy}}}",
            if i > 0 { ",\n" } else { "" },
            np.name(),
            b / t
        );
    }
    json.push_str("\n  ]");
    themis_aware_figures(&mut json);
    json.push_str("\n}\n");

    if let Some(path) = json_path {
        std::fs::write(&path, json).expect("write the JSON file");
        println!("\nwrote {path}");
    }
}
