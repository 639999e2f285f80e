//! The byte-level BPE tokenizer a GGUF file carries in its metadata (`tokenizer.ggml.*`, model
//! `gpt2`), rebuilt as a `tokenizers` tokenizer: the vocabulary in id order, the merges in rank
//! order, control tokens (type 3) as special added tokens, and llama.cpp's pre-tokenizer of the
//! file's `tokenizer.ggml.pre`:
//!
//! - `smollm`: every digit on its own, then GPT-2's regex (llama.cpp's
//!   `LLAMA_VOCAB_PRE_TYPE_SMOLLM`, the `Digits(individual_digits)` + `ByteLevel` of the Hugging
//!   Face `tokenizer.json`);
//! - `gpt2` or `default`: GPT-2's regex alone.
//!
//! Other pre-tokenizers are refused by name rather than tokenized differently from llama.cpp.

use crate::checkpoint::gguf::GgufFile;
use crate::error::{Error, Result};

/// Token type of control tokens in `tokenizer.ggml.token_type`.
const CONTROL: u64 = 3;

/// The byte-level BPE tokenizer of a standalone language model: a GGUF file's (Llama) or a
/// Hugging Face `tokenizer.json` (GPT-2).
#[derive(Clone)]
pub struct LlamaTokenizer {
    inner: tokenizers::Tokenizer,
    /// `tokenizer.ggml.bos_token_id`.
    pub bos: Option<u32>,
    /// `tokenizer.ggml.eos_token_id`.
    pub eos: Option<u32>,
    /// Id of `<|endoftext|>`, the document separator of GPT-2-style pretraining, when present.
    pub end_of_text: Option<u32>,
}

impl std::fmt::Debug for LlamaTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LlamaTokenizer")
            .field("vocab", &self.inner.get_vocab_size(true))
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .finish_non_exhaustive()
    }
}

