//! Subcommand implementations.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use whittle::candle::{DType, Device};
use whittle::eval::{self, UtteranceResult};
use whittle::models::whisper::{
    DecodeOptions, FallbackOptions, FrontEndPadding, LongFormOptions, Transcriber,
};
use whittle::models::{registry, SpeechModel};
use whittle::text::normalize::EnglishNormalizer;
use whittle::text::wer::ErrorCounts;

use crate::subtitles::{self, Format};

/// Decoding options shared by `transcribe` and `eval`.
#[derive(Args, Clone)]
pub struct DecodeArgs {
    /// Beam width; 1 decodes greedily (the reference uses 5 for beam search).
    #[arg(long, default_value_t = 1)]
    beam_size: usize,
    /// Compute dtype.
    #[arg(long, default_value = "f32", value_parser = ["f32", "f16", "bf16"])]
    dtype: String,
    /// Front-end padding: openai-whisper's 30 s of zero audio, or faster-whisper's zero-filled frames.
    #[arg(long, default_value = "openai-whisper", value_parser = ["openai-whisper", "faster-whisper"])]
    padding: String,
    /// Post-training quantization applied in memory after loading.
    #[command(flatten)]
    pub ptq: crate::ptq_cmd::PtqArgs,
    /// Feed the encoder only the frames holding audio (rounded up to even) instead of the 30 s
    /// window, as training batches do (clips under 30 s only).
    #[arg(long)]
    trim: bool,
    /// Whisper's standard decoding with temperature fallback (0.0, 0.2, ..., 1.0; thresholds:
    /// compression ratio 2.4, log-prob -1.0, no-speech 0.6), timestamps, seeking by the last
    /// timestamp and the previous text as prompt. Default in `transcribe`; `eval` decodes
    /// plainly (greedy or beam, temperature 0, no timestamps) unless given this flag.
    #[arg(long, overrides_with = "no_fallback")]
    fallback: bool,
    /// No temperature fallback: `transcribe` still decodes timestamps and seeks, at
    /// temperature 0 only; `eval` decodes plainly (its default).
    #[arg(long, overrides_with = "fallback")]
    no_fallback: bool,
    /// Candidates sampled at each fallback temperature above 0.
    #[arg(long, default_value_t = 5)]
    best_of: usize,
    /// Seed of the fallback sampling (one generator per audio file, so runs are reproducible).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Do not prompt each window with the text decoded before it.
    #[arg(long)]
    no_condition_on_previous_text: bool,
}

impl DecodeArgs {
    /// The standard-decoding settings: `transcribe` always decodes timestamps (with fallback
    /// unless --no-fallback); `eval` only with --fallback.
    fn long_form(&self, transcribe: bool) -> Option<LongFormOptions> {
        let fallback = if transcribe {
            !self.no_fallback
        } else {
            self.fallback
        };
        if !transcribe && !fallback {
            return None;
        }
        let defaults = FallbackOptions::default();
        Some(LongFormOptions {
            fallback: FallbackOptions {
                temperatures: if fallback {
                    defaults.temperatures.clone()
                } else {
                    vec![0.0]
                },
                best_of: self.best_of,
                seed: self.seed,
                ..defaults
            },
            condition_on_previous_text: !self.no_condition_on_previous_text,
            ..Default::default()
        })
    }
}

/// `whittle transcribe MODEL AUDIO...`
#[derive(Args)]
pub struct TranscribeArgs {
    /// Model folder (CTranslate2 or Hugging Face).
    model: PathBuf,
    /// Audio files (wav, flac, mp3, ogg, or 16 kHz s16le .raw).
    #[arg(required = true)]
    audio: Vec<PathBuf>,
    /// Output: txt (one line per file), json (one object per file: text, duration, segments
    /// with start/end/text/avg_logprob/no_speech_prob/temperature/compression_ratio), srt or vtt.
    #[arg(long, default_value = "txt", value_parser = ["txt", "json", "srt", "vtt"])]
    format: String,
    /// Write NAME.FORMAT for each input NAME.EXT into this folder instead of stdout (required
    /// for srt and vtt with several inputs).
    #[arg(long)]
    output_dir: Option<PathBuf>,
    #[command(flatten)]
    decode: DecodeArgs,
}

