//! Finding the CUDA driver and its devices, without touching the driver before it is known to
//! load (cudarc panics when it cannot find the library), and the one shape of a driver error.
use crate::error::{Error, Result};
use cudarc::driver::result as cu;
use cudarc::driver::sys;
use cudarc::driver::DriverError;

/// Whether the CUDA driver library can be loaded on this machine.
pub fn driver_present() -> bool {
    // SAFETY: probing only tries to dlopen the library.
    unsafe { sys::is_culib_present() }
}

/// Number of CUDA devices, or the reason there are none usable.
pub fn device_count() -> Result<usize> {
    if !driver_present() {
        return Err(no_driver());
    }
    cu::init().map_err(|e| dev_err("cuInit", e))?;
    let n = cu::device::get_count().map_err(|e| dev_err("cuDeviceGetCount", e))?;
    if n <= 0 {
        return Err(Error::device("the CUDA driver is loaded but reports no device"));
    }
    Ok(n as usize)
}

/// Explains why the CUDA backend cannot be used here (`LIBRA_ERR_DEVICE`).
pub fn unavailable_reason() -> Error {
    match device_count() {
        Err(e) => e,
        Ok(_) => Error::device("a CUDA device is present; the CUDA backend should be usable"),
    }
}

/// Whether a CUDA device is usable: what `auto` backend selection asks.
pub fn usable() -> bool {
    device_count().is_ok()
}

fn no_driver() -> Error {
    Error::device("libcuda could not be loaded: no NVIDIA driver on this machine")
}

pub(super) fn dev_err(what: &str, e: DriverError) -> Error {
    Error::device(format!("{what} failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cuda::{CudaBackend, CudaOptions};

    #[test]
    fn without_a_driver_nothing_touches_cuda() {
        if driver_present() {
            return;
        }
        assert_eq!(device_count().unwrap_err().status, crate::error::Status::LIBRA_ERR_DEVICE);
        let e = CudaBackend::new(4096, 1, 1, CudaOptions::default()).err().expect("no driver");
        assert!(e.message.contains("libcuda"), "{}", e.message);
    }
}
