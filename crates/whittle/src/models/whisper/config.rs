//! Whisper configuration, mirroring Hugging Face `WhisperConfig` (`config.json`) field for field.
//!
//! Names map to openai-whisper's `ModelDimensions`: `num_mel_bins` = n_mels, `d_model` =
//! n_audio_state = n_text_state, `encoder_layers` = n_audio_layer, `max_source_positions` =
//! n_audio_ctx, `max_target_positions` = n_text_ctx, `vocab_size` = n_vocab.

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Fewest decoder positions accepted: the longest prompt without previous text (sot, language,
/// task, notimestamps: 4 tokens) plus one new token. Our bound, not Whisper's (its models have 448).
pub const MIN_TARGET_POSITIONS: usize = 5;

/// Architecture and decoding defaults of a Whisper model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WhisperConfig {
    /// Vocabulary size (51864 for English-only models, 51865 multilingual).
    pub vocab_size: usize,
    /// Mel bins of the front end (80, or 128 for large-v3).
    pub num_mel_bins: usize,
    /// Encoder layers.
    pub encoder_layers: usize,
    /// Encoder attention heads.
    pub encoder_attention_heads: usize,
    /// Decoder layers.
    pub decoder_layers: usize,
    /// Decoder attention heads.
    pub decoder_attention_heads: usize,
    /// Model width.
    pub d_model: usize,
    /// Encoder feed-forward width.
    pub encoder_ffn_dim: usize,
    /// Decoder feed-forward width.
    pub decoder_ffn_dim: usize,
    /// Encoder positions (1500 = 30 s after the stride-2 conv).
    #[serde(default = "default_source_positions")]
    pub max_source_positions: usize,
    /// Decoder positions (448).
    #[serde(default = "default_target_positions")]
    pub max_target_positions: usize,
    /// Tokens suppressed at every step (openai-whisper's `suppress_tokens`, expanded).
    #[serde(default)]
    pub suppress_tokens: Vec<u32>,
    /// Tokens suppressed at the first sampled step (blank and end of text).
    #[serde(default)]
    pub begin_suppress_tokens: Vec<u32>,
    /// Activation, `gelu` for every released Whisper.
    #[serde(default = "default_activation")]
    pub activation_function: String,
    /// Per-layer shapes of a structurally pruned model (whittle's extension; absent for the
    /// uniform shapes above, as in every released checkpoint). The head width stays
    /// `d_model / *_attention_heads`; a layer keeps fewer heads or FFN units, or none.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer_shapes: Option<LayerShapes>,
}

/// The shape of one transformer block. Zero heads or a zero FFN width means the module is
/// removed with its norm and residual branch; a block with nothing left is a removed layer
/// (it keeps its index, so tensor names and bit maps of the unpruned model still apply).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockShape {
    /// Self-attention heads.
    pub self_attention_heads: usize,
    /// Cross-attention heads (decoder blocks only; 0 in the encoder).
    #[serde(default)]
    pub cross_attention_heads: usize,
    /// Feed-forward units.
    pub ffn_dim: usize,
}

impl BlockShape {
    /// Whether every module of the block is removed.
    pub fn is_empty(&self) -> bool {
        self.self_attention_heads == 0 && self.cross_attention_heads == 0 && self.ffn_dim == 0
    }

    /// Parameters of one attention head at model width `d` and head width `head_dim`: its rows
    /// of q, k and v, its columns of the output projection, its q and v bias entries.
    pub fn head_parameters(d: usize, head_dim: usize) -> usize {
        4 * d * head_dim + 2 * head_dim
    }

    /// Parameters of one FFN unit at model width `d`: its row of fc1, its fc1 bias entry, its
    /// column of fc2.
    pub fn ffn_unit_parameters(d: usize) -> usize {
        2 * d + 1
    }

    /// Parameters a module holds besides its units: the output bias and the norm.
    pub fn module_parameters(d: usize) -> usize {
        3 * d
    }

