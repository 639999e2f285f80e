//! The verdict on system B (e.g. a compressed model) against a baseline A (e.g. the float model)
//! on the same utterances: significantly worse, significantly better, equivalent within a
//! margin, or inconclusive.
//!
//! Three pieces of evidence, each from [`significance`](crate::significance) or
//! [`bootstrap`](crate::bootstrap):
//!
//! * **Significance**: MAPSSWE over SCTK's error segments ([`matched_pairs_test`]), or the exact
//!   [`sign_test`] on the same segments when there are fewer than
//!   [`MIN_SEGMENTS_FOR_NORMAL_APPROXIMATION`].
//! * **Size of the difference**: WER_B − WER_A and (WER_B − WER_A) / WER_A with a percentile
//!   bootstrap interval over utterances ([`wer_difference_interval`]).
//! * **Power**: the minimum detectable difference (MDE) of the paired test at α = 0.05
//!   two-sided and 80% power, (z₀.₉₇₅ + z₀.₈₀) · s / √n errors per segment, where n is the number
//!   of segments and s the sample standard deviation of the observed per-segment differences,
//!   the same segments and s that MAPSSWE uses. In WER points it is that × n / reference words.
//!   This assumes that the segments, their count and s stay as observed, and the normal
//!   approximation; it is not estimated when s = 0 (the systems never differ on a segment).
//!
//! The verdict ([`Verdict`]) is ours, written in the spirit of an equivalence test with a
//! one-sided margin (non-inferiority): p < 0.05 decides worse or better by the direction of the
//! corpus WERs; otherwise B is equivalent within the margin X when the upper bound of the
//! interval of the relative WER increase is at most X, and inconclusive when it is not. A
//! model may be called lossless only when it is equivalent on every test set: "not
//! significant" alone is what a set too small to detect anything also says.

use crate::bootstrap::{wer_difference_interval, BootstrapOptions, WerDifference};
use crate::significance::{
    matched_pairs_test, minimum_detectable_difference, sign_test, MatchedPairsResult,
    MIN_SEGMENTS_FOR_NORMAL_APPROXIMATION,
};
use crate::TextError;

/// Significance level of the test and of the verdict.
pub const ALPHA: f64 = 0.05;
/// Power at which the minimum detectable difference is stated.
pub const POWER: f64 = 0.80;
/// Largest relative WER increase of B over A still called equivalent, by default (10%).
pub const DEFAULT_MARGIN: f64 = 0.10;

/// How to compare.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CompareOptions {
    /// Bootstrap of the WER difference; its confidence is 1 − [`ALPHA`] by default.
    pub bootstrap: BootstrapOptions,
    /// Equivalence margin on the relative WER increase, as a fraction (0.10 = 10%).
    pub margin: f64,
}

impl Default for CompareOptions {
    fn default() -> Self {
        Self {
            bootstrap: BootstrapOptions::default(),
            margin: DEFAULT_MARGIN,
        }
    }
}

/// The kind of verdict, B relative to the baseline A.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// B's WER is significantly higher (p < 0.05).
    Worse,
    /// B's WER is significantly lower (p < 0.05).
    Better,
    /// No significant difference, and the interval bounds B's relative WER increase by the margin.
    Equivalent,
    /// Neither: the set cannot tell.
    Inconclusive,
}

impl Verdict {
    /// The stable machine-readable name: `worse`, `better`, `equivalent` or `inconclusive`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Worse => "worse",
            Verdict::Better => "better",
            Verdict::Equivalent => "equivalent",
            Verdict::Inconclusive => "inconclusive",
        }
    }
}

/// Which significance test decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TestUsed {
    /// MAPSSWE over error segments.
    Mapsswe,
    /// The exact sign test over error segments (too few segments for MAPSSWE).
    SignTest,
}

impl TestUsed {
    /// Human name.
    pub fn name(self) -> &'static str {
        match self {
            TestUsed::Mapsswe => "MAPSSWE",
            TestUsed::SignTest => "exact sign test (too few error segments for MAPSSWE)",
        }
    }

    /// Name without the reason, for inside a sentence.
    pub fn short_name(self) -> &'static str {
        match self {
            TestUsed::Mapsswe => "MAPSSWE",
            TestUsed::SignTest => "exact sign test",
        }
    }
}

