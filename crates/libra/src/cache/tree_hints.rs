//! Retention hints on tree nodes: the hint table, its expiry order, and the hinted twins of
//! the candidate sets (a hinted leaf is listed there instead of in `gpu_leaves` /
//! `host_leaves`).
use super::*;

impl Tree {
    /// Gives KV node `id` a hint, merged with one it holds (the higher priority, the later
    /// expiry): a prefix shared by several hinted requests is kept for the longest of them. A
    /// `NO_REUSE` mark never expires, so it does not merge: a real hint replaces a mark, and a
    /// mark leaves a real hint as it is.
    pub fn set_hint(&mut self, id: u32, hint: Hint) {
        debug_assert_eq!(self.node(id).kind, Kind::Kv);
        let merged = match self.hints.get(&id).copied() {
            Some(old) => {
                self.hint_expiry.remove(&(old.expires, id));
                if old.priority == NO_REUSE {
                    self.no_reuse_marks -= 1;
                    hint
                } else if hint.priority == NO_REUSE {
                    old
                } else {
                    Hint { priority: old.priority.max(hint.priority), expires: old.expires.max(hint.expires) }
                }
            }
            None => hint,
        };
        self.no_reuse_marks += (merged.priority == NO_REUSE) as usize;
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
            self.no_reuse_marks -= (h.priority == NO_REUSE) as usize;
        }
        self.node_mut(id).hinted = false;
    }

    /// Whether node `id` is marked as never to be read again.
    pub fn is_no_reuse(&self, id: u32) -> bool {
        self.hint(id).is_some_and(|h| h.priority == NO_REUSE)
    }

    /// Takes node `id`'s hint away now: it ranks like any other node again.
    pub fn drop_hint(&mut self, id: u32) {
        self.unlist(id);
        self.clear_hint(id);
        self.refresh(id);
    }

    /// Drops every hint that expired by `now`, so its nodes rank like any other again.
    /// Returns how many.
    pub fn expire_hints(&mut self, now: u64) -> usize {
        let mut n = 0;
        while let Some(&(expires, id)) = self.hint_expiry.first() {
            if expires > now {
                break;
            }
            self.drop_hint(id);
            n += 1;
        }
        n
    }

    /// Nodes holding a retention hint (expired ones included until `expire_hints` runs), not
    /// counting `NO_REUSE` marks.
    pub fn hinted_nodes(&self) -> usize {
        self.hints.len() - self.no_reuse_marks
    }

    /// Nodes marked `NO_REUSE`.
    pub fn no_reuse_nodes(&self) -> usize {
        self.no_reuse_marks
    }

    /// Hinted nodes that would otherwise be GPU (resp. host) leaves.
    pub fn hinted_gpu_leaves(&self) -> &BTreeSet<u32> {
        &self.hinted_gpu_leaves
    }
    pub fn hinted_host_leaves(&self) -> &BTreeSet<u32> {
        &self.hinted_host_leaves
    }
}
