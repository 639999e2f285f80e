//! wav2vec 2.0 and HuBERT encoders with a CTC head, and the pieces the Conformer shares with them.
//!
//! Follows transformers' `Wav2Vec2ForCTC` / `HubertForCTC` (modeling_wav2vec2.py, modular_hubert.py,
//! 5.25) in eval mode: Baevski et al. 2020, "wav2vec 2.0"; Hsu et al. 2021, "HuBERT".
//!
//! - Conv feature encoder: `conv_layers.i` (no padding), then either a per-channel group norm after
//!   the first conv only (`feat_extract_norm = "group"`) or a layer norm over channels after every
//!   conv (`"layer"`), then the activation.
//! - Feature projection: layer norm (optional in HuBERT) and a linear layer to `hidden_size`.
//! - Positional conv embedding: a grouped conv of width `num_conv_pos_embeddings` with weight norm
//!   over the kernel axis (Salimans & Kingma 2016; `w = g v / ||v||`, the norm taken over the
//!   output and input channels for each tap, folded into one kernel at load), "same" padding (the
//!   last frame dropped for even widths), activation, added to its input.
//! - Encoder: post-LN layers after a layer norm (base), or pre-LN layers followed by a final layer
//!   norm (`do_stable_layer_norm`, large); self-attention without mask (one utterance or equal
//!   lengths), GELU feed-forward.
//! - CTC head: `lm_head`, a linear layer to the vocabulary.
//!
//! # Shapes
//! waveform `[batch, samples]` to conv features `[batch, conv_dim[-1], frames]`, hidden states
//! `[batch, frames, hidden_size]`, logits `[batch, frames, vocab_size]`.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Module, Tensor, D};

use super::config::{Activation, Family, FeatExtractNorm, Wav2Vec2Config};
use super::conformer::{ConformerLayer, ConformerPositions};
use crate::checkpoint::TensorStore;
use crate::error::{Error, Result};
use crate::models::{LayerMut, LayerRef, LayerRole, Layers};
use crate::nn::{Conv1d, LayerNorm, Linear, Weight};

/// PyTorch's default `eps` of `nn.LayerNorm`, `nn.GroupNorm` and `nn.BatchNorm1d`, used where
/// transformers builds those layers without the config's `layer_norm_eps`.
pub(super) const TORCH_NORM_EPS: f64 = 1e-5;

impl Activation {
    /// Apply the activation elementwise.
    pub fn apply(self, x: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Activation::Gelu => crate::nn::fused::gelu_erf(x),
            Activation::GeluTanh => x.gelu(),
            Activation::Relu => x.relu(),
            Activation::Swish => x.silu(),
        }
    }
}

/// A layer norm `{name}.weight`/`.bias` of width `dim` with `eps`.
pub(super) fn layer_norm(
    store: &TensorStore,
    name: &str,
    dim: usize,
    eps: f64,
    dtype: DType,
) -> Result<LayerNorm> {
    let mut norm = LayerNorm::load(store, name, dim, dtype)?;
    norm.eps = eps;
    Ok(norm)
}

/// Put a layer norm's `{name}.weight` and `{name}.bias` into `out`.
pub(super) fn insert_norm(out: &mut BTreeMap<String, Tensor>, name: &str, norm: &LayerNorm) {
    out.insert(format!("{name}.weight"), norm.weight.clone());
    out.insert(format!("{name}.bias"), norm.bias.clone());
}

/// Feed-forward block: `output_dense(act(intermediate_dense(x)))`.
#[derive(Debug, Clone)]
pub(super) struct FeedForward {
    pub(super) intermediate_dense: Linear,
    pub(super) output_dense: Linear,
    pub(super) activation: Activation,
}

impl FeedForward {
    /// `{prefix}.intermediate_dense` `[width, hidden]` and `{prefix}.output_dense`
    /// `[hidden, width]`, or `None` when `width` is 0 (the module was pruned away).
    pub(super) fn load(
        store: &TensorStore,
        prefix: &str,
        config: &Wav2Vec2Config,
        width: usize,
        dtype: DType,
    ) -> Result<Option<Self>> {
        if width == 0 {
            return Ok(None);
        }
        let h = config.hidden_size;
        Ok(Some(Self {
            intermediate_dense: Linear::load(
                store,
                &format!("{prefix}.intermediate_dense"),
                h,
                width,
                true,
                dtype,
            )?,
            output_dense: Linear::load(
                store,
                &format!("{prefix}.output_dense"),
                width,
                h,
                true,
                dtype,
            )?,
            activation: config.hidden_act,
        }))
    }

