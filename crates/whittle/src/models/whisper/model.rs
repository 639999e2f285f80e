//! The Whisper encoder-decoder (Radford et al. 2022, "Robust Speech Recognition via
//! Large-Scale Weak Supervision"), written once for inference and training.
//!
//! Tensor names follow Hugging Face `WhisperForConditionalGeneration`; other checkpoint
//! formats are renamed into that scheme by their readers.
//!
//! # Shapes
//! - mel input `[batch, n_mels, frames]` (3000 frames = 30 s; fewer when trimmed);
//! - encoder output `[batch, frames / 2, d_model]`;
//! - decoder tokens `[batch, len]` (u32) to logits `[batch, len, vocab]`.

use candle_core::{CpuStorage, DType, Device, IndexOp, Layout, Module, Tensor};

use super::config::{BlockShape, LayerShapes, WhisperConfig};
use crate::checkpoint::TensorStore;
use crate::error::{Error, Result};
use crate::models::{LayerMut, LayerRef, LayerRole, Layers, PrunableModule, UnitKind};
use crate::nn::{Conv1d, LayerNorm, Linear};

/// Query-key pairs per head from which inference attention runs one head at a time.
/// Tensor path (without `.weight`) of the decoder's token embedding, tied with the output
/// projection.
pub const TOKEN_EMBEDDING: &str = "model.decoder.embed_tokens";

const ATTENTION_SCORES_PER_HEAD_SPLIT: usize = 1 << 18;

/// Multi-head attention with separate q/k/v/out projections (k has no bias).
#[derive(Debug, Clone)]
pub struct Attention {
    /// Query projection.
    pub q_proj: Linear,
    /// Key projection (no bias in Whisper).
    pub k_proj: Linear,
    /// Value projection.
    pub v_proj: Linear,
    /// Output projection.
    pub out_proj: Linear,
    /// Number of heads.
    pub heads: usize,
}

