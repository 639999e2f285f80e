//! `config.json` of transformers' `Wav2Vec2ForCTC`, `HubertForCTC` and `Wav2Vec2ConformerForCTC`
//! (`Wav2Vec2Config`, `HubertConfig`, `Wav2Vec2ConformerConfig`), and the feature extractor's
//! `preprocessor_config.json`.
//!
//! Field names and defaults are transformers' (5.25); only the fields the forward pass needs are
//! read, the rest (dropouts, SpecAugment, pre-training heads) are ignored. Options whittle does not
//! implement (adapters, HuBERT's batch-normed positional conv) are refused rather than ignored, so a
//! checkpoint never loads into a different function than the one it was trained as.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::model_dir::read_json;

/// The model family, from `model_type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Family {
    /// `wav2vec2` (Baevski et al. 2020): tensors under `wav2vec2.`.
    #[default]
    Wav2Vec2,
    /// `hubert` (Hsu et al. 2021): the same network, tensors under `hubert.`, optional
    /// feature-projection layer norm.
    Hubert,
    /// `wav2vec2-conformer`: Conformer blocks (Gulati et al. 2020), tensors under
    /// `wav2vec2_conformer.`.
    Conformer,
}

impl Family {
    /// The `model_type` values whittle loads.
    pub const MODEL_TYPES: [&'static str; 3] = ["wav2vec2", "hubert", "wav2vec2-conformer"];

    /// The family of a `model_type`, if whittle implements it.
    pub fn from_model_type(model_type: &str) -> Option<Self> {
        match model_type {
            "wav2vec2" => Some(Self::Wav2Vec2),
            "hubert" => Some(Self::Hubert),
            "wav2vec2-conformer" => Some(Self::Conformer),
            _ => None,
        }
    }

    /// The `model_type` of this family (also its `.whittle` architecture).
    pub fn model_type(self) -> &'static str {
        match self {
            Self::Wav2Vec2 => "wav2vec2",
            Self::Hubert => "hubert",
            Self::Conformer => "wav2vec2-conformer",
        }
    }

    /// Prefix of the base model's tensors in the CTC checkpoint.
    pub fn tensor_prefix(self) -> &'static str {
        match self {
            Self::Wav2Vec2 => "wav2vec2",
            Self::Hubert => "hubert",
            Self::Conformer => "wav2vec2_conformer",
        }
    }
}

/// Normalisation in the convolutional feature encoder (`feat_extract_norm`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FeatExtractNorm {
    /// Group norm with one group per channel after the first conv only (wav2vec2-base).
    Group,
    /// Layer norm over channels after every conv (wav2vec2-large).
    Layer,
}

/// Activation functions by transformers' `ACT2FN` name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Activation {
    /// `gelu`: the exact (erf) form, as `torch.nn.functional.gelu`.
    #[serde(rename = "gelu")]
    Gelu,
    /// `gelu_new` / `gelu_pytorch_tanh`: the tanh approximation.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluTanh,
    /// `relu`.
    #[serde(rename = "relu")]
    Relu,
    /// `swish` / `silu`: `x * sigmoid(x)`.
    #[serde(rename = "swish", alias = "silu")]
    Swish,
}

/// Position information in a Conformer encoder (`position_embeddings_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PositionEmbeddings {
    /// Transformer-XL relative positions (`linear_pos`, `pos_bias_u`, `pos_bias_v`).
    Relative,
    /// Rotary embeddings applied to the attention input (Su et al. 2021, "RoFormer").
    Rotary,
}

fn default_model_type() -> String {
    "wav2vec2".into()
}
fn default_hidden_size() -> usize {
    768
}
fn default_layers() -> usize {
    12
}
fn default_intermediate() -> usize {
    3072
}
fn default_gelu() -> Activation {
    Activation::Gelu
}
fn default_eps() -> f64 {
    1e-5
}
fn default_norm() -> FeatExtractNorm {
    FeatExtractNorm::Group
}
fn default_conv_dim() -> Vec<usize> {
    vec![512; 7]
}
fn default_conv_stride() -> Vec<usize> {
    vec![5, 2, 2, 2, 2, 2, 2]
}
fn default_conv_kernel() -> Vec<usize> {
    vec![10, 3, 3, 3, 3, 2, 2]
}
fn default_pos_kernel() -> usize {
    128
}
fn default_pos_groups() -> usize {
    16
}
fn default_pad() -> Option<usize> {
    Some(0)
}
fn default_position_embeddings() -> Option<PositionEmbeddings> {
    Some(PositionEmbeddings::Relative)
}
fn default_rotary_base() -> f64 {
    10000.0
}
fn default_max_positions() -> usize {
    5000
}
fn default_depthwise_kernel() -> usize {
    31
}

