//! Preset networks and workloads for examples and tests.
//!
//! The networks take their shapes and costs from LIBRA's published inputs (astra-sim/libra,
//! `inputs/network/{3d,4d}_network.yml` and `inputs/cost_model/{3d,4d}_cost_model.yml`, costs
//! rounded to LIBRA's reference values); their starting bandwidths and per-step latencies are
//! ours, as LIBRA's files give none. The workloads are not LIBRA's files: they are generated
//! from each model's shape (hidden size, layers, sequence, batch) with the usual FLOP and
//! message-size formulas, on an accelerator sustaining 156 TFLOP/s (half of a 312 TFLOP/s
//! peak); LIBRA's own workload files are read with [`crate::topo::parse`].
use crate::topo::network::{CostParams, DimKind, Dimension, Network};
use crate::topo::workload::{training_iteration, CollectiveKind, Communicator, Layer, Overlap, Workload};

/// Preset networks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NetworkPreset {
    /// LIBRA's 3D network: [ring, fully-connected, switch] of [16, 8, 32] NPUs (4,096).
    ThreeD,
    /// LIBRA's 4D network: [ring, fully-connected, ring, switch] of [4, 8, 4, 32] NPUs (4,096).
    FourD,
}

/// Preset workloads, generated from the models' shapes (not LIBRA's workload files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadPreset {
    /// A GPT-3 175B shape, tensor-parallel 16, data-parallel 256.
    Gpt3,
    /// A 1T-parameter transformer, tensor-parallel 128, data-parallel 32.
    Msft1T,
    /// A Turing-NLG 17B shape, pure data parallel.
    TuringNlg,
    /// ResNet-50's layers, pure data parallel.
    ResNet50,
}

impl NetworkPreset {
    pub fn all() -> [NetworkPreset; 2] {
        [NetworkPreset::ThreeD, NetworkPreset::FourD]
    }

    pub fn name(self) -> &'static str {
        match self {
            NetworkPreset::ThreeD => "3d",
            NetworkPreset::FourD => "4d",
        }
    }

    /// The network, with a starting bandwidth split (ours; the optimiser redistributes it),
    /// per-step latencies (ours) and LIBRA's costs per packaging level.
    pub fn network(self) -> Network {
        let dims = match self {
            NetworkPreset::ThreeD => vec![
                // LIBRA's 3D cost model names this dimension InterPackage.
                Dimension::new(DimKind::Ring, 16, 200.0).with_latency(20.0).with_cost(CostParams::package()),
                Dimension::new(DimKind::FullyConnected, 8, 100.0)
                    .with_latency(50.0)
                    .with_cost(CostParams::node()),
                Dimension::new(DimKind::Switch, 32, 50.0).with_latency(500.0).with_cost(CostParams::pod()),
            ],
            NetworkPreset::FourD => vec![
                Dimension::new(DimKind::Ring, 4, 250.0).with_latency(20.0).with_cost(CostParams::chiplet()),
                Dimension::new(DimKind::FullyConnected, 8, 150.0)
                    .with_latency(50.0)
                    .with_cost(CostParams::package()),
                Dimension::new(DimKind::Ring, 4, 75.0).with_latency(100.0).with_cost(CostParams::node()),
                Dimension::new(DimKind::Switch, 32, 25.0).with_latency(500.0).with_cost(CostParams::pod()),
            ],
        };
        Network::new(dims).expect("preset networks are valid")
    }

    /// The total bandwidth per NPU of the starting split (the default budget).
    pub fn budget(self) -> f64 {
        self.network().bandwidths().iter().sum()
    }
}

impl WorkloadPreset {
    pub fn all() -> [WorkloadPreset; 4] {
        [WorkloadPreset::Gpt3, WorkloadPreset::Msft1T, WorkloadPreset::TuringNlg, WorkloadPreset::ResNet50]
    }

    pub fn name(self) -> &'static str {
        match self {
            WorkloadPreset::Gpt3 => "gpt3",
            WorkloadPreset::Msft1T => "msft1t",
            WorkloadPreset::TuringNlg => "turing-nlg",
            WorkloadPreset::ResNet50 => "resnet50",
        }
    }

    /// The communicator of each phase on a preset network.
    pub fn communicator(self, net: NetworkPreset) -> Communicator {
        use NetworkPreset::*;
        use WorkloadPreset::*;
        let (tp, dp): (Vec<u32>, Vec<u32>) = match (self, net) {
            (Gpt3, ThreeD) => (vec![16, 1, 1], vec![1, 8, 32]),
            (Gpt3, FourD) => (vec![4, 4, 1, 1], vec![1, 2, 4, 32]),
            (Msft1T, ThreeD) => (vec![16, 8, 1], vec![1, 1, 32]),
            (Msft1T, FourD) => (vec![4, 8, 4, 1], vec![1, 1, 1, 32]),
            (TuringNlg | ResNet50, ThreeD) => (vec![1, 1, 1], vec![16, 8, 32]),
            (TuringNlg | ResNet50, FourD) => (vec![1, 1, 1, 1], vec![4, 8, 4, 32]),
        };
        Communicator { forward: tp.clone(), input_grad: tp, weight_grad: dp }
    }

    /// Layers in the ASTRA-sim 1.0 layout.
    pub fn layers(self) -> Vec<Layer> {
        match self {
            WorkloadPreset::Gpt3 => transformer("gpt3", 12288, 96, 2048, 1, 16),
            WorkloadPreset::Msft1T => transformer("msft1t", 25600, 128, 2048, 1, 128),
            WorkloadPreset::TuringNlg => transformer("turing", 4256, 78, 1024, 1, 1),
            WorkloadPreset::ResNet50 => resnet50(32),
        }
    }

    /// One training iteration on a preset network (no compute/communication overlap, as
    /// LIBRA's training loop).
    pub fn workload(self, net: NetworkPreset) -> Workload {
        training_iteration(&self.layers(), &self.communicator(net), Overlap::None)
    }
}

