//! The peers of the simulator behave as the projects they follow document: vLLM's offloading
//! connector keeps evicted KV on the host, SGLang's HiCache writes KV through to a host tier
//! of twice its KV pool, S-LoRA's admission never over-commits memory, the
//! released ELoRA ranks by visits, overloaded runs are recognised early, and popularity drift
//! redraws which adapters are popular.
use libra::PolicyKind;
use libra_sim::grid::{self, PeakSearch};
use libra_sim::{self as sim, SimPolicy, Source, WorkloadSpec};

mod sim_common;
use sim_common::{engine, run};

/// The shared chatbot with 10 s think times.
fn spec(rate: f64, duration_s: f64, seed: u64) -> WorkloadSpec {
    let mut s = sim_common::spec(rate, duration_s, seed);
    s.think_mean_s = 10.0;
    s
}

const VLLM: SimPolicy = SimPolicy::Lib(PolicyKind::Vllm);
const OFFLOAD: SimPolicy = SimPolicy::Lib(PolicyKind::VllmOffload);
const HICACHE: SimPolicy = SimPolicy::Lib(PolicyKind::HiCache);
const SLORA: SimPolicy = SimPolicy::Lib(PolicyKind::Slora);

#[test]
fn offloading_connector_keeps_evicted_kv_on_the_host() {
    let s = spec(4.0, 60.0, 3);
    // Ample memory: nothing is evicted, so the host tier changes nothing.
    let big = engine(2_000_000, 100_000);
    assert_eq!(run(&s, &big, VLLM).ttft_us, run(&s, &big, OFFLOAD).ttft_us);
    // Tight memory: vLLM drops what its KV region evicts, the connector loads it back.
    let tight = engine(3_000, 30_000);
    let (v, o) = (run(&s, &tight, VLLM), run(&s, &tight, OFFLOAD));
    assert_eq!(v.host_hit_tokens, 0);
    assert!(o.host_hit_tokens > 0, "no host hits");
    assert!(o.swap_out_blocks > 0 && o.swap_in_blocks > 0);
    // More of the prompts is found (a store at eviction costs link time on the allocation
    // path, so TTFT may go either way).
    assert!(o.gpu_hit_tokens + o.host_hit_tokens > v.gpu_hit_tokens + v.host_hit_tokens);
    // The adapter region is the engine's knob.
    let mut wide = tight.clone();
    wide.vllm_adapter_fraction = 0.5;
    assert_ne!(run(&s, &wide, VLLM).ttft_us, v.ttft_us);
}

#[test]
fn hicache_writes_through_to_a_host_pool_twice_its_kv_pool() {
    let s = spec(4.0, 60.0, 3);
    // Ample memory: nothing leaves the GPU, yet HiCache copies its KV to the host (write-through)
    // where the offloading connector, which stores at eviction, copies nothing.
    let big = engine(2_000_000, 100_000);
    let (o, h) = (run(&s, &big, OFFLOAD), run(&s, &big, HICACHE));
    assert_eq!((o.swap_out_blocks, h.swap_out_blocks), (0, 0));
    assert!(
        h.host_link_bytes > o.host_link_bytes,
        "no write-through: {} vs {}",
        h.host_link_bytes,
        o.host_link_bytes
    );
    // Tight memory: evicted blocks come back from the host.
    let tight = engine(3_000, 30_000);
    let h = run(&s, &tight, HICACHE);
    assert!(h.host_hit_tokens > 0 && h.swap_out_blocks > 0 && h.swap_in_blocks > 0);
    // The adapter pool is separate and sized like vLLM's region: the share changes the run.
    let mut wide = tight.clone();
    wide.vllm_adapter_fraction = 0.5;
    assert_ne!(run(&s, &wide, HICACHE).ttft_us, h.ttft_us);
    // `--hicache-ratio 2`: the host pool is twice the KV region, capped by what the host has.
    assert_eq!(HICACHE.host_blocks(30_000, 3_000, 0.2), 4_800);
    assert_eq!(HICACHE.host_blocks(1_000, 3_000, 0.2), 1_000);
    assert_eq!(OFFLOAD.host_blocks(30_000, 3_000, 0.2), 30_000);
    assert!(PolicyKind::HiCache.uncoupled() && PolicyKind::HiCache.writes_through());
}

