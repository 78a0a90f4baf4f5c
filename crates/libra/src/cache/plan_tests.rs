//! The chain-aware plan against a brute force that recomputes the candidates from scratch
//! before every pick, and the decisions it lets the ranking make.
use super::*;
use crate::backend::cpu::CpuBackend;
use crate::cache::reuse::ReuseClass;
use crate::cache::test_blocks::small_core;
use crate::cache::{CacheConfig, PolicyKind, RetentionHint};
use std::collections::HashSet;

/// The definition, literally: before each pick, every node that may leave now (all its
/// children in the tier already picked) is scored, and the lowest is taken: marked
/// `NO_REUSE` first (in set-key order), then unhinted (or expired), then hinted, lower hint
/// priority first.
fn brute_force(core: &CacheCore, tier: Tier, blocks: usize, now: u64) -> Vec<u32> {
    let scorer = core.scorer(tier, now);
    let ids: Vec<u32> = core.tree.live_ids().collect();
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for &id in &ids {
        if id != ROOT {
            children.entry(core.tree.node(id).parent).or_default().push(id);
        }
    }
    let in_tier = |id: u32| {
        let r = core.tree.node(id).residency;
        match tier {
            Tier::Gpu => r.gpu_side(),
            Tier::Host => true,
        }
    };
    let movable = |id: u32| {
        let n = core.tree.node(id);
        match tier {
            Tier::Gpu => id != ROOT && n.residency == Residency::Gpu && n.pins == 0,
            Tier::Host => n.kind == Kind::Kv && n.residency == Residency::Host && n.pins == 0,
        }
    };
    let mut picked: HashSet<u32> = HashSet::new();
    let mut out = Vec::new();
    let mut taken = 0;
    while taken < blocks {
        let best = ids
            .iter()
            .copied()
            .filter(|&id| !picked.contains(&id) && movable(id))
            .filter(|id| children.get(id).into_iter().flatten().all(|&c| !in_tier(c) || picked.contains(&c)))
            .map(|id| {
                let class = core.tree.hint(id).filter(|h| h.expires > now).map_or(0.0, |h| h.priority);
                let mut s = core.score(&scorer, id);
                if class == NO_REUSE {
                    s.value = f64::NEG_INFINITY;
                }
                (Deferred { class, s }, id)
            })
            .min();
        let Some((Deferred { s, .. }, _)) = best else { break };
        picked.insert(s.node);
        out.push(s.node);
        taken += core.node_blocks(s.node) as usize;
    }
    out
}

fn xorshift(seed: u64) -> impl FnMut() -> u64 {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    }
}

/// A random tree: branching prompts of 1-6 blocks under three adapters, leaves whose idle
/// times span zero to far past the ln 2 band, visits from 1 to dozens, runs of equal last
/// uses, some requests left open (pinned paths), and host-resident subtrees from swap-outs.
/// `density`: `libra` ranks by hit density.
fn random_core_ranked(policy: PolicyKind, unit: u64, seed: u64, density: bool) -> (CacheCore, CpuBackend) {
    let cfg = CacheConfig {
        block_tokens: 1,
        policy,
        value_time_unit_us: unit,
        rank_by_hit_density: density,
        swap_out_high: 0.6,
        swap_out_low: 0.5,
        ..Default::default()
    };
    let mut io = CpuBackend::new(8, 400, 120).unwrap();
    let mut core = CacheCore::new(cfg, 8, 400, 120).unwrap();
    for a in 0..3u64 {
        core.register_adapter(a, &[0u8; 16], 2, 0).unwrap();
    }
    let mut rnd = xorshift(seed);
    let mut now = 1_000u64;
    let mut open = 0;
    for i in 0..260u64 {
        // Mostly small steps (dense, equal or close last uses), sometimes long gaps.
        now += match rnd() % 10 {
            0 => 0,
            1 => rnd() % 40_000_000,
            _ => rnd() % 300_000,
        };
        let len = 1 + (rnd() % 6) as usize;
        let family = (rnd() % 60) as u32;
        // Prompts of a family share their first two blocks, then branch two ways per block.
        let toks: Vec<u32> = (0..len as u32)
            .map(|t| if t < 2 { family * 100 + t } else { family * 100 + t * 2 + (rnd() % 2) as u32 })
            .collect();
        let Ok(m) = core.match_prefix(&mut io, rnd() % 3, 0, &toks, now) else { continue };
        let rest = toks.len() - m.cached_tokens;
        if core.allocate(&mut io, m.request, rest, now).is_ok() {
            core.commit(m.request, &toks[m.cached_tokens..], now).unwrap();
        }
        if rnd() % 5 == 0 {
            // Hints of a few priorities, some expiring before the plans look, some after.
            let hint = RetentionHint {
                priority: (1 + rnd() % 3) as f64,
                duration_us: rnd() % 60_000_000,
                expect_back_us: if rnd() % 2 == 0 { 0 } else { now + 1 + rnd() % 10_000_000 },
            };
            if hint.expiry(now).is_ok() {
                core.set_retention(m.request, hint, now).unwrap();
            }
        } else if rnd() % 6 == 0 {
            // The engine expects the request's own blocks never back, past 0-2 shared tokens.
            core.expect_no_reuse(m.request, (rnd() % 3) as u32, now).unwrap();
        }
        if open < 4 && rnd() % 16 == 0 {
            open += 1;
        } else {
            core.release(&mut io, m.request, now).unwrap();
        }
        if i % 16 == 15 {
            core.step(&mut io, now, 4, false).unwrap();
        }
    }
    core.check_invariants().unwrap();
    (core, io)
}

