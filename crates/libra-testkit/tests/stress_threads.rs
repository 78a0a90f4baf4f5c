//! Eight threads share one cache and run a fixed number of operations each: match, allocate,
//! commit (after writing the block bytes), release, abort, poll, step, stats, events, cost
//! hints and adapter lookups, as the header's "Thread-safe" promises allow. Copies complete
//! late: a ninth thread completes (and now and then fails) held batches while the others run.
//! At the end: the invariants hold, every cached block holds its bytes, nothing is left open.
//!
//! The first test drives the Rust `Cache`; the second the C entry points themselves (the
//! functions the header documents as thread-safe), on a handle shared by raw pointer.
use libra::backend::cpu::CpuBackend;
use libra::cache::{CacheConfig, PolicyKind, Readiness};
use libra::{Cache, Status};
use libra_ffi::cache::*;
use libra_testkit::faulty::{FaultControl, FaultPlan, FaultyBackend};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

const THREADS: u64 = 8;
const OPS_PER_THREAD: u64 = 1500;
const BT: usize = 4;
const BLOCK_BYTES: u64 = 64;

fn pattern(key: u128) -> Vec<u8> {
    let b = key.to_le_bytes();
    (0..BLOCK_BYTES as usize).map(|i| b[i % 16] ^ (i as u8).wrapping_mul(3)).collect()
}

fn weights(a: u64) -> Vec<u8> {
    (0..150u64).map(|i| (a * 17 + i) as u8).collect()
}

fn tokens(family: u64, len: usize) -> Vec<u32> {
    (0..len as u32).map(|i| if i < 8 { i } else { family as u32 * 1000 + i }).collect()
}

struct Rng(u64);
impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn check_data(cache: &Cache) {
    cache
        .with_parts(|core, io| core.verify_contents(io, &mut |key, bytes| bytes == pattern(key)))
        .unwrap()
        .unwrap();
}

/// A cache over held copies that fail now and then, and the handle that completes them.
fn shared_cache(policy: PolicyKind) -> (Cache, FaultControl) {
    let plan = FaultPlan {
        seed: 3,
        complete_fail_rate: 0.02,
        submit_fail_rate: 0.01,
        hold: true,
        ..Default::default()
    };
    let io = FaultyBackend::new(CpuBackend::new(BLOCK_BYTES, 160, 96).unwrap(), plan);
    let ctl = io.control();
    let cfg =
        CacheConfig { block_tokens: BT as u32, policy, swap_wait_us: 0, events: true, ..Default::default() };
    (Cache::with_backend(cfg, Box::new(io), "stress".into()).unwrap(), ctl)
}

#[derive(Default)]
struct Counts {
    ops: AtomicU64,
    matches: AtomicU64,
    hits: AtomicU64,
    commits: AtomicU64,
    failed: AtomicU64,
    refused: AtomicU64,
}

