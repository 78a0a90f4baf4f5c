//! Asynchronous host-memory backend: the CPU backend's tiers, with every copy carried out later
//! by a worker thread, as a DMA engine would. The link is full duplex, as PCIe is and as the
//! CUDA backend's two streams use it: each direction completes its batches one at a time in
//! submission order, each no earlier than its bytes divided by the link bandwidth after the
//! previous one in that direction (or its own submission), so an engine driving the cache
//! through the C API meets pending requests, waits and busy retries for real, as it would on a
//! GPU. A grouped swap lands one readiness group at a time, its time split evenly over the
//! groups.
use super::cpu::CpuBackend;
use super::{Backend, BatchId, BatchState, BatchWaiter, BlockMove, Direction, SegmentGroups, TierLayout};
use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A submitted batch waiting on the worker.
struct Job {
    batch: BatchId,
    /// When its next group (or the whole batch) may land.
    due: Instant,
    /// Groups still to land; 0 for a batch submitted whole.
    groups_left: u32,
    per_group: Duration,
}

struct State {
    /// A deferred CPU backend: it holds the tiers and the submitted copies until completed.
    io: CpuBackend,
    /// Submitted batches per direction (indexed by `Direction::lane`), in submission order.
    queues: [VecDeque<Job>; 2],
    /// When the last queued batch of each direction completes: its next one starts no earlier.
    link_free_at: [Instant; 2],
    shutdown: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled on new work, on each completion and on shutdown.
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The worker never panics while holding the lock (copies are plain memory moves of
        // validated ranges); a poisoned lock still holds consistent state.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The asynchronous CPU backend (`LIBRA_BACKEND_CPU_ASYNC` in the C API).
pub struct AsyncCpuBackend {
    shared: Arc<Shared>,
    worker: Option<JoinHandle<()>>,
    layout: TierLayout,
    host_blocks: u32,
    host_base: u64,
    bytes_per_us: f64,
}

impl AsyncCpuBackend {
    /// Wraps a CPU backend (which it switches to deferred mode) and starts the worker thread.
    /// Copies are paced at `link_bytes_per_us` bytes per microsecond (positive).
    pub fn new(mut io: CpuBackend, link_bytes_per_us: f64) -> Result<Self> {
        if !link_bytes_per_us.is_finite() || link_bytes_per_us <= 0.0 {
            return Err(Error::invalid("`link_bytes_per_us` must be positive"));
        }
        io.set_deferred(true);
        let layout = io.gpu_layout().clone();
        let host_blocks = io.host_blocks();
        let host_base = io.host_block_addr(0);
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                io,
                queues: [VecDeque::new(), VecDeque::new()],
                link_free_at: [Instant::now(); 2],
                shutdown: false,
            }),
            changed: Condvar::new(),
        });
        let for_worker = Arc::clone(&shared);
        let worker = std::thread::Builder::new()
            .name("libra-cpu-copy".into())
            .spawn(move || run_worker(&for_worker))
            .map_err(|e| Error::out_of_memory(format!("could not start the copy thread: {e}")))?;
        Ok(AsyncCpuBackend {
            shared,
            worker: Some(worker),
            layout,
            host_blocks,
            host_base,
            bytes_per_us: link_bytes_per_us,
        })
    }

    /// Queues `batch` of `bytes` after the batches before it in `direction`; `groups` > 0 lands
    /// it group by group.
    fn enqueue(&self, state: &mut State, direction: Direction, batch: BatchId, bytes: u64, groups: u32) {
        let now = Instant::now();
        let lane = direction.lane();
        let start = state.link_free_at[lane].max(now);
        let total = Duration::from_nanos((bytes as f64 * 1000.0 / self.bytes_per_us) as u64);
        let per_group = total / groups.max(1);
        state.link_free_at[lane] = start + total;
        state.queues[lane].push_back(Job { batch, due: start + per_group, groups_left: groups, per_group });
        self.shared.changed.notify_all();
    }

    fn block_bytes(&self) -> u64 {
        self.layout.block_bytes()
    }
}

/// Completes queued batches, each direction in order, each batch at its due time, until
/// shutdown.
fn run_worker(shared: &Shared) {
    let mut state = shared.lock();
    loop {
        if state.shutdown {
            return;
        }
        // The direction whose next batch is due first.
        let next = (0..2).filter_map(|l| state.queues[l].front().map(|j| (j.due, l, j.batch))).min();
        let Some((due, lane, batch)) = next else {
            state = shared.changed.wait(state).unwrap_or_else(|p| p.into_inner());
            continue;
        };
        let now = Instant::now();
        if now < due {
            state = shared.changed.wait_timeout(state, due - now).unwrap_or_else(|p| p.into_inner()).0;
            continue;
        }
        // A batch retired before its copy ran is simply gone: `complete*` ignore it.
        let job = state.queues[lane].front_mut().expect("front checked above");
        if job.groups_left > 1 {
            job.groups_left -= 1;
            job.due += job.per_group;
            state.io.complete_groups(batch, 1);
        } else {
            let grouped = job.groups_left == 1;
            state.queues[lane].pop_front();
            if grouped {
                state.io.complete_groups(batch, 1);
            } else {
                state.io.complete(batch, true);
            }
        }
        shared.changed.notify_all();
    }
}

