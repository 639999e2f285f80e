//! CTranslate2 `WhisperSpec` to Hugging Face tensor names.
//!
//! The renaming is declared as a table per layer kind. CTranslate2 fuses self-attention
//! q/k/v into one `[3d, d]` matrix and cross-attention k/v into `[2d, d]`; they are split
//! here. The key bias slice is dropped: Hugging Face's `k_proj` has none, and a bias on
//! keys adds the same `q·b` to every score of a query, which softmax cancels exactly.

use std::collections::BTreeMap;

use candle_core::{Device, Tensor};

use super::config::WhisperConfig;
use crate::checkpoint::ct2::Ct2File;
use crate::checkpoint::TensorStore;
use crate::error::{Error, Result};

/// Norm and linear renames shared by encoder and decoder layers: (ct2 suffix, HF suffix).
const LAYER_RENAMES: &[(&str, &str)] = &[
    (
        "self_attention/layer_norm/gamma",
        "self_attn_layer_norm.weight",
    ),
    (
        "self_attention/layer_norm/beta",
        "self_attn_layer_norm.bias",
    ),
    (
        "self_attention/linear_1/weight",
        "self_attn.out_proj.weight",
    ),
    ("self_attention/linear_1/bias", "self_attn.out_proj.bias"),
    ("ffn/layer_norm/gamma", "final_layer_norm.weight"),
    ("ffn/layer_norm/beta", "final_layer_norm.bias"),
    ("ffn/linear_0/weight", "fc1.weight"),
    ("ffn/linear_0/bias", "fc1.bias"),
    ("ffn/linear_1/weight", "fc2.weight"),
    ("ffn/linear_1/bias", "fc2.bias"),
];

/// Extra renames of decoder layers (cross-attention).
const DECODER_LAYER_RENAMES: &[(&str, &str)] = &[
    (
        "attention/layer_norm/gamma",
        "encoder_attn_layer_norm.weight",
    ),
    ("attention/layer_norm/beta", "encoder_attn_layer_norm.bias"),
    ("attention/linear_0/weight", "encoder_attn.q_proj.weight"),
    ("attention/linear_0/bias", "encoder_attn.q_proj.bias"),
    ("attention/linear_2/weight", "encoder_attn.out_proj.weight"),
    ("attention/linear_2/bias", "encoder_attn.out_proj.bias"),
];

/// Fused projections split along dim 0: (ct2 suffix, HF suffixes in order; `None` drops a slice).
const FUSED_SPLITS: &[(&str, &[Option<&str>])] = &[
    (
        "self_attention/linear_0/weight",
        &[
            Some("self_attn.q_proj.weight"),
            Some("self_attn.k_proj.weight"),
            Some("self_attn.v_proj.weight"),
        ],
    ),
    (
        "self_attention/linear_0/bias",
        &[
            Some("self_attn.q_proj.bias"),
            None,
            Some("self_attn.v_proj.bias"),
        ],
    ),
];

/// Decoder-only fused splits.
const DECODER_FUSED_SPLITS: &[(&str, &[Option<&str>])] = &[
    (
        "attention/linear_1/weight",
        &[
            Some("encoder_attn.k_proj.weight"),
            Some("encoder_attn.v_proj.weight"),
        ],
    ),
    (
        "attention/linear_1/bias",
        &[None, Some("encoder_attn.v_proj.bias")],
    ),
];

/// Whole-model renames.
const GLOBAL_RENAMES: &[(&str, &str)] = &[
    ("encoder/conv1/weight", "model.encoder.conv1.weight"),
    ("encoder/conv1/bias", "model.encoder.conv1.bias"),
    ("encoder/conv2/weight", "model.encoder.conv2.weight"),
    ("encoder/conv2/bias", "model.encoder.conv2.bias"),
    (
        "encoder/position_encodings/encodings",
        "model.encoder.embed_positions.weight",
    ),
    (
        "encoder/layer_norm/gamma",
        "model.encoder.layer_norm.weight",
    ),
    ("encoder/layer_norm/beta", "model.encoder.layer_norm.bias"),
    (
        "decoder/embeddings/weight",
        "model.decoder.embed_tokens.weight",
    ),
    (
        "decoder/position_encodings/encodings",
        "model.decoder.embed_positions.weight",
    ),
    (
        "decoder/layer_norm/gamma",
        "model.decoder.layer_norm.weight",
    ),
    ("decoder/layer_norm/beta", "model.decoder.layer_norm.bias"),
];

/// Scalars read into the configuration; reported as used.
const CONFIG_SCALARS: &[&str] = &[
    "encoder/num_heads",
    "decoder/num_heads",
    "decoder/activation",
    "decoder/alibi",
    "decoder/alignment_heads",
    "decoder/alignment_layer",
    "decoder/pre_norm",
    "decoder/scale_embeddings",
    "decoder/start_from_zero_embedding",
    "encoder/activation",
    "encoder/pre_norm",
];

/// CTranslate2's `config.json` beside `model.bin` (decoding defaults).
#[derive(Debug, Clone, Default, serde::Deserialize)]
pub struct Ct2WhisperConfig {
    /// Tokens suppressed at every step.
    #[serde(default)]
    pub suppress_ids: Vec<u32>,
    /// Tokens suppressed at the first step.
    #[serde(default)]
    pub suppress_ids_begin: Vec<u32>,
    /// Language token ids.
    #[serde(default)]
    pub lang_ids: Vec<u32>,
}

