//! Memory the CUDA backend owns: device buffers, pinned host buffers, the per-batch staging of
//! lists and adapter bytes.
use super::context::bind;
use super::probe::dev_err;
use super::tables::{DevSegment, Unit};
use crate::error::{Error, Result};
use cudarc::driver::result as cu;
use cudarc::driver::sys;
use cudarc::driver::{CudaContext, CudaEvent, CudaStream};
use std::ffi::c_void;
use std::sync::Arc;

/// An allocation's failure: out of memory only when the driver says so; otherwise (e.g. an
/// earlier fault left the context unusable) a device error.
fn alloc_err(what: &str, e: cudarc::driver::DriverError) -> Error {
    if e.0 == sys::CUresult::CUDA_ERROR_OUT_OF_MEMORY {
        Error::out_of_memory(format!("{what} failed: {e}"))
    } else {
        dev_err(what, e)
    }
}

/// Device memory freed on drop.
pub(super) struct DeviceBuf {
    ctx: Arc<CudaContext>,
    pub(super) ptr: sys::CUdeviceptr,
    pub(super) len: usize,
}

impl DeviceBuf {
    pub(super) fn new(ctx: &Arc<CudaContext>, len: usize) -> Result<Self> {
        bind(ctx)?;
        // SAFETY: a plain allocation in the context bound above (zero-length requests are
        // rounded up); nothing reads the memory before it is written.
        let ptr = unsafe { cu::malloc_sync(len.max(1)) }
            .map_err(|e| alloc_err(&format!("device allocation of {len} bytes"), e))?;
        Ok(DeviceBuf { ctx: ctx.clone(), ptr, len })
    }

    /// A new buffer holding `bytes`, copied through `stream` before this returns.
    pub(super) fn upload_sync(ctx: &Arc<CudaContext>, stream: &CudaStream, bytes: &[u8]) -> Result<Self> {
        let buf = DeviceBuf::new(ctx, bytes.len())?;
        // SAFETY: buf holds bytes.len() bytes, and `bytes` outlives the copy: the stream is
        // synchronised before this returns.
        unsafe {
            sys::cuMemcpyHtoDAsync_v2(
                buf.ptr,
                bytes.as_ptr() as *const c_void,
                bytes.len(),
                stream.cu_stream(),
            )
            .result()
            .map_err(|e| dev_err("cuMemcpyHtoDAsync", e))?;
        }
        stream.synchronize().map_err(|e| dev_err("cuStreamSynchronize", e))?;
        Ok(buf)
    }
}

impl Drop for DeviceBuf {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: allocated by malloc_sync; the owner synchronised the stream that used it.
        let _ = unsafe { cu::free_sync(self.ptr) };
    }
}

/// Pinned, mapped host memory freed on drop.
pub(super) struct PinnedBuf {
    ctx: Arc<CudaContext>,
    pub(super) host: *mut u8,
    pub(super) dev: sys::CUdeviceptr,
    pub(super) len: usize,
}

// SAFETY: the pointer is to plain bytes this value alone owns (no alias escapes it), so moving
// the value to another thread moves sole ownership; freeing needs no particular thread.
unsafe impl Send for PinnedBuf {}

impl PinnedBuf {
    pub(super) fn new(ctx: &Arc<CudaContext>, len: usize) -> Result<Self> {
        bind(ctx)?;
        let flags = sys::CU_MEMHOSTALLOC_PORTABLE | sys::CU_MEMHOSTALLOC_DEVICEMAP;
        // SAFETY: plain allocation; the memory is zeroed below before anyone reads it.
        let host = unsafe { cu::malloc_host(len.max(1), flags) }
            .map_err(|e| alloc_err(&format!("pinned host allocation of {len} bytes"), e))?
            as *mut u8;
        let mut buf = PinnedBuf { ctx: ctx.clone(), host, dev: 0, len };
        // SAFETY: `host` was just allocated and mapped by cuMemHostAlloc with DEVICEMAP, for at
        // least `len` bytes, and nothing else holds it yet.
        unsafe {
            sys::cuMemHostGetDevicePointer_v2(&mut buf.dev, host as *mut c_void, 0)
                .result()
                .map_err(|e| dev_err("cuMemHostGetDevicePointer", e))?;
            std::ptr::write_bytes(host, 0, len);
        }
        Ok(buf)
    }
}

impl Drop for PinnedBuf {
    fn drop(&mut self) {
        let _ = self.ctx.bind_to_thread();
        // SAFETY: allocated by malloc_host; the owner synchronised the stream that used it.
        let _ = unsafe { cu::free_host(self.host as *mut c_void) };
    }
}

/// A device buffer for the block list of each launch, reused by consecutive batches. All its
/// users run on one stream, so a batch's copy into it is ordered after the previous batch's
/// kernel has read it.
pub(super) struct DeviceList {
    buf: Option<DeviceBuf>,
}

impl DeviceList {
    pub(super) fn new() -> Self {
        DeviceList { buf: None }
    }

