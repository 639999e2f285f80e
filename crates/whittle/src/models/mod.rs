//! Model families behind one interface. Each architecture is written once, loaded by tensor name
//! with shape checks, and exposes its layers, recognition and calibration pass through
//! [`SpeechModel`]; compression passes, evaluation and export work through that trait only.
//!
//! [`registry`] picks the family of a checkpoint folder or `.whittle` file.

pub mod gpt2;
pub mod llama;
pub mod lm;
pub mod registry;
pub mod wav2vec2;
pub mod whisper;

use std::sync::atomic::AtomicBool;

use crate::error::Result;
use crate::nn::Linear;

/// What a layer does in its model. Passes use roles for their defaults: which layers a bit map
/// covers unless a rule names them, and (for pruning) which units a gate removes together.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerRole {
    /// Attention query projection.
    AttentionQuery,
    /// Attention key projection.
    AttentionKey,
    /// Attention value projection.
    AttentionValue,
    /// Attention output projection.
    AttentionOutput,
    /// Projection of relative position embeddings in attention (a Conformer's `linear_pos`).
    AttentionPosition,
    /// First feed-forward matrix (to the hidden width).
    FeedForwardIn,
    /// Second feed-forward matrix (back to the model width).
    FeedForwardOut,
    /// Token embedding; in Whisper also the tied output projection. The largest matrix of a
    /// small model and the most sensitive one, so passes touch it only when a rule names it.
    TokenEmbedding,
    /// Projection of convolutional features into the model width.
    FeatureProjection,
    /// Output classifier over the vocabulary (a CTC head).
    OutputHead,
    /// A 1x1 convolution written as a matrix (a Conformer conv module's pointwise layers).
    Pointwise,
}

impl LayerRole {
    /// Whether a bit map's wildcard rules reach this layer (otherwise only a rule naming it
    /// exactly does).
    pub fn quantized_by_default(self) -> bool {
        self != LayerRole::TokenEmbedding
    }
}

/// A matrix of a model, by tensor path without `.weight` (as in the checkpoint).
#[derive(Debug)]
pub struct LayerRef<'a> {
    /// Tensor path.
    pub name: String,
    /// What it does.
    pub role: LayerRole,
    /// The layer.
    pub linear: &'a Linear,
}

/// [`LayerRef`] with the layer borrowed mutably (to quantize, observe or wrap it).
#[derive(Debug)]
pub struct LayerMut<'a> {
    /// Tensor path.
    pub name: String,
    /// What it does.
    pub role: LayerRole,
    /// The layer.
    pub linear: &'a mut Linear,
}

/// What the units of a [`PrunableModule`] are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum UnitKind {
    /// Attention heads.
    Heads,
    /// Feed-forward units.
    FeedForward,
    /// Channels of a Conformer convolution module.
    ConvChannels,
}

/// A module whose units structured pruning may remove: attention heads or FFN units, cut
/// together with their slices of every matrix of the module (see
/// [`crate::compress::prune`]).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PrunableModule {
    /// Module path, e.g. `model.encoder.layers.0.self_attn` or `model.encoder.layers.0.mlp`.
    pub name: String,
    /// The layer the module belongs to (the key of a layer gate), e.g.
    /// `model.encoder.layers.0`.
    pub layer: String,
    /// The matrix whose input columns are the units' outputs (the attention output
    /// projection, the second MLP matrix), by layer name.
    pub output: String,
    /// The matrix whose output rows carry the units' values, `unit_width` rows per unit from
    /// the first (the value projection, the first MLP matrix, the GLU's value half of a
    /// Conformer's first pointwise conv): with `output`, what the magnitude baseline scores.
    pub value_input: String,
    /// What its units are.
    pub kind: UnitKind,
    /// Units (heads or FFN units).
    pub units: usize,
    /// Input columns of `output` per unit (head width, or 1).
    pub unit_width: usize,
    /// Parameters removed with each unit.
    pub unit_parameters: usize,
    /// Parameters removed only with the whole module (output bias, norm).
    pub module_parameters: usize,
}

/// Prunable parameters `model` holds: every prunable module's own parameters plus its units'.
pub fn prunable_parameter_count(model: &(impl Layers + ?Sized)) -> usize {
    model
        .prunable_modules()
        .iter()
        .map(|m| m.module_parameters + m.units * m.unit_parameters)
        .sum()
}

/// The matrices of a network that compression passes may change, in a fixed order.
pub trait Layers {
    /// Every such matrix, read-only.
    fn layers(&self) -> Vec<LayerRef<'_>>;
    /// Every such matrix, mutably, in the order of [`Layers::layers`].
    fn layers_mut(&mut self) -> Vec<LayerMut<'_>>;

    /// Every tensor the model holds other than packed layer weights (norms, biases,
    /// convolutions, positions, unpacked weights), by checkpoint name and as the model holds
    /// it: what export writes beside the packed matrices, so pruned or retrained models
    /// round-trip. `None` for a family whose shapes never change, whose export copies these
    /// tensors from its checkpoint store.
    fn held_tensors(&self) -> Result<Option<Vec<(String, candle_core::Tensor)>>> {
        Ok(None)
    }

    /// The modules structured pruning may shrink, in model order (none unless the family
    /// supports pruning).
    fn prunable_modules(&self) -> Vec<PrunableModule> {
        Vec::new()
    }

    /// Physically remove what `keep` (module name to kept units, from
    /// [`Layers::prunable_modules`]; a module not named keeps everything) does not list, folding
    /// the kept scales into the weights.
    fn prune_modules(
        &mut self,
        _keep: &std::collections::BTreeMap<String, crate::compress::prune::ModuleKeep>,
    ) -> Result<()> {
        Err(crate::error::Error::config(
            "structured pruning",
            "this model family cannot be pruned",
        ))
    }

    /// The family's configuration as a `.whittle` header stores it, when it may differ from
    /// the checkpoint's (per-layer shapes after pruning); `None` keeps the loaded header's.
    fn config_header(&self) -> Result<Option<serde_json::Value>> {
        Ok(None)
    }
}

/// A loaded speech-recognition model of any family: a network with what it needs to turn audio
/// into text.
pub trait SpeechModel: Layers + Send + Sync {
    /// Family name as written in `.whittle` headers (`whisper`, `wav2vec2`, ...).
    fn architecture(&self) -> &'static str;

    /// One line describing the architecture (sizes), for `inspect` and logs.
    fn summary(&self) -> String;

    /// Parameters of the architecture (tied matrices counted once).
    fn parameter_count(&self) -> usize;

    /// Transcribe mono 16 kHz clips, in order, with the model's configured decoding.
    fn transcribe_batch(&self, clips: &[&[f32]]) -> Result<Vec<String>>;

    /// The forward pass whose layer inputs calibrate error-compensating quantization (GPTQ) on
    /// one clip. Input observers installed on the layers count only while the model holds
    /// `observing` true, so a family can leave out passes that would skew the statistics
    /// (Whisper decodes first with it off, then teacher-forces the speech frames with it on).
    fn observe_calibration(&self, samples: &[f32], observing: &AtomicBool) -> Result<()>;

    /// The model as [`std::any::Any`], for the family-specific commands (timestamps, training).
    fn as_any(&self) -> &dyn std::any::Any;

    /// [`SpeechModel::as_any`], mutably.
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any;
}
