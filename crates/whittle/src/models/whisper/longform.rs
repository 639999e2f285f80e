//! Whisper's standard decoding of audio of any length: timestamps, temperature fallback,
//! windows that seek by the last timestamp, and the previous text as prompt.
//!
//! Follows openai-whisper's `transcribe()` (`whisper/transcribe.py`) and faster-whisper
//! 1.2.1's `generate_segments`, which agree on everything used here:
//!
//! 1. The log-mel of the whole file is cut at `seek` into a window of
//!    `min(3000, content_frames - seek)` frames, zero-filled to 3000 (`pad_or_trim`).
//! 2. The prompt is `<|startofprev|>` + the last 223 (`n_ctx / 2 - 1`) tokens decoded since the
//!    last prompt reset, timestamps included, then `sot [lang transcribe]` without
//!    `<|notimestamps|>`; no `<|startofprev|>` when there is no previous text.
//! 3. The window is decoded with [`super::fallback`] under the filters of openai-whisper's
//!    `DecodingTask`: blank and end-of-text suppressed at the first step, the model's suppress
//!    list plus `sot`, `<|startofprev|>`, `<|startoflm|>`, `<|transcribe|>`, `<|translate|>`
//!    and the no-speech token at every step, then the [`TimestampRules`]. whittle also
//!    suppresses the language tokens (openai-whisper's list leaves them open; a trained model
//!    gives them no mass mid-transcript, a random one does).
//! 4. The no-speech probability is the softmax of the raw logits at the `sot` position, read
//!    once per window.
//! 5. A window judged silent ([`FallbackOptions::is_silent`]) is skipped whole. Otherwise its
//!    tokens are split by [`split_segments`], which also says how far to seek; segments that
//!    are empty or have zero length are dropped, the others join the prompt history.
//! 6. After a window decoded at a temperature above 0.5 (`prompt_reset_on_temperature`), or
//!    always when `condition_on_previous_text` is off, the prompt history restarts.
//!
//! whittle's choices: segment ends are clamped to the audio's duration (the model may place a
//! timestamp in the zero-filled tail of the last window); a window whose tokens would not move
//! `seek` forward is consumed whole, so decoding always ends; the file's text is the segments'
//! texts concatenated and trimmed (as openai-whisper's `text`).
//!
//! # Shapes
//! `samples`: mono 16 kHz; each window `[1, n_mels, 3000]`; segment times in seconds from the
//! start of the file.

use candle_core::{DType, Tensor};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::decode::{Transcriber, WINDOW_FRAMES};
use super::fallback::{compression_ratio, Attempt, FallbackOptions};
use super::model::DecoderCache;
use super::search::{best_by_mean_logprob, SearchContext};
use super::timestamps::{split_segments, TimestampRules, MAX_INITIAL_TIMESTAMP, TIME_PRECISION};
use crate::error::Result;

/// Settings of the standard decoding (openai-whisper's `transcribe()` defaults).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LongFormOptions {
    /// Temperatures, thresholds, `best_of` and seed.
    pub fallback: FallbackOptions,
    /// Prompt each window with the text decoded before it.
    pub condition_on_previous_text: bool,
    /// Restart the prompt history after a window decoded hotter than this.
    pub prompt_reset_on_temperature: f32,
    /// Latest allowed first timestamp, seconds (`None`: no limit).
    pub max_initial_timestamp: Option<f64>,
}

impl Default for LongFormOptions {
    fn default() -> Self {
        Self {
            fallback: FallbackOptions::default(),
            condition_on_previous_text: true,
            prompt_reset_on_temperature: 0.5,
            max_initial_timestamp: Some(MAX_INITIAL_TIMESTAMP),
        }
    }
}

/// A timed piece of the transcript.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Segment {
    /// Start, seconds from the start of the file.
    pub start: f64,
    /// End, seconds from the start of the file.
    pub end: f64,
    /// Text as decoded (usually with a leading space).
    pub text: String,
    /// Tokens, timestamps included.
    #[serde(skip)]
    pub tokens: Vec<u32>,
    /// Average log-probability of the window's accepted decoding.
    pub avg_logprob: f64,
    /// No-speech probability of the window.
    pub no_speech_prob: f64,
    /// Temperature of the window's accepted decoding.
    pub temperature: f32,
    /// Compression ratio of the window's accepted text.
    pub compression_ratio: f64,
}

/// The result of [`Transcriber::transcribe_long_form`].
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct LongTranscript {
    /// The segments' texts concatenated, trimmed.
    pub text: String,
    /// Timed segments, in order.
    pub segments: Vec<Segment>,
    /// Accepted tokens of each decoded window (timestamps included).
    #[serde(skip)]
    pub window_tokens: Vec<Vec<u32>>,
    /// Audio duration, seconds.
    pub duration: f64,
}

