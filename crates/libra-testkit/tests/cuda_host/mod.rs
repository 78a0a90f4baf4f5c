//! Builds libra's kernel source for the host with the shim (`shim.h`, `host_kernels.cpp`) and
//! runs launches through it. Shared by the kernel tests and the libcuda stand-in's tests.
#![allow(dead_code)]
use libra::backend::cuda::params::SwapLaunch;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr, CString};
use std::path::{Path, PathBuf};
use std::process::Command;

/// This directory (the shim, the launcher and the stand-in's sources).
pub fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/cuda_host")
}

/// The unmodified kernel source.
pub fn swap_cu() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../libra/kernels/swap.cu")
}

/// Where test builds go (`target/tmp/...`).
pub fn out_dir(what: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(what);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The C++ compiler the `cc` crate picks for this host.
pub fn cxx() -> cc::Tool {
    let target = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
    cc::Build::new()
        .cpp(true)
        .target(&target)
        .host(&target)
        .opt_level(1)
        .cargo_metadata(false)
        .warnings(false)
        .get_compiler()
}

/// Compiles `sources` (C++) into the shared object `out`, with the kernel source `kernel` and the
/// extra `args`. Err carries the compiler's output.
pub fn build_shared(sources: &[PathBuf], kernel: &Path, args: &[&str], out: &Path) -> Result<(), String> {
    let tool = cxx();
    let mut cmd: Command = tool.to_command();
    cmd.args(["-x", "c++", "-std=c++17", "-fPIC", "-shared", "-pthread", "-fno-strict-aliasing"])
        .args(["-Wall", "-Wextra", "-Werror", "-Wno-unknown-pragmas", "-Wno-unused-parameter"])
        .arg(format!("-I{}", dir().display()))
        .arg(format!("-DLIBRA_KERNEL_SOURCE=\"{}\"", kernel.display()))
        .args(args)
        .args(sources)
        .arg("-o")
        .arg(out);
    let o = cmd.output().map_err(|e| format!("could not run {cmd:?}: {e}"))?;
    if !o.status.success() {
        return Err(format!(
            "{cmd:?} failed:\n{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(())
}

type LaunchFn = unsafe extern "C" fn(
    *const c_char,
    *const c_uint,
    *const c_uint,
    *mut *mut c_void,
    *mut c_char,
    usize,
) -> c_int;
type ParamsFn = unsafe extern "C" fn(*const c_char, *mut usize, *mut usize, c_int) -> c_int;
type CountFn = unsafe extern "C" fn() -> c_int;
type NameFn = unsafe extern "C" fn(c_int) -> *const c_char;

/// The kernels compiled for the host, loaded into this process.
pub struct HostKernels {
    launch: LaunchFn,
    params: ParamsFn,
    count: CountFn,
    name: NameFn,
}

fn sym<T: Copy>(handle: *mut c_void, name: &str) -> Result<T, String> {
    let c = CString::new(name).unwrap();
    // SAFETY: dlsym on a live handle; the caller names the symbol's real type.
    let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
    if p.is_null() {
        return Err(format!("{name} missing"));
    }
    // SAFETY: T is a function pointer type of the same size as a data pointer.
    Ok(unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p) })
}

impl HostKernels {
    /// Compiles `kernel` (a .cu file) into `dir/name.so` and loads it.
    pub fn build(kernel: &Path, dir: &Path, name: &str) -> Result<Self, String> {
        let so = dir.join(format!("{name}.so"));
        build_shared(&[self::dir().join("host_kernels.cpp")], kernel, &[], &so)?;
        Self::load(&so)
    }

    /// Loads a shared object built by [`HostKernels::build`].
    pub fn load(so: &Path) -> Result<Self, String> {
        let c = CString::new(so.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: loads a library built from the test tree; never unloaded (kernels may be
        // referenced by function pointers for the life of the process).
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        if h.is_null() {
            // SAFETY: dlerror returns a static string or NULL.
            let e = unsafe { libc::dlerror() };
            // SAFETY: a non-NULL dlerror result is a NUL-terminated string.
            let why = if e.is_null() { "?".into() } else { unsafe { CStr::from_ptr(e) }.to_string_lossy() };
            return Err(format!("dlopen {}: {why}", so.display()));
        }
        Ok(HostKernels {
            launch: sym(h, "libra_host_launch")?,
            params: sym(h, "libra_host_kernel_params")?,
            count: sym(h, "libra_host_kernel_count")?,
            name: sym(h, "libra_host_kernel_name")?,
        })
    }

    /// The kernels the launcher knows.
    pub fn names(&self) -> Vec<String> {
        // SAFETY: plain calls into the loaded launcher; names are static strings.
        unsafe {
            (0..(self.count)())
                .map(|i| CStr::from_ptr((self.name)(i)).to_string_lossy().into_owned())
                .collect()
        }
    }

    /// Parameter sizes of `kernel`, from its C++ signature.
    pub fn param_sizes(&self, kernel: &str) -> Option<Vec<usize>> {
        let c = CString::new(kernel).unwrap();
        let mut sizes = [0usize; 32];
        // SAFETY: the buffer holds 32 entries, as passed.
        let n = unsafe { (self.params)(c.as_ptr(), sizes.as_mut_ptr(), std::ptr::null_mut(), 32) };
        (n >= 0).then(|| sizes[..n as usize].to_vec())
    }

    /// Runs `launch` (its kernel, shape and argument array) to completion. Err on a fault.
    ///
    /// # Safety
    /// The arguments must lead to memory the kernel may read and write.
    pub unsafe fn run(&self, launch: &mut SwapLaunch) -> Result<(), String> {
        let name = CString::new(launch.kernel.name()).unwrap();
        let grid = [launch.shape.grid, 1, 1];
        let block = [launch.shape.threads, 1, 1];
        let mut ptrs = launch.param_pointers();
        let mut err = [0 as c_char; 256];
        // SAFETY: the arrays live across the call and `err` holds the 256 bytes passed; the
        // arguments lead to memory the kernel may use (the caller's promise).
        let r = unsafe {
            (self.launch)(
                name.as_ptr(),
                grid.as_ptr(),
                block.as_ptr(),
                ptrs.as_mut_ptr(),
                err.as_mut_ptr(),
                256,
            )
        };
        match r {
            0 => Ok(()),
            // SAFETY: on failure the launcher writes a NUL-terminated message into `err`.
            _ => Err(unsafe { CStr::from_ptr(err.as_ptr()) }.to_string_lossy().into_owned()),
        }
    }
}