    /// Units (the intermediate width).
    pub(super) fn width(&self) -> usize {
        self.output_dense.weight.dims().1
    }

    pub(super) fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self
            .activation
            .apply(&self.intermediate_dense.forward(x)?)?;
        self.output_dense.forward(&h)
    }
}

/// Query, key, value and output projections of a self-attention block (all with bias).
#[derive(Debug, Clone)]
pub(super) struct Projections {
    pub(super) q: Linear,
    pub(super) k: Linear,
    pub(super) v: Linear,
    pub(super) out: Linear,
    pub(super) heads: usize,
}

impl Projections {
    /// Load `{prefix}.{names[i]}` for q, k, v (`[heads * head_dim, hidden]`) and out
    /// (`[hidden, heads * head_dim]`), or `None` when `heads` is 0 (pruned away).
    pub(super) fn load(
        store: &TensorStore,
        prefix: &str,
        names: [&str; 4],
        config: &Wav2Vec2Config,
        heads: usize,
        dtype: DType,
    ) -> Result<Option<Self>> {
        if heads == 0 {
            return Ok(None);
        }
        let (h, width) = (config.hidden_size, heads * config.head_dim());
        let load = |name: &str, inputs, outputs| {
            Linear::load(
                store,
                &format!("{prefix}.{name}"),
                inputs,
                outputs,
                true,
                dtype,
            )
        };
        Ok(Some(Self {
            q: load(names[0], h, width)?,
            k: load(names[1], h, width)?,
            v: load(names[2], h, width)?,
            out: load(names[3], width, h)?,
            heads,
        }))
    }

    /// Plain scaled dot-product self-attention of `x` `[b, t, d]`, with `qk_input` feeding the
    /// query and key projections (the rotary Conformer rotates only those) when given.
    pub(super) fn self_attention(
        &self,
        x: &Tensor,
        qk_input: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let qk = qk_input.unwrap_or(x);
        let (q, k, v) = (self.q.forward(qk)?, self.k.forward(qk)?, self.v.forward(x)?);
        let out = if crate::nn::attention::fusable(&q, &k, &v) {
            crate::nn::attention::attention(&q, &k, &v, self.heads, false)?
        } else {
            let (q, k, v) = (self.split(&q)?, self.split(&k)?, self.split(&v)?);
            let scale = 1.0 / ((q.dim(D::Minus1)? as f64).sqrt());
            let scores = (q.matmul(&k.t()?)? * scale)?;
            self.merge(&crate::nn::softmax_last_dim(&scores)?.matmul(&v)?)?
        };
        self.out.forward(&out)
    }

    /// `[b, t, d]` to `[b, heads, t, d / heads]`.
    pub(super) fn split(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        x.reshape((b, t, self.heads, d / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// `[b, heads, t, d / heads]` to `[b, t, d]`.
    pub(super) fn merge(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, h, t, hd) = x.dims4()?;
        x.transpose(1, 2)?.reshape((b, t, h * hd))
    }
}

/// A wav2vec2 / HuBERT Transformer layer, post-LN or pre-LN.
#[derive(Debug, Clone)]
pub(super) struct TransformerLayer {
    /// `None`: pruned away (no residual branch).
    pub(super) attention: Option<Projections>,
    pub(super) layer_norm: LayerNorm,
    /// `None`: pruned away.
    pub(super) feed_forward: Option<FeedForward>,
    pub(super) final_layer_norm: LayerNorm,
    pub(super) pre_norm: bool,
}

impl TransformerLayer {
    fn load(
        store: &TensorStore,
        prefix: &str,
        index: usize,
        config: &Wav2Vec2Config,
        dtype: DType,
    ) -> Result<Self> {
        let (h, eps) = (config.hidden_size, config.layer_norm_eps);
        let shape = config.layer_shape(index);
        Ok(Self {
            attention: Projections::load(
                store,
                &format!("{prefix}.attention"),
                ["q_proj", "k_proj", "v_proj", "out_proj"],
                config,
                shape.attention_heads,
                dtype,
            )?,
            layer_norm: layer_norm(store, &format!("{prefix}.layer_norm"), h, eps, dtype)?,
            feed_forward: FeedForward::load(
                store,
                &format!("{prefix}.feed_forward"),
                config,
                shape.ffn_dim,
                dtype,
            )?,
            final_layer_norm: layer_norm(
                store,
                &format!("{prefix}.final_layer_norm"),
                h,
                eps,
                dtype,
            )?,
            pre_norm: config.do_stable_layer_norm,
        })
    }

    /// A removed module adds nothing; post-LN norms sit on the residual stream, so they stay.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        if self.pre_norm {
            let x = match &self.attention {
                Some(a) => (x + a.self_attention(&self.layer_norm.forward(x)?, None)?)?,
                None => x.clone(),
            };
            match &self.feed_forward {
                Some(f) => &x + f.forward(&self.final_layer_norm.forward(&x)?)?,
                None => Ok(x),
            }
        } else {
            let x = match &self.attention {
                Some(a) => (x + a.self_attention(x, None)?)?,
                None => x.clone(),
            };
            let x = self.layer_norm.forward(&x)?;
            let x = match &self.feed_forward {
                Some(f) => (&x + f.forward(&x)?)?,
                None => x,
            };
            self.final_layer_norm.forward(&x)
        }
    }
}