/// Minimum detectable difference of the paired test on this set, at [`ALPHA`] and [`POWER`].
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MinimumDetectable {
    /// Standard deviation of the per-segment differences it is computed from.
    pub std_diff: f64,
    /// In mean errors per segment.
    pub errors_per_segment: f64,
    /// As a WER difference (fraction: 0.01 = one point).
    pub wer: f64,
    /// Relative to A's WER (fraction; ∞ when A makes no errors).
    pub relative: f64,
}

/// Everything `whittle eval --compare` reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Comparison {
    /// Utterances compared.
    pub utterances: usize,
    /// Error segments (the MAPSSWE pairs).
    pub segments: usize,
    /// Reference words.
    pub words: usize,
    /// Word errors of A.
    pub errors_a: usize,
    /// Word errors of B.
    pub errors_b: usize,
    /// Corpus WER of A (fraction).
    pub wer_a: f64,
    /// Corpus WER of B (fraction).
    pub wer_b: f64,
    /// The test whose p-value decides.
    pub test: TestUsed,
    /// Two-sided p-value of that test.
    pub p_value: f64,
    /// MAPSSWE's result, when there are at least 2 segments.
    pub mapsswe: Option<MatchedPairsResult>,
    /// The sign test's p-value.
    pub sign_test_p: f64,
    /// WER_B − WER_A, absolute and relative, with bootstrap intervals.
    pub difference: WerDifference,
    /// How the intervals were drawn.
    pub bootstrap: BootstrapOptions,
    /// Minimum detectable difference; `None` with fewer than 2 segments or no differing one.
    pub mde: Option<MinimumDetectable>,
    /// Equivalence margin (fraction).
    pub margin: f64,
    /// The verdict.
    pub verdict: Verdict,
}

/// Compares B with the baseline A on the same utterances: per utterance, `errors_a[i]` and
/// `errors_b[i]` word errors against `words[i]` reference words, and the error segments of all
/// utterances (from [`error_segments`](crate::significance::error_segments)).
pub fn compare_systems(
    errors_a: &[usize],
    errors_b: &[usize],
    words: &[usize],
    segments: &[(usize, usize)],
    options: &CompareOptions,
) -> Result<Comparison, TextError> {
    if !(options.margin.is_finite() && options.margin >= 0.0) {
        return Err(TextError::BadMargin(options.margin));
    }
    let difference = wer_difference_interval(errors_a, errors_b, words, &options.bootstrap)?;
    let (segments_a, segments_b): (Vec<usize>, Vec<usize>) = segments.iter().copied().unzip();
    let mapsswe = matched_pairs_test(&segments_a, &segments_b).ok();
    let sign_test_p = sign_test(&segments_a, &segments_b)?;
    // With too few segments MAPSSWE's normal approximation fails (two segments that both favour
    // A would give z = infinity), so the exact sign test decides.
    let (test, p_value) = match mapsswe {
        Some(m) if segments.len() >= MIN_SEGMENTS_FOR_NORMAL_APPROXIMATION => {
            (TestUsed::Mapsswe, m.p_value)
        }
        _ => (TestUsed::SignTest, sign_test_p),
    };
    let sum = |x: &[usize]| x.iter().sum::<usize>();
    let (errors_a, errors_b, n_words) = (sum(errors_a), sum(errors_b), sum(words));
    let wer = |errors: usize| errors as f64 / n_words.max(1) as f64;
    let (wer_a, wer_b) = (wer(errors_a), wer(errors_b));
    let mde = mapsswe.filter(|m| m.std_diff > 0.0).map(|m| {
        let errors_per_segment = minimum_detectable_difference(m.std_diff, m.n, ALPHA, POWER);
        let wer = errors_per_segment * m.n as f64 / n_words.max(1) as f64;
        MinimumDetectable {
            std_diff: m.std_diff,
            errors_per_segment,
            wer,
            relative: wer / wer_a,
        }
    });
    let verdict = if p_value < ALPHA {
        match wer_b.total_cmp(&wer_a) {
            std::cmp::Ordering::Greater => Verdict::Worse,
            std::cmp::Ordering::Less => Verdict::Better,
            std::cmp::Ordering::Equal => Verdict::Inconclusive,
        }
    } else if difference.relative.upper <= options.margin {
        Verdict::Equivalent
    } else {
        Verdict::Inconclusive
    };
    Ok(Comparison {
        utterances: words.len(),
        segments: segments.len(),
        words: n_words,
        errors_a,
        errors_b,
        wer_a,
        wer_b,
        test,
        p_value,
        mapsswe,
        sign_test_p,
        difference,
        bootstrap: options.bootstrap,
        mde,
        margin: options.margin,
        verdict,
    })
}

