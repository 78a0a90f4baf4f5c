//! Typed readers of YAML fields, shared by LIBRA's formats (`parse`) and ASTRA-sim's
//! (`astra`): every reader names the key or file in its error.
use crate::error::Result;
use crate::topo::network::{DimKind, Dimension, Network};
use crate::topo::yaml::{parse_err, Entry, Yaml};

/// Refuses keys outside `allowed`, naming the line (a misspelled key is never ignored).
pub(crate) fn check_keys(doc: &Yaml, allowed: &[&str], file: &str) -> Result<()> {
    for e in doc.entries() {
        if !allowed.contains(&e.key.as_str()) {
            return Err(parse_err(format!(
                "{file}: line {}: unknown key `{}`; expected one of {}",
                e.line,
                e.key,
                allowed.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    Ok(())
}

/// A list-valued key: `Ok(None)` when absent.
pub(crate) fn list<'a>(doc: &'a Yaml, key: &str, file: &str) -> Result<Option<&'a [String]>> {
    match doc.entry(key) {
        None => Ok(None),
        Some(Entry { value: Yaml::List(v), .. }) => Ok(Some(v)),
        Some(e) => Err(parse_err(format!("{file}: line {}: `{key}` must be a list like [a, b]", e.line))),
    }
}

pub(crate) fn required_list<'a>(doc: &'a Yaml, key: &str, file: &str) -> Result<&'a [String]> {
    list(doc, key, file)?.ok_or_else(|| parse_err(format!("{file}: missing `{key}`")))
}

/// A finite number (`inf` and `nan`, which Rust's parser accepts, are refused).
pub(crate) fn number(s: &str, what: &str) -> Result<f64> {
    match s.trim().parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(v),
        _ => Err(parse_err(format!("{what}: `{s}` is not a finite number"))),
    }
}

pub(crate) fn positive(s: &str, what: &str) -> Result<f64> {
    let v = number(s, what)?;
    if v <= 0.0 {
        return Err(parse_err(format!("{what} is {v}, must be positive")));
    }
    Ok(v)
}

pub(crate) fn non_negative(s: &str, what: &str) -> Result<f64> {
    let v = number(s, what)?;
    if v < 0.0 {
        return Err(parse_err(format!("{what} is {v}, must be non-negative")));
    }
    Ok(v)
}

/// A dimension size: an integer of at least 2.
pub(crate) fn npus(s: &str, what: &str) -> Result<u32> {
    match s.trim().parse::<u32>() {
        Ok(n) if n >= 2 => Ok(n),
        Ok(n) => Err(parse_err(format!("{what} is {n}, must be at least 2"))),
        Err(_) => Err(parse_err(format!("{what} is `{s}`, expected an integer of at least 2"))),
    }
}

pub(crate) fn dim_kind(s: &str, what: &str) -> Result<DimKind> {
    match s.trim() {
        "Ring" => Ok(DimKind::Ring),
        "FullyConnected" => Ok(DimKind::FullyConnected),
        "Switch" => Ok(DimKind::Switch),
        other => Err(parse_err(format!("{what} is `{other}`, expected Ring, FullyConnected or Switch"))),
    }
}

pub(crate) fn check_count(got: usize, want: usize, key: &str, file: &str) -> Result<()> {
    if got != want {
        return Err(parse_err(format!("{file}: `{key}` has {got} entries, the topology has {want}")));
    }
    Ok(())
}

/// Builds the network; an NPU count that overflows is a parse error too.
pub(crate) fn build(dims: Vec<Dimension>, file: &str) -> Result<Network> {
    let total = dims.iter().try_fold(1u64, |acc, d| acc.checked_mul(d.size as u64));
    if !matches!(total, Some(n) if n <= 1u64 << 32) {
        return Err(parse_err(format!("{file}: the product of the NPU counts exceeds 2^32")));
    }
    Network::new(dims)
}
