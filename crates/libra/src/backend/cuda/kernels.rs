//! The swap kernels' source, and their compilation by NVRTC into a cubin for one architecture,
//! cached in memory for the process and optionally in a directory.
//!
//! Finding NVRTC: cudarc opens `libnvrtc.so`, `libnvrtc.so.12`, ... through the dynamic loader,
//! so a directory on `LD_LIBRARY_PATH` works. When that fails and `LIBRA_NVRTC_DIR` names a
//! directory holding `libnvrtc.so.12` (the `nvidia-cuda-nvrtc-cu12` wheel's `lib/`), the library
//! is opened from there first; the loader then resolves cudarc's later open by its soname
//! to the copy already loaded.
use crate::error::{Error, Result};
use cudarc::nvrtc::{result as nvrtc_result, sys as nvrtc_sys};
use std::collections::HashMap;
use std::ffi::{c_char, CStr, CString};
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

/// CUDA C source of the swap kernels.
pub const SWAP_SOURCE: &str = include_str!("../../../kernels/swap.cu");

/// Every kernel in [`SWAP_SOURCE`].
pub const KERNEL_NAMES: &[&str] = &["libra_gather", "libra_scatter", "libra_upload"];

/// Environment variable naming a directory that holds `libnvrtc.so.12`.
pub const NVRTC_DIR_ENV: &str = "LIBRA_NVRTC_DIR";

/// Options every compilation uses; part of the cache key.
const BASE_OPTIONS: &[&str] = &["--std=c++17", "--use_fast_math", "-lineinfo"];

/// Opens NVRTC from `LIBRA_NVRTC_DIR` once, and keeps it open for the life of the process.
fn preload_from_env() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let Some(dir) = std::env::var_os(NVRTC_DIR_ENV) else { return };
        for name in ["libnvrtc.so.12", "libnvrtc.so"] {
            let path = PathBuf::from(&dir).join(name);
            let Ok(c) = CString::new(path.as_os_str().as_encoded_bytes()) else { continue };
            // SAFETY: dlopen of a path; the handle is intentionally never closed, so the
            // library stays loaded for cudarc's own open by soname.
            let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
            if !handle.is_null() {
                return;
            }
        }
    });
}

/// Whether NVRTC can be loaded (after trying `LIBRA_NVRTC_DIR`).
pub fn nvrtc_present() -> bool {
    static PRESENT: OnceLock<bool> = OnceLock::new();
    *PRESENT.get_or_init(|| {
        // SAFETY: probing only tries to dlopen the library.
        if unsafe { nvrtc_sys::is_culib_present() } {
            return true;
        }
        preload_from_env();
        // SAFETY: as above.
        unsafe { nvrtc_sys::is_culib_present() }
    })
}

/// NVRTC's version, when it is present.
pub fn nvrtc_version() -> Option<(i32, i32)> {
    if !nvrtc_present() {
        return None;
    }
    let (mut major, mut minor) = (0, 0);
    // SAFETY: NVRTC is loaded; the out-parameters are valid.
    let r = unsafe { nvrtc_sys::nvrtcVersion(&mut major, &mut minor) };
    (r == nvrtc_sys::nvrtcResult::NVRTC_SUCCESS).then_some((major, minor))
}

/// Why NVRTC cannot be used here.
pub fn nvrtc_missing_reason() -> String {
    format!(
        "libnvrtc could not be loaded: put the directory holding libnvrtc.so.12 on LD_LIBRARY_PATH \
         or in {NVRTC_DIR_ENV} (pip install nvidia-cuda-nvrtc-cu12 provides one)"
    )
}

/// What NVRTC produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Output {
    /// Machine code for exactly one architecture (`sm_XY`): what the backend loads, since it
    /// needs no PTX JIT and so works with drivers older than NVRTC.
    Cubin,
    /// PTX for a virtual architecture (`compute_XY`).
    Ptx,
}

/// A compiled program and NVRTC's log (empty when there were no warnings).
#[derive(Debug, Clone)]
pub struct Compiled {
    pub image: Vec<u8>,
    pub log: String,
}

fn nvrtc_err(what: &str, e: nvrtc_result::NvrtcError) -> Error {
    Error::device(format!("NVRTC {what} failed: {e:?}"))
}

