//! Content self-check: reads every cached block back from the tier that holds its valid copy.
//! For tests, fuzzing and debug builds of an engine; O(cached bytes).
use super::core::CacheCore;
use super::tree::Residency;
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
