//! ASTRA-sim's formats: 1.0 workload text (with its parallelism policies, including per-layer
//! `HYBRID_CUSTOMIZED`) and 2.0 analytical network YAML, in and out.
//!
//! Units of ASTRA-sim 2.0's analytical network: `bandwidth` is GB/s per link and direction,
//! with ASTRA-sim's GB of 2^30 bytes (its `bw_GBps_to_Bpns` multiplies by 2^30 / 10^9), and
//! `latency` is ns per link. Ours are GB/s per NPU (10^9 bytes/s, i.e. bytes per ns) and ns per
//! algorithm step. Per NPU a ring has 2 links (both directions), a fully-connected dimension of
//! `n` NPUs `n - 1` and a switch 1 (LIBRA's link model), and a step through a switch crosses
//! two links (NPU to switch to NPU), so its step latency is twice the link latency.
use crate::error::{Error, Result};
use crate::topo::fields::{
    build, check_count, check_keys, dim_kind, non_negative, npus, number, positive, required_list,
};
use crate::topo::network::{CostParams, DimKind, Dimension, Network};
use crate::topo::workload::{
    training_iteration_per_layer, CollectiveKind, Communicator, Layer, Overlap, Workload,
};
use crate::topo::yaml::{check_size, parse_err, Yaml};
use std::fmt::Write as _;

/// The keys of an ASTRA-sim 2.0 analytical network file.
pub(crate) const ASTRA_SIM_NETWORK_KEYS: [&str; 4] = ["topology", "npus_count", "bandwidth", "latency"];

/// Bytes per ns in one ASTRA-sim GB/s.
const ASTRA_GBPS: f64 = (1u64 << 30) as f64 / 1e9;

fn links_per_npu(kind: DimKind, size: u32) -> f64 {
    match kind {
        DimKind::Ring => 2.0,
        DimKind::FullyConnected => (size - 1) as f64,
        DimKind::Switch => 1.0,
    }
}

fn links_per_step(kind: DimKind) -> f64 {
    if kind == DimKind::Switch {
        2.0
    } else {
        1.0
    }
}

pub(crate) fn network_from_astra_sim(doc: &Yaml) -> Result<Network> {
    const F: &str = "network (ASTRA-sim 2.0)";
    check_keys(doc, &ASTRA_SIM_NETWORK_KEYS, F)?;
    let topo = required_list(doc, "topology", F)?;
    if topo.is_empty() {
        return Err(parse_err(format!("{F}: `topology` is empty")));
    }
    let mut lists = Vec::new();
    for key in ["npus_count", "bandwidth", "latency"] {
        let v = required_list(doc, key, F)?;
        check_count(v.len(), topo.len(), key, F)?;
        lists.push(v);
    }
    let mut dims = Vec::with_capacity(topo.len());
    for i in 0..topo.len() {
        let kind = dim_kind(&topo[i], &format!("{F}: `topology[{i}]`"))?;
        let size = npus(&lists[0][i], &format!("{F}: `npus_count[{i}]`"))?;
        let link_bw = positive(&lists[1][i], &format!("{F}: `bandwidth[{i}]`"))?;
        let link_latency = non_negative(&lists[2][i], &format!("{F}: `latency[{i}]`"))?;
        dims.push(Dimension {
            kind,
            size,
            bandwidth: link_bw * ASTRA_GBPS * links_per_npu(kind, size),
            latency: link_latency * links_per_step(kind),
            cost: CostParams::default(),
        });
    }
    build(dims, F)
}

/// Writes `net` as an ASTRA-sim 2.0 analytical network file (the inverse of the conversion in
/// the module comment; costs have no place in that format and are left out).
pub fn to_astra_sim_yaml(net: &Network) -> String {
    let join = |f: &dyn Fn(&Dimension) -> String| -> String {
        net.dims().iter().map(f).collect::<Vec<_>>().join(", ")
    };
    let mut out = String::from("# ASTRA-sim 2.0 analytical network, written by libra\n");
    let kind = |d: &Dimension| match d.kind {
        DimKind::Ring => "Ring".to_string(),
        DimKind::FullyConnected => "FullyConnected".to_string(),
        DimKind::Switch => "Switch".to_string(),
    };
    let _ = writeln!(out, "topology: [ {} ]", join(&kind));
    let _ = writeln!(out, "npus_count: [ {} ]", join(&|d| d.size.to_string()));
    let _ = writeln!(
        out,
        "bandwidth: [ {} ]  # GB/s per link (2^30 bytes)",
        join(&|d| format!("{}", d.bandwidth / ASTRA_GBPS / links_per_npu(d.kind, d.size)))
    );
    let _ = writeln!(
        out,
        "latency: [ {} ]  # ns per link",
        join(&|d| format!("{}", d.latency / links_per_step(d.kind)))
    );
    out
}

