//! What the trainer needs of a model family: batches, the training forward and dev scoring.
//!
//! The trainer, the distillation losses and every [`super::method::CompressionMethod`] are
//! written once; a family implements [`TrainModel`] for its network. Whisper's batches are
//! trimmed log-mels with teacher-forced decoder tokens, and its logits are those of the target
//! tokens. The CTC families batch waveforms and take the logits of every frame of every clip.

use candle_core::{DType, Tensor};

use super::batch::{load_samples, make_batch, Batch, Prompt, TrainExample};
use super::loss::Outputs;
use super::recipe::HiddenTap;
use crate::data::Utterance;
use crate::error::{Error, Result};
use crate::eval::{evaluate, EvalTotals};
use crate::models::wav2vec2::{normalize_waveform, CtcRecognizer};
use crate::models::whisper::{DecodeOptions, Transcriber, Whisper, WhisperTokenizer};
use crate::models::Layers;
use whittle_text::normalize::EnglishNormalizer;

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

    /// Transcribe and score `utterances` (the dev set); `progress` after each utterance.
    fn score(
        &self,
        decoding: &Self::Decoding,
        utterances: &[Utterance],
        normalizer: &EnglishNormalizer,
        progress: &mut dyn FnMut(usize),
    ) -> Result<EvalTotals>;
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
    ) -> Result<EvalTotals> {
        let transcriber = Transcriber {
            model: self.clone(),
            tokenizer: tokenizer.clone(),
            options: DecodeOptions::default(),
        };
        let (_, totals) = evaluate(&transcriber, utterances, normalizer, |i, _| progress(i))?;
        Ok(totals)
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
            .map(|e| {
                let samples = load_samples(&e.audio, &e.id)?;
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
    ) -> Result<EvalTotals> {
        let (_, totals) = evaluate(self, utterances, normalizer, |i, _| progress(i))?;
        Ok(totals)
    }
}
