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

/// Allocates blocks for `toks` past the `cached` tokens request `request` matched (under
/// adapter 1, namespace 0), fills each with its pattern and commits them.
pub fn fill_and_commit(
    core: &mut crate::cache::CacheCore,
    io: &mut crate::backend::cpu::CpuBackend,
    request: u64,
    toks: &[u32],
    cached: usize,
    now: u64,
) {
    use crate::backend::Backend;
    let rest = &toks[cached..];
    let blocks = core.allocate(io, request, rest.len(), now).unwrap();
    let keys = core.prefix_keys(1, 0, toks);
    for (i, &b) in blocks.iter().enumerate() {
        io.write_gpu_block(b, &pattern(keys[cached + i])).unwrap();
    }
    core.commit(request, rest, now).unwrap();
}