impl Attention {
    /// Load `heads` heads of width `head_dim` from model width `d`: q/k/v `[heads * head_dim,
    /// d]`, out `[d, heads * head_dim]`.
    fn load(
        store: &TensorStore,
        prefix: &str,
        d: usize,
        heads: usize,
        head_dim: usize,
        dtype: DType,
    ) -> Result<Self> {
        let inner = heads * head_dim;
        Ok(Self {
            q_proj: Linear::load(store, &format!("{prefix}.q_proj"), d, inner, true, dtype)?,
            k_proj: Linear::load(store, &format!("{prefix}.k_proj"), d, inner, false, dtype)?,
            v_proj: Linear::load(store, &format!("{prefix}.v_proj"), d, inner, true, dtype)?,
            out_proj: Linear::load(store, &format!("{prefix}.out_proj"), inner, d, true, dtype)?,
            heads,
        })
    }

    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.q_proj.out_features() / self.heads
    }

    /// The four projections by tensor name, with their roles.
    fn projections(&self) -> [(&'static str, LayerRole, &Linear); 4] {
        [
            ("q_proj", LayerRole::AttentionQuery, &self.q_proj),
            ("k_proj", LayerRole::AttentionKey, &self.k_proj),
            ("v_proj", LayerRole::AttentionValue, &self.v_proj),
            ("out_proj", LayerRole::AttentionOutput, &self.out_proj),
        ]
    }

    /// [`Self::projections`], mutably.
    fn projections_mut(&mut self) -> [(&'static str, LayerRole, &mut Linear); 4] {
        [
            ("q_proj", LayerRole::AttentionQuery, &mut self.q_proj),
            ("k_proj", LayerRole::AttentionKey, &mut self.k_proj),
            ("v_proj", LayerRole::AttentionValue, &mut self.v_proj),
            ("out_proj", LayerRole::AttentionOutput, &mut self.out_proj),
        ]
    }

    /// `[b, t, d]` to `[b, heads, t, d/heads]`.
    fn split_heads(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        x.reshape((b, t, self.heads, d / self.heads))?
            .transpose(1, 2)?
            .contiguous()
    }

    /// Keys and values for `x`, already split into heads.
    pub fn keys_values(&self, x: &Tensor) -> candle_core::Result<(Tensor, Tensor)> {
        Ok((
            self.split_heads(&self.k_proj.forward(x)?)?,
            self.split_heads(&self.v_proj.forward(x)?)?,
        ))
    }

    /// Attention from `x` `[b, t, d]` to `source` `[b, s, d]` (`x` itself for self-attention)
    /// without a cache: the encoder and the teacher-forced decoder. Training on CPU runs one
    /// fused op on the unsplit projections (see [`crate::nn::attention`]).
    pub fn forward_uncached(
        &self,
        x: &Tensor,
        source: &Tensor,
        causal: bool,
    ) -> candle_core::Result<Tensor> {
        let q = self.q_proj.forward(x)?;
        let k = self.k_proj.forward(source)?;
        let v = self.v_proj.forward(source)?;
        let (t, s) = (x.dim(1)?, source.dim(1)?);
        // The fused op keeps all heads' scores at once: always when training, else while they
        // stay below the size at which inference goes head by head.
        let small = t * s < ATTENTION_SCORES_PER_HEAD_SPLIT;
        if (small || crate::nn::needs_grad(&[&q, &k, &v]))
            && crate::nn::attention::fusable(&q, &k, &v)
        {
            let out = crate::nn::attention::attention(&q, &k, &v, self.heads, causal)?;
            return self.out_proj.forward(&out);
        }
        let mask = if causal && t > 1 {
            Some(causal_mask(t, s - t, q.dtype(), q.device())?)
        } else {
            None
        };
        self.attend_projected(
            q,
            &self.split_heads(&k)?,
            &self.split_heads(&v)?,
            mask.as_ref(),
        )
    }

    /// Attend from `x` to split keys/values, with an optional additive mask `[t, s]`.
    pub fn attend(
        &self,
        x: &Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        self.attend_projected(self.q_proj.forward(x)?, k, v, mask)
    }

    /// [`Attention::attend`] after the query projection `q` `[b, t, d]`.
    fn attend_projected(
        &self,
        q: Tensor,
        k: &Tensor,
        v: &Tensor,
        mask: Option<&Tensor>,
    ) -> candle_core::Result<Tensor> {
        let (b, t, d) = q.dims3()?;
        let head_dim = d / self.heads;
        let q = (self.split_heads(&q)? * (1.0 / (head_dim as f64).sqrt()))?;
        let s = k.dim(2)?;
        let per_head = |q: &Tensor, k: &Tensor, v: &Tensor| {
            let mut scores = q.matmul(&k.t()?)?;
            if let Some(mask) = mask {
                scores = scores.broadcast_add(mask)?;
            }
            softmax_last_dim(scores)?.matmul(v)
        };
        // Long inference attention (the encoder: 1500 x 1500 per head) one head of one batch
        // row at a time: 9 MB of scores instead of 54 MB for all heads (times the batch), which
        // the allocator can reuse instead of mapping (and zeroing) fresh pages for every layer.
        let out = if t * s >= ATTENTION_SCORES_PER_HEAD_SPLIT && !crate::nn::needs_grad(&[&q, k, v])
        {
            let rows = (0..b)
                .map(|r| {
                    let heads = (0..self.heads)
                        .map(|h| {
                            let one = |x: &Tensor| x.narrow(0, r, 1)?.narrow(1, h, 1);
                            per_head(&one(&q)?, &one(k)?, &one(v)?)
                        })
                        .collect::<candle_core::Result<Vec<_>>>()?;
                    Tensor::cat(&heads, 1)
                })
                .collect::<candle_core::Result<Vec<_>>>()?;
            Tensor::cat(&rows, 0)?
        } else {
            per_head(&q, k, v)?
        };
        let out = out.transpose(1, 2)?.reshape((b, t, d))?;
        self.out_proj.forward(&out)
    }
}

/// Activations computed in place by whittle-kernels (8 lanes wide, on all threads) instead of
/// candle's one-value-at-a-time libm calls on one core. They record no backward pass, so
/// [`in_place_capable`] tensors only: inference, f32, contiguous, on the CPU.
#[derive(Clone, Copy)]
enum InPlaceActivation {
    /// `0.5 x (1 + erf(x / sqrt 2))`.
    Gelu,
    /// Softmax over the last dimension.
    SoftmaxLastDim,
}

impl candle_core::InplaceOp1 for InPlaceActivation {
    fn name(&self) -> &'static str {
        match self {
            Self::Gelu => "whittle-gelu",
            Self::SoftmaxLastDim => "whittle-softmax-last-dim",
        }
    }

    fn cpu_fwd(&self, storage: &mut CpuStorage, layout: &Layout) -> candle_core::Result<()> {
        let (CpuStorage::F32(values), Some((start, end))) = (storage, layout.contiguous_offsets())
        else {
            candle_core::bail!("{}: needs a contiguous f32 tensor", self.name());
        };
        let values = &mut values[start..end];
        match self {
            Self::Gelu => whittle_kernels::activations::gelu(values),
            Self::SoftmaxLastDim => {
                let row = *layout.dims().last().unwrap_or(&1);
                whittle_kernels::activations::softmax_rows(values, row)
            }
        }
        Ok(())
    }
}

/// Whether `x` can be overwritten by an [`InPlaceActivation`]; callers pass tensors they just
/// computed and own alone.
fn in_place_capable(x: &Tensor) -> bool {
    !crate::nn::needs_grad(&[x])
        && x.dtype() == DType::F32
        && x.device().is_cpu()
        && x.is_contiguous()
}

