//! Conformer blocks of transformers' `Wav2Vec2ConformerForCTC` (modeling_wav2vec2_conformer.py,
//! 5.25), after Gulati et al. 2020, "Conformer: Convolution-augmented Transformer for Speech
//! Recognition", in eval mode.
//!
//! A block: half-step feed-forward (macaron), self-attention, convolution module, half-step
//! feed-forward, layer norm; each sub-block pre-normed with a residual.
//!
//! - Convolution module: layer norm, pointwise conv to `2 d` (a linear layer here), GLU, depthwise
//!   conv (kernel `conv_depthwise_kernel_size`, "same" padding, no bias), batch norm with running
//!   statistics (folded into the depthwise kernel and a bias at load), activation (`hidden_act`,
//!   swish in the released models), pointwise conv (linear).
//! - Relative positions (`position_embeddings_type = "relative"`): Transformer-XL attention (Dai et
//!   al. 2019, section 3.3): scores `((q + u) k^T + shift((q + v) (W_pos P)^T)) / sqrt(d_head)` with
//!   the sinusoid table `P` of relative distances `t-1 .. -(t-1)` and the relative shift.
//! - Rotary positions (`"rotary"`; Su et al. 2021, "RoFormer"): transformers rotates the block's
//!   *input* head by head (halves rotated, not interleaved pairs) and feeds it to the query and key
//!   projections; the value projection sees the unrotated input.
//!
//! # Shapes
//! hidden states `[batch, frames, hidden]`; relative table `[1, 2 frames - 1, hidden]`; rotary
//! tables `[frames, 1, head_dim]`.

use std::collections::BTreeMap;

use candle_core::{DType, Device, Module, Tensor, D};

use super::config::{Activation, PositionEmbeddings, Wav2Vec2Config};
use super::model::{insert_norm, layer_norm, FeedForward, Projections, TORCH_NORM_EPS};
use crate::checkpoint::TensorStore;
use crate::error::Result;
use crate::nn::{LayerNorm, Linear, Weight};

/// How a Conformer encoder injects positions.
#[derive(Debug, Clone)]
pub(super) struct ConformerPositions {
    kind: Option<PositionEmbeddings>,
    hidden: usize,
    /// Rotary frequencies `[head_dim / 2]`.
    inv_freq: Vec<f32>,
}

/// Position tables for one sequence length.
pub(super) enum PositionTables {
    /// `[1, 2t - 1, hidden]`.
    Relative(Tensor),
    /// cos and sin, `[t, 1, head_dim]`.
    Rotary(Tensor, Tensor),
}

impl ConformerPositions {
    /// Rotary frequencies come from the checkpoint's `{prefix}.encoder.embed_positions.inv_freq`
    /// buffer when it has one (transformers saves it), else from `rotary_embedding_base`.
    pub(super) fn load(store: &TensorStore, prefix: &str, c: &Wav2Vec2Config) -> Result<Self> {
        let hd = c.head_dim();
        let name = format!("{prefix}.encoder.embed_positions.inv_freq");
        let inv_freq = if c.position_embeddings_type != Some(PositionEmbeddings::Rotary) {
            Vec::new()
        } else if store.contains(&name) {
            store.get(&name, &[hd / 2], DType::F32)?.to_vec1::<f32>()?
        } else {
            // transformers: 1 / base ** (arange(0, hd, 2).float() / hd), in float32.
            (0..hd)
                .step_by(2)
                .map(|i| {
                    let exponent = i as f32 / hd as f32;
                    1.0 / (c.rotary_embedding_base.powf(exponent as f64) as f32)
                })
                .collect()
        };
        Ok(Self {
            kind: c.position_embeddings_type,
            hidden: c.hidden_size,
            inv_freq,
        })
    }

    /// The rotary frequencies under the checkpoint's buffer name (nothing for other kinds).
    pub(super) fn export(
        &self,
        prefix: &str,
        out: &mut BTreeMap<String, Tensor>,
        device: &Device,
    ) -> candle_core::Result<()> {
        if self.kind == Some(PositionEmbeddings::Rotary) {
            out.insert(
                format!("{prefix}.encoder.embed_positions.inv_freq"),
                Tensor::new(self.inv_freq.as_slice(), device)?,
            );
        }
        Ok(())
    }

