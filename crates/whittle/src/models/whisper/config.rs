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
}

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

    /// English-only models have 51864 tokens; multilingual ones have more.
    pub fn is_multilingual(&self) -> bool {
        self.vocab_size >= 51865
    }

    /// Parameters of the architecture (tied output projection counted once).
    pub fn parameter_count(&self) -> usize {
        let d = self.d_model;
        let attn = 4 * d * d + 3 * d; // q,k,v,out weights; q,v,out biases
        let ln = 2 * d;
        let enc_layer = attn + ln + 2 * d * self.encoder_ffn_dim + self.encoder_ffn_dim + d + ln;
        let dec_layer =
            2 * attn + 2 * ln + 2 * d * self.decoder_ffn_dim + self.decoder_ffn_dim + d + ln;
        let conv = self.num_mel_bins * d * 3 + d + d * d * 3 + d;
        conv + self.max_source_positions * d
            + self.encoder_layers * enc_layer
            + ln
            + self.vocab_size * d
            + self.max_target_positions * d
            + self.decoder_layers * dec_layer
            + ln
    }
}