/// The fields of a wav2vec2 / HuBERT / Wav2Vec2-Conformer `config.json` that define the forward pass.
#[derive(Debug, Clone, Deserialize)]
pub struct Wav2Vec2Config {
    /// `wav2vec2`, `hubert` or `wav2vec2-conformer` (see [`Family`]).
    #[serde(default = "default_model_type")]
    pub model_type: String,
    /// CTC output symbols, rows of `lm_head`.
    pub vocab_size: usize,
    /// Transformer width.
    #[serde(default = "default_hidden_size")]
    pub hidden_size: usize,
    /// Encoder layers.
    #[serde(default = "default_layers")]
    pub num_hidden_layers: usize,
    /// Attention heads per layer.
    #[serde(default = "default_layers")]
    pub num_attention_heads: usize,
    /// Feed-forward width.
    #[serde(default = "default_intermediate")]
    pub intermediate_size: usize,
    /// Feed-forward (and Conformer conv-module) activation.
    #[serde(default = "default_gelu")]
    pub hidden_act: Activation,
    /// Epsilon of the encoder's layer norms (the conv encoder's and the Conformer blocks' own
    /// norms use PyTorch's default 1e-5, as transformers builds them without this value).
    #[serde(default = "default_eps")]
    pub layer_norm_eps: f64,
    /// Conv feature encoder normalisation.
    #[serde(default = "default_norm")]
    pub feat_extract_norm: FeatExtractNorm,
    /// Conv feature encoder (and positional conv) activation.
    #[serde(default = "default_gelu")]
    pub feat_extract_activation: Activation,
    /// Output channels of each feature-encoder conv.
    #[serde(default = "default_conv_dim")]
    pub conv_dim: Vec<usize>,
    /// Stride of each feature-encoder conv.
    #[serde(default = "default_conv_stride")]
    pub conv_stride: Vec<usize>,
    /// Kernel width of each feature-encoder conv.
    #[serde(default = "default_conv_kernel")]
    pub conv_kernel: Vec<usize>,
    /// Whether the feature-encoder convs have biases.
    #[serde(default)]
    pub conv_bias: bool,
    /// `len(conv_dim)` when given; checked against the lists.
    #[serde(default)]
    pub num_feat_extract_layers: Option<usize>,
    /// Kernel width of the positional conv embedding.
    #[serde(default = "default_pos_kernel")]
    pub num_conv_pos_embeddings: usize,
    /// Groups of the positional conv embedding.
    #[serde(default = "default_pos_groups")]
    pub num_conv_pos_embedding_groups: usize,
    /// Pre-LN encoder with a final layer norm ("stable layer norm", the large models) instead of
    /// post-LN with the layer norm before the first layer. Not used by the Conformer.
    #[serde(default)]
    pub do_stable_layer_norm: bool,
    /// CTC blank id (the tokenizer's pad token).
    #[serde(default = "default_pad")]
    pub pad_token_id: Option<usize>,
    /// HuBERT only: layer norm before the feature projection (wav2vec2 and the Conformer always
    /// have it). transformers' default: true.
    #[serde(default)]
    pub feat_proj_layer_norm: Option<bool>,
    /// HuBERT only: batch norm instead of weight norm in the positional conv (refused).
    #[serde(default)]
    pub conv_pos_batch_norm: bool,
    /// Adapter after the encoder (refused).
    #[serde(default)]
    pub add_adapter: bool,
    /// Per-language attention adapters (refused).
    #[serde(default)]
    pub adapter_attn_dim: Option<usize>,
    /// Conformer: relative, rotary or none (`null`).
    #[serde(default = "default_position_embeddings")]
    pub position_embeddings_type: Option<PositionEmbeddings>,
    /// Conformer rotary base.
    #[serde(default = "default_rotary_base")]
    pub rotary_embedding_base: f64,
    /// Conformer relative positions: the longest sequence the sinusoid table covers.
    #[serde(default = "default_max_positions")]
    pub max_source_positions: usize,
    /// Conformer depthwise conv kernel width (odd).
    #[serde(default = "default_depthwise_kernel")]
    pub conv_depthwise_kernel_size: usize,
    /// whittle's own key, written by structured pruning: each layer's shape when it differs
    /// from the uniform one above (see [`CtcLayerShape`]); absent in Hugging Face checkpoints.
    #[serde(default)]
    pub whittle_layer_shapes: Option<Vec<CtcLayerShape>>,
    /// Parsed from `model_type` by [`Wav2Vec2Config::validate`].
    #[serde(skip)]
    pub family: Family,
}

