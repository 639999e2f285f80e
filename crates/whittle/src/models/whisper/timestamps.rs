//! Whisper's timestamp tokens: the logit rules that keep them well formed, and the split of a
//! decoded window into timed segments.
//!
//! Timestamp token `timestamp_begin + i` means `i * 0.02` s from the start of the 30 s window
//! (1501 tokens, `<|0.00|>` to `<|30.00|>`). [`TimestampRules`] follows openai-whisper's
//! `ApplyTimestampRules` (`whisper/decoding.py`), which CTranslate2 (faster-whisper's engine)
//! also applies, rule for rule:
//!
//! 1. `<|notimestamps|>` is never sampled;
//! 2. timestamps come in pairs: after a timestamp that closes nothing (text before it) the next
//!    token is a timestamp or end-of-text; after two timestamps in a row it is text or
//!    end-of-text;
//! 3. timestamps never decrease, and a segment cannot end where it started: a timestamp must
//!    be later than the previous one, except right after a closing timestamp, where the next
//!    segment may start at the same time;
//! 4. the first sampled token is a timestamp no later than `max_initial_timestamp` (1.0 s,
//!    index 50, in both references);
//! 5. if the total probability of the timestamps exceeds that of the most likely token below
//!    `timestamp_begin` (text or end-of-text), only timestamps remain.
//!
//! [`split_segments`] follows the segment slicing of openai-whisper's `transcribe()` and
//! faster-whisper's `_split_segments_by_timestamps` (1.2.1): slices end at each pair of
//! consecutive timestamps; a window that ends on a single timestamp has no speech after it, so
//! decoding seeks past the window; otherwise it seeks to the last closing timestamp (the
//! unfinished last segment is decoded again in the next window).
//!
//! # Shapes
//! Logits are one row of `vocab` values; token sequences are the sampled tokens after the
//! prompt (no prompt, no end-of-text).

/// Seconds per timestamp step.
pub const TIME_PRECISION: f64 = 0.02;
/// Mel frames per timestamp step (3000 frames / 1500 encoder positions).
pub const INPUT_STRIDE: usize = 2;
/// `max_initial_timestamp` of both references, in seconds.
pub const MAX_INITIAL_TIMESTAMP: f64 = 1.0;

/// The timestamp logit rules for one tokenizer.
#[derive(Debug, Clone)]
pub struct TimestampRules {
    /// `<|endoftext|>`.
    pub eot: u32,
    /// `<|notimestamps|>`.
    pub no_timestamps: u32,
    /// `<|0.00|>`; every token from here to the end of the vocabulary is a timestamp.
    pub timestamp_begin: u32,
    /// Largest first timestamp index (50 = 1.0 s), or `None` for no limit.
    pub max_initial_timestamp_index: Option<u32>,
}

fn suppress(logits: &mut [f32], range: std::ops::Range<usize>) {
    let end = range.end.min(logits.len());
    let start = range.start.min(end);
    logits[start..end].fill(f32::NEG_INFINITY);
}

impl TimestampRules {
    /// Apply the rules to `logits` given the tokens `sampled` so far in this window.
    pub fn apply(&self, logits: &mut [f32], sampled: &[u32]) {
        let tb = self.timestamp_begin as usize;
        let is_ts = |t: u32| t >= self.timestamp_begin;
        if let Some(l) = logits.get_mut(self.no_timestamps as usize) {
            *l = f32::NEG_INFINITY;
        }
        let n = sampled.len();
        let last_was_ts = n >= 1 && is_ts(sampled[n - 1]);
        let penultimate_was_ts = n < 2 || is_ts(sampled[n - 2]);
        if last_was_ts {
            if penultimate_was_ts {
                // A pair just closed: the next token is text (or end-of-text).
                suppress(logits, tb..logits.len());
            } else {
                // A segment is open: close it with a timestamp, or end.
                suppress(logits, 0..self.eot as usize);
            }
        }
        if let Some(&last_ts) = sampled.iter().rev().find(|&&t| is_ts(t)) {
            // Monotonic, and a segment has non-zero length (the closing timestamp may equal
            // the start of the next one only right after it).
            let floor = if last_was_ts && !penultimate_was_ts {
                last_ts
            } else {
                last_ts + 1
            };
            suppress(logits, tb..floor as usize);
        }
        if sampled.is_empty() {
            suppress(logits, 0..tb);
            if let Some(max) = self.max_initial_timestamp_index {
                suppress(logits, tb + max as usize + 1..logits.len());
            }
        }
        // If the timestamps together are likelier than any single text token, take a timestamp.
        let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        if max == f32::NEG_INFINITY || tb >= logits.len() {
            return;
        }
        let log_z = max + logits.iter().map(|&l| (l - max).exp()).sum::<f32>().ln();
        let ts_max = logits[tb..]
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        if ts_max == f32::NEG_INFINITY {
            return;
        }
        let ts_logsumexp = ts_max
            + logits[tb..]
                .iter()
                .map(|&l| (l - ts_max).exp())
                .sum::<f32>()
                .ln();
        let text_max = logits[..tb]
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        if ts_logsumexp - log_z > text_max - log_z {
            suppress(logits, 0..tb);
        }
    }
}

