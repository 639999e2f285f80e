//! The audio duration cap (issue 17's "audio bombs"): refused from the header where it states
//! the length, by a counting pass where it states none, and by decoding where it understates
//! it. Its own test binary, as one test sets the process-wide cap: the others pass their cap.

mod common;

use common::{flac_bytes, wav_bytes, write_file, WavEncoding, FLAC_BLOCK};
use whittle_audio::{
    decode_bytes, decode_file_limited, load_audio, max_audio_seconds, set_max_audio_seconds,
    AudioError, Measured, DEFAULT_MAX_AUDIO_SECONDS,
};

/// Sets STREAMINFO's 36-bit total sample count (0 = unknown), bytes 18..26 after `fLaC` and
/// the block header: sample rate (20 bits), channels (3), bits (5), total samples (36).
fn set_flac_total_samples(bytes: &mut [u8], total: u64) {
    assert_eq!(&bytes[..4], b"fLaC");
    let mut word = u64::from_be_bytes(bytes[18..26].try_into().unwrap());
    word = (word & !((1u64 << 36) - 1)) | total;
    bytes[18..26].copy_from_slice(&word.to_be_bytes());
}

fn silence_flac(blocks: usize) -> Vec<u8> {
    flac_bytes(&vec![0i32; blocks * FLAC_BLOCK], 1, 16, 8_000)
}

fn too_long(err: AudioError) -> (f64, f64, Measured) {
    match err {
        AudioError::TooLong {
            seconds,
            max_seconds,
            measured,
            ..
        } => (seconds, max_seconds, measured),
        other => panic!("expected TooLong, got {other:?}"),
    }
}

#[test]
fn a_header_that_claims_20_hours_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let mut flac = silence_flac(1);
    set_flac_total_samples(&mut flac, 20 * 3600 * 8_000);
    let path = write_file(dir.path(), "claims-20h.flac", &flac);
    let err = decode_file_limited(&path, DEFAULT_MAX_AUDIO_SECONDS).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("claims-20h.flac") && msg.contains("72000.0 s"),
        "{msg}"
    );
    assert!(msg.contains("14400 s limit"), "{msg}");
    assert_eq!(
        too_long(err),
        (72_000.0, DEFAULT_MAX_AUDIO_SECONDS, Measured::Header)
    );

    // A WAV whose RIFF and data chunks claim 2^31 bytes: 37 h of 16-bit mono at 8 kHz.
    let mut wav = wav_bytes(&[0.0; 800], 1, 8_000, WavEncoding::I16);
    let data_len = wav.len() - 1600 - 4;
    wav[data_len..data_len + 4].copy_from_slice(&(1u32 << 31).to_le_bytes());
    wav[4..8].copy_from_slice(&(36 + (1u32 << 31)).to_le_bytes());
    let path = write_file(dir.path(), "claims-37h.wav", &wav);
    let (seconds, _, measured) =
        too_long(decode_file_limited(&path, DEFAULT_MAX_AUDIO_SECONDS).unwrap_err());
    assert_eq!(measured, Measured::Header);
    assert!(
        (seconds - (1u64 << 30) as f64 / 8_000.0).abs() < 1.0,
        "{seconds}"
    );
}

#[test]
fn a_stream_without_a_stated_length_is_counted_first() {
    let dir = tempfile::tempdir().unwrap();
    // 8 blocks of 4096 frames at 8 kHz: 4.1 s, length unknown to the header.
    let mut flac = silence_flac(8);
    set_flac_total_samples(&mut flac, 0);
    let path = write_file(dir.path(), "unknown-length.flac", &flac);
    let decoded = decode_file_limited(&path, DEFAULT_MAX_AUDIO_SECONDS).unwrap();
    assert_eq!(decoded.frames(), 8 * FLAC_BLOCK);
    let (seconds, max_seconds, measured) = too_long(decode_file_limited(&path, 1.0).unwrap_err());
    assert_eq!((max_seconds, measured), (1.0, Measured::Decoding));
    // Decoding stopped at the first block past the cap, not at the end.
    assert_eq!(seconds, 2.0 * FLAC_BLOCK as f64 / 8_000.0);
}

#[test]
fn a_header_that_understates_the_length_is_caught_while_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let mut flac = silence_flac(8);
    set_flac_total_samples(&mut flac, FLAC_BLOCK as u64 / 2);
    let path = write_file(dir.path(), "understated.flac", &flac);
    let (_, _, measured) = too_long(decode_file_limited(&path, 1.0).unwrap_err());
    assert_eq!(measured, Measured::Decoding);
}

#[test]
fn the_process_wide_cap_applies_to_every_reader() {
    assert_eq!(max_audio_seconds(), DEFAULT_MAX_AUDIO_SECONDS);
    let dir = tempfile::tempdir().unwrap();
    let flac = silence_flac(2);
    let path = write_file(dir.path(), "two-blocks.flac", &flac);
    let raw: Vec<u8> = vec![0; 2 * 16_000 * 2];
    let raw_path = write_file(dir.path(), "two-seconds.raw", &raw);
    assert!(load_audio(&path).is_ok() && load_audio(&raw_path).is_ok());
    set_max_audio_seconds(0.5);
    assert!(matches!(load_audio(&path), Err(AudioError::TooLong { .. })));
    assert!(matches!(
        decode_bytes(flac, &path),
        Err(AudioError::TooLong { .. })
    ));
    assert!(matches!(
        load_audio(&raw_path),
        Err(AudioError::TooLong { .. })
    ));
    // Nonsense values leave the cap as it was.
    set_max_audio_seconds(f64::NAN);
    set_max_audio_seconds(-1.0);
    assert_eq!(max_audio_seconds(), 0.5);
}
