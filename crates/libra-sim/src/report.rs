//! The results table and the JSON file. JSON is written by hand with fixed formatting so that
//! the same seed gives byte-identical output.
use super::engine::{EngineConfig, RunResult};
use super::workload::{Source, WorkloadSpec};
use std::fmt::Write;

/// Column headers and one row per policy.
pub fn table(results: &[RunResult]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<7} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>7} {:>7} {:>8} {:>9} {:>7} {:>7}",
        "policy",
        "TTFT mean",
        "P50",
        "P95",
        "P99",
        "TPOT",
        "thr",
        "GPU hit",
        "hosthit",
        "inv. KV",
        "link",
        "adapt.",
        "preempt"
    );
    let _ = writeln!(
        s,
        "{:<7} {:>9} {:>8} {:>8} {:>9} {:>8} {:>8} {:>7} {:>7} {:>8} {:>9} {:>7} {:>7}",
        "", "ms", "ms", "ms", "ms", "ms", "req/s", "", "", "", "GB", "loads", ""
    );
    for r in results {
        let _ = writeln!(
            s,
            "{:<7} {:>9.1} {:>8.1} {:>8.1} {:>9.1} {:>8.2} {:>8.2} {:>6.1}% {:>6.1}% {:>7.1}% {:>9.1} {:>7} {:>7}",
            r.policy,
            r.ttft_mean_ms(),
            r.ttft_pct_ms(50.0),
            r.ttft_pct_ms(95.0),
            r.ttft_pct_ms(99.0),
            r.tpot_mean_ms,
            r.throughput_rps,
            100.0 * r.gpu_hit_ratio(),
            100.0 * r.host_hit_ratio(),
            100.0 * r.invalid_kv_fraction,
            r.host_link_bytes as f64 / 1e9,
            r.adapter_loads,
            r.preemptions
        );
    }
    s
}

/// Mean-TTFT ratios that the targets are stated in.
pub fn ratios(results: &[RunResult]) -> String {
    let get = |p: &str| results.iter().find(|r| r.policy == p).map(|r| r.ttft_mean_ms());
    let mut s = String::new();
    let mut line = |a: &str, b: &str, goal: &str| {
        if let (Some(x), Some(y)) = (get(a), get(b)) {
            if y > 0.0 {
                let _ = writeln!(s, "  {a} vs {b}: mean TTFT {:+.1}% ({goal})", 100.0 * (x / y - 1.0));
            }
        }
    };
    line("elora", "vllm", "target <= -45.7%");
    line("elora", "slora", "target <= -43.3%");
    line("lru", "elora", "target > 0");
    line("libra", "elora", "target <= -15%");
    line("libra", "oracle", "target <= +15%");
    s
}

pub(crate) fn num(x: f64) -> String {
    if x.is_finite() {
        // Fixed precision: the same value always prints the same way.
        let s = format!("{x:.6}");
        let s = s.trim_end_matches('0');
        let s = s.strip_suffix('.').unwrap_or(s);
        if s == "-0" {
            "0".into()
        } else {
            s.to_string()
        }
    } else {
        "null".into()
    }
}

fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        match c {
            '"' => o.push_str("\\\""),
            '\\' => o.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(o, "\\u{:04x}", c as u32);
            }
            c => o.push(c),
        }
    }
    o.push('"');
    o
}

