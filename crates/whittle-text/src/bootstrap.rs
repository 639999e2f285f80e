//! Bootstrap confidence intervals for corpus WER and for the WER difference of two systems.
//!
//! Corpus WER is a ratio of sums (Σ errors / Σ reference words), so its sampling error depends
//! on how errors cluster in utterances. Following Bisani & Ney (2004), "Bootstrap estimates for
//! confidence intervals in ASR performance evaluation", ICASSP, the unit of resampling is the
//! utterance: each of `resamples` replicates draws n utterances with replacement and recomputes
//! the corpus WER from their summed counts. For two systems on the same utterances, both are
//! scored on the same replicate, so the interval of the difference reflects the pairing.
//!
//! The interval is the percentile interval: the (1 − c)/2 and (1 + c)/2 quantiles of the
//! replicates (linear interpolation between order statistics, numpy's default), with the point
//! estimate from the full set. Replicates need only per-utterance error and word counts, so
//! 10,000 of them over a few thousand utterances take well under a second.
//!
//! Drawing is seeded (ChaCha8), so a result is reproducible from [`BootstrapOptions::seed`].
//!
//! Ratios with a zero denominator (a replicate without reference words, or the relative change
//! when A makes no errors) are 0 when the numerator is 0 and ±∞ otherwise: an interval can be
//! unbounded, never NaN.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::TextError;

/// Seed used when none is given.
pub const DEFAULT_SEED: u64 = 0;
/// Replicates used when no number is given.
pub const DEFAULT_RESAMPLES: usize = 10_000;

/// How to bootstrap.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct BootstrapOptions {
    /// Number of replicates.
    pub resamples: usize,
    /// Seed of the resampling RNG.
    pub seed: u64,
    /// Coverage of the interval, in (0, 1): 0.95 for a 95% interval.
    pub confidence: f64,
}

impl Default for BootstrapOptions {
    fn default() -> Self {
        Self {
            resamples: DEFAULT_RESAMPLES,
            seed: DEFAULT_SEED,
            confidence: 0.95,
        }
    }
}

/// A point estimate with its bootstrap confidence interval.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Interval {
    /// The statistic on the full set.
    pub estimate: f64,
    /// Lower bound of the interval.
    pub lower: f64,
    /// Upper bound of the interval.
    pub upper: f64,
}

impl Interval {
    /// The interval with every value multiplied by `factor` (e.g. 100 for percent).
    pub fn scaled(self, factor: f64) -> Self {
        Self {
            estimate: self.estimate * factor,
            lower: self.lower * factor,
            upper: self.upper * factor,
        }
    }
}

/// Difference of system B's corpus WER from system A's, both as fractions.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct WerDifference {
    /// WER_B − WER_A (0.01 = one WER point).
    pub absolute: Interval,
    /// (WER_B − WER_A) / WER_A (0.1 = B's WER is 10% higher than A's).
    pub relative: Interval,
}

/// Bootstrap interval of one system's corpus WER, from per-utterance word errors and reference
/// word counts.
pub fn wer_interval(
    errors: &[usize],
    words: &[usize],
    options: &BootstrapOptions,
) -> Result<Interval, TextError> {
    check_lengths(errors.len(), words.len())?;
    let rows: Vec<[usize; 2]> = errors.iter().zip(words).map(|(&e, &w)| [e, w]).collect();
    let [wer] = bootstrap(&rows, options, |[e, w]| [ratio(e as f64, w as f64)])?;
    Ok(wer)
}

/// Bootstrap intervals of B's WER minus A's, absolute and relative, from per-utterance word
/// errors of both systems on the same utterances and the reference word counts.
pub fn wer_difference_interval(
    errors_a: &[usize],
    errors_b: &[usize],
    words: &[usize],
    options: &BootstrapOptions,
) -> Result<WerDifference, TextError> {
    check_lengths(errors_a.len(), words.len())?;
    check_lengths(errors_b.len(), words.len())?;
    let rows: Vec<[usize; 3]> = (0..words.len())
        .map(|i| [errors_a[i], errors_b[i], words[i]])
        .collect();
    let [absolute, relative] = bootstrap(&rows, options, |[a, b, w]| {
        let change = b as f64 - a as f64;
        // Words cancel in the relative change.
        [ratio(change, w as f64), ratio(change, a as f64)]
    })?;
    Ok(WerDifference { absolute, relative })
}

