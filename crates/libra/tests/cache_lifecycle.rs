//! The request lifecycle through the Rust API on the CPU backend.
use libra::{Cache, CacheConfig, CacheOptions, PolicyKind, Readiness, Status};

fn cache(policy: PolicyKind, gpu_blocks: u32, host_blocks: u32) -> Cache {
    let config = CacheConfig { block_tokens: 4, policy, events: true, ..Default::default() };
    Cache::new(CacheOptions { config, block_bytes: 64, gpu_blocks, host_blocks, ..Default::default() })
        .unwrap()
}

fn toks(seed: u32, n: usize) -> Vec<u32> {
    (0..n as u32).map(|i| seed * 1000 + i).collect()
}

#[test]
fn prefix_is_reused_per_adapter_and_namespace() {
    let c = cache(PolicyKind::Elora, 64, 64);
    c.register_adapter(7, &[1u8; 100], 8, 0).unwrap();
    c.register_adapter(8, &[2u8; 100], 8, 0).unwrap();
    let prompt = toks(1, 10);
    let m = c.match_prefix(7, 0, &prompt, 1).unwrap();
    assert_eq!(m.cached_tokens, 0);
    assert_eq!(m.adapter_blocks.len(), 2, "100 bytes in 64-byte blocks");
    let blocks = c.allocate(m.request, 10, 1).unwrap();
    assert_eq!(blocks.len(), 3);
    assert_eq!(c.commit(m.request, &prompt[..8], 2).unwrap(), 2);
    assert_eq!(c.commit(m.request, &prompt[..3], 2).unwrap_err().status, Status::LIBRA_ERR_INVALID_ARGUMENT);
    c.release(m.request, 3).unwrap();
    assert_eq!(c.release(m.request, 3).unwrap_err().status, Status::LIBRA_ERR_NOT_FOUND, "double release");

    let again = c.match_prefix(7, 0, &prompt, 4).unwrap();
    assert_eq!(again.cached_tokens, 8);
    assert_eq!(again.kv_blocks, blocks[..2].to_vec());
    assert!(again.ready);
    let other_adapter = c.match_prefix(8, 0, &prompt, 4).unwrap();
    assert_eq!(other_adapter.cached_tokens, 0, "another adapter never sees this KV");
    let other_tenant = c.match_prefix(7, 99, &prompt, 4).unwrap();
    assert_eq!(other_tenant.cached_tokens, 0, "another namespace never sees this KV");
    let diverging = c.match_prefix(7, 0, &[prompt[..4].to_vec(), vec![5, 5, 5, 5]].concat(), 4).unwrap();
    assert_eq!(diverging.cached_tokens, 4);
    for r in [again.request, other_adapter.request, other_tenant.request, diverging.request] {
        c.release(r, 5).unwrap();
    }
    c.check_invariants().unwrap();
    let s = c.stats().unwrap();
    assert_eq!(s.open_requests, 0);
    assert_eq!(s.kv_nodes_gpu, 2);
    assert_eq!(s.invalid_kv_blocks, 0);
    assert!(s.hit_tokens >= 12);
}

#[test]
fn full_pool_evicts_lru_and_all_pinned_is_out_of_memory() {
    // 2 adapter blocks + 6 KV blocks, no host tier.
    let c = cache(PolicyKind::Lru, 8, 0);
    c.register_adapter(1, &[0u8; 128], 4, 0).unwrap();
    let a = c.match_prefix(1, 0, &toks(1, 12), 1).unwrap();
    c.allocate(a.request, 12, 1).unwrap();
    c.commit(a.request, &toks(1, 12), 1).unwrap();
    c.release(a.request, 2).unwrap();
    let b = c.match_prefix(1, 0, &toks(2, 12), 3).unwrap();
    c.allocate(b.request, 12, 3).unwrap();
    c.commit(b.request, &toks(2, 12), 3).unwrap();
    // Pool full: 2 adapter + 6 KV. Request b is still open (pinned); a's blocks are evictable.
    let d = c.match_prefix(1, 0, &toks(3, 12), 4).unwrap();
    let got = c.allocate(d.request, 12, 4).unwrap();
    assert_eq!(got.len(), 3);
    assert_eq!(c.stats().unwrap().dropped_blocks, 3);
    c.check_invariants().unwrap();
    // Everything left is pinned by b or d.
    let before = c.stats().unwrap();
    let err = c.allocate(d.request, 4, 5).unwrap_err();
    assert_eq!(err.status, Status::LIBRA_ERR_OUT_OF_MEMORY);
    assert_eq!(c.stats().unwrap(), before, "a failed allocation changes nothing");
    c.abort(d.request, 6).unwrap();
    c.release(b.request, 6).unwrap();
    c.check_invariants().unwrap();
}