#[test]
fn chain_plan_equals_brute_force() {
    let (mut chains, mut hinted_taken, mut hinted_left, mut unwanted_taken) = (0, 0, 0, 0);
    for (policy, unit, density) in [
        (PolicyKind::Elora, 0, false),
        (PolicyKind::Libra, 0, false),
        (PolicyKind::Libra, 0, true),
        (PolicyKind::Elora, 30_000_000, false),
        (PolicyKind::Lru, 0, false),
        (PolicyKind::Elora, 50_000, false),
        (PolicyKind::Libra, 3_000_000, false),
    ] {
        for seed in 1..=4u64 {
            let (core, _io) = random_core_ranked(policy, unit, seed, density);
            for later in [0, 200_000, 5_000_000, 90_000_000] {
                let at = core.last_now + later;
                for tier in [Tier::Gpu, Tier::Host] {
                    let n = core.tree.live_nodes();
                    for k in [1, 2, 7, 30, n / 4, n / 2, n] {
                        let got = core.plan(tier, k, at);
                        let what = format!(
                            "{policy:?} unit {unit} density {density} seed {seed} +{later} {tier:?} k {k} of {n}"
                        );
                        assert_eq!(got, brute_force(&core, tier, k, at), "{what}");
                        let leaves: HashSet<u32> = match tier {
                            Tier::Gpu => core.tree.gpu_leaves().iter().map(|c| c.id).collect(),
                            Tier::Host => core.tree.host_leaves().iter().map(|c| c.id).collect(),
                        };
                        chains += got.iter().any(|id| !leaves.contains(id)) as u32;
                        let active = |id: &u32| core.tree.hint(*id).is_some_and(|h| h.expires > at);
                        let hinted_in = got.iter().filter(|id| active(id)).count();
                        hinted_taken += (hinted_in > 0) as u32;
                        hinted_left += (hinted_in == 0 && core.tree.hinted_nodes() > 0) as u32;
                        unwanted_taken += got.iter().any(|&id| core.tree.is_no_reuse(id)) as u32;
                    }
                }
            }
        }
    }
    // The trees are deep enough that plans reach past the current leaves, and hinted blocks
    // are both in them and kept out of them.
    assert!(chains > 100, "only {chains} plans took a parent");
    assert!(hinted_taken > 50 && hinted_left > 50, "hinted blocks taken {hinted_taken}, left {hinted_left}");
    assert!(unwanted_taken > 50, "only {unwanted_taken} plans met a block marked as never read again");
}

/// Inserts a prompt and releases it.
fn put(core: &mut CacheCore, io: &mut CpuBackend, toks: &[u32], now: u64) {
    let m = core.match_prefix(io, 1, 0, toks, now).unwrap();
    let rest = toks.len() - m.cached_tokens;
    core.allocate(io, m.request, rest, now).unwrap();
    core.commit(m.request, &toks[m.cached_tokens..], now).unwrap();
    core.release(io, m.request, now).unwrap();
}

