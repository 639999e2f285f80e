//! GPT-2 (Radford et al. 2019), the Hugging Face `GPT2LMHeadModel` layout: learned absolute
//! positions, pre-LN blocks of causal self-attention (one fused query/key/value matrix) and a
//! GELU feed-forward (the tanh approximation, `gelu_new`), a final LayerNorm, and the output
//! projection tied to the token embedding.
//!
//! Loaded from a Hugging Face folder (`config.json` with `model_type = "gpt2"`,
//! `model.safetensors`, `tokenizer.json`) by tensor name, with or without the `transformer.`
//! prefix, every shape checked against the configuration. Hugging Face stores GPT-2's matrices
//! as `Conv1D` weights `[in, out]`; they are transposed once at load into whittle's `[out, in]`
//! [`Linear`]s, so post-training quantization, bit maps and sensitivities reach them through
//! [`Layers`] like any other model's.

use std::path::Path;

use candle_core::{DType, Device, Module, Tensor};

use crate::checkpoint::TensorStore;
use crate::error::{Error, Result};
use crate::models::llama::LlamaTokenizer;
use crate::models::{LayerMut, LayerRef, LayerRole, Layers};
use crate::nn::{LayerNorm, Linear, Weight};

/// Architecture name of GPT-2 `.whittle` files.
pub const ARCHITECTURE: &str = "gpt2";

/// The architecture's sizes, from Hugging Face's `config.json` (`GPT2Config`).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Gpt2Config {
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Learned positions (the longest sequence).
    pub n_positions: usize,
    /// Model width.
    pub n_embd: usize,
    /// Blocks.
    pub n_layer: usize,
    /// Attention heads.
    pub n_head: usize,
    /// Feed-forward width (`null`: 4 x `n_embd`).
    #[serde(default)]
    pub n_inner: Option<usize>,
    /// LayerNorm epsilon.
    #[serde(default = "default_eps")]
    pub layer_norm_epsilon: f64,
    /// Feed-forward activation; only `gelu_new` (GPT-2's) is implemented.
    #[serde(default = "default_activation")]
    pub activation_function: String,
    /// Attention variants GPT-2 does not use; refused when set (read so they are not ignored).
    #[serde(default)]
    pub scale_attn_by_inverse_layer_idx: bool,
    /// Whether scores are divided by the square root of the head width (GPT-2: yes).
    #[serde(default = "yes")]
    pub scale_attn_weights: bool,
    /// Whether the output projection is the token embedding (GPT-2: yes).
    #[serde(default = "yes")]
    pub tie_word_embeddings: bool,
    /// Encoder-decoder use of GPT-2 blocks; refused.
    #[serde(default)]
    pub add_cross_attention: bool,
}

fn yes() -> bool {
    true
}

fn default_eps() -> f64 {
    1e-5
}

fn default_activation() -> String {
    "gelu_new".into()
}

impl Gpt2Config {
    /// Parse and check `config.json` (`source` names it in errors).
    pub fn from_json(text: &str, source: &Path) -> Result<Self> {
        let config: Self = serde_json::from_str(text).map_err(|e| Error::Json {
            context: source.display().to_string(),
            source: e,
        })?;
        let fail = |reason: String| Error::malformed(source, reason);
        if config.n_embd == 0 || config.n_head == 0 || !config.n_embd.is_multiple_of(config.n_head)
        {
            return Err(fail(format!(
                "n_embd {} is not a positive multiple of n_head {}",
                config.n_embd, config.n_head
            )));
        }
        if config.vocab_size == 0 || config.n_positions == 0 || config.n_layer == 0 {
            return Err(fail(
                "vocab_size, n_positions and n_layer must be positive".into(),
            ));
        }
        if config.activation_function != "gelu_new" {
            return Err(fail(format!(
                "activation_function `{}` is not implemented (gelu_new)",
                config.activation_function
            )));
        }
        let unsupported = [
            (
                config.scale_attn_by_inverse_layer_idx,
                "scale_attn_by_inverse_layer_idx = true",
            ),
            (!config.scale_attn_weights, "scale_attn_weights = false"),
            (
                !config.tie_word_embeddings,
                "tie_word_embeddings = false (an untied lm_head)",
            ),
            (config.add_cross_attention, "add_cross_attention = true"),
        ];
        if let Some((_, what)) = unsupported.iter().find(|(set, _)| *set) {
            return Err(fail(format!("{what} is not implemented")));
        }
        let limit = 1usize << 20;
        if [
            config.vocab_size,
            config.n_positions,
            config.n_embd,
            config.inner(),
        ]
        .iter()
        .any(|&v| v > limit)
            || config.n_layer > 1024
        {
            return Err(fail("a size is implausibly large".into()));
        }
        Ok(config)
    }

