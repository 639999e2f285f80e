//! N-best rescoring of Whisper's beam search with a language model (issue 13: the LM's effect on
//! recognition). Each utterance's N-best list ([`crate::models::whisper::Transcriber::n_best`])
//! is reranked by
//!
//! `(log P_whisper(y | x) + weight * log P_lm(y)) / |y|_whisper`,
//!
//! both sums of log-probabilities, `|y|` the hypothesis's Whisper text tokens (Whisper's
//! log-probability includes its end-of-text). *Choice:* dividing by Whisper's length keeps Whisper's own ranking at
//! `weight = 0` (sum log-probability / length, as its beam search ranks), so weight 0 reproduces
//! plain beam search exactly. The weight is tuned on a dev N-best list ([`tune_weight`]) and
//! then fixed for the test sets.

use whittle_text::normalize::EnglishNormalizer;
use whittle_text::wer::ErrorCounts;

use crate::error::{Error, Result};
use crate::eval::{score, UtteranceResult};
use crate::models::llama::LlamaTokenizer;
use crate::models::whisper::NBestHypothesis;
use crate::perplexity::{lm_perplexity, ScoredText};

/// One utterance's N-best list, as `whittle nbest` writes it (one JSON object per line).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NBestUtterance {
    /// Utterance id.
    pub id: String,
    /// Audio file.
    pub audio: String,
    /// Reference transcript.
    pub reference: String,
    /// Audio duration in seconds.
    pub audio_seconds: f64,
    /// Hypotheses, best first by Whisper's ranking.
    pub hypotheses: Vec<NBestHypothesis>,
}

/// `log P_lm` of every hypothesis of every utterance (the sum over the text's tokens after the
/// document separator; an empty text scores 0).
pub fn lm_scores<M: crate::models::lm::CausalLm>(
    model: &M,
    tokenizer: &LlamaTokenizer,
    utterances: &[NBestUtterance],
    batch_size: usize,
    mut progress: impl FnMut(usize),
) -> Result<Vec<Vec<f64>>> {
    let mut out = Vec::with_capacity(utterances.len());
    for (i, u) in utterances.iter().enumerate() {
        let texts: Vec<ScoredText> = u
            .hypotheses
            .iter()
            .enumerate()
            .map(|(k, h)| ScoredText {
                id: format!("{} #{k}", u.id),
                text: h.text.clone(),
            })
            .collect();
        let scores = lm_perplexity(model, tokenizer, &texts, batch_size, |_| {})?;
        out.push(scores.utterances.iter().map(|s| -s.nll).collect());
        progress(i + 1);
    }
    Ok(out)
}

/// The index of the hypothesis each utterance keeps at `weight`.
pub fn choose(utterances: &[NBestUtterance], lm: &[Vec<f64>], weight: f64) -> Vec<usize> {
    utterances
        .iter()
        .zip(lm)
        .map(|(u, l)| {
            let mut best = (0, f64::NEG_INFINITY);
            for (k, (h, &lp)) in u.hypotheses.iter().zip(l).enumerate() {
                let s = (h.sum_logprob + weight * lp) / h.tokens.max(1) as f64;
                if s > best.1 {
                    best = (k, s);
                }
            }
            best.0
        })
        .collect()
}

/// Scored results of the chosen hypotheses, as `whittle eval` writes them.
pub fn results(
    utterances: &[NBestUtterance],
    chosen: &[usize],
    normalizer: &EnglishNormalizer,
) -> Vec<UtteranceResult> {
    utterances
        .iter()
        .zip(chosen)
        .map(|(u, &k)| {
            let hypothesis = u
                .hypotheses
                .get(k)
                .map(|h| h.text.clone())
                .unwrap_or_default();
            let (reference_normalized, hypothesis_normalized, words, chars) =
                score(normalizer, &u.reference, &hypothesis);
            UtteranceResult {
                id: u.id.clone(),
                audio: u.audio.clone(),
                reference: u.reference.clone(),
                hypothesis,
                reference_normalized,
                hypothesis_normalized,
                words,
                chars,
                audio_seconds: u.audio_seconds,
                transcribe_seconds: 0.0,
            }
        })
        .collect()
}

/// The weight in `grid` with the lowest WER on `utterances` (the smallest of equals), and that
/// WER.
pub fn tune_weight(
    utterances: &[NBestUtterance],
    lm: &[Vec<f64>],
    normalizer: &EnglishNormalizer,
    grid: &[f64],
) -> Result<(f64, f64)> {
    let mut best: Option<(f64, f64)> = None;
    for &w in grid {
        let words: ErrorCounts = results(utterances, &choose(utterances, lm, w), normalizer)
            .iter()
            .map(|r| r.words)
            .sum();
        let wer = words.rate();
        if best.is_none_or(|(_, b)| wer < b) {
            best = Some((w, wer));
        }
    }
    best.ok_or_else(|| Error::config("rescore", "the weight grid is empty"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hyp(text: &str, tokens: usize, sum_logprob: f64) -> NBestHypothesis {
        NBestHypothesis {
            text: text.into(),
            tokens,
            sum_logprob,
        }
    }

    fn lists() -> Vec<NBestUtterance> {
        let utt = |id: &str, reference: &str, hypotheses| NBestUtterance {
            id: id.into(),
            audio: format!("{id}.wav"),
            reference: reference.into(),
            audio_seconds: 1.0,
            hypotheses,
        };
        vec![
            // Whisper prefers the wrong text; the LM prefers the right one.
            utt(
                "a",
                "the cat sat",
                vec![hyp("the cap sat", 3, -1.5), hyp("the cat sat", 3, -1.8)],
            ),
            // Whisper is right and the LM agrees.
            utt(
                "b",
                "a dog ran",
                vec![hyp("a dog ran", 3, -0.9), hyp("a dog rang", 3, -2.0)],
            ),
            // Whisper is right, the LM strongly prefers a wrong text.
            utt(
                "c",
                "we wait",
                vec![hyp("we wait", 2, -0.2), hyp("we weight", 2, -2.2)],
            ),
        ]
    }

    #[test]
    fn weight_zero_keeps_whispers_ranking_and_the_tuned_weight_is_the_best_of_the_grid() {
        let lists = lists();
        let lm = vec![vec![-9.0, -6.0], vec![-5.0, -9.0], vec![-12.0, -4.0]];
        let normalizer = EnglishNormalizer::without_spellings();
        assert_eq!(choose(&lists, &lm, 0.0), [0, 0, 0]);
        // (-1.5 - 9w) / 3 < (-1.8 - 6w) / 3 once w > 0.1; for "c", (-0.2 - 12w) / 2 <
        // (-2.2 - 4w) / 2 once w > 0.25.
        assert_eq!(choose(&lists, &lm, 0.2), [1, 0, 0]);
        assert_eq!(choose(&lists, &lm, 0.5), [1, 0, 1]);
        let grid = [0.0, 0.2, 0.5];
        let (w, wer) = tune_weight(&lists, &lm, &normalizer, &grid).unwrap();
        assert_eq!(w, 0.2);
        assert_eq!(wer, 0.0);
        let (_, base) = tune_weight(&lists, &lm, &normalizer, &[0.0]).unwrap();
        assert!((base - 1.0 / 8.0).abs() < 1e-12, "{base}");
        let r = results(&lists, &choose(&lists, &lm, 0.5), &normalizer);
        assert_eq!(r[2].hypothesis, "we weight");
        assert_eq!(r[2].words.errors(), 1);
        assert!(tune_weight(&lists, &lm, &normalizer, &[]).is_err());
    }
}
