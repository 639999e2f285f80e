//! Whisper's log-mel spectrogram front end.
//!
//! Reproduces `whisper.audio.log_mel_spectrogram` of openai-whisper [1] step for step:
//!
//! 1. pad the 16 kHz signal with `pad_samples` zeros at the end (30 s, [`N_SAMPLES_30S`], when
//!    transcribing);
//! 2. STFT as `torch.stft(n_fft=400, hop_length=160, window=hann_window(400), center=True)`:
//!    reflect-pad 200 samples on both sides, periodic Hann window, one frame every 160 samples;
//! 3. power spectrum `|X|^2` of the 201 bins, dropping the last frame;
//! 4. Slaney-scale mel filterbank with Slaney area normalisation, as
//!    `librosa.filters.mel(sr=16000, n_fft=400, n_mels, htk=False, norm="slaney")` [2]
//!    (computed by [`mel_filters`], not stored);
//! 5. `log10(max(x, 1e-10))`, then `max(x, global_max - 8)`, then `(x + 4) / 4`.
//!
//! Frames run in parallel on rayon; frames that lie entirely in the zero padding skip the FFT
//! (their spectrum is exactly zero).
//!
//! # Shapes
//! For `n` samples and `pad_samples` of padding the output is `[n_mels][(n + pad_samples) / 160]`,
//! row-major. With the 30 s padding, a clip of up to 30 s gives at least [`N_FRAMES_30S`] frames,
//! and [`LogMel::window`] cuts or pads it to the encoder's 3000 like whisper's `pad_or_trim`.
//!
//! [1]: https://github.com/openai/whisper/blob/main/whisper/audio.py
//! [2]: https://librosa.org/doc/latest/generated/librosa.filters.mel.html

use std::sync::Arc;

use rayon::prelude::*;
use realfft::{RealFftPlanner, RealToComplex};

/// Sample rate the front end expects, in Hz.
pub const SAMPLE_RATE: u32 = 16_000;
/// STFT window and FFT length in samples (25 ms).
pub const N_FFT: usize = 400;
/// STFT hop in samples (10 ms).
pub const HOP_LENGTH: usize = 160;
/// Frequency bins of the one-sided spectrum.
pub const N_FREQ_BINS: usize = N_FFT / 2 + 1;
/// Samples in Whisper's 30 s input window.
pub const N_SAMPLES_30S: usize = 480_000;
/// Mel frames in Whisper's 30 s input window.
pub const N_FRAMES_30S: usize = N_SAMPLES_30S / HOP_LENGTH;

/// Power floor before the logarithm (whisper's `clamp(min=1e-10)`).
const POWER_FLOOR: f32 = 1e-10;
/// Dynamic range kept below the loudest bin, in log10 units (80 dB).
const DYNAMIC_RANGE_LOG10: f32 = 8.0;
/// Frames per rayon task; large enough to amortise the per-task FFT scratch.
const FRAMES_PER_TASK: usize = 64;

/// A log-mel spectrogram, row-major `[n_mels][n_frames]`.
#[derive(Debug, Clone, PartialEq)]
pub struct LogMel {
    /// Mel bands (rows): 80, or 128 for large-v3.
    pub n_mels: usize,
    /// Frames (columns), one per 10 ms.
    pub n_frames: usize,
    /// `n_mels * n_frames` values, band-major.
    pub data: Vec<f32>,
}

impl LogMel {
    /// Value of mel band `mel` at frame `frame`.
    pub fn get(&self, mel: usize, frame: usize) -> f32 {
        self.data[mel * self.n_frames + frame]
    }

    /// All frames of mel band `mel`.
    pub fn row(&self, mel: usize) -> &[f32] {
        &self.data[mel * self.n_frames..(mel + 1) * self.n_frames]
    }

    /// Frames `start..start + n_frames`, zero-filled past the end, as whisper's
    /// `pad_or_trim(mel[:, start:], n_frames)` does for each 30 s segment.
    pub fn window(&self, start: usize, n_frames: usize) -> LogMel {
        let mut data = vec![0.0; self.n_mels * n_frames];
        let available = self.n_frames.saturating_sub(start).min(n_frames);
        for mel in 0..self.n_mels {
            let source = &self.row(mel)[start.min(self.n_frames)..][..available];
            data[mel * n_frames..][..available].copy_from_slice(source);
        }
        LogMel {
            n_mels: self.n_mels,
            n_frames,
            data,
        }
    }
}

