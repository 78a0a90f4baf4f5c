//! Runs the CUDA backend's device tests on machines without a GPU, against libra's CPU
//! stand-in for libcuda (tests/cuda_standin/, with the real kernels from tests/cuda_host/).
//!
//! This binary builds the stand-in into target/, then runs itself again in child processes
//! with `LD_LIBRARY_PATH` pointing there, so cudarc opens the stand-in instead of a driver. The
//! device tests are compiled into this binary unchanged (tests/cuda_gpu.rs, tests/cuda_cache.rs
//! and the CUDA stress test of tests/stress_threads.rs); in this process they find no driver
//! and skip, in the children they run. NVRTC produces the cubins the stand-in loads, so the
//! children need it (LIBRA_NVRTC_DIR); without it this skips, except under CI=true.
#[path = "cuda_cache.rs"]
mod cuda_cache;
#[path = "cuda_gpu.rs"]
mod cuda_gpu;
mod cuda_host;
#[path = "stress_threads.rs"]
mod stress_threads;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// Set in the children.
const CHILD_ENV: &str = "LIBRA_STANDIN_CHILD";

/// Builds `libcuda.so.1` (and a `libcuda.so` link: cudarc tries that name first) once.
fn standin_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = cuda_host::out_dir("cuda_standin/lib");
        let src = cuda_host::dir().join("../cuda_standin");
        let sources: Vec<PathBuf> = ["standin_core.cpp", "standin_exec.cpp", "standin_image.cpp"]
            .iter()
            .map(|f| src.join(f))
            .chain([cuda_host::dir().join("host_kernels.cpp")])
            .collect();
        let so = dir.join("libcuda.so.1");
        cuda_host::build_shared(&sources, &cuda_host::swap_cu(), &["-O2", "-Wl,-soname,libcuda.so.1"], &so)
            .unwrap_or_else(|e| panic!("the libcuda stand-in does not build: {e}"));
        let link = dir.join("libcuda.so");
        let _ = std::fs::remove_file(&link);
        std::os::unix::fs::symlink("libcuda.so.1", &link).unwrap();
        dir
    })
}

/// NVRTC is there (or the test must skip, printing why; under CI it must be there).
fn nvrtc_or_skip(test: &str) -> bool {
    if libra::backend::cuda::nvrtc_present() {
        return true;
    }
    let why = libra::backend::cuda::kernels::nvrtc_missing_reason();
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but NVRTC is missing, so the stand-in has no cubins to load: {why}");
    }
    println!("skipped {test}: {why}");
    false
}

/// Runs this binary's tests matching `args` against the stand-in, with `env` added; returns
/// the output. Fails on a failed test, a skipped one, or a stand-in report (strict mode).
fn run_child(args: &[&str], env: &[(&str, &str)], cache_dir: &Path, expect_passed: usize) -> String {
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--test-threads=1", "--nocapture"])
        .args(args)
        .env(CHILD_ENV, "1")
        .env("LD_LIBRARY_PATH", standin_dir())
        .env("LIBRA_STANDIN_STRICT", "1")
        .env("LIBRA_KERNEL_CACHE_DIR", cache_dir)
        .env_remove("LIBRA_STANDIN_FAULT_LAUNCH");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = output_within(cmd, std::time::Duration::from_secs(300));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "child {args:?} {env:?} failed ({}):\n{text}", out.status);
    let skipped: Vec<&str> = text.lines().filter(|l| l.contains("skipped")).collect();
    assert!(skipped.is_empty(), "tests skipped on the stand-in: {skipped:?}\n{text}");
    let summary = format!("test result: ok. {expect_passed} passed");
    assert!(text.contains(&summary), "child {args:?}: expected `{summary}`:\n{text}");
    text
}

