//! Multi-dimensional networks: ordered dimensions with a kind, a size, a bandwidth per NPU, a
//! per-step latency and LIBRA's cost parameters.
use crate::error::{Error, Result};

/// The building block of one network dimension.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DimKind {
    Ring,
    FullyConnected,
    Switch,
}

impl DimKind {
    pub fn name(self) -> &'static str {
        match self {
            DimKind::Ring => "ring",
            DimKind::FullyConnected => "fully-connected",
            DimKind::Switch => "switch",
        }
    }
}

/// Cost of one dimension's components in dollars per GB/s of per-NPU bandwidth.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct CostParams {
    pub link: f64,
    pub switch: f64,
    pub nic: f64,
}

impl CostParams {
    // LIBRA's reference values for the four packaging levels. (Functions rather than associated
    // constants, which the header generator would export.)
    pub fn chiplet() -> CostParams {
        CostParams { link: 2.0, switch: 0.0, nic: 0.0 }
    }
    pub fn package() -> CostParams {
        CostParams { link: 4.0, switch: 13.0, nic: 0.0 }
    }
    pub fn node() -> CostParams {
        CostParams { link: 4.0, switch: 13.0, nic: 0.0 }
    }
    pub fn pod() -> CostParams {
        CostParams { link: 7.8, switch: 18.0, nic: 31.6 }
    }
}

/// One network dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct Dimension {
    pub kind: DimKind,
    /// NPUs along this dimension.
    pub size: u32,
    /// Bandwidth per NPU in GB/s (bytes per ns).
    pub bandwidth: f64,
    /// Latency of one algorithm step in ns.
    pub latency: f64,
    pub cost: CostParams,
}

impl Dimension {
    pub fn new(kind: DimKind, size: u32, bandwidth: f64) -> Self {
        Dimension { kind, size, bandwidth, latency: 0.0, cost: CostParams::default() }
    }

    pub fn with_latency(mut self, latency: f64) -> Self {
        self.latency = latency;
        self
    }

    pub fn with_cost(mut self, cost: CostParams) -> Self {
        self.cost = cost;
        self
    }

    /// Dollars per GB/s of per-NPU bandwidth for one NPU: switch and NIC costs only apply to
    /// switch dimensions, as in LIBRA's cost model (ring and fully-connected links are direct).
    pub fn unit_cost(&self) -> f64 {
        match self.kind {
            DimKind::Switch => self.cost.link + self.cost.switch + self.cost.nic,
            _ => self.cost.link,
        }
    }
}

/// An ordered list of dimensions; NPU `i` has mixed-radix coordinates with dimension 0 fastest.
#[derive(Debug, Clone, PartialEq)]
pub struct Network {
    dims: Vec<Dimension>,
}

impl Network {
    /// Validates and builds a network. Bandwidths must be positive and finite, sizes at least 2,
    /// latencies and costs non-negative.
    pub fn new(dims: Vec<Dimension>) -> Result<Self> {
        if dims.is_empty() {
            return Err(Error::invalid("`dims` is empty: a network needs at least one dimension"));
        }
        for (i, d) in dims.iter().enumerate() {
            if d.size < 2 {
                return Err(Error::invalid(format!("`dims[{i}].size` is {}, must be at least 2", d.size)));
            }
            check_positive(d.bandwidth, &format!("dims[{i}].bandwidth"))?;
            check_non_negative(d.latency, &format!("dims[{i}].latency"))?;
            check_non_negative(d.cost.link, &format!("dims[{i}].cost.link"))?;
            check_non_negative(d.cost.switch, &format!("dims[{i}].cost.switch"))?;
            check_non_negative(d.cost.nic, &format!("dims[{i}].cost.nic"))?;
        }
        let npus = dims.iter().try_fold(1u64, |acc, d| acc.checked_mul(d.size as u64));
        if !matches!(npus, Some(n) if n <= 1u64 << 32) {
            return Err(Error::invalid("`dims[].size`: the product of the sizes exceeds 2^32 NPUs"));
        }
        Ok(Network { dims })
    }

