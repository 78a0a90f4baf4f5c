//! Sizes that would overflow or allocate without bound are refused with a message naming the
//! field, before anything is allocated or changed.
use libra::backend::cpu::CpuBackend;
use libra::cache::config::{MAX_BLOCKS_PER_TIER, MAX_TOKENS_PER_CALL};
use libra::cache::{CacheConfig, CacheCore};
use libra::topo::parse::{parse_astra_layers, parse_network, parse_yaml, MAX_TEXT_BYTES};
use libra::topo::schedule::MAX_CHUNKS;
use libra::topo::{CollectiveKind, DimKind, Dimension, Network, Schedule, ScheduleConfig};
use libra::{Cache, CacheOptions, Status};
use libra_ffi::cache::*;
use libra_ffi::topo::*;
use std::ffi::CStr;

fn last_error() -> String {
    // SAFETY: the last error is a NUL-terminated string that lives until the next failing call on this thread.
    unsafe { CStr::from_ptr(libra_ffi::common::libra_last_error_message()) }.to_string_lossy().into_owned()
}

fn config() -> libra_cache_config {
    // SAFETY: all-zero bytes are a valid config (integers, floats and a NULL pointer).
    let mut c: libra_cache_config = unsafe { std::mem::zeroed() };
    c.struct_size = std::mem::size_of::<libra_cache_config>();
    // SAFETY: `c` is a live, aligned config of the size it declares.
    assert_eq!(unsafe { libra_cache_config_default(&mut c) }, Status::LIBRA_OK);
    c.block_tokens = 4;
    c.block_bytes = 64;
    c.gpu_blocks = 16;
    c.host_blocks = 8;
    c
}

fn create(c: &libra_cache_config) -> Result<*mut libra_cache, (Status, String)> {
    let mut out: *mut libra_cache = std::ptr::null_mut();
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    match Status::from(unsafe { libra_cache_create(c, &mut out) }) {
        Status::LIBRA_OK => Ok(out),
        s => Err((s, last_error())),
    }
}