/// Runs `cmd` to completion, killing it after `limit` (a hang must fail, not stall CI).
fn output_within(mut cmd: Command, limit: std::time::Duration) -> std::process::Output {
    use std::process::Stdio;
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let (mut out, mut err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let readers = (
        std::thread::spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut out, &mut v).map(|_| v).unwrap_or_default()
        }),
        std::thread::spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut err, &mut v).map(|_| v).unwrap_or_default()
        }),
    );
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            break child.wait().unwrap();
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    std::process::Output { status, stdout: readers.0.join().unwrap(), stderr: readers.1.join().unwrap() }
}

/// In a child: the libcuda this process loaded is the stand-in, not a driver.
#[test]
fn child_runs_on_the_standin() {
    if std::env::var_os(CHILD_ENV).is_none() {
        println!("runs in the stand-in's child processes only");
        return;
    }
    assert!(libra::backend::cuda::usable(), "{}", libra::backend::cuda::unavailable_reason());
    let lib = libc_dlopen("libcuda.so.1");
    assert!(!lib.is_null(), "libcuda.so.1 is loaded");
    // SAFETY: a handle from dlopen and a NUL-terminated name.
    let marker = unsafe { libc::dlsym(lib, c"libra_cuda_standin".as_ptr()) };
    assert!(!marker.is_null(), "the loaded libcuda is not the stand-in");
}

fn libc_dlopen(name: &str) -> *mut std::ffi::c_void {
    let c = std::ffi::CString::new(name).unwrap();
    // SAFETY: looks up an already loaded library by name.
    unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_NOLOAD) }
}

/// Every test of tests/cuda_gpu.rs and tests/cuda_cache.rs except the faulting launch (run on
/// its own), the CUDA stress test and the child marker: counted from the sources, so a test
/// that the filters stop matching fails the run instead of silently not running.
fn device_test_count() -> usize {
    let tests_in = |src: &str| src.matches("#[test]").count();
    tests_in(include_str!("cuda_gpu.rs")) + tests_in(include_str!("cuda_cache.rs")) - 1 + 1 + 1
}

