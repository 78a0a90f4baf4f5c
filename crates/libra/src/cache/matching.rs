//! The match walk: the longest cached prefix of a prompt under an adapter, pinned, with the
//! copies that make it usable on the GPU started (or its host part left to recompute).
use super::config::{MAX_OPEN_REQUESTS, MAX_TOKENS_PER_CALL};
use super::core::CacheCore;
use super::keyhash::{self, PrefixHasher};
use super::policy::PolicyKind;
use super::request_ids::slot_bits;
use super::tree::{Residency, NONE};
use crate::backend::{Backend, BatchId};
use crate::error::{Error, Result};
use std::collections::HashSet;

/// What `match_prefix` found.
#[derive(Debug, Clone, PartialEq)]
pub struct MatchResult {
    pub request: u64,
    /// Tokens whose KV is cached (a multiple of the block size).
    pub cached_tokens: usize,
    /// Block ids of the cached prefix, one per `block_tokens` tokens.
    pub kv_blocks: Vec<u32>,
    /// Block ids holding the adapter's weights, in order.
    pub adapter_blocks: Vec<u32>,
    /// Whether every block above is already usable on the GPU.
    pub ready: bool,
    /// Tokens found only in the host tier that were not loaded because recomputing them is
    /// faster than copying them (libra policy with cost hints). They are not in `kv_blocks`.
    pub recompute_tokens: usize,
}

impl CacheCore {
    /// Looks up the longest cached prefix of `tokens` for `adapter_id` in `namespace`, pins it
    /// and the adapter, and starts whatever copies make them usable on the GPU.
    pub fn match_prefix(
        &mut self,
        io: &mut dyn Backend,
        adapter_id: u64,
        namespace: u64,
        tokens: &[u32],
        now: u64,
    ) -> Result<MatchResult> {
        let now = self.clock(now);
        if tokens.len() > MAX_TOKENS_PER_CALL {
            return Err(Error::invalid(format!(
                "`tokens` has {} entries; the limit is {MAX_TOKENS_PER_CALL}",
                tokens.len()
            )));
        }
        let slot = self.slot_of(adapter_id)?;
        if self.stats.open_requests >= MAX_OPEN_REQUESTS {
            return Err(Error::busy(format!(
                "{MAX_OPEN_REQUESTS} requests are open: release or abort some first"
            )));
        }
        self.poll_inflight(io);
        let bt = self.block_tokens();
        let adapter_node = self.adapter(slot).node;
        let root_key = if namespace == 0 {
            self.adapter(slot).chain_key
        } else {
            self.tree.chain_root(adapter_id, namespace)
        };
        let root_hash = self.tree.prefix_hasher(root_key);
        let (mut path, mut tail_hash) = self.walk(tokens, root_hash, adapter_node);
        // Host-resident suffix of the path: load it, or advise recomputation.
        let first_host =
            path.iter().position(|&n| !self.tree.node(n).residency.gpu_side()).unwrap_or(path.len());
        let host_run = path.len() - first_host;
        let mut recompute_tokens = 0;
        if host_run > 0 && self.should_recompute(host_run) {
            recompute_tokens = host_run * bt;
            path.truncate(first_host);
            tail_hash = root_hash;
            tail_hash.extend(&tokens[..path.len() * bt]);
        }
        let waits = self.pin_and_load(io, slot, &path, first_host, now)?;
        self.load.record_request(slot, now);
        let kv_blocks: Vec<u32> = path.iter().map(|&n| self.tree.node(n).gpu_block).collect();
        let cached_tokens = path.len() * bt;
        self.stats.matches += 1;
        self.stats.hit_tokens += cached_tokens as u64;
        self.stats.miss_tokens += (tokens.len() - cached_tokens) as u64;
        let tail_node = path.last().copied().unwrap_or(adapter_node);
        // The pinned list is the path behind the adapter: reuse its buffer.
        let mut pinned = path;
        pinned.insert(0, adapter_node);
        let request = self.open_request(pinned, tail_node, tail_hash, waits);
        // Synchronous backends finish at submission: report ready without another round trip.
        self.poll_inflight(io);
        let ready = {
            let r = self.req(slot_bits(request));
            r.waits.is_empty() && r.failure.is_none()
        };
        let adapter_blocks = self.adapter(slot).gpu_blocks.clone();
        Ok(MatchResult { request, cached_tokens, kv_blocks, adapter_blocks, ready, recompute_tokens })
    }

