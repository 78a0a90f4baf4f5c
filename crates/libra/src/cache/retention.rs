//! Retention hints: the engine says, for an open request, that its prefix will be wanted
//! again (an agent's tool call returns in seconds; a chat session is still open), either as
//! the time it expects the prefix back or as a priority and a duration, in the spirit of
//! TensorRT-LLM's `KvCacheRetentionConfig`. Until the hint expires, the request's KV blocks
//! leave their tier (GPU, then host) only after every unhinted candidate, lowest priority
//! first. A hint orders departures; it pins nothing, so it can never make an allocation fail.
use super::core::CacheCore;
use super::tree::{Hint, Kind};
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
