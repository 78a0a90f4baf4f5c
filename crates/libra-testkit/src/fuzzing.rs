//! Harnesses shared by the fuzz targets (`fuzz/`) and the test that replays their corpus
//! (`tests/fuzz_corpus.rs`). Each takes arbitrary bytes and panics only on a real defect: an
//! internal fault reported at the C boundary, a broken invariant, or a cached block whose bytes
//! are wrong.
//!
//! The cache harness drives the C API with a random sequence of calls and arguments, invalid
//! ones included (NULL pointers, short arrays, unknown ids, huge counts, NaN hints), over a
//! backend that fails submissions and copies and holds batches until the input completes them.
//! Half the inputs run on a GPU tier of several segments, in layer groups, with adapters
//! registered layer by layer, so grouped swap-ins and uploads land and fail group by group.
use crate::faulty::{FaultControl, FaultPlan, FaultyBackend};
use crate::fuzz_input::Input;
pub use crate::fuzzing_topo::{parse_network, parse_workload};
use crate::requests::Open;
use libra::backend::cpu::CpuBackend;
use libra::backend::Segment;
use libra::cache::{CacheConfig, PolicyKind};
use libra::handle::Cache;
use libra_ffi::cache::*;
use libra_ffi::libra_status as Status;

/// GPU-tier segments per block of a layered input (`BLOCK_BYTES` / 8 bytes each).
const SEGMENTS: usize = 4;

use crate::fixtures::{family_tokens, pattern, weights, BLOCK_BYTES};

pub(crate) fn ok_or_expected(s: Status, what: &str) {
    assert!(
        s != Status::LIBRA_ERR_PANIC && s != Status::LIBRA_ERR_POISONED,
        "{what} hit an internal fault: {}",
        // SAFETY: the library's own NUL-terminated, thread-local message.
        unsafe { std::ffi::CStr::from_ptr(libra_ffi::common::libra_last_error_message()) }.to_string_lossy()
    );
}

/// Every cached block holds its prefix's bytes in the tier that has its valid copy; every
/// resident adapter holds its weights.
fn check_data(cache: &Cache) {
    let checked = cache
        .with_parts(|core, io| core.verify_contents(io, &mut |key, bytes| bytes == pattern(key)))
        .expect("cache usable");
    if let Err(e) = checked {
        panic!("{e}");
    }
}

/// Tries `libra_cache_create` with a configuration built from the input, valid or not, with
/// sizes chosen so that an accepted one stays small.
fn create_from_input(inp: &mut Input) {
    let mut cfg = crate::c_config::default_cache_config();
    let pick = |i: &mut Input, v: &[u64]| v[i.u8() as usize % v.len()];
    cfg.block_tokens = pick(inp, &[0, 1, 4, 16, 1 << 16, (1 << 16) + 1, u32::MAX as u64]) as u32;
    cfg.block_bytes = pick(inp, &[0, 1, 64, 4096, 1 << 40, u64::MAX / 2, u64::MAX]);
    let blocks = [0, 1, 16, 256, (1 << 26) + 1, u32::MAX as u64];
    cfg.gpu_blocks = pick(inp, &blocks) as u32;
    cfg.host_blocks = pick(inp, &blocks) as u32;
    cfg.policy = i32::from(inp.u8()) % 7;
    cfg.backend = i32::from(inp.u8()) % 4;
    if inp.bool() {
        cfg.struct_size = inp.u8() as usize;
    }
    let fracs = [0.0, 0.5, 0.8, 1.0, -0.1, 1.5, f64::NAN];
    cfg.swap_out_high = fracs[inp.u8() as usize % fracs.len()];
    cfg.swap_out_low = fracs[inp.u8() as usize % fracs.len()];
    cfg.link_bytes_per_us = [50_000.0, 0.0, -1.0, f64::INFINITY][inp.u8() as usize % 4];
    cfg.events = u8::from(inp.bool());
    cfg.event_capacity = pick(inp, &[0, 1, 1 << 24, (1 << 24) + 1]) as u32;
    let bytes: u128 = cfg.block_bytes as u128 * (cfg.gpu_blocks as u128 + cfg.host_blocks as u128);
    if bytes > 64 << 20 && bytes <= 1 << 40 && cfg.gpu_blocks <= 1 << 26 && cfg.host_blocks <= 1 << 26 {
        // Valid but large: would only measure the allocator.
        return;
    }
    let mut out: *mut libra_cache = std::ptr::null_mut();
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    let s = unsafe { libra_cache_create(&cfg, &mut out) };
    ok_or_expected(s, "libra_cache_create");
    if s == Status::LIBRA_OK {
        // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
        assert_eq!(unsafe { libra_cache_check(out) }, Status::LIBRA_OK);
        // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
        unsafe { libra_cache_free(out) };
    } else {
        assert!(out.is_null(), "out written on failure");
    }
}

