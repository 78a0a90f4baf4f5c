//! The host link model: a backend that moves no bytes and completes each copy when a simulated
//! link, one FIFO queue per direction per GPU, has carried it.
use crate::hw::Hardware;
use libra::backend::{
    upload_parts, Backend, BatchId, BatchState, BlockMove, Direction, Segment, SegmentGroups, TierLayout,
};
use libra::error::Result as LibResult;
use std::collections::{BTreeMap, HashMap};

/// A backend that moves no bytes: each block stands for `real_block_bytes` on one GPU, and a
/// batch completes when the host link has carried it. The link is full duplex, as PCIe is, and
/// each direction is one FIFO queue: copies to the GPU (swap-ins and adapter uploads) never wait
/// behind copies to the host, as on libra's CUDA backend, vLLM's CPU offloading and SGLang's
/// HiCache, which each run the two directions on their own streams.
/// The GPU tier has one segment per model layer, so a grouped swap-in lands layer group by
/// layer group, each group one more launch. Blocking waits advance the engine clock (the engine
/// thread is stalled meanwhile).
pub struct TimingBackend {
    layout: TierLayout,
    host_blocks: u32,
    real_block_bytes: f64,
    link_bytes_per_us: f64,
    batch_latency_us: f64,
    group_latency_us: f64,
    /// The engine clock, microseconds.
    pub now: u64,
    /// When each direction's queue is free, indexed by `Direction::lane`.
    link_free_at: [u64; 2],
    next: BatchId,
    pending: BTreeMap<BatchId, u64>,
    /// When each group of a grouped batch lands.
    group_done: HashMap<BatchId, Vec<u64>>,
    pub bytes_to_gpu: u64,
    pub bytes_to_host: u64,
    /// KV blocks copied host -> GPU (adapter uploads excluded).
    pub kv_blocks_to_gpu: u64,
    /// Microseconds the engine spent blocked in `wait`.
    pub stalled_us: u64,
}

impl TimingBackend {
    /// `group_latency_us`: link time one more readiness group costs a swap-in (its launch).
    pub fn new(
        gpu_blocks: u32,
        host_blocks: u32,
        real_block_bytes: f64,
        hw: &Hardware,
        group_latency_us: f64,
    ) -> Self {
        // One logical byte per block and layer: the cache keeps no real data, only ids.
        let segments = (0..hw.model.layers.max(1) as u64)
            .map(|l| Segment { base: (1 << 20) + l * gpu_blocks as u64, bytes_per_block: 1, stride: 1 })
            .collect();
        TimingBackend {
            layout: TierLayout::new(segments, gpu_blocks).expect("valid layout"),
            host_blocks,
            real_block_bytes,
            link_bytes_per_us: hw.gpu.link_bytes_per_s / 1e6,
            batch_latency_us: hw.link_batch_latency_s * 1e6,
            group_latency_us,
            now: 0,
            link_free_at: [0, 0],
            next: 1,
            pending: BTreeMap::new(),
            group_done: HashMap::new(),
            bytes_to_gpu: 0,
            bytes_to_host: 0,
            kv_blocks_to_gpu: 0,
            stalled_us: 0,
        }
    }
    fn count_moves(&mut self, direction: Direction, blocks: usize) {
        let bytes = (blocks as f64 * self.real_block_bytes) as u64;
        match direction {
            Direction::GpuToHost => self.bytes_to_host += bytes,
            Direction::HostToGpu => {
                self.bytes_to_gpu += bytes;
                self.kv_blocks_to_gpu += blocks as u64;
            }
        }
    }
    fn enqueue(&mut self, direction: Direction, blocks: usize) -> BatchId {
        let id = self.enqueue_groups(direction, blocks, 1);
        self.group_done.remove(&id);
        id
    }
    /// Whether a batch in flight was submitted grouped (a grouped swap-in or upload).
    pub fn is_grouped(&self, batch: BatchId) -> bool {
        self.group_done.contains_key(&batch)
    }
    /// When a batch submitted now in `direction` starts crossing the link: after every batch
    /// queued before it in that direction, and the batch's own latency.
    fn link_start(&self, direction: Direction) -> f64 {
        self.now.max(self.link_free_at[direction.lane()]) as f64 + self.batch_latency_us
    }
    /// A batch whose bytes cross the link in `groups` equal parts, one after the other.
    fn enqueue_groups(&mut self, direction: Direction, blocks: usize, groups: u32) -> BatchId {
        let bytes = blocks as f64 * self.real_block_bytes;
        let start = self.link_start(direction);
        let g = groups.max(1) as f64;
        let per_group = bytes / self.link_bytes_per_us / g + self.group_latency_us;
        let times: Vec<u64> = (1..=groups.max(1))
            .map(|k| (start + k as f64 * per_group - self.group_latency_us).ceil() as u64)
            .collect();
        self.register(direction, times)
    }
    /// An upload whose parts (in blocks) cross the link one after the other, each part one more
    /// launch: `enqueue_groups` with unequal parts, summed part by part (the two round alike
    /// only for equal parts, so each keeps its own arithmetic).
    fn enqueue_parts(&mut self, parts: &[f64]) -> BatchId {
        let mut t = self.link_start(Direction::HostToGpu) - self.group_latency_us;
        let times: Vec<u64> = parts
            .iter()
            .map(|&blocks| {
                t += blocks * self.real_block_bytes / self.link_bytes_per_us + self.group_latency_us;
                t.ceil() as u64
            })
            .collect();
        self.register(Direction::HostToGpu, times)
    }
    /// A new batch in `direction` whose groups land at `times` (the last completes it).
    fn register(&mut self, direction: Direction, times: Vec<u64>) -> BatchId {
        let done = *times.last().expect("at least one group");
        self.link_free_at[direction.lane()] = done;
        let id = self.next;
        self.next += 1;
        self.pending.insert(id, done);
        self.group_done.insert(id, times);
        id
    }
    /// When group `group` of a batch in flight lands (the whole batch, for an ungrouped one).
    pub fn group_ready_at(&self, batch: BatchId, group: u32) -> Option<u64> {
        match self.group_done.get(&batch) {
            Some(t) => t.get(group as usize).or(t.last()).copied(),
            None => self.pending.get(&batch).copied(),
        }
    }
    /// When the next copy in flight completes.
    pub fn next_completion(&self) -> Option<u64> {
        self.pending.values().copied().filter(|&t| t > self.now).min()
    }
}

