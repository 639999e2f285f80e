//! Alignment and WER/CER: agreement with jiwer 4.0 (`fixtures/wer_cases.json`, written by
//! `fixtures/make_wer_cases.py`) and properties of edit distances.

use std::path::Path;

use proptest::prelude::*;
use serde::Deserialize;
use whittle_text::{align, char_errors, word_errors, EditOp, ErrorCounts};

#[derive(Deserialize)]
struct WerCases {
    words: Vec<(String, String, [usize; 3])>,
    chars: Vec<(String, String, [usize; 3])>,
}

#[test]
fn counts_match_jiwer_including_tie_breaking() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/wer_cases.json");
    let cases: WerCases = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let mut mismatches = Vec::new();
    let all = cases
        .words
        .iter()
        .map(|(r, h, e)| ("word", r, h, e, word_errors(r, h)))
        .chain(
            cases
                .chars
                .iter()
                .map(|(r, h, e)| ("char", r, h, e, char_errors(r, h))),
        );
    let mut total = 0;
    for (unit, reference, hypothesis, expected, actual) in all {
        total += 1;
        let got = [actual.substitutions, actual.deletions, actual.insertions];
        if &got != expected {
            mismatches.push(format!(
                "{unit} {reference:?} / {hypothesis:?}: jiwer {expected:?}, got {got:?}"
            ));
        }
    }
    println!(
        "{}/{total} S/D/I triples match jiwer",
        total - mismatches.len()
    );
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
}

/// Plain Wagner–Fischer distance, the reference for the alignment's total.
fn naive_distance(r: &[u8], h: &[u8]) -> usize {
    let mut row: Vec<usize> = (0..=h.len()).collect();
    for i in 1..=r.len() {
        let mut diagonal = row[0];
        row[0] = i;
        for j in 1..=h.len() {
            let up = row[j];
            row[j] = (diagonal + usize::from(r[i - 1] != h[j - 1]))
                .min(up + 1)
                .min(row[j - 1] + 1);
            diagonal = up;
        }
    }
    row[h.len()]
}

fn counts_of(r: &[u8], h: &[u8]) -> ErrorCounts {
    ErrorCounts::from_alignment(&align(r, h), r.len())
}

fn small_sequence() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(0u8..4, 0..12)
}

fn sentence() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop::sample::select(vec!["the", "a", "cat", "sat", "on", "mat"]),
        0..10,
    )
    .prop_map(|words| words.join(" "))
}

proptest! {
    #[test]
    fn identical_sequences_have_no_errors(text in sentence()) {
        let counts = word_errors(&text, &text);
        prop_assert_eq!(counts.errors(), 0);
        prop_assert_eq!(counts.rate(), 0.0);
        prop_assert_eq!(char_errors(&text, &text).errors(), 0);
    }

    #[test]
    fn alignment_total_is_the_edit_distance(r in small_sequence(), h in small_sequence()) {
        prop_assert_eq!(counts_of(&r, &h).errors(), naive_distance(&r, &h));
    }

    #[test]
    fn errors_are_bounded_by_the_longer_sequence(r in small_sequence(), h in small_sequence()) {
        prop_assert!(counts_of(&r, &h).errors() <= r.len().max(h.len()));
    }

    #[test]
    fn operations_cover_both_sequences(r in small_sequence(), h in small_sequence()) {
        let ops = align(&r, &h);
        let c = ErrorCounts::from_alignment(&ops, r.len());
        let correct = ops.iter().filter(|op| matches!(op, EditOp::Match { .. })).count();
        prop_assert_eq!(c.substitutions + c.deletions + correct, r.len());
        prop_assert_eq!(c.substitutions + c.insertions + correct, h.len());
        prop_assert_eq!(c.correct(), correct);
        // indices appear in order, each exactly once, and matches really match
        let (mut next_r, mut next_h) = (0, 0);
        for op in ops {
            match op {
                EditOp::Match { reference, hypothesis } | EditOp::Substitute { reference, hypothesis } => {
                    prop_assert_eq!((reference, hypothesis), (next_r, next_h));
                    prop_assert_eq!(
                        r[reference] == h[hypothesis],
                        matches!(op, EditOp::Match { .. })
                    );
                    next_r += 1;
                    next_h += 1;
                }
                EditOp::Delete { reference } => {
                    prop_assert_eq!(reference, next_r);
                    next_r += 1;
                }
                EditOp::Insert { hypothesis } => {
                    prop_assert_eq!(hypothesis, next_h);
                    next_h += 1;
                }
            }
        }
        prop_assert_eq!((next_r, next_h), (r.len(), h.len()));
    }

    #[test]
    fn distance_is_a_metric(a in small_sequence(), b in small_sequence(), c in small_sequence()) {
        let d = |x: &[u8], y: &[u8]| counts_of(x, y).errors();
        prop_assert_eq!(d(&a, &b), d(&b, &a));
        prop_assert!(d(&a, &c) <= d(&a, &b) + d(&b, &c));
        prop_assert_eq!(d(&a, &b) == 0, a == b);
    }

    #[test]
    fn corpus_counts_are_sums(pairs in prop::collection::vec((sentence(), sentence()), 1..6)) {
        let total: ErrorCounts = pairs.iter().map(|(r, h)| word_errors(r, h)).sum();
        let errors: usize = pairs.iter().map(|(r, h)| word_errors(r, h).errors()).sum();
        let words: usize = pairs.iter().map(|(r, _)| r.split_whitespace().count()).sum();
        prop_assert_eq!(total.errors(), errors);
        prop_assert_eq!(total.reference_len, words);
        prop_assert!((total.rate() - errors as f64 / words.max(1) as f64).abs() < 1e-12);
    }
}