/// A timed piece of one window's tokens (times in seconds from the window start).
#[derive(Debug, Clone, PartialEq)]
pub struct WindowSegment {
    /// Start, seconds from the window start.
    pub start: f64,
    /// End, seconds from the window start.
    pub end: f64,
    /// The tokens of the piece, timestamps included (the prompt of the next window keeps them).
    pub tokens: Vec<u32>,
}

/// Cut one window's sampled tokens into segments; also returns how many mel frames to advance.
///
/// `segment_frames` is the number of audio frames the window held (at most 3000).
pub fn split_segments(
    tokens: &[u32],
    timestamp_begin: u32,
    segment_frames: usize,
) -> (Vec<WindowSegment>, usize) {
    let is_ts = |t: u32| t >= timestamp_begin;
    let position = |t: u32| (t - timestamp_begin) as usize;
    let n = tokens.len();
    let single_timestamp_ending = n >= 2 && !is_ts(tokens[n - 2]) && is_ts(tokens[n - 1]);
    let mut slices: Vec<usize> = (1..n)
        .filter(|&i| is_ts(tokens[i]) && is_ts(tokens[i - 1]))
        .collect();
    if slices.is_empty() {
        // No complete pair: one segment over the whole window, ending at the last timestamp if
        // there is one past <|0.00|>.
        let end = match tokens.iter().rev().find(|&&t| is_ts(t)) {
            Some(&t) if t != timestamp_begin => position(t) as f64 * TIME_PRECISION,
            _ => {
                segment_frames as f64 * whittle_audio::mel::HOP_LENGTH as f64
                    / whittle_audio::mel::SAMPLE_RATE as f64
            }
        };
        let segment = WindowSegment {
            start: 0.0,
            end,
            tokens: tokens.to_vec(),
        };
        return (vec![segment], segment_frames);
    }
    if single_timestamp_ending {
        slices.push(n);
    }
    let mut segments = Vec::with_capacity(slices.len());
    let mut last = 0;
    for &slice in &slices {
        let piece = &tokens[last..slice];
        segments.push(WindowSegment {
            start: position(piece[0]) as f64 * TIME_PRECISION,
            end: position(piece[piece.len() - 1]) as f64 * TIME_PRECISION,
            tokens: piece.to_vec(),
        });
        last = slice;
    }
    let advance = if single_timestamp_ending {
        segment_frames
    } else {
        position(tokens[last - 1]) * INPUT_STRIDE
    };
    (segments, advance)
}

#[cfg(test)]
mod tests {
    use super::*;

    // A toy vocabulary: text 0..10, eot 10, notimestamps 11, timestamps 12..20.
    const EOT: u32 = 10;
    const TB: u32 = 12;
    const V: usize = 20;

    fn rules(max_initial: Option<u32>) -> TimestampRules {
        TimestampRules {
            eot: EOT,
            no_timestamps: 11,
            timestamp_begin: TB,
            max_initial_timestamp_index: max_initial,
        }
    }

    fn allowed(logits: &[f32]) -> Vec<usize> {
        (0..logits.len())
            .filter(|&i| logits[i] > f32::NEG_INFINITY)
            .collect()
    }

