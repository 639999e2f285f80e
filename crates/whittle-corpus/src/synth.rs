//! `whittle corpus synth`: a LibriSpeech-layout corpus synthesised from text.
//!
//! # Plan
//! Candidates ([`crate::utterances`]) from the pool asked for are shuffled with the seed into a
//! queue. Queue item `q` draws its voice, speed (x0.85-1.15), pitch (±2 semitones) and
//! augmentation from streams derived from `(seed, q)`, so the plan is the same on every run and
//! every thread count. Its id is LibriSpeech's `<speaker>-<chapter>-<utt>`: the speaker is the
//! voice's 1-based index in the voice list, the chapter `book * 1000 + chapter`, and the utterance
//! number counts that speaker's earlier queue items in that chapter.
//!
//! # Rounds
//! Items are taken from the queue until their estimated duration covers the hours asked for, then
//! synthesised in parallel. Clips whose real duration falls outside the range (2-20 s by default)
//! are dropped; if the kept audio falls short, another round takes more of the queue, sized by the
//! measured ratio of real to estimated duration. Every decision depends only on the audio, so a
//! rerun makes the same rounds.
//!
//! # Output
//! `DIR/<speaker>/<chapter>/<speaker>-<chapter>-<utt>.flac` (16 kHz, 16-bit mono),
//! `DIR/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`, `DIR/manifest.jsonl` (one
//! [`ManifestEntry`] per line, sorted by id) and `DIR/corpus.json` ([`CorpusDescription`]:
//! options, voices, engine versions, totals; no timestamps, so equal runs give equal files).
//!
//! # Resuming
//! Each FLAC is written to a temporary file and renamed into place, so a file under its final name
//! is complete. A rerun with the same options skips every utterance whose FLAC exists and parses
//! (its duration comes from STREAMINFO, its hash from the bytes); `DIR/.synth-config.json` records
//! the options and a rerun with different ones is refused instead of mixing two corpora.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Instant;

use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::augment::{augment, Applied, AugmentConfig};
use crate::engine::{EngineInfo, EnginePaths, Engines, Prosody, Voice};
use crate::error::{CorpusError, IoContext, Result};
use crate::flac::{encode_flac, flac_info, to_i16, SAMPLE_RATE};
use crate::rng::Rng;
use crate::text::TextSource;
use crate::utterances::{candidates, Candidate, Partition, WORDS_PER_SECOND};

/// Format tag written into `corpus.json`.
pub const CORPUS_FORMAT: &str = "whittle-corpus/1";

/// Most rounds of top-up synthesis.
const MAX_ROUNDS: usize = 6;

/// Clips in the babble bank.
const BABBLE_BANK_SIZE: usize = 8;

/// Peak level clean speech is scaled to before augmentation.
const PEAK_LEVEL: f32 = 0.9;

/// Everything that determines a corpus.
#[derive(Debug, Clone)]
pub struct SynthConfig {
    /// Corpus name recorded in `corpus.json` (e.g. `synth-train`).
    pub name: String,
    /// Where the sentences come from.
    pub text: TextSource,
    /// Restrict sentences to one partition; `None` uses every sentence.
    pub partition: Option<Partition>,
    /// The voices utterances are spread over; speaker `k` is `voices[k - 1]`.
    pub voices: Vec<Voice>,
    /// Hours of kept audio to produce.
    pub hours: f64,
    /// Seed of every random choice.
    pub seed: u64,
    /// The corpus directory.
    pub out_dir: PathBuf,
    /// Noise and reverb to apply.
    pub augment: AugmentConfig,
    /// Speed factor range (uniform).
    pub speed_range: (f64, f64),
    /// Pitch shift range in semitones (uniform).
    pub pitch_semitones: (f64, f64),
    /// Accepted utterance duration in seconds.
    pub duration_s: (f64, f64),
    /// Worker threads; 0 means one per core.
    pub jobs: usize,
    /// Where the TTS programs are.
    pub engine_paths: EnginePaths,
}

