//! Layer-wise readiness: a swap-in lands per layer group, the cache reports each group as it
//! lands, and a copy that fails after some groups landed fails the request without losing the
//! host copy. Over adopted segments (4 layers x K/V), two segments per group.
use libra::backend::cpu::CpuBackend;
use libra::backend::{Backend, Segment};
use libra::cache::{CacheConfig, CacheCore, PolicyKind, Readiness};
use libra::Status;
use libra_testkit::faulty::{FaultControl, FaultPlan, FaultyBackend};

const SEGS: usize = 8;
const PIECE: usize = 32;
const BLOCKS: u32 = 8;
const HOST: u32 = 8;
const BT: usize = 4;
const PER_GROUP: u32 = 2;
const GROUPS: u32 = (SEGS as u32).div_ceil(PER_GROUP);

/// The engine's KV tensors: one buffer per segment.
struct Mem(Vec<Vec<u8>>);

impl Mem {
    fn new() -> Self {
        Mem((0..SEGS).map(|_| vec![0u8; BLOCKS as usize * PIECE]).collect())
    }
    fn segments(&mut self) -> Vec<Segment> {
        self.0
            .iter_mut()
            .map(|b| Segment {
                base: b.as_mut_ptr() as u64,
                bytes_per_block: PIECE as u64,
                stride: PIECE as u64,
            })
            .collect()
    }
    fn piece(&self, block: u32, seg: usize) -> &[u8] {
        &self.0[seg][block as usize * PIECE..(block as usize + 1) * PIECE]
    }
    fn scribble(&mut self) {
        for b in &mut self.0 {
            b.fill(0xEE);
        }
    }
}

/// Block `i` of the prompt, segment `s`: every byte is `i * 16 + s + 1`.
fn pattern(i: usize) -> Vec<u8> {
    (0..SEGS).flat_map(|s| std::iter::repeat((i * 16 + s + 1) as u8).take(PIECE)).collect()
}

fn tokens(seed: u32, n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| seed * 1000 + i).collect()
}

fn config() -> CacheConfig {
    CacheConfig {
        block_tokens: BT as u32,
        policy: PolicyKind::Lru,
        segments_per_group: PER_GROUP,
        ..Default::default()
    }
}

/// Caches a 4-block prompt, then pushes part of it to the host tier. Returns the number of its
/// blocks now on the host.
fn cache_then_swap_out(core: &mut CacheCore, io: &mut dyn Backend, prompt: &[u32]) -> usize {
    core.register_adapter(1, &[9u8; 10], 8, 0).unwrap();
    let m = core.match_prefix(io, 1, 0, prompt, 1).unwrap();
    assert!(m.ready && m.cached_tokens == 0);
    let blocks = core.allocate(io, m.request, prompt.len(), 2).unwrap();
    for (i, &b) in blocks.iter().enumerate() {
        io.write_gpu_block(b, &pattern(i)).unwrap();
    }
    core.commit(m.request, prompt, 3).unwrap();
    core.release(io, m.request, 4).unwrap();
    // Another request fills the tier; the next step swaps cached blocks out.
    let other = core.match_prefix(io, 1, 0, &tokens(2, BT), 5).unwrap();
    core.allocate(io, other.request, 3 * BT, 6).unwrap();
    for t in 0..8 {
        core.step(io, 10 + t, 1, false).unwrap();
    }
    core.release(io, other.request, 30).unwrap();
    core.step(io, 31, 1, false).unwrap();
    core.check_invariants().unwrap();
    let on_host = core.stats().kv_nodes_host as usize;
    assert!(on_host > 0, "nothing was swapped out");
    println!("{on_host} of the prompt's 4 blocks on the host tier");
    on_host
}

fn cpu(mem: &mut Mem) -> CpuBackend {
    // SAFETY: `mem` outlives the backend in every test and is not resized.
    unsafe { CpuBackend::adopt(mem.segments(), BLOCKS, HOST) }.unwrap()
}

fn core(cfg: CacheConfig) -> CacheCore {
    CacheCore::new(cfg, (SEGS * PIECE) as u64, BLOCKS, HOST).unwrap()
}

fn faulty(mem: &mut Mem) -> (FaultyBackend<CpuBackend>, FaultControl) {
    let io = FaultyBackend::new(cpu(mem), FaultPlan::default());
    let ctl = io.control();
    (io, ctl)
}

