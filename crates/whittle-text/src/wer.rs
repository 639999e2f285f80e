//! Word and character error rates from a Levenshtein alignment.
//!
//! The alignment minimises substitutions + deletions + insertions (unit costs). Among the many
//! minimal alignments it picks the one jiwer 4 reports (through RapidFuzz's `editops`, after
//! Hyyrö 2004, "A Note on Bit-Parallel Alignment Computation"): the common prefix and suffix
//! are matched first, then the backtrace from the end prefers a deletion, then an insertion when
//! the cell to its left is one below the cell above-left, else the diagonal. Totals never depend
//! on this choice; the split into S/D/I does, and this one agrees with jiwer's counts on random
//! inputs (see `tests/wer_properties.rs`).
//!
//! Rates divide by the reference length, floored at one: an empty reference scores
//! `errors / 1` (every inserted word is one error) rather than dividing by zero. Corpus rates
//! are `Σ errors / Σ reference lengths`, obtained by summing [`ErrorCounts`] first.
//!
//! # Shapes
//! Memory and time are O(n·m) for sequences of lengths n and m, after the common prefix and
//! suffix are removed.

use std::iter::Sum;
use std::ops::{Add, AddAssign};

use crate::normalize::scan;

/// One step of an alignment, with indices into the reference and hypothesis sequences.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EditOp {
    /// `reference[reference] == hypothesis[hypothesis]`.
    Match {
        /// Index into the reference.
        reference: usize,
        /// Index into the hypothesis.
        hypothesis: usize,
    },
    /// The reference item was recognised as a different hypothesis item.
    Substitute {
        /// Index into the reference.
        reference: usize,
        /// Index into the hypothesis.
        hypothesis: usize,
    },
    /// The reference item is missing from the hypothesis.
    Delete {
        /// Index into the reference.
        reference: usize,
    },
    /// The hypothesis item has no counterpart in the reference.
    Insert {
        /// Index into the hypothesis.
        hypothesis: usize,
    },
}

/// Error counts of one utterance or, summed, of a corpus.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ErrorCounts {
    /// Reference items replaced by another item.
    pub substitutions: usize,
    /// Reference items missing from the hypothesis.
    pub deletions: usize,
    /// Hypothesis items not in the reference.
    pub insertions: usize,
    /// Items in the reference (words for WER, characters for CER).
    pub reference_len: usize,
}

impl ErrorCounts {
    /// Counts the operations of an alignment of a reference of `reference_len` items.
    pub fn from_alignment(ops: &[EditOp], reference_len: usize) -> Self {
        let mut counts = ErrorCounts {
            reference_len,
            ..Default::default()
        };
        for op in ops {
            match op {
                EditOp::Match { .. } => {}
                EditOp::Substitute { .. } => counts.substitutions += 1,
                EditOp::Delete { .. } => counts.deletions += 1,
                EditOp::Insert { .. } => counts.insertions += 1,
            }
        }
        counts
    }

    /// Substitutions + deletions + insertions (the edit distance).
    pub fn errors(&self) -> usize {
        self.substitutions + self.deletions + self.insertions
    }

    /// Reference items recognised correctly (hits).
    pub fn correct(&self) -> usize {
        self.reference_len
            .saturating_sub(self.substitutions + self.deletions)
    }

    /// `errors / max(1, reference_len)`: WER or CER; above 1 when insertions dominate.
    pub fn rate(&self) -> f64 {
        self.errors() as f64 / self.reference_len.max(1) as f64
    }
}

impl Add for ErrorCounts {
    type Output = ErrorCounts;

    fn add(self, other: ErrorCounts) -> ErrorCounts {
        ErrorCounts {
            substitutions: self.substitutions + other.substitutions,
            deletions: self.deletions + other.deletions,
            insertions: self.insertions + other.insertions,
            reference_len: self.reference_len + other.reference_len,
        }
    }
}

impl AddAssign for ErrorCounts {
    fn add_assign(&mut self, other: ErrorCounts) {
        *self = *self + other;
    }
}

impl Sum for ErrorCounts {
    fn sum<I: Iterator<Item = ErrorCounts>>(iter: I) -> ErrorCounts {
        iter.fold(ErrorCounts::default(), Add::add)
    }
}

/// A minimal-cost alignment of `hypothesis` to `reference` (see the module docs for which one).
pub fn align<T: PartialEq>(reference: &[T], hypothesis: &[T]) -> Vec<EditOp> {
    let prefix = reference
        .iter()
        .zip(hypothesis)
        .take_while(|(r, h)| r == h)
        .count();
    let (r_rest, h_rest) = (&reference[prefix..], &hypothesis[prefix..]);
    let suffix = r_rest
        .iter()
        .rev()
        .zip(h_rest.iter().rev())
        .take_while(|(r, h)| r == h)
        .count();
    let r = &r_rest[..r_rest.len() - suffix];
    let h = &h_rest[..h_rest.len() - suffix];

    // distance[i][j]: edit distance between r[..i] and h[..j]
    let width = h.len() + 1;
    let mut distance = vec![0usize; (r.len() + 1) * width];
    for (j, cell) in distance[..width].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=r.len() {
        distance[i * width] = i;
        for j in 1..width {
            let diagonal = distance[(i - 1) * width + j - 1] + usize::from(r[i - 1] != h[j - 1]);
            let up = distance[(i - 1) * width + j] + 1;
            let left = distance[i * width + j - 1] + 1;
            distance[i * width + j] = diagonal.min(up).min(left);
        }
    }
    let d = |i: usize, j: usize| distance[i * width + j];

    let mut middle = Vec::with_capacity(r.len().max(h.len()));
    let (mut i, mut j) = (r.len(), h.len());
    while i > 0 && j > 0 {
        if d(i, j) == d(i - 1, j) + 1 {
            i -= 1;
            middle.push(EditOp::Delete {
                reference: prefix + i,
            });
        } else if j > 1 && d(i, j - 1) + 1 == d(i - 1, j - 1) {
            j -= 1;
            middle.push(EditOp::Insert {
                hypothesis: prefix + j,
            });
        } else {
            i -= 1;
            j -= 1;
            let (reference, hypothesis) = (prefix + i, prefix + j);
            middle.push(if r[i] == h[j] {
                EditOp::Match {
                    reference,
                    hypothesis,
                }
            } else {
                EditOp::Substitute {
                    reference,
                    hypothesis,
                }
            });
        }
    }
    middle.extend((0..i).rev().map(|i| EditOp::Delete {
        reference: prefix + i,
    }));
    middle.extend((0..j).rev().map(|j| EditOp::Insert {
        hypothesis: prefix + j,
    }));

    let mut ops = Vec::with_capacity(prefix + middle.len() + suffix);
    ops.extend((0..prefix).map(|k| EditOp::Match {
        reference: k,
        hypothesis: k,
    }));
    ops.extend(middle.into_iter().rev());
    let (r_end, h_end) = (prefix + r.len(), prefix + h.len());
    ops.extend((0..suffix).map(|k| EditOp::Match {
        reference: r_end + k,
        hypothesis: h_end + k,
    }));
    ops
}

