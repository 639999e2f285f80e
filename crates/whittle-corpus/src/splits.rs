//! Named voice sets and the standard synthetic splits.
//!
//! | split | sentences | voices | augmentation |
//! |---|---|---|---|
//! | `synth-train` | train pool, novels other than *Sense and Sensibility* | set `A` | none |
//! | `synth-dev` | dev pool, same novels | set `A` | none |
//! | `synth-dev-other` | dev pool, same novels | set `dev-other` (held out) | none |
//! | `synth-test-clean` | test-clean pool, all six novels | set `clean` (held out) | none |
//! | `synth-test-other` | test-other pool, all six novels | set `other` (held out) | noise 12-24 dB, reverb on half |
//!
//! `synth-dev-other` is the selection set for training runs: its voices are in no other split, so
//! it measures what a held-out evaluation measures (a compressed model that adapts to the training
//! voices scores better on `synth-dev` and worse on unseen voices). It is built last, so adding it
//! left the seeds, and therefore the audio, of the other four splits unchanged.
//!
//! The pools are disjoint by construction ([`Partition`]); *Sense and Sensibility* chapter 1 is in
//! none of them and is written to `leak-check.txt` instead. Optional voices (mbrola, pico) join a
//! set only when installed; the rest of a set is required.

use std::path::{Path, PathBuf};

use crate::augment::AugmentConfig;
use crate::engine::{installed_voices, EnginePaths, Engines, Voice};
use crate::error::{CorpusError, Result};
use crate::normalize::{normalize_sentence, split_sentences};
use crate::synth::{synthesize_corpus, write_atomically, Progress, SynthConfig, SynthReport};
use crate::text::{leak_check_paragraphs, Novel, TextSource};
use crate::utterances::Partition;

/// Voice set `A` (training and dev): espeak-ng accents and variants, flite's kal/kal16/awb and
/// festival's diphone voices; mbrola `us2` when installed.
pub const VOICE_SET_A: (&[&str], &[&str]) = (
    &[
        "espeak-ng:en-us+m3",
        "espeak-ng:en-us+f2",
        "espeak-ng:en-gb+m1",
        "espeak-ng:en-gb+f3",
        "espeak-ng:en-gb-x-rp+m4",
        "espeak-ng:en-029+m2",
        "espeak-ng:en-gb-x-gbclan+f4",
        "flite:kal",
        "flite:kal16",
        "flite:awb",
        "festival:kal",
        "festival:ked",
    ],
    &["mbrola:us2"],
);

/// Voice set `clean` (test-clean): the most natural voices, none of them in set `A`.
pub const VOICE_SET_CLEAN: (&[&str], &[&str]) = (
    &["festival:slt-hts", "flite:slt", "flite:rms"],
    &["pico:en-US", "pico:en-GB"],
);

/// Voice set `other` (test-other): the held-out natural voices of set `clean` and the two most
/// intelligible held-out espeak-ng voices, none of them in set `A`. (Until issue 10 this set was six
/// robotic espeak-ng voices under 10-20 dB noise, on which float tiny.en scored 81-91 % WER, mostly
/// repetition loops: too hard to measure a compressed model against.)
pub const VOICE_SET_OTHER: (&[&str], &[&str]) = (
    &[
        "festival:slt-hts",
        "flite:slt",
        "flite:rms",
        "espeak-ng:en-us+klatt",
        "espeak-ng:en-gb+m7",
    ],
    &["pico:en-US", "pico:en-GB"],
);

/// Voice set `dev-other` (synth-dev-other): the eight most intelligible espeak-ng voices (float
/// tiny.en 16-29 % WER on a pilot of dev sentences) whose variant is in neither set `A` nor set
/// `other` and is not a klatt variant (set `other` holds `en-us+klatt`), so every speaker is new.
pub const VOICE_SET_DEV_OTHER: (&[&str], &[&str]) = (
    &[
        "espeak-ng:en-us+m6",
        "espeak-ng:en-us+m5",
        "espeak-ng:en-us+robert",
        "espeak-ng:en-us+Michael",
        "espeak-ng:en-gb+Andy",
        "espeak-ng:en-gb+steph",
        "espeak-ng:en-gb+Alex",
        "espeak-ng:en-gb+edward",
    ],
    &[],
);

/// Resolves `--voices`: a set name (`A`, `clean`, `other`, `dev-other`) or comma-separated voice
/// specs. Optional voices of a set are kept only when installed.
pub fn resolve_voices(spec: &str, paths: &EnginePaths) -> Result<Vec<Voice>> {
    let set = match spec {
        "A" | "a" => Some(VOICE_SET_A),
        "clean" => Some(VOICE_SET_CLEAN),
        "other" => Some(VOICE_SET_OTHER),
        "dev-other" => Some(VOICE_SET_DEV_OTHER),
        _ => None,
    };
    let parse = |specs: &[&str]| {
        specs
            .iter()
            .map(|s| s.parse::<Voice>())
            .collect::<Result<Vec<_>>>()
    };
    match set {
        Some((required, optional)) => {
            let mut voices = parse(required)?;
            voices.extend(installed_voices(paths, &parse(optional)?));
            Ok(voices)
        }
        None => {
            let voices: Vec<Voice> = spec
                .split(',')
                .map(|s| s.trim().parse())
                .collect::<Result<_>>()?;
            let mut unique = voices.clone();
            unique.sort();
            unique.dedup();
            if unique.len() != voices.len() {
                return Err(CorpusError::BadVoice {
                    spec: spec.into(),
                    reason: "a voice is listed twice".into(),
                });
            }
            Ok(voices)
        }
    }
}

