//! Token search over a decoder cache already holding the prompt: greedy or sampled rows, and
//! beam search. Both take the logit filter as a function of the row's sampled tokens, so the
//! plain decoder ([`super::decode`]) and the timestamped one ([`super::longform`]) share them.
//!
//! Sampling follows openai-whisper's `GreedyDecoder`: arg-max at temperature 0, otherwise a
//! draw from `softmax(logits / T)`; the score is the sum of `log_softmax(logits)` (temperature
//! 1, after filtering) of the chosen tokens, end-of-text included. Beam search follows its
//! `BeamSearchDecoder` with patience 1: `beam_size` live hypotheses, each expanded by its
//! `beam_size + 1` best tokens, until `beam_size` have ended. Candidates are ranked by
//! sum log-probability / length (`MaximumLikelihoodRanker` without a length penalty).
//!
//! # Shapes
//! The cache holds batch 1 (the prompt); `first` is the filtered-nothing logits row `[vocab]`
//! after the prompt. Rows are replicated or reordered with [`DecoderCache::select`].

use candle_core::{DType, Tensor};
use rand::Rng;

use super::fallback::sample_token;
use super::model::{DecoderCache, Whisper};
use crate::error::Result;

/// A decoded token sequence (end-of-text excluded) and its sum log-probability.
#[derive(Debug, Clone, PartialEq)]
pub struct Hypothesis {
    /// Sampled tokens after the prompt.
    pub tokens: Vec<u32>,
    /// Sum of the chosen tokens' log-probabilities, end-of-text included when reached.
    pub sum_logprob: f32,
}

/// A logit filter: masks `logits` in place given the row's tokens sampled so far.
pub type Filter<'a> = &'a dyn Fn(&mut [f32], &[u32]);

/// What the search runs on.
pub struct SearchContext<'a> {
    /// The model.
    pub model: &'a Whisper,
    /// The filter applied before every choice.
    pub filter: Filter<'a>,
    /// `<|endoftext|>`.
    pub eot: u32,
    /// Most new tokens per row.
    pub max_new: usize,
}

/// Log-softmax of one row.
pub fn log_softmax_row(logits: &[f32]) -> Vec<f32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = logits.iter().map(|&l| (l - max).exp()).sum();
    let log_z = max + sum.ln();
    logits.iter().map(|&l| l - log_z).collect()
}

/// Index of the first largest value.
pub fn argmax(v: &[f32]) -> u32 {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best as u32
}

fn top_k(v: &[f32], k: usize) -> Vec<(u32, f32)> {
    let mut best: Vec<(u32, f32)> = Vec::with_capacity(k + 1);
    for (i, &x) in v.iter().enumerate() {
        if x == f32::NEG_INFINITY {
            continue;
        }
        if best.len() < k || x > best[best.len() - 1].1 {
            let pos = best.partition_point(|&(_, y)| y >= x);
            best.insert(pos, (i as u32, x));
            best.truncate(k);
        }
    }
    best
}

/// The hypothesis with the best sum log-probability / length (the last of equals).
pub fn best_by_mean_logprob(hyps: Vec<Hypothesis>) -> Option<Hypothesis> {
    hyps.into_iter().max_by(|a, b| {
        (a.sum_logprob / a.tokens.len().max(1) as f32)
            .total_cmp(&(b.sum_logprob / b.tokens.len().max(1) as f32))
    })
}

fn next_rows(
    ctx: &SearchContext,
    tokens: &[u32],
    cache: &mut DecoderCache,
) -> Result<Vec<Vec<f32>>> {
    let device = ctx.model.device();
    let input = Tensor::new(tokens, device)?.unsqueeze(1)?;
    Ok(ctx
        .model
        .decoder
        .last_logits(&input, cache)?
        .to_dtype(DType::F32)?
        .to_vec2()?)
}

