//! Chunked multi-dimensional collective schedules.
//!
//! A collective over `count` elements is split into chunks. Each chunk crosses the involved
//! dimensions in an order `π`: reduce-scatter stages along `π` (each stage leaves every rank
//! one part of its segment, reduced over the dimension's group), all-gather stages along `π`
//! reversed. An all-reduce is both. `baseline` uses the ascending dimension order for every
//! chunk; `themis` picks, chunk by chunk and position by position, the dimension whose
//! accumulated busy time stays least, so no dimension idles (greedy: `O(chunks · d²)` work for
//! `d` involved dimensions, never a search over the `d!` orders), and keeps the ascending order
//! instead whenever that is predicted faster, so it is never slower than the baseline.
//!
//! Time model: a step's bytes occupy its dimension for `bytes / bandwidth`; the algorithm's
//! per-step latency (`steps · latency` for ring, direct or halving-doubling) then delays that
//! chunk's next stage, but the dimension is free for other chunks meanwhile, so splitting into
//! more chunks hides latency instead of adding it.
//!
//! An all-to-all sends block `j` of every rank's buffer (`count / ranks` elements) to rank `j`.
//! It crosses each involved dimension once, as a transpose along that dimension: position `p`
//! of a rank with coordinate `a` goes to the peer whose coordinate is `p`'s along the
//! dimension, into the position whose coordinate there becomes `a`. After every dimension,
//! rank `r`'s block `j` holds rank `j`'s block `r`. The volume does not shrink between stages,
//! so every order loads the dimensions alike and ordering can only shorten the pipeline's fill
//! and drain: `themis` picks, chunk by chunk, the dimension on which the chunk's next stage
//! arrives first given when each dimension frees up.
//!
//! Ranks of the communicator are numbered mixed-radix over the group sizes, dimension 0
//! fastest. Uneven sizes are split as evenly as possible: part `i` of `L` elements over `g`
//! gets `L / g` elements plus one if `i < L % g`.
use crate::error::{Error, Result};
use crate::topo::model::Algorithm;
use crate::topo::network::Network;
use crate::topo::workload::CollectiveKind;

/// Most chunks one collective is split into.
pub const MAX_CHUNKS: usize = 1 << 20;

/// How chunks choose their dimension order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// Every chunk in ascending dimension order (hierarchical collective).
    Baseline,
    /// Per chunk, the order that best balances the accumulated per-dimension load (never
    /// predicted slower than `Baseline`).
    #[default]
    Themis,
}

/// The operation a step runs on one dimension's groups.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepOp {
    ReduceScatter,
    AllGather,
    /// Transpose along the step's dimension of the chunk's range of every block.
    AllToAll,
}

/// Scheduling parameters.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleConfig {
    pub policy: Policy,
    /// Number of chunks (at most `count`; fewer are used when `count` is smaller).
    pub chunks: usize,
    /// Bytes per element.
    pub elem_size: usize,
}

impl Default for ScheduleConfig {
    fn default() -> Self {
        ScheduleConfig { policy: Policy::Themis, chunks: 64, elem_size: 4 }
    }
}

/// One step: every group along `dim` runs `op` on its segment of chunk `chunk`.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    pub chunk: usize,
    /// Position of this step within its chunk's stages.
    pub stage: usize,
    /// Network dimension.
    pub dim: usize,
    pub op: StepOp,
    /// Group size along `dim`.
    pub group: u32,
    /// The most bytes any rank receives in this step (its segment less its own part, or for an
    /// all-to-all the blocks it gets), from the executor's integer splits.
    pub bytes: f64,
    /// The chunk's range in the buffer (elements); for an all-to-all, its range within each of
    /// the `ranks` blocks.
    pub chunk_offset: usize,
    pub chunk_count: usize,
    /// Indices of earlier steps this one waits for (besides the previous step on `dim`).
    pub deps: Vec<usize>,
    /// Predicted start, and finish (when the chunk's data has arrived: serialisation plus the
    /// step's latency), in ns.
    pub start: f64,
    pub finish: f64,
}

