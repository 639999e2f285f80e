//! `whittle sensitivity` (per-layer quantization sensitivity) and `whittle allocate` (exact
//! budgeted bit allocation into a bit map): stage A of two-stage mixed precision
//! (docs/sensitivity.md).

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use whittle::candle::{DType, Device};
use whittle::compress::allocate::{allocate as allocate_bits, best_uniform, AllocationRequest};
use whittle::compress::hessian::{hessian_sensitivity, HessianOptions};
use whittle::compress::sensitivity::LayerSensitivity;
use whittle::compress::sensitivity::{
    check_model, kl_sensitivity, lm_kl_sensitivity, KlOptions, Metric, SensitivityFile, FORMAT,
};
use whittle::model_dir::{ModelFormat, WhisperCheckpoint};
use whittle::models::whisper::{DecodeOptions, Transcriber, Whisper};
use whittle::train::batch::{pseudo_labels, Prompt, TrainExample};
use whittle::train::{build_examples, needs_pseudo_labels, Targets, TrainModel};

use crate::commands::progress_bar;

/// `--metric`.
#[derive(Clone, Copy, ValueEnum)]
enum MetricArg {
    /// KL divergence of the next-token distributions with only the layer quantized.
    Kl,
    /// Hessian trace (Hutchinson, Rademacher probes, Hessian-vector products by central
    /// differences of gradients) x quantization perturbation ‖Q(W) − W‖².
    Hessian,
}

/// `--targets`: the tokens the decoder is teacher-forced on.
#[derive(Clone, Copy, ValueEnum)]
enum TargetsArg {
    /// The float model's greedy transcript.
    PseudoLabel,
    /// The dataset's transcript (every utterance needs one).
    Transcript,
    /// The transcript where there is one, else the pseudo-label.
    TranscriptOrPseudoLabel,
}

impl TargetsArg {
    fn targets(self) -> Targets {
        match self {
            TargetsArg::PseudoLabel => Targets::PseudoLabel,
            TargetsArg::Transcript => Targets::Transcript,
            TargetsArg::TranscriptOrPseudoLabel => Targets::TranscriptOrPseudoLabel,
        }
    }

    fn name(self) -> &'static str {
        match self {
            TargetsArg::PseudoLabel => "pseudo-label",
            TargetsArg::Transcript => "transcript",
            TargetsArg::TranscriptOrPseudoLabel => "transcript-or-pseudo-label",
        }
    }
}

/// `whittle sensitivity MODEL --data D --metric kl -o sens.json`
#[derive(Args)]
pub struct SensitivityArgs {
    /// Float model: Whisper (CTranslate2 or Hugging Face folder), a CTC checkpoint folder
    /// (wav2vec2, HuBERT, Conformer), a GGUF language model or a GPT-2 folder.
    model: PathBuf,
    /// Calibration audio: JSONL manifest or LibriSpeech-layout folder (training data, never a
    /// test set).
    #[arg(long)]
    data: PathBuf,
    /// What to measure.
    #[arg(long, value_enum)]
    metric: MetricArg,
    /// Candidate bit widths (symmetric, 2..=8).
    #[arg(long, value_delimiter = ',', default_value = "2,3,4,5,6,8")]
    candidates: Vec<u8>,
    /// Inputs per f16 scale (a multiple of 32 that divides every layer's input width).
    #[arg(long, default_value_t = 64)]
    group: usize,
    /// Use only the first N utterances.
    #[arg(long)]
    limit: Option<usize>,
    /// Utterances per forward batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Tokens the decoder is teacher-forced on.
    #[arg(long, value_enum, default_value = "pseudo-label")]
    targets: TargetsArg,
    /// Pseudo-label cache (JSONL): reused when given and present, else written to OUTPUT with
    /// extension `labels.jsonl`, afresh.
    #[arg(long)]
    labels: Option<PathBuf>,
    /// `--metric hessian`: most Rademacher probes.
    #[arg(long, default_value_t = 64)]
    probes: usize,
    /// `--metric hessian`: stop when every trace's running mean changes by less than this,
    /// relatively, from one probe to the next.
    #[arg(long, default_value_t = 1e-3)]
    tolerance: f64,
    /// `--metric hessian`: finite-difference step, relative to each matrix's RMS weight.
    #[arg(long, default_value_t = 1e-2)]
    step: f64,
    /// `--metric hessian`: seed of the probes.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Output sensitivity file (`.json`).
    #[arg(long, short)]
    output: PathBuf,
}

