//! `libra-topo`: LIBRA's bandwidth optimiser and Themis's scheduler over the files LIBRA and
//! ASTRA-sim users already have.
//!
//!     cargo run --release --example libra-topo -- optimize --network N.yml [--cost C.yml] \
//!         --workload W.txt [--communicator X.yml] [--budget GBPS | --dollars USD] \
//!         [--objective time|perf-per-cost] [--model libra|alpha-beta] [--json] \
//!         [--export-astra-sim OUT.yml]
//!     cargo run --release --example libra-topo -- schedule --network N.yml \
//!         --collective all-reduce --bytes 67108864 [--groups 4,1,8] [--policy themis] [--json]
//!
//! Network files are LIBRA's or ASTRA-sim 2.0's (told apart by their keys); workloads are
//! ASTRA-sim 1.0 text, with a LIBRA communicator file or the file's own parallelism header.
//! An example rather than a binary target, so its argument parser never enters liblibra.
use clap::{Args, Parser, Subcommand, ValueEnum};
use libra::topo::astra::{astra_iteration, parse_astra_workload, to_astra_sim_yaml};
use libra::topo::parse::{parse_communicator, parse_network};
use libra::topo::themis_opt::optimize_for_themis;
use libra::topo::*;
use std::fmt::Write as _;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "libra-topo",
    about = "Topology-aware bandwidth optimisation (LIBRA) and collective scheduling (Themis)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Split a bandwidth or dollar budget across the network's dimensions for a workload.
    Optimize(OptimizeArgs),
    /// Schedule one collective and print its summary and per-dimension utilisation.
    Schedule(ScheduleArgs),
}