    /// Feed-forward width.
    pub fn inner(&self) -> usize {
        self.n_inner.unwrap_or(4 * self.n_embd)
    }
}

/// One Transformer block.
#[derive(Debug, Clone)]
pub struct Gpt2Block {
    /// Norm before attention.
    pub ln_1: LayerNorm,
    /// Fused query, key and value projection `[3 d, d]`.
    pub c_attn: Linear,
    /// Attention output projection.
    pub attn_proj: Linear,
    /// Norm before the feed-forward.
    pub ln_2: LayerNorm,
    /// Feed-forward in.
    pub c_fc: Linear,
    /// Feed-forward out.
    pub mlp_proj: Linear,
}

/// The language model.
#[derive(Debug, Clone)]
pub struct Gpt2 {
    /// Sizes.
    pub config: Gpt2Config,
    /// Token embedding `[vocab, d]`, also the output projection.
    pub wte: Linear,
    /// Position embedding `[n_positions, d]`.
    pub wpe: Tensor,
    /// Blocks.
    pub blocks: Vec<Gpt2Block>,
    /// Final norm.
    pub ln_f: LayerNorm,
}

impl Gpt2 {
    /// Load from a store of Hugging Face tensors (names with or without `transformer.`).
    pub fn load(store: &TensorStore, config: &Gpt2Config) -> Result<Self> {
        let prefix = if store.contains("transformer.wte.weight") {
            "transformer."
        } else {
            ""
        };
        let (d, f) = (config.n_embd, config.inner());
        let dtype = DType::F32;
        let name = |n: &str| format!("{prefix}{n}");
        // Conv1D: weight [in, out], bias [out]; a packed matrix (whittle's own files) is
        // `[out, in]` like every packed layer.
        let conv = |n: &str, inp: usize, out: usize| -> Result<Linear> {
            let weight_name = name(&format!("{n}.weight"));
            let b = store.get(&name(&format!("{n}.bias")), &[out], dtype)?;
            if let Some(packed) = store.get_packed(&weight_name, [out, inp])? {
                return Ok(Linear::new(Weight::Packed(packed), Some(b)));
            }
            let w = store.get(&weight_name, &[inp, out], dtype)?;
            Ok(Linear::new(Weight::Float(w.t()?.contiguous()?), Some(b)))
        };
        let norm = |n: &str| {
            LayerNorm::load(store, &name(n), d, dtype).map(|mut l| {
                l.eps = config.layer_norm_epsilon;
                l
            })
        };
        let blocks = (0..config.n_layer)
            .map(|i| {
                Ok(Gpt2Block {
                    ln_1: norm(&format!("h.{i}.ln_1"))?,
                    c_attn: conv(&format!("h.{i}.attn.c_attn"), d, 3 * d)?,
                    attn_proj: conv(&format!("h.{i}.attn.c_proj"), d, d)?,
                    ln_2: norm(&format!("h.{i}.ln_2"))?,
                    c_fc: conv(&format!("h.{i}.mlp.c_fc"), d, f)?,
                    mlp_proj: conv(&format!("h.{i}.mlp.c_proj"), f, d)?,
                })
            })
            .collect::<Result<_>>()?;
        let wte_name = name("wte.weight");
        let wte = match store.get_packed(&wte_name, [config.vocab_size, d])? {
            Some(packed) => Weight::Packed(packed),
            None => Weight::Float(store.get(&wte_name, &[config.vocab_size, d], dtype)?),
        };
        Ok(Self {
            config: config.clone(),
            wte: Linear::new(wte, None),
            wpe: store.get(&name("wpe.weight"), &[config.n_positions, d], dtype)?,
            blocks,
            ln_f: norm("ln_f")?,
        })
    }