pub fn sensitivity(args: SensitivityArgs) -> Result<()> {
    let t0 = Instant::now();
    if args.output.extension().is_none_or(|e| e != "json") {
        bail!("output {} must end in .json", args.output.display());
    }
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if let MetricArg::Hessian = args.metric {
        if args.probes == 0 {
            bail!("--probes must be at least 1");
        }
        if !(args.step > 0.0 && args.step < 1.0) {
            bail!("--step {}: the relative step must be in (0, 1)", args.step);
        }
        if args.tolerance.is_nan() || args.tolerance < 0.0 {
            bail!("--tolerance {} must be at least 0", args.tolerance);
        }
    }
    let candidates = whittle::compress::sensitivity::check_candidates(&args.candidates)?;
    if whittle::checkpoint::gguf::GgufFile::sniff(&args.model) {
        use whittle::checkpoint::gguf::GgufFile;
        use whittle::models::llama::{Llama, LlamaTokenizer};
        let file = GgufFile::read(&args.model)?;
        let tokenizer = LlamaTokenizer::from_gguf(&file)?;
        let (model, _) = Llama::from_gguf(&file, &Device::Cpu)?;
        drop(file);
        return language_model_sensitivity(&args, model, &tokenizer, candidates, t0);
    }
    if whittle::models::gpt2::Gpt2::is_gpt2_folder(&args.model) {
        let (model, tokenizer) = whittle::models::gpt2::Gpt2::open(&args.model, &Device::Cpu)?;
        return language_model_sensitivity(&args, model, &tokenizer, candidates, t0);
    }
    let location = whittle::model_dir::ModelLocation::detect(&args.model)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    if location.format != ModelFormat::Whittle
        && whittle::models::registry::Family::detect(&location)?
            == whittle::models::registry::Family::Ctc
    {
        return ctc_sensitivity(&args, candidates, t0);
    }
    let checkpoint = WhisperCheckpoint::open(&args.model, &Device::Cpu)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    if checkpoint.location.format == ModelFormat::Whittle {
        bail!(
            "{} is already packed; measure the original float model folder",
            args.model.display()
        );
    }
    let mut model = Whisper::load(&checkpoint.store, &checkpoint.config, DType::F32)?;
    check_model(&mut model, &candidates, args.group)?;
    let utterances = utterances(&args)?;
    let targets = args.targets.targets();
    let mut pseudo = HashMap::new();
    if needs_pseudo_labels(targets, &utterances) {
        let cache = match &args.labels {
            Some(path) => path.clone(),
            None => {
                let path = args.output.with_extension("labels.jsonl");
                if path.exists() {
                    std::fs::remove_file(&path)
                        .with_context(|| format!("removing the old {}", path.display()))?;
                }
                path
            }
        };
        let teacher = Transcriber {
            model: model.clone(),
            tokenizer: checkpoint.tokenizer.clone(),
            options: DecodeOptions::default(),
        };
        let bar = progress_bar(utterances.len());
        bar.set_message("float model's transcripts");
        pseudo = pseudo_labels(&teacher, &utterances, &cache, |done, _| {
            bar.set_position(done as u64)
        })?;
        bar.finish_and_clear();
    }
    let examples = build_examples(&utterances, targets, &checkpoint.tokenizer, &pseudo)?;
    let prompt = Prompt {
        tokens: checkpoint
            .tokenizer
            .prompt(checkpoint.config.is_multilingual()),
        eot: checkpoint.tokenizer.eot,
    };
    let bar = progress_bar(0);
    let measured: Measured = match args.metric {
        MetricArg::Kl => {
            let options = kl_options(&args, &candidates);
            bar.set_message("float logits");
            let measured =
                kl_sensitivity(&mut model, &examples, &prompt, &options, kl_progress(&bar))?;
            (Metric::Kl, measured.layers, measured.scored_tokens, None)
        }
        MetricArg::Hessian => {
            measure_hessian(&mut model, &examples, &prompt, &args, &candidates, &bar)?
        }
    };
    bar.finish_and_clear();
    let targets = args.targets.name();
    write_sensitivities(&args, candidates, measured, examples.len(), targets, t0)
}