impl SynthConfig {
    /// A configuration with the standard ranges: speed ±15 %, pitch ±2 semitones, 2-20 s, no
    /// augmentation, all cores, engines on `PATH`.
    pub fn new(
        name: &str,
        text: TextSource,
        voices: Vec<Voice>,
        hours: f64,
        seed: u64,
        out_dir: PathBuf,
    ) -> Self {
        SynthConfig {
            name: name.to_string(),
            text,
            partition: None,
            voices,
            hours,
            seed,
            out_dir,
            augment: AugmentConfig::default(),
            speed_range: (0.85, 1.15),
            pitch_semitones: (-2.0, 2.0),
            duration_s: (2.0, 20.0),
            jobs: 0,
            engine_paths: EnginePaths::default(),
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |reason: &str| Err(CorpusError::Config(reason.to_string()));
        if !(self.hours.is_finite() && self.hours > 0.0 && self.hours <= 10_000.0) {
            return bad("--hours must be a positive number of hours");
        }
        if self.voices.is_empty() {
            return bad("no voices given");
        }
        let (lo, hi) = self.speed_range;
        if !(0.3..=3.0).contains(&lo) || !(lo..=3.0).contains(&hi) {
            return bad("speed range must lie within 0.3-3 and be ordered");
        }
        let (lo, hi) = self.pitch_semitones;
        if !(-12.0..=12.0).contains(&lo) || !(lo..=12.0).contains(&hi) {
            return bad("pitch range must lie within ±12 semitones and be ordered");
        }
        let (lo, hi) = self.duration_s;
        if !(0.5..=60.0).contains(&lo) || !(lo..=60.0).contains(&hi) || hi - lo < 1.0 {
            return bad("utterance duration range must lie within 0.5-60 s and span at least 1 s");
        }
        Ok(())
    }

    /// The options that define the corpus, as recorded in `.synth-config.json` and `corpus.json`.
    pub fn recorded(&self) -> RecordedConfig {
        RecordedConfig {
            name: self.name.clone(),
            text: self.text.describe(),
            partition: self.partition,
            voices: self.voices.iter().map(Voice::spec).collect(),
            hours: self.hours,
            seed: self.seed,
            augment: self.augment.clone(),
            augment_spec: self.augment.to_string(),
            speed_range: self.speed_range,
            pitch_semitones: self.pitch_semitones,
            duration_s: self.duration_s,
            words_per_second_estimate: WORDS_PER_SECOND,
            sample_rate: SAMPLE_RATE,
        }
    }
}

/// The corpus-defining options, serialised.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordedConfig {
    /// Corpus name.
    pub name: String,
    /// Text source description.
    pub text: String,
    /// Sentence partition, if restricted.
    pub partition: Option<Partition>,
    /// Voice specifications, speaker 1 first.
    pub voices: Vec<String>,
    /// Hours asked for.
    pub hours: f64,
    /// The seed.
    pub seed: u64,
    /// Augmentation settings.
    pub augment: AugmentConfig,
    /// The same as an `--augment` string.
    pub augment_spec: String,
    /// Speed factor range.
    pub speed_range: (f64, f64),
    /// Pitch shift range in semitones.
    pub pitch_semitones: (f64, f64),
    /// Accepted utterance durations in seconds.
    pub duration_s: (f64, f64),
    /// Speaking rate used for duration estimates.
    pub words_per_second_estimate: f64,
    /// Output sample rate.
    pub sample_rate: u32,
}

/// One line of `manifest.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ManifestEntry {
    /// `<speaker>-<chapter>-<utt>`.
    pub id: String,
    /// FLAC path relative to the corpus directory.
    pub audio: String,
    /// LibriSpeech-style transcript.
    pub text: String,
    /// Duration in seconds (samples / 16000, rounded to 0.1 ms).
    pub duration_s: f64,
    /// Voice specification (`flite:slt`).
    pub voice: String,
    /// LibriSpeech-style speaker id (1-based index of the voice).
    pub speaker: u32,
    /// LibriSpeech-style chapter id (`book * 1000 + chapter`).
    pub chapter: u32,
    /// `document/chapter/paragraph/sentence[.piece]`.
    pub source: String,
    /// Speed factor, when the engine has a speed control.
    pub speed: Option<f64>,
    /// Pitch shift in semitones, when the engine has a pitch control.
    pub pitch_semitones: Option<f64>,
    /// The exact engine arguments (text and output files shown as `IN` and `OUT`).
    pub engine_args: Vec<String>,
    /// Noise and reverb applied.
    pub augment: Applied,
    /// SHA-256 of the FLAC file.
    pub sha256: String,
}

