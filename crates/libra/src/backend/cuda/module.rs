//! Loading the swap kernels into a context: the cubin for the device, compiled afresh when the
//! driver refuses a cached one, else PTX for the newest older architecture.
use super::kernels::{self, Output};
use super::probe::dev_err;
use crate::error::{Error, Result};
use cudarc::driver::sys;
use cudarc::driver::{CudaContext, CudaFunction};
use std::path::Path;
use std::sync::Arc;

/// The four swap kernels, loaded.
pub(super) struct Kernels {
    /// Which image they came from ("cubin for sm_90", "PTX for compute_120").
    pub(super) from: String,
    pub(super) gather: CudaFunction,
    pub(super) scatter: CudaFunction,
    pub(super) upload: CudaFunction,
}

/// Whether the kernels are loaded; built on first use.
pub(super) enum KernelState {
    NotLoaded,
    Loaded(Kernels),
    /// The kernels could not be built (e.g. no NVRTC and no cached cubin): memcpy only.
    Unavailable(String),
}

/// Why an image did not give kernels.
enum ImageError {
    /// It could not be had (no NVRTC and no cached file), or the context is unusable.
    Unavailable(Error),
    /// The driver refused the image itself.
    Refused(Error),
}

impl ImageError {
    fn error(&self) -> &Error {
        match self {
            ImageError::Unavailable(e) | ImageError::Refused(e) => e,
        }
    }
}

/// Loads the kernels: the cubin for this device; a cached cubin the driver refuses is
/// compiled afresh; without a loadable cubin (a device newer than NVRTC), PTX for the newest
/// older architecture, which the driver compiles.
pub(super) fn load(ctx: &Arc<CudaContext>, arch: (i32, i32), dir: Option<&Path>) -> Result<Kernels> {
    let cubin_err = match load_image(ctx, arch, Output::Cubin, dir) {
        Ok(k) => return Ok(k),
        Err(ImageError::Refused(e)) => {
            kernels::forget(arch, Output::Cubin, dir);
            match load_image(ctx, arch, Output::Cubin, dir) {
                Ok(k) => return Ok(k),
                Err(again) => {
                    Error::device(format!("{}; compiled afresh: {}", e.message, again.error().message))
                }
            }
        }
        Err(ImageError::Unavailable(e)) => e,
    };
    let Some(ptx_arch) = kernels::ptx_arch_for(arch, dir) else { return Err(cubin_err) };
    load_image(ctx, ptx_arch, Output::Ptx, dir).map_err(|e| {
        Error::device(format!(
            "{}; PTX for compute_{}{}: {}",
            cubin_err.message,
            ptx_arch.0,
            ptx_arch.1,
            e.error().message
        ))
    })
}

fn load_image(
    ctx: &Arc<CudaContext>,
    arch: (i32, i32),
    output: Output,
    dir: Option<&Path>,
) -> std::result::Result<Kernels, ImageError> {
    let image = kernels::swap_image(arch, output, dir).map_err(ImageError::Unavailable)?;
    let from = match output {
        Output::Cubin => format!("cubin for sm_{}{}", arch.0, arch.1),
        Output::Ptx => format!("PTX for compute_{}{}", arch.0, arch.1),
    };
    let what = format!("cuModuleLoadData ({from})");
    let module = ctx.load_module(cudarc::nvrtc::Ptx::from_binary(image.as_ref().clone())).map_err(|e| {
        let refused = matches!(
            e.0,
            sys::CUresult::CUDA_ERROR_INVALID_IMAGE
                | sys::CUresult::CUDA_ERROR_NO_BINARY_FOR_GPU
                | sys::CUresult::CUDA_ERROR_INVALID_PTX
                | sys::CUresult::CUDA_ERROR_UNSUPPORTED_PTX_VERSION
        );
        let err = dev_err(&what, e);
        if refused {
            ImageError::Refused(err)
        } else {
            ImageError::Unavailable(err)
        }
    })?;
    let f = |name: &str| {
        module
            .load_function(name)
            .map_err(|e| ImageError::Unavailable(dev_err(&format!("loading {name}"), e)))
    };
    Ok(Kernels { from, gather: f("libra_gather")?, scatter: f("libra_scatter")?, upload: f("libra_upload")? })
}