/// Whisper's log-mel spectrogram of 16 kHz `samples` with 30 s of zero padding appended, as
/// openai-whisper's `transcribe` computes it. Gives `samples.len() / 160 + 3000` frames.
pub fn log_mel_spectrogram(samples: &[f32], n_mels: usize) -> LogMel {
    log_mel_spectrogram_with_padding(samples, n_mels, N_SAMPLES_30S)
}

/// Whisper's log-mel spectrogram with `pad_samples` zeros appended (0 for none).
pub fn log_mel_spectrogram_with_padding(
    samples: &[f32],
    n_mels: usize,
    pad_samples: usize,
) -> LogMel {
    let signal_len = samples.len() + pad_samples;
    let n_frames = signal_len / HOP_LENGTH;
    if n_frames == 0 || n_mels == 0 {
        return LogMel {
            n_mels,
            n_frames,
            data: vec![0.0; n_mels * n_frames],
        };
    }

    let extended = reflect_pad(samples, signal_len, N_FFT / 2);
    let window = hann_window_periodic(N_FFT);
    let filterbank = SparseFilterbank::new(n_mels);
    let fft: Arc<dyn RealToComplex<f32>> = RealFftPlanner::new().plan_fft_forward(N_FFT);

    // Frame-major while computing so each task writes one contiguous block.
    let mut mel_by_frame = vec![0.0f32; n_frames * n_mels];
    mel_by_frame
        .par_chunks_mut(FRAMES_PER_TASK * n_mels)
        .enumerate()
        .for_each_init(
            || {
                (
                    fft.make_input_vec(),
                    fft.make_output_vec(),
                    fft.make_scratch_vec(),
                    vec![0.0f32; N_FREQ_BINS],
                )
            },
            |(frame_buf, spectrum, scratch, power), (task, block)| {
                for (offset, mel_out) in block.chunks_exact_mut(n_mels).enumerate() {
                    let start = (task * FRAMES_PER_TASK + offset) * HOP_LENGTH;
                    let segment = &extended[start..start + N_FFT];
                    if segment.iter().all(|&x| x == 0.0) {
                        mel_out.fill(0.0);
                        continue;
                    }
                    for ((dst, &x), &w) in frame_buf.iter_mut().zip(segment).zip(&window) {
                        *dst = x * w;
                    }
                    fft.process_with_scratch(frame_buf, spectrum, scratch)
                        .expect("STFT buffers come from the FFT plan");
                    for (p, c) in power.iter_mut().zip(spectrum.iter()) {
                        *p = c.norm_sqr();
                    }
                    filterbank.apply(power, mel_out);
                }
            },
        );

    let mut data = vec![0.0f32; n_mels * n_frames];
    for (frame, mel_row) in mel_by_frame.chunks_exact(n_mels).enumerate() {
        for (mel, &energy) in mel_row.iter().enumerate() {
            data[mel * n_frames + frame] = energy.max(POWER_FLOOR).log10();
        }
    }
    let global_max = data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let floor = global_max - DYNAMIC_RANGE_LOG10;
    for value in &mut data {
        *value = (value.max(floor) + 4.0) / 4.0;
    }
    LogMel {
        n_mels,
        n_frames,
        data,
    }
}

/// Periodic Hann window of length `n` (`torch.hann_window(n)`): `0.5 - 0.5 cos(2 pi k / n)`.
pub fn hann_window_periodic(n: usize) -> Vec<f32> {
    (0..n)
        .map(|k| {
            let phase = 2.0 * std::f64::consts::PI * k as f64 / n as f64;
            (0.5 - 0.5 * phase.cos()) as f32
        })
        .collect()
}

