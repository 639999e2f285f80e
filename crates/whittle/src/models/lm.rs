//! What every standalone language model provides ([`super::llama::Llama`] from GGUF,
//! [`super::gpt2::Gpt2`] from Hugging Face): next-token logits of token ids, through its
//! quantizable [`Layers`]. Perplexity, the KL sensitivity and the trainer are written once
//! against it.

use candle_core::{Device, Tensor};

use super::Layers;
use crate::error::Result;

/// A causal (decoder-only) Transformer language model.
pub trait CausalLm: Layers + Clone {
    /// Final hidden states `[b, t, d]` of token ids `[b, t]` (u32), each sequence from position 0.
    fn hidden(&self, tokens: &Tensor) -> Result<Tensor>;
    /// The output projection of hidden states `[.., d]` to logits `[.., vocab]`.
    fn project(&self, hidden: &Tensor) -> Result<Tensor>;
    /// Longest sequence it takes.
    fn context_length(&self) -> usize;
    /// Where its tensors live.
    fn device(&self) -> Device;

    /// Next-token logits `[b, t, vocab]` of token ids `[b, t]`.
    fn next_token_logits(&self, tokens: &Tensor) -> Result<Tensor> {
        self.project(&self.hidden(tokens)?)
    }
}

impl CausalLm for super::llama::Llama {
    fn hidden(&self, tokens: &Tensor) -> Result<Tensor> {
        super::llama::Llama::hidden(self, tokens)
    }
    fn project(&self, hidden: &Tensor) -> Result<Tensor> {
        use candle_core::Module;
        Ok(match &self.output {
            Some(out) => out.forward(hidden)?,
            None => self.embed.forward(hidden)?,
        })
    }
    fn context_length(&self) -> usize {
        self.config.context_length
    }
    fn device(&self) -> Device {
        self.norm.weight.device().clone()
    }
}

impl CausalLm for super::gpt2::Gpt2 {
    fn hidden(&self, tokens: &Tensor) -> Result<Tensor> {
        super::gpt2::Gpt2::hidden(self, tokens)
    }
    fn project(&self, hidden: &Tensor) -> Result<Tensor> {
        use candle_core::Module;
        Ok(self.wte.forward(hidden)?)
    }
    fn context_length(&self) -> usize {
        self.config.n_positions
    }
    fn device(&self) -> Device {
        self.wpe.device().clone()
    }
}

/// Either language model family, for code that takes whichever file it is given.
#[derive(Debug, Clone)]
pub enum AnyLm {
    /// A Llama-architecture model (GGUF, or whittle's `llama` files).
    Llama(super::llama::Llama),
    /// A GPT-2 (Hugging Face folder, or whittle's `gpt2` files).
    Gpt2(super::gpt2::Gpt2),
}

/// `$body` with `$m` bound to the model inside an [`AnyLm`].
macro_rules! each_lm {
    ($lm:expr, $m:ident => $body:expr) => {
        match $lm {
            AnyLm::Llama($m) => $body,
            AnyLm::Gpt2($m) => $body,
        }
    };
}

impl Layers for AnyLm {
    fn layers(&self) -> Vec<super::LayerRef<'_>> {
        each_lm!(self, m => m.layers())
    }
    fn layers_mut(&mut self) -> Vec<super::LayerMut<'_>> {
        each_lm!(self, m => m.layers_mut())
    }
    fn held_tensors(&self) -> Result<Option<Vec<(String, Tensor)>>> {
        each_lm!(self, m => m.held_tensors())
    }
}

impl CausalLm for AnyLm {
    fn hidden(&self, tokens: &Tensor) -> Result<Tensor> {
        each_lm!(self, m => m.hidden(tokens))
    }
    fn project(&self, hidden: &Tensor) -> Result<Tensor> {
        each_lm!(self, m => CausalLm::project(m, hidden))
    }
    fn context_length(&self) -> usize {
        each_lm!(self, m => m.context_length())
    }
    fn device(&self) -> Device {
        each_lm!(self, m => CausalLm::device(m))
    }
}

impl AnyLm {
    /// The name of its token embedding layer (`token_embd`, `wte`).
    pub fn embedding_layer(&self) -> &'static str {
        match self {
            AnyLm::Llama(_) => "token_embd",
            AnyLm::Gpt2(_) => "wte",
        }
    }

    /// Open a `.whittle` language model of either architecture (`llama`, `gpt2`).
    pub fn open_packed(
        path: &std::path::Path,
        device: &Device,
    ) -> Result<(Self, super::llama::LlamaTokenizer)> {
        let file = crate::packed_file::PackedFile::open(path)?;
        match file.architecture() {
            super::gpt2::ARCHITECTURE => {
                let (m, t) = super::gpt2::Gpt2::open_packed(path, device)?;
                Ok((AnyLm::Gpt2(m), t))
            }
            _ => {
                let (m, t) = super::llama::Llama::open_packed(path, device)?;
                Ok((AnyLm::Llama(m), t))
            }
        }
    }
}

/// The header fields of a `.whittle` language model: its configuration and tokenizer.
pub(crate) fn packed_header(
    config: serde_json::Value,
    tokenizer: &super::llama::LlamaTokenizer,
) -> Result<Vec<(String, serde_json::Value)>> {
    use crate::packed_file::keys;
    Ok(vec![
        (keys::CONFIG.to_string(), config),
        (keys::TOKENIZER.to_string(), tokenizer.to_header()?),
    ])
}

/// Open a `.whittle` language model of `architecture` (another is refused): its header's
/// configuration, its tokenizer and its tensors (packed matrices stay packed).
pub(crate) fn open_packed_parts(
    path: &std::path::Path,
    architecture: &str,
    device: &Device,
) -> Result<(
    serde_json::Value,
    super::llama::LlamaTokenizer,
    crate::checkpoint::TensorStore,
)> {
    use crate::error::Error;
    use crate::packed_file::keys;
    let file = crate::packed_file::PackedFile::open(path)?;
    if file.architecture() != architecture {
        return Err(Error::UnknownModel {
            path: path.into(),
            reason: format!(
                "architecture `{}` is not the language model `{architecture}`",
                file.architecture()
            ),
        });
    }
    let field = |key: &str| {
        file.header_field(key)
            .ok_or_else(|| Error::malformed(path, format!("the header has no `{key}`")))
    };
    let config = field(keys::CONFIG)?.clone();
    let tokenizer = super::llama::LlamaTokenizer::from_header(field(keys::TOKENIZER)?, path)?;
    let store = crate::model_dir::packed_store(&file, path, device)?;
    Ok((config, tokenizer, store))
}

/// Causal scaled dot-product attention of heads `q`, `k`, `v` `[b, h, t, hd]` (as many key/value
/// heads as query heads), the heads concatenated back: `[b, t, h * hd]`.
pub fn causal_attention(q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
    let (b, h, t, hd) = q.dims4()?;
    let scores = (q.matmul(&k.t()?)? / (hd as f64).sqrt())?;
    let mask: Vec<f32> = (0..t)
        .flat_map(|i| (0..t).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 }))
        .collect();
    let mask = Tensor::from_vec(mask, (t, t), q.device())?;
    let probs = crate::nn::softmax_last_dim(&scores.broadcast_add(&mask)?)?;
    Ok(probs.matmul(v)?.transpose(1, 2)?.reshape((b, t, h * hd))?)
}