    /// Enqueues a copy of `len` bytes of pinned memory at `src` into the buffer, on `stream`.
    /// The source must stay untouched until the stream has run the copy.
    pub(super) fn fill_from_pinned(
        &mut self,
        stream: &CudaStream,
        src: *const u8,
        len: usize,
    ) -> Result<sys::CUdeviceptr> {
        if self.buf.as_ref().map_or(true, |b| b.len < len) {
            // Growing: the old buffer may still be read by queued work.
            stream.synchronize().map_err(|e| dev_err("cuStreamSynchronize", e))?;
            self.buf = None;
            let cap = len.next_power_of_two().max(4096);
            self.buf = Some(DeviceBuf::new(stream.context(), cap)?);
        }
        let dst = self.buf.as_ref().map(|b| b.ptr).unwrap_or(0);
        if len > 0 {
            // SAFETY: dst holds at least len bytes; src is pinned, so the copy is truly
            // asynchronous and reads it when the stream gets there (the caller keeps it).
            unsafe {
                sys::cuMemcpyHtoDAsync_v2(dst, src as *const c_void, len, stream.cu_stream())
                    .result()
                    .map_err(|e| dev_err("cuMemcpyHtoDAsync", e))?;
            }
        }
        Ok(dst)
    }
}

/// Pinned buffers that carry a batch's caller-provided bytes (block lists, adapter weights) to
/// the device. Copies from pageable memory "might be synchronous" (CUDA Driver API, API
/// synchronization behavior): they may wait for earlier work, or read the caller's memory after
/// the call returns. A batch's bytes are copied here first, and the buffer is not reused until
/// the batch's event says the device has finished reading it.
pub(super) struct Staging {
    slots: Vec<(PinnedBuf, Option<Arc<CudaEvent>>)>,
}

/// Staging buffers kept; beyond this a new batch waits for the oldest one to drain.
const STAGING_SLOTS: usize = 16;

impl Staging {
    pub(super) fn new() -> Self {
        Staging { slots: Vec::new() }
    }

    /// A staging buffer of at least `len` bytes that no queued work still reads: its index.
    pub(super) fn acquire(&mut self, ctx: &Arc<CudaContext>, len: usize) -> Result<usize> {
        for (_, busy) in self.slots.iter_mut() {
            if busy.as_ref().is_some_and(|e| e.try_is_complete().unwrap_or(false)) {
                *busy = None;
            }
        }
        if let Some(i) = self.slots.iter().position(|(b, busy)| busy.is_none() && b.len >= len) {
            return Ok(i);
        }
        // No free buffer is large enough: replace a free one, add one, or wait for the first.
        let i = match self.slots.iter().position(|(_, busy)| busy.is_none()) {
            Some(i) => i,
            None if self.slots.len() < STAGING_SLOTS => {
                self.slots.push((PinnedBuf::new(ctx, len.next_power_of_two().max(64 << 10))?, None));
                return Ok(self.slots.len() - 1);
            }
            None => {
                if let Some(e) = self.slots[0].1.take() {
                    e.synchronize().map_err(|e| dev_err("cuEventSynchronize", e))?;
                }
                0
            }
        };
        if self.slots[i].0.len < len {
            self.slots[i].0 = PinnedBuf::new(ctx, len.next_power_of_two().max(64 << 10))?;
        }
        Ok(i)
    }

    /// Host and device address of slot `i`.
    pub(super) fn addr(&self, i: usize) -> (*mut u8, sys::CUdeviceptr) {
        (self.slots[i].0.host, self.slots[i].0.dev)
    }

    /// Slot `i` is read by the work before `event`.
    pub(super) fn busy_until(&mut self, i: usize, event: Arc<CudaEvent>) {
        self.slots[i].1 = Some(event);
    }

    /// Slot `i` may be read by queued work that no event marks (a failed submission): waits.
    pub(super) fn release_after(&mut self, i: usize, stream: &CudaStream) {
        let _ = stream.synchronize();
        self.slots[i].1 = None;
    }
}

/// Plain data without padding: every byte of a value is initialised, so a slice of them can be
/// read as bytes (what the device tables and block lists are uploaded as).
///
/// # Safety
/// Implement only for `Copy` types without padding bytes.
pub(super) unsafe trait NoPadding: Copy {}
// SAFETY: an integer has no padding.
unsafe impl NoPadding for u32 {}
// SAFETY: an array of padding-free elements has no padding.
unsafe impl NoPadding for [u32; 2] {}
// SAFETY: repr(C) with four u64 fields.
unsafe impl NoPadding for DevSegment {}
// SAFETY: repr(C) with u32, u32, u64, u64: each field at its natural alignment, none between.
unsafe impl NoPadding for Unit {}

/// The bytes of `v`.
pub(super) fn as_bytes<T: NoPadding>(v: &[T]) -> &[u8] {
    // SAFETY: `T` has no padding, so all size_of_val(v) bytes are initialised; they are borrowed
    // from `v` for the same lifetime, and u8 needs no alignment.
    unsafe { std::slice::from_raw_parts(v.as_ptr() as *const u8, std::mem::size_of_val(v)) }
}
