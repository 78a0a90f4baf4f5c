//! The workload generator: which conversation a follow-up continues.
use libra::sim::{self, FollowupPick, Source, Workload, WorkloadSpec};
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

fn trace_spec(name: &str) -> WorkloadSpec {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/data/traces/azure_llm_2023_conv.csv");
    let rows = Arc::new(sim::parse_azure_csv(&std::fs::read_to_string(path).unwrap()).unwrap());
    let source = Source::Trace { rows, label: "azure".into(), start_s: 0.0, duration_s: 900.0 };
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
    // Fingerprints of the generator before think times existed, same specs and seeds.
    let expect = [
        ("chatbot", 0x5e5b_3241_c836_45ab_u64),
        ("translation", 0x5bb1_988d_36af_af01),
        ("agent", 0x53c9_03fd_7c5e_afee),
        ("many-adapters", 0xd989_35a9_9c87_498c),
    ];
    for (name, fp) in expect {
        let mut s = trace_spec(name);
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
    let s = trace_spec("chatbot");
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