/// A schedule for one collective.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub kind: CollectiveKind,
    pub count: usize,
    pub elem_size: usize,
    /// Group size per network dimension (1 = not involved).
    pub groups: Vec<u32>,
    pub steps: Vec<Step>,
    /// Per chunk: the split order `π` (reduce-scatter order; all-gather runs it reversed).
    pub orders: Vec<Vec<usize>>,
    /// Per chunk: (offset, count); for an all-to-all, within each block.
    pub chunks: Vec<(usize, usize)>,
    /// Predicted completion time in ns.
    pub finish_time: f64,
    /// Predicted busy time per network dimension in ns.
    pub dim_busy: Vec<f64>,
}

/// Part `i` of `len` elements split over `g` as evenly as possible: (offset, count).
pub fn split_part(len: usize, g: usize, i: usize) -> (usize, usize) {
    let base = len / g;
    let rem = len % g;
    (i * base + i.min(rem), base + usize::from(i < rem))
}

impl Schedule {
    /// Schedules `kind` over `count` elements for the communicator `groups` (one group size per
    /// network dimension; `None` = every NPU) on `net`.
    pub fn new(
        net: &Network,
        kind: CollectiveKind,
        count: usize,
        groups: Option<&[u32]>,
        cfg: &ScheduleConfig,
    ) -> Result<Schedule> {
        Schedule::build(net, kind, count, groups, cfg, None)
    }

    /// As [`Schedule::new`], every chunk crossing the involved dimensions in `order` (a
    /// permutation of them; `cfg.policy` is not used): the fixed-order schedules Themis is
    /// compared against besides the ascending one.
    pub fn with_order(
        net: &Network,
        kind: CollectiveKind,
        count: usize,
        groups: Option<&[u32]>,
        cfg: &ScheduleConfig,
        order: &[usize],
    ) -> Result<Schedule> {
        Schedule::build(net, kind, count, groups, cfg, Some(order))
    }

    fn build(
        net: &Network,
        kind: CollectiveKind,
        count: usize,
        groups: Option<&[u32]>,
        cfg: &ScheduleConfig,
        fixed: Option<&[usize]>,
    ) -> Result<Schedule> {
        let groups: Vec<u32> = match groups {
            Some(g) => g.to_vec(),
            None => net.dims().iter().map(|d| d.size).collect(),
        };
        crate::topo::workload::Collective::new(kind, 0.0, groups.clone()).validate(net, "collective")?;
        if count == 0 {
            return Err(Error::invalid("`count` is 0"));
        }
        let ranks: usize = groups.iter().map(|&g| g as usize).product();
        let all_to_all = kind == CollectiveKind::AllToAll;
        if all_to_all && count % ranks != 0 {
            return Err(Error::invalid(format!(
                "`count` is {count}: an all-to-all needs a multiple of the communicator's {ranks} ranks"
            )));
        }
        if cfg.chunks == 0 {
            return Err(Error::invalid("`config.chunks` is 0"));
        }
        // Steps and per-chunk state grow with the chunk count: bound it.
        if cfg.chunks > MAX_CHUNKS {
            return Err(Error::invalid(format!("`config.chunks` is {}; at most {MAX_CHUNKS}", cfg.chunks)));
        }
        if cfg.elem_size == 0 {
            return Err(Error::invalid("`config.elem_size` is 0"));
        }
        let d = net.num_dims();
        let active: Vec<usize> = (0..d).filter(|&k| groups[k] > 1).collect();
        // Chunks split the buffer, or for an all-to-all each block alike.
        let span = if all_to_all { count / ranks } else { count };
        let nchunks = cfg.chunks.min(span);
        let chunks: Vec<(usize, usize)> = (0..nchunks).map(|c| split_part(span, nchunks, c)).collect();
        let model = StepModel::new(net, &groups, kind, cfg.elem_size, ranks);
        let ascending = vec![active.clone(); nchunks];
        if let Some(order) = fixed {
            let mut sorted = order.to_vec();
            sorted.sort_unstable();
            if sorted != active {
                return Err(Error::invalid(format!(
                    "`order` is {order:?}: expected a permutation of the involved dimensions {active:?}"
                )));
            }
        }
        let (orders, plan) = match (fixed, cfg.policy) {
            (Some(order), _) => {
                let orders = vec![order.to_vec(); nchunks];
                let plan = model.list_schedule(&chunks, &orders);
                (orders, plan)
            }
            (None, Policy::Baseline) => {
                let plan = model.list_schedule(&chunks, &ascending);
                (ascending, plan)
            }
            (None, Policy::Themis) => {
                let themis = if all_to_all {
                    model.earliest_finish_orders(&chunks, &active)
                } else {
                    model.balanced_orders(&chunks, &active)
                };
                let plan = model.list_schedule(&chunks, &themis);
                // The greedy choice is a heuristic: keep the ascending order when it is
                // predicted faster, so Themis is never slower than the baseline.
                let base = model.list_schedule(&chunks, &ascending);
                if base.finish_time < plan.finish_time {
                    (ascending, base)
                } else {
                    (themis, plan)
                }
            }
        };
        Ok(Schedule {
            kind,
            count,
            elem_size: cfg.elem_size,
            groups,
            steps: plan.steps,
            orders,
            chunks,
            finish_time: plan.finish_time,
            dim_busy: plan.dim_busy,
        })
    }

