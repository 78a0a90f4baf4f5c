//! Layer-wise readiness in the simulated engine: a request whose prefix is on the host link
//! joins the step its copy lands in, and its layers wait only for their own group.
use libra::backend::{Backend, BlockMove, Direction, SegmentGroups};
use libra::PolicyKind;
use libra_sim::{
    self as sim, EngineConfig, Hardware, RunResult, SimPolicy, Source, TimingBackend, WorkloadSpec,
};

fn spec() -> WorkloadSpec {
    let source = Source::Poisson { rate: 6.0, duration_s: 60.0, prompt_mean: 900.0, output_mean: 60.0 };
    let mut s = WorkloadSpec::preset("agent", source, 5).unwrap();
    s.rate_mult = 1.0;
    s.adapters = 8;
    s
}

fn run(layers_per_group: u32, p: SimPolicy) -> RunResult {
    let mut ec = EngineConfig::new(Hardware::preset("llama3-8b-h800").unwrap());
    // Tight GPU memory and a large host tier, so that prefixes come back from the host.
    ec.gpu_blocks = Some(4_000);
    ec.host_blocks = Some(40_000);
    ec.layers_per_group = layers_per_group;
    let s = spec();
    let wl = sim::generate(&s);
    sim::run(&wl, &s, &ec, p, &mut |_| {}).unwrap()
}

#[test]
fn loading_requests_join_the_step_their_copy_lands_in() {
    for p in [SimPolicy::Lib(PolicyKind::Elora), SimPolicy::Oracle] {
        let before = run(0, p);
        let after = run(4, p);
        assert!(
            before.host_hit_tokens > 0,
            "{}: the workload must load prefixes from the host",
            before.policy
        );
        assert_eq!(before.joined_loading, 0);
        assert!(after.joined_loading > 0, "{}: no loading request joined a step", after.policy);
        assert_eq!(after.completed, before.completed);
        println!(
            "{}: mean TTFT {:.1} ms waiting for the next step, {:.1} ms joining ({} joined, layers waited {:.1} ms)",
            after.policy,
            before.ttft_mean_ms(),
            after.ttft_mean_ms(),
            after.joined_loading,
            after.layer_wait_ms
        );
        assert!(after.ttft_mean_ms() < before.ttft_mean_ms(), "{}: joining did not lower TTFT", after.policy);
    }
}

#[test]
fn a_grouped_copy_lands_group_by_group() {
    let hw = Hardware::preset("llama3-8b-h800").unwrap();
    let bb = hw.kv_block_bytes(16);
    let mut io = TimingBackend::new(64, 64, bb, &hw, 3.0);
    let layers = io.gpu_layout().segments().len();
    assert_eq!(layers, hw.model.layers as usize);
    let moves: Vec<BlockMove> = (0..8).map(|i| BlockMove { gpu_block: i, host_block: i }).collect();
    let whole = io.submit_moves(Direction::HostToGpu, &moves).unwrap();
    let groups = SegmentGroups::new(layers, 4);
    let grouped = io.submit_moves_grouped(Direction::HostToGpu, &moves, groups).unwrap();
    let whole_done = io.group_ready_at(whole, 0).unwrap();
    let times: Vec<u64> = (0..groups.count()).map(|g| io.group_ready_at(grouped, g).unwrap()).collect();
    assert!(times.windows(2).all(|w| w[0] < w[1]), "{times:?}");
    // The grouped copy queues behind the first on the link and costs one launch more per group.
    let span = times[7] - whole_done;
    let single = whole_done;
    assert!(span >= single + 7 * 3 && span <= single + 7 * 3 + 2, "{span} vs {single}");
    io.now = times[2];
    assert_eq!(io.groups_done(grouped, groups.count()), 3);
    assert_eq!(io.groups_done(whole, 1), 1);
    assert!(io.submit_moves_grouped(Direction::HostToGpu, &moves, SegmentGroups::new(3, 1)).is_err());
}
