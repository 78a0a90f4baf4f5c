//! The residency event log.
use super::types::*;
use crate::boundary::{check_aligned, check_ptr, entry, null_arg, write_out};
use crate::status::libra_status;
use crate::topo::{c_enum, CEnum};
use libra::cache::EventKind;

/// Kind of a residency event (`libra_event.kind`).
#[allow(non_camel_case_types)]
#[repr(i32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum libra_event_kind {
    LIBRA_EVENT_STORED = 0,
    LIBRA_EVENT_REMOVED = 1,
    LIBRA_EVENT_TO_HOST = 2,
    LIBRA_EVENT_TO_GPU = 3,
}
c_enum!(
    libra_event_kind,
    libra_event_kind_raw,
    "LIBRA_EVENT_*",
    [LIBRA_EVENT_STORED, LIBRA_EVENT_REMOVED, LIBRA_EVENT_TO_HOST, LIBRA_EVENT_TO_GPU]
);

/// One residency change. An adapter event with kind LIBRA_EVENT_REMOVED means the adapter's
/// GPU blocks were freed and may be reused at once: an engine that built its own copy of the
/// weights from those blocks keeps that copy (the library never frees it), but must stop every
/// computation reading the blocks themselves first; it frees its copy only once no running
/// batch uses it.
///
/// Frozen for the 0.x ABI: events are written as an array (`sizeof(libra_event)` apart) with
/// no `struct_size`, so the size and fields never change; richer events would come from a new
/// drain function with a new, `struct_size`-versioned struct. A `kind` outside
/// `libra_event_kind` is never written.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct libra_event {
    pub kind: libra_event_kind_raw,
    /// True when the event concerns an adapter's weights rather than a KV block.
    pub adapter: bool,
    pub adapter_id: u64,
    /// The block's 128-bit prefix hash, low and high halves.
    pub block_hash_lo: u64,
    pub block_hash_hi: u64,
}

/// Moves up to `capacity` of the oldest residency events into `events_out` and their number
/// into `*count_out` (0 when the log is off). Thread-safe.
///
/// Pointers: `cache` NULL or a live handle from libra_cache_create(); `events_out` NULL or room for
/// `capacity` events; `count_out` NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn libra_cache_drain_events(
    cache: *const libra_cache,
    events_out: *mut libra_event,
    capacity: usize,
    count_out: *mut usize,
) -> libra_status {
    entry!({
        // SAFETY: `cache` is NULL or a live handle, per the contract above.
        let c = unsafe { cache_ref(cache) }?;
        check_ptr(count_out, "count_out")?;
        if events_out.is_null() && capacity > 0 {
            return Err(null_arg("events_out"));
        }
        // Checked before the log is drained, so a bad array loses no event.
        check_aligned(events_out, "events_out")?;
        let events = c.cache.drain_events(capacity)?;
        for (i, e) in events.iter().enumerate() {
            let kind = match e.kind {
                EventKind::Stored => libra_event_kind::LIBRA_EVENT_STORED,
                EventKind::Removed => libra_event_kind::LIBRA_EVENT_REMOVED,
                EventKind::ToHost => libra_event_kind::LIBRA_EVENT_TO_HOST,
                EventKind::ToGpu => libra_event_kind::LIBRA_EVENT_TO_GPU,
            };
            let v = libra_event {
                kind: kind.raw(),
                adapter: e.adapter,
                adapter_id: e.adapter_id,
                block_hash_lo: e.block_hash as u64,
                block_hash_hi: (e.block_hash >> 64) as u64,
            };
            // SAFETY: `events_out` is aligned (checked above) with `capacity >= events.len() > i`
            // writable slots, per the contract above.
            unsafe { write_out(events_out.add(i), v) };
        }
        // SAFETY: checked non-NULL and aligned above; writable per the contract above.
        unsafe { write_out(count_out, events.len()) };
        Ok(())
    })
}

// A frozen result keeps its published layout (64-bit targets; ffi_tests/cache_compat.c checks
// the same sizes from C).
#[cfg(target_pointer_width = "64")]
const _: () = {
    assert!(std::mem::size_of::<libra_event>() == 32);
    assert!(std::mem::offset_of!(libra_event, block_hash_hi) == 24);
};
