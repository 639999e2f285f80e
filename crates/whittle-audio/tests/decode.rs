//! Decoding: WAV sample formats, downmix, resampled input, raw PCM, FLAC, and every error path.

mod common;

use std::path::Path;

use common::{flac_bytes, max_abs_diff, sine, wav_bytes, write_file, WavEncoding, FLAC_BLOCK};
use proptest::prelude::*;
use whittle_audio::{
    decode_bytes, decode_file, decode_file_limited, load_audio, load_audio_bytes,
    load_audio_limited, AudioError,
};

/// Tolerance against an analytic sine after resampling, outside the first and last 20 ms where
/// the clip's hard start and end ring through the anti-aliasing filter.
const RESAMPLED_SINE_TOL: f32 = 1e-4;

fn temp_dir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create temp dir")
}

#[test]
fn wav_round_trips_in_every_sample_format() {
    let dir = temp_dir();
    let signal = sine(1600, 440.0, 16_000, 0.8, 0.3);
    for encoding in [
        WavEncoding::U8,
        WavEncoding::I16,
        WavEncoding::I24,
        WavEncoding::I32,
        WavEncoding::F32,
        WavEncoding::F64,
    ] {
        let path = write_file(
            dir.path(),
            &format!("{encoding:?}.wav"),
            &wav_bytes(&signal, 1, 16_000, encoding),
        );
        let decoded = decode_file(&path).unwrap();
        assert_eq!(
            (decoded.channels, decoded.sample_rate),
            (1, 16_000),
            "{encoding:?}"
        );
        let loaded = load_audio(&path).unwrap();
        let err = max_abs_diff(&loaded, &signal);
        let tol = encoding.round_trip_tolerance();
        assert!(err <= tol, "{encoding:?}: max_err {err} exceeds {tol}");
    }
}

#[test]
fn stereo_is_averaged_to_mono() {
    let dir = temp_dir();
    let left = sine(800, 300.0, 16_000, 0.5, 0.0);
    let right = sine(800, 1234.0, 16_000, 0.4, 1.0);
    let interleaved: Vec<f32> = left
        .iter()
        .zip(&right)
        .flat_map(|(&l, &r)| [l, r])
        .collect();
    let path = write_file(
        dir.path(),
        "stereo.wav",
        &wav_bytes(&interleaved, 2, 16_000, WavEncoding::F32),
    );

    let decoded = decode_file(&path).unwrap();
    assert_eq!(decoded.channels, 2);
    assert_eq!(decoded.frames(), 800);
    assert_eq!(decoded.samples, interleaved);

    let expected: Vec<f32> = left
        .iter()
        .zip(&right)
        .map(|(l, r)| (l + r) * 0.5)
        .collect();
    let mono = load_audio(&path).unwrap();
    let err = max_abs_diff(&mono, &expected);
    assert!(err <= 1e-7, "max_err {err}");
}

#[test]
fn input_at_44_1_khz_is_resampled_to_16_khz() {
    let dir = temp_dir();
    let signal = sine(44_100, 440.0, 44_100, 0.6, 0.2);
    let path = write_file(
        dir.path(),
        "cd.wav",
        &wav_bytes(&signal, 1, 44_100, WavEncoding::I16),
    );
    let loaded = load_audio(&path).unwrap();
    assert_eq!(loaded.len(), 16_000);
    let expected = sine(16_000, 440.0, 16_000, 0.6, 0.2);
    let edge = 320;
    let err = max_abs_diff(&loaded[edge..16_000 - edge], &expected[edge..16_000 - edge]);
    assert!(
        err <= RESAMPLED_SINE_TOL,
        "max_err {err} exceeds {RESAMPLED_SINE_TOL}"
    );
}