/// A block used twice long ago can be worth more than one used once just now, although
/// it comes first in set order: the walk must look past it (the ln 2 band).
#[test]
fn band_catches_recent_low_value_block() {
    let cfg = CacheConfig { block_tokens: 1, policy: PolicyKind::Elora, ..Default::default() };
    let mut io = CpuBackend::new(8, 64, 0).unwrap();
    let mut core = CacheCore::new(cfg, 8, 64, 0).unwrap();
    core.register_adapter(1, &[0u8; 8], 4, 0).unwrap();
    put(&mut core, &mut io, &[10], 0);
    put(&mut core, &mut io, &[10], 0); // visits 2 at t = 0 s
    put(&mut core, &mut io, &[20], 900_000); // visits 1 at t = 0.9 s
    let old = core.tree.lookup(core.prefix_keys(1, 0, &[10])[0]).unwrap();
    let recent = core.tree.lookup(core.prefix_keys(1, 0, &[20])[0]).unwrap();
    let first_in_set = core.tree.gpu_leaves().iter().next().unwrap().id;
    assert_eq!(first_in_set, old, "set order puts the old block first");
    // 2 x (1 - sigmoid(0.9)) = 0.578 > 1 x (1 - sigmoid(0)) = 0.5.
    assert_eq!(core.plan_swap_out(1, 900_000), vec![recent]);
}

/// A chain used ten times a second ago against one used once half a second ago. LRU sends
/// the older chain away; ELORA values it at 10 x (1 - sigmoid(1)) = 2.69 against
/// 1 x (1 - sigmoid(0.5)) = 0.38 and sends the newer one. Planning only the current leaves
/// would take one block of each under both policies.
#[test]
fn elora_and_lru_choose_different_victims() {
    let a: Vec<u32> = (1..=4).collect();
    let b: Vec<u32> = (11..=14).collect();
    for policy in [PolicyKind::Lru, PolicyKind::Elora] {
        let cfg = CacheConfig {
            block_tokens: 1,
            policy,
            swap_out_high: 0.8,
            swap_out_low: 0.5,
            host_high: 1.0,
            host_low: 1.0,
            ..Default::default()
        };
        // Adapter (1 block) + 8 KV blocks in 10: 0.9 > 0.8, and 4 blocks take it to 0.5.
        let mut io = CpuBackend::new(8, 10, 10).unwrap();
        let mut core = CacheCore::new(cfg, 8, 10, 10).unwrap();
        core.register_adapter(1, &[0u8; 8], 4, 0).unwrap();
        for _ in 0..10 {
            put(&mut core, &mut io, &a, 0);
        }
        put(&mut core, &mut io, &b, 500_000);
        let nodes = |core: &CacheCore, t: &[u32]| -> Vec<u32> {
            let mut v: Vec<u32> =
                core.prefix_keys(1, 0, t).iter().map(|&k| core.tree.lookup(k).unwrap()).collect();
            v.reverse();
            v
        };
        let (chain_a, chain_b) = (nodes(&core, &a), nodes(&core, &b));
        let now = 1_000_000;
        let plan = core.plan_swap_out(4, now);
        let (leaving, staying) = if policy == PolicyKind::Lru { (&a, &b) } else { (&b, &a) };
        let want = if policy == PolicyKind::Lru { &chain_a } else { &chain_b };
        assert_eq!(&plan, want, "{policy:?} plans the whole chain {leaving:?}, leaf first");
        let report = core.step(&mut io, now, 1, false).unwrap();
        assert_eq!(report.swapped_out, 4, "{policy:?}");
        core.poll_inflight(&mut io);
        core.check_invariants().unwrap();
        let on = |core: &CacheCore, t: &[u32]| -> Vec<Residency> {
            core.prefix_keys(1, 0, t)
                .iter()
                .map(|&k| core.tree.node(core.tree.lookup(k).unwrap()).residency)
                .collect()
        };
        assert_eq!(on(&core, leaving), vec![Residency::Host; 4], "{policy:?}");
        assert_eq!(on(&core, staying), vec![Residency::Gpu; 4], "{policy:?}");
    }
}

