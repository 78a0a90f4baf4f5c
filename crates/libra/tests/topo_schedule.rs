//! Schedules: the reference executor gives exactly the naive result for every policy on random
//! networks, and Themis balances dimensions better than the fixed-order baseline.
use libra::topo::exec::execute;
use libra::topo::presets::asymmetric_sweep;
use libra::topo::*;
use libra::Status;
use proptest::prelude::*;

fn network(sizes: &[u32], bw: &[f64]) -> Network {
    let kinds = [DimKind::Ring, DimKind::FullyConnected, DimKind::Switch, DimKind::Ring];
    Network::new(
        sizes
            .iter()
            .zip(bw)
            .enumerate()
            .map(|(d, (&s, &b))| Dimension::new(kinds[d], s, b).with_latency(10.0))
            .collect(),
    )
    .unwrap()
}

/// Runs `kind` with `policy` and checks the buffers against the naive result.
fn check(net: &Network, groups: &[u32], kind: CollectiveKind, count: usize, chunks: usize, policy: Policy) {
    let cfg = ScheduleConfig { policy, chunks, elem_size: 8 };
    let s = Schedule::new(net, kind, count, Some(groups), &cfg).unwrap();
    let ranks = s.ranks();
    let input: Vec<Vec<i64>> = (0..ranks)
        .map(|r| (0..count).map(|i| ((r * 7919 + i * 104729) % 1000) as i64 - 500).collect())
        .collect();
    let mut bufs = input.clone();
    // Steps are in a valid order: dependencies come first.
    for (i, st) in s.steps.iter().enumerate() {
        assert!(st.deps.iter().all(|&d| d < i));
    }
    if kind == CollectiveKind::AllToAll {
        execute(&s, &mut bufs).unwrap();
        let block = count / ranks;
        for r in 0..ranks {
            for j in 0..ranks {
                assert_eq!(
                    bufs[r][j * block..(j + 1) * block],
                    input[j][r * block..(r + 1) * block],
                    "rank {r} block {j}"
                );
            }
        }
        return;
    }
    let sum: Vec<i64> = (0..count).map(|i| input.iter().map(|b| b[i]).sum()).collect();
    // Which rank owns each element after reduce-scatter / before all-gather.
    let mut owner = vec![usize::MAX; count];
    for c in 0..s.chunks.len() {
        for r in 0..ranks {
            let (o, l) = s.owned(c, r);
            for slot in &mut owner[o..o + l] {
                assert_eq!(*slot, usize::MAX, "element owned twice");
                *slot = r;
            }
        }
    }
    assert!(owner.iter().all(|&o| o != usize::MAX), "every element has an owner");
    match kind {
        CollectiveKind::AllReduce => {
            execute(&s, &mut bufs).unwrap();
            assert!(bufs.iter().all(|b| *b == sum));
        }
        CollectiveKind::ReduceScatter => {
            execute(&s, &mut bufs).unwrap();
            for i in 0..count {
                assert_eq!(bufs[owner[i]][i], sum[i]);
            }
        }
        CollectiveKind::AllGather => {
            // Each rank starts with only its own parts; the rest is poison.
            for (r, b) in bufs.iter_mut().enumerate() {
                for i in 0..count {
                    if owner[i] != r {
                        b[i] = i64::MIN;
                    }
                }
            }
            execute(&s, &mut bufs).unwrap();
            let gathered: Vec<i64> = (0..count).map(|i| input[owner[i]][i]).collect();
            assert!(bufs.iter().all(|b| *b == gathered));
        }
        CollectiveKind::AllToAll => unreachable!("checked above"),
    }
}