impl SearchContext<'_> {
    /// `n` independent rows: arg-max at `temperature` 0, otherwise sampled with `rng`.
    /// Finished rows leave the batch.
    pub fn sample<R: Rng>(
        &self,
        cache: &mut DecoderCache,
        first: Vec<f32>,
        n: usize,
        temperature: f32,
        rng: &mut R,
    ) -> Result<Vec<Hypothesis>> {
        let mut hyps = vec![
            Hypothesis {
                tokens: Vec::new(),
                sum_logprob: 0.0,
            };
            n
        ];
        if n > 1 {
            cache.select(&vec![0; n])?;
        }
        let mut live: Vec<usize> = (0..n).collect();
        let mut rows = vec![first; n];
        for step in 0..self.max_new {
            if step > 0 {
                let last: Vec<u32> = live
                    .iter()
                    .map(|&h| *hyps[h].tokens.last().unwrap_or(&self.eot))
                    .collect();
                rows = next_rows(self, &last, cache)?;
            }
            let mut keep = Vec::with_capacity(live.len());
            for (r, logits) in rows.iter_mut().enumerate() {
                let h = &mut hyps[live[r]];
                (self.filter)(logits, &h.tokens);
                let token = if temperature > 0.0 {
                    sample_token(logits, temperature, rng).unwrap_or(self.eot)
                } else {
                    argmax(logits)
                };
                h.sum_logprob += log_softmax_row(logits)[token as usize];
                if token != self.eot {
                    h.tokens.push(token);
                    keep.push(r as u32);
                }
            }
            if keep.is_empty() || step + 1 == self.max_new {
                break;
            }
            if keep.len() < live.len() {
                cache.select(&keep)?;
            }
            live = keep.iter().map(|&r| live[r as usize]).collect();
        }
        Ok(hyps)
    }

    /// Beam search of width `beam_size`; returns the ended hypotheses (or the live ones if
    /// none ended within `max_new` tokens).
    pub fn beam(
        &self,
        cache: &mut DecoderCache,
        first: Vec<f32>,
        beam_size: usize,
    ) -> Result<Vec<Hypothesis>> {
        // Live hypotheses: all share the prompt in the cache.
        let mut live = vec![Hypothesis {
            tokens: Vec::new(),
            sum_logprob: 0.0,
        }];
        let mut finished: Vec<Hypothesis> = Vec::new();
        let mut rows = vec![first];
        let mut next_tokens: Vec<u32> = Vec::new();
        for step in 0..self.max_new {
            if step > 0 {
                rows = next_rows(self, &next_tokens, cache)?;
            }
            let mut candidates: Vec<(usize, u32, f32)> = Vec::new();
            for (beam, mut row) in rows.drain(..).enumerate() {
                (self.filter)(&mut row, &live[beam].tokens);
                let logprobs = log_softmax_row(&row);
                for (token, lp) in top_k(&logprobs, beam_size + 1) {
                    candidates.push((beam, token, live[beam].sum_logprob + lp));
                }
            }
            candidates.sort_by(|a, b| b.2.total_cmp(&a.2));
            let mut next_live: Vec<Hypothesis> = Vec::new();
            let mut sources = Vec::new();
            next_tokens.clear();
            // Walk candidates best first until the beam is full: ended hypotheses ranked above
            // the last kept live one are finished; lower-ranked ones are not considered.
            for (beam, token, score) in candidates {
                if next_live.len() == beam_size {
                    break;
                }
                if token == self.eot {
                    if finished.len() < beam_size {
                        finished.push(Hypothesis {
                            tokens: live[beam].tokens.clone(),
                            sum_logprob: score,
                        });
                    }
                } else {
                    let mut seq = live[beam].tokens.clone();
                    seq.push(token);
                    if next_live.iter().any(|h| h.tokens == seq) {
                        continue;
                    }
                    next_live.push(Hypothesis {
                        tokens: seq,
                        sum_logprob: score,
                    });
                    sources.push(beam as u32);
                    next_tokens.push(token);
                }
            }
            if finished.len() >= beam_size || next_live.is_empty() {
                break;
            }
            cache.select(&sources)?;
            live = next_live;
        }
        Ok(if finished.is_empty() { live } else { finished })
    }
}
