//! Readers for LIBRA's inputs, so its users bring their files unchanged: the network,
//! communicator and cost-model YAML files, and the ASTRA-sim 1.0 workload text format.
//!
//! The YAML reader covers the subset those files use: `Key: scalar`, `Key: [a, b, c]`, nested
//! mappings by indentation, block lists (`- item`) and `#` comments.
use crate::error::{Error, Result, Status};
use crate::topo::network::{CostParams, DimKind, Dimension, Network};
use crate::topo::workload::{training_iteration, CollectiveKind, Communicator, Layer, Overlap, Workload};

/// A parsed YAML value of the supported subset.
#[derive(Debug, Clone, PartialEq)]
pub enum Yaml {
    Scalar(String),
    List(Vec<String>),
    Map(Vec<(String, Yaml)>),
}

impl Yaml {
    /// Case-insensitive key lookup in a mapping.
    pub fn get(&self, key: &str) -> Option<&Yaml> {
        match self {
            Yaml::Map(m) => m.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v),
            _ => None,
        }
    }
}

fn parse_err(msg: impl Into<String>) -> Error {
    Error::new(Status::LIBRA_ERR_PARSE, msg)
}

/// Largest text a parser accepts: these files are a few kilobytes, and the parsed form takes
/// a multiple of the text's size.
/// cbindgen:ignore
pub const MAX_TEXT_BYTES: usize = 16 << 20;

fn check_size(text: &str, what: &str) -> Result<()> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(parse_err(format!(
            "{what}: the text is {} bytes; at most {MAX_TEXT_BYTES} are accepted",
            text.len()
        )));
    }
    Ok(())
}

/// Parses the YAML subset; the top level must be a mapping.
pub fn parse_yaml(text: &str) -> Result<Yaml> {
    check_size(text, "YAML")?;
    let mut lines = Vec::new();
    for (no, raw) in text.lines().enumerate() {
        let content = match raw.find('#') {
            Some(i) => &raw[..i],
            None => raw,
        };
        if content.trim().is_empty() {
            continue;
        }
        if content.contains('\t') {
            return Err(parse_err(format!("line {}: tabs are not allowed in YAML indentation", no + 1)));
        }
        let indent = content.len() - content.trim_start().len();
        lines.push((no + 1, indent, content.trim().to_string()));
    }
    let mut pos = 0;
    let v = parse_block(&lines, &mut pos, 0)?;
    if pos < lines.len() {
        return Err(parse_err(format!("line {}: unexpected indentation", lines[pos].0)));
    }
    Ok(v)
}

fn unquote(s: &str) -> String {
    let s = s.trim();
    if s.len() >= 2
        && ((s.starts_with('"') && s.ends_with('"')) || (s.starts_with('\'') && s.ends_with('\'')))
    {
        s[1..s.len() - 1].to_string()
    } else {
        s.to_string()
    }
}

fn parse_block(lines: &[(usize, usize, String)], pos: &mut usize, indent: usize) -> Result<Yaml> {
    if *pos < lines.len() && lines[*pos].2.starts_with('-') {
        let mut items = Vec::new();
        while *pos < lines.len() && lines[*pos].1 == indent && lines[*pos].2.starts_with('-') {
            items.push(unquote(&lines[*pos].2[1..]));
            *pos += 1;
        }
        return Ok(Yaml::List(items));
    }
    let mut map = Vec::new();
    while *pos < lines.len() {
        let (no, ind, ref content) = lines[*pos];
        if ind < indent {
            break;
        }
        if ind > indent {
            return Err(parse_err(format!("line {no}: unexpected indentation")));
        }
        let colon =
            content.find(':').ok_or_else(|| parse_err(format!("line {no}: expected `key: value`")))?;
        let key = unquote(&content[..colon]);
        if key.is_empty() {
            return Err(parse_err(format!("line {no}: empty key")));
        }
        let rest = content[colon + 1..].trim();
        *pos += 1;
        let value = if rest.is_empty() {
            match lines.get(*pos) {
                Some(&(_, child, _)) if child > indent => parse_block(lines, pos, child)?,
                _ => Yaml::Scalar(String::new()),
            }
        } else if let Some(inner) = rest.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| parse_err(format!("line {no}: `[` without a closing `]`")))?;
            Yaml::List(inner.split(',').map(unquote).filter(|s| !s.is_empty()).collect())
        } else {
            Yaml::Scalar(unquote(rest))
        };
        if map.iter().any(|(k, _): &(String, Yaml)| k.eq_ignore_ascii_case(&key)) {
            return Err(parse_err(format!("line {no}: duplicate key `{key}`")));
        }
        map.push((key, value));
    }
    Ok(Yaml::Map(map))
}

