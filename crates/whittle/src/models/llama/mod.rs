//! A decoder-only Transformer language model of the Llama architecture (Touvron et al. 2023):
//! pre-norm blocks of RMSNorm, causal self-attention with rotary positions and grouped
//! key/value heads, and a SwiGLU feed-forward; the output projection is the token embedding
//! when the checkpoint has no `output.weight` (SmolLM2 ties them).
//!
//! It is loaded from a GGUF file ([`crate::checkpoint::gguf`]) by llama.cpp's tensor names
//! (`token_embd`, `blk.N.attn_q`, ..., `output_norm`), with every shape checked against the
//! metadata. llama.cpp's converter permutes the query and key rows of Hugging Face checkpoints
//! so that rotary embeddings rotate adjacent pairs `(2i, 2i+1)` (`LLAMA_ROPE_TYPE_NORM`); this
//! implementation does the same, so the GGUF weights are used as stored.
//!
//! Every matrix is a [`Linear`], so post-training quantization, bit maps and the
//! training-time methods reach it through [`Layers`] as they reach Whisper's.

pub mod tokenizer;

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor, D};

use crate::checkpoint::gguf::GgufFile;
use crate::checkpoint::TensorStore;
use crate::error::{Error, Result};
use crate::models::{LayerMut, LayerRef, LayerRole, Layers};
use crate::nn::Linear;

pub use tokenizer::LlamaTokenizer;

/// The architecture's sizes, from the GGUF metadata (`llama.*`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LlamaConfig {
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Model width.
    pub hidden_size: usize,
    /// Feed-forward width.
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub num_layers: usize,
    /// Query heads.
    pub num_heads: usize,
    /// Key/value heads (grouped-query attention when fewer than the query heads).
    pub num_kv_heads: usize,
    /// Base of the rotary frequencies.
    pub rope_theta: f64,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// Longest sequence the model was trained on.
    pub context_length: usize,
}

impl LlamaConfig {
    /// Width of one head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// The configuration a `llama` GGUF file describes, checked for consistency.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let arch = file.str("general.architecture")?;
        if arch != "llama" {
            return Err(Error::malformed(
                &file.path,
                format!("architecture `{arch}`; whittle reads `llama` language models"),
            ));
        }
        let vocab_size = match file.metadata.get("llama.vocab_size") {
            Some(_) => file.usize("llama.vocab_size")?,
            None => file.strings("tokenizer.ggml.tokens")?.len(),
        };
        let config = Self {
            vocab_size,
            hidden_size: file.usize("llama.embedding_length")?,
            intermediate_size: file.usize("llama.feed_forward_length")?,
            num_layers: file.usize("llama.block_count")?,
            num_heads: file.usize("llama.attention.head_count")?,
            num_kv_heads: match file.metadata.get("llama.attention.head_count_kv") {
                Some(_) => file.usize("llama.attention.head_count_kv")?,
                None => file.usize("llama.attention.head_count")?,
            },
            rope_theta: match file.metadata.get("llama.rope.freq_base") {
                Some(_) => file.f64("llama.rope.freq_base")?,
                None => 10_000.0,
            },
            rms_eps: file.f64("llama.attention.layer_norm_rms_epsilon")?,
            context_length: file.usize("llama.context_length")?,
        };
        config
            .validate()
            .map_err(|reason| Error::malformed(&file.path, reason))?;
        if let Some(v) = file.metadata.get("llama.rope.dimension_count") {
            let dims = v.as_u64().unwrap_or(0) as usize;
            if dims != config.head_dim() {
                return Err(Error::malformed(
                    &file.path,
                    format!(
                        "llama.rope.dimension_count {dims}: whittle rotates whole heads of {}",
                        config.head_dim()
                    ),
                ));
            }
        }
        Ok(config)
    }

    /// Check the sizes; the message names the field.
    pub fn validate(&self) -> std::result::Result<(), String> {
        const MAX: usize = 1 << 20;
        for (name, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_layers", self.num_layers),
            ("num_heads", self.num_heads),
            ("num_kv_heads", self.num_kv_heads),
            ("context_length", self.context_length),
        ] {
            if v == 0 || v > MAX {
                return Err(format!("{name} {v} is outside 1..={MAX}"));
            }
        }
        if self.num_layers > 1024 {
            return Err(format!("num_layers {} exceeds 1024", self.num_layers));
        }
        if !self.hidden_size.is_multiple_of(self.num_heads) || !self.head_dim().is_multiple_of(2) {
            return Err(format!(
                "hidden_size {} is not an even head width times num_heads {}",
                self.hidden_size, self.num_heads
            ));
        }
        if !self.num_heads.is_multiple_of(self.num_kv_heads) {
            return Err(format!(
                "num_heads {} is not a multiple of num_kv_heads {}",
                self.num_heads, self.num_kv_heads
            ));
        }
        if !(self.rope_theta.is_finite() && self.rope_theta > 1.0) {
            return Err(format!(
                "rope_theta {} must be finite and > 1",
                self.rope_theta
            ));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0) {
            return Err(format!("rms_eps {} must be positive", self.rms_eps));
        }
        Ok(())
    }
}