#[derive(Args)]
struct NetworkArgs {
    /// Network YAML: LIBRA's (Topology, NpusCount, CostDimension) or ASTRA-sim 2.0's.
    #[arg(long)]
    network: String,
    /// LIBRA cost-model YAML ($ per GB/s per dimension).
    #[arg(long)]
    cost: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum ObjectiveArg {
    Time,
    PerfPerCost,
}

#[derive(Clone, Copy, ValueEnum)]
enum ModelArg {
    Libra,
    AlphaBeta,
}

#[derive(Clone, Copy, ValueEnum)]
enum OverlapArg {
    None,
    Full,
}

#[derive(Args)]
struct OptimizeArgs {
    #[command(flatten)]
    net: NetworkArgs,
    /// ASTRA-sim 1.0 workload text.
    #[arg(long)]
    workload: String,
    /// LIBRA communicator YAML; without it, the workload's parallelism header decides.
    #[arg(long)]
    communicator: Option<String>,
    /// Total bandwidth per NPU (GB/s); default: the sum of the network file's bandwidths.
    #[arg(long)]
    budget: Option<f64>,
    /// Network cost budget ($), instead of or besides --budget.
    #[arg(long)]
    dollars: Option<f64>,
    #[arg(long, value_enum, default_value = "time")]
    objective: ObjectiveArg,
    #[arg(long, value_enum, default_value = "libra")]
    model: ModelArg,
    #[arg(long, value_enum, default_value = "none")]
    overlap: OverlapArg,
    /// Per-dimension lower bounds (GB/s), comma-separated.
    #[arg(long, value_delimiter = ',')]
    lower: Vec<f64>,
    /// Per-dimension upper bounds (GB/s), comma-separated.
    #[arg(long, value_delimiter = ',')]
    upper: Vec<f64>,
    /// Also optimise for the Themis schedule (balanced per-dimension load) and compare with
    /// LIBRA's answer run under Themis.
    #[arg(long)]
    themis_aware: bool,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
    /// Write the optimised network as an ASTRA-sim 2.0 analytical network file.
    #[arg(long, value_name = "FILE")]
    export_astra_sim: Option<String>,
}

#[derive(Clone, Copy, ValueEnum)]
enum CollectiveArg {
    AllReduce,
    ReduceScatter,
    AllGather,
    AllToAll,
}

#[derive(Clone, Copy, PartialEq, ValueEnum)]
enum PolicyArg {
    Baseline,
    Themis,
    Both,
}

#[derive(Args)]
struct ScheduleArgs {
    #[command(flatten)]
    net: NetworkArgs,
    #[arg(long, value_enum, default_value = "all-reduce")]
    collective: CollectiveArg,
    /// Message size per NPU in bytes.
    #[arg(long)]
    bytes: u64,
    /// Group size per dimension (1 or -1 = not involved); default: every NPU.
    #[arg(long, value_delimiter = ',', allow_hyphen_values = true)]
    groups: Vec<i64>,
    #[arg(long, value_enum, default_value = "both")]
    policy: PolicyArg,
    #[arg(long, default_value_t = 64)]
    chunks: usize,
    /// Bytes per element.
    #[arg(long, default_value_t = 4)]
    elem_size: usize,
    /// Per-dimension bandwidths (GB/s) replacing the file's, e.g. an optimiser's answer.
    #[arg(long, value_delimiter = ',')]
    bandwidths: Vec<f64>,
    #[arg(long)]
    json: bool,
}

fn read(path: &str) -> Result<String, String> {
    std::fs::read_to_string(path).map_err(|e| format!("{path}: {e}"))
}

fn load_network(a: &NetworkArgs) -> Result<Network, String> {
    let cost = a.cost.as_deref().map(read).transpose()?;
    parse_network(&read(&a.network)?, cost.as_deref()).map_err(|e| format!("{}: {}", a.network, e.message))
}

fn json_list(v: &[f64]) -> String {
    format!("[{}]", v.iter().map(|x| format!("{x}")).collect::<Vec<_>>().join(", "))
}

fn optimize_cmd(a: &OptimizeArgs) -> Result<String, String> {
    let net = load_network(&a.net)?;
    let w =
        parse_astra_workload(&read(&a.workload)?).map_err(|e| format!("{}: {}", a.workload, e.message))?;
    let comm = match &a.communicator {
        Some(p) => {
            Some(parse_communicator(&read(p)?, net.num_dims()).map_err(|e| format!("{p}: {}", e.message))?)
        }
        None => None,
    };
    let overlap = match a.overlap {
        OverlapArg::None => Overlap::None,
        OverlapArg::Full => Overlap::Full,
    };
    let wl = astra_iteration(&w, &net, comm.as_ref(), overlap).map_err(|e| e.message)?;
    let model = match a.model {
        ModelArg::Libra => TimeModel::Libra,
        ModelArg::AlphaBeta => TimeModel::AlphaBeta(Vec::new()),
    };
    let budget = match (a.budget, a.dollars) {
        (None, Some(_)) => None,
        (b, _) => Some(b.unwrap_or_else(|| net.bandwidths().iter().sum())),
    };
    let spec = OptimizeSpec {
        objective: match a.objective {
            ObjectiveArg::Time => Objective::Time,
            ObjectiveArg::PerfPerCost => Objective::TimeCost,
        },
        model: model.clone(),
        total_bandwidth: budget,
        dollar_budget: a.dollars,
        lower: a.lower.clone(),
        upper: a.upper.clone(),
        linear: Vec::new(),
    };
    let r = optimize(&net, &wl, &spec).map_err(|e| e.message)?;
    let given = model::iteration_time(&wl, &net, &model, None).map_err(|e| e.message)?;
    let themis = if a.themis_aware {
        Some(optimize_for_themis(&net, &wl, &spec).map_err(|e| e.message)?)
    } else {
        None
    };
    if let Some(path) = &a.export_astra_sim {
        let out = net.with_bandwidths(&r.bandwidths).map_err(|e| e.message)?;
        std::fs::write(path, to_astra_sim_yaml(&out)).map_err(|e| format!("{path}: {e}"))?;
    }
    let mut s = String::new();
    if a.json {
        let _ = writeln!(s, "{{");
        let _ = writeln!(s, "  \"bandwidths_gbps\": {},", json_list(&r.bandwidths));
        let _ = writeln!(s, "  \"iteration_time_ns\": {},", r.time);
        let _ = writeln!(s, "  \"cost_usd\": {},", r.cost);
        let _ = writeln!(s, "  \"total_bandwidth_gbps\": {},", r.bandwidths.iter().sum::<f64>());
        let _ = writeln!(s, "  \"given_bandwidths_gbps\": {},", json_list(&net.bandwidths()));
        let _ = writeln!(s, "  \"given_time_ns\": {given},");
        let _ = writeln!(s, "  \"equal_split_gbps\": {},", json_list(&r.equal_split));
        let _ = writeln!(s, "  \"equal_split_time_ns\": {},", r.equal_split_time);
        let _ = writeln!(s, "  \"proportional_split_gbps\": {},", json_list(&r.proportional_split));
        let _ = writeln!(s, "  \"proportional_split_time_ns\": {},", r.proportional_split_time);
        let _ = writeln!(s, "  \"speedup_vs_equal\": {},", r.speedup_vs_equal());
        let _ = writeln!(s, "  \"speedup_vs_proportional\": {},", r.speedup_vs_proportional());
        let _ = write!(s, "  \"speedup_vs_given\": {}", given / r.time);
        if let Some(t) = &themis {
            let _ = write!(
                s,
                ",\n  \"themis_aware\": {{\"bandwidths_gbps\": {}, \"model_time_ns\": {}, \"libra_then_themis_time_ns\": {}, \"gain\": {}, \"lower_bound_ns\": {}}}",
                json_list(&t.bandwidths),
                t.time,
                t.libra_then_themis_time,
                t.gain_over_libra_then_themis(),
                t.lower_bound.map_or("null".to_string(), |v| v.to_string())
            );
        }
        let _ = writeln!(s, "\n}}");
        return Ok(s);
    }
    let _ = writeln!(
        s,
        "{:>3}  {:<15} {:>6}  {:>14}  {:>12}  {:>12}",
        "dim", "kind", "npus", "optimal GB/s", "given GB/s", "equal GB/s"
    );
    for (k, d) in net.dims().iter().enumerate() {
        let _ = writeln!(
            s,
            "{k:>3}  {:<15} {:>6}  {:>14.3}  {:>12.3}  {:>12.3}",
            d.kind.name(),
            d.size,
            r.bandwidths[k],
            d.bandwidth,
            r.equal_split[k]
        );
    }
    let _ = writeln!(s, "total bandwidth per NPU: {:.3} GB/s", r.bandwidths.iter().sum::<f64>());
    let _ = writeln!(s, "iteration time: {:.6} ms", r.time / 1e6);
    let _ = writeln!(s, "network cost: ${:.2}", r.cost);
    let _ = writeln!(s, "speedup vs the given bandwidths: x{:.4}", given / r.time);
    let _ = writeln!(s, "speedup vs an equal split: x{:.4}", r.speedup_vs_equal());
    let _ = writeln!(s, "speedup vs a traffic-proportional split: x{:.4}", r.speedup_vs_proportional());
    if let Some(t) = &themis {
        let _ = writeln!(s, "themis-aware split: {}", json_list(&t.bandwidths));
        let _ = writeln!(
            s,
            "under Themis's balanced-load model: {:.6} ms vs {:.6} ms with LIBRA's split (x{:.4})",
            t.time / 1e6,
            t.libra_then_themis_time / 1e6,
            t.gain_over_libra_then_themis()
        );
        if let Some(lb) = t.lower_bound {
            let _ = writeln!(s, "lower bound on that model's optimum: {:.6} ms", lb / 1e6);
        }
    }
    Ok(s)
}

fn schedule_cmd(a: &ScheduleArgs) -> Result<String, String> {
    let mut net = load_network(&a.net)?;
    if !a.bandwidths.is_empty() {
        net = net.with_bandwidths(&a.bandwidths).map_err(|e| e.message)?;
    }
    let groups: Option<Vec<u32>> = if a.groups.is_empty() {
        None
    } else {
        Some(
            a.groups
                .iter()
                .enumerate()
                .map(|(i, &g)| match g {
                    -1 => Ok(1),
                    g if (1..=u32::MAX as i64).contains(&g) => Ok(g as u32),
                    g => Err(format!("--groups[{i}] is {g}: expected -1 or a positive group size")),
                })
                .collect::<Result<_, _>>()?,
        )
    };
    let kind = match a.collective {
        CollectiveArg::AllReduce => CollectiveKind::AllReduce,
        CollectiveArg::ReduceScatter => CollectiveKind::ReduceScatter,
        CollectiveArg::AllGather => CollectiveKind::AllGather,
        CollectiveArg::AllToAll => CollectiveKind::AllToAll,
    };
    if a.elem_size == 0 || a.bytes % a.elem_size as u64 != 0 {
        return Err(format!("--bytes {} is not a multiple of --elem-size {}", a.bytes, a.elem_size));
    }
    let count = (a.bytes / a.elem_size as u64) as usize;
    let policies: Vec<Policy> = match a.policy {
        PolicyArg::Baseline => vec![Policy::Baseline],
        PolicyArg::Themis => vec![Policy::Themis],
        PolicyArg::Both => vec![Policy::Baseline, Policy::Themis],
    };
    let mut runs = Vec::new();
    for p in policies {
        let cfg = ScheduleConfig { policy: p, chunks: a.chunks, elem_size: a.elem_size };
        let s = Schedule::new(&net, kind, count, groups.as_deref(), &cfg).map_err(|e| e.message)?;
        runs.push((p, s));
    }
    let name = |p: Policy| if p == Policy::Themis { "themis" } else { "baseline" };
    let mut out = String::new();
    if a.json {
        let _ = writeln!(
            out,
            "{{\n  \"collective\": \"{}\",\n  \"bytes\": {},\n  \"schedules\": [",
            kind.name(),
            a.bytes
        );
        for (i, (p, s)) in runs.iter().enumerate() {
            let util: Vec<f64> = s.dim_busy.iter().map(|b| b / s.finish_time).collect();
            let _ = writeln!(
                out,
                "    {{\"policy\": \"{}\", \"finish_time_ns\": {}, \"steps\": {}, \"chunks\": {}, \"dim_busy_ns\": {}, \"dim_utilisation\": {}}}{}",
                name(*p),
                s.finish_time,
                s.steps.len(),
                s.chunks.len(),
                json_list(&s.dim_busy),
                json_list(&util),
                if i + 1 < runs.len() { "," } else { "" }
            );
        }
        let _ = writeln!(out, "  ]\n}}");
        return Ok(out);
    }
    for (p, s) in &runs {
        let _ = writeln!(
            out,
            "{}: {} of {} bytes in {} chunks, {} steps, finishes at {:.3} us",
            name(*p),
            kind.name(),
            a.bytes,
            s.chunks.len(),
            s.steps.len(),
            s.finish_time / 1e3
        );
        for (k, d) in net.dims().iter().enumerate() {
            let _ = writeln!(
                out,
                "  dim {k} {:<15} group {:>5}  busy {:>12.3} us  utilisation {:>6.1}%",
                d.kind.name(),
                s.groups[k],
                s.dim_busy[k] / 1e3,
                100.0 * s.dim_busy[k] / s.finish_time.max(f64::MIN_POSITIVE)
            );
        }
    }
    if let [(_, b), (_, t)] = &runs[..] {
        let _ = writeln!(out, "themis vs baseline: x{:.4}", b.finish_time / t.finish_time);
    }
    Ok(out)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match &cli.command {
        Command::Optimize(a) => optimize_cmd(a),
        Command::Schedule(a) => schedule_cmd(a),
    };
    match r {
        Ok(s) => {
            print!("{s}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("libra-topo: {e}");
            ExitCode::from(2)
        }
    }
}
