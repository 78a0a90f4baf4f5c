//! Long random runs through the cache core over a backend that refuses submissions and fails
//! batches, at chosen points and at random. After every operation: a refused submission made
//! the call fail, the invariants hold, every cached block's bytes are readable from some tier,
//! and a request reported ready really has its prefix and adapter bytes in place. At the end
//! the faults stop and the cache must serve requests normally.
use libra::backend::cpu::CpuBackend;
use libra::backend::Backend;
use libra::cache::{CacheConfig, CacheCore, PolicyKind, Readiness};
use libra::{Cache, Status};
use libra_testkit::faulty::{FaultCounters, FaultPlan, FaultyBackend};
use libra_testkit::fixtures::{self, family_tokens, pattern, BLOCK_BYTES};
use libra_testkit::requests::Open;
use std::collections::BTreeSet;

const BT: usize = 4;

type Io = FaultyBackend<CpuBackend>;

fn weights(adapter: u64) -> Vec<u8> {
    fixtures::weights(adapter, 70)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn chance(&mut self, pct: u64) -> bool {
        self.below(100) < pct
    }
}

/// Every KV node's bytes in the tier that holds its valid copy, and every resident adapter.
fn check_data(core: &CacheCore, io: &mut Io) -> Result<(), String> {
    core.verify_contents(io, &mut |key, bytes| bytes == pattern(key))
}

fn check_adapter(io: &mut Io, adapter: u64, blocks: &[u32]) -> Result<(), String> {
    let w = weights(adapter);
    let mut buf = vec![0u8; BLOCK_BYTES as usize];
    for (i, &b) in blocks.iter().enumerate() {
        io.read_gpu_block(b, &mut buf).unwrap();
        let part = &w[i * BLOCK_BYTES as usize..((i + 1) * BLOCK_BYTES as usize).min(w.len())];
        if &buf[..part.len()] != part {
            return Err(format!("adapter {adapter} block {i} (GPU block {b}) is corrupted"));
        }
    }
    Ok(())
}

/// A ready request's matched prefix and adapter must hold the right bytes on the GPU.
fn check_ready(core: &CacheCore, io: &mut Io, o: &Open) -> Result<(), String> {
    let keys = core.prefix_keys(o.adapter, o.ns, &o.tokens[..o.matched.len() * BT]);
    let mut buf = vec![0u8; BLOCK_BYTES as usize];
    for (i, &b) in o.matched.iter().enumerate() {
        io.read_gpu_block(b, &mut buf).unwrap();
        if buf != pattern(keys[i]) {
            return Err(format!("request {} is ready but its block {i} (GPU {b}) is wrong", o.id));
        }
    }
    let blocks = core.adapter_gpu_blocks(o.adapter).map_err(|e| e.message)?;
    if blocks.is_empty() {
        return Err(format!("request {} is ready but adapter {} is not resident", o.id, o.adapter));
    }
    check_adapter(io, o.adapter, &blocks)
}

#[derive(Default, Debug)]
struct Tally {
    ops: u64,
    faults: FaultCounters,
    survived: u64,
    failed_requests: u64,
    refused_calls: u64,
    completed_requests: u64,
    write_through_bytes: u64,
    instant_evictions: u64,
    reclaimed_host_copies: u64,
}

fn run(policy: PolicyKind, seed: u64, ops: usize, plan: FaultPlan) -> Tally {
    let cfg = CacheConfig { block_tokens: BT as u32, policy, swap_wait_us: 0, ..Default::default() };
    run_with(cfg, seed, ops, plan)
}

fn run_with(cfg: CacheConfig, seed: u64, ops: usize, plan: FaultPlan) -> Tally {
    run_tiers(cfg, (24, 12), seed, ops, plan)
}