/// `whittle eval MODEL DATASET`
#[derive(Args)]
pub struct EvalArgs {
    /// Model folder (CTranslate2 or Hugging Face) or .whittle file.
    #[arg(required_unless_present = "compare")]
    model: Option<PathBuf>,
    /// LibriSpeech-layout folder or JSONL manifest.
    #[arg(required_unless_present = "compare")]
    dataset: Option<PathBuf>,
    /// Output folder for utterances.jsonl and summary.json.
    #[arg(long, short, required_unless_present = "compare")]
    out: Option<PathBuf>,
    /// Instead of evaluating: compare two finished evaluations (output folders or their
    /// utterances.jsonl) on the same utterances, B against the baseline A: the matched-pairs
    /// sentence-segment word error test (MAPSSWE, as NIST sctk), the WER difference with a
    /// bootstrap 95% CI, the minimum detectable difference, and a verdict (worse, better,
    /// equivalent within --margin, or inconclusive).
    #[arg(long, num_args = 2, value_names = ["A", "B"], conflicts_with_all = ["model", "dataset", "out"])]
    compare: Option<Vec<PathBuf>>,
    /// With --compare: print one JSON object.
    #[arg(long, requires = "compare")]
    json: bool,
    /// With --compare: equivalence margin X in percent; B is "equivalent" to A when the
    /// difference is not significant and the 95% CI bounds B's relative WER increase by X%.
    #[arg(long, value_name = "X", requires = "compare",
        default_value_t = 100.0 * whittle::text::verdict::DEFAULT_MARGIN)]
    margin: f64,
    /// With --compare: bootstrap resamples (over utterances) for the WER-difference interval.
    #[arg(long = "bootstrap", value_name = "N", requires = "compare",
        default_value_t = whittle::text::bootstrap::DEFAULT_RESAMPLES)]
    bootstrap: usize,
    /// With --compare: seed of the bootstrap resampling.
    #[arg(long, value_name = "SEED", requires = "compare",
        default_value_t = whittle::text::bootstrap::DEFAULT_SEED)]
    bootstrap_seed: u64,
    /// Evaluate only the first N utterances.
    #[arg(long)]
    limit: Option<usize>,
    /// Utterances decoded together (greedy, clips of one 30 s window; longer clips, beam search
    /// and --trim are decoded one at a time). Transcripts equal those of --batch-size 1.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// Stop at the first clip that cannot be read (nothing is written) instead of recording it
    /// in summary.json and going on.
    #[arg(long)]
    strict: bool,
    #[command(flatten)]
    decode: DecodeArgs,
    #[command(flatten)]
    normalizer: NormalizerArgs,
}

/// Where Whisper's British-to-American spelling map comes from.
#[derive(Args, Clone)]
pub struct NormalizerArgs {
    /// Whisper's `english.json` spelling map (default: $WHITTLE_ASSETS/text/english.json, fetched by scripts/setup.sh).
    #[arg(long)]
    spellings: Option<PathBuf>,
    /// Score without the spelling map (results are then not comparable with Whisper's normaliser).
    #[arg(long)]
    no_spellings: bool,
}

/// `whittle inspect MODEL`
#[derive(Args)]
pub struct InspectArgs {
    /// Model folder.
    model: PathBuf,
}

/// `whittle wer --ref A.jsonl --hyp B.jsonl`
#[derive(Args)]
pub struct WerArgs {
    /// References: JSONL with `id` (or `audio`) and `text`.
    #[arg(long = "ref")]
    reference: PathBuf,
    /// Hypotheses: JSONL with `id` (or `audio`) and `text` or `hypothesis` (whittle eval's utterances.jsonl).
    #[arg(long = "hyp")]
    hypothesis: PathBuf,
    /// Print one JSON object (wer, cer, word and character counts) instead of the text line.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    normalizer: NormalizerArgs,
}