/// GELU (erf form) of a freshly computed tensor.
fn gelu(x: Tensor) -> candle_core::Result<Tensor> {
    if in_place_capable(&x) {
        x.inplace_op1(&InPlaceActivation::Gelu)?;
        Ok(x)
    } else {
        crate::nn::fused::gelu_erf(&x)
    }
}

/// Softmax over the last dimension of a freshly computed tensor.
fn softmax_last_dim(x: Tensor) -> candle_core::Result<Tensor> {
    if in_place_capable(&x) {
        x.inplace_op1(&InPlaceActivation::SoftmaxLastDim)?;
        Ok(x)
    } else {
        crate::nn::softmax_last_dim(&x)
    }
}

/// A pre-norm attention module with its residual branch, `x + attn(norm(x))`.
#[derive(Debug, Clone)]
pub struct AttentionModule {
    /// The attention.
    pub attn: Attention,
    /// Norm before it.
    pub norm: LayerNorm,
}

/// A pre-norm GELU MLP with its residual branch, `x + fc2(gelu(fc1(norm(x))))`.
#[derive(Debug, Clone)]
pub struct FeedForward {
    /// First projection, to the hidden width.
    pub fc1: Linear,
    /// Second projection, back to the model width.
    pub fc2: Linear,
    /// Norm before the MLP.
    pub norm: LayerNorm,
}

impl FeedForward {
    /// `x` plus the MLP of `x`.
    pub fn forward_residual(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let h = self.norm.forward(x)?;
        let h = self.fc2.forward(&gelu(self.fc1.forward(&h)?)?)?;
        x + h
    }

    /// Hidden units.
    pub fn width(&self) -> usize {
        self.fc1.out_features()
    }
}

/// Pre-norm transformer block: self-attention, cross-attention (decoder), GELU MLP. A module
/// that structured pruning removed is `None`: its branch adds nothing, and it holds no tensors.
#[derive(Debug, Clone)]
pub struct Block {
    /// Self-attention (checkpoint names `self_attn.*`, `self_attn_layer_norm.*`).
    pub self_attn: Option<AttentionModule>,
    /// Cross-attention to the encoder output (`encoder_attn.*`, `encoder_attn_layer_norm.*`);
    /// always `None` in the encoder.
    pub encoder_attn: Option<AttentionModule>,
    /// The MLP (`fc1.*`, `fc2.*`, `final_layer_norm.*`).
    pub mlp: Option<FeedForward>,
}

/// Checkpoint name of the norm before each module of a block.
pub const SELF_ATTN_NORM: &str = "self_attn_layer_norm";
/// See [`SELF_ATTN_NORM`].
pub const CROSS_ATTN_NORM: &str = "encoder_attn_layer_norm";
/// See [`SELF_ATTN_NORM`].
pub const MLP_NORM: &str = "final_layer_norm";

impl Block {
    fn load(
        store: &TensorStore,
        prefix: &str,
        d: usize,
        shape: BlockShape,
        head_dim: usize,
        dtype: DType,
    ) -> Result<Self> {
        let attention = |name: &str, norm: &str, heads: usize| -> Result<Option<AttentionModule>> {
            if heads == 0 {
                return Ok(None);
            }
            Ok(Some(AttentionModule {
                attn: Attention::load(
                    store,
                    &format!("{prefix}.{name}"),
                    d,
                    heads,
                    head_dim,
                    dtype,
                )?,
                norm: LayerNorm::load(store, &format!("{prefix}.{norm}"), d, dtype)?,
            }))
        };
        let f = shape.ffn_dim;
        let mlp = if f == 0 {
            None
        } else {
            Some(FeedForward {
                fc1: Linear::load(store, &format!("{prefix}.fc1"), d, f, true, dtype)?,
                fc2: Linear::load(store, &format!("{prefix}.fc2"), f, d, true, dtype)?,
                norm: LayerNorm::load(store, &format!("{prefix}.{MLP_NORM}"), d, dtype)?,
            })
        };
        Ok(Self {
            self_attn: attention("self_attn", SELF_ATTN_NORM, shape.self_attention_heads)?,
            encoder_attn: attention("encoder_attn", CROSS_ATTN_NORM, shape.cross_attention_heads)?,
            mlp,
        })
    }

    /// An encoder block: self-attention, then the MLP, each with its residual.
    fn encoder_forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mut x = x.clone();
        if let Some(m) = &self.self_attn {
            let h = m.norm.forward(&x)?;
            x = (&x + m.attn.forward_uncached(&h, &h, false)?)?;
        }
        self.mlp(&x)
    }

    /// `x` plus the MLP's branch, or `x` when the MLP is removed.
    fn mlp(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        match &self.mlp {
            Some(f) => f.forward_residual(x),
            None => Ok(x.clone()),
        }
    }

    /// The block's shape (heads and units it holds).
    pub fn shape(&self) -> BlockShape {
        BlockShape {
            self_attention_heads: self.self_attn.as_ref().map_or(0, |m| m.attn.heads),
            cross_attention_heads: self.encoder_attn.as_ref().map_or(0, |m| m.attn.heads),
            ffn_dim: self.mlp.as_ref().map_or(0, FeedForward::width),
        }
    }
}

