//! An open request's bookkeeping, kept by the randomized tests and the fuzz harness while they
//! drive a cache as an engine would: what the match found, which blocks are allocated and not
//! yet committed, and how far the prompt is covered.
use crate::fixtures::pattern;
use libra::backend::Backend;
use libra::cache::CacheCore;

/// One request between its match and its release or abort.
pub struct Open {
    pub id: u64,
    pub adapter: u64,
    /// The namespace it was matched in.
    pub ns: u64,
    /// The whole prompt.
    pub tokens: Vec<u32>,
    /// Tokens covered so far (cached + committed): a whole number of blocks.
    pub covered: usize,
    /// Allocated, uncommitted blocks, in allocation order.
    pub fresh: Vec<u32>,
    /// Block ids of the matched prefix.
    pub matched: Vec<u32>,
    /// Whether the matched blocks' contents were checked once ready.
    pub verified: bool,
    /// Leading layer groups last seen ready.
    pub ready_groups: u32,
}

impl Open {
    /// A request a match just opened, `cached_tokens` of `tokens` found in blocks `matched`.
    pub fn new(
        id: u64,
        adapter: u64,
        ns: u64,
        tokens: Vec<u32>,
        cached_tokens: usize,
        matched: Vec<u32>,
    ) -> Self {
        Open {
            id,
            adapter,
            ns,
            tokens,
            covered: cached_tokens,
            fresh: Vec::new(),
            matched,
            verified: false,
            ready_groups: 0,
        }
    }

    /// Tokens an allocation asks for to reach the end of the prompt plus `extra`, past what is
    /// covered or already allocated.
    pub fn tokens_to_allocate(&self, extra: usize, block_tokens: usize) -> usize {
        (self.tokens.len() + extra).saturating_sub(self.covered + self.fresh.len() * block_tokens)
    }

    /// Blocks a commit can share now: whole prompt blocks past the covered ones that have an
    /// allocated block.
    pub fn committable(&self, block_tokens: usize) -> usize {
        let full =
            (self.tokens.len() / block_tokens * block_tokens).saturating_sub(self.covered) / block_tokens;
        full.min(self.fresh.len())
    }

    /// The token ids of the next `n` blocks: what a commit of them passes.
    pub fn next_tokens(&self, n: usize, block_tokens: usize) -> &[u32] {
        &self.tokens[self.covered..self.covered + n * block_tokens]
    }

    /// Writes into the next `n` fresh blocks the pattern of their prefix key, as the engine
    /// fills blocks before it commits them (a later hit reads the pattern back).
    pub fn fill_next(&self, core: &CacheCore, io: &mut dyn Backend, n: usize, block_tokens: usize) {
        let keys = core.prefix_keys(self.adapter, self.ns, &self.tokens[..self.covered + n * block_tokens]);
        for (j, &b) in self.fresh[..n].iter().enumerate() {
            io.write_gpu_block(b, &pattern(keys[self.covered / block_tokens + j])).unwrap();
        }
    }

    /// Records that a commit of the next `n` blocks succeeded.
    pub fn committed(&mut self, n: usize, block_tokens: usize) {
        self.covered += n * block_tokens;
        self.fresh.drain(..n);
    }
}
