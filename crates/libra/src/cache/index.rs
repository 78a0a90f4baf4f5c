//! The prefix index: node ids by key, in an open-addressing table with linear probing.
//!
//! Each slot holds the node id and the high 32 bits of its hash (a tag), 8 bytes in all. The
//! top bits of the tag are the slot's home position, so an entry can move (deletion shifts
//! later entries back instead of leaving tombstones) without touching its node, and a probe
//! rejects almost every foreign entry without touching its node either. Slots are plain
//! memory, so a match can prefetch the home slots of all its keys before probing them.
//!
//! The hash is a node key's low 64 bits: keys are keyed SipHash outputs, already uniform.
use super::ids::NONE;

#[derive(Debug, Clone, Copy)]
struct Slot {
    tag: u32,
    /// `NONE` for an empty slot.
    id: u32,
}

const EMPTY: Slot = Slot { tag: 0, id: NONE };
const MIN_SLOTS: usize = 16;

pub struct PrefixIndex {
    slots: Vec<Slot>,
    len: usize,
    /// log2 of the slot count (at most 32, so that a tag holds a whole position).
    bits: u32,
}

/// What `find_entry` returns when the key is not indexed.
#[derive(Debug)]
pub struct Absent;

/// An entry found by `find_entry`, to be removed.
pub struct Occupied<'a> {
    index: &'a mut PrefixIndex,
    pos: usize,
}

impl Occupied<'_> {
    /// Removes the entry, shifting back the entries after it that probed past it (so every
    /// entry stays reachable from its home slot without tombstones).
    pub fn remove(self) -> u32 {
        let ix = self.index;
        let mask = ix.mask();
        let id = ix.slots[self.pos].id;
        let mut hole = self.pos;
        let mut j = self.pos;
        loop {
            j = (j + 1) & mask;
            let s = ix.slots[j];
            if s.id == NONE {
                break;
            }
            // The entry moves into the hole unless its home lies cyclically in (hole, j],
            // that is, unless it is nearer its home than the hole is. Without branches: the
            // outcome is unpredictable.
            let from_home = j.wrapping_sub(ix.home(s.tag)) & mask;
            let from_hole = j.wrapping_sub(hole) & mask;
            let moves = from_home >= from_hole;
            let target = if moves { hole } else { j };
            ix.slots[target] = s;
            hole = if moves { j } else { hole };
        }
        ix.slots[hole] = EMPTY;
        ix.len -= 1;
        id
    }
}

#[inline(always)]
fn tag_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// Asks for the cache line holding `p` without waiting for it.
#[inline(always)]
pub fn prefetch<T>(p: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch is only a hint: it never faults and reads nothing into the program,
    // whatever the address. SSE is part of the x86_64 baseline.
    #[allow(unused_unsafe)]
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}

impl PrefixIndex {
    pub fn new() -> Self {
        PrefixIndex { slots: vec![EMPTY; MIN_SLOTS], len: 0, bits: MIN_SLOTS.trailing_zeros() }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes of one slot.
    pub const SLOT_BYTES: usize = std::mem::size_of::<Slot>();

    /// Slots in the table, used or not.
    pub fn slot_count(&self) -> usize {
        self.slots.len()
    }

    #[inline(always)]
    fn mask(&self) -> usize {
        self.slots.len() - 1
    }

    #[inline(always)]
    fn home(&self, tag: u32) -> usize {
        (tag as u64 >> (32 - self.bits)) as usize
    }

    /// Prefetches the home slot of `hash`.
    #[inline(always)]
    pub fn prefetch(&self, hash: u64) {
        prefetch(self.slots.as_ptr().wrapping_add(self.home(tag_of(hash))));
    }

    /// The first id on the probe path of `hash` whose tag matches, or `NONE` when the path
    /// ends first: the key's node if it is indexed, almost always (the caller confirms with
    /// the node's key and falls back to `find`). Touches no node.
    #[inline]
    pub fn first_tag_match(&self, hash: u64) -> u32 {
        let tag = tag_of(hash);
        let mask = self.mask();
        let mut pos = self.home(tag);
        loop {
            let s = self.slots[pos];
            if s.id == NONE || s.tag == tag {
                return s.id;
            }
            pos = (pos + 1) & mask;
        }
    }

    fn find_pos(&self, hash: u64, mut eq: impl FnMut(&u32) -> bool) -> Option<usize> {
        let tag = tag_of(hash);
        let mask = self.mask();
        let mut pos = self.home(tag);
        loop {
            let s = &self.slots[pos];
            if s.id == NONE {
                return None;
            }
            if s.tag == tag && eq(&s.id) {
                return Some(pos);
            }
            pos = (pos + 1) & mask;
        }
    }

    /// The id on the probe path of `hash` for which `eq` holds.
    #[inline]
    pub fn find(&self, hash: u64, eq: impl FnMut(&u32) -> bool) -> Option<&u32> {
        self.find_pos(hash, eq).map(|p| &self.slots[p].id)
    }

    /// Like `find`, for removal.
    pub fn find_entry(&mut self, hash: u64, eq: impl FnMut(&u32) -> bool) -> Result<Occupied<'_>, Absent> {
        match self.find_pos(hash, eq) {
            Some(pos) => Ok(Occupied { index: self, pos }),
            None => Err(Absent),
        }
    }