#[test]
fn swap_out_and_back_keeps_data() {
    let c = cache(PolicyKind::Elora, 8, 16);
    c.register_adapter(1, &[9u8; 64], 4, 0).unwrap();
    let prompt = toks(4, 24);
    let m = c.match_prefix(1, 0, &prompt, 10).unwrap();
    let blocks = c.allocate(m.request, 24, 10).unwrap();
    // Write a recognisable pattern into each block before committing it.
    c.with_backend_mut(|io| {
        for (i, &b) in blocks.iter().enumerate() {
            io.write_gpu_block(b, &[i as u8 + 1; 64]).unwrap();
        }
    })
    .unwrap();
    c.commit(m.request, &prompt, 11).unwrap();
    c.release(m.request, 12).unwrap();
    // 7 of 8 blocks used: above the 0.8 watermark, so step swaps out down to 0.7 (5 blocks).
    let r = c.step(2_000_000, 1, true).unwrap();
    assert!(r.swapped_out >= 1, "{r:?}");
    c.step(2_000_001, 1, true).unwrap();
    let s = c.stats().unwrap();
    assert!(s.kv_nodes_host >= 1 && s.swap_out_blocks >= 1, "{s:?}");
    c.check_invariants().unwrap();
    // Match again: host blocks come back; data identical.
    let back = c.match_prefix(1, 0, &prompt, 3_000_000).unwrap();
    assert_eq!(back.cached_tokens, 24);
    assert_eq!(c.wait(back.request, 1000).unwrap(), Readiness::Ready);
    c.with_backend_mut(|io| {
        for (i, &b) in back.kv_blocks.iter().enumerate() {
            let mut buf = [0u8; 64];
            io.read_gpu_block(b, &mut buf).unwrap();
            assert_eq!(buf, [i as u8 + 1; 64], "block {i} survived the round trip");
        }
    })
    .unwrap();
    c.release(back.request, 3_000_001).unwrap();
    c.check_invariants().unwrap();
    let events = c.drain_events(1000).unwrap();
    assert!(events.iter().any(|e| e.kind == libra::cache::EventKind::ToHost));
    assert!(events.iter().any(|e| e.kind == libra::cache::EventKind::ToGpu));
}

#[test]
fn vllm_leaves_invalid_kv_and_slora_keeps_none() {
    // vLLM: adapter region of 2 blocks holds one adapter at a time.
    let c = cache(PolicyKind::Vllm, 10, 0);
    c.register_adapter(1, &[0u8; 128], 4, 0).unwrap();
    c.register_adapter(2, &[0u8; 128], 4, 0).unwrap();
    let m = c.match_prefix(1, 0, &toks(1, 8), 1).unwrap();
    c.allocate(m.request, 8, 1).unwrap();
    c.commit(m.request, &toks(1, 8), 1).unwrap();
    c.release(m.request, 2).unwrap();
    let n = c.match_prefix(2, 0, &toks(2, 8), 3).unwrap();
    c.release(n.request, 4).unwrap();
    let s = c.stats().unwrap();
    assert_eq!(s.invalid_kv_blocks, 2, "adapter 1 left, its 2 KV blocks stayed: {s:?}");
    c.check_invariants().unwrap();

    let c = cache(PolicyKind::Slora, 10, 0);
    c.register_adapter(1, &[0u8; 64], 4, 0).unwrap();
    let m = c.match_prefix(1, 0, &toks(1, 8), 1).unwrap();
    c.allocate(m.request, 8, 1).unwrap();
    c.commit(m.request, &toks(1, 8), 1).unwrap();
    c.release(m.request, 2).unwrap();
    assert_eq!(c.match_prefix(1, 0, &toks(1, 8), 3).unwrap().cached_tokens, 0);
    assert_eq!(c.stats().unwrap().kv_nodes_gpu, 0);
}