fn check_lengths(errors: usize, words: usize) -> Result<(), TextError> {
    if errors != words {
        return Err(TextError::CountsLength { errors, words });
    }
    Ok(())
}

/// `num / den`, with 0 / 0 = 0 and x / 0 = ±∞.
fn ratio(num: f64, den: f64) -> f64 {
    if num == 0.0 {
        0.0
    } else {
        num / den
    }
}

/// Bootstrap interval of the relative change of B's perplexity from A's,
/// `exp((Σ nll_B − Σ nll_A) / Σ tokens) − 1`, from per-text summed negative log-likelihoods of
/// both models on the same texts and the texts' token counts (resampling texts).
pub fn perplexity_change_interval(
    nll_a: &[f64],
    nll_b: &[f64],
    tokens: &[usize],
    options: &BootstrapOptions,
) -> Result<Interval, TextError> {
    check_lengths(nll_a.len(), tokens.len())?;
    check_lengths(nll_b.len(), tokens.len())?;
    let rows: Vec<[f64; 3]> = (0..tokens.len())
        .map(|i| [nll_a[i], nll_b[i], tokens[i] as f64])
        .collect();
    let [change] = bootstrap(&rows, options, |[a, b, n]| [ratio(b - a, n).exp_m1()])?;
    Ok(change)
}

/// Percentile intervals of `M` statistics of the column sums of `rows` (one row of `K` values
/// per utterance) over bootstrap replicates of the utterances.
fn bootstrap<T: Copy + Default + std::ops::AddAssign, const K: usize, const M: usize>(
    rows: &[[T; K]],
    options: &BootstrapOptions,
    statistic: impl Fn([T; K]) -> [f64; M],
) -> Result<[Interval; M], TextError> {
    if rows.is_empty() {
        return Err(TextError::NoUtterances);
    }
    if options.resamples == 0 || !(options.confidence > 0.0 && options.confidence < 1.0) {
        return Err(TextError::BadBootstrap {
            resamples: options.resamples,
            confidence: options.confidence,
        });
    }
    let add = |sums: &mut [T; K], row: &[T; K]| {
        sums.iter_mut().zip(row).for_each(|(s, &x)| *s += x);
    };
    let mut full = [T::default(); K];
    rows.iter().for_each(|row| add(&mut full, row));
    let estimates = statistic(full);
    let mut rng = ChaCha8Rng::seed_from_u64(options.seed);
    let mut replicates: [Vec<f64>; M] =
        std::array::from_fn(|_| Vec::with_capacity(options.resamples));
    for _ in 0..options.resamples {
        let mut sums = [T::default(); K];
        for _ in 0..rows.len() {
            add(&mut sums, &rows[rng.random_range(0..rows.len())]);
        }
        for (r, v) in replicates.iter_mut().zip(statistic(sums)) {
            r.push(v);
        }
    }
    let tail = (1.0 - options.confidence) / 2.0;
    Ok(std::array::from_fn(|m| {
        let values = &mut replicates[m];
        values.sort_unstable_by(f64::total_cmp);
        Interval {
            estimate: estimates[m],
            lower: quantile(values, tail),
            upper: quantile(values, 1.0 - tail),
        }
    }))
}