fn worker(cache: &Cache, id: u64, counts: &Counts, clock: &AtomicU64) {
    let mut rng = Rng(0x1234_5678 + id * 7919);
    let mut i = 0;
    while i < OPS_PER_THREAD {
        let now = clock.fetch_add(1, Ordering::Relaxed);
        let adapter = 1 + rng.below(4);
        // Half the prompts are shared by every thread, so requests hit each other's blocks.
        let family = if rng.below(2) == 0 { rng.below(6) } else { 100 + id * 50 + rng.below(50) };
        let toks = tokens(family, 4 + rng.below(44) as usize);
        i += 1;
        let m = match cache.match_prefix(adapter, 0, &toks, now) {
            Ok(m) => m,
            Err(_) => {
                counts.refused.fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        counts.matches.fetch_add(1, Ordering::Relaxed);
        counts.hits.fetch_add(m.cached_tokens as u64, Ordering::Relaxed);
        // Wait for the copies (another thread completes them), by polling as a scheduler would,
        // or blocked in `wait`, which lets the other threads use the cache meanwhile.
        let mut state = if m.ready { Readiness::Ready } else { Readiness::Pending };
        if state == Readiness::Pending && rng.below(2) == 0 {
            state = cache.wait(m.request, 50_000).unwrap();
            i += 1;
        }
        for _ in 0..200 {
            if state != Readiness::Pending {
                break;
            }
            std::thread::yield_now();
            state = cache.poll(m.request).unwrap();
            i += 1;
        }
        if state != Readiness::Ready {
            if matches!(state, Readiness::Failed(_)) {
                counts.failed.fetch_add(1, Ordering::Relaxed);
            }
            cache.abort(m.request, now).unwrap();
            continue;
        }
        // Prefix blocks handed out for a ready request hold their bytes.
        let keys = cache.with_parts(|core, _| core.prefix_keys(adapter, 0, &toks)).unwrap();
        for (j, &b) in m.kv_blocks.iter().enumerate() {
            let mut buf = vec![0u8; BLOCK_BYTES as usize];
            cache.with_backend_mut(|io| io.read_gpu_block(b, &mut buf)).unwrap().unwrap();
            assert_eq!(buf, pattern(keys[j]), "thread {id}: ready prefix block {j} is wrong");
        }
        let rest = toks.len() - m.cached_tokens;
        match cache.allocate(m.request, rest, now) {
            Ok(blocks) => {
                let full = rest / BT;
                for (j, &b) in blocks.iter().take(full).enumerate() {
                    let p = pattern(keys[m.cached_tokens / BT + j]);
                    cache.with_backend_mut(|io| io.write_gpu_block(b, &p)).unwrap().unwrap();
                }
                let r = cache.commit(m.request, &toks[m.cached_tokens..m.cached_tokens + full * BT], now);
                i += 2;
                if r.is_ok() {
                    counts.commits.fetch_add(1, Ordering::Relaxed);
                }
                if rng.below(10) == 0 {
                    cache.abort(m.request, now).unwrap();
                } else {
                    cache.release(m.request, now).unwrap();
                }
            }
            Err(_) => {
                counts.refused.fetch_add(1, Ordering::Relaxed);
                cache.abort(m.request, now).unwrap();
            }
        }
        i += 1;
        match rng.below(8) {
            0 => {
                let _ = cache.step(now, THREADS as u32, rng.below(2) == 0);
            }
            1 => {
                let s = cache.stats().unwrap();
                assert!(s.gpu_blocks_used <= s.gpu_blocks_total && s.host_blocks_used <= s.host_blocks_total);
            }
            2 => {
                cache.drain_events(16).unwrap();
            }
            3 => {
                cache.adapter_blocks(adapter).unwrap();
                cache.block_address(rng.below(160) as u32, 0).unwrap();
            }
            4 => cache.set_cost_hints(rng.below(3) as f64, 50_000.0).unwrap(),
            _ => {}
        }
        i += 1;
    }
    counts.ops.fetch_add(i, Ordering::Relaxed);
}

fn completer(ctl: &FaultControl, stop: &AtomicBool) {
    let mut rng = Rng(99);
    while !stop.load(Ordering::Relaxed) {
        for b in ctl.held() {
            ctl.complete(b, rng.below(50) != 0);
        }
        // Sleep rather than spin: the lock is not fair, and a spinning thread starves workers.
        std::thread::sleep(std::time::Duration::from_micros(200));
    }
}

fn finish(cache: &Cache, ctl: &FaultControl, counts: &Counts, what: &str) {
    ctl.disable();
    ctl.set_hold(false);
    for b in ctl.held() {
        ctl.complete(b, true);
    }
    cache.step(u64::MAX / 2, 1, true).unwrap();
    cache.check_invariants().unwrap();
    check_data(cache);
    let s = cache.stats().unwrap();
    assert_eq!(s.open_requests, 0, "{what}: requests left open");
    assert!(counts.matches.load(Ordering::Relaxed) > 1000, "{what}: too little work");
    assert!(s.hit_tokens > 0, "{what}: threads never shared a prefix");
    let f = ctl.counters();
    println!(
        "{what}: {THREADS} threads, {} operations, {} matches ({} hit tokens), {} commits, {} requests failed by {} injected copy faults, {} calls refused (memory or injected), {} swap-outs, {} swap-ins",
        counts.ops.load(Ordering::Relaxed),
        counts.matches.load(Ordering::Relaxed),
        counts.hits.load(Ordering::Relaxed),
        counts.commits.load(Ordering::Relaxed),
        counts.failed.load(Ordering::Relaxed),
        f.faults(),
        counts.refused.load(Ordering::Relaxed),
        s.swap_out_blocks,
        s.swap_in_blocks,
    );
}

/// Eight workers, the completer and an invariant checker on one cache, then the final checks.
fn stress(cache: &Cache, ctl: &FaultControl, what: &str) {
    for a in 1..=4 {
        cache.register_adapter(a, &weights(a), 8, 0).unwrap();
    }
    let counts = Counts::default();
    let clock = AtomicU64::new(1);
    let stop = AtomicBool::new(false);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..THREADS)
            .map(|id| {
                s.spawn({
                    let (counts, clock) = (&counts, &clock);
                    move || worker(cache, id, counts, clock)
                })
            })
            .collect();
        s.spawn(|| completer(ctl, &stop));
        // Readers that only look: invariants and stats, concurrently with everything.
        s.spawn(|| {
            while !stop.load(Ordering::Relaxed) {
                cache.check_invariants().unwrap();
                std::thread::sleep(std::time::Duration::from_millis(2));
            }
        });
        let results: Vec<_> = handles.into_iter().map(|h| h.join()).collect();
        // Stop the helpers before reporting a worker's panic, or the scope never ends.
        stop.store(true, Ordering::Relaxed);
        for r in results {
            r.unwrap();
        }
    });
    finish(cache, ctl, &counts, what);
}

