//! Random request sequences over grouped swap-ins and (adapters registered layer by layer)
//! grouped adapter uploads with faults: batches held and released group by group, batches
//! failing at a chosen group after the earlier ones landed, refused and failed submissions.
//! After every operation: the invariants hold, every cached block holds its prefix's bytes in
//! the tier with its valid copy, a pending request's ready groups never go back, and every
//! group reported ready holds the right bytes in each of its blocks and of its adapter's.
use libra::backend::cpu::CpuBackend;
use libra::backend::{Backend, Segment};
use libra::cache::{CacheConfig, CacheCore, PolicyKind, Readiness};
use libra_testkit::faulty::{FaultPlan, FaultyBackend};
use libra_testkit::fixtures::{family_tokens, pattern, weights, BLOCK_BYTES};
use libra_testkit::requests::Open;

const SEGS: usize = 8;
const PIECE: usize = BLOCK_BYTES as usize / SEGS;
const PER_GROUP: u32 = 2;
const GPU: u32 = 24;
const HOST: u32 = 12;
const BT: usize = 4;
const GROUPS: usize = SEGS / PER_GROUP as usize;
/// Adapter weights: two blocks whole, or (layered) three, the last one partly filled.
const WEIGHTS: usize = 40;
const LAYERED_WEIGHTS: usize = 90;

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

#[derive(Default)]
struct Tally {
    partial_checks: u64,
    failed: u64,
    completed: u64,
}

/// Groups `0..ready` of every matched block hold the prefix's bytes, and a layered adapter's
/// blocks hold the layers of those groups: the leading `ready / GROUPS` of its weights.
fn check_groups(
    core: &CacheCore,
    io: &mut dyn Backend,
    o: &Open,
    ready: u32,
    layered: bool,
) -> Result<(), String> {
    if layered {
        let w = weights(o.adapter, LAYERED_WEIGHTS);
        let mut landed = Vec::new();
        let mut buf = vec![0u8; BLOCK_BYTES as usize];
        for b in core.adapter_gpu_blocks(o.adapter).map_err(|e| e.message)? {
            io.read_gpu_block(b, &mut buf).unwrap();
            landed.extend_from_slice(&buf);
        }
        let end = ready as usize * w.len() / GROUPS;
        if landed.len() < end || landed[..end] != w[..end] {
            return Err(format!("request {}: its adapter is wrong in its {ready} ready groups", o.id));
        }
    }
    let keys = core.prefix_keys(o.adapter, 0, &o.tokens[..o.matched.len() * BT]);
    let mut buf = vec![0u8; BLOCK_BYTES as usize];
    let end = (ready * PER_GROUP) as usize * PIECE;
    for (i, &b) in o.matched.iter().enumerate() {
        io.read_gpu_block(b, &mut buf).unwrap();
        if buf[..end.min(buf.len())] != pattern(keys[i])[..end.min(buf.len())] {
            return Err(format!(
                "request {}: block {i} (GPU {b}) is wrong in its {ready} ready groups",
                o.id
            ));
        }
    }
    Ok(())
}

