//! What reuse has looked like, by age: for KV blocks and for adapters, how many were used
//! again, and how many left the cache for good, at each idle age. From that, the hit density
//! of a node of a given age (Beckmann et al., "LHD: Improving Cache Hit Rate by Maximizing Hit
//! Density", NSDI 2018): the chance it is used again, divided by the time it would still hold
//! its block until that use or its end. Keeping the nodes of highest density per block
//! maximises hits per unit of memory.
//!
//! Why this and not last use: reuse in serving is not recency-shaped. A conversation comes back
//! after its user's think time, so a block 2 s idle may be less likely to be needed soon than
//! one 200 s idle whose user is about due; LRU evicts every block older than the GPU tier's
//! reach and misses all such returns. Ages are observed on both tiers (a host hit is a reuse
//! at its age too), so what the GPU tier evicts early is still measured.
//!
//! Ages fall into log-spaced bins; a plan scores a node by its bin's density, oldest first
//! within a bin. With nothing observed every density is 0 and the order is last use.

/// Age bins: bin 0 holds ages below 10 ms, then each bin spans a factor of 1.35; the last
/// one (from about 2.7 hours) holds every older age.
pub(crate) const BINS: usize = 48;
/// Counts are halved once this many events have been recorded, so the model follows a
/// workload that changes (half-life of about this many reuses and ends).
const HALF_LIFE_EVENTS: f64 = 65_536.0;

/// The lowest age of each bin, microseconds, in integers so that a bin is an exact range of
/// last-use times (a plan walks the candidate set bin by bin).
pub(crate) const BIN_START_US: [u64; BINS] = bin_starts();

const fn bin_starts() -> [u64; BINS] {
    let mut e = [0u64; BINS];
    e[1] = 10_000;
    let mut i = 2;
    while i < BINS {
        e[i] = e[i - 1] * 27 / 20;
        i += 1;
    }
    e
}

/// Which distribution an event belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReuseClass {
    Kv = 0,
    Adapter = 1,
}

#[derive(Debug, Clone)]
pub(crate) struct ReuseModel {
    hits: [[f64; BINS]; 2],
    ends: [[f64; BINS]; 2],
    since_halving: f64,
}

impl Default for ReuseModel {
    fn default() -> Self {
        ReuseModel { hits: [[0.0; BINS]; 2], ends: [[0.0; BINS]; 2], since_halving: 0.0 }
    }
}

/// The bin of an age in microseconds.
#[inline]
pub(crate) fn bin_of(age_us: u64) -> usize {
    BIN_START_US.partition_point(|&start| start <= age_us) - 1
}

/// A representative age of bin `b` (the middle of its span).
fn bin_mid_us(b: usize) -> f64 {
    let start = BIN_START_US[b] as f64;
    let end = if b + 1 < BINS { BIN_START_US[b + 1] as f64 } else { start * 1.35 };
    (start + end) / 2.0
}

/// What a missed adapter block costs the first token, in missed KV blocks. Densities count
/// hits per node and both kinds cost link time in proportion to their blocks, but a request
/// can start its prefill only once its whole adapter is in, unless adapters are registered
/// layer by layer (`CacheConfig::layered_adapters`), while its KV lands layer by layer under
/// the prefill (layer-wise readiness) or is recomputed when that is cheaper. Measured in the
/// simulator with whole adapters at weights 1, 2, 4, 8 and 16: below the peak loads 4 was
/// best or within 0.5% of best on every scenario, and higher weights change nothing more (see
/// the README). With layered adapters, at 1, 2, 4 and 8, it is best or within 1.7% of best
/// below the peaks on many-adapters and memory-constrained.
pub(crate) const ADAPTER_MISS_WEIGHT: f64 = 4.0;

/// Weight of the newest gap in an adapter's smoothed time between uses.
const GAP_WEIGHT: f64 = 0.25;

/// An adapter's smoothed time between uses after one more use `gap_us` after the last.
pub(crate) fn smoothed_gap(mean_gap_us: f64, gap_us: u64) -> f64 {
    let gap = gap_us as f64;
    if mean_gap_us == 0.0 {
        gap
    } else {
        (1.0 - GAP_WEIGHT) * mean_gap_us + GAP_WEIGHT * gap
    }
}

/// An adapter's own hit density: uses per microsecond, from its smoothed gap, or from its
/// idle time once that is longer (an adapter that stopped being used cools down). 0 before
/// its second use.
///
/// Why beside the class's density by age: adapter popularity is skewed (Zipf in every
/// serving trace we model), and arrivals to one adapter are close to memoryless, so its next
/// use is about one mean gap away whatever its age; by age alone a rare adapter just used
/// looks like a popular one. A node takes the higher of the two, so a popular adapter is kept
/// through an idle spell and a rare one leaves with its last KV.
pub(crate) fn adapter_rate(mean_gap_us: f64, age_us: u64) -> f64 {
    if mean_gap_us <= 0.0 {
        0.0
    } else {
        1.0 / mean_gap_us.max(age_us as f64).max(1.0)
    }
}

