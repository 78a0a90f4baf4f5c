//! Trace rows (arrival, prompt and output lengths) and the reader of the public Azure LLM
//! inference trace CSV; the built-in generator (`synth`) produces the same rows.

/// One trace row: arrival (seconds from the start), prompt and output tokens.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TraceRow {
    pub t_s: f64,
    pub prompt: u32,
    pub output: u32,
}

/// Parses the Azure LLM inference trace CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`, with
/// timestamps like `2023-11-16 18:15:46.6805900`). Times become seconds from the first row.
pub fn parse_azure_csv(text: &str) -> Result<Vec<TraceRow>, String> {
    let mut rows = Vec::new();
    let mut t0 = None;
    for (i, line) in text.lines().enumerate() {
        if i == 0 || line.trim().is_empty() {
            continue;
        }
        let mut f = line.split(',');
        let (ts, p, o) = match (f.next(), f.next(), f.next()) {
            (Some(a), Some(b), Some(c)) => (a, b, c),
            _ => return Err(format!("line {}: expected 3 columns", i + 1)),
        };
        let t = parse_timestamp(ts).ok_or_else(|| format!("line {}: bad timestamp {ts:?}", i + 1))?;
        let prompt: u32 = p.trim().parse().map_err(|_| format!("line {}: bad ContextTokens", i + 1))?;
        let output: u32 = o.trim().parse().map_err(|_| format!("line {}: bad GeneratedTokens", i + 1))?;
        let base = *t0.get_or_insert(t);
        rows.push(TraceRow { t_s: t - base, prompt: prompt.max(1), output: output.max(1) });
    }
    Ok(rows)
}

/// Seconds since midnight of a `YYYY-MM-DD HH:MM:SS.fffffff` timestamp, plus whole days so that a
/// trace crossing midnight (within one month) stays ordered.
fn parse_timestamp(ts: &str) -> Option<f64> {
    let (date, time) = ts.trim().split_once(' ')?;
    let day: f64 = date.rsplit('-').next()?.parse().ok()?;
    let mut parts = time.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts.next()?.parse().ok()?;
    Some(day * 86400.0 + h * 3600.0 + m * 60.0 + s)
}
