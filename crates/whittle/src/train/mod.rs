//! Compression by training with distillation from the full-precision model, the engine behind
//! `whittle compress`. The method is pluggable ([`method::CompressionMethod`]):
//! uniform LSQ quantization-aware training (Esser et al. 2020, [`uniform`]) and one-stage
//! learned mixed precision ([`mixed_precision`]).
//!
//! - [`recipe`]: the TOML recipe and its validation;
//! - [`method`]: the seam between the trainer and a compression method;
//! - [`model`]: the seam between the trainer and a model family;
//! - [`batch`]: trimmed log-mel batches, teacher forcing, pseudo-labels;
//! - [`loss`]: the training forward and the KL / cross-entropy / hidden-state losses;
//! - [`optim`], [`schedule`]: AdamW with a learning rate per parameter group, warm-up + cosine;
//! - [`checkpoint`]: atomic checkpoints for exact resumption;
//! - [`trainer`]: the loop.
//!
//! The fake-quantized weight itself is a state of the model's linear layers
//! ([`crate::nn::Weight::FakeQuant`], [`crate::nn::lsq`]), so the student runs the same model
//! code as the teacher and as the packed result.

pub mod admm;
pub mod augment;
pub mod batch;
pub mod checkpoint;
pub mod distill;
pub mod identity;
pub mod loss;
pub mod method;
pub mod mixed_precision;
pub mod model;
pub mod optim;
pub mod prune_l0;
pub mod recipe;
pub mod schedule;
pub mod ternary_hq;
pub mod trainer;
pub mod uniform;

use std::collections::HashMap;

use candle_core::{DType, Tensor};

pub use batch::{Batch, Prompt, TrainExample};
pub use method::{CompressionMethod, Extracted};
pub use model::TrainModel;
pub use recipe::{MethodKind, PruneRecipe, Recipe, Targets};
pub use trainer::{DevSet, TrainObserver, Trainer};

use crate::data::Utterance;
use crate::error::{Error, Result};
use crate::models::whisper::WhisperTokenizer;

/// A scalar tensor as f64.
pub(crate) fn loss_value(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// Whether `targets` needs the teacher's pseudo-labels for `utterances`.
pub fn needs_pseudo_labels(targets: Targets, utterances: &[Utterance]) -> bool {
    match targets {
        Targets::PseudoLabel => true,
        Targets::Transcript => false,
        Targets::TranscriptOrPseudoLabel => utterances.iter().any(|u| u.text.is_none()),
    }
}

/// Training examples with the token sequences `targets` asks for. `pseudo` holds the
/// teacher's labels by utterance id where they are needed.
pub fn build_examples(
    utterances: &[Utterance],
    targets: Targets,
    tokenizer: &WhisperTokenizer,
    pseudo: &HashMap<String, Vec<u32>>,
) -> Result<Vec<TrainExample>> {
    utterances
        .iter()
        .map(|u| {
            let transcript = || -> Result<Option<Vec<u32>>> {
                u.text
                    .as_ref()
                    .map(|t| tokenizer.encode(&format!(" {}", t.trim())))
                    .transpose()
            };
            let pseudo_label = || {
                pseudo.get(&u.id).cloned().ok_or_else(|| Error::Dataset {
                    path: u.audio.clone(),
                    reason: format!("utterance `{}` has no pseudo-label", u.id),
                })
            };
            let tokens = match targets {
                Targets::PseudoLabel => pseudo_label()?,
                Targets::Transcript => transcript()?.ok_or_else(|| Error::Dataset {
                    path: u.audio.clone(),
                    reason: format!(
                        "utterance `{}` has no transcript (loss.targets = \"transcript\")",
                        u.id
                    ),
                })?,
                Targets::TranscriptOrPseudoLabel => match transcript()? {
                    Some(t) => t,
                    None => pseudo_label()?,
                },
            };
            Ok(TrainExample {
                augmentation: None,
                id: u.id.clone(),
                audio: u.audio.clone(),
                tokens,
            })
        })
        .collect()
}