fn arb_case() -> impl Strategy<Value = (Vec<u32>, Vec<f64>, Vec<u32>)> {
    prop::collection::vec((2u32..=16, 1.0f64..400.0, 0u32..3), 1..=4).prop_map(|dims| {
        let mut sizes: Vec<u32> = dims.iter().map(|d| d.0).collect();
        // Keep the rank count modest so the suite stays fast.
        while sizes.iter().product::<u32>() > 256 {
            let i = (0..sizes.len()).max_by_key(|&i| sizes[i]).unwrap();
            sizes[i] = (sizes[i] / 2).max(2);
        }
        let groups = sizes
            .iter()
            .zip(&dims)
            .map(|(&s, d)| {
                let divisors: Vec<u32> = (1..=s).filter(|g| s % g == 0).collect();
                // Mostly the full dimension; sometimes a proper divisor or not involved.
                match d.2 {
                    0 => divisors[divisors.len() / 2],
                    _ => s,
                }
            })
            .collect();
        (sizes, dims.iter().map(|d| d.1).collect(), groups)
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, failure_persistence: None, ..ProptestConfig::default() })]
    #[test]
    fn every_policy_gives_the_naive_result(
        (sizes, bw, groups) in arb_case(),
        count in 1usize..120,
        chunks in 1usize..9,
        kind in prop::sample::select(vec![
            CollectiveKind::AllReduce,
            CollectiveKind::ReduceScatter,
            CollectiveKind::AllGather,
            CollectiveKind::AllToAll,
        ]),
    ) {
        let net = network(&sizes, &bw);
        // An all-to-all moves equal blocks: round the count to a multiple of the ranks.
        let ranks = groups.iter().product::<u32>() as usize;
        let count = if kind == CollectiveKind::AllToAll { ranks * (1 + count % 5) } else { count };
        for policy in [Policy::Baseline, Policy::Themis] {
            check(&net, &groups, kind, count, chunks, policy);
        }
    }
}

#[test]
fn awkward_sizes_by_hand() {
    let net = network(&[3, 5, 7], &[10.0, 20.0, 30.0]);
    for kind in [CollectiveKind::AllReduce, CollectiveKind::ReduceScatter, CollectiveKind::AllGather] {
        for policy in [Policy::Baseline, Policy::Themis] {
            for count in [1, 2, 104, 211] {
                check(&net, &[3, 5, 7], kind, count, 13, policy);
                check(&net, &[1, 5, 7], kind, count, 4, policy);
            }
            // Blocks of 1, 2 and 7 elements, in more or fewer chunks than elements per block.
            for block in [1, 2, 7] {
                check(&net, &[3, 5, 7], CollectiveKind::AllToAll, 105 * block, 3, policy);
                check(&net, &[1, 5, 7], CollectiveKind::AllToAll, 35 * block, 13, policy);
            }
        }
    }
}

/// All-to-all volume does not shrink across dimensions, so every order loads each dimension
/// alike and no order can beat the busiest dimension's busy time; what is left to win is the
/// pipeline's fill and drain. Both policies must pipeline chunks so that the busiest dimension
/// is busy nearly all the time, and themis must never lose.
#[test]
fn all_to_all_pipelines_chunks_across_dimensions() {
    let mut gains = Vec::new();
    let mut worst_utilisation = f64::INFINITY;
    let mut worst_fill: f64 = 0.0;
    for net in asymmetric_sweep() {
        let base = ScheduleConfig { policy: Policy::Baseline, chunks: 64, elem_size: 2 };
        let themis = ScheduleConfig { policy: Policy::Themis, ..base.clone() };
        let ranks: usize = net.dims().iter().map(|d| d.size as usize).product();
        let count = ranks * 4096;
        let b = Schedule::new(&net, CollectiveKind::AllToAll, count, None, &base).unwrap();
        let t = Schedule::new(&net, CollectiveKind::AllToAll, count, None, &themis).unwrap();
        gains.push(b.finish_time / t.finish_time);
        for s in [&b, &t] {
            // Pipelined: past the busiest dimension's busy time, only one fill and one drain,
            // at most one step (serialisation plus latency) per dimension.
            let busiest = s.dim_busy.iter().cloned().fold(0.0, f64::max);
            let mut longest = vec![0.0f64; net.num_dims()];
            for st in &s.steps {
                longest[st.dim] = longest[st.dim].max(st.finish - st.start);
            }
            let fill: f64 = longest.iter().sum();
            worst_fill = worst_fill.max((s.finish_time - busiest) / fill);
            worst_utilisation = worst_utilisation.min(s.bottleneck_utilisation());
        }
    }
    let avg = gains.iter().sum::<f64>() / gains.len() as f64;
    let min = gains.iter().cloned().fold(f64::INFINITY, f64::min);
    println!(
        "all-to-all over {} networks: themis/baseline avg {avg:.3}x min {min:.3}x; busiest dimension busy >= {:.1}% \
         of the time; beyond it at most {worst_fill:.2} x one step per dimension",
        gains.len(),
        worst_utilisation * 100.0
    );
    assert!(min >= 1.0, "themis is never worse: {min}");
    assert!(worst_fill <= 1.0 + 1e-9, "chunks pipeline: {worst_fill}");
    // One chunk cannot pipeline: it crosses the dimensions one after another.
    let net = network(&[8, 8], &[100.0, 100.0]);
    let one = ScheduleConfig { policy: Policy::Themis, chunks: 1, elem_size: 4 };
    let s = Schedule::new(&net, CollectiveKind::AllToAll, 64 * 1024, None, &one).unwrap();
    let sequential: f64 = s.steps.iter().map(|st| st.finish - st.start).sum();
    assert!((s.finish_time - sequential).abs() <= 1e-9 * sequential, "{} vs {sequential}", s.finish_time);
    assert!(s.bottleneck_utilisation() < 0.5, "{}", s.bottleneck_utilisation());
}