/// A plan frees whole cold chains down to the adapter: the adapter follows its last KV block,
/// and executing the plan keeps every invariant.
#[test]
fn adapter_follows_its_last_block() {
    let cfg = CacheConfig { block_tokens: 1, policy: PolicyKind::Lru, ..Default::default() };
    let mut io = CpuBackend::new(8, 32, 32).unwrap();
    let mut core = CacheCore::new(cfg, 8, 32, 32).unwrap();
    core.register_adapter(1, &[0u8; 16], 4, 0).unwrap();
    core.register_adapter(2, &[0u8; 8], 4, 0).unwrap();
    put(&mut core, &mut io, &[1, 2], 10);
    let m = core.match_prefix(&mut io, 2, 0, &[5], 20).unwrap();
    core.allocate(&mut io, m.request, 1, 20).unwrap();
    core.commit(m.request, &[5], 20).unwrap();
    core.release(&mut io, m.request, 20).unwrap();
    let adapter1 = core.adapter(core.adapter_slots[&1]).node;
    // [1 2], [1], then adapter 1 (2 blocks): 4 blocks, all older than adapter 2's chain.
    let plan = core.plan_swap_out(4, 30);
    assert_eq!(plan.len(), 3);
    assert_eq!(plan[2], adapter1);
    assert_eq!(plan, brute_force(&core, Tier::Gpu, 4, 30));
    let m = core.match_prefix(&mut io, 2, 0, &[5, 6], 40).unwrap();
    // 3 adapter and 3 KV blocks of 32 are used: 30 more need 4 of them, adapter 1 included.
    core.allocate(&mut io, m.request, 30, 40).unwrap();
    core.check_invariants().unwrap();
    assert!(core.adapter(core.adapter_slots[&1]).gpu_blocks.is_empty(), "adapter 1 left");
    core.release(&mut io, m.request, 40).unwrap();
    core.check_invariants().unwrap();
}

/// A hinted prefix stays while colder unhinted ones leave, until its hint expires; then it
/// ranks like any other. A hint given at match covers the blocks committed later, at release.
#[test]
fn hinted_prefix_is_kept_until_its_hint_expires() {
    for policy in [PolicyKind::Lru, PolicyKind::Elora, PolicyKind::Libra] {
        let cfg = CacheConfig { block_tokens: 1, policy, ..Default::default() };
        let mut io = CpuBackend::new(8, 64, 64).unwrap();
        let mut core = CacheCore::new(cfg, 8, 64, 64).unwrap();
        core.register_adapter(1, &[0u8; 8], 4, 0).unwrap();
        // The oldest chain, hinted at match for 10 s, priority 2; a newer one hinted at
        // priority 1; then two unhinted ones.
        let chains: [Vec<u32>; 4] = [vec![1, 2, 3], vec![11, 12, 13], vec![21, 22, 23], vec![31, 32, 33]];
        for (i, toks) in chains.iter().enumerate() {
            let now = i as u64 * 1_000;
            let m = core.match_prefix(&mut io, 1, 0, toks, now).unwrap();
            if i < 2 {
                let hint =
                    RetentionHint { priority: 2.0 - i as f64, duration_us: 10_000_000, expect_back_us: 0 };
                core.set_retention(m.request, hint, now).unwrap();
            }
            core.allocate(&mut io, m.request, toks.len(), now).unwrap();
            core.commit(m.request, toks, now).unwrap();
            core.release(&mut io, m.request, now).unwrap();
        }
        core.check_invariants().unwrap();
        assert_eq!(core.stats().hinted_blocks, 6, "{policy:?}: committed after the hint, hinted at release");
        let ids = |core: &CacheCore, t: &[u32]| -> Vec<u32> {
            let mut v: Vec<u32> =
                core.prefix_keys(1, 0, t).iter().map(|&k| core.tree.lookup(k).unwrap()).collect();
            v.reverse();
            v
        };
        let [a, b, c, d] = [0, 1, 2, 3].map(|i| ids(&core, &chains[i]));
        let cat =
            |parts: &[&Vec<u32>]| -> Vec<u32> { parts.iter().flat_map(|p| p.iter().copied()).collect() };
        // Unhinted first (in policy order: c then d, older first under every policy here),
        // then the priority-1 chain, then priority 2.
        let now = 5_000;
        assert_eq!(core.plan_swap_out(12, now), cat(&[&c, &d, &b, &a]), "{policy:?}");
        assert_eq!(core.plan_swap_out(6, now), cat(&[&c, &d]), "{policy:?}");
        assert_eq!(core.plan(Tier::Gpu, 12, now), brute_force(&core, Tier::Gpu, 12, now));
        // Both expired: the old chain ranks by age again, ahead of everything.
        let later = 10_001_000;
        core.step(&mut io, later, 1, false).unwrap();
        assert_eq!(core.stats().hinted_blocks, 0, "{policy:?}");
        core.check_invariants().unwrap();
        assert_eq!(&core.plan_swap_out(3, later), &a, "{policy:?}");
    }
}