#[test]
fn headerless_raw_is_16_khz_s16le() {
    let dir = temp_dir();
    let values: [i16; 6] = [0, 1, -1, i16::MAX, i16::MIN, 12345];
    let bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let expected: Vec<f32> = values.iter().map(|&v| f32::from(v) / 32768.0).collect();
    for name in ["clip.raw", "clip.PCM"] {
        let path = write_file(dir.path(), name, &bytes);
        let decoded = decode_file(&path).unwrap();
        assert_eq!((decoded.channels, decoded.sample_rate), (1, 16_000));
        assert_eq!(load_audio(&path).unwrap(), expected, "{name}");
    }
    // A cut-off final byte is dropped rather than failing the whole file.
    let mut odd = bytes.clone();
    odd.push(0x7f);
    let path = write_file(dir.path(), "odd.raw", &odd);
    assert_eq!(load_audio(&path).unwrap(), expected);
}

#[test]
fn flac_decodes_losslessly() {
    let dir = temp_dir();
    let frames = 3 * FLAC_BLOCK;
    let left = sine(frames, 500.0, 16_000, 0.7, 0.0);
    let right = sine(frames, 2100.0, 16_000, 0.3, 0.5);
    let interleaved: Vec<i32> = left
        .iter()
        .zip(&right)
        .flat_map(|(&l, &r)| [(l * 32767.0).round() as i32, (r * 32767.0).round() as i32])
        .collect();
    let path = write_file(
        dir.path(),
        "speech.flac",
        &flac_bytes(&interleaved, 2, 16, 16_000),
    );

    let decoded = decode_file(&path).unwrap();
    assert_eq!((decoded.channels, decoded.sample_rate), (2, 16_000));
    let expected: Vec<f32> = interleaved.iter().map(|&v| v as f32 / 32768.0).collect();
    assert_eq!(decoded.samples, expected);
    assert_eq!(load_audio(&path).unwrap().len(), frames);
}

/// The duration cap: a clip under it decodes as without a cap; a clip over it, WAV or raw, is
/// refused with `TooLong` naming the file.
#[test]
fn duration_cap_refuses_longer_clips() {
    let dir = temp_dir();
    let wav = write_file(
        dir.path(),
        "two_seconds.wav",
        &wav_bytes(
            &sine(16_000, 440.0, 8_000, 0.5, 0.0),
            1,
            8_000,
            WavEncoding::I16,
        ),
    );
    let raw_bytes: Vec<u8> = (0..32_000i16).flat_map(|v| v.to_le_bytes()).collect();
    let raw = write_file(dir.path(), "two_seconds.raw", &raw_bytes);
    for path in [&wav, &raw] {
        assert_eq!(
            load_audio_limited(path, 2.5).unwrap(),
            load_audio(path).unwrap()
        );
        let err = load_audio_limited(path, 1.5).unwrap_err();
        assert!(matches!(err, AudioError::TooLong { .. }), "{err:?}");
        assert_names_path(&err, path);
    }
    let empty = write_file(dir.path(), "empty.flac", &[]);
    let err = load_audio_limited(&empty, 10.0).unwrap_err();
    assert!(matches!(err, AudioError::Empty { .. }), "{err:?}");
}

/// A compressed "audio bomb": two minutes of silence in a FLAC file of a few kilobytes. With a
/// 1 s cap it is refused (decoding stops at the first packet past the cap).
#[test]
fn duration_cap_stops_a_compressed_bomb_early() {
    let dir = temp_dir();
    let frames = 4 * 60 * 8_000 / FLAC_BLOCK * FLAC_BLOCK;
    let bytes = flac_bytes(&vec![0i32; frames], 1, 16, 8_000);
    assert!(bytes.len() * 100 < frames * 2, "{} bytes", bytes.len());
    let path = write_file(dir.path(), "bomb.flac", &bytes);
    assert_eq!(decode_file(&path).unwrap().frames(), frames);
    let err = decode_file_limited(&path, 1.0).unwrap_err();
    assert!(
        matches!(err, AudioError::TooLong { max_seconds, .. } if max_seconds == 1.0),
        "{err:?}"
    );
}

