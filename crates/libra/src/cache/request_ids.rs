//! Request ids: `tag:16 | generation:26 | slot:22`. The tag is unique to its cache among the
//! first 65,535 caches of a process and the generation never 0, so no id is 0 (which C code
//! often reads as "none"), a released id stays stale for 2^26 reuses of its slot, and an id
//! from another cache is rejected instead of naming whatever request has that slot there.
use super::config::MAX_OPEN_REQUESTS;

const REQUEST_SLOT_BITS: u32 = 22;
const REQUEST_GENERATION_BITS: u32 = 26;
const REQUEST_GENERATION_MASK: u32 = (1 << REQUEST_GENERATION_BITS) - 1;
const _: () = assert!(MAX_OPEN_REQUESTS <= 1 << REQUEST_SLOT_BITS);

pub(crate) fn request_id(tag: u16, slot: u32, generation: u32) -> u64 {
    ((tag as u64) << (REQUEST_SLOT_BITS + REQUEST_GENERATION_BITS))
        | ((generation as u64) << REQUEST_SLOT_BITS)
        | slot as u64
}

/// The slot part of a request id (whether the id is open is `request_slot`'s question).
pub(crate) fn slot_bits(request: u64) -> u32 {
    (request & ((1 << REQUEST_SLOT_BITS) - 1)) as u32
}

/// The next generation of a request slot: wraps within its bits and skips 0.
pub(crate) fn next_generation(generation: u32) -> u32 {
    match (generation + 1) & REQUEST_GENERATION_MASK {
        0 => 1,
        g => g,
    }
}

/// A tag per cache from a process-wide counter that skips 0.
pub(crate) fn next_cache_tag() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    loop {
        let tag = (NEXT.fetch_add(1, Ordering::Relaxed) + 1) as u16;
        if tag != 0 {
            return tag;
        }
    }
}

/// The (tag, generation, slot) parts of a request id.
pub(crate) fn parse(request: u64) -> (u16, u32, u32) {
    let generation = ((request >> REQUEST_SLOT_BITS) as u32) & REQUEST_GENERATION_MASK;
    let tag = (request >> (REQUEST_SLOT_BITS + REQUEST_GENERATION_BITS)) as u16;
    (tag, generation, slot_bits(request))
}