impl ReuseModel {
    /// A node idle for `age_us` was used again.
    pub fn hit(&mut self, class: ReuseClass, age_us: u64) {
        self.hits[class as usize][bin_of(age_us)] += 1.0;
        self.recorded();
    }

    /// A node idle for `age_us` left the cache without being used again.
    pub fn end(&mut self, class: ReuseClass, age_us: u64) {
        self.ends[class as usize][bin_of(age_us)] += 1.0;
        self.recorded();
    }

    /// A node counted as ended in bin `bin` (it left the tier) was used again after all.
    pub fn unend(&mut self, class: ReuseClass, bin: usize) {
        let c = &mut self.ends[class as usize][bin.min(BINS - 1)];
        // Counts may have been halved since.
        *c = (*c - 1.0).max(0.0);
    }

    fn recorded(&mut self) {
        self.since_halving += 1.0;
        if self.since_halving >= HALF_LIFE_EVENTS {
            self.since_halving = 0.0;
            for row in self.hits.iter_mut().chain(self.ends.iter_mut()) {
                row.iter_mut().for_each(|c| *c *= 0.5);
            }
        }
    }

    /// Hit density per bin and class: hits at this age or later, over the expected time a
    /// node of this age still holds its block (until its hit or its end). 0 where nothing at
    /// this age or later was observed. O(bins): a plan computes it once.
    pub fn densities(&self) -> [[f64; BINS]; 2] {
        let mut d = [[0.0; BINS]; 2];
        for (c, row) in d.iter_mut().enumerate() {
            let (mut hits, mut events, mut weighted) = (0.0, 0.0, 0.0);
            for b in (0..BINS).rev() {
                let e = self.hits[c][b] + self.ends[c][b];
                hits += self.hits[c][b];
                events += e;
                weighted += e * bin_mid_us(b);
                let lifetime = weighted - events * BIN_START_US[b] as f64;
                row[b] = if hits > 0.0 && lifetime > 0.0 { hits / lifetime } else { 0.0 };
            }
        }
        d
    }

    /// Events recorded since the last halving, for tests and stats.
    #[cfg(test)]
    pub fn events(&self) -> f64 {
        self.hits.iter().chain(self.ends.iter()).flatten().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bins_are_ordered_and_cover_ages() {
        assert_eq!(bin_of(0), 0);
        assert_eq!(bin_of(9_999), 0);
        assert_eq!(bin_of(10_000), 1);
        let mut last = 0;
        for e in 0..40 {
            let b = bin_of(10u64.pow(e / 4) * [1, 2, 5, 7][e as usize % 4]);
            assert!(b >= last || e % 4 == 0);
            last = b;
        }
        for b in 1..BINS {
            assert!(BIN_START_US[b] > BIN_START_US[b - 1]);
            assert_eq!(bin_of(BIN_START_US[b]), b);
            assert_eq!(bin_of(BIN_START_US[b] - 1), b - 1);
        }
        // The last bin starts past 2.5 hours.
        assert!(BIN_START_US[BINS - 1] > 9_000_000_000);
        assert_eq!(bin_of(u64::MAX), BINS - 1);
    }

    #[test]
    fn a_due_return_is_denser_than_a_fresh_block() {
        // Half the blocks come back after 200 s, the others are dropped at 250 s: one just
        // used is far from its return, one 150 s idle is close to it.
        let mut m = ReuseModel::default();
        for _ in 0..100 {
            m.hit(ReuseClass::Kv, 200_000_000);
            m.end(ReuseClass::Kv, 250_000_000);
        }
        let d = m.densities();
        let fresh = d[0][bin_of(1_000_000)];
        let due = d[0][bin_of(150_000_000)];
        let past = d[0][bin_of(400_000_000)];
        assert!(due > 2.0 * fresh, "due {due} fresh {fresh}");
        assert_eq!(past, 0.0, "nothing comes back after 400 s");
        // The adapter class saw nothing.
        assert!(d[1].iter().all(|&x| x == 0.0));
    }

    #[test]
    fn adapter_rate_follows_gaps_and_cools() {
        assert_eq!(adapter_rate(0.0, 5), 0.0, "no second use yet");
        let mut gap = smoothed_gap(0.0, 1_000_000);
        assert_eq!(gap, 1_000_000.0);
        gap = smoothed_gap(gap, 3_000_000);
        assert_eq!(gap, 1_500_000.0);
        assert_eq!(adapter_rate(gap, 10), 1.0 / 1_500_000.0);
        // Idle for longer than its gap: the idle time is the estimate.
        assert_eq!(adapter_rate(gap, 6_000_000), 1.0 / 6_000_000.0);
    }

    #[test]
    fn counts_halve() {
        let mut m = ReuseModel::default();
        for _ in 0..(HALF_LIFE_EVENTS as usize) {
            m.hit(ReuseClass::Adapter, 1);
        }
        assert!((m.events() - HALF_LIFE_EVENTS / 2.0).abs() < 1.0);
    }
}
