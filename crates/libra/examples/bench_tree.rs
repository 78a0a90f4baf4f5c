//! Tree benchmark: match + pin of a 4,096-token prompt, commit, release and eviction with 10^5
//! and 10^6 nodes in the tree, beside a plain HashMap lookup of the same number of keys.
//!
//! Match and the HashMap reference report the median of many timed repetitions, as single
//! timings on a shared machine are noisy.
//!
//! Run: cargo run --release --example bench_tree [-- --nodes 100000,1000000] [--policy lru]
use clap::builder::{PossibleValuesParser, TypedValueParser};
use clap::Parser;
use libra::backend::cpu::CpuBackend;
use libra::cache::{CacheConfig, CacheCore, PolicyKind};
use std::collections::HashMap;
use std::hint::black_box;
use std::time::Instant;

const BT: usize = 16;
const PROMPT: usize = 4096;
const BLOCKS: usize = PROMPT / BT;
const ADAPTERS: u64 = 100;

fn prompt(i: u64) -> Vec<u32> {
    (0..PROMPT as u64).map(|t| (i.wrapping_mul(0x9E37_79B9) ^ t) as u32).collect()
}

fn ns_per(start: Instant, ops: usize) -> f64 {
    start.elapsed().as_nanos() as f64 / ops as f64
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_unstable_by(f64::total_cmp);
    v[v.len() / 2]
}