/// Norm after a feature-encoder conv.
#[derive(Debug, Clone)]
enum ConvNorm {
    None,
    /// One group per channel: each channel normalised over time, then scaled and shifted.
    Group {
        weight: Tensor,
        bias: Tensor,
    },
    /// Over channels, at each frame.
    Layer(LayerNorm),
}

#[derive(Debug, Clone)]
struct ConvLayer {
    conv: Conv1d,
    norm: ConvNorm,
}

/// The convolutional feature encoder.
#[derive(Debug, Clone)]
struct FeatureEncoder {
    layers: Vec<ConvLayer>,
    activation: Activation,
}

impl FeatureEncoder {
    fn load(store: &TensorStore, prefix: &str, c: &Wav2Vec2Config, dtype: DType) -> Result<Self> {
        let layers = (0..c.conv_dim.len())
            .map(|i| {
                let p = format!("{prefix}.feature_extractor.conv_layers.{i}");
                let (cin, cout) = (if i == 0 { 1 } else { c.conv_dim[i - 1] }, c.conv_dim[i]);
                let kernel = c.conv_kernel[i];
                let conv = Conv1d {
                    weight: Weight::Float(
                        store
                            .get(&format!("{p}.conv.weight"), &[cout, cin, kernel], dtype)?
                            .reshape((cout, cin * kernel))?,
                    ),
                    kernel,
                    bias: if c.conv_bias {
                        Some(store.get(&format!("{p}.conv.bias"), &[cout], dtype)?)
                    } else {
                        None
                    },
                    padding: 0,
                    stride: c.conv_stride[i],
                };
                let norm = match (c.feat_extract_norm, i) {
                    (FeatExtractNorm::Group, 0) => ConvNorm::Group {
                        weight: store.get(&format!("{p}.layer_norm.weight"), &[cout], dtype)?,
                        bias: store.get(&format!("{p}.layer_norm.bias"), &[cout], dtype)?,
                    },
                    (FeatExtractNorm::Group, _) => ConvNorm::None,
                    (FeatExtractNorm::Layer, _) => ConvNorm::Layer(layer_norm(
                        store,
                        &format!("{p}.layer_norm"),
                        cout,
                        TORCH_NORM_EPS,
                        dtype,
                    )?),
                };
                Ok(ConvLayer { conv, norm })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            layers,
            activation: c.feat_extract_activation,
        })
    }

    /// `[b, samples]` to `[b, channels, frames]`.
    fn forward(&self, waveform: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = waveform.unsqueeze(1)?;
        for layer in &self.layers {
            x = layer.conv.forward(&x)?;
            if let ConvNorm::Group { weight, bias } = &layer.norm {
                let gelu = self.activation == Activation::Gelu;
                if let Some(y) =
                    crate::nn::fused::channel_norm(&x, weight, bias, TORCH_NORM_EPS, gelu)?
                {
                    x = if gelu { y } else { self.activation.apply(&y)? };
                    continue;
                }
            }
            x = match &layer.norm {
                ConvNorm::None => x,
                ConvNorm::Group { weight, bias } => {
                    let mean = x.mean_keepdim(2)?;
                    let centered = x.broadcast_sub(&mean)?;
                    let var = centered.sqr()?.mean_keepdim(2)?;
                    let normed = centered.broadcast_div(&(var + TORCH_NORM_EPS)?.sqrt()?)?;
                    let c = weight.dim(0)?;
                    normed
                        .broadcast_mul(&weight.reshape((1, c, 1))?)?
                        .broadcast_add(&bias.reshape((1, c, 1))?)?
                }
                ConvNorm::Layer(norm) => norm.forward(&x.transpose(1, 2)?)?.transpose(1, 2)?,
            };
            x = self.activation.apply(&x)?;
        }
        Ok(x)
    }
}

