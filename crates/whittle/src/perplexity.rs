//! Perplexity of Whisper's decoder as a language model conditioned on the audio: the reference
//! transcript is teacher-forced after the decoding prompt, and each of its tokens (and the final
//! end-of-text) is scored by the model's next-token distribution. A measure beside WER for the
//! decoder-side compression of issue 13 (the mixed-precision Transformer LM papers report
//! perplexity first): it moves smoothly with small changes of the model where WER is coarse.
//!
//! [`lm_perplexity`] scores plain text with a standalone language model ([`CausalLm`]): each text is
//! tokenized after the model's document separator (`<|endoftext|>`, else its BOS token), and
//! every token of the text is scored given the ones before it. *Choice:* no end-of-sequence
//! token is scored, since a sentence of running text does not end a document.
//!
//! The encoder sees each clip in the full 30 s window, as in evaluation (a trimmed window changes
//! what the decoder predicts near the end of the audio). Scores are summed in f64 per utterance,
//! so the result does not depend on the batch size beyond float rounding of the forward.

use candle_core::{DType, Device};

use crate::data::Utterance;
use crate::error::{Error, Result};
use crate::models::llama::LlamaTokenizer;
use crate::models::lm::CausalLm;
use crate::models::whisper::{Whisper, WhisperTokenizer};
use crate::train::batch::{make_batch, Prompt};
use crate::train::{build_examples, Targets};

/// One utterance's score.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct UtteranceScore {
    /// Utterance id.
    pub id: String,
    /// Tokens scored (the transcript's tokens and end-of-text, within the decoder's context).
    pub tokens: usize,
    /// Summed negative log-likelihood, in nats.
    pub nll: f64,
}

/// The scores of a dataset.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Perplexity {
    /// Per utterance, in dataset order.
    pub utterances: Vec<UtteranceScore>,
    /// Tokens scored.
    pub tokens: usize,
    /// Summed negative log-likelihood, in nats.
    pub nll: f64,
}

impl Perplexity {
    /// The totals of per-utterance scores.
    pub fn from_scores(scores: Vec<UtteranceScore>) -> Self {
        Self {
            tokens: scores.iter().map(|s| s.tokens).sum(),
            nll: scores.iter().map(|s| s.nll).sum(),
            utterances: scores,
        }
    }

    /// Mean negative log-likelihood per token, in nats.
    pub fn nll_per_token(&self) -> f64 {
        self.nll / self.tokens.max(1) as f64
    }

    /// `exp` of the mean negative log-likelihood per token.
    pub fn perplexity(&self) -> f64 {
        self.nll_per_token().exp()
    }
}

/// `log softmax(row)[target]` in f64.
fn log_probability(row: &[f32], target: usize) -> f64 {
    f64::from(row[target]) - crate::compress::sensitivity::log_partition(row)
}

/// Score `utterances` (each with a transcript) `batch_size` at a time; `progress(done)` after
/// each batch.
pub fn decoder_perplexity(
    model: &Whisper,
    tokenizer: &WhisperTokenizer,
    utterances: &[Utterance],
    batch_size: usize,
    mut progress: impl FnMut(usize),
) -> Result<Perplexity> {
    if batch_size == 0 {
        return Err(Error::config(
            "perplexity",
            "the batch size must be at least 1",
        ));
    }
    let examples = build_examples(
        utterances,
        Targets::Transcript,
        tokenizer,
        &Default::default(),
    )?;
    let prompt = Prompt {
        tokens: tokenizer.prompt(model.config.is_multilingual()),
        eot: tokenizer.eot,
    };
    let mut scores = Vec::with_capacity(examples.len());
    for chunk in examples.chunks(batch_size) {
        let refs: Vec<_> = chunk.iter().collect();
        let batch = make_batch(
            &refs,
            false,
            &model.config,
            &prompt,
            &Device::Cpu,
            DType::F32,
        )?;
        let logits = crate::train::loss::forward(model, &batch, &[])?
            .logits
            .to_dtype(DType::F32)?;
        let rows: Vec<Vec<f32>> = logits.to_vec2()?;
        let positions: Vec<u32> = batch.positions.to_vec1()?;
        let targets: Vec<u32> = batch.targets.to_vec1()?;
        let len = batch.inputs.dims2()?.1;
        let mut batch_scores: Vec<UtteranceScore> = chunk
            .iter()
            .map(|e| UtteranceScore {
                id: e.id.clone(),
                tokens: 0,
                nll: 0.0,
            })
            .collect();
        for ((row, &position), &target) in rows.iter().zip(&positions).zip(&targets) {
            let score = &mut batch_scores[position as usize / len];
            score.tokens += 1;
            score.nll -= log_probability(row, target as usize);
        }
        scores.extend(batch_scores);
        progress(scores.len());
    }
    Ok(Perplexity::from_scores(scores))
}

/// A text to score with a language model.
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredText {
    /// Identifier (utterance id, or line number).
    pub id: String,
    /// The text.
    pub text: String,
}

/// Score `texts` with a language model, `batch_size` at a time (sequences right-padded; the
/// model is causal, so padding never changes a scored position); `progress(done)` after each
/// batch.
pub fn lm_perplexity<M: CausalLm>(
    model: &M,
    tokenizer: &LlamaTokenizer,
    texts: &[ScoredText],
    batch_size: usize,
    mut progress: impl FnMut(usize),
) -> Result<Perplexity> {
    if batch_size == 0 {
        return Err(Error::config(
            "perplexity",
            "the batch size must be at least 1",
        ));
    }
    let sequences: Vec<Vec<u32>> = texts
        .iter()
        .map(|t| {
            let ids = tokenizer.document(&t.text)?;
            if ids.len() > model.context_length() {
                return Err(Error::config(
                    format!("text `{}`", t.id),
                    format!(
                        "{} tokens exceed the model's context of {}",
                        ids.len(),
                        model.context_length()
                    ),
                ));
            }
            Ok(ids)
        })
        .collect::<Result<_>>()?;
    let mut scores = Vec::with_capacity(texts.len());
    for (chunk, seqs) in texts.chunks(batch_size).zip(sequences.chunks(batch_size)) {
        let len = seqs.iter().map(Vec::len).max().unwrap_or(1);
        let padded: Vec<u32> = seqs
            .iter()
            .flat_map(|s| {
                s.iter()
                    .copied()
                    .chain(std::iter::repeat_n(s[0], len - s.len()))
            })
            .collect();
        let tokens = candle_core::Tensor::from_vec(padded, (seqs.len(), len), &model.device())?;
        let logits = model.next_token_logits(&tokens)?.to_dtype(DType::F32)?;
        for (b, (text, ids)) in chunk.iter().zip(seqs).enumerate() {
            let rows: Vec<Vec<f32>> = logits.get(b)?.to_vec2()?;
            let mut score = UtteranceScore {
                id: text.id.clone(),
                tokens: 0,
                nll: 0.0,
            };
            for (row, &next) in rows.iter().zip(&ids[1..]) {
                score.tokens += 1;
                score.nll -= log_probability(row, next as usize);
            }
            scores.push(score);
        }
        progress(scores.len());
    }
    Ok(Perplexity::from_scores(scores))
}
