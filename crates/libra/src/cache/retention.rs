//! Retention hints: the engine says, for an open request, that its prefix will be wanted
//! again (an agent's tool call returns in seconds; a chat session is still open), either as
//! the time it expects the prefix back or as a priority and a duration, in the spirit of
//! TensorRT-LLM's `KvCacheRetentionConfig`. Until the hint expires, the request's KV blocks
//! leave their tier (GPU, then host) only after every unhinted candidate, lowest priority
//! first. A hint orders departures; it pins nothing, so it can never make an allocation fail.
//!
//! The opposite hint: the engine may say a request's own blocks will not be read again (a
//! session that was closed, a one-shot API call, an agent task that returned its answer), as
//! TensorRT-LLM's `secondary_offload_min_priority` keeps low-priority blocks out of host
//! memory. They leave first and are dropped rather than copied: no host link time and no wait
//! on the allocation path for a block nobody will load.
use super::core::CacheCore;
use super::tree::{Hint, Kind, NO_REUSE};
use crate::error::{Error, Result};

/// A retention hint as the engine gives it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetentionHint {
    /// Higher is kept longer among hinted blocks; finite and positive.
    pub priority: f64,
    /// How long the hint holds, microseconds: from `now`, or past `expect_back_us` when that
    /// is given.
    pub duration_us: u64,
    /// Engine time at which the engine expects the prefix back, or 0 when it does not know.
    pub expect_back_us: u64,
}

impl Default for RetentionHint {
    fn default() -> Self {
        RetentionHint { priority: 1.0, duration_us: 0, expect_back_us: 0 }
    }
}

/// Longest a hint may hold (about 12 days): a forgotten hint must not outlive the workload.
pub const MAX_HINT_US: u64 = 1 << 40;

impl RetentionHint {
    /// When the hint expires, given at engine time `now`; errors name the bad field.
    pub fn expiry(&self, now: u64) -> Result<u64> {
        if !self.priority.is_finite() || self.priority <= 0.0 {
            return Err(Error::invalid(format!(
                "`priority` must be a positive finite number, got {}",
                self.priority
            )));
        }
        if self.duration_us > MAX_HINT_US {
            return Err(Error::invalid(format!(
                "`duration_us` is {}; the limit is {MAX_HINT_US}",
                self.duration_us
            )));
        }
        let start = if self.expect_back_us == 0 {
            if self.duration_us == 0 {
                return Err(Error::invalid("`duration_us` must be positive when `expect_back_us` is 0"));
            }
            now
        } else {
            if self.expect_back_us <= now {
                return Err(Error::invalid(format!(
                    "`expect_back_us` ({}) is not after `now` ({now}): the expected return is in the past",
                    self.expect_back_us
                )));
            }
            if self.expect_back_us - now > MAX_HINT_US {
                return Err(Error::invalid(format!(
                    "`expect_back_us` is more than {MAX_HINT_US} us after `now`"
                )));
            }
            self.expect_back_us
        };
        Ok(start + self.duration_us)
    }
}

impl CacheCore {
    /// Attaches a retention hint to an open request: the KV blocks it holds now get it at
    /// once, and those it commits later get it at release (not at abort). A second call
    /// replaces the request's hint for later blocks; blocks already hinted keep the stronger
    /// of their hints. Nothing changes when the hint is refused.
    pub fn set_retention(&mut self, request: u64, hint: RetentionHint, now: u64) -> Result<()> {
        let now = self.clock(now);
        let slot = self.request_slot(request)?;
        let expires = hint.expiry(now)?;
        let h = Hint { priority: hint.priority, expires };
        self.req_mut(slot).retention = Some(h);
        let pinned = std::mem::take(&mut self.req_mut(slot).pinned);
        self.hint_nodes(&pinned, h);
        self.req_mut(slot).pinned = pinned;
        Ok(())
    }

