//! Swap policies: the cost model, and the baselines it is compared to. A policy only ranks;
//! the swapper decides what may legally move.
use super::cost;
use super::tree::{CandidateOrder, Kind, Node};

/// Which policy drives eviction, swapping and reuse.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PolicyKind {
    /// ELORA's unified cost model (Eq. 3-6) over one pool with the dependency tree.
    Elora,
    /// Same tree and tiers, least recently used instead of the cost model.
    Lru,
    /// vLLM: adapters and KV in separate, statically sized regions, each with its own LRU, no
    /// coupling (an evicted adapter's KV stays and is wasted), no host tier for KV.
    Vllm,
    /// vLLM v1 with its CPU offloading connector: vLLM's static split and uncoupled adapter
    /// slots, and KV evicted from the GPU region stored in an LRU host tier and loaded back on
    /// a prefix hit.
    VllmOffload,
    /// SGLang HiCache: the split and uncoupled adapter pool of `Vllm` (SGLang's LoRA memory
    /// pool is separate from its KV pool), an LRU radix cache, and a host tier written
    /// through: every KV block gets a host copy as soon as the link is idle and keeps it while
    /// it stays on the GPU, so evicting it is free.
    HiCache,
    /// S-LoRA: one unified pool, adapters loaded on demand, finished requests' KV not kept.
    Slora,
    /// The same tree with KV blocks ranked by ELoRA's value and resident adapters freed only
    /// after every KV block that may leave (see `plan::ADAPTERS_AFTER_KV`; hit density by age,
    /// `CacheConfig::rank_by_hit_density`, measured slower, see the README), plus a host tier
    /// kept full (pruned only when a swap-out needs the room), write-through host copies, and
    /// recompute-or-load from the engine's cost hints.
    Libra,
}

impl PolicyKind {
    pub fn name(self) -> &'static str {
        match self {
            PolicyKind::Elora => "elora",
            PolicyKind::Lru => "lru",
            PolicyKind::Vllm => "vllm",
            PolicyKind::VllmOffload => "vllm-offload",
            PolicyKind::HiCache => "hicache",
            PolicyKind::Slora => "slora",
            PolicyKind::Libra => "libra",
        }
    }
    pub fn parse(name: &str) -> Option<Self> {
        Some(match name {
            "elora" => PolicyKind::Elora,
            "lru" => PolicyKind::Lru,
            "vllm" => PolicyKind::Vllm,
            "vllm-offload" => PolicyKind::VllmOffload,
            "hicache" => PolicyKind::HiCache,
            "slora" => PolicyKind::Slora,
            "libra" => PolicyKind::Libra,
            _ => return None,
        })
    }
    pub const ALL: [PolicyKind; 7] = [
        PolicyKind::Vllm,
        PolicyKind::VllmOffload,
        PolicyKind::HiCache,
        PolicyKind::Slora,
        PolicyKind::Lru,
        PolicyKind::Elora,
        PolicyKind::Libra,
    ];

    /// Whether KV blocks move to the host tier instead of being dropped.
    pub fn uses_host_tier(self) -> bool {
        matches!(
            self,
            PolicyKind::Elora
                | PolicyKind::Lru
                | PolicyKind::Libra
                | PolicyKind::VllmOffload
                | PolicyKind::HiCache
        )
    }
    /// Whether adapters and KV live in separate, statically sized GPU regions (vLLM; SGLang's
    /// LoRA memory pool).
    pub fn split_regions(self) -> bool {
        matches!(self, PolicyKind::Vllm | PolicyKind::VllmOffload | PolicyKind::HiCache)
    }
    /// Whether finished requests' KV stays cached for reuse.
    pub fn keeps_finished_kv(self) -> bool {
        self != PolicyKind::Slora
    }
    /// Whether adapters may leave while their KV stays (vLLM's uncoupled pools).
    pub fn uncoupled(self) -> bool {
        self.split_regions()
    }
    /// Whether the host tier is kept full and pruned only when a swap-out needs the room,
    /// instead of being pruned from a high to a low watermark.
    /// (HiCache evicts host nodes only when a write finds no room.)
    pub fn fills_host_tier(self) -> bool {
        matches!(self, PolicyKind::Libra | PolicyKind::HiCache)
    }
    /// Whether blocks next in line to leave the GPU are copied to the host ahead of time.
    pub fn writes_through(self) -> bool {
        matches!(self, PolicyKind::Libra | PolicyKind::HiCache)
    }
    /// Whether write-through backs up every GPU KV block, not only the next ones to leave, and
    /// keeps the copy when the block is used again (SGLang's `write_through` policy, hit
    /// threshold 1: a node is backed up once inserted, and a backed-up node stays backed up).
    pub fn backs_up_everything(self) -> bool {
        self == PolicyKind::HiCache
    }
}

