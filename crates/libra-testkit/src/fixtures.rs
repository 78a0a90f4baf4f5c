//! The bytes the cache checks write and expect, shared by the fuzz harness and the Rust tests
//! (of this crate and the simulator), so every check agrees on what a block, an adapter or a
//! prompt must hold.

/// Bytes of one block in the small tiers the checks use.
pub const BLOCK_BYTES: u64 = 32;

/// What a KV block with prefix key `key` holds: derived from the key, so a block holding
/// another prefix's bytes is caught.
pub fn pattern(key: u128) -> Vec<u8> {
    let b = key.to_le_bytes();
    (0..BLOCK_BYTES as usize).map(|i| b[i % 16] ^ (i as u8)).collect()
}

/// An adapter's registered weights.
pub fn weights(adapter: u64, len: usize) -> Vec<u8> {
    (0..len as u64).map(|i| (adapter.wrapping_mul(31).wrapping_add(i)) as u8).collect()
}

/// A prompt of `len` tokens: 8 tokens every family shares, then the family's own.
pub fn family_tokens(family: u32, len: usize) -> Vec<u32> {
    (0..len as u32).map(|i| if i < 8 { i } else { family * 100 + i }).collect()
}