/// `run_with` over `tiers` (GPU, host) blocks.
fn run_tiers(cfg: CacheConfig, tiers: (u32, u32), seed: u64, ops: usize, plan: FaultPlan) -> Tally {
    let policy = cfg.policy;
    let mut cpu = CpuBackend::new(BLOCK_BYTES, tiers.0, tiers.1).unwrap();
    cpu.set_deferred(false);
    let mut io = FaultyBackend::new(cpu, plan);
    let ctl = io.control();
    let mut core = CacheCore::new(cfg, BLOCK_BYTES, tiers.0, tiers.1).unwrap();
    for a in 1..4 {
        core.register_adapter(a, &weights(a), 8, 0).unwrap();
    }
    let mut rng = Rng(seed | 1);
    let mut open: Vec<Open> = Vec::new();
    let mut tally = Tally::default();
    let mut now = 0u64;
    let ctx = |what: &str, i: usize| format!("{policy:?} seed {seed} op {i} ({what})");
    for i in 0..ops {
        now += 1000;
        let before = ctl.counters();
        let what;
        // An engine keeps a bounded batch: past 6 open requests, end one.
        let pick = if open.len() >= 6 { 11 } else { rng.below(20) };
        let result: Result<(), libra::Error> = match pick {
            0..=4 => {
                what = "match";
                let adapter = 1 + rng.below(3);
                let ns = rng.below(2);
                let tokens = family_tokens(rng.below(6) as u32, 1 + rng.below(40) as usize);
                core.match_prefix(&mut io, adapter, ns, &tokens, now).map(|m| {
                    open.push(Open::new(
                        m.request,
                        adapter,
                        ns,
                        tokens,
                        m.cached_tokens,
                        m.kv_blocks.clone(),
                    ));
                    if m.ready {
                        let o = open.last_mut().unwrap();
                        check_ready(&core, &mut io, o).unwrap_or_else(|e| panic!("{}: {e}", ctx(what, i)));
                        o.verified = true;
                    }
                })
            }
            5..=7 if !open.is_empty() => {
                what = "allocate";
                let k = rng.below(open.len() as u64) as usize;
                let o = &mut open[k];
                let want = o.tokens_to_allocate(rng.below(8) as usize, BT);
                core.allocate(&mut io, o.id, want, now).map(|b| o.fresh.extend(b))
            }
            8..=10 if !open.is_empty() => {
                what = "commit";
                let k = rng.below(open.len() as u64) as usize;
                let o = &mut open[k];
                let n = o.committable(BT);
                if n == 0 {
                    Ok(())
                } else {
                    o.fill_next(&core, &mut io, n, BT);
                    core.commit(o.id, o.next_tokens(n, BT), now).map(|_| o.committed(n, BT))
                }
            }
            11..=12 if !open.is_empty() => {
                what = "release";
                let o = open.swap_remove(rng.below(open.len() as u64) as usize);
                let r = if rng.chance(25) {
                    core.abort(&mut io, o.id, now)
                } else {
                    core.release(&mut io, o.id, now)
                };
                assert!(r.is_ok(), "{}: {r:?}", ctx(what, i));
                tally.completed_requests += 1;
                r
            }
            13..=14 => {
                what = "step";
                core.step(&mut io, now, 1 + rng.below(8) as u32, rng.chance(30)).map(|_| ())
            }
            15..=17 => {
                what = "complete";
                let held = ctl.held();
                for b in held {
                    if rng.chance(60) {
                        ctl.complete(b, rng.chance(85));
                    }
                }
                Ok(())
            }
            18 if !open.is_empty() => {
                what = "poll";
                let k = rng.below(open.len() as u64) as usize;
                match core.poll(&mut io, open[k].id) {
                    Ok(Readiness::Ready) => {
                        if !open[k].verified {
                            check_ready(&core, &mut io, &open[k])
                                .unwrap_or_else(|e| panic!("{}: {e}", ctx(what, i)));
                            open[k].verified = true;
                        }
                        Ok(())
                    }
                    Ok(Readiness::Pending) => Ok(()),
                    Ok(Readiness::Failed(_)) => {
                        // The engine aborts a request whose copies failed.
                        let o = open.swap_remove(k);
                        tally.failed_requests += 1;
                        core.abort(&mut io, o.id, now)
                    }
                    Err(e) => Err(e),
                }
            }
            _ => {
                what = "unregister/register";
                let a = 1 + rng.below(3);
                if rng.chance(50) {
                    core.unregister_adapter(a)
                } else {
                    core.register_adapter(a, &weights(a), 8, now)
                }
            }
        };
        tally.ops += 1;
        let after = ctl.counters();
        if after.submit_faults > before.submit_faults {
            assert!(result.is_err(), "{}: a refused submission was not reported", ctx(what, i));
            let e = result.as_ref().unwrap_err();
            assert!(!e.message.is_empty());
        }
        if result.is_err() {
            tally.refused_calls += 1;
        }
        if let Err(e) = core.check_invariants() {
            panic!("{}: invariant broken after {:?}: {e}", ctx(what, i), result);
        }
        if let Err(e) = check_data(&core, &mut io) {
            panic!("{}: {e}", ctx(what, i));
        }
        // Block ids handed to a ready request stay valid until it ends, whatever happens.
        for o in open.iter().filter(|o| o.verified) {
            if let Err(e) = check_ready(&core, &mut io, o) {
                panic!("{}: later: {e}", ctx(what, i));
            }
        }
        tally.survived += after.faults() - before.faults();
    }

    // Faults off: drain every copy, end every request, and the cache must work normally.
    ctl.disable();
    ctl.set_hold(false);
    for b in ctl.held() {
        ctl.complete(b, true);
    }
    core.step(&mut io, now + 1, 1, true).unwrap();
    for o in open.drain(..) {
        core.abort(&mut io, o.id, now + 1).unwrap();
    }
    core.check_invariants().unwrap();
    check_data(&core, &mut io).unwrap();
    assert_eq!(core.stats().open_requests, 0);
    assert!(core.kv_nodes().iter().all(|n| !n.pinned), "a pin outlived its request");
    for a in 1..4u64 {
        let _ = core.register_adapter(a, &weights(a), 8, now);
    }
    for a in 1..4u64 {
        let tokens = family_tokens(50 + a as u32, 16);
        for round in 0..2 {
            let t = now + 10 + round;
            let m = core.match_prefix(&mut io, a, 7, &tokens, t).unwrap();
            assert!(m.ready, "{policy:?}: the cache did not recover");
            let rest = tokens.len() - m.cached_tokens;
            let blocks = core.allocate(&mut io, m.request, rest, t).unwrap();
            let keys = core.prefix_keys(a, 7, &tokens);
            for (j, &b) in blocks.iter().enumerate() {
                io.write_gpu_block(b, &pattern(keys[m.cached_tokens / BT + j])).unwrap();
            }
            core.commit(m.request, &tokens[m.cached_tokens..], t).unwrap();
            core.release(&mut io, m.request, t).unwrap();
            if round == 1 && policy.keeps_finished_kv() {
                assert_eq!(m.cached_tokens, tokens.len(), "{policy:?}: no reuse after recovery");
            }
        }
    }
    core.check_invariants().unwrap();
    check_data(&core, &mut io).unwrap();
    tally.faults = ctl.counters();
    let s = core.stats();
    (tally.write_through_bytes, tally.instant_evictions) = (s.write_through_bytes, s.instant_evictions);
    tally.reclaimed_host_copies = s.reclaimed_host_copies;
    // Faults injected while draining were checked above too.
    tally.survived = tally.faults.faults();
    tally
}