fn options_for(arch: (i32, i32), output: Output) -> Vec<String> {
    let prefix = match output {
        Output::Cubin => "sm",
        Output::Ptx => "compute",
    };
    let mut opts = vec![format!("--gpu-architecture={prefix}_{}{}", arch.0, arch.1)];
    opts.extend(BASE_OPTIONS.iter().map(|s| s.to_string()));
    opts
}

/// Compiles `source` for `arch` (compute capability). An error carries NVRTC's log.
pub fn compile(source: &str, name: &str, arch: (i32, i32), output: Output) -> Result<Compiled> {
    compile_with(source, name, arch, output, &[])
}

/// [`compile`] with `extra` options after the usual ones (e.g. `--ptxas-options=-v`, whose
/// report of registers and spills lands in the log).
pub fn compile_with(
    source: &str,
    name: &str,
    arch: (i32, i32),
    output: Output,
    extra: &[&str],
) -> Result<Compiled> {
    if !nvrtc_present() {
        return Err(Error::device(nvrtc_missing_reason()));
    }
    let src = CString::new(source).map_err(|_| Error::invalid("kernel source contains a NUL byte"))?;
    let cname = CString::new(name).map_err(|_| Error::invalid("kernel name contains a NUL byte"))?;
    let prog = nvrtc_result::create_program(&src, Some(&cname)).map_err(|e| nvrtc_err("create", e))?;
    let mut opts = options_for(arch, output);
    opts.extend(extra.iter().map(|s| s.to_string()));
    // SAFETY: `prog` is live until destroy_program below; the buffers match the sizes NVRTC
    // reports, and the log NVRTC returns is NUL-terminated.
    unsafe {
        let compiled = nvrtc_result::compile_program(prog, &opts);
        let log = nvrtc_result::get_program_log(prog)
            .map(|l| CStr::from_ptr(l.as_ptr()).to_string_lossy().trim().to_string())
            .unwrap_or_default();
        let image = compiled.map_err(|e| format!("{e:?}")).and_then(|()| {
            let image = match output {
                // PTX comes NUL-terminated.
                Output::Ptx => nvrtc_result::get_ptx(prog)
                    .map(|v| v.iter().map(|&c| c as u8).take_while(|&c| c != 0).collect()),
                Output::Cubin => {
                    let mut size = 0usize;
                    nvrtc_sys::nvrtcGetCUBINSize(prog, &mut size).result().and_then(|()| {
                        let mut buf = vec![0u8; size];
                        nvrtc_sys::nvrtcGetCUBIN(prog, buf.as_mut_ptr() as *mut c_char).result().map(|()| buf)
                    })
                }
            };
            image.map_err(|e| format!("{e:?}"))
        });
        let _ = nvrtc_result::destroy_program(prog);
        match image {
            Ok(image) => Ok(Compiled { image, log }),
            Err(e) => Err(Error::device(format!(
                "NVRTC could not compile {name} for sm_{}{} ({}): {e}\n{log}",
                arch.0,
                arch.1,
                opts.join(" ")
            ))),
        }
    }
}

/// File name of the cached cubin for `arch`: the hash covers the source and the options, so a
/// changed kernel never picks up a stale file.
pub fn cache_file_name(arch: (i32, i32)) -> String {
    image_file_name(arch, Output::Cubin)
}

/// File name of a cached image: cubin for `sm_XY` or PTX for `compute_XY`.
pub fn image_file_name(arch: (i32, i32), output: Output) -> String {
    let mut h = siphasher::sip::SipHasher13::new_with_keys(0x6c69627261, 0x73776170);
    h.write(SWAP_SOURCE.as_bytes());
    for o in options_for(arch, output) {
        h.write(o.as_bytes());
        h.write_u8(0);
    }
    match output {
        Output::Cubin => format!("libra_swap_sm{}{}_{:016x}.cubin", arch.0, arch.1, h.finish()),
        Output::Ptx => format!("libra_swap_compute{}{}_{:016x}.ptx", arch.0, arch.1, h.finish()),
    }
}

type Cache = Mutex<HashMap<((i32, i32), Output), Arc<Vec<u8>>>>;

fn memory_cache() -> &'static Cache {
    static MEMORY: OnceLock<Cache> = OnceLock::new();
    MEMORY.get_or_init(Default::default)
}

