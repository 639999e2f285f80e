//! Compares the log-mel front end and the mel filterbank with the golden values that
//! `tests/fixtures/make_mel_reference.py` computed in numpy (openai-whisper's algorithm).

use serde_json::Value;
use whittle_audio::mel::{
    log_mel_spectrogram, log_mel_spectrogram_with_padding, mel_filters, N_FFT, N_FRAMES_30S,
    SAMPLE_RATE,
};

/// Log-mel tolerance on whisper's (x + 4) / 4 scale: f32 STFT against numpy's float64, plus the
/// fixture's 6-decimal rounding.
const MEL_ABS_TOL: f32 = 1e-4;
/// Filterbank tolerance: both sides round the same float64 weights to f32 (weights <= 0.042).
const FILTER_ABS_TOL: f32 = 1e-9;

const FIXTURE: &str = include_str!("fixtures/mel_reference.json");
const SIGNAL_SAMPLES: usize = 24_000;
const SILENT_FROM: usize = 20_000;

/// The script's `test_signal()`: two sines, a chirp and LCG noise, silent after 1.25 s.
fn test_signal() -> Vec<f32> {
    use std::f64::consts::PI;
    let mut state: u32 = 12345;
    let chirp_rate = 5000.0 / 1.5;
    (0..SIGNAL_SAMPLES)
        .map(|n| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = f64::from(state >> 8) / 16_777_216.0 * 2.0 - 1.0;
            if n >= SILENT_FROM {
                return 0.0;
            }
            let t = n as f64 / f64::from(SAMPLE_RATE);
            let x = 0.4 * (2.0 * PI * 440.0 * t).sin()
                + 0.2 * (2.0 * PI * 3150.0 * t + 0.7).sin()
                + 0.15 * (2.0 * PI * (150.0 * t + 0.5 * chirp_rate * t * t)).sin()
                + 0.05 * noise;
            x as f32
        })
        .collect()
}

fn fixture() -> Value {
    serde_json::from_str(FIXTURE).expect("fixture is valid JSON")
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_f64().expect("number") as f32)
        .collect()
}

fn indices(value: &Value) -> Vec<usize> {
    value
        .as_array()
        .expect("array")
        .iter()
        .map(|v| v.as_u64().expect("index") as usize)
        .collect()
}

fn assert_close(actual: &[f32], expected: &[f32], tol: f32, what: &str) {
    assert_eq!(actual.len(), expected.len(), "{what}: length");
    let (worst, max_err) = actual
        .iter()
        .zip(expected)
        .map(|(a, e)| (a - e).abs())
        .enumerate()
        .fold(
            (0, 0.0f32),
            |best, (i, err)| if err > best.1 { (i, err) } else { best },
        );
    assert!(
        max_err <= tol,
        "{what}: max_err {max_err} at {worst} exceeds {tol} ({} vs {})",
        actual[worst],
        expected[worst]
    );
    eprintln!("{what}: max_err {max_err:.3e} (tol {tol:.0e})");
}

/// Columns `frames` of a `[n_mels][n_frames]` matrix, row-major.
fn select_frames(data: &[f32], n_frames: usize, frames: &[usize]) -> Vec<f32> {
    data.chunks_exact(n_frames)
        .flat_map(|row| frames.iter().map(move |&f| row[f]))
        .collect()
}

#[test]
fn signal_is_rebuilt_exactly() {
    let fixture = fixture();
    let signal = test_signal();
    assert_eq!(
        fixture["signal_samples"].as_u64(),
        Some(SIGNAL_SAMPLES as u64)
    );
    assert_eq!(signal[..8], floats(&fixture["signal_first"])[..]);
    let energy: f64 = signal.iter().map(|&x| f64::from(x) * f64::from(x)).sum();
    let expected = fixture["signal_checksum"].as_f64().unwrap();
    assert!(
        (energy - expected).abs() < 1e-9 * expected,
        "{energy} vs {expected}"
    );
}

#[test]
fn filterbanks_match_numpy_librosa_formula() {
    let fixture = fixture();
    for n_mels in [80usize, 128] {
        let reference = &fixture["filters"][n_mels.to_string()];
        let n_bins = reference["n_bins"].as_u64().unwrap() as usize;
        assert_eq!(n_bins, N_FFT / 2 + 1);
        let mut expected = vec![0.0f32; n_mels * n_bins];
        for entry in reference["nonzero"].as_array().unwrap() {
            let (mel, bin) = (
                entry[0].as_u64().unwrap() as usize,
                entry[1].as_u64().unwrap() as usize,
            );
            expected[mel * n_bins + bin] = entry[2].as_f64().unwrap() as f32;
        }
        let actual = mel_filters(n_mels, N_FFT, SAMPLE_RATE);
        assert_close(
            &actual,
            &expected,
            FILTER_ABS_TOL,
            &format!("mel_filters({n_mels})"),
        );
        let nonzero = actual.iter().filter(|&&w| w != 0.0).count();
        assert_eq!(
            nonzero,
            reference["nonzero"].as_array().unwrap().len(),
            "{n_mels} mels: support"
        );
    }
}

#[test]
fn unpadded_log_mel_matches_reference() {
    let fixture = fixture();
    let signal = test_signal();

    let reference = &fixture["unpadded_80"];
    let mel = log_mel_spectrogram_with_padding(&signal, 80, 0);
    assert_eq!(mel.n_frames as u64, reference["n_frames"].as_u64().unwrap());
    assert_close(
        &mel.data,
        &floats(&reference["values"]),
        MEL_ABS_TOL,
        "80 mels, unpadded",
    );

    let reference = &fixture["unpadded_128"];
    let mel = log_mel_spectrogram_with_padding(&signal, 128, 0);
    assert_eq!(mel.n_frames as u64, reference["n_frames"].as_u64().unwrap());
    let frames = indices(&reference["frames"]);
    assert_close(
        &select_frames(&mel.data, mel.n_frames, &frames),
        &floats(&reference["values"]),
        MEL_ABS_TOL,
        "128 mels, unpadded",
    );
}

#[test]
fn padded_log_mel_matches_reference_at_the_speech_to_padding_boundary() {
    let fixture = fixture();
    let reference = &fixture["padded_80"];
    let mel = log_mel_spectrogram(&test_signal(), 80);
    assert_eq!(mel.n_frames as u64, reference["n_frames"].as_u64().unwrap());
    assert_eq!(mel.n_frames, SIGNAL_SAMPLES / 160 + N_FRAMES_30S);
    let frames = indices(&reference["frames"]);
    assert_close(
        &select_frames(&mel.data, mel.n_frames, &frames),
        &floats(&reference["values"]),
        MEL_ABS_TOL,
        "80 mels, 30 s padding",
    );
}
