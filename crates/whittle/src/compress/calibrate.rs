//! Calibration statistics for error-compensating post-training quantization: the `X^T X` of
//! each linear layer's inputs (GPTQ, Frantar et al. 2022, Sec. 3), collected while the float
//! model transcribes calibration audio.
//!
//! Every layer sees the inputs of the float model (one pass; GPTQ's sequential variant, which
//! re-feeds quantized outputs layer by layer, is not used). Which forward pass counts is the
//! model family's choice ([`SpeechModel::observe_calibration`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use candle_core::{DType, Tensor};
use whittle_kernels::HessianAccumulator;

use crate::data::Utterance;
use crate::error::{Error, Result};
use crate::models::SpeechModel;
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

/// Run the float model's calibration pass over `utterances` and collect `X^T X` for the layers
/// in `layers`. `progress` is called after each utterance.
pub fn calibrate<M: SpeechModel + ?Sized>(
    model: &mut M,
    layers: &[String],
    utterances: &[Utterance],
    mut progress: impl FnMut(usize),
) -> Result<Calibration> {
    let enabled = Arc::new(AtomicBool::new(false));
    let mut shared: BTreeMap<String, Shared> = BTreeMap::new();
    for layer in model.layers_mut() {
        let (name, linear) = (layer.name, layer.linear);
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
            model.observe_calibration(&samples, &enabled)?;
            progress(i);
        }
        Ok::<_, Error>(audio_seconds)
    })();
    for layer in model.layers_mut() {
        layer.linear.observer = None;
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
