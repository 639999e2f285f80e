//! What the trainer needs of a model family: batches, the training forward and dev scoring.
//!
//! The trainer, the distillation losses and every [`super::method::CompressionMethod`] are
//! written once; a family implements [`TrainModel`] for its network. Whisper's batches are
//! trimmed log-mels with teacher-forced decoder tokens, and its logits are those of the target
//! tokens. The CTC families batch waveforms and take the logits of every frame of every clip.

use candle_core::{DType, Tensor};

use super::batch::{load_batch_samples, make_batch, Batch, Prompt, TrainExample};
use super::loss::Outputs;
use super::recipe::HiddenTap;
use crate::data::Utterance;
use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalTotals};
use crate::models::gpt2::Gpt2;
use crate::models::llama::{Llama, LlamaTokenizer};
use crate::models::lm::CausalLm;
use crate::models::wav2vec2::{normalize_waveform, CtcRecognizer};
use crate::models::whisper::{DecodeOptions, Transcriber, Whisper, WhisperTokenizer};
use crate::models::Layers;
use crate::perplexity::{lm_perplexity, ScoredText};
use whittle_text::normalize::EnglishNormalizer;

/// A dev result: what the trainer selects the shipped parameters on, and reports.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(untagged)]
pub enum DevScore {
    /// A recognizer's transcripts scored against the references.
    Recognition(EvalTotals),
    /// A language model's perplexity on the dev texts.
    Perplexity(DevPerplexity),
}

/// A language model's dev perplexity.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct DevPerplexity {
    /// Texts scored.
    pub texts: usize,
    /// Tokens scored.
    pub tokens: usize,
    /// exp(mean negative log-likelihood per token).
    pub perplexity: f64,
}

impl DevScore {
    /// The value selected on, lower is better: WER, or perplexity.
    pub fn value(&self) -> f64 {
        match self {
            DevScore::Recognition(t) => t.wer,
            DevScore::Perplexity(p) => p.perplexity,
        }
    }

    /// One line for progress display.
    pub fn describe(&self) -> String {
        match self {
            DevScore::Recognition(t) => format!(
                "dev WER {:.2}% CER {:.2}% ({} utterances)",
                100.0 * t.wer,
                100.0 * t.cer,
                t.utterances
            ),
            DevScore::Perplexity(p) => format!(
                "dev perplexity {:.3} ({} texts, {} tokens)",
                p.perplexity, p.texts, p.tokens
            ),
        }
    }
}

/// A network the trainer can distil into a compressed student.
pub trait TrainModel: Layers + Clone {
    /// What building a batch needs besides the network (Whisper: the decoder prompt).
    type BatchContext;
    /// What turns the network into a recognizer for dev scoring (Whisper: the tokenizer).
    type Decoding;

    /// The batch of `examples`, its input cut to the longest one when `trim`.
    fn make_batch(
        &self,
        examples: &[&TrainExample],
        trim: bool,
        context: &Self::BatchContext,
    ) -> Result<Batch>;

    /// The training forward: logits of the positions that carry a loss (`batch.positions`), and
    /// the hidden states at `taps`, through the same code as inference.
    fn forward_train(&self, batch: &Batch, taps: &[HiddenTap]) -> Result<Outputs>;

    /// Score `utterances` (the dev set: transcribe them, or for a language model score their
    /// texts); `progress` after each utterance.
    fn score(
        &self,
        decoding: &Self::Decoding,
        utterances: &[Utterance],
        normalizer: &EnglishNormalizer,
        progress: &mut dyn FnMut(usize),
    ) -> Result<DevScore>;
}

impl TrainModel for Whisper {
    type BatchContext = Prompt;
    type Decoding = WhisperTokenizer;

    fn make_batch(&self, examples: &[&TrainExample], trim: bool, prompt: &Prompt) -> Result<Batch> {
        make_batch(
            examples,
            trim,
            &self.config,
            prompt,
            self.device(),
            candle_core::DType::F32,
        )
    }

    fn forward_train(&self, batch: &Batch, taps: &[HiddenTap]) -> Result<Outputs> {
        super::loss::forward(self, batch, taps)
    }

    /// Greedy decoding without timestamps, one utterance at a time.
    fn score(
        &self,
        tokenizer: &WhisperTokenizer,
        utterances: &[Utterance],
        normalizer: &EnglishNormalizer,
        progress: &mut dyn FnMut(usize),
    ) -> Result<DevScore> {
        let transcriber = Transcriber {
            model: self.clone(),
            tokenizer: tokenizer.clone(),
            options: DecodeOptions::default(),
        };
        let (_, totals) = evaluate(&transcriber, utterances, normalizer, |i, _| progress(i))?;
        Ok(DevScore::Recognition(totals))
    }
}