    /// Tables for `t` frames (`None` without position embeddings).
    ///
    /// transformers computes them in float32; each value here is the float32 rounding of the
    /// same expression's exact value (computed in f64 from the float32 operands), so they agree
    /// to the last bit wherever PyTorch's kernels are correctly rounded.
    pub(super) fn tables(
        &self,
        t: usize,
        dtype: DType,
        device: &Device,
    ) -> candle_core::Result<Option<PositionTables>> {
        let Some(kind) = self.kind else {
            return Ok(None);
        };
        Ok(Some(match kind {
            PositionEmbeddings::Relative => {
                let d = self.hidden;
                let step = -(10000f64.ln() / d as f64) as f32;
                let div: Vec<f32> = (0..d)
                    .step_by(2)
                    .map(|i| ((i as f32 * step) as f64).exp() as f32)
                    .collect();
                let mut table = Vec::with_capacity((2 * t - 1) * d);
                // Row r is the relative distance t-1-r: keys to the left of the query first.
                for r in 0..2 * t - 1 {
                    let distance = (t as f32 - 1.0) - r as f32;
                    for &f in &div {
                        let angle = (distance * f) as f64;
                        table.extend([angle.sin() as f32, angle.cos() as f32]);
                    }
                }
                PositionTables::Relative(
                    Tensor::from_vec(table, (1, 2 * t - 1, d), device)?.to_dtype(dtype)?,
                )
            }
            PositionEmbeddings::Rotary => {
                let inv_freq = &self.inv_freq;
                let hd = 2 * inv_freq.len();
                let (mut cos, mut sin) = (Vec::with_capacity(t * hd), Vec::with_capacity(t * hd));
                for time in 0..t {
                    // cat(freqs, freqs): the same frequencies for both halves.
                    for _ in 0..2 {
                        for &f in inv_freq {
                            let angle = (time as f32 * f) as f64;
                            cos.push(angle.cos() as f32);
                            sin.push(angle.sin() as f32);
                        }
                    }
                }
                let table = |v| Tensor::from_vec(v, (t, 1, hd), device)?.to_dtype(dtype);
                PositionTables::Rotary(table(cos)?, table(sin)?)
            }
        }))
    }
}

/// Transformer-XL's relative shift: `x [b, h, t, 2t - 1]` indexed by (query i, table row r) to
/// `[b, h, t, t]` indexed by (query i, key j), taking row `r = t - 1 - i + j` (distance `i - j`).
/// Written as transformers writes it (pad a zero column, fold, drop a row), so gradients follow.
pub(super) fn relative_shift(x: &Tensor) -> candle_core::Result<Tensor> {
    let (b, h, t, r) = x.dims4()?;
    x.pad_with_zeros(D::Minus1, 1, 0)?
        .reshape((b, h, r + 1, t))?
        .narrow(2, 1, r)?
        .reshape((b, h, t, r))?
        .narrow(3, 0, t)
}

/// Rotate `x [b, t, hidden]` head by head: `x cos + rotate_half(x) sin`, with
/// `rotate_half([x1, x2]) = [-x2, x1]` over each head's halves.
fn apply_rotary(
    x: &Tensor,
    heads: usize,
    cos: &Tensor,
    sin: &Tensor,
) -> candle_core::Result<Tensor> {
    let (b, t, d) = x.dims3()?;
    let hd = d / heads;
    let x4 = x.reshape((b, t, heads, hd))?;
    let (x1, x2) = (x4.narrow(3, 0, hd / 2)?, x4.narrow(3, hd / 2, hd / 2)?);
    let rotated = Tensor::cat(&[&x2.neg()?, &x1], 3)?;
    let (cos, sin) = (cos.unsqueeze(0)?, sin.unsqueeze(0)?);
    (x4.broadcast_mul(&cos)? + rotated.broadcast_mul(&sin)?)?.reshape((b, t, d))
}

/// Self-attention with optional relative-position terms.
#[derive(Debug, Clone)]
pub(super) struct RelAttention {
    pub(super) projections: Projections,
    /// `linear_pos` `[heads * head_dim, hidden]` (relative positions only, no bias).
    pub(super) linear_pos: Option<Linear>,
    /// `pos_bias_u`, `pos_bias_v` `[heads, head_dim]` (relative positions only).
    pub(super) pos_bias: Option<(Tensor, Tensor)>,
    /// Heads of the unpruned layer: rotary positions rotate the block's input in heads of the
    /// configured width, whatever heads pruning left.
    input_heads: usize,
}