/// Root-mean-square normalisation over the last dimension with a learned scale.
#[derive(Debug, Clone)]
pub struct RmsNorm {
    /// Scale, `[d]`.
    pub weight: Tensor,
    /// Added to the mean square.
    pub eps: f64,
}

impl Module for RmsNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let scale = (x.sqr()?.mean_keepdim(D::Minus1)? + self.eps)?
            .sqrt()?
            .recip()?;
        x.broadcast_mul(&scale)?.broadcast_mul(&self.weight)
    }
}

/// One Transformer block.
#[derive(Debug, Clone)]
pub struct LlamaBlock {
    /// Norm before attention.
    pub attn_norm: RmsNorm,
    /// Query projection.
    pub q: Linear,
    /// Key projection (`num_kv_heads` heads).
    pub k: Linear,
    /// Value projection (`num_kv_heads` heads).
    pub v: Linear,
    /// Output projection.
    pub o: Linear,
    /// Norm before the feed-forward.
    pub ffn_norm: RmsNorm,
    /// SwiGLU gate.
    pub gate: Linear,
    /// SwiGLU up projection.
    pub up: Linear,
    /// Down projection.
    pub down: Linear,
}

/// The language model.
#[derive(Debug, Clone)]
pub struct Llama {
    /// Sizes.
    pub config: LlamaConfig,
    /// Token embedding `[vocab, d]` (and the output projection when `output` is `None`).
    pub embed: Linear,
    /// Blocks.
    pub blocks: Vec<LlamaBlock>,
    /// Final norm.
    pub norm: RmsNorm,
    /// Untied output projection, when the checkpoint has one.
    pub output: Option<Linear>,
}

/// The `.whittle` architecture name of a Llama-family language model.
pub const ARCHITECTURE: &str = "llama";

/// The GGUF name of block `i`'s tensor `part` (`attn_q`, ...).
fn block_name(i: usize, part: &str) -> String {
    format!("blk.{i}.{part}")
}

impl Llama {
    /// Load from a store of GGUF-named tensors (see [`GgufFile::to_store`]).
    pub fn load(store: &TensorStore, config: &LlamaConfig, dtype: DType) -> Result<Self> {
        config
            .validate()
            .map_err(|reason| Error::config("llama config", reason))?;
        let (d, f) = (config.hidden_size, config.intermediate_size);
        let kv = config.num_kv_heads * config.head_dim();
        let norm = |name: &str| -> Result<RmsNorm> {
            Ok(RmsNorm {
                weight: store.get(&format!("{name}.weight"), &[d], dtype)?,
                eps: config.rms_eps,
            })
        };
        let linear =
            |name: &str, inp: usize, out: usize| Linear::load(store, name, inp, out, false, dtype);
        let blocks = (0..config.num_layers)
            .map(|i| {
                Ok(LlamaBlock {
                    attn_norm: norm(&block_name(i, "attn_norm"))?,
                    q: linear(&block_name(i, "attn_q"), d, d)?,
                    k: linear(&block_name(i, "attn_k"), d, kv)?,
                    v: linear(&block_name(i, "attn_v"), d, kv)?,
                    o: linear(&block_name(i, "attn_output"), d, d)?,
                    ffn_norm: norm(&block_name(i, "ffn_norm"))?,
                    gate: linear(&block_name(i, "ffn_gate"), d, f)?,
                    up: linear(&block_name(i, "ffn_up"), d, f)?,
                    down: linear(&block_name(i, "ffn_down"), f, d)?,
                })
            })
            .collect::<Result<_>>()?;
        let output = if store.contains("output.weight") {
            Some(linear("output", d, config.vocab_size)?)
        } else {
            None
        };
        Ok(Self {
            config: config.clone(),
            embed: linear("token_embd", d, config.vocab_size)?,
            blocks,
            norm: norm("output_norm")?,
            output,
        })
    }