    pub fn dims(&self) -> &[Dimension] {
        &self.dims
    }

    pub fn num_dims(&self) -> usize {
        self.dims.len()
    }

    /// Total NPUs.
    pub fn npus(&self) -> u64 {
        self.dims.iter().map(|d| d.size as u64).product()
    }

    pub fn bandwidths(&self) -> Vec<f64> {
        self.dims.iter().map(|d| d.bandwidth).collect()
    }

    /// A copy with other bandwidths (validated).
    pub fn with_bandwidths(&self, bw: &[f64]) -> Result<Network> {
        check_len(bw.len(), self.num_dims(), "bandwidths")?;
        let dims = self.dims.iter().zip(bw).map(|(d, &b)| Dimension { bandwidth: b, ..d.clone() }).collect();
        Network::new(dims)
    }

    /// Dollars per GB/s of each dimension's per-NPU bandwidth for the whole network
    /// (`N · c_d`): the network cost is linear in the bandwidths.
    pub fn cost_coefficients(&self) -> Vec<f64> {
        let n = self.npus() as f64;
        self.dims.iter().map(|d| n * d.unit_cost()).collect()
    }

    /// LIBRA's network cost in dollars of the given per-NPU bandwidths (non-negative, finite).
    pub fn cost_of(&self, bw: &[f64]) -> Result<f64> {
        check_len(bw.len(), self.num_dims(), "bandwidths")?;
        for (i, &b) in bw.iter().enumerate() {
            check_non_negative(b, &format!("bandwidths[{i}]"))?;
        }
        Ok(self.cost_coefficients().iter().zip(bw).map(|(c, b)| c * b).sum())
    }

    /// The cost of the network's own bandwidths.
    pub fn cost(&self) -> f64 {
        self.cost_coefficients().iter().zip(&self.dims).map(|(c, d)| c * d.bandwidth).sum()
    }
}

pub(crate) fn check_positive(v: f64, name: &str) -> Result<()> {
    if !(v.is_finite() && v > 0.0) {
        return Err(Error::invalid(format!("`{name}` is {v}, must be positive and finite")));
    }
    Ok(())
}

pub(crate) fn check_non_negative(v: f64, name: &str) -> Result<()> {
    if !(v.is_finite() && v >= 0.0) {
        return Err(Error::invalid(format!("`{name}` is {v}, must be non-negative and finite")));
    }
    Ok(())
}

pub(crate) fn check_len(got: usize, want: usize, name: &str) -> Result<()> {
    if got != want {
        return Err(Error::invalid(format!("`{name}` has {got} entries, the network has {want} dimensions")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cost_is_npus_times_unit_cost_times_bandwidth() {
        let net = Network::new(vec![
            Dimension::new(DimKind::Ring, 4, 100.0).with_cost(CostParams::chiplet()),
            Dimension::new(DimKind::Switch, 8, 50.0).with_cost(CostParams::pod()),
        ])
        .unwrap();
        assert_eq!(net.npus(), 32);
        let expected = 32.0 * 2.0 * 100.0 + 32.0 * (7.8 + 18.0 + 31.6) * 50.0;
        assert!((net.cost() - expected).abs() < 1e-9);
    }

    #[test]
    fn bad_inputs_name_the_field() {
        let e = Network::new(vec![]).unwrap_err();
        assert!(e.message.contains("dims"));
        let e = Network::new(vec![Dimension::new(DimKind::Ring, 4, 0.0)]).unwrap_err();
        assert!(e.message.contains("dims[0].bandwidth"));
        let e =
            Network::new(vec![Dimension::new(DimKind::Ring, 4, 1.0), Dimension::new(DimKind::Ring, 1, 1.0)])
                .unwrap_err();
        assert!(e.message.contains("dims[1].size"));
        let e = Network::new(vec![Dimension::new(DimKind::Ring, 4, -3.0)]).unwrap_err();
        assert!(e.message.contains("bandwidth"));
    }
}
