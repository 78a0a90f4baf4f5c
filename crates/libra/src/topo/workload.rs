//! Workloads: an iteration made of phases, each with a compute time and at most one collective
//! over a communicator given as a group size per network dimension.
use crate::error::{Error, Result};
use crate::topo::network::{check_non_negative, Network};

/// The collective operations the models and the scheduler know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CollectiveKind {
    AllReduce,
    ReduceScatter,
    AllGather,
    AllToAll,
}

impl CollectiveKind {
    pub fn name(self) -> &'static str {
        match self {
            CollectiveKind::AllReduce => "all-reduce",
            CollectiveKind::ReduceScatter => "reduce-scatter",
            CollectiveKind::AllGather => "all-gather",
            CollectiveKind::AllToAll => "all-to-all",
        }
    }
}

/// One collective: `bytes` is the message size per NPU (for all-gather, the size before
/// gathering, as in the ASTRA-sim workload format); `groups[d]` is the communicator's extent
/// along dimension `d` (1 = the dimension is not involved).
#[derive(Debug, Clone, PartialEq)]
pub struct Collective {
    pub kind: CollectiveKind,
    pub bytes: f64,
    pub groups: Vec<u32>,
}

impl Collective {
    pub fn new(kind: CollectiveKind, bytes: f64, groups: Vec<u32>) -> Self {
        Collective { kind, bytes, groups }
    }

    /// A collective over every NPU of `net`.
    pub fn over_all(kind: CollectiveKind, bytes: f64, net: &Network) -> Self {
        Collective { kind, bytes, groups: net.dims().iter().map(|d| d.size).collect() }
    }

    /// Checks the communicator against a network: one group size per dimension, each dividing
    /// the dimension's size.
    pub fn validate(&self, net: &Network, name: &str) -> Result<()> {
        check_non_negative(self.bytes, &format!("{name}.bytes"))?;
        if self.groups.len() != net.num_dims() {
            return Err(Error::invalid(format!(
                "`{name}.groups` has {} entries, the network has {} dimensions",
                self.groups.len(),
                net.num_dims()
            )));
        }
        for (d, (&g, dim)) in self.groups.iter().zip(net.dims()).enumerate() {
            if g == 0 || dim.size % g != 0 {
                return Err(Error::invalid(format!(
                    "`{name}.groups[{d}]` is {g}, which does not divide dimension {d}'s size {}",
                    dim.size
                )));
            }
        }
        Ok(())
    }

    /// NPUs in one communicator.
    pub fn group_npus(&self) -> u64 {
        self.groups.iter().map(|&g| g as u64).product()
    }
}

/// A phase of an iteration: compute, then (or overlapped with) one optional collective.
#[derive(Debug, Clone, PartialEq)]
pub struct Phase {
    pub name: String,
    /// Compute time in ns.
    pub compute: f64,
    pub collective: Option<Collective>,
}

/// How a phase's compute and communication combine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Overlap {
    /// Phase time = compute + communication (LIBRA's shipped training loop).
    #[default]
    None,
    /// Phase time = max(compute, communication).
    Full,
}

/// One training or serving iteration.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Workload {
    pub phases: Vec<Phase>,
    pub overlap: Overlap,
}

impl Workload {
    pub fn new(overlap: Overlap) -> Self {
        Workload { phases: Vec::new(), overlap }
    }

    pub fn push(&mut self, name: impl Into<String>, compute: f64, collective: Option<Collective>) {
        self.phases.push(Phase { name: name.into(), compute, collective });
    }

    /// Checks every phase against `net`, naming the first bad field.
    pub fn validate(&self, net: &Network) -> Result<()> {
        if self.phases.is_empty() {
            return Err(Error::invalid("`workload.phases` is empty"));
        }
        for (i, p) in self.phases.iter().enumerate() {
            check_non_negative(p.compute, &format!("phases[{i}].compute"))?;
            if let Some(c) = &p.collective {
                c.validate(net, &format!("phases[{i}].collective"))?;
            }
        }
        Ok(())
    }

    pub fn total_compute(&self) -> f64 {
        self.phases.iter().map(|p| p.compute).sum()
    }
}

/// The three training phases of a layer, in the order of the ASTRA-sim 1.0 workload format.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    pub name: String,
    /// Compute time in ns of forward, input-gradient and weight-gradient.
    pub compute: [f64; 3],
    /// Collective (kind, bytes) of each phase, if any.
    pub comm: [Option<(CollectiveKind, f64)>; 3],
}

/// The communicator of each training phase: a group size per dimension (1 = not involved).
#[derive(Debug, Clone, PartialEq)]
pub struct Communicator {
    pub forward: Vec<u32>,
    pub input_grad: Vec<u32>,
    pub weight_grad: Vec<u32>,
}

impl Communicator {
    /// The same communicator for all three phases.
    pub fn uniform(groups: Vec<u32>) -> Self {
        Communicator { forward: groups.clone(), input_grad: groups.clone(), weight_grad: groups }
    }

    fn phase(&self, i: usize) -> &[u32] {
        match i {
            0 => &self.forward,
            1 => &self.input_grad,
            _ => &self.weight_grad,
        }
    }
}

/// One training iteration as LIBRA's training loop runs it: every layer's forward phase, then,
/// from the last layer back, its input-gradient and weight-gradient phases.
pub fn training_iteration(layers: &[Layer], comm: &Communicator, overlap: Overlap) -> Workload {
    training_iteration_per_layer(layers, &vec![comm.clone(); layers.len()], overlap)
}

/// As [`training_iteration`], with one communicator per layer (`comms.len() == layers.len()`).
pub fn training_iteration_per_layer(layers: &[Layer], comms: &[Communicator], overlap: Overlap) -> Workload {
    debug_assert_eq!(layers.len(), comms.len());
    let mut wl = Workload::new(overlap);
    let coll = |l: &Layer, c: &Communicator, i: usize| {
        l.comm[i].filter(|&(_, b)| b > 0.0).map(|(k, b)| Collective::new(k, b, c.phase(i).to_vec()))
    };
    for (l, c) in layers.iter().zip(comms) {
        wl.push(format!("{}.forward", l.name), l.compute[0], coll(l, c, 0));
    }
    for (l, c) in layers.iter().zip(comms).rev() {
        wl.push(format!("{}.input_grad", l.name), l.compute[1], coll(l, c, 1));
        wl.push(format!("{}.weight_grad", l.name), l.compute[2], coll(l, c, 2));
    }
    wl
}