/// The logit filter of timestamped decoding.
struct TimestampFilter {
    every_step: Vec<u32>,
    first_step: Vec<u32>,
    rules: TimestampRules,
}

fn mask(logits: &mut [f32], tokens: &[u32]) {
    for &t in tokens {
        if let Some(l) = logits.get_mut(t as usize) {
            *l = f32::NEG_INFINITY;
        }
    }
}

impl TimestampFilter {
    fn new(t: &Transcriber, options: &LongFormOptions) -> Self {
        let tok = &t.tokenizer;
        let mut every_step = t.model.config.suppress_tokens.clone();
        // Every special token from `sot` up to the timestamps: the references' list plus the
        // language tokens (see the module docs).
        every_step.extend(tok.sot..tok.timestamp_begin);
        every_step.sort_unstable();
        every_step.dedup();
        Self {
            every_step,
            first_step: super::decode::begin_suppress_tokens(&t.model, tok),
            rules: TimestampRules {
                eot: tok.eot,
                no_timestamps: tok.no_timestamps,
                timestamp_begin: tok.timestamp_begin,
                max_initial_timestamp_index: options
                    .max_initial_timestamp
                    .map(|s| (s / TIME_PRECISION).round() as u32),
            },
        }
    }

    fn apply(&self, logits: &mut [f32], sampled: &[u32]) {
        if sampled.is_empty() {
            mask(logits, &self.first_step);
        }
        mask(logits, &self.every_step);
        self.rules.apply(logits, sampled);
    }
}

/// One window's state before any token is sampled.
struct Primed {
    cache: DecoderCache,
    first: Vec<f32>,
    no_speech_prob: f64,
    max_new: usize,
}

impl Transcriber {
    /// Transcribe mono 16 kHz `samples` of any length with Whisper's standard decoding.
    pub fn transcribe_long_form(
        &self,
        samples: &[f32],
        options: &LongFormOptions,
    ) -> Result<LongTranscript> {
        let sample_rate = whittle_audio::mel::SAMPLE_RATE as f64;
        let hop = whittle_audio::mel::HOP_LENGTH;
        let duration = samples.len() as f64 / sample_rate;
        let mel = self.log_mel(samples);
        let n_mels = mel.n_mels;
        let content_frames = samples.len() / hop;
        let filter = TimestampFilter::new(self, options);
        let mut rng = ChaCha8Rng::seed_from_u64(options.fallback.seed);
        let mut seek = 0;
        let mut history: Vec<u32> = Vec::new();
        let mut reset_since = 0;
        let mut segments = Vec::new();
        let mut window_tokens = Vec::new();
        while seek < content_frames {
            let size = WINDOW_FRAMES.min(content_frames - seek);
            let part = mel.window(seek, size);
            let mut data = vec![0.0f32; n_mels * WINDOW_FRAMES];
            for m in 0..n_mels {
                data[m * WINDOW_FRAMES..][..size].copy_from_slice(part.row(m));
            }
            let window = Tensor::from_vec(data, (1, n_mels, WINDOW_FRAMES), self.model.device())?
                .to_dtype(self.model.dtype)?;
            let encoded = self.model.encoder.forward(&window)?;
            let previous: &[u32] = if options.condition_on_previous_text {
                &history[reset_since..]
            } else {
                &[]
            };
            let primed = self.prime(&encoded, previous)?;
            let attempt =
                self.decode_with_fallback(&primed, &filter, &options.fallback, &mut rng)?;
            let time_offset = (seek * hop) as f64 / sample_rate;
            tracing::debug!(
                seek,
                temperature = attempt.temperature,
                avg_logprob = attempt.avg_logprob,
                no_speech_prob = attempt.no_speech_prob,
                "window decoded"
            );
            if options.fallback.is_silent(&attempt) {
                seek += size;
                continue;
            }
            let (pieces, advance) =
                split_segments(&attempt.tokens, self.tokenizer.timestamp_begin, size);
            for piece in pieces {
                let text = self.tokenizer.decode(&piece.tokens)?;
                if piece.start == piece.end || text.trim().is_empty() {
                    continue;
                }
                history.extend_from_slice(&piece.tokens);
                segments.push(Segment {
                    start: (time_offset + piece.start).min(duration),
                    end: (time_offset + piece.end).min(duration),
                    text,
                    tokens: piece.tokens,
                    avg_logprob: attempt.avg_logprob,
                    no_speech_prob: attempt.no_speech_prob,
                    temperature: attempt.temperature,
                    compression_ratio: attempt.compression_ratio,
                });
            }
            if !options.condition_on_previous_text
                || attempt.temperature > options.prompt_reset_on_temperature
            {
                reset_since = history.len();
            }
            window_tokens.push(attempt.tokens);
            seek += if advance == 0 { size } else { advance };
        }
        let text = segments
            .iter()
            .map(|s| s.text.as_str())
            .collect::<String>()
            .trim()
            .to_string();
        Ok(LongTranscript {
            text,
            segments,
            window_tokens,
            duration,
        })
    }