/// The modules one encoder layer of a pruned CTC model holds: a count of 0 means the module is
/// removed (no tensors, no residual branch; its layer norm stays).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CtcLayerShape {
    /// Self-attention heads.
    pub attention_heads: usize,
    /// Feed-forward width (the Conformer's first, macaron feed-forward).
    pub ffn_dim: usize,
    /// Conformer only: the second feed-forward's width.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ffn2_dim: Option<usize>,
    /// Conformer only: channels of the convolution module (after the GLU).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conv_channels: Option<usize>,
}

impl CtcLayerShape {
    /// `heads/ffn` (Conformer: `ffn1/heads/conv/ffn2`), `-` for a removed module.
    pub fn summary(&self) -> String {
        let n = |v: usize| {
            if v == 0 {
                "-".to_string()
            } else {
                v.to_string()
            }
        };
        match (self.conv_channels, self.ffn2_dim) {
            (Some(conv), Some(ffn2)) => format!(
                "{}/{}/{}/{}",
                n(self.ffn_dim),
                n(self.attention_heads),
                n(conv),
                n(ffn2)
            ),
            _ => format!("{}/{}", n(self.attention_heads), n(self.ffn_dim)),
        }
    }

    /// What [`CtcLayerShape::summary`] lists, for a model of `family`.
    pub fn legend(family: Family) -> &'static str {
        match family {
            Family::Conformer => "FFN1 units/heads/conv channels/FFN2 units",
            Family::Wav2Vec2 | Family::Hubert => "heads/FFN units",
        }
    }
}