impl RelAttention {
    /// `None` when `heads` is 0 (pruned away).
    fn load(
        store: &TensorStore,
        prefix: &str,
        c: &Wav2Vec2Config,
        heads: usize,
        dtype: DType,
    ) -> Result<Option<Self>> {
        let Some(projections) = Projections::load(
            store,
            prefix,
            ["linear_q", "linear_k", "linear_v", "linear_out"],
            c,
            heads,
            dtype,
        )?
        else {
            return Ok(None);
        };
        let (linear_pos, pos_bias) =
            if c.position_embeddings_type == Some(PositionEmbeddings::Relative) {
                let (h, hd) = (c.hidden_size, c.head_dim());
                let bias = |n: &str| store.get(&format!("{prefix}.{n}"), &[heads, hd], dtype);
                (
                    Some(Linear::load(
                        store,
                        &format!("{prefix}.linear_pos"),
                        h,
                        heads * hd,
                        false,
                        dtype,
                    )?),
                    Some((bias("pos_bias_u")?, bias("pos_bias_v")?)),
                )
            } else {
                (None, None)
            };
        Ok(Some(Self {
            projections,
            linear_pos,
            pos_bias,
            input_heads: c.num_attention_heads,
        }))
    }

    fn forward(&self, x: &Tensor, tables: Option<&PositionTables>) -> candle_core::Result<Tensor> {
        let p = &self.projections;
        match (tables, &self.linear_pos, &self.pos_bias) {
            (Some(PositionTables::Rotary(cos, sin)), _, _) => {
                let rotated = apply_rotary(x, self.input_heads, cos, sin)?;
                p.self_attention(x, Some(&rotated))
            }
            (Some(PositionTables::Relative(table)), Some(linear_pos), Some((u, v_bias))) => {
                let q = p.split(&p.q.forward(x)?)?;
                let k = p.split(&p.k.forward(x)?)?;
                let v = p.split(&p.v.forward(x)?)?;
                let (heads, hd) = (q.dim(1)?, q.dim(3)?);
                // [1, 2t-1, d] -> [1, heads, hd, 2t-1]
                let pos = linear_pos.forward(table)?;
                let r = pos.dim(1)?;
                let pos = pos.reshape((1, r, heads, hd))?.permute((0, 2, 3, 1))?;
                let bias = |b: &Tensor| b.reshape((1, heads, 1, hd));
                let content = q.broadcast_add(&bias(u)?)?.matmul(&k.t()?)?;
                let position = relative_shift(
                    &q.broadcast_add(&bias(v_bias)?)?
                        .broadcast_matmul(&pos.contiguous()?)?,
                )?;
                let scores = ((content + position)? * (1.0 / (hd as f64).sqrt()))?;
                let out = crate::nn::softmax_last_dim(&scores)?.matmul(&v)?;
                p.out.forward(&p.merge(&out)?)
            }
            (Some(PositionTables::Relative(_)), _, _) => {
                candle_core::bail!("relative position table given to a block without linear_pos")
            }
            (None, _, _) => p.self_attention(x, None),
        }
    }
}

/// Scale and shift of an inference-mode batch norm as one affine map per channel:
/// `y = x s + t` with `s = gamma / sqrt(var + eps)`, `t = beta - mean s`.
pub fn fold_batch_norm(
    gamma: &Tensor,
    beta: &Tensor,
    mean: &Tensor,
    var: &Tensor,
    eps: f64,
) -> candle_core::Result<(Tensor, Tensor)> {
    let scale = gamma.div(&(var + eps)?.sqrt()?)?;
    let shift = (beta - mean.mul(&scale)?)?;
    Ok((scale, shift))
}

/// The Conformer convolution module, batch norm folded into the depthwise conv.
#[derive(Debug, Clone)]
pub(super) struct ConvModule {
    layer_norm: LayerNorm,
    /// `[2 c, d]` for `c` channels (`d` unpruned; the kernel-1 conv's weight `[2 c, d, 1]`).
    pub(super) pointwise_conv1: Linear,
    /// Depthwise kernel times the batch-norm scale, `[c, k]`.
    pub(super) depthwise: Tensor,
    /// Batch-norm shift, `[c]`.
    pub(super) depthwise_bias: Tensor,
    activation: Activation,
    /// `[d, c]`.
    pub(super) pointwise_conv2: Linear,
}

