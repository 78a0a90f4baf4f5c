//! Chain-aware eviction plans. A plan for k blocks of a tier is the sequence of the lowest-value
//! nodes whose removal, in plan order, keeps the dependency invariant: the tier's leaves are
//! candidates, a parent becomes one as soon as all its children in that tier are in the plan,
//! and the lowest-valued candidate is always taken next. A whole cold chain can leave in one
//! plan, so the policy's ranking, not the tree's shape, decides what goes.
//!
//! By last use and under the cost model a parent is worth at least as much as its child
//! (every use of a block passes through its ancestors, so they have at least its visits and at
//! most its idle time), so the plan is also the k lowest-valued nodes overall among those that
//! may legally leave. By hit density (libra) a parent may be worth less than its child; it
//! still leaves only after its children.
//!
//! Nodes holding an unexpired retention hint come after every other candidate, lowest hint
//! priority first, then in policy order; nodes marked `NO_REUSE` come before every other
//! candidate. A hint changes when a node leaves, never the rule that children leave before
//! their parents.
use super::core::CacheCore;
use super::cost;
use super::policy::{retention_value, PolicyKind, RankContext};
use super::reuse::{adapter_rate, bin_of, ADAPTER_MISS_WEIGHT, BINS, BIN_START_US};
use super::tree::{Candidate, Kind, Residency, NO_REUSE, ROOT};
use std::cmp::{Ordering, Reverse};
use std::collections::BTreeSet;
use std::collections::{BinaryHeap, HashMap};

/// A tier: where a plan takes blocks from, or where a node is left resident (`settle`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Tier {
    /// GPU blocks leaving for the host tier (or dropped): leaves are GPU nodes with no
    /// GPU-side child; a parent follows once its GPU-side children are all in the plan.
    Gpu,
    /// Host blocks pruned: leaves are host nodes with no child at all.
    Host,
}

/// A candidate with its exact score; ordered by (value, set key, id).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Scored {
    pub value: f64,
    pub key: u64,
    pub node: u32,
}

impl PartialEq for Scored {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Scored {}
impl PartialOrd for Scored {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Scored {
    fn cmp(&self, o: &Self) -> Ordering {
        self.value.total_cmp(&o.value).then(self.key.cmp(&o.key)).then(self.node.cmp(&o.node))
    }
}

/// Where `libra` puts a resident adapter in a plan ranked by ELoRA's value: above every KV
/// block's log value (at most a few tens), least recently used first among adapters. An
/// adapter leaves only once no KV block may: reloading one stalls every request that uses it,
/// where a KV block stalls one (the README compares it with Eq. 6 for adapters).
pub(crate) const ADAPTERS_AFTER_KV: f64 = 1e6;

/// A KV block's log retention value: the same order as Eq. 6, no underflow for long-idle
/// blocks, and no exponential at all once a block has been idle for more than ~36 units.
pub(crate) struct KvLogValue {
    now: u64,
    time_unit_us: f64,
    /// ln(LoRA_Eval x cost), shared by every KV block.
    pub log_const: f64,
}

impl KvLogValue {
    pub fn new(ctx: &RankContext) -> Self {
        let log_const = (cost::lora_eval(ctx.resident_adapters, ctx.low_lora) * ctx.block_cost_us).ln();
        KvLogValue { now: ctx.now, time_unit_us: ctx.time_unit_us, log_const }
    }