#[test]
fn eight_threads_share_one_cache() {
    for policy in [PolicyKind::Elora, PolicyKind::Libra] {
        let (cache, ctl) = shared_cache(policy);
        stress(&cache, &ctl, &format!("{policy:?} (Rust API)"));
    }
}

/// The same on the CUDA backend: copies complete on the device's own time (no held batches),
/// and now and then a submission is refused or a batch fails. Skips without a CUDA device.
#[test]
fn eight_threads_share_one_cache_on_cuda() {
    use libra::backend::cuda::{self, CudaBackend, CudaOptions};
    if let Err(e) = cuda::device_count() {
        println!("skipped eight_threads_share_one_cache_on_cuda: {}", e.message);
        return;
    }
    let plan = FaultPlan { seed: 5, complete_fail_rate: 0.02, submit_fail_rate: 0.01, ..Default::default() };
    let io =
        FaultyBackend::new(CudaBackend::new(BLOCK_BYTES, 160, 96, CudaOptions::from_env()).unwrap(), plan);
    let ctl = io.control();
    let cfg = CacheConfig {
        block_tokens: BT as u32,
        policy: PolicyKind::Libra,
        swap_wait_us: 0,
        events: true,
        ..Default::default()
    };
    let cache = Cache::with_backend(cfg, Box::new(io), "stress on cuda".into()).unwrap();
    stress(&cache, &ctl, "Libra (Rust API, CUDA backend)");
}

