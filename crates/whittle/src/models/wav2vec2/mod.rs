//! CTC speech encoders from Hugging Face checkpoints: wav2vec 2.0 (`Wav2Vec2ForCTC`), HuBERT
//! (`HubertForCTC`) and the Wav2Vec2-Conformer (`Wav2Vec2ConformerForCTC`), with their character
//! vocabularies and greedy CTC decoding.
//!
//! One [`CtcModel`] covers the three families (transformers' tensor names and `config.json`); the
//! encoder kind is chosen from `model_type`. Each is checked against transformers' logits on tiny
//! random checkpoints (`crates/whittle/tests/fixtures/ctc`, `tests/ctc_models.rs`).
//!
//! # Shapes
//! waveform `[batch, samples]` (16 kHz, normalised per clip when the feature extractor says
//! `do_normalize`) to logits `[batch, frames, vocab]`, `frames` = [`CtcModel::output_frames`].

pub mod config;
pub mod conformer;
pub mod ctc;
pub mod family;
pub mod model;
mod prune;

pub use config::{CtcLayerShape, Family, FeatureExtractorConfig, Wav2Vec2Config};
pub use ctc::{normalize_waveform, CtcVocab};
pub use family::CtcRecognizer;
pub use model::CtcModel;