/// `--data`'s utterances, the first `--limit` of them.
fn utterances(args: &SensitivityArgs) -> Result<Vec<whittle::data::Utterance>> {
    let mut utterances = whittle::data::load_dataset(&args.data)
        .with_context(|| format!("reading {}", args.data.display()))?;
    if let Some(n) = args.limit {
        utterances.truncate(n);
    }
    if utterances.is_empty() {
        bail!("{} has no utterances", args.data.display());
    }
    Ok(utterances)
}

/// The sensitivity file of a measurement on `utterances` inputs teacher-forced on `targets`.
fn sensitivity_file(
    args: &SensitivityArgs,
    candidates: Vec<u8>,
    (metric, layers, scored_tokens, hessian): Measured,
    utterances: usize,
    targets: &str,
    t0: Instant,
) -> SensitivityFile {
    SensitivityFile {
        format: FORMAT.to_string(),
        model: args.model.display().to_string(),
        data: args.data.display().to_string(),
        metric,
        candidates,
        group: args.group,
        utterances,
        targets: targets.to_string(),
        scored_tokens,
        params: layers.iter().map(|l| l.params).sum(),
        float_bytes: layers.iter().map(|l| l.float_bytes).sum(),
        seconds: t0.elapsed().as_secs_f64(),
        threads: rayon::current_num_threads(),
        whittle_version: env!("CARGO_PKG_VERSION").to_string(),
        hessian,
        layers,
    }
}

/// Write the [`sensitivity_file`] of a measurement to `--output` and print it.
fn write_sensitivities(
    args: &SensitivityArgs,
    candidates: Vec<u8>,
    measured: Measured,
    inputs: usize,
    targets: &str,
    t0: Instant,
) -> Result<()> {
    let file = &sensitivity_file(args, candidates, measured, inputs, targets, t0);
    let output = &args.output;
    let json = serde_json::to_string_pretty(file)?;
    whittle::fsutil::write_atomic(output, json.as_bytes())?;
    print_sensitivities(file);
    println!(
        "{}: {} layers x {} candidates on {} utterances ({} scored tokens) in {:.1} s ({} threads)",
        output.display(),
        file.layers.len(),
        file.candidates.len(),
        file.utterances,
        file.scored_tokens,
        file.seconds,
        file.threads
    );
    Ok(())
}

fn kl_options(args: &SensitivityArgs, candidates: &[u8]) -> KlOptions {
    KlOptions {
        candidates: candidates.to_vec(),
        group: args.group,
        batch_size: args.batch_size,
    }
}

/// Progress of the `kl` metric on `bar`.
fn kl_progress(
    bar: &indicatif::ProgressBar,
) -> impl FnMut(&whittle::compress::sensitivity::KlProgress) + '_ {
    |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(format!("{} W{}: KL {:.3e}", p.layer, p.bits, p.kl));
    }
}

/// What a metric measured: the metric, the layers, the scored tokens and the Hessian estimate.
type Measured = (
    Metric,
    Vec<LayerSensitivity>,
    usize,
    Option<whittle::compress::hessian::HessianEstimate>,
);

/// `--metric hessian` on any trainable family, with progress on `bar`.
fn measure_hessian<M: TrainModel>(
    model: &mut M,
    examples: &[TrainExample],
    context: &M::BatchContext,
    args: &SensitivityArgs,
    candidates: &[u8],
    bar: &indicatif::ProgressBar,
) -> Result<Measured> {
    let options = HessianOptions {
        candidates: candidates.to_vec(),
        group: args.group,
        batch_size: args.batch_size,
        max_probes: args.probes,
        tolerance: args.tolerance,
        relative_step: args.step,
        seed: args.seed,
    };
    bar.set_length(args.probes as u64);
    bar.set_message("Hutchinson probes");
    let measured = hessian_sensitivity(model, examples, context, &options, |p| {
        bar.set_position(p.probe as u64);
        bar.set_message(format!(
            "probe {}/{}: largest relative change {:.2e}",
            p.probe, p.max_probes, p.relative_change
        ));
    })?;
    let nonpositive: Vec<&str> = measured
        .layers
        .iter()
        .filter(|l| l.hessian_trace.is_some_and(|t| t <= 0.0))
        .map(|l| l.name.as_str())
        .collect();
    if !nonpositive.is_empty() {
        bar.suspend(|| {
            eprintln!(
                "warning: {} Hessian trace estimates are not positive (the true traces are >= 0; \
                 their estimates are still noisy, so raise --probes): {}",
                nonpositive.len(),
                nonpositive.join(", ")
            )
        });
    }
    Ok((
        Metric::Hessian,
        measured.layers,
        measured.scored_tokens,
        Some(measured.estimate),
    ))
}

