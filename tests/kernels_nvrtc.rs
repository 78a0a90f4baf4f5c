//! Compiles every swap kernel with NVRTC for sm_80 and sm_90 (no GPU needed) and fails on any
//! error or warning. Skips with a reason when NVRTC cannot be loaded, except under `CI=true`,
//! where NVRTC is installed on purpose (`.ci/run`) and a skip would hide a broken setup.
use libra::backend::cuda::kernels::{self, Output};

const ARCHS: &[(i32, i32)] = &[(8, 0), (9, 0)];

fn nvrtc_or_skip() -> bool {
    if kernels::nvrtc_present() {
        return true;
    }
    let reason = kernels::nvrtc_missing_reason();
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!("CI=true but NVRTC is missing: {reason}");
    }
    println!("skipped: {reason}");
    false
}

#[test]
fn every_kernel_compiles_without_warnings() {
    if !nvrtc_or_skip() {
        return;
    }
    println!("NVRTC {:?}", kernels::nvrtc_version());
    for &arch in ARCHS {
        for output in [Output::Cubin, Output::Ptx] {
            let c = kernels::compile(kernels::SWAP_SOURCE, "swap.cu", arch, output)
                .unwrap_or_else(|e| panic!("sm_{}{} {output:?}: {e}", arch.0, arch.1));
            assert!(c.log.is_empty(), "sm_{}{} {output:?}: NVRTC warned:\n{}", arch.0, arch.1, c.log);
            assert!(!c.image.is_empty());
            if output == Output::Ptx {
                let ptx = String::from_utf8_lossy(&c.image);
                for name in kernels::KERNEL_NAMES {
                    assert!(ptx.contains(&format!(".entry {name}(")), "{name} missing from the PTX");
                }
                // The 16-byte path must really use 128-bit accesses.
                assert!(ptx.contains("ld.global.cs.v4.u32"), "no 16-byte loads");
                assert!(ptx.contains("st.global.cs.v4.u32"), "no 16-byte stores");
            }
        }
    }
}

#[test]
fn broken_source_reports_the_log() {
    if !nvrtc_or_skip() {
        return;
    }
    let e = kernels::compile(
        "extern \"C\" __global__ void k() { undefined_thing(); }",
        "bad.cu",
        (9, 0),
        Output::Ptx,
    )
    .expect_err("must not compile");
    assert_eq!(e.status, libra::Status::LIBRA_ERR_DEVICE);
    assert!(e.message.contains("undefined_thing"), "{}", e.message);
}

#[test]
fn cubin_cache_round_trips_through_a_directory() {
    if !nvrtc_or_skip() {
        return;
    }
    let dir = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("kernel_cache_test");
    let _ = std::fs::remove_dir_all(&dir);
    let cubin = kernels::swap_cubin((9, 0), Some(&dir)).expect("compile sm_90");
    let file = dir.join(kernels::cache_file_name((9, 0)));
    assert_eq!(std::fs::read(&file).expect("cache file written"), *cubin);
    // ELF magic: a cubin, loadable without the PTX JIT.
    assert_eq!(&cubin[..4], b"\x7fELF");
}