/// Runs a random sequence of C API calls on one cache; see the module comment.
pub fn cache_ops(data: &[u8]) {
    let mut inp = Input::new(data);
    if inp.u8() % 8 == 0 {
        create_from_input(&mut inp);
    }
    let policy = [PolicyKind::Elora, PolicyKind::Lru, PolicyKind::Vllm, PolicyKind::Slora, PolicyKind::Libra]
        [inp.u8() as usize % 5];
    let shape = inp.u8();
    let bt = 1 + shape as usize % 4;
    // Layered: SEGMENTS segments per block, 1 or 2 per layer group.
    let layered = shape / 4 % 2 == 1;
    let segments_per_group = if layered { 1 + (shape / 8) as u32 % 2 } else { 0 };
    let gpu = 4 + inp.u8() as u32 % 28;
    let host = inp.u8() as u32 % 16;
    let rates = [0.0, 0.05, 0.2, 0.5];
    let plan = FaultPlan {
        seed: inp.u16() as u64,
        submit_fail_rate: rates[inp.u8() as usize % 4],
        complete_fail_rate: rates[inp.u8() as usize % 4],
        hold: inp.bool(),
        ..Default::default()
    };
    let cfg = CacheConfig {
        block_tokens: bt as u32,
        policy,
        swap_wait_us: 0,
        events: true,
        event_capacity: 64,
        segments_per_group,
        layered_adapters: layered,
        ..Default::default()
    };
    // Dropped after the cache is freed (declared first); on a panic the handle is leaked.
    let piece = BLOCK_BYTES / SEGMENTS as u64;
    let mut segment_memory: Vec<Vec<u8>> =
        (0..if layered { SEGMENTS } else { 0 }).map(|_| vec![0u8; (gpu as u64 * piece) as usize]).collect();
    let cpu = if layered {
        let segs = segment_memory
            .iter_mut()
            .map(|m| Segment { base: m.as_mut_ptr() as u64, bytes_per_block: piece, stride: piece })
            .collect();
        // SAFETY: each segment holds `gpu` blocks and outlives the backend (freed below).
        unsafe { CpuBackend::adopt(segs, gpu, host) }.expect("small tiers")
    } else {
        CpuBackend::new(BLOCK_BYTES, gpu, host).expect("small tiers")
    };
    let io = FaultyBackend::new(cpu, plan);
    let ctl: FaultControl = io.control();
    let cache = Cache::with_backend(cfg, Box::new(io), "fuzz".into()).expect("valid config");
    let handle = Box::into_raw(libra_cache::from_cache(cache).expect("handle"));
    // SAFETY: a live handle until the libra_cache_free at the end.
    let c: &libra_cache = unsafe { &*handle };
    let mut adapter_len = [0usize; 5];
    let mut open: Vec<Open> = Vec::new();
    let mut now = 0u64;
    let mut ops = 0;
    while !inp.done() && ops < 400 {
        ops += 1;
        now += inp.u8() as u64 * 100;
        let op = inp.u8() % 17;
        match op {
            0 | 1 => {
                // match
                let adapter = inp.u8() as u64 % 5;
                let ns = inp.u8() as u64 % 2;
                let family = inp.u8() as u32 % 6;
                let len = inp.u8() as usize % 48;
                let tokens = family_tokens(family, len);
                let need = len / bt;
                let cap = if inp.u8() % 8 == 0 { need.saturating_sub(1) } else { need };
                let mut blocks = vec![0u32; cap];
                let mut m = libra_match::default();
                let null_tokens = inp.u8() % 16 == 0;
                let null_out = inp.u8() % 16 == 0;
                // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                let s = unsafe {
                    libra_cache_match(
                        handle,
                        adapter,
                        ns,
                        if null_tokens { std::ptr::null() } else { tokens.as_ptr() },
                        tokens.len(),
                        now,
                        if cap == 0 { std::ptr::null_mut() } else { blocks.as_mut_ptr() },
                        cap,
                        if null_out { std::ptr::null_mut() } else { &mut m },
                    )
                };
                ok_or_expected(s, "match");
                if s == Status::LIBRA_OK {
                    assert_eq!(m.cached_tokens % bt, 0);
                    assert!(m.cached_tokens <= len && m.cached_blocks == m.cached_tokens / bt);
                    if m.ready {
                        check_ready(c.cache(), adapter, ns, &tokens, &blocks[..m.cached_blocks]);
                    }
                    let matched = blocks[..m.cached_blocks].to_vec();
                    open.push(Open::new(m.request, adapter, ns, tokens, m.cached_tokens, matched));
                }
            }
            2 | 3 => {
                // allocate
                let (id, want) = match pick(&mut inp, &open) {
                    Some(k) => {
                        let o = &open[k];
                        let want = o.tokens_to_allocate(inp.u8() as usize % 8, bt);
                        (o.id, if inp.u8() % 16 == 0 { inp.size(4096) } else { want })
                    }
                    None => (inp.u64(), inp.size(64)),
                };
                let need = want.div_ceil(bt).min(1 << 16);
                let cap = if inp.u8() % 8 == 0 { need.saturating_sub(1) } else { need };
                let mut blocks = vec![0u32; cap];
                let mut n = 0usize;
                // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                let s = unsafe {
                    libra_cache_allocate(
                        handle,
                        id,
                        want,
                        now,
                        if cap == 0 { std::ptr::null_mut() } else { blocks.as_mut_ptr() },
                        cap,
                        &mut n,
                    )
                };
                ok_or_expected(s, "allocate");
                if s == Status::LIBRA_OK {
                    if let Some(o) = open.iter_mut().find(|o| o.id == id) {
                        o.fresh.extend_from_slice(&blocks[..n]);
                    }
                }
            }
            4 | 5 => {
                // commit: the request's next full blocks (bytes written first), or junk
                if let Some(k) = pick(&mut inp, &open) {
                    let o = &mut open[k];
                    let n = o.committable(bt);
                    let junk = inp.u8() % 8 == 0;
                    // Junk: one block more than the request has allocated, never accepted.
                    let junk_tokens = vec![7u32; (o.fresh.len() + 1) * bt];
                    let (ptr, len) = if junk {
                        (junk_tokens.as_ptr(), junk_tokens.len())
                    } else {
                        c.cache().with_parts(|core, io| o.fill_next(core, io, n, bt)).unwrap();
                        (o.next_tokens(n, bt).as_ptr(), n * bt)
                    };
                    let mut shared = 0usize;
                    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                    let s = unsafe { libra_cache_commit(handle, o.id, ptr, len, now, &mut shared) };
                    ok_or_expected(s, "commit");
                    assert!(!(junk && s == Status::LIBRA_OK), "commit beyond the allocated blocks accepted");
                    if s == Status::LIBRA_OK {
                        o.committed(n, bt);
                    }
                } else {
                    let t = [1u32; 4];
                    ok_or_expected(
                        // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                        unsafe {
                            libra_cache_commit(handle, inp.u64(), t.as_ptr(), 4, now, std::ptr::null_mut())
                        },
                        "commit",
                    );
                }
            }
            6 | 7 => {
                // release or abort, sometimes twice
                let abort = op == 7;
                let id = match pick(&mut inp, &open) {
                    Some(k) => open.swap_remove(k).id,
                    None => inp.u64(),
                };
                // What the engine says of the request's blocks first: nothing, that they come
                // back (a retention hint), or that nobody reads them again.
                match inp.u8() % 4 {
                    0 => {
                        let keep = inp.u8() as u32 % 12;
                        // SAFETY: `handle` is this run's live cache; ids are plain values.
                        ok_or_expected(
                            unsafe { libra_cache_expect_no_reuse(handle, id, now, keep) },
                            "no_reuse",
                        );
                    }
                    1 => {
                        let hint = libra_retention {
                            struct_size: std::mem::size_of::<libra_retention>(),
                            priority: 1.0 + (inp.u8() % 3) as f64,
                            duration_us: inp.u16() as u64 * 100,
                            expect_back_us: 0,
                        };
                        // SAFETY: as above; `hint` is a live local of its declared size.
                        ok_or_expected(
                            unsafe { libra_cache_set_retention(handle, id, now, &hint) },
                            "retention",
                        );
                    }
                    _ => {}
                }
                let f = if abort { libra_cache_abort } else { libra_cache_release };
                // SAFETY: `handle` is this run's live cache; ids are plain values.
                ok_or_expected(unsafe { f(handle, id, now) }, "release");
                if inp.u8() % 8 == 0 {
                    // SAFETY: as above.
                    let again = unsafe { f(handle, id, now) };
                    assert_eq!(again, Status::LIBRA_ERR_NOT_FOUND, "second release");
                }
            }
            8 => {
                let mut r = libra_step_report::default();
                let out = if inp.bool() { &mut r as *mut _ } else { std::ptr::null_mut() };
                // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                ok_or_expected(
                    unsafe { libra_cache_step(handle, now, inp.u8() as u32, inp.bool(), out) },
                    "step",
                );
            }
            9 => {
                // poll / wait / wait_event / poll_groups / group_event; a failed request is
                // aborted, as an engine would
                let id = pick(&mut inp, &open).map(|k| open[k].id).unwrap_or_else(|| inp.u64());
                let mut r: libra_readiness = libra_readiness::LIBRA_PENDING;
                let s = match inp.u8() % 5 {
                    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                    0 => unsafe { libra_cache_poll(handle, id, &mut r) },
                    // A held copy cannot complete during the wait: it times out (0-40 us).
                    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                    1 => unsafe { libra_cache_wait(handle, id, inp.u8() as u64 % 3 * 20, &mut r) },
                    2 => {
                        let mut ev = std::ptr::null_mut();
                        // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                        unsafe { libra_cache_wait_event(handle, id, &mut ev) }
                    }
                    3 => {
                        let o =
                            open.iter().find(|o| o.id == id).map(|o| (o, adapter_len[o.adapter as usize]));
                        poll_groups(handle, c.cache(), o, segments_per_group, id, &mut r)
                    }
                    _ => {
                        let group = inp.u8() as u32 % 6;
                        let mut ev = std::ptr::null_mut();
                        // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                        let s = unsafe { libra_cache_group_event(handle, id, group, &mut ev) };
                        let groups = layer_groups(segments_per_group);
                        if group >= groups && open.iter().any(|o| o.id == id) {
                            assert_eq!(s, Status::LIBRA_ERR_INVALID_ARGUMENT, "group {group} of {groups}");
                        }
                        if s == Status::LIBRA_OK {
                            assert!(ev.is_null(), "the CPU backend has no events");
                        }
                        s
                    }
                };
                ok_or_expected(s, "poll");
                if s == Status::LIBRA_OK && r == libra_readiness::LIBRA_FAILED {
                    if let Some(k) = open.iter().position(|o| o.id == id) {
                        assert_eq!(
                            // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                            unsafe { libra_cache_abort(handle, open.swap_remove(k).id, now) },
                            Status::LIBRA_OK
                        );
                    }
                }
            }
            10 => {
                let mut st = libra_cache_stats { struct_size: inp.u8() as usize * 2, ..Default::default() };
                if inp.bool() {
                    st.struct_size = std::mem::size_of::<libra_cache_stats>();
                }
                // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                let s = unsafe { libra_cache_get_stats(handle, &mut st) };
                ok_or_expected(s, "stats");
                if s == Status::LIBRA_OK && st.struct_size == std::mem::size_of::<libra_cache_stats>() {
                    assert!(st.gpu_blocks_used <= st.gpu_blocks_total);
                    assert!(st.no_reuse_blocks + st.hinted_blocks <= st.kv_blocks_gpu + st.kv_blocks_host);
                    assert_eq!(st.open_requests as usize, open.len());
                    if policy != PolicyKind::Vllm {
                        assert_eq!(st.invalid_kv_blocks, 0);
                    }
                }
                let mut ev = vec![
                    libra_event {
                        kind: 0,
                        adapter: false,
                        adapter_id: 0,
                        block_hash_lo: 0,
                        block_hash_hi: 0
                    };
                    inp.u8() as usize % 8
                ];
                let mut n = 0usize;
                let ptr = if ev.is_empty() { std::ptr::null_mut() } else { ev.as_mut_ptr() };
                // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                ok_or_expected(unsafe { libra_cache_drain_events(handle, ptr, ev.len(), &mut n) }, "drain");
                assert!(n <= ev.len());
            }
            11 => {
                let a = inp.u8() as u64 % 5;
                let len = [0, 1, 31, 32, 70, 200, usize::MAX][inp.u8() as usize % 7];
                let w = weights(a, len.min(200));
                let rank = inp.u8() as u32 % 3;
                // usize::MAX: a length no object has, refused before the pointer is read.
                let n = if len == usize::MAX { len } else { w.len() };
                // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                let s = unsafe { libra_cache_register_adapter(handle, a, w.as_ptr().cast(), n, rank, now) };
                ok_or_expected(s, "register");
                if s == Status::LIBRA_OK {
                    adapter_len[a as usize] = w.len();
                }
            }
            12 => {
                let a = inp.u8() as u64 % 6;
                // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                ok_or_expected(unsafe { libra_cache_unregister_adapter(handle, a) }, "unregister");
            }
            13 => {
                // Held copies: left held, failed, landed a group or two at a time, or landed.
                for b in ctl.held() {
                    match inp.u8() % 8 {
                        0 | 1 => {}
                        2 => ctl.complete(b, false),
                        3 | 4 => ctl.complete_groups(b, 1 + inp.u8() as u32 % 2),
                        _ => ctl.complete(b, true),
                    }
                }
            }
            14 => {
                let v = [0.0, 1.0, 1e9, -1.0, f64::NAN, f64::INFINITY, f64::MIN_POSITIVE];
                let p = v[inp.u8() as usize % v.len()];
                let l = v[inp.u8() as usize % v.len()];
                // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                ok_or_expected(unsafe { libra_cache_set_cost_hints(handle, p, l) }, "hints");
            }
            15 => {
                let mut addr = 0u64;
                // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                let s = unsafe {
                    libra_cache_block_address(
                        handle,
                        inp.u16() as u32 % (gpu + 4),
                        inp.u8() as usize % 3,
                        &mut addr,
                    )
                };
                ok_or_expected(s, "block_address");
            }
            _ => {
                let a = inp.u8() as u64 % 5;
                let cap = inp.u8() as usize % 6;
                let mut out = vec![0u32; cap];
                let mut n = 0usize;
                let ptr = if cap == 0 || inp.u8() % 8 == 0 { std::ptr::null_mut() } else { out.as_mut_ptr() };
                // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                ok_or_expected(
                    unsafe { libra_cache_adapter_blocks(handle, a, ptr, cap, &mut n) },
                    "adapter_blocks",
                );
            }
        }
        // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
        let s = unsafe { libra_cache_check(handle) };
        assert_eq!(s, Status::LIBRA_OK, "invariant broken after op {op}");
        check_data(c.cache());
    }
    // Half the time free the cache with requests open and copies held; else drain first.
    if inp.bool() {
        ctl.disable();
        ctl.set_hold(false);
        for b in ctl.held() {
            ctl.complete(b, true);
        }
        assert_eq!(
            // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
            unsafe { libra_cache_step(handle, now + 1, 1, true, std::ptr::null_mut()) },
            Status::LIBRA_OK
        );
        for o in open.drain(..) {
            // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
            assert_eq!(unsafe { libra_cache_abort(handle, o.id, now + 1) }, Status::LIBRA_OK);
        }
        // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
        assert_eq!(unsafe { libra_cache_check(handle) }, Status::LIBRA_OK);
        check_data(c.cache());
        assert_eq!(c.cache().stats().unwrap().open_requests, 0);
    }
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    unsafe { libra_cache_free(handle) };
}

