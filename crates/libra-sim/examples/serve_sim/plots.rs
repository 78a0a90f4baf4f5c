//! SVG plots: the TTFT distribution of every policy at one load, and mean TTFT against load.
use libra_sim::RunResult;
use plotters::prelude::*;

const COLORS: [RGBColor; 6] = [
    RGBColor(214, 39, 40),
    RGBColor(255, 127, 14),
    RGBColor(148, 103, 189),
    RGBColor(31, 119, 180),
    RGBColor(44, 160, 44),
    RGBColor(60, 60, 60),
];

pub fn plot_cdf(path: &str, title: &str, results: &[RunResult]) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let all: Vec<Vec<f64>> = results.iter().map(|r| r.ttft_ms_sorted()).collect();
    let lo = all.iter().filter_map(|v| v.first()).fold(f64::MAX, |a, &b| a.min(b)).max(0.1);
    let hi = all.iter().filter_map(|v| v.last()).fold(1.0f64, |a, &b| a.max(b)) * 1.1;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(50)
        .build_cartesian_2d((lo..hi).log_scale(), 0.0..1.0)?;
    chart.configure_mesh().x_desc("TTFT (ms, log)").y_desc("fraction of requests").draw()?;
    for (k, (r, v)) in results.iter().zip(&all).enumerate() {
        let c = COLORS[k % COLORS.len()];
        let n = v.len().max(1) as f64;
        // At most ~2000 points per curve keeps the SVG small.
        let step = (v.len() / 2000).max(1);
        let pts: Vec<(f64, f64)> =
            v.iter().enumerate().step_by(step).map(|(i, &x)| (x.max(lo), (i + 1) as f64 / n)).collect();
        chart
            .draw_series(LineSeries::new(pts, c.stroke_width(2)))?
            .label(r.policy.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}

pub fn plot_load(
    path: &str,
    title: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> Result<(), Box<dyn std::error::Error>> {
    let root = SVGBackend::new(path, (800, 500)).into_drawing_area();
    root.fill(&WHITE)?;
    let xs = series.iter().flat_map(|(_, v)| v.iter().map(|p| p.0));
    let xmax = xs.fold(1.0f64, f64::max) * 1.05;
    let ys: Vec<f64> = series.iter().flat_map(|(_, v)| v.iter().map(|p| p.1)).collect();
    let ymin = ys.iter().copied().fold(f64::MAX, f64::min).max(1.0) * 0.8;
    let ymax = ys.iter().copied().fold(10.0, f64::max) * 1.2;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0..xmax, (ymin..ymax).log_scale())?;
    chart.configure_mesh().x_desc("load (req/s)").y_desc("mean TTFT (ms, log)").draw()?;
    chart.draw_series(LineSeries::new(vec![(0.0, 500.0), (xmax, 500.0)], BLACK.mix(0.4)))?;
    for (k, (name, pts)) in series.iter().enumerate() {
        let c = COLORS[k % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.clone(), c.stroke_width(2)))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], c.stroke_width(2)));
    }
    chart.configure_series_labels().background_style(WHITE.mix(0.8)).border_style(BLACK).draw()?;
    root.present()?;
    Ok(())
}
