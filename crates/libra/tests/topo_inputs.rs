//! Every real input under ../shared/topology_inputs/ (LIBRA's `inputs/`, ASTRA-sim 2.0 network
//! files, ASTRA-sim 1.0 workloads) is parsed and its result checked. Skips, saying why, when the
//! folder is absent.
use libra::topo::astra::{astra_iteration, parse_astra_workload, to_astra_sim_yaml, Parallelism};
use libra::topo::parse::{parse_communicator, parse_network, parse_workload};
use libra::topo::*;
use libra::Status;
use std::path::{Path, PathBuf};

fn root() -> Option<PathBuf> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/topology_inputs");
    if p.is_dir() {
        Some(p)
    } else {
        println!("skipped: {} is absent (public LIBRA / ASTRA-sim inputs)", p.display());
        None
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path()).collect();
    v.sort();
    v
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-12 * b.abs().max(1.0)
}

#[test]
fn libra_networks_and_cost_models() {
    let Some(root) = root() else { return };
    let lib = root.join("libra");
    for (net, cost, kinds, sizes, unit) in [
        (
            "3d_network.yml",
            "3d_cost_model.yml",
            vec![DimKind::Ring, DimKind::FullyConnected, DimKind::Switch],
            vec![16, 8, 32],
            vec![4.00001, 4.00002, 7.80003 + 18.00003 + 31.60003],
        ),
        (
            "4d_network.yml",
            "4d_cost_model.yml",
            vec![DimKind::Ring, DimKind::FullyConnected, DimKind::Ring, DimKind::Switch],
            vec![4, 8, 4, 32],
            vec![2.00001, 4.00002, 4.00003, 7.80004 + 18.00004 + 31.60004],
        ),
    ] {
        let n = parse_network(
            &read(&lib.join("network").join(net)),
            Some(&read(&lib.join("cost_model").join(cost))),
        )
        .unwrap();
        assert_eq!(n.dims().iter().map(|d| d.kind).collect::<Vec<_>>(), kinds, "{net}");
        assert_eq!(n.dims().iter().map(|d| d.size).collect::<Vec<_>>(), sizes, "{net}");
        assert_eq!(n.npus(), 4096);
        for (d, u) in n.dims().iter().zip(&unit) {
            assert!(close(d.unit_cost(), *u), "{net}: {} vs {u}", d.unit_cost());
        }
        // Without the cost model: zero costs; the network alone parses too.
        assert_eq!(parse_network(&read(&lib.join("network").join(net)), None).unwrap().cost(), 0.0);
    }
}

#[test]
fn libra_communicators_and_workloads() {
    let Some(root) = root() else { return };
    let lib = root.join("libra");
    let mut seen = 0;
    for path in files(&lib.join("communicator")) {
        let name = path.file_stem().unwrap().to_str().unwrap().to_string();
        let dims = if name.to_ascii_lowercase().ends_with("3d") { 3 } else { 4 };
        let comm = parse_communicator(&read(&path), dims).unwrap();
        assert_eq!(comm.forward.len(), dims, "{name}");
        // Every group divides its dimension of the matching network.
        let net = parse_network(&read(&lib.join(format!("network/{dims}d_network.yml"))), None).unwrap();
        for g in [&comm.forward, &comm.input_grad, &comm.weight_grad] {
            for (k, &s) in g.iter().enumerate() {
                assert_eq!(net.dims()[k].size % s, 0, "{name}");
            }
        }
        // The matching workload (GPT_3_3d -> GPT_3.txt).
        let model = name[..name.rfind('_').unwrap()].to_string();
        let text = read(&lib.join(format!("workload/{model}.txt")));
        let layers = text.lines().filter(|l| !l.trim().is_empty()).count();
        let wl = parse_workload(&text, &read(&path), dims, Overlap::None).unwrap();
        assert_eq!(wl.phases.len(), 3 * layers, "{name}");
        let t = model::iteration_time(&wl, &net, &TimeModel::Libra, None).unwrap();
        assert!(t.is_finite() && t > wl.total_compute(), "{name}: {t}");
        seen += 1;
    }
    assert_eq!(seen, 8);
    // GPT-3 on the 3D network by hand: the first layer's input-gradient all-reduce of
    // 805306368 bytes over the 16-ring at 100 GB/s moves 2·m·15/16 bytes.
    let comm = parse_communicator(&read(&lib.join("communicator/GPT_3_3d.yml")), 3).unwrap();
    assert_eq!((comm.forward.clone(), comm.weight_grad.clone()), (vec![16, 1, 1], vec![1, 8, 32]));
    let wl = parse_workload(
        &read(&lib.join("workload/GPT_3.txt")),
        &read(&lib.join("communicator/GPT_3_3d.yml")),
        3,
        Overlap::None,
    )
    .unwrap();
    let q1 = wl.phases.iter().find(|p| p.name == "Q1.input_grad").unwrap();
    let net = parse_network(&read(&lib.join("network/3d_network.yml")), None).unwrap();
    let c = q1.collective.as_ref().unwrap();
    let t = model::collective_time(c, &net, &TimeModel::Libra, &net.bandwidths()).unwrap();
    assert!(close(t, 2.0 * 805306368.0 * 15.0 / 16.0 / 100.0), "{t}");
}