    /// Parameters of the block's attention and FFN modules (every one of them prunable).
    pub fn parameters(&self, d: usize, head_dim: usize) -> usize {
        let module = |units: usize, per_unit: usize| {
            if units == 0 {
                0
            } else {
                units * per_unit + Self::module_parameters(d)
            }
        };
        let head = Self::head_parameters(d, head_dim);
        module(self.self_attention_heads, head)
            + module(self.cross_attention_heads, head)
            + module(self.ffn_dim, Self::ffn_unit_parameters(d))
    }
}

/// Per-layer shapes of encoder and decoder blocks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerShapes {
    /// One entry per encoder layer.
    pub encoder: Vec<BlockShape>,
    /// One entry per decoder layer.
    pub decoder: Vec<BlockShape>,
}

impl LayerShapes {
    /// One line: `encoder 6/1536 4/1024 ...; decoder 6+6/1536 ... -` (self heads, `+cross
    /// heads` in the decoder, `/FFN units`; `-` for a removed layer).
    pub fn summary(&self) -> String {
        let part = |blocks: &[BlockShape], decoder: bool| {
            blocks
                .iter()
                .map(|b| match (b.is_empty(), decoder) {
                    (true, _) => "-".to_string(),
                    (false, true) => format!(
                        "{}+{}/{}",
                        b.self_attention_heads, b.cross_attention_heads, b.ffn_dim
                    ),
                    (false, false) => format!("{}/{}", b.self_attention_heads, b.ffn_dim),
                })
                .collect::<Vec<_>>()
                .join(" ")
        };
        format!(
            "encoder {}; decoder {}",
            part(&self.encoder, false),
            part(&self.decoder, true)
        )
    }
}

/// Largest FFN width accepted in per-layer shapes (bounds what a crafted header can ask to
/// allocate; released Whisper models use at most 5120).
pub const MAX_FFN_DIM: usize = 1 << 16;

fn default_source_positions() -> usize {
    1500
}
fn default_target_positions() -> usize {
    448
}
fn default_activation() -> String {
    "gelu".into()
}

impl WhisperConfig {
    /// Check that the dimensions are consistent.
    pub fn validate(&self, context: &str) -> Result<()> {
        let check = |ok: bool, reason: String| {
            if ok {
                Ok(())
            } else {
                Err(Error::config(context, reason))
            }
        };
        check(self.d_model > 0, "d_model must be positive".into())?;
        check(self.vocab_size > 0, "vocab_size must be positive".into())?;
        check(
            self.num_mel_bins > 0,
            "num_mel_bins must be positive".into(),
        )?;
        check(
            self.encoder_attention_heads > 0
                && self.d_model.is_multiple_of(self.encoder_attention_heads),
            format!(
                "encoder_attention_heads {} must divide d_model {}",
                self.encoder_attention_heads, self.d_model
            ),
        )?;
        check(
            self.decoder_attention_heads > 0
                && self.d_model.is_multiple_of(self.decoder_attention_heads),
            format!(
                "decoder_attention_heads {} must divide d_model {}",
                self.decoder_attention_heads, self.d_model
            ),
        )?;
        check(
            self.max_source_positions > 0,
            "max_source_positions must be positive".into(),
        )?;
        check(
            self.max_target_positions >= MIN_TARGET_POSITIONS,
            format!(
                "max_target_positions {} is below {MIN_TARGET_POSITIONS}: the decoder could not \
                 hold its prompt and one new token",
                self.max_target_positions
            ),
        )?;
        check(
            self.activation_function == "gelu",
            format!(
                "activation_function `{}` is not supported (gelu)",
                self.activation_function
            ),
        )?;
        if let Some(shapes) = &self.layer_shapes {
            self.validate_layer_shapes(shapes)
                .map_err(|r| Error::config(context, r))?;
        }
        for &t in self
            .suppress_tokens
            .iter()
            .chain(&self.begin_suppress_tokens)
        {
            check(
                (t as usize) < self.vocab_size,
                format!(
                    "suppressed token {t} is outside the vocabulary {}",
                    self.vocab_size
                ),
            )?;
        }
        Ok(())
    }

