//! `whittle perplexity MODEL DATASET`: a Whisper decoder's perplexity on teacher-forced
//! reference transcripts, or a GGUF language model's perplexity on the dataset's transcripts or
//! a text file's lines (see `whittle::perplexity`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use whittle::candle::{DType, Device};
use whittle::checkpoint::gguf::GgufFile;
use whittle::models::llama::{Llama, LlamaTokenizer};
use whittle::models::lm::AnyLm;
use whittle::models::whisper::Transcriber;
use whittle::models::{registry, Layers};
use whittle::perplexity::{Perplexity, ScoredText};

use crate::commands::progress_bar;

/// `whittle perplexity MODEL DATASET [-o scores.json]`
#[derive(Args)]
pub struct PerplexityArgs {
    /// Whisper model folder (CTranslate2 or Hugging Face) or .whittle file, or a GGUF language
    /// model (`.gguf`).
    #[arg(required_unless_present = "compare")]
    model: Option<PathBuf>,
    /// JSONL manifest or LibriSpeech-layout folder (every utterance needs a transcript); for a
    /// language model also a `.txt` file, one text per line.
    #[arg(required_unless_present = "compare")]
    dataset: Option<PathBuf>,
    /// Instead of scoring: compare two score files (`-o` outputs on the same texts), B against
    /// the baseline A: B's relative change of perplexity with a 95 % bootstrap interval over
    /// texts, and a verdict (worse or better when the interval excludes 0, equivalent when it
    /// lies below +--margin, else inconclusive).
    #[arg(long, num_args = 2, value_names = ["A", "B"], conflicts_with_all = ["model", "dataset", "output"])]
    compare: Option<Vec<PathBuf>>,
    /// With --compare: equivalence margin in percent of perplexity.
    #[arg(long, default_value_t = 5.0, requires = "compare")]
    margin: f64,
    /// With --compare: print the comparison as one JSON object (perplexities, texts, tokens,
    /// change and interval in percent, verdict, margin) instead of a sentence.
    #[arg(long, requires = "compare")]
    json: bool,
    /// Score only the first N utterances.
    #[arg(long)]
    limit: Option<usize>,
    /// Utterances per forward batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// Write the totals and every utterance's score (tokens, summed NLL) to this JSON file.
    #[arg(long, short)]
    output: Option<PathBuf>,
    /// Quantize the model first (as `whittle quantize`; a language model takes rtn or mse).
    #[command(flatten)]
    ptq: crate::ptq_cmd::PtqArgs,
}

/// One text's `(id, tokens, nll)` in a score file.
type TextScore = (String, usize, f64);

/// The perplexity and per-text scores of a score file.
fn read_scores(path: &std::path::Path) -> Result<(f64, Vec<TextScore>)> {
    let report: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("{} is not JSON", path.display()))?;
    let texts = report["texts"].as_array().with_context(|| {
        format!(
            "{}: no `texts` (write it with perplexity -o)",
            path.display()
        )
    })?;
    let rows = texts
        .iter()
        .map(|t| {
            Some((
                t["id"].as_str()?.to_string(),
                usize::try_from(t["tokens"].as_u64()?).ok()?,
                t["nll"].as_f64()?,
            ))
        })
        .collect::<Option<Vec<_>>>()
        .with_context(|| format!("{}: a text lacks id, tokens or nll", path.display()))?;
    let ppl = report["perplexity"]
        .as_f64()
        .with_context(|| format!("{}: no perplexity", path.display()))?;
    Ok((ppl, rows))
}