/// Sizes of the standard splits in hours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SplitSizes {
    /// `synth-train`.
    pub train: f64,
    /// `synth-dev`.
    pub dev: f64,
    /// `synth-test-clean`.
    pub test_clean: f64,
    /// `synth-test-other`.
    pub test_other: f64,
    /// `synth-dev-other`.
    pub dev_other: f64,
}

impl Default for SplitSizes {
    /// 2 h train, 15 min for each dev split, 40 min for each test split: at about 10,500 words an
    /// hour, over [`crate::split_check::MIN_TEST_WORDS`] reference words each.
    fn default() -> Self {
        SplitSizes {
            train: 2.0,
            dev: 0.25,
            test_clean: 2.0 / 3.0,
            test_other: 2.0 / 3.0,
            dev_other: 0.25,
        }
    }
}

/// The standard split names, in build order (each split's seed stream follows its position, so a
/// new split goes last).
pub const SPLIT_NAMES: [&str; 5] = [
    "synth-train",
    "synth-dev",
    "synth-test-clean",
    "synth-test-other",
    "synth-dev-other",
];

/// The configurations of the standard splits under `root` (`root/<split>/`).
pub fn standard_splits(
    root: &Path,
    sizes: SplitSizes,
    seed: u64,
    austen_dir: &Path,
    paths: &EnginePaths,
) -> Result<Vec<SynthConfig>> {
    let training_novels: Vec<Novel> = Novel::ALL
        .into_iter()
        .filter(|&n| n != Novel::SenseSensibility)
        .collect();
    let text_train = TextSource::Austen {
        data_dir: austen_dir.to_path_buf(),
        novels: training_novels,
    };
    let text_all = TextSource::Austen {
        data_dir: austen_dir.to_path_buf(),
        novels: Novel::ALL.to_vec(),
    };
    let specs = [
        (
            "synth-train",
            Partition::Train,
            &text_train,
            "A",
            sizes.train,
            false,
        ),
        (
            "synth-dev",
            Partition::Dev,
            &text_train,
            "A",
            sizes.dev,
            false,
        ),
        (
            "synth-test-clean",
            Partition::TestClean,
            &text_all,
            "clean",
            sizes.test_clean,
            false,
        ),
        (
            "synth-test-other",
            Partition::TestOther,
            &text_all,
            "other",
            sizes.test_other,
            true,
        ),
        (
            "synth-dev-other",
            Partition::Dev,
            &text_train,
            "dev-other",
            sizes.dev_other,
            false,
        ),
    ];
    specs
        .into_iter()
        .enumerate()
        .map(|(i, (name, partition, text, voices, hours, noisy))| {
            let mut config = SynthConfig::new(
                name,
                text.clone(),
                resolve_voices(voices, paths)?,
                hours,
                // Each split has its own stream, so changing one split's size leaves the others alone.
                seed.wrapping_add(i as u64 * 1_000_003),
                root.join(name),
            );
            config.partition = Some(partition);
            config.engine_paths = paths.clone();
            if noisy {
                config.augment = AugmentConfig::test_other();
            }
            Ok(config)
        })
        .collect()
}

/// The normalised sentences of *Sense and Sensibility* chapter 1, one per line.
pub fn leak_check_transcripts(austen_dir: &Path) -> Result<Vec<String>> {
    Ok(leak_check_paragraphs(austen_dir)?
        .iter()
        .flat_map(|p| split_sentences(p))
        .filter_map(|s| normalize_sentence(&s))
        .map(|n| n.transcript)
        .collect())
}

/// Builds the standard splits (or those named in `only`) under `root`, writes
/// `root/leak-check.txt`, and checks every split under `root` into `root/splits.json`
/// ([`crate::split_check`]). Each split resumes if it was interrupted.
#[allow(clippy::too_many_arguments)]
pub fn build_standard_splits(
    root: &Path,
    sizes: SplitSizes,
    seed: u64,
    austen_dir: &Path,
    paths: &EnginePaths,
    jobs: usize,
    only: Option<&[String]>,
    progress: &dyn Progress,
) -> Result<Vec<(String, SynthReport)>> {
    if let Some(only) = only {
        if let Some(unknown) = only.iter().find(|n| !SPLIT_NAMES.contains(&n.as_str())) {
            return Err(CorpusError::Config(format!(
                "unknown split {unknown:?} (known: {})",
                SPLIT_NAMES.join(", ")
            )));
        }
    }
    let configs = standard_splits(root, sizes, seed, austen_dir, paths)?;
    // Check every engine before the first split starts, so a missing one fails fast.
    let all_voices: Vec<Voice> = configs.iter().flat_map(|c| c.voices.clone()).collect();
    Engines::probe(paths, &all_voices)?;
    std::fs::create_dir_all(root).map_err(|source| CorpusError::Io {
        path: root.to_path_buf(),
        source,
    })?;
    let leak_transcripts = leak_check_transcripts(austen_dir)?;
    let leak: String = leak_transcripts.iter().map(|t| format!("{t}\n")).collect();
    write_atomically(&root.join("leak-check.txt"), leak.as_bytes())?;
    let mut reports = Vec::new();
    for mut config in configs {
        if only.is_some_and(|only| !only.contains(&config.name)) {
            continue;
        }
        config.jobs = jobs;
        progress.phase(&format!("split {}", config.name), 0);
        let report = synthesize_corpus(&config, progress, None)?;
        reports.push((config.name.clone(), report));
    }
    let check = crate::split_check::check_splits(root, &leak_transcripts)?;
    crate::split_check::write_splits_check(root, &check)?;
    for problem in &check.problems {
        tracing::warn!("splits check: {problem}");
    }
    Ok(reports)
}

/// The default root of the standard splits inside a checkout.
pub fn default_splits_root() -> PathBuf {
    PathBuf::from(".assets/data")
}