/// A thread blocked in `wait` leaves the cache to the other threads, and wakes when its copy
/// lands: were the lock held, the calls below would block until the wait timed out.
#[test]
fn wait_lets_other_threads_in() {
    let io = FaultyBackend::new(CpuBackend::new(BLOCK_BYTES, 64, 64).unwrap(), FaultPlan::default());
    let ctl = io.control();
    let cfg = CacheConfig { block_tokens: BT as u32, ..Default::default() };
    let cache = Cache::with_backend(cfg, Box::new(io), "held".into()).unwrap();
    cache.register_adapter(1, &weights(1), 8, 0).unwrap();
    cache.register_adapter(2, &weights(2), 8, 0).unwrap();
    ctl.set_hold(true);
    let m = cache.match_prefix(1, 0, &tokens(1, 16), 1).unwrap();
    assert!(!m.ready, "the adapter upload is held");
    // A short wait on a held copy times out in all, not per copy.
    assert_eq!(cache.wait(m.request, 2_000).unwrap(), Readiness::Pending);
    let waiting = AtomicBool::new(true);
    std::thread::scope(|s| {
        let waiter = s.spawn(|| {
            let r = cache.wait(m.request, 60_000_000).unwrap();
            waiting.store(false, Ordering::SeqCst);
            r
        });
        std::thread::sleep(std::time::Duration::from_millis(50));
        // Other threads' calls go through while the wait is blocked.
        let other = cache.match_prefix(2, 0, &tokens(2, 16), 2).unwrap();
        cache.stats().unwrap();
        cache.step(3, 1, false).unwrap();
        assert_eq!(cache.poll(m.request).unwrap(), Readiness::Pending);
        assert!(waiting.load(Ordering::SeqCst), "nothing completed the copy yet");
        for b in ctl.held() {
            ctl.complete(b, true);
        }
        assert_eq!(waiter.join().unwrap(), Readiness::Ready);
        assert_eq!(cache.wait(other.request, 1_000_000).unwrap(), Readiness::Ready);
        cache.release(other.request, 4).unwrap();
    });
    cache.release(m.request, 5).unwrap();
    cache.check_invariants().unwrap();

    // A request aborted by another thread during the wait: the waiter learns it when it wakes.
    cache.register_adapter(3, &weights(3), 8, 6).unwrap();
    let m = cache.match_prefix(3, 0, &tokens(3, 16), 6).unwrap();
    assert!(!m.ready, "the new adapter's upload is held");
    std::thread::scope(|s| {
        let waiter = s.spawn(|| cache.wait(m.request, 60_000_000));
        std::thread::sleep(std::time::Duration::from_millis(50));
        cache.abort(m.request, 7).unwrap();
        for b in ctl.held() {
            ctl.complete(b, true);
        }
        let e = waiter.join().unwrap().unwrap_err();
        assert_eq!(e.status, Status::LIBRA_ERR_NOT_FOUND, "{e}");
    });
    cache.step(8, 1, false).unwrap();
    cache.check_invariants().unwrap();
}

/// A handle shared by raw pointer, as C threads would share it.
#[derive(Clone, Copy)]
struct Shared(*const libra_cache);
// SAFETY: the header documents every call used here as thread-safe on one handle.
unsafe impl Send for Shared {}
// SAFETY: the handle is only used through calls the header documents as thread-safe.
unsafe impl Sync for Shared {}

