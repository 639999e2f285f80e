//! `whittle nbest` (Whisper's beam-search N-best lists of a dataset) and `whittle rescore`
//! (reranking them with a GGUF language model, the weight tuned on dev; see
//! `whittle::rescore`).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use whittle::candle::{DType, Device};
use whittle::models::registry;
use whittle::models::whisper::Transcriber;
use whittle::rescore::{choose, lm_scores, results, tune_weight, NBestUtterance};

use crate::commands::{progress_bar, write_jsonl, NormalizerArgs};

/// `whittle nbest MODEL DATASET -o nbest.jsonl`
#[derive(Args)]
pub struct NBestArgs {
    /// Whisper model folder or .whittle file.
    model: PathBuf,
    /// JSONL manifest or LibriSpeech-layout folder with transcripts (clips of at most 30 s).
    dataset: PathBuf,
    /// Beam width, and so the N of the lists.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=64))]
    beam_size: u64,
    /// Only the first N utterances.
    #[arg(long)]
    limit: Option<usize>,
    /// Output JSONL, one utterance per line.
    #[arg(long, short)]
    output: PathBuf,
}

pub fn nbest(args: NBestArgs) -> Result<()> {
    let t0 = Instant::now();
    let mut utterances = whittle::data::load_labelled_dataset(&args.dataset)?;
    if let Some(limit) = args.limit {
        utterances.truncate(limit);
    }
    let mut loaded = registry::open(&args.model, &Device::Cpu, DType::F32)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let Some(transcriber) = loaded.model.as_any_mut().downcast_mut::<Transcriber>() else {
        bail!(
            "N-best lists come from Whisper's beam search; {} is not a Whisper model",
            args.model.display()
        );
    };
    let bar = progress_bar(utterances.len());
    let mut lists = Vec::with_capacity(utterances.len());
    for u in &utterances {
        let samples = whittle::train::batch::load_samples(&u.audio, &u.id)?;
        let hypotheses = transcriber
            .n_best(&samples, args.beam_size as usize)
            .with_context(|| format!("utterance `{}` ({})", u.id, u.audio.display()))?;
        lists.push(NBestUtterance {
            id: u.id.clone(),
            audio: u.audio.display().to_string(),
            reference: u.text.clone().unwrap_or_default(),
            audio_seconds: samples.len() as f64 / 16_000.0,
            hypotheses,
        });
        bar.inc(1);
    }
    bar.finish_and_clear();
    write_jsonl(&args.output, &lists)?;
    let mean: f64 =
        lists.iter().map(|l| l.hypotheses.len() as f64).sum::<f64>() / lists.len().max(1) as f64;
    println!(
        "{} utterances, {mean:.2} hypotheses each -> {} in {:.1} s",
        lists.len(),
        args.output.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

/// `whittle rescore NBEST --lm LM.gguf (--weight W | --tune DEV) --out DIR`
#[derive(Args)]
pub struct RescoreArgs {
    /// N-best lists from `whittle nbest`.
    nbest: PathBuf,
    /// The language model (GGUF).
    #[arg(long)]
    lm: PathBuf,
    /// LM weight; give it or --tune.
    #[arg(long, conflicts_with = "tune")]
    weight: Option<f64>,
    /// Dev N-best lists: choose the weight in 0, 0.05, ..., 1.5 with the lowest WER on them.
    #[arg(long)]
    tune: Option<PathBuf>,
    /// Hypotheses per LM batch.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Output folder for utterances.jsonl and summary.json (as `whittle eval`'s, so
    /// `whittle eval --compare` reads it).
    #[arg(long, short)]
    out: PathBuf,
    #[command(flatten)]
    normalizer: NormalizerArgs,
    /// Quantize the LM first (rtn or mse).
    #[command(flatten)]
    ptq: crate::ptq_cmd::PtqArgs,
}

fn read_nbest(path: &std::path::Path) -> Result<Vec<NBestUtterance>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            serde_json::from_str(l)
                .with_context(|| format!("{} line {}: not an N-best entry", path.display(), i + 1))
        })
        .collect()
}

