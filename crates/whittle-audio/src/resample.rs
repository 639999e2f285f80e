//! Band-limited sample-rate conversion of mono signals.
//!
//! Uses rubato's synchronous FFT resampler ([`rubato::Fft`]): each chunk is transformed, its
//! spectrum cut or zero-extended to the new rate behind a Blackman-Harris anti-aliasing filter,
//! and transformed back with overlap-add. The whole clip goes through
//! [`rubato::Resampler::process_all`], which flushes the tail with silence and drops the
//! resampler's output delay (kept a whole number of samples by the choice of chunk size), so output sample `k` sits at time `k / to_hz` exactly as input
//! sample `n` sits at `n / from_hz` (no shift). The result is cut to
//! `round(len * to_hz / from_hz)` samples.

use rubato::audioadapter_buffers::direct::InterleavedSlice;
use rubato::{Fft, FixedSync, Resampler, WindowFunction};

use crate::decode::MAX_SAMPLE_RATE;
use crate::error::AudioError;

/// Input frames per FFT chunk, before rounding (see [`chunk_frames`]).
const CHUNK_FRAMES: usize = 1024;
/// One FFT per chunk: the longest filter, hence the sharpest anti-aliasing cutoff. The extra
/// latency this costs streaming users does not matter here, since the delay is trimmed.
const SUB_CHUNKS: usize = 1;

/// The FFT resampler works on blocks of `k * from/g` input and `k * to/g` output samples
/// (`g = gcd(from, to)`). Its filter is centred on input sample `floor(k * from/g / 2)` while it
/// trims `floor(k * to/g / 2)` output samples of delay; the two agree exactly only when `k` is even.
/// An odd `k` leaves a fractional shift (0.18 output samples at 44.1 kHz, 0.5 at 96 kHz), so the
/// chunk is rounded to an even number of blocks.
fn chunk_frames(from_hz: u32, to_hz: u32) -> usize {
    let block = (from_hz / gcd(from_hz, to_hz)) as usize;
    CHUNK_FRAMES.div_ceil(block).next_multiple_of(2) * block
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// Number of output samples for `input_len` samples resampled from `from_hz` to `to_hz`,
/// rounded to nearest.
pub fn resampled_len(input_len: usize, from_hz: u32, to_hz: u32) -> usize {
    let scaled = input_len as u128 * u128::from(to_hz);
    let from = u128::from(from_hz.max(1));
    ((scaled + from / 2) / from) as usize
}

/// Resamples a mono signal from `from_hz` to `to_hz`.
///
/// Returns `round(samples.len() * to_hz / from_hz)` samples; equal rates return a copy. Rates
/// must lie in `1..=MAX_SAMPLE_RATE`.
pub fn resample_mono(samples: &[f32], from_hz: u32, to_hz: u32) -> Result<Vec<f32>, AudioError> {
    let fail = |reason: String| AudioError::Resample {
        path: None,
        from_hz,
        to_hz,
        reason,
    };
    for rate in [from_hz, to_hz] {
        if rate == 0 || rate > MAX_SAMPLE_RATE {
            return Err(fail(format!(
                "sample rates must lie in 1..={MAX_SAMPLE_RATE} Hz"
            )));
        }
    }
    if from_hz == to_hz || samples.is_empty() {
        return Ok(samples.to_vec());
    }

    let mut resampler = Fft::<f32>::new_custom(
        from_hz as usize,
        to_hz as usize,
        chunk_frames(from_hz, to_hz),
        SUB_CHUNKS,
        1,
        WindowFunction::BlackmanHarris2,
        FixedSync::Input,
    )
    .map_err(|err| fail(err.to_string()))?;
    let input =
        InterleavedSlice::new(samples, 1, samples.len()).map_err(|err| fail(err.to_string()))?;
    let mut output = resampler
        .process_all(&input, samples.len(), None)
        .map_err(|err| fail(err.to_string()))?
        .take_data();

    // process_all returns ceil(len * ratio) frames; cut to the rounded length.
    let wanted = resampled_len(samples.len(), from_hz, to_hz);
    output.resize(wanted, 0.0);
    Ok(output)
}
