//! Time models. Both split a collective into per-dimension traffic with LIBRA's rule (the
//! message shrinks across dimensions for reduce-scatter/all-reduce, grows for all-gather, stays
//! for all-to-all) and take the max over dimensions, since chunks pipeline across dimensions.
//! The alpha-beta model adds `steps · latency` per dimension. Units: bytes, GB/s, ns.
// Per-dimension quantities live in parallel arrays; indexing by dimension reads clearer.
#![allow(clippy::needless_range_loop)]
use crate::error::{Error, Result};
use crate::topo::network::{check_len, check_positive, DimKind, Network};
use crate::topo::workload::{Collective, CollectiveKind, Overlap, Workload};

/// Algorithm a dimension runs its part of a collective with (for the latency term).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Ring,
    Direct,
    HalvingDoubling,
}

impl Algorithm {
    /// The natural algorithm for a building block.
    pub fn default_for(kind: DimKind) -> Algorithm {
        match kind {
            DimKind::Ring => Algorithm::Ring,
            DimKind::FullyConnected => Algorithm::Direct,
            DimKind::Switch => Algorithm::HalvingDoubling,
        }
    }

    /// Latency steps of one pass (reduce-scatter, all-gather or all-to-all) on `p` NPUs; an
    /// all-reduce is two passes.
    pub fn steps(self, p: u32) -> f64 {
        if p <= 1 {
            return 0.0;
        }
        match self {
            Algorithm::Ring | Algorithm::Direct => (p - 1) as f64,
            Algorithm::HalvingDoubling => (p as f64).log2().ceil(),
        }
    }
}

/// Which time model to use.
#[derive(Debug, Clone, PartialEq, Default)]
pub enum TimeModel {
    /// LIBRA's bandwidth-only model.
    #[default]
    Libra,
    /// Alpha-beta with one algorithm per dimension; an empty list means each dimension's
    /// default (`Algorithm::default_for`).
    AlphaBeta(Vec<Algorithm>),
}

/// A collective's time on dimension `d` is `latency[d] + bytes[d] / B_d` when `bytes[d] > 0`
/// or `latency[d] > 0`; the collective takes the max over dimensions.
#[derive(Debug, Clone, PartialEq)]
pub struct CollectiveTerms {
    pub bytes: Vec<f64>,
    pub latency: Vec<f64>,
}

impl CollectiveTerms {
    pub fn time(&self, bw: &[f64]) -> f64 {
        let mut t: f64 = 0.0;
        for d in 0..self.bytes.len() {
            if self.bytes[d] > 0.0 {
                t = t.max(self.latency[d] + self.bytes[d] / bw[d]);
            } else {
                t = t.max(self.latency[d]);
            }
        }
        t
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.iter().chain(&self.latency).all(|&v| v == 0.0)
    }
}

/// Bytes each NPU moves on each dimension (LIBRA's rule).
pub fn dim_bytes(c: &Collective) -> Vec<f64> {
    let n = c.groups.len();
    let mut out = vec![0.0; n];
    let mut m = c.bytes;
    let frac = |p: u32| (p as f64 - 1.0) / p as f64;
    match c.kind {
        CollectiveKind::AllReduce | CollectiveKind::ReduceScatter => {
            let factor = if c.kind == CollectiveKind::AllReduce { 2.0 } else { 1.0 };
            for d in 0..n {
                let p = c.groups[d];
                if p > 1 {
                    out[d] = factor * m * frac(p);
                    m /= p as f64;
                }
            }
        }
        CollectiveKind::AllGather => {
            for d in (0..n).rev() {
                let p = c.groups[d];
                if p > 1 {
                    out[d] = m * (p as f64 - 1.0);
                    m *= p as f64;
                }
            }
        }
        CollectiveKind::AllToAll => {
            for d in 0..n {
                let p = c.groups[d];
                if p > 1 {
                    out[d] = m * frac(p);
                }
            }
        }
    }
    out
}

/// Per-dimension terms of a collective under `model`.
pub fn collective_terms(c: &Collective, net: &Network, model: &TimeModel) -> Result<CollectiveTerms> {
    let bytes = dim_bytes(c);
    let mut latency = vec![0.0; bytes.len()];
    if let TimeModel::AlphaBeta(algs) = model {
        if !algs.is_empty() {
            check_len(algs.len(), net.num_dims(), "algorithms")?;
        }
        for (d, dim) in net.dims().iter().enumerate() {
            let alg = algs.get(d).copied().unwrap_or_else(|| Algorithm::default_for(dim.kind));
            let passes = if c.kind == CollectiveKind::AllReduce { 2.0 } else { 1.0 };
            latency[d] = passes * alg.steps(c.groups[d]) * dim.latency;
        }
    }
    Ok(CollectiveTerms { bytes, latency })
}

/// Bandwidths must be positive and finite, one per dimension.
fn check_bandwidths(bw: &[f64], net: &Network) -> Result<()> {
    check_len(bw.len(), net.num_dims(), "bandwidths")?;
    for (i, &b) in bw.iter().enumerate() {
        check_positive(b, &format!("bandwidths[{i}]"))?;
    }
    Ok(())
}

/// A modelled time must be finite: an input near `f64::MAX` can overflow it.
fn finite_time(t: f64) -> Result<f64> {
    if !t.is_finite() {
        return Err(Error::invalid(format!("the modelled time is {t}: `bytes` or `compute` is too large")));
    }
    Ok(t)
}

/// Time of one collective with per-NPU bandwidths `bw`.
pub fn collective_time(c: &Collective, net: &Network, model: &TimeModel, bw: &[f64]) -> Result<f64> {
    check_bandwidths(bw, net)?;
    c.validate(net, "collective")?;
    finite_time(collective_terms(c, net, model)?.time(bw))
}