fn list<'a>(doc: &'a Yaml, key: &str, file: &str) -> Result<Option<&'a [String]>> {
    match doc.get(key) {
        None => Ok(None),
        Some(Yaml::List(v)) => Ok(Some(v)),
        Some(_) => Err(parse_err(format!("{file}: `{key}` must be a list like [a, b]"))),
    }
}

fn number(s: &str, what: &str) -> Result<f64> {
    s.trim().parse::<f64>().map_err(|_| parse_err(format!("{what}: `{s}` is not a number")))
}

/// Parses a LIBRA network file (`Topology`, `NpusCount`, optional `CostDimension`) and an
/// optional cost-model file (`<CostDimension>: {Link, Switch, Nic}` in $ per GB/s). Two
/// optional keys beyond LIBRA's, `Bandwidth` (GB/s per NPU, default 100) and `Latency` (ns per
/// step, default 0), give the network's current bandwidths and latencies.
pub fn parse_network(network_yaml: &str, cost_yaml: Option<&str>) -> Result<Network> {
    let doc = parse_yaml(network_yaml)?;
    let topo = list(&doc, "Topology", "network")?.ok_or_else(|| parse_err("network: missing `Topology`"))?;
    let npus =
        list(&doc, "NpusCount", "network")?.ok_or_else(|| parse_err("network: missing `NpusCount`"))?;
    if topo.len() != npus.len() {
        return Err(parse_err(format!(
            "network: `Topology` has {} entries but `NpusCount` has {}",
            topo.len(),
            npus.len()
        )));
    }
    let per_dim = |key: &str, default: f64| -> Result<Vec<f64>> {
        match list(&doc, key, "network")? {
            None => Ok(vec![default; topo.len()]),
            Some(v) if v.len() != topo.len() => Err(parse_err(format!(
                "network: `{key}` has {} entries, `Topology` has {}",
                v.len(),
                topo.len()
            ))),
            Some(v) => {
                v.iter().enumerate().map(|(i, s)| number(s, &format!("network: `{key}[{i}]`"))).collect()
            }
        }
    };
    let bandwidth = per_dim("Bandwidth", 100.0)?;
    let latency = per_dim("Latency", 0.0)?;
    let cost_dims = list(&doc, "CostDimension", "network")?;
    if let Some(c) = cost_dims {
        if c.len() != topo.len() {
            return Err(parse_err(format!(
                "network: `CostDimension` has {} entries, `Topology` has {}",
                c.len(),
                topo.len()
            )));
        }
    }
    let cost_doc = cost_yaml.map(parse_yaml).transpose()?;
    let mut dims = Vec::with_capacity(topo.len());
    for i in 0..topo.len() {
        let kind = match topo[i].to_ascii_lowercase().replace(['-', '_', ' '], "").as_str() {
            "ring" => DimKind::Ring,
            "fullyconnected" | "fc" => DimKind::FullyConnected,
            "switch" => DimKind::Switch,
            other => {
                return Err(parse_err(format!(
                    "network: `Topology[{i}]` is `{other}`, expected Ring, FullyConnected or Switch"
                )))
            }
        };
        let size: u32 = npus[i].trim().parse().map_err(|_| {
            parse_err(format!("network: `NpusCount[{i}]` is `{}`, expected a positive integer", npus[i]))
        })?;
        let mut cost = CostParams::default();
        if let (Some(names), Some(cd)) = (cost_dims, &cost_doc) {
            let name = &names[i];
            let entry =
                cd.get(name).ok_or_else(|| parse_err(format!("cost model: no entry for `{name}`")))?;
            let field = |k: &str| -> Result<f64> {
                match entry.get(k) {
                    None => Ok(0.0),
                    Some(Yaml::Scalar(s)) => number(s, &format!("cost model: `{name}.{k}`")),
                    Some(_) => Err(parse_err(format!("cost model: `{name}.{k}` must be a number"))),
                }
            };
            cost = CostParams { link: field("Link")?, switch: field("Switch")?, nic: field("Nic")? };
        }
        dims.push(Dimension { kind, size, bandwidth: bandwidth[i], latency: latency[i], cost });
    }
    Network::new(dims)
}