/// The audio encoder.
#[derive(Debug, Clone)]
pub struct Encoder {
    /// First conv, `n_mels -> d`, kernel 3.
    pub conv1: Conv1d,
    /// Second conv, stride 2.
    pub conv2: Conv1d,
    /// Sinusoidal positions `[max_source_positions, d]`.
    pub embed_positions: Tensor,
    /// Transformer blocks.
    pub layers: Vec<Block>,
    /// Final norm.
    pub layer_norm: LayerNorm,
}

impl Encoder {
    /// Encode a mel batch `[b, n_mels, frames]` into `[b, frames/2, d]`. Fewer than 3000
    /// frames (trimmed input) uses the first positions only.
    pub fn forward(&self, mel: &Tensor) -> Result<Tensor> {
        Ok(self.forward_with_layers(mel, &[])?.0)
    }

    /// [`Encoder::forward`], also returning the outputs of the layers in `keep` (indices, in
    /// the order given), e.g. for distillation losses on hidden states.
    pub fn forward_with_layers(
        &self,
        mel: &Tensor,
        keep: &[usize],
    ) -> Result<(Tensor, Vec<Tensor>)> {
        let mut kept = vec![None; keep.len()];
        let mut x = self.embed(mel)?;
        for (i, layer) in self.layers.iter().enumerate() {
            x = layer.encoder_forward(&x)?;
            for (slot, _) in kept.iter_mut().zip(keep).filter(|(_, &k)| k == i) {
                *slot = Some(x.clone());
            }
        }
        let kept = kept
            .into_iter()
            .zip(keep)
            .map(|(t, &k)| {
                t.ok_or_else(|| {
                    Error::config(
                        "encoder layers",
                        format!("layer {k} does not exist ({} layers)", self.layers.len()),
                    )
                })
            })
            .collect::<Result<_>>()?;
        Ok((self.layer_norm.forward(&x)?, kept))
    }

    /// The conv stem plus positions, `[b, frames/2, d]`: the input of layer 0.
    pub fn embed(&self, mel: &Tensor) -> Result<Tensor> {
        let x = gelu(self.conv1.forward(mel)?)?;
        let x = gelu(self.conv2.forward(&x)?)?;
        let x = x.transpose(1, 2)?;
        let frames = x.dim(1)?;
        let max = self.embed_positions.dim(0)?;
        if frames > max {
            return Err(Error::config(
                "encoder input",
                format!("{frames} positions exceed the model's {max}"),
            ));
        }
        Ok(x.broadcast_add(&self.embed_positions.narrow(0, 0, frames)?)?)
    }

    /// Layers `first..` and the final norm on `x`, the input of layer `first` ([`Self::embed`]
    /// or a kept output of layer `first - 1`): re-running the end of the encoder after a
    /// change to layer `first` only.
    pub fn forward_from(&self, x: &Tensor, first: usize) -> Result<Tensor> {
        let mut x = x.clone();
        for layer in self.layers.iter().skip(first) {
            x = layer.encoder_forward(&x)?;
        }
        Ok(self.layer_norm.forward(&x)?)
    }
}

/// The text decoder with tied output projection.
#[derive(Debug, Clone)]
pub struct Decoder {
    /// Token embedding `[vocab, d]`, also the output projection (tied): one weight, which
    /// may be packed like any linear layer's.
    pub embed_tokens: Linear,
    /// Learned positions `[max_target_positions, d]`.
    pub embed_positions: Tensor,
    /// Transformer blocks with cross-attention.
    pub layers: Vec<Block>,
    /// Final norm.
    pub layer_norm: LayerNorm,
}

/// Per-sequence decoder caches: self-attention keys/values so far, and the cross-attention
/// keys/values of the encoder output (computed once per audio window).
#[derive(Debug, Clone)]
pub struct DecoderCache {
    self_kv: Vec<Option<(Tensor, Tensor)>>,
    /// `None` for layers whose cross-attention is pruned.
    cross_kv: Vec<Option<(Tensor, Tensor)>>,
    /// Tokens consumed so far.
    pub offset: usize,
}

impl DecoderCache {
    /// Keep only the batch rows in `indices` (beam search reordering).
    pub fn select(&mut self, indices: &[u32]) -> Result<()> {
        let device = self
            .cross_kv
            .iter()
            .chain(&self.self_kv)
            .flatten()
            .map(|(k, _)| k.device().clone())
            .next()
            .unwrap_or(Device::Cpu);
        let idx = Tensor::new(indices, &device)?;
        for kv in self.self_kv.iter_mut().flatten() {
            *kv = (kv.0.index_select(&idx, 0)?, kv.1.index_select(&idx, 0)?);
        }
        for kv in self.cross_kv.iter_mut().flatten() {
            *kv = (kv.0.index_select(&idx, 0)?, kv.1.index_select(&idx, 0)?);
        }
        Ok(())
    }
}

