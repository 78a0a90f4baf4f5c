//! A brute-force reference for the optimiser, for tests and reports.
use crate::topo::optimize::CompiledWorkload;

/// Reference brute force for tests and reports: the best time over a grid of splits of
/// `total` (all of it used) with `steps` units, refined `rounds` times around the best point.
pub fn grid_search(
    cw: &CompiledWorkload,
    dims: usize,
    total: f64,
    steps: usize,
    rounds: usize,
) -> (Vec<f64>, f64) {
    let mut best_units = vec![0.0; dims];
    let mut best_t = f64::INFINITY;
    let mut parts = vec![0usize; dims];
    fn compose(k: usize, left: usize, parts: &mut Vec<usize>, visit: &mut dyn FnMut(&[usize])) {
        if k + 1 == parts.len() {
            if left >= 1 {
                parts[k] = left;
                visit(parts);
            }
            return;
        }
        for v in 1..left {
            parts[k] = v;
            compose(k + 1, left - v, parts, visit);
        }
    }
    let unit = total / steps as f64;
    let mut bw = vec![0.0; dims];
    compose(0, steps, &mut parts, &mut |p| {
        for (b, &u) in bw.iter_mut().zip(p) {
            *b = u as f64 * unit;
        }
        let t = cw.time(&bw);
        if t < best_t {
            best_t = t;
            best_units.copy_from_slice(&bw);
        }
    });
    // Local refinement: a (2r+1)^(dims-1) box around the best point with a shrinking step.
    let mut step = unit;
    let r: i64 = 3;
    for _ in 0..rounds {
        step /= 2.0;
        let center = best_units.clone();
        let span = (2 * r + 1) as usize;
        let count = span.pow(dims as u32 - 1);
        for idx in 0..count {
            let mut rest = idx;
            let mut sum = 0.0;
            let mut ok = true;
            for k in 0..dims - 1 {
                let off = (rest % span) as i64 - r;
                rest /= span;
                bw[k] = center[k] + off as f64 * step;
                ok &= bw[k] > 0.0;
                sum += bw[k];
            }
            bw[dims - 1] = total - sum;
            if !ok || bw[dims - 1] <= 0.0 {
                continue;
            }
            let t = cw.time(&bw);
            if t < best_t {
                best_t = t;
                best_units.copy_from_slice(&bw);
            }
        }
    }
    (best_units, best_t)
}