    /// Run the prompt for one window: `[<|startofprev|> previous...] sot [lang transcribe]`.
    fn prime(&self, encoded: &Tensor, previous: &[u32]) -> Result<Primed> {
        let n_ctx = self.model.config.max_target_positions;
        let mut prompt = Vec::new();
        if let (Some(sot_prev), false) = (self.tokenizer.sot_prev, previous.is_empty()) {
            prompt.push(sot_prev);
            let keep = (n_ctx / 2).saturating_sub(1).min(previous.len());
            prompt.extend_from_slice(&previous[previous.len() - keep..]);
        }
        let sot_index = prompt.len();
        prompt.extend(
            self.tokenizer
                .sot_sequence(self.model.config.is_multilingual()),
        );
        let mut cache = self.model.decoder.new_cache(encoded)?;
        let tokens = Tensor::new(prompt.as_slice(), self.model.device())?.unsqueeze(0)?;
        let hidden = self.model.decoder.forward_hidden(&tokens, &mut cache)?;
        let row = |i: usize| -> Result<Vec<f32>> {
            let h = hidden.narrow(1, i, 1)?.contiguous()?;
            Ok(self
                .model
                .decoder
                .logits(&h)?
                .to_dtype(DType::F32)?
                .flatten_all()?
                .to_vec1()?)
        };
        let first = row(prompt.len() - 1)?;
        let at_sot = if sot_index == prompt.len() - 1 {
            first.clone()
        } else {
            row(sot_index)?
        };
        let no_speech_prob = match self.tokenizer.no_speech {
            Some(t) if (t as usize) < at_sot.len() => {
                let max = at_sot.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let z: f64 = at_sot.iter().map(|&l| ((l - max) as f64).exp()).sum();
                ((at_sot[t as usize] - max) as f64).exp() / z
            }
            _ => 0.0,
        };
        Ok(Primed {
            cache,
            first,
            no_speech_prob,
            max_new: self.max_new_tokens_after(prompt.len()),
        })
    }

    /// Decode one primed window at each temperature in turn until a result passes.
    fn decode_with_fallback(
        &self,
        primed: &Primed,
        filter: &TimestampFilter,
        options: &FallbackOptions,
        rng: &mut ChaCha8Rng,
    ) -> Result<Attempt> {
        let apply = |l: &mut [f32], sampled: &[u32]| filter.apply(l, sampled);
        let ctx = SearchContext {
            model: &self.model,
            filter: &apply,
            eot: self.tokenizer.eot,
            max_new: primed.max_new,
        };
        let mut attempts = Vec::new();
        let temperatures = if options.temperatures.is_empty() {
            &[0.0][..]
        } else {
            &options.temperatures[..]
        };
        for &temperature in temperatures {
            let mut cache = primed.cache.clone();
            let first = primed.first.clone();
            let hyps = if temperature > 0.0 {
                ctx.sample(&mut cache, first, options.best_of.max(1), temperature, rng)?
            } else if self.options.beam_size > 1 {
                ctx.beam(&mut cache, first, self.options.beam_size)?
            } else {
                ctx.sample(&mut cache, first, 1, 0.0, rng)?
            };
            let best = best_by_mean_logprob(hyps).unwrap_or(super::search::Hypothesis {
                tokens: Vec::new(),
                sum_logprob: 0.0,
            });
            let text = self.tokenizer.decode(&best.tokens)?.trim().to_string();
            let attempt = Attempt {
                avg_logprob: best.sum_logprob as f64 / (best.tokens.len() + 1) as f64,
                compression_ratio: compression_ratio(&text),
                no_speech_prob: primed.no_speech_prob,
                temperature,
                tokens: best.tokens,
                text,
            };
            if !options.needs_fallback(&attempt) {
                return Ok(attempt);
            }
            attempts.push(attempt);
        }
        let last = *temperatures.last().unwrap_or(&0.0);
        let chosen = options.choose_when_exhausted(&attempts).unwrap_or(0);
        let mut attempt = attempts.swap_remove(chosen);
        attempt.temperature = last;
        Ok(attempt)
    }
}