/// `sensitivity` of a CTC checkpoint (wav2vec2, HuBERT, Conformer): `--data` is audio (the
/// transcripts are not used: the KL compares frame posteriors, the Hessian is that of the
/// distillation loss on them).
fn ctc_sensitivity(args: &SensitivityArgs, candidates: Vec<u8>, t0: Instant) -> Result<()> {
    use whittle::models::wav2vec2::CtcRecognizer;
    let loaded = whittle::models::registry::open(&args.model, &Device::Cpu, DType::F32)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let Some(recognizer) = loaded.model.as_any().downcast_ref::<CtcRecognizer>() else {
        bail!("{} is not a CTC model", args.model.display());
    };
    let mut model = recognizer.clone();
    drop(loaded);
    let utterances = utterances(args)?;
    let bar = progress_bar(0);
    let measured: Measured = match args.metric {
        MetricArg::Kl => {
            let clips: Vec<Vec<f32>> = utterances
                .iter()
                .map(|u| whittle::train::batch::load_samples(&u.audio, &u.id))
                .collect::<whittle::error::Result<_>>()?;
            bar.set_message("float logits");
            let measured = whittle::compress::sensitivity::ctc_kl_sensitivity(
                &mut model,
                &clips,
                &kl_options(args, &candidates),
                kl_progress(&bar),
            )?;
            (Metric::Kl, measured.layers, measured.scored_tokens, None)
        }
        MetricArg::Hessian => {
            let examples: Vec<TrainExample> =
                utterances.iter().map(TrainExample::audio_only).collect();
            measure_hessian(&mut model, &examples, &(), args, &candidates, &bar)?
        }
    };
    bar.finish_and_clear();
    write_sensitivities(args, candidates, measured, utterances.len(), "frames", t0)
}

/// `sensitivity` of a language model, GGUF Llama or Hugging Face GPT-2 (either metric): `--data` is a `.txt` file (one text per
/// line) or a manifest's transcripts, never a test set's.
fn language_model_sensitivity<M: whittle::models::lm::CausalLm + TrainModel<BatchContext = ()>>(
    args: &SensitivityArgs,
    mut model: M,
    tokenizer: &whittle::models::llama::LlamaTokenizer,
    candidates: Vec<u8>,
    t0: Instant,
) -> Result<()> {
    let mut texts = crate::perplexity_cmd::texts(&args.data)?;
    if let Some(n) = args.limit {
        texts.truncate(n);
    }
    let sequences: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| tokenizer.document(&t.text))
        .collect::<whittle::error::Result<_>>()?;
    let bar = progress_bar(0);
    let measured: Measured = match args.metric {
        MetricArg::Kl => {
            // Each text runs alone: no padding reaches a scored position.
            let options = KlOptions {
                batch_size: 1,
                ..kl_options(args, &candidates)
            };
            bar.set_message("float logits");
            let measured = lm_kl_sensitivity(&mut model, &sequences, &options, kl_progress(&bar))?;
            (Metric::Kl, measured.layers, measured.scored_tokens, None)
        }
        MetricArg::Hessian => {
            let examples: Vec<TrainExample> = texts
                .iter()
                .zip(sequences.iter())
                .filter(|(_, s)| s.len() > 1)
                .map(|(t, s)| TrainExample {
                    augmentation: None,
                    id: t.id.clone(),
                    audio: Default::default(),
                    tokens: s.clone(),
                })
                .collect();
            measure_hessian(&mut model, &examples, &(), args, &candidates, &bar)?
        }
    };
    bar.finish_and_clear();
    write_sensitivities(args, candidates, measured, sequences.len(), "text", t0)
}