fn run(nodes: usize, policy: PolicyKind) {
    let prompts = nodes / BLOCKS;
    let gpu_blocks = (prompts * BLOCKS + 2 * BLOCKS + ADAPTERS as usize + 64) as u32;
    let cfg = CacheConfig { block_tokens: BT as u32, policy, ..Default::default() };
    // 16-byte blocks: the benchmark measures metadata, not copies.
    let mut io = CpuBackend::new(16, gpu_blocks, 0).unwrap();
    let mut core = CacheCore::new(cfg, 16, gpu_blocks, 0).unwrap();
    for a in 0..ADAPTERS {
        core.register_adapter(a, &[1u8; 16], 8, 0).unwrap();
    }
    let mut now = 1;
    for p in 0..prompts as u64 {
        let t = prompt(p);
        let m = core.match_prefix(&mut io, p % ADAPTERS, 0, &t, now).unwrap();
        core.allocate(&mut io, m.request, PROMPT, now).unwrap();
        core.commit(m.request, &t, now).unwrap();
        core.release(&mut io, m.request, now).unwrap();
        now += 1;
    }
    let live = core.live_nodes();

    // Match + pin of a cached 4,096-token prompt (256 lookups), then release (unpin).
    let reps = 2000;
    let mut match_ns = Vec::with_capacity(reps);
    let mut release_ns = Vec::with_capacity(reps);
    for r in 0..reps {
        let p = (r as u64 * 7919) % prompts as u64;
        let t = prompt(p);
        let s = Instant::now();
        let m = core.match_prefix(&mut io, p % ADAPTERS, 0, &t, now).unwrap();
        match_ns.push(ns_per(s, 1));
        assert_eq!(m.cached_tokens, PROMPT);
        let s = Instant::now();
        core.release(&mut io, m.request, now).unwrap();
        release_ns.push(ns_per(s, 1));
        now += 1;
    }
    let match_ns = median(match_ns);
    let release_ns = median(release_ns);

    // Commit of a new 4,096-token prompt (256 inserts), with eviction once the pool is full.
    let commit_reps = 200;
    let mut commit_ns = 0.0;
    let mut alloc_ns = 0.0;
    let dropped_before = core.stats().dropped_blocks;
    for r in 0..commit_reps {
        let p = prompts as u64 + 1_000_000 + r as u64;
        let t = prompt(p);
        let m = core.match_prefix(&mut io, p % ADAPTERS, 0, &t, now).unwrap();
        let s = Instant::now();
        core.allocate(&mut io, m.request, PROMPT, now).unwrap();
        alloc_ns += ns_per(s, 1);
        let s = Instant::now();
        core.commit(m.request, &t, now).unwrap();
        commit_ns += ns_per(s, 1);
        core.release(&mut io, m.request, now).unwrap();
        now += 1;
    }
    let evicted = core.stats().dropped_blocks - dropped_before;
    commit_ns /= commit_reps as f64;
    alloc_ns /= commit_reps as f64;

    // Reference: a plain HashMap with as many keys as the tree has nodes; 256 lookups.
    let mut map: HashMap<u128, u32> = HashMap::with_capacity(live);
    for i in 0..live as u128 {
        map.insert(i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835), i as u32);
    }
    // As many chunks as matches, spread over the whole map like the prompts over the tree.
    let keys: Vec<u128> = (0..(BLOCKS * reps) as u128)
        .map(|i| (i * 977 % live as u128).wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835))
        .collect();
    let mut hits = 0u64;
    let mut map_ns = Vec::with_capacity(reps);
    for chunk in keys.chunks(BLOCKS) {
        let s = Instant::now();
        for k in chunk {
            hits += black_box(map.get(k)).is_some() as u64;
        }
        map_ns.push(ns_per(s, 1));
    }
    let map_ns = median(map_ns);
    assert!(hits > 0);

    // The keyed hash alone, computed as a match does (states of 32 blocks, then their keys
    // together): the floor of a match.
    let tree = libra::cache::tree::Tree::new((1, 2), libra::cache::tree::CandidateOrder::LastUse);
    let t = prompt(3);
    let mut hash_ns = Vec::with_capacity(reps);
    let mut keys = [0u128; 32];
    for _ in 0..reps {
        let s = Instant::now();
        let mut h = tree.prefix_hasher(tree.chain_root(1, 0));
        for group in t.chunks_exact(BT * 32) {
            let mut states = [h; 32];
            for (state, c) in states.iter_mut().zip(group.chunks_exact(BT)) {
                h.extend(c);
                *state = h;
            }
            libra::cache::keyhash::keys_of(&states, &mut keys);
            black_box(&keys);
        }
        hash_ns.push(ns_per(s, 1));
    }
    let hash_ns = median(hash_ns);

    let meta = core.metadata_bytes_per_node();
    println!(
        "nodes in tree: {live} ({prompts} prompts of {BLOCKS} blocks under {ADAPTERS} adapters), policy {}",
        policy.name()
    );
    println!(
        "  match + pin, 4,096 tokens (256 blocks): {:>10.0} ns  ({:.2} x HashMap; medians)",
        match_ns,
        match_ns / map_ns
    );
    println!("  HashMap<u128,u32>, 256 lookups:         {:>10.0} ns  (reference)", map_ns);
    println!("  keyed hash of 256 blocks alone:         {:>10.0} ns", hash_ns);
    println!("  release (unpin 257 nodes):              {:>10.0} ns", release_ns);
    println!(
        "  commit, 256 new blocks:                 {:>10.0} ns  ({:.0} ns/block)",
        commit_ns,
        commit_ns / BLOCKS as f64
    );
    println!(
        "  allocate 256 blocks with eviction:      {:>10.0} ns  ({} blocks evicted, {:.0} ns/block)",
        alloc_ns,
        evicted,
        alloc_ns / BLOCKS as f64
    );
    println!("  metadata per node:                      {:>10.1} bytes (ELORA's prototype: 232 + 24)", meta);
    core.check_invariants().unwrap();
}

#[derive(Parser)]
#[command(
    name = "bench_tree",
    about = "Time match, commit, release and eviction on large trees beside a HashMap"
)]
struct Cli {
    /// Tree sizes in nodes, comma-separated; one run each.
    #[arg(long, value_name = "LIST", value_delimiter = ',', default_value = "100000,1000000")]
    nodes: Vec<usize>,
    /// Eviction policy of the cache.
    #[arg(long, value_name = "NAME", default_value = "lru", value_parser = policies())]
    policy: PolicyKind,
}

fn policies() -> impl TypedValueParser<Value = PolicyKind> {
    PossibleValuesParser::new(PolicyKind::ALL.map(|p| p.name()))
        .map(|s| PolicyKind::parse(&s).expect("a listed value"))
}

fn main() {
    let cli = Cli::parse();
    for n in cli.nodes {
        run(n, cli.policy);
    }
}