/// ASTRA-sim 1.0's training-loop parallelism (the workload file's first word).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Parallelism {
    /// Weight gradients over every dimension.
    Data,
    /// Forward and input gradients over every dimension.
    Model,
    /// Model parallel on dimension 0, data parallel on the rest.
    HybridDataModel,
    /// Data parallel on dimension 0, model parallel on the rest.
    HybridModelData,
    /// Model parallel over the first `model_parallel_NPU_group` NPUs' dimensions, data parallel
    /// on the rest.
    Transformer,
    /// As `Transformer` (the checkpoint recomputation it adds is not modelled).
    TransformerFwdInBckwd,
    /// Data parallel; layer 0 (the embedding) communicates over every dimension.
    Dlrm,
    Micro,
    DistributedInference,
    /// Each layer names its own parallelism in a 13th field.
    Customized,
}

impl Parallelism {
    pub fn from_name(s: &str) -> Option<Parallelism> {
        use Parallelism::*;
        Some(match s {
            "DATA" => Data,
            "MODEL" => Model,
            "HYBRID_DATA_MODEL" => HybridDataModel,
            "HYBRID_MODEL_DATA" => HybridModelData,
            "HYBRID_TRANSFORMER" => Transformer,
            "HYBRID_TRANSFORMER_FWD_IN_BCKWD" => TransformerFwdInBckwd,
            "HYBRID_DLRM" | "HYBRID_DLRM_ENHANCED" => Dlrm,
            "MICRO" => Micro,
            "DISTRIBUTED_INFERENCE" => DistributedInference,
            "HYBRID_CUSTOMIZED" => Customized,
            _ => return None,
        })
    }
}

/// An ASTRA-sim 1.0 workload file.
#[derive(Debug, Clone, PartialEq)]
pub struct AstraWorkload {
    /// From the header; `None` for LIBRA's headerless layer lists.
    pub parallelism: Option<Parallelism>,
    /// `model_parallel_NPU_group` of the transformer policies.
    pub model_parallel_group: Option<u32>,
    pub layers: Vec<Layer>,
    /// Per layer, the 13th field of a `HYBRID_CUSTOMIZED` file.
    pub layer_parallelism: Vec<Option<Parallelism>>,
}

fn collective_kind(name: &str) -> Option<Option<CollectiveKind>> {
    Some(match name {
        "NONE" => None,
        "ALLREDUCE" => Some(CollectiveKind::AllReduce),
        "REDUCESCATTER" => Some(CollectiveKind::ReduceScatter),
        "ALLGATHER" => Some(CollectiveKind::AllGather),
        "ALLTOALL" => Some(CollectiveKind::AllToAll),
        _ => return None,
    })
}

/// Parses the header's policy line: the policy, then its parameters.
fn header(fields: &[&str], no: usize) -> Result<(Parallelism, Option<u32>)> {
    let p = Parallelism::from_name(fields[0])
        .ok_or_else(|| parse_err(format!("workload: line {no}: unknown parallelism `{}`", fields[0])))?;
    let mut mp = None;
    if matches!(p, Parallelism::Transformer | Parallelism::TransformerFwdInBckwd) {
        if fields.len() < 3 || fields[1] != "model_parallel_NPU_group:" {
            return Err(parse_err(format!(
                "workload: line {no}: `{}` needs `model_parallel_NPU_group: N`",
                fields[0]
            )));
        }
        mp = Some(fields[2].parse::<u32>().ok().filter(|&g| g >= 1).ok_or_else(|| {
            parse_err(format!("workload: line {no}: `model_parallel_NPU_group` is `{}`", fields[2]))
        })?);
    }
    Ok((p, mp))
}

