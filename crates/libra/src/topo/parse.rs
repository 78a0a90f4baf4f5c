//! Readers for the files LIBRA and ASTRA-sim users already have, read unchanged: LIBRA's
//! network, cost-model and communicator YAML, ASTRA-sim 2.0's analytical network YAML (told
//! apart by its keys), and ASTRA-sim 1.0 workload text (see [`crate::topo::astra`]).
//!
//! Strict: an unknown or misspelled key, a value of the wrong shape or out of range, or a cost
//! model that does not cover the network is a `LIBRA_ERR_PARSE` naming the key or line.
use crate::error::Result;
use crate::topo::astra::{network_from_astra_sim, ASTRA_SIM_NETWORK_KEYS};
pub use crate::topo::astra::{parse_astra_layers, parse_astra_workload};
use crate::topo::fields::{
    build, check_count, check_keys, dim_kind, list, non_negative, npus, positive, required_list,
};
use crate::topo::network::{CostParams, DimKind, Dimension, Network};
use crate::topo::workload::{training_iteration, Communicator, Overlap, Workload};
use crate::topo::yaml::parse_err;
pub use crate::topo::yaml::{parse_yaml, Yaml, MAX_DEPTH, MAX_TEXT_BYTES};

/// Keys of LIBRA's network file, and two of ours: `Bandwidth` (GB/s per NPU, default 100) and
/// `Latency` (ns per algorithm step, default 0).
const LIBRA_NETWORK_KEYS: [&str; 5] = ["Topology", "NpusCount", "CostDimension", "Bandwidth", "Latency"];

/// Parses a network file, LIBRA's (`Topology`, `NpusCount`, optional `CostDimension`) or
/// ASTRA-sim 2.0's analytical one (`topology`, `npus_count`, `bandwidth` in GB/s per link,
/// `latency` in ns per link; see [`crate::topo::astra`] for the unit conversion), and an
/// optional LIBRA cost-model file (`<CostDimension>:` then `Link`, `Switch`, `Nic` in $ per
/// GB/s), which needs a LIBRA network with `CostDimension`.
pub fn parse_network(network_yaml: &str, cost_yaml: Option<&str>) -> Result<Network> {
    let doc = parse_yaml(network_yaml)?;
    let is_astra = doc.entries().iter().any(|e| ASTRA_SIM_NETWORK_KEYS.contains(&e.key.as_str()));
    let is_libra = doc.entries().iter().any(|e| LIBRA_NETWORK_KEYS.contains(&e.key.as_str()));
    match (is_libra, is_astra) {
        (true, true) => Err(parse_err(
            "network: mixes LIBRA keys (`Topology`, `NpusCount`) with ASTRA-sim 2.0 keys (`topology`, `npus_count`)",
        )),
        (false, true) => {
            if cost_yaml.is_some() {
                return Err(parse_err(
                    "cost model: an ASTRA-sim 2.0 network has no `CostDimension` to look the costs up by",
                ));
            }
            network_from_astra_sim(&doc)
        }
        _ => libra_network(&doc, cost_yaml),
    }
}

fn libra_network(doc: &Yaml, cost_yaml: Option<&str>) -> Result<Network> {
    const F: &str = "network";
    check_keys(doc, &LIBRA_NETWORK_KEYS, F)?;
    let topo = required_list(doc, "Topology", F)?;
    let sizes = required_list(doc, "NpusCount", F)?;
    check_count(sizes.len(), topo.len(), "NpusCount", F)?;
    if topo.is_empty() {
        return Err(parse_err("network: `Topology` is empty"));
    }
    let per_dim = |key: &str, default: f64, check: fn(&str, &str) -> Result<f64>| -> Result<Vec<f64>> {
        match list(doc, key, F)? {
            None => Ok(vec![default; topo.len()]),
            Some(v) => {
                check_count(v.len(), topo.len(), key, F)?;
                v.iter().enumerate().map(|(i, s)| check(s, &format!("network: `{key}[{i}]`"))).collect()
            }
        }
    };
    let bandwidth = per_dim("Bandwidth", 100.0, positive)?;
    let latency = per_dim("Latency", 0.0, non_negative)?;
    let cost_dims = list(doc, "CostDimension", F)?;
    if let Some(c) = cost_dims {
        check_count(c.len(), topo.len(), "CostDimension", F)?;
    }
    let cost_doc = match (cost_yaml, cost_dims) {
        (Some(_), None) => {
            return Err(parse_err("cost model: given, but the network file has no `CostDimension`"));
        }
        (Some(text), Some(_)) => {
            let cd = parse_yaml(text)?;
            validate_cost_model(&cd)?;
            Some(cd)
        }
        (None, _) => None,
    };
    let mut dims = Vec::with_capacity(topo.len());
    for i in 0..topo.len() {
        let kind = dim_kind(&topo[i], &format!("network: `Topology[{i}]`"))?;
        let size = npus(&sizes[i], &format!("network: `NpusCount[{i}]`"))?;
        let cost = match (&cost_doc, cost_dims) {
            (Some(cd), Some(names)) => cost_entry(cd, &names[i], kind)?,
            _ => CostParams::default(),
        };
        dims.push(Dimension { kind, size, bandwidth: bandwidth[i], latency: latency[i], cost });
    }
    build(dims, F)
}