#[test]
fn eight_threads_through_the_c_entry_points() {
    let mut cfg = libra_testkit::c_config::default_cache_config();
    cfg.block_tokens = BT as u32;
    cfg.block_bytes = BLOCK_BYTES;
    cfg.gpu_blocks = 128;
    cfg.host_blocks = 64;
    cfg.events = 1;
    let mut h: *mut libra_cache = std::ptr::null_mut();
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    assert_eq!(unsafe { libra_cache_create(&cfg, &mut h) }, Status::LIBRA_OK);
    for a in 1..=3u64 {
        let w = weights(a);
        assert_eq!(
            // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
            unsafe { libra_cache_register_adapter(h, a, w.as_ptr().cast(), w.len(), 8, 0) },
            Status::LIBRA_OK
        );
    }
    let shared = Shared(h);
    let matches = AtomicU64::new(0);
    std::thread::scope(|s| {
        for id in 0..THREADS {
            let matches = &matches;
            s.spawn(move || {
                let c = shared;
                let mut rng = Rng(77 + id);
                let mut blocks = [0u32; 16];
                for round in 0..OPS_PER_THREAD / 4 {
                    let now = round * 10 + id;
                    let family = if round % 2 == 0 { rng.below(5) } else { 1000 + id * 1000 + round };
                    let toks = tokens(family, 8 + rng.below(40) as usize);
                    let adapter = 1 + rng.below(3);
                    let mut m = libra_match::default();
                    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                    let st = unsafe {
                        libra_cache_match(
                            c.0,
                            adapter,
                            0,
                            toks.as_ptr(),
                            toks.len(),
                            now,
                            blocks.as_mut_ptr(),
                            16,
                            &mut m,
                        )
                    };
                    if st != Status::LIBRA_OK {
                        assert!(
                            matches!(
                                Status::from(st),
                                Status::LIBRA_ERR_OUT_OF_MEMORY | Status::LIBRA_ERR_BUSY
                            ),
                            "{st:?}"
                        );
                        continue;
                    }
                    matches.fetch_add(1, Ordering::Relaxed);
                    let mut r = libra_readiness::LIBRA_PENDING;
                    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                    assert_eq!(unsafe { libra_cache_wait(c.0, m.request, 1000, &mut r) }, Status::LIBRA_OK);
                    assert_eq!(r, libra_readiness::LIBRA_READY, "CPU copies finish at submission");
                    let rest = toks.len() - m.cached_tokens;
                    let mut n = 0usize;
                    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                    let st = unsafe {
                        libra_cache_allocate(c.0, m.request, rest, now, blocks.as_mut_ptr(), 16, &mut n)
                    };
                    if st == Status::LIBRA_OK {
                        let full = rest / BT * BT;
                        // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                        let st = unsafe {
                            libra_cache_commit(
                                c.0,
                                m.request,
                                toks[m.cached_tokens..].as_ptr(),
                                full,
                                now,
                                std::ptr::null_mut(),
                            )
                        };
                        assert_eq!(st, Status::LIBRA_OK);
                        // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                        assert_eq!(unsafe { libra_cache_release(c.0, m.request, now) }, Status::LIBRA_OK);
                    } else {
                        // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                        assert_eq!(unsafe { libra_cache_abort(c.0, m.request, now) }, Status::LIBRA_OK);
                    }
                    match round % 6 {
                        0 => assert_eq!(
                            // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                            unsafe { libra_cache_step(c.0, now, 8, false, std::ptr::null_mut()) },
                            Status::LIBRA_OK
                        ),
                        1 => {
                            let mut st = libra_cache_stats {
                                struct_size: std::mem::size_of::<libra_cache_stats>(),
                                ..Default::default()
                            };
                            // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                            assert_eq!(unsafe { libra_cache_get_stats(c.0, &mut st) }, Status::LIBRA_OK);
                        }
                        2 => {
                            let mut ev = [libra_event {
                                kind: 0,
                                adapter: false,
                                adapter_id: 0,
                                block_hash_lo: 0,
                                block_hash_hi: 0,
                            }; 8];
                            let mut k = 0usize;
                            assert_eq!(
                                // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                                unsafe { libra_cache_drain_events(c.0, ev.as_mut_ptr(), 8, &mut k) },
                                Status::LIBRA_OK
                            );
                        }
                        // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                        3 => assert_eq!(unsafe { libra_cache_check(c.0) }, Status::LIBRA_OK),
                        4 => {
                            let mut k = 0usize;
                            // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                            let _ = unsafe {
                                libra_cache_adapter_blocks(c.0, adapter, blocks.as_mut_ptr(), 16, &mut k)
                            };
                            // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                            assert!(!unsafe { libra_cache_backend_name(c.0) }.is_null());
                        }
                        _ => {
                            // Errors on one thread leave the other threads' messages alone.
                            assert_eq!(
                                // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
                                unsafe { libra_cache_release(c.0, u64::MAX, now) },
                                Status::LIBRA_ERR_NOT_FOUND
                            );
                        }
                    }
                }
            });
        }
    });
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    assert_eq!(unsafe { libra_cache_check(h) }, Status::LIBRA_OK);
    let mut st =
        libra_cache_stats { struct_size: std::mem::size_of::<libra_cache_stats>(), ..Default::default() };
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    assert_eq!(unsafe { libra_cache_get_stats(h, &mut st) }, Status::LIBRA_OK);
    assert_eq!(st.open_requests, 0);
    assert!(st.hit_tokens > 0);
    println!(
        "C entry points: {THREADS} threads, {} matches, {} hit tokens, {} swap-outs",
        matches.load(Ordering::Relaxed),
        st.hit_tokens,
        st.swap_out_blocks
    );
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    unsafe { libra_cache_free(h) };
}
