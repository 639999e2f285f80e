//! Batched greedy decoding: several clips share one encoder pass and one decoder pass per step.
//!
//! The mel windows of `N` clips are stacked into `[N, n_mels, 3000]` and encoded together; the
//! decoder then advances all `N` sequences in lockstep, one token each per step, with one
//! self-attention cache row per sequence. A sequence that emits end-of-text leaves the batch: its
//! cache rows are dropped with [`DecoderCache::select`](super::model::DecoderCache::select), the
//! reordering that beam search uses. Greedy sequences start from the same prompt and gain one
//! token per step, so every row of the cache sits at the same offset and no padding or
//! per-row position is needed. Dropping rows copies the live rows' cross-attention keys and
//! values (18 MB per row for tiny.en), so ended rows are dropped lazily: they keep running
//! (their tokens ignored) until the row-steps they have cost reach the number of live rows.
//!
//! Each step applies the same [`LogitFilter`] and argmax as
//! [`Transcriber::greedy`](super::Transcriber::greedy), so the tokens equal the sequential
//! decoder's as long as the batched products round as the one-row products do. The packed
//! kernels do, bit for bit, below `whittle_kernels::kernels::VNNI_GEMM_MIN_ROWS` rows. Dense f32
//! products run on the `gemm` crate, which promises no such thing across row counts: there the
//! logits may differ in the last bits and a token only at a near tie (none on tiny.en over real-15,
//! `tests/real_batch.rs`).
//!
//! What is batched, by choice: greedy decoding (`beam_size` 1) of clips that fit one 30 s window,
//! without `trim` (trimmed windows differ in length) and without the standard long-form decoding
//! (`long_form`: fallback and timestamps). Anything else (longer clips, beam search, trimmed input,
//! fallback) goes through [`Transcriber::transcribe`](super::Transcriber::transcribe) one
//! clip at a time, in the same call, so callers need not sort their input.
//!
//! # Shapes
//! - mel `[N, n_mels, 3000]`, encoder output `[N, 1500, d]`;
//! - decoder input `[live, prompt_len]` at the first step, then `[live, 1]`; logits `[live, vocab]`.

use candle_core::{DType, Tensor};

use super::decode::{FrontEndPadding, LogitFilter, Transcriber, Transcript, WINDOW_FRAMES};
use super::search::argmax;
use crate::error::Result;

impl Transcriber {
    /// Whether [`Transcriber::transcribe_batch`] decodes `samples` in a batch (see the module
    /// docs) rather than alone.
    pub fn batchable(&self, samples: &[f32]) -> bool {
        self.options.beam_size <= 1
            && !self.options.trim
            && self.options.long_form.is_none()
            && samples.len() / whittle_audio::mel::HOP_LENGTH <= WINDOW_FRAMES
    }

    /// Transcribe several clips of mono 16 kHz samples, in order: the
    /// [batchable](Transcriber::batchable) ones together, the others one at a time.
    pub fn transcribe_batch(&self, clips: &[&[f32]]) -> Result<Vec<Transcript>> {
        let (batched, alone): (Vec<usize>, Vec<usize>) =
            (0..clips.len()).partition(|&i| self.batchable(clips[i]));
        let mut out: Vec<Option<Transcript>> = vec![None; clips.len()];
        for i in alone {
            out[i] = Some(self.transcribe(clips[i])?);
        }
        if !batched.is_empty() {
            let start = std::time::Instant::now();
            let n_mels = self.model.config.num_mel_bins;
            let mut stacked = Vec::with_capacity(batched.len() * n_mels * WINDOW_FRAMES);
            for &i in &batched {
                stacked.extend(first_window(clips[i], n_mels, self.options.padding).data);
            }
            let mel = Tensor::from_vec(
                stacked,
                (batched.len(), n_mels, WINDOW_FRAMES),
                self.model.device(),
            )?
            .to_dtype(self.model.dtype)?;
            let t0 = std::time::Instant::now();
            let encoded = self.model.encoder.forward(&mel)?;
            let t1 = std::time::Instant::now();
            let tokens = self.greedy_batch(&encoded)?;
            // Where a batch's time goes (scripts/bench_batch.sh sums these).
            tracing::debug!(
                clips = batched.len(),
                front_end_seconds = (t0 - start).as_secs_f64(),
                encoder_seconds = (t1 - t0).as_secs_f64(),
                decoder_seconds = t1.elapsed().as_secs_f64(),
                "batch timing"
            );
            for (&i, tokens) in batched.iter().zip(tokens) {
                let text = self.tokenizer.decode(&tokens)?.trim().to_string();
                out[i] = Some(Transcript {
                    text,
                    window_tokens: vec![tokens],
                });
            }
        }
        Ok(out.into_iter().flatten().collect())
    }

