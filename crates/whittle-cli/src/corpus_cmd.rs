//! `whittle corpus`: synthesise LibriSpeech-layout speech corpora from text, and build the
//! standard synthetic splits. The work is done by the `whittle-corpus` crate; this module parses
//! options and shows progress.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use whittle_corpus::engine::EnginePaths;
use whittle_corpus::splits::{build_standard_splits, resolve_voices, SplitSizes, SPLIT_NAMES};
use whittle_corpus::synth::{synthesize_corpus, Outcome, Progress, SynthConfig, SynthReport};
use whittle_corpus::text::{TextSource, JANEAUSTENR_DATA_DIR};
use whittle_corpus::utterances::Partition;

/// Arguments of `whittle corpus`.
#[derive(Args)]
pub struct CorpusArgs {
    #[command(subcommand)]
    pub command: CorpusCommand,
}

/// The `whittle corpus` subcommands.
#[derive(Subcommand)]
pub enum CorpusCommand {
    /// Synthesise a LibriSpeech-layout corpus (FLAC, trans.txt, manifest.jsonl, corpus.json).
    Synth(SynthArgs),
    /// Build the standard splits synth-train, synth-dev, synth-test-clean and synth-test-other.
    Splits(SplitsArgs),
    /// The written text (case and punctuation) of a built corpus's utterances, one per line in
    /// manifest order, from each utterance's `source`: held-out sentences for language-model
    /// perplexity.
    Texts(TextsArgs),
}

/// Arguments of `whittle corpus texts`.
#[derive(Args)]
pub struct TextsArgs {
    /// The corpus's manifest.jsonl (its corpus.json beside it names the text and durations).
    manifest: PathBuf,
    /// Output text file.
    #[arg(long, short)]
    output: PathBuf,
    /// Directory of the janeaustenr R database (Debian r-cran-janeaustenr).
    #[arg(long, value_name = "DIR", default_value = JANEAUSTENR_DATA_DIR)]
    austen_dir: PathBuf,
}

/// Where the TTS programs are (default: found on PATH).
#[derive(Args)]
pub struct EngineArgs {
    /// espeak-ng program (also runs mbrola voices).
    #[arg(long, value_name = "PATH")]
    espeak_ng: Option<PathBuf>,
    /// flite program.
    #[arg(long, value_name = "PATH")]
    flite: Option<PathBuf>,
    /// festival's text2wave program.
    #[arg(long, value_name = "PATH")]
    text2wave: Option<PathBuf>,
    /// festival program (used to list its voices).
    #[arg(long, value_name = "PATH")]
    festival: Option<PathBuf>,
    /// pico2wave program.
    #[arg(long, value_name = "PATH")]
    pico2wave: Option<PathBuf>,
    /// Directory of mbrola voice databases.
    #[arg(long, value_name = "DIR")]
    mbrola_voices: Option<PathBuf>,
}

impl EngineArgs {
    fn paths(&self) -> EnginePaths {
        let mut paths = EnginePaths::default();
        let set = |slot: &mut PathBuf, value: &Option<PathBuf>| {
            if let Some(v) = value {
                *slot = v.clone();
            }
        };
        set(&mut paths.espeak_ng, &self.espeak_ng);
        set(&mut paths.flite, &self.flite);
        set(&mut paths.text2wave, &self.text2wave);
        set(&mut paths.festival, &self.festival);
        set(&mut paths.pico2wave, &self.pico2wave);
        set(&mut paths.mbrola_voices, &self.mbrola_voices);
        paths
    }
}

