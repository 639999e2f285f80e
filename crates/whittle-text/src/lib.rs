//! Transcript scoring for whittle: Whisper's text normalisers, word/character error rates, and
//! a significance test for comparing two systems on the same utterances.
//!
//! * [`normalize`]: Whisper's English and basic normalisers.
//! * [`wer`]: Levenshtein alignment with jiwer's tie-breaking, WER and CER counts.
//! * [`significance`]: the matched-pairs sentence-segment word error (MAPSSWE) test, the sign
//!   test, the normal quantile and the minimum detectable difference.
//! * [`bootstrap`]: seeded bootstrap confidence intervals of corpus WER and of WER differences.
//! * [`verdict`]: worse / better / equivalent within a margin / inconclusive, for a system
//!   against a baseline.
//!
//! ```
//! use whittle_text::{word_errors, EnglishNormalizer};
//!
//! let normalizer = EnglishNormalizer::without_spellings();
//! let reference = normalizer.normalize("Mr. Smith paid twenty-one dollars.");
//! let hypothesis = normalizer.normalize("mister smith paid $21");
//! assert_eq!(reference, "mister smith paid $21");
//! assert_eq!(word_errors(&reference, &hypothesis).errors(), 0);
//! ```
#![warn(missing_docs)]

use std::path::PathBuf;

pub mod bootstrap;
pub mod normalize;
pub mod significance;
pub mod verdict;
pub mod wer;

pub use bootstrap::{wer_difference_interval, wer_interval, BootstrapOptions, Interval};
pub use normalize::{normalize_numbers, BasicNormalizer, EnglishNormalizer};
pub use significance::{error_segments, matched_pairs_test, sign_test, MatchedPairsResult};
pub use verdict::{compare_systems, CompareOptions, Comparison, Verdict};
pub use wer::{align, char_errors, word_errors, EditOp, ErrorCounts};

/// Errors of this crate.
#[derive(Debug, thiserror::Error)]
pub enum TextError {
    /// The spelling map could not be read.
    #[error("cannot read spelling map {path}: {source}")]
    ReadSpellings {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The spelling map is not a JSON object of strings.
    #[error("spelling map {path} is not a JSON object of word -> word: {source}")]
    ParseSpellings {
        /// The file.
        path: PathBuf,
        /// The JSON error.
        source: serde_json::Error,
    },
    /// The two systems were scored on different numbers of utterances.
    #[error(
        "matched-pairs test needs one error count per utterance for both systems, got {a} and {b}"
    )]
    UnpairedCounts {
        /// Utterances scored for system A.
        a: usize,
        /// Utterances scored for system B.
        b: usize,
    },
    /// Too few utterances to estimate a variance.
    #[error("matched-pairs test needs at least 2 utterances, got {0}")]
    TooFewUtterances(usize),
    /// Per-utterance error and word counts of different lengths.
    #[error("need one word count per utterance's error count, got {errors} error counts and {words} word counts")]
    CountsLength {
        /// Error counts given.
        errors: usize,
        /// Word counts given.
        words: usize,
    },
    /// Nothing to resample.
    #[error("cannot bootstrap an empty set of utterances")]
    NoUtterances,
    /// A bootstrap needs at least one replicate and a confidence strictly between 0 and 1.
    #[error("bootstrap needs at least 1 resample and a confidence in (0, 1), got {resamples} and {confidence}")]
    BadBootstrap {
        /// Replicates asked for.
        resamples: usize,
        /// Confidence asked for.
        confidence: f64,
    },
    /// The equivalence margin must be a finite fraction ≥ 0.
    #[error("equivalence margin must be finite and >= 0, got {0}")]
    BadMargin(f64),
}