/// The loaded blocks' pieces of group `g` hold the prompt's bytes exactly when `landed`.
fn check_groups(mem: &Mem, kv: &[u32], loaded_from: usize, landed: u32) {
    for (i, &b) in kv.iter().enumerate().skip(loaded_from) {
        let want = pattern(i);
        for s in 0..SEGS {
            let group = s as u32 / PER_GROUP;
            let same = mem.piece(b, s) == &want[s * PIECE..(s + 1) * PIECE];
            assert_eq!(same, group < landed, "block {i} segment {s} with {landed} groups landed");
        }
    }
}

#[test]
fn a_swap_in_becomes_ready_group_by_group() {
    let mut mem = Mem::new();
    let (mut io, ctl) = faulty(&mut mem);
    let mut core = core(config());
    let prompt = tokens(1, 4 * BT);
    let on_host = cache_then_swap_out(&mut core, &mut io, &prompt);
    mem.scribble();
    ctl.set_hold(true);
    let m = core.match_prefix(&mut io, 1, 0, &prompt, 40).unwrap();
    assert_eq!(m.cached_tokens, prompt.len());
    assert!(!m.ready);
    let g = core.poll_groups(&mut io, m.request).unwrap();
    assert_eq!((g.readiness, g.ready_groups, g.groups), (Readiness::Pending, 0, GROUPS));
    let held = ctl.held();
    assert_eq!(held.len(), 1, "one swap-in batch");
    let loaded_from = 4 - on_host;
    for landed in 1..=GROUPS {
        ctl.complete_groups(held[0], 1);
        let g = core.poll_groups(&mut io, m.request).unwrap();
        assert_eq!(g.ready_groups, landed);
        check_groups(&mem, &m.kv_blocks, loaded_from, landed);
        let want = if landed == GROUPS { Readiness::Ready } else { Readiness::Pending };
        assert_eq!(g.readiness, want);
        // Not ready as a whole: committing waits for the last group.
        if landed < GROUPS {
            assert_eq!(core.commit(m.request, &[], 41).unwrap_err().status, Status::LIBRA_ERR_BUSY);
        }
    }
    assert!(ctl.held().is_empty());
    // Every group event is NULL on the CPU backend; a group past the last is refused.
    assert!(core.group_event(&io, m.request, GROUPS - 1).unwrap().is_null());
    let e = core.group_event(&io, m.request, GROUPS).unwrap_err();
    assert!(e.message.contains("`group`"), "{}", e.message);
    let rest = core.allocate(&mut io, m.request, BT, 42).unwrap();
    assert_eq!(rest.len(), 1);
    core.release(&mut io, m.request, 43).unwrap();
    core.check_invariants().unwrap();
}

#[test]
fn a_group_that_fails_fails_the_request_and_keeps_the_host_copy() {
    for held in [false, true] {
        let mut mem = Mem::new();
        let (mut io, ctl) = faulty(&mut mem);
        let mut core = core(config());
        let prompt = tokens(1, 4 * BT);
        let on_host = cache_then_swap_out(&mut core, &mut io, &prompt);
        mem.scribble();
        if held {
            ctl.set_hold(true);
        } else {
            // The next submission is the swap-in: it fails at group 2, after groups 0 and 1.
            ctl.fail_group(ctl.counters().submissions, 2);
        }
        let m = core.match_prefix(&mut io, 1, 0, &prompt, 40).unwrap();
        if held {
            let b = ctl.held()[0];
            ctl.complete_groups(b, 2);
            assert_eq!(core.poll_groups(&mut io, m.request).unwrap().ready_groups, 2);
            ctl.complete(b, false);
        }
        let g = core.poll_groups(&mut io, m.request).unwrap();
        assert!(matches!(g.readiness, Readiness::Failed(_)), "{g:?}");
        assert_eq!(g.ready_groups, 0);
        core.abort(&mut io, m.request, 41).unwrap();
        core.check_invariants().unwrap();
        assert_eq!(core.stats().kv_nodes_host as usize, on_host, "the host copies stay");
        // Without faults the prefix loads again, whole and intact.
        ctl.set_hold(false);
        ctl.disable();
        mem.scribble();
        let m = core.match_prefix(&mut io, 1, 0, &prompt, 50).unwrap();
        let g = core.poll_groups(&mut io, m.request).unwrap();
        assert_eq!((g.readiness, g.ready_groups), (Readiness::Ready, GROUPS));
        check_groups(&mem, &m.kv_blocks, 4 - on_host, GROUPS);
        core.release(&mut io, m.request, 51).unwrap();
        core.check_invariants().unwrap();
    }
}

