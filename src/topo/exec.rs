//! Reference executor: runs a schedule on host buffers for every rank, one step at a time, in
//! the schedule's order. It defines what a schedule means, so engines and tests can check theirs.
use crate::error::{Error, Result};
use crate::topo::schedule::{split_part, Schedule, StepOp};
use std::ops::Add;

/// Runs `sched` on `buffers` (one per rank, each `sched.count` long), in place.
/// All-reduce leaves every buffer holding the element-wise sum. Reduce-scatter leaves each rank's
/// owned parts (`Schedule::owned`) holding the sum; all-gather starts from each rank's owned
/// parts and leaves every buffer holding all of them.
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
                }
            }
        }
    }
    Ok(())
}