impl LlamaTokenizer {
    /// The tokenizer of a GGUF file.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        let fail = |reason: String| Error::malformed(&file.path, reason);
        let model = file.str("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(fail(format!(
                "tokenizer.ggml.model `{model}`: whittle reads byte-level BPE (`gpt2`) tokenizers"
            )));
        }
        let pre = match file.metadata.get("tokenizer.ggml.pre") {
            Some(_) => file.str("tokenizer.ggml.pre")?,
            None => "default",
        };
        let byte_level = serde_json::json!({
            "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true
        });
        let pre_tokenizer = match pre {
            "smollm" => serde_json::json!({
                "type": "Sequence",
                "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level],
            }),
            "gpt2" | "default" => byte_level,
            other => {
                return Err(fail(format!(
                    "tokenizer.ggml.pre `{other}` is not supported (smollm, gpt2, default)"
                )))
            }
        };
        let tokens = file.strings("tokenizer.ggml.tokens")?;
        let merges = file.strings("tokenizer.ggml.merges")?;
        let types: Vec<u64> = match file.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .as_array()
                .and_then(|a| a.iter().map(|t| t.as_u64()).collect::<Option<Vec<_>>>())
                .filter(|t| t.len() == tokens.len())
                .ok_or_else(|| {
                    fail(format!(
                        "tokenizer.ggml.token_type is not {} integers",
                        tokens.len()
                    ))
                })?,
            None => vec![1; tokens.len()],
        };
        let mut vocab = serde_json::Map::with_capacity(tokens.len());
        let mut added = Vec::new();
        for (id, (token, ty)) in tokens.iter().zip(&types).enumerate() {
            if vocab.insert(token.to_string(), id.into()).is_some() {
                return Err(fail(format!(
                    "token `{token}` appears twice in the vocabulary"
                )));
            }
            if *ty == CONTROL {
                added.push(serde_json::json!({
                    "id": id, "content": token, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true
                }));
            }
        }
        let json = serde_json::json!({
            "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
            "normalizer": null, "pre_tokenizer": pre_tokenizer, "post_processor": null,
            "decoder": {"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                "ignore_merges": false, "vocab": vocab, "merges": merges,
            },
        });
        let inner = json
            .to_string()
            .parse::<tokenizers::Tokenizer>()
            .map_err(|e| Error::Tokenizer {
                context: file.path.display().to_string(),
                reason: e.to_string(),
            })?;
        let id = |key: &str| -> Result<Option<u32>> {
            match file.metadata.get(key) {
                None => Ok(None),
                Some(_) => {
                    let id = file.usize(key)?;
                    if id >= tokens.len() {
                        return Err(fail(format!(
                            "{key} {id} is outside the vocabulary of {}",
                            tokens.len()
                        )));
                    }
                    Ok(Some(id as u32))
                }
            }
        };
        Ok(Self {
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            end_of_text: inner.token_to_id("<|endoftext|>"),
            inner,
        })
    }

    /// A Hugging Face `tokenizer.json` of a GPT-2-style model: BOS and EOS are
    /// `<|endoftext|>` when the vocabulary has it.
    pub fn from_tokenizer_json(path: &std::path::Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Tokenizer {
            context: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let end_of_text = inner.token_to_id("<|endoftext|>");
        Ok(Self {
            bos: end_of_text,
            eos: end_of_text,
            end_of_text,
            inner,
        })
    }

    /// The tokenizer as a `.whittle` header value: the rebuilt `tokenizers` JSON and the
    /// special ids (see docs/language-models.md).
    pub fn to_header(&self) -> Result<serde_json::Value> {
        let json = self.inner.to_string(false).map_err(|e| Error::Tokenizer {
            context: "serializing".into(),
            reason: e.to_string(),
        })?;
        Ok(serde_json::json!({
            "tokenizer_json": json,
            "bos_token_id": self.bos,
            "eos_token_id": self.eos,
        }))
    }

    /// The tokenizer [`LlamaTokenizer::to_header`] wrote, read from `source`'s header; ids outside
    /// the vocabulary are refused.
    pub fn from_header(value: &serde_json::Value, source: &std::path::Path) -> Result<Self> {
        let fail =
            |reason: String| Error::malformed(source, format!("header `tokenizer`: {reason}"));
        let json = value
            .get("tokenizer_json")
            .and_then(|v| v.as_str())
            .ok_or_else(|| fail("no `tokenizer_json` string".into()))?;
        let inner = json
            .parse::<tokenizers::Tokenizer>()
            .map_err(|e| fail(e.to_string()))?;
        let vocab = inner.get_vocab_size(true);
        let id = |key: &str| -> Result<Option<u32>> {
            match value.get(key) {
                None | Some(serde_json::Value::Null) => Ok(None),
                Some(v) => match v.as_u64() {
                    Some(id) if (id as usize) < vocab => Ok(Some(id as u32)),
                    _ => Err(fail(format!("`{key}` {v} is not an id below {vocab}"))),
                },
            }
        };
        Ok(Self {
            bos: id("bos_token_id")?,
            eos: id("eos_token_id")?,
            end_of_text: inner.token_to_id("<|endoftext|>"),
            inner,
        })
    }

    /// Token ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer {
                context: "encoding".into(),
                reason: e.to_string(),
            })?
            .get_ids()
            .to_vec())
    }

    /// A text as the language model scores it: the document separator (`<|endoftext|>`, else
    /// BOS), then the trimmed text's tokens.
    pub fn document(&self, text: &str) -> Result<Vec<u32>> {
        let start = self
            .end_of_text
            .or(self.bos)
            .ok_or_else(|| Error::Tokenizer {
                context: "encoding".into(),
                reason: "the tokenizer has neither <|endoftext|> nor a BOS token to start a text"
                    .into(),
            })?;
        let mut ids = vec![start];
        ids.extend(self.encode(text.trim())?);
        Ok(ids)
    }

    /// The text of `ids` (special tokens skipped).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(|e| Error::Tokenizer {
            context: "decoding".into(),
            reason: e.to_string(),
        })
    }

    /// Tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}