impl Wav2Vec2Config {
    /// Read and check `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text, path)
    }

    /// Parse and check a `config.json` document; `path` names it in errors.
    pub fn from_json(text: &str, path: &Path) -> Result<Self> {
        let mut config: Self = serde_json::from_str(text).map_err(|source| Error::Json {
            context: path.display().to_string(),
            source,
        })?;
        config.validate(path)?;
        Ok(config)
    }

    /// Set [`Wav2Vec2Config::family`] and refuse unknown families, options whittle does not
    /// implement and inconsistent dimensions.
    pub fn validate(&mut self, path: &Path) -> Result<()> {
        self.family =
            Family::from_model_type(&self.model_type).ok_or_else(|| Error::UnknownModel {
                path: path.to_path_buf(),
                reason: format!(
                    "model_type `{}` is not one of the CTC families whittle loads ({})",
                    self.model_type,
                    Family::MODEL_TYPES.join(", ")
                ),
            })?;
        let bad = |reason: String| Err(Error::config(path.display().to_string(), reason));
        let (h, heads) = (self.hidden_size, self.num_attention_heads);
        if h == 0 || heads == 0 || h % heads != 0 {
            return bad(format!(
                "hidden_size {h} is not a positive multiple of num_attention_heads {heads}"
            ));
        }
        let n = self.conv_dim.len();
        if n == 0 || self.conv_stride.len() != n || self.conv_kernel.len() != n {
            return bad(format!(
                "conv_dim, conv_stride and conv_kernel must have the same non-zero length, got {}, {} and {}",
                n,
                self.conv_stride.len(),
                self.conv_kernel.len()
            ));
        }
        if let Some(layers) = self.num_feat_extract_layers {
            if layers != n {
                return bad(format!(
                    "num_feat_extract_layers {layers} differs from len(conv_dim) {n}"
                ));
            }
        }
        if self.conv_dim.contains(&0)
            || self.conv_stride.contains(&0)
            || self.conv_kernel.contains(&0)
        {
            return bad("conv_dim, conv_stride and conv_kernel must be positive".into());
        }
        for (name, value) in [
            ("vocab_size", self.vocab_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
        ] {
            if value == 0 {
                return bad(format!("{name} must be positive"));
            }
        }
        let groups = self.num_conv_pos_embedding_groups;
        if self.family != Family::Conformer
            && (self.num_conv_pos_embeddings == 0 || groups == 0 || h % groups != 0)
        {
            return bad(format!(
                "hidden_size {h} is not a multiple of num_conv_pos_embedding_groups {groups} \
                 (or the positional conv kernel num_conv_pos_embeddings is 0)"
            ));
        }
        if let Some(pad) = self.pad_token_id {
            if pad >= self.vocab_size {
                return bad(format!(
                    "pad_token_id {pad} (the CTC blank) is outside vocab_size {}",
                    self.vocab_size
                ));
            }
        }
        if self.add_adapter || self.adapter_attn_dim.is_some() {
            return bad("adapters (add_adapter, adapter_attn_dim) are not implemented".into());
        }
        if self.conv_pos_batch_norm {
            return bad(
                "conv_pos_batch_norm (a batch-normed positional conv) is not implemented".into(),
            );
        }
        if let Some(shapes) = &self.whittle_layer_shapes {
            self.check_layer_shapes(shapes).or_else(bad)?;
        }
        if self.family == Family::Conformer {
            let k = self.conv_depthwise_kernel_size;
            if k.is_multiple_of(2) {
                return bad(format!(
                    "conv_depthwise_kernel_size {k} must be odd (transformers' 'same' padding)"
                ));
            }
            if self.position_embeddings_type == Some(PositionEmbeddings::Rotary)
                && (h / heads) % 2 != 0
            {
                return bad(format!(
                    "rotary embeddings need an even head size, got {}",
                    h / heads
                ));
            }
            if self.position_embeddings_type == Some(PositionEmbeddings::Relative) && h % 2 != 0 {
                return bad(format!(
                    "relative positions need an even hidden_size, got {h}"
                ));
            }
        }
        Ok(())
    }

    /// Why `shapes` cannot be this configuration's layer shapes, if they cannot.
    fn check_layer_shapes(&self, shapes: &[CtcLayerShape]) -> std::result::Result<(), String> {
        if shapes.len() != self.num_hidden_layers {
            return Err(format!(
                "whittle_layer_shapes lists {} layers, num_hidden_layers is {}",
                shapes.len(),
                self.num_hidden_layers
            ));
        }
        let conformer = self.family == Family::Conformer;
        for (i, s) in shapes.iter().enumerate() {
            let limits = [
                (
                    "attention_heads",
                    Some(s.attention_heads),
                    self.num_attention_heads,
                ),
                ("ffn_dim", Some(s.ffn_dim), self.intermediate_size),
                ("ffn2_dim", s.ffn2_dim, self.intermediate_size),
                ("conv_channels", s.conv_channels, self.hidden_size),
            ];
            for (name, value, limit) in limits {
                if let Some(v) = value.filter(|&v| v > limit) {
                    return Err(format!(
                        "whittle_layer_shapes[{i}].{name} {v} exceeds the unpruned {limit}"
                    ));
                }
            }
            let conformer_fields = [s.ffn2_dim.is_some(), s.conv_channels.is_some()];
            if conformer_fields != [conformer; 2] {
                return Err(format!(
                    "whittle_layer_shapes[{i}]: ffn2_dim and conv_channels are {} for this family",
                    if conformer { "required" } else { "not allowed" }
                ));
            }
        }
        Ok(())
    }

    /// Layer `i`'s shape: from `whittle_layer_shapes`, else the uniform one.
    pub fn layer_shape(&self, i: usize) -> CtcLayerShape {
        if let Some(shape) = self.whittle_layer_shapes.as_ref().and_then(|s| s.get(i)) {
            return *shape;
        }
        let conformer = self.family == Family::Conformer;
        CtcLayerShape {
            attention_heads: self.num_attention_heads,
            ffn_dim: self.intermediate_size,
            ffn2_dim: conformer.then_some(self.intermediate_size),
            conv_channels: conformer.then_some(self.hidden_size),
        }
    }

    /// Width of a head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Whether the feature projection starts with a layer norm.
    pub fn has_feature_projection_norm(&self) -> bool {
        match self.family {
            Family::Hubert => self.feat_proj_layer_norm.unwrap_or(true),
            Family::Wav2Vec2 | Family::Conformer => true,
        }
    }

    /// Frames the conv feature encoder gives for `samples` input samples
    /// (`floor((len - kernel) / stride) + 1` per conv, 0 once the input is shorter than a kernel).
    pub fn output_frames(&self, samples: usize) -> usize {
        self.conv_kernel
            .iter()
            .zip(&self.conv_stride)
            .fold(
                samples,
                |len, (&k, &s)| {
                    if len < k {
                        0
                    } else {
                        (len - k) / s + 1
                    }
                },
            )
    }
}

/// The feature extractor's settings (`Wav2Vec2FeatureExtractor`).
#[derive(Debug, Clone, Deserialize)]
pub struct FeatureExtractorConfig {
    /// Zero mean, unit variance per clip before the model (see [`super::normalize_waveform`]).
    /// transformers' default: true.
    #[serde(default = "default_true")]
    pub do_normalize: bool,
    /// Input sample rate.
    #[serde(default = "default_rate")]
    pub sampling_rate: u32,
}

fn default_true() -> bool {
    true
}
fn default_rate() -> u32 {
    16000
}

impl Default for FeatureExtractorConfig {
    fn default() -> Self {
        Self {
            do_normalize: true,
            sampling_rate: 16000,
        }
    }
}

