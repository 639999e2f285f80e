//! The check that makes the standard splits trustworthy as test sets, recorded as
//! `<root>/splits.json` beside them.
//!
//! For every split it records utterances, hours, reference words and voices. For every test split
//! (`synth-test-*`) against every training split (`synth-train`, `synth-dev`, `synth-dev-other`),
//! and for the held-out dev split `synth-dev-other` against `synth-train`, it records:
//! - voices shared, by *speaker identity*: flite and festival voices built from the same recorded
//!   person are one speaker (`flite:kal`, `flite:kal16` and `festival:kal` are all `kal`;
//!   `festival:slt-hts` and `flite:slt` are both `slt`), while each espeak-ng accent+variant and
//!   each mbrola or pico voice is its own;
//! - sentences shared, by source sentence (`document/chapter/paragraph/sentence`, pieces of one
//!   sentence counted as that sentence) and by transcript text.
//!
//! It also checks the leak-check sentences (*Sense and Sensibility* chapter 1, which the real
//! LibriVox clips read) against every split, and each test split against a minimum word count
//! ([`MIN_TEST_WORDS`]), so that the matched-pairs test has the power to see a loss.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{CorpusError, IoContext, Result};
use crate::synth::{read_manifest, write_atomically, ManifestEntry};

/// Fewest reference words a test split may have.
pub const MIN_TEST_WORDS: usize = 6000;

/// Format tag of `splits.json`.
pub const SPLITS_CHECK_FORMAT: &str = "whittle-splits-check/1";

/// One split's totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitTotals {
    /// Split name (its folder).
    pub name: String,
    /// Utterances.
    pub utterances: usize,
    /// Reference words (whitespace-separated transcript words).
    pub words: usize,
    /// Hours of audio.
    pub hours: f64,
    /// Voice specifications used.
    pub voices: Vec<String>,
    /// Speaker identities of those voices ([`speaker_identity`]).
    pub speakers: Vec<String>,
}

/// What one test split shares with one training split.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Overlap {
    /// The test split (or the held-out dev split).
    pub test: String,
    /// The training split.
    pub training: String,
    /// Speaker identities in both.
    pub shared_speakers: Vec<String>,
    /// Source sentences in both.
    pub shared_sentences: usize,
    /// Transcripts (whole utterances) in both.
    pub shared_transcripts: usize,
}

/// `splits.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SplitsCheck {
    /// [`SPLITS_CHECK_FORMAT`].
    pub format: String,
    /// Every split found, in name order.
    pub splits: Vec<SplitTotals>,
    /// Every (test, training) pair.
    pub overlaps: Vec<Overlap>,
    /// Leak-check sentences found as a transcript in any split.
    pub leak_check_hits: usize,
    /// [`MIN_TEST_WORDS`].
    pub min_test_words: usize,
    /// Everything that fails, in words; empty when the splits pass.
    pub problems: Vec<String>,
}

impl SplitsCheck {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }
}

/// The recorded person behind a voice: the flite/festival voice name without its variant suffix
/// (`kal16` and `kal` are one speaker, `slt-hts` and `slt` are one), else the whole spec.
pub fn speaker_identity(voice: &str) -> String {
    match voice.split_once(':') {
        Some(("flite" | "festival", name)) => {
            let base = name.split('-').next().unwrap_or(name);
            base.trim_end_matches(|c: char| c.is_ascii_digit())
                .to_string()
        }
        _ => voice.to_string(),
    }
}

fn is_test(name: &str) -> bool {
    name.starts_with("synth-test")
}

fn is_training(name: &str) -> bool {
    name == "synth-train" || name.starts_with("synth-dev")
}

/// The dev split whose voices are held out from training (selection on unseen voices).
const HELD_OUT_DEV: &str = "synth-dev-other";

/// Whether `held_out`'s speakers and sentences must be disjoint from `training`'s: every test split
/// from every training split, and the held-out dev split from the training split (it shares the
/// dev sentence pool with `synth-dev` by design).
fn must_be_disjoint(held_out: &str, training: &str) -> bool {
    (is_test(held_out) && is_training(training))
        || (held_out == HELD_OUT_DEV && training == "synth-train")
}

/// The source sentence of an utterance: its `source` without a `.piece` suffix.
fn sentence_of(entry: &ManifestEntry) -> &str {
    match entry.source.rsplit_once('/') {
        Some((head, last)) => {
            let cut = last
                .find('.')
                .map_or(entry.source.len(), |i| head.len() + 1 + i);
            &entry.source[..cut]
        }
        None => &entry.source,
    }
}