/// Arguments of `whittle corpus synth`.
#[derive(Args)]
pub struct SynthArgs {
    /// Text: `austen`, `austen:emma,persuasion`, `austen-except:sensesensibility`, or a UTF-8 text file.
    #[arg(long, value_name = "SRC")]
    text: String,
    /// Voices: a set (`A`, `clean`, `other`, `dev-other`) or comma-separated `engine:voice` specs
    /// such as `flite:slt,espeak-ng:en-gb-scotland+f2,festival:slt-hts`.
    #[arg(long, value_name = "SET", default_value = "A")]
    voices: String,
    /// Hours of audio to produce.
    #[arg(long)]
    hours: f64,
    /// Seed for every random choice (sentences, voices, speed, pitch, augmentation).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output directory (created; an interrupted run in it resumes).
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Augmentation: `none`, `other` (synth-test-other's: noise 12-24 dB, reverb on half), or key=value pairs such as
    /// `noise=white+pink+babble,snr=10:20,noise-prob=1,reverb=0.5,rt60=0.2:0.6`.
    #[arg(long, value_name = "SPEC", default_value = "none")]
    augment: String,
    /// Sentence pool: `all`, `train`, `dev`, `test-clean` or `test-other`.
    #[arg(long, default_value = "all")]
    sentences: String,
    /// Shortest utterance kept, in seconds.
    #[arg(long, default_value_t = 2.0)]
    min_seconds: f64,
    /// Longest utterance kept, in seconds.
    #[arg(long, default_value_t = 20.0)]
    max_seconds: f64,
    /// Parallel synthesis jobs (default: one per core).
    #[arg(long, default_value_t = 0)]
    jobs: usize,
    /// Directory of the janeaustenr R database (Debian r-cran-janeaustenr).
    #[arg(long, value_name = "DIR", default_value = JANEAUSTENR_DATA_DIR)]
    austen_dir: PathBuf,
    #[command(flatten)]
    engines: EngineArgs,
}

/// Arguments of `whittle corpus splits`.
#[derive(Args)]
pub struct SplitsArgs {
    /// Root directory; each split goes to `<out>/<split>/`.
    #[arg(long, value_name = "DIR", default_value = ".assets/data")]
    out: PathBuf,
    /// Hours of synth-train.
    #[arg(long, default_value_t = SplitSizes::default().train)]
    train_hours: f64,
    /// Hours of synth-dev.
    #[arg(long, default_value_t = SplitSizes::default().dev)]
    dev_hours: f64,
    /// Hours of synth-test-clean.
    #[arg(long, default_value_t = SplitSizes::default().test_clean)]
    test_clean_hours: f64,
    /// Hours of synth-test-other.
    #[arg(long, default_value_t = SplitSizes::default().test_other)]
    test_other_hours: f64,
    /// Hours of synth-dev-other (dev sentences, held-out voices: the selection set).
    #[arg(long, default_value_t = SplitSizes::default().dev_other)]
    dev_other_hours: f64,
    /// Base seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Build only these splits (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    only: Option<Vec<String>>,
    /// Parallel synthesis jobs (default: one per core).
    #[arg(long, default_value_t = 0)]
    jobs: usize,
    /// Directory of the janeaustenr R database (Debian r-cran-janeaustenr).
    #[arg(long, value_name = "DIR", default_value = JANEAUSTENR_DATA_DIR)]
    austen_dir: PathBuf,
    #[command(flatten)]
    engines: EngineArgs,
}

/// Runs `whittle corpus`.
pub fn run(args: CorpusArgs) -> Result<()> {
    match args.command {
        CorpusCommand::Synth(a) => synth(a),
        CorpusCommand::Splits(a) => splits(a),
        CorpusCommand::Texts(a) => texts(a),
    }
}

/// `whittle corpus texts`: rebuild the corpus's candidate sentences and write the spoken text
/// of each manifest line's `source`.
fn texts(args: TextsArgs) -> Result<()> {
    let dir = args.manifest.parent().unwrap_or(std::path::Path::new("."));
    let corpus_json = dir.join("corpus.json");
    let corpus: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(&corpus_json)
            .with_context(|| format!("reading {}", corpus_json.display()))?,
    )
    .with_context(|| format!("{} is not JSON", corpus_json.display()))?;
    let config = &corpus["config"];
    let spec = config["text"]
        .as_str()
        .with_context(|| format!("{}: no config.text", corpus_json.display()))?;
    let bounds = config["duration_s"]
        .as_array()
        .and_then(|d| Some((d.first()?.as_f64()?, d.get(1)?.as_f64()?)))
        .with_context(|| format!("{}: no config.duration_s", corpus_json.display()))?;
    let spec = spec.strip_prefix("file:").unwrap_or(spec);
    let documents = TextSource::parse(spec, &args.austen_dir)?.load()?;
    let spoken: std::collections::HashMap<String, String> =
        whittle_corpus::utterances::candidates(&documents, bounds.0, bounds.1)
            .into_iter()
            .map(|c| (c.source, c.spoken))
            .collect();
    let manifest = std::fs::read_to_string(&args.manifest)
        .with_context(|| format!("reading {}", args.manifest.display()))?;
    let mut out = String::new();
    for (i, line) in manifest
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let entry: serde_json::Value = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", args.manifest.display(), i + 1))?;
        let source = entry["source"]
            .as_str()
            .with_context(|| format!("{} line {}: no `source`", args.manifest.display(), i + 1))?;
        let text = spoken.get(source).with_context(|| {
            format!(
                "{} line {}: source `{source}` is not a sentence of {spec}",
                args.manifest.display(),
                i + 1
            )
        })?;
        out.push_str(text);
        out.push('\n');
    }
    whittle::fsutil::write_atomic(&args.output, out.as_bytes())?;
    println!("{} texts -> {}", out.lines().count(), args.output.display());
    Ok(())
}

