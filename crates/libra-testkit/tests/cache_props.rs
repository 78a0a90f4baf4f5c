//! Random operation sequences against the core with copies that complete late, out of order
//! or fail. After every step: the invariants hold and every cached block still holds the bytes
//! written for its prefix, in whichever tier it lives.
use libra::backend::cpu::CpuBackend;
use libra::cache::{CacheConfig, CacheCore, PolicyKind, RetentionHint};
use libra_testkit::fixtures::{self, family_tokens, pattern, BLOCK_BYTES};
use libra_testkit::requests::Open;
use proptest::prelude::*;

const BT: usize = 4;

#[derive(Debug, Clone)]
enum Op {
    Match {
        adapter: u64,
        family: u32,
        len: usize,
        ns: u64,
    },
    Allocate {
        req: usize,
        extra: usize,
    },
    Commit {
        req: usize,
    },
    Release {
        req: usize,
    },
    Abort {
        req: usize,
    },
    Step {
        batch: u32,
        prefill_bound: bool,
    },
    Complete {
        pick: usize,
        ok: bool,
    },
    Unregister {
        adapter: u64,
    },
    Register {
        adapter: u64,
    },
    /// A retention hint on an open request: priority, duration and expected return in
    /// thousands of microseconds from now (0: none), some of them invalid.
    Hint {
        req: usize,
        priority: u8,
        duration: u64,
        back: u64,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..4u64, 0..6u32, 1..40usize, 0..2u64).prop_map(|(adapter, family, len, ns)| Op::Match { adapter, family, len, ns }),
        3 => (0..8usize, 0..12usize).prop_map(|(req, extra)| Op::Allocate { req, extra }),
        3 => (0..8usize).prop_map(|req| Op::Commit { req }),
        2 => (0..8usize).prop_map(|req| Op::Release { req }),
        1 => (0..8usize).prop_map(|req| Op::Abort { req }),
        2 => (1..8u32, any::<bool>()).prop_map(|(batch, prefill_bound)| Op::Step { batch, prefill_bound }),
        3 => (0..8usize, prop::bool::weighted(0.85)).prop_map(|(pick, ok)| Op::Complete { pick, ok }),
        1 => (1..4u64).prop_map(|adapter| Op::Unregister { adapter }),
        1 => (1..4u64).prop_map(|adapter| Op::Register { adapter }),
        2 => (0..8usize, 0..4u8, 0..40u64, 0..3u64).prop_map(|(req, priority, duration, back)| Op::Hint { req, priority, duration, back }),
    ]
}

/// The bytes a block of a given prefix key must hold.
fn weights(adapter: u64) -> Vec<u8> {
    fixtures::weights(adapter, 70)
}

fn check_data(core: &CacheCore, io: &mut CpuBackend) -> Result<(), TestCaseError> {
    core.verify_contents(io, &mut |key, bytes| bytes == pattern(key)).map_err(TestCaseError::fail)
}

fn run(policy: PolicyKind, ops: Vec<Op>) -> Result<(), TestCaseError> {
    run_with(CacheConfig { block_tokens: BT as u32, policy, swap_wait_us: 0, ..Default::default() }, ops)
}