    fn validate_layer_shapes(&self, shapes: &LayerShapes) -> std::result::Result<(), String> {
        for (part, blocks, layers, heads, cross) in [
            (
                "encoder",
                &shapes.encoder,
                self.encoder_layers,
                self.encoder_attention_heads,
                false,
            ),
            (
                "decoder",
                &shapes.decoder,
                self.decoder_layers,
                self.decoder_attention_heads,
                true,
            ),
        ] {
            if blocks.len() != layers {
                return Err(format!(
                    "layer_shapes.{part} has {} entries for {layers} layers",
                    blocks.len()
                ));
            }
            for (i, b) in blocks.iter().enumerate() {
                if b.self_attention_heads > heads || b.cross_attention_heads > heads {
                    return Err(format!(
                        "layer_shapes.{part}[{i}]: more heads than the {heads} the head width \
                         d_model / {heads} is taken from"
                    ));
                }
                if !cross && b.cross_attention_heads != 0 {
                    return Err(format!(
                        "layer_shapes.{part}[{i}]: encoder blocks have no cross-attention"
                    ));
                }
                if b.ffn_dim > MAX_FFN_DIM {
                    return Err(format!(
                        "layer_shapes.{part}[{i}]: ffn_dim {} exceeds {MAX_FFN_DIM}",
                        b.ffn_dim
                    ));
                }
            }
        }
        Ok(())
    }

    /// Head width of the encoder (`d_model / encoder_attention_heads`).
    pub fn encoder_head_dim(&self) -> usize {
        self.d_model / self.encoder_attention_heads
    }

    /// Head width of the decoder.
    pub fn decoder_head_dim(&self) -> usize {
        self.d_model / self.decoder_attention_heads
    }

    /// Shape of encoder layer `i` (uniform unless the model is pruned).
    pub fn encoder_block(&self, i: usize) -> BlockShape {
        match &self.layer_shapes {
            Some(s) => s.encoder[i],
            None => self.uniform_block(false),
        }
    }

    /// Shape of decoder layer `i`.
    pub fn decoder_block(&self, i: usize) -> BlockShape {
        match &self.layer_shapes {
            Some(s) => s.decoder[i],
            None => self.uniform_block(true),
        }
    }

    /// The block shape of the head counts and FFN widths above.
    fn uniform_block(&self, decoder: bool) -> BlockShape {
        if decoder {
            BlockShape {
                self_attention_heads: self.decoder_attention_heads,
                cross_attention_heads: self.decoder_attention_heads,
                ffn_dim: self.decoder_ffn_dim,
            }
        } else {
            BlockShape {
                self_attention_heads: self.encoder_attention_heads,
                cross_attention_heads: 0,
                ffn_dim: self.encoder_ffn_dim,
            }
        }
    }

    /// Whether every layer has the uniform shape of the head counts and FFN widths above
    /// (formats that hold one shape for all layers, such as whisper.cpp's, need this).
    pub fn is_uniform(&self) -> bool {
        (0..self.encoder_layers).all(|i| self.encoder_block(i) == self.uniform_block(false))
            && (0..self.decoder_layers).all(|i| self.decoder_block(i) == self.uniform_block(true))
    }

    /// Prunable parameters (attention and FFN modules of every block, [`BlockShape::parameters`]).
    pub fn block_parameters(&self) -> usize {
        let d = self.d_model;
        (0..self.encoder_layers)
            .map(|i| self.encoder_block(i).parameters(d, self.encoder_head_dim()))
            .chain(
                (0..self.decoder_layers)
                    .map(|i| self.decoder_block(i).parameters(d, self.decoder_head_dim())),
            )
            .sum()
    }

    /// English-only models have 51864 tokens; multilingual ones have more.
    pub fn is_multilingual(&self) -> bool {
        self.vocab_size >= 51865
    }

    /// Parameters of the architecture (tied output projection counted once), per-layer shapes
    /// included.
    pub fn parameter_count(&self) -> usize {
        let d = self.d_model;
        let ln = 2 * d;
        let conv = self.num_mel_bins * d * 3 + d + d * d * 3 + d;
        conv + self.max_source_positions * d
            + ln
            + self.vocab_size * d
            + self.max_target_positions * d
            + ln
            + self.block_parameters()
    }
}
