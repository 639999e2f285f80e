//! Temperature fallback: decode a window again, hotter, when the result looks like a failure.
//!
//! Follows openai-whisper's `transcribe()` / `decode_with_fallback` and faster-whisper 1.2.1's
//! `generate_with_fallback`, with their shared defaults ([`FallbackOptions::default`]):
//!
//! - temperatures 0.0, 0.2, ..., 1.0, tried in order; at 0 the window is decoded greedily (or
//!   by beam search when `beam_size > 1`), above 0 by sampling `best_of` candidates from
//!   `softmax(logits / T)` and keeping the one with the highest sum log-probability / length;
//! - a result fails when its [`compression_ratio`] exceeds 2.4 (too repetitive) or its average
//!   log-probability is below -1.0; it is accepted anyway, as silence, when the no-speech
//!   probability exceeds 0.6 *and* the average log-probability is below -1.0;
//! - the average log-probability is the sum of the sampled tokens' log-probabilities
//!   (end-of-text included, from the filtered logits at temperature 1) over `tokens + 1`;
//! - a window is skipped as silent when `no_speech_prob > 0.6` and not
//!   `avg_logprob > -1.0` ([`FallbackOptions::is_silent`]; both references test `>` here, so an
//!   average of exactly -1.0 counts as low).
//!
//! Where the references differ, whittle follows faster-whisper, the engine the agreement check
//! compares against: when every temperature fails, the result with the highest average
//! log-probability among those under the compression threshold (or among all, if none is) is
//! kept, reported with the last temperature tried (openai-whisper keeps the last result).
//!
//! whittle's choices: sampling draws from a ChaCha8 generator seeded with
//! [`FallbackOptions::seed`] once per audio file, so a run is reproducible (neither reference
//! seeds); the compression ratio uses `flate2`'s zlib stream at the default level 6 (the level
//! Python's `zlib.compress` uses) on its `zlib-rs` backend, which is not byte-identical to zlib.
//! Measured against Python's zlib 1.2.13 on 400 strings (real and synthetic transcripts cut to
//! 50-600 bytes, and short phrases looped 2-30 times): `zlib-rs` gave zlib's size on 105,
//! differed by at most 0.125 in ratio where zlib's ratio lies between 1.8 and 3.0, and never
//! put a ratio on the other side of 2.4; the default `miniz_oxide` backend matched 274 but
//! moved 3 short loops across 2.4 (zlib 2.86, miniz 1.82). On two_cities' first window
//! faster-whisper reports 2.206, whittle 2.254.

use std::io::Write;

use rand::distr::weighted::WeightedIndex;
use rand::distr::Distribution;
use rand::Rng;

/// Temperature fallback settings (openai-whisper and faster-whisper defaults).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FallbackOptions {
    /// Temperatures tried in order; `[0.0]` disables fallback.
    pub temperatures: Vec<f32>,
    /// A result whose text compresses better than this is too repetitive.
    pub compression_ratio_threshold: Option<f64>,
    /// A result whose average log-probability is lower failed.
    pub logprob_threshold: Option<f64>,
    /// A window whose no-speech probability is higher may be silence.
    pub no_speech_threshold: Option<f64>,
    /// Candidates sampled at each temperature above 0.
    pub best_of: usize,
    /// Seed of the sampling generator (one generator per audio file).
    pub seed: u64,
}

impl Default for FallbackOptions {
    fn default() -> Self {
        Self {
            temperatures: vec![0.0, 0.2, 0.4, 0.6, 0.8, 1.0],
            compression_ratio_threshold: Some(2.4),
            logprob_threshold: Some(-1.0),
            no_speech_threshold: Some(0.6),
            best_of: 5,
            seed: 0,
        }
    }
}