/// `samples` zero-extended to `signal_len`, then reflect-padded by `pad` on both sides
/// (`torch.nn.functional.pad(mode="reflect")`: the edge sample is not repeated). Pads longer
/// than the signal keep reflecting, as numpy's `reflect` mode does.
fn reflect_pad(samples: &[f32], signal_len: usize, pad: usize) -> Vec<f32> {
    let at = |i: usize| samples.get(i).copied().unwrap_or(0.0);
    let reflected = |virtual_index: i64| -> f32 {
        if signal_len == 1 {
            return at(0);
        }
        let period = 2 * (signal_len as i64 - 1);
        let folded = virtual_index.rem_euclid(period);
        let index = if folded < signal_len as i64 {
            folded
        } else {
            period - folded
        };
        at(index as usize)
    };
    let mut extended = Vec::with_capacity(signal_len + 2 * pad);
    extended.extend((0..pad).map(|k| reflected(pad as i64 - k as i64)));
    extended.extend(samples.iter().copied());
    extended.resize(pad + signal_len, 0.0);
    extended.extend((0..pad).map(|k| reflected(signal_len as i64 + k as i64)));
    extended
}

/// Slaney-scale mel filterbank, row-major `[n_mels][n_fft / 2 + 1]`, as
/// `librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0, fmax=sr/2,
/// htk=False, norm="slaney")`: triangles between adjacent mel-spaced edge frequencies, each
/// scaled by `2 / (upper edge - lower edge)` in Hz so every filter has unit area.
pub fn mel_filters(n_mels: usize, n_fft: usize, sample_rate: u32) -> Vec<f32> {
    let n_bins = n_fft / 2 + 1;
    let sample_rate = f64::from(sample_rate);
    let bin_hz: Vec<f64> = (0..n_bins)
        .map(|k| k as f64 * sample_rate / n_fft as f64)
        .collect();
    let edges_hz = mel_band_edges_hz(n_mels + 2, 0.0, sample_rate / 2.0);

    let mut weights = vec![0.0f32; n_mels * n_bins];
    for mel in 0..n_mels {
        let (lower, centre, upper) = (edges_hz[mel], edges_hz[mel + 1], edges_hz[mel + 2]);
        let area_norm = 2.0 / (upper - lower);
        for (bin, &hz) in bin_hz.iter().enumerate() {
            let rising = (hz - lower) / (centre - lower);
            let falling = (upper - hz) / (upper - centre);
            let triangle = rising.min(falling).max(0.0);
            // librosa stores the triangle as f32 before scaling it; round the same way.
            weights[mel * n_bins + bin] = (f64::from(triangle as f32) * area_norm) as f32;
        }
    }
    weights
}

// Slaney's auditory-toolbox mel scale: linear below 1 kHz, logarithmic above.
const SLANEY_HZ_PER_MEL: f64 = 200.0 / 3.0;
const SLANEY_LOG_START_HZ: f64 = 1000.0;
const SLANEY_LOG_START_MEL: f64 = SLANEY_LOG_START_HZ / SLANEY_HZ_PER_MEL;

fn slaney_log_step() -> f64 {
    6.4f64.ln() / 27.0
}

/// Hz to mel on the Slaney scale (`librosa.hz_to_mel(htk=False)`).
pub fn hz_to_mel_slaney(hz: f64) -> f64 {
    if hz >= SLANEY_LOG_START_HZ {
        SLANEY_LOG_START_MEL + (hz / SLANEY_LOG_START_HZ).ln() / slaney_log_step()
    } else {
        hz / SLANEY_HZ_PER_MEL
    }
}

/// Mel to Hz on the Slaney scale (`librosa.mel_to_hz(htk=False)`).
pub fn mel_to_hz_slaney(mel: f64) -> f64 {
    if mel >= SLANEY_LOG_START_MEL {
        SLANEY_LOG_START_HZ * (slaney_log_step() * (mel - SLANEY_LOG_START_MEL)).exp()
    } else {
        SLANEY_HZ_PER_MEL * mel
    }
}

/// `count` frequencies evenly spaced in mel between `fmin_hz` and `fmax_hz`
/// (`librosa.mel_frequencies(htk=False)`).
fn mel_band_edges_hz(count: usize, fmin_hz: f64, fmax_hz: f64) -> Vec<f64> {
    let (low, high) = (hz_to_mel_slaney(fmin_hz), hz_to_mel_slaney(fmax_hz));
    let step = (high - low) / (count.max(2) - 1) as f64;
    (0..count)
        .map(|i| {
            let mel = if i + 1 == count {
                high
            } else {
                low + i as f64 * step
            };
            mel_to_hz_slaney(mel)
        })
        .collect()
}

/// The filterbank keeping only each filter's non-zero span (about 2-20 of 201 bins), which
/// makes the projection ~10x cheaper than the dense matrix product.
struct SparseFilterbank {
    /// Per mel band: first bin of the span and its weights.
    bands: Vec<(usize, Vec<f32>)>,
}

