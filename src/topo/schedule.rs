//! Chunked multi-dimensional collective schedules.
//!
//! A collective over `count` elements is split into chunks. Each chunk crosses the involved
//! dimensions in an order `π`: reduce-scatter stages along `π` (each stage leaves every rank
//! one part of its segment, reduced over the dimension's group), all-gather stages along `π`
//! reversed. An all-reduce is both. `baseline` uses the ascending dimension order for every
//! chunk; `themis` picks, chunk by chunk, the order that keeps the accumulated per-dimension
//! load (latency steps plus bytes over bandwidth) most balanced, so no dimension idles.
//!
//! An all-to-all sends block `j` of every rank's buffer (`count / ranks` elements) to rank `j`.
//! It crosses each involved dimension once, as a transpose along that dimension: position `p`
//! of a rank with coordinate `a` goes to the peer whose coordinate is `p`'s along the
//! dimension, into the position whose coordinate there becomes `a`. After every dimension,
//! rank `r`'s block `j` holds rank `j`'s block `r`. The volume does not shrink between stages,
//! so every order loads the dimensions alike and ordering can only shorten the pipeline's fill
//! and drain: `themis` picks, chunk by chunk, the order that finishes the chunk earliest given
//! when each dimension frees up (on uniform or strictly layered networks that is the ascending
//! order, and both policies agree).
//!
//! Ranks of the communicator are numbered mixed-radix over the group sizes, dimension 0
//! fastest. Uneven sizes are split as evenly as possible: part `i` of `L` elements over `g`
//! gets `L / g` elements plus one if `i < L % g`.
use crate::error::{Error, Result};
use crate::topo::model::Algorithm;
use crate::topo::network::Network;
use crate::topo::workload::CollectiveKind;

/// Most chunks one collective is split into.
/// cbindgen:ignore
pub const MAX_CHUNKS: usize = 1 << 20;

