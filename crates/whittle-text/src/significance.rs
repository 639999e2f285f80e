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