/// `w = g * v / ||v||` with the norm over every axis but the last (PyTorch's `weight_norm(...,
/// dim=2)` of a conv kernel `v [out, in / groups, k]`, `g [1, 1, k]`).
pub fn fold_weight_norm(g: &Tensor, v: &Tensor) -> candle_core::Result<Tensor> {
    let norm = v.sqr()?.sum_keepdim(0)?.sum_keepdim(1)?.sqrt()?;
    v.broadcast_mul(&g.broadcast_div(&norm)?)
}

/// The positional conv embedding, with its weight norm folded.
#[derive(Debug, Clone)]
pub(super) struct PositionalConv {
    /// `[hidden, hidden / groups, k]`.
    weight: Tensor,
    bias: Tensor,
    groups: usize,
    activation: Activation,
}

impl PositionalConv {
    fn load(store: &TensorStore, prefix: &str, c: &Wav2Vec2Config, dtype: DType) -> Result<Self> {
        let (h, k, groups) = (
            c.hidden_size,
            c.num_conv_pos_embeddings,
            c.num_conv_pos_embedding_groups,
        );
        let p = format!("{prefix}.encoder.pos_conv_embed.conv");
        let v_shape = [h, h / groups, k];
        // Weight norm as torch.nn.utils.parametrizations.weight_norm saves it (transformers 5),
        // as the older torch.nn.utils.weight_norm did, or already folded.
        let norm_names = [
            (
                "parametrizations.weight.original0",
                "parametrizations.weight.original1",
            ),
            ("weight_g", "weight_v"),
        ]
        .into_iter()
        .find(|(g, _)| store.contains(&format!("{p}.{g}")));
        let weight = match norm_names {
            Some((g, v)) => {
                let g = store.get(&format!("{p}.{g}"), &[1, 1, k], DType::F32)?;
                let v = store.get(&format!("{p}.{v}"), &v_shape, DType::F32)?;
                fold_weight_norm(&g, &v)?.to_dtype(dtype)?
            }
            None => store.get(&format!("{p}.weight"), &v_shape, dtype)?,
        };
        Ok(Self {
            weight,
            bias: store.get(&format!("{p}.bias"), &[h], dtype)?,
            groups,
            activation: c.feat_extract_activation,
        })
    }

    /// `[b, t, d]` to the position embedding `[b, t, d]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (h, k) = (self.weight.dim(0)?, self.weight.dim(2)?);
        let t = x.dim(1)?;
        let y = x
            .transpose(1, 2)?
            .contiguous()?
            .conv1d(&self.weight, k / 2, 1, 1, self.groups)?
            .broadcast_add(&self.bias.reshape((1, h, 1))?)?;
        // Even kernels give one frame too many ("same pad layer" drops the last).
        let y = y.narrow(2, 0, t)?;
        self.activation.apply(&y)?.transpose(1, 2)
    }
}

/// Layer norm (optional in HuBERT) and projection of the conv features to the model width.
#[derive(Debug, Clone)]
pub(super) struct FeatureProjection {
    pub(super) layer_norm: Option<LayerNorm>,
    pub(super) projection: Linear,
}

/// The encoder stack of each family.
#[derive(Debug, Clone)]
pub(super) enum Encoder {
    /// wav2vec2 / HuBERT.
    Transformer {
        pos_conv: PositionalConv,
        /// Before the first layer (post-LN) or after the last (pre-LN).
        layer_norm: LayerNorm,
        layers: Vec<TransformerLayer>,
        pre_norm: bool,
    },
    /// Wav2Vec2-Conformer (transformers builds a positional conv here too but never runs it; its
    /// tensors stay unused).
    Conformer {
        positions: ConformerPositions,
        layers: Vec<ConformerLayer>,
        layer_norm: LayerNorm,
    },
}

