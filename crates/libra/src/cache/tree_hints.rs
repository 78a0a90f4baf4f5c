//! Retention hints on tree nodes: the hint table, its expiry order, and the hinted twins of
//! the candidate sets (a hinted leaf is listed there instead of in `gpu_leaves` /
//! `host_leaves`).
use super::*;

impl Tree {
    /// Gives KV node `id` a hint, merged with one it holds (the higher priority, the later
    /// expiry): a prefix shared by several hinted requests is kept for the longest of them.
    pub fn set_hint(&mut self, id: u32, hint: Hint) {
        debug_assert_eq!(self.node(id).kind, Kind::Kv);
        let merged = match self.hints.get(&id) {
            Some(old) => {
                self.hint_expiry.remove(&(old.expires, id));
                Hint { priority: old.priority.max(hint.priority), expires: old.expires.max(hint.expires) }
            }
            None => hint,
        };
        self.hints.insert(id, merged);
        self.hint_expiry.insert((merged.expires, id));
        if !self.node(id).hinted {
            self.node_mut(id).hinted = true;
            self.refresh(id);
        }
    }

    /// The hint node `id` holds, if any (expired or not).
    pub fn hint(&self, id: u32) -> Option<Hint> {
        if self.nodes[id as usize].hinted {
            self.hints.get(&id).copied()
        } else {
            None
        }
    }

    pub(super) fn clear_hint(&mut self, id: u32) {
        if let Some(h) = self.hints.remove(&id) {
            self.hint_expiry.remove(&(h.expires, id));
        }
        self.node_mut(id).hinted = false;
    }

    /// Drops every hint that expired by `now`, so its nodes rank like any other again.
    /// Returns how many.
    pub fn expire_hints(&mut self, now: u64) -> usize {
        let mut n = 0;
        while let Some(&(expires, id)) = self.hint_expiry.first() {
            if expires > now {
                break;
            }
            self.unlist(id);
            self.clear_hint(id);
            self.refresh(id);
            n += 1;
        }
        n
    }

    /// Nodes holding a hint (expired ones included until `expire_hints` runs).
    pub fn hinted_nodes(&self) -> usize {
        self.hints.len()
    }

    /// Hinted nodes that would otherwise be GPU (resp. host) leaves.
    pub fn hinted_gpu_leaves(&self) -> &BTreeSet<u32> {
        &self.hinted_gpu_leaves
    }
    pub fn hinted_host_leaves(&self) -> &BTreeSet<u32> {
        &self.hinted_host_leaves
    }
}
