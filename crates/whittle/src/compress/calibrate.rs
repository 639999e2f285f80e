//! Calibration statistics for error-compensating post-training quantization: the `X^T X` of
//! each linear layer's inputs (GPTQ, Frantar et al. 2022, Sec. 3), collected while the float
//! model transcribes calibration audio.
//!
//! Every layer sees the inputs of the float model (one pass; GPTQ's sequential variant, which
//! re-feeds quantized outputs layer by layer, is not used). Each utterance is first transcribed
//! greedily; then, with the observers on, the encoder runs on the speech frames only (the mel
//! trimmed to the audio, without the 30 s padding that would otherwise be most of every
//! Hessian) and the decoder is teacher-forced on the prompt and the decoded tokens.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor};
use whittle_kernels::HessianAccumulator;

use crate::data::Utterance;
use crate::error::{Error, Result};
use crate::models::whisper::Transcriber;
use crate::nn::InputObserver;

/// `X^T X` per layer path.
#[derive(Debug, Default)]
pub struct Calibration {
    /// Accumulated Gram matrices.
    pub hessians: BTreeMap<String, HessianAccumulator>,
    /// Utterances transcribed.
    pub utterances: usize,
    /// Seconds of calibration audio.
    pub audio_seconds: f64,
}

type Shared = Arc<Mutex<std::result::Result<HessianAccumulator, String>>>;

/// Gram matrix of `x: [rows, cols]`, accumulated into `acc` (errors kept for the caller).
fn observe(acc: &Shared, x: &Tensor) -> candle_core::Result<()> {
    let x = x.to_dtype(DType::F32)?.detach();
    let rows = x.dim(0)?;
    let gram: Vec<f32> = x.t()?.matmul(&x)?.flatten_all()?.to_vec1()?;
    let mut guard = acc
        .lock()
        .map_err(|_| candle_core::Error::Msg("calibration lock poisoned".into()))?;
    if let Ok(h) = guard.as_mut() {
        if let Err(e) = h.add_gram(&gram, rows) {
            *guard = Err(e.to_string());
        }
    }
    Ok(())
}

/// Teacher-forced pass over each 30 s window of `samples`, trimmed to its speech frames.
fn observe_speech_frames(
    transcriber: &Transcriber,
    samples: &[f32],
    window_tokens: &[Vec<u32>],
) -> Result<()> {
    use whittle_audio::mel::{log_mel_spectrogram, HOP_LENGTH, N_FRAMES_30S};
    let model = &transcriber.model;
    let n_mels = model.config.num_mel_bins;
    let mel = log_mel_spectrogram(samples, n_mels);
    let content_frames = (samples.len() / HOP_LENGTH).max(2);
    let prompt = transcriber.tokenizer.prompt(model.config.is_multilingual());
    for (w, tokens) in window_tokens.iter().enumerate() {
        let seek = w * N_FRAMES_30S;
        // Even frame count: the stride-2 conv stem halves it.
        let frames = (content_frames.saturating_sub(seek).min(N_FRAMES_30S) + 1) & !1;
        let window = mel.window(seek, frames);
        let window = Tensor::from_vec(window.data, (1, n_mels, frames), model.device())?
            .to_dtype(model.dtype)?;
        let mut input = prompt.clone();
        input.extend_from_slice(tokens);
        let input = Tensor::new(input.as_slice(), model.device())?.unsqueeze(0)?;
        transcriber.token_log_probs(&window, &input)?;
    }
    Ok(())
}

/// Transcribe `utterances` with the float model and collect `X^T X` for the layers in `layers`.
/// `progress` is called after each utterance.
pub fn calibrate(
    transcriber: &mut Transcriber,
    layers: &[String],
    utterances: &[Utterance],
    mut progress: impl FnMut(usize),
) -> Result<Calibration> {
    let enabled = Arc::new(AtomicBool::new(false));
    let mut shared: BTreeMap<String, Shared> = BTreeMap::new();
    for (name, linear) in transcriber.model.quantizable_mut() {
        if !layers.contains(&name) {
            continue;
        }
        let acc: Shared = Arc::new(Mutex::new(Ok(HessianAccumulator::new(
            linear.in_features(),
        ))));
        let (captured, on) = (acc.clone(), enabled.clone());
        linear.observer = Some(InputObserver(Arc::new(move |x: &Tensor| {
            if on.load(Ordering::Relaxed) {
                observe(&captured, x)
            } else {
                Ok(())
            }
        })));
        shared.insert(name, acc);
    }
    let run = (|| {
        let mut audio_seconds = 0.0;
        for (i, utt) in utterances.iter().enumerate() {
            let samples = whittle_audio::load_audio(&utt.audio).map_err(|e| Error::Dataset {
                path: utt.audio.clone(),
                reason: format!("calibration utterance `{}`: {e}", utt.id),
            })?;
            audio_seconds += samples.len() as f64 / 16_000.0;
            let transcript = transcriber.transcribe(&samples)?;
            enabled.store(true, Ordering::Relaxed);
            let observed = observe_speech_frames(transcriber, &samples, &transcript.window_tokens);
            enabled.store(false, Ordering::Relaxed);
            observed?;
            progress(i);
        }
        Ok::<_, Error>(audio_seconds)
    })();
    for (_, linear) in transcriber.model.quantizable_mut() {
        linear.observer = None;
    }
    let audio_seconds = run?;
    let mut hessians = BTreeMap::new();
    for (name, acc) in shared {
        let acc = Arc::try_unwrap(acc)
            .map_err(|_| Error::config(&name, "calibration observer still attached"))?
            .into_inner()
            .map_err(|_| Error::config(&name, "calibration lock poisoned"))?
            .map_err(|e| Error::config(&name, format!("calibration inputs: {e}")))?;
        hessians.insert(name, acc);
    }
    Ok(Calibration {
        hessians,
        utterances: utterances.len(),
        audio_seconds,
    })
}