/// An indicatif bar driven by the library's progress callbacks.
struct Bar {
    bar: ProgressBar,
}

impl Bar {
    fn new() -> Self {
        let bar = ProgressBar::new(0);
        let style = ProgressStyle::with_template(
            "{msg:>24} [{elapsed_precise}] {wide_bar} {pos}/{len} utterances ({eta} left)",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(250));
        Bar { bar }
    }
}

impl Progress for Bar {
    fn phase(&self, name: &str, total: usize) {
        self.bar.set_length(total as u64);
        self.bar.set_position(0);
        self.bar.reset_eta();
        self.bar.set_message(name.to_string());
    }

    fn utterance(&self, _id: &str, _outcome: Outcome, _duration_s: f64) {
        self.bar.inc(1);
    }
}

fn print_report(name: &str, report: &SynthReport) {
    println!(
        "{name}: {} utterances, {:.3} h ({} synthesised, {} reused, {} dropped as out of range) in {:.1} s",
        report.utterances,
        report.hours,
        report.synthesized,
        report.reused,
        report.dropped_out_of_range,
        report.elapsed_s
    );
}

fn synth(args: SynthArgs) -> Result<()> {
    let paths = args.engines.paths();
    let text = TextSource::parse(&args.text, &args.austen_dir)?;
    let voices = resolve_voices(&args.voices, &paths)?;
    let partition = match args.sentences.as_str() {
        "all" => None,
        name => match Partition::from_name(name) {
            Some(p) => Some(p),
            None => bail!("--sentences {name:?}: use all, train, dev, test-clean or test-other"),
        },
    };
    let name = args.out.file_name().map_or_else(
        || "corpus".to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let mut config = SynthConfig::new(&name, text, voices, args.hours, args.seed, args.out.clone());
    config.partition = partition;
    config.augment = args.augment.parse()?;
    config.duration_s = (args.min_seconds, args.max_seconds);
    config.jobs = args.jobs;
    config.engine_paths = paths;
    let bar = Bar::new();
    let report = synthesize_corpus(&config, &bar, None)
        .with_context(|| format!("building corpus in {}", args.out.display()))?;
    bar.bar.finish_and_clear();
    print_report(&name, &report);
    Ok(())
}

fn splits(args: SplitsArgs) -> Result<()> {
    let sizes = SplitSizes {
        train: args.train_hours,
        dev: args.dev_hours,
        test_clean: args.test_clean_hours,
        test_other: args.test_other_hours,
        dev_other: args.dev_other_hours,
    };
    let bar = Bar::new();
    let reports = build_standard_splits(
        &args.out,
        sizes,
        args.seed,
        &args.austen_dir,
        &args.engines.paths(),
        args.jobs,
        args.only.as_deref(),
        &bar,
    )
    .with_context(|| {
        format!(
            "building the standard splits ({}) in {}",
            SPLIT_NAMES.join(", "),
            args.out.display()
        )
    })?;
    bar.bar.finish_and_clear();
    for (name, report) in &reports {
        print_report(name, report);
    }
    println!(
        "leak check list: {}",
        args.out.join("leak-check.txt").display()
    );
    let check = whittle_corpus::split_check::read_splits_check(&args.out)?;
    for split in &check.splits {
        println!(
            "{:<18} {:>5} utterances {:>7.3} h {:>7} words, voices {}",
            split.name,
            split.utterances,
            split.hours,
            split.words,
            split.voices.join(" ")
        );
    }
    let path = args.out.join("splits.json");
    if !check.passed() {
        bail!(
            "the splits check failed ({}): {}",
            path.display(),
            check.problems.join("; ")
        );
    }
    println!("splits check passed: test voices and sentences disjoint from train/dev, each test split >= {} words ({})", check.min_test_words, path.display());
    Ok(())
}