#[test]
fn slora_admission_never_needs_preemption() {
    let source = Source::Poisson { rate: 8.0, duration_s: 30.0, prompt_mean: 600.0, output_mean: 400.0 };
    let mut s = WorkloadSpec::preset("chatbot", source, 5).unwrap();
    s.rate_mult = 1.0;
    s.adapters = 8;
    let tight = engine(1_500, 0);
    let r = run(&s, &tight, SLORA);
    assert_eq!(r.preemptions, 0, "S-LoRA reserves every admitted request's whole output");
    assert_eq!(r.completed as usize, sim::generate(&s).requests.len());
    // Without the reservation the same pool preempts: the check is what prevents it.
    assert!(
        run(&s, &tight, VLLM).preemptions + run(&s, &tight, SimPolicy::Lib(PolicyKind::Lru)).preemptions > 0
    );
}

#[test]
fn released_elora_is_elora_with_a_frozen_clock() {
    let s = spec(5.0, 60.0, 9);
    let ec = engine(4_000, 20_000);
    let a = run(&s, &ec, SimPolicy::EloraAuthors);
    let e = run(&s, &ec, SimPolicy::Lib(PolicyKind::Elora));
    assert_eq!(a.policy, "elora-authors");
    assert_eq!(a.completed, e.completed);
    assert!(a.swap_out_blocks > 0, "the pool must be under pressure to rank anything");
    assert_eq!(SimPolicy::parse("elora-authors"), Some(SimPolicy::EloraAuthors));
}

#[test]
fn an_overloaded_run_gives_up_early() {
    let s = spec(40.0, 60.0, 2);
    let mut ec = engine(3_000, 0);
    ec.give_up_wait_us = Some(5_000_000);
    let r = run(&s, &ec, VLLM);
    assert!(r.gave_up);
    assert!((r.completed as usize) < sim::generate(&s).requests.len());
    // A light load never gives up.
    let light = run(&spec(1.0, 30.0, 2), &ec, VLLM);
    assert!(!light.gave_up);
    // The peak search brackets the load: passing at the peak, failing at twice it.
    let ps = PeakSearch { bisections: 2, give_up_wait_us: 5_000_000, ..PeakSearch::default() };
    let mut base = spec(2.0, 30.0, 2);
    base.rate_mult = 1.0;
    let ec = engine(6_000, 20_000);
    let pk =
        grid::peaks(&base, std::slice::from_ref(&ec), &[SimPolicy::Lib(PolicyKind::Libra)], ps, 2, &|_| {})
            .unwrap();
    let m = pk[0].expect("a light load passes");
    let at = |x: f64| run(&grid::at_load(&base, x), &ec, SimPolicy::Lib(PolicyKind::Libra)).ttft_mean_ms();
    assert!(at(m) < ps.bound_ms);
    assert!(at(2.0 * m) >= ps.bound_ms || m >= 32.0);
}

#[test]
fn popularity_drift_redraws_the_popular_adapters() {
    let mut s = spec(20.0, 200.0, 4);
    s.adapters = 50;
    s.follow_prob = 0.0;
    let top = |s: &WorkloadSpec, from: u64, to: u64| {
        let wl = sim::generate(s);
        let mut n = [0u32; 50];
        for r in wl.requests.iter().filter(|r| r.arrival_us >= from && r.arrival_us < to) {
            n[r.adapter as usize] += 1;
        }
        (0..50).max_by_key(|&a| n[a]).unwrap()
    };
    // Without drift the most popular adapter stays the same; with it, it changes.
    assert_eq!(top(&s, 0, 100_000_000), top(&s, 100_000_000, 200_000_000));
    let plain = sim::generate(&s);
    s.popularity_period_s = 100.0;
    assert_ne!(top(&s, 0, 100_000_000), top(&s, 100_000_000, 200_000_000));
    // Arrivals and lengths do not depend on it.
    let drift = sim::generate(&s);
    let times = |w: &sim::Workload| w.requests.iter().map(|r| (r.arrival_us, r.prompt)).collect::<Vec<_>>();
    assert_eq!(times(&plain), times(&drift));
}
