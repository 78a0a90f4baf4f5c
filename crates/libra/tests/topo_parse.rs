//! LIBRA input files: network, cost model, communicator and ASTRA-sim 1.0 workloads.
use libra::topo::parse::{parse_astra_layers, parse_communicator, parse_network, parse_workload};
use libra::topo::*;
use libra::Status;

fn data(name: &str) -> String {
    std::fs::read_to_string(format!("{}/tests/data/topo/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
}

#[test]
fn network_and_cost_model() {
    let net = parse_network(&data("network_3d.yml"), Some(&data("cost_3d.yml"))).unwrap();
    let kinds: Vec<DimKind> = net.dims().iter().map(|d| d.kind).collect();
    assert_eq!(kinds, vec![DimKind::Ring, DimKind::FullyConnected, DimKind::Switch]);
    assert_eq!(net.npus(), 4096);
    assert_eq!(net.bandwidths(), vec![200.0, 100.0, 50.0]);
    assert_eq!(net.dims()[2].latency, 500.0);
    // Same costs as the preset.
    let preset = presets::NetworkPreset::ThreeD.network();
    assert!((net.cost() - preset.cost()).abs() < 1e-6 * preset.cost());
    // Without the optional keys: default bandwidth, no latency, no cost.
    let bare = parse_network("Topology: [ Ring, Switch ]\nNpusCount: [ 4, 8 ]\n", None).unwrap();
    assert_eq!(bare.bandwidths(), vec![100.0, 100.0]);
    assert_eq!(bare.cost(), 0.0);
}

#[test]
fn network_errors_name_the_key() {
    let cases = [
        ("NpusCount: [ 4 ]\n", "Topology"),
        ("Topology: [ Ring ]\nNpusCount: [ 4, 4 ]\n", "NpusCount"),
        ("Topology: [ Mesh ]\nNpusCount: [ 4 ]\n", "Topology[0]"),
        ("Topology: [ Ring ]\nNpusCount: [ four ]\n", "NpusCount[0]"),
        ("Topology: [ Ring ]\nNpusCount: [ 4 ]\nBandwidth: [ x ]\n", "Bandwidth[0]"),
    ];
    for (text, field) in cases {
        let e = parse_network(text, None).unwrap_err();
        assert_eq!(e.status, Status::LIBRA_ERR_PARSE, "{text}");
        assert!(e.message.contains(field), "{text}: {}", e.message);
    }
    // Out-of-range values are parse errors naming the key, too.
    let ranged = [
        ("Topology: [ Ring ]\nNpusCount: [ 1 ]\n", "NpusCount[0]"),
        ("Topology: [ Ring ]\nNpusCount: [ 4 ]\nBandwidth: [ -5 ]\n", "Bandwidth[0]"),
        ("Topology: [ Ring ]\nNpusCount: [ 4 ]\nBandwidth: [ 0 ]\n", "Bandwidth[0]"),
        ("Topology: [ Ring ]\nNpusCount: [ 4 ]\nBandwidth: [ nan ]\n", "Bandwidth[0]"),
        ("Topology: [ Ring ]\nNpusCount: [ 4 ]\nLatency: [ -1 ]\n", "Latency[0]"),
        ("Topology: [ Ring ]\nNpusCount: [ 4 ]\nBandwith: [ 5 ]\n", "unknown key `Bandwith`"),
        ("Topology: ring\nNpusCount: [ 4 ]\n", "`Topology` must be a list"),
        ("Topology: [ Ring, Ring ]\nNpusCount: [ 65536, 65537 ]\n", "2^32"),
        ("Topology: [ Ring ]\nnpus_count: [ 4 ]\n", "mixes"),
    ];
    for (text, field) in ranged {
        let e = parse_network(text, None).unwrap_err();
        assert_eq!(e.status, Status::LIBRA_ERR_PARSE, "{text}");
        assert!(e.message.contains(field), "{text}: {}", e.message);
    }
    let e = parse_network(&data("network_3d.yml"), Some("Package:\n  Link: 2\n")).unwrap_err();
    assert!(e.message.contains("Node"), "{}", e.message);
}

#[test]
fn malformed_cost_models_are_parse_errors() {
    let net = data("network_3d.yml");
    let good = data("cost_3d.yml");
    let cases = [
        // A flow-style mapping.
        (
            good.replace(
                "Pod:\n  Link: 7.8\n  Switch: 18.0\n  Nic: 31.6",
                "Pod: {Link: 7.8, Switch: 18, Nic: 31.6}",
            ),
            "flow-style",
        ),
        // A misspelled element.
        (good.replace("Nic: 31.6", "NIC: 31.6"), "unknown key `NIC`"),
        // A switch dimension without `Nic`.
        (good.replace("  Nic: 31.6\n", ""), "`Pod` has no `Nic`"),
        // A list, or a scalar, where a mapping belongs.
        (good.replace("Package:\n  Link: 4.0\n  Switch: 13.0", "Package: [2.0]"), "Package"),
        (good.replace("Package:\n  Link: 4.0\n  Switch: 13.0", "Package: 2.0"), "Package"),
        // A zero or negative cost (LIBRA requires positive ones).
        (good.replace("Link: 4.0", "Link: 0"), "must be positive"),
        (good.replace("Link: 4.0", "Link: -2"), "must be positive"),
        (good.replace("Link: 4.0", "Link: x"), "not a finite number"),
    ];
    for (cost, want) in &cases {
        let e = parse_network(&net, Some(cost)).unwrap_err();
        assert_eq!(e.status, Status::LIBRA_ERR_PARSE, "{cost}");
        assert!(e.message.contains(want), "{want}: {}", e.message);
    }
    // A cost file for a network without `CostDimension`.
    let bare = "Topology: [ Ring ]\nNpusCount: [ 4 ]\n";
    let e = parse_network(bare, Some(&good)).unwrap_err();
    assert_eq!(e.status, Status::LIBRA_ERR_PARSE);
    assert!(e.message.contains("CostDimension"), "{}", e.message);
}

#[test]
fn nesting_limit_holds_on_a_small_stack() {
    // 3,000 nested mappings, under the size cap: refused at the depth limit, on a 128 KiB stack.
    let mut text = String::new();
    for i in 0..3000 {
        text.push_str(&" ".repeat(i));
        text.push_str("k:\n");
    }
    assert!(text.len() < libra::topo::parse::MAX_TEXT_BYTES);
    let e = std::thread::Builder::new()
        .stack_size(128 << 10)
        .spawn(move || parse_network(&text, None).unwrap_err())
        .unwrap()
        .join()
        .expect("the parser does not overflow the stack");
    assert_eq!(e.status, Status::LIBRA_ERR_PARSE);
    assert!(e.message.contains("nesting deeper"), "{}", e.message);
}

#[test]
fn communicator_and_workload() {
    let comm = parse_communicator(&data("communicator_3d.yml"), 3).unwrap();
    assert_eq!(comm.forward, vec![16, 1, 1]);
    assert_eq!(comm.weight_grad, vec![1, 8, 32]);
    assert!(parse_communicator(&data("communicator_3d.yml"), 4).unwrap_err().message.contains("Forward"));
    assert!(parse_communicator("Forward: [0]\nInputGrad: [1]\nWeightGrad: [1]\n", 1)
        .unwrap_err()
        .message
        .contains("Forward[0]"));

    let layers = parse_astra_layers(&data("toy_transformer.txt")).unwrap();
    assert_eq!(layers.len(), 4);
    assert_eq!(layers[3].comm[1], Some((CollectiveKind::AllGather, 3145728.0)));
    assert_eq!(layers[3].comm[0], None);
    let bare = parse_astra_layers(&data("bare_layers.txt")).unwrap();
    assert_eq!(bare[1].comm[0], Some((CollectiveKind::AllToAll, 2097152.0)));

    let net = parse_network(&data("network_3d.yml"), None).unwrap();
    let wl =
        parse_workload(&data("toy_transformer.txt"), &data("communicator_3d.yml"), 3, Overlap::None).unwrap();
    // Forward of every layer, then input/weight gradients from the last layer back.
    assert_eq!(wl.phases.len(), 12);
    assert_eq!(wl.phases[0].name, "attn0.forward");
    assert_eq!(wl.phases[4].name, "mlp1.input_grad");
    assert_eq!(wl.phases[5].name, "mlp1.weight_grad");
    let t = model::iteration_time(&wl, &net, &TimeModel::Libra, None).unwrap();
    // By hand: compute 3·(2·1.2e6 + 2·2.4e6) = 21.6e6 ns; TP all-reduces on the 16-ring at
    // 200 GB/s move 2·m·15/16; the weight-gradient all-reduces span dims 1 and 2.
    let tp = |m: f64| 2.0 * m * 15.0 / 16.0 / 200.0;
    let dp = |m: f64| f64::max(2.0 * m * 7.0 / 8.0 / 100.0, 2.0 * (m / 8.0) * 31.0 / 32.0 / 50.0);
    let ag = 3145728.0 * 15.0 / 200.0;
    let rs = f64::max(56623104.0 * 7.0 / 8.0 / 100.0, 56623104.0 / 8.0 * 31.0 / 32.0 / 50.0);
    let expect = 21.6e6 + 6.0 * tp(50331648.0) + 2.0 * dp(28311552.0) + dp(56623104.0) + ag + rs;
    assert!((t - expect).abs() < 1e-6 * expect, "{t} vs {expect}");

    let e = parse_astra_layers("DATA\n3\nl -1 1 NONE 0 1 NONE 0 1 NONE 0 1\n").unwrap_err();
    assert!(e.message.contains("3 layers"), "{}", e.message);
    let e = parse_astra_layers("l -1 1 BROADCAST 0 1 NONE 0 1 NONE 0 1\n").unwrap_err();
    assert!(e.message.contains("BROADCAST"));
    assert_eq!(parse_astra_layers("").unwrap_err().status, Status::LIBRA_ERR_PARSE);
}
