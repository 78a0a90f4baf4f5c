//! Text of the load-grid report: every policy at every load, `libra` against the best peer and
//! the oracle, and the closing table with one row per scenario.
use super::engine::RunResult;
use super::grid::{compare, Comparison};
use std::fmt::Write;

/// The peers a user would deploy instead of libra (`lru` is libra's own tree with LRU, an
/// ablation, and `oracle` a bound).
pub const PEERS: [&str; 6] = ["vllm", "vllm-offload", "hicache", "slora", "elora", "elora-authors"];

/// Results of one scenario: `results[load][policy]`, policies in the same order at every load.
pub struct ScenarioGrid {
    pub name: String,
    pub loads_rps: Vec<f64>,
    pub results: Vec<Vec<RunResult>>,
    /// `top_samples[policy][sample]`: the highest load's runs on each workload sample before
    /// pooling, when there was more than one.
    pub top_samples: Vec<Vec<RunResult>>,
}

impl ScenarioGrid {
    fn policies(&self) -> Vec<&str> {
        self.results.first().map_or(Vec::new(), |r| r.iter().map(|x| x.policy.as_str()).collect())
    }
    fn index(&self, policy: &str) -> Option<usize> {
        self.policies().iter().position(|p| *p == policy)
    }
    /// A policy's value at every load.
    pub fn series(&self, policy: &str, f: impl Fn(&RunResult) -> f64) -> Option<Vec<f64>> {
        let i = self.index(policy)?;
        Some(self.results.iter().map(|r| f(&r[i])).collect())
    }
    fn mean_ttft(&self, policy: &str) -> Option<Vec<f64>> {
        self.series(policy, |r| r.ttft_mean_ms())
    }
    /// The peer with the lowest grid-average mean TTFT.
    pub fn best_peer(&self) -> Option<String> {
        PEERS
            .iter()
            .filter_map(|p| self.mean_ttft(p).map(|v| (p, v.iter().sum::<f64>())))
            .min_by(|a, b| a.1.total_cmp(&b.1))
            .map(|(p, _)| p.to_string())
    }
    /// `a` against `b` in mean TTFT over the grid.
    pub fn compare(&self, a: &str, b: &str) -> Option<Comparison> {
        Some(compare(&self.mean_ttft(a)?, &self.mean_ttft(b)?))
    }
    /// `a` against `b` in mean TTFT on each workload sample at the highest load.
    pub fn top_sample_ratios(&self, a: &str, b: &str) -> Option<Vec<f64>> {
        let (i, j) = (self.index(a)?, self.index(b)?);
        let (sa, sb) = (self.top_samples.get(i)?, self.top_samples.get(j)?);
        Some(sa.iter().zip(sb).map(|(x, y)| x.ttft_mean_ms() / y.ttft_mean_ms()).collect())
    }
    /// The peer and load where libra is slowest relative to a peer: (peer, load index, ratio).
    pub fn worst_against_peers(&self) -> Option<(String, usize, f64)> {
        let mut worst: Option<(String, usize, f64)> = None;
        for p in PEERS {
            let Some(c) = self.compare("libra", p) else { continue };
            for (k, &r) in c.per_load.iter().enumerate() {
                if worst.as_ref().map_or(true, |w| r > w.2) {
                    worst = Some((p.to_string(), k, r));
                }
            }
        }
        worst
    }
}

fn pct(r: f64) -> String {
    format!("{:+.1}%", 100.0 * (r - 1.0))
}

/// Mean, P50 and P99 TTFT of every policy at every load.
pub fn grid_table(g: &ScenarioGrid) -> String {
    let mut s = String::new();
    let _ = write!(s, "{:<14}", "TTFT ms");
    for l in &g.loads_rps {
        let _ = write!(s, " | {:^22}", format!("{l:.2} req/s"));
    }
    let _ = writeln!(s);
    let _ = write!(s, "{:<14}", "policy");
    for _ in &g.loads_rps {
        let _ = write!(s, " | {:>7} {:>6} {:>7}", "mean", "P50", "P99");
    }
    let _ = writeln!(s);
    for (i, p) in g.policies().iter().enumerate() {
        let _ = write!(s, "{p:<14}");
        for r in &g.results {
            let x = &r[i];
            let _ = write!(
                s,
                " | {:>7.1} {:>6.1} {:>7.1}",
                x.ttft_mean_ms(),
                x.ttft_pct_ms(50.0),
                x.ttft_pct_ms(99.0)
            );
        }
        let _ = writeln!(s);
    }
    s
}