/// The CTC families: a batch holds the clips' waveforms, zero-padded to the longest
/// (`features` `[b, samples]`), with each clip's length in samples in `inputs` (`[b]`, u32) and
/// no token targets. The forward runs each clip alone, unpadded, as inference does (a group-norm
/// feature encoder and unmasked attention would otherwise see the padding), and returns the
/// logits of every frame of every clip, `[frames, vocab]`.
///
/// Hidden taps: `encoder` is the last encoder layer's output, `encoder.N` the output of layer N
/// (both before a pre-LN encoder's final norm); `decoder` does not exist here.
impl TrainModel for CtcRecognizer {
    type BatchContext = ();
    type Decoding = ();

    fn make_batch(&self, examples: &[&TrainExample], _trim: bool, _: &()) -> Result<Batch> {
        let clips: Vec<Vec<f32>> = examples
            .iter()
            .zip(load_batch_samples(examples)?)
            .map(|(e, samples)| {
                if self.model.output_frames(samples.len()) == 0 {
                    return Err(Error::Dataset {
                        path: e.audio.clone(),
                        reason: format!(
                            "utterance `{}` is too short for the feature encoder",
                            e.id
                        ),
                    });
                }
                Ok(if self.normalize {
                    normalize_waveform(&samples)
                } else {
                    samples
                })
            })
            .collect::<Result<_>>()?;
        let longest = clips.iter().map(Vec::len).max().unwrap_or(0);
        let mut data = Vec::with_capacity(clips.len() * longest);
        for clip in &clips {
            data.extend_from_slice(clip);
            data.resize(data.len() + longest - clip.len(), 0.0);
        }
        let device = self.model.device();
        let lengths: Vec<u32> = clips.iter().map(|c| c.len() as u32).collect();
        let frames: u32 = clips
            .iter()
            .map(|c| self.model.output_frames(c.len()) as u32)
            .sum();
        Ok(Batch {
            ids: examples.iter().map(|e| e.id.clone()).collect(),
            features: Tensor::from_vec(data, (clips.len(), longest), device)?,
            inputs: Tensor::new(lengths.as_slice(), device)?,
            positions: Tensor::arange(0u32, frames, device)?,
            targets: Tensor::zeros(0, DType::U32, device)?,
        })
    }

    fn forward_train(&self, batch: &Batch, taps: &[HiddenTap]) -> Result<Outputs> {
        let lengths: Vec<u32> = batch.inputs.to_vec1()?;
        let mut logits = Vec::with_capacity(lengths.len());
        let mut hidden: Vec<Vec<Tensor>> = vec![Vec::new(); taps.len()];
        for (i, &len) in lengths.iter().enumerate() {
            let clip = batch.features.narrow(0, i, 1)?.narrow(1, 0, len as usize)?;
            let (clip_logits, states) = self.model.forward_with_hidden(&clip)?;
            logits.push(clip_logits.squeeze(0)?);
            for (out, tap) in hidden.iter_mut().zip(taps) {
                let state = match tap {
                    HiddenTap::Encoder => states.last(),
                    HiddenTap::EncoderLayer(n) => states.get(n + 1),
                    HiddenTap::Decoder => {
                        return Err(Error::config(
                            "loss.hidden",
                            "a CTC model has no decoder to tap",
                        ))
                    }
                };
                let state = state.ok_or_else(|| {
                    Error::config(
                        "loss.hidden",
                        format!("the encoder has {} layers", states.len() - 1),
                    )
                })?;
                out.push(state.squeeze(0)?);
            }
        }
        Ok(Outputs {
            logits: Tensor::cat(&logits, 0)?,
            hidden: hidden
                .iter()
                .map(|parts| Tensor::cat(parts, 0))
                .collect::<candle_core::Result<_>>()?,
        })
    }

    fn score(
        &self,
        _: &(),
        utterances: &[Utterance],
        normalizer: &EnglishNormalizer,
        progress: &mut dyn FnMut(usize),
    ) -> Result<DevScore> {
        let (_, totals) = evaluate(self, utterances, normalizer, |i, _| progress(i))?;
        Ok(DevScore::Recognition(totals))
    }
}

