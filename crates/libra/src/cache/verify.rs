//! Self-checks for tests, randomized checks and debug builds of an engine: the structural invariants
//! (O(nodes + blocks)), and the contents, read back from the tier that holds each block's
//! valid copy (O(cached bytes)).
use super::core::CacheCore;
use super::tree::{Kind, Residency, NONE, ROOT};
use crate::backend::Backend;

impl CacheCore {
    /// Checks every cached KV block with `kv_ok(prefix key, bytes)`, reading it from the GPU
    /// tier or the host tier (whichever holds the valid copy), and every resident adapter's
    /// blocks against its registered weights. Returns the first mismatch.
    pub fn verify_contents(
        &self,
        io: &mut dyn Backend,
        kv_ok: &mut dyn FnMut(u128, &[u8]) -> bool,
    ) -> std::result::Result<(), String> {
        let block = self.block_bytes as usize;
        let mut buf = vec![0u8; block];
        for n in self.kv_nodes() {
            let read = match n.residency {
                Residency::Gpu | Residency::ToHost => io.read_gpu_block(n.gpu_block, &mut buf),
                Residency::Host | Residency::ToGpu => io.read_host_block(n.host_block, &mut buf),
                Residency::Absent => return Err(format!("KV node {n:?} has no copy")),
            };
            read.map_err(|e| format!("KV node {n:?} could not be read: {e}"))?;
            if !kv_ok(n.key, &buf) {
                return Err(format!("KV node {n:?} lost its bytes"));
            }
            // A clean block's host copy must be complete: it is all that is left once the
            // block leaves without a copy.
            if n.residency == Residency::Gpu && n.host_block != NONE {
                io.read_host_block(n.host_block, &mut buf)
                    .map_err(|e| format!("clean copy of KV node {n:?} could not be read: {e}"))?;
                if !kv_ok(n.key, &buf) {
                    return Err(format!("clean copy of KV node {n:?} differs from its GPU copy"));
                }
            }
        }
        for a in self.adapters.iter().flatten() {
            if self.tree.node(a.node).residency != Residency::Gpu {
                continue;
            }
            for (i, &b) in a.gpu_blocks.iter().enumerate() {
                io.read_gpu_block(b, &mut buf).map_err(|e| format!("adapter {} block {i}: {e}", a.id))?;
                let part =
                    &a.weights[(i * block).min(a.weights.len())..((i + 1) * block).min(a.weights.len())];
                if &buf[..part.len()] != part {
                    return Err(format!("adapter {} block {i} (GPU block {b}) is corrupted", a.id));
                }
            }
        }
        Ok(())
    }