fn count_layers(file: &Ct2File, part: &str) -> usize {
    (0..)
        .take_while(|i| {
            file.variables
                .contains_key(&format!("{part}/layer_{i}/ffn/linear_0/weight"))
        })
        .count()
}

/// Convert a Whisper `model.bin` into a store with Hugging Face names, plus the configuration
/// derived from its shapes. Returns the names of CTranslate2 variables nothing consumed.
pub fn convert(
    file: &Ct2File,
    decoding: &Ct2WhisperConfig,
    device: &Device,
) -> Result<(TensorStore, WhisperConfig, Vec<String>)> {
    let path = file.path().display().to_string();
    if file.spec != "WhisperSpec" {
        return Err(Error::UnknownModel {
            path: file.path().into(),
            reason: format!("spec `{}` is not WhisperSpec", file.spec),
        });
    }
    // Shapes the configuration is read from; a wrong rank is refused before any indexing.
    let shape = |name: &str, expected: &str| -> Result<Vec<usize>> {
        let shape = file.variable(name)?.shape.clone();
        let rank = expected.matches(',').count() + 1;
        if shape.len() != rank {
            return Err(Error::malformed(
                file.path(),
                format!("{name} has shape {shape:?}, expected {expected}"),
            ));
        }
        Ok(shape)
    };
    let conv1 = shape("encoder/conv1/weight", "[d, n_mels, 3]")?;
    let emb = shape("decoder/embeddings/weight", "[vocab, d]")?;
    let fc1 = shape("encoder/layer_0/ffn/linear_0/weight", "[ffn, d]")?;
    let dec_fc1 = shape("decoder/layer_0/ffn/linear_0/weight", "[ffn, d]")?;
    let encoder_positions = shape("encoder/position_encodings/encodings", "[positions, d]")?;
    let decoder_positions = shape("decoder/position_encodings/encodings", "[positions, d]")?;
    let heads = |name: &str| -> Result<usize> {
        let h = file.scalar_int(name)?;
        usize::try_from(h)
            .ok()
            .filter(|&h| h > 0)
            .ok_or_else(|| Error::malformed(file.path(), format!("`{name}` = {h}")))
    };
    let config = WhisperConfig {
        vocab_size: emb[0],
        num_mel_bins: conv1[1],
        encoder_layers: count_layers(file, "encoder"),
        encoder_attention_heads: heads("encoder/num_heads")?,
        decoder_layers: count_layers(file, "decoder"),
        decoder_attention_heads: heads("decoder/num_heads")?,
        d_model: conv1[0],
        encoder_ffn_dim: fc1[0],
        decoder_ffn_dim: dec_fc1[0],
        max_source_positions: encoder_positions[0],
        max_target_positions: decoder_positions[0],
        suppress_tokens: decoding.suppress_ids.clone(),
        begin_suppress_tokens: decoding.suppress_ids_begin.clone(),
        activation_function: "gelu".into(),
        layer_shapes: None,
    };
    config.validate(&path)?;

    let mut consumed: Vec<String> = CONFIG_SCALARS.iter().map(|s| s.to_string()).collect();
    let mut tensors = BTreeMap::new();
    let take = |ct2: &str, consumed: &mut Vec<String>| -> Result<Tensor> {
        consumed.push(ct2.to_string());
        file.tensor(ct2, device)
    };
    for (ct2, hf) in GLOBAL_RENAMES {
        tensors.insert(hf.to_string(), take(ct2, &mut consumed)?);
    }
    for (part, layers, decoder) in [
        ("encoder", config.encoder_layers, false),
        ("decoder", config.decoder_layers, true),
    ] {
        for i in 0..layers {
            let ct2_prefix = format!("{part}/layer_{i}");
            let hf_prefix = format!("model.{part}.layers.{i}");
            let renames =
                LAYER_RENAMES
                    .iter()
                    .chain(if decoder { DECODER_LAYER_RENAMES } else { &[] });
            for (ct2, hf) in renames {
                tensors.insert(
                    format!("{hf_prefix}.{hf}"),
                    take(&format!("{ct2_prefix}/{ct2}"), &mut consumed)?,
                );
            }
            let splits =
                FUSED_SPLITS
                    .iter()
                    .chain(if decoder { DECODER_FUSED_SPLITS } else { &[] });
            for (ct2, parts) in splits {
                let name = format!("{ct2_prefix}/{ct2}");
                let fused = take(&name, &mut consumed)?;
                let rows = fused.dim(0)?;
                if rows != parts.len() * config.d_model {
                    return Err(Error::malformed(
                        file.path(),
                        format!(
                            "`{name}` has {rows} rows, expected {} x d_model",
                            parts.len()
                        ),
                    ));
                }
                for (k, part_name) in parts.iter().enumerate() {
                    if let Some(hf) = part_name {
                        let slice = fused
                            .narrow(0, k * config.d_model, config.d_model)?
                            .contiguous()?;
                        tensors.insert(format!("{hf_prefix}.{hf}"), slice);
                    }
                }
            }
        }
    }
    let unused = file
        .variables
        .keys()
        .filter(|k| !consumed.contains(k))
        .cloned()
        .collect();
    Ok((
        TensorStore::new(path, tensors, device.clone()),
        config,
        unused,
    ))
}