fn assets_dir() -> PathBuf {
    std::env::var_os("WHITTLE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(".assets"))
}

impl NormalizerArgs {
    pub(crate) fn load(&self) -> Result<(EnglishNormalizer, Option<PathBuf>)> {
        if self.no_spellings {
            return Ok((EnglishNormalizer::without_spellings(), None));
        }
        let path = self
            .spellings
            .clone()
            .unwrap_or_else(|| assets_dir().join("text/english.json"));
        if !path.is_file() {
            bail!("spelling map {} not found: run scripts/setup.sh, pass --spellings FILE, or --no-spellings", path.display());
        }
        let normalizer = EnglishNormalizer::from_spelling_file(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        Ok((normalizer, Some(path)))
    }
}

fn dtype(name: &str) -> DType {
    match name {
        "f16" => DType::F16,
        "bf16" => DType::BF16,
        _ => DType::F32,
    }
}

impl DecodeArgs {
    /// The options that only Whisper's decoder reads, when set away from their defaults.
    fn whisper_only_options(&self) -> Vec<&'static str> {
        let mut set = Vec::new();
        if self.beam_size != 1 {
            set.push("--beam-size");
        }
        if self.padding != "openai-whisper" {
            set.push("--padding");
        }
        if self.trim {
            set.push("--trim");
        }
        if self.fallback {
            set.push("--fallback");
        }
        set
    }
}

/// Load any model family through the registry, with `decode`'s options applied to Whisper's
/// decoder and its post-training quantization done in memory. Returns the model and a JSON
/// record of what was loaded.
fn load_model(
    model: &Path,
    decode: &DecodeArgs,
    long_form: Option<LongFormOptions>,
) -> Result<(Box<dyn SpeechModel>, serde_json::Value)> {
    let t0 = Instant::now();
    if decode.beam_size == 0 {
        bail!("--beam-size must be at least 1");
    }
    let mut loaded = registry::open(model, &Device::Cpu, dtype(&decode.dtype))
        .with_context(|| format!("loading model {}", model.display()))?;
    let padding = if decode.padding == "faster-whisper" {
        FrontEndPadding::FasterWhisper
    } else {
        FrontEndPadding::OpenaiWhisper
    };
    match loaded.model.as_any_mut().downcast_mut::<Transcriber>() {
        Some(transcriber) => {
            transcriber.options = DecodeOptions {
                beam_size: decode.beam_size,
                padding,
                trim: decode.trim,
                ..Default::default()
            };
        }
        None => {
            let set = decode.whisper_only_options();
            if !set.is_empty() {
                bail!(
                    "{} applies to Whisper models only; {} is a {} model",
                    set.join(", "),
                    model.display(),
                    loaded.model.architecture()
                );
            }
        }
    }
    let quantization = decode.ptq.apply(&mut *loaded.model)?;
    // After quantization: GPTQ calibration reads plain 30 s windows of tokens.
    if let Some(transcriber) = loaded.model.as_any_mut().downcast_mut::<Transcriber>() {
        transcriber.options.long_form = long_form;
    }
    let config = loaded
        .family_header
        .iter()
        .find(|(key, _)| key == whittle::packed_file::keys::CONFIG)
        .map(|(_, value)| value.clone());
    let info = serde_json::json!({
        "path": model.display().to_string(),
        "format": loaded.location.format,
        "architecture": loaded.model.architecture(),
        "weights_bytes": loaded.location.weights_bytes(),
        "parameters": loaded.model.parameter_count(),
        "config": config,
        "load_report": loaded.report,
        "load_seconds": t0.elapsed().as_secs_f64(),
        "dtype": decode.dtype,
        "quantization": quantization,
    });
    Ok((loaded.model, info))
}

/// Peak resident memory of this process (Linux `VmHWM`), `None` where unavailable.
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

pub fn transcribe(args: TranscribeArgs) -> Result<()> {
    let format = Format::parse(&args.format).context("unknown --format")?;
    let outputs: Option<Vec<PathBuf>> = match &args.output_dir {
        Some(dir) => Some(output_paths(dir, &args.audio, format)?),
        None if args.audio.len() > 1 && matches!(format, Format::Srt | Format::Vtt) => {
            bail!("--format {} with several audio files needs --output-dir DIR (one NAME.{} per input)", args.format, format.extension())
        }
        None => None,
    };
    if let Some(dir) = &args.output_dir {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let options = args
        .decode
        .long_form(true)
        .context("transcribe decodes timestamps")?;
    let (model, _) = load_model(&args.model, &args.decode, None)?;
    let Some(transcriber) = model.as_any().downcast_ref::<Transcriber>() else {
        return transcribe_plain(&*model, &args.audio, format, outputs.as_deref());
    };
    let mut failed = 0;
    for (i, path) in args.audio.iter().enumerate() {
        let result = whittle::audio::load_audio(path)
            .map_err(anyhow::Error::from)
            .and_then(|samples| Ok(transcriber.transcribe_long_form(&samples, &options)?))
            .and_then(|t| Ok(subtitles::render(format, path, &t)?));
        match (result, &outputs) {
            (Ok(text), Some(outputs)) => {
                whittle::fsutil::write_atomic(&outputs[i], text.as_bytes())?;
                eprintln!("{} -> {}", path.display(), outputs[i].display());
            }
            (Ok(text), None) => print!("{text}"),
            (Err(e), _) => {
                eprintln!("error: {}: {e:#}", path.display());
                if outputs.is_none() && format == Format::Txt {
                    println!();
                }
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} audio files could not be transcribed",
            args.audio.len()
        );
    }
    Ok(())
}

/// `transcribe` for families without timestamps: one line of text per file.
fn transcribe_plain(
    model: &dyn SpeechModel,
    audio: &[PathBuf],
    format: Format,
    outputs: Option<&[PathBuf]>,
) -> Result<()> {
    if format != Format::Txt {
        bail!(
            "--format {} needs timestamps, which {} models do not give; use --format txt",
            format.extension(),
            model.architecture()
        );
    }
    let mut failed = 0;
    for (i, path) in audio.iter().enumerate() {
        let result = whittle::audio::load_audio(path)
            .map_err(anyhow::Error::from)
            .and_then(|samples| Ok(model.transcribe_batch(&[&samples])?.join(" ")));
        match (result, outputs) {
            (Ok(text), Some(outputs)) => {
                whittle::fsutil::write_atomic(&outputs[i], format!("{text}\n").as_bytes())?;
                eprintln!("{} -> {}", path.display(), outputs[i].display());
            }
            (Ok(text), None) => println!("{text}"),
            (Err(e), _) => {
                eprintln!("error: {}: {e:#}", path.display());
                if outputs.is_none() {
                    println!();
                }
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} audio files could not be transcribed",
            audio.len()
        );
    }
    Ok(())
}

/// `DIR/NAME.EXT` for each input, refusing two inputs with the same name.
fn output_paths(dir: &Path, audio: &[PathBuf], format: Format) -> Result<Vec<PathBuf>> {
    let mut seen = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(audio.len());
    for path in audio {
        let stem = path
            .file_stem()
            .with_context(|| format!("{}: no file name", path.display()))?;
        let target = dir.join(format!("{}.{}", stem.to_string_lossy(), format.extension()));
        if let Some(other) = seen.insert(target.clone(), path.clone()) {
            bail!(
                "{} and {} would both write {}",
                other.display(),
                path.display(),
                target.display()
            );
        }
        out.push(target);
    }
    Ok(out)
}

pub(crate) fn progress_bar(len: usize) -> ProgressBar {
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} ETA {eta} {msg}",
        )
        .expect("valid template"),
    );
    bar
}