    /// Read a GGUF file: the configuration from its metadata, the tensors dequantized to f32.
    pub fn from_gguf(file: &GgufFile, device: &Device) -> Result<(Self, TensorStore)> {
        let config = LlamaConfig::from_gguf(file)?;
        let store = file.to_store(device, |name| Some(name.to_string()))?;
        let model = Self::load(&store, &config, DType::F32)?;
        Ok((model, store))
    }

    /// The configuration and tokenizer a `.whittle` file of architecture `llama` carries in its
    /// header (written by `whittle compress` from a GGUF model).
    pub fn packed_header(
        model: &Self,
        tokenizer: &LlamaTokenizer,
    ) -> Result<Vec<(String, serde_json::Value)>> {
        let config = serde_json::to_value(&model.config).map_err(|e| Error::Json {
            context: "llama config".into(),
            source: e,
        })?;
        super::lm::packed_header(config, tokenizer)
    }

    /// Open a `.whittle` file of architecture `llama`: packed matrices stay packed, the other
    /// tensors load as the file stores them, computed in f32.
    pub fn open_packed(path: &Path, device: &Device) -> Result<(Self, LlamaTokenizer)> {
        let (config, tokenizer, store) = super::lm::open_packed_parts(path, ARCHITECTURE, device)?;
        let config: LlamaConfig = serde_json::from_value(config).map_err(|e| Error::Json {
            context: format!(
                "{}: header `{}`",
                path.display(),
                crate::packed_file::keys::CONFIG
            ),
            source: e,
        })?;
        let model = Self::load(&store, &config, DType::F32)?;
        Ok((model, tokenizer))
    }

    /// `cos` and `sin` of the rotary angles for positions `0..len`, `[len, head_dim / 2]`.
    fn rotary_tables(&self, len: usize, device: &Device) -> Result<(Tensor, Tensor)> {
        let half = self.config.head_dim() / 2;
        let inv: Vec<f32> = (0..half)
            .map(|i| {
                (1.0 / self
                    .config
                    .rope_theta
                    .powf(2.0 * i as f64 / self.config.head_dim() as f64)) as f32
            })
            .collect();
        let angles: Vec<f32> = (0..len)
            .flat_map(|p| inv.iter().map(move |w| p as f32 * w))
            .collect();
        let angles = Tensor::from_vec(angles, (len, half), device)?;
        Ok((angles.cos()?, angles.sin()?))
    }

    /// Rotate adjacent pairs of `x` `[b, heads, t, hd]` by the position angles.
    fn rotate(x: &Tensor, cos: &Tensor, sin: &Tensor) -> Result<Tensor> {
        let (b, h, t, hd) = x.dims4()?;
        let pairs = x.reshape((b, h, t, hd / 2, 2))?;
        let even = pairs.narrow(4, 0, 1)?.squeeze(4)?;
        let odd = pairs.narrow(4, 1, 1)?.squeeze(4)?;
        let (cos, sin) = (
            cos.unsqueeze(0)?.unsqueeze(0)?,
            sin.unsqueeze(0)?.unsqueeze(0)?,
        );
        let rotated_even = (even.broadcast_mul(&cos)? - odd.broadcast_mul(&sin)?)?;
        let rotated_odd = (even.broadcast_mul(&sin)? + odd.broadcast_mul(&cos)?)?;
        Ok(Tensor::stack(&[rotated_even, rotated_odd], 4)?.reshape((b, h, t, hd))?)
    }

    /// Causal attention of one block on normalised `x` `[b, t, d]`.
    fn attention(
        &self,
        block: &LlamaBlock,
        x: &Tensor,
        cos: &Tensor,
        sin: &Tensor,
    ) -> Result<Tensor> {
        let (b, t, _) = x.dims3()?;
        let (h, kvh, hd) = (
            self.config.num_heads,
            self.config.num_kv_heads,
            self.config.head_dim(),
        );
        let heads = |y: Tensor, n: usize| -> Result<Tensor> {
            Ok(y.reshape((b, t, n, hd))?.transpose(1, 2)?.contiguous()?)
        };
        let q = Self::rotate(&heads(block.q.forward(x)?, h)?, cos, sin)?;
        let k = Self::rotate(&heads(block.k.forward(x)?, kvh)?, cos, sin)?;
        let v = heads(block.v.forward(x)?, kvh)?;
        // Each key/value head serves `h / kvh` consecutive query heads.
        let repeat = |y: Tensor| -> Result<Tensor> {
            if kvh == h {
                return Ok(y);
            }
            Ok(y.unsqueeze(2)?
                .expand((b, kvh, h / kvh, t, hd))?
                .reshape((b, h, t, hd))?)
        };
        let (k, v) = (repeat(k)?, repeat(v)?);
        let out = crate::models::lm::causal_attention(&q, &k, &v)?;
        Ok(block.o.forward(&out)?)
    }