/// A wav2vec2, HuBERT or Wav2Vec2-Conformer encoder with its CTC head.
#[derive(Debug, Clone)]
pub struct CtcModel {
    pub(super) config: Wav2Vec2Config,
    feature_encoder: FeatureEncoder,
    pub(super) feature_projection: FeatureProjection,
    pub(super) encoder: Encoder,
    pub(super) lm_head: Linear,
    dtype: DType,
    device: Device,
}

/// Every linear layer of a [`CtcModel`] by tensor path, through destructuring only, so one body
/// serves `&self` and `&mut self`.
macro_rules! named_linears {
    ($model:expr) => {{
        let CtcModel {
            config,
            feature_projection,
            encoder,
            lm_head,
            ..
        } = $model;
        let p = config.family.tensor_prefix();
        let FeatureProjection { projection, .. } = feature_projection;
        let mut out = Vec::new();
        macro_rules! ffn {
            ($l:expr, $name:expr, $ffn:expr) => {{
                let FeedForward {
                    intermediate_dense,
                    output_dense,
                    ..
                } = $ffn;
                out.push((
                    format!("{}.{}.intermediate_dense", $l, $name),
                    LayerRole::FeedForwardIn,
                    intermediate_dense,
                ));
                out.push((
                    format!("{}.{}.output_dense", $l, $name),
                    LayerRole::FeedForwardOut,
                    output_dense,
                ));
            }};
        }
        out.push((
            format!("{p}.feature_projection.projection"),
            LayerRole::FeatureProjection,
            projection,
        ));
        match encoder {
            Encoder::Transformer { layers, .. } => {
                for (i, layer) in layers.into_iter().enumerate() {
                    let l = format!("{p}.encoder.layers.{i}");
                    let TransformerLayer {
                        attention,
                        feed_forward,
                        ..
                    } = layer;
                    if let Some(Projections {
                        q, k, v, out: o, ..
                    }) = attention
                    {
                        out.extend([
                            (
                                format!("{l}.attention.q_proj"),
                                LayerRole::AttentionQuery,
                                q,
                            ),
                            (format!("{l}.attention.k_proj"), LayerRole::AttentionKey, k),
                            (
                                format!("{l}.attention.v_proj"),
                                LayerRole::AttentionValue,
                                v,
                            ),
                            (
                                format!("{l}.attention.out_proj"),
                                LayerRole::AttentionOutput,
                                o,
                            ),
                        ]);
                    }
                    if let Some(f) = feed_forward {
                        ffn!(l, "feed_forward", f);
                    }
                }
            }
            Encoder::Conformer { layers, .. } => {
                for (i, layer) in layers.into_iter().enumerate() {
                    let l = format!("{p}.encoder.layers.{i}");
                    let ConformerLayer {
                        ffn1,
                        self_attn,
                        conv_module,
                        ffn2,
                        ..
                    } = layer;
                    if let Some(f) = ffn1 {
                        ffn!(l, "ffn1", f);
                    }
                    if let Some(super::conformer::RelAttention {
                        projections:
                            Projections {
                                q, k, v, out: o, ..
                            },
                        linear_pos,
                        ..
                    }) = self_attn
                    {
                        out.extend([
                            (
                                format!("{l}.self_attn.linear_q"),
                                LayerRole::AttentionQuery,
                                q,
                            ),
                            (
                                format!("{l}.self_attn.linear_k"),
                                LayerRole::AttentionKey,
                                k,
                            ),
                            (
                                format!("{l}.self_attn.linear_v"),
                                LayerRole::AttentionValue,
                                v,
                            ),
                            (
                                format!("{l}.self_attn.linear_out"),
                                LayerRole::AttentionOutput,
                                o,
                            ),
                        ]);
                        if let Some(pos) = linear_pos {
                            out.push((
                                format!("{l}.self_attn.linear_pos"),
                                LayerRole::AttentionPosition,
                                pos,
                            ));
                        }
                    }
                    if let Some(super::conformer::ConvModule {
                        pointwise_conv1,
                        pointwise_conv2,
                        ..
                    }) = conv_module
                    {
                        out.push((
                            format!("{l}.conv_module.pointwise_conv1"),
                            LayerRole::Pointwise,
                            pointwise_conv1,
                        ));
                        out.push((
                            format!("{l}.conv_module.pointwise_conv2"),
                            LayerRole::Pointwise,
                            pointwise_conv2,
                        ));
                    }
                    if let Some(f) = ffn2 {
                        ffn!(l, "ffn2", f);
                    }
                }
            }
        }
        out.push(("lm_head".to_string(), LayerRole::OutputHead, lm_head));
        out
    }};
}