    /// The chain of `tokens`' full blocks under `adapter_node` that the tree holds, GPU-side or
    /// on the host, and the running hash after its last block (`root_hash` for none). Empty
    /// under a policy that keeps no finished KV.
    fn walk(&self, tokens: &[u32], root_hash: PrefixHasher, adapter_node: u32) -> (Vec<u32>, PrefixHasher) {
        let bt = self.block_tokens();
        let mut tail_hash = root_hash;
        if !self.cfg.policy.keeps_finished_kv() {
            return (Vec::with_capacity(1), tail_hash);
        }
        let mut path: Vec<u32> = Vec::with_capacity(tokens.len() / bt + 1);
        let mut parent = adapter_node;
        // A software pipeline over groups of blocks: while the running hash absorbs group
        // g + 1 (a serial chain of rounds, bound by latency), the index probes of group g
        // use the idle issue slots. A group's keys are finalised together and their index
        // slots prefetched a group before they are probed.
        const GROUP: usize = 16;
        let blocks = tokens.len() / bt;
        let groups = blocks.div_ceil(GROUP);
        let group_len = |g: usize| (blocks - g * GROUP).min(GROUP);
        let mut states = [[root_hash; GROUP]; 2];
        let mut keys = [[0u128; GROUP]; 2];
        let mut probed = [NONE; GROUP];
        let mut running = root_hash;
        let absorb = |running: &mut PrefixHasher, block: usize| {
            running.extend(&tokens[block * bt..(block + 1) * bt]);
            *running
        };
        if groups > 0 {
            let n = group_len(0);
            for (j, state) in states[0][..n].iter_mut().enumerate() {
                *state = absorb(&mut running, j);
            }
            keyhash::keys_of(&states[0][..n], &mut keys[0][..n]);
            self.tree.prefetch_slots(&keys[0][..n]);
        }
        for g in 0..groups {
            let (cur, next) = (g % 2, (g + 1) % 2);
            let n = group_len(g);
            let next_n = if g + 1 < groups { group_len(g + 1) } else { 0 };
            for j in 0..n.max(next_n) {
                if j < next_n {
                    states[next][j] = absorb(&mut running, (g + 1) * GROUP + j);
                }
                if j < n {
                    probed[j] = self.tree.probe(keys[cur][j]);
                }
            }
            if next_n > 0 {
                let (k, s) = (&mut keys[next][..next_n], &states[next][..next_n]);
                keyhash::keys_of(s, k);
                self.tree.prefetch_slots(k);
            }
            for j in 0..n {
                let node = self.tree.confirm(probed[j], keys[cur][j]);
                if node == NONE || self.tree.node(node).parent != parent {
                    return (path, tail_hash);
                }
                path.push(node);
                tail_hash = states[cur][j];
                parent = node;
            }
        }
        (path, tail_hash)
    }