/// Quantile `q` of sorted `values` by linear interpolation between order statistics.
fn quantile(values: &[f64], q: f64) -> f64 {
    let position = q * (values.len() - 1) as f64;
    let (below, fraction) = (position.floor() as usize, position.fract());
    let (lo, hi) = (values[below], values[(below + 1).min(values.len() - 1)]);
    // Equal bounds return as they are, so ∞ never becomes ∞ − ∞ = NaN.
    if fraction == 0.0 || lo == hi {
        lo
    } else {
        lo + (hi - lo) * fraction
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_like_numpy() {
        // numpy.quantile([1, 2, 3, 4], [0, 0.25, 0.5, 0.975, 1]) = 1, 1.75, 2.5, 3.925, 4
        let values = [1.0, 2.0, 3.0, 4.0];
        for (q, expected) in [
            (0.0, 1.0),
            (0.25, 1.75),
            (0.5, 2.5),
            (0.975, 3.925),
            (1.0, 4.0),
        ] {
            assert!((quantile(&values, q) - expected).abs() < 1e-12, "q {q}");
        }
        assert_eq!(
            quantile(&[1.0, f64::INFINITY, f64::INFINITY], 0.9),
            f64::INFINITY
        );
    }

    #[test]
    fn wer_interval_brackets_the_estimate_and_narrows_with_more_utterances() {
        let options = BootstrapOptions::default();
        // Errors 0..=4 on 10-word utterances: WER 20%.
        let errors: Vec<usize> = (0..50).map(|i| i % 5).collect();
        let small = wer_interval(&errors, &[10; 50], &options).unwrap();
        assert!((small.estimate - 0.2).abs() < 1e-12);
        assert!(small.lower < 0.2 && 0.2 < small.upper, "{small:?}");
        let errors: Vec<usize> = (0..5000).map(|i| i % 5).collect();
        let large = wer_interval(&errors, &[10; 5000], &options).unwrap();
        // The width scales as 1 / sqrt(n): 10x narrower for 100x the utterances.
        let ratio = (small.upper - small.lower) / (large.upper - large.lower);
        assert!((7.0..14.0).contains(&ratio), "{small:?} {large:?}");
        // Normal approximation: per-utterance errors have sd sqrt(2), so the WER's standard
        // error is sqrt(2) / (10 sqrt(5000)) = 0.002 and the half-width 1.96 x that.
        let half_width = (large.upper - large.lower) / 2.0;
        assert!((half_width - 0.003_92).abs() < 0.000_4, "{large:?}");
    }

    #[test]
    fn perplexity_change_is_exact_and_its_interval_excludes_zero_for_a_consistent_rise() {
        let options = BootstrapOptions::default();
        let tokens = vec![10usize; 200];
        let a: Vec<f64> = (0..200).map(|i| 20.0 + (i % 7) as f64).collect();
        // B adds 0.1 nats per token to every text, with noise: perplexity x exp(0.1).
        let b: Vec<f64> = a
            .iter()
            .enumerate()
            .map(|(i, x)| x + 1.0 + ((i % 5) as f64 - 2.0) * 0.3)
            .collect();
        let change = perplexity_change_interval(&a, &b, &tokens, &options).unwrap();
        assert!(
            (change.estimate - 0.1f64.exp_m1()).abs() < 1e-12,
            "{change:?}"
        );
        assert!(change.lower > 0.09 && change.upper < 0.12, "{change:?}");
        // The same model: exactly no change.
        let same = perplexity_change_interval(&a, &a, &tokens, &options).unwrap();
        assert_eq!((same.estimate, same.lower, same.upper), (0.0, 0.0, 0.0));
        assert!(perplexity_change_interval(&a, &b[1..], &tokens, &options).is_err());
    }

    #[test]
    fn seeded_replicates_are_reproducible() {
        let errors: Vec<usize> = (0..40).map(|i| (i * 7) % 4).collect();
        let words: Vec<usize> = (0..40).map(|i| 5 + i % 6).collect();
        let run = |seed| {
            let options = BootstrapOptions {
                seed,
                ..Default::default()
            };
            wer_interval(&errors, &words, &options).unwrap()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
    }

    #[test]
    fn zero_errors_give_a_zero_interval_and_bad_input_is_refused() {
        let options = BootstrapOptions::default();
        let zero = wer_interval(&[0; 5], &[3; 5], &options).unwrap();
        assert_eq!((zero.estimate, zero.lower, zero.upper), (0.0, 0.0, 0.0));
        let difference = wer_difference_interval(&[0; 5], &[1; 5], &[3; 5], &options).unwrap();
        assert_eq!(difference.relative.lower, f64::INFINITY);
        assert!(matches!(
            wer_interval(&[1, 2], &[3], &options),
            Err(TextError::CountsLength {
                errors: 2,
                words: 1
            })
        ));
        assert!(matches!(
            wer_interval(&[], &[], &options),
            Err(TextError::NoUtterances)
        ));
        let none = BootstrapOptions {
            resamples: 0,
            ..options
        };
        assert!(matches!(
            wer_interval(&[1], &[3], &none),
            Err(TextError::BadBootstrap { .. })
        ));
    }
}
