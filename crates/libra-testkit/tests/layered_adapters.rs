//! Adapters registered layer by layer (`CacheConfig::layered_adapters`): an upload lands in the
//! swap-ins' layer groups, and a request is ready group by group as its adapter's layers land.
//! Over adopted segments (4 layers x K/V, two segments per group, so 4 groups).
use libra::backend::cpu::CpuBackend;
use libra::backend::{Backend, Segment};
use libra::cache::{CacheConfig, CacheCore, PolicyKind, Readiness};
use libra_testkit::faulty::{FaultPlan, FaultyBackend};

const SEGS: usize = 8;
const PIECE: usize = 32;
const BLOCK: usize = SEGS * PIECE;
const BLOCKS: u32 = 8;
const PER_GROUP: u32 = 2;
const GROUPS: u32 = SEGS as u32 / PER_GROUP;
/// Three blocks, the last partly filled: groups end at blocks 1, 2, 3 and 3.
const WEIGHTS: usize = 700;

fn weights() -> Vec<u8> {
    (0..WEIGHTS).map(|i| (i * 7 + 3) as u8).collect()
}

/// A CPU backend over `mem`'s segments.
fn adopt(mem: &mut [Vec<u8>]) -> CpuBackend {
    let segs: Vec<Segment> = mem
        .iter_mut()
        .map(|b| Segment { base: b.as_mut_ptr() as u64, bytes_per_block: PIECE as u64, stride: PIECE as u64 })
        .collect();
    // SAFETY: `mem` outlives the backend in every test and is not resized.
    unsafe { CpuBackend::adopt(segs, BLOCKS, BLOCKS) }.unwrap()
}

fn setup(mem: &mut [Vec<u8>], layered: bool) -> (CpuBackend, CacheCore) {
    let mut io = adopt(mem);
    io.set_deferred(true);
    (io, cache(layered))
}

fn cache(layered: bool) -> CacheCore {
    let cfg = CacheConfig {
        block_tokens: 4,
        policy: PolicyKind::Libra,
        segments_per_group: PER_GROUP,
        layered_adapters: layered,
        ..Default::default()
    };
    let mut core = CacheCore::new(cfg, BLOCK as u64, BLOCKS, BLOCKS).unwrap();
    core.register_adapter(2, &weights(), 8, 0).unwrap();
    core
}

/// Whether the adapter's block `i` holds its share of the weights.
fn landed(io: &mut dyn Backend, blocks: &[u32], i: usize) -> bool {
    let mut out = vec![0u8; BLOCK];
    io.read_gpu_block(blocks[i], &mut out).unwrap();
    let w = weights();
    let part = &w[i * BLOCK..((i + 1) * BLOCK).min(WEIGHTS)];
    &out[..part.len()] == part
}

#[test]
fn a_layered_adapter_becomes_ready_group_by_group() {
    let mut mem = vec![vec![0u8; BLOCKS as usize * PIECE]; SEGS];
    let (mut io, mut core) = setup(&mut mem, true);
    let m = core.match_prefix(&mut io, 2, 0, &[1, 2, 3, 4], 1).unwrap();
    assert!(!m.ready, "the adapter is on its way");
    let upload = io.pending_batches()[0];
    let g = core.poll_groups(&mut io, m.request).unwrap();
    assert_eq!((g.readiness, g.ready_groups, g.groups), (Readiness::Pending, 0, GROUPS));
    let blocks = core.adapter_gpu_blocks(2).unwrap();
    assert_eq!(blocks.len(), WEIGHTS.div_ceil(BLOCK));
    // Group k ends at block min(k + 1, 3): its layers' bytes, and no later ones, are in.
    for k in 1..=GROUPS {
        io.complete_groups(upload, 1);
        let g = core.poll_groups(&mut io, m.request).unwrap();
        assert_eq!(g.ready_groups, k);
        let want = if k == GROUPS { Readiness::Ready } else { Readiness::Pending };
        assert_eq!(g.readiness, want);
        for i in 0..blocks.len() {
            assert_eq!(landed(&mut io, &blocks, i), i < k as usize, "block {i} after {k} groups");
        }
    }
    assert!(core.group_event(&io, m.request, 0).unwrap().is_null(), "no events on the CPU backend");
    core.release(&mut io, m.request, 2).unwrap();
    core.check_invariants().unwrap();
}

