//! What the trainer needs of a model family: batches, the training forward and dev scoring.
//!
//! The trainer, the distillation losses and every [`super::method::CompressionMethod`] are
//! written once; a family implements [`TrainModel`] for its network. Whisper's batches are
//! trimmed log-mels with teacher-forced decoder tokens, and its logits are those of the target
//! tokens; a CTC family would batch waveforms and take the logits of every valid frame.

use super::batch::{make_batch, Batch, Prompt, TrainExample};
use super::loss::Outputs;
use super::recipe::HiddenTap;
use crate::data::Utterance;
use crate::error::Result;
use crate::eval::{evaluate, EvalTotals};
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