/// tests/cuda_gpu.rs, tests/cuda_cache.rs and the CUDA stress test, on the stand-in.
#[test]
fn device_tests_pass_on_the_standin() {
    if std::env::var_os(CHILD_ENV).is_some() || !nvrtc_or_skip("device_tests_pass_on_the_standin") {
        return;
    }
    let cache = cuda_host::out_dir("cuda_standin/kernels");
    let text = run_child(
        &[
            "cuda_gpu::",
            "cuda_cache::",
            "stress_threads::eight_threads_share_one_cache_on_cuda",
            "child_runs_on_the_standin",
            "--skip",
            "a_faulting_launch",
        ],
        &[("LIBRA_STANDIN_OP_DELAY_US", "50")],
        &cache,
        device_test_count(),
    );
    println!(
        "{}",
        text.lines()
            .filter(|l| l.starts_with("test ") || l.contains("stand-in"))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The first launch faults: the request fails, the cache recovers once freed.
#[test]
fn a_faulting_launch_on_the_standin() {
    if std::env::var_os(CHILD_ENV).is_some() || !nvrtc_or_skip("a_faulting_launch_on_the_standin") {
        return;
    }
    let cache = cuda_host::out_dir("cuda_standin/kernels");
    run_child(
        &["--exact", "cuda_cache::a_faulting_launch_fails_its_request_and_the_cache_recovers"],
        &[("LIBRA_STANDIN_FAULT_LAUNCH", "1")],
        &cache,
        1,
    );
}

/// A cached cubin the driver refuses is compiled afresh and replaced; a device newer than
/// every architecture NVRTC knows runs the kernels from PTX.
#[test]
fn refused_cubins_are_rebuilt_and_new_devices_run_ptx() {
    if std::env::var_os(CHILD_ENV).is_some()
        || !nvrtc_or_skip("refused_cubins_are_rebuilt_and_new_devices_run_ptx")
    {
        return;
    }
    use libra::backend::cuda::kernels;
    let test = ["--exact", "cuda_gpu::owned_arena_round_trips_on_both_paths"];
    let dir = cuda_host::out_dir("cuda_standin/corrupt_cache");
    let file = dir.join(kernels::cache_file_name((9, 0)));
    // An ELF header that is no cubin the stand-in (or a driver) accepts.
    std::fs::write(&file, b"\x7fELF\x02\x01\x01\x33\x07garbage").unwrap();
    run_child(&test, &[], &dir, 1);
    let rebuilt = std::fs::read(&file).unwrap();
    assert!(rebuilt.len() > 1000 && rebuilt.starts_with(b"\x7fELF"), "the refused file was replaced");
    // sm_121 is newer than NVRTC 12.8's newest target (sm_120): PTX for compute_120 runs.
    let dir = cuda_host::out_dir("cuda_standin/newer_device");
    let text = run_child(&test, &[("LIBRA_STANDIN_ARCH", "121")], &dir, 1);
    assert!(dir.join(kernels::image_file_name((12, 0), kernels::Output::Ptx)).is_file(), "{text}");
}

/// In a child (not strict): the stand-in refuses what the driver documents as errors, and
/// reports what it must report.
#[test]
fn child_standin_refuses_and_reports() {
    use cudarc::driver::{result, sys, CudaContext};
    use libra::backend::cuda::kernels::{self, Output};
    use libra::backend::cuda::params;
    if std::env::var_os("LIBRA_STANDIN_SELF_TEST").is_none() {
        println!("runs in the stand-in's self-test child only");
        return;
    }
    let reports = || -> u64 {
        let lib = libc_dlopen("libcuda.so.1");
        // SAFETY: the stand-in's own counter, a plain function without arguments.
        unsafe {
            let f = libc::dlsym(lib, c"libra_standin_reports".as_ptr());
            assert!(!f.is_null());
            std::mem::transmute::<*mut std::ffi::c_void, extern "C" fn() -> u64>(f)()
        }
    };
    let ctx = CudaContext::new(0).unwrap();
    // A cubin for another architecture: CUDA_ERROR_NO_BINARY_FOR_GPU.
    let sm80 = kernels::swap_image((8, 0), Output::Cubin, None).unwrap();
    let e = ctx.load_module(cudarc::nvrtc::Ptx::from_binary(sm80.as_ref().clone())).unwrap_err();
    assert_eq!(e.0, sys::CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU);
    // 1024 threads x 72+ registers exceed the register file: out of resources at launch.
    let sm90 = kernels::swap_image((9, 0), Output::Cubin, None).unwrap();
    let module = ctx.load_module(cudarc::nvrtc::Ptx::from_binary(sm90.as_ref().clone())).unwrap();
    let f = module.load_function("libra_gather").unwrap();
    let stream = ctx.new_stream().unwrap();
    let gather = |tables: params::Tables, list: u64, n: u32| {
        params::swap_launch(params::SwapKernel::Gather, tables, list, n, &[list, 4096], 1)
    };
    let mut launch = gather(params::Tables { segments: 0, units: 0, units_per_block: 1 }, 0, 0);
    let mut params = launch.param_pointers();
    // SAFETY: the arguments match the kernel's signature; the launch is refused before it runs.
    let e = unsafe {
        result::launch_kernel(f.cu_function(), (1, 1, 1), (1024, 1, 1), 0, stream.cu_stream(), &mut params)
    }
    .unwrap_err();
    assert_eq!(e.0, sys::CUresult::CUDA_ERROR_LAUNCH_OUT_OF_RESOURCES);
    // A copy into freed device memory: CUDA_ERROR_INVALID_VALUE (the range is never reused).
    // SAFETY: a plain allocation, freed once.
    let p = unsafe { result::malloc_sync(4096) }.unwrap();
    // SAFETY: allocated above and not used by any queued work.
    unsafe { result::free_sync(p) }.unwrap();
    let src = [0u8; 16];
    // SAFETY: on this child's stand-in a copy into freed memory is refused, never performed;
    // `src` holds the 16 bytes.
    let r = unsafe { sys::cuMemcpyHtoDAsync_v2(p, src.as_ptr().cast(), 16, stream.cu_stream()) };
    assert_eq!(r, sys::CUresult::CUDA_ERROR_INVALID_VALUE);
    // A free while queued work still uses the memory is reported.
    let before = reports();
    // SAFETY: a plain allocation.
    let q = unsafe { result::malloc_sync(1 << 20) }.unwrap();
    let host = vec![1u8; 1 << 20];
    for _ in 0..20 {
        // SAFETY: `q` and `host` hold the 1 MiB copied; `host` outlives the stream's work.
        unsafe {
            sys::cuMemcpyHtoDAsync_v2(q, host.as_ptr().cast(), 1 << 20, stream.cu_stream()).result().unwrap()
        };
    }
    // SAFETY: deliberately early, on the stand-in only: it reports the free and runs the queued
    // copies before it unmaps the range, so nothing writes to memory that is gone.
    unsafe { result::free_sync(q) }.unwrap();
    assert_eq!(reports(), before + 1, "a free with queued work is reported");
    // An allocation alive when the last reference to the primary context goes is a leak.
    // SAFETY: a plain allocation, deliberately never freed.
    let _leaked = unsafe { result::malloc_sync(4096) }.unwrap();
    drop((f, module, stream));
    drop(ctx);
    assert_eq!(reports(), before + 2, "a leak at context release is reported");

    // A kernel reading freed memory faults (its guard mapping): the context's error is sticky.
    let ctx = CudaContext::new(0).unwrap();
    let module = ctx.load_module(cudarc::nvrtc::Ptx::from_binary(sm90.as_ref().clone())).unwrap();
    let f = module.load_function("libra_gather").unwrap();
    let stream = ctx.new_stream().unwrap();
    // SAFETY: a plain allocation, freed once.
    let gone = unsafe { result::malloc_sync(4096) }.unwrap();
    // SAFETY: allocated above and not used by any queued work.
    unsafe { result::free_sync(gone) }.unwrap();
    let mut launch = gather(params::Tables { segments: gone, units: gone, units_per_block: 1 }, gone, 1);
    let mut params = launch.param_pointers();
    // SAFETY: on the stand-in a kernel touching freed memory faults on its guard mapping (the
    // error the test expects) instead of touching anything live.
    unsafe {
        result::launch_kernel(f.cu_function(), (1, 1, 1), (32, 1, 1), 0, stream.cu_stream(), &mut params)
    }
    .unwrap();
    assert_eq!(stream.synchronize().unwrap_err().0, sys::CUresult::CUDA_ERROR_ILLEGAL_ADDRESS);
    // SAFETY: a plain allocation, refused by the faulted context.
    let e = unsafe { result::malloc_sync(64) }.unwrap_err();
    assert_eq!(e.0, sys::CUresult::CUDA_ERROR_ILLEGAL_ADDRESS, "the error is sticky");
}

/// The stand-in's own checks, in a child that is not strict (it provokes reports on purpose).
#[test]
fn the_standin_refuses_and_reports_as_documented() {
    if std::env::var_os(CHILD_ENV).is_some()
        || !nvrtc_or_skip("the_standin_refuses_and_reports_as_documented")
    {
        return;
    }
    let mut cmd = Command::new(std::env::current_exe().unwrap());
    cmd.args(["--exact", "child_standin_refuses_and_reports", "--nocapture"])
        .env(CHILD_ENV, "1")
        .env("LIBRA_STANDIN_SELF_TEST", "1")
        .env("LD_LIBRARY_PATH", standin_dir())
        .env_remove("LIBRA_STANDIN_STRICT");
    let out = output_within(cmd, std::time::Duration::from_secs(120));
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("test result: ok. 1 passed"), "{text}");
}