    /// Text tokens likelier than the timestamps, so rule 5 stays out of the way.
    fn text_heavy() -> Vec<f32> {
        (0..V).map(|i| if i < 10 { 5.0 } else { 0.0 }).collect()
    }

    #[test]
    fn first_token_is_an_early_timestamp() {
        let mut l = text_heavy();
        rules(Some(2)).apply(&mut l, &[]);
        assert_eq!(allowed(&l), vec![12, 13, 14]);
        let mut l = text_heavy();
        rules(None).apply(&mut l, &[]);
        assert_eq!(allowed(&l), (12..20).collect::<Vec<_>>());
    }

    #[test]
    fn open_segment_must_close_or_end() {
        // <|ts1|> w3 <|ts4|>: the segment 1..4 just closed. End-of-text likelier than the
        // timestamps together, so rule 5 keeps it.
        let mut l = text_heavy();
        l[EOT as usize] = 5.0;
        rules(None).apply(&mut l, &[13, 3, 16]);
        // After a closing timestamp: another timestamp >= it, or end-of-text; no text.
        assert_eq!(allowed(&l), vec![10, 16, 17, 18, 19]);
    }

    #[test]
    fn after_a_pair_comes_text() {
        let mut l = text_heavy();
        rules(None).apply(&mut l, &[13, 3, 16, 16]);
        assert_eq!(allowed(&l), (0..=10).collect::<Vec<_>>());
    }

    #[test]
    fn timestamps_increase_strictly_after_text() {
        let mut l = text_heavy();
        rules(None).apply(&mut l, &[13, 3, 4]);
        // Text continues, or a timestamp beyond 13 closes the segment.
        assert_eq!(
            allowed(&l),
            vec![0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 14, 15, 16, 17, 18, 19]
        );
        assert_eq!(l[11], f32::NEG_INFINITY, "notimestamps is never sampled");
    }

    #[test]
    fn likely_timestamps_win_over_the_best_text_token() {
        // Text token 0 alone has p ~ 0.3; the 8 timestamps together have more.
        let mut l = vec![f32::NEG_INFINITY; V];
        l[0] = 1.0;
        l[12..20].fill(0.0);
        rules(None).apply(&mut l, &[13, 3]);
        assert_eq!(allowed(&l), (14..20).collect::<Vec<_>>());
        // Lower the timestamps: text survives.
        let mut l = vec![f32::NEG_INFINITY; V];
        l[0] = 4.0;
        l[12..20].fill(0.0);
        rules(None).apply(&mut l, &[13, 3]);
        assert_eq!(allowed(&l), vec![0, 14, 15, 16, 17, 18, 19]);
    }

    #[test]
    fn split_pairs_and_seek_to_the_last_closing_timestamp() {
        // <0> a b <5><5> c <9><9> d   (unfinished last segment)
        let tb = 100;
        let tokens = [tb, 1, 2, tb + 5, tb + 5, 3, tb + 9, tb + 9, 4];
        let (segs, advance) = split_segments(&tokens, tb, 3000);
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[0].tokens, vec![tb, 1, 2, tb + 5]);
        assert!((segs[0].end - 0.10).abs() < 1e-9);
        assert!((segs[1].start - 0.10).abs() < 1e-9 && (segs[1].end - 0.18).abs() < 1e-9);
        assert_eq!(advance, 9 * INPUT_STRIDE);
    }

    #[test]
    fn single_timestamp_ending_consumes_the_window() {
        let tb = 100;
        let tokens = [tb, 1, tb + 5, tb + 5, 3, tb + 9];
        let (segs, advance) = split_segments(&tokens, tb, 2500);
        assert_eq!(segs.len(), 2);
        assert_eq!(segs[1].tokens, vec![tb + 5, 3, tb + 9]);
        assert_eq!(advance, 2500);
    }

    #[test]
    fn no_pair_gives_one_segment_to_the_last_timestamp() {
        let tb = 100;
        let (segs, advance) = split_segments(&[tb, 1, 2, tb + 7], tb, 3000);
        assert_eq!(segs.len(), 1);
        assert!((segs[0].end - 0.14).abs() < 1e-9);
        assert_eq!(advance, 3000);
        let (segs, _) = split_segments(&[1, 2], tb, 1500);
        assert!((segs[0].end - 15.0).abs() < 1e-9);
    }
}
