//! A backend wrapper that injects faults: submissions that fail (the call returns an error) and
//! batches that fail on completion (the batch reports `Failed` and nothing is copied), at chosen
//! submission numbers or at random with a seed. It can also hold batches until a test completes
//! them, in any order, so copies finish late. Used by the fault-injection tests and the fuzzers.
//!
//! A failed batch never touches its destination, so a destination keeps whatever stale bytes it
//! held: if the cache ever trusted a failed copy, the data checks in the tests would see it.
use super::{Backend, BatchId, BatchState, BatchWaiter, BlockMove, Direction, TierLayout};
use crate::error::{Error, Result};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Instant;

/// Which submissions fail, and how.
#[derive(Debug, Clone, Default)]
pub struct FaultPlan {
    /// Seed of the random choices (xorshift; the same seed and call sequence repeat a run).
    pub seed: u64,
    /// Chance that a submission is refused (the call returns an error).
    pub submit_fail_rate: f64,
    /// Chance that an accepted batch fails when it completes.
    pub complete_fail_rate: f64,
    /// Submission numbers (0-based, counting every submission) that are refused.
    pub fail_submissions: BTreeSet<u64>,
    /// Submission numbers whose batch fails on completion.
    pub fail_completions: BTreeSet<u64>,
    /// Hold every batch until `FaultControl::complete` decides it.
    pub hold: bool,
}

/// Counters of what was injected.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FaultCounters {
    pub submissions: u64,
    pub submit_faults: u64,
    pub completion_faults: u64,
    pub completed: u64,
}

impl FaultCounters {
    pub fn faults(&self) -> u64 {
        self.submit_faults + self.completion_faults
    }
}

/// A batch's work, kept while it is held so it can run (or be dropped) later.
#[derive(Debug, Clone)]
enum Work {
    Moves(Direction, Vec<BlockMove>),
    Upload(Vec<u8>, Vec<u32>),
    DeviceCopies(Vec<(u32, u32)>),
}

#[derive(Debug)]
enum Slot {
    /// Held work, and whether it is doomed to fail whatever the decision.
    Held(Work, bool),
    Inner(BatchId),
    Failed(String),
}

#[derive(Debug, Default)]
struct Shared {
    counters: FaultCounters,
    /// Batches held and not yet decided.
    held: BTreeSet<BatchId>,
    /// Decisions from `FaultControl::complete`, applied at the backend's next call.
    decisions: Vec<(BatchId, bool)>,
    hold: bool,
    rng: u64,
    fail_submissions: BTreeSet<u64>,
    fail_completions: BTreeSet<u64>,
    submit_fail_rate: f64,
    complete_fail_rate: f64,
}

