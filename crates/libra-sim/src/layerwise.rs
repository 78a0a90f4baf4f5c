//! Layer-wise readiness in the simulated engine: a request whose blocks are still on the host
//! link joins the step in which its copy lands, and layer L of that step starts only once
//! layer group group(L) of every copy it waits for has landed (an engine makes its compute
//! stream wait on the group's event before layer L). The other layers run meanwhile: one
//! layer's time is the roofline step time without the fixed overhead, over the layer count.
use super::engine::TimingBackend;
use libra::cache::CacheCore;
use libra::error::Result;

/// When each layer of a loading request may start: the landing time of its layer group in
/// every copy the request waits for. None while it waits for an adapter upload that lands
/// whole (not registered layer by layer): every layer reads it, so the request waits for the
/// step after it.
pub fn landing_times(
    core: &CacheCore,
    io: &TimingBackend,
    request: u64,
    layers: u32,
    layers_per_group: u32,
) -> Result<Option<Vec<u64>>> {
    let batches = core.request_batches(request)?;
    if !batches.iter().all(|&b| io.is_grouped(b)) {
        return Ok(None);
    }
    let per = layers_per_group.max(1);
    Ok(Some(
        (0..layers)
            .map(|l| {
                batches
                    .iter()
                    .filter_map(|&b| io.group_ready_at(b, l / per))
                    .max()
                    .unwrap_or(io.now)
                    .max(io.now)
            })
            .collect(),
    ))
}

/// End of a step that starts at `now`: the fixed overhead, then the layers in order, layer L
/// not before `gates[L]` (no gates: no layer waits).
pub fn stalled_end(now: u64, overhead_us: f64, layer_us: f64, gates: &[u64]) -> u64 {
    let mut t = now as f64 + overhead_us;
    for &g in gates {
        t = t.max(g as f64) + layer_us;
    }
    t.ceil() as u64
}

/// The earliest start of a step whose layer L waits for `gates[L]` without stalling: every
/// layer's group lands by the time the layers before it are done.
pub fn earliest_start(overhead_us: f64, layer_us: f64, gates: &[u64]) -> u64 {
    gates
        .iter()
        .enumerate()
        .map(|(l, &g)| (g as f64 - overhead_us - l as f64 * layer_us).ceil().max(0.0) as u64)
        .max()
        .unwrap_or(0)
}

/// Merges a joining request's landing times into the step's gates (the latest per layer).
pub fn merge_gates(gates: &mut Vec<u64>, landing: &[u64]) {
    if gates.is_empty() {
        gates.extend_from_slice(landing);
        return;
    }
    for (g, &l) in gates.iter_mut().zip(landing) {
        *g = (*g).max(l);
    }
}

/// Most stall (microseconds) a joining request may add to a step of `step_us` with
/// `batch_seqs` sequences already in it: each of them waits as long as the layers do, and the
/// joiner gains about a step, so the batch's total added wait stays within `join_slack` steps.
pub fn join_allowance(step_us: u64, batch_seqs: usize, join_slack: f64) -> u64 {
    (step_us as f64 * join_slack / batch_seqs.max(1) as f64) as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_joiner_may_stall_a_full_batch_less() {
        // Alone in the step it may stall it by up to a step; beside 100 sequences by 1%.
        assert_eq!(join_allowance(30_000, 0, 1.0), 30_000);
        assert_eq!(join_allowance(30_000, 1, 1.0), 30_000);
        assert_eq!(join_allowance(30_000, 100, 1.0), 300);
        assert_eq!(join_allowance(30_000, 100, 0.5), 150);
        assert_eq!(join_allowance(30_000, 100, 0.0), 0);
    }

    #[test]
    fn layers_wait_only_for_their_own_group() {
        // 4 layers of 10 us after 5 us of overhead; groups of 2 land at 30 and 60.
        assert_eq!(stalled_end(0, 5.0, 10.0, &[0, 0, 0, 0]), 45);
        assert_eq!(stalled_end(0, 5.0, 10.0, &[30, 30, 60, 60]), 80);
        // The whole copy gating layer 0 instead costs the full compute after it lands.
        assert_eq!(stalled_end(0, 5.0, 10.0, &[60, 60, 60, 60]), 100);
        let mut g = Vec::new();
        merge_gates(&mut g, &[1, 5, 3]);
        merge_gates(&mut g, &[4, 2, 3]);
        assert_eq!(g, vec![4, 5, 3]);
    }
}
