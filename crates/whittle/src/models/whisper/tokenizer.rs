//! Whisper's byte-level BPE tokenizer (`tokenizer.json`) and its special tokens.

use std::path::Path;

use crate::error::{Error, Result};

/// The tokenizer with the ids of the special tokens decoding needs.
#[derive(Clone)]
pub struct WhisperTokenizer {
    inner: tokenizers::Tokenizer,
    /// `<|endoftext|>`.
    pub eot: u32,
    /// `<|startoftranscript|>`.
    pub sot: u32,
    /// `<|transcribe|>`.
    pub transcribe: u32,
    /// `<|notimestamps|>`.
    pub no_timestamps: u32,
    /// First timestamp token (`<|0.00|>`), one past `<|notimestamps|>`.
    pub timestamp_begin: u32,
    /// `<|en|>` (present in every released tokenizer, used only by multilingual models).
    pub english: u32,
    /// `<|startofprev|>`, which opens the previous-text prompt (absent from minimal tokenizers).
    pub sot_prev: Option<u32>,
    /// The no-speech token: `<|nospeech|>`, or `<|nocaptions|>` in the older tokenizers.
    pub no_speech: Option<u32>,
}

impl std::fmt::Debug for WhisperTokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WhisperTokenizer")
            .field("eot", &self.eot)
            .field("sot", &self.sot)
            .finish_non_exhaustive()
    }
}

impl WhisperTokenizer {
    /// Load `tokenizer.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| Error::Tokenizer {
            context: path.display().to_string(),
            reason: e.to_string(),
        })?;
        Self::new(inner, &path.display().to_string())
    }

    /// Load from the JSON text of a `tokenizer.json` (as embedded in packed files).
    pub fn from_json(json: &str, context: &str) -> Result<Self> {
        let inner = json
            .parse::<tokenizers::Tokenizer>()
            .map_err(|e| Error::Tokenizer {
                context: context.to_string(),
                reason: e.to_string(),
            })?;
        Self::new(inner, context)
    }

    fn new(inner: tokenizers::Tokenizer, context: &str) -> Result<Self> {
        let id = |token: &str| {
            inner.token_to_id(token).ok_or_else(|| Error::Tokenizer {
                context: context.to_string(),
                reason: format!("special token {token} is missing"),
            })
        };
        let no_timestamps = id("<|notimestamps|>")?;
        // The timestamp tokens follow <|notimestamps|>; an id of u32::MAX leaves no room.
        let timestamp_begin = no_timestamps.checked_add(1).ok_or_else(|| Error::Tokenizer {
            context: context.to_string(),
            reason: format!(
                "special token <|notimestamps|> has id {no_timestamps}: no room for the timestamp tokens after it"
            ),
        })?;
        Ok(Self {
            sot_prev: inner.token_to_id("<|startofprev|>"),
            no_speech: inner
                .token_to_id("<|nospeech|>")
                .or_else(|| inner.token_to_id("<|nocaptions|>")),
            eot: id("<|endoftext|>")?,
            sot: id("<|startoftranscript|>")?,
            transcribe: id("<|transcribe|>")?,
            english: id("<|en|>")?,
            no_timestamps,
            timestamp_begin,
            inner,
        })
    }

    /// Refuses special tokens outside the model's `vocab_size` output rows (the decoder indexes
    /// its logits with them); `context` names the tokenizer file.
    pub fn check_vocabulary(&self, vocab_size: usize, context: &str) -> Result<()> {
        let specials = [
            ("<|endoftext|>", Some(self.eot)),
            ("<|startoftranscript|>", Some(self.sot)),
            ("<|transcribe|>", Some(self.transcribe)),
            ("<|notimestamps|>", Some(self.no_timestamps)),
            ("<|en|>", Some(self.english)),
            ("<|startofprev|>", self.sot_prev),
            ("<|nospeech|>", self.no_speech),
        ];
        for (name, id) in specials {
            if let Some(id) = id.filter(|&id| id as usize >= vocab_size) {
                return Err(Error::Tokenizer {
                    context: context.to_string(),
                    reason: format!(
                        "special token {name} has id {id}, outside the model's vocabulary of {vocab_size} (vocab_size)"
                    ),
                });
            }
        }
        Ok(())
    }

    /// Text of `tokens`, skipping special tokens.
    pub fn decode(&self, tokens: &[u32]) -> Result<String> {
        let text_tokens: Vec<u32> = tokens.iter().copied().filter(|&t| t < self.eot).collect();
        self.inner
            .decode(&text_tokens, true)
            .map_err(|e| Error::Tokenizer {
                context: "decode".into(),
                reason: e.to_string(),
            })
    }

    /// Token ids of `text` (no special tokens added).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode(text, false)
            .map_err(|e| Error::Tokenizer {
                context: "encode".into(),
                reason: e.to_string(),
            })?
            .get_ids()
            .to_vec())
    }

    /// The decoder prompt without timestamps: `sot [en transcribe] notimestamps`.
    pub fn prompt(&self, multilingual: bool) -> Vec<u32> {
        let mut prompt = self.sot_sequence(multilingual);
        prompt.push(self.no_timestamps);
        prompt
    }

    /// The start-of-transcript sequence `sot [en transcribe]`: the prompt when timestamps are
    /// decoded.
    pub fn sot_sequence(&self, multilingual: bool) -> Vec<u32> {
        if multilingual {
            vec![self.sot, self.english, self.transcribe]
        } else {
            vec![self.sot]
        }
    }

    /// The underlying `tokenizers` object.
    pub fn inner(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}