/// Checks the splits found under `root` (every folder holding a `manifest.jsonl` whose name starts
/// with `synth-`) against each other and against `leak_check` transcripts.
pub fn check_splits(root: &Path, leak_check: &[String]) -> Result<SplitsCheck> {
    let mut manifests: BTreeMap<String, Vec<ManifestEntry>> = BTreeMap::new();
    for dir in std::fs::read_dir(root).at(root)? {
        let dir = dir.at(root)?.path();
        let Some(name) = dir.file_name().and_then(|n| n.to_str()).map(str::to_string) else {
            continue;
        };
        if name.starts_with("synth-") && dir.join("manifest.jsonl").is_file() {
            manifests.insert(name, read_manifest(&dir)?);
        }
    }
    if manifests.is_empty() {
        return Err(CorpusError::Config(format!(
            "no synth-* splits with a manifest.jsonl under {}",
            root.display()
        )));
    }
    let mut problems = Vec::new();
    let splits: Vec<SplitTotals> = manifests
        .iter()
        .map(|(name, entries)| {
            let voices: BTreeSet<String> = entries.iter().map(|e| e.voice.clone()).collect();
            let speakers: BTreeSet<String> = voices.iter().map(|v| speaker_identity(v)).collect();
            SplitTotals {
                name: name.clone(),
                utterances: entries.len(),
                words: entries
                    .iter()
                    .map(|e| e.text.split_whitespace().count())
                    .sum(),
                hours: entries.iter().map(|e| e.duration_s).sum::<f64>() / 3600.0,
                voices: voices.into_iter().collect(),
                speakers: speakers.into_iter().collect(),
            }
        })
        .collect();
    for split in splits.iter().filter(|s| is_test(&s.name)) {
        if split.words < MIN_TEST_WORDS {
            problems.push(format!(
                "{} has {} reference words, fewer than {MIN_TEST_WORDS}",
                split.name, split.words
            ));
        }
    }
    let mut overlaps = Vec::new();
    for (test, test_entries) in &manifests {
        let test_split = splits
            .iter()
            .find(|s| &s.name == test)
            .expect("listed above");
        for (training, train_entries) in manifests.iter().filter(|(n, _)| must_be_disjoint(test, n))
        {
            let train_split = splits
                .iter()
                .find(|s| &s.name == training)
                .expect("listed above");
            let shared_speakers: Vec<String> = test_split
                .speakers
                .iter()
                .filter(|s| train_split.speakers.contains(s))
                .cloned()
                .collect();
            let train_sentences: BTreeSet<&str> = train_entries.iter().map(sentence_of).collect();
            let train_texts: BTreeSet<&str> =
                train_entries.iter().map(|e| e.text.as_str()).collect();
            let test_sentences: BTreeSet<&str> = test_entries.iter().map(sentence_of).collect();
            let shared_sentences = test_sentences
                .iter()
                .filter(|s| train_sentences.contains(*s))
                .count();
            let shared_transcripts = test_entries
                .iter()
                .filter(|e| train_texts.contains(e.text.as_str()))
                .count();
            if !shared_speakers.is_empty() {
                problems.push(format!(
                    "{test} shares speakers with {training}: {}",
                    shared_speakers.join(", ")
                ));
            }
            if shared_sentences + shared_transcripts > 0 {
                problems.push(format!(
                    "{test} shares {shared_sentences} sentences and {shared_transcripts} transcripts with {training}"
                ));
            }
            overlaps.push(Overlap {
                test: test.clone(),
                training: training.clone(),
                shared_speakers,
                shared_sentences,
                shared_transcripts,
            });
        }
    }
    let leak: BTreeSet<&str> = leak_check.iter().map(String::as_str).collect();
    let leak_check_hits = manifests
        .values()
        .flatten()
        .filter(|e| leak.contains(e.text.as_str()))
        .count();
    if leak_check_hits > 0 {
        problems.push(format!(
            "{leak_check_hits} utterances read leak-check sentences (Sense and Sensibility chapter 1)"
        ));
    }
    Ok(SplitsCheck {
        format: SPLITS_CHECK_FORMAT.to_string(),
        splits,
        overlaps,
        leak_check_hits,
        min_test_words: MIN_TEST_WORDS,
        problems,
    })
}

/// Writes `check` to `<root>/splits.json`.
pub fn write_splits_check(root: &Path, check: &SplitsCheck) -> Result<()> {
    let path = root.join("splits.json");
    let json = serde_json::to_string_pretty(check).map_err(|err| CorpusError::Manifest {
        path: path.clone(),
        reason: err.to_string(),
    })?;
    write_atomically(&path, format!("{json}\n").as_bytes())
}