/// One speaker of the corpus.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpeakerInfo {
    /// Speaker id.
    pub speaker: u32,
    /// Its voice specification.
    pub voice: String,
    /// The Debian package providing the voice.
    pub debian_package: String,
    /// Utterances it speaks in this corpus.
    pub utterances: usize,
}

/// `corpus.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CorpusDescription {
    /// [`CORPUS_FORMAT`].
    pub format: String,
    /// The options that made the corpus.
    pub config: RecordedConfig,
    /// Engines used, with versions.
    pub engines: Vec<EngineInfo>,
    /// Speakers and their voices.
    pub speakers: Vec<SpeakerInfo>,
    /// Number of utterances kept.
    pub utterances: usize,
    /// Hours of audio kept.
    pub hours: f64,
    /// Clips synthesised but dropped for falling outside the duration range.
    pub dropped_out_of_range: usize,
    /// Synthesis rounds run.
    pub rounds: usize,
    /// How sentences are assigned to partitions.
    pub partition_rule: String,
}

/// What a run did.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthReport {
    /// Utterances in the corpus.
    pub utterances: usize,
    /// Hours of audio in the corpus.
    pub hours: f64,
    /// Utterances synthesised in this run.
    pub synthesized: usize,
    /// Utterances reused from an earlier run.
    pub reused: usize,
    /// Clips dropped for their duration.
    pub dropped_out_of_range: usize,
    /// Wall-clock seconds.
    pub elapsed_s: f64,
}

/// What happened to one planned utterance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Synthesised and written now.
    Synthesized,
    /// Found complete from an earlier run.
    Reused,
    /// Synthesised, but its duration fell outside the range.
    Dropped,
}

/// Progress reports from a run; called from worker threads.
pub trait Progress: Sync {
    /// A phase starts with `total` steps (`"babble bank"`, `"round 1"`, ...).
    fn phase(&self, _name: &str, _total: usize) {}
    /// One utterance finished.
    fn utterance(&self, _id: &str, _outcome: Outcome, _duration_s: f64) {}
}

/// Progress that reports nothing.
pub struct NoProgress;

impl Progress for NoProgress {}

/// A planned utterance.
#[derive(Debug, Clone)]
struct Planned {
    id: String,
    rel_dir: String,
    candidate: Candidate,
    voice_index: usize,
    prosody: Prosody,
    augment_seed: u64,
}