    #[inline]
    pub fn of(&self, c: &Candidate) -> f64 {
        let t = c.last_use as f64 / self.time_unit_us;
        let idle = self.now.saturating_sub(c.last_use) as f64 / self.time_unit_us;
        // ln(visits) = key - t; ln(1 - sigmoid(idle)) = -softplus(idle).
        let softplus = if idle > 36.0 { idle } else { idle.exp().ln_1p() };
        self.log_const + (f64::from_bits(c.key) - t) - softplus
    }
}

/// How a plan scores nodes and bounds the entries of the candidate set not yet walked.
pub(crate) enum Scorer<'a> {
    /// Least recently used first: the set order is the score order, so an entry is its own
    /// bound.
    LastUse,
    /// ELORA's Eq. 6 in log form. Why a walk in set order may hand entries out early: an
    /// entry's log value is `log_const + key - now_s - eps` (with `key - t = ln(visits) >= 0`
    /// and `t + idle = now_s`), where `eps = ln(1 + e^(-idle)) <= ln 2` shrinks as idle time
    /// grows and `idle >= now_s - key`. So every entry with key at most `y` has
    /// `eps <= ln(1 + e^(min(y - now_s, 0)))`, and since `y - ln(1 + e^(min(y - now_s, 0)))`
    /// grows with `y`, the same bound holds, for entries past `y`, with `y`'s eps. A pending
    /// node whose value is below the bound for the current entry therefore precedes it and
    /// everything after it, and can be handed out.
    Value { kv: KvLogValue, ctx: RankContext, now_s: f64 },
    /// A caller's value per node (lowest leaves first), e.g. an external policy's (see `plan_gpu_by`).
    /// Nothing bounds the entries not yet walked: every candidate is scored.
    Given(&'a dyn Fn(u32) -> f64),
    /// Hit density by age (see `reuse`), oldest first within an age bin; an adapter's is at
    /// least its own rate of use (see `reuse::adapter_rate`), weighted by what its miss costs
    /// (`reuse::ADAPTER_MISS_WEIGHT`).
    Density { density: Box<[[f64; BINS]; 2]>, now: u64 },
}

/// The band bound's eps is refreshed once per unit of key, so the exponential is rarely taken.
const SEGMENT: f64 = 1.0;

/// A candidate of the hinted phase: its class (0 without an unexpired hint, else the hint's
/// priority), then its score.
#[derive(Debug, Clone, Copy)]
struct Deferred {
    class: f64,
    s: Scored,
}

impl PartialEq for Deferred {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Deferred {}
impl PartialOrd for Deferred {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Deferred {
    fn cmp(&self, o: &Self) -> Ordering {
        self.class.total_cmp(&o.class).then(self.s.cmp(&o.s))
    }
}

/// A plan being built.
struct Plan {
    out: Vec<u32>,
    taken: usize,
    blocks: usize,
    now: u64,
    /// Scored candidates not handed out yet: walked set entries and promoted parents.
    pending: BinaryHeap<Reverse<Scored>>,
    /// Candidates holding an unexpired hint, taken once no other candidate is left; in that
    /// phase (`hinted_phase`) every promoted parent goes here, by class.
    deferred: BinaryHeap<Reverse<Deferred>>,
    hinted_phase: bool,
    /// Children already planned, for parents with more than one child in the tier.
    planned_children: HashMap<u32, u32>,
}

impl Plan {
    /// Files a candidate under the pending heap or, when it holds an unexpired hint (or the
    /// plan is in its hinted phase), under the deferred one. A `NO_REUSE` node scores below
    /// everything, ties in set-key order.
    fn offer(&mut self, core: &CacheCore, scorer: &Scorer<'_>, id: u32) {
        let mut s = core.score(scorer, id);
        let class = match core.tree.hint(id) {
            Some(h) if h.expires > self.now => h.priority,
            _ => 0.0,
        };
        if class == NO_REUSE {
            s.value = f64::NEG_INFINITY;
            if !self.hinted_phase {
                self.pending.push(Reverse(s));
                return;
            }
        }
        if class > 0.0 || self.hinted_phase {
            self.deferred.push(Reverse(Deferred { class, s }));
        } else {
            self.pending.push(Reverse(s));
        }
    }

    /// Hands `s` out and makes its parent a candidate once all of the parent's children in
    /// the tier are planned. Returns whether the plan is complete.
    fn take(&mut self, core: &CacheCore, scorer: &Scorer<'_>, tier: Tier, s: Scored) -> bool {
        self.out.push(s.node);
        self.taken += core.node_blocks(s.node) as usize;
        let parent = core.tree.node(s.node).parent;
        if core.may_follow(tier, parent) {
            let need = core.children_in(tier, parent);
            // Most parents have one child in the tier: no map entry for them.
            let ready = need <= 1 || {
                let c = self.planned_children.entry(parent).or_insert(0);
                *c += 1;
                *c == need
            };
            if ready {
                self.offer(core, scorer, parent);
            }
        }
        self.taken >= self.blocks
    }
}

/// Running state of the band bound over a walk in set order.
struct Band {
    segment_end: f64,
    eps: f64,
    slack: f64,
}

impl CacheCore {
    pub(crate) fn rank_ctx(&self, now: u64) -> RankContext {
        RankContext {
            now,
            resident_adapters: self.resident_adapters() as f64,
            low_lora: self.load.low_lora(),
            block_cost_us: self.block_bytes as f64 / self.cfg.link_bytes_per_us,
            time_unit_us: self.cfg.time_unit_us(),
        }
    }

    pub(crate) fn node_blocks(&self, n: u32) -> u32 {
        let node = self.tree.node(n);
        if node.kind == Kind::Adapter {
            self.adapter(node.adapter).blocks_needed
        } else {
            1
        }
    }