fn run_with(cfg: CacheConfig, ops: Vec<Op>) -> Result<(), TestCaseError> {
    let policy = cfg.policy;
    let mut io = CpuBackend::new(BLOCK_BYTES, 24, 12).unwrap();
    io.set_deferred(true);
    let mut core = CacheCore::new(cfg, BLOCK_BYTES, 24, 12).unwrap();
    for a in 1..4 {
        core.register_adapter(a, &weights(a), 8, 0).unwrap();
    }
    let mut open: Vec<Open> = Vec::new();
    let mut now = 0u64;
    for op in ops {
        now += 1000;
        match op {
            Op::Match { adapter, family, len, ns } => {
                let tokens = family_tokens(family, len);
                if let Ok(m) = core.match_prefix(&mut io, adapter, ns, &tokens, now) {
                    prop_assert_eq!(m.cached_tokens % BT, 0);
                    prop_assert!(m.cached_tokens <= len);
                    open.push(Open::new(m.request, adapter, ns, tokens, m.cached_tokens, m.kv_blocks));
                }
            }
            Op::Allocate { req, extra } => {
                if let Some(o) = open.get_mut(req) {
                    let want = o.tokens_to_allocate(extra, BT);
                    if let Ok(blocks) = core.allocate(&mut io, o.id, want, now) {
                        o.fresh.extend(blocks);
                    }
                }
            }
            Op::Commit { req } => {
                if let Some(o) = open.get_mut(req) {
                    let n = o.committable(BT);
                    if n > 0 {
                        o.fill_next(&core, &mut io, n, BT);
                        if core.commit(o.id, o.next_tokens(n, BT), now).is_ok() {
                            o.committed(n, BT);
                        }
                    }
                }
            }
            Op::Release { req } | Op::Abort { req } if req < open.len() => {
                let o = open.remove(req);
                let r = if matches!(op, Op::Release { .. }) {
                    core.release(&mut io, o.id, now)
                } else {
                    core.abort(&mut io, o.id, now)
                };
                prop_assert!(r.is_ok(), "{:?}", r);
                prop_assert!(core.release(&mut io, o.id, now).is_err(), "second release refused");
            }
            Op::Release { .. } | Op::Abort { .. } => {}
            Op::Step { batch, prefill_bound } => {
                let r = core.step(&mut io, now, batch, prefill_bound);
                prop_assert!(r.is_ok(), "{:?}", r);
            }
            Op::Complete { pick, ok } => {
                let pending = io.pending_batches();
                if !pending.is_empty() {
                    io.complete(pending[pick % pending.len()], ok);
                }
            }
            Op::Unregister { adapter } => {
                let _ = core.unregister_adapter(adapter);
            }
            Op::Register { adapter } => {
                let _ = core.register_adapter(adapter, &weights(adapter), 8, now);
            }
            Op::Hint { req, priority, duration, back } => {
                if let Some(o) = open.get(req) {
                    let hint = RetentionHint {
                        priority: priority as f64,
                        duration_us: duration * 1000,
                        expect_back_us: if back == 0 { 0 } else { now + back * 1000 },
                    };
                    let valid = hint.expiry(now).is_ok();
                    let before = core.stats().hinted_blocks;
                    let r = core.set_retention(o.id, hint, now);
                    prop_assert_eq!(r.is_ok(), valid, "{:?}", hint);
                    if !valid {
                        prop_assert_eq!(core.stats().hinted_blocks, before, "a refused hint changes nothing");
                    }
                }
            }
        }
        if let Err(e) = core.check_invariants() {
            return Err(TestCaseError::fail(format!("after {op:?}: {e}")));
        }
        let s = core.stats();
        prop_assert!(s.gpu_blocks_used <= s.gpu_blocks_total);
        if !policy.uncoupled() {
            prop_assert_eq!(s.invalid_kv_blocks, 0);
        }
        check_data(&core, &mut io)?;
    }
    // Drain: finish every copy, end every request; nothing may leak.
    for b in io.pending_batches() {
        io.complete(b, true);
    }
    for o in open {
        core.release(&mut io, o.id, now).unwrap();
    }
    core.step(&mut io, now + 1, 1, true).unwrap();
    core.check_invariants().map_err(TestCaseError::fail)?;
    check_data(&core, &mut io)?;
    prop_assert_eq!(core.stats().open_requests, 0);
    Ok(())
}

/// 48 cases by default; PROPTEST_CASES raises it for a longer hunt.
fn cases() -> u32 {
    std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    #[test]
    fn elora_sequences(ops in prop::collection::vec(op(), 1..120)) { run(PolicyKind::Elora, ops)?; }
    #[test]
    fn libra_sequences(ops in prop::collection::vec(op(), 1..120)) { run(PolicyKind::Libra, ops)?; }
    /// Cost hints under which recomputing beats loading: host prefixes are recomputed and
    /// blocks leaving the GPU are dropped instead of copied.
    #[test]
    fn libra_recompute_sequences(ops in prop::collection::vec(op(), 1..120)) {
        let cfg = CacheConfig {
            block_tokens: BT as u32,
            policy: PolicyKind::Libra,
            swap_wait_us: 0,
            prefill_tokens_per_us: 1e6,
            ..Default::default()
        };
        run_with(cfg, ops)?;
    }
    #[test]
    fn lru_sequences(ops in prop::collection::vec(op(), 1..120)) { run(PolicyKind::Lru, ops)?; }
    #[test]
    fn vllm_sequences(ops in prop::collection::vec(op(), 1..120)) { run(PolicyKind::Vllm, ops)?; }
    #[test]
    fn slora_sequences(ops in prop::collection::vec(op(), 1..120)) { run(PolicyKind::Slora, ops)?; }
}
