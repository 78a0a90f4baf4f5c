//! The conic optimiser against brute force, constraints, budgets and bad input.
use libra::topo::optimize::{grid_search, CompiledWorkload};
use libra::topo::presets::{NetworkPreset, WorkloadPreset};
use libra::topo::*;
use libra::Status;

fn cases() -> Vec<(NetworkPreset, WorkloadPreset)> {
    NetworkPreset::all()
        .into_iter()
        .flat_map(|n| WorkloadPreset::all().into_iter().map(move |w| (n, w)))
        .collect()
}

#[test]
fn optimum_matches_grid_search_on_every_preset() {
    for (np, wp) in cases() {
        let net = np.network();
        let wl = wp.workload(np);
        for model in [TimeModel::Libra, TimeModel::AlphaBeta(vec![])] {
            let spec = OptimizeSpec { model: model.clone(), ..OptimizeSpec::bandwidth_budget(np.budget()) };
            let a = optimize(&net, &wl, &spec).unwrap();
            let cw = CompiledWorkload::new(&wl, &net, &model).unwrap();
            let steps = if net.num_dims() == 3 { 150 } else { 40 };
            let (_, grid) = grid_search(&cw, net.num_dims(), np.budget(), steps, 24);
            let err = (a.time - grid) / grid;
            assert!(
                err.abs() <= 0.005,
                "{} {} {model:?}: optimiser {} grid {grid} ({err:+e})",
                np.name(),
                wp.name(),
                a.time
            );
            // The grid cannot beat the global optimum beyond solver tolerance.
            assert!(err <= 1e-6, "{} {}: grid {grid} beats optimiser {}", np.name(), wp.name(), a.time);
            assert!(a.speedup_vs_equal() >= 1.0 - 1e-6);
            assert!(a.speedup_vs_proportional() >= 1.0 - 1e-6);
            let total: f64 = a.bandwidths.iter().sum();
            assert!(total <= np.budget() * (1.0 + 1e-6));
        }
    }
}

#[test]
fn bounds_and_linear_constraints_hold() {
    let np = NetworkPreset::FourD;
    let (net, wl) = (np.network(), WorkloadPreset::Gpt3.workload(np));
    let spec = OptimizeSpec {
        total_bandwidth: Some(1000.0),
        lower: vec![10.0, 10.0, 10.0, 10.0],
        upper: vec![f64::INFINITY, 400.0, f64::INFINITY, f64::INFINITY],
        linear: vec![
            LinearConstraint::new(vec![1.0, -1.0, 0.0, 0.0], Cmp::Ge, 0.0),
            LinearConstraint::new(vec![0.0, 0.0, 1.0, 1.0], Cmp::Eq, 200.0),
        ],
        ..Default::default()
    };
    let a = optimize(&net, &wl, &spec).unwrap();
    let b = &a.bandwidths;
    assert!(b[0] >= b[1] * (1.0 - 1e-6), "{b:?}");
    assert!((b[2] + b[3] - 200.0).abs() < 1e-3, "{b:?}");
    assert!(b[1] <= 400.0 + 1e-6 && b.iter().all(|&x| x >= 10.0 - 1e-9), "{b:?}");
    assert!(b.iter().sum::<f64>() <= 1000.0 + 1e-3);
}

#[test]
fn dollar_budget_and_perf_per_cost() {
    let np = NetworkPreset::ThreeD;
    let (net, wl) = (np.network(), WorkloadPreset::Msft1T.workload(np));
    let dollars = net.cost();
    let a = optimize(&net, &wl, &OptimizeSpec::dollar_budget(dollars)).unwrap();
    assert!(a.cost <= dollars * (1.0 + 1e-6));
    // The starting split costs the same, so the optimum is at least as fast.
    let start = model::iteration_time(&wl, &net, &TimeModel::Libra, None).unwrap();
    assert!(a.time <= start * (1.0 + 1e-6));

    let spec = OptimizeSpec {
        objective: Objective::TimeCost,
        total_bandwidth: Some(np.budget()),
        lower: vec![5.0; 3],
        ..Default::default()
    };
    let ppc = optimize(&net, &wl, &spec).unwrap();
    let fastest = optimize(
        &net,
        &wl,
        &OptimizeSpec { lower: vec![5.0; 3], ..OptimizeSpec::bandwidth_budget(np.budget()) },
    )
    .unwrap();
    assert!(ppc.time * ppc.cost <= fastest.time * fastest.cost * (1.0 + 1e-6));
    assert!(ppc.cost <= fastest.cost * (1.0 + 1e-6));
}

