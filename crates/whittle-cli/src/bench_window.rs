//! `whittle bench window MODEL...`: one 30 s Whisper window at a fixed decoding length, timed for
//! several models in one invocation (interleaved runs), so models that transcribe differently
//! (pruned or quantized ones) are compared on the same work: the encoder on 3000 mel frames,
//! then `--tokens` cached decoder steps on a fixed token sequence.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use whittle::candle::{DType, Device, Tensor};
use whittle::models::registry;
use whittle::models::whisper::{Transcriber, Whisper};

/// `whittle bench window MODEL... [--tokens N] [--runs N]`
#[derive(Args)]
pub struct WindowArgs {
    /// Whisper models (folders or `.whittle` files); ratios are to the first.
    #[arg(required = true)]
    models: Vec<PathBuf>,
    /// Decoder steps after the prompt.
    #[arg(long, default_value_t = 40)]
    tokens: usize,
    /// Timed runs per model.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Untimed runs per model first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Print one JSON object per model.
    #[arg(long)]
    json: bool,
}

/// Encoder and decoder milliseconds of one window.
fn time_window(model: &Whisper, mel: &Tensor, prompt: &[u32], words: &[u32]) -> Result<(f64, f64)> {
    let start = Instant::now();
    let encoded = model.encoder.forward(mel)?;
    let encoder_ms = start.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let mut cache = model.decoder.new_cache(&encoded)?;
    let device = model.device();
    // The prompt at once, then one token per step, as greedy decoding runs.
    let prompt = Tensor::new(prompt, device)?.unsqueeze(0)?;
    model.decoder.last_logits(&prompt, &mut cache)?;
    for &t in words {
        let next = Tensor::new(&[t], device)?.unsqueeze(0)?;
        model.decoder.last_logits(&next, &mut cache)?;
    }
    Ok((encoder_ms, start.elapsed().as_secs_f64() * 1e3))
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

pub fn window(args: WindowArgs) -> Result<()> {
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let mut models = Vec::new();
    for path in &args.models {
        let mut loaded = registry::open(path, &Device::Cpu, DType::F32)
            .with_context(|| format!("loading model {}", path.display()))?;
        let Some(t) = loaded.model.as_any_mut().downcast_mut::<Transcriber>() else {
            bail!("{}: `bench window` times Whisper models", path.display());
        };
        models.push((
            path,
            t.model.clone(),
            t.tokenizer.prompt(t.model.config.is_multilingual()),
        ));
    }
    let first = &models[0].1.config;
    for (path, m, _) in &models[1..] {
        if m.config.num_mel_bins != first.num_mel_bins || m.config.vocab_size != first.vocab_size {
            bail!(
                "{}: a different mel front end or vocabulary than the first model",
                path.display()
            );
        }
    }
    let n_mels = first.num_mel_bins;
    let samples = crate::compress_cmd::synthetic_clip(30.0);
    let mel = whittle::audio::mel::log_mel_spectrogram(&samples, n_mels);
    let window = mel.window(0, whittle::audio::mel::N_FRAMES_30S);
    let mel = Tensor::from_vec(
        window.data,
        (1, n_mels, whittle::audio::mel::N_FRAMES_30S),
        &Device::Cpu,
    )?;
    // A fixed sequence: each model's prompt, then ordinary tokens cycling through the first
    // 500 ids (all of them below Whisper's special tokens).
    let cycle = first.vocab_size.min(500) as u32;
    let words: Vec<u32> = (0..args.tokens as u32).map(|i| (i * 37) % cycle).collect();
    let mut times: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); models.len()];
    for run in 0..args.warmup + args.runs {
        for ((_, model, prompt), (enc, dec)) in models.iter().zip(times.iter_mut()) {
            let (e, d) = time_window(model, &mel, prompt, &words)?;
            if run >= args.warmup {
                enc.push(e);
                dec.push(d);
            }
        }
    }
    let mut baseline = None;
    for ((path, model, _), (enc, dec)) in models.iter().zip(times.iter_mut()) {
        let totals: Vec<f64> = enc.iter().zip(dec.iter()).map(|(e, d)| e + d).collect();
        let (e, d, t) = (median(enc), median(dec), median(&mut totals.clone()));
        let (be, bd, bt) = *baseline.get_or_insert((e, d, t));
        let report = serde_json::json!({
            "model": path.display().to_string(),
            "parameters": model.config.parameter_count(),
            "encoder_ms": e, "decoder_ms": d, "total_ms": t,
            "encoder_ratio": e / be, "decoder_ratio": d / bd, "total_ratio": t / bt,
            "tokens": args.tokens, "runs": args.runs,
            "threads": rayon::current_num_threads(),
            "machine": whittle::machine::Machine::detect(),
        });
        if args.json {
            println!("{report}");
        } else {
            println!(
                "{}: encoder {e:.1} ms ({:.3}x), decoder {} steps {d:.1} ms ({:.3}x), window {t:.1} ms ({:.3}x of the first), {} parameters",
                path.display(),
                e / be,
                args.tokens,
                d / bd,
                t / bt,
                model.config.parameter_count()
            );
        }
    }
    Ok(())
}
