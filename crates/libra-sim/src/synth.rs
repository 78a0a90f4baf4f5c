//! The built-in workload: arrivals and prompt/output lengths drawn to match the statistics of
//! the Azure LLM inference trace 2023, conversation service (Patel et al., "Splitwise", ISCA
//! 2024; trace in the Azure Public Dataset as `data/AzureLLMInferenceTrace_conv.csv`). No row
//! of the trace is stored here, only the summary statistics below, computed from the whole
//! trace (19,366 requests over 3,502 s):
//!
//! - rate: 5.53 requests/s over the hour; per full minute, the rate's log has a standard
//!   deviation of 0.22 and a lag-1 autocorrelation of 0.78 (a slow ramp from 3 to 8 req/s and
//!   back), and within a minute arrivals look Poisson (inter-arrival CV 1.09 over the hour);
//! - prompt tokens: mean 1,155, median 1,020 (the median Splitwise reports), P90 2,734,
//!   P99 4,142; output tokens: mean 211, median 129 (as reported), P90 424, P99 601;
//! - prompt and output lengths are nearly independent (correlation of their logs 0.09).
//!
//! Arrivals are a Poisson process whose rate is redrawn every minute from a log-normal AR(1)
//! with those moments; lengths are drawn independently from the quantile tables below
//! (log-linear between quantiles, which keeps the trace's clusters at ~200, ~400, ~1,000 and
//! ~4,100 prompt tokens and at ~100 and ~400 output tokens).
use super::rng::Rng;
use super::trace::TraceRow;

/// Mean request rate of the trace, requests per second.
pub const MEAN_RATE: f64 = 5.53;
/// Standard deviation of the log of the per-minute rate.
pub const LOG_RATE_SD: f64 = 0.22;
/// Lag-1 autocorrelation of the log of the per-minute rate.
pub const LOG_RATE_AR1: f64 = 0.78;
/// Seconds for which one rate holds.
pub const RATE_PERIOD_S: f64 = 60.0;

/// Percentiles at which the length tables are given.
const PCTS: [f64; 23] = [
    0.0, 1.0, 5.0, 10.0, 15.0, 20.0, 25.0, 30.0, 35.0, 40.0, 45.0, 50.0, 55.0, 60.0, 65.0, 70.0, 75.0, 80.0,
    85.0, 90.0, 95.0, 99.0, 100.0,
];
/// Prompt (context) tokens at `PCTS`.
const PROMPT_Q: [f64; 23] = [
    2.0, 29.0, 181.0, 207.0, 372.0, 387.0, 396.0, 403.0, 414.0, 703.0, 984.0, 1020.0, 1045.0, 1071.0, 1097.0,
    1130.0, 1189.0, 1315.0, 1876.0, 2734.0, 4083.0, 4142.0, 14050.0,
];
/// Generated tokens at `PCTS`.
const OUTPUT_Q: [f64; 23] = [
    7.0, 16.0, 41.0, 54.0, 67.0, 77.0, 85.0, 91.0, 96.0, 103.0, 113.0, 129.0, 151.0, 177.0, 217.0, 384.0,
    395.0, 400.0, 411.0, 424.0, 451.0, 601.0, 1000.0,
];

/// Inverse CDF of a quantile table at `u` in [0, 1): log-linear between the two quantiles.
fn quantile(table: &[f64; 23], u: f64) -> f64 {
    let p = (u * 100.0).clamp(0.0, 100.0);
    let k = PCTS.partition_point(|&x| x <= p).clamp(1, PCTS.len() - 1);
    let (p0, p1) = (PCTS[k - 1], PCTS[k]);
    let (a, b) = (table[k - 1].ln(), table[k].ln());
    (a + (b - a) * (p - p0) / (p1 - p0)).exp()
}

/// A prompt length drawn from the trace's distribution.
pub fn prompt_tokens(rng: &mut Rng) -> u32 {
    quantile(&PROMPT_Q, rng.f64()).round().max(1.0) as u32
}

/// An output length drawn from the trace's distribution.
pub fn output_tokens(rng: &mut Rng) -> u32 {
    quantile(&OUTPUT_Q, rng.f64()).round().max(1.0) as u32
}

/// Rows for `duration_s` seconds, deterministic in the generator's state.
pub fn rows(rng: &mut Rng, duration_s: f64) -> Vec<TraceRow> {
    let mut v = Vec::new();
    // The stationary AR(1) starts from its stationary law; exp(x - sd^2/2) has mean 1.
    let innov = LOG_RATE_SD * (1.0 - LOG_RATE_AR1 * LOG_RATE_AR1).sqrt();
    let mut x = LOG_RATE_SD * rng.normal();
    let mut period_start = 0.0;
    while period_start < duration_s {
        let rate = MEAN_RATE * (x - LOG_RATE_SD * LOG_RATE_SD / 2.0).exp();
        let end = (period_start + RATE_PERIOD_S).min(duration_s);
        // Memoryless: restarting the clock at the period's start keeps the process Poisson.
        let mut t: f64 = period_start;
        loop {
            t += rng.exp(1.0 / rate);
            if t >= end {
                break;
            }
            let prompt = prompt_tokens(rng);
            let output = output_tokens(rng);
            v.push(TraceRow { t_s: t, prompt, output });
        }
        period_start = end;
        x = LOG_RATE_AR1 * x + innov * rng.normal();
    }
    v
}

/// One line for the output: what the generator reproduces and where it comes from.
pub fn describe(duration_s: f64) -> String {
    format!(
        "arrivals and lengths: built-in generator calibrated to the Azure LLM 2023 conversation trace \
         (Splitwise, ISCA 2024): Poisson at {MEAN_RATE} req/s with a per-minute log-normal AR(1) rate \
         (log sd {LOG_RATE_SD}, lag-1 {LOG_RATE_AR1}); prompt median {:.0} / P90 {:.0}, output median \
         {:.0} / P90 {:.0} tokens from the trace's quantiles; {duration_s:.0} s",
        PROMPT_Q[11], PROMPT_Q[19], OUTPUT_Q[11], OUTPUT_Q[19]
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantile_table_hits_its_points() {
        for (k, &p) in PCTS.iter().enumerate().take(PCTS.len() - 1) {
            let v = quantile(&PROMPT_Q, p / 100.0);
            assert!((v / PROMPT_Q[k] - 1.0).abs() < 1e-9, "P{p}: {v}");
        }
        // Monotone tables make a monotone inverse CDF.
        assert!(PROMPT_Q.windows(2).all(|w| w[0] <= w[1]));
        assert!(OUTPUT_Q.windows(2).all(|w| w[0] <= w[1]));
        let mut last = 0.0;
        for i in 0..1000 {
            let v = quantile(&OUTPUT_Q, i as f64 / 1000.0);
            assert!(v >= last);
            last = v;
        }
    }
}
