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

/// Every architecture gpu_check.sh prepares cubins for.
const ALL_ARCHS: &[(i32, i32)] = &[(8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)];

/// ptxas's report for one kernel: (name, registers per thread, spill store bytes, spill load bytes).
fn ptxas_report(log: &str) -> Vec<(String, u32, u32, u32)> {
    let mut out = Vec::new();
    let mut name = None;
    let mut spills = (0, 0);
    for line in log.lines() {
        if let Some(rest) = line.split("Compiling entry function '").nth(1) {
            name = rest.split('\'').next().map(str::to_string);
        } else if line.contains("bytes spill stores") {
            let nums: Vec<u32> = line.split_whitespace().filter_map(|w| w.parse().ok()).collect();
            // "N bytes stack frame, S bytes spill stores, L bytes spill loads"
            spills = (nums[1], nums[2]);
        } else if let Some(rest) = line.split("Used ").nth(1) {
            let regs: u32 = rest.split_whitespace().next().unwrap().parse().unwrap();
            out.push((name.take().expect("a kernel name before its registers"), regs, spills.0, spills.1));
        }
    }
    out
}

/// The launch shape holds: no kernel spills, and registers (allocated per warp in units of 8 per
/// thread) x threads per CTA x resident CTAs per SM fit the 65536 registers of an SM.
#[test]
fn register_budget_fits_the_launch_shape() {
    use libra::backend::cuda::params::{CTAS_PER_SM, THREADS_PER_CTA};
    if !nvrtc_or_skip() {
        return;
    }
    for &arch in ALL_ARCHS {
        let c = kernels::compile_with(
            kernels::SWAP_SOURCE,
            "swap.cu",
            arch,
            Output::Cubin,
            &["--ptxas-options=-v"],
        )
        .unwrap_or_else(|e| panic!("sm_{}{}: {e}", arch.0, arch.1));
        let report = ptxas_report(&c.log);
        for name in kernels::KERNEL_NAMES {
            let &(_, regs, st, ld) = report
                .iter()
                .find(|r| r.0 == *name)
                .unwrap_or_else(|| panic!("sm_{}{}: no ptxas report for {name}:\n{}", arch.0, arch.1, c.log));
            let need = regs.div_ceil(8) * 8 * THREADS_PER_CTA * CTAS_PER_SM;
            println!(
                "sm_{}{} {name}: {regs} registers, spills {st}/{ld} bytes, {need} of 65536 registers for {CTAS_PER_SM} CTAs",
                arch.0, arch.1
            );
            assert_eq!((st, ld), (0, 0), "sm_{}{} {name} spills", arch.0, arch.1);
            assert!(
                need <= 65536,
                "sm_{}{} {name}: {regs} registers do not fit {CTAS_PER_SM} CTAs",
                arch.0,
                arch.1
            );
        }
    }
}