    /// How a plan of `tier` ranks under the configured policy. `libra` ranks KV blocks by
    /// ELoRA's value and adapters after every KV block (`ADAPTERS_AFTER_KV`); with
    /// `rank_by_hit_density` it ranks the GPU tier by hit density and prunes the host tier by
    /// last use (its observations of reuse come from the host tier, which should keep what it
    /// holds as long as it can).
    pub(crate) fn scorer(&self, tier: Tier, now: u64) -> Scorer<'static> {
        if self.cfg.ranks_by_density() && tier == Tier::Gpu {
            return Scorer::Density { density: Box::new(self.reuse.densities()), now };
        }
        if !self.cfg.uses_cost_model() {
            return Scorer::LastUse;
        }
        let ctx = self.rank_ctx(now);
        Scorer::Value { kv: KvLogValue::new(&ctx), now_s: now as f64 / ctx.time_unit_us, ctx }
    }

    /// The exact score of a node for leaving its tier.
    pub(crate) fn score(&self, scorer: &Scorer<'_>, id: u32) -> Scored {
        let c = self.tree.candidate(id);
        match scorer {
            Scorer::LastUse => Scored { value: c.last_use as f64, key: c.key, node: id },
            Scorer::Given(f) => Scored { value: f(id), key: c.key, node: id },
            Scorer::Density { density, now } => {
                let age = now.saturating_sub(c.last_use);
                let mut value = density[c.adapter as usize][bin_of(age)];
                if c.adapter {
                    let gap = self.adapter(self.tree.node(id).adapter).mean_gap_us;
                    value = value.max(adapter_rate(gap, age)) * ADAPTER_MISS_WEIGHT;
                }
                Scored { value, key: c.key, node: id }
            }
            Scorer::Value { kv, ctx, .. } => {
                let value = if c.adapter && self.cfg.policy == PolicyKind::Libra {
                    ADAPTERS_AFTER_KV + (1.0 + c.last_use as f64).ln()
                } else if c.adapter {
                    let node = self.tree.node(id);
                    retention_value(self.cfg.policy, node, self.node_blocks(id), true, ctx).ln()
                } else {
                    kv.of(&c)
                };
                Scored { value, key: c.key, node: id }
            }
        }
    }

    /// Whether `id` may join a plan of `tier` once all its children there are in it.
    fn may_follow(&self, tier: Tier, id: u32) -> bool {
        if id == ROOT {
            return false;
        }
        let n = self.tree.node(id);
        match tier {
            Tier::Gpu => n.residency == Residency::Gpu && n.pins == 0 && n.kind != Kind::Root,
            Tier::Host => n.residency == Residency::Host && n.pins == 0 && n.kind == Kind::Kv,
        }
    }

    /// How many of `id`'s children must be in a plan of `tier` before it may follow them.
    fn children_in(&self, tier: Tier, id: u32) -> u32 {
        let n = self.tree.node(id);
        match tier {
            Tier::Gpu => n.gpu_children,
            Tier::Host => n.children,
        }
    }

    /// The chain-aware plan for `blocks` blocks of `tier`, in the order the nodes may leave
    /// (children before parents). Shorter when fewer may leave; an adapter counts its blocks.
    ///
    /// The walk visits the tier's leaf set in key order and keeps the nodes it has scored, and
    /// the parents that became candidates, in a heap; the heap's lowest is taken as soon as no
    /// entry not yet walked can be lower (see `Scorer`). It touches about as many set entries
    /// as the plan takes leaves, plus a band, and never scores the whole set.
    pub(crate) fn plan(&self, tier: Tier, blocks: usize, now: u64) -> Vec<u32> {
        self.plan_with(tier, blocks, now, &self.scorer(tier, now))
    }