#[test]
fn the_cpu_backend_completes_deferred_swaps_group_by_group() {
    let mut mem = Mem::new();
    let mut io = cpu(&mut mem);
    let mut core = core(config());
    let prompt = tokens(1, 4 * BT);
    let on_host = cache_then_swap_out(&mut core, &mut io, &prompt);
    mem.scribble();
    io.set_deferred(true);
    let m = core.match_prefix(&mut io, 1, 0, &prompt, 40).unwrap();
    let batch = io.pending_batches()[0];
    assert_eq!(io.groups_done(batch, GROUPS), 0);
    io.complete_groups(batch, 3);
    assert_eq!(io.groups_done(batch, GROUPS), 3);
    let g = core.poll_groups(&mut io, m.request).unwrap();
    assert_eq!((g.readiness, g.ready_groups), (Readiness::Pending, 3));
    check_groups(&mem, &m.kv_blocks, 4 - on_host, 3);
    io.complete_groups(batch, 5);
    let g = core.poll_groups(&mut io, m.request).unwrap();
    assert_eq!((g.readiness, g.ready_groups), (Readiness::Ready, GROUPS));
    check_groups(&mem, &m.kv_blocks, 4 - on_host, GROUPS);
    core.release(&mut io, m.request, 41).unwrap();
    core.check_invariants().unwrap();
}

#[test]
fn one_group_unless_configured() {
    let mut mem = Mem::new();
    let mut io = cpu(&mut mem);
    let cfg = CacheConfig { segments_per_group: 0, ..config() };
    let mut core = core(cfg);
    core.register_adapter(1, &[1u8; 10], 8, 0).unwrap();
    let m = core.match_prefix(&mut io, 1, 0, &tokens(1, BT), 1).unwrap();
    let g = core.poll_groups(&mut io, m.request).unwrap();
    assert_eq!((g.readiness, g.ready_groups, g.groups), (Readiness::Ready, 1, 1));
    assert!(core.group_event(&io, m.request, 1).is_err());
    core.release(&mut io, m.request, 2).unwrap();
    assert!(core.poll_groups(&mut io, m.request).is_err(), "released requests are unknown");
}

/// The CUDA backend's per-group launches read slices of one unit list: on the CPU reference of
/// the kernels, scattering group by group (with a chunk size that splits pieces into several
/// units) gives the bytes of one whole scatter, and each group touches only its segments.
#[test]
fn per_group_launches_cover_each_segment_once() {
    use libra::backend::cuda::params::Launch;
    use libra::backend::cuda::tables;
    use libra::backend::reference;
    use libra::backend::{SegmentGroups, TierLayout};
    let blocks = 6u32;
    let sizes = [48u64, 48, 100, 100, 16, 16, 200];
    let mut mem: Vec<Vec<u8>> = sizes.iter().map(|&s| vec![0u8; (s * blocks as u64) as usize]).collect();
    let segs: Vec<Segment> = mem
        .iter_mut()
        .zip(sizes)
        .map(|(m, s)| Segment { base: m.as_mut_ptr() as u64, bytes_per_block: s, stride: s })
        .collect();
    let layout = TierLayout::new(segs, blocks).unwrap();
    let bb = layout.block_bytes() as usize;
    let flat: Vec<u8> = (0..bb * 4).map(|i| (i * 7 + 3) as u8).collect();
    let pairs: Vec<[u32; 2]> = vec![[5, 0], [1, 1], [3, 3], [0, 2]];
    let dsegs = tables::device_segments(&layout);
    let units = tables::build_units(&layout, 32);
    let launch = Launch { grid: 3, threads: 8 };
    // SAFETY: every address lies in `mem` or `flat`, which do not overlap.
    unsafe { reference::scatter(launch, &dsegs, &units, &pairs, flat.as_ptr() as u64, bb as u64) };
    let whole = mem.clone();
    for per in [1u32, 2, 3, 7] {
        for m in &mut mem {
            m.fill(0);
        }
        let groups = SegmentGroups::new(sizes.len(), per);
        let ranges = tables::group_units(&units, groups);
        assert_eq!(ranges.len() as u32, groups.count());
        assert_eq!(ranges.first().unwrap().start, 0);
        assert_eq!(ranges.last().unwrap().end, units.len() as u32);
        for (g, r) in ranges.iter().enumerate() {
            let slice = &units[r.start as usize..r.end as usize];
            assert!(slice.iter().all(|u| groups.segments(g as u32).contains(&(u.segment as usize))));
            // SAFETY: as above.
            unsafe { reference::scatter(launch, &dsegs, slice, &pairs, flat.as_ptr() as u64, bb as u64) };
            for (s, m) in mem.iter().enumerate() {
                let landed = groups.group_of(s) <= g as u32;
                assert_eq!(m == &whole[s], landed, "{per} per group: segment {s} after group {g}");
            }
        }
    }
}
