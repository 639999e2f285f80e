//! The character vocabulary of a CTC checkpoint (`vocab.json`) and greedy CTC decoding
//! (Graves et al. 2006, "Connectionist Temporal Classification"), as transformers'
//! `Wav2Vec2CTCTokenizer.decode` does it; and the feature extractor's waveform normalisation.
//!
//! Greedy decoding: the argmax symbol of every frame; runs of the same symbol collapse to one; the
//! blank (the pad token) is dropped; the word delimiter (`|`) becomes a space; the string is
//! trimmed. As in transformers' default `decode`, the other special tokens (`<s>`, `</s>`, `<unk>`)
//! are kept as their text, and an id missing from `vocab.json` decodes as the unknown token.
//!
//! # Shapes
//! logits `[frames, vocab]`.

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Tensor, D};
use serde::Deserialize;

use crate::error::{Error, Result};

/// The texts of the files a CTC vocabulary is read from.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CtcVocabFiles {
    /// `vocab.json`.
    pub vocab: String,
    /// `tokenizer_config.json`, when present.
    pub tokenizer_config: Option<String>,
    /// `added_tokens.json`, when present.
    pub added_tokens: Option<String>,
}

impl CtcVocabFiles {
    /// Read `vocab.json` at `path` and the optional files beside it.
    pub fn read(path: &Path) -> Result<Self> {
        let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| Error::io(p, e));
        let beside = |name: &str| -> Result<Option<String>> {
            let p = path.with_file_name(name);
            if p.exists() {
                read(&p).map(Some)
            } else {
                Ok(None)
            }
        };
        Ok(Self {
            vocab: read(path)?,
            tokenizer_config: beside("tokenizer_config.json")?,
            added_tokens: beside("added_tokens.json")?,
        })
    }
}

/// The symbols of a CTC head and the tokenizer settings decoding needs.
#[derive(Debug, Clone)]
pub struct CtcVocab {
    /// Symbol of each id; `None` where `vocab.json` has no entry.
    tokens: Vec<Option<String>>,
    /// The CTC blank (`pad_token`).
    pad_token: String,
    /// Word separator (`word_delimiter_token`).
    word_delimiter: String,
    /// What the word separator becomes (`replace_word_delimiter_char`).
    word_delimiter_replacement: String,
    /// Text of ids without a symbol (`unk_token`).
    unk_token: String,
    /// Lower-case the result (`do_lower_case`).
    do_lower_case: bool,
    /// transformers' `clean_up_tokenization` (spaces before punctuation and contractions).
    clean_up_spaces: bool,
}

/// The fields of `tokenizer_config.json` decoding uses, with `Wav2Vec2CTCTokenizer`'s defaults.
#[derive(Debug, Deserialize)]
#[serde(default)]
struct TokenizerConfig {
    #[serde(default = "pad")]
    pad_token: TokenText,
    #[serde(default = "delimiter")]
    word_delimiter_token: TokenText,
    #[serde(default = "space")]
    replace_word_delimiter_char: String,
    #[serde(default = "unk")]
    unk_token: TokenText,
    #[serde(default)]
    do_lower_case: bool,
    #[serde(default)]
    clean_up_tokenization_spaces: bool,
    /// Tokens added after `vocab.json` (`{"id": {"content": ...}}`), which transformers looks
    /// up before the vocabulary.
    #[serde(default)]
    added_tokens_decoder: BTreeMap<u32, TokenText>,
}

impl Default for TokenizerConfig {
    fn default() -> Self {
        Self {
            pad_token: pad(),
            word_delimiter_token: delimiter(),
            replace_word_delimiter_char: space(),
            unk_token: unk(),
            do_lower_case: false,
            clean_up_tokenization_spaces: false,
            added_tokens_decoder: BTreeMap::new(),
        }
    }
}

/// A special token as a plain string or an `AddedToken` object (`{"content": ...}`).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum TokenText {
    Plain(String),
    Added { content: String },
}

impl TokenText {
    fn text(self) -> String {
        match self {
            Self::Plain(s) | Self::Added { content: s } => s,
        }
    }
}

fn pad() -> TokenText {
    TokenText::Plain("<pad>".into())
}
fn delimiter() -> TokenText {
    TokenText::Plain("|".into())
}
fn space() -> String {
    " ".into()
}
fn unk() -> TokenText {
    TokenText::Plain("<unk>".into())
}