/// Builds (or resumes) a corpus. `cancel`, when set, stops the run after the utterances in
/// flight; finished files stay for the next run, which resumes.
pub fn synthesize_corpus(
    config: &SynthConfig,
    progress: &dyn Progress,
    cancel: Option<&AtomicBool>,
) -> Result<SynthReport> {
    let started = Instant::now();
    config.validate()?;
    let pool = candidate_queue(config)?;
    let engines = Engines::probe(&config.engine_paths, &config.voices)?;
    let out = &config.out_dir;
    std::fs::create_dir_all(out).at(out)?;
    check_or_write_config(config)?;

    let work_dir = out.join(".work");
    std::fs::create_dir_all(&work_dir).at(&work_dir)?;
    let pool_threads = if config.jobs == 0 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        config.jobs
    };
    let thread_pool = rayon::ThreadPoolBuilder::new()
        .num_threads(pool_threads)
        .build()
        .map_err(|err| {
            CorpusError::Config(format!("cannot start {pool_threads} worker threads: {err}"))
        })?;

    let babble_bank = if config.augment.needs_babble() {
        progress.phase("babble bank", BABBLE_BANK_SIZE);
        thread_pool.install(|| build_babble_bank(config, &engines, &pool, &work_dir))?
    } else {
        Vec::new()
    };

    let target_s = config.hours * 3600.0;
    let mut counters: HashMap<(usize, u32), u32> = HashMap::new();
    let mut kept: Vec<ManifestEntry> = Vec::new();
    let (mut next, mut rounds, mut kept_s) = (0usize, 0usize, 0.0f64);
    let (mut synthesized, mut reused, mut dropped) = (0usize, 0usize, 0usize);
    let mut ratio = 1.0f64; // real / estimated duration, learned from each round
    let finished = AtomicUsize::new(0);
    while kept_s < target_s && next < pool.len() && rounds < MAX_ROUNDS {
        rounds += 1;
        let deficit = target_s - kept_s;
        let mut batch = Vec::new();
        let mut estimated = 0.0;
        while next < pool.len() && (batch.is_empty() || estimated * ratio < deficit) {
            let planned = plan_item(config, &pool[next], next, &mut counters);
            estimated += planned.candidate.estimated_s() / planned.prosody.speed;
            batch.push(planned);
            next += 1;
        }
        progress.phase(&format!("round {rounds}"), batch.len());
        let abort = AtomicBool::new(false);
        let results: Vec<Result<(Outcome, Option<ManifestEntry>, f64)>> =
            thread_pool.install(|| {
                batch
                    .par_iter()
                    .map(|item| {
                        if abort.load(Ordering::Relaxed)
                            || cancel.is_some_and(|c| c.load(Ordering::Relaxed))
                        {
                            return Err(CorpusError::Cancelled {
                                finished: finished.load(Ordering::Relaxed),
                            });
                        }
                        let result = produce(config, &engines, item, &babble_bank, &work_dir);
                        match &result {
                            Ok((outcome, _, duration)) => {
                                finished.fetch_add(1, Ordering::Relaxed);
                                progress.utterance(&item.id, *outcome, *duration);
                            }
                            Err(_) => abort.store(true, Ordering::Relaxed),
                        }
                        result
                    })
                    .collect()
            });
        // A real error outranks the cancellations it caused.
        let mut done = Vec::with_capacity(results.len());
        let (mut first_error, mut cancelled) = (None, false);
        for result in results {
            match result {
                Ok(value) => done.push(value),
                Err(CorpusError::Cancelled { .. }) => cancelled = true,
                Err(err) => {
                    first_error.get_or_insert(err);
                }
            }
        }
        if let Some(err) = first_error {
            return Err(err);
        }
        if cancelled {
            return Err(CorpusError::Cancelled {
                finished: finished.load(Ordering::Relaxed),
            });
        }
        let mut batch_real = 0.0;
        for (outcome, entry, duration) in done {
            batch_real += duration;
            match outcome {
                Outcome::Synthesized => synthesized += 1,
                Outcome::Reused => reused += 1,
                Outcome::Dropped => dropped += 1,
            }
            if let Some(entry) = entry {
                kept_s += entry.duration_s;
                kept.push(entry);
            }
        }
        if estimated > 0.0 && batch_real > 0.0 {
            ratio = batch_real / estimated;
        }
    }
    if kept.is_empty() {
        return Err(CorpusError::NoSentences {
            source_name: config.text.describe(),
        });
    }
    kept.sort_by(|a, b| a.id.cmp(&b.id));
    write_outputs(config, &engines, &kept, dropped, rounds)?;
    let _ = std::fs::remove_dir_all(&work_dir);
    Ok(SynthReport {
        utterances: kept.len(),
        hours: kept_s / 3600.0,
        synthesized,
        reused,
        dropped_out_of_range: dropped,
        elapsed_s: started.elapsed().as_secs_f64(),
    })
}

/// The candidates a corpus draws from, in the seed's shuffled order: the text's utterances of
/// the right length, restricted to the configured partition.
pub fn candidate_queue(config: &SynthConfig) -> Result<Vec<Candidate>> {
    let documents = config.text.load()?;
    let mut pool: Vec<Candidate> = candidates(&documents, config.duration_s.0, config.duration_s.1)
        .into_iter()
        .filter(|c| config.partition.is_none_or(|p| c.partition == p))
        .collect();
    if pool.is_empty() {
        return Err(CorpusError::NoSentences {
            source_name: config.text.describe(),
        });
    }
    Rng::derive(config.seed, "order", 0).shuffle(&mut pool);
    Ok(pool)
}