#[test]
fn an_unlayered_adapter_lands_whole() {
    let mut mem = vec![vec![0u8; BLOCKS as usize * PIECE]; SEGS];
    let (mut io, mut core) = setup(&mut mem, false);
    let m = core.match_prefix(&mut io, 2, 0, &[1, 2, 3, 4], 1).unwrap();
    let upload = io.pending_batches()[0];
    assert_eq!(core.poll_groups(&mut io, m.request).unwrap().ready_groups, 0);
    // One group: its completion is the whole upload's.
    io.complete_groups(upload, 1);
    let g = core.poll_groups(&mut io, m.request).unwrap();
    assert_eq!((g.readiness, g.ready_groups), (Readiness::Ready, GROUPS));
    let blocks = core.adapter_gpu_blocks(2).unwrap();
    assert!((0..blocks.len()).all(|i| landed(&mut io, &blocks, i)));
    core.release(&mut io, m.request, 2).unwrap();
}

#[test]
fn upload_groups_must_end_at_the_upload() {
    let mut mem = vec![vec![0u8; BLOCKS as usize * PIECE]; SEGS];
    let (mut io, _) = setup(&mut mem, true);
    let data = vec![1u8; 300];
    for ends in [&[][..], &[1, 1][..], &[2, 1][..], &[1, 3][..]] {
        let e = io.submit_upload_grouped(&data, &[0, 1], ends).unwrap_err();
        assert!(e.message.contains("group_ends"), "{ends:?}: {}", e.message);
    }
    let b = io.submit_upload_grouped(&data, &[0, 1], &[0, 2, 2]).unwrap();
    assert_eq!(io.groups_done(b, 3), 0);
    io.complete_groups(b, 1);
    assert_eq!(io.groups_done(b, 3), 1, "an empty group lands at once after the one before");
    io.complete(b, true);
    assert_eq!(io.groups_done(b, 3), 3);
}

/// An upload that fails after its first two groups landed fails the request that waits for
/// it, though those groups' layers are in place: the adapter is not resident, its blocks are
/// free again, and the next request loads it again, whole and right.
#[test]
fn a_layered_upload_failing_midway_fails_its_request_and_loads_again() {
    let mut mem = vec![vec![0u8; BLOCKS as usize * PIECE]; SEGS];
    let plan = FaultPlan { hold: true, ..Default::default() };
    let mut io = FaultyBackend::new(adopt(&mut mem), plan);
    let ctl = io.control();
    let mut core = cache(true);
    ctl.fail_group(0, 2);
    let m = core.match_prefix(&mut io, 2, 0, &[1, 2, 3, 4], 1).unwrap();
    let upload = ctl.held()[0];
    let blocks = core.adapter_gpu_blocks(2).unwrap();
    ctl.complete_groups(upload, 2);
    let g = core.poll_groups(&mut io, m.request).unwrap();
    assert_eq!((g.readiness, g.ready_groups), (Readiness::Pending, 2));
    assert!(landed(&mut io, &blocks, 0) && landed(&mut io, &blocks, 1), "groups 0 and 1 are in");
    ctl.complete_groups(upload, 1);
    let g = core.poll_groups(&mut io, m.request).unwrap();
    let Readiness::Failed(why) = &g.readiness else { panic!("{:?}", g.readiness) };
    assert!(why.contains("group 2"), "{why}");
    assert_eq!(g.ready_groups, 0, "no group of a failed copy is trusted");
    core.abort(&mut io, m.request, 2).unwrap();
    assert!(!core.adapter_info(2).unwrap().resident);
    assert_eq!(core.tier_blocks().gpu_free, BLOCKS);
    core.check_invariants().unwrap();
    // Loaded again: every group lands, and every byte is right.
    ctl.set_hold(false);
    let m = core.match_prefix(&mut io, 2, 0, &[1, 2, 3, 4], 3).unwrap();
    assert_eq!(core.poll_groups(&mut io, m.request).unwrap().readiness, Readiness::Ready);
    let blocks = core.adapter_gpu_blocks(2).unwrap();
    assert!((0..blocks.len()).all(|i| landed(&mut io, &blocks, i)));
    core.release(&mut io, m.request, 4).unwrap();
    core.check_invariants().unwrap();
}