/// Every entry of a cost model is a mapping of `Link`, `Switch`, `Nic` to positive numbers
/// (LIBRA refuses other elements and non-positive costs), even one no dimension uses.
fn validate_cost_model(cd: &Yaml) -> Result<()> {
    if cd.entries().is_empty() {
        return Err(parse_err("cost model: no entries"));
    }
    for e in cd.entries() {
        let Yaml::Map(fields) = &e.value else {
            return Err(parse_err(format!(
                "cost model: line {}: `{}` must be a mapping of `Link`, `Switch` and `Nic` costs",
                e.line, e.key
            )));
        };
        check_keys(&e.value, &["Link", "Switch", "Nic"], "cost model")?;
        for f in fields {
            match &f.value {
                Yaml::Scalar(s) => {
                    positive(s, &format!("cost model: line {}: `{}.{}`", f.line, e.key, f.key))?;
                }
                _ => {
                    return Err(parse_err(format!(
                        "cost model: line {}: `{}.{}` must be a number",
                        f.line, e.key, f.key
                    )))
                }
            }
        }
    }
    Ok(())
}

/// The costs of one dimension: `Link` always, `Switch` and `Nic` for a switch dimension
/// (LIBRA's cost model reads exactly these).
fn cost_entry(cd: &Yaml, name: &str, kind: DimKind) -> Result<CostParams> {
    let entry = cd.get(name).ok_or_else(|| parse_err(format!("cost model: no entry for `{name}`")))?;
    let field = |k: &str, needed: bool| -> Result<f64> {
        match entry.get(k) {
            Some(Yaml::Scalar(s)) => positive(s, &format!("cost model: `{name}.{k}`")),
            Some(_) => Err(parse_err(format!("cost model: `{name}.{k}` must be a number"))),
            None if needed => Err(parse_err(format!(
                "cost model: `{name}` has no `{k}`, which a {} dimension needs",
                kind.name()
            ))),
            None => Ok(0.0),
        }
    };
    let switch = kind == DimKind::Switch;
    Ok(CostParams {
        link: field("Link", true)?,
        switch: field("Switch", switch)?,
        nic: field("Nic", switch)?,
    })
}

/// Parses a LIBRA communicator file (`Forward`, `InputGrad`, `WeightGrad`: a group size per
/// dimension, `-1` = not involved) for a network of `dims` dimensions.
pub fn parse_communicator(yaml: &str, dims: usize) -> Result<Communicator> {
    const F: &str = "communicator";
    let doc = parse_yaml(yaml)?;
    check_keys(&doc, &["Forward", "InputGrad", "WeightGrad"], F)?;
    let phase = |key: &str| -> Result<Vec<u32>> {
        let v = required_list(&doc, key, F)?;
        if v.len() != dims {
            return Err(parse_err(format!(
                "communicator: `{key}` has {} entries, the network has {dims} dimensions",
                v.len()
            )));
        }
        v.iter()
            .enumerate()
            .map(|(i, s)| match s.trim().parse::<i64>() {
                Ok(-1) => Ok(1),
                Ok(g) if g >= 1 && g <= u32::MAX as i64 => Ok(g as u32),
                _ => Err(parse_err(format!(
                    "communicator: `{key}[{i}]` is `{s}`, expected -1 or a positive group size"
                ))),
            })
            .collect()
    };
    Ok(Communicator {
        forward: phase("Forward")?,
        input_grad: phase("InputGrad")?,
        weight_grad: phase("WeightGrad")?,
    })
}

/// Parses an ASTRA-sim 1.0 workload and a LIBRA communicator into one training iteration (the
/// communicator applies to every layer, also in a `HYBRID_CUSTOMIZED` file).
pub fn parse_workload(
    workload_text: &str,
    communicator_yaml: &str,
    dims: usize,
    overlap: Overlap,
) -> Result<Workload> {
    let layers = parse_astra_layers(workload_text)?;
    let comm = parse_communicator(communicator_yaml, dims)?;
    Ok(training_iteration(&layers, &comm, overlap))
}