impl CtcModel {
    /// Load a `*ForCTC` checkpoint by transformers' tensor names, converting weights to `dtype`.
    /// Every tensor's shape is checked; the store's report lists what was left unused.
    pub fn load(store: &TensorStore, config: &Wav2Vec2Config, dtype: DType) -> Result<Self> {
        let mut config = config.clone();
        // A config built in code may not have been validated.
        config.validate(std::path::Path::new(store.source_name()))?;
        let c = &config;
        let p = c.family.tensor_prefix();
        let (h, eps) = (c.hidden_size, c.layer_norm_eps);
        let conv_out = *c.conv_dim.last().expect("validated: non-empty");
        let feature_projection = FeatureProjection {
            layer_norm: if c.has_feature_projection_norm() {
                Some(layer_norm(
                    store,
                    &format!("{p}.feature_projection.layer_norm"),
                    conv_out,
                    eps,
                    dtype,
                )?)
            } else {
                None
            },
            projection: Linear::load(
                store,
                &format!("{p}.feature_projection.projection"),
                conv_out,
                h,
                true,
                dtype,
            )?,
        };
        let encoder = match c.family {
            Family::Wav2Vec2 | Family::Hubert => Encoder::Transformer {
                pos_conv: PositionalConv::load(store, p, c, dtype)?,
                layer_norm: layer_norm(store, &format!("{p}.encoder.layer_norm"), h, eps, dtype)?,
                layers: (0..c.num_hidden_layers)
                    .map(|i| {
                        TransformerLayer::load(
                            store,
                            &format!("{p}.encoder.layers.{i}"),
                            i,
                            c,
                            dtype,
                        )
                    })
                    .collect::<Result<_>>()?,
                pre_norm: c.do_stable_layer_norm,
            },
            Family::Conformer => Encoder::Conformer {
                positions: ConformerPositions::load(store, p, c)?,
                layers: (0..c.num_hidden_layers)
                    .map(|i| {
                        ConformerLayer::load(store, &format!("{p}.encoder.layers.{i}"), i, c, dtype)
                    })
                    .collect::<Result<_>>()?,
                layer_norm: layer_norm(store, &format!("{p}.encoder.layer_norm"), h, eps, dtype)?,
            },
        };
        Ok(Self {
            feature_encoder: FeatureEncoder::load(store, p, c, dtype)?,
            feature_projection,
            encoder,
            lm_head: Linear::load(store, "lm_head", h, c.vocab_size, true, dtype)?,
            dtype,
            device: store.device().clone(),
            config,
        })
    }

    /// The configuration the model was loaded with.
    pub fn config(&self) -> &Wav2Vec2Config {
        &self.config
    }

    /// Compute dtype.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Device of the weights.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Logit frames for `samples` input samples.
    pub fn output_frames(&self, samples: usize) -> usize {
        self.config.output_frames(samples)
    }