pub(crate) fn write_jsonl<T: serde::Serialize>(path: &Path, rows: &[T]) -> Result<()> {
    let mut text = String::new();
    for r in rows {
        text.push_str(&serde_json::to_string(r)?);
        text.push('\n');
    }
    whittle::fsutil::write_atomic(path, text.as_bytes())?;
    Ok(())
}

pub fn eval(args: EvalArgs) -> Result<()> {
    if let Some(pair) = &args.compare {
        let options = whittle::text::CompareOptions {
            bootstrap: whittle::text::BootstrapOptions {
                resamples: args.bootstrap,
                seed: args.bootstrap_seed,
                ..Default::default()
            },
            margin: args.margin / 100.0,
        };
        return crate::compare_cmd::compare(&pair[0], &pair[1], args.json, &options);
    }
    let (Some(model), Some(dataset), Some(out)) = (&args.model, &args.dataset, &args.out) else {
        bail!("eval needs MODEL DATASET --out DIR (or --compare A B)");
    };
    let (normalizer, spellings) = args.normalizer.load()?;
    let mut utterances = whittle::data::load_labelled_dataset(dataset)?;
    if let Some(limit) = args.limit {
        utterances.truncate(limit);
    }
    let options = eval::EvalOptions {
        batch_size: usize::try_from(args.batch_size)?,
        // Clips over the global --max-audio-seconds are recorded as failures.
        max_duration_seconds: whittle::audio::max_audio_seconds(),
        strict: args.strict,
    };
    let long_form = args.decode.long_form(false);
    let (model, model_info) = load_model(model, &args.decode, long_form.clone())?;
    let bar = progress_bar(utterances.len());
    let wall = Instant::now();
    let mut running = (0usize, 0usize);
    let evaluation = eval::evaluate_with(
        &*model,
        &utterances,
        &normalizer,
        &options,
        |_, r: &UtteranceResult| {
            running.0 += r.words.errors();
            running.1 += r.words.reference_len;
            bar.set_message(format!(
                "WER {:.2}%",
                100.0 * running.0 as f64 / running.1.max(1) as f64
            ));
            bar.inc(1);
        },
    )?;
    bar.finish_and_clear();
    let eval::Evaluation {
        results,
        totals,
        failures,
    } = evaluation;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write_jsonl(&out.join("utterances.jsonl"), &results)?;
    // The corpus WER's 95% interval, by the same seeded bootstrap over utterances as --compare.
    let wer_ci = whittle::text::bootstrap::wer_interval(
        &results.iter().map(|r| r.words.errors()).collect::<Vec<_>>(),
        &results
            .iter()
            .map(|r| r.words.reference_len)
            .collect::<Vec<_>>(),
        &Default::default(),
    )
    .ok();
    let summary = serde_json::json!({
        "model": model_info,
        "dataset": dataset.display().to_string(),
        "decode": { "beam_size": args.decode.beam_size, "without_timestamps": long_form.is_none(), "long_form": long_form, "dtype": args.decode.dtype, "padding": args.decode.padding, "trim": args.decode.trim, "batch_size": options.batch_size },
        "wer_ci95": wer_ci.map(|i| serde_json::json!({ "lower": i.lower, "upper": i.upper, "bootstrap": "utterances, 10000 resamples, seed 0" })),
        "looping_utterances": totals.looping_utterances,
        "max_duration_seconds": options.max_duration_seconds,
        "failed": failures.len(),
        "failures": failures,
        "normalizer": { "kind": "whisper-english", "spelling_map": spellings.map(|p| p.display().to_string()) },
        "threads": rayon::current_num_threads(),
        "peak_rss_bytes": peak_rss_bytes(),
        "wall_seconds": wall.elapsed().as_secs_f64(),
        "totals": totals,
        "wer": totals.wer,
        "cer": totals.cer,
        "rtf": totals.rtf,
    });
    whittle::fsutil::write_atomic(
        &out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    println!(
        "{} utterances, {:.1} s audio: WER {:.2}% (95% CI {:.2}-{:.2}%) CER {:.2}% RTF {:.3}, {} looping -> {}",
        totals.utterances,
        totals.audio_seconds,
        100.0 * totals.wer,
        100.0 * wer_ci.map_or(f64::NAN, |i| i.lower),
        100.0 * wer_ci.map_or(f64::NAN, |i| i.upper),
        100.0 * totals.cer,
        totals.rtf,
        totals.looping_utterances,
        out.display()
    );
    if !failures.is_empty() {
        for f in &failures {
            eprintln!("failed: {} ({}): {}", f.id, f.audio, f.reason);
        }
        bail!(
            "{} of {} clips failed and are left out of the scores (listed in {})",
            failures.len(),
            utterances.len(),
            out.join("summary.json").display()
        );
    }
    Ok(())
}

/// `whittle inspect` of a GGUF language model: its configuration, tokenizer and tensors.
fn inspect_gguf(path: &Path) -> Result<()> {
    use whittle::checkpoint::gguf::GgufFile;
    use whittle::models::llama::{LlamaConfig, LlamaTokenizer};
    let file = GgufFile::read(path)?;
    let config = LlamaConfig::from_gguf(&file)?;
    let tokenizer = LlamaTokenizer::from_gguf(&file)?;
    println!(
        "model       {} (GGUF, {} tensors, architecture llama)",
        path.display(),
        file.tensors.len()
    );
    println!(
        "config      {} layers, d {}, FFN {}, {} query / {} key-value heads, vocab {}, context {}, rope base {}",
        config.num_layers,
        config.hidden_size,
        config.intermediate_size,
        config.num_heads,
        config.num_kv_heads,
        config.vocab_size,
        config.context_length,
        config.rope_theta
    );
    println!(
        "tokenizer   byte-level BPE, {} tokens, BOS {:?}, EOS {:?}",
        tokenizer.vocab_size(),
        tokenizer.bos,
        tokenizer.eos
    );
    println!(
        "{:<40} {:>8} {:>16} {:>12}",
        "tensor", "type", "shape", "bytes"
    );
    for t in &file.tensors {
        println!(
            "{:<40} {:>8} {:>16} {:>12}",
            t.name,
            t.ty.name(),
            format!("{:?}", t.shape()),
            t.bytes
        );
    }
    Ok(())
}

pub fn inspect(args: InspectArgs) -> Result<()> {
    if whittle::checkpoint::gguf::GgufFile::sniff(&args.model) {
        return inspect_gguf(&args.model);
    }
    if args.model.extension().is_some_and(|e| e == "whittle") {
        let file = whittle::packed_file::PackedFile::open(&args.model)?;
        println!(
            "model       {} ({} bytes, architecture {})",
            args.model.display(),
            file.file_size(),
            file.architecture()
        );
        // A structurally pruned Whisper records its per-layer shapes in its configuration.
        if let Some(shapes) = file
            .header_field(whittle::packed_file::keys::CONFIG)
            .and_then(|c| c.get("layer_shapes"))
            .and_then(|s| {
                serde_json::from_value::<whittle::models::whisper::LayerShapes>(s.clone()).ok()
            })
        {
            println!(
                "pruned      heads[+cross heads]/FFN units per layer (- = removed): {}",
                shapes.summary()
            );
        }
        // ... and a pruned CTC model its own.
        if let Some(config) = file
            .header_field(whittle::packed_file::keys::CONFIG)
            .filter(|c| c.get("whittle_layer_shapes").is_some())
        {
            use whittle::models::wav2vec2::{CtcLayerShape, Wav2Vec2Config};
            let config = Wav2Vec2Config::from_json(&config.to_string(), &args.model)?;
            let shapes = config.whittle_layer_shapes.unwrap_or_default();
            let listed: Vec<String> = shapes
                .iter()
                .enumerate()
                .map(|(i, s)| format!("{i}: {}", s.summary()))
                .collect();
            println!(
                "pruned      {} per layer (- = removed): {}",
                CtcLayerShape::legend(config.family),
                listed.join(", ")
            );
        }
        println!(
            "{:<60} {:>8} {:>14} {:>16} {:>7} {:>10}",
            "tensor", "kind", "shape", "format", "bits", "bytes"
        );
        for t in file.summaries() {
            println!(
                "{:<60} {:>8} {:>14} {:>16} {:>7.3} {:>10}",
                t.name,
                format!("{:?}", t.kind).to_lowercase(),
                format!("{:?}", t.shape),
                t.format,
                t.bits_per_weight,
                t.bytes
            );
        }
        return Ok(());
    }
    let loaded = registry::open(&args.model, &Device::Cpu, DType::F32)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let checkpoint = &loaded;
    println!("model       {}", args.model.display());
    println!(
        "format      {:?} ({} bytes)",
        loaded.location.format,
        loaded.location.weights_bytes()
    );
    println!("architecture {}", loaded.model.summary());
    println!(
        "{:<60} {:>16} {:>6} {:>10} {:>12}",
        "tensor", "shape", "dtype", "params", "bytes"
    );
    let (mut params, mut bytes) = (0usize, 0usize);
    for name in checkpoint.store.names() {
        let t = checkpoint.store.peek(name).expect("listed");
        let dtype = checkpoint.store.stored_dtype(name).unwrap_or(t.dtype());
        let n = t.elem_count();
        let b = n * dtype.size_in_bytes();
        params += n;
        bytes += b;
        println!(
            "{:<60} {:>16} {:>6} {:>10} {:>12}",
            name,
            format!("{:?}", t.dims()),
            format!("{dtype:?}").to_lowercase(),
            n,
            b
        );
    }
    println!(
        "total: {} tensors, {params} parameters, {bytes} bytes ({:.1} MB); fp32 would be {:.1} MB",
        checkpoint.store.names().count(),
        bytes as f64 / 1e6,
        params as f64 * 4.0 / 1e6
    );
    if !checkpoint.report.unused.is_empty() {
        println!(
            "not used by the model: {}",
            checkpoint.report.unused.join(", ")
        );
    }
    Ok(())
}

#[derive(serde::Deserialize)]
struct WerLine {
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    audio: Option<String>,
    #[serde(default)]
    text: Option<String>,
    #[serde(default)]
    hypothesis: Option<String>,
}

fn read_texts(path: &Path) -> Result<Vec<(String, String)>> {
    let content =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut out = Vec::new();
    for (n, line) in content
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let l: WerLine = serde_json::from_str(line)
            .with_context(|| format!("{} line {}", path.display(), n + 1))?;
        let key =
            l.id.or_else(|| {
                l.audio.as_ref().and_then(|a| {
                    Path::new(a)
                        .file_stem()
                        .map(|s| s.to_string_lossy().into_owned())
                })
            })
            .with_context(|| format!("{} line {}: needs `id` or `audio`", path.display(), n + 1))?;
        let text = l.hypothesis.or(l.text).with_context(|| {
            format!(
                "{} line {}: needs `text` or `hypothesis`",
                path.display(),
                n + 1
            )
        })?;
        out.push((key, text));
    }
    Ok(out)
}