impl CtcVocab {
    /// Read `vocab.json` (`{symbol: id}`) and, when they exist, the `added_tokens.json` and
    /// `tokenizer_config.json` beside it.
    pub fn from_file(path: &Path) -> Result<Self> {
        let files = CtcVocabFiles::read(path)?;
        Self::from_files(&files, path)
    }

    /// The vocabulary from the texts of its files (as embedded in a `.whittle` header);
    /// `context` names them in errors.
    pub fn from_files(files: &CtcVocabFiles, context: &Path) -> Result<Self> {
        fn parse<T: serde::de::DeserializeOwned>(
            text: &str,
            context: &Path,
            name: &str,
        ) -> Result<T> {
            serde_json::from_str(text).map_err(|source| Error::Json {
                context: format!("{}: {name}", context.display()),
                source,
            })
        }
        let symbols: BTreeMap<String, u32> = parse(&files.vocab, context, "vocab.json")?;
        let mut config: TokenizerConfig = match &files.tokenizer_config {
            Some(text) => parse(text, context, "tokenizer_config.json")?,
            None => TokenizerConfig::default(),
        };
        if let Some(text) = &files.added_tokens {
            let added: BTreeMap<String, u32> = parse(text, context, "added_tokens.json")?;
            for (symbol, id) in added {
                // tokenizer_config.json's entries win (they are what transformers 5 reads).
                config
                    .added_tokens_decoder
                    .entry(id)
                    .or_insert(TokenText::Plain(symbol));
            }
        }
        Self::new(symbols, config, context)
    }

    fn new(symbols: BTreeMap<String, u32>, config: TokenizerConfig, path: &Path) -> Result<Self> {
        let size = symbols
            .values()
            .chain(config.added_tokens_decoder.keys())
            .map(|&id| id as usize + 1)
            .max()
            .unwrap_or(0);
        if size > 1 << 20 {
            return Err(Error::Tokenizer {
                context: path.display().to_string(),
                reason: format!("id {} is implausibly large for a CTC vocabulary", size - 1),
            });
        }
        let mut tokens = vec![None; size];
        for (symbol, id) in symbols {
            if let Some(previous) = tokens[id as usize].replace(symbol.clone()) {
                return Err(Error::Tokenizer {
                    context: path.display().to_string(),
                    reason: format!("id {id} is given to both `{previous}` and `{symbol}`"),
                });
            }
        }
        for (id, token) in config.added_tokens_decoder {
            tokens[id as usize] = Some(token.text());
        }
        Ok(Self {
            tokens,
            pad_token: config.pad_token.text(),
            word_delimiter: config.word_delimiter_token.text(),
            word_delimiter_replacement: config.replace_word_delimiter_char,
            unk_token: config.unk_token.text(),
            do_lower_case: config.do_lower_case,
            clean_up_spaces: config.clean_up_tokenization_spaces,
        })
    }

    /// One past the largest id in `vocab.json` and the added tokens.
    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    /// Whether the vocabulary has no symbols.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The symbol of `id` (the unknown token for ids without one).
    pub fn token(&self, id: u32) -> &str {
        self.tokens
            .get(id as usize)
            .and_then(Option::as_deref)
            .unwrap_or(&self.unk_token)
    }

    /// Id of the CTC blank (the pad token), if `vocab.json` has it.
    pub fn blank_id(&self) -> Option<u32> {
        self.tokens
            .iter()
            .position(|t| t.as_deref() == Some(self.pad_token.as_str()))
            .map(|i| i as u32)
    }

    /// Greedy CTC text of one utterance's logits `[frames, vocab]`.
    pub fn decode_greedy(&self, logits: &Tensor) -> Result<String> {
        logits.dims2()?;
        let ids = logits.argmax(D::Minus1)?.to_vec1::<u32>()?;
        Ok(self.decode_ids(&ids))
    }

    /// Greedy CTC text of per-frame ids (collapse runs, drop blanks, delimiter to space).
    pub fn decode_ids(&self, ids: &[u32]) -> String {
        let mut text = String::new();
        let mut previous: Option<&str> = None;
        for &id in ids {
            let token = self.token(id);
            // transformers groups runs of equal symbols (not ids) before dropping blanks.
            if previous == Some(token) {
                continue;
            }
            previous = Some(token);
            if token == self.pad_token {
                continue;
            }
            if token == self.word_delimiter {
                text.push_str(&self.word_delimiter_replacement);
            } else {
                text.push_str(token);
            }
        }
        let mut text = text.trim().to_string();
        if self.do_lower_case {
            text = text.to_lowercase();
        }
        if self.clean_up_spaces {
            text = clean_up_tokenization(&text);
        }
        text
    }
}

