//! Where transcription time goes, f32 against in-memory packed models side by side: encoder
//! and decoder seconds and tokens per model. The models take turns clip by clip, so load from
//! other processes falls on all of them alike.
//!
//! `cargo run --release -p whittle --example profile_whisper -- MODEL MANIFEST [BITS:GROUP...]`
//! e.g. `... whisper-tiny.en real-15.jsonl 4:64` compares f32 with W4 g64 (round-to-nearest, as
//! `whittle eval --quantize 4 --group 64`). Runs the first 30 s window of each clip, greedy,
//! openai-whisper padding.

use std::path::PathBuf;
use std::time::Instant;

use whittle::candle::{DType, Device, Tensor};
use whittle::compress::bitmap::{BitMap, LayerFormat};
use whittle::compress::ptq::{quantize_linears, PtqMethod};
use whittle::model_dir::WhisperCheckpoint;
use whittle::models::whisper::decode::WINDOW_FRAMES;
use whittle::models::whisper::{DecodeOptions, Transcriber};

struct Timing {
    name: String,
    transcriber: Transcriber,
    encoder_s: f64,
    decoder_s: f64,
    tokens: usize,
}

fn main() -> whittle::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model_dir = PathBuf::from(&args[0]);
    let manifest = PathBuf::from(&args[1]);
    let mut specs = vec![None];
    for spec in &args[2..] {
        let (bits, group) = spec.split_once(':').unwrap_or((spec, ""));
        specs.push(Some(LayerFormat::uniform(
            bits.parse().expect("BITS is an integer"),
            group.parse().ok(),
        )));
    }
    let mut runs = Vec::new();
    for spec in specs {
        let (mut model, tokenizer, _) =
            WhisperCheckpoint::open(&model_dir, &Device::Cpu)?.build(DType::F32)?;
        let name = match spec {
            Some(format) => {
                quantize_linears(&mut model, &BitMap::uniform(format), PtqMethod::Rtn, None)?;
                format.label()
            }
            None => "f32".to_string(),
        };
        runs.push(Timing {
            name,
            transcriber: Transcriber {
                model,
                tokenizer,
                options: DecodeOptions::default(),
            },
            encoder_s: 0.0,
            decoder_s: 0.0,
            tokens: 0,
        });
    }
    let n_mels = runs[0].transcriber.model.config.num_mel_bins;
    for utterance in whittle::data::load_dataset(&manifest)? {
        let samples = whittle::audio::decode::load_audio(&utterance.audio)
            .map_err(|e| whittle::Error::config("audio", e.to_string()))?;
        let mel =
            whittle::audio::mel::log_mel_spectrogram(&samples, n_mels).window(0, WINDOW_FRAMES);
        let mel = Tensor::from_vec(mel.data, (1, n_mels, WINDOW_FRAMES), &Device::Cpu)?;
        for run in &mut runs {
            let t = Instant::now();
            let encoded = run.transcriber.model.encoder.forward(&mel)?;
            run.encoder_s += t.elapsed().as_secs_f64();
            let t = Instant::now();
            run.tokens += run.transcriber.greedy(&encoded)?.len() + 1;
            run.decoder_s += t.elapsed().as_secs_f64();
        }
    }
    for run in &runs {
        println!(
            "{:>10}: encoder {:.2} s, decoder {:.2} s ({} tokens, {:.2} ms/token), total {:.2} s",
            run.name,
            run.encoder_s,
            run.decoder_s,
            run.tokens,
            run.decoder_s * 1e3 / run.tokens as f64,
            run.encoder_s + run.decoder_s
        );
    }
    Ok(())
}
