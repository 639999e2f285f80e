//! Decoding: greedy and beam search without timestamps, over 30 s windows.
//!
//! Follows openai-whisper's `DecodingTask` (Radford et al. 2022): the prompt
//! `sot [lang transcribe] notimestamps`, the model's suppress list at every step, blank and
//! end-of-text suppressed at the first step, at most `max_target_positions / 2` new tokens.
//! Beam search keeps `beam_size` live hypotheses, expands each by its `beam_size + 1` best
//! tokens, finishes when `beam_size` hypotheses have ended, and ranks them by
//! sum log-probability / length. Longer audio is cut into consecutive 3000-frame windows.
//! The searches themselves live in [`super::search`]; with [`DecodeOptions::long_form`] set,
//! [`Transcriber::transcribe`] runs Whisper's standard decoding instead ([`super::longform`]).

use candle_core::{DType, Tensor, D};

use super::longform::LongFormOptions;
use super::model::{DecoderCache, Whisper};
use super::search::{best_by_mean_logprob, Filter, Hypothesis, SearchContext};
use super::tokenizer::WhisperTokenizer;
use crate::error::Result;

/// Frames of one 30 s window.
pub const WINDOW_FRAMES: usize = 3000;

/// How to decode.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct DecodeOptions {
    /// 1 = greedy; otherwise beam width (5 in the reference).
    pub beam_size: usize,
    /// Upper bound on new tokens per window (default: half the decoder context, 224).
    pub max_new_tokens: Option<usize>,
    /// How the audio is padded before the log-mel front end.
    pub padding: FrontEndPadding,
    /// Feed the encoder only the frames that hold audio (rounded up to even) instead of the
    /// full 30 s window, as training batches do; audio longer than one window is unaffected.
    #[serde(default)]
    pub trim: bool,
    /// Whisper's standard decoding (timestamps, temperature fallback, seeking by the last
    /// timestamp, previous-text prompt) instead of plain 30 s windows without timestamps.
    #[serde(default)]
    pub long_form: Option<LongFormOptions>,
}

/// Padding of the front end: the two reference implementations differ, and on clips much
/// shorter than 30 s the padded frames are most of the window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FrontEndPadding {
    /// openai-whisper: 30 s of zero samples appended before the STFT, so padded frames take
    /// the clamped floor `max - 8` of the log-mel.
    #[default]
    OpenaiWhisper,
    /// faster-whisper / CTranslate2: 160 zero samples appended, and each window is filled up
    /// to 3000 frames with zeros of the normalised log-mel.
    FasterWhisper,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        Self {
            beam_size: 1,
            max_new_tokens: None,
            padding: FrontEndPadding::OpenaiWhisper,
            trim: false,
            long_form: None,
        }
    }
}

/// The text and tokens of one audio input.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Transcript {
    /// Decoded text (windows joined).
    pub text: String,
    /// Text tokens per consecutive 30 s window; with [`DecodeOptions::long_form`], the tokens
    /// of each decoded window instead (timestamps included, windows start where the previous
    /// one's last timestamp was).
    pub window_tokens: Vec<Vec<u32>>,
}

/// One entry of an N-best list ([`Transcriber::n_best`]).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NBestHypothesis {
    /// Decoded text.
    pub text: String,
    /// Text tokens (end-of-text excluded).
    pub tokens: usize,
    /// Sum of the tokens' log-probabilities, end-of-text included when reached.
    pub sum_logprob: f64,
}

/// A model with its tokenizer, ready to transcribe.
pub struct Transcriber {
    /// The model.
    pub model: Whisper,
    /// Its tokenizer.
    pub tokenizer: WhisperTokenizer,
    /// Decoding options.
    pub options: DecodeOptions,
}

/// Tokens suppressed at the first decoding step: the model's `begin_suppress_tokens`, else
/// openai-whisper's default of blank and end-of-text.
pub(crate) fn begin_suppress_tokens(model: &Whisper, tok: &WhisperTokenizer) -> Vec<u32> {
    let mut tokens = model.config.begin_suppress_tokens.clone();
    if tokens.is_empty() {
        tokens = tok.encode(" ").unwrap_or_default();
        tokens.push(tok.eot);
    }
    tokens
}

pub(crate) struct LogitFilter {
    every_step: Vec<u32>,
    first_step: Vec<u32>,
}

impl LogitFilter {
    pub(crate) fn new(model: &Whisper, tok: &WhisperTokenizer) -> Self {
        let vocab = model.config.vocab_size as u32;
        let mut every_step = model.config.suppress_tokens.clone();
        // Without timestamps, no special token but end-of-text may be produced.
        every_step.extend((tok.sot..vocab).filter(|&t| t != tok.eot));
        every_step.sort_unstable();
        every_step.dedup();
        Self {
            every_step,
            first_step: begin_suppress_tokens(model, tok),
        }
    }