    /// Final hidden states `[b, t, d]` of token ids `[b, t]` (u32), each sequence from position 0.
    pub fn hidden(&self, tokens: &Tensor) -> Result<Tensor> {
        let (_, t) = tokens.dims2()?;
        if t > self.config.context_length {
            return Err(Error::config(
                "llama",
                format!(
                    "{t} tokens exceed the context of {}",
                    self.config.context_length
                ),
            ));
        }
        let (cos, sin) = self.rotary_tables(t, tokens.device())?;
        let mut x = self.embed.weight.rows(tokens)?;
        for block in &self.blocks {
            let a = self.attention(block, &block.attn_norm.forward(&x)?, &cos, &sin)?;
            x = (x + a)?;
            let n = block.ffn_norm.forward(&x)?;
            let g = candle_nn::ops::silu(&block.gate.forward(&n)?)?;
            let f = block.down.forward(&(g * block.up.forward(&n)?)?)?;
            x = (x + f)?;
        }
        Ok(self.norm.forward(&x)?)
    }

    /// Parameters (the tied embedding counted once).
    pub fn parameter_count(&self) -> usize {
        let (d, f, v) = (
            self.config.hidden_size,
            self.config.intermediate_size,
            self.config.vocab_size,
        );
        let kv = self.config.num_kv_heads * self.config.head_dim();
        let block = 2 * d * d + 2 * d * kv + 3 * d * f + 2 * d;
        v * d + self.config.num_layers * block + d + self.output.as_ref().map_or(0, |_| v * d)
    }
}

impl Layers for Llama {
    fn layers(&self) -> Vec<LayerRef<'_>> {
        let mut out = vec![LayerRef {
            name: "token_embd".into(),
            role: LayerRole::TokenEmbedding,
            linear: &self.embed,
        }];
        for (i, b) in self.blocks.iter().enumerate() {
            for (part, role, linear) in [
                ("attn_q", LayerRole::AttentionQuery, &b.q),
                ("attn_k", LayerRole::AttentionKey, &b.k),
                ("attn_v", LayerRole::AttentionValue, &b.v),
                ("attn_output", LayerRole::AttentionOutput, &b.o),
                ("ffn_gate", LayerRole::FeedForwardIn, &b.gate),
                ("ffn_up", LayerRole::FeedForwardIn, &b.up),
                ("ffn_down", LayerRole::FeedForwardOut, &b.down),
            ] {
                out.push(LayerRef {
                    name: block_name(i, part),
                    role,
                    linear,
                });
            }
        }
        if let Some(o) = &self.output {
            out.push(LayerRef {
                name: "output".into(),
                role: LayerRole::OutputHead,
                linear: o,
            });
        }
        out
    }

    fn layers_mut(&mut self) -> Vec<LayerMut<'_>> {
        let mut out = vec![LayerMut {
            name: "token_embd".into(),
            role: LayerRole::TokenEmbedding,
            linear: &mut self.embed,
        }];
        for (i, b) in self.blocks.iter_mut().enumerate() {
            for (part, role, linear) in [
                ("attn_q", LayerRole::AttentionQuery, &mut b.q),
                ("attn_k", LayerRole::AttentionKey, &mut b.k),
                ("attn_v", LayerRole::AttentionValue, &mut b.v),
                ("attn_output", LayerRole::AttentionOutput, &mut b.o),
                ("ffn_gate", LayerRole::FeedForwardIn, &mut b.gate),
                ("ffn_up", LayerRole::FeedForwardIn, &mut b.up),
                ("ffn_down", LayerRole::FeedForwardOut, &mut b.down),
            ] {
                out.push(LayerMut {
                    name: block_name(i, part),
                    role,
                    linear,
                });
            }
        }
        if let Some(o) = &mut self.output {
            out.push(LayerMut {
                name: "output".into(),
                role: LayerRole::OutputHead,
                linear: o,
            });
        }
        out
    }
}