impl Drop for AsyncCpuBackend {
    fn drop(&mut self) {
        self.shared.lock().shutdown = true;
        self.shared.changed.notify_all();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}

/// Waits for one batch without borrowing the backend (the cache's lock is released meanwhile).
struct Waiter {
    shared: Arc<Shared>,
    batch: BatchId,
}

impl BatchWaiter for Waiter {
    fn wait_until(&self, deadline: Instant) -> bool {
        let mut state = self.shared.lock();
        loop {
            if state.io.poll(self.batch) != BatchState::Pending || state.shutdown {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state =
                self.shared.changed.wait_timeout(state, deadline - now).unwrap_or_else(|p| p.into_inner()).0;
        }
    }
}

impl Backend for AsyncCpuBackend {
    fn name(&self) -> &str {
        "cpu-async"
    }
    fn gpu_layout(&self) -> &TierLayout {
        &self.layout
    }
    fn host_blocks(&self) -> u32 {
        self.host_blocks
    }
    fn host_block_addr(&self, block: u32) -> u64 {
        self.host_base + block as u64 * self.block_bytes()
    }
    fn submit_moves(&mut self, direction: Direction, moves: &[BlockMove]) -> Result<BatchId> {
        let mut state = self.shared.lock();
        let batch = state.io.submit_moves(direction, moves)?;
        self.enqueue(&mut state, direction, batch, moves.len() as u64 * self.block_bytes(), 0);
        Ok(batch)
    }
    fn submit_moves_grouped(
        &mut self,
        direction: Direction,
        moves: &[BlockMove],
        groups: SegmentGroups,
    ) -> Result<BatchId> {
        let mut state = self.shared.lock();
        let batch = state.io.submit_moves_grouped(direction, moves, groups)?;
        self.enqueue(&mut state, direction, batch, moves.len() as u64 * self.block_bytes(), groups.count());
        Ok(batch)
    }
    fn groups_done(&mut self, batch: BatchId, groups: u32) -> u32 {
        self.shared.lock().io.groups_done(batch, groups)
    }
    fn submit_upload(&mut self, bytes: &[u8], blocks: &[u32]) -> Result<BatchId> {
        let mut state = self.shared.lock();
        let batch = state.io.submit_upload(bytes, blocks)?;
        self.enqueue(&mut state, Direction::HostToGpu, batch, bytes.len() as u64, 0);
        Ok(batch)
    }
    fn submit_upload_grouped(&mut self, bytes: &[u8], blocks: &[u32], group_ends: &[u32]) -> Result<BatchId> {
        let mut state = self.shared.lock();
        let batch = state.io.submit_upload_grouped(bytes, blocks, group_ends)?;
        self.enqueue(&mut state, Direction::HostToGpu, batch, bytes.len() as u64, group_ends.len() as u32);
        Ok(batch)
    }
    fn poll(&mut self, batch: BatchId) -> BatchState {
        self.shared.lock().io.poll(batch)
    }
    fn wait(&mut self, batch: BatchId, timeout_us: u64) -> BatchState {
        Waiter { shared: Arc::clone(&self.shared), batch }.wait_until(super::deadline_after(timeout_us));
        self.poll(batch)
    }
    fn retire(&mut self, batch: BatchId) {
        let mut state = self.shared.lock();
        state.io.retire(batch);
        state.queues.iter_mut().for_each(|q| q.retain(|j| j.batch != batch));
    }
    fn waiter(&self, batch: BatchId) -> Option<Box<dyn BatchWaiter>> {
        if self.shared.lock().io.poll(batch) != BatchState::Pending {
            return None;
        }
        Some(Box::new(Waiter { shared: Arc::clone(&self.shared), batch }))
    }
    fn read_gpu_block(&mut self, block: u32, out: &mut [u8]) -> Result<()> {
        self.shared.lock().io.read_gpu_block(block, out)
    }
    fn write_gpu_block(&mut self, block: u32, data: &[u8]) -> Result<()> {
        self.shared.lock().io.write_gpu_block(block, data)
    }
    fn read_host_block(&mut self, block: u32, out: &mut [u8]) -> Result<()> {
        self.shared.lock().io.read_host_block(block, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_complete_later_on_the_worker() {
        // 4 KiB blocks at 1 byte/us: a one-block move takes about 4 ms.
        let cpu = CpuBackend::new(4096, 4, 4).unwrap();
        let mut io = AsyncCpuBackend::new(cpu, 1.0).unwrap();
        io.write_gpu_block(0, &[7u8; 4096]).unwrap();
        let b = io.submit_moves(Direction::GpuToHost, &[BlockMove { gpu_block: 0, host_block: 1 }]).unwrap();
        assert_eq!(io.poll(b), BatchState::Pending);
        let mut host = vec![0u8; 4096];
        io.read_host_block(1, &mut host).unwrap();
        assert!(host.iter().all(|&x| x == 0), "copied before its time");
        let w = io.waiter(b).expect("a pending batch has a waiter");
        assert!(w.wait_until(Instant::now() + Duration::from_secs(10)));
        assert_eq!(io.poll(b), BatchState::Done);
        io.read_host_block(1, &mut host).unwrap();
        assert!(host.iter().all(|&x| x == 7));
        assert!(io.waiter(b).is_none());
        io.retire(b);
    }

    #[test]
    fn batches_complete_in_submission_order_and_wait_times_out() {
        let cpu = CpuBackend::new(4096, 4, 4).unwrap();
        let mut io = AsyncCpuBackend::new(cpu, 0.5).unwrap();
        let a = io.submit_upload(&[1u8; 4096], &[1]).unwrap();
        let b = io.submit_upload(&[2u8; 10], &[2]).unwrap();
        // `a` alone takes about 8 ms: a 0 us wait cannot see it finish.
        assert_eq!(io.wait(a, 0), BatchState::Pending);
        assert_eq!(io.wait(b, 10_000_000), BatchState::Done);
        assert_eq!(io.poll(a), BatchState::Done, "a later batch finished before an earlier one");
        assert!(AsyncCpuBackend::new(CpuBackend::new(64, 1, 1).unwrap(), 0.0).is_err());
    }

    #[test]
    fn a_swap_in_does_not_wait_behind_a_swap_out() {
        // 1 MiB blocks at 1 byte/us: the swap-out takes about 1 s, the 4 KiB upload after it
        // about 4 ms; on a queue shared by both directions it would land after the swap-out.
        let cpu = CpuBackend::new(1 << 20, 2, 2).unwrap();
        let mut io = AsyncCpuBackend::new(cpu, 1.0).unwrap();
        let out =
            io.submit_moves(Direction::GpuToHost, &[BlockMove { gpu_block: 0, host_block: 0 }]).unwrap();
        let up = io.submit_upload(&[3u8; 4096], &[1]).unwrap();
        assert_eq!(io.wait(up, 10_000_000), BatchState::Done);
        assert_eq!(io.poll(out), BatchState::Pending, "the swap-in waited for the swap-out");
        assert_eq!(io.wait(out, 10_000_000), BatchState::Done);
        let mut gpu = vec![0u8; 4096];
        io.read_gpu_block(1, &mut gpu).unwrap();
        assert!(gpu.iter().all(|&x| x == 3));
    }

    #[test]
    fn grouped_moves_land_group_by_group() {
        // Two segments of 1 KiB per block (an engine's K and V, say), adopted from a buffer.
        let mut mem = vec![0u8; 2 * 2 * 1024];
        let base = mem.as_mut_ptr() as u64;
        let segs = vec![
            crate::backend::Segment { base, bytes_per_block: 1024, stride: 1024 },
            crate::backend::Segment { base: base + 2048, bytes_per_block: 1024, stride: 1024 },
        ];
        // SAFETY: `mem` outlives the backend and is not resized.
        let cpu = unsafe { CpuBackend::adopt(segs, 2, 2) }.unwrap();
        let mut io = AsyncCpuBackend::new(cpu, 0.02).unwrap();
        io.write_gpu_block(1, &[5u8; 2048]).unwrap();
        let mv = [BlockMove { gpu_block: 1, host_block: 0 }];
        let b = io.submit_moves_grouped(Direction::GpuToHost, &mv, SegmentGroups::new(2, 1)).unwrap();
        let mut seen = vec![io.groups_done(b, 2)];
        while io.poll(b) == BatchState::Pending {
            seen.push(io.groups_done(b, 2));
            std::thread::sleep(Duration::from_micros(200));
        }
        seen.push(io.groups_done(b, 2));
        assert!(seen.windows(2).all(|w| w[0] <= w[1]), "groups went backwards: {seen:?}");
        assert_eq!((seen[0], *seen.last().unwrap()), (0, 2));
        let mut host = vec![0u8; 2048];
        io.read_host_block(0, &mut host).unwrap();
        assert!(host.iter().all(|&x| x == 5));
        drop(io);
        drop(mem);
    }

    #[test]
    fn drop_with_copies_queued_returns() {
        let cpu = CpuBackend::new(1 << 16, 2, 2).unwrap();
        let mut io = AsyncCpuBackend::new(cpu, 1e-3).unwrap();
        let b = io.submit_moves(Direction::HostToGpu, &[BlockMove { gpu_block: 1, host_block: 0 }]).unwrap();
        assert_eq!(io.poll(b), BatchState::Pending);
        drop(io);
    }
}