fn compare(a: &std::path::Path, b: &std::path::Path, margin: f64, json: bool) -> Result<()> {
    let ((ppl_a, rows_a), (ppl_b, rows_b)) = (read_scores(a)?, read_scores(b)?);
    if rows_a.len() != rows_b.len() {
        bail!(
            "{} scores {} texts, {} scores {}: not the same texts",
            a.display(),
            rows_a.len(),
            b.display(),
            rows_b.len()
        );
    }
    for (x, y) in rows_a.iter().zip(&rows_b) {
        if x.0 != y.0 || x.1 != y.1 {
            bail!(
                "text `{}` ({} tokens) in {} against `{}` ({} tokens) in {}: not the same texts",
                x.0,
                x.1,
                a.display(),
                y.0,
                y.1,
                b.display()
            );
        }
    }
    let tokens: Vec<usize> = rows_a.iter().map(|r| r.1).collect();
    let nll = |rows: &[TextScore]| rows.iter().map(|r| r.2).collect::<Vec<_>>();
    let change = whittle::text::bootstrap::perplexity_change_interval(
        &nll(&rows_a),
        &nll(&rows_b),
        &tokens,
        &Default::default(),
    )?;
    let m = margin / 100.0;
    let verdict = if change.lower > 0.0 {
        "worse"
    } else if change.upper < 0.0 {
        "better"
    } else if change.upper <= m {
        "equivalent"
    } else {
        "inconclusive"
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "baseline_perplexity": ppl_a,
                "perplexity": ppl_b,
                "texts": tokens.len(),
                "tokens": tokens.iter().sum::<usize>(),
                "change_percent": 100.0 * change.estimate,
                "ci95_percent": [100.0 * change.lower, 100.0 * change.upper],
                "verdict": verdict,
                "margin_percent": margin,
            })
        );
        return Ok(());
    }
    println!(
        "perplexity {ppl_a:.4} -> {ppl_b:.4} over {} texts ({} tokens): {:+.2} % [{:+.2}, {:+.2}] (95 % bootstrap over texts), {verdict} (margin {margin} %)",
        tokens.len(),
        tokens.iter().sum::<usize>(),
        100.0 * change.estimate,
        100.0 * change.lower,
        100.0 * change.upper
    );
    Ok(())
}

