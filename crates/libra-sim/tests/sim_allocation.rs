//! What an allocation waits for when every GPU block is pinned or in flight, on the simulated
//! link (its waits advance the engine clock, so a stall shows as `stalled_us`): a copy to the
//! host frees blocks when it lands, so the allocation waits for it; a swap-in its request pins
//! frees nothing, so the allocation fails at once instead of stalling the engine for it.
use libra::backend::Backend;
use libra::cache::{CacheConfig, CacheCore, PolicyKind, Residency};
use libra::Status;
use libra_sim::{Hardware, TimingBackend};

const BT: usize = 16;

fn tokens(seed: u32, blocks: usize) -> Vec<u32> {
    (0..(blocks * BT) as u32).map(|i| seed * 100_000 + i).collect()
}

/// An 8-block GPU tier, one adapter (one block), and a 4-block prefix cached and released.
fn setup() -> (CacheCore, TimingBackend, Vec<u32>) {
    let hw = Hardware::preset("llama3-8b-h800").unwrap();
    let mut io = TimingBackend::new(8, 16, hw.kv_block_bytes(BT as u32), &hw, 3.0);
    let cfg = CacheConfig { block_tokens: BT as u32, policy: PolicyKind::Lru, ..Default::default() };
    let mut core = CacheCore::new(cfg, io.gpu_layout().block_bytes(), 8, 16).unwrap();
    core.register_adapter(1, &[7u8; 8], 8, 0).unwrap();
    let prompt = tokens(1, 4);
    let m = core.match_prefix(&mut io, 1, 0, &prompt, 1).unwrap();
    // The adapter's upload lands first.
    io.now = io.next_completion().unwrap();
    core.poll_copies(&mut io);
    core.allocate(&mut io, m.request, prompt.len(), 1).unwrap();
    core.commit(m.request, &prompt, 1).unwrap();
    core.release(&mut io, m.request, 1).unwrap();
    (core, io, prompt)
}

/// The prefix's nodes, leaf first (the order they may leave the GPU in).
fn prefix_nodes(core: &CacheCore, prompt: &[u32]) -> Vec<u32> {
    let mut ids: Vec<u32> =
        core.prefix_keys(1, 0, prompt).iter().map(|&k| core.node_by_key(k).unwrap().id).collect();
    ids.reverse();
    ids
}

#[test]
fn an_allocation_waits_for_a_swap_out_that_frees_its_blocks() {
    let (mut core, mut io, prompt) = setup();
    let ids = prefix_nodes(&core, &prompt);
    core.swap_out_nodes(&mut io, &ids).unwrap();
    // 3 blocks free; the 4 leaving the GPU come free once their copy lands.
    let b = core.match_prefix(&mut io, 1, 0, &tokens(2, 7), 2).unwrap();
    let got = core.allocate(&mut io, b.request, 7 * BT, 2).unwrap();
    assert_eq!(got.len(), 7);
    assert!(io.stalled_us > 0, "the allocation did not wait for the swap-out");
}

#[test]
fn an_allocation_does_not_wait_for_a_swap_in_its_request_pins() {
    let (mut core, mut io, prompt) = setup();
    let ids = prefix_nodes(&core, &prompt);
    core.swap_out_nodes(&mut io, &ids).unwrap();
    io.now = io.next_completion().unwrap();
    core.poll_copies(&mut io);
    assert!(ids.iter().all(|&n| core.node(n).unwrap().residency == Residency::Host));
    // The prefix comes back for a new request: 4 blocks on their way, pinned by it.
    let now = io.now;
    let a = core.match_prefix(&mut io, 1, 0, &prompt, now).unwrap();
    assert!(!a.ready && a.cached_tokens == prompt.len());
    let stalled = io.stalled_us;
    // Nothing left to evict, and the only copy in flight frees nothing when it lands.
    let b = core.match_prefix(&mut io, 1, 0, &tokens(2, 4), now).unwrap();
    let e = core.allocate(&mut io, b.request, 4 * BT, now).unwrap_err();
    assert_eq!(e.status, Status::LIBRA_ERR_OUT_OF_MEMORY, "{}", e.message);
    assert_eq!(io.stalled_us, stalled, "the allocation stalled for a swap-in that frees nothing");
    // Once the first request is gone, its swap-in would free blocks: the allocation is told
    // to retry (busy) rather than out of memory, still without waiting for that load.
    core.abort(&mut io, a.request, now).unwrap();
    let e = core.allocate(&mut io, b.request, 4 * BT, now).unwrap_err();
    assert_eq!(e.status, Status::LIBRA_ERR_BUSY, "{}", e.message);
    assert_eq!(io.stalled_us, stalled);
    io.now = io.next_completion().unwrap();
    let now = io.now;
    assert_eq!(core.allocate(&mut io, b.request, 4 * BT, now).unwrap().len(), 4);
}