    /// Checks every invariant: tree structure, each block owned exactly once, tier counts.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        self.tree.check(self.cfg.policy.uncoupled())?;
        let mut gpu_owner = vec![0u8; self.gpu.capacity() as usize];
        let mut host_owner = vec![0u8; self.host.capacity() as usize];
        let own = |v: &mut Vec<u8>, b: u32, what: &str| -> std::result::Result<(), String> {
            let slot = v.get_mut(b as usize).ok_or(format!("{what} block {b} out of range"))?;
            *slot += 1;
            if *slot > 1 {
                return Err(format!("{what} block {b} is owned twice"));
            }
            Ok(())
        };
        let mut clean = 0u64;
        for id in self.tree.live_ids() {
            let n = self.tree.node(id);
            if n.kind != Kind::Kv {
                continue;
            }
            match n.residency {
                Residency::Gpu => {
                    own(&mut gpu_owner, n.gpu_block, "GPU")?;
                    if n.host_block != NONE {
                        own(&mut host_owner, n.host_block, "host")?;
                        clean += 1;
                    }
                }
                Residency::Host => own(&mut host_owner, n.host_block, "host")?,
                Residency::ToHost | Residency::ToGpu => {
                    own(&mut gpu_owner, n.gpu_block, "GPU")?;
                    own(&mut host_owner, n.host_block, "host")?;
                }
                Residency::Absent => return Err(format!("KV node {id} has no copy")),
            }
        }
        if clean != self.clean_blocks {
            return Err(format!("{clean} clean blocks, but the gauge says {}", self.clean_blocks));
        }
        // A clean copy lands only through a write-through batch: one in flight holds a GPU
        // block and a host block, and frees the GPU one never.
        for f in self.inflight.values() {
            if let super::core::Flight::Clean(nodes) = f {
                for &n in nodes {
                    let r = self.tree.node(n).residency;
                    if r != Residency::ToHost {
                        return Err(format!("node {n} is in a write-through batch but {r:?}"));
                    }
                }
            }
        }
        let mut adapter_blocks = 0;
        for a in self.adapters.iter().flatten() {
            let r = self.tree.node(a.node).residency;
            if r.gpu_side() == a.gpu_blocks.is_empty() {
                return Err(format!("adapter {} residency {r:?} disagrees with its blocks", a.id));
            }
            for &b in &a.gpu_blocks {
                own(&mut gpu_owner, b, "GPU")?;
            }
            adapter_blocks += a.gpu_blocks.len() as u32;
        }
        if adapter_blocks != self.adapter_gpu_blocks {
            return Err("adapter block count is stale".into());
        }
        // Every pin belongs to an open request: a pin left by a failed call would keep a
        // block on the GPU (and its adapter registered) forever.
        let mut pins: std::collections::HashMap<u32, u32> = std::collections::HashMap::new();
        for b in self.orphans.values().flatten() {
            own(&mut gpu_owner, *b, "GPU")?;
        }
        for r in self.requests.iter().flatten() {
            for &b in r.fresh[r.fresh_pos..].iter().chain(&r.spare) {
                own(&mut gpu_owner, b, "GPU")?;
            }
            for &n in &r.pinned {
                *pins.entry(n).or_default() += 1;
            }
        }
        for id in self.tree.live_ids() {
            let n = self.tree.node(id);
            let want = pins.get(&id).copied().unwrap_or(0);
            if n.kind != Kind::Root && n.pins != want {
                return Err(format!("node {id} has {} pins but open requests hold {want}", n.pins));
            }
        }
        for (b, &c) in gpu_owner.iter().enumerate() {
            if (c == 1) != self.gpu.is_used(b as u32) {
                return Err(format!(
                    "GPU block {b}: {c} owners but pool says used={}",
                    self.gpu.is_used(b as u32)
                ));
            }
        }
        for (b, &c) in host_owner.iter().enumerate() {
            if (c == 1) != self.host.is_used(b as u32) {
                return Err(format!(
                    "host block {b}: {c} owners but pool says used={}",
                    self.host.is_used(b as u32)
                ));
            }
        }
        if self.tree.node(ROOT).kind != Kind::Root {
            return Err("root lost".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use crate::backend::cpu::CpuBackend;
    use crate::backend::Backend;
    use crate::cache::{CacheConfig, CacheCore};

    #[test]
    fn finds_a_corrupted_block_and_adapter() {
        let cfg = CacheConfig { block_tokens: 2, ..Default::default() };
        let mut io = CpuBackend::new(8, 16, 4).unwrap();
        let mut core = CacheCore::new(cfg, 8, 16, 4).unwrap();
        core.register_adapter(1, &[7u8; 12], 4, 0).unwrap();
        let m = core.match_prefix(&mut io, 1, 0, &[1, 2, 3, 4], 0).unwrap();
        let blocks = core.allocate(&mut io, m.request, 4, 0).unwrap();
        let keys = core.prefix_keys(1, 0, &[1, 2, 3, 4]);
        for (&b, k) in blocks.iter().zip(&keys) {
            io.write_gpu_block(b, &k.to_le_bytes()[..8]).unwrap();
        }
        core.commit(m.request, &[1, 2, 3, 4], 0).unwrap();
        let mut ok = |k: u128, bytes: &[u8]| bytes == &k.to_le_bytes()[..8];
        core.verify_contents(&mut io, &mut ok).unwrap();
        io.write_gpu_block(blocks[1], &[0u8; 8]).unwrap();
        assert!(core.verify_contents(&mut io, &mut ok).unwrap_err().contains("lost its bytes"));
        io.write_gpu_block(blocks[1], &keys[1].to_le_bytes()[..8]).unwrap();
        let adapter_block = m.adapter_blocks[1];
        io.write_gpu_block(adapter_block, &[9u8; 4]).unwrap();
        assert!(core.verify_contents(&mut io, &mut ok).unwrap_err().contains("adapter 1 block 1"));
    }
}
