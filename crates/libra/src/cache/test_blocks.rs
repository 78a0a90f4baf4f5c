//! Block contents for the cache's unit tests: small tiers, and bytes derived from each block's
//! prefix key so that a block holding another prefix's bytes is caught.

/// Bytes of one block in the tests' small tiers.
pub const BLOCK_BYTES: u64 = 32;

/// What the KV block with prefix key `key` holds.
pub fn pattern(key: u128) -> Vec<u8> {
    let b = key.to_le_bytes();
    (0..BLOCK_BYTES as usize).map(|i| b[i % 16] ^ (i as u8)).collect()
}

/// A cache of `policy` with one token per block and `blocks` 8-byte blocks on each tier,
/// adapter 1 (one block) registered, and its CPU backend.
pub fn small_core(
    policy: crate::cache::PolicyKind,
    blocks: u32,
) -> (crate::cache::CacheCore, crate::backend::cpu::CpuBackend) {
    let cfg = crate::cache::CacheConfig { block_tokens: 1, policy, ..Default::default() };
    let io = crate::backend::cpu::CpuBackend::new(8, blocks, blocks).unwrap();
    let mut core = crate::cache::CacheCore::new(cfg, 8, blocks, blocks).unwrap();
    core.register_adapter(1, &[0u8; 8], 4, 0).unwrap();
    (core, io)
}
