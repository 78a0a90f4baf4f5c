//! A backend wrapper that injects faults: submissions that fail (the call returns an error) and
//! batches that fail on completion (the batch reports `Failed` and nothing is copied), at chosen
//! submission numbers or at random with a seed. It can also hold batches until a test completes
//! them, in any order, so copies finish late. Grouped swaps (layer-wise readiness) and grouped
//! uploads (adapters registered layer by layer) can be held and released group by group, and
//! can fail at a chosen group after the earlier ones landed.
//! Used by the fault-injection tests and the fuzzers.
//!
//! A failed batch never touches its destination beyond the groups that landed before the
//! failure, so the rest keeps whatever stale bytes it held: if the cache ever trusted a failed
//! copy, the data checks in the tests would see it.
use libra::backend::{
    upload_parts, Backend, BatchId, BatchState, BatchWaiter, BlockMove, Direction, SegmentGroups, TierLayout,
};
use libra::error::{Error, Result};
use std::collections::{BTreeMap, BTreeSet, HashMap};
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
    /// Submission number -> group at which that grouped swap or upload fails: the groups before it land,
    /// that one and the later ones never do. On an ungrouped batch it fails the whole batch.
    pub fail_groups: BTreeMap<u64, u32>,
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
    Grouped(Direction, Vec<BlockMove>, SegmentGroups),
    Upload(Vec<u8>, Vec<u32>),
    /// An upload landing in groups: bytes, blocks, and each group's end (a block count).
    GroupedUpload(Vec<u8>, Vec<u32>, Vec<u32>),
}

impl Work {
    fn groups(&self) -> u32 {
        match self {
            Work::Grouped(_, _, g) => g.count(),
            Work::GroupedUpload(_, _, ends) => ends.len() as u32,
            _ => 1,
        }
    }
    /// Whether the work's bytes land group by group (swap-ins and grouped uploads), so that
    /// the groups before a failure are in place and reported; swap-outs land whole.
    fn lands_in_groups(&self) -> bool {
        matches!(self, Work::Grouped(Direction::HostToGpu, ..) | Work::GroupedUpload(..))
    }
}

#[derive(Debug)]
enum Slot {
    /// Held work; the group at which it is doomed to fail whatever the decision (0: all of
    /// it); the groups that already landed.
    Held {
        work: Work,
        fail_at: Option<u32>,
        landed: u32,
    },
    Inner(BatchId),
    /// Why it failed, and the groups that landed before.
    Failed(String, u32),
}

/// A decision on a held batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Decision {
    /// Complete the rest (true) or fail it.
    All(bool),
    /// Land the next groups.
    Groups(u32),
}

#[derive(Debug, Default)]
struct Shared {
    counters: FaultCounters,
    /// Batches held and not yet decided.
    held: BTreeSet<BatchId>,
    /// Decisions from `FaultControl::complete`, applied at the backend's next call.
    decisions: Vec<(BatchId, Decision)>,
    hold: bool,
    rng: u64,
    fail_submissions: BTreeSet<u64>,
    fail_completions: BTreeSet<u64>,
    fail_groups: BTreeMap<u64, u32>,
    submit_fail_rate: f64,
    complete_fail_rate: f64,
}