impl Decoder {
    /// Cross-attention keys/values for an encoder output `[b, s, d]`.
    pub fn new_cache(&self, encoder_out: &Tensor) -> Result<DecoderCache> {
        let mut cross_kv = Vec::with_capacity(self.layers.len());
        for layer in &self.layers {
            cross_kv.push(match &layer.encoder_attn {
                Some(m) => Some(m.attn.keys_values(encoder_out)?),
                None => None,
            });
        }
        Ok(DecoderCache {
            self_kv: vec![None; self.layers.len()],
            cross_kv,
            offset: 0,
        })
    }

    /// Run `tokens` `[b, len]` after what the cache holds; returns hidden states `[b, len, d]`
    /// after the final norm.
    pub fn forward_hidden(&self, tokens: &Tensor, cache: &mut DecoderCache) -> Result<Tensor> {
        let (_, len) = tokens.dims2()?;
        let mut x = self.embed(tokens, cache.offset)?;
        let mask = if len > 1 {
            Some(causal_mask(len, cache.offset, x.dtype(), x.device())?)
        } else {
            None
        };
        for (i, layer) in self.layers.iter().enumerate() {
            if let Some(m) = &layer.self_attn {
                let h = m.norm.forward(&x)?;
                let (k_new, v_new) = m.attn.keys_values(&h)?;
                let (k, v) = match &cache.self_kv[i] {
                    Some((k, v)) => (Tensor::cat(&[k, &k_new], 2)?, Tensor::cat(&[v, &v_new], 2)?),
                    None => (k_new, v_new),
                };
                x = (&x + m.attn.attend(&h, &k, &v, mask.as_ref())?)?;
                cache.self_kv[i] = Some((k, v));
            }
            if let (Some(m), Some((ck, cv))) = (&layer.encoder_attn, &cache.cross_kv[i]) {
                let h = m.norm.forward(&x)?;
                x = (&x + m.attn.attend(&h, ck, cv, None)?)?;
            }
            x = layer.mlp(&x)?;
        }
        cache.offset += len;
        Ok(self.layer_norm.forward(&x)?)
    }

    /// Token plus position embeddings `[b, len, d]` of `tokens` `[b, len]` starting at
    /// position `offset`.
    fn embed(&self, tokens: &Tensor, offset: usize) -> Result<Tensor> {
        let (_, len) = tokens.dims2()?;
        let max = self.embed_positions.dim(0)?;
        if offset + len > max {
            return Err(Error::config(
                "decoder input",
                format!("{} tokens exceed the model's {max} positions", offset + len),
            ));
        }
        let positions = self.embed_positions.narrow(0, offset, len)?;
        let x = self
            .embed_tokens
            .weight
            .rows(tokens)?
            .to_dtype(positions.dtype())?;
        Ok(x.broadcast_add(&positions)?)
    }

    /// Teacher forcing: hidden states `[b, len, d]` of `tokens` `[b, len]` attending to
    /// `encoder_out` `[b, s, d]`, with a causal mask (right padding never reaches earlier
    /// positions, so padded batches need only a loss mask). No cache: the training forward.
    pub fn forward_teacher_forced(&self, tokens: &Tensor, encoder_out: &Tensor) -> Result<Tensor> {
        let mut x = self.embed(tokens, 0)?;
        for layer in &self.layers {
            if let Some(m) = &layer.self_attn {
                let h = m.norm.forward(&x)?;
                x = (&x + m.attn.forward_uncached(&h, &h, true)?)?;
            }
            if let Some(m) = &layer.encoder_attn {
                let h = m.norm.forward(&x)?;
                x = (&x + m.attn.forward_uncached(&h, encoder_out, false)?)?;
            }
            x = layer.mlp(&x)?;
        }
        Ok(self.layer_norm.forward(&x)?)
    }

    /// Logits `[b, len, vocab]` of hidden states (tied embedding projection).
    pub fn logits(&self, hidden: &Tensor) -> Result<Tensor> {
        let (b, len, d) = hidden.dims3()?;
        let logits = self.embed_tokens.forward(&hidden.reshape((b * len, d))?)?;
        Ok(logits.reshape((b, len, ()))?)
    }

    /// Logits of the last position only, `[b, vocab]`: what decoding needs.
    pub fn last_logits(&self, tokens: &Tensor, cache: &mut DecoderCache) -> Result<Tensor> {
        let hidden = self.forward_hidden(tokens, cache)?;
        let len = hidden.dim(1)?;
        let last = hidden.i((.., len - 1..len, ..))?.contiguous()?;
        Ok(self.logits(&last)?.squeeze(1)?)
    }
}