impl Shared {
    fn chance(&mut self, p: f64) -> bool {
        if p <= 0.0 {
            return false;
        }
        // xorshift64*: small, seedable, good enough for choosing faults.
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        let x = self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d);
        ((x >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

/// The state shared by a backend, its controls and its waiters; `decided` wakes waiters when a
/// held batch is decided.
#[derive(Debug, Default)]
struct SharedCell {
    state: Mutex<Shared>,
    decided: Condvar,
}

impl SharedCell {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        // A test that panicked while holding it already failed; keep reading the counters.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Blocks until a held batch is decided.
struct HeldWaiter {
    shared: Arc<SharedCell>,
    batch: BatchId,
}

impl BatchWaiter for HeldWaiter {
    fn wait_until(&self, deadline: Instant) -> bool {
        let mut s = self.shared.lock();
        loop {
            if !s.held.contains(&self.batch) || s.decisions.iter().any(|d| d.0 == self.batch) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            s = match self.shared.decided.wait_timeout(s, deadline - now) {
                Ok((guard, _)) => guard,
                Err(p) => p.into_inner().0,
            };
        }
    }
}

/// A handle to a `FaultyBackend` that stays usable after the backend is boxed into a cache:
/// it reads the counters, lists held batches and decides them.
#[derive(Debug, Clone)]
pub struct FaultControl {
    shared: Arc<SharedCell>,
}

impl FaultControl {
    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock()
    }
    pub fn counters(&self) -> FaultCounters {
        self.lock().counters
    }
    /// Held batches not yet decided, oldest first.
    pub fn held(&self) -> Vec<BatchId> {
        let s = self.lock();
        s.held.iter().copied().filter(|b| !s.decisions.iter().any(|d| d.0 == *b)).collect()
    }
    /// Completes a held batch (`ok`: copy it; else it fails). Takes effect at the backend's
    /// next poll or wait.
    pub fn complete(&self, batch: BatchId, ok: bool) {
        let mut s = self.lock();
        if s.held.contains(&batch) && !s.decisions.iter().any(|d| d.0 == batch) {
            s.decisions.push((batch, ok));
            self.shared.decided.notify_all();
        }
    }
    /// Starts or stops holding new batches (held ones stay held until decided).
    pub fn set_hold(&self, hold: bool) {
        self.lock().hold = hold;
    }
    pub fn set_rates(&self, submit_fail_rate: f64, complete_fail_rate: f64) {
        let mut s = self.lock();
        s.submit_fail_rate = submit_fail_rate;
        s.complete_fail_rate = complete_fail_rate;
    }
    /// Stops injecting: no more chosen or random faults (held batches stay held).
    pub fn disable(&self) {
        let mut s = self.lock();
        s.submit_fail_rate = 0.0;
        s.complete_fail_rate = 0.0;
        s.fail_submissions.clear();
        s.fail_completions.clear();
    }
}

/// Wraps a backend and injects faults into its submissions and completions.
pub struct FaultyBackend<B: Backend> {
    inner: B,
    shared: Arc<SharedCell>,
    batches: HashMap<BatchId, Slot>,
    next: BatchId,
}

impl<B: Backend> FaultyBackend<B> {
    pub fn new(inner: B, plan: FaultPlan) -> Self {
        let shared = Shared {
            hold: plan.hold,
            rng: plan.seed | 1,
            submit_fail_rate: plan.submit_fail_rate,
            complete_fail_rate: plan.complete_fail_rate,
            fail_submissions: plan.fail_submissions,
            fail_completions: plan.fail_completions,
            ..Default::default()
        };
        let shared = Arc::new(SharedCell { state: Mutex::new(shared), decided: Condvar::new() });
        FaultyBackend { inner, shared, batches: HashMap::new(), next: 1 }
    }
    pub fn control(&self) -> FaultControl {
        FaultControl { shared: self.shared.clone() }
    }
    pub fn inner(&self) -> &B {
        &self.inner
    }
    pub fn inner_mut(&mut self) -> &mut B {
        &mut self.inner
    }

    fn lock(&self) -> MutexGuard<'_, Shared> {
        self.shared.lock()
    }

    fn run(&mut self, work: &Work) -> Result<BatchId> {
        match work {
            Work::Moves(d, m) => self.inner.submit_moves(*d, m),
            Work::Upload(bytes, blocks) => self.inner.submit_upload(bytes, blocks),
            Work::DeviceCopies(p) => self.inner.submit_device_copies(p),
        }
    }

    /// Validates `work` against the inner backend's geometry, so that a refused id is reported
    /// at submission as the inner backend would, not hidden in a held batch.
    fn validate(&self, work: &Work) -> Result<()> {
        match work {
            Work::Moves(_, moves) => self.inner.check_moves(moves),
            Work::Upload(bytes, blocks) => self.inner.check_upload(bytes, blocks),
            Work::DeviceCopies(pairs) => self.inner.check_device_copies(pairs),
        }
    }

    fn submit(&mut self, work: Work) -> Result<BatchId> {
        let (number, refuse, fail_later, hold) = {
            let mut s = self.lock();
            let number = s.counters.submissions;
            s.counters.submissions += 1;
            let rate = s.submit_fail_rate;
            let refuse = s.fail_submissions.contains(&number) || s.chance(rate);
            let rate = s.complete_fail_rate;
            let fail_later = !refuse && (s.fail_completions.contains(&number) || s.chance(rate));
            if refuse {
                s.counters.submit_faults += 1;
            }
            (number, refuse, fail_later, s.hold)
        };
        if refuse {
            return Err(Error::device(format!("injected fault: submission {number} refused")));
        }
        self.validate(&work)?;
        let id = self.next;
        self.next += 1;
        let slot = if hold {
            self.lock().held.insert(id);
            Slot::Held(work, fail_later)
        } else if fail_later {
            self.lock().counters.completion_faults += 1;
            Slot::Failed(format!("injected fault: batch of submission {number} failed"))
        } else {
            Slot::Inner(self.run(&work)?)
        };
        self.batches.insert(id, slot);
        Ok(id)
    }

    /// Applies the decisions taken through `FaultControl::complete`.
    fn apply_decisions(&mut self) {
        let decisions = {
            let mut s = self.lock();
            let d = std::mem::take(&mut s.decisions);
            for (b, _) in &d {
                s.held.remove(b);
            }
            d
        };
        for (id, ok) in decisions {
            let Some(Slot::Held(work, doomed)) = self.batches.remove(&id) else { continue };
            let ok = ok && !doomed;
            let slot = if ok {
                match self.run(&work) {
                    Ok(inner) => Slot::Inner(inner),
                    Err(e) => Slot::Failed(format!("held batch could not run: {}", e.message)),
                }
            } else {
                self.lock().counters.completion_faults += 1;
                Slot::Failed(format!("injected fault: held batch {id} failed"))
            };
            self.batches.insert(id, slot);
        }
    }

    fn state(&mut self, batch: BatchId, timeout_us: Option<u64>) -> BatchState {
        self.apply_decisions();
        let state = match self.batches.get(&batch) {
            None => BatchState::Failed(format!("unknown batch {batch}")),
            Some(Slot::Held(..)) => BatchState::Pending,
            Some(Slot::Failed(why)) => BatchState::Failed(why.clone()),
            Some(&Slot::Inner(b)) => match timeout_us {
                Some(t) => self.inner.wait(b, t),
                None => self.inner.poll(b),
            },
        };
        if state == BatchState::Done {
            self.lock().counters.completed += 1;
        }
        state
    }
}

impl<B: Backend> Backend for FaultyBackend<B> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn gpu_layout(&self) -> &TierLayout {
        self.inner.gpu_layout()
    }
    fn host_blocks(&self) -> u32 {
        self.inner.host_blocks()
    }
    fn gpu_block_addr(&self, block: u32, segment: usize) -> u64 {
        self.inner.gpu_block_addr(block, segment)
    }
    fn host_block_addr(&self, block: u32) -> u64 {
        self.inner.host_block_addr(block)
    }
    fn submit_moves(&mut self, direction: Direction, moves: &[BlockMove]) -> Result<BatchId> {
        self.submit(Work::Moves(direction, moves.to_vec()))
    }
    fn submit_upload(&mut self, bytes: &[u8], blocks: &[u32]) -> Result<BatchId> {
        self.submit(Work::Upload(bytes.to_vec(), blocks.to_vec()))
    }
    fn submit_device_copies(&mut self, pairs: &[(u32, u32)]) -> Result<BatchId> {
        self.submit(Work::DeviceCopies(pairs.to_vec()))
    }
    fn poll(&mut self, batch: BatchId) -> BatchState {
        self.state(batch, None)
    }
    fn wait(&mut self, batch: BatchId, timeout_us: u64) -> BatchState {
        // A held batch completes only when a test decides it: waiting cannot help.
        self.state(batch, Some(timeout_us))
    }
    fn retire(&mut self, batch: BatchId) {
        if let Some(slot) = self.batches.remove(&batch) {
            match slot {
                Slot::Inner(b) => self.inner.retire(b),
                Slot::Held(..) => {
                    self.lock().held.remove(&batch);
                }
                Slot::Failed(_) => {}
            }
        }
    }
    fn batch_event(&self, batch: BatchId) -> *mut std::ffi::c_void {
        match self.batches.get(&batch) {
            Some(&Slot::Inner(b)) => self.inner.batch_event(b),
            _ => std::ptr::null_mut(),
        }
    }
    fn waiter(&self, batch: BatchId) -> Option<Box<dyn BatchWaiter>> {
        match self.batches.get(&batch)? {
            &Slot::Inner(b) => self.inner.waiter(b),
            Slot::Held(..) => Some(Box::new(HeldWaiter { shared: self.shared.clone(), batch })),
            Slot::Failed(_) => None,
        }
    }
    fn read_gpu_block(&mut self, block: u32, out: &mut [u8]) -> Result<()> {
        self.inner.read_gpu_block(block, out)
    }
    fn write_gpu_block(&mut self, block: u32, data: &[u8]) -> Result<()> {
        self.inner.write_gpu_block(block, data)
    }
    fn read_host_block(&mut self, block: u32, out: &mut [u8]) -> Result<()> {
        self.inner.read_host_block(block, out)
    }
}