#[test]
fn themis_gain_over_baseline_on_asymmetric_networks() {
    let mut gains = Vec::new();
    for net in asymmetric_sweep() {
        let base = ScheduleConfig { policy: Policy::Baseline, chunks: 64, elem_size: 2 };
        let themis = ScheduleConfig { policy: Policy::Themis, ..base.clone() };
        let count = 32 << 20;
        let b = Schedule::new(&net, CollectiveKind::AllReduce, count, None, &base).unwrap();
        let t = Schedule::new(&net, CollectiveKind::AllReduce, count, None, &themis).unwrap();
        gains.push(b.finish_time / t.finish_time);
    }
    let avg = gains.iter().sum::<f64>() / gains.len() as f64;
    let max = gains.iter().cloned().fold(0.0, f64::max);
    let min = gains.iter().cloned().fold(f64::INFINITY, f64::min);
    println!(
        "themis/baseline all-reduce gain over {} networks: avg {avg:.3}x max {max:.3}x min {min:.3}x",
        gains.len()
    );
    assert!(min >= 1.0, "themis is never slower: {min}");
    assert!(avg >= 1.5, "average gain {avg}");
}

#[test]
fn bad_schedule_inputs() {
    let net = network(&[4, 6], &[10.0, 10.0]);
    let cfg = ScheduleConfig::default();
    let e = Schedule::new(&net, CollectiveKind::AllReduce, 10, Some(&[4, 4]), &cfg).unwrap_err();
    assert_eq!(e.status, Status::LIBRA_ERR_INVALID_ARGUMENT);
    assert!(e.message.contains("groups[1]"), "{}", e.message);
    let e = Schedule::new(&net, CollectiveKind::AllReduce, 0, None, &cfg).unwrap_err();
    assert!(e.message.contains("count"));
    let e = Schedule::new(&net, CollectiveKind::AllReduce, 5, None, &ScheduleConfig { chunks: 0, ..cfg })
        .unwrap_err();
    assert!(e.message.contains("chunks"));
    let e = Schedule::new(&net, CollectiveKind::AllToAll, 25, None, &ScheduleConfig::default()).unwrap_err();
    assert!(e.message.contains("count") && e.message.contains("24 ranks"), "{}", e.message);
    let s = Schedule::new(&net, CollectiveKind::AllReduce, 5, None, &ScheduleConfig::default()).unwrap();
    let mut bad = vec![vec![0i64; 5]; 3];
    assert!(execute(&s, &mut bad).unwrap_err().message.contains("buffers"));
}

/// Predicted step bytes are the executor's: the most any rank receives, from the integer splits.
#[test]
fn step_bytes_match_the_executors_integer_splits() {
    let net = network(&[3, 5, 4], &[10.0, 70.0, 30.0]);
    for kind in [
        CollectiveKind::AllReduce,
        CollectiveKind::ReduceScatter,
        CollectiveKind::AllGather,
        CollectiveKind::AllToAll,
    ] {
        for policy in [Policy::Baseline, Policy::Themis] {
            let count = if kind == CollectiveKind::AllToAll { 60 * 7 } else { 1009 };
            let cfg = ScheduleConfig { policy, chunks: 5, elem_size: 8 };
            let s = Schedule::new(&net, kind, count, None, &cfg).unwrap();
            for (i, st) in s.steps.iter().enumerate() {
                let g = st.group as usize;
                let most = (0..s.ranks())
                    .map(|r| {
                        let (_, len) = s.segment(i, r);
                        if st.op == StepOp::AllToAll {
                            // Every block position whose coordinate along the dimension differs.
                            len * (s.ranks() - s.ranks() / g)
                        } else {
                            len - libra::topo::schedule::split_part(len, g, s.coord(r, st.dim)).1
                        }
                    })
                    .max()
                    .unwrap();
                assert_eq!(st.bytes, (most * 8) as f64, "{kind:?} {policy:?} step {i}");
            }
        }
    }
}