impl Comparison {
    /// One sentence that states the verdict and the evidence for it.
    pub fn sentence(&self) -> String {
        let (p, test) = (format_p(self.p_value), self.test.short_name());
        let confidence = percent(self.bootstrap.confidence);
        let relative = &self.difference.relative;
        match self.verdict {
            Verdict::Worse | Verdict::Better => format!(
                "B is significantly {} than A (p {p}, {test}): WER {:.2}% -> {:.2}%, {:+.1}% relative ({confidence}% CI {:+.1}% to {:+.1}%).",
                self.verdict.as_str(),
                100.0 * self.wer_a,
                100.0 * self.wer_b,
                100.0 * relative.estimate,
                100.0 * relative.lower,
                100.0 * relative.upper,
            ),
            Verdict::Equivalent => format!(
                "B is equivalent to A within {}%: no significant difference (p {p}, {test}), and the {confidence}% CI bounds B's relative WER increase by {:+.1}%.",
                percent(self.margin),
                100.0 * relative.upper,
            ),
            Verdict::Inconclusive if self.p_value < ALPHA => format!(
                "Inconclusive: {test} finds a difference (p {p}) but the corpus WERs are equal."
            ),
            Verdict::Inconclusive => {
                let power = match &self.mde {
                    Some(mde) => format!(
                        "; at 80% power this set detects a change of {:.2} WER points ({:.1}% relative)",
                        100.0 * mde.wer,
                        100.0 * mde.relative
                    ),
                    None => String::new(),
                };
                format!(
                    "Inconclusive: no significant difference (p {p}, {test}), but the {confidence}% CI allows a relative WER increase of {:+.1}%, above the {}% margin{power}.",
                    100.0 * relative.upper,
                    percent(self.margin),
                )
            }
        }
    }
}

/// A p-value's relation for people, to follow "p ": "= 0.0480", or "< 0.0001" below that.
pub fn format_p(p: f64) -> String {
    if p < 1e-4 {
        "< 0.0001".into()
    } else {
        format!("= {p:.4}")
    }
}

