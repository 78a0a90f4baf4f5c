//! Block contents for the cache's unit tests: small tiers, and bytes derived from each block's
//! prefix key so that a block holding another prefix's bytes is caught.

/// Bytes of one block in the tests' small tiers.
pub const BLOCK_BYTES: u64 = 32;

/// What the KV block with prefix key `key` holds.
pub fn pattern(key: u128) -> Vec<u8> {
    let b = key.to_le_bytes();
    (0..BLOCK_BYTES as usize).map(|i| b[i % 16] ^ (i as u8)).collect()
}