/// Iteration time of `wl` on `net` with bandwidths `bw` (the network's own when `None`).
pub fn iteration_time(wl: &Workload, net: &Network, model: &TimeModel, bw: Option<&[f64]>) -> Result<f64> {
    wl.validate(net)?;
    let own = net.bandwidths();
    let bw = bw.unwrap_or(&own);
    check_bandwidths(bw, net)?;
    let mut total = 0.0;
    for p in &wl.phases {
        let comm = match &p.collective {
            Some(c) => collective_terms(c, net, model)?.time(bw),
            None => 0.0,
        };
        total += match wl.overlap {
            Overlap::None => p.compute + comm,
            Overlap::Full => p.compute.max(comm),
        };
    }
    finite_time(total)
}

/// Total bytes each NPU moves per dimension over one iteration (for the traffic-proportional
/// baseline split).
pub fn traffic_per_dim(wl: &Workload, dims: usize) -> Vec<f64> {
    let mut t = vec![0.0; dims];
    for c in wl.phases.iter().filter_map(|p| p.collective.as_ref()) {
        for (acc, b) in t.iter_mut().zip(dim_bytes(c)) {
            *acc += b;
        }
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topo::network::Dimension;

    fn net() -> Network {
        Network::new(vec![
            Dimension::new(DimKind::Ring, 4, 100.0).with_latency(10.0),
            Dimension::new(DimKind::FullyConnected, 8, 50.0).with_latency(20.0),
            Dimension::new(DimKind::Switch, 16, 25.0).with_latency(100.0),
        ])
        .unwrap()
    }

    #[test]
    fn libra_bytes_by_hand() {
        let m = 1024.0;
        let ar = Collective::new(CollectiveKind::AllReduce, m, vec![4, 8, 16]);
        // 2·1024·3/4 = 1536; m=256 -> 2·256·7/8 = 448; m=32 -> 2·32·15/16 = 60.
        assert_eq!(dim_bytes(&ar), vec![1536.0, 448.0, 60.0]);
        let rs = Collective::new(CollectiveKind::ReduceScatter, m, vec![4, 1, 16]);
        // 1024·3/4 = 768; m=256 -> 256·15/16 = 240.
        assert_eq!(dim_bytes(&rs), vec![768.0, 0.0, 240.0]);
        let ag = Collective::new(CollectiveKind::AllGather, 2.0, vec![4, 8, 16]);
        // reverse: 2·15 = 30, m=32 -> 32·7 = 224, m=256 -> 256·3 = 768.
        assert_eq!(dim_bytes(&ag), vec![768.0, 224.0, 30.0]);
        let a2a = Collective::new(CollectiveKind::AllToAll, m, vec![4, 8, 1]);
        assert_eq!(dim_bytes(&a2a), vec![768.0, 896.0, 0.0]);
    }

    #[test]
    fn libra_time_is_max_over_dims() {
        let n = net();
        let ar = Collective::new(CollectiveKind::AllReduce, 1024.0, vec![4, 8, 16]);
        let t = collective_time(&ar, &n, &TimeModel::Libra, &[100.0, 50.0, 25.0]).unwrap();
        // 1536/100 = 15.36, 448/50 = 8.96, 60/25 = 2.4
        assert!((t - 15.36).abs() < 1e-12);
    }

    #[test]
    fn alpha_beta_by_hand() {
        let n = net();
        let ar = Collective::new(CollectiveKind::AllReduce, 1024.0, vec![4, 8, 16]);
        let t = collective_time(&ar, &n, &TimeModel::AlphaBeta(vec![]), &[1000.0, 1000.0, 1000.0]).unwrap();
        // ring 2·3·10 + 1.536 = 61.536; direct 2·7·20 + 0.448 = 280.448; HD 2·4·100 + 0.06 = 800.06
        assert!((t - 800.06).abs() < 1e-9);
        let algs = vec![Algorithm::Ring, Algorithm::Ring, Algorithm::Ring];
        let rs = Collective::new(CollectiveKind::ReduceScatter, 1024.0, vec![4, 8, 1]);
        let t = collective_time(&rs, &n, &TimeModel::AlphaBeta(algs), &[100.0, 50.0, 25.0]).unwrap();
        // ring RS: dim0 3·10 + 768/100 = 37.68; dim1 7·20 + 224/50 = 144.48
        assert!((t - 144.48).abs() < 1e-9);
        assert_eq!(Algorithm::HalvingDoubling.steps(8), 3.0);
        assert_eq!(Algorithm::HalvingDoubling.steps(6), 3.0);
    }

    #[test]
    fn iteration_time_with_and_without_overlap() {
        let n = net();
        let mut wl = Workload::new(Overlap::None);
        wl.push("a", 10.0, Some(Collective::new(CollectiveKind::AllReduce, 1024.0, vec![4, 8, 16])));
        wl.push("b", 20.0, None);
        let bw = [100.0, 50.0, 25.0];
        assert!((iteration_time(&wl, &n, &TimeModel::Libra, Some(&bw)).unwrap() - 45.36).abs() < 1e-12);
        wl.overlap = Overlap::Full;
        assert!((iteration_time(&wl, &n, &TimeModel::Libra, Some(&bw)).unwrap() - 35.36).abs() < 1e-12);
    }

    #[test]
    fn group_must_divide_dimension() {
        let n = net();
        let c = Collective::new(CollectiveKind::AllReduce, 1.0, vec![3, 8, 16]);
        let e = collective_time(&c, &n, &TimeModel::Libra, &[1.0; 3]).unwrap_err();
        assert!(e.message.contains("groups[0]"), "{}", e.message);
    }
}