/// Latency delays a chunk but does not hold the dimension: more chunks never make a collective
/// twice as slow, and Themis is never slower than the ascending order.
#[test]
fn more_chunks_hide_latency_and_themis_never_loses() {
    let mut nets = asymmetric_sweep();
    nets.extend(libra::topo::presets::NetworkPreset::all().map(|p| p.network()));
    let mut worst_growth: f64 = 0.0;
    for net in &nets {
        for kind in [CollectiveKind::AllReduce, CollectiveKind::AllToAll] {
            let ranks: usize = net.dims().iter().map(|d| d.size as usize).product();
            let count = if kind == CollectiveKind::AllToAll { ranks * 1024 } else { 32 << 20 };
            let mut best = f64::INFINITY;
            for chunks in [1, 4, 16, 64, 256] {
                let base = ScheduleConfig { policy: Policy::Baseline, chunks, elem_size: 2 };
                let themis = ScheduleConfig { policy: Policy::Themis, ..base.clone() };
                let b = Schedule::new(net, kind, count, None, &base).unwrap().finish_time;
                let t = Schedule::new(net, kind, count, None, &themis).unwrap().finish_time;
                assert!(t <= b, "themis {t} slower than baseline {b} at {chunks} chunks");
                best = best.min(b);
                worst_growth = worst_growth.max(b / best);
            }
        }
    }
    println!(
        "over {} networks, 1-256 chunks: the slowest is {worst_growth:.3}x the fastest so far",
        nets.len()
    );
    assert!(worst_growth < 2.0, "{worst_growth}");
}

/// Scheduling does bounded work: a 32-dimension network (2^32 NPUs, the most a network has)
/// schedules at once, where a search over the 32! orders would never finish.
#[test]
fn thirty_two_dimensions_schedule_in_under_a_second() {
    let dims: Vec<Dimension> =
        (0..32).map(|k| Dimension::new(DimKind::Ring, 2, 10.0 + k as f64).with_latency(5.0)).collect();
    let net = Network::new(dims).unwrap();
    assert_eq!(net.npus(), 1 << 32);
    for policy in [Policy::Baseline, Policy::Themis] {
        let start = std::time::Instant::now();
        let s = Schedule::new(
            &net,
            CollectiveKind::AllReduce,
            1 << 20,
            None,
            &ScheduleConfig { policy, ..Default::default() },
        )
        .unwrap();
        let took = start.elapsed();
        println!("{policy:?}: 32 dimensions, {} steps in {took:?}", s.steps.len());
        assert_eq!(s.steps.len(), 64 * 64);
        assert!(took.as_secs_f64() < 1.0, "{policy:?}: {took:?}");
    }
}

#[test]
fn fixed_orders() {
    let net = network(&[4, 8, 2], &[50.0, 100.0, 200.0]);
    let cfg = ScheduleConfig { policy: Policy::Baseline, chunks: 8, elem_size: 4 };
    let base = Schedule::new(&net, CollectiveKind::AllReduce, 4096, None, &cfg).unwrap();
    let same = Schedule::with_order(&net, CollectiveKind::AllReduce, 4096, None, &cfg, &[0, 1, 2]).unwrap();
    assert_eq!(base, same);
    let rev = Schedule::with_order(&net, CollectiveKind::AllReduce, 4096, None, &cfg, &[2, 1, 0]).unwrap();
    assert!(rev.orders.iter().all(|o| o == &vec![2, 1, 0]));
    check(&net, &[4, 8, 2], CollectiveKind::AllReduce, 4096, 8, Policy::Baseline);
    let mut bufs: Vec<Vec<i64>> = (0..64).map(|r| vec![r as i64; 4096]).collect();
    execute(&rev, &mut bufs).unwrap();
    assert!(bufs.iter().all(|b| b.iter().all(|&v| v == 63 * 64 / 2)));
    for bad in [&[0, 1][..], &[0, 1, 1], &[0, 1, 3]] {
        let e = Schedule::with_order(&net, CollectiveKind::AllReduce, 4096, None, &cfg, bad).unwrap_err();
        assert!(e.message.contains("order"), "{}", e.message);
    }
}