/// Hinted blocks that went to the host tier are pruned after unhinted ones there too.
#[test]
fn hints_hold_on_the_host_tier() {
    let cfg = CacheConfig {
        block_tokens: 1,
        policy: PolicyKind::Lru,
        swap_out_high: 0.0,
        swap_out_low: 0.0,
        host_high: 1.0,
        host_low: 1.0,
        ..Default::default()
    };
    let mut io = CpuBackend::new(8, 16, 16).unwrap();
    let mut core = CacheCore::new(cfg, 8, 16, 16).unwrap();
    core.register_adapter(1, &[0u8; 8], 4, 0).unwrap();
    let m = core.match_prefix(&mut io, 1, 0, &[1, 2], 0).unwrap();
    core.allocate(&mut io, m.request, 2, 0).unwrap();
    core.commit(m.request, &[1, 2], 0).unwrap();
    core.set_retention(
        m.request,
        RetentionHint { priority: 1.0, duration_us: 0, expect_back_us: 60_000_000 },
        0,
    )
    .unwrap();
    core.release(&mut io, m.request, 0).unwrap();
    put(&mut core, &mut io, &[5, 6], 10);
    for t in 20..24 {
        core.step(&mut io, t, 1, false).unwrap();
    }
    core.check_invariants().unwrap();
    assert_eq!(core.stats().kv_nodes_host, 4, "everything went to the host");
    let pruned = core.plan(Tier::Host, 2, 30);
    let want: Vec<u32> = [&[5, 6][..], &[5]]
        .iter()
        .map(|t| core.tree.lookup(*core.prefix_keys(1, 0, t).last().unwrap()).unwrap())
        .collect();
    assert_eq!(pruned, want, "the unhinted chain is pruned first although it is newer");
    assert_eq!(core.prune_host(2, 30), 2);
    core.check_invariants().unwrap();
    assert_eq!(core.stats().kv_nodes_host, 2);
}

/// `libra` ranking by hit density (`rank_by_hit_density`) over `blocks` blocks per tier, one
/// token per block, adapter 1 (one block) registered.
fn density_core(blocks: u32) -> (CacheCore, CpuBackend) {
    let cfg = CacheConfig {
        block_tokens: 1,
        policy: PolicyKind::Libra,
        rank_by_hit_density: true,
        ..Default::default()
    };
    let io = CpuBackend::new(8, blocks, blocks).unwrap();
    let mut core = CacheCore::new(cfg, 8, blocks, blocks).unwrap();
    core.register_adapter(1, &[0u8; 8], 4, 0).unwrap();
    (core, io)
}

/// Conversations come back 200 s after their last turn or not at all (dropped at 250 s): a
/// block idle for 150 s is about due, one idle for 1 s is far from its return. LRU sends the
/// older block away; hit density sends the fresh one, and its plan is the brute force's.
#[test]
fn libra_keeps_a_due_return_that_lru_sends_away() {
    let (mut core, mut io) = density_core(64);
    for _ in 0..50 {
        core.reuse.hit(ReuseClass::Kv, 200_000_000);
        core.reuse.end(ReuseClass::Kv, 250_000_000);
    }
    let now = 300_000_000;
    put(&mut core, &mut io, &[10], now - 150_000_000);
    put(&mut core, &mut io, &[20], now - 1_000_000);
    let due = core.tree.lookup(core.prefix_keys(1, 0, &[10])[0]).unwrap();
    let fresh = core.tree.lookup(core.prefix_keys(1, 0, &[20])[0]).unwrap();
    assert_eq!(core.plan_with(Tier::Gpu, 1, now, &Scorer::LastUse), vec![due]);
    assert_eq!(core.plan_swap_out(1, now), vec![fresh]);
    for k in 1..=3 {
        assert_eq!(core.plan(Tier::Gpu, k, now), brute_force(&core, Tier::Gpu, k, now));
    }
}

