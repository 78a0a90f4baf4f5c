//! A first look: one cache on the CPU backend, two adapters, a few requests that share
//! prefixes, and the stats that show the reuse.
//!
//! Run: cargo run --release --example quickstart
use libra::{Cache, CacheConfig, CacheOptions, PolicyKind};

fn main() -> Result<(), libra::Error> {
    let config = CacheConfig { block_tokens: 16, policy: PolicyKind::Elora, ..Default::default() };
    let cache = Cache::new(CacheOptions {
        config,
        block_bytes: 4096,
        gpu_blocks: 256,
        host_blocks: 512,
        ..Default::default()
    })?;
    cache.register_adapter(1, &vec![1u8; 3 * 4096], 16, 0)?;
    cache.register_adapter(2, &vec![2u8; 3 * 4096], 16, 0)?;

    let system: Vec<u32> = (0..64).collect();
    let mut now = 1_000;
    for (i, adapter) in [1u64, 1, 2, 1, 2].into_iter().enumerate() {
        let mut prompt = system.clone();
        prompt.extend((0..40).map(|t| 1_000 + (i as u32 % 2) * 100 + t));
        let m = cache.match_prefix(adapter, 0, &prompt, now)?;
        let fresh = cache.allocate(m.request, prompt.len() - m.cached_tokens, now)?;
        // The engine would run prefill into `fresh` here, then share the full blocks.
        let full = prompt.len() / 16 * 16;
        cache.commit(m.request, &prompt[m.cached_tokens..full], now)?;
        cache.release(m.request, now + 500)?;
        println!(
            "request {i}: adapter {adapter}, {} prompt tokens, {} cached, {} new blocks",
            prompt.len(),
            m.cached_tokens,
            fresh.len()
        );
        now += 1_000;
        cache.step(now, 1, false)?;
    }
    let s = cache.stats()?;
    println!(
        "hit tokens {} / miss tokens {}; GPU blocks {}/{}; adapters resident {}; invalid KV blocks {}",
        s.hit_tokens,
        s.miss_tokens,
        s.gpu_blocks_used,
        s.gpu_blocks_total,
        s.adapters_resident,
        s.invalid_kv_blocks
    );
    cache.check_invariants()?;
    Ok(())
}