    /// Ranks in the communicator.
    pub fn ranks(&self) -> usize {
        self.groups.iter().map(|&g| g as usize).product()
    }

    /// Coordinate of `rank` along dimension `dim`.
    pub fn coord(&self, rank: usize, dim: usize) -> usize {
        let stride: usize = self.groups[..dim].iter().map(|&g| g as usize).product();
        (rank / stride) % self.groups[dim] as usize
    }

    /// The segment (offset, count) of `rank` that step `step` works on: the reduce-scatter's
    /// input, or the all-gather's output. The rank's own part of it is
    /// `split_part(count, group, coord(rank, dim))`. For an all-to-all step: the chunk's range
    /// within each of the `ranks()` blocks (the same for every rank).
    pub fn segment(&self, step: usize, rank: usize) -> (usize, usize) {
        let s = &self.steps[step];
        if s.op == StepOp::AllToAll {
            return self.chunks[s.chunk];
        }
        let (mut off, mut len) = self.chunks[s.chunk];
        for &k in self.orders[s.chunk].iter().take_while(|&&k| k != s.dim) {
            let (o, l) = split_part(len, self.groups[k] as usize, self.coord(rank, k));
            off += o;
            len = l;
        }
        (off, len)
    }

    /// The part of chunk `chunk` that `rank` owns after a reduce-scatter (or contributes to an
    /// all-gather): (offset, count).
    pub fn owned(&self, chunk: usize, rank: usize) -> (usize, usize) {
        let (mut off, mut len) = self.chunks[chunk];
        for &k in &self.orders[chunk] {
            let (o, l) = split_part(len, self.groups[k] as usize, self.coord(rank, k));
            off += o;
            len = l;
        }
        (off, len)
    }

    /// Ratio of the predicted finish to the busiest dimension's busy time: 1.0 means the
    /// bottleneck dimension never idles.
    pub fn bottleneck_utilisation(&self) -> f64 {
        let busiest = self.dim_busy.iter().cloned().fold(0.0, f64::max);
        if self.finish_time > 0.0 {
            busiest / self.finish_time
        } else {
            1.0
        }
    }
}

/// The predicted steps of a schedule.
struct Plan {
    steps: Vec<Step>,
    finish_time: f64,
    dim_busy: Vec<f64>,
}

/// One stage of a chunk: (dimension, operation, bytes, serialisation ns, latency ns).
type Stage = (usize, StepOp, f64, f64, f64);

/// Per-step costs. A step's bytes are the most any rank receives in it, from the same integer
/// splits the executor uses: a reduce-scatter or all-gather segment of `L` elements over `g`
/// ranks leaves the smallest part `L / g` local, and the largest segment after a split is
/// `ceil(L / g)`; an all-to-all step moves the chunk's range of every block whose position
/// differs from the rank's own along the dimension. The bytes occupy the dimension for
/// `bytes / bandwidth`; the algorithm's per-step latency (`steps · latency`) delays the chunk's
/// next stage but leaves the dimension free for other chunks.
struct StepModel {
    groups: Vec<u32>,
    elem: f64,
    ranks: usize,
    all_to_all: bool,
    passes: &'static [StepOp],
    bandwidth: Vec<f64>,
    latency: Vec<f64>,
}