pub fn perplexity(args: PerplexityArgs) -> Result<()> {
    let t0 = Instant::now();
    if let Some(pair) = &args.compare {
        return compare(&pair[0], &pair[1], args.margin, args.json);
    }
    let (Some(model), Some(dataset)) = (args.model.clone(), args.dataset.clone()) else {
        bail!("perplexity needs MODEL DATASET (or --compare A B)");
    };
    if let Some(out) = &args.output {
        if out.extension().is_none_or(|e| e != "json") {
            bail!("output {} must end in .json", out.display());
        }
    }
    if GgufFile::sniff(&model)
        || is_packed_language_model(&model)
        || whittle::models::gpt2::Gpt2::is_gpt2_folder(&model)
    {
        return language_model(args, &model, &dataset, t0);
    }
    let mut utterances = whittle::data::load_labelled_dataset(&dataset)?;
    if let Some(limit) = args.limit {
        utterances.truncate(limit);
    }
    if utterances.is_empty() {
        bail!("{} has no utterances to score", dataset.display());
    }
    let mut loaded = registry::open(&model, &Device::Cpu, DType::F32)
        .with_context(|| format!("loading model {}", model.display()))?;
    let quantization = args.ptq.apply(&mut *loaded.model)?;
    let architecture = loaded.model.architecture();
    let Some(transcriber) = loaded.model.as_any_mut().downcast_mut::<Transcriber>() else {
        bail!(
            "perplexity scores a Whisper decoder; {} is a {architecture} model",
            model.display()
        );
    };
    let bar = progress_bar(utterances.len());
    let scores = whittle::perplexity::decoder_perplexity(
        &transcriber.model,
        &transcriber.tokenizer,
        &utterances,
        usize::try_from(args.batch_size)?,
        |done| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    report(&args, &scores, t0, quantization)
}

/// A language model: a GGUF file or a GPT-2 folder, quantized by `ptq` when it asks, or a
/// `.whittle` file from `compress` (which `ptq` may not quantize again).
pub(crate) fn open_language_model(
    path: &std::path::Path,
    ptq: &crate::ptq_cmd::PtqArgs,
) -> Result<(AnyLm, LlamaTokenizer)> {
    let (mut model, tokenizer) = if GgufFile::sniff(path) {
        let file = GgufFile::read(path)?;
        let tokenizer = LlamaTokenizer::from_gguf(&file)?;
        let (model, _) = Llama::from_gguf(&file, &Device::Cpu)?;
        (AnyLm::Llama(model), tokenizer)
    } else if whittle::models::gpt2::Gpt2::is_gpt2_folder(path) {
        let (model, tokenizer) = whittle::models::gpt2::Gpt2::open(path, &Device::Cpu)?;
        (AnyLm::Gpt2(model), tokenizer)
    } else {
        if ptq.bits.is_some() || ptq.bit_map.is_some() {
            bail!(
                "{} is already packed; quantize the model it came from",
                path.display()
            );
        }
        return AnyLm::open_packed(path, &Device::Cpu)
            .with_context(|| format!("loading language model {}", path.display()));
    };
    let embedding = model.embedding_layer();
    ptq.apply_without_audio(&mut model, embedding)?;
    Ok((model, tokenizer))
}

/// `(bytes of the packed matrices, f32 bytes of every matrix)` of `model`.
pub(crate) fn matrix_bytes(model: &dyn Layers) -> (usize, usize) {
    let (mut packed, mut floats) = (0usize, 0usize);
    for layer in model.layers() {
        if let whittle::nn::Weight::Packed(_) = &layer.linear.weight {
            packed += layer.linear.weight.storage_bytes();
        }
        let (r, c) = layer.linear.weight.dims();
        floats += r * c * 4;
    }
    (packed, floats)
}

/// Whether `path` is a `.whittle` file of a language model.
fn is_packed_language_model(path: &std::path::Path) -> bool {
    path.extension().is_some_and(|e| e == "whittle")
        && whittle::packed_file::PackedFile::open(path).is_ok_and(|f| {
            [
                whittle::models::llama::ARCHITECTURE,
                whittle::models::gpt2::ARCHITECTURE,
            ]
            .contains(&f.architecture())
        })
}

/// The texts of `dataset`: a `.txt` file's non-empty lines, else a manifest's transcripts.
pub(crate) fn texts(dataset: &std::path::Path) -> Result<Vec<ScoredText>> {
    if dataset.extension().is_some_and(|e| e == "txt") {
        let text = std::fs::read_to_string(dataset)
            .with_context(|| format!("reading {}", dataset.display()))?;
        return Ok(text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
            .map(|(i, l)| ScoredText {
                id: format!("line {}", i + 1),
                text: l.trim().to_string(),
            })
            .collect());
    }
    Ok(whittle::data::load_labelled_dataset(dataset)?
        .into_iter()
        .map(|u| ScoredText {
            id: u.id,
            text: u.text.unwrap_or_default(),
        })
        .collect())
}

fn language_model(
    args: PerplexityArgs,
    model_path: &std::path::Path,
    dataset: &std::path::Path,
    t0: Instant,
) -> Result<()> {
    let mut texts = texts(dataset)?;
    if let Some(limit) = args.limit {
        texts.truncate(limit);
    }
    if texts.is_empty() {
        bail!("{} has no texts to score", dataset.display());
    }
    let (model, tokenizer) = open_language_model(model_path, &args.ptq)?;
    score_language_model(args, &model, &tokenizer, &texts, t0)
}

/// Score `texts` with `model` and report (the packed matrices' size when there are any).
fn score_language_model<M: whittle::models::lm::CausalLm>(
    args: PerplexityArgs,
    model: &M,
    tokenizer: &LlamaTokenizer,
    texts: &[ScoredText],
    t0: Instant,
) -> Result<()> {
    let (packed, floats) = matrix_bytes(model);
    let quantization = if packed > 0 {
        println!(
            "matrices packed into {packed} bytes, {:.2}x smaller than fp32 ({floats} bytes)",
            floats as f64 / packed as f64
        );
        serde_json::json!({ "packed_matrix_bytes": packed, "fp32_matrix_bytes": floats })
    } else {
        serde_json::Value::Null
    };
    let bar = progress_bar(texts.len());
    let scores = whittle::perplexity::lm_perplexity(
        model,
        tokenizer,
        texts,
        usize::try_from(args.batch_size)?,
        |done| bar.set_position(done as u64),
    )?;
    bar.finish_and_clear();
    report(&args, &scores, t0, quantization)
}

fn report(
    args: &PerplexityArgs,
    scores: &Perplexity,
    t0: Instant,
    quantization: serde_json::Value,
) -> Result<()> {
    println!(
        "{} texts, {} tokens: perplexity {:.4} ({:.5} nats/token) in {:.1} s",
        scores.utterances.len(),
        scores.tokens,
        scores.perplexity(),
        scores.nll_per_token(),
        t0.elapsed().as_secs_f64()
    );
    if let Some(out) = &args.output {
        let report = serde_json::json!({
            "model": args.model.as_ref().map(|p| p.display().to_string()),
            "dataset": args.dataset.as_ref().map(|p| p.display().to_string()),
            "quantization": quantization,
            "perplexity": scores.perplexity(),
            "nll_per_token": scores.nll_per_token(),
            "tokens": scores.tokens,
            "nll": scores.nll,
            "texts": scores.utterances,
        });
        whittle::fsutil::write_atomic(out, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(())
}
