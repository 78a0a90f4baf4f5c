//! The scheduling order on a pool too small for its running batch: decodes are served before
//! new requests, and a step that preempts admits nobody.
use super::{EngineConfig, Phase, Sim, SimPolicy};
use crate::hw::Hardware;
use crate::workload::{Request, Source, Workload, WorkloadSpec};
use libra::PolicyKind;

const BT: u32 = 16;

/// Two long requests of 4 blocks each (the second with 8 tokens to spare in its last block) at
/// time 0, and a one-block request arriving at `late_us`; all of adapter 0.
fn workload(late_us: u64) -> Workload {
    let req = |arrival_us: u64, session: u32, prompt: u32, output: u32| Request {
        arrival_us,
        adapter: 0,
        session,
        turn: 0,
        prompt,
        output,
    };
    let requests = vec![req(0, 0, 4 * BT, 4 * BT), req(0, 1, 4 * BT - 8, 4 * BT), req(late_us, 2, BT, 4)];
    // Distinct tokens per session: no request shares a block with another.
    let sessions = (0..3u32).map(|s| (0..8 * BT).map(|t| s * 1000 + t + 1).collect()).collect();
    Workload { requests, sessions }
}

fn spec() -> WorkloadSpec {
    let source = Source::Poisson { rate: 1.0, duration_s: 1.0, prompt_mean: 64.0, output_mean: 64.0 };
    let mut s = WorkloadSpec::preset("chatbot", source, 1).expect("a preset");
    s.adapters = 1;
    s.ranks = vec![8];
    s
}

/// A pool with the adapter and `kv` KV blocks.
fn engine(s: &WorkloadSpec, kv: u32) -> EngineConfig {
    let mut ec = EngineConfig::new(Hardware::preset("llama3-8b-h800").expect("a preset"));
    let adapter = (ec.hw.adapter_bytes(s.rank_of(0)) / ec.hw.kv_block_bytes(BT)).ceil().max(1.0) as u32;
    ec.block_tokens = BT;
    ec.gpu_blocks = Some(adapter + kv);
    ec.host_blocks = Some(0);
    ec
}

/// What one scheduling step changed: the waiting queue and the running requests (workload
/// indices) before and after it, how many it preempted, and how many decodes needed a block.
struct Observed {
    waiting_before: Vec<u32>,
    running_before: Vec<u32>,
    waiting_after: Vec<u32>,
    running_after: Vec<u32>,
    preempted: u64,
    decodes_at_boundary: usize,
}

/// One engine step as `run` takes it, with its scheduling observed.
fn step(sim: &mut Sim) -> Observed {
    let running = |sim: &Sim| sim.running.iter().map(|s| s.idx).collect::<Vec<_>>();
    let waiting = |sim: &Sim| sim.waiting.iter().copied().collect::<Vec<_>>();
    assert!(sim.arrive());
    sim.cache_step().unwrap();
    let (waiting_before, running_before, p0) = (waiting(sim), running(sim), sim.res.preemptions);
    let decodes_at_boundary =
        sim.running.iter().filter(|q| q.phase == Phase::Decode && q.computed >= q.cap).count();
    let budget = sim.schedule().unwrap();
    let seen = Observed {
        waiting_before,
        running_before,
        waiting_after: waiting(sim),
        running_after: running(sim),
        preempted: sim.res.preemptions - p0,
        decodes_at_boundary,
    };
    let mut batch = sim.batch(budget);
    sim.join_loading(&mut batch).unwrap();
    if batch.is_empty() {
        assert!(sim.idle(batch.join_at).unwrap());
    } else {
        sim.execute(batch).unwrap();
    }
    seen
}

/// When the first decode (request 0's) needs its fifth block: the clock at the start of that
/// step and of the one before, with the third request arriving long after.
fn boundary_step_times(s: &WorkloadSpec, ec: &EngineConfig) -> (u64, u64) {
    let wl = workload(10_000_000);
    let mut sim = Sim::new(&wl, s, ec, SimPolicy::Lib(PolicyKind::Libra)).unwrap();
    let mut before = 0;
    for _ in 0..100 {
        let now = sim.io.now;
        if step(&mut sim).decodes_at_boundary > 0 {
            return (before, now);
        }
        before = now;
    }
    panic!("request 0 never reached decoding");
}

#[test]
fn a_step_that_preempts_admits_nobody() {
    let (wl, s) = (workload(0), spec());
    // Room for both long prompts (4 blocks each) and one block more.
    let ec = engine(&s, 9);
    let mut sim = Sim::new(&wl, &s, &ec, SimPolicy::Lib(PolicyKind::Libra)).unwrap();
    let mut preempting_steps = 0;
    for _ in 0..400 {
        if sim.done == wl.requests.len() {
            break;
        }
        let o = step(&mut sim);
        if o.preempted > 0 {
            preempting_steps += 1;
            // The victims go back to the front of the queue; no one joins the batch.
            let (before, after) = (&o.running_before, &o.running_after);
            assert!(
                after.iter().all(|i| before.contains(i)),
                "admitted {after:?} in a preempting step (before {before:?})"
            );
            let victims = o.preempted as usize;
            assert_eq!(o.waiting_after.len(), o.waiting_before.len() + victims);
            assert_eq!(&o.waiting_after[victims..], &o.waiting_before[..]);
        }
    }
    assert_eq!(sim.done, wl.requests.len(), "every request finishes");
    assert!(preempting_steps > 0, "the pool is meant to be too small for both decodes");
}

#[test]
fn running_decodes_get_blocks_before_new_requests() {
    let s = spec();
    let ec = engine(&s, 9);
    // The two long prompts take 8 of the 9 KV blocks. The one-block request arrives just
    // before request 0 fills its blocks, so that both want the spare block in one step.
    let (before, at) = boundary_step_times(&s, &ec);
    assert!(at > before + 1);
    let wl = workload(at - 1);
    let mut sim = Sim::new(&wl, &s, &ec, SimPolicy::Lib(PolicyKind::Libra)).unwrap();
    for _ in 0..100 {
        let o = step(&mut sim);
        if o.decodes_at_boundary > 0 {
            assert_eq!(o.waiting_before, vec![2], "the third request waits");
            assert_eq!(o.running_before, vec![0, 1]);
            // Admitted ahead of the decode, the newcomer would have taken the spare block and
            // been preempted by it at once.
            assert_eq!(o.preempted, 0);
            assert_eq!(o.running_after, vec![0, 1], "the third request took the block a decode needed");
            return;
        }
    }
    panic!("request 0 never reached decoding");
}