fn run(policy: PolicyKind, seed: u64, ops: usize, layered: bool) -> Tally {
    let mut mem: Vec<Vec<u8>> = (0..SEGS).map(|_| vec![0u8; GPU as usize * PIECE]).collect();
    let segs: Vec<Segment> = mem
        .iter_mut()
        .map(|m| Segment { base: m.as_mut_ptr() as u64, bytes_per_block: PIECE as u64, stride: PIECE as u64 })
        .collect();
    // SAFETY: `mem` outlives the backend (dropped at the end of this function, after it).
    let cpu = unsafe { CpuBackend::adopt(segs, GPU, HOST) }.unwrap();
    let plan = FaultPlan {
        seed,
        submit_fail_rate: 0.03,
        complete_fail_rate: 0.03,
        hold: true,
        ..Default::default()
    };
    let mut io = FaultyBackend::new(cpu, plan);
    let ctl = io.control();
    let cfg = CacheConfig {
        block_tokens: BT as u32,
        policy,
        swap_wait_us: 0,
        segments_per_group: PER_GROUP,
        layered_adapters: layered,
        ..Default::default()
    };
    let mut core = CacheCore::new(cfg, BLOCK_BYTES, GPU, HOST).unwrap();
    let len = if layered { LAYERED_WEIGHTS } else { WEIGHTS };
    for a in 1..4 {
        core.register_adapter(a, &weights(a, len), 8, 0).unwrap();
    }
    let mut rng = Rng(seed | 1);
    let mut open: Vec<Open> = Vec::new();
    let mut tally = Tally::default();
    for i in 0..ops {
        let now = 1000 * (i as u64 + 1);
        let ctx = format!("{policy:?} seed {seed} layered {layered} op {i}");
        match if open.len() >= 5 { 9 } else { rng.below(16) } {
            0..=3 => {
                let adapter = 1 + rng.below(3);
                let tokens = family_tokens(rng.below(5) as u32, 4 + rng.below(36) as usize);
                if let Ok(m) = core.match_prefix(&mut io, adapter, 0, &tokens, now) {
                    open.push(Open::new(m.request, adapter, 0, tokens, m.cached_tokens, m.kv_blocks));
                }
            }
            4..=5 if !open.is_empty() => {
                let pick = rng.below(open.len() as u64) as usize;
                let o = &mut open[pick];
                let want = o.tokens_to_allocate(0, BT);
                if let Ok(b) = core.allocate(&mut io, o.id, want, now) {
                    o.fresh.extend(b);
                }
            }
            6..=8 if !open.is_empty() => {
                let pick = rng.below(open.len() as u64) as usize;
                let o = &mut open[pick];
                let n = o.committable(BT);
                if n > 0 {
                    // The engine fills the blocks, then shares them.
                    o.fill_next(&core, &mut io, n, BT);
                    if core.commit(o.id, o.next_tokens(n, BT), now).is_ok() {
                        o.committed(n, BT);
                    }
                }
            }
            9..=10 if !open.is_empty() => {
                let o = open.swap_remove(rng.below(open.len() as u64) as usize);
                core.release(&mut io, o.id, now).unwrap();
                tally.completed += 1;
            }
            11 => {
                let _ = core.step(&mut io, now, open.len() as u32, false);
            }
            12..=14 => {
                let held = ctl.held();
                if !held.is_empty() {
                    let b = held[rng.below(held.len() as u64) as usize];
                    match rng.below(4) {
                        0 => ctl.complete(b, rng.below(5) != 0),
                        _ => ctl.complete_groups(b, 1 + rng.below(2) as u32),
                    }
                }
            }
            _ => {
                // The next submission fails at some group.
                ctl.fail_group(ctl.counters().submissions, rng.below(4) as u32);
            }
        }
        core.check_invariants().unwrap_or_else(|e| panic!("{ctx}: {e}"));
        core.verify_contents(&mut io, &mut |key, bytes| bytes == pattern(key))
            .unwrap_or_else(|e| panic!("{ctx}: {e}"));
        let mut k = 0;
        while k < open.len() {
            let g = core.poll_groups(&mut io, open[k].id).unwrap();
            match g.readiness {
                Readiness::Failed(_) => {
                    assert_eq!(g.ready_groups, 0);
                    let o = open.swap_remove(k);
                    core.abort(&mut io, o.id, now).unwrap();
                    tally.failed += 1;
                    continue;
                }
                _ => {
                    let o = &mut open[k];
                    assert!(g.ready_groups >= o.ready_groups, "{ctx}: ready groups went back");
                    assert_eq!(g.readiness == Readiness::Ready, g.ready_groups == g.groups);
                    if g.ready_groups > o.ready_groups && g.ready_groups < g.groups {
                        tally.partial_checks += 1;
                    }
                    o.ready_groups = g.ready_groups;
                    check_groups(&core, &mut io, o, g.ready_groups, layered)
                        .unwrap_or_else(|e| panic!("{ctx}: {e}"));
                }
            }
            k += 1;
        }
    }
    for o in open {
        core.abort(&mut io, o.id, 0).unwrap();
    }
    core.check_invariants().unwrap();
    drop(core);
    drop(io);
    drop(mem);
    tally
}

/// Sums the runs' tallies and checks that they saw enough partial readiness and failures for
/// the checks to mean something.
fn assert_enough(tallies: impl Iterator<Item = Tally>) {
    let (mut partial, mut failed, mut completed) = (0, 0, 0);
    for t in tallies {
        partial += t.partial_checks;
        failed += t.failed;
        completed += t.completed;
    }
    println!(
        "{partial} partial-readiness checks, {failed} requests failed and aborted, {completed} released"
    );
    assert!(partial > 50, "too few requests were seen partly ready: {partial}");
    assert!(failed > 10, "too few copies failed: {failed}");
}

#[test]
fn grouped_swap_ins_under_faults_keep_every_byte() {
    let policies = [PolicyKind::Lru, PolicyKind::Elora, PolicyKind::Libra];
    assert_enough(
        policies.into_iter().enumerate().flat_map(|(k, policy)| {
            [3u64, 4, 5, 6].map(|seed| run(policy, seed * 977 + k as u64, 3000, false))
        }),
    );
}

/// Layered adapter uploads under the same faults: a request is ready group by group as its
/// adapter's layers land with its KV, and an upload failing at a group after the earlier ones
/// landed fails its requests and leaves the adapter to load again.
#[test]
fn layered_adapter_uploads_under_faults_keep_every_byte() {
    assert_enough(
        [7u64, 8, 9, 10, 11, 12].into_iter().map(|seed| run(PolicyKind::Libra, seed * 131, 3000, true)),
    );
}
