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
    run_on(&spec(), layers_per_group, true, p)
}

fn run_on(s: &WorkloadSpec, layers_per_group: u32, layered_adapters: bool, p: SimPolicy) -> RunResult {
    let mut ec = EngineConfig::new(Hardware::preset("llama3-8b-h800").unwrap());
    // Tight GPU memory and a large host tier, so that prefixes come back from the host.
    ec.gpu_blocks = Some(4_000);
    ec.host_blocks = Some(40_000);
    ec.layers_per_group = layers_per_group;
    ec.layered_adapters = layered_adapters;
    let wl = sim::generate(s);
    sim::run(&wl, s, &ec, p, &mut |_| {}).unwrap()
}

#[test]
fn layered_adapters_let_a_request_start_before_its_whole_adapter_is_in() {
    // Many adapters in a small pool: adapters are loaded all the time.
    let mut s = spec();
    s.adapters = 64;
    for p in [SimPolicy::Lib(PolicyKind::Libra), SimPolicy::Oracle] {
        let whole = run_on(&s, 4, false, p);
        let layered = run_on(&s, 4, true, p);
        assert!(whole.adapter_loads > 50, "{}: {} adapter loads", p.name(), whole.adapter_loads);
        println!(
            "{}: mean TTFT {:.1} ms with whole adapters, {:.1} ms layer by layer ({} and {} joined)",
            p.name(),
            whole.ttft_mean_ms(),
            layered.ttft_mean_ms(),
            whole.joined_loading,
            layered.joined_loading
        );
        assert!(layered.joined_loading > whole.joined_loading, "{}: no more joins", p.name());
        assert!(layered.ttft_mean_ms() < whole.ttft_mean_ms(), "{}: no gain", p.name());
    }
    // The peers and libra's tree under other rankings load adapters whole either way.
    for p in [SimPolicy::Lib(PolicyKind::Elora), SimPolicy::Lib(PolicyKind::HiCache)] {
        assert_eq!(run_on(&s, 4, true, p).ttft_us, run_on(&s, 4, false, p).ttft_us, "{}", p.name());
    }
}

#[test]
fn a_grouped_upload_lands_group_by_group() {
    let hw = Hardware::preset("llama3-8b-h800").unwrap();
    let mut io = TimingBackend::new(64, 64, hw.kv_block_bytes(16), &hw, 3.0);
    let bytes = vec![0u8; 8 * io.gpu_layout().block_bytes() as usize];
    let blocks: Vec<u32> = (0..8).collect();
    let whole = io.submit_upload(&bytes, &blocks).unwrap();
    let grouped = io.submit_upload_grouped(&bytes, &blocks, &[2, 2, 5, 8]).unwrap();
    assert!(!io.is_grouped(whole) && io.is_grouped(grouped));
    let t: Vec<u64> = (0..4).map(|g| io.group_ready_at(grouped, g).unwrap()).collect();
    let start = io.group_ready_at(whole, 0).unwrap();
    // Each group's blocks cross the link after the group before, one launch (3 us) each; the
    // empty group costs only its launch.
    let per_block = (start as f64 - 20.0) / 8.0;
    let want = [2.0, 2.0, 5.0, 8.0].map(|b| start as f64 + 20.0 + b * per_block);
    for (g, (&got, w)) in t.iter().zip(want).enumerate() {
        let w = w + 3.0 * g as f64;
        assert!((got as f64 - w).abs() <= 1.5, "group {g}: {got} vs {w:.1} ({t:?})");
    }
    io.now = t[1];
    assert_eq!(io.groups_done(grouped, 4), 2);
    assert!(io.submit_upload_grouped(&bytes, &blocks, &[2, 9]).is_err());
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

/// The link is full duplex: copies to the GPU queue behind copies to the GPU only, so a swap-in
/// or an upload submitted behind a long write-back lands as if the link were idle.
#[test]
fn copies_to_the_gpu_do_not_queue_behind_copies_to_the_host() {
    let hw = Hardware::preset("llama3-8b-h800").unwrap();
    let mut io = TimingBackend::new(64, 64, hw.kv_block_bytes(16), &hw, 3.0);
    let moves =
        |n: u32| -> Vec<BlockMove> { (0..n).map(|i| BlockMove { gpu_block: i, host_block: i }).collect() };
    let alone = io.submit_moves(Direction::HostToGpu, &moves(4)).unwrap();
    let alone_done = io.group_ready_at(alone, 0).unwrap();
    io.now = alone_done;
    let out = io.submit_moves(Direction::GpuToHost, &moves(60)).unwrap();
    let back = io.submit_moves(Direction::HostToGpu, &moves(4)).unwrap();
    let bytes = vec![0u8; 4 * io.gpu_layout().block_bytes() as usize];
    let upload = io.submit_upload(&bytes, &[8, 9, 10, 11]).unwrap();
    let (out_done, back_done) = (io.group_ready_at(out, 0).unwrap(), io.group_ready_at(back, 0).unwrap());
    assert!(out_done > back_done, "the write-back is the longer copy");
    assert_eq!(back_done - alone_done, alone_done, "the swap-in waited for the write-back");
    // The upload queues behind the swap-in, the other copy to the GPU.
    assert_eq!(io.group_ready_at(upload, 0).unwrap() - back_done, alone_done);
    // A second write-back queues behind the first.
    let out2 = io.submit_moves(Direction::GpuToHost, &moves(4)).unwrap();
    assert_eq!(io.group_ready_at(out2, 0).unwrap() - out_done, alone_done);
}

/// The join rule in the engine: a loading request joins a step only if its layers' stall,
/// times the sequences already in the batch, stays within `join_slack` steps. With no slack no
/// step ever waits for a layer, yet requests still join when their groups land in time; the
/// more slack, the more time steps spend waiting, and no fewer joins (to within 2%).
#[test]
fn the_join_rule_bounds_the_stall_a_joiner_adds() {
    let s = spec();
    let wl = sim::generate(&s);
    let run_slack = |slack: f64| {
        let mut ec = EngineConfig::new(Hardware::preset("llama3-8b-h800").unwrap());
        ec.gpu_blocks = Some(4_000);
        ec.host_blocks = Some(40_000);
        ec.join_slack = slack;
        sim::run(&wl, &s, &ec, SimPolicy::Lib(PolicyKind::Libra), &mut |_| {}).unwrap()
    };
    let (none, default, unbounded) = (run_slack(0.0), run_slack(1.0), run_slack(1e9));
    println!(
        "joins / layer wait (ms): slack 0 {} / {:.3}, slack 1 {} / {:.3}, unbounded {} / {:.3}",
        none.joined_loading,
        none.layer_wait_ms,
        default.joined_loading,
        default.layer_wait_ms,
        unbounded.joined_loading,
        unbounded.layer_wait_ms
    );
    assert!(none.joined_loading > 0, "no request joined a step");
    assert!(none.layer_wait_ms < 1e-3 * none.joined_loading as f64, "{} ms", none.layer_wait_ms);
    // Each join decision admits more with more slack, but a join changes what later requests
    // find on the GPU, so the totals may differ by a request or two the other way.
    let near_or_above = |more: u64, less: u64| more * 100 >= less * 98;
    assert!(
        near_or_above(default.joined_loading, none.joined_loading)
            && near_or_above(unbounded.joined_loading, default.joined_loading)
    );
    assert!(unbounded.layer_wait_ms > default.layer_wait_ms && default.layer_wait_ms > none.layer_wait_ms);
}