/// Word errors of `hypothesis` against `reference`, both split on whitespace (as jiwer's
/// default WER transform does).
pub fn word_errors(reference: &str, hypothesis: &str) -> ErrorCounts {
    let r: Vec<&str> = scan::split_words(reference).collect();
    let h: Vec<&str> = scan::split_words(hypothesis).collect();
    ErrorCounts::from_alignment(&align(&r, &h), r.len())
}

/// Character errors of `hypothesis` against `reference`, over all characters including spaces,
/// after trimming and collapsing each whitespace run into one space (jiwer's CER transform plus
/// the whitespace collapse its WER transform does).
pub fn char_errors(reference: &str, hypothesis: &str) -> ErrorCounts {
    let chars = |s: &str| -> Vec<char> {
        scan::split_words(s)
            .collect::<Vec<_>>()
            .join(" ")
            .chars()
            .collect()
    };
    let (r, h) = (chars(reference), chars(hypothesis));
    ErrorCounts::from_alignment(&align(&r, &h), r.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(s: usize, d: usize, i: usize, n: usize) -> ErrorCounts {
        ErrorCounts {
            substitutions: s,
            deletions: d,
            insertions: i,
            reference_len: n,
        }
    }

    #[test]
    fn word_error_table() {
        // (reference, hypothesis, S, D, I); ties resolved as jiwer 4.0 resolves them
        let cases = [
            ("the cat sat", "the cat sat", 0, 0, 0),
            ("the cat sat", "the bat sat", 1, 0, 0),
            ("the cat sat", "the sat", 0, 1, 0),
            ("the cat sat", "the cat sat down", 0, 0, 1),
            ("a b", "b c", 2, 0, 0),
            ("a b c", "c", 0, 2, 0),
            ("a", "b c", 1, 0, 1),
            ("a b", "c", 1, 1, 0),
            ("x a b", "a b y", 0, 1, 1),
            ("a b c", "b c c b", 0, 1, 2),
            ("a b c a", "b c c c", 1, 1, 1),
            ("", "hello world", 0, 0, 2),
            ("hello world", "", 0, 2, 0),
            ("", "", 0, 0, 0),
            ("  spaced   out ", "spaced out", 0, 0, 0),
        ];
        for (reference, hypothesis, s, d, i) in cases {
            let n = scan::split_words(reference).count();
            assert_eq!(
                word_errors(reference, hypothesis),
                counts(s, d, i, n),
                "{reference:?} vs {hypothesis:?}"
            );
        }
    }

    #[test]
    fn char_errors_count_spaces_after_collapsing() {
        let c = char_errors("ab  cd", "ab cx ");
        assert_eq!(c, counts(1, 0, 0, 5));
        assert_eq!(char_errors("abc", "abcd"), counts(0, 0, 1, 3));
        assert_eq!(char_errors("kitten", "sitting").errors(), 3);
    }

    #[test]
    fn rates_floor_the_reference_length_at_one() {
        assert_eq!(word_errors("", "two words").rate(), 2.0);
        assert_eq!(word_errors("", "").rate(), 0.0);
        assert!((word_errors("a b c d", "a x c").rate() - 0.5).abs() < 1e-12);
    }

    #[test]
    fn corpus_rate_is_pooled_not_averaged() {
        let total: ErrorCounts = [
            word_errors("a", "b"),
            word_errors("a b c d e f g h i", "a b c d e f g h i"),
        ]
        .into_iter()
        .sum();
        assert_eq!(total, counts(1, 0, 0, 10));
        assert!((total.rate() - 0.1).abs() < 1e-12);
        let mut running = ErrorCounts::default();
        running += word_errors("a", "b");
        running += word_errors("c", "");
        assert_eq!(running, counts(1, 1, 0, 2));
    }

    #[test]
    fn alignment_lists_every_position_once() {
        let ops = align(&['x', 'a', 'b'], &['a', 'b', 'y']);
        assert_eq!(
            ops,
            vec![
                EditOp::Delete { reference: 0 },
                EditOp::Match {
                    reference: 1,
                    hypothesis: 0
                },
                EditOp::Match {
                    reference: 2,
                    hypothesis: 1
                },
                EditOp::Insert { hypothesis: 2 },
            ]
        );
    }
}