/// A language model ([`CausalLm`]: [`Llama`], [`Gpt2`]): each example's `tokens` are a whole
/// document as [`LlamaTokenizer::document`] encodes it (separator first). A batch holds the
/// documents without their last token, right-padded with their first (`inputs` `[b, len]`, u32;
/// `features` is the same tensor, the model's only input), and every position predicts the next
/// token of its document: `positions` index `b * len`, `targets` the next tokens. The model is
/// causal, so the padding never reaches a scored position.
///
/// Hidden taps: `decoder` is the final hidden state (after the final norm) at the scored
/// positions; there is no encoder. Dev scoring is perplexity of the dev texts (lower is better).
macro_rules! language_model_trains {
    ($model:ty) => {
        impl TrainModel for $model {
            type BatchContext = ();
            type Decoding = LlamaTokenizer;

            fn make_batch(&self, examples: &[&TrainExample], _: bool, _: &()) -> Result<Batch> {
                lm_batch(self, examples)
            }

            fn forward_train(&self, batch: &Batch, taps: &[HiddenTap]) -> Result<Outputs> {
                lm_forward_train(self, batch, taps)
            }

            fn score(
                &self,
                tokenizer: &LlamaTokenizer,
                utterances: &[Utterance],
                _normalizer: &EnglishNormalizer,
                progress: &mut dyn FnMut(usize),
            ) -> Result<DevScore> {
                lm_score(self, tokenizer, utterances, progress)
            }
        }
    };
}

language_model_trains!(Llama);
language_model_trains!(Gpt2);

fn lm_batch(model: &impl CausalLm, examples: &[&TrainExample]) -> Result<Batch> {
    let context = model.context_length();
    for e in examples {
        if e.tokens.len() < 2 {
            return Err(Error::config(
                format!("text `{}`", e.id),
                "a training text needs at least one token after the separator",
            ));
        }
        if e.tokens.len() > context {
            return Err(Error::config(
                format!("text `{}`", e.id),
                format!(
                    "{} tokens exceed the model's context of {context}",
                    e.tokens.len()
                ),
            ));
        }
    }
    let len = examples
        .iter()
        .map(|e| e.tokens.len() - 1)
        .max()
        .unwrap_or(1);
    let mut inputs = Vec::with_capacity(examples.len() * len);
    let (mut positions, mut targets) = (Vec::new(), Vec::new());
    for (i, e) in examples.iter().enumerate() {
        let n = e.tokens.len() - 1;
        inputs.extend_from_slice(&e.tokens[..n]);
        inputs.extend(std::iter::repeat_n(e.tokens[0], len - n));
        positions.extend((0..n).map(|j| (i * len + j) as u32));
        targets.extend_from_slice(&e.tokens[1..]);
    }
    let device = model.device();
    let inputs = Tensor::from_vec(inputs, (examples.len(), len), &device)?;
    let scored = targets.len();
    Ok(Batch {
        ids: examples.iter().map(|e| e.id.clone()).collect(),
        features: inputs.clone(),
        inputs,
        positions: Tensor::from_vec(positions, scored, &device)?,
        targets: Tensor::from_vec(targets, scored, &device)?,
    })
}

fn lm_forward_train(model: &impl CausalLm, batch: &Batch, taps: &[HiddenTap]) -> Result<Outputs> {
    let hidden = model.hidden(&batch.inputs)?;
    let (b, len, d) = hidden.dims3()?;
    let rows = hidden
        .reshape((b * len, d))?
        .index_select(&batch.positions, 0)?;
    let logits = model.project(&rows)?;
    let hidden = taps
        .iter()
        .map(|t| match t {
            HiddenTap::Decoder => Ok(rows.clone()),
            _ => Err(Error::config(
                "loss.hidden",
                "a language model has no encoder to tap (use `decoder`)",
            )),
        })
        .collect::<Result<_>>()?;
    Ok(Outputs { logits, hidden })
}

/// Perplexity of the dev utterances' texts, 8 texts per forward.
fn lm_score(
    model: &impl CausalLm,
    tokenizer: &LlamaTokenizer,
    utterances: &[Utterance],
    progress: &mut dyn FnMut(usize),
) -> Result<DevScore> {
    let texts: Vec<ScoredText> = utterances
        .iter()
        .map(|u| {
            Ok(ScoredText {
                id: u.id.clone(),
                text: u
                    .text
                    .clone()
                    .ok_or_else(|| Error::config(format!("dev text `{}`", u.id), "has no text"))?,
            })
        })
        .collect::<Result<_>>()?;
    let scores = lm_perplexity(model, tokenizer, &texts, 8, |done| {
        progress(done.saturating_sub(1))
    })?;
    Ok(DevScore::Perplexity(DevPerplexity {
        texts: texts.len(),
        tokens: scores.utterances.iter().map(|u| u.tokens).sum(),
        perplexity: scores.perplexity(),
    }))
}