/// What the cost model needs to know beside the node itself.
#[derive(Debug, Clone, Copy)]
pub struct RankContext {
    pub now: u64,
    /// GPU-resident adapters now.
    pub resident_adapters: f64,
    /// Eq. 3 over the recent window.
    pub low_lora: f64,
    /// Transfer time of one block over the host link, microseconds.
    pub block_cost_us: f64,
    /// Unit of idle time in Eq. 5, microseconds.
    pub time_unit_us: f64,
}

/// Retention value of a node: the lowest leaves first, the highest comes back first.
/// `blocks` is how many blocks the node holds (an adapter holds several). `leaving` says
/// whether the move considered takes the node off the GPU.
pub fn retention_value(
    policy: PolicyKind,
    node: &Node,
    blocks: u32,
    leaving: bool,
    ctx: &RankContext,
) -> f64 {
    match policy {
        PolicyKind::Lru
        | PolicyKind::Vllm
        | PolicyKind::VllmOffload
        | PolicyKind::HiCache
        | PolicyKind::Slora
        | PolicyKind::Libra => node.last_use as f64,
        PolicyKind::Elora => {
            let is_adapter = node.kind == Kind::Adapter;
            let now_lora = match (is_adapter, leaving) {
                (true, true) => ctx.resident_adapters - 1.0,
                (true, false) => ctx.resident_adapters + 1.0,
                (false, _) => ctx.resident_adapters,
            };
            let lora_eval = cost::lora_eval(now_lora.max(0.0), ctx.low_lora);
            let since_s = ctx.now.saturating_sub(node.last_use) as f64 / ctx.time_unit_us;
            let cost_us = ctx.block_cost_us * blocks.max(1) as f64;
            let retain = cost::retain_eval(cost_us, node.visits.max(1) as f64, since_s);
            cost::eval(lora_eval, retain)
        }
    }
}

/// How the tree should keep its candidate sets: by ELoRA's value when the cache ranks by it.
pub fn candidate_order(uses_cost_model: bool, time_unit_us: f64) -> CandidateOrder {
    if uses_cost_model {
        CandidateOrder::Value { time_unit_us }
    } else {
        CandidateOrder::LastUse
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::tree::{Residency, NONE};

    fn node(kind: Kind, last_use: u64, visits: u32) -> Node {
        Node {
            key: 0,
            last_use,
            parent: 0,
            adapter: 0,
            gpu_block: NONE,
            host_block: NONE,
            pins: 0,
            visits,
            gpu_children: 0,
            children: 0,
            residency: Residency::Gpu,
            kind,
            listed: 0,
            hinted: false,
            left_gpu: crate::cache::tree::NO_BIN,
        }
    }

    #[test]
    fn elora_value_is_eq6() {
        let ctx = RankContext {
            now: 2_000_000,
            resident_adapters: 3.0,
            low_lora: 4.0,
            block_cost_us: 10.0,
            time_unit_us: 1e6,
        };
        // KV block: LoRA_Eval = 3/4, Retain = 10 x 2 x (1 - sigmoid(1 s)).
        let v = retention_value(PolicyKind::Elora, &node(Kind::Kv, 1_000_000, 2), 1, true, &ctx);
        let expect = 0.75 * 10.0 * 2.0 * (1.0 - cost::sigmoid(1.0));
        assert!((v - expect).abs() < 1e-9);
        // Adapter of 5 blocks leaving: LoRA_Eval = 2/4.
        let a = retention_value(PolicyKind::Elora, &node(Kind::Adapter, 2_000_000, 1), 5, true, &ctx);
        assert!((a - 0.5 * 50.0 * 0.5).abs() < 1e-9);
        // libra ranks by last use.
        let l = retention_value(PolicyKind::Libra, &node(Kind::Adapter, 2_000_000, 1), 5, true, &ctx);
        assert_eq!(l, 2_000_000.0);
    }

    #[test]
    fn lru_orders_by_time() {
        let ctx = RankContext {
            now: 0,
            resident_adapters: 0.0,
            low_lora: 0.0,
            block_cost_us: 1.0,
            time_unit_us: 1e6,
        };
        let old = retention_value(PolicyKind::Lru, &node(Kind::Kv, 5, 100), 1, true, &ctx);
        let new = retention_value(PolicyKind::Lru, &node(Kind::Kv, 6, 1), 1, true, &ctx);
        assert!(old < new);
    }
}