/// One line per layer: its KL at each candidate.
fn print_sensitivities(file: &SensitivityFile) {
    let width = file.layers.iter().map(|l| l.name.len()).max().unwrap_or(5);
    let header: String = file
        .candidates
        .iter()
        .map(|b| format!("{:>10}", format!("W{b}")))
        .collect();
    // The Hessian metric also shows the trace; the candidates are then Ω.
    let traces = file.metric == Metric::Hessian;
    let trace_header = if traces {
        format!("{:>11}", "Tr(H)")
    } else {
        String::new()
    };
    println!("{:width$} {:>10}{trace_header}{header}", "layer", "params");
    for l in &file.layers {
        let scores: String = l
            .candidates
            .iter()
            .map(|c| format!("{:>10.3e}", c.score(file.metric).unwrap_or(f64::NAN)))
            .collect();
        let trace = match (traces, l.hessian_trace) {
            (true, Some(t)) => format!("{t:>11.3e}"),
            _ => String::new(),
        };
        println!("{:width$} {:>10}{trace}{scores}", l.name, l.params);
    }
    if let Some(h) = &file.hessian {
        println!(
            "Hessian-vector products: {}, step {} x rms(W); {} probes ({}; last relative change {:.2e}, tolerance {:.0e})",
            h.hessian_vector_products,
            h.relative_step,
            h.probes,
            if h.converged { "converged" } else { "probe limit reached" },
            h.last_relative_change,
            h.tolerance
        );
    }
}

/// `whittle allocate sens.json --budget-bits B -o bitmap.toml`
#[derive(Args)]
pub struct AllocateArgs {
    /// Sensitivity file written by `whittle sensitivity`.
    sensitivity: PathBuf,
    /// Budget: average stored bits per quantized weight, codes and f16 scales counted (4-bit
    /// codes at group 64 are 4.25).
    #[arg(long)]
    budget_bits: f64,
    /// Widths to choose from (default: every candidate in the file).
    #[arg(long, value_delimiter = ',')]
    candidates: Option<Vec<u8>>,
    /// Narrowest width allowed.
    #[arg(long, default_value_t = 2)]
    min_bits: u8,
    /// Output bit map (`.toml`), for `whittle quantize --bit-map`.
    #[arg(long, short)]
    output: PathBuf,
}

pub fn allocate(args: AllocateArgs) -> Result<()> {
    let t0 = Instant::now();
    if args.output.extension().is_none_or(|e| e != "toml") {
        bail!("output {} must end in .toml", args.output.display());
    }
    let sens = SensitivityFile::read(&args.sensitivity)?;
    let allocation = allocate_bits(
        &sens,
        &AllocationRequest {
            budget_bits: args.budget_bits,
            candidates: args.candidates.clone(),
            min_bits: args.min_bits,
        },
    )?;
    let source = args.sensitivity.display().to_string();
    let (toml, _) = allocation.bit_map(&source, &sens)?;
    whittle::fsutil::write_atomic(&args.output, toml.as_bytes())?;
    let metric = allocation.metric.name();
    let width = allocation
        .layers
        .iter()
        .map(|l| l.name.len())
        .max()
        .unwrap_or(5);
    println!(
        "{:width$} {:>10} {:>4} {:>10} {:>12}",
        "layer", "params", "bits", "bytes", metric
    );
    for l in &allocation.layers {
        println!(
            "{:width$} {:>10} {:>4} {:>10} {:>12.4e}",
            l.name, l.params, l.bits, l.bytes, l.score
        );
    }
    println!("bit width: layers (share of weights)");
    for (bits, (layers, params)) in allocation.histogram() {
        println!(
            "  W{bits}: {layers} layers ({:.1}%)",
            100.0 * params as f64 / allocation.params as f64
        );
    }
    let uniform = best_uniform(&sens, &allocation.candidates, allocation.budget_bytes)
        .map_or("no uniform width fits".to_string(), |(bits, score)| {
            format!("uniform W{bits} in the same budget: {score:.4e}")
        });
    println!(
        "{}: budget {} bits/weight ({} bytes), achieved {:.4} bits/weight ({} bytes, {:.2}x smaller than 16-bit); total {metric} {:.4e} ({uniform}); exact: {}, {:.2} s",
        args.output.display(),
        allocation.budget_bits,
        allocation.budget_bytes,
        allocation.average_bits(),
        allocation.bytes,
        sens.float_bytes as f64 / allocation.bytes as f64,
        allocation.score,
        allocation.method,
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}