    /// Open a Hugging Face folder: the model and its `tokenizer.json`.
    pub fn open(dir: &Path, device: &Device) -> Result<(Self, LlamaTokenizer)> {
        let config_path = dir.join("config.json");
        let text = std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
        let config = Gpt2Config::from_json(&text, &config_path)?;
        let store =
            crate::checkpoint::hf::load_safetensors(&dir.join("model.safetensors"), device)?;
        let model = Self::load(&store, &config)?;
        let tokenizer = LlamaTokenizer::from_tokenizer_json(&dir.join("tokenizer.json"))?;
        Ok((model, tokenizer))
    }

    /// The configuration and tokenizer a `.whittle` file of architecture `gpt2` carries in its
    /// header (written by `whittle compress` from a Hugging Face folder).
    pub fn packed_header(
        &self,
        tokenizer: &LlamaTokenizer,
    ) -> Result<Vec<(String, serde_json::Value)>> {
        let config = serde_json::to_value(&self.config).map_err(|e| Error::Json {
            context: "gpt2 config".into(),
            source: e,
        })?;
        super::lm::packed_header(config, tokenizer)
    }

    /// Open a `.whittle` file of architecture `gpt2`: packed matrices stay packed, the other
    /// tensors load as the file stores them (Conv1D layout, as [`Layers::held_tensors`] writes
    /// them), computed in f32.
    pub fn open_packed(path: &Path, device: &Device) -> Result<(Self, LlamaTokenizer)> {
        let (config, tokenizer, store) = super::lm::open_packed_parts(path, ARCHITECTURE, device)?;
        let config = Gpt2Config::from_json(&config.to_string(), path)?;
        Ok((Self::load(&store, &config)?, tokenizer))
    }