/// Parses an ASTRA-sim 1.0 workload: an optional header (a parallelism line, then the layer
/// count), then per line `name reserved fwd_compute fwd_comm fwd_size ig_compute ig_comm
/// ig_size wg_compute wg_comm wg_size update_time`, and for `HYBRID_CUSTOMIZED` the layer's
/// parallelism. Compute is in cycles, read as ns (a 1 GHz clock); sizes are bytes.
pub fn parse_astra_workload(text: &str) -> Result<AstraWorkload> {
    check_size(text, "workload")?;
    let lines: Vec<(usize, Vec<&str>)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split_whitespace().collect::<Vec<_>>()))
        .filter(|(_, f)| !f.is_empty())
        .collect();
    let mut start = 0;
    let mut expected: Option<usize> = None;
    let (mut parallelism, mut mp) = (None, None);
    let has_header = lines.first().is_some_and(|(_, f)| Parallelism::from_name(f[0]).is_some())
        || (lines.len() >= 2 && lines[1].1.len() == 1 && lines[0].1.len() < 12);
    if has_header {
        let (no, f) = &lines[0];
        let (p, g) = header(f, *no)?;
        parallelism = Some(p);
        mp = g;
        let (no, f) = lines.get(1).ok_or_else(|| parse_err("workload: no layer count after the header"))?;
        if f.len() != 1 {
            return Err(parse_err(format!("workload: line {no}: expected the layer count alone")));
        }
        let n = f[0].parse::<usize>().map_err(|_| {
            parse_err(format!("workload: line {no}: expected the layer count, found `{}`", f[0]))
        })?;
        expected = Some(n);
        start = 2;
    }
    let customized = parallelism == Some(Parallelism::Customized);
    let want = if customized { 13 } else { 12 };
    let mut layers = Vec::new();
    let mut layer_parallelism = Vec::new();
    for (no, f) in &lines[start..] {
        if f.len() != want {
            let why = if customized { " (HYBRID_CUSTOMIZED adds the layer's parallelism)" } else { "" };
            return Err(parse_err(format!(
                "workload: line {no}: expected {want} fields{why}, found {}",
                f.len()
            )));
        }
        if f[1].parse::<i64>().is_err() {
            return Err(parse_err(format!(
                "workload: line {no}: the second field `{}` is not an integer",
                f[1]
            )));
        }
        let mut compute = [0.0; 3];
        let mut comm = [None; 3];
        for p in 0..3 {
            let base = 2 + 3 * p;
            compute[p] = number(f[base], &format!("workload: line {no}: compute time"))?;
            if compute[p] < 0.0 {
                return Err(parse_err(format!("workload: line {no}: negative compute time `{}`", f[base])));
            }
            let kind = collective_kind(f[base + 1]).ok_or_else(|| {
                parse_err(format!("workload: line {no}: unknown communication type `{}`", f[base + 1]))
            })?;
            let size = number(f[base + 2], &format!("workload: line {no}: communication size"))?;
            if size < 0.0 {
                return Err(parse_err(format!(
                    "workload: line {no}: negative communication size `{}`",
                    f[base + 2]
                )));
            }
            comm[p] = kind.map(|k| (k, size));
        }
        number(f[11], &format!("workload: line {no}: update time"))?;
        layer_parallelism.push(if customized {
            match Parallelism::from_name(f[12]) {
                Some(Parallelism::Customized) | None => {
                    return Err(parse_err(format!(
                        "workload: line {no}: `{}` is not a layer parallelism",
                        f[12]
                    )))
                }
                p => p,
            }
        } else {
            None
        });
        layers.push(Layer { name: f[0].to_string(), compute, comm });
    }
    if let Some(n) = expected {
        if n != layers.len() {
            return Err(parse_err(format!("workload: the header says {n} layers, found {}", layers.len())));
        }
    }
    if layers.is_empty() {
        return Err(parse_err("workload: no layers"));
    }
    Ok(AstraWorkload { parallelism, model_parallel_group: mp, layers, layer_parallelism })
}

