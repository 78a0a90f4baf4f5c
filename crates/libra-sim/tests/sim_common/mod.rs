//! Workloads and engines shared by the simulator's tests.
use libra_sim::{self as sim, EngineConfig, Hardware, RunResult, SimPolicy, Source, WorkloadSpec};

/// A chatbot of 8 adapters on Poisson arrivals, at the given rate (no load multiplier).
pub fn spec(rate: f64, duration_s: f64, seed: u64) -> WorkloadSpec {
    let source = Source::Poisson { rate, duration_s, prompt_mean: 600.0, output_mean: 60.0 };
    let mut s = WorkloadSpec::preset("chatbot", source, seed).unwrap();
    s.rate_mult = 1.0;
    s.adapters = 8;
    s.min_gap_s = 2.0;
    s
}

/// Llama3-8B on an H800 with the given pool sizes.
pub fn engine(gpu_blocks: u32, host_blocks: u32) -> EngineConfig {
    let mut ec = EngineConfig::new(Hardware::preset("llama3-8b-h800").unwrap());
    ec.gpu_blocks = Some(gpu_blocks);
    ec.host_blocks = Some(host_blocks);
    ec
}

pub fn run(spec: &WorkloadSpec, ec: &EngineConfig, p: SimPolicy) -> RunResult {
    let wl = sim::generate(spec);
    sim::run(&wl, spec, ec, p, &mut |_| {}).unwrap()
}