/// A kernel-1 conv `{name}.weight [out, in, 1]` (no bias) as a linear layer.
fn pointwise(
    store: &TensorStore,
    name: &str,
    inputs: usize,
    outputs: usize,
    dtype: DType,
) -> Result<Linear> {
    let weight_name = format!("{name}.weight");
    let weight = match store.get_packed(&weight_name, [outputs, inputs])? {
        Some(packed) => Weight::Packed(packed),
        None => Weight::Float(
            store
                .get(&weight_name, &[outputs, inputs, 1], dtype)?
                .reshape((outputs, inputs))?,
        ),
    };
    Ok(Linear::new(weight, None))
}

impl ConvModule {
    /// `None` when `channels` is 0 (pruned away, with the module's own layer norm).
    fn load(
        store: &TensorStore,
        prefix: &str,
        c: &Wav2Vec2Config,
        channels: usize,
        dtype: DType,
    ) -> Result<Option<Self>> {
        if channels == 0 {
            return Ok(None);
        }
        let (d, k) = (c.hidden_size, c.conv_depthwise_kernel_size);
        let kernel = store
            .get(
                &format!("{prefix}.depthwise_conv.weight"),
                &[channels, 1, k],
                DType::F32,
            )?
            .reshape((channels, k))?;
        // A checkpoint has the batch norm; whittle's own export (`CtcModel::tensors`) has it
        // folded into the kernel and a depthwise-conv bias.
        let (depthwise, shift) = if store.contains(&format!("{prefix}.batch_norm.weight")) {
            let bn =
                |n: &str| store.get(&format!("{prefix}.batch_norm.{n}"), &[channels], DType::F32);
            let (scale, shift) = fold_batch_norm(
                &bn("weight")?,
                &bn("bias")?,
                &bn("running_mean")?,
                &bn("running_var")?,
                TORCH_NORM_EPS,
            )?;
            (kernel.broadcast_mul(&scale.reshape((channels, 1))?)?, shift)
        } else {
            let bias = store.get(
                &format!("{prefix}.depthwise_conv.bias"),
                &[channels],
                DType::F32,
            )?;
            (kernel, bias)
        };
        let depthwise = depthwise.to_dtype(dtype)?;
        Ok(Some(Self {
            layer_norm: layer_norm(
                store,
                &format!("{prefix}.layer_norm"),
                d,
                TORCH_NORM_EPS,
                dtype,
            )?,
            pointwise_conv1: pointwise(
                store,
                &format!("{prefix}.pointwise_conv1"),
                d,
                2 * channels,
                dtype,
            )?,
            depthwise,
            depthwise_bias: shift.to_dtype(dtype)?,
            activation: c.hidden_act,
            pointwise_conv2: pointwise(
                store,
                &format!("{prefix}.pointwise_conv2"),
                channels,
                d,
                dtype,
            )?,
        }))
    }

    /// Channels (after the GLU).
    pub(super) fn channels(&self) -> usize {
        self.pointwise_conv2.weight.dims().1
    }

    /// The tensors besides the pointwise convs (see [`ConformerLayer::export`]).
    fn export(&self, prefix: &str, out: &mut BTreeMap<String, Tensor>) -> candle_core::Result<()> {
        insert_norm(out, &format!("{prefix}.layer_norm"), &self.layer_norm);
        let (d, k) = self.depthwise.dims2()?;
        out.insert(
            format!("{prefix}.depthwise_conv.weight"),
            self.depthwise.reshape((d, 1, k))?,
        );
        out.insert(
            format!("{prefix}.depthwise_conv.bias"),
            self.depthwise_bias.clone(),
        );
        Ok(())
    }

    /// `[b, t, d]` to `[b, t, d]`.
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.pointwise_conv1.forward(&self.layer_norm.forward(x)?)?;
        let d = h.dim(D::Minus1)? / 2;
        let glu = h
            .narrow(D::Minus1, 0, d)?
            .mul(&candle_nn::ops::sigmoid(&h.narrow(D::Minus1, d, d)?)?)?;
        let y = depthwise_conv(&glu.transpose(1, 2)?, &self.depthwise)?
            .broadcast_add(&self.depthwise_bias.reshape((1, d, 1))?)?;
        let y = self.activation.apply(&y)?.transpose(1, 2)?;
        self.pointwise_conv2.forward(&y)
    }
}