/// Parses a LIBRA communicator file (`Forward`, `InputGrad`, `WeightGrad`: a group size per
/// dimension, `-1` = not involved) for a network of `dims` dimensions.
pub fn parse_communicator(yaml: &str, dims: usize) -> Result<Communicator> {
    let doc = parse_yaml(yaml)?;
    let phase = |key: &str| -> Result<Vec<u32>> {
        let v = list(&doc, key, "communicator")?
            .ok_or_else(|| parse_err(format!("communicator: missing `{key}`")))?;
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

fn collective_kind(name: &str) -> Option<Option<CollectiveKind>> {
    Some(match name.to_ascii_lowercase().as_str() {
        "none" => None,
        "allreduce" => Some(CollectiveKind::AllReduce),
        "reducescatter" => Some(CollectiveKind::ReduceScatter),
        "allgather" => Some(CollectiveKind::AllGather),
        "alltoall" => Some(CollectiveKind::AllToAll),
        _ => return None,
    })
}

/// Parses ASTRA-sim 1.0 workload layers: per line `name reserved fwd_compute fwd_comm fwd_size
/// ig_compute ig_comm ig_size wg_compute wg_comm wg_size update_time` (compute in ns, sizes in
/// bytes). The optional ASTRA-sim header (a parallelism line, then the layer count) is accepted.
pub fn parse_astra_layers(text: &str) -> Result<Vec<Layer>> {
    check_size(text, "workload")?;
    let lines: Vec<(usize, Vec<&str>)> = text
        .lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.split_whitespace().collect::<Vec<_>>()))
        .filter(|(_, f)| !f.is_empty())
        .collect();
    let mut start = 0;
    let mut expected: Option<usize> = None;
    // Header: a parallelism line, then a line holding only the number of layers.
    if lines.len() >= 2 && lines[1].1.len() == 1 && lines[0].1.len() != 12 {
        let (no, f) = &lines[1];
        let n = f[0].parse::<usize>().map_err(|_| {
            parse_err(format!("workload: line {no}: expected the layer count, found `{}`", f[0]))
        })?;
        expected = Some(n);
        start = 2;
    }
    let mut layers = Vec::new();
    for (no, f) in &lines[start..] {
        if f.len() != 12 {
            return Err(parse_err(format!("workload: line {no}: expected 12 fields, found {}", f.len())));
        }
        let mut compute = [0.0; 3];
        let mut comm = [None; 3];
        for p in 0..3 {
            let base = 2 + 3 * p;
            compute[p] = number(f[base], &format!("workload: line {no}: compute time"))?;
            if !(compute[p].is_finite() && compute[p] >= 0.0) {
                return Err(parse_err(format!("workload: line {no}: negative compute time `{}`", f[base])));
            }
            let kind = collective_kind(f[base + 1]).ok_or_else(|| {
                parse_err(format!("workload: line {no}: unknown communication type `{}`", f[base + 1]))
            })?;
            let size = number(f[base + 2], &format!("workload: line {no}: communication size"))?;
            if !(size.is_finite() && size >= 0.0) {
                return Err(parse_err(format!(
                    "workload: line {no}: negative communication size `{}`",
                    f[base + 2]
                )));
            }
            comm[p] = kind.map(|k| (k, size));
        }
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
    Ok(layers)
}

/// Parses an ASTRA-sim 1.0 workload and a LIBRA communicator into one training iteration.
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_subset() {
        let doc = parse_yaml("# c\nA: [ 1, 2 ,3 ]  # x\nB:\n  C: 4.5\n  D: 'x'\nE:\n  - p\n  - q\n").unwrap();
        assert_eq!(doc.get("a"), Some(&Yaml::List(vec!["1".into(), "2".into(), "3".into()])));
        assert_eq!(doc.get("B").unwrap().get("C"), Some(&Yaml::Scalar("4.5".into())));
        assert_eq!(doc.get("B").unwrap().get("D"), Some(&Yaml::Scalar("x".into())));
        assert_eq!(doc.get("E"), Some(&Yaml::List(vec!["p".into(), "q".into()])));
        assert_eq!(parse_yaml("A: [1, 2\n").unwrap_err().status, Status::LIBRA_ERR_PARSE);
        assert!(parse_yaml("A: 1\n   B: 2\n").is_err());
    }
}