/// Layer groups of a tier of `SEGMENTS` segments at `segments_per_group` (0: one group).
fn layer_groups(segments_per_group: u32) -> u32 {
    if segments_per_group == 0 {
        1
    } else {
        (SEGMENTS as u32).div_ceil(segments_per_group)
    }
}

/// `libra_cache_poll_groups` on request `id` (`o` when it is open, with its adapter's weight
/// length), with what its counts must say about the readiness beside them; the groups a pending
/// request has must hold its bytes and its adapter's layers of those groups.
fn poll_groups(
    handle: *mut libra_cache,
    cache: &Cache,
    o: Option<(&Open, usize)>,
    segments_per_group: u32,
    id: u64,
    r: &mut libra_readiness,
) -> Status {
    let (mut ready, mut groups) = (u32::MAX, 0u32);
    // SAFETY: a handle this test owns and pointers to live locals.
    let s = unsafe { libra_cache_poll_groups(handle, id, r, &mut ready, &mut groups) };
    if s == Status::LIBRA_OK {
        assert_eq!(groups, layer_groups(segments_per_group));
        match *r {
            libra_readiness::LIBRA_READY => assert_eq!(ready, groups, "a ready request has every group"),
            libra_readiness::LIBRA_FAILED => assert_eq!(ready, 0, "a failed request has no group"),
            _ => assert!(ready < groups, "a pending request has {ready} of {groups} groups"),
        }
        if let Some((o, adapter_len)) = o.filter(|_| *r == libra_readiness::LIBRA_PENDING && ready > 0) {
            let bytes = (ready * segments_per_group) as usize * BLOCK_BYTES as usize / SEGMENTS;
            check_blocks(cache, o.adapter, o.ns, &o.tokens, &o.matched, bytes);
            check_adapter_layers(
                cache,
                o.adapter,
                adapter_len,
                ready as usize * adapter_len / groups as usize,
            );
        }
    }
    s
}