impl SparseFilterbank {
    fn new(n_mels: usize) -> Self {
        let dense = mel_filters(n_mels, N_FFT, SAMPLE_RATE);
        let bands = dense
            .chunks_exact(N_FREQ_BINS)
            .map(|row| {
                let first = row.iter().position(|&w| w != 0.0).unwrap_or(0);
                let last = row.iter().rposition(|&w| w != 0.0).map_or(first, |i| i + 1);
                (first, row[first..last].to_vec())
            })
            .collect();
        SparseFilterbank { bands }
    }

    fn apply(&self, power: &[f32], mel_out: &mut [f32]) {
        for ((first, weights), out) in self.bands.iter().zip(mel_out.iter_mut()) {
            *out = weights
                .iter()
                .zip(&power[*first..])
                .map(|(w, p)| w * p)
                .sum();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive-reference tolerance on the (x + 4) / 4 scale: f32 FFT against an f64 direct DFT.
    const NAIVE_ABS_TOL: f32 = 1e-4;

    /// Whisper's pipeline with a direct O(n^2) DFT in f64 and a dense filterbank.
    fn naive_log_mel(samples: &[f32], n_mels: usize, pad_samples: usize) -> Vec<f32> {
        let mut signal: Vec<f64> = samples.iter().map(|&x| f64::from(x)).collect();
        signal.resize(samples.len() + pad_samples, 0.0);
        let len = signal.len() as i64;
        let reflect = |i: i64| -> f64 {
            let i = if i < 0 { -i } else { i };
            let i = if i >= len { 2 * (len - 1) - i } else { i };
            signal[i as usize]
        };
        let n_frames = signal.len() / HOP_LENGTH;
        let filters = mel_filters(n_mels, N_FFT, SAMPLE_RATE);
        let mut mel = vec![0.0f64; n_mels * n_frames];
        for frame in 0..n_frames {
            let centre = (frame * HOP_LENGTH) as i64;
            let windowed: Vec<f64> = (0..N_FFT)
                .map(|k| {
                    let w =
                        0.5 - 0.5 * (2.0 * std::f64::consts::PI * k as f64 / N_FFT as f64).cos();
                    w * reflect(centre - (N_FFT / 2) as i64 + k as i64)
                })
                .collect();
            for bin in 0..N_FREQ_BINS {
                let (mut re, mut im) = (0.0, 0.0);
                for (k, x) in windowed.iter().enumerate() {
                    let angle = -2.0 * std::f64::consts::PI * (bin * k) as f64 / N_FFT as f64;
                    re += x * angle.cos();
                    im += x * angle.sin();
                }
                let power = re * re + im * im;
                for m in 0..n_mels {
                    mel[m * n_frames + frame] += f64::from(filters[m * N_FREQ_BINS + bin]) * power;
                }
            }
        }
        let logs: Vec<f64> = mel.iter().map(|&e| e.max(1e-10).log10()).collect();
        let max = logs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        logs.iter()
            .map(|&v| ((v.max(max - 8.0) + 4.0) / 4.0) as f32)
            .collect()
    }

    fn test_signal(len: usize) -> Vec<f32> {
        (0..len)
            .map(|n| {
                let t = n as f32 / SAMPLE_RATE as f32;
                0.3 * (2.0 * std::f32::consts::PI * 523.0 * t).sin()
                    + 0.1 * (2.0 * std::f32::consts::PI * 4100.0 * t).sin()
                    + 0.02 * ((n * 7919 % 101) as f32 / 50.0 - 1.0)
            })
            .collect()
    }

    #[test]
    fn matches_naive_dft_reference() {
        for (len, n_mels, pad) in [(1600, 80, 0), (1234, 128, 800), (250, 80, 0)] {
            let samples = test_signal(len);
            let fast = log_mel_spectrogram_with_padding(&samples, n_mels, pad);
            let naive = naive_log_mel(&samples, n_mels, pad);
            assert_eq!(fast.n_frames, (len + pad) / HOP_LENGTH);
            assert_eq!(fast.data.len(), naive.len());
            let max_err = fast
                .data
                .iter()
                .zip(&naive)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f32::max);
            assert!(
                max_err <= NAIVE_ABS_TOL,
                "len {len}, {n_mels} mels: max_err {max_err} exceeds {NAIVE_ABS_TOL}"
            );
        }
    }

    #[test]
    fn reflect_pad_mirrors_without_repeating_the_edge() {
        let padded = reflect_pad(&[1.0, 2.0, 3.0, 4.0], 4, 2);
        assert_eq!(padded, [3.0, 2.0, 1.0, 2.0, 3.0, 4.0, 3.0, 2.0]);
        // Zero padding is part of the signal that gets reflected.
        let padded = reflect_pad(&[1.0, 2.0], 4, 2);
        assert_eq!(padded, [0.0, 2.0, 1.0, 2.0, 0.0, 0.0, 0.0, 2.0]);
        // Pads longer than the signal keep bouncing between its ends.
        let padded = reflect_pad(&[1.0, 2.0, 3.0], 3, 5);
        assert_eq!(padded[..5], [2.0, 1.0, 2.0, 3.0, 2.0]);
        assert_eq!(padded[8..], [2.0, 1.0, 2.0, 3.0, 2.0]);
        assert_eq!(reflect_pad(&[5.0], 1, 2), [5.0; 5]);
    }

    #[test]
    fn frame_counts_follow_whisper() {
        let one_second = vec![0.1f32; 16_000];
        let mel = log_mel_spectrogram(&one_second, 80);
        assert_eq!((mel.n_mels, mel.n_frames), (80, 100 + N_FRAMES_30S));
        assert_eq!(mel.data.len(), 80 * 3100);
        let short = log_mel_spectrogram_with_padding(&one_second[..159], 80, 0);
        assert_eq!(short.n_frames, 0);
        assert!(short.data.is_empty());
        assert_eq!(log_mel_spectrogram(&[], 128).n_frames, N_FRAMES_30S);
    }

    #[test]
    fn silence_maps_to_whisper_floor() {
        // log10(1e-10) = -10 everywhere, so (x + 4) / 4 = -1.5.
        let mel = log_mel_spectrogram(&vec![0.0; 8000], 80);
        assert!(mel.data.iter().all(|&v| v == -1.5));
    }

    #[test]
    fn dynamic_range_is_eight_decades_below_the_peak() {
        let mut samples = test_signal(3200);
        samples[1600..].fill(0.0);
        let mel = log_mel_spectrogram_with_padding(&samples, 80, 0);
        let max = mel.data.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let min = mel.data.iter().copied().fold(f32::INFINITY, f32::min);
        // The silent half sits exactly on the floor: 8 decades = 2 units after the /4.
        assert!((max - min - 2.0).abs() < 1e-6, "range {}", max - min);
    }

    #[test]
    fn window_trims_and_zero_pads_like_pad_or_trim() {
        let mel = LogMel {
            n_mels: 2,
            n_frames: 3,
            data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
        };
        assert_eq!(
            mel.window(1, 4).data,
            [2.0, 3.0, 0.0, 0.0, 5.0, 6.0, 0.0, 0.0]
        );
        assert_eq!(mel.window(0, 2).data, [1.0, 2.0, 4.0, 5.0]);
        assert_eq!(mel.window(7, 2).data, [0.0; 4]);
        assert_eq!(mel.get(1, 2), 6.0);
        assert_eq!(mel.row(0), [1.0, 2.0, 3.0]);
    }

    #[test]
    fn periodic_hann_window() {
        let window = hann_window_periodic(N_FFT);
        assert_eq!(window[0], 0.0);
        assert!((window[N_FFT / 2] - 1.0).abs() < 1e-7);
        // Periodic, not symmetric: w[k] == w[n - k].
        for k in 1..N_FFT {
            assert!((window[k] - window[N_FFT - k]).abs() < 1e-6);
        }
    }

    #[test]
    fn slaney_scale_is_linear_below_1_khz_and_invertible() {
        assert!((hz_to_mel_slaney(1000.0) - 15.0).abs() < 1e-12);
        assert!((hz_to_mel_slaney(500.0) - 7.5).abs() < 1e-12);
        for hz in [0.0, 123.4, 999.9, 1000.0, 4321.0, 8000.0] {
            assert!((mel_to_hz_slaney(hz_to_mel_slaney(hz)) - hz).abs() < 1e-9);
        }
    }
}
