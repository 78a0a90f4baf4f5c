//! The tree's structural self-check, for tests, randomized checks and debug builds.
use super::*;

impl Tree {
    /// Checks the structural invariants; returns a description of the first violation.
    /// `uncoupled` tolerates GPU KV under an adapter that left (the vLLM baseline).
    pub fn check(&self, uncoupled: bool) -> Result<(), String> {
        let mut children = vec![0u32; self.nodes.len()];
        let mut gpu_children = vec![0u32; self.nodes.len()];
        for id in self.live_ids() {
            let n = self.node(id);
            if n.kind == Kind::Root {
                continue;
            }
            let p = self.node(n.parent);
            if p.kind == Kind::Vacant {
                return Err(format!("node {id} has a vacant parent {}", n.parent));
            }
            children[n.parent as usize] += 1;
            if n.residency.gpu_side() {
                gpu_children[n.parent as usize] += 1;
                let tolerated = uncoupled && p.kind == Kind::Adapter;
                if !p.residency.gpu_side() && !tolerated {
                    return Err(format!(
                        "node {id} is GPU-side ({:?}) but its parent {} is {:?}",
                        n.residency, n.parent, p.residency
                    ));
                }
            }
            if n.kind == Kind::Kv && self.lookup(n.key) != Some(id) {
                return Err(format!("node {id} is not indexed under its key"));
            }
            let c = self.candidate(id);
            let gpu_leaf = n.residency == Residency::Gpu && n.pins == 0 && n.gpu_children == 0;
            let host_leaf = n.residency == Residency::Host && n.pins == 0 && n.children == 0;
            let h = n.hinted;
            if (gpu_leaf && !h) != self.gpu_leaves.contains(&c)
                || (gpu_leaf && h) != self.hinted_gpu_leaves.contains(&id)
            {
                return Err(format!("node {id} GPU-leaf membership is stale (hinted {h})"));
            }
            if (host_leaf && !h) != self.host_leaves.contains(&c)
                || (host_leaf && h) != self.hinted_host_leaves.contains(&id)
            {
                return Err(format!("node {id} host-leaf membership is stale (hinted {h})"));
            }
            let (g, o) = if h {
                (IN_HINTED_GPU_LEAVES, IN_HINTED_HOST_LEAVES)
            } else {
                (IN_GPU_LEAVES, IN_HOST_LEAVES)
            };
            if n.listed != (if gpu_leaf { g } else { 0 } | if host_leaf { o } else { 0 }) {
                return Err(format!("node {id} membership flags are stale"));
            }
            if h != self.hints.contains_key(&id) || (h && n.kind != Kind::Kv) {
                return Err(format!("node {id} hint flag disagrees with the hint table"));
            }
        }
        for id in self.live_ids() {
            let n = self.node(id);
            if n.children != children[id as usize] || n.gpu_children != gpu_children[id as usize] {
                return Err(format!(
                    "node {id} counts {}/{} children, found {}/{}",
                    n.children, n.gpu_children, children[id as usize], gpu_children[id as usize]
                ));
            }
        }
        if self.hints.len() != self.hint_expiry.len()
            || self.hints.iter().any(|(&id, h)| !self.hint_expiry.contains(&(h.expires, id)))
        {
            return Err("hint expiry order is stale".into());
        }
        if self.index.len() != self.live_ids().filter(|&i| self.node(i).kind == Kind::Kv).count() {
            return Err("index size differs from the number of KV nodes".into());
        }
        let recount = self.recount();
        if recount != self.counts {
            return Err(format!("KV gauges are stale: kept {:?}, counted {recount:?}", self.counts));
        }
        Ok(())
    }

    /// The KV gauges counted from scratch.
    fn recount(&self) -> KvCounts {
        let mut c = KvCounts::default();
        for id in self.live_ids() {
            let n = self.node(id);
            if n.kind != Kind::Kv {
                continue;
            }
            if n.residency.gpu_side() {
                c.gpu += 1;
                c.invalid += !self.adapter_gpu_side(n.adapter) as u64;
            } else if n.residency == Residency::Host {
                c.host += 1;
            }
        }
        c
    }
}