/// Depthwise conv of `x [b, c, t]` with `kernel [c, k]` (odd k, zero "same" padding), as a sum of
/// `k` shifted, channel-scaled copies: one pass per tap instead of candle's one conv per group.
pub fn depthwise_conv(x: &Tensor, kernel: &Tensor) -> candle_core::Result<Tensor> {
    let (_, c, t) = x.dims3()?;
    let k = kernel.dim(1)?;
    let padded = x.pad_with_zeros(2, k / 2, k / 2)?;
    let mut out: Option<Tensor> = None;
    for tap in 0..k {
        let w = kernel.narrow(1, tap, 1)?.reshape((1, c, 1))?;
        let term = padded.narrow(2, tap, t)?.broadcast_mul(&w)?;
        out = Some(match out {
            Some(acc) => (acc + term)?,
            None => term,
        });
    }
    out.ok_or_else(|| candle_core::Error::Msg("depthwise conv with an empty kernel".into()))
}

/// One Conformer block. A module pruned away (`None`) adds nothing to the residual stream; the
/// pre-norms of the feed-forward and attention modules stay.
#[derive(Debug, Clone)]
pub struct ConformerLayer {
    ffn1_layer_norm: LayerNorm,
    pub(super) ffn1: Option<FeedForward>,
    self_attn_layer_norm: LayerNorm,
    pub(super) self_attn: Option<RelAttention>,
    pub(super) conv_module: Option<ConvModule>,
    ffn2_layer_norm: LayerNorm,
    pub(super) ffn2: Option<FeedForward>,
    final_layer_norm: LayerNorm,
}

impl ConformerLayer {
    pub(super) fn load(
        store: &TensorStore,
        prefix: &str,
        index: usize,
        c: &Wav2Vec2Config,
        dtype: DType,
    ) -> Result<Self> {
        let d = c.hidden_size;
        let shape = c.layer_shape(index);
        // transformers builds these norms with PyTorch's default eps, not layer_norm_eps.
        let norm = |n: &str| layer_norm(store, &format!("{prefix}.{n}"), d, TORCH_NORM_EPS, dtype);
        let ffn = |n: &str, width: Option<usize>| {
            FeedForward::load(
                store,
                &format!("{prefix}.{n}"),
                c,
                width.unwrap_or(0),
                dtype,
            )
        };
        Ok(Self {
            ffn1_layer_norm: norm("ffn1_layer_norm")?,
            ffn1: ffn("ffn1", Some(shape.ffn_dim))?,
            self_attn_layer_norm: norm("self_attn_layer_norm")?,
            self_attn: RelAttention::load(
                store,
                &format!("{prefix}.self_attn"),
                c,
                shape.attention_heads,
                dtype,
            )?,
            conv_module: ConvModule::load(
                store,
                &format!("{prefix}.conv_module"),
                c,
                shape.conv_channels.unwrap_or(0),
                dtype,
            )?,
            ffn2_layer_norm: norm("ffn2_layer_norm")?,
            ffn2: ffn("ffn2", shape.ffn2_dim)?,
            final_layer_norm: norm("final_layer_norm")?,
        })
    }

    /// Every tensor of the block except its linear layers' (which [`super::CtcModel::linears`]
    /// lists), by checkpoint name, with the batch norm folded into the depthwise conv.
    pub(super) fn export(
        &self,
        prefix: &str,
        out: &mut BTreeMap<String, Tensor>,
    ) -> candle_core::Result<()> {
        for (name, norm) in [
            ("ffn1_layer_norm", &self.ffn1_layer_norm),
            ("self_attn_layer_norm", &self.self_attn_layer_norm),
            ("ffn2_layer_norm", &self.ffn2_layer_norm),
            ("final_layer_norm", &self.final_layer_norm),
        ] {
            insert_norm(out, &format!("{prefix}.{name}"), norm);
        }
        if let Some((u, v)) = self.self_attn.as_ref().and_then(|a| a.pos_bias.as_ref()) {
            out.insert(format!("{prefix}.self_attn.pos_bias_u"), u.clone());
            out.insert(format!("{prefix}.self_attn.pos_bias_v"), v.clone());
        }
        match &self.conv_module {
            Some(conv) => conv.export(&format!("{prefix}.conv_module"), out),
            None => Ok(()),
        }
    }