/// An index into `open` when it is non-empty and the input says so.
fn pick(inp: &mut Input, open: &[Open]) -> Option<usize> {
    let b = inp.u8();
    if open.is_empty() || b % 16 == 0 {
        None
    } else {
        Some(b as usize % open.len())
    }
}

/// A request reported ready: its prefix blocks and adapter blocks hold the right bytes.
fn check_ready(cache: &Cache, adapter: u64, ns: u64, tokens: &[u32], blocks: &[u32]) {
    check_blocks(cache, adapter, ns, tokens, blocks, BLOCK_BYTES as usize);
    let resident = cache.with_parts(|core, _| !core.adapter_gpu_blocks(adapter).unwrap().is_empty());
    assert!(resident.unwrap(), "ready request's adapter is not resident");
}

/// The leading `bytes` of adapter `adapter`'s weights (`len` bytes registered) are on the GPU.
fn check_adapter_layers(cache: &Cache, adapter: u64, len: usize, bytes: usize) {
    let w = weights(adapter, len);
    let landed = cache.with_parts(|core, io| {
        let mut landed = Vec::new();
        let mut buf = vec![0u8; BLOCK_BYTES as usize];
        for b in core.adapter_gpu_blocks(adapter).unwrap() {
            io.read_gpu_block(b, &mut buf).unwrap();
            landed.extend_from_slice(&buf);
        }
        landed
    });
    let landed = landed.unwrap();
    assert!(
        landed.len() >= bytes && landed[..bytes] == w[..bytes],
        "adapter {adapter}: its ready layers are wrong"
    );
}

/// The leading `bytes` of each of a request's matched `blocks` (the segments of the layer groups
/// it may read) hold its prefix's bytes.
fn check_blocks(cache: &Cache, adapter: u64, ns: u64, tokens: &[u32], blocks: &[u32], bytes: usize) {
    cache
        .with_parts(|core, io| {
            let bt = core.block_tokens();
            let keys = core.prefix_keys(adapter, ns, &tokens[..blocks.len() * bt]);
            let mut buf = vec![0u8; BLOCK_BYTES as usize];
            for (i, &b) in blocks.iter().enumerate() {
                io.read_gpu_block(b, &mut buf).unwrap();
                assert_eq!(
                    buf[..bytes],
                    pattern(keys[i])[..bytes],
                    "block {i} holds the wrong bytes in the {bytes} bytes its request may read"
                );
            }
        })
        .unwrap();
}