/// A fraction in percent, without trailing zeros: 0.1 -> "10", 0.125 -> "12.5".
fn percent(fraction: f64) -> String {
    let text = format!("{:.3}", 100.0 * fraction);
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Utterances of 10 words; segments taken as whole utterances (what `error_segments` gives
    /// when every utterance has one error region).
    fn run(errors_a: &[usize], errors_b: &[usize]) -> Comparison {
        let segments: Vec<(usize, usize)> = errors_a
            .iter()
            .zip(errors_b)
            .map(|(&a, &b)| (a, b))
            .filter(|&s| s != (0, 0))
            .collect();
        let words = vec![10; errors_a.len()];
        compare_systems(
            errors_a,
            errors_b,
            &words,
            &segments,
            &CompareOptions::default(),
        )
        .unwrap()
    }

    /// A: errors i mod 3; B: the same rate, on other utterances ((i + 1) mod 3).
    fn noisy_equal_pair(n: usize) -> (Vec<usize>, Vec<usize>) {
        (
            (0..n).map(|i| i % 3).collect(),
            (0..n).map(|i| (i + 1) % 3).collect(),
        )
    }

    #[test]
    fn identical_systems_are_equivalent() {
        let errors: Vec<usize> = (0..40).map(|i| i % 4).collect();
        let c = run(&errors, &errors);
        assert_eq!(c.p_value, 1.0);
        let d = c.difference;
        assert_eq!((d.absolute.lower, d.absolute.upper), (0.0, 0.0));
        assert_eq!((d.relative.lower, d.relative.upper), (0.0, 0.0));
        assert_eq!(c.verdict, Verdict::Equivalent, "{}", c.sentence());
        assert!(c.mde.is_none(), "no differing segment: {:?}", c.mde);
        // Both perfect: no segment at all.
        let c = run(&[0; 5], &[0; 5]);
        assert_eq!(
            (c.segments, c.p_value, c.verdict),
            (0, 1.0, Verdict::Equivalent)
        );
    }

    #[test]
    fn a_much_worse_system_on_a_large_set_is_significantly_worse() {
        let (a, _) = noisy_equal_pair(600);
        let b: Vec<usize> = a.iter().enumerate().map(|(i, e)| e + (i % 2)).collect();
        let c = run(&a, &b);
        assert_eq!(c.test, TestUsed::Mapsswe);
        assert!(c.p_value < 1e-6, "{c:?}");
        assert_eq!(c.verdict, Verdict::Worse, "{}", c.sentence());
        // WER 10% -> 15%: +5 points, +50% relative, and the CI excludes 0.
        assert!((c.difference.absolute.estimate - 0.05).abs() < 1e-12);
        assert!((c.difference.relative.estimate - 0.5).abs() < 1e-12);
        assert!(c.difference.absolute.lower > 0.0, "{:?}", c.difference);
        assert!(c.sentence().starts_with("B is significantly worse"));
        // Swapped, B is the better one.
        assert_eq!(run(&b, &a).verdict, Verdict::Better);
    }

    #[test]
    fn a_noisy_equal_pair_is_inconclusive_on_a_small_set_and_equivalent_on_a_large_one() {
        let (a, b) = noisy_equal_pair(30);
        let small = run(&a, &b);
        assert!(small.p_value >= ALPHA, "{small:?}");
        assert!(
            small.difference.relative.upper > DEFAULT_MARGIN,
            "{small:?}"
        );
        assert_eq!(small.verdict, Verdict::Inconclusive, "{}", small.sentence());
        assert!(
            small.sentence().contains("above the 10% margin"),
            "{}",
            small.sentence()
        );

        let (a, b) = noisy_equal_pair(3000);
        let large = run(&a, &b);
        assert!(large.p_value >= ALPHA, "{large:?}");
        assert!(large.difference.relative.lower < 0.0, "{large:?}");
        assert!(
            large.difference.relative.upper <= DEFAULT_MARGIN,
            "{large:?}"
        );
        assert_eq!(large.verdict, Verdict::Equivalent, "{}", large.sentence());
        // A tighter margin than the interval allows makes the same evidence inconclusive.
        let strict = CompareOptions {
            margin: 0.01,
            ..Default::default()
        };
        let segments: Vec<(usize, usize)> = a.iter().copied().zip(b.iter().copied()).collect();
        let c = compare_systems(&a, &b, &vec![10; a.len()], &segments, &strict).unwrap();
        assert_eq!(c.verdict, Verdict::Inconclusive);
    }

    #[test]
    fn minimum_detectable_difference_matches_a_hand_computation() {
        // Segment differences A - B: 1, -1, 0, 2 (mean 0.5, s^2 = (0.25 + 2.25 + 0.25 + 2.25) / 3
        // = 5/3). MDE = (1.959964 + 0.841621) x sqrt(5/3) / sqrt(4) = 1.808_415 errors per
        // segment; x 4 segments / 40 words = 0.180_842 WER; A's WER 4 / 40 = 0.1 -> 180.8%.
        let a = [1, 0, 1, 2];
        let b = [0, 1, 1, 0];
        let segments: Vec<(usize, usize)> = a.iter().copied().zip(b.iter().copied()).collect();
        let c = compare_systems(&a, &b, &[10; 4], &segments, &CompareOptions::default()).unwrap();
        let mde = c.mde.unwrap();
        assert!((mde.std_diff - (5.0f64 / 3.0).sqrt()).abs() < 1e-12);
        assert!((mde.errors_per_segment - 1.808_415).abs() < 1e-6, "{mde:?}");
        assert!((mde.wer - 0.180_842).abs() < 1e-6, "{mde:?}");
        assert!((mde.relative - 1.808_415).abs() < 1e-6, "{mde:?}");
        // Four segments: the sign test decides.
        assert_eq!(c.test, TestUsed::SignTest);
    }

    #[test]
    fn the_verdict_is_deterministic_under_the_seed() {
        let (a, b) = noisy_equal_pair(60);
        let with_seed = |seed| {
            let options = CompareOptions {
                bootstrap: BootstrapOptions {
                    seed,
                    ..Default::default()
                },
                ..Default::default()
            };
            let segments: Vec<(usize, usize)> = a.iter().copied().zip(b.iter().copied()).collect();
            compare_systems(&a, &b, &vec![10; a.len()], &segments, &options).unwrap()
        };
        assert_eq!(with_seed(3), with_seed(3));
        assert_ne!(with_seed(3).difference, with_seed(4).difference);
    }

    #[test]
    fn bad_margins_are_refused() {
        for margin in [-0.1, f64::NAN, f64::INFINITY] {
            let options = CompareOptions {
                margin,
                ..Default::default()
            };
            assert!(matches!(
                compare_systems(&[1], &[1], &[3], &[(1, 1)], &options),
                Err(TextError::BadMargin(_))
            ));
        }
    }
}
