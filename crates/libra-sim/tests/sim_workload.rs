//! The workload generator: which conversation a follow-up continues, and the built-in arrivals
//! and lengths against the trace they are calibrated to.
use libra_sim::rng::Rng;
use libra_sim::{self as sim, synth, FollowupPick, Source, TraceRow, Workload, WorkloadSpec};
use std::sync::Arc;

/// FNV-1a over every generated field: any change to the stream of requests changes it.
fn fingerprint(wl: &Workload) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut eat = |x: u64| {
        for b in x.to_le_bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
    };
    for r in &wl.requests {
        for x in [
            r.arrival_us,
            r.adapter as u64,
            r.session as u64,
            r.turn as u64,
            r.prompt as u64,
            r.output as u64,
        ] {
            eat(x);
        }
    }
    for s in &wl.sessions {
        eat(s.len() as u64);
        for &t in s {
            eat(t as u64);
        }
    }
    h
}

/// The public trace in the shared data folder beside the checkout; it is never committed.
const TRACE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/traces/azure_llm_2023_conv.csv");

/// The trace's rows, or `None` (with the reason printed) when it is not there.
fn trace_rows() -> Option<Arc<Vec<TraceRow>>> {
    match std::fs::read_to_string(TRACE) {
        Ok(text) => Some(Arc::new(sim::parse_azure_csv(&text).expect("the trace parses"))),
        Err(e) => {
            println!(
                "skipped: {TRACE}: {e} (download AzureLLMInferenceTrace_conv.csv from \
                 https://github.com/Azure/AzurePublicDataset to run this test)"
            );
            None
        }
    }
}

fn trace_spec(name: &str, rows: &Arc<Vec<TraceRow>>) -> WorkloadSpec {
    let source = Source::Trace { rows: rows.clone(), label: "azure".into(), start_s: 0.0, duration_s: 900.0 };
    WorkloadSpec::preset(name, source, 1).unwrap()
}

fn poisson_spec(rate: f64, duration_s: f64, seed: u64) -> WorkloadSpec {
    let source = Source::Poisson { rate, duration_s, prompt_mean: 600.0, output_mean: 60.0 };
    let mut s = WorkloadSpec::preset("chatbot", source, seed).unwrap();
    s.rate_mult = 1.0;
    s.min_gap_s = 1.0;
    s
}

#[test]
fn uniform_pick_reproduces_the_earlier_generator() {
    let Some(rows) = trace_rows() else { return };
    // Fingerprints of the generator before think times existed, same specs and seeds.
    let expect = [
        ("chatbot", 0x5e5b_3241_c836_45ab_u64),
        ("translation", 0x5bb1_988d_36af_af01),
        ("agent", 0x53c9_03fd_7c5e_afee),
        ("many-adapters", 0xd989_35a9_9c87_498c),
    ];
    for (name, fp) in expect {
        let mut s = trace_spec(name, &rows);
        s.followup_pick = FollowupPick::Uniform;
        assert_eq!(fingerprint(&sim::generate(&s)), fp, "{name}");
    }
    let source = Source::Poisson { rate: 4.0, duration_s: 120.0, prompt_mean: 600.0, output_mean: 60.0 };
    let mut s = WorkloadSpec::preset("agent", source, 9).unwrap();
    s.followup_pick = FollowupPick::Uniform;
    assert_eq!(fingerprint(&sim::generate(&s)), 0x730b_e714_07c9_5f44);
}

#[test]
fn think_time_is_the_default_and_deterministic() {
    let s = WorkloadSpec::preset("chatbot", Source::Synthetic { duration_s: 900.0 }, 1).unwrap();
    assert_eq!(s.followup_pick, FollowupPick::ThinkTime);
    assert_eq!(fingerprint(&sim::generate(&s)), fingerprint(&sim::generate(&s)));
    let mut t = s.clone();
    t.seed = 2;
    assert_ne!(fingerprint(&sim::generate(&s)), fingerprint(&sim::generate(&t)));
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[test]
fn follow_ups_come_after_a_think_time_of_the_given_mean() {
    let mut s = poisson_spec(20.0, 600.0, 4);
    for mean in [10.0, 40.0] {
        s.think_mean_s = mean;
        let wl = sim::generate(&s);
        let gaps = wl.turn_gaps_s();
        let followups = wl.requests.iter().filter(|r| r.turn > 0).count();
        assert_eq!(gaps.len(), followups);
        // Each turn is followed by another with the spec's probability, so the share of
        // follow-ups is the same as the uniform pick's, less the users still thinking when the
        // window ends.
        let share = followups as f64 / wl.requests.len() as f64;
        assert!(share < s.follow_prob && share > s.follow_prob - 0.05, "follow-up share {share:.3}");
        // The arrival is the user due first: the gap is the think time plus a wait for the next
        // arrival (1/20 s). Log-normal, sigma 1: median = 0.61 x mean.
        let m = median(gaps.clone());
        assert!(m > 0.5 * mean && m < 0.75 * mean, "mean think {mean} s: median gap {m:.1} s");
        let avg = gaps.iter().sum::<f64>() / gaps.len() as f64;
        assert!(avg > 0.8 * mean && avg < 1.1 * mean, "mean think {mean} s: mean gap {avg:.1} s");
    }
    // The uniform pick continues conversations idle for minutes as readily as fresh ones: its
    // median gap is twice the think-time median of a 40 s mean.
    s.followup_pick = FollowupPick::Uniform;
    s.think_mean_s = 40.0;
    let m = median(sim::generate(&s).turn_gaps_s());
    assert!(m > 50.0, "uniform pick: median gap {m:.1} s");
}

#[test]
fn long_idle_conversations_rarely_continue() {
    // With think times, the chance that a conversation continues falls with its idle time;
    // with the uniform pick it does not. Count the follow-ups that come more than 5 think-time
    // means after the previous turn.
    let mut s = poisson_spec(20.0, 600.0, 8);
    s.think_mean_s = 20.0;
    let late = |s: &WorkloadSpec| {
        let g = sim::generate(s).turn_gaps_s();
        g.iter().filter(|&&x| x > 100.0).count() as f64 / g.len() as f64
    };
    let think = late(&s);
    s.followup_pick = FollowupPick::Uniform;
    let uniform = late(&s);
    // Log-normal, sigma 1: P(think > 5 x mean) = 1 - Phi(ln 5 + 0.5) = 3.5%.
    assert!(think < 0.05, "think-time: {:.1}% of follow-ups after 100 s", 100.0 * think);
    assert!(uniform > 0.3, "uniform: {:.1}% of follow-ups after 100 s", 100.0 * uniform);
}

/// Mean, median, P90, and the inter-arrival coefficient of variation.
struct Stats {
    rate: f64,
    prompt: (f64, f64, f64),
    output: (f64, f64, f64),
    interarrival_cv: f64,
}

fn stats(rows: &[TraceRow]) -> Stats {
    let summary = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        let mean = v.iter().sum::<f64>() / v.len() as f64;
        (mean, v[v.len() / 2], v[(v.len() as f64 * 0.9) as usize])
    };
    let gaps: Vec<f64> = rows.windows(2).map(|w| w[1].t_s - w[0].t_s).collect();
    let gm = gaps.iter().sum::<f64>() / gaps.len() as f64;
    let gsd = (gaps.iter().map(|g| (g - gm) * (g - gm)).sum::<f64>() / gaps.len() as f64).sqrt();
    Stats {
        rate: rows.len() as f64 / rows.last().unwrap().t_s,
        prompt: summary(rows.iter().map(|r| r.prompt as f64).collect()),
        output: summary(rows.iter().map(|r| r.output as f64).collect()),
        interarrival_cv: gsd / gm,
    }
}