    /// Whether `dir` holds a Hugging Face GPT-2 (`config.json`'s `model_type` is `gpt2`).
    pub fn is_gpt2_folder(dir: &Path) -> bool {
        std::fs::read_to_string(dir.join("config.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .is_some_and(|v| v["model_type"] == "gpt2")
    }

    /// Causal self-attention of one block on normalised `x` `[b, t, d]`.
    fn attention(&self, block: &Gpt2Block, x: &Tensor) -> Result<Tensor> {
        let (b, t, d) = x.dims3()?;
        let (h, hd) = (self.config.n_head, d / self.config.n_head);
        let qkv = block.c_attn.forward(x)?;
        let heads = |i: usize| -> Result<Tensor> {
            Ok(qkv
                .narrow(2, i * d, d)?
                .reshape((b, t, h, hd))?
                .transpose(1, 2)?
                .contiguous()?)
        };
        let (q, k, v) = (heads(0)?, heads(1)?, heads(2)?);
        let out = crate::models::lm::causal_attention(&q, &k, &v)?;
        Ok(block.attn_proj.forward(&out)?)
    }

    /// Final hidden states `[b, t, d]` of token ids `[b, t]` (u32), each from position 0.
    pub fn hidden(&self, tokens: &Tensor) -> Result<Tensor> {
        let (_, t) = tokens.dims2()?;
        if t > self.config.n_positions {
            return Err(Error::config(
                "gpt2",
                format!(
                    "{t} tokens exceed the {} positions",
                    self.config.n_positions
                ),
            ));
        }
        let positions = self.wpe.narrow(0, 0, t)?;
        let mut x = self.wte.weight.rows(tokens)?.broadcast_add(&positions)?;
        for block in &self.blocks {
            let a = self.attention(block, &block.ln_1.forward(&x)?)?;
            x = (x + a)?;
            let n = block.ln_2.forward(&x)?;
            let f = block.mlp_proj.forward(&block.c_fc.forward(&n)?.gelu()?)?;
            x = (x + f)?;
        }
        Ok(self.ln_f.forward(&x)?)
    }
}

impl Layers for Gpt2 {
    /// Every tensor but the packed matrices, without the `transformer.` prefix and with float
    /// matrices back in Hugging Face's Conv1D layout `[in, out]`, so [`Gpt2::load`] reads the
    /// file as it reads a checkpoint.
    fn held_tensors(&self) -> Result<Option<Vec<(String, Tensor)>>> {
        let mut out = Vec::new();
        let norm = |out: &mut Vec<(String, Tensor)>, name: &str, n: &LayerNorm| {
            out.push((format!("{name}.weight"), n.weight.clone()));
            out.push((format!("{name}.bias"), n.bias.clone()));
        };
        if !matches!(self.wte.weight, Weight::Packed(_)) {
            out.push(("wte.weight".into(), self.wte.weight.to_dense()?));
        }
        out.push(("wpe.weight".into(), self.wpe.clone()));
        for (i, b) in self.blocks.iter().enumerate() {
            norm(&mut out, &format!("h.{i}.ln_1"), &b.ln_1);
            norm(&mut out, &format!("h.{i}.ln_2"), &b.ln_2);
            for (part, linear) in [
                ("attn.c_attn", &b.c_attn),
                ("attn.c_proj", &b.attn_proj),
                ("mlp.c_fc", &b.c_fc),
                ("mlp.c_proj", &b.mlp_proj),
            ] {
                let name = format!("h.{i}.{part}");
                if !matches!(linear.weight, Weight::Packed(_)) {
                    let w = linear.weight.to_dense()?.t()?.contiguous()?;
                    out.push((format!("{name}.weight"), w));
                }
                if let Some(bias) = &linear.bias {
                    out.push((format!("{name}.bias"), bias.clone()));
                }
            }
        }
        norm(&mut out, "ln_f", &self.ln_f);
        Ok(Some(out))
    }

    fn layers(&self) -> Vec<LayerRef<'_>> {
        let mut out = vec![LayerRef {
            name: "wte".into(),
            role: LayerRole::TokenEmbedding,
            linear: &self.wte,
        }];
        for (i, b) in self.blocks.iter().enumerate() {
            for (part, role, linear) in [
                ("attn.c_attn", LayerRole::AttentionQuery, &b.c_attn),
                ("attn.c_proj", LayerRole::AttentionOutput, &b.attn_proj),
                ("mlp.c_fc", LayerRole::FeedForwardIn, &b.c_fc),
                ("mlp.c_proj", LayerRole::FeedForwardOut, &b.mlp_proj),
            ] {
                out.push(LayerRef {
                    name: format!("h.{i}.{part}"),
                    role,
                    linear,
                });
            }
        }
        out
    }

    fn layers_mut(&mut self) -> Vec<LayerMut<'_>> {
        let mut out = vec![LayerMut {
            name: "wte".into(),
            role: LayerRole::TokenEmbedding,
            linear: &mut self.wte,
        }];
        for (i, b) in self.blocks.iter_mut().enumerate() {
            for (part, role, linear) in [
                ("attn.c_attn", LayerRole::AttentionQuery, &mut b.c_attn),
                ("attn.c_proj", LayerRole::AttentionOutput, &mut b.attn_proj),
                ("mlp.c_fc", LayerRole::FeedForwardIn, &mut b.c_fc),
                ("mlp.c_proj", LayerRole::FeedForwardOut, &mut b.mlp_proj),
            ] {
                out.push(LayerMut {
                    name: format!("h.{i}.{part}"),
                    role,
                    linear,
                });
            }
        }
        out
    }
}