const POLICIES: [PolicyKind; 5] =
    [PolicyKind::Elora, PolicyKind::Libra, PolicyKind::Lru, PolicyKind::Vllm, PolicyKind::Slora];

/// Offsets every seed, to hunt with fresh runs: `LIBRA_FAULT_SEED=n`.
fn seed_base() -> u64 {
    std::env::var("LIBRA_FAULT_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

fn ops() -> usize {
    std::env::var("LIBRA_FAULT_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(3000)
}

#[test]
fn random_faults_with_late_completions() {
    let (mut injected, mut survived, mut ops_run) = (0, 0, 0);
    for (k, policy) in POLICIES.into_iter().enumerate() {
        for seed in [11u64, 12, 13, 14] {
            let plan = FaultPlan {
                seed: seed_base() + seed * 7919 + k as u64,
                submit_fail_rate: 0.08,
                complete_fail_rate: 0.08,
                hold: true,
                ..Default::default()
            };
            let t = run(policy, seed_base() * 7 + seed + k as u64 * 100, ops(), plan);
            assert_eq!(t.survived, t.faults.faults(), "{policy:?}");
            println!(
                "{policy:?} seed {seed}: {} ops, {} submissions, {} refused + {} failed batches injected, {} survived, {} requests failed and aborted",
                t.ops, t.faults.submissions, t.faults.submit_faults, t.faults.completion_faults, t.survived, t.failed_requests
            );
            injected += t.faults.faults();
            survived += t.survived;
            ops_run += t.ops;
        }
    }
    println!("late completions: {injected} faults injected, {survived} survived, over {ops_run} operations");
    assert!(injected > 500, "too few faults injected: {injected}");
}

/// A host tier of 4 blocks beside 24 GPU blocks fills with the host copies that swap-ins
/// keep, so swap-outs give copies up (`reclaimed_host_copies`) under faults, with the
/// invariants and every block's bytes checked after each operation.
#[test]
fn random_faults_with_a_host_tier_full_of_copies() {
    let (mut injected, mut reclaimed) = (0, 0);
    for (k, policy) in [PolicyKind::Lru, PolicyKind::Elora, PolicyKind::Libra].into_iter().enumerate() {
        for seed in [21u64, 22] {
            let plan = FaultPlan {
                seed: seed_base() + seed * 131 + k as u64,
                submit_fail_rate: 0.08,
                complete_fail_rate: 0.08,
                ..Default::default()
            };
            let cfg = CacheConfig { block_tokens: BT as u32, policy, swap_wait_us: 0, ..Default::default() };
            let t = run_tiers(cfg, (24, 4), seed_base() * 7 + seed + k as u64 * 100, ops(), plan);
            assert_eq!(t.survived, t.faults.faults(), "{policy:?}");
            println!(
                "{policy:?} seed {seed}: {} faults injected, {} host copies given up",
                t.faults.faults(),
                t.reclaimed_host_copies
            );
            injected += t.faults.faults();
            reclaimed += t.reclaimed_host_copies;
        }
    }
    assert!(injected > 100, "too few faults injected: {injected}");
    assert!(reclaimed > 0, "no host copy was ever given up: the path went untested");
}

#[test]
fn random_faults_with_immediate_completions() {
    let (mut injected, mut survived) = (0, 0);
    // How many copies a workload makes depends on the policies' decisions: further rounds
    // (other seeds) run until enough faults have been injected to mean something.
    for round in 0..4u64 {
        for (k, policy) in POLICIES.into_iter().enumerate() {
            let plan = FaultPlan {
                seed: seed_base() + 99 + k as u64 + round * 1000,
                submit_fail_rate: 0.15,
                complete_fail_rate: 0.15,
                ..Default::default()
            };
            let t = run(policy, seed_base() * 7 + 1234 + k as u64 + round * 1000, ops(), plan);
            println!(
                "{policy:?} round {round}: {} refused + {} failed batches injected, {} survived",
                t.faults.submit_faults, t.faults.completion_faults, t.survived
            );
            injected += t.faults.faults();
            survived += t.survived;
        }
        if injected > 200 {
            break;
        }
    }
    println!("immediate completions: {injected} faults injected, {survived} survived");
    assert!(injected > 200, "too few faults injected: {injected}");
}

/// Each of the first submissions fails in turn, as a refusal and as a failed batch: whatever
/// the copy was (adapter upload, swap-out, swap-in), the cache stays consistent.
#[test]
fn chosen_faults_at_every_early_point() {
    let mut injected = 0;
    for policy in POLICIES {
        for point in 0..40u64 {
            for refuse in [true, false] {
                let set: BTreeSet<u64> = [point].into();
                let plan = FaultPlan {
                    fail_submissions: if refuse { set.clone() } else { BTreeSet::new() },
                    fail_completions: if refuse { BTreeSet::new() } else { set },
                    hold: !refuse,
                    ..Default::default()
                };
                let t = run(policy, 500 + point, 300, plan);
                injected += t.faults.faults();
            }
        }
    }
    println!("chosen points: {injected} faults injected and survived");
    assert!(injected > 100);
}

/// A failed adapter upload makes `match` fail and leaves nothing pinned: the adapter can be
/// unregistered right away and matched again once the fault is gone.
#[test]
fn failed_adapter_upload_leaves_no_pin() {
    let cfg = CacheConfig { block_tokens: BT as u32, ..Default::default() };
    let plan = FaultPlan { fail_submissions: [0].into(), ..Default::default() };
    let mut io = FaultyBackend::new(CpuBackend::new(BLOCK_BYTES, 16, 8).unwrap(), plan);
    let mut core = CacheCore::new(cfg, BLOCK_BYTES, 16, 8).unwrap();
    core.register_adapter(1, &weights(1), 8, 0).unwrap();
    let e = core.match_prefix(&mut io, 1, 0, &[1, 2, 3, 4], 10).unwrap_err();
    assert_eq!(e.status, Status::LIBRA_ERR_DEVICE);
    core.check_invariants().unwrap();
    let m = core.match_prefix(&mut io, 1, 0, &[1, 2, 3, 4], 20).unwrap();
    assert!(m.ready);
    core.release(&mut io, m.request, 30).unwrap();
    core.unregister_adapter(1).unwrap();
    core.check_invariants().unwrap();
}

/// The same faults through the thread-safe `Cache` (the layer under the C API): errors come
/// back as statuses and the handle is never poisoned.
#[test]
fn faults_through_the_cache_handle() {
    let plan = FaultPlan { seed: 5, submit_fail_rate: 0.2, complete_fail_rate: 0.2, ..Default::default() };
    let io = FaultyBackend::new(CpuBackend::new(BLOCK_BYTES, 32, 16).unwrap(), plan);
    let ctl = io.control();
    let cfg = CacheConfig { block_tokens: BT as u32, ..Default::default() };
    let cache = Cache::with_backend(cfg, Box::new(io), "faulty cpu".into()).unwrap();
    for a in 1..=3 {
        cache.register_adapter(a, &weights(a), 8, 0).unwrap();
    }
    let mut rng = Rng(77);
    for i in 0..2000u64 {
        let a = 1 + rng.below(3);
        let tokens = family_tokens(rng.below(8) as u32, 4 + rng.below(30) as usize);
        if let Ok(m) = cache.match_prefix(a, 0, &tokens, i * 10) {
            let ok = matches!(cache.poll(m.request), Ok(Readiness::Ready));
            if ok {
                if let Ok(b) = cache.allocate(m.request, tokens.len() - m.cached_tokens, i * 10) {
                    let full = (tokens.len() - m.cached_tokens) / BT * BT;
                    let _ = b;
                    let _ = cache.commit(m.request, &tokens[m.cached_tokens..m.cached_tokens + full], i * 10);
                }
                cache.release(m.request, i * 10 + 1).unwrap();
            } else {
                cache.abort(m.request, i * 10 + 1).unwrap();
            }
        }
        if i % 7 == 0 {
            let _ = cache.step(i * 10 + 2, 4, false);
        }
        cache.check_invariants().unwrap();
    }
    let c = ctl.counters();
    println!(
        "cache handle: {} refused + {} failed batches injected and survived",
        c.submit_faults, c.completion_faults
    );
    assert!(c.faults() > 50);
    assert_eq!(cache.stats().unwrap().open_requests, 0);
}

/// Write-through on every step (no interval) under refused and failed copies that complete
/// late: a failed clean copy, a clean copy whose block is matched meanwhile, and a host tier
/// kept full all keep the GPU copy; every block stays readable with its bytes, clean copies
/// included (`verify_contents` reads both copies of a clean block).
#[test]
fn write_through_under_faults() {
    let (mut bytes, mut instant, mut injected) = (0, 0, 0);
    for seed in [21u64, 22, 23, 24] {
        let cfg = CacheConfig {
            block_tokens: BT as u32,
            policy: PolicyKind::Libra,
            swap_wait_us: 0,
            prefetch_interval_us: 0,
            write_through_blocks: 4,
            ..Default::default()
        };
        let plan = FaultPlan {
            seed: seed_base() + seed * 31,
            submit_fail_rate: 0.1,
            complete_fail_rate: 0.1,
            hold: seed % 2 == 0,
            ..Default::default()
        };
        let t = run_with(cfg, seed_base() * 7 + seed, ops(), plan);
        assert_eq!(t.survived, t.faults.faults());
        println!(
            "seed {seed}: {} write-through bytes, {} instant evictions, {} faults survived",
            t.write_through_bytes, t.instant_evictions, t.survived
        );
        (bytes, instant, injected) =
            (bytes + t.write_through_bytes, instant + t.instant_evictions, injected + t.survived);
    }
    assert!(
        bytes > 0 && instant > 50 && injected > 100,
        "write-through was not exercised: {bytes} B, {instant}, {injected}"
    );
}