/// One decoding of one window, with the measures the fallback judges it by.
#[derive(Debug, Clone, PartialEq)]
pub struct Attempt {
    /// Sampled tokens, timestamps included, end-of-text excluded.
    pub tokens: Vec<u32>,
    /// Their text (timestamps dropped, trimmed).
    pub text: String,
    /// Temperature used.
    pub temperature: f32,
    /// Sum log-probability over `tokens.len() + 1` (end-of-text counted).
    pub avg_logprob: f64,
    /// [`compression_ratio`] of `text`.
    pub compression_ratio: f64,
    /// Probability of the no-speech token at the start-of-transcript position.
    pub no_speech_prob: f64,
}

/// UTF-8 bytes of `text` over the bytes of its zlib stream (openai-whisper's
/// `get_compression_ratio`); 0 for empty text.
pub fn compression_ratio(text: &str) -> f64 {
    if text.is_empty() {
        return 0.0;
    }
    let mut encoder = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing to a Vec cannot fail.
    let compressed = encoder
        .write_all(text.as_bytes())
        .and_then(|()| encoder.finish())
        .map(|v| v.len())
        .unwrap_or(text.len());
    text.len() as f64 / compressed.max(1) as f64
}

impl FallbackOptions {
    /// No fallback: temperature 0 only, thresholds kept (they still decide silence).
    pub fn without_fallback() -> Self {
        Self {
            temperatures: vec![0.0],
            ..Self::default()
        }
    }

    /// Whether `a` failed and the next temperature should be tried.
    pub fn needs_fallback(&self, a: &Attempt) -> bool {
        let too_repetitive = self
            .compression_ratio_threshold
            .is_some_and(|t| a.compression_ratio > t);
        let too_unlikely = self.logprob_threshold.is_some_and(|t| a.avg_logprob < t);
        let silence = too_unlikely
            && self
                .no_speech_threshold
                .is_some_and(|t| a.no_speech_prob > t);
        (too_repetitive || too_unlikely) && !silence
    }

    /// Whether the window of the accepted attempt `a` is skipped as silent.
    pub fn is_silent(&self, a: &Attempt) -> bool {
        let Some(threshold) = self.no_speech_threshold else {
            return false;
        };
        let confident = self.logprob_threshold.is_some_and(|t| a.avg_logprob > t);
        a.no_speech_prob > threshold && !confident
    }

    /// The attempt kept when every temperature failed (index into `attempts`).
    pub fn choose_when_exhausted(&self, attempts: &[Attempt]) -> Option<usize> {
        let below = |a: &Attempt| {
            self.compression_ratio_threshold
                .is_none_or(|t| a.compression_ratio <= t)
        };
        let any_below = attempts.iter().any(below);
        attempts
            .iter()
            .enumerate()
            .filter(|(_, a)| !any_below || below(a))
            .max_by(|(_, a), (_, b)| a.avg_logprob.total_cmp(&b.avg_logprob))
            .map(|(i, _)| i)
    }
}