fn close(what: &str, got: f64, want: f64, tol: f64) {
    assert!((got / want - 1.0).abs() <= tol, "{what}: {got:.3} vs {want:.3} (tolerance {tol})");
}

#[test]
fn built_in_generator_has_the_stated_statistics() {
    // An hour of the generator, as long as the trace, against the figures in `synth`'s header.
    let rows = synth::rows(&mut Rng::new(1), 3600.0);
    let s = stats(&rows);
    println!(
        "built-in: {:.2} req/s, prompt mean/P50/P90 {:.0}/{:.0}/{:.0}, output {:.0}/{:.0}/{:.0}, \
         inter-arrival CV {:.2}",
        s.rate, s.prompt.0, s.prompt.1, s.prompt.2, s.output.0, s.output.1, s.output.2, s.interarrival_cv
    );
    close("rate", s.rate, 5.53, 0.12);
    close("prompt mean", s.prompt.0, 1155.0, 0.05);
    close("prompt median", s.prompt.1, 1020.0, 0.03);
    close("prompt P90", s.prompt.2, 2734.0, 0.05);
    close("output mean", s.output.0, 211.0, 0.05);
    close("output median", s.output.1, 129.0, 0.05);
    close("output P90", s.output.2, 424.0, 0.05);
    // Poisson within a minute, a slowly varying rate across minutes: a little over 1.
    assert!(s.interarrival_cv > 1.0 && s.interarrival_cv < 1.2, "CV {:.3}", s.interarrival_cv);
    // Deterministic in the seed.
    assert_eq!(rows, synth::rows(&mut Rng::new(1), 3600.0));
}

#[test]
fn built_in_generator_matches_the_trace() {
    let Some(trace) = trace_rows() else { return };
    let t = stats(&trace);
    let s = stats(&synth::rows(&mut Rng::new(1), t.rate.recip() * trace.len() as f64));
    println!(
        "trace: {:.2} req/s, prompt {:.0}/{:.0}/{:.0}, output {:.0}/{:.0}/{:.0}, CV {:.2}",
        t.rate, t.prompt.0, t.prompt.1, t.prompt.2, t.output.0, t.output.1, t.output.2, t.interarrival_cv
    );
    close("rate", s.rate, t.rate, 0.12);
    close("prompt mean", s.prompt.0, t.prompt.0, 0.05);
    close("prompt median", s.prompt.1, t.prompt.1, 0.03);
    close("prompt P90", s.prompt.2, t.prompt.2, 0.05);
    close("output mean", s.output.0, t.output.0, 0.05);
    close("output median", s.output.1, t.output.1, 0.05);
    close("output P90", s.output.2, t.output.2, 0.05);
    close("inter-arrival CV", s.interarrival_cv, t.interarrival_cv, 0.1);
    // The scenario's workload built on either source has the same shape of conversations.
    let spec = |source| WorkloadSpec::preset("chatbot", source, 1).unwrap();
    let real = sim::generate(&spec(Source::Trace {
        rows: trace.clone(),
        label: "azure".into(),
        start_s: 0.0,
        duration_s: 900.0,
    }));
    let built = sim::generate(&spec(Source::Synthetic { duration_s: 900.0 }));
    let share =
        |w: &Workload| w.requests.iter().filter(|r| r.turn > 0).count() as f64 / w.requests.len() as f64;
    assert!((share(&real) - share(&built)).abs() < 0.05, "{} vs {}", share(&real), share(&built));
}
