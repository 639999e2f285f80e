//! The matched-pairs sentence-segment word error (MAPSSWE) test, for deciding whether two
//! recognisers' error counts on the same utterances differ by more than chance.
//!
//! Follows Gillick & Cox (1989), "Some statistical issues in the comparison of speech
//! recognition algorithms", ICASSP, as NIST's SCTK implements it in `sc_stats -t mapsswe`, except
//! that a segment here is a whole utterance (SCTK cuts utterances further at words both systems
//! got right). With Zᵢ = errors of A − errors of B on utterance i:
//!
//! * μ = mean Zᵢ, σ² = Σ(Zᵢ − μ)² / (n − 1) (sample variance, as SCTK);
//! * W = μ / (σ / √n), approximately standard normal under H₀: E(Zᵢ) = 0 for large n;
//! * two-sided p = P(|N(0,1)| ≥ |W|) = erfc(|W| / √2).
//!
//! When every Zᵢ is the same, σ = 0: W is 0 (p = 1) if they are all zero, else ±∞ (p = 0).
//!
//! [`error_segments`] cuts utterances into SCTK's segments: stretches of the reference bounded
//! by two consecutive words that both systems recognised correctly (with nothing inserted
//! between them). More, smaller segments give the test more power than whole utterances while
//! keeping segments' errors nearly independent.

use crate::normalize::scan;
use crate::wer::{align, EditOp};
use crate::TextError;

/// Result of [`matched_pairs_test`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MatchedPairsResult {
    /// Number of utterances.
    pub n: usize,
    /// Mean over utterances of (errors of A − errors of B); negative when A is better.
    pub mean_diff: f64,
    /// Sample standard deviation of the per-utterance differences.
    pub std_diff: f64,
    /// The test statistic W = mean / (std / √n).
    pub z: f64,
    /// Two-sided p-value under the normal approximation.
    pub p_value: f64,
    /// Whether `p_value < 0.05`.
    pub significant_at_05: bool,
}