/// Draw a token from `softmax(logits / temperature)`; `None` when no token is allowed.
pub fn sample_token<R: Rng>(logits: &[f32], temperature: f32, rng: &mut R) -> Option<u32> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return None;
    }
    let weights = logits.iter().map(|&l| ((l - max) / temperature).exp());
    let dist = WeightedIndex::new(weights).ok()?;
    Some(dist.sample(rng) as u32)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn attempt(avg_logprob: f64, compression_ratio: f64, no_speech_prob: f64) -> Attempt {
        Attempt {
            tokens: vec![],
            text: String::new(),
            temperature: 0.0,
            avg_logprob,
            compression_ratio,
            no_speech_prob,
        }
    }

    #[test]
    fn compression_ratio_flags_repetition() {
        let plain = "It was the best of times, it was the worst of times.";
        let looped = "I don't know. ".repeat(20);
        let r_plain = compression_ratio(plain);
        let r_loop = compression_ratio(&looped);
        assert!(r_plain > 0.8 && r_plain < 1.6, "plain text ratio {r_plain}");
        assert!(r_loop > 2.4, "looping text ratio {r_loop}");
        assert_eq!(compression_ratio(""), 0.0);
        // Sizes of Python's zlib.compress (zlib 1.2.13): the same for these, 2 bytes apart
        // (28 vs 26) on the 20-fold loop.
        let jfk = "And so my fellow Americans ask not what your country can do for you, ask what \
                   you can do for your country.";
        for (text, zlib_len) in [
            ("a".repeat(100), 12),
            (plain.to_string(), 43),
            (jfk.into(), 79),
        ] {
            let expected = text.len() as f64 / zlib_len as f64;
            let got = compression_ratio(&text);
            assert!(
                (got - expected).abs() < 1e-9,
                "{text:?}: {got} vs zlib {expected}"
            );
        }
        assert!((r_loop - 280.0 / 28.0).abs() < 1e-9, "loop ratio {r_loop}");
    }

    #[test]
    fn fallback_decisions() {
        let o = FallbackOptions::default();
        assert!(!o.needs_fallback(&attempt(-0.3, 1.5, 0.01)), "good result");
        assert!(o.needs_fallback(&attempt(-0.3, 3.0, 0.01)), "repetitive");
        assert!(o.needs_fallback(&attempt(-1.5, 1.5, 0.01)), "unlikely");
        assert!(
            !o.needs_fallback(&attempt(-1.5, 1.5, 0.9)),
            "unlikely but silent"
        );
        assert!(
            o.needs_fallback(&attempt(-0.3, 3.0, 0.9)),
            "repetitive and silent-looking but confident: still retried"
        );
        assert!(!FallbackOptions {
            compression_ratio_threshold: None,
            logprob_threshold: None,
            ..o.clone()
        }
        .needs_fallback(&attempt(-5.0, 9.0, 0.0)));
    }

    #[test]
    fn silence_needs_low_confidence() {
        let o = FallbackOptions::default();
        assert!(o.is_silent(&attempt(-1.5, 1.0, 0.7)));
        assert!(o.is_silent(&attempt(-1.0, 1.0, 0.7)), "-1.0 is not > -1.0");
        assert!(!o.is_silent(&attempt(-0.5, 1.0, 0.7)), "confident speech");
        assert!(!o.is_silent(&attempt(-1.5, 1.0, 0.5)), "speech likely");
    }

    #[test]
    fn exhausted_fallback_prefers_non_repetitive_then_likely() {
        let o = FallbackOptions::default();
        let tries = [
            attempt(-0.2, 3.0, 0.0),
            attempt(-1.8, 1.2, 0.0),
            attempt(-1.3, 1.9, 0.0),
        ];
        assert_eq!(o.choose_when_exhausted(&tries), Some(2));
        let all_repetitive = [attempt(-2.0, 3.0, 0.0), attempt(-1.1, 2.5, 0.0)];
        assert_eq!(o.choose_when_exhausted(&all_repetitive), Some(1));
        assert_eq!(o.choose_when_exhausted(&[]), None);
    }

    #[test]
    fn seeded_sampling_is_reproducible_and_follows_temperature() {
        let logits: Vec<f32> = (0..50).map(|i| (i % 7) as f32 * 0.5).collect();
        let draw = |seed: u64, t: f32| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            (0..200)
                .map(|_| sample_token(&logits, t, &mut rng).unwrap())
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(7, 1.0), draw(7, 1.0));
        assert_ne!(draw(7, 1.0), draw(8, 1.0));
        // Cold sampling concentrates on the arg-max class (i % 7 == 6).
        let top = |v: &[u32]| v.iter().filter(|&&t| t % 7 == 6).count();
        assert!(top(&draw(1, 0.05)) > 190);
        assert!(top(&draw(1, 1.0)) < 150);
        // Suppressed tokens are never drawn.
        let mut masked = logits.clone();
        masked[..49].fill(f32::NEG_INFINITY);
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        assert_eq!(sample_token(&masked, 1.0, &mut rng), Some(49));
        assert_eq!(sample_token(&[f32::NEG_INFINITY; 3], 1.0, &mut rng), None);
    }
}