/// Reads `<root>/splits.json`.
pub fn read_splits_check(root: &Path) -> Result<SplitsCheck> {
    let path = root.join("splits.json");
    let text = std::fs::read_to_string(&path).at(&path)?;
    serde_json::from_str(&text).map_err(|err| CorpusError::Manifest {
        path,
        reason: err.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speaker_identity_joins_one_persons_voices() {
        assert_eq!(speaker_identity("flite:kal16"), "kal");
        assert_eq!(speaker_identity("festival:kal"), "kal");
        assert_eq!(speaker_identity("festival:slt-hts"), "slt");
        assert_eq!(speaker_identity("flite:slt"), "slt");
        assert_eq!(speaker_identity("flite:rms"), "rms");
        assert_eq!(
            speaker_identity("espeak-ng:en-us+klatt"),
            "espeak-ng:en-us+klatt"
        );
        assert_ne!(
            speaker_identity("espeak-ng:en-us+m3"),
            speaker_identity("espeak-ng:en-us+f2")
        );
    }

    fn entry(id: &str, text: &str, voice: &str, source: &str) -> String {
        serde_json::json!({
            "id": id, "audio": format!("{id}.flac"), "text": text, "duration_s": 3600.0 / 1000.0,
            "voice": voice, "speaker": 1, "chapter": 1, "source": source, "speed": null,
            "pitch_semitones": null, "engine_args": [], "augment": {}, "sha256": "0",
        })
        .to_string()
    }

    fn write_split(root: &Path, name: &str, lines: &[String]) {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("manifest.jsonl"), lines.join("\n") + "\n").unwrap();
    }

    #[test]
    fn finds_shared_speakers_sentences_and_small_test_sets() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_split(
            root,
            "synth-train",
            &[
                entry("1-1-1", "A B C", "flite:kal16", "emma/1/2/3"),
                entry("1-1-2", "D E", "espeak-ng:en-us+m3", "emma/1/2/4.1"),
            ],
        );
        write_split(
            root,
            "synth-test-clean",
            &[
                // Another piece of a training sentence, read by the same person.
                entry("1-1-1", "F G", "festival:kal", "emma/1/2/4.2"),
                entry("1-1-2", "H I J", "flite:slt", "emma/9/9/9"),
            ],
        );
        let leak = vec!["H I J".to_string()];
        let check = check_splits(root, &leak).unwrap();
        assert_eq!(check.splits.len(), 2);
        let test = &check.splits[0];
        assert_eq!(
            (test.name.as_str(), test.words, test.utterances),
            ("synth-test-clean", 5, 2)
        );
        assert_eq!(check.overlaps.len(), 1);
        let o = &check.overlaps[0];
        assert_eq!(o.shared_speakers, vec!["kal".to_string()]);
        assert_eq!((o.shared_sentences, o.shared_transcripts), (1, 0));
        assert_eq!(check.leak_check_hits, 1);
        assert!(!check.passed());
        assert_eq!(check.problems.len(), 4, "{:?}", check.problems);
        assert!(check.problems[0].contains("fewer than 6000"));
    }

    #[test]
    fn disjoint_large_splits_pass_and_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_split(
            root,
            "synth-dev",
            &[entry("1-1-1", "A B", "flite:awb", "emma/1/1/1")],
        );
        let words = vec!["W"; MIN_TEST_WORDS].join(" ");
        write_split(
            root,
            "synth-test-other",
            &[entry("1-1-1", &words, "flite:rms", "emma/2/1/1")],
        );
        let check = check_splits(root, &[]).unwrap();
        assert!(check.passed(), "{:?}", check.problems);
        write_splits_check(root, &check).unwrap();
        assert_eq!(read_splits_check(root).unwrap(), check);
    }

    #[test]
    fn held_out_dev_must_not_share_training_voices_but_may_share_dev_sentences() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_split(
            root,
            "synth-train",
            &[entry("1-1-1", "A B", "espeak-ng:en-us+m3", "emma/1/1/1")],
        );
        write_split(
            root,
            "synth-dev",
            &[entry("1-1-1", "C D", "flite:awb", "emma/5/1/1")],
        );
        write_split(
            root,
            "synth-dev-other",
            &[
                entry("1-1-1", "C D", "espeak-ng:en-us+m6", "emma/5/1/1"),
                entry("1-1-2", "E F", "espeak-ng:en-us+m3", "emma/5/1/2"),
            ],
        );
        let check = check_splits(root, &[]).unwrap();
        assert_eq!(check.problems.len(), 1, "{:?}", check.problems);
        assert!(check.problems[0].contains("synth-dev-other shares speakers with synth-train"));
        // Compared with synth-train only: the shared dev sentence is allowed.
        assert_eq!(check.overlaps.len(), 1);
        assert_eq!(check.overlaps[0].shared_sentences, 0);
    }
}
