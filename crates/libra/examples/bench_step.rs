//! Swap planning benchmark: one `step` that must choose 10^4 swap-outs among the leaves of a
//! tree with 10^6 GPU-resident nodes, beside sorting the same number of floats.
//!
//! Planning and the float sorts are repeated (they change nothing) and their medians reported,
//! as single timings on a shared machine are noisy.
//!
//! Run: cargo run --release --example bench_step [-- --reps 15]
use clap::Parser;
use libra::backend::cpu::CpuBackend;
use libra::cache::{CacheConfig, CacheCore, PolicyKind};
use std::hint::black_box;
use std::time::Instant;

const BT: usize = 16;
const PROMPT_BLOCKS: usize = 8;
const RESIDENT: usize = 1_000_000;
const MOVES: usize = 10_000;

/// Median of `reps` timings of `f`, in microseconds.
fn median_us(reps: usize, mut f: impl FnMut()) -> f64 {
    let mut t: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    t.sort_unstable_by(f64::total_cmp);
    t[t.len() / 2]
}

#[derive(Parser)]
#[command(
    name = "bench_step",
    about = "Time one swap-planning step over 10^6 resident nodes beside float sorts"
)]
struct Cli {
    /// Timed repetitions of planning and of the float sorts (their medians are reported).
    #[arg(long, value_name = "N", default_value_t = 15)]
    reps: usize,
}

fn main() {
    let reps = Cli::parse().reps;
    let capacity = 1_240_000u32;
    for policy in [PolicyKind::Elora, PolicyKind::Libra, PolicyKind::Lru] {
        let adapters = 100u64;
        // Watermarks put exactly MOVES blocks between the current use and the low mark.
        let used_after_fill = RESIDENT + adapters as usize;
        let low = (used_after_fill - MOVES) as f64 / capacity as f64;
        let cfg = CacheConfig {
            block_tokens: BT as u32,
            policy,
            swap_out_high: 0.8,
            swap_out_low: low,
            swap_in_idle: 0.0,
            swap_in_target: low,
            ..Default::default()
        };
        let mut io = CpuBackend::new(16, capacity, 2 * MOVES as u32).unwrap();
        let mut core = CacheCore::new(cfg, 16, capacity, 2 * MOVES as u32).unwrap();
        for a in 0..adapters {
            core.register_adapter(a, &[0u8; 16], 8, 0).unwrap();
        }
        let prompts = RESIDENT / PROMPT_BLOCKS;
        let mut x = 88172645463325252u64;
        let mut back_adapter: Vec<u64> = Vec::with_capacity(prompts);
        for p in 0..prompts {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let toks: Vec<u32> = (0..(PROMPT_BLOCKS * BT) as u32).map(|t| (p as u32) << 8 ^ t).collect();
            // Engine clock spread over 10 minutes, so the leaves' ages and values differ.
            let now = p as u64 * 4_800 + x % 1_000;
            let m = core.match_prefix(&mut io, x % adapters, 0, &toks, now).unwrap();
            core.allocate(&mut io, m.request, toks.len(), now).unwrap();
            core.commit(m.request, &toks, now).unwrap();
            core.release(&mut io, m.request, now).unwrap();
            // Some prompts come back, so that libra's reuse model has ages to rank by.
            if p % 4 == 0 && p >= 100 {
                let back: Vec<u32> =
                    (0..(PROMPT_BLOCKS * BT) as u32).map(|t| ((p - 100) as u32) << 8 ^ t).collect();
                let m = core.match_prefix(&mut io, back_adapter[p - 100], 0, &back, now).unwrap();
                core.release(&mut io, m.request, now).unwrap();
            }
            back_adapter.push(x % adapters);
        }
        let before = core.stats();
        assert!(before.gpu_blocks_used as f64 > 0.8 * capacity as f64, "fill reaches the high watermark");
        let now = prompts as u64 * 4_800 + 1_000_000;
        let plan = core.plan_swap_out(MOVES, now);
        assert_eq!(plan.len(), MOVES);
        let plan_us = median_us(reps, || {
            black_box(core.plan_swap_out(MOVES, now));
        });
        let s = Instant::now();
        let report = core.step(&mut io, now, 32, false).unwrap();
        let step_us = s.elapsed().as_secs_f64() * 1e6;
        assert_eq!(report.swapped_out as usize, MOVES, "{report:?}");

        // References: sorting as many floats as moves, and as many as resident nodes.
        let small: Vec<f64> = (0..MOVES).map(|i| ((i * 7919) % 10007) as f64 * 0.37).collect();
        let large: Vec<f64> = (0..RESIDENT).map(|i| ((i * 7919) % 1_000_003) as f64 * 0.37).collect();
        let mut scratch = small.clone();
        let sort_small_us = median_us(reps, || {
            scratch.copy_from_slice(&small);
            scratch.sort_unstable_by(f64::total_cmp);
            black_box(&scratch);
        });
        let mut scratch = large.clone();
        let sort_large_us = median_us(reps.min(5), || {
            scratch.copy_from_slice(&large);
            scratch.sort_unstable_by(f64::total_cmp);
            black_box(&scratch);
        });
        println!(
            "{:>5}: plan {MOVES} swap-outs (median of {reps}) among {} leaves ({} nodes): {:>6.0} us ({:.2}x sort); whole step {:>6.0} us | sort {MOVES} floats {:>6.0} us ({:.2}x) | sort {RESIDENT} floats {:>7.0} us ({:.3}x)",
            policy.name(),
            prompts,
            core.live_nodes(),
            plan_us,
            plan_us / sort_small_us,
            step_us,
            sort_small_us,
            step_us / sort_small_us,
            sort_large_us,
            step_us / sort_large_us
        );
        core.check_invariants().unwrap();
    }
}