pub fn wer(args: WerArgs) -> Result<()> {
    let (normalizer, _) = args.normalizer.load()?;
    let refs = read_texts(&args.reference)?;
    let hyps: std::collections::HashMap<String, String> =
        read_texts(&args.hypothesis)?.into_iter().collect();
    let (mut words, mut chars) = (ErrorCounts::default(), ErrorCounts::default());
    for (id, r) in &refs {
        let h = hyps.get(id).with_context(|| {
            format!(
                "utterance `{id}` of {} has no hypothesis in {}",
                args.reference.display(),
                args.hypothesis.display()
            )
        })?;
        let (_, _, w, c) = eval::score(&normalizer, r, h);
        words += w;
        chars += c;
    }
    if args.json {
        let summary = serde_json::json!({
            "utterances": refs.len(),
            "wer": words.rate(),
            "cer": chars.rate(),
            "words": words,
            "chars": chars,
        });
        println!("{summary}");
        return Ok(());
    }
    println!(
        "{} utterances: WER {:.2}% ({}/{})  CER {:.2}% ({}/{})",
        refs.len(),
        100.0 * words.rate(),
        words.errors(),
        words.reference_len,
        100.0 * chars.rate(),
        chars.errors(),
        chars.reference_len
    );
    Ok(())
}