    /// `plan` under a given scorer.
    pub(crate) fn plan_with(&self, tier: Tier, blocks: usize, now: u64, scorer: &Scorer<'_>) -> Vec<u32> {
        let (set, hinted) = match tier {
            Tier::Gpu => (self.tree.gpu_leaves(), self.tree.hinted_gpu_leaves()),
            Tier::Host => (self.tree.host_leaves(), self.tree.hinted_host_leaves()),
        };
        // An empty set has no adapter leaves either (they are listed like KV leaves), and the
        // ranking context costs a power per adapter: a full host tier asks for every victim.
        if blocks == 0 || (set.is_empty() && hinted.is_empty()) {
            return Vec::new();
        }
        let mut plan = Plan {
            out: Vec::with_capacity(blocks.min(4 * set.len())),
            taken: 0,
            blocks,
            now,
            pending: BinaryHeap::new(),
            deferred: BinaryHeap::new(),
            hinted_phase: false,
            planned_children: HashMap::new(),
        };
        for &id in hinted {
            plan.offer(self, scorer, id);
        }
        // Under the cost model and by density adapters have other values than KV blocks: they
        // are scored apart, exactly. By last use the set order is theirs too: they are walked
        // in place.
        let apart = matches!(scorer, Scorer::Value { .. } | Scorer::Density { .. });
        if tier == Tier::Gpu && apart {
            for a in self.adapters.iter().flatten() {
                let node = self.tree.node(a.node);
                if node.residency == Residency::Gpu && node.pins == 0 && node.gpu_children == 0 {
                    plan.pending.push(Reverse(self.score(scorer, a.node)));
                }
            }
        }
        let mut band = Band { segment_end: f64::NEG_INFINITY, eps: std::f64::consts::LN_2, slack: 0.0 };
        let walk: Box<dyn Iterator<Item = &Candidate>> = match scorer {
            Scorer::Density { density, now } => Box::new(density_walk(set, &density[0], *now)),
            _ => Box::new(set.iter()),
        };
        'walk: for c in walk.filter(|c| !(apart && c.adapter)) {
            let bound = self.bound(scorer, &mut band, c);
            while let Some(&Reverse(top)) = plan.pending.peek() {
                if top >= bound {
                    break;
                }
                plan.pending.pop();
                if plan.take(self, scorer, tier, top) {
                    break 'walk;
                }
            }
            let s = match scorer {
                Scorer::LastUse | Scorer::Density { .. } => bound,
                Scorer::Value { kv, .. } => Scored { value: kv.of(c), key: c.key, node: c.id },
                Scorer::Given(_) => self.score(scorer, c.id),
            };
            plan.pending.push(Reverse(s));
        }
        if plan.taken < blocks {
            while let Some(Reverse(top)) = plan.pending.pop() {
                if plan.take(self, scorer, tier, top) {
                    return plan.out;
                }
            }
            plan.hinted_phase = true;
            while let Some(Reverse(top)) = plan.deferred.pop() {
                if plan.take(self, scorer, tier, top.s) {
                    break;
                }
            }
        }
        plan.out
    }

    /// A score that no entry of the set at or after `c` (in set order) is below.
    #[inline]
    fn bound(&self, scorer: &Scorer<'_>, band: &mut Band, c: &Candidate) -> Scored {
        match scorer {
            Scorer::LastUse => Scored { value: c.last_use as f64, key: c.key, node: c.id },
            // No bound: nothing is handed out before the walk ends.
            // The walk is in score order (see `density_walk`): an entry is its own bound.
            Scorer::Density { .. } => self.score(scorer, c.id),
            Scorer::Given(_) => Scored { value: f64::NEG_INFINITY, key: 0, node: 0 },
            Scorer::Value { kv, now_s, .. } => {
                if !kv.log_const.is_finite() {
                    // Every KV value is the same infinity: set order by key decides.
                    return Scored { value: f64::NEG_INFINITY, key: c.key, node: 0 };
                }
                let key = f64::from_bits(c.key);
                if key > band.segment_end {
                    band.segment_end = key + SEGMENT;
                    band.eps = (band.segment_end - now_s).min(0.0).exp().ln_1p();
                    // Rounding of sums of this magnitude, with a wide margin.
                    band.slack = 1e-9 + 1e-13 * (kv.log_const.abs() + now_s.abs() + band.segment_end.abs());
                }
                // Node 0 is the root, never a candidate: only a strictly lower value precedes.
                Scored { value: kv.log_const + key - now_s - band.eps - band.slack, key: 0, node: 0 }
            }
        }
    }

    /// The nodes the policy would move off the GPU first to free `blocks` blocks, in the
    /// order they may leave (a plan only: nothing moves).
    pub fn plan_swap_out(&self, blocks: usize, now: u64) -> Vec<u32> {
        self.plan(Tier::Gpu, blocks, now)
    }
}

/// The KV entries of a last-use-ordered candidate set in density order: age bins from the
/// lowest density up (of equal densities the older bin first), and within a bin by last use.
/// Every entry of a bin has the bin's density, so this is the order of (density, last use):
/// each entry is a bound for all that follow it.
fn density_walk<'s>(
    set: &'s BTreeSet<Candidate>,
    density: &[f64; BINS],
    now: u64,
) -> impl Iterator<Item = &'s Candidate> + 's {
    let mut bins: Vec<usize> = (0..BINS).collect();
    bins.sort_by(|&a, &b| density[a].total_cmp(&density[b]).then(b.cmp(&a)));
    bins.into_iter().flat_map(move |b| {
        // Ages [start(b), start(b + 1)) are last uses (now - start(b + 1), now - start(b)].
        let low = match BIN_START_US.get(b + 1) {
            Some(&next) => now.saturating_add(1).saturating_sub(next),
            None => 0,
        };
        let at = |key: u64| Candidate { key, last_use: 0, id: 0, adapter: false };
        let range: Box<dyn Iterator<Item = &'s Candidate>> = if b == 0 {
            Box::new(set.range(at(low)..))
        } else if now < BIN_START_US[b] {
            Box::new(std::iter::empty())
        } else {
            Box::new(set.range(at(low)..at(now - BIN_START_US[b] + 1)))
        };
        range
    })
}

#[cfg(test)]
#[path = "plan_tests.rs"]
mod tests;