impl Shared {
    /// Whether the whole of a held batch has been decided.
    fn decided_whole(&self, batch: BatchId) -> bool {
        self.decisions.iter().any(|&(b, d)| b == batch && matches!(d, Decision::All(_)))
    }
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
        s.held.iter().copied().filter(|&b| !s.decided_whole(b)).collect()
    }
    /// Completes a held batch (`ok`: copy it; else it fails). Takes effect at the backend's
    /// next poll or wait.
    pub fn complete(&self, batch: BatchId, ok: bool) {
        let mut s = self.lock();
        if s.held.contains(&batch) && !s.decided_whole(batch) {
            s.decisions.push((batch, Decision::All(ok)));
            self.shared.decided.notify_all();
        }
    }
    /// Lands the next `n` groups of a held grouped swap or upload (the last ones complete it; a
    /// group the plan dooms fails it). Held swap-outs land whole. Takes effect at the backend's next call.
    pub fn complete_groups(&self, batch: BatchId, n: u32) {
        let mut s = self.lock();
        if s.held.contains(&batch) && !s.decided_whole(batch) {
            s.decisions.push((batch, Decision::Groups(n)));
            self.shared.decided.notify_all();
        }
    }
    /// Makes the batch of submission `number` (0-based, counting every submission) fail at
    /// group `group`, as `FaultPlan::fail_groups` does.
    pub fn fail_group(&self, number: u64, group: u32) {
        self.lock().fail_groups.insert(number, group);
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
        s.fail_groups.clear();
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
            fail_groups: plan.fail_groups,
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
            Work::Grouped(d, m, g) => self.inner.submit_moves_grouped(*d, m, *g),
            Work::Upload(bytes, blocks) => self.inner.submit_upload(bytes, blocks),
            Work::GroupedUpload(bytes, blocks, ends) => self.inner.submit_upload_grouped(bytes, blocks, ends),
        }
    }

    /// Validates `work` against the inner backend's geometry, so that a refused id is reported
    /// at submission as the inner backend would, not hidden in a held batch.
    fn validate(&self, work: &Work) -> Result<()> {
        match work {
            Work::Moves(_, moves) => self.inner.check_moves(moves),
            Work::Grouped(_, moves, groups) => {
                self.inner.check_moves(moves)?;
                self.inner.check_groups(*groups)
            }
            Work::Upload(bytes, blocks) => self.inner.check_upload(bytes, blocks),
            Work::GroupedUpload(bytes, blocks, ends) => {
                self.inner.check_upload(bytes, blocks)?;
                self.inner.check_upload_groups(blocks.len(), ends)
            }
        }
    }

    /// Lands group `g` of a grouped swap-in or upload now, through the inner backend's
    /// synchronous block access: the group's bytes of every destination block, nothing else.
    fn land_group(&mut self, work: &Work, g: u32) -> Result<()> {
        if let Work::GroupedUpload(bytes, blocks, ends) = work {
            return self.land_upload_group(bytes, blocks, ends, g);
        }
        let Work::Grouped(Direction::HostToGpu, moves, groups) = work else { return Ok(()) };
        let layout = self.inner.gpu_layout();
        let segs = groups.segments(g);
        let start = layout.segment_offset(segs.start) as usize;
        let last = segs.end - 1;
        let end = (layout.segment_offset(last) + layout.segments()[last].bytes_per_block) as usize;
        let bb = layout.block_bytes() as usize;
        let (mut host, mut gpu) = (vec![0u8; bb], vec![0u8; bb]);
        for m in moves {
            self.inner.read_host_block(m.host_block, &mut host)?;
            self.inner.read_gpu_block(m.gpu_block, &mut gpu)?;
            gpu[start..end].copy_from_slice(&host[start..end]);
            self.inner.write_gpu_block(m.gpu_block, &gpu)?;
        }
        Ok(())
    }

    /// Lands group `g` of an upload: its blocks' share of `bytes` (the last block's only in
    /// part when the upload ends inside it).
    fn land_upload_group(&mut self, bytes: &[u8], blocks: &[u32], ends: &[u32], g: u32) -> Result<()> {
        let bb = self.inner.gpu_layout().block_bytes();
        let Some(part) = upload_parts(ends, bb, bytes.len()).nth(g as usize) else { return Ok(()) };
        let mut block = vec![0u8; bb as usize];
        for (&b, chunk) in blocks[part.blocks].iter().zip(bytes[part.bytes].chunks(bb as usize)) {
            self.inner.read_gpu_block(b, &mut block)?;
            block[..chunk.len()].copy_from_slice(chunk);
            self.inner.write_gpu_block(b, &block)?;
        }
        Ok(())
    }

    /// Lands groups `from..to` of `work`; the group it is doomed at fails it. Returns the slot
    /// it ends in: still held, failed, or (every group landed) run whole by the inner backend.
    fn land(&mut self, id: BatchId, work: Work, fail_at: Option<u32>, from: u32, to: u32) -> Slot {
        let to = to.min(work.groups());
        // Groups whose bytes are in: only swap-ins and uploads land group by group.
        let shown = |landed: u32| if work.lands_in_groups() { landed } else { 0 };
        let mut landed = from;
        while landed < to {
            if fail_at == Some(landed) {
                self.lock().counters.completion_faults += 1;
                return Slot::Failed(
                    format!("injected fault: batch {id} failed at group {landed}"),
                    shown(landed),
                );
            }
            // Only swap-ins and uploads land bytes group by group; other work runs whole after
            // its last.
            if let Err(e) = self.land_group(&work, landed) {
                let why = format!("group {landed} of batch {id} could not land: {}", e.message);
                return Slot::Failed(why, shown(landed));
            }
            landed += 1;
        }
        if landed < work.groups() {
            return Slot::Held { work, fail_at, landed };
        }
        match self.run(&work) {
            Ok(inner) => Slot::Inner(inner),
            Err(e) => Slot::Failed(format!("held batch could not run: {}", e.message), 0),
        }
    }

    fn submit(&mut self, work: Work) -> Result<BatchId> {
        let (number, refuse, fail_at, hold) = {
            let mut s = self.lock();
            let number = s.counters.submissions;
            s.counters.submissions += 1;
            let rate = s.submit_fail_rate;
            let refuse = s.fail_submissions.contains(&number) || s.chance(rate);
            let rate = s.complete_fail_rate;
            let whole = s.fail_completions.contains(&number) || s.chance(rate);
            let fail_at = if refuse {
                None
            } else if whole {
                Some(0)
            } else {
                s.fail_groups.get(&number).map(|&g| g.min(work.groups() - 1))
            };
            if refuse {
                s.counters.submit_faults += 1;
            }
            (number, refuse, fail_at, s.hold)
        };
        if refuse {
            return Err(Error::device(format!("injected fault: submission {number} refused")));
        }
        self.validate(&work)?;
        let id = self.next;
        self.next += 1;
        let slot = if hold {
            self.lock().held.insert(id);
            Slot::Held { work, fail_at, landed: 0 }
        } else if fail_at == Some(0) {
            self.lock().counters.completion_faults += 1;
            Slot::Failed(format!("injected fault: batch of submission {number} failed"), 0)
        } else if fail_at.is_some() {
            // The groups before the doomed one land; the batch fails there.
            let n = work.groups();
            self.land(id, work, fail_at, 0, n)
        } else {
            Slot::Inner(self.run(&work)?)
        };
        self.batches.insert(id, slot);
        Ok(id)
    }

    /// Applies the decisions taken through `FaultControl`.
    fn apply_decisions(&mut self) {
        let decisions = {
            let mut s = self.lock();
            let d = std::mem::take(&mut s.decisions);
            for &(b, d) in &d {
                if matches!(d, Decision::All(_)) {
                    s.held.remove(&b);
                }
            }
            d
        };
        for (id, decision) in decisions {
            let Some(Slot::Held { work, fail_at, landed }) = self.batches.remove(&id) else { continue };
            let slot = match decision {
                Decision::Groups(n) => {
                    let slot = self.land(id, work, fail_at, landed, landed.saturating_add(n));
                    if !matches!(slot, Slot::Held { .. }) {
                        self.lock().held.remove(&id);
                    }
                    slot
                }
                Decision::All(true) => {
                    let n = work.groups();
                    self.land(id, work, fail_at, landed, n)
                }
                Decision::All(false) => {
                    self.lock().counters.completion_faults += 1;
                    let landed = if work.lands_in_groups() { landed } else { 0 };
                    Slot::Failed(format!("injected fault: held batch {id} failed"), landed)
                }
            };
            self.batches.insert(id, slot);
        }
    }

    fn state(&mut self, batch: BatchId, timeout_us: Option<u64>) -> BatchState {
        self.apply_decisions();
        let state = match self.batches.get(&batch) {
            None => BatchState::Failed(format!("unknown batch {batch}")),
            Some(Slot::Held { .. }) => BatchState::Pending,
            Some(Slot::Failed(why, _)) => BatchState::Failed(why.clone()),
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
    fn submit_moves_grouped(
        &mut self,
        direction: Direction,
        moves: &[BlockMove],
        groups: SegmentGroups,
    ) -> Result<BatchId> {
        self.submit(Work::Grouped(direction, moves.to_vec(), groups))
    }
    fn groups_done(&mut self, batch: BatchId, groups: u32) -> u32 {
        self.apply_decisions();
        match self.batches.get(&batch) {
            None => 0,
            // Held swap-outs land whole: nothing of them is reported before.
            Some(Slot::Held { work, landed, .. }) if work.lands_in_groups() => *landed,
            Some(Slot::Held { .. }) => 0,
            Some(&Slot::Failed(_, landed)) => landed,
            Some(&Slot::Inner(b)) => self.inner.groups_done(b, groups),
        }
    }
    fn submit_upload(&mut self, bytes: &[u8], blocks: &[u32]) -> Result<BatchId> {
        self.submit(Work::Upload(bytes.to_vec(), blocks.to_vec()))
    }
    fn submit_upload_grouped(&mut self, bytes: &[u8], blocks: &[u32], group_ends: &[u32]) -> Result<BatchId> {
        self.submit(Work::GroupedUpload(bytes.to_vec(), blocks.to_vec(), group_ends.to_vec()))
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
                Slot::Held { .. } => {
                    self.lock().held.remove(&batch);
                }
                Slot::Failed(..) => {}
            }
        }
    }
    fn batch_event(&self, batch: BatchId) -> *mut std::ffi::c_void {
        match self.batches.get(&batch) {
            Some(&Slot::Inner(b)) => self.inner.batch_event(b),
            _ => std::ptr::null_mut(),
        }
    }
    fn group_event(&self, batch: BatchId, group: u32) -> *mut std::ffi::c_void {
        match self.batches.get(&batch) {
            Some(&Slot::Inner(b)) => self.inner.group_event(b, group),
            _ => std::ptr::null_mut(),
        }
    }
    fn waiter(&self, batch: BatchId) -> Option<Box<dyn BatchWaiter>> {
        match self.batches.get(&batch)? {
            &Slot::Inner(b) => self.inner.waiter(b),
            Slot::Held { .. } => Some(Box::new(HeldWaiter { shared: self.shared.clone(), batch })),
            Slot::Failed(..) => None,
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
