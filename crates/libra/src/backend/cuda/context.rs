//! The context the backend runs in: the device's primary context (what the CUDA runtime and
//! frameworks use, so an engine's device pointers are valid in it), opened or adopted, made
//! current for each entry point and the caller's own context restored after.
use super::probe::{dev_err, device_count};
use super::CudaBackend;
use crate::backend::TierLayout;
use crate::error::{Error, Result};
use cudarc::driver::sys;
use cudarc::driver::CudaContext;
use std::ffi::c_void;
use std::sync::Arc;

/// The calling thread's current context, made current again on drop. Every entry point that
/// touches the driver holds one, so no call changes which context (and so which device the
/// CUDA runtime targets) the engine's thread has current. Only made once the driver is loaded.
pub(super) struct KeepCurrent {
    /// The caller's `CUcontext` (null: none), as an integer so the backend stays `Send`.
    previous: usize,
}

impl KeepCurrent {
    pub(super) fn save() -> Result<Self> {
        let mut current: sys::CUcontext = std::ptr::null_mut();
        // SAFETY: writes one handle; the driver is loaded (callers checked `device_count`).
        unsafe { sys::cuCtxGetCurrent(&mut current) }.result().map_err(|e| dev_err("cuCtxGetCurrent", e))?;
        Ok(KeepCurrent { previous: current as usize })
    }
}

impl Drop for KeepCurrent {
    fn drop(&mut self) {
        let mut current: sys::CUcontext = std::ptr::null_mut();
        // SAFETY: restores the handle the caller had current; nothing is done when it still is.
        unsafe {
            if sys::cuCtxGetCurrent(&mut current) == sys::CUresult::CUDA_SUCCESS
                && current as usize != self.previous
            {
                let _ = sys::cuCtxSetCurrent(self.previous as sys::CUcontext);
            }
        }
    }
}

/// Makes `ctx` current. An error cudarc recorded earlier (in a drop, which cannot return one)
/// is reported as that, not as a failure to bind.
pub(super) fn bind(ctx: &CudaContext) -> Result<()> {
    ctx.check_err().map_err(|e| dev_err("an earlier driver call during a release", e))?;
    ctx.bind_to_thread().map_err(|e| dev_err("cuCtxSetCurrent", e))
}

/// The primary context of device `ordinal`.
pub(super) fn open_device(ordinal: usize) -> Result<Arc<CudaContext>> {
    let n = device_count()?;
    if ordinal >= n {
        return Err(Error::invalid(format!("CUDA device {ordinal} does not exist ({n} present)")));
    }
    let ctx = CudaContext::new(ordinal).map_err(|e| dev_err(&format!("opening CUDA device {ordinal}"), e))?;
    // cudarc's event tracking orders its own CudaSlice uses across streams, which libra does not
    // use; left on, creating the first stream calls cuCtxSynchronize, which waits for all of
    // the engine's work in the primary context.
    // SAFETY: libra allocates through the driver directly and orders its work with events.
    unsafe { ctx.disable_event_tracking() };
    Ok(ctx)
}

/// What the backend needs to know of its device.
pub(super) struct DeviceCaps {
    /// Compute capability.
    pub(super) arch: (i32, i32),
    pub(super) sm_count: u32,
}

/// Reads the device's capabilities, refusing one that cannot host the pinned host tier.
pub(super) fn device_caps(ctx: &CudaContext) -> Result<DeviceCaps> {
    let attr = |a| ctx.attribute(a).map_err(|e| dev_err("cuDeviceGetAttribute", e));
    let major = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR)?;
    let minor = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR)?;
    let sm_count = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)?;
    let can_map = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_CAN_MAP_HOST_MEMORY)?;
    let uva = attr(sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_UNIFIED_ADDRESSING)?;
    if can_map == 0 || uva == 0 {
        return Err(Error::device(
            "the device cannot map pinned host memory with unified addressing, which the host tier needs",
        ));
    }
    Ok(DeviceCaps { arch: (major, minor), sm_count: sm_count.max(1) as u32 })
}

/// Refuses an adopted layout whose first or last byte of any segment is not memory the current
/// context's device can access.
pub(super) fn check_accessible(layout: &TierLayout) -> Result<()> {
    let blocks = layout.blocks() as u64;
    for (i, s) in layout.segments().iter().enumerate() {
        let last = s.base + s.stride * (blocks - 1) + s.bytes_per_block - 1;
        for addr in [s.base, last] {
            let mut dptr: sys::CUdeviceptr = 0;
            // SAFETY: the driver is loaded and a context is current; the query writes one
            // device pointer into `dptr` and reads nothing at `addr`.
            let r = unsafe {
                sys::cuPointerGetAttribute(
                    &mut dptr as *mut _ as *mut c_void,
                    sys::CUpointer_attribute::CU_POINTER_ATTRIBUTE_DEVICE_POINTER,
                    addr,
                )
            };
            if r != sys::CUresult::CUDA_SUCCESS {
                return Err(Error::invalid(format!(
                    "`segments[{i}]`: address {addr:#x} is not memory this device can access ({:?})",
                    r
                )));
            }
        }
    }
    Ok(())
}

impl CudaBackend {
    /// Makes the backend's context current until the returned value drops.
    pub(super) fn enter(&self) -> Result<KeepCurrent> {
        let keep = KeepCurrent::save()?;
        bind(&self.ctx)?;
        Ok(keep)
    }
}
