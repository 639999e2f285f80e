//! Resampling keeps frequency, amplitude and timing, and gives round(len * to / from) samples.

mod common;

use common::{max_abs_diff, sine};
use whittle_audio::resample::resampled_len;
use whittle_audio::{resample_mono, AudioError};

/// Max deviation from the analytic 1 kHz sine (amplitude 0.5) after resampling, measured away
/// from the clip's ends. An uncompensated delay of one output sample would give ~0.2.
const RESAMPLED_SINE_TOL: f32 = 1e-4;
/// Samples ignored at each end (20 ms at 16 kHz): the hard start and stop ring through the
/// anti-aliasing filter like any band-limited resampler's would.
const EDGE_SAMPLES: usize = 320;

const RATES: [u32; 8] = [
    8_000, 11_025, 22_050, 32_000, 44_100, 48_000, 96_000, 16_000,
];

#[test]
fn sine_keeps_frequency_amplitude_and_phase_when_resampled_to_16k() {
    for from_hz in RATES {
        let input = sine(from_hz as usize, 1000.0, from_hz, 0.5, 0.4);
        let output = resample_mono(&input, from_hz, 16_000).unwrap();
        assert_eq!(output.len(), 16_000, "from {from_hz} Hz");
        let expected = sine(16_000, 1000.0, 16_000, 0.5, 0.4);
        let interior = EDGE_SAMPLES..16_000 - EDGE_SAMPLES;
        let err = max_abs_diff(&output[interior.clone()], &expected[interior.clone()]);
        assert!(
            err <= RESAMPLED_SINE_TOL,
            "from {from_hz} Hz: max_err {err} exceeds {RESAMPLED_SINE_TOL}"
        );
        let rms = (output[interior.clone()].iter().map(|x| x * x).sum::<f32>()
            / interior.len() as f32)
            .sqrt();
        let amplitude = rms * std::f32::consts::SQRT_2;
        assert!(
            (amplitude - 0.5).abs() < 1e-3,
            "from {from_hz} Hz: amplitude {amplitude}"
        );
    }
}

#[test]
fn upsampling_from_16k_matches_the_analytic_sine() {
    for to_hz in [22_050, 44_100, 48_000] {
        let input = sine(16_000, 1000.0, 16_000, 0.5, 0.0);
        let output = resample_mono(&input, 16_000, to_hz).unwrap();
        assert_eq!(output.len(), to_hz as usize);
        let expected = sine(to_hz as usize, 1000.0, to_hz, 0.5, 0.0);
        let edge = EDGE_SAMPLES * to_hz as usize / 16_000;
        let interior = edge..to_hz as usize - edge;
        let err = max_abs_diff(&output[interior.clone()], &expected[interior]);
        assert!(err <= RESAMPLED_SINE_TOL, "to {to_hz} Hz: max_err {err}");
    }
}

#[test]
fn tones_above_the_new_nyquist_are_removed() {
    // 9 kHz is above the 8 kHz Nyquist of the output; without the filter it folds to 7 kHz.
    let input = sine(44_100, 9000.0, 44_100, 0.5, 0.0);
    let output = resample_mono(&input, 44_100, 16_000).unwrap();
    let interior = &output[EDGE_SAMPLES..16_000 - EDGE_SAMPLES];
    let peak = interior.iter().fold(0.0f32, |m, x| m.max(x.abs()));
    assert!(peak < 1e-3, "aliased residue {peak}");
}

#[test]
fn output_length_is_rounded_ratio_for_awkward_lengths() {
    for from_hz in RATES {
        for len in [1, 2, 3, 17, 160, 441, 1023, 1024, 1025, 44_101] {
            let input = vec![0.25f32; len];
            let output = resample_mono(&input, from_hz, 16_000).unwrap();
            let expected = (len as f64 * 16_000.0 / f64::from(from_hz)).round() as usize;
            assert_eq!(output.len(), expected, "len {len} from {from_hz} Hz");
            assert_eq!(resampled_len(len, from_hz, 16_000), expected);
            assert!(output.iter().all(|x| x.is_finite()));
        }
    }
}

#[test]
fn equal_rates_and_empty_input_pass_through() {
    let input = sine(100, 440.0, 16_000, 0.5, 0.0);
    assert_eq!(resample_mono(&input, 16_000, 16_000).unwrap(), input);
    assert!(resample_mono(&[], 44_100, 16_000).unwrap().is_empty());
}

#[test]
fn invalid_rates_are_errors() {
    for (from_hz, to_hz) in [(0, 16_000), (16_000, 0), (1_000_000, 16_000)] {
        let err = resample_mono(&[0.0; 10], from_hz, to_hz).unwrap_err();
        assert!(matches!(err, AudioError::Resample { .. }), "{err:?}");
        assert!(err.to_string().contains("in-memory samples"), "{err}");
    }
}