fn causal_mask(
    len: usize,
    offset: usize,
    dtype: DType,
    device: &Device,
) -> candle_core::Result<Tensor> {
    let total = offset + len;
    let mask: Vec<f32> = (0..len)
        .flat_map(|i| {
            (0..total).map(move |j| {
                if j > offset + i {
                    f32::NEG_INFINITY
                } else {
                    0.0
                }
            })
        })
        .collect();
    Tensor::from_vec(mask, (len, total), device)?.to_dtype(dtype)
}

/// A complete Whisper model.
#[derive(Debug, Clone)]
pub struct Whisper {
    /// Architecture.
    pub config: WhisperConfig,
    /// Audio encoder.
    pub encoder: Encoder,
    /// Text decoder.
    pub decoder: Decoder,
    /// Compute dtype.
    pub dtype: DType,
}

impl Whisper {
    /// Load from a store with Hugging Face names, converting weights to `dtype` for compute.
    pub fn load(store: &TensorStore, config: &WhisperConfig, dtype: DType) -> Result<Self> {
        config.validate(store.source_name())?;
        let c = config;
        let d = c.d_model;
        let prefix = if store.contains("model.encoder.conv1.weight") {
            "model."
        } else {
            ""
        };
        let enc = format!("{prefix}encoder");
        let dec = format!("{prefix}decoder");
        let encoder = Encoder {
            conv1: Conv1d::load(
                store,
                &format!("{enc}.conv1"),
                c.num_mel_bins,
                d,
                3,
                1,
                1,
                dtype,
            )?,
            conv2: Conv1d::load(store, &format!("{enc}.conv2"), d, d, 3, 1, 2, dtype)?,
            embed_positions: store.get(
                &format!("{enc}.embed_positions.weight"),
                &[c.max_source_positions, d],
                dtype,
            )?,
            layers: (0..c.encoder_layers)
                .map(|i| {
                    Block::load(
                        store,
                        &format!("{enc}.layers.{i}"),
                        d,
                        c.encoder_block(i),
                        c.encoder_head_dim(),
                        dtype,
                    )
                })
                .collect::<Result<_>>()?,
            layer_norm: LayerNorm::load(store, &format!("{enc}.layer_norm"), d, dtype)?,
        };
        let embed_tokens = Linear::load(
            store,
            &format!("{dec}.embed_tokens"),
            d,
            c.vocab_size,
            false,
            dtype,
        )?;
        // The output projection is tied to the embedding; a separate copy must match it.
        if store.contains("proj_out.weight") {
            store.get("proj_out.weight", &[c.vocab_size, d], dtype)?;
        }
        let decoder = Decoder {
            embed_tokens,
            embed_positions: store.get(
                &format!("{dec}.embed_positions.weight"),
                &[c.max_target_positions, d],
                dtype,
            )?,
            layers: (0..c.decoder_layers)
                .map(|i| {
                    Block::load(
                        store,
                        &format!("{dec}.layers.{i}"),
                        d,
                        c.decoder_block(i),
                        c.decoder_head_dim(),
                        dtype,
                    )
                })
                .collect::<Result<_>>()?,
            layer_norm: LayerNorm::load(store, &format!("{dec}.layer_norm"), d, dtype)?,
        };
        Ok(Self {
            config: config.clone(),
            encoder,
            decoder,
            dtype,
        })
    }

    /// Every linear layer by its Hugging Face tensor path (without `.weight`), encoder first.
    /// Compression passes walk this list.
    pub fn linears_mut(&mut self) -> Vec<(String, &mut Linear)> {
        block_linears(&mut self.encoder.layers, &mut self.decoder.layers)
            .into_iter()
            .map(|l| (l.name, l.linear))
            .collect()
    }

    /// [`Self::linears_mut`] followed by the token embedding (tied output projection, path
    /// [`TOKEN_EMBEDDING`]): every matrix post-training quantization may pack.
    pub fn quantizable_mut(&mut self) -> Vec<(String, &mut Linear)> {
        self.layers_mut()
            .into_iter()
            .map(|l| (l.name, l.linear))
            .collect()
    }

    /// [`Self::quantizable_mut`] read-only (the layers alone, same order).
    pub fn quantizable(&self) -> Vec<&Linear> {
        self.layers().into_iter().map(|l| l.linear).collect()
    }

    /// Device of the weights.
    pub fn device(&self) -> &Device {
        self.decoder.embed_positions.device()
    }

    /// Per-layer shapes of the blocks as the model holds them.
    pub fn layer_shapes(&self) -> LayerShapes {
        LayerShapes {
            encoder: self.encoder.layers.iter().map(Block::shape).collect(),
            decoder: self.decoder.layers.iter().map(Block::shape).collect(),
        }
    }

    /// [`LayerShapes::summary`] of [`Self::layer_shapes`].
    pub fn shape_summary(&self) -> String {
        self.layer_shapes().summary()
    }