fn plan_item(
    config: &SynthConfig,
    candidate: &Candidate,
    index: usize,
    counters: &mut HashMap<(usize, u32), u32>,
) -> Planned {
    let mut rng = Rng::derive(config.seed, "utterance", index as u64);
    let voice_index = rng.below(config.voices.len() as u64) as usize;
    let voice = &config.voices[voice_index];
    let speed = rng.uniform(
        config.speed_range.0,
        config.speed_range.1.max(config.speed_range.0 + 1e-12),
    );
    let pitch = rng.uniform(
        config.pitch_semitones.0,
        config
            .pitch_semitones
            .1
            .max(config.pitch_semitones.0 + 1e-12),
    );
    let augment_seed = rng.next_u64();
    let prosody = Prosody {
        speed: if voice.has_speed_control() {
            round3(speed)
        } else {
            1.0
        },
        pitch_semitones: if voice.has_pitch_control() {
            round3(pitch)
        } else {
            0.0
        },
    };
    let speaker = voice_index as u32 + 1;
    let chapter = candidate.chapter_id();
    let counter = counters.entry((voice_index, chapter)).or_insert(0);
    let id = format!("{speaker}-{chapter}-{:04}", *counter);
    *counter += 1;
    Planned {
        id,
        rel_dir: format!("{speaker}/{chapter}"),
        candidate: candidate.clone(),
        voice_index,
        prosody,
        augment_seed,
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// Synthesises one item, or reuses its finished file.
fn produce(
    config: &SynthConfig,
    engines: &Engines,
    item: &Planned,
    babble_bank: &[Vec<f32>],
    work_dir: &Path,
) -> Result<(Outcome, Option<ManifestEntry>, f64)> {
    let voice = &config.voices[item.voice_index];
    let rel_audio = format!("{}/{}.flac", item.rel_dir, item.id);
    let path = config.out_dir.join(&rel_audio);
    let entry = |duration_s: f64, sha256: String, applied: Applied| ManifestEntry {
        id: item.id.clone(),
        audio: rel_audio.clone(),
        text: item.candidate.transcript.clone(),
        duration_s,
        voice: voice.spec(),
        speaker: item.voice_index as u32 + 1,
        chapter: item.candidate.chapter_id(),
        source: item.candidate.source.clone(),
        speed: voice.has_speed_control().then_some(item.prosody.speed),
        pitch_semitones: voice
            .has_pitch_control()
            .then_some(item.prosody.pitch_semitones),
        engine_args: Engines::arguments(voice, &item.prosody, "IN", "OUT"),
        augment: applied,
        sha256,
    };

    if let Ok(bytes) = std::fs::read(&path) {
        if let Some(info) =
            flac_info(&bytes).filter(|i| i.sample_rate == SAMPLE_RATE && i.total_samples > 0)
        {
            // The augmentation drawn is recomputed (cheaply) from the seed for the manifest.
            let applied = redraw_applied(config, item, info.total_samples as usize, babble_bank);
            let duration = round4(info.duration_s());
            return Ok((
                Outcome::Reused,
                Some(entry(duration, sha256_hex(&bytes), applied)),
                duration,
            ));
        }
    }

    let scratch = tempfile::Builder::new()
        .prefix(&item.id)
        .tempdir_in(work_dir)
        .at(work_dir)?;
    let wave = engines.synthesize(
        voice,
        &item.prosody,
        &item.candidate.spoken,
        &item.id,
        scratch.path(),
    )?;
    let mut samples = whittle_audio::resample_mono(&wave.samples, wave.sample_rate, SAMPLE_RATE)
        .map_err(|source| CorpusError::Resample {
            utterance: item.id.clone(),
            source,
        })?;
    let duration = round4(samples.len() as f64 / f64::from(SAMPLE_RATE));
    if duration < config.duration_s.0 || duration > config.duration_s.1 {
        return Ok((Outcome::Dropped, None, duration));
    }
    scale_peak(&mut samples, PEAK_LEVEL);
    let mut rng = Rng::new(item.augment_seed);
    let applied = if config.augment.is_active() {
        augment(
            &mut samples,
            &config.augment,
            babble_bank,
            SAMPLE_RATE,
            &mut rng,
        )
    } else {
        Applied::default()
    };
    let peak = samples.iter().fold(0f32, |m, s| m.max(s.abs()));
    if peak > 0.99 {
        scale_peak(&mut samples, 0.99);
    }
    let bytes = encode_flac(&to_i16(&samples), &item.id)?;
    let dir = config.out_dir.join(&item.rel_dir);
    std::fs::create_dir_all(&dir).at(&dir)?;
    write_atomically(&path, &bytes)?;
    Ok((
        Outcome::Synthesized,
        Some(entry(duration, sha256_hex(&bytes), applied)),
        duration,
    ))
}

/// The augmentation record for a reused file: the same draws as when it was made.
fn redraw_applied(config: &SynthConfig, item: &Planned, len: usize, bank: &[Vec<f32>]) -> Applied {
    if !config.augment.is_active() {
        return Applied::default();
    }
    // Drawing is cheap next to synthesis; the samples themselves are thrown away.
    let mut scratch = vec![0f32; len.min(SAMPLE_RATE as usize)];
    let mut rng = Rng::new(item.augment_seed);
    augment(&mut scratch, &config.augment, bank, SAMPLE_RATE, &mut rng)
}

fn round4(x: f64) -> f64 {
    (x * 10_000.0).round() / 10_000.0
}

fn scale_peak(samples: &mut [f32], level: f32) {
    let peak = samples.iter().fold(0f32, |m, s| m.max(s.abs()));
    if peak > 0.0 {
        let gain = level / peak;
        samples.iter_mut().for_each(|s| *s *= gain);
    }
}

/// SHA-256 as lower-case hex.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes a file through a temporary sibling and a rename, so the final name only ever holds a
/// complete file.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut temp = tempfile::NamedTempFile::new_in(dir).at(dir)?;
    std::io::Write::write_all(&mut temp, bytes).at(temp.path())?;
    temp.as_file().sync_data().at(path)?;
    // Temporary files are created private; corpus files are meant to be shared.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        temp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o644))
            .at(temp.path())?;
    }
    temp.persist(path).map_err(|err| CorpusError::Io {
        path: path.to_path_buf(),
        source: err.error,
    })?;
    Ok(())
}