#[test]
fn astra_sim_2_networks_with_units() {
    let Some(root) = root() else { return };
    let gb = (1u64 << 30) as f64 / 1e9;
    let mut parsed = 0;
    for path in files(&root.join("astra-sim-2")) {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let text = read(&path);
        match parse_network(&text, None) {
            Ok(net) => {
                parsed += 1;
                // Round trip through the exporter.
                let back = parse_network(&to_astra_sim_yaml(&net), None).unwrap();
                for (a, b) in net.dims().iter().zip(back.dims()) {
                    assert_eq!((a.kind, a.size), (b.kind, b.size), "{name}");
                    assert!(close(a.bandwidth, b.bandwidth) && close(a.latency, b.latency), "{name}");
                }
            }
            Err(e) => {
                // Upstream leaves this one's values to be determined.
                assert_eq!(name, "dgx_v100_8gpu.yml", "{name}: {}", e.message);
                assert_eq!(e.status, Status::LIBRA_ERR_PARSE);
                assert!(e.message.contains("bandwidth[0]") && e.message.contains("tbd"), "{}", e.message);
            }
        }
    }
    assert_eq!(parsed, 13);
    let one = |f: &str| parse_network(&read(&root.join("astra-sim-2").join(f)), None).unwrap();
    // A ring NPU has two links of 50 GB/s (2^30 bytes); one step crosses one link.
    let ring = one("Ring_8npus.yml");
    assert_eq!((ring.dims()[0].kind, ring.dims()[0].size), (DimKind::Ring, 8));
    assert!(close(ring.dims()[0].bandwidth, 2.0 * 50.0 * gb) && close(ring.dims()[0].latency, 500.0));
    // A switch NPU has one link; a step crosses two (NPU, switch, NPU).
    let hgx = one("hgx_h100_16gpu.yml");
    assert_eq!(
        hgx.dims().iter().map(|d| (d.kind, d.size)).collect::<Vec<_>>(),
        vec![(DimKind::Switch, 8), (DimKind::Ring, 2)]
    );
    assert!(close(hgx.dims()[0].bandwidth, 400.0 * gb) && close(hgx.dims()[0].latency, 2.0 * 936.25));
    assert!(close(hgx.dims()[1].bandwidth, 2.0 * 50.0 * gb) && close(hgx.dims()[1].latency, 1000.0));
    let torus = one("tpu_v3_32_2dtorus.yml");
    assert_eq!(torus.npus(), 32);
}