    /// [`Layers::held_tensors`]: every tensor but the packed layer weights, under Hugging
    /// Face names (`model.` prefix), the conv kernels as `[out, in, kernel]`; weights of other
    /// states (fake-quantized, ternary, mixed) as the dense matrix the forward uses.
    fn tensors_held(&self) -> Result<Vec<(String, Tensor)>> {
        let mut out: Vec<(String, Tensor)> = Vec::new();
        let linear = |out: &mut Vec<(String, Tensor)>, name: &str, l: &Linear| -> Result<()> {
            if !matches!(l.weight, crate::nn::Weight::Packed(_)) {
                out.push((format!("{name}.weight"), l.weight.to_dense()?));
            }
            if let Some(b) = &l.bias {
                out.push((format!("{name}.bias"), b.clone()));
            }
            Ok(())
        };
        let norm = |out: &mut Vec<(String, Tensor)>, name: &str, n: &LayerNorm| {
            out.push((format!("{name}.weight"), n.weight.clone()));
            out.push((format!("{name}.bias"), n.bias.clone()));
        };
        let enc = &self.encoder;
        for (name, conv) in [
            ("model.encoder.conv1", &enc.conv1),
            ("model.encoder.conv2", &enc.conv2),
        ] {
            out.push((format!("{name}.weight"), conv.kernel_tensor()?.detach()));
            if let Some(b) = &conv.bias {
                out.push((format!("{name}.bias"), b.clone()));
            }
        }
        out.push((
            "model.encoder.embed_positions.weight".into(),
            enc.embed_positions.clone(),
        ));
        linear(&mut out, TOKEN_EMBEDDING, &self.decoder.embed_tokens)?;
        out.push((
            "model.decoder.embed_positions.weight".into(),
            self.decoder.embed_positions.clone(),
        ));
        for (part, blocks, final_norm) in [
            ("model.encoder", &enc.layers, &enc.layer_norm),
            (
                "model.decoder",
                &self.decoder.layers,
                &self.decoder.layer_norm,
            ),
        ] {
            norm(&mut out, &format!("{part}.layer_norm"), final_norm);
            for (i, b) in blocks.iter().enumerate() {
                let p = format!("{part}.layers.{i}");
                for (name, norm_name, module) in [
                    ("self_attn", SELF_ATTN_NORM, &b.self_attn),
                    ("encoder_attn", CROSS_ATTN_NORM, &b.encoder_attn),
                ] {
                    let Some(m) = module else { continue };
                    for (proj, _, l) in m.attn.projections() {
                        linear(&mut out, &format!("{p}.{name}.{proj}"), l)?;
                    }
                    norm(&mut out, &format!("{p}.{norm_name}"), &m.norm);
                }
                if let Some(f) = &b.mlp {
                    linear(&mut out, &format!("{p}.fc1"), &f.fc1)?;
                    linear(&mut out, &format!("{p}.fc2"), &f.fc2)?;
                    norm(&mut out, &format!("{p}.{MLP_NORM}"), &f.norm);
                }
            }
        }
        Ok(out)
    }
}