    /// CTC logits `[batch, frames, vocab]` of `waveform` `[batch, samples]` (f32, already
    /// normalised when the feature extractor says `do_normalize`).
    pub fn forward(&self, waveform: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with_hidden(waveform)?.0)
    }

    /// Logits and the encoder's hidden states `[batch, frames, hidden]`: the input of the first
    /// layer, then the output of every layer (`num_hidden_layers + 1` tensors; for pre-LN and
    /// Conformer encoders the last one is before the final layer norm).
    pub fn forward_with_hidden(&self, waveform: &Tensor) -> Result<(Tensor, Vec<Tensor>)> {
        let (_, samples) = waveform.dims2()?;
        if self.output_frames(samples) == 0 {
            return Err(Error::config(
                "input waveform",
                format!(
                    "{samples} samples are fewer than the feature encoder's receptive field \
                     (no output frame)"
                ),
            ));
        }
        let features = self
            .feature_encoder
            .forward(&waveform.to_dtype(self.dtype)?)?
            .transpose(1, 2)?;
        let FeatureProjection {
            layer_norm,
            projection,
        } = &self.feature_projection;
        let features = match layer_norm {
            Some(norm) => norm.forward(&features)?,
            None => features,
        };
        let mut x = projection.forward(&features)?;
        let mut hidden = Vec::new();
        match &self.encoder {
            Encoder::Transformer {
                pos_conv,
                layer_norm,
                layers,
                pre_norm,
            } => {
                x = (&x + pos_conv.forward(&x)?)?;
                if !pre_norm {
                    x = layer_norm.forward(&x)?;
                }
                hidden.push(x.clone());
                for layer in layers {
                    x = layer.forward(&x)?;
                    hidden.push(x.clone());
                }
                if *pre_norm {
                    x = layer_norm.forward(&x)?;
                }
            }
            Encoder::Conformer {
                positions,
                layers,
                layer_norm,
            } => {
                let tables = positions.tables(x.dim(1)?, x.dtype(), x.device())?;
                hidden.push(x.clone());
                for layer in layers {
                    x = layer.forward(&x, tables.as_ref())?;
                    hidden.push(x.clone());
                }
                x = layer_norm.forward(&x)?;
            }
        }
        Ok((self.lm_head.forward(&x)?, hidden))
    }

    /// Every linear layer by checkpoint tensor path without `.weight`
    /// (e.g. `wav2vec2.encoder.layers.0.attention.q_proj`), input to output, `lm_head` last.
    /// The Conformer's pointwise convs (kernel 1) are linear layers here, named as their convs.
    pub fn linears(&self) -> Vec<(String, &Linear)> {
        let layers: Vec<(String, LayerRole, &Linear)> = named_linears!(self);
        layers.into_iter().map(|(n, _, l)| (n, l)).collect()
    }

    /// [`Self::linears`] for compression passes that replace weights.
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        let layers: Vec<(String, LayerRole, &mut Linear)> = named_linears!(self);
        layers.into_iter().map(|(n, _, l)| (n, l)).collect()
    }

    /// Every tensor the model computes with, by checkpoint name, as dense tensors that
    /// [`CtcModel::load`] reads back into the same function: linear weights dequantized, the
    /// positional conv's weight norm folded into `conv.weight`, the Conformer's batch norm folded
    /// into `depthwise_conv.weight` and a `depthwise_conv.bias`, pointwise convs `[out, in, 1]`.
    pub fn tensors(&self) -> Result<BTreeMap<String, Tensor>> {
        self.tensors_except(&[])
    }

    /// Parameters the model computes with: every linear layer's weight and bias and every other
    /// tensor [`CtcModel::tensors`] lists (weight norm and batch norm counted folded, as the
    /// model holds them).
    pub fn parameter_count(&self) -> Result<usize> {
        let linears = self.linears();
        let weights: Vec<String> = linears.iter().map(|(n, _)| format!("{n}.weight")).collect();
        let matrices: usize = linears
            .iter()
            .map(|(_, l)| {
                let (rows, cols) = l.weight.dims();
                rows * cols
            })
            .sum();
        let others: usize = self
            .tensors_except(&weights)?
            .values()
            .map(Tensor::elem_count)
            .sum();
        Ok(matrices + others)
    }

    /// [`CtcModel::tensors`] without the tensors named in `skipped` (not even computed).
    fn tensors_except(&self, skipped: &[String]) -> Result<BTreeMap<String, Tensor>> {
        let mut out = BTreeMap::new();
        for (name, linear) in self.linears() {
            if let Some(bias) = &linear.bias {
                out.insert(format!("{name}.bias"), bias.clone());
            }
            if skipped.contains(&format!("{name}.weight")) {
                continue;
            }
            let mut weight = linear.weight.to_dense()?.to_device(&self.device)?;
            if name.contains(".conv_module.pointwise_conv") {
                weight = weight.unsqueeze(2)?;
            }
            out.insert(format!("{name}.weight"), weight);
        }
        let p = self.config.family.tensor_prefix();
        for (i, layer) in self.feature_encoder.layers.iter().enumerate() {
            let l = format!("{p}.feature_extractor.conv_layers.{i}");
            out.insert(format!("{l}.conv.weight"), layer.conv.kernel_tensor()?);
            if let Some(bias) = &layer.conv.bias {
                out.insert(format!("{l}.conv.bias"), bias.clone());
            }
            match &layer.norm {
                ConvNorm::None => {}
                ConvNorm::Group { weight, bias } => {
                    out.insert(format!("{l}.layer_norm.weight"), weight.clone());
                    out.insert(format!("{l}.layer_norm.bias"), bias.clone());
                }
                ConvNorm::Layer(norm) => insert_norm(&mut out, &format!("{l}.layer_norm"), norm),
            }
        }
        if let Some(norm) = &self.feature_projection.layer_norm {
            insert_norm(
                &mut out,
                &format!("{p}.feature_projection.layer_norm"),
                norm,
            );
        }
        match &self.encoder {
            Encoder::Transformer {
                pos_conv,
                layer_norm,
                layers,
                ..
            } => {
                let conv = format!("{p}.encoder.pos_conv_embed.conv");
                out.insert(format!("{conv}.weight"), pos_conv.weight.clone());
                out.insert(format!("{conv}.bias"), pos_conv.bias.clone());
                insert_norm(&mut out, &format!("{p}.encoder.layer_norm"), layer_norm);
                for (i, layer) in layers.iter().enumerate() {
                    let l = format!("{p}.encoder.layers.{i}");
                    insert_norm(&mut out, &format!("{l}.layer_norm"), &layer.layer_norm);
                    insert_norm(
                        &mut out,
                        &format!("{l}.final_layer_norm"),
                        &layer.final_layer_norm,
                    );
                }
            }
            Encoder::Conformer {
                positions,
                layers,
                layer_norm,
            } => {
                positions.export(p, &mut out, &self.device)?;
                insert_norm(&mut out, &format!("{p}.encoder.layer_norm"), layer_norm);
                for (i, layer) in layers.iter().enumerate() {
                    layer.export(&format!("{p}.encoder.layers.{i}"), &mut out)?;
                }
            }
        }
        Ok(out)
    }
}