#[test]
fn truncated_data_chunk_keeps_the_valid_prefix() {
    let dir = temp_dir();
    let signal = sine(4000, 440.0, 16_000, 0.5, 0.0);
    let wav = wav_bytes(&signal, 1, 16_000, WavEncoding::I16);
    // Header (44 bytes) plus 1000.5 samples: the declared data length now overruns the file.
    let path = write_file(dir.path(), "cut.wav", &wav[..44 + 2001]);
    let loaded = load_audio(&path).unwrap();
    assert!(
        (900..=1000).contains(&loaded.len()),
        "expected the ~1000 whole samples before the cut, got {}",
        loaded.len()
    );
    let err = max_abs_diff(&loaded, &signal[..loaded.len()]);
    assert!(
        err <= WavEncoding::I16.round_trip_tolerance(),
        "max_err {err}"
    );
}

fn assert_names_path(err: &AudioError, path: &Path) {
    let message = err.to_string();
    assert!(
        message.contains(&path.display().to_string()),
        "error does not name the file: {message}"
    );
}

#[test]
fn missing_file_is_an_io_error() {
    let path = Path::new("/nonexistent/whittle/missing.wav");
    let err = load_audio(path).unwrap_err();
    assert!(matches!(err, AudioError::Io { .. }), "{err:?}");
    assert_names_path(&err, path);
}

#[test]
fn empty_file_is_reported_empty() {
    let dir = temp_dir();
    for name in ["empty.wav", "empty.raw", "empty"] {
        let path = write_file(dir.path(), name, &[]);
        let err = load_audio(&path).unwrap_err();
        assert!(matches!(err, AudioError::Empty { .. }), "{name}: {err:?}");
        assert_names_path(&err, &path);
    }
}

#[test]
fn random_bytes_named_wav_are_unsupported() {
    let dir = temp_dir();
    // Deterministic junk that does not start with any container's magic.
    let junk: Vec<u8> = (0u32..4096)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = write_file(dir.path(), "junk.wav", &junk);
    let err = load_audio(&path).unwrap_err();
    assert!(
        matches!(err, AudioError::UnsupportedFormat { .. }),
        "{err:?}"
    );
    assert_names_path(&err, &path);
}

#[test]
fn truncated_wav_header_is_corrupt() {
    let dir = temp_dir();
    let wav = wav_bytes(
        &sine(100, 440.0, 16_000, 0.5, 0.0),
        1,
        16_000,
        WavEncoding::I16,
    );
    for cut in [12, 20, 30, 40] {
        let path = write_file(dir.path(), &format!("header{cut}.wav"), &wav[..cut]);
        let err = load_audio(&path).unwrap_err();
        assert!(
            matches!(
                err,
                AudioError::Corrupt { .. } | AudioError::UnsupportedFormat { .. }
            ),
            "cut at {cut}: {err:?}"
        );
        assert_names_path(&err, &path);
    }
}

#[test]
fn header_only_wav_is_empty() {
    let dir = temp_dir();
    let path = write_file(
        dir.path(),
        "silent.wav",
        &wav_bytes(&[], 1, 16_000, WavEncoding::I16),
    );
    let err = load_audio(&path).unwrap_err();
    assert!(matches!(err, AudioError::Empty { .. }), "{err:?}");
}

#[test]
fn absurd_sample_rates_are_rejected() {
    let dir = temp_dir();
    let signal = sine(100, 440.0, 16_000, 0.5, 0.0);
    for rate in [0, 384_001, u32::MAX / 8] {
        let path = write_file(
            dir.path(),
            &format!("rate{rate}.wav"),
            &wav_bytes(&signal, 1, rate, WavEncoding::I16),
        );
        let err = load_audio(&path).unwrap_err();
        match &err {
            AudioError::BadSampleRate { sample_rate, .. } => assert_eq!(*sample_rate, rate),
            other => panic!("rate {rate}: expected BadSampleRate, got {other:?}"),
        }
        assert_names_path(&err, &path);
    }
}

#[test]
fn float_wav_with_non_finite_or_loud_samples_is_sanitised() {
    let samples = [0.5, f32::NAN, f32::INFINITY, -3.0, f32::NEG_INFINITY, 1.5];
    let wav = wav_bytes(&samples, 1, 16_000, WavEncoding::F32);
    let loaded = load_audio_bytes(wav, Path::new("float.wav")).unwrap();
    assert_eq!(loaded, [0.5, 0.0, 1.0, -1.0, -1.0, 1.0]);
}