/// Sustained accelerator throughput in FLOP per ns.
const FLOP_PER_NS: f64 = 156e3;

/// A transformer with `layers` blocks of hidden size `h`, tensor parallelism `tp` (Megatron:
/// one activation all-reduce per block in forward and in input-gradient, fp16), and weight
/// gradients (12·h² parameters per block, fp16) all-reduced across data parallel.
fn transformer(name: &str, h: u64, layers: usize, seq: u64, batch: u64, tp: u64) -> Vec<Layer> {
    let (h, s, b) = (h as f64, seq as f64, batch as f64);
    let flops = 24.0 * b * s * h * h * (1.0 + s / (6.0 * h)) / tp as f64;
    let t = flops / FLOP_PER_NS;
    let act = if tp > 1 { Some((CollectiveKind::AllReduce, 2.0 * 2.0 * b * s * h)) } else { None };
    let grads = Some((CollectiveKind::AllReduce, 2.0 * 12.0 * h * h / tp as f64));
    (0..layers)
        .map(|i| Layer { name: format!("{name}.block{i}"), compute: [t, t, t], comm: [act, act, grads] })
        .collect()
}

/// ResNet-50's convolutions and classifier with fp32 gradients; compute = 2 FLOP per
/// multiply-accumulate over the output positions and the batch.
fn resnet50(batch: u64) -> Vec<Layer> {
    // (name, kernel, c_in, c_out, output side)
    let mut convs: Vec<(String, u64, u64, u64, u64)> = vec![("conv1".into(), 7, 3, 64, 112)];
    let stages = [(3, 64, 256, 56), (4, 128, 512, 28), (6, 256, 1024, 14), (3, 512, 2048, 7)];
    let mut c_in = 64;
    for (si, &(blocks, mid, out, side)) in stages.iter().enumerate() {
        for bi in 0..blocks {
            let p = format!("res{}.{}", si + 2, bi);
            convs.push((format!("{p}.a"), 1, c_in, mid, side));
            convs.push((format!("{p}.b"), 3, mid, mid, side));
            convs.push((format!("{p}.c"), 1, mid, out, side));
            if bi == 0 {
                convs.push((format!("{p}.proj"), 1, c_in, out, side));
            }
            c_in = out;
        }
    }
    convs.push(("fc".into(), 1, 2048, 1000, 1));
    convs
        .into_iter()
        .map(|(name, k, ci, co, side)| {
            let params = (k * k * ci * co) as f64;
            let t = 2.0 * params * (side * side) as f64 * batch as f64 / FLOP_PER_NS;
            Layer {
                name,
                compute: [t, t, t],
                comm: [None, None, Some((CollectiveKind::AllReduce, 4.0 * params))],
            }
        })
        .collect()
}

/// A deterministic sweep of realistic 2D-4D networks: the shapes of [`asymmetric_sweep`], with
/// bandwidth non-increasing outward (halving per dimension, and three random draws sorted),
/// as packaging makes inner links the fastest.
pub fn realistic_sweep() -> Vec<Network> {
    let mut out: Vec<Network> = Vec::new();
    for net in asymmetric_sweep() {
        let mut bw = net.bandwidths();
        bw.sort_by(|a, b| b.total_cmp(a));
        let sorted = net.with_bandwidths(&bw).expect("a permutation of valid bandwidths");
        if !out.contains(&sorted) {
            out.push(sorted);
        }
    }
    out
}

/// Whether bandwidth never grows from one dimension to the next outward.
pub fn is_realistic(net: &Network) -> bool {
    net.bandwidths().windows(2).all(|w| w[0] >= w[1])
}

/// A deterministic sweep of asymmetric 2D-4D networks (sizes and bandwidths not matched to the
/// hierarchical all-reduce's traffic), for comparing scheduling policies.
pub fn asymmetric_sweep() -> Vec<Network> {
    let shapes: [&[u32]; 9] = [
        &[8, 8],
        &[4, 16],
        &[16, 4],
        &[4, 8, 8],
        &[8, 4, 16],
        &[16, 8, 4],
        &[4, 4, 4, 4],
        &[2, 8, 4, 8],
        &[8, 4, 2, 16],
    ];
    let kinds = [DimKind::Ring, DimKind::FullyConnected, DimKind::Ring, DimKind::Switch];
    // A small linear congruential generator keeps the sweep reproducible without a dependency.
    let mut state: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (state >> 33) as f64 / (1u64 << 31) as f64
    };
    let mut out = Vec::new();
    for shape in shapes {
        let n = shape.len();
        let mut patterns: Vec<Vec<f64>> = vec![
            (0..n).map(|d| 400.0 / 2f64.powi(d as i32)).collect(),
            (0..n).map(|d| 50.0 * 2f64.powi(d as i32)).collect(),
            (0..n).map(|d| if d % 2 == 0 { 50.0 } else { 400.0 }).collect(),
        ];
        for _ in 0..3 {
            patterns.push((0..n).map(|_| (25.0 * 16f64.powf(next())).round()).collect());
        }
        for bw in patterns {
            let dims = (0..n)
                .map(|d| {
                    Dimension::new(kinds[d + 4 - n], shape[d], bw[d]).with_latency(50.0 * (d + 1) as f64)
                })
                .collect();
            out.push(Network::new(dims).expect("sweep networks are valid"));
        }
    }
    out
}
