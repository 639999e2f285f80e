//! From documents to candidate utterances, and the fixed partition of sentences into
//! train / dev / test pools.
//!
//! Every sentence is segmented and normalised ([`crate::normalize`]); one whose estimated
//! duration (words / [`WORDS_PER_SECOND`]) falls within the utterance range becomes one candidate,
//! one that is too long is cut at clause pauses into pieces that fit, and one that is too short is
//! dropped. The estimate is checked later against the synthesized audio.
//!
//! A sentence's [`Partition`] is a function of its normalised text alone (SHA-256, per mille
//! buckets), so the same sentence lands in the same pool wherever it occurs and whatever corpus is
//! built: train and test can never share a sentence. All pieces of a long sentence follow the
//! sentence.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::normalize::{normalize_sentence, split_long_sentence, split_sentences};
use crate::text::Document;

/// Speaking rate assumed when estimating a sentence's duration (TTS voices at normal speed read
/// about 2.7-3.3 words per second; the lower end keeps estimates of long sentences safe).
pub const WORDS_PER_SECOND: f64 = 2.7;

/// A disjoint pool of sentences.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Partition {
    /// 80 % of sentences.
    Train,
    /// 5 %.
    Dev,
    /// 7.5 %.
    TestClean,
    /// 7.5 %.
    TestOther,
}

impl Partition {
    /// All partitions.
    pub const ALL: [Partition; 4] = [
        Partition::Train,
        Partition::Dev,
        Partition::TestClean,
        Partition::TestOther,
    ];

    /// The partition a sentence (its normalised transcript) belongs to.
    pub fn of(transcript: &str) -> Partition {
        let digest = Sha256::digest(transcript.as_bytes());
        let mut word = [0u8; 8];
        word.copy_from_slice(&digest[..8]);
        match u64::from_be_bytes(word) % 1000 {
            0..800 => Partition::Train,
            800..850 => Partition::Dev,
            850..925 => Partition::TestClean,
            _ => Partition::TestOther,
        }
    }

    /// `train`, `dev`, `test-clean`, `test-other`.
    pub fn name(self) -> &'static str {
        match self {
            Partition::Train => "train",
            Partition::Dev => "dev",
            Partition::TestClean => "test-clean",
            Partition::TestOther => "test-other",
        }
    }

    /// Parses a name from [`Partition::name`].
    pub fn from_name(name: &str) -> Option<Partition> {
        Partition::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// A speakable piece of text: one sentence, or one clause-aligned piece of a long sentence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    /// Where it comes from: `document/chapter/paragraph/sentence`, plus `.piece` when cut.
    pub source: String,
    /// The document's book number (LibriSpeech chapter ids are `book * 1000 + chapter`).
    pub book_number: u32,
    /// Chapter number within the document.
    pub chapter: u32,
    /// What the TTS engine reads.
    pub spoken: String,
    /// The transcript (LibriSpeech style).
    pub transcript: String,
    /// Number of words in the transcript.
    pub words: usize,
    /// The partition of the whole sentence.
    pub partition: Partition,
}

impl Candidate {
    /// Estimated duration at normal speed.
    pub fn estimated_s(&self) -> f64 {
        self.words as f64 / WORDS_PER_SECOND
    }

    /// LibriSpeech-style numeric chapter id.
    pub fn chapter_id(&self) -> u32 {
        self.book_number * 1000 + self.chapter
    }
}

/// Word-count bounds for an utterance whose estimated duration lies in `min_s..=max_s`.
pub fn word_bounds(min_s: f64, max_s: f64) -> (usize, usize) {
    let min_words = (min_s * WORDS_PER_SECOND).ceil() as usize;
    let max_words = (max_s * WORDS_PER_SECOND).floor() as usize;
    (min_words.max(1), max_words.max(min_words.max(1)))
}

/// All candidate utterances of the documents, in reading order, with estimated durations within
/// `min_s..=max_s`. Repeated transcripts are kept once (the first occurrence).
pub fn candidates(documents: &[Document], min_s: f64, max_s: f64) -> Vec<Candidate> {
    let (min_words, max_words) = word_bounds(min_s, max_s);
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::new();
    for doc in documents {
        for chapter in &doc.chapters {
            for (p, paragraph) in chapter.paragraphs.iter().enumerate() {
                for (s, sentence) in split_sentences(paragraph).iter().enumerate() {
                    let Some(whole) = normalize_sentence(sentence) else {
                        continue;
                    };
                    let words = whole.word_count();
                    if words < min_words {
                        continue;
                    }
                    let partition = Partition::of(&whole.transcript);
                    let source = format!("{}/{}/{}/{}", doc.id, chapter.number, p + 1, s + 1);
                    let pieces = if words <= max_words {
                        vec![whole]
                    } else {
                        match split_long_sentence(sentence, min_words, max_words) {
                            Some(pieces) => pieces,
                            None => continue,
                        }
                    };
                    let cut = pieces.len() > 1;
                    for (k, piece) in pieces.into_iter().enumerate() {
                        if !seen.insert(piece.transcript.clone()) {
                            continue;
                        }
                        out.push(Candidate {
                            source: if cut {
                                format!("{source}.{}", k + 1)
                            } else {
                                source.clone()
                            },
                            book_number: doc.book_number,
                            chapter: chapter.number,
                            words: piece.word_count(),
                            spoken: piece.spoken,
                            transcript: piece.transcript,
                            partition,
                        });
                    }
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::text::document_from_lines;

    #[test]
    fn partition_is_a_function_of_text_with_expected_shares() {
        let mut counts = std::collections::HashMap::new();
        for i in 0..20_000 {
            *counts
                .entry(Partition::of(&format!("SENTENCE NUMBER {i}")))
                .or_insert(0) += 1;
        }
        let share = |p| counts[&p] as f64 / 20_000.0;
        assert!((share(Partition::Train) - 0.8).abs() < 0.02);
        assert!((share(Partition::Dev) - 0.05).abs() < 0.01);
        assert!((share(Partition::TestClean) - 0.075).abs() < 0.01);
        assert!((share(Partition::TestOther) - 0.075).abs() < 0.01);
        assert_eq!(Partition::of("HELLO THERE"), Partition::of("HELLO THERE"));
    }

    #[test]
    fn builds_candidates_within_length_bounds() {
        let long: String = (0..30)
            .map(|i| format!("word{} ", ["a", "b", "c"][i % 3]).replace(char::is_numeric, ""))
            .collect::<Vec<_>>()
            .chunks(10)
            .map(|c| c.concat().trim().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        let text = format!(
            "CHAPTER 1\n\nShort one. This sentence has exactly enough words to count.\n\n{long}.\n\nThis sentence has exactly enough words to count."
        );
        let doc = document_from_lines("t", 7, text.lines());
        let got = candidates(&[doc], 2.0, 5.0); // 6..=13 words
        let sources: Vec<&str> = got.iter().map(|c| c.source.as_str()).collect();
        // "Short one." is too short; the 30-word sentence is cut at its commas; the repeat is dropped.
        assert_eq!(sources, ["t/1/1/2", "t/1/2/1.1", "t/1/2/1.2", "t/1/2/1.3"]);
        assert!(got.iter().all(|c| (6..=13).contains(&c.words)));
        assert_eq!(got[0].chapter_id(), 7001);
        assert_eq!(got[1].partition, got[2].partition);
    }
}