pub fn rescore(args: RescoreArgs) -> Result<()> {
    let t0 = Instant::now();
    if args.batch_size == 0 {
        bail!("--batch-size must be at least 1");
    }
    if args.weight.is_none() && args.tune.is_none() {
        bail!("give --weight W or --tune DEV_NBEST");
    }
    let (normalizer, spellings) = args.normalizer.load()?;
    let lists = read_nbest(&args.nbest)?;
    let dev = args.tune.as_deref().map(read_nbest).transpose()?;
    let (model, tokenizer) = crate::perplexity_cmd::open_language_model(&args.lm, &args.ptq)?;
    let packed = Some(crate::perplexity_cmd::matrix_bytes(&model).0).filter(|&b| b > 0);
    let score = |lists: &[NBestUtterance], what: &str| -> Result<Vec<Vec<f64>>> {
        let bar = progress_bar(lists.len());
        bar.set_message(format!("LM scores ({what})"));
        let s = lm_scores(&model, &tokenizer, lists, args.batch_size, |i| {
            bar.set_position(i as u64)
        })?;
        bar.finish_and_clear();
        Ok(s)
    };
    let (weight, dev_wer) = match (&dev, args.weight) {
        (_, Some(w)) => (w, None),
        (Some(dev), None) => {
            let dev_lm = score(dev, "dev")?;
            let grid: Vec<f64> = (0..=30).map(|i| f64::from(i) * 0.05).collect();
            let (w, wer) = tune_weight(dev, &dev_lm, &normalizer, &grid)?;
            let (_, base) = tune_weight(dev, &dev_lm, &normalizer, &[0.0])?;
            println!(
                "dev: LM weight {w:.2} (WER {:.2}% against {:.2}% without the LM)",
                100.0 * wer,
                100.0 * base
            );
            (w, Some((wer, base)))
        }
        (None, None) => unreachable!("checked above"),
    };
    // Weight 0 is plain beam search: no LM score changes the choice.
    let lm = if weight == 0.0 {
        lists
            .iter()
            .map(|l| vec![0.0; l.hypotheses.len()])
            .collect()
    } else {
        score(&lists, "test")?
    };
    let chosen = choose(&lists, &lm, weight);
    let rescored = results(&lists, &chosen, &normalizer);
    let baseline = results(&lists, &choose(&lists, &lm, 0.0), &normalizer);
    let totals = whittle::eval::totals(&rescored, 0.0);
    let base_totals = whittle::eval::totals(&baseline, 0.0);
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    write_jsonl(&args.out.join("utterances.jsonl"), &rescored)?;
    let changed = chosen.iter().filter(|&&k| k != 0).count();
    let summary = serde_json::json!({
        "nbest": args.nbest.display().to_string(),
        "lm": args.lm.display().to_string(),
        "lm_packed_matrix_bytes": packed,
        "weight": weight,
        "tuned_on": args.tune.as_ref().map(|p| p.display().to_string()),
        "dev_wer": dev_wer.map(|(w, _)| w),
        "dev_wer_without_lm": dev_wer.map(|(_, b)| b),
        "wer_without_lm": base_totals.wer,
        "changed_utterances": changed,
        "normalizer": { "kind": "whisper-english", "spelling_map": spellings.map(|p| p.display().to_string()) },
        "totals": totals,
        "wer": totals.wer,
        "seconds": t0.elapsed().as_secs_f64(),
    });
    whittle::fsutil::write_atomic(
        &args.out.join("summary.json"),
        serde_json::to_string_pretty(&summary)?.as_bytes(),
    )?;
    println!(
        "{} utterances: WER {:.2}% with the LM at weight {weight:.2}, {:.2}% without ({} hypotheses changed) -> {}",
        totals.utterances,
        100.0 * totals.wer,
        100.0 * base_totals.wer,
        changed,
        args.out.display()
    );
    Ok(())
}
