//! Sampling and weighted picks with integer rates, as Envoy's FractionalPercent.
//!
//! Randomness comes from `fastrand`'s thread-local generator: every worker thread
//! owns its own, so a decision touches no shared state.

/// The denominator of every sampling rate: 0.0001% steps.
pub const MILLION: u32 = 1_000_000;

/// Decides, independently per call, whether a request is sampled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sampler {
    per_million: u32,
}

impl Sampler {
    #[cfg(test)]
    pub fn per_million(self) -> u32 {
        self.per_million
    }

    pub fn new(per_million: u32) -> Self {
        Self {
            per_million: per_million.min(MILLION),
        }
    }

    #[inline]
    pub fn sample(self) -> bool {
        match self.per_million {
            0 => false,
            MILLION => true,
            n => fastrand::u32(0..MILLION) < n,
        }
    }
}

/// Picks an index with probability proportional to its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedPicker {
    /// Running totals; entry i covers `[cumulative[i-1], cumulative[i])`.
    cumulative: Vec<u64>,
}

impl WeightedPicker {
    /// `None` when there is nothing to pick (no weights, or all zero).
    pub fn new(weights: impl IntoIterator<Item = u32>) -> Option<Self> {
        let mut total = 0u64;
        let cumulative: Vec<u64> = weights
            .into_iter()
            .map(|w| {
                total += u64::from(w);
                total
            })
            .collect();
        (total > 0).then_some(Self { cumulative })
    }

    #[inline]
    pub fn pick(&self) -> usize {
        let total = *self.cumulative.last().expect("non-empty by construction");
        if self.cumulative.len() == 1 {
            return 0;
        }
        let r = fastrand::u64(0..total);
        // Zero-weight entries share their predecessor's total and are never chosen.
        self.cumulative.partition_point(|&c| c <= r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bounds at 5 sigma of the binomial: a correct sampler fails them with
    /// probability below one in a million.
    fn assert_binomial(hits: u64, n: u64, p: f64) {
        let mean = n as f64 * p;
        let sigma = (n as f64 * p * (1.0 - p)).sqrt();
        assert!(
            (hits as f64 - mean).abs() <= 5.0 * sigma.max(1.0),
            "{hits} hits of {n} at p={p}: mean {mean}, sigma {sigma}"
        );
    }

    #[test]
    fn zero_and_full_are_exact() {
        assert!((0..10_000).all(|_| !Sampler::new(0).sample()));
        assert!((0..10_000).all(|_| Sampler::new(MILLION).sample()));
        assert_eq!(Sampler::new(2 * MILLION).per_million(), MILLION);
    }

    #[test]
    fn fractional_rates_follow_the_binomial() {
        for per_million in [100, 25_000, 200_000, 500_000] {
            let n = 400_000u64;
            let s = Sampler::new(per_million);
            let hits = (0..n).filter(|_| s.sample()).count() as u64;
            assert_binomial(hits, n, f64::from(per_million) / f64::from(MILLION));
        }
    }

    #[test]
    fn weighted_pick_follows_weights_and_skips_zero() {
        let picker = WeightedPicker::new([80, 0, 20]).unwrap();
        let n = 200_000u64;
        let mut counts = [0u64; 3];
        for _ in 0..n {
            counts[picker.pick()] += 1;
        }
        assert_eq!(counts[1], 0);
        assert_binomial(counts[0], n, 0.8);
        assert_binomial(counts[2], n, 0.2);
    }

    #[test]
    fn nothing_to_pick_is_none() {
        assert!(WeightedPicker::new([]).is_none());
        assert!(WeightedPicker::new([0, 0]).is_none());
        assert_eq!(WeightedPicker::new([0, 7]).unwrap().pick(), 1);
    }
}