#[test]
fn cache_geometry_that_overflows_is_refused() {
    // block count x block size beyond 64 bits, beyond the arena limit, and block counts whose
    // metadata alone would be gigabytes.
    type Case = (&'static str, fn(&mut libra_cache_config));
    let cases: [Case; 5] = [
        ("block_bytes", |c| c.block_bytes = u64::MAX / 2),
        ("exceeds the limit", |c| {
            c.block_bytes = 1 << 30;
            c.gpu_blocks = 1 << 12;
        }),
        ("gpu_blocks", |c| {
            c.block_bytes = 1;
            c.gpu_blocks = u32::MAX;
        }),
        ("host_blocks", |c| {
            c.block_bytes = 1;
            c.host_blocks = MAX_BLOCKS_PER_TIER + 1;
        }),
        ("block_bytes", |c| c.block_bytes = 0),
    ];
    for (needle, set) in cases {
        let mut c = config();
        set(&mut c);
        // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
        let (status, msg) = create(&c).map(|p| unsafe { libra_cache_free(p) }).unwrap_err();
        assert_eq!(status, Status::LIBRA_ERR_INVALID_ARGUMENT, "{msg}");
        assert!(msg.contains(needle), "message `{msg}` should name `{needle}`");
    }
    // Segments whose stride x blocks overflow the address space.
    let seg = libra_segment { base: 4096, bytes_per_block: 64, stride: u64::MAX / 4 };
    let mut c = config();
    c.segments = &seg;
    c.segment_count = 1;
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    let (status, msg) = create(&c).map(|p| unsafe { libra_cache_free(p) }).unwrap_err();
    assert_eq!(status, Status::LIBRA_ERR_INVALID_ARGUMENT);
    assert!(msg.contains("segments[0]"), "{msg}");
    // Too many segments to copy.
    c.segment_count = 1 << 20;
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    let (_, msg) = create(&c).map(|p| unsafe { libra_cache_free(p) }).unwrap_err();
    assert!(msg.contains("segment_count"), "{msg}");
}

#[test]
fn core_refuses_oversized_tiers_from_any_backend() {
    let cfg = CacheConfig::default();
    let e = CacheCore::new(cfg.clone(), 1, MAX_BLOCKS_PER_TIER + 1, 0).err().unwrap();
    assert!(e.message.contains("gpu_blocks"), "{}", e.message);
    let e = CacheCore::new(cfg, u64::MAX, 2, 2).err().unwrap();
    assert!(e.message.contains("overflows"), "{}", e.message);
}

#[test]
fn token_counts_are_bounded() {
    let c = config();
    let cache = create(&c).unwrap();
    let w = [1u8; 64];
    assert_eq!(
        // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
        unsafe { libra_cache_register_adapter(cache, 1, w.as_ptr().cast(), w.len(), 8, 0) },
        Status::LIBRA_OK
    );
    // More tokens than one call accepts: refused before the ids are read.
    let huge = vec![0u32; MAX_TOKENS_PER_CALL + 4];
    let mut blocks = vec![0u32; huge.len() / 4];
    let mut m = libra_match::default();
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    let s = unsafe {
        libra_cache_match(
            cache,
            1,
            0,
            huge.as_ptr(),
            huge.len(),
            0,
            blocks.as_mut_ptr(),
            blocks.len(),
            &mut m,
        )
    };
    assert_eq!(s, Status::LIBRA_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("limit"), "{}", last_error());
    drop(huge);

    let toks = [1u32, 2, 3, 4];
    let mut b = [0u32; 1];
    assert_eq!(
        // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
        unsafe { libra_cache_match(cache, 1, 0, toks.as_ptr(), 4, 0, b.as_mut_ptr(), 1, &mut m) },
        Status::LIBRA_OK
    );
    // A huge allocation is refused without evicting anything, whatever the out capacity says.
    let mut n = 0usize;
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    let s = unsafe { libra_cache_allocate(cache, m.request, usize::MAX, 0, blocks.as_mut_ptr(), 0, &mut n) };
    assert_eq!(s, Status::LIBRA_ERR_INVALID_ARGUMENT);
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    let s = unsafe {
        libra_cache_allocate(cache, m.request, 17 * 4, 0, blocks.as_mut_ptr(), blocks.len(), &mut n)
    };
    assert_eq!(s, Status::LIBRA_ERR_INVALID_ARGUMENT, "{}", last_error());
    assert!(last_error().contains("n_tokens"), "{}", last_error());
    // Committing more tokens than were allocated.
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    let s = unsafe {
        libra_cache_commit(cache, m.request, huge_ptr(), usize::MAX / 4 * 4, 0, std::ptr::null_mut())
    };
    assert_ne!(s, Status::LIBRA_OK);
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    let s = unsafe { libra_cache_commit(cache, m.request, toks.as_ptr(), 4, 0, std::ptr::null_mut()) };
    assert_eq!(s, Status::LIBRA_ERR_INVALID_ARGUMENT, "nothing was allocated: {}", last_error());
    // Event capacity in drain is a caller array size, not an allocation.
    let mut count = 0usize;
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    let s = unsafe { libra_cache_drain_events(cache, std::ptr::null_mut(), 0, &mut count) };
    assert_eq!(s, Status::LIBRA_OK);
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    assert_eq!(unsafe { libra_cache_release(cache, m.request, 1) }, Status::LIBRA_OK);
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    assert_eq!(unsafe { libra_cache_check(cache) }, Status::LIBRA_OK);
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    unsafe { libra_cache_free(cache) };
}

/// A pointer that must never be read: the length check comes first.
fn huge_ptr() -> *const u32 {
    std::ptr::NonNull::<u32>::dangling().as_ptr()
}

#[test]
fn adapter_size_is_bounded_by_the_pool() {
    let c = config();
    let cache = create(&c).unwrap();
    // 17 blocks of weights for a 16-block tier: refused before the bytes are copied.
    let w = vec![7u8; 64 * 17];
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    let s = unsafe { libra_cache_register_adapter(cache, 1, w.as_ptr().cast(), w.len(), 8, 0) };
    assert_eq!(s, Status::LIBRA_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("blocks"), "{}", last_error());
    // A length larger than any object: refused as too large, the pointer is not read.
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    let s = unsafe { libra_cache_register_adapter(cache, 2, huge_ptr().cast(), usize::MAX, 8, 0) };
    assert_eq!(s, Status::LIBRA_ERR_INVALID_ARGUMENT);
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    unsafe { libra_cache_free(cache) };
}

/// Registration reuses freed slots without scanning: 2^16 registrations with churn (one in
/// 1,024 unregistered and a new one registered in its place) stay fast, and every adapter is
/// still found under its own id afterwards.
#[test]
fn many_adapters_register_and_churn() {
    let mut core = CacheCore::new(CacheConfig::default(), 64, 16, 0).unwrap();
    let n: u64 = 1 << 16;
    for id in 0..n {
        core.register_adapter(id, &[1u8; 8], 8, id).unwrap();
        if id % 1024 == 1023 {
            core.unregister_adapter(id - 5).unwrap();
            core.register_adapter(n + id, &[2u8; 8], 8, id).unwrap();
        }
    }
    let stats = core.stats();
    assert_eq!(stats.adapters_registered as u64, n);
    for id in (0..n).filter(|id| id % 1024 != 1018) {
        assert!(core.register_adapter(id, &[1u8; 8], 8, n).is_err(), "adapter {id} lost");
    }
    core.check_invariants().unwrap();
}

#[test]
fn rust_options_are_checked() {
    let opts = CacheOptions { block_bytes: 1 << 40, gpu_blocks: 2, host_blocks: 0, ..Default::default() };
    assert!(Cache::new(opts).is_err());
    let core = CacheCore::new(CacheConfig::default(), 64, 4, 0);
    assert!(core.is_ok());
    let io = CpuBackend::new(u64::MAX, 2, 0);
    assert!(io.is_err(), "gpu_blocks x block_bytes overflow is refused by the backend too");
}

#[test]
fn topology_sizes_are_bounded() {
    // More dimensions than any valid network: refused before `dims` is read.
    let mut out: *mut libra_network = std::ptr::null_mut();
    // SAFETY: all-zero bytes are a valid description (integers and floats).
    let mut d: libra_dim_desc = unsafe { std::mem::zeroed() };
    d.struct_size = std::mem::size_of::<libra_dim_desc>();
    // SAFETY: `d` is a live, aligned description of the size it declares.
    assert_eq!(unsafe { libra_dim_desc_default(&mut d) }, Status::LIBRA_OK);
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    let s = unsafe { libra_network_new(&d, 1 << 40, &mut out) };
    assert_eq!(s, Status::LIBRA_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("num_dims"), "{}", last_error());
    // NPU counts whose product overflows.
    let dims: Vec<Dimension> = (0..3).map(|_| Dimension::new(DimKind::Ring, 1 << 20, 1.0)).collect();
    assert!(Network::new(dims).is_err());
    // Chunk counts.
    let net = Network::new(vec![Dimension::new(DimKind::Ring, 4, 10.0)]).unwrap();
    let cfg = ScheduleConfig { chunks: MAX_CHUNKS + 1, ..Default::default() };
    let e = Schedule::new(&net, CollectiveKind::AllReduce, usize::MAX, None, &cfg).err().unwrap();
    assert!(e.message.contains("chunks"), "{}", e.message);
    // Constraint counts in the optimiser.
    // SAFETY: all-zero bytes are a valid config (integers, floats and NULL pointers).
    let mut cfg: libra_optimize_config = unsafe { std::mem::zeroed() };
    cfg.struct_size = std::mem::size_of::<libra_optimize_config>();
    // SAFETY: `cfg` is a live, aligned config of the size it declares.
    assert_eq!(unsafe { libra_optimize_config_default(&mut cfg) }, Status::LIBRA_OK);
    cfg.num_constraints = 1 << 40;
    cfg.total_bandwidth = 100.0;
    let mut net_h: *mut libra_network = std::ptr::null_mut();
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    assert_eq!(unsafe { libra_network_new(&d, 1, &mut net_h) }, Status::LIBRA_OK);
    let mut wl: *mut libra_workload = std::ptr::null_mut();
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    assert_eq!(unsafe { libra_workload_new(0, &mut wl) }, Status::LIBRA_OK);
    let mut bw = [0.0f64; 1];
    // SAFETY: all-zero bytes are a valid value of this plain C struct (integers, floats, NULL pointers).
    let mut res: libra_optimize_result = unsafe { std::mem::zeroed() };
    res.struct_size = std::mem::size_of::<libra_optimize_result>();
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    let s = unsafe { libra_optimize(net_h, wl, &cfg, bw.as_mut_ptr(), 1, &mut res) };
    assert_eq!(s, Status::LIBRA_ERR_INVALID_ARGUMENT);
    assert!(last_error().contains("num_constraints"), "{}", last_error());
    // SAFETY: NULL, handles this test owns, or pointers to live locals of the sizes passed.
    unsafe {
        libra_workload_free(wl);
        libra_network_free(net_h);
    }
}

#[test]
fn parser_inputs_are_bounded() {
    let big = "#".repeat(MAX_TEXT_BYTES + 1);
    assert_eq!(parse_yaml(&big).unwrap_err().status, Status::LIBRA_ERR_PARSE);
    assert_eq!(parse_astra_layers(&big).unwrap_err().status, Status::LIBRA_ERR_PARSE);
    // Huge numbers in the files are values, not sizes: refused or bounded, never allocated.
    let e = parse_network("Topology: [Ring, Ring]\nNpusCount: [4294967295, 4294967295]\n", None);
    assert!(e.is_err());
    let e = parse_network("Topology: [Ring]\nNpusCount: [99999999999999999999]\n", None);
    assert!(e.is_err());
    let e = parse_astra_layers("DATA\n18446744073709551615\nl 0 1 NONE 0 1 NONE 0 1 NONE 0 1\n");
    assert!(e.is_err());
}