    /// Greedy decoding of every row of an encoder output `[N, frames, d]`: the text tokens of
    /// each row (prompt and end-of-text removed), as [`Transcriber::greedy`] gives for that row
    /// alone.
    pub fn greedy_batch(&self, encoded: &Tensor) -> Result<Vec<Vec<u32>>> {
        let n = encoded.dim(0)?;
        let filter = LogitFilter::new(&self.model, &self.tokenizer);
        let device = self.model.device();
        let mut cache = self.model.decoder.new_cache(encoded)?;
        let prompt = self.tokenizer.prompt(self.model.config.is_multilingual());
        let mut input = Tensor::from_vec(prompt.repeat(n), (n, prompt.len()), device)?;
        // `rows[r]`: the sequence whose state is in row `r` of the cache, `None` once it ended.
        let mut rows: Vec<Option<usize>> = (0..n).map(Some).collect();
        // Rows that ended stay in the cache (their tokens are ignored) until the work they cost,
        // one row-step each, reaches the cost of copying the live rows' caches without them.
        let mut dead_row_steps = 0;
        let mut out = vec![Vec::new(); n];
        let mut next: Vec<u32> = Vec::with_capacity(n);
        for step in 0..self.max_new_tokens() {
            let live = rows.iter().flatten().count();
            if live == 0 {
                break;
            }
            dead_row_steps += rows.len() - live;
            if dead_row_steps >= live {
                let kept: Vec<u32> = (0..rows.len() as u32)
                    .filter(|&r| rows[r as usize].is_some())
                    .collect();
                cache.select(&kept)?;
                next = kept.iter().map(|&r| next[r as usize]).collect();
                rows.retain(Option::is_some);
                dead_row_steps = 0;
                input = Tensor::new(next.as_slice(), device)?.unsqueeze(1)?;
            }
            let logits: Vec<Vec<f32>> = self
                .model
                .decoder
                .last_logits(&input, &mut cache)?
                .to_dtype(DType::F32)?
                .to_vec2()?;
            next.clear();
            for (row, mut logits) in rows.iter_mut().zip(logits) {
                let Some(seq) = *row else {
                    next.push(self.tokenizer.eot);
                    continue;
                };
                filter.apply(&mut logits, step == 0);
                let token = argmax(&logits);
                if token == self.tokenizer.eot {
                    *row = None;
                } else {
                    out[seq].push(token);
                }
                next.push(token);
            }
            input = Tensor::new(next.as_slice(), device)?.unsqueeze(1)?;
        }
        Ok(out)
    }
}

/// The first 30 s log-mel window of `samples`, padded as [`Transcriber::transcribe`] pads it.
fn first_window(
    samples: &[f32],
    n_mels: usize,
    padding: FrontEndPadding,
) -> whittle_audio::mel::LogMel {
    let mel = match padding {
        FrontEndPadding::OpenaiWhisper => whittle_audio::mel::log_mel_spectrogram(samples, n_mels),
        FrontEndPadding::FasterWhisper => whittle_audio::mel::log_mel_spectrogram_with_padding(
            samples,
            n_mels,
            whittle_audio::mel::HOP_LENGTH,
        ),
    };
    mel.window(0, WINDOW_FRAMES)
}