    /// Pins the adapter of `slot` and `path`, makes room for what must come to the GPU, and
    /// starts the adapter's upload and the swap-in of `path[first_host..]`. Returns the copies
    /// the request must wait for (those and any already carrying its blocks); on failure
    /// nothing stays pinned.
    fn pin_and_load(
        &mut self,
        io: &mut dyn Backend,
        slot: u32,
        path: &[u32],
        first_host: usize,
        now: u64,
    ) -> Result<HashSet<BatchId>> {
        let adapter_node = self.adapter(slot).node;
        let to_load = &path[first_host.min(path.len())..];
        // Make room for the adapter and the swap-ins before touching anything else.
        let adapter_missing = !self.tree.node(adapter_node).residency.gpu_side();
        let adapter_need = if adapter_missing { self.adapter(slot).blocks_needed } else { 0 };
        let need = adapter_need as usize + to_load.len();
        // Pin what we will use first, the host-resident run included, so that making room
        // can neither evict nor prune it.
        self.pin_used(adapter_node, now);
        for &n in path {
            self.pin_used(n, now);
        }
        let started = self.make_room(io, need, adapter_need, now).and_then(|()| {
            let mut waits = HashSet::new();
            // Blocks already on their way to the GPU: wait for the copies that carry them.
            for &n in std::iter::once(&adapter_node).chain(&path[..first_host.min(path.len())]) {
                if self.tree.node(n).residency == Residency::ToGpu {
                    if let Some(b) = self.inflight_batch_of(n) {
                        waits.insert(b);
                    }
                }
            }
            if adapter_missing {
                waits.insert(self.load_adapter(io, slot)?);
            }
            if !to_load.is_empty() {
                waits.insert(self.swap_in(io, to_load)?);
            }
            Ok(waits)
        });
        if started.is_err() {
            // No request will own these pins: drop them, or the prefix and the adapter stay
            // pinned for good.
            self.tree.unpin(adapter_node, now);
            for &n in path {
                self.tree.unpin(n, now);
            }
        }
        started
    }

    /// `match_prefix` that leaves at least `min_uncached` tokens of `tokens` uncached, so the
    /// engine has tokens to compute the next token's logits from (1 suffices) or to meet a
    /// kernel's batch shape. The left tokens count as misses.
    pub fn match_prefix_leaving(
        &mut self,
        io: &mut dyn Backend,
        adapter_id: u64,
        namespace: u64,
        tokens: &[u32],
        min_uncached: usize,
        now: u64,
    ) -> Result<MatchResult> {
        if min_uncached > tokens.len() {
            return Err(Error::invalid(format!(
                "`min_uncached` is {min_uncached} but `tokens` has only {} entries",
                tokens.len()
            )));
        }
        let m = self.match_prefix(io, adapter_id, namespace, &tokens[..tokens.len() - min_uncached], now)?;
        self.stats.miss_tokens += min_uncached as u64;
        Ok(m)
    }

    /// Whether a block copied to the host tier could ever be worth loading back: not when the
    /// cost hints say recomputing it is faster (recompute-or-load would never load it), so the
    /// copy would only spend link time and host room. Public for placement policies written
    /// outside the crate (see `cache::mechanism`).
    pub fn host_copy_pays(&self) -> bool {
        !self.should_recompute(1)
    }

    /// Recompute-or-load (libra policy): loading `blocks` over the host link versus
    /// recomputing their tokens, with the engine's cost hints.
    fn should_recompute(&self, blocks: usize) -> bool {
        if self.cfg.policy != PolicyKind::Libra || self.cfg.prefill_tokens_per_us <= 0.0 {
            return false;
        }
        let load_us = blocks as f64 * self.block_bytes as f64 / self.cfg.link_bytes_per_us;
        let recompute_us = (blocks * self.block_tokens()) as f64 / self.cfg.prefill_tokens_per_us;
        recompute_us < load_us
    }

    /// Chain keys of the full blocks of `tokens` for an adapter and namespace.
    pub fn prefix_keys(&self, adapter_id: u64, namespace: u64, tokens: &[u32]) -> Vec<u128> {
        let mut hash = self.tree.prefix_hasher(self.tree.chain_root(adapter_id, namespace));
        tokens
            .chunks_exact(self.block_tokens())
            .map(|c| {
                hash.extend(c);
                hash.key()
            })
            .collect()
    }
}