/// MAPSSWE test of system A's per-utterance error counts `a` against system B's `b`, where
/// `a[i]` and `b[i]` are on the same utterance.
///
/// Fails when the slices have different lengths or fewer than 2 utterances.
pub fn matched_pairs_test(a: &[usize], b: &[usize]) -> Result<MatchedPairsResult, TextError> {
    if a.len() != b.len() {
        return Err(TextError::UnpairedCounts {
            a: a.len(),
            b: b.len(),
        });
    }
    let n = a.len();
    if n < 2 {
        return Err(TextError::TooFewUtterances(n));
    }
    let differences: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| x as f64 - y as f64)
        .collect();
    let mean = differences.iter().sum::<f64>() / n as f64;
    let variance = differences.iter().map(|d| (d - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std = variance.sqrt();
    let z = if std > 0.0 {
        mean / (std / (n as f64).sqrt())
    } else if mean == 0.0 {
        0.0
    } else {
        mean.signum() * f64::INFINITY
    };
    let p_value = two_sided_normal_p(z);
    Ok(MatchedPairsResult {
        n,
        mean_diff: mean,
        std_diff: std,
        z,
        p_value,
        significant_at_05: p_value < 0.05,
    })
}

/// Per-segment word errors `(errors of A, errors of B)` of one utterance, from normalised
/// reference and hypothesis texts. The errors sum to each system's word errors on the utterance.
pub fn error_segments(
    reference: &str,
    hypothesis_a: &str,
    hypothesis_b: &str,
) -> Vec<(usize, usize)> {
    let reference: Vec<&str> = scan::split_words(reference).collect();
    let n = reference.len();
    // Per reference word: recognised correctly; per gap before word i (gap n = the end):
    // inserted words. Substitutions and deletions count on their word.
    let marks = |hypothesis: &str| {
        let hypothesis: Vec<&str> = scan::split_words(hypothesis).collect();
        let (mut correct, mut word_errors, mut inserted) =
            (vec![false; n], vec![0; n], vec![0; n + 1]);
        let mut next_reference = 0;
        for op in align(&reference, &hypothesis) {
            match op {
                EditOp::Match { reference: r, .. } => {
                    correct[r] = true;
                    next_reference = r + 1;
                }
                EditOp::Substitute { reference: r, .. } | EditOp::Delete { reference: r } => {
                    word_errors[r] = 1;
                    next_reference = r + 1;
                }
                EditOp::Insert { .. } => inserted[next_reference] += 1,
            }
        }
        (correct, word_errors, inserted)
    };
    let (correct_a, errors_a, inserted_a) = marks(hypothesis_a);
    let (correct_b, errors_b, inserted_b) = marks(hypothesis_b);
    let both_correct = |i: usize| correct_a[i] && correct_b[i];
    // Word i is an anchor when it and a neighbour are correct in both, with no insertion between.
    let clean_gap = |g: usize| inserted_a[g] == 0 && inserted_b[g] == 0;
    let anchor = |i: usize| {
        both_correct(i)
            && ((i > 0 && both_correct(i - 1) && clean_gap(i))
                || (i + 1 < n && both_correct(i + 1) && clean_gap(i + 1)))
    };
    let mut segments = Vec::new();
    let mut open: Option<(usize, usize)> = None;
    for i in 0..=n {
        let gap = (inserted_a[i], inserted_b[i]);
        if gap != (0, 0) {
            let s = open.get_or_insert((0, 0));
            s.0 += gap.0;
            s.1 += gap.1;
        }
        if i == n {
            break;
        }
        if anchor(i) {
            segments.extend(open.take());
        } else {
            let s = open.get_or_insert((0, 0));
            s.0 += errors_a[i];
            s.1 += errors_b[i];
        }
    }
    segments.extend(open.take());
    segments
}

/// Fewest segments for which the normal approximation of [`matched_pairs_test`] is used; below
/// it callers should use the exact [`sign_test`].
pub const MIN_SEGMENTS_FOR_NORMAL_APPROXIMATION: usize = 10;

/// Exact two-sided sign test on paired error counts: among the pairs that differ, is "A has
/// fewer errors" as frequent as "B has fewer errors"? Returns the p-value (1 when none differ).
pub fn sign_test(a: &[usize], b: &[usize]) -> Result<f64, TextError> {
    if a.len() != b.len() {
        return Err(TextError::UnpairedCounts {
            a: a.len(),
            b: b.len(),
        });
    }
    let a_better = a.iter().zip(b).filter(|(x, y)| x < y).count();
    let b_better = a.iter().zip(b).filter(|(x, y)| x > y).count();
    let k = a_better + b_better;
    if k == 0 {
        return Ok(1.0);
    }
    // P(X <= min) for X ~ Binomial(k, 1/2), in log space so large k cannot overflow.
    let ln_choose =
        |n: usize, r: usize| -> f64 { (1..=r).map(|i| ((n - r + i) as f64 / i as f64).ln()).sum() };
    let tail: f64 = (0..=a_better.min(b_better))
        .map(|i| (ln_choose(k, i) - k as f64 * std::f64::consts::LN_2).exp())
        .sum();
    Ok((2.0 * tail).min(1.0))
}

/// P(|N(0,1)| ≥ |z|).
pub fn two_sided_normal_p(z: f64) -> f64 {
    erfc(z.abs() / std::f64::consts::SQRT_2).min(1.0)
}

/// Complementary error function by the Chebyshev fit of Press et al., *Numerical Recipes in C*
/// (2nd ed., §6.2, `erfcc`): relative error below 1.2e-7 for every x.
pub fn erfc(x: f64) -> f64 {
    if x.is_nan() {
        return f64::NAN;
    }
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    const COEFFICIENTS: [f64; 10] = [
        -1.265_512_23,
        1.000_023_68,
        0.374_091_96,
        0.096_784_18,
        -0.186_288_06,
        0.278_868_07,
        -1.135_203_98,
        1.488_515_87,
        -0.822_152_23,
        0.170_872_77,
    ];
    let polynomial = COEFFICIENTS.iter().rev().fold(0.0, |acc, &c| acc * t + c);
    let tail = t * (-z * z + polynomial).exp();
    if x >= 0.0 {
        tail
    } else {
        2.0 - tail
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_test_matches_binomial_tails() {
        // 2 pairs, both favouring B: 2 * P(X <= 0), X ~ Bin(2, 1/2) = 0.5.
        assert!((sign_test(&[1, 1], &[0, 0]).unwrap() - 0.5).abs() < 1e-12);
        // 10 of 10 favour A: 2 / 1024.
        assert!((sign_test(&[0; 10], &[1; 10]).unwrap() - 2.0 / 1024.0).abs() < 1e-12);
        // 8 vs 2 (scipy.stats.binomtest(2, 10).pvalue = 0.109375), ties ignored.
        let a = [0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 3];
        let b = [1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 3];
        assert!((sign_test(&a, &b).unwrap() - 0.109375).abs() < 1e-9);
        assert_eq!(sign_test(&[2, 3], &[2, 3]).unwrap(), 1.0);
        assert!(sign_test(&[1], &[1, 2]).is_err());
    }

    #[test]
    fn segments_are_cut_at_words_both_systems_got_right() {
        let reference = "the cat sat on the mat today";
        // A: "cat" -> "bat"; B: "mat" -> "very".
        let segments = error_segments(
            reference,
            "the bat sat on the mat today",
            "the cat sat on the very today",
        );
        // "sat on the" is correct in both and separates the two error regions.
        assert_eq!(segments, vec![(1, 0), (0, 1)]);
        // Errors are conserved.
        let (a, b): (usize, usize) = segments.iter().fold((0, 0), |s, x| (s.0 + x.0, s.1 + x.1));
        assert_eq!((a, b), (1, 1));
        // A single word correct in both is not a boundary.
        assert_eq!(
            error_segments("a b c d e", "x b y d e", "a b c d e"),
            vec![(2, 0)]
        );
        // Identical perfect hypotheses: no error segment at all.
        assert!(error_segments(reference, reference, reference).is_empty());
        // Insertions at the very end and an empty reference still count.
        assert_eq!(error_segments("a b c", "a b c d", "a b c"), vec![(1, 0)]);
        assert_eq!(error_segments("", "x y", ""), vec![(2, 0)]);
    }

    #[test]
    fn erfc_matches_reference_values() {
        // math.erfc from CPython (correctly rounded libm)
        let reference = [
            (0.0, 1.0),
            (0.1, 0.887_537_083_981_715_2),
            (0.5, 0.479_500_122_186_953_5),
            (1.0, 0.157_299_207_050_285_13),
            (1.959_963_984_540_054 / std::f64::consts::SQRT_2, 0.05),
            (2.0, 0.004_677_734_981_047_265),
            (3.0, 2.209_049_699_858_543_8e-5),
            (5.0, 1.537_459_794_428_035_1e-12),
            (-1.0, 1.842_700_792_949_715),
        ];
        for (x, expected) in reference {
            let relative = (erfc(x) - expected).abs() / expected;
            assert!(
                relative < 1.2e-7,
                "erfc({x}) = {} vs {expected}: rel err {relative}",
                erfc(x)
            );
        }
    }

    #[test]
    fn hand_computed_example() {
        // differences 1, 2, 0, 1, 1: mean 1, variance (0+1+1+0+0)/4 = 0.5,
        // W = 1 / sqrt(0.5 / 5) = sqrt(10) = 3.1623, p = erfc(3.1623 / sqrt 2) = 0.001565
        let result = matched_pairs_test(&[3, 4, 2, 5, 1], &[2, 2, 2, 4, 0]).unwrap();
        assert_eq!(result.n, 5);
        assert!((result.mean_diff - 1.0).abs() < 1e-12);
        assert!((result.std_diff - 0.5f64.sqrt()).abs() < 1e-12);
        assert!((result.z - 10f64.sqrt()).abs() < 1e-12);
        assert!(
            (result.p_value - 0.001_565_402_258_002_549).abs() < 1e-9,
            "{}",
            result.p_value
        );
        assert!(result.significant_at_05);
    }

    #[test]
    fn symmetric_differences_are_not_significant() {
        // differences +1, -1, +1, -1: mean 0
        let result = matched_pairs_test(&[1, 0, 1, 0], &[0, 1, 0, 1]).unwrap();
        assert_eq!(result.z, 0.0);
        assert!((result.p_value - 1.0).abs() < 1e-7);
        assert!(!result.significant_at_05);
        // B worse on one of three: mean -1/3, sd sqrt(1/3), W = -1
        let result = matched_pairs_test(&[2, 2, 2], &[2, 2, 3]).unwrap();
        assert!((result.z + 1.0).abs() < 1e-12);
        assert!((result.p_value - 0.317_310_507_862_914_1).abs() < 1e-7);
    }

    #[test]
    fn degenerate_inputs() {
        let identical = matched_pairs_test(&[1, 2], &[1, 2]).unwrap();
        assert_eq!((identical.z, identical.p_value), (0.0, 1.0));
        let constant = matched_pairs_test(&[1, 2], &[0, 1]).unwrap();
        assert_eq!((constant.z, constant.p_value), (f64::INFINITY, 0.0));
        assert!(matches!(
            matched_pairs_test(&[1], &[1, 2]),
            Err(TextError::UnpairedCounts { a: 1, b: 2 })
        ));
        assert!(matches!(
            matched_pairs_test(&[1], &[1]),
            Err(TextError::TooFewUtterances(1))
        ));
    }
}