/// Every parameter of a scenario, as a JSON object.
pub fn scenario_json(
    spec: &WorkloadSpec,
    ec: &EngineConfig,
    requests: usize,
    prompt_tokens: u64,
    seeds: u32,
) -> String {
    let hw = &ec.hw;
    let m = &hw.model;
    let g = &hw.gpu;
    let mut f: Vec<(&str, String)> = vec![("name", esc(&spec.name))];
    match &spec.source {
        Source::Trace { label, start_s, duration_s, .. } => {
            f.push(("source", esc("trace")));
            f.push(("trace", esc(label)));
            f.push(("trace_start_s", num(*start_s)));
            f.push(("duration_s", num(*duration_s)));
        }
        Source::Poisson { rate, duration_s, prompt_mean, output_mean } => {
            f.push(("source", esc("poisson")));
            f.push(("poisson_rate_rps", num(*rate)));
            f.push(("duration_s", num(*duration_s)));
            f.push(("prompt_mean", num(*prompt_mean)));
            f.push(("output_mean", num(*output_mean)));
        }
        Source::Synthetic { duration_s } => {
            f.push(("source", esc("synthetic-azure-conv-2023")));
            f.push(("duration_s", num(*duration_s)));
        }
    }
    let ranks: Vec<String> = spec.ranks.iter().map(|r| r.to_string()).collect();
    f.extend([
        ("rate_mult", num(spec.rate_mult)),
        ("requests", requests.to_string()),
        ("prompt_tokens", prompt_tokens.to_string()),
        ("adapters", spec.adapters.to_string()),
        ("zipf_s", num(spec.zipf_s)),
        ("ranks", format!("[{}]", ranks.join(", "))),
        ("follow_prob", num(spec.follow_prob)),
        ("min_gap_s", num(spec.min_gap_s)),
        ("followup_pick", esc(spec.followup_pick.name())),
        ("think_mean_s", num(spec.think_mean_s)),
        ("think_sigma", num(super::workload::THINK_SIGMA)),
        ("session_timeout_s", num(spec.session_timeout_s)),
        ("system_tokens", spec.system_tokens.to_string()),
        ("max_context", spec.max_context.to_string()),
        ("popularity_period_s", num(spec.popularity_period_s)),
        ("seed", spec.seed.to_string()),
        ("seeds", seeds.to_string()),
        ("model", esc(m.name)),
        ("layers", m.layers.to_string()),
        ("hidden", m.hidden.to_string()),
        ("heads", m.heads.to_string()),
        ("kv_heads", m.kv_heads.to_string()),
        ("head_dim", m.head_dim.to_string()),
        ("ffn", m.ffn.to_string()),
        ("params", num(m.params)),
        ("gpu", esc(g.name)),
        ("tp", hw.tp.to_string()),
        ("peak_flops", num(g.peak_flops)),
        ("compute_eff", num(hw.compute_eff)),
        ("hbm_bytes_per_s", num(g.hbm_bytes_per_s)),
        ("mem_eff", num(hw.mem_eff)),
        ("gpu_mem_bytes", num(g.mem_bytes)),
        ("mem_util", num(hw.mem_util)),
        ("host_link_bytes_per_s", num(g.link_bytes_per_s)),
        ("link_batch_latency_s", num(hw.link_batch_latency_s)),
        ("nvlink_bytes_per_s", num(g.nvlink_bytes_per_s)),
        ("step_overhead_s", num(hw.step_overhead_s)),
        ("host_bytes_per_gpu", num(hw.host_bytes_per_gpu)),
        ("block_tokens", ec.block_tokens.to_string()),
        ("kv_block_bytes", num(hw.kv_block_bytes(ec.block_tokens))),
        ("gpu_blocks", ec.gpu_blocks().to_string()),
        ("host_blocks", ec.host_blocks().to_string()),
        ("max_batch_tokens", ec.max_batch_tokens.to_string()),
        ("max_seqs", ec.max_seqs.to_string()),
    ]);
    let body: Vec<String> = f.iter().map(|(k, v)| format!("    {}: {}", esc(k), v)).collect();
    format!("{{\n{}\n  }}", body.join(",\n"))
}