fn check_or_write_config(config: &SynthConfig) -> Result<()> {
    let path = config.out_dir.join(".synth-config.json");
    let recorded = config.recorded();
    let json = serde_json::to_string_pretty(&recorded).map_err(|err| CorpusError::Manifest {
        path: path.clone(),
        reason: err.to_string(),
    })?;
    match std::fs::read_to_string(&path) {
        Ok(existing) => {
            let previous: RecordedConfig =
                serde_json::from_str(&existing).map_err(|err| CorpusError::Manifest {
                    path: path.clone(),
                    reason: format!("unreadable ({err}); delete the directory to start over"),
                })?;
            if previous != recorded {
                return Err(CorpusError::Manifest {
                    path,
                    reason: "this directory holds a corpus made with different options; use another --out or delete it".into(),
                });
            }
            Ok(())
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let has_content = std::fs::read_dir(&config.out_dir)
                .at(&config.out_dir)?
                .any(|e| e.is_ok());
            if has_content {
                return Err(CorpusError::Manifest {
                    path: config.out_dir.clone(),
                    reason:
                        "output directory is not empty and was not made by `whittle corpus synth`"
                            .into(),
                });
            }
            write_atomically(&path, json.as_bytes())
        }
        Err(source) => Err(CorpusError::Io { path, source }),
    }
}