impl Layers for CtcModel {
    fn layers(&self) -> Vec<LayerRef<'_>> {
        let layers: Vec<(String, LayerRole, &Linear)> = named_linears!(self);
        layers
            .into_iter()
            .map(|(name, role, linear)| LayerRef { name, role, linear })
            .collect()
    }

    fn layers_mut(&mut self) -> Vec<LayerMut<'_>> {
        let layers: Vec<(String, LayerRole, &mut Linear)> = named_linears!(self);
        layers
            .into_iter()
            .map(|(name, role, linear)| LayerMut { name, role, linear })
            .collect()
    }

    /// [`CtcModel::tensors`] without the packed layer weights (export writes those packed).
    fn held_tensors(&self) -> Result<Option<Vec<(String, Tensor)>>> {
        let packed: Vec<String> = self
            .layers()
            .into_iter()
            .filter(|l| matches!(l.linear.weight, Weight::Packed(_)))
            .map(|l| format!("{}.weight", l.name))
            .collect();
        Ok(Some(self.tensors_except(&packed)?.into_iter().collect()))
    }

    fn prunable_modules(&self) -> Vec<crate::models::PrunableModule> {
        self.prunable()
    }

    fn prune_modules(
        &mut self,
        keep: &BTreeMap<String, crate::compress::prune::ModuleKeep>,
    ) -> Result<()> {
        self.prune(keep)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Folding matches the definition tap by tap, and a folded kernel's per-tap norm is |g|.
    #[test]
    fn weight_norm_folds_to_g_times_unit_direction() {
        let dev = Device::Cpu;
        let v = crate::nn::test_var(&[4, 2, 3], 1).as_tensor().clone();
        let g = Tensor::new(&[[[0.5f32, -2.0, 3.0]]], &dev).unwrap();
        let w = fold_weight_norm(&g, &v).unwrap();
        let (v3, w3) = (v.to_vec3::<f32>().unwrap(), w.to_vec3::<f32>().unwrap());
        for (k, gk) in [0.5f32, -2.0, 3.0].into_iter().enumerate() {
            let norm: f32 = v3
                .iter()
                .flat_map(|o| o.iter().map(move |i| i[k] * i[k]))
                .sum::<f32>()
                .sqrt();
            for (vo, wo) in v3.iter().zip(&w3) {
                for (vi, wi) in vo.iter().zip(wo) {
                    let expected = gk * vi[k] / norm;
                    assert!(
                        (wi[k] - expected).abs() < 1e-6,
                        "tap {k}: {} vs {expected}",
                        wi[k]
                    );
                }
            }
            let folded_norm: f32 = w3
                .iter()
                .flat_map(|o| o.iter().map(move |i| i[k] * i[k]))
                .sum::<f32>()
                .sqrt();
            assert!(
                (folded_norm - gk.abs()).abs() < 1e-5,
                "tap {k}: norm {folded_norm}"
            );
        }
    }
}