impl StepModel {
    fn new(net: &Network, groups: &[u32], kind: CollectiveKind, elem_size: usize, ranks: usize) -> Self {
        let passes: &'static [StepOp] = match kind {
            CollectiveKind::AllReduce => &[StepOp::ReduceScatter, StepOp::AllGather],
            CollectiveKind::ReduceScatter => &[StepOp::ReduceScatter],
            CollectiveKind::AllGather => &[StepOp::AllGather],
            CollectiveKind::AllToAll => &[StepOp::AllToAll],
        };
        let dims = net.dims();
        StepModel {
            groups: groups.to_vec(),
            elem: elem_size as f64,
            ranks,
            all_to_all: kind == CollectiveKind::AllToAll,
            passes,
            bandwidth: dims.iter().map(|d| d.bandwidth).collect(),
            latency: dims
                .iter()
                .zip(groups)
                .map(|(d, &g)| Algorithm::default_for(d.kind).steps(g) * d.latency)
                .collect(),
        }
    }

    /// (bytes, serialisation ns) of a step on `k` whose largest segment is `len` elements.
    fn cost(&self, k: usize, len: usize) -> (f64, f64) {
        let g = self.groups[k] as usize;
        let elems = if self.all_to_all { len * (self.ranks - self.ranks / g) } else { len - len / g };
        let bytes = elems as f64 * self.elem;
        (bytes, bytes / self.bandwidth[k])
    }

    /// The largest segment after splitting one of `len` elements on `k`.
    fn next_len(&self, k: usize, len: usize) -> usize {
        if self.all_to_all {
            len
        } else {
            len.div_ceil(self.groups[k] as usize)
        }
    }

    fn stages(&self, order: &[usize], len: usize) -> Vec<Stage> {
        let mut lens = Vec::with_capacity(order.len());
        let mut l = len;
        for &k in order {
            lens.push(l);
            l = self.next_len(k, l);
        }
        let stage = |k: usize, op: StepOp, l: usize| {
            let (bytes, serial) = self.cost(k, l);
            (k, op, bytes, serial, self.latency[k])
        };
        let mut st = Vec::with_capacity(order.len() * self.passes.len());
        for &op in self.passes {
            if op == StepOp::AllGather {
                st.extend(order.iter().zip(&lens).rev().map(|(&k, &l)| stage(k, op, l)));
            } else {
                st.extend(order.iter().zip(&lens).map(|(&k, &l)| stage(k, op, l)));
            }
        }
        st
    }

    /// Themis for reduce-scatter / all-gather: chunk by chunk, position by position, the
    /// dimension whose accumulated load (busy time) would be least after taking the segment.
    /// O(chunks · d²) work.
    fn balanced_orders(&self, chunks: &[(usize, usize)], active: &[usize]) -> Vec<Vec<usize>> {
        let passes = self.passes.len() as f64;
        let mut load = vec![0.0f64; self.groups.len()];
        let mut orders = Vec::with_capacity(chunks.len());
        for &(_, len) in chunks {
            let mut left = active.to_vec();
            let mut order = Vec::with_capacity(active.len());
            let mut l = len;
            while !left.is_empty() {
                let after = |k: usize| load[k] + passes * self.cost(k, l).1;
                let i = (0..left.len())
                    .fold(0, |best, i| if after(left[i]) < after(left[best]) { i } else { best });
                let k = left.remove(i);
                load[k] = after(k);
                order.push(k);
                l = self.next_len(k, l);
            }
            orders.push(order);
        }
        orders
    }

    /// Themis for all-to-all, whose volume does not shrink: chunk by chunk, position by
    /// position, the dimension on which the chunk's next stage would arrive first given when
    /// each dimension frees up. O(chunks · d²) work.
    fn earliest_finish_orders(&self, chunks: &[(usize, usize)], active: &[usize]) -> Vec<Vec<usize>> {
        let mut free = vec![0.0f64; self.groups.len()];
        let mut orders = Vec::with_capacity(chunks.len());
        for &(_, len) in chunks {
            let mut left = active.to_vec();
            let mut order = Vec::with_capacity(active.len());
            let mut t = 0.0f64;
            while !left.is_empty() {
                let arrive = |k: usize| t.max(free[k]) + self.cost(k, len).1 + self.latency[k];
                let i = (0..left.len())
                    .fold(0, |best, i| if arrive(left[i]) < arrive(left[best]) { i } else { best });
                let k = left.remove(i);
                free[k] = t.max(free[k]) + self.cost(k, len).1;
                t = free[k] + self.latency[k];
                order.push(k);
            }
            orders.push(order);
        }
        orders
    }

    /// List scheduling: the next step is the one that can start earliest (ties: the lower
    /// chunk); a dimension serialises one step at a time; a chunk's stages run in order.
    fn list_schedule(&self, chunks: &[(usize, usize)], orders: &[Vec<usize>]) -> Plan {
        let d = self.groups.len();
        let stages: Vec<Vec<Stage>> =
            chunks.iter().zip(orders).map(|(&(_, len), order)| self.stages(order, len)).collect();
        let n = chunks.len();
        let mut next = vec![0usize; n];
        let mut ready = vec![0.0f64; n];
        let mut last_step: Vec<Option<usize>> = vec![None; n];
        let mut dim_free = vec![0.0f64; d];
        let mut dim_busy = vec![0.0f64; d];
        let total: usize = stages.iter().map(|s| s.len()).sum();
        let mut steps = Vec::with_capacity(total);
        while steps.len() < total {
            let mut pick: Option<(f64, usize)> = None;
            for c in 0..n {
                if let Some(&(k, ..)) = stages[c].get(next[c]) {
                    let s = ready[c].max(dim_free[k]);
                    if pick.is_none_or_less(s) {
                        pick = Some((s, c));
                    }
                }
            }
            let (start, c) = pick.expect("a chunk has a pending stage");
            let (k, op, bytes, serial, latency) = stages[c][next[c]];
            let finish = start + serial + latency;
            steps.push(Step {
                chunk: c,
                stage: next[c],
                dim: k,
                op,
                group: self.groups[k],
                bytes,
                chunk_offset: chunks[c].0,
                chunk_count: chunks[c].1,
                deps: last_step[c].into_iter().collect(),
                start,
                finish,
            });
            last_step[c] = Some(steps.len() - 1);
            next[c] += 1;
            ready[c] = finish;
            dim_free[k] = start + serial;
            dim_busy[k] += serial;
        }
        let finish_time = steps.iter().map(|s| s.finish).fold(0.0, f64::max);
        Plan { steps, finish_time, dim_busy }
    }
}