fn build_babble_bank(
    config: &SynthConfig,
    engines: &Engines,
    pool: &[Candidate],
    work_dir: &Path,
) -> Result<Vec<Vec<f32>>> {
    // Babble talkers come from the end of the shuffled queue, far from the utterances used.
    let sources: Vec<(usize, &Candidate)> = pool
        .iter()
        .rev()
        .take(BABBLE_BANK_SIZE)
        .enumerate()
        .collect();
    sources
        .par_iter()
        .map(|&(k, candidate)| {
            let mut rng = Rng::derive(config.seed, "babble", k as u64);
            let voice = &config.voices[rng.below(config.voices.len() as u64) as usize];
            let id = format!("babble-{k}");
            let scratch = tempfile::Builder::new()
                .prefix(&id)
                .tempdir_in(work_dir)
                .at(work_dir)?;
            let prosody = Prosody {
                speed: 1.0,
                pitch_semitones: 0.0,
            };
            let wave =
                engines.synthesize(voice, &prosody, &candidate.spoken, &id, scratch.path())?;
            let mut samples =
                whittle_audio::resample_mono(&wave.samples, wave.sample_rate, SAMPLE_RATE)
                    .map_err(|source| CorpusError::Resample {
                        utterance: id,
                        source,
                    })?;
            scale_peak(&mut samples, PEAK_LEVEL);
            Ok(samples)
        })
        .collect()
}

fn write_outputs(
    config: &SynthConfig,
    engines: &Engines,
    kept: &[ManifestEntry],
    dropped: usize,
    rounds: usize,
) -> Result<()> {
    let out = &config.out_dir;
    let json_err = |path: &Path, err: serde_json::Error| CorpusError::Manifest {
        path: path.to_path_buf(),
        reason: err.to_string(),
    };
    // Transcripts per speaker/chapter, sorted by id (kept is sorted).
    let mut by_chapter: BTreeMap<(u32, u32), Vec<&ManifestEntry>> = BTreeMap::new();
    for entry in kept {
        by_chapter
            .entry((entry.speaker, entry.chapter))
            .or_default()
            .push(entry);
    }
    for ((speaker, chapter), entries) in &by_chapter {
        let path = out.join(format!("{speaker}/{chapter}/{speaker}-{chapter}.trans.txt"));
        let text: String = entries
            .iter()
            .map(|e| format!("{} {}\n", e.id, e.text))
            .collect();
        write_atomically(&path, text.as_bytes())?;
    }
    let manifest_path = out.join("manifest.jsonl");
    let mut manifest = String::new();
    for entry in kept {
        manifest.push_str(&serde_json::to_string(entry).map_err(|e| json_err(&manifest_path, e))?);
        manifest.push('\n');
    }
    write_atomically(&manifest_path, manifest.as_bytes())?;

    let speakers = config
        .voices
        .iter()
        .enumerate()
        .map(|(i, voice)| SpeakerInfo {
            speaker: i as u32 + 1,
            voice: voice.spec(),
            debian_package: voice.debian_package(),
            utterances: kept.iter().filter(|e| e.speaker == i as u32 + 1).count(),
        })
        .collect();
    let description = CorpusDescription {
        format: CORPUS_FORMAT.into(),
        config: config.recorded(),
        engines: engines.infos().to_vec(),
        speakers,
        utterances: kept.len(),
        hours: round4(kept.iter().map(|e| e.duration_s).sum::<f64>() / 3600.0),
        dropped_out_of_range: dropped,
        rounds,
        partition_rule: "sha256(normalised sentence) first 8 bytes big-endian mod 1000: train <800, dev <850, test-clean <925, test-other otherwise".into(),
    };
    let path = out.join("corpus.json");
    let json = serde_json::to_string_pretty(&description).map_err(|e| json_err(&path, e))?;
    write_atomically(&path, format!("{json}\n").as_bytes())
}

/// Reads a corpus's `manifest.jsonl`.
pub fn read_manifest(dir: &Path) -> Result<Vec<ManifestEntry>> {
    let path = dir.join("manifest.jsonl");
    let text = std::fs::read_to_string(&path).at(&path)?;
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim().is_empty())
        .map(|(i, line)| {
            serde_json::from_str(line).map_err(|err| CorpusError::Manifest {
                path: path.clone(),
                reason: format!("line {}: {err}", i + 1),
            })
        })
        .collect()
}