    /// Inserts `id`, whose key is not indexed yet. `hasher` gives the hash of an indexed id
    /// (the table rereads them only to grow).
    pub fn insert_unique(&mut self, hash: u64, id: u32, hasher: impl Fn(&u32) -> u64) {
        debug_assert!(id != NONE);
        // At most 7/8 full: linear probes stay short.
        if (self.len + 1) * 8 > self.slots.len() * 7 {
            self.grow(&hasher);
        }
        self.place(Slot { tag: tag_of(hash), id });
        self.len += 1;
    }

    fn place(&mut self, s: Slot) {
        let mask = self.mask();
        let mut pos = self.home(s.tag);
        while self.slots[pos].id != NONE {
            pos = (pos + 1) & mask;
        }
        self.slots[pos] = s;
    }

    fn grow(&mut self, hasher: &impl Fn(&u32) -> u64) {
        assert!(self.bits < 32, "prefix index full");
        let doubled = vec![EMPTY; self.slots.len() * 2];
        let old = std::mem::replace(&mut self.slots, doubled);
        self.bits += 1;
        for s in old.into_iter().filter(|s| s.id != NONE) {
            // The tag keeps the hash's high bits, so rehashing needs no node; the hasher
            // is consulted only to check that.
            debug_assert_eq!(tag_of(hasher(&s.id)), s.tag);
            self.place(s);
        }
    }
}

impl Default for PrefixIndex {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// Random inserts and removals against a HashMap: uniform hashes; hashes crowded into 16
    /// homes (long probe runs, many shared tags); hashes whose homes are the last slots, so
    /// that runs wrap around the end and deletions shift entries back across it.
    #[test]
    fn matches_a_hash_map_under_churn() {
        let shapes: [fn(u64) -> u64; 3] =
            [|h| h, |h| h & !(((1u64 << 24) - 1) << 36), |h| h | ((1u64 << 22) - 1) << 42];
        for (shape, crowd) in shapes.iter().enumerate() {
            let mut ix = PrefixIndex::new();
            let mut keys: HashMap<u32, u64> = HashMap::new();
            let mut x = 0x2545_f491_4f6c_dd1du64 + shape as u64;
            let mut next_id = 0u32;
            for step in 0..8_000u32 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let hash = crowd(x);
                if x % 5 < 3 || keys.is_empty() {
                    if keys.values().all(|&h| h != hash) {
                        let id = next_id;
                        next_id += 1;
                        keys.insert(id, hash);
                        ix.insert_unique(hash, id, |i| keys[i]);
                    }
                } else {
                    let (&id, &h) = keys.iter().nth((x >> 40) as usize % keys.len()).unwrap();
                    let entry = ix.find_entry(h, |&i| i == id).expect("indexed");
                    assert_eq!(entry.remove(), id);
                    keys.remove(&id);
                }
                if step % 499 == 0 || step == 7_999 {
                    assert_eq!(ix.len(), keys.len());
                    for (&id, &h) in &keys {
                        assert_eq!(ix.find(h, |&i| i == id), Some(&id), "shape {shape} step {step}");
                        let first = ix.first_tag_match(h);
                        assert!(first != NONE && tag_of(keys[&first]) == tag_of(h));
                    }
                    assert_eq!(ix.find(x.rotate_left(7), |_| false), None);
                }
            }
            if shape == 2 {
                assert!(ix.slots[0].id != NONE, "a probe run wraps around the end");
            }
        }
    }
}
