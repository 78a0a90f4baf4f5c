//! Reference executor: runs a schedule on host buffers for every rank, one step at a time, in
//! the schedule's order. It defines what a schedule means, so engines and tests can check theirs.
use crate::error::{Error, Result};
use crate::topo::schedule::{split_part, Schedule, StepOp};
use std::ops::Add;

/// Runs `sched` on `buffers` (one per rank, each `sched.count` long), in place.
/// All-reduce leaves every buffer holding the element-wise sum. Reduce-scatter leaves each rank's
/// owned parts (`Schedule::owned`) holding the sum; all-gather starts from each rank's owned
/// parts and leaves every buffer holding all of them. All-to-all leaves block `j` of rank `r`
/// holding what block `r` of rank `j` held.
pub fn execute<T: Copy + Add<Output = T>>(sched: &Schedule, buffers: &mut [Vec<T>]) -> Result<()> {
    let ranks = sched.ranks();
    if buffers.len() != ranks {
        return Err(Error::invalid(format!(
            "`buffers` has {} ranks, the schedule has {ranks}",
            buffers.len()
        )));
    }
    if let Some((r, b)) = buffers.iter().enumerate().find(|(_, b)| b.len() != sched.count) {
        return Err(Error::invalid(format!(
            "`buffers[{r}]` has {} elements, expected {}",
            b.len(),
            sched.count
        )));
    }
    let mut tmp: Vec<T> = Vec::new();
    for (si, step) in sched.steps.iter().enumerate() {
        let g = step.group as usize;
        let stride: usize = sched.groups[..step.dim].iter().map(|&x| x as usize).product();
        // Each rank with coordinate 0 along the step's dimension leads one group.
        for lead in (0..ranks).filter(|&r| sched.coord(r, step.dim) == 0) {
            let members: Vec<usize> = (0..g).map(|i| lead + i * stride).collect();
            if step.op == StepOp::AllToAll {
                transpose(sched, si, &members, stride, buffers, &mut tmp);
                continue;
            }
            let (off, len) = sched.segment(si, lead);
            for (i, &owner) in members.iter().enumerate() {
                let (po, pl) = split_part(len, g, i);
                let range = off + po..off + po + pl;
                match step.op {
                    StepOp::ReduceScatter => {
                        tmp.clear();
                        tmp.extend_from_slice(&buffers[members[0]][range.clone()]);
                        for &m in &members[1..] {
                            for (acc, &v) in tmp.iter_mut().zip(&buffers[m][range.clone()]) {
                                *acc = *acc + v;
                            }
                        }
                        buffers[owner][range].copy_from_slice(&tmp);
                    }
                    StepOp::AllGather => {
                        tmp.clear();
                        tmp.extend_from_slice(&buffers[owner][range.clone()]);
                        for &m in &members {
                            buffers[m][range.clone()].copy_from_slice(&tmp);
                        }
                    }
                    StepOp::AllToAll => unreachable!("handled above"),
                }
            }
        }
    }
    Ok(())
}

/// One all-to-all step within one group: member `a`'s block at position `p` moves to member
/// `p`'s coordinate along the dimension, at `p` with that coordinate replaced by `a`.
fn transpose<T: Copy>(
    sched: &Schedule,
    step: usize,
    members: &[usize],
    stride: usize,
    buffers: &mut [Vec<T>],
    tmp: &mut Vec<T>,
) {
    let positions = sched.ranks();
    let block = sched.count / positions;
    let dim = sched.steps[step].dim;
    let (off, len) = sched.segment(step, members[0]);
    let piece = |p: usize| p * block + off..p * block + off + len;
    tmp.clear();
    for &m in members {
        for p in 0..positions {
            tmp.extend_from_slice(&buffers[m][piece(p)]);
        }
    }
    for a in 0..members.len() {
        for p in 0..positions {
            let b = sched.coord(p, dim);
            let to = p - b * stride + a * stride;
            let from = (a * positions + p) * len;
            buffers[members[b]][piece(to)].copy_from_slice(&tmp[from..from + len]);
        }
    }
}