    /// The shape this block holds.
    pub(super) fn shape(&self) -> super::config::CtcLayerShape {
        super::config::CtcLayerShape {
            attention_heads: self.self_attn.as_ref().map_or(0, |a| a.projections.heads),
            ffn_dim: self.ffn1.as_ref().map_or(0, FeedForward::width),
            ffn2_dim: Some(self.ffn2.as_ref().map_or(0, FeedForward::width)),
            conv_channels: Some(self.conv_module.as_ref().map_or(0, ConvModule::channels)),
        }
    }

    pub(super) fn forward(
        &self,
        x: &Tensor,
        tables: Option<&PositionTables>,
    ) -> candle_core::Result<Tensor> {
        let half_step = |ffn: &Option<FeedForward>, norm: &LayerNorm, x: Tensor| match ffn {
            Some(f) => x.clone() + (f.forward(&norm.forward(&x)?)? * 0.5)?,
            None => Ok(x),
        };
        let x = half_step(&self.ffn1, &self.ffn1_layer_norm, x.clone())?;
        let x = match &self.self_attn {
            Some(a) => (&x + a.forward(&self.self_attn_layer_norm.forward(&x)?, tables)?)?,
            None => x,
        };
        let x = match &self.conv_module {
            Some(conv) => (&x + conv.forward(&x)?)?,
            None => x,
        };
        let x = half_step(&self.ffn2, &self.ffn2_layer_norm, x)?;
        self.final_layer_norm.forward(&x)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(shape: &[usize], seed: usize) -> Tensor {
        crate::nn::test_var(shape, seed).as_tensor().clone()
    }

    /// Folded batch norm after the depthwise conv equals conv, then batch norm as PyTorch's
    /// eval mode defines it, and the shifted-sum depthwise conv equals candle's grouped conv.
    #[test]
    fn batch_norm_folds_into_the_depthwise_conv() {
        let (c, k, t) = (4, 5, 9);
        let x = values(&[2, c, t], 1);
        let kernel = values(&[c, 1, k], 2);
        let gamma = values(&[c], 3);
        let beta = values(&[c], 4);
        let mean = values(&[c], 5);
        let var = (values(&[c], 6).abs().unwrap() + 0.5).unwrap();
        let eps = 1e-5;

        let conv = x.conv1d(&kernel, k / 2, 1, 1, c).unwrap();
        let col = |v: &Tensor| v.reshape((1, c, 1)).unwrap();
        let reference = conv
            .broadcast_sub(&col(&mean))
            .unwrap()
            .broadcast_div(&col(&(&var + eps).unwrap().sqrt().unwrap()))
            .unwrap()
            .broadcast_mul(&col(&gamma))
            .unwrap()
            .broadcast_add(&col(&beta))
            .unwrap();

        let plain = depthwise_conv(&x, &kernel.reshape((c, k)).unwrap()).unwrap();
        let err = crate::nn::max_abs_diff(&plain, &conv).unwrap();
        assert!(err < 1e-5, "shifted-sum depthwise conv: max_err {err}");

        let (scale, shift) = fold_batch_norm(&gamma, &beta, &mean, &var, eps).unwrap();
        let folded_kernel = kernel
            .reshape((c, k))
            .unwrap()
            .broadcast_mul(&scale.reshape((c, 1)).unwrap())
            .unwrap();
        let folded = depthwise_conv(&x, &folded_kernel)
            .unwrap()
            .broadcast_add(&col(&shift))
            .unwrap();
        let err = crate::nn::max_abs_diff(&folded, &reference).unwrap();
        assert!(err < 1e-4, "folded batch norm: max_err {err}");
    }

    /// The relative shift picks table row `t - 1 - i + j` for query i and key j.
    #[test]
    fn relative_shift_indexes_distances() {
        let t = 4;
        let r = 2 * t - 1;
        // Entry (i, row) = 100 i + row.
        let v: Vec<f32> = (0..t)
            .flat_map(|i| (0..r).map(move |row| (100 * i + row) as f32))
            .collect();
        let x = Tensor::from_vec(v, (1, 1, t, r), &Device::Cpu).unwrap();
        let shifted = relative_shift(&x)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let got = shifted.to_vec2::<f32>().unwrap();
        for (i, row) in got.iter().enumerate() {
            for (j, &value) in row.iter().enumerate() {
                assert_eq!(
                    value,
                    (100 * i + t - 1 - i + j) as f32,
                    "query {i}, key {j}"
                );
            }
        }
    }
}
