//! Evaluation: transcribe a dataset, score WER and CER after Whisper's English text
//! normalisation, and time it.

use std::time::Instant;

use whittle_text::normalize::EnglishNormalizer;
use whittle_text::wer::{char_errors, word_errors, ErrorCounts};

use crate::data::Utterance;
use crate::error::{Error, Result};
use crate::models::whisper::Transcriber;

/// The result for one utterance.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct UtteranceResult {
    /// Utterance id.
    pub id: String,
    /// Audio file.
    pub audio: String,
    /// Reference transcript as given (empty when unknown).
    pub reference: String,
    /// Model output.
    pub hypothesis: String,
    /// Normalised reference.
    pub reference_normalized: String,
    /// Normalised hypothesis.
    pub hypothesis_normalized: String,
    /// Word errors after normalisation.
    pub words: ErrorCounts,
    /// Character errors after normalisation.
    pub chars: ErrorCounts,
    /// Audio duration in seconds.
    pub audio_seconds: f64,
    /// Seconds spent in the front end and the model.
    pub transcribe_seconds: f64,
}

/// Corpus-level totals.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct EvalTotals {
    /// Utterances scored.
    pub utterances: usize,
    /// Word errors (S, D, I) summed over utterances.
    pub words: ErrorCounts,
    /// Character errors summed over utterances.
    pub chars: ErrorCounts,
    /// Corpus WER (sum of errors / sum of reference words).
    pub wer: f64,
    /// Corpus CER.
    pub cer: f64,
    /// Audio seconds.
    pub audio_seconds: f64,
    /// Seconds reading and resampling audio files.
    pub audio_load_seconds: f64,
    /// Seconds in the front end and the model.
    pub transcribe_seconds: f64,
    /// Real-time factor: transcribe seconds / audio seconds.
    pub rtf: f64,
}

/// Score a hypothesis against a reference after normalisation.
pub fn score(
    normalizer: &EnglishNormalizer,
    reference: &str,
    hypothesis: &str,
) -> (String, String, ErrorCounts, ErrorCounts) {
    let r = normalizer.normalize(reference);
    let h = normalizer.normalize(hypothesis);
    let w = word_errors(&r, &h);
    let c = char_errors(&r, &h);
    (r, h, w, c)
}

/// Sum per-utterance results into corpus totals.
pub fn totals(results: &[UtteranceResult], audio_load_seconds: f64) -> EvalTotals {
    let words: ErrorCounts = results.iter().map(|r| r.words).sum();
    let chars: ErrorCounts = results.iter().map(|r| r.chars).sum();
    let audio_seconds: f64 = results.iter().map(|r| r.audio_seconds).sum();
    let transcribe_seconds: f64 = results.iter().map(|r| r.transcribe_seconds).sum();
    EvalTotals {
        utterances: results.len(),
        wer: words.rate(),
        cer: chars.rate(),
        words,
        chars,
        audio_seconds,
        audio_load_seconds,
        transcribe_seconds,
        rtf: transcribe_seconds / audio_seconds.max(1e-9),
    }
}

/// Transcribe and score every utterance. `progress` is called after each one.
pub fn evaluate(
    transcriber: &Transcriber,
    utterances: &[Utterance],
    normalizer: &EnglishNormalizer,
    mut progress: impl FnMut(usize, &UtteranceResult),
) -> Result<(Vec<UtteranceResult>, EvalTotals)> {
    let mut results = Vec::with_capacity(utterances.len());
    let mut load_seconds = 0.0;
    for (i, utt) in utterances.iter().enumerate() {
        let t0 = Instant::now();
        let samples = whittle_audio::load_audio(&utt.audio).map_err(|e| Error::Dataset {
            path: utt.audio.clone(),
            reason: format!("utterance `{}`: {e}", utt.id),
        })?;
        load_seconds += t0.elapsed().as_secs_f64();
        let t1 = Instant::now();
        let transcript = transcriber.transcribe(&samples)?;
        let transcribe_seconds = t1.elapsed().as_secs_f64();
        let reference = utt.text.clone().unwrap_or_default();
        let (rn, hn, w, c) = score(normalizer, &reference, &transcript.text);
        let result = UtteranceResult {
            id: utt.id.clone(),
            audio: utt.audio.display().to_string(),
            reference,
            hypothesis: transcript.text,
            reference_normalized: rn,
            hypothesis_normalized: hn,
            words: w,
            chars: c,
            audio_seconds: samples.len() as f64 / 16_000.0,
            transcribe_seconds,
        };
        progress(i, &result);
        results.push(result);
    }
    let totals = totals(&results, load_seconds);
    Ok((results, totals))
}
