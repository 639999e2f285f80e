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
    pub word_errors: usize,
    /// Words in the normalised reference.
    pub reference_words: usize,
    /// Character errors after normalisation.
    pub char_errors: usize,
    /// Characters in the normalised reference.
    pub reference_chars: usize,
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
    pub words: ErrorCountsJson,
    /// Character errors summed over utterances.
    pub chars: ErrorCountsJson,
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

/// Error counts in serialisable form.
#[derive(Debug, Clone, Copy, Default, serde::Serialize, serde::Deserialize)]
pub struct ErrorCountsJson {
    /// Substitutions.
    pub substitutions: usize,
    /// Deletions.
    pub deletions: usize,
    /// Insertions.
    pub insertions: usize,
    /// Reference length.
    pub reference: usize,
}

impl From<ErrorCounts> for ErrorCountsJson {
    fn from(c: ErrorCounts) -> Self {
        Self {
            substitutions: c.substitutions,
            deletions: c.deletions,
            insertions: c.insertions,
            reference: c.reference_len,
        }
    }
}

impl ErrorCountsJson {
    fn add(&mut self, c: &ErrorCounts) {
        self.substitutions += c.substitutions;
        self.deletions += c.deletions;
        self.insertions += c.insertions;
        self.reference += c.reference_len;
    }

    fn rate(&self) -> f64 {
        (self.substitutions + self.deletions + self.insertions) as f64
            / self.reference.max(1) as f64
    }
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
    let mut t = EvalTotals {
        utterances: results.len(),
        audio_load_seconds,
        ..Default::default()
    };
    for r in results {
        t.words.add(&ErrorCounts {
            substitutions: 0,
            deletions: 0,
            insertions: r.word_errors,
            reference_len: r.reference_words,
        });
        t.chars.add(&ErrorCounts {
            substitutions: 0,
            deletions: 0,
            insertions: r.char_errors,
            reference_len: r.reference_chars,
        });
        t.audio_seconds += r.audio_seconds;
        t.transcribe_seconds += r.transcribe_seconds;
    }
    t.wer = t.words.rate();
    t.cer = t.chars.rate();
    t.rtf = t.transcribe_seconds / t.audio_seconds.max(1e-9);
    t
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
    let mut words = ErrorCountsJson::default();
    let mut chars = ErrorCountsJson::default();
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
        words.add(&w);
        chars.add(&c);
        let result = UtteranceResult {
            id: utt.id.clone(),
            audio: utt.audio.display().to_string(),
            reference,
            hypothesis: transcript.text,
            reference_normalized: rn,
            hypothesis_normalized: hn,
            word_errors: w.substitutions + w.deletions + w.insertions,
            reference_words: w.reference_len,
            char_errors: c.substitutions + c.deletions + c.insertions,
            reference_chars: c.reference_len,
            audio_seconds: samples.len() as f64 / 16_000.0,
            transcribe_seconds,
        };
        progress(i, &result);
        results.push(result);
    }
    let mut t = totals(&results, load_seconds);
    t.words = words;
    t.chars = chars;
    Ok((results, t))
}