impl FeatureExtractorConfig {
    /// The settings in a checkpoint folder: `preprocessor_config.json` (what transformers 4 and
    /// `FeatureExtractor.save_pretrained` write), else the `feature_extractor` object of
    /// `processor_config.json` (what transformers 5's `Processor.save_pretrained` writes), else
    /// transformers' defaults (a choice of whittle's: the folder names no settings at all).
    pub fn from_model_dir(dir: &Path) -> Result<Self> {
        let pre = dir.join("preprocessor_config.json");
        if pre.exists() {
            return read_json(&pre);
        }
        let processor = dir.join("processor_config.json");
        if processor.exists() {
            let mut value: serde_json::Value = read_json(&processor)?;
            if let Some(fe) = value.get_mut("feature_extractor") {
                return serde_json::from_value(fe.take()).map_err(|source| Error::Json {
                    context: format!("{} (feature_extractor)", processor.display()),
                    source,
                });
            }
        }
        Ok(Self::default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(json: &str) -> Result<Wav2Vec2Config> {
        Wav2Vec2Config::from_json(json, Path::new("crafted/config.json"))
    }

    #[test]
    fn defaults_are_transformers_base_model() {
        let c = parse(r#"{"model_type": "hubert", "vocab_size": 32}"#).unwrap();
        assert_eq!(c.family, Family::Hubert);
        assert_eq!((c.hidden_size, c.num_attention_heads), (768, 12));
        assert!(c.has_feature_projection_norm());
        // 1 s of audio at 16 kHz gives wav2vec2-base's 49 frames.
        assert_eq!(c.output_frames(16000), 49);
        assert_eq!(c.output_frames(399), 0);
        assert_eq!(c.output_frames(400), 1);
    }

    #[test]
    fn refuses_inconsistent_or_unimplemented_configs() {
        let cases = [
            (
                r#"{"model_type": "bert", "vocab_size": 32}"#,
                "model_type `bert`",
            ),
            (
                r#"{"model_type": "wav2vec2", "vocab_size": 32, "hidden_size": 30, "num_attention_heads": 4}"#,
                "hidden_size 30",
            ),
            (
                r#"{"model_type": "wav2vec2", "vocab_size": 32, "conv_dim": [4, 4], "conv_stride": [2], "conv_kernel": [3, 3]}"#,
                "same non-zero length",
            ),
            (
                r#"{"model_type": "wav2vec2", "vocab_size": 32, "add_adapter": true}"#,
                "adapters",
            ),
            (
                r#"{"model_type": "wav2vec2-conformer", "vocab_size": 32, "conv_depthwise_kernel_size": 4}"#,
                "must be odd",
            ),
            (
                r#"{"model_type": "wav2vec2", "vocab_size": 4, "pad_token_id": 4}"#,
                "pad_token_id 4",
            ),
            (
                r#"{"model_type": "wav2vec2", "vocab_size": 32, "feat_extract_norm": "batch"}"#,
                "unknown variant",
            ),
            (
                r#"{"model_type": "wav2vec2", "vocab_size": 32, "num_hidden_layers": 2, "whittle_layer_shapes": [{"attention_heads": 2, "ffn_dim": 8}]}"#,
                "lists 1 layers, num_hidden_layers is 2",
            ),
            (
                r#"{"model_type": "wav2vec2", "vocab_size": 32, "num_hidden_layers": 1, "whittle_layer_shapes": [{"attention_heads": 13, "ffn_dim": 8}]}"#,
                "attention_heads 13 exceeds the unpruned 12",
            ),
            (
                r#"{"model_type": "wav2vec2", "vocab_size": 32, "num_hidden_layers": 1, "whittle_layer_shapes": [{"attention_heads": 2, "ffn_dim": 8, "conv_channels": 4}]}"#,
                "not allowed for this family",
            ),
            (
                r#"{"model_type": "wav2vec2-conformer", "vocab_size": 32, "num_hidden_layers": 1, "whittle_layer_shapes": [{"attention_heads": 2, "ffn_dim": 8}]}"#,
                "required for this family",
            ),
            (
                r#"{"model_type": "wav2vec2", "vocab_size": 32, "num_hidden_layers": 1, "whittle_layer_shapes": [{"attention_heads": 2, "ffn_dim": 8, "extra": 1}]}"#,
                "unknown field",
            ),
        ];
        for (json, expected) in cases {
            let err = parse(json).expect_err(json).to_string();
            assert!(
                err.contains(expected) && err.contains("crafted/config.json"),
                "{json}: error `{err}` does not name `{expected}` and the file"
            );
        }
    }
}