/// On random trees whose reuse model learned from their own history, hit density's plans
/// differ from last use's in many cases (the brute-force test checks that they are exact).
#[test]
fn libra_density_changes_victims() {
    let (mut differ, mut plans) = (0, 0);
    for seed in 1..=4u64 {
        let (core, _io) = random_core_ranked(PolicyKind::Libra, 0, seed, true);
        let d = core.reuse.densities();
        assert!(d[0].iter().any(|&x| x > 0.0) && d[1].iter().any(|&x| x > 0.0), "seed {seed}: {d:?}");
        for later in [0, 5_000_000, 90_000_000] {
            let at = core.last_now + later;
            for k in [2, 7, 30] {
                plans += 1;
                differ += (core.plan(Tier::Gpu, k, at) != core.plan_with(Tier::Gpu, k, at, &Scorer::LastUse))
                    as u32;
            }
        }
    }
    assert!(differ * 4 > plans, "only {differ} of {plans} plans differ from last use");
}

/// An adapter used every second until a second ago against one used twice, 100 s apart, the
/// last time just now: LRU frees the first; hit density, by each adapter's own rate, the
/// second.
#[test]
fn libra_frees_the_rare_adapter_first() {
    let (mut core, mut io) = density_core(16);
    core.register_adapter(2, &[0u8; 8], 4, 0).unwrap();
    let mut use_adapter = |core: &mut CacheCore, id: u64, now: u64| {
        let m = core.match_prefix(&mut io, id, 0, &[], now).unwrap();
        core.release(&mut io, m.request, now).unwrap();
    };
    use_adapter(&mut core, 2, 0);
    for s in 90..=99 {
        use_adapter(&mut core, 1, s * 1_000_000);
    }
    use_adapter(&mut core, 2, 100_000_000);
    let popular = core.adapter(core.slot_of(1).unwrap()).node;
    let rare = core.adapter(core.slot_of(2).unwrap()).node;
    let now = 101_000_000;
    assert_eq!(core.plan_with(Tier::Gpu, 1, now, &Scorer::LastUse), vec![popular]);
    assert_eq!(core.plan_swap_out(1, now), vec![rare]);
    assert_eq!(core.plan(Tier::Gpu, 2, now), brute_force(&core, Tier::Gpu, 2, now));
}

/// `libra`'s default ranking: KV blocks by ELoRA's value, adapters after every KV block. An
/// idle adapter whose KV is all gone stays while any KV block of the other adapter may leave,
/// however fresh; `elora` frees the idle adapter first by Eq. 6.
#[test]
fn libra_frees_adapters_only_after_every_kv_block() {
    for policy in [PolicyKind::Libra, PolicyKind::Elora] {
        let (mut core, mut io) = small_core(policy, 16);
        core.register_adapter(2, &[0u8; 8], 4, 0).unwrap();
        let m = core.match_prefix(&mut io, 2, 0, &[], 0).unwrap();
        core.release(&mut io, m.request, 0).unwrap();
        for (i, t) in [[1u32, 2], [3, 4], [5, 6]].iter().enumerate() {
            put(&mut core, &mut io, t, 100_000_000 + i as u64);
        }
        let idle = core.adapter(core.slot_of(2).unwrap()).node;
        let now = 100_000_010;
        let plan = core.plan(Tier::Gpu, 3, now);
        assert_eq!(plan, brute_force(&core, Tier::Gpu, 3, now), "{policy:?}");
        if policy == PolicyKind::Libra {
            assert!(!plan.contains(&idle), "libra: three KV blocks leave before the adapter: {plan:?}");
        } else {
            assert_eq!(plan[0], idle, "elora: the idle adapter leaves first");
        }
    }
}