    /// Says that once the open `request` ends, none of its own KV blocks past its first
    /// `keep_tokens` prompt tokens (a system prompt, few-shot template or tool list that other
    /// requests share) will be read again. At release (not at abort) those blocks are marked
    /// `NO_REUSE`, from the deepest up, stopping at the first block another open request
    /// holds, that has another branch below it, or that holds a retention hint. A marked block
    /// leaves its tier before every other candidate and without a host copy; a later match that
    /// reads it takes the mark away. Marking never frees a block by itself.
    pub fn expect_no_reuse(&mut self, request: u64, keep_tokens: u32, now: u64) -> Result<()> {
        self.clock(now);
        let slot = self.request_slot(request)?;
        self.req_mut(slot).no_reuse_after = Some(keep_tokens);
        Ok(())
    }

    /// Marks the request's own chain `NO_REUSE` at release (see `expect_no_reuse`); `pinned`
    /// is its pin list (the adapter, then its KV path in order), still pinned.
    pub(crate) fn mark_no_reuse(&mut self, pinned: &[u32], keep_tokens: u32) {
        if self.cfg.policy.uncoupled() {
            return;
        }
        let kept = (keep_tokens as usize).div_ceil(self.block_tokens());
        let first_kv =
            pinned.iter().position(|&n| self.tree.node(n).kind == Kind::Kv).unwrap_or(pinned.len());
        let own = &pinned[(first_kv + kept).min(pinned.len())..];
        // A mark does not expire: it goes when the block is read again or leaves the cache, so
        // the plans and the drop-or-copy choice (`unwanted`) always agree on it.
        let mark = Hint { priority: NO_REUSE, expires: u64::MAX };
        // The deepest block may have no child at all; above it, only the one just marked.
        let mut children_allowed = 0;
        for &n in own.iter().rev() {
            let node = self.tree.node(n);
            if node.kind != Kind::Kv || node.pins > 1 || node.children != children_allowed || node.hinted {
                break;
            }
            self.tree.set_hint(n, mark);
            children_allowed = 1;
        }
    }

    /// Whether KV node `n` goes without a host copy when it leaves the GPU: it is marked
    /// `NO_REUSE` and nothing hangs below it.
    pub(crate) fn unwanted(&self, n: u32) -> bool {
        let node = self.tree.node(n);
        node.children == 0 && self.tree.is_no_reuse(n)
    }

