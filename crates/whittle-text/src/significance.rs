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

/// Standard normal quantile Φ⁻¹(p): the z with P(N(0,1) ≤ z) = p.
///
/// Wichura's algorithm AS 241 (`PPND16`), *Applied Statistics* 37(3), 1988, pp. 477-484:
/// rational approximations in three ranges of p, accurate to about 1 part in 10¹⁶ (the method
/// behind Python's `statistics.NormalDist.inv_cdf`). Returns −∞ at 0, +∞ at 1 and NaN outside
/// [0, 1].
// The coefficients are Wichura's, digit for digit, so they can be checked against the paper.
#[allow(clippy::excessive_precision)]
pub fn normal_quantile(p: f64) -> f64 {
    // Horner evaluation of a polynomial whose coefficients are given from degree 0 up.
    fn poly(coefficients: &[f64], x: f64) -> f64 {
        coefficients.iter().rev().fold(0.0, |acc, &c| acc * x + c)
    }
    if !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180_625 - q * q;
        const A: [f64; 8] = [
            3.387_132_872_796_366_608,
            1.331_416_678_917_843_774_5e2,
            1.971_590_950_306_551_442_7e3,
            1.373_169_376_550_946_112_5e4,
            4.592_195_393_154_987_145_7e4,
            6.726_577_092_700_870_085_3e4,
            3.343_057_558_358_812_810_5e4,
            2.509_080_928_730_122_672_7e3,
        ];
        const B: [f64; 8] = [
            1.0,
            4.231_333_070_160_091_125_2e1,
            6.871_870_074_920_579_083e2,
            5.394_196_021_424_751_107_7e3,
            2.121_379_430_158_659_586_7e4,
            3.930_789_580_009_271_061e4,
            2.872_908_573_572_194_267_4e4,
            5.226_495_278_852_854_561e3,
        ];
        return q * poly(&A, r) / poly(&B, r);
    }
    let tail = if q < 0.0 { p } else { 1.0 - p };
    if tail == 0.0 {
        return q.signum() * f64::INFINITY;
    }
    let r = (-tail.ln()).sqrt();
    let z = if r <= 5.0 {
        const C: [f64; 8] = [
            1.423_437_110_749_683_577_34,
            4.630_337_846_156_545_295_9,
            5.769_497_221_460_691_405_5,
            3.647_848_324_763_204_605_04,
            1.270_458_252_452_368_382_58,
            2.417_807_251_774_506_117_7e-1,
            2.272_384_498_926_918_458_33e-2,
            7.745_450_142_783_414_076_4e-4,
        ];
        const D: [f64; 8] = [
            1.0,
            2.053_191_626_637_758_821_87,
            1.676_384_830_183_803_849_4,
            6.897_673_349_851_000_045_5e-1,
            1.481_039_764_274_800_745_9e-1,
            1.519_866_656_361_645_719_66e-2,
            5.475_938_084_995_344_946e-4,
            1.050_750_071_644_416_843_24e-9,
        ];
        poly(&C, r - 1.6) / poly(&D, r - 1.6)
    } else {
        const E: [f64; 8] = [
            6.657_904_643_501_103_777_2,
            5.463_784_911_164_114_369_9,
            1.784_826_539_917_291_335_8,
            2.965_605_718_285_048_912_3e-1,
            2.653_218_952_657_612_309_3e-2,
            1.242_660_947_388_078_438_6e-3,
            2.711_555_568_743_487_578_15e-5,
            2.010_334_399_292_288_132_65e-7,
        ];
        const F: [f64; 8] = [
            1.0,
            5.998_322_065_558_879_376_9e-1,
            1.369_298_809_227_358_053_1e-1,
            1.487_536_129_085_061_485_25e-2,
            7.868_691_311_456_132_591e-4,
            1.846_318_317_510_054_681_8e-5,
            1.421_511_758_316_445_888_7e-7,
            2.044_263_103_389_939_785_64e-15,
        ];
        poly(&E, r - 5.0) / poly(&F, r - 5.0)
    };
    if q < 0.0 {
        -z
    } else {
        z
    }
}

/// Minimum detectable difference of the paired z test: the smallest true mean difference per
/// pair that a two-sided test at level `alpha` detects with probability `power`, given `n`
/// pairs whose differences have standard deviation `std_diff`:
/// (z₁₋α/₂ + z_power) · σ / √n, the usual normal-approximation power formula for a one-sample
/// (paired) z test with σ taken as known. It ignores rejections in the wrong direction, which
/// makes it very slightly conservative.
pub fn minimum_detectable_difference(std_diff: f64, n: usize, alpha: f64, power: f64) -> f64 {
    (normal_quantile(1.0 - alpha / 2.0) + normal_quantile(power)) * std_diff / (n as f64).sqrt()
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
    fn normal_quantile_matches_reference_values() {
        // Python's statistics.NormalDist().inv_cdf; each z checked by 0.5 * math.erfc(-z / sqrt 2)
        let reference = [
            (0.5, 0.0),
            (0.8, 0.841_621_233_572_914_4),
            (0.975, 1.959_963_984_540_053_6),
            (0.025, -1.959_963_984_540_053_8),
            (0.3, -0.524_400_512_708_040_7),
            (0.001, -3.090_232_306_167_813),
            (1e-10, -6.361_340_902_404_056),
            (1.0 - 1e-12, 7.034_486_910_047_835_6),
        ];
        for (p, expected) in reference {
            let z = normal_quantile(p);
            assert!(
                (z - expected).abs() <= 1e-12 * expected.abs().max(1.0),
                "normal_quantile({p}) = {z} vs {expected}"
            );
        }
        assert_eq!(normal_quantile(0.0), f64::NEG_INFINITY);
        assert_eq!(normal_quantile(1.0), f64::INFINITY);
        assert!(normal_quantile(1.5).is_nan() && normal_quantile(f64::NAN).is_nan());
        // 80% power at alpha 0.05: the familiar 2.8 standard errors.
        let mde = minimum_detectable_difference(2.0, 16, 0.05, 0.8);
        assert!((mde - 2.801_585_218 * 2.0 / 4.0).abs() < 1e-9, "{mde}");
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
