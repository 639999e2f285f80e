//! `whittle perplexity MODEL DATASET`: the decoder's perplexity on teacher-forced reference
//! transcripts (see `whittle::perplexity`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use whittle::candle::{DType, Device};
use whittle::models::registry;
use whittle::models::whisper::Transcriber;

use crate::commands::progress_bar;

/// `whittle perplexity MODEL DATASET [-o scores.json]`
#[derive(Args)]
pub struct PerplexityArgs {
    /// Whisper model folder (CTranslate2 or Hugging Face) or .whittle file.
    model: PathBuf,
    /// JSONL manifest or LibriSpeech-layout folder; every utterance needs a transcript.
    dataset: PathBuf,
    /// Score only the first N utterances.
    #[arg(long)]
    limit: Option<usize>,
    /// Utterances per forward batch.
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..))]
    batch_size: u64,
    /// Write the totals and every utterance's score (tokens, summed NLL) to this JSON file.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

pub fn perplexity(args: PerplexityArgs) -> Result<()> {
    let t0 = Instant::now();
    if let Some(out) = &args.output {
        if out.extension().is_none_or(|e| e != "json") {
            bail!("output {} must end in .json", out.display());
        }
    }
    let mut utterances = whittle::data::load_labelled_dataset(&args.dataset)?;
    if let Some(limit) = args.limit {
        utterances.truncate(limit);
    }
    if utterances.is_empty() {
        bail!("{} has no utterances to score", args.dataset.display());
    }
    let mut loaded = registry::open(&args.model, &Device::Cpu, DType::F32)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let architecture = loaded.model.architecture();
    let Some(transcriber) = loaded.model.as_any_mut().downcast_mut::<Transcriber>() else {
        bail!(
            "perplexity scores a Whisper decoder; {} is a {architecture} model",
            args.model.display()
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
    println!(
        "{} utterances, {} tokens: perplexity {:.4} ({:.5} nats/token) in {:.1} s",
        scores.utterances.len(),
        scores.tokens,
        scores.perplexity(),
        scores.nll_per_token(),
        t0.elapsed().as_secs_f64()
    );
    if let Some(out) = &args.output {
        let report = serde_json::json!({
            "model": args.model.display().to_string(),
            "dataset": args.dataset.display().to_string(),
            "perplexity": scores.perplexity(),
            "nll_per_token": scores.nll_per_token(),
            "tokens": scores.tokens,
            "nll": scores.nll,
            "utterances": scores.utterances,
        });
        whittle::fsutil::write_atomic(out, serde_json::to_string_pretty(&report)?.as_bytes())?;
    }
    Ok(())
}