impl Layers for Whisper {
    fn layers(&self) -> Vec<LayerRef<'_>> {
        let mut out = Vec::new();
        for (part, layers) in [
            ("model.encoder", &self.encoder.layers),
            ("model.decoder", &self.decoder.layers),
        ] {
            for (i, layer) in layers.iter().enumerate() {
                let p = format!("{part}.layers.{i}");
                let attns = [
                    ("self_attn", &layer.self_attn),
                    ("encoder_attn", &layer.encoder_attn),
                ];
                for (name, module) in attns {
                    let Some(m) = module else { continue };
                    for (proj, role, linear) in m.attn.projections() {
                        out.push(LayerRef {
                            name: format!("{p}.{name}.{proj}"),
                            role,
                            linear,
                        });
                    }
                }
                if let Some(f) = &layer.mlp {
                    out.push(LayerRef {
                        name: format!("{p}.fc1"),
                        role: LayerRole::FeedForwardIn,
                        linear: &f.fc1,
                    });
                    out.push(LayerRef {
                        name: format!("{p}.fc2"),
                        role: LayerRole::FeedForwardOut,
                        linear: &f.fc2,
                    });
                }
            }
        }
        out.push(LayerRef {
            name: TOKEN_EMBEDDING.to_string(),
            role: LayerRole::TokenEmbedding,
            linear: &self.decoder.embed_tokens,
        });
        out
    }

    fn held_tensors(&self) -> Result<Option<Vec<(String, Tensor)>>> {
        self.tensors_held().map(Some)
    }

    fn prunable_modules(&self) -> Vec<PrunableModule> {
        let d = self.config.d_model;
        let mut out = Vec::new();
        for (part, layers, hd) in [
            (
                "model.encoder",
                &self.encoder.layers,
                self.config.encoder_head_dim(),
            ),
            (
                "model.decoder",
                &self.decoder.layers,
                self.config.decoder_head_dim(),
            ),
        ] {
            for (i, b) in layers.iter().enumerate() {
                let layer = format!("{part}.layers.{i}");
                for (name, module) in [
                    ("self_attn", &b.self_attn),
                    ("encoder_attn", &b.encoder_attn),
                ] {
                    let Some(m) = module else { continue };
                    out.push(PrunableModule {
                        name: format!("{layer}.{name}"),
                        layer: layer.clone(),
                        output: format!("{layer}.{name}.out_proj"),
                        value_input: format!("{layer}.{name}.v_proj"),
                        kind: UnitKind::Heads,
                        units: m.attn.heads,
                        unit_width: hd,
                        unit_parameters: BlockShape::head_parameters(d, hd),
                        module_parameters: BlockShape::module_parameters(d),
                    });
                }
                if let Some(f) = &b.mlp {
                    out.push(PrunableModule {
                        name: format!("{layer}.mlp"),
                        layer: layer.clone(),
                        output: format!("{layer}.fc2"),
                        value_input: format!("{layer}.fc1"),
                        kind: UnitKind::FeedForward,
                        units: f.width(),
                        unit_width: 1,
                        unit_parameters: BlockShape::ffn_unit_parameters(d),
                        module_parameters: BlockShape::module_parameters(d),
                    });
                }
            }
        }
        out
    }

    fn prune_modules(
        &mut self,
        keep: &std::collections::BTreeMap<String, crate::compress::prune::ModuleKeep>,
    ) -> Result<()> {
        use crate::compress::prune::{BlockKeep, ModuleKeep, StructureKeep};
        let known: Vec<String> = self
            .prunable_modules()
            .into_iter()
            .map(|m| m.name)
            .collect();
        if let Some(unknown) = keep.keys().find(|k| !known.contains(k)) {
            return Err(Error::config(
                unknown.as_str(),
                "not a prunable module of this model",
            ));
        }
        let plan = |part: &str, blocks: &[Block]| -> Vec<BlockKeep> {
            blocks
                .iter()
                .enumerate()
                .map(|(i, b)| {
                    let s = b.shape();
                    let get = |name: &str, n: usize| {
                        keep.get(&format!("{part}.layers.{i}.{name}"))
                            .cloned()
                            .unwrap_or_else(|| ModuleKeep::all(n))
                    };
                    BlockKeep {
                        self_attn: get("self_attn", s.self_attention_heads),
                        cross_attn: get("encoder_attn", s.cross_attention_heads),
                        mlp: get("mlp", s.ffn_dim),
                    }
                })
                .collect()
        };
        let structure = StructureKeep {
            encoder: plan("model.encoder", &self.encoder.layers),
            decoder: plan("model.decoder", &self.decoder.layers),
        };
        crate::compress::prune::prune_whisper(self, &structure)?;
        Ok(())
    }

    fn config_header(&self) -> Result<Option<serde_json::Value>> {
        serde_json::to_value(&self.config)
            .map(Some)
            .map_err(|e| Error::Json {
                context: "Whisper config".into(),
                source: e,
            })
    }

    fn layers_mut(&mut self) -> Vec<LayerMut<'_>> {
        let mut out = block_linears(&mut self.encoder.layers, &mut self.decoder.layers);
        out.push(LayerMut {
            name: TOKEN_EMBEDDING.to_string(),
            role: LayerRole::TokenEmbedding,
            linear: &mut self.decoder.embed_tokens,
        });
        out
    }
}

/// The linear layers of encoder and decoder blocks by tensor path, encoder first.
fn block_linears<'a>(encoder: &'a mut [Block], decoder: &'a mut [Block]) -> Vec<LayerMut<'a>> {
    let mut out = Vec::new();
    for (part, layers) in [("model.encoder", encoder), ("model.decoder", decoder)] {
        for (i, layer) in layers.iter_mut().enumerate() {
            let p = format!("{part}.layers.{i}");
            let Block {
                self_attn,
                encoder_attn,
                mlp,
            } = layer;
            for (name, module) in [("self_attn", self_attn), ("encoder_attn", encoder_attn)] {
                let Some(m) = module else { continue };
                for (proj, role, linear) in m.attn.projections_mut() {
                    out.push(LayerMut {
                        name: format!("{p}.{name}.{proj}"),
                        role,
                        linear,
                    });
                }
            }
            if let Some(FeedForward { fc1, fc2, .. }) = mlp {
                out.push(LayerMut {
                    name: format!("{p}.fc1"),
                    role: LayerRole::FeedForwardIn,
                    linear: fc1,
                });
                out.push(LayerMut {
                    name: format!("{p}.fc2"),
                    role: LayerRole::FeedForwardOut,
                    linear: fc2,
                });
            }
        }
    }
    out
}