    /// Gives every KV node among `nodes` the hint. The `vllm` baseline evicts by LRU inside
    /// its KV region alone and takes no hints.
    pub(crate) fn hint_nodes(&mut self, nodes: &[u32], h: Hint) {
        if self.cfg.policy.uncoupled() {
            return;
        }
        for &n in nodes {
            if self.tree.node(n).kind == Kind::Kv {
                self.tree.set_hint(n, h);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::cache::tree::Residency;
    use crate::cache::{CacheConfig, PolicyKind};

    const POLICIES: [PolicyKind; 3] = [PolicyKind::Lru, PolicyKind::Elora, PolicyKind::Libra];

    /// One token per block, 8 bytes each; adapter 1 takes one block.
    fn core_with(policy: PolicyKind, gpu_blocks: u32) -> (CacheCore, CpuBackend) {
        let cfg = CacheConfig { block_tokens: 1, policy, write_through_blocks: 0, ..Default::default() };
        let io = CpuBackend::new(8, gpu_blocks, 64).unwrap();
        let mut core = CacheCore::new(cfg, 8, gpu_blocks, 64).unwrap();
        core.register_adapter(1, &[0u8; 8], 4, 0).unwrap();
        (core, io)
    }

    /// Matches, fills and commits `toks`; returns the open request.
    fn open(core: &mut CacheCore, io: &mut CpuBackend, toks: &[u32], now: u64) -> u64 {
        let m = core.match_prefix(io, 1, 0, toks, now).unwrap();
        core.allocate(io, m.request, toks.len() - m.cached_tokens, now).unwrap();
        core.commit(m.request, &toks[m.cached_tokens..], now).unwrap();
        m.request
    }

    /// Serves `toks` as a request the engine says is finished for good past `keep` tokens.
    fn serve_final(core: &mut CacheCore, io: &mut CpuBackend, toks: &[u32], keep: u32, now: u64) {
        let r = open(core, io, toks, now);
        core.expect_no_reuse(r, keep, now).unwrap();
        core.release(io, r, now).unwrap();
    }

    fn residency(core: &CacheCore, toks: &[u32]) -> Vec<Option<Residency>> {
        core.prefix_keys(1, 0, toks)
            .iter()
            .map(|&k| core.tree.lookup(k).map(|n| core.tree.node(n).residency))
            .collect()
    }

    /// Two conversations under a shared two-token prompt; the newer one ends for good. When
    /// room is needed its own blocks leave first, ahead of the older conversation's, and are
    /// dropped although the host tier has room; the shared prompt stays.
    #[test]
    fn blocks_nobody_reads_again_leave_first_without_a_copy() {
        for policy in POLICIES {
            let (mut core, mut io) = core_with(policy, 12);
            let (older, newer) = ([1, 2, 20, 21, 22], [1, 2, 10, 11, 12]);
            let r = open(&mut core, &mut io, &older, 1_000);
            core.release(&mut io, r, 1_000).unwrap();
            let r = open(&mut core, &mut io, &newer, 2_000);
            core.expect_no_reuse(r, 2, 2_000).unwrap();
            assert_eq!(core.stats().no_reuse_blocks, 0, "{policy:?}: marked at release");
            core.release(&mut io, r, 2_000).unwrap();
            let st = core.stats();
            assert_eq!((st.no_reuse_blocks, st.hinted_blocks), (3, 0), "{policy:?}");
            let own: Vec<u32> = core.prefix_keys(1, 0, &newer)[2..]
                .iter()
                .rev()
                .map(|&k| core.tree.lookup(k).unwrap())
                .collect();
            assert_eq!(
                core.plan_swap_out(3, 3_000),
                own,
                "{policy:?}: deepest first, ahead of the older chain"
            );
            // 1 adapter + 8 KV blocks used, 3 free: six more make three leave.
            let m = core.match_prefix(&mut io, 1, 0, &[50, 51, 52, 53, 54, 55], 3_000).unwrap();
            core.allocate(&mut io, m.request, 6, 3_000).unwrap();
            let st = core.stats();
            assert_eq!((st.dropped_blocks, st.swap_out_blocks, st.no_reuse_blocks), (3, 0, 0), "{policy:?}");
            assert_eq!(
                residency(&core, &newer),
                [Some(Residency::Gpu), Some(Residency::Gpu), None, None, None]
            );
            assert!(residency(&core, &older).iter().all(|r| *r == Some(Residency::Gpu)), "{policy:?}");
            core.abort(&mut io, m.request, 3_000).unwrap();
            core.check_invariants().unwrap();
        }
    }

    /// A mark never expires, so it never merges with a real hint: a mark leaves a real hint as
    /// it is (which still expires), and a real hint replaces a mark.
    #[test]
    fn marks_and_real_hints_do_not_merge() {
        let (mut core, mut io) = core_with(PolicyKind::Libra, 16);
        let r = open(&mut core, &mut io, &[1, 2], 10);
        core.release(&mut io, r, 10).unwrap();
        let [a, b] = [&[1u32][..], &[1, 2]]
            .map(|t| core.tree.lookup(*core.prefix_keys(1, 0, t).last().unwrap()).unwrap());
        let real = Hint { priority: 2.0, expires: 100 };
        let mark = Hint { priority: NO_REUSE, expires: u64::MAX };
        core.tree.set_hint(a, real);
        core.tree.set_hint(a, mark);
        assert_eq!(core.tree.hint(a), Some(real));
        core.tree.set_hint(b, mark);
        assert_eq!((core.tree.no_reuse_nodes(), core.tree.hinted_nodes()), (1, 1));
        core.tree.set_hint(b, real);
        assert_eq!(core.tree.hint(b), Some(real));
        assert_eq!((core.tree.no_reuse_nodes(), core.tree.hinted_nodes()), (0, 2));
        assert_eq!(core.tree.expire_hints(100), 2, "both still expire");
        core.check_invariants().unwrap();
    }

    /// The mark stops at what others use: a block another open request holds, a block with a
    /// second branch below it, the tokens the engine keeps, a hinted block; an aborted request
    /// marks nothing; a match that reads a marked block takes the mark away.
    #[test]
    fn only_the_requests_own_chain_is_marked() {
        for policy in POLICIES {
            let (mut core, mut io) = core_with(policy, 64);
            // Two branches below [1, 2]; the mark (keep 0) stops above the branch point.
            let r = open(&mut core, &mut io, &[1, 2, 3, 4], 10);
            core.release(&mut io, r, 10).unwrap();
            serve_final(&mut core, &mut io, &[1, 2, 5, 6], 0, 20);
            assert_eq!(core.stats().no_reuse_blocks, 2, "{policy:?}: blocks 5 and 6 only");
            // Another open request holds [7, 8]: only 9 is marked.
            let holder = open(&mut core, &mut io, &[7, 8], 30);
            serve_final(&mut core, &mut io, &[7, 8, 9], 0, 30);
            assert_eq!(core.stats().no_reuse_blocks, 3, "{policy:?}");
            core.release(&mut io, holder, 30).unwrap();
            // Keep 2 of 4 tokens: two marked.
            serve_final(&mut core, &mut io, &[11, 12, 13, 14], 2, 40);
            assert_eq!(core.stats().no_reuse_blocks, 5, "{policy:?}");
            // A hinted chain keeps its hint.
            let r = open(&mut core, &mut io, &[21, 22], 50);
            let hint = RetentionHint { priority: 1.0, duration_us: 1_000_000, expect_back_us: 0 };
            core.set_retention(r, hint, 50).unwrap();
            core.expect_no_reuse(r, 0, 50).unwrap();
            core.release(&mut io, r, 50).unwrap();
            assert_eq!((core.stats().no_reuse_blocks, core.stats().hinted_blocks), (5, 2), "{policy:?}");
            // Aborted: nothing marked.
            let r = open(&mut core, &mut io, &[31, 32], 60);
            core.expect_no_reuse(r, 0, 60).unwrap();
            core.abort(&mut io, r, 60).unwrap();
            assert_eq!(core.stats().no_reuse_blocks, 5, "{policy:?}");
            // Read again: [11, 12, 13] is matched, so 13 loses its mark and 14 keeps it.
            let m = core.match_prefix(&mut io, 1, 0, &[11, 12, 13], 70).unwrap();
            assert_eq!(m.cached_tokens, 3);
            assert_eq!(core.stats().no_reuse_blocks, 4, "{policy:?}");
            core.release(&mut io, m.request, 70).unwrap();
            core.check_invariants().unwrap();
            assert!(core.expect_no_reuse(m.request, 0, 80).is_err(), "released");
        }
    }

    #[test]
    fn bad_hints_name_the_field() {
        let h =
            |priority, duration_us, expect_back_us| RetentionHint { priority, duration_us, expect_back_us };
        for (hint, field) in [
            (h(f64::NAN, 10, 0), "`priority`"),
            (h(f64::INFINITY, 10, 0), "`priority`"),
            (h(0.0, 10, 0), "`priority`"),
            (h(-1.0, 10, 0), "`priority`"),
            (h(1.0, 0, 0), "`duration_us`"),
            (h(1.0, MAX_HINT_US + 1, 0), "`duration_us`"),
            (h(1.0, 10, 100), "`expect_back_us`"),
            (h(1.0, 10, 99), "`expect_back_us`"),
            (h(1.0, 0, 100 + MAX_HINT_US + 1), "`expect_back_us`"),
        ] {
            let e = hint.expiry(100).unwrap_err();
            assert_eq!(e.status, crate::error::Status::LIBRA_ERR_INVALID_ARGUMENT);
            assert!(e.message.contains(field), "{hint:?}: {}", e.message);
        }
        assert_eq!(h(2.0, 50, 0).expiry(100).unwrap(), 150);
        assert_eq!(h(2.0, 50, 1_000).expiry(100).unwrap(), 1_050);
        assert_eq!(h(2.0, 0, 1_000).expiry(100).unwrap(), 1_000);
    }
}