impl Backend for TimingBackend {
    fn name(&self) -> &str {
        "timing"
    }
    fn gpu_layout(&self) -> &TierLayout {
        &self.layout
    }
    fn host_blocks(&self) -> u32 {
        self.host_blocks
    }
    fn host_block_addr(&self, block: u32) -> u64 {
        block as u64
    }
    fn submit_moves(&mut self, direction: Direction, moves: &[BlockMove]) -> LibResult<BatchId> {
        self.count_moves(direction, moves.len());
        Ok(self.enqueue(direction, moves.len()))
    }
    fn submit_moves_grouped(
        &mut self,
        direction: Direction,
        moves: &[BlockMove],
        groups: SegmentGroups,
    ) -> LibResult<BatchId> {
        self.check_groups(groups)?;
        self.count_moves(direction, moves.len());
        Ok(self.enqueue_groups(direction, moves.len(), groups.count()))
    }
    fn groups_done(&mut self, batch: BatchId, groups: u32) -> u32 {
        let now = self.now;
        match self.group_done.get(&batch) {
            Some(t) => t.iter().take_while(|&&t| t <= now).count() as u32,
            None if self.pending.get(&batch).is_some_and(|&t| t <= now) => groups,
            None => 0,
        }
    }
    fn submit_upload(&mut self, bytes: &[u8], blocks: &[u32]) -> LibResult<BatchId> {
        let _ = bytes;
        self.bytes_to_gpu += (blocks.len() as f64 * self.real_block_bytes) as u64;
        Ok(self.enqueue(Direction::HostToGpu, blocks.len()))
    }
    fn submit_upload_grouped(
        &mut self,
        bytes: &[u8],
        blocks: &[u32],
        group_ends: &[u32],
    ) -> LibResult<BatchId> {
        let _ = bytes;
        self.check_upload_groups(blocks.len(), group_ends)?;
        self.bytes_to_gpu += (blocks.len() as f64 * self.real_block_bytes) as u64;
        let bb = self.layout.block_bytes();
        let parts: Vec<f64> =
            upload_parts(group_ends, bb, blocks.len() * bb as usize).map(|p| p.blocks.len() as f64).collect();
        Ok(self.enqueue_parts(&parts))
    }
    fn poll(&mut self, batch: BatchId) -> BatchState {
        match self.pending.get(&batch) {
            Some(&t) if t <= self.now => BatchState::Done,
            Some(_) => BatchState::Pending,
            None => BatchState::Failed(format!("unknown batch {batch}")),
        }
    }
    fn wait(&mut self, batch: BatchId, timeout_us: u64) -> BatchState {
        if let Some(&t) = self.pending.get(&batch) {
            let until = t.min(self.now + timeout_us);
            if until > self.now {
                self.stalled_us += until - self.now;
                self.now = until;
            }
        }
        self.poll(batch)
    }
    fn retire(&mut self, batch: BatchId) {
        self.pending.remove(&batch);
        self.group_done.remove(&batch);
    }
    fn read_gpu_block(&mut self, _block: u32, out: &mut [u8]) -> LibResult<()> {
        out.fill(0);
        Ok(())
    }
    fn write_gpu_block(&mut self, _block: u32, _data: &[u8]) -> LibResult<()> {
        Ok(())
    }
    fn read_host_block(&mut self, _block: u32, out: &mut [u8]) -> LibResult<()> {
        out.fill(0);
        Ok(())
    }
}