#[test]
fn infeasible_and_bad_inputs_are_reported() {
    let np = NetworkPreset::ThreeD;
    let (net, wl) = (np.network(), WorkloadPreset::Gpt3.workload(np));
    let e =
        optimize(&net, &wl, &OptimizeSpec { lower: vec![100.0; 3], ..OptimizeSpec::bandwidth_budget(200.0) })
            .unwrap_err();
    assert_eq!(e.status, Status::LIBRA_ERR_INFEASIBLE);
    assert!(e.message.contains("total_bandwidth"), "{}", e.message);
    let spec = OptimizeSpec {
        linear: vec![LinearConstraint::new(vec![1.0, 1.0, 0.0], Cmp::Ge, 500.0)],
        ..OptimizeSpec::bandwidth_budget(300.0)
    };
    assert_eq!(optimize(&net, &wl, &spec).unwrap_err().status, Status::LIBRA_ERR_INFEASIBLE);
    let e = optimize(&net, &wl, &OptimizeSpec::bandwidth_budget(-1.0)).unwrap_err();
    assert_eq!(e.status, Status::LIBRA_ERR_INVALID_ARGUMENT);
    assert!(e.message.contains("total_bandwidth"));
    let e = optimize(&net, &wl, &OptimizeSpec::default()).unwrap_err();
    assert_eq!(e.status, Status::LIBRA_ERR_INVALID_ARGUMENT, "{}", e.message);
    let e = optimize(&net, &Workload::default(), &OptimizeSpec::bandwidth_budget(10.0)).unwrap_err();
    assert!(e.message.contains("phases"));
}

#[test]
fn perf_per_cost_meets_the_budget_with_equality_and_beats_a_grid() {
    let np = NetworkPreset::ThreeD;
    let (net, wl) = (np.network(), WorkloadPreset::Gpt3.workload(np));
    let budget = np.budget();
    let spec = OptimizeSpec { objective: Objective::TimeCost, ..OptimizeSpec::bandwidth_budget(budget) };
    let a = optimize(&net, &wl, &spec).unwrap();
    let total: f64 = a.bandwidths.iter().sum();
    assert!((total - budget).abs() <= 1e-6 * budget, "{total} vs {budget}");
    // Brute force over splits of the whole budget: none has a lower time x cost.
    let cw = CompiledWorkload::new(&wl, &net, &TimeModel::Libra).unwrap();
    let steps = 120;
    let mut best = f64::INFINITY;
    for i in 1..steps {
        for j in 1..steps - i {
            let b = [i as f64, j as f64, (steps - i - j) as f64].map(|u| u * budget / steps as f64);
            best = best.min(cw.time(&b) * net.cost_of(&b).unwrap());
        }
    }
    let ours = a.time * a.cost;
    assert!(ours <= best * (1.0 + 1e-6), "optimiser {ours} vs grid {best}");
    // Without a total budget there is no minimum: refused, naming it.
    let e = optimize(
        &net,
        &wl,
        &OptimizeSpec { objective: Objective::TimeCost, ..OptimizeSpec::dollar_budget(1e6) },
    )
    .unwrap_err();
    assert_eq!(e.status, Status::LIBRA_ERR_INVALID_ARGUMENT);
    assert!(e.message.contains("total_bandwidth"), "{}", e.message);
}

#[test]
fn unused_dimensions_get_a_positive_bandwidth() {
    let net = Network::new(vec![
        Dimension::new(DimKind::Ring, 4, 10.0).with_cost(CostParams::chiplet()),
        Dimension::new(DimKind::Switch, 8, 10.0).with_cost(CostParams::pod()),
    ])
    .unwrap();
    let mut wl = Workload::new(Overlap::None);
    wl.push("tp", 10.0, Some(Collective::new(CollectiveKind::AllReduce, 1e6, vec![4, 1])));
    for objective in [Objective::Time, Objective::TimeCost] {
        let a = optimize(&net, &wl, &OptimizeSpec { objective, ..OptimizeSpec::bandwidth_budget(100.0) })
            .unwrap();
        assert!(
            a.bandwidths[1] > 0.0 && a.bandwidths[1] <= optimize::UNUSED_DIM_BANDWIDTH,
            "{:?}",
            a.bandwidths
        );
        net.with_bandwidths(&a.bandwidths).expect("every answer is a valid network");
    }
    // A positive lower bound is kept as is.
    let spec = OptimizeSpec { lower: vec![1.0, 5.0], ..OptimizeSpec::bandwidth_budget(100.0) };
    let a = optimize(&net, &wl, &spec).unwrap();
    assert!((a.bandwidths[1] - 5.0).abs() < 1e-6, "{:?}", a.bandwidths);
}

#[test]
fn non_finite_and_negative_inputs_are_errors() {
    let np = NetworkPreset::ThreeD;
    let net = np.network();
    for bad in [f64::NAN, -1.0, f64::INFINITY] {
        let e = net.cost_of(&[bad, 1.0, 1.0]).unwrap_err();
        assert!(e.message.contains("bandwidths[0]"), "{}", e.message);
        let c = Collective::over_all(CollectiveKind::AllReduce, 1.0, &net);
        let e = model::collective_time(&c, &net, &TimeModel::Libra, &[1.0, bad, 1.0]).unwrap_err();
        assert!(e.message.contains("bandwidths[1]"), "{}", e.message);
    }
    // A phase so large that its time overflows is an error, not +inf.
    let mut wl = Workload::new(Overlap::None);
    wl.push("huge", 0.0, Some(Collective::over_all(CollectiveKind::AllReduce, 1e308, &net)));
    let e = model::iteration_time(&wl, &net, &TimeModel::Libra, None).unwrap_err();
    assert!(e.message.contains("too large"), "{}", e.message);
    let e = optimize(&net, &wl, &OptimizeSpec::bandwidth_budget(np.budget())).unwrap_err();
    assert_eq!(e.status, Status::LIBRA_ERR_INVALID_ARGUMENT, "{}", e.message);
    assert!(e.message.contains("huge") && e.message.contains("too large"), "{}", e.message);
}
