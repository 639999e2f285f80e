//! Where transcription time goes: encoder and decoder seconds, tokens decoded, per clip set.
//!
//! `cargo run --release -p whittle --example profile_whisper -- MODEL MANIFEST [BITS [GROUP]]`
//! (BITS quantizes every linear layer in memory with round-to-nearest, as `whittle eval
//! --quantize`). Runs the first 30 s window of each clip, greedy, with openai-whisper padding.

use std::path::PathBuf;
use std::time::Instant;

use whittle::candle::{DType, Device, Tensor};
use whittle::compress::ptq::{quantize_linears, PtqMethod, UniformSpec};
use whittle::model_dir::WhisperCheckpoint;
use whittle::models::whisper::decode::WINDOW_FRAMES;
use whittle::models::whisper::{DecodeOptions, Transcriber};

fn main() -> whittle::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let model_dir = PathBuf::from(&args[0]);
    let manifest = PathBuf::from(&args[1]);
    let bits: Option<u8> = args.get(2).map(|b| b.parse().expect("BITS is an integer"));
    let group: Option<usize> = args.get(3).map(|g| g.parse().expect("GROUP is an integer"));
    let (mut model, tokenizer, _) =
        WhisperCheckpoint::open(&model_dir, &Device::Cpu)?.build(DType::F32)?;
    if let Some(bits) = bits {
        let spec = UniformSpec {
            bits,
            group,
            method: PtqMethod::Rtn,
        };
        quantize_linears(&mut model, spec)?;
    }
    let transcriber = Transcriber {
        model,
        tokenizer,
        options: DecodeOptions::default(),
    };
    let n_mels = transcriber.model.config.num_mel_bins;
    let (mut encoder_s, mut decoder_s, mut tokens) = (0.0, 0.0, 0);
    let start = Instant::now();
    for utterance in whittle::data::load_dataset(&manifest)? {
        let samples = whittle::audio::decode::load_audio(&utterance.audio)
            .map_err(|e| whittle::Error::config("audio", e.to_string()))?;
        let mel =
            whittle::audio::mel::log_mel_spectrogram(&samples, n_mels).window(0, WINDOW_FRAMES);
        let mel = Tensor::from_vec(mel.data, (1, n_mels, WINDOW_FRAMES), &Device::Cpu)?;
        let t = Instant::now();
        let encoded = transcriber.model.encoder.forward(&mel)?;
        encoder_s += t.elapsed().as_secs_f64();
        let t = Instant::now();
        tokens += transcriber.greedy(&encoded)?.len() + 1;
        decoder_s += t.elapsed().as_secs_f64();
    }
    println!(
        "encoder {encoder_s:.2} s, decoder {decoder_s:.2} s ({tokens} tokens, {:.2} ms/token), total {:.2} s",
        decoder_s * 1e3 / tokens as f64,
        start.elapsed().as_secs_f64()
    );
    Ok(())
}
