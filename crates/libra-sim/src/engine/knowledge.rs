//! What the engine knows of the requests to come: the retention hints a real engine can give
//! when a turn ends, and, for the oracle only, the whole future (which requests read each
//! prefix block and adapter).
use super::adapter_id;
use crate::oracle::NextUse;
use crate::workload::{Request, Workload, WorkloadSpec};
use libra::cache::{CacheCore, RetentionHint};
use std::collections::{HashMap, HashSet};

/// Future knowledge for the oracle: which requests read each prefix block and adapter.
pub(super) struct Future {
    kv: HashMap<u128, Vec<u32>>,
    adapter: Vec<Vec<u32>>,
    arrival: Vec<u64>,
    /// Requests before this index have all been admitted (or are being served).
    pub(super) cursor: u32,
    /// Whether "never used again" is told apart; without it, never reads as the latest time
    /// short of never (see `SimPolicy::OracleCopies`).
    knows_never: bool,
}

impl Future {
    /// Every request's prefix blocks and adapter, under `core`'s prefix keys; `knows_never`:
    /// whether a block never used again is told apart from one used late.
    pub(super) fn of(wl: &Workload, spec: &WorkloadSpec, core: &CacheCore, knows_never: bool) -> Self {
        let reqs = &wl.requests;
        let mut kv: HashMap<u128, Vec<u32>> = HashMap::new();
        let mut adapter = vec![Vec::new(); spec.adapters.max(1) as usize];
        for (i, r) in reqs.iter().enumerate() {
            let toks = &wl.tokens(r)[..r.prompt as usize];
            for k in core.prefix_keys(adapter_id(r.adapter), 0, toks) {
                kv.entry(k).or_default().push(i as u32);
            }
            adapter[r.adapter as usize].push(i as u32);
        }
        Future { kv, adapter, arrival: reqs.iter().map(|r| r.arrival_us).collect(), cursor: 0, knows_never }
    }

    fn next(&self, list: &[u32]) -> u64 {
        let i = list.partition_point(|&r| r < self.cursor);
        let never = if self.knows_never { u64::MAX } else { u64::MAX - 1 };
        list.get(i).map_or(never, |&r| self.arrival[r as usize])
    }
}

impl NextUse for Future {
    fn kv_next_use(&self, key: u128) -> u64 {
        self.kv.get(&key).map_or(u64::MAX, |l| self.next(l))
    }
    fn adapter_next_use(&self, adapter_id: u64) -> u64 {
        self.adapter.get(adapter_id as usize - 1).map_or(u64::MAX, |l| self.next(l))
    }
}

/// Whether each request's conversation has a later turn (the user stays, or the tool call
/// returns): what an engine holding the session knows. All false without `hints`.
pub(super) fn continues(reqs: &[Request], hints: bool) -> Vec<bool> {
    if !hints {
        return vec![false; reqs.len()];
    }
    let turns: HashSet<(u32, u32)> = reqs.iter().map(|r| (r.session, r.turn)).collect();
    reqs.iter().map(|r| turns.contains(&(r.session, r.turn + 1))).collect()
}

/// The retention hint an engine can give when a turn ends and its conversation continues:
/// an agent framework knows a tool call is pending and how long its tools take (the
/// scenario's mean think time; kept as long again past it), a chat server knows the session
/// is still open (kept until the session timeout). Neither knows when the turn comes back.
pub(super) fn retention_hint(spec: &WorkloadSpec, now: u64) -> RetentionHint {
    if spec.name == "agent" {
        let tool_us = (spec.think_mean_s * 1e6) as u64;
        RetentionHint { priority: 1.0, duration_us: tool_us, expect_back_us: now + tool_us.max(1) }
    } else {
        let open_us = (spec.session_timeout_s / spec.rate_mult * 1e6) as u64;
        RetentionHint { priority: 1.0, duration_us: open_us.max(1), expect_back_us: 0 }
    }
}