/// How chunks choose their dimension order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// Every chunk in ascending dimension order (hierarchical collective).
    Baseline,
    /// Per chunk, the order that best balances the accumulated per-dimension load.
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
    /// Bytes each rank sends in this step.
    pub bytes: f64,
    /// The chunk's range in the buffer (elements); for an all-to-all, its range within each of
    /// the `ranks` blocks.
    pub chunk_offset: usize,
    pub chunk_count: usize,
    /// Indices of earlier steps this one waits for (besides the previous step on `dim`).
    pub deps: Vec<usize>,
    /// Predicted start and finish in ns.
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
        let (span, blocks) = if all_to_all { (count / ranks, ranks) } else { (count, 1) };
        let nchunks = cfg.chunks.min(span);
        let chunks: Vec<(usize, usize)> = (0..nchunks).map(|c| split_part(span, nchunks, c)).collect();
        let es = cfg.elem_size as f64;
        // Per-step cost on dimension k for a segment of `len` elements (one pass).
        let step_cost = |k: usize, len: f64| -> (f64, f64) {
            let g = groups[k] as f64;
            let dim = &net.dims()[k];
            let bytes = len * es * (g - 1.0) / g;
            let alg = Algorithm::default_for(dim.kind);
            (bytes, alg.steps(groups[k]) * dim.latency + bytes / dim.bandwidth)
        };
        let passes: &[StepOp] = match kind {
            CollectiveKind::AllReduce => &[StepOp::ReduceScatter, StepOp::AllGather],
            CollectiveKind::ReduceScatter => &[StepOp::ReduceScatter],
            CollectiveKind::AllGather => &[StepOp::AllGather],
            CollectiveKind::AllToAll => &[StepOp::AllToAll],
        };
        // Elements a rank holds of a chunk before the split on dimension `k`.
        let shrink = |k: usize| if all_to_all { 1.0 } else { groups[k] as f64 };
        // Load each order adds per dimension for a chunk of `len` elements.
        let order_load = |order: &[usize], len: f64| -> Vec<f64> {
            let mut add = vec![0.0; d];
            let mut l = len;
            for &k in order {
                add[k] += passes.len() as f64 * step_cost(k, l).1;
                l /= shrink(k);
            }
            add
        };
        let perms = permutations(&active);
        let mut load = vec![0.0; d];
        // When each dimension frees up, as chunks are placed (all-to-all under themis).
        let mut free = vec![0.0; d];
        let mut orders = Vec::with_capacity(nchunks);
        for &(_, len) in &chunks {
            let len = len * blocks;
            let order = match cfg.policy {
                Policy::Baseline => active.clone(),
                Policy::Themis if all_to_all => {
                    earliest_finish(&perms, &mut free, |k| step_cost(k, len as f64).1)
                }
                Policy::Themis => {
                    let mut best: Option<(f64, f64, &Vec<usize>)> = None;
                    for p in &perms {
                        let add = order_load(p, len as f64);
                        let new: Vec<f64> = load.iter().zip(&add).map(|(a, b)| a + b).collect();
                        let max = new.iter().cloned().fold(0.0, f64::max);
                        let sq: f64 = new.iter().map(|v| v * v).sum();
                        let better = match best {
                            None => true,
                            Some((bm, bs, _)) => {
                                max < bm * (1.0 - 1e-12) || (max <= bm * (1.0 + 1e-12) && sq < bs)
                            }
                        };
                        if better {
                            best = Some((max, sq, p));
                        }
                    }
                    best.map(|b| b.2.clone()).unwrap_or_default()
                }
            };
            for (l, a) in load.iter_mut().zip(order_load(&order, len as f64)) {
                *l += a;
            }
            orders.push(order);
        }

        // Stages of each chunk: (dim, op, segment length before the split on dim).
        let stages: Vec<Vec<(usize, StepOp, f64)>> = chunks
            .iter()
            .zip(&orders)
            .map(|(&(_, len), order)| {
                let mut full = Vec::with_capacity(order.len());
                let mut l = (len * blocks) as f64;
                for &k in order {
                    full.push(l);
                    l /= shrink(k);
                }
                let mut st = Vec::new();
                if all_to_all {
                    st.extend(order.iter().zip(&full).map(|(&k, &l)| (k, StepOp::AllToAll, l)));
                }
                if passes.contains(&StepOp::ReduceScatter) {
                    st.extend(order.iter().zip(&full).map(|(&k, &l)| (k, StepOp::ReduceScatter, l)));
                }
                if passes.contains(&StepOp::AllGather) {
                    st.extend(order.iter().zip(&full).rev().map(|(&k, &l)| (k, StepOp::AllGather, l)));
                }
                st
            })
            .collect();

        // List scheduling: the next step to start is the one that can start earliest; each
        // dimension runs one step at a time; a chunk's stages run in order.
        let mut next = vec![0usize; nchunks];
        let mut ready = vec![0.0f64; nchunks];
        let mut last_step: Vec<Option<usize>> = vec![None; nchunks];
        let mut dim_free = vec![0.0f64; d];
        let mut dim_busy = vec![0.0f64; d];
        let total: usize = stages.iter().map(|s| s.len()).sum();
        let mut steps = Vec::with_capacity(total);
        while steps.len() < total {
            let mut pick: Option<(f64, usize)> = None;
            for c in 0..nchunks {
                if let Some(&(k, _, _)) = stages[c].get(next[c]) {
                    let s = ready[c].max(dim_free[k]);
                    if pick.is_none_or_less(s) {
                        pick = Some((s, c));
                    }
                }
            }
            let (start, c) = pick.expect("a chunk has a pending stage");
            let (k, op, full) = stages[c][next[c]];
            let (bytes, dur) = step_cost(k, full);
            let finish = start + dur;
            steps.push(Step {
                chunk: c,
                stage: next[c],
                dim: k,
                op,
                group: groups[k],
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
            dim_free[k] = finish;
            dim_busy[k] += dur;
        }
        let finish_time = steps.iter().map(|s| s.finish).fold(0.0, f64::max);
        Ok(Schedule {
            kind,
            count,
            elem_size: cfg.elem_size,
            groups,
            steps,
            orders,
            chunks,
            finish_time,
            dim_busy,
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

/// The order among `perms` that finishes a chunk earliest when its stage on dimension `k` takes
/// `dur(k)` and dimension `k` is free from `free[k]` (ties: the one that leaves the dimensions
/// free earliest in sum, then the first); updates `free` with it.
fn earliest_finish(perms: &[Vec<usize>], free: &mut [f64], dur: impl Fn(usize) -> f64) -> Vec<usize> {
    let place = |order: &[usize], free: &mut [f64]| -> f64 {
        let mut t = 0.0f64;
        for &k in order {
            t = t.max(free[k]) + dur(k);
            free[k] = t;
        }
        t
    };
    let mut best: Option<(f64, f64, &Vec<usize>)> = None;
    for p in perms {
        let mut trial = free.to_vec();
        let finish = place(p, &mut trial);
        let sum: f64 = trial.iter().sum();
        let better = match best {
            None => true,
            Some((bf, bs, _)) => finish < bf * (1.0 - 1e-12) || (finish <= bf * (1.0 + 1e-12) && sum < bs),
        };
        if better {
            best = Some((finish, sum, p));
        }
    }
    let order = best.map(|b| b.2.clone()).unwrap_or_default();
    place(&order, free);
    order
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

/// All orderings of `items` (at most 6 involved dimensions are expected: 720 orders).
fn permutations(items: &[usize]) -> Vec<Vec<usize>> {
    if items.len() <= 1 {
        return vec![items.to_vec()];
    }
    let mut out = Vec::new();
    for i in 0..items.len() {
        let mut rest = items.to_vec();
        let first = rest.remove(i);
        for mut p in permutations(&rest) {
            p.insert(0, first);
            out.push(p);
        }
    }
    out
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
