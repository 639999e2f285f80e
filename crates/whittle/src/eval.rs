//! Evaluation: transcribe a dataset, score WER and CER after Whisper's English text
//! normalisation, and time it.
//!
//! [`evaluate_with`] decodes `batch_size` utterances at a time through the model's
//! [`SpeechModel::transcribe_batch`] (for Whisper: greedy, one 30 s window per clip; see
//! [`crate::models::whisper::batch`]) and records clips that cannot be read (corrupt, empty, or
//! longer than the duration cap) as [`Failure`]s instead of stopping, unless `strict`.

use std::time::Instant;

use whittle_text::normalize::EnglishNormalizer;
use whittle_text::wer::{char_errors, word_errors, ErrorCounts};

use crate::data::Utterance;
use crate::error::{Error, Result};
use crate::models::SpeechModel;

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
    /// Utterances whose hypothesis loops ([`is_looping`]).
    #[serde(default)]
    pub looping_utterances: usize,
}

/// Whether a hypothesis of `hypothesis_words` normalised words for a reference of
/// `reference_words` is a repetition loop: longer than 2 x reference + 5 words. Greedy decoding
/// without fallback can repeat a phrase up to the token limit, and one such utterance can outweigh
/// a whole set's other errors, so the tables count them.
pub fn is_looping(reference_words: usize, hypothesis_words: usize) -> bool {
    hypothesis_words > 2 * reference_words + 5
}

/// How [`evaluate_with`] runs.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EvalOptions {
    /// Utterances transcribed together; 1 transcribes them one at a time.
    pub batch_size: usize,
    /// Longer clips are failures; decoding stops at the cap (default the process-wide
    /// [`whittle_audio::max_audio_seconds`], 4 h).
    pub max_duration_seconds: f64,
    /// Stop with an error at the first clip that fails instead of recording it.
    pub strict: bool,
}

impl Default for EvalOptions {
    fn default() -> Self {
        Self {
            batch_size: 1,
            max_duration_seconds: whittle_audio::max_audio_seconds(),
            strict: false,
        }
    }
}

/// A clip left out of the scores, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Failure {
    /// Utterance id.
    pub id: String,
    /// Audio file.
    pub audio: String,
    /// What went wrong (the audio decoder's message).
    pub reason: String,
}

/// The outcome of [`evaluate_with`]: scored utterances (in dataset order), totals over them, and
/// the clips that failed.
#[derive(Debug, Clone)]
pub struct Evaluation {
    /// Per-utterance results of the clips that were transcribed.
    pub results: Vec<UtteranceResult>,
    /// Totals over `results`.
    pub totals: EvalTotals,
    /// Clips that could not be read, in dataset order.
    pub failures: Vec<Failure>,
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
        looping_utterances: results
            .iter()
            .filter(|r| {
                is_looping(
                    r.reference_normalized.split_whitespace().count(),
                    r.hypothesis_normalized.split_whitespace().count(),
                )
            })
            .count(),
    }
}

/// Transcribe and score every utterance one at a time, stopping at the first clip that cannot
/// be read. `progress` is called after each one.
pub fn evaluate<M: SpeechModel + ?Sized>(
    model: &M,
    utterances: &[Utterance],
    normalizer: &EnglishNormalizer,
    progress: impl FnMut(usize, &UtteranceResult),
) -> Result<(Vec<UtteranceResult>, EvalTotals)> {
    let options = EvalOptions {
        strict: true,
        ..Default::default()
    };
    let evaluation = evaluate_with(model, utterances, normalizer, &options, progress)?;
    Ok((evaluation.results, evaluation.totals))
}

/// Transcribe and score every utterance, `options.batch_size` at a time. `progress` is called
/// after each transcribed one with its index in `utterances`.
///
/// A clip that cannot be read, is empty or exceeds `options.max_duration_seconds` becomes a
/// [`Failure`] and the run goes on; with `options.strict` it is an error naming the utterance.
/// Each utterance of a batch is given an equal share of the batch's transcription time.
pub fn evaluate_with<M: SpeechModel + ?Sized>(
    model: &M,
    utterances: &[Utterance],
    normalizer: &EnglishNormalizer,
    options: &EvalOptions,
    mut progress: impl FnMut(usize, &UtteranceResult),
) -> Result<Evaluation> {
    let mut results = Vec::with_capacity(utterances.len());
    let mut failures = Vec::new();
    let mut load_seconds = 0.0;
    let batch_size = options.batch_size.max(1);
    for (first, batch) in utterances.chunks(batch_size).enumerate() {
        let first = first * batch_size;
        let t0 = Instant::now();
        let mut loaded = Vec::with_capacity(batch.len());
        for (i, utt) in batch.iter().enumerate() {
            match whittle_audio::load_audio_limited(&utt.audio, options.max_duration_seconds) {
                Ok(samples) => loaded.push((first + i, utt, samples)),
                Err(e) if options.strict => {
                    return Err(Error::Dataset {
                        path: utt.audio.clone(),
                        reason: format!("utterance `{}`: {e}", utt.id),
                    })
                }
                Err(e) => failures.push(Failure {
                    id: utt.id.clone(),
                    audio: utt.audio.display().to_string(),
                    reason: e.to_string(),
                }),
            }
        }
        load_seconds += t0.elapsed().as_secs_f64();
        if loaded.is_empty() {
            continue;
        }
        let t1 = Instant::now();
        let clips: Vec<&[f32]> = loaded.iter().map(|(_, _, s)| s.as_slice()).collect();
        let transcripts = model.transcribe_batch(&clips)?;
        let transcribe_seconds = t1.elapsed().as_secs_f64() / loaded.len() as f64;
        for ((index, utt, samples), transcript) in loaded.into_iter().zip(transcripts) {
            let reference = utt.text.clone().unwrap_or_default();
            let (rn, hn, w, c) = score(normalizer, &reference, &transcript);
            let result = UtteranceResult {
                id: utt.id.clone(),
                audio: utt.audio.display().to_string(),
                reference,
                hypothesis: transcript,
                reference_normalized: rn,
                hypothesis_normalized: hn,
                words: w,
                chars: c,
                audio_seconds: samples.len() as f64 / 16_000.0,
                transcribe_seconds,
            };
            progress(index, &result);
            results.push(result);
        }
    }
    let totals = totals(&results, load_seconds);
    Ok(Evaluation {
        results,
        totals,
        failures,
    })
}