trait PickExt {
    fn is_none_or_less(&self, s: f64) -> bool;
}

impl PickExt for Option<(f64, usize)> {
    /// Strictly earlier wins, so ties go to the lower chunk index.
    fn is_none_or_less(&self, s: f64) -> bool {
        match self {
            None => true,
            Some((b, _)) => s < *b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topo::network::{DimKind, Dimension};

    #[test]
    fn split_part_covers_everything() {
        for len in 0..20 {
            for g in 1..6 {
                let mut next = 0;
                for i in 0..g {
                    let (o, l) = split_part(len, g, i);
                    assert_eq!(o, next);
                    next += l;
                }
                assert_eq!(next, len);
            }
        }
    }

    #[test]
    fn baseline_single_chunk_matches_libra_time() {
        let net = Network::new(vec![
            Dimension::new(DimKind::Ring, 4, 100.0),
            Dimension::new(DimKind::Switch, 8, 50.0),
        ])
        .unwrap();
        let cfg = ScheduleConfig { policy: Policy::Baseline, chunks: 1, elem_size: 1 };
        let s = Schedule::new(&net, CollectiveKind::AllReduce, 1 << 20, None, &cfg).unwrap();
        // One chunk runs its four stages back to back: the sum of the per-dimension times.
        let m = (1 << 20) as f64;
        let expect = 2.0 * (m * 0.75 / 100.0 + m / 4.0 * 7.0 / 8.0 / 50.0);
        assert!((s.finish_time - expect).abs() < 1e-6 * expect);
        assert_eq!(s.steps.len(), 4);
        assert_eq!(s.steps[3].deps, vec![2]);
    }

    #[test]
    fn themis_beats_baseline_when_bandwidth_is_mismatched() {
        let net = Network::new(vec![
            Dimension::new(DimKind::Ring, 8, 50.0),
            Dimension::new(DimKind::Switch, 8, 200.0),
        ])
        .unwrap();
        let base = ScheduleConfig { policy: Policy::Baseline, chunks: 64, elem_size: 4 };
        let themis = ScheduleConfig { policy: Policy::Themis, ..base.clone() };
        let b = Schedule::new(&net, CollectiveKind::AllReduce, 1 << 22, None, &base).unwrap();
        let t = Schedule::new(&net, CollectiveKind::AllReduce, 1 << 22, None, &themis).unwrap();
        assert!(b.finish_time / t.finish_time > 2.0, "{} vs {}", b.finish_time, t.finish_time);
    }
}