    pub(crate) fn apply(&self, logits: &mut [f32], first: bool) {
        for &t in &self.every_step {
            if let Some(l) = logits.get_mut(t as usize) {
                *l = f32::NEG_INFINITY;
            }
        }
        if first {
            for &t in &self.first_step {
                if let Some(l) = logits.get_mut(t as usize) {
                    *l = f32::NEG_INFINITY;
                }
            }
        }
    }
}

impl Transcriber {
    /// Transcribe mono 16 kHz samples.
    pub fn transcribe(&self, samples: &[f32]) -> Result<Transcript> {
        if let Some(options) = &self.options.long_form {
            let t = self.transcribe_long_form(samples, options)?;
            return Ok(Transcript {
                text: t.text,
                window_tokens: t.window_tokens,
            });
        }
        let n_mels = self.model.config.num_mel_bins;
        let mel = self.log_mel(samples);
        let content_frames = samples.len() / whittle_audio::mel::HOP_LENGTH;
        let device = self.model.device();
        let mut window_tokens = Vec::new();
        let mut seek = 0;
        loop {
            // `window` fills frames past the end with zeros (faster-whisper's pad_or_trim);
            // with openai-whisper padding the 30 s of padded audio is always there instead.
            let frames = if self.options.trim && content_frames < WINDOW_FRAMES {
                trimmed_frames(content_frames)
            } else {
                WINDOW_FRAMES
            };
            let window = mel.window(seek, frames);
            let window = Tensor::from_vec(window.data, (1, n_mels, frames), device)?
                .to_dtype(self.model.dtype)?;
            window_tokens.push(self.decode_window(&window)?);
            seek += WINDOW_FRAMES;
            if seek >= content_frames {
                break;
            }
        }
        let texts: Vec<String> = window_tokens
            .iter()
            .map(|t| self.tokenizer.decode(t).map(|s| s.trim().to_string()))
            .collect::<Result<_>>()?;
        let text = texts
            .into_iter()
            .filter(|t| !t.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        Ok(Transcript {
            text,
            window_tokens,
        })
    }

    /// The log-mel spectrogram of `samples` with the configured front-end padding.
    pub fn log_mel(&self, samples: &[f32]) -> whittle_audio::mel::LogMel {
        let n_mels = self.model.config.num_mel_bins;
        match self.options.padding {
            FrontEndPadding::OpenaiWhisper => {
                whittle_audio::mel::log_mel_spectrogram(samples, n_mels)
            }
            FrontEndPadding::FasterWhisper => whittle_audio::mel::log_mel_spectrogram_with_padding(
                samples,
                n_mels,
                whittle_audio::mel::HOP_LENGTH,
            ),
        }
    }

    /// Decode one window `[1, n_mels, 3000]` to text tokens (prompt and end-of-text removed).
    pub fn decode_window(&self, mel: &Tensor) -> Result<Vec<u32>> {
        let encoded = self.model.encoder.forward(mel)?;
        if self.options.beam_size <= 1 {
            self.greedy(&encoded)
        } else {
            self.beam_search(&encoded, self.options.beam_size)
        }
    }

    pub(crate) fn max_new_tokens(&self) -> usize {
        let prompt_len = self
            .tokenizer
            .prompt(self.model.config.is_multilingual())
            .len();
        self.max_new_tokens_after(prompt_len)
    }

    /// New tokens allowed after a prompt of `prompt_len`: the option (default half the
    /// decoder context), within the positions left.
    pub(crate) fn max_new_tokens_after(&self, prompt_len: usize) -> usize {
        let limit = self.model.config.max_target_positions / 2;
        self.options.max_new_tokens.unwrap_or(limit).min(
            self.model
                .config
                .max_target_positions
                .saturating_sub(prompt_len),
        )
    }

    /// The decoder cache after the no-timestamps prompt, and the logits row that follows it.
    fn primed(&self, encoded: &Tensor) -> Result<(DecoderCache, Vec<f32>)> {
        let mut cache = self.model.decoder.new_cache(encoded)?;
        let prompt = self.tokenizer.prompt(self.model.config.is_multilingual());
        let tokens = Tensor::new(prompt.as_slice(), self.model.device())?.unsqueeze(0)?;
        let first = self
            .model
            .decoder
            .last_logits(&tokens, &mut cache)?
            .to_dtype(DType::F32)?
            .squeeze(0)?
            .to_vec1()?;
        Ok((cache, first))
    }

    fn search_context<'a>(&'a self, filter: Filter<'a>) -> SearchContext<'a> {
        SearchContext {
            model: &self.model,
            filter,
            eot: self.tokenizer.eot,
            max_new: self.max_new_tokens(),
        }
    }

    /// Greedy decoding over an encoder output `[1, frames, d]`.
    pub fn greedy(&self, encoded: &Tensor) -> Result<Vec<u32>> {
        let filter = LogitFilter::new(&self.model, &self.tokenizer);
        let apply = |l: &mut [f32], sampled: &[u32]| filter.apply(l, sampled.is_empty());
        let (mut cache, first) = self.primed(encoded)?;
        // Arg-max never draws from the generator.
        let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
        let hyps = self
            .search_context(&apply)
            .sample(&mut cache, first, 1, 0.0, &mut rng)?;
        Ok(hyps
            .into_iter()
            .next()
            .map(|h| h.tokens)
            .unwrap_or_default())
    }

    /// Beam search over an encoder output `[1, frames, d]`.
    pub fn beam_search(&self, encoded: &Tensor, beam_size: usize) -> Result<Vec<u32>> {
        let filter = LogitFilter::new(&self.model, &self.tokenizer);
        let apply = |l: &mut [f32], sampled: &[u32]| filter.apply(l, sampled.is_empty());
        let (mut cache, first) = self.primed(encoded)?;
        let hyps = self
            .search_context(&apply)
            .beam(&mut cache, first, beam_size)?;
        Ok(best_by_mean_logprob(hyps)
            .map(|h| h.tokens)
            .unwrap_or_default())
    }

    /// The hypotheses of beam search of width `beam_size` on a clip of at most one 30 s
    /// window, best first by Whisper's ranking (sum log-probability / length), with their
    /// texts: the N-best list that language-model rescoring reranks.
    pub fn n_best(&self, samples: &[f32], beam_size: usize) -> Result<Vec<NBestHypothesis>> {
        let content_frames = samples.len() / whittle_audio::mel::HOP_LENGTH;
        if content_frames > WINDOW_FRAMES {
            return Err(crate::error::Error::config(
                "n-best",
                format!(
                    "a {:.1} s clip is longer than one 30 s window",
                    samples.len() as f64 / f64::from(whittle_audio::mel::SAMPLE_RATE)
                ),
            ));
        }
        let n_mels = self.model.config.num_mel_bins;
        let window = self.log_mel(samples).window(0, WINDOW_FRAMES);
        let mel = Tensor::from_vec(window.data, (1, n_mels, WINDOW_FRAMES), self.model.device())?
            .to_dtype(self.model.dtype)?;
        let encoded = self.model.encoder.forward(&mel)?;
        let filter = LogitFilter::new(&self.model, &self.tokenizer);
        let apply = |l: &mut [f32], sampled: &[u32]| filter.apply(l, sampled.is_empty());
        let (mut cache, first) = self.primed(&encoded)?;
        let mut hyps = self
            .search_context(&apply)
            .beam(&mut cache, first, beam_size.max(1))?;
        let mean = |h: &Hypothesis| h.sum_logprob / h.tokens.len().max(1) as f32;
        // Stable and best first: equal scores keep the search's order reversed, as
        // `best_by_mean_logprob` prefers the last of equals.
        hyps.reverse();
        hyps.sort_by(|a, b| mean(b).total_cmp(&mean(a)));
        hyps.into_iter()
            .map(|h| {
                Ok(NBestHypothesis {
                    text: self.tokenizer.decode(&h.tokens)?.trim().to_string(),
                    tokens: h.tokens.len(),
                    sum_logprob: f64::from(h.sum_logprob),
                })
            })
            .collect()
    }

    /// Log-probabilities `[b, len, vocab]` of the decoder over `tokens` (teacher forcing).
    pub fn token_log_probs(&self, mel: &Tensor, tokens: &Tensor) -> Result<Tensor> {
        let encoded = self.model.encoder.forward(mel)?;
        let mut cache = self.model.decoder.new_cache(&encoded)?;
        let hidden = self.model.decoder.forward_hidden(tokens, &mut cache)?;
        Ok(candle_nn::ops::log_softmax(
            &self.model.decoder.logits(&hidden)?,
            D::Minus1,
        )?)
    }
}

/// Encoder input frames for `content_frames` of audio when trimming: even (the stride-2 conv
/// halves it), at least 2, at most one window.
///
/// Measured on tiny.en (`whittle eval --trim`): Whisper predicts end-of-text from the trailing
/// padding, and without it greedy decoding loops at the end of the clip (real-15 WER 5.11% with
/// the 30 s window, 1046% trimmed; keeping 1 s or 3 s of padding still gave 909% and 537%).
pub fn trimmed_frames(content_frames: usize) -> usize {
    (content_frames.div_ceil(2) * 2).clamp(2, WINDOW_FRAMES)
}