#[test]
fn bad_input_is_refused_without_change() {
    let c = cache(PolicyKind::Elora, 8, 8);
    assert_eq!(c.match_prefix(5, 0, &[1, 2], 0).unwrap_err().status, Status::LIBRA_ERR_NOT_FOUND);
    assert_eq!(c.register_adapter(1, &[], 4, 0).unwrap_err().status, Status::LIBRA_ERR_INVALID_ARGUMENT);
    c.register_adapter(1, &[0; 8], 4, 0).unwrap();
    assert_eq!(c.register_adapter(1, &[0; 8], 4, 0).unwrap_err().status, Status::LIBRA_ERR_ALREADY_EXISTS);
    assert_eq!(
        c.register_adapter(2, &vec![0; 64 * 9], 4, 0).unwrap_err().status,
        Status::LIBRA_ERR_INVALID_ARGUMENT,
        "larger than the pool"
    );
    assert_eq!(c.allocate(12345, 4, 0).unwrap_err().status, Status::LIBRA_ERR_NOT_FOUND);
    let m = c.match_prefix(1, 0, &[1, 2, 3], 0).unwrap();
    assert_eq!(c.unregister_adapter(1).unwrap_err().status, Status::LIBRA_ERR_BUSY);
    c.release(m.request, 0).unwrap();
    c.unregister_adapter(1).unwrap();
    assert_eq!(c.stats().unwrap().gpu_blocks_used, 0);
    c.check_invariants().unwrap();
}

/// Long prompts span several groups of the match walk: a prompt that follows a cached chain
/// for any number of blocks, then leaves it (or ends, with or without a partial block), is
/// matched exactly that far, with that chain's blocks; a chain cached under another branch
/// point is not followed.
#[test]
fn long_prompts_match_exactly_as_far_as_cached() {
    for policy in [PolicyKind::Lru, PolicyKind::Elora] {
        let config = CacheConfig { block_tokens: 2, policy, ..Default::default() };
        let c = Cache::new(CacheOptions { config, block_bytes: 16, gpu_blocks: 600, ..Default::default() })
            .unwrap();
        c.register_adapter(1, &[1u8; 16], 8, 0).unwrap();
        let put = |prompt: &[u32], now: u64| -> Vec<u32> {
            let m = c.match_prefix(1, 0, prompt, now).unwrap();
            let rest = prompt.len() - m.cached_tokens;
            let fresh = c.allocate(m.request, rest, now).unwrap();
            c.commit(m.request, &prompt[m.cached_tokens..], now).unwrap();
            c.release(m.request, now).unwrap();
            [m.kv_blocks, fresh].concat()
        };
        // A 70-block chain, and a branch that leaves it after 33 blocks for 20 blocks.
        let base = toks(1, 140);
        let base_blocks = put(&base, 1);
        let branch = [&base[..66], &toks(2, 40)[..]].concat();
        let branch_blocks = put(&branch, 2);
        assert_eq!(branch_blocks[..33], base_blocks[..33]);
        let mut now = 3;
        for cut in 0..=72usize {
            for extra in [0usize, 1, 5, 17, 40] {
                for odd in [0usize, 1] {
                    // Follow the base chain for `cut` blocks, then leave it.
                    let follow = (2 * cut).min(base.len());
                    let len = follow + 2 * extra + odd;
                    let prompt: Vec<u32> =
                        (0..len).map(|i| if i < follow { base[i] } else { 900_000 + i as u32 }).collect();
                    let m = c.match_prefix(1, 0, &prompt, now).unwrap();
                    let want = cut.min(70);
                    assert_eq!(m.cached_tokens, 2 * want, "{policy:?} cut {cut} extra {extra} odd {odd}");
                    assert_eq!(m.kv_blocks, base_blocks[..want]);
                    c.release(m.request, now).unwrap();
                    now += 1;
                }
            }
            // The branch's tokens after the base's first `cut` blocks: only the shared part and,
            // past block 33, the branch itself are cached.
            let mixed = [&base[..(2 * cut).min(140)], &branch[(2 * cut).min(branch.len())..]].concat();
            let m = c.match_prefix(1, 0, &mixed, now).unwrap();
            let want = if cut <= 33 { branch.len() / 2 } else { cut.min(70) };
            assert_eq!(m.cached_tokens, 2 * want, "{policy:?} mixed at {cut}");
            c.release(m.request, now).unwrap();
            now += 1;
        }
        c.check_invariants().unwrap();
    }
}