/// The layers of an ASTRA-sim 1.0 workload (see [`parse_astra_workload`]).
pub fn parse_astra_layers(text: &str) -> Result<Vec<Layer>> {
    parse_astra_workload(text).map(|w| w.layers)
}

/// The communicators ASTRA-sim 1.0 gives a layer of policy `p` on `net` (its
/// `decode_involved_dimensions`): a dimension is in or out, and a transformer's model-parallel
/// group may end inside a dimension, which is then split between model and data parallelism.
pub fn policy_communicator(
    p: Parallelism,
    model_parallel_group: Option<u32>,
    net: &Network,
) -> Result<Communicator> {
    let sizes: Vec<u32> = net.dims().iter().map(|d| d.size).collect();
    let d = sizes.len();
    let mask = |on: &dyn Fn(usize) -> bool| -> Vec<u32> {
        (0..d).map(|k| if on(k) { sizes[k] } else { 1 }).collect()
    };
    let none = vec![1; d];
    use Parallelism::*;
    Ok(match p {
        Data | Dlrm | Micro => {
            Communicator { forward: none.clone(), input_grad: none, weight_grad: sizes.clone() }
        }
        Model | DistributedInference => {
            Communicator { forward: sizes.clone(), input_grad: sizes.clone(), weight_grad: none }
        }
        HybridDataModel => {
            let model = mask(&|k| k == 0);
            Communicator { forward: model.clone(), input_grad: model, weight_grad: mask(&|k| k > 0) }
        }
        HybridModelData => {
            let model = mask(&|k| k > 0);
            Communicator { forward: model.clone(), input_grad: model, weight_grad: mask(&|k| k == 0) }
        }
        Transformer | TransformerFwdInBckwd => {
            let g = model_parallel_group.ok_or_else(|| {
                Error::invalid("a transformer layer needs the header's `model_parallel_NPU_group`")
            })?;
            let mut model = vec![1u32; d];
            let mut data = sizes.clone();
            let mut left = g;
            for k in 0..d {
                if left <= 1 {
                    break;
                }
                let take = left.min(sizes[k]);
                if sizes[k] % take != 0 || left % take != 0 {
                    return Err(Error::invalid(format!(
                        "`model_parallel_NPU_group` {g} does not split dimension {k} (size {}) evenly",
                        sizes[k]
                    )));
                }
                model[k] = take;
                data[k] = sizes[k] / take;
                left /= take;
            }
            if left > 1 {
                return Err(Error::invalid(format!(
                    "`model_parallel_NPU_group` {g} exceeds the network's {} NPUs",
                    net.npus()
                )));
            }
            Communicator { forward: model.clone(), input_grad: model, weight_grad: data }
        }
        Customized => return Err(Error::invalid("HYBRID_CUSTOMIZED is not a layer's parallelism")),
    })
}

/// One training iteration of an ASTRA-sim 1.0 workload on `net`, each layer with the
/// communicators of its parallelism (the header's, a `HYBRID_CUSTOMIZED` layer's own, or every
/// dimension for DLRM's layer 0), or with `comm` for every layer when given (LIBRA's way).
pub fn astra_iteration(
    w: &AstraWorkload,
    net: &Network,
    comm: Option<&Communicator>,
    overlap: Overlap,
) -> Result<Workload> {
    let comms: Vec<Communicator> = match comm {
        Some(c) => vec![c.clone(); w.layers.len()],
        None => {
            let header = w.parallelism.ok_or_else(|| {
                Error::invalid("the workload has no parallelism header: give a communicator")
            })?;
            let mut out = Vec::with_capacity(w.layers.len());
            for (i, lp) in w.layer_parallelism.iter().enumerate() {
                let c = match (header, lp) {
                    (_, Some(p)) => policy_communicator(*p, w.model_parallel_group, net)?,
                    (Parallelism::Dlrm, None) if i == 0 => {
                        let all: Vec<u32> = net.dims().iter().map(|d| d.size).collect();
                        Communicator::uniform(all)
                    }
                    (p, None) => policy_communicator(p, w.model_parallel_group, net)?,
                };
                out.push(c);
            }
            out
        }
    };
    Ok(training_iteration_per_layer(&w.layers, &comms, overlap))
}