/// One result as a JSON object.
pub fn result_json(r: &RunResult, peak_load_rps: Option<f64>) -> String {
    let f: Vec<(&str, String)> = vec![
        ("policy", esc(&r.policy)),
        ("ttft_mean_ms", num(r.ttft_mean_ms())),
        ("ttft_p50_ms", num(r.ttft_pct_ms(50.0))),
        ("ttft_p95_ms", num(r.ttft_pct_ms(95.0))),
        ("ttft_p99_ms", num(r.ttft_pct_ms(99.0))),
        ("tpot_mean_ms", num(r.tpot_mean_ms)),
        ("throughput_rps", num(r.throughput_rps)),
        ("gpu_hit_ratio", num(r.gpu_hit_ratio())),
        ("host_hit_ratio", num(r.host_hit_ratio())),
        ("invalid_kv_fraction", num(r.invalid_kv_fraction)),
        ("host_link_bytes", r.host_link_bytes.to_string()),
        ("completed", r.completed.to_string()),
        ("rejected", r.rejected.to_string()),
        ("adapter_loads", r.adapter_loads.to_string()),
        ("swap_in_blocks", r.swap_in_blocks.to_string()),
        ("swap_out_blocks", r.swap_out_blocks.to_string()),
        ("preemptions", r.preemptions.to_string()),
        ("stalled_ms", num(r.stalled_ms)),
        ("sim_s", num(r.sim_s)),
        ("peak_load_rps", peak_load_rps.map_or("null".into(), num)),
    ];
    let body: Vec<String> = f.iter().map(|(k, v)| format!("{}: {}", esc(k), v)).collect();
    format!("{{{}}}", body.join(", "))
}

/// A scenario and its results: `{"scenario": {...}, "results": [...]}`.
pub fn scenario_results_json(scenario: &str, results: &[RunResult], peaks: &[Option<f64>]) -> String {
    let rows: Vec<String> = results
        .iter()
        .enumerate()
        .map(|(i, r)| format!("    {}", result_json(r, peaks.get(i).copied().flatten())))
        .collect();
    format!("{{\n  \"scenario\": {scenario},\n  \"results\": [\n{}\n  ]\n}}", rows.join(",\n"))
}

/// The working set a cache would need to hold everything reused: the weights of the adapters
/// requested and the KV of every distinct prefix (each conversation's longest turn, with the
/// system prompts counted once per adapter), against the GPU tier.
pub fn working_set(spec: &WorkloadSpec, ec: &EngineConfig, wl: &super::workload::Workload) -> String {
    let hw = &ec.hw;
    let mut used = vec![false; spec.adapters.max(1) as usize];
    let mut longest = vec![0u64; wl.sessions.len()];
    for r in &wl.requests {
        used[r.adapter as usize] = true;
        let l = &mut longest[r.session as usize];
        *l = (*l).max((r.prompt + r.output) as u64);
    }
    let adapters: f64 =
        (0..used.len()).filter(|&a| used[a]).map(|a| hw.adapter_bytes(spec.rank_of(a as u32))).sum();
    let sys = spec.system_tokens as u64;
    let tokens: u64 = longest.iter().map(|&l| l.saturating_sub(sys)).sum::<u64>()
        + used.iter().filter(|&&u| u).count() as u64 * sys;
    let kv = tokens as f64 * hw.kv_block_bytes(ec.block_tokens) / ec.block_tokens as f64;
    let gpu = ec.gpu_blocks() as f64 * hw.kv_block_bytes(ec.block_tokens);
    format!(
        "working set: adapters {:.1} GB + distinct prefixes {:.1} GB = {:.1}x the GPU tier ({:.1} GB)",
        adapters / 1e9,
        kv / 1e9,
        (adapters + kv) / gpu,
        gpu / 1e9
    )
}

/// A scenario, its peak loads, and every policy's results at every load of its grid.
pub fn grid_json(
    scenario: &str,
    g: &super::summary::ScenarioGrid,
    rate_mults: &[f64],
    peaks: &[(String, Option<f64>)],
) -> String {
    let loads: Vec<String> = g
        .results
        .iter()
        .enumerate()
        .map(|(k, res)| {
            let rows: Vec<String> = res.iter().map(|r| format!("      {}", result_json(r, None))).collect();
            format!(
                "    {{\"load_rps\": {}, \"rate_mult\": {}, \"results\": [\n{}\n    ]}}",
                num(g.loads_rps[k]),
                num(rate_mults.get(k).copied().unwrap_or(f64::NAN)),
                rows.join(",\n")
            )
        })
        .collect();
    let peaks: Vec<String> =
        peaks.iter().map(|(p, v)| format!("{}: {}", esc(p), v.map_or("null".into(), num))).collect();
    format!(
        "{{\n  \"scenario\": {scenario},\n  \"peak_load_rps\": {{{}}},\n  \"loads\": [\n{}\n  ]\n}}",
        peaks.join(", "),
        loads.join(",\n")
    )
}