/// transformers' `PreTrainedTokenizerBase.clean_up_tokenization`.
fn clean_up_tokenization(text: &str) -> String {
    [
        (" .", "."),
        (" ?", "?"),
        (" !", "!"),
        (" ,", ","),
        (" ' ", "'"),
        (" n't", "n't"),
        (" 'm", "'m"),
        (" 's", "'s"),
        (" 've", "'ve"),
        (" 're", "'re"),
    ]
    .iter()
    .fold(text.to_string(), |t, (from, to)| t.replace(from, to))
}

/// Zero mean and unit variance over one clip, as `Wav2Vec2FeatureExtractor` does when
/// `do_normalize` is set: `(x - mean) / sqrt(var + 1e-7)` (population variance; accumulated in
/// f64 here, numpy accumulates in f32 with pairwise sums).
pub fn normalize_waveform(samples: &[f32]) -> Vec<f32> {
    if samples.is_empty() {
        return Vec::new();
    }
    let n = samples.len() as f64;
    let mean = samples.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = samples
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let inv = 1.0 / (var + 1e-7).sqrt();
    samples
        .iter()
        .map(|&x| ((x as f64 - mean) * inv) as f32)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vocab() -> CtcVocab {
        let symbols = ["<pad>", "<s>", "</s>", "<unk>", "|", "A", "B"]
            .iter()
            .enumerate()
            .map(|(i, s)| (s.to_string(), i as u32))
            .collect();
        CtcVocab::new(symbols, TokenizerConfig::default(), Path::new("vocab.json")).unwrap()
    }

    #[test]
    fn greedy_decoding_collapses_runs_drops_blanks_and_splits_words() {
        let v = vocab();
        // A A <pad> A | | B <pad> B </s> 9(unknown) |
        assert_eq!(
            v.decode_ids(&[5, 5, 0, 5, 4, 4, 6, 0, 6, 2, 9, 4]),
            "AA BB</s><unk>"
        );
        // Two delimiters separated by a blank are two spaces; leading/trailing ones are trimmed.
        assert_eq!(v.decode_ids(&[4, 5, 4, 0, 4, 6, 4]), "A  B");
        assert_eq!(v.decode_ids(&[0, 0]), "");
    }

    /// Tokens added beside vocab.json decode as their text, tokenizer_config.json's first.
    #[test]
    fn added_tokens_extend_the_vocabulary() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| std::fs::write(dir.path().join(name), text).unwrap();
        write("vocab.json", r#"{"<pad>": 0, "|": 1, "A": 2}"#);
        write("added_tokens.json", r#"{"<s>": 3, "<old>": 4}"#);
        write(
            "tokenizer_config.json",
            r#"{"added_tokens_decoder": {"4": {"content": "</s>", "special": true}}, "do_lower_case": true}"#,
        );
        let v = CtcVocab::from_file(&dir.path().join("vocab.json")).unwrap();
        assert_eq!(v.len(), 5);
        assert_eq!(v.decode_ids(&[2, 1, 3, 0, 4, 5]), "a <s></s><unk>");
        assert_eq!(v.blank_id(), Some(0));
    }

    #[test]
    fn decode_greedy_takes_the_argmax_per_frame() {
        let logits = Tensor::new(
            &[
                [0f32, 0., 0., 0., 0., 3., 1.],
                [0., 0., 0., 0., 0., 1., 3.],
                [5., 0., 0., 0., 0., 1., 3.],
                [0., 0., 0., 0., 0., 1., 3.],
            ],
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert_eq!(vocab().decode_greedy(&logits).unwrap(), "ABB");
    }

    #[test]
    fn normalisation_gives_zero_mean_unit_variance() {
        let x: Vec<f32> = (0..1000)
            .map(|i| (i as f32 * 0.37).sin() * 0.3 + 0.1)
            .collect();
        let y = normalize_waveform(&x);
        let mean = y.iter().map(|&v| v as f64).sum::<f64>() / y.len() as f64;
        let var = y.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / y.len() as f64;
        assert!(mean.abs() < 1e-6, "mean {mean}");
        assert!((var - 1.0).abs() < 1e-5, "variance {var}");
    }
}