#[test]
fn clip_too_short_to_survive_resampling_is_empty() {
    let wav = wav_bytes(&[0.1], 1, 48_000, WavEncoding::I16);
    let err = load_audio_bytes(wav, Path::new("blip.wav")).unwrap_err();
    assert!(matches!(err, AudioError::Empty { .. }), "{err:?}");
}

#[test]
fn in_memory_bytes_decode_like_files() {
    let signal = sine(500, 700.0, 16_000, 0.5, 0.0);
    let wav = wav_bytes(&signal, 1, 16_000, WavEncoding::F32);
    let samples = load_audio_bytes(wav, Path::new("memory.wav")).unwrap();
    assert_eq!(samples, signal);
}

fn valid_wav() -> Vec<u8> {
    wav_bytes(
        &sine(2000, 440.0, 22_050, 0.5, 0.0),
        2,
        22_050,
        WavEncoding::I24,
    )
}

fn valid_flac() -> Vec<u8> {
    let samples: Vec<i32> = sine(2 * FLAC_BLOCK, 440.0, 16_000, 0.5, 0.0)
        .iter()
        .map(|&x| (x * 32767.0) as i32)
        .collect();
    flac_bytes(&samples, 1, 16, 16_000)
}

/// A decode attempt must end in samples or a typed error; a decoder panic caught by the
/// safety net counts as a failure too, since it means a decoder bug this input reaches.
fn assert_decodes_or_errors(bytes: Vec<u8>, name: &str) -> Result<(), TestCaseError> {
    match load_audio_bytes(bytes, Path::new(name)) {
        Ok(samples) => prop_assert!(samples.iter().all(|x| x.is_finite() && x.abs() <= 1.0)),
        Err(AudioError::DecoderPanicked { message, .. }) => {
            prop_assert!(false, "decoder panicked on {}: {}", name, message)
        }
        Err(_) => {}
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        name in prop::sample::select(vec!["x.wav", "x.flac", "x.mp3", "x.ogg", "x.raw", "x"]),
    ) {
        assert_decodes_or_errors(bytes, name)?;
    }

    #[test]
    fn damaged_wav_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        keep in any::<prop::sample::Index>(),
    ) {
        let mut bytes = valid_wav();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        bytes.truncate(keep.index(bytes.len() + 1).max(1));
        assert_decodes_or_errors(bytes, "damaged.wav")?;
    }

    #[test]
    fn damaged_flac_never_panics(
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        keep in any::<prop::sample::Index>(),
    ) {
        let mut bytes = valid_flac();
        for (at, value) in edits {
            let i = at.index(bytes.len());
            bytes[i] = value;
        }
        bytes.truncate(keep.index(bytes.len() + 1).max(1));
        assert_decodes_or_errors(bytes, "damaged.flac")?;
    }
}

#[test]
fn decode_bytes_reports_layout() {
    let wav = valid_wav();
    let decoded = decode_bytes(wav, Path::new("layout.wav")).unwrap();
    assert_eq!(
        (decoded.channels, decoded.sample_rate, decoded.frames()),
        (2, 22_050, 1000)
    );
}

/// Found by `fuzz/` (audio target): a WAV `fmt ` chunk of 49,531 channels of 16-bit PCM makes
/// symphonia-format-riff 0.6.1 compute the block align `channels * 2` in u16 (chunks.rs:100),
/// which panics with overflow checks on (debug builds) and wraps in release. Either way the
/// file is an error naming it, never a panic out of `load_audio`.
#[test]
fn wav_with_a_channel_count_that_overflows_the_block_align_is_an_error() {
    let mut wav = wav_bytes(&[0.0; 64], 1, 16_000, WavEncoding::I16);
    wav[22..24].copy_from_slice(&49_531u16.to_le_bytes());
    let path = Path::new("many-channels.wav");
    let err = load_audio_bytes(wav, path).unwrap_err();
    assert_names_path(&err, path);
}