/// The swap kernels as a cubin for `arch`: from the process cache, else from `cache_dir`, else
/// compiled by NVRTC (and then written to `cache_dir` when given).
pub fn swap_cubin(arch: (i32, i32), cache_dir: Option<&Path>) -> Result<Arc<Vec<u8>>> {
    swap_image(arch, Output::Cubin, cache_dir)
}

/// The swap kernels as a cubin or as PTX (NUL-terminated, ready for `cuModuleLoadData`), found
/// or built as [`swap_cubin`] says.
pub fn swap_image(arch: (i32, i32), output: Output, cache_dir: Option<&Path>) -> Result<Arc<Vec<u8>>> {
    let memory = memory_cache();
    if let Some(c) = memory.lock().unwrap_or_else(|p| p.into_inner()).get(&(arch, output)) {
        return Ok(c.clone());
    }
    let file = cache_dir.map(|d| d.join(image_file_name(arch, output)));
    let image = match file.as_ref().and_then(|f| std::fs::read(f).ok()).filter(|b| !b.is_empty()) {
        Some(bytes) => bytes,
        None => {
            let mut c = compile(SWAP_SOURCE, "swap.cu", arch, output)?;
            if output == Output::Ptx {
                c.image.push(0);
            }
            if let (Some(dir), Some(f)) = (cache_dir, file.as_ref()) {
                // The cache is an optimisation: failing to write it is not an error.
                let _ = std::fs::create_dir_all(dir).and_then(|()| {
                    let tmp = f.with_extension(format!("tmp{}", std::process::id()));
                    std::fs::write(&tmp, &c.image).and_then(|()| std::fs::rename(&tmp, f))
                });
            }
            c.image
        }
    };
    let image = Arc::new(image);
    memory.lock().unwrap_or_else(|p| p.into_inner()).insert((arch, output), image.clone());
    Ok(image)
}

/// Drops a cached image (in memory and in `cache_dir`), e.g. one the driver refused to load,
/// so the next [`swap_image`] compiles it afresh.
pub fn forget(arch: (i32, i32), output: Output, cache_dir: Option<&Path>) {
    memory_cache().lock().unwrap_or_else(|p| p.into_inner()).remove(&(arch, output));
    if let Some(d) = cache_dir {
        let _ = std::fs::remove_file(d.join(image_file_name(arch, output)));
    }
}

/// The architectures this NVRTC compiles for, oldest first (None without NVRTC).
pub fn supported_archs() -> Option<Vec<(i32, i32)>> {
    if !nvrtc_present() {
        return None;
    }
    let mut n = 0;
    // SAFETY: NVRTC is loaded; the buffer has the size NVRTC reported.
    unsafe {
        nvrtc_sys::nvrtcGetNumSupportedArchs(&mut n).result().ok()?;
        let mut v = vec![0i32; n.max(0) as usize];
        nvrtc_sys::nvrtcGetSupportedArchs(v.as_mut_ptr()).result().ok()?;
        Some(v.into_iter().map(|a| (a / 10, a % 10)).collect())
    }
}

/// Architectures `gpu_check.sh --prepare` builds cubins for (Ampere, Ada, Hopper, Blackwell).
pub const PREBUILT_ARCHS: &[(i32, i32)] = &[(8, 0), (8, 6), (8, 9), (9, 0), (10, 0), (12, 0)];

/// Architectures of the PTX `gpu_check.sh --prepare` builds, newest first: PTX for one of them
/// runs (through the driver's JIT) on any device at least as new.
pub const PTX_ARCHS: &[(i32, i32)] = &[(12, 0), (10, 0), (9, 0), (8, 0)];

/// The newest virtual architecture no newer than `device` whose PTX is cached in `cache_dir`
/// or that NVRTC can compile; what a device runs when no cubin for it can be had.
pub fn ptx_arch_for(device: (i32, i32), cache_dir: Option<&Path>) -> Option<(i32, i32)> {
    let cached = PTX_ARCHS
        .iter()
        .copied()
        .filter(|&a| a <= device)
        .find(|&a| cache_dir.is_some_and(|d| d.join(image_file_name(a, Output::Ptx)).is_file()));
    cached.or_else(|| supported_archs()?.into_iter().filter(|&a| a <= device).max())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_names_differ_per_architecture() {
        let a = cache_file_name((8, 0));
        let b = cache_file_name((9, 0));
        assert_ne!(a, b);
        assert!(a.starts_with("libra_swap_sm80_") && a.ends_with(".cubin"));
    }
}