/// `libra` against every peer and the oracle, in both summaries, with the per-load ratios.
pub fn comparisons(g: &ScenarioGrid) -> String {
    let mut s = String::new();
    let best = g.best_peer();
    let mut line = |a: &str, b: &str, note: &str| {
        if let Some(c) = g.compare(a, b) {
            let per: Vec<String> = c.per_load.iter().map(|&r| pct(r)).collect();
            let _ = writeln!(
                s,
                "  {a} vs {b}{note}: mean of per-load ratios {}, average of means {} (per load: {})",
                pct(c.mean_of_ratios),
                pct(c.ratio_of_means),
                per.join(" ")
            );
        }
    };
    for p in PEERS.iter().chain(["lru"].iter()) {
        let note = if best.as_deref() == Some(*p) { " (best peer)" } else { "" };
        line("libra", p, note);
    }
    line("libra", "oracle", "");
    if let Some(b) = &best {
        line("oracle", b, " (room left by the best peer)");
    }
    for b in best.iter().map(String::as_str).chain(["oracle"]) {
        if let Some(r) = g.top_sample_ratios("libra", b).filter(|r| r.len() > 1) {
            let per: Vec<String> = r.iter().map(|&x| pct(x)).collect();
            let _ = writeln!(s, "  libra vs {b} at the highest load, per workload sample: {}", per.join(" "));
        }
    }
    s
}

/// At the highest load, `libra` against the best peer and the oracle on each workload sample:
/// one row per scenario, empty when every run was one sample.
pub fn samples_table(grids: &[&ScenarioGrid]) -> String {
    let mut s = String::new();
    for g in grids {
        let Some(peer) = g.best_peer() else { continue };
        let (Some(vp), Some(vo)) =
            (g.top_sample_ratios("libra", &peer), g.top_sample_ratios("libra", "oracle"))
        else {
            continue;
        };
        if vp.len() < 2 {
            continue;
        }
        if s.is_empty() {
            let _ = writeln!(
                s,
                "{:<18} {:<13} | libra/peer per sample | libra/oracle per sample",
                "scenario", "best peer"
            );
        }
        let ahead = vp.iter().filter(|&&r| r < 1.0).count();
        let show = |v: &[f64]| v.iter().map(|&r| pct(r)).collect::<Vec<_>>().join(" ");
        let _ = writeln!(
            s,
            "{:<18} {:<13} | {} (ahead in {ahead}/{}) | {}",
            g.name,
            peer,
            show(&vp),
            vp.len(),
            show(&vo)
        );
    }
    s
}

/// One row of the closing table.
pub struct SummaryRow {
    pub scenario: String,
    pub peer: String,
    pub loads_rps: Vec<f64>,
    pub libra_vs_peer: Comparison,
    pub oracle_vs_peer: Comparison,
    pub libra_vs_oracle: Comparison,
    /// libra / peer at the highest load, P50 and P99.
    pub p50_top: f64,
    pub p99_top: f64,
    pub worst: Option<(String, usize, f64)>,
}

impl SummaryRow {
    pub fn of(g: &ScenarioGrid) -> Option<Self> {
        let peer = g.best_peer()?;
        let top = |p: &str, q: f64| g.series(p, |r| r.ttft_pct_ms(q)).and_then(|v| v.last().copied());
        Some(SummaryRow {
            scenario: g.name.clone(),
            libra_vs_peer: g.compare("libra", &peer)?,
            oracle_vs_peer: g.compare("oracle", &peer)?,
            libra_vs_oracle: g.compare("libra", "oracle")?,
            p50_top: top("libra", 50.0)? / top(&peer, 50.0)?,
            p99_top: top("libra", 99.0)? / top(&peer, 99.0)?,
            loads_rps: g.loads_rps.clone(),
            worst: g.worst_against_peers(),
            peer,
        })
    }
}

/// The closing table: libra against the best peer per scenario, and the targets' verdicts.
pub fn final_table(rows: &[SummaryRow]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{:<18} {:<13} {:>13} | {:>9} {:>9} | {:>8} {:>8} | {:>9} {:>9} | {:>9} | target (libra <= -15% vs peer",
        "scenario",
        "best peer",
        "loads req/s",
        "libra/peer",
        "(avg of",
        "P50 at",
        "P99 at",
        "oracle/",
        "libra/",
        "worst vs",
    );
    let _ = writeln!(
        s,
        "{:<18} {:<13} {:>13} | {:>9} {:>9} | {:>8} {:>8} | {:>9} {:>9} | {:>9} | where oracle <= -20%)",
        "", "", "", "per load", "means)", "peak", "peak", "peer", "oracle", "any peer",
    );
    for r in rows {
        let range = format!(
            "{:.2}-{:.2}",
            r.loads_rps.first().copied().unwrap_or(0.0),
            r.loads_rps.last().copied().unwrap_or(0.0)
        );
        let verdict = if r.oracle_vs_peer.mean_of_ratios > 0.8 {
            format!("n/a: oracle/peer {}", pct(r.oracle_vs_peer.mean_of_ratios))
        } else if r.libra_vs_peer.mean_of_ratios <= 0.85 {
            "met".into()
        } else {
            "missed".into()
        };
        let worst = r.worst.as_ref().map_or("-".into(), |w| pct(w.2));
        let _ = writeln!(
            s,
            "{:<18} {:<13} {:>13} | {:>9} {:>9} | {:>8} {:>8} | {:>9} {:>9} | {:>9} | {}",
            r.scenario,
            r.peer,
            range,
            pct(r.libra_vs_peer.mean_of_ratios),
            pct(r.libra_vs_peer.ratio_of_means),
            pct(r.p50_top),
            pct(r.p99_top),
            pct(r.oracle_vs_peer.mean_of_ratios),
            pct(r.libra_vs_oracle.mean_of_ratios),
            worst,
            verdict
        );
    }
    s
}
