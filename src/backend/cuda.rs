//! CUDA backend (cudarc). Not yet implemented: asking for it reports LIBRA_ERR_DEVICE.
use crate::error::{Error, Result};

/// Whether the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: probing only tries to dlopen the library.
    unsafe { cudarc::driver::sys::is_culib_present() }
}

/// Explains why the CUDA backend cannot be used here.
pub fn unavailable_reason() -> Error {
    if driver_present() {
        Error::device("the CUDA backend is not built into this version of libra")
    } else {
        Error::device("libcuda could not be loaded: no NVIDIA driver on this machine")
    }
}

/// Result alias kept for the backend's future constructors.
pub type CudaResult<T> = Result<T>;