#[test]
fn astra_sim_1_workloads_with_their_parallelism() {
    let Some(root) = root() else { return };
    let net =
        Network::new(vec![Dimension::new(DimKind::Ring, 4, 100.0), Dimension::new(DimKind::Switch, 8, 50.0)])
            .unwrap();
    let mut seen = 0;
    for path in files(&root.join("astra-sim-1")) {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let text = read(&path);
        let w = parse_astra_workload(&text).unwrap_or_else(|e| panic!("{name}: {}", e.message));
        // The header's layer count is checked by the parser; it is the second line.
        let header_count: usize = text.lines().nth(1).unwrap().trim().parse().unwrap();
        assert_eq!(w.layers.len(), header_count, "{name}");
        let wl = astra_iteration(&w, &net, None, Overlap::None)
            .unwrap_or_else(|e| panic!("{name}: {}", e.message));
        let t = model::iteration_time(&wl, &net, &TimeModel::Libra, None).unwrap();
        assert!(t.is_finite() && t >= wl.total_compute(), "{name}");
        seen += 1;
    }
    assert_eq!(seen, 10);

    // Per-layer parallelism: the four layers use four policies.
    let w =
        parse_astra_workload(&read(&root.join("astra-sim-1/sample_per_layer_parallel_HybridCustomized.txt")))
            .unwrap();
    assert_eq!(w.parallelism, Some(Parallelism::Customized));
    assert_eq!(
        &w.layer_parallelism[..4],
        &[
            Some(Parallelism::HybridDataModel),
            Some(Parallelism::HybridModelData),
            Some(Parallelism::Data),
            Some(Parallelism::Model)
        ]
    );
    let wl = astra_iteration(&w, &net, None, Overlap::None).unwrap();
    let groups = |phase: &str| {
        wl.phases.iter().find(|p| p.name == phase).unwrap().collective.as_ref().unwrap().groups.clone()
    };
    // HYBRID_DATA_MODEL: model parallel on dimension 0, data parallel on the rest.
    assert_eq!(groups("layer_64_2_mlp0.forward"), vec![4, 1]);
    assert_eq!(groups("layer_64_2_mlp0.weight_grad"), vec![1, 8]);
    // HYBRID_MODEL_DATA: the reverse.
    assert_eq!(groups("layer_64_2_mlp1.forward"), vec![1, 8]);
    assert_eq!(groups("layer_64_2_mlp1.input_grad"), vec![1, 8]);
    assert_eq!(groups("layer_64_2_mlp1.weight_grad"), vec![4, 1]);
    assert_eq!(groups("layer_64_2_mlp2.weight_grad"), vec![4, 8]);
    assert_eq!(groups("layer_64_2_mlp3.forward"), vec![4, 8]);
    // A transformer's model-parallel group of 4 is dimension 0.
    let w = parse_astra_workload(&read(&root.join("astra-sim-1/Transformer_HybridParallel.txt"))).unwrap();
    assert_eq!(w.model_parallel_group, Some(4));
    let wl = astra_iteration(&w, &net, None, Overlap::None).unwrap();
    let q1 = wl.phases.iter().find(|p| p.name == "Q1.weight_grad").unwrap();
    assert_eq!(q1.collective.as_ref().unwrap().groups, vec![1, 8]);
}

#[test]
fn astra_sim_1_format_errors() {
    let bad = [
        ("HYBRID_CUSTOMIZED\n1\nl -1 1 NONE 0 1 NONE 0 1 NONE 0 1\n", "expected 13 fields"),
        ("HYBRID_CUSTOMIZED\n1\nl -1 1 NONE 0 1 NONE 0 1 NONE 0 1 SIDEWAYS\n", "SIDEWAYS"),
        ("DATA\n1\nl -1 1 NONE 0 1 NONE 0 1 NONE 0 1 DATA\n", "expected 12 fields"),
        ("HYBRID_TRANSFORMER\n1\nl -1 1 NONE 0 1 NONE 0 1 NONE 0 1\n", "model_parallel_NPU_group"),
        ("SIDEWAYS\n1\nl -1 1 NONE 0 1 NONE 0 1 NONE 0 1\n", "unknown parallelism"),
        ("DATA\n1\nl x 1 NONE 0 1 NONE 0 1 NONE 0 1\n", "second field"),
    ];
    for (text, want) in bad {
        let e = parse_astra_workload(text).unwrap_err();
        assert_eq!(e.status, Status::LIBRA_ERR_PARSE, "{text}");
        assert!(e.message.contains(want), "{text}: {}", e.message);
    }
    // A model-parallel group that does not fit the network.
    let net =
        Network::new(vec![Dimension::new(DimKind::Ring, 4, 1.0), Dimension::new(DimKind::Ring, 6, 1.0)])
            .unwrap();
    let w = parse_astra_workload(
        "HYBRID_TRANSFORMER model_parallel_NPU_group: 3\n1\nl -1 1 NONE 0 1 NONE 0 1 ALLREDUCE 8 1\n",
    )
    .unwrap();
    let e = astra_iteration(&w, &net, None, Overlap::None).unwrap_err();
    assert!(e.message.contains("model_parallel_NPU_group"), "{}", e.message);
}
