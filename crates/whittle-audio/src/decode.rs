//! Decoding audio files to f32 samples, and the 16 kHz mono signal the speech models read.
//!
//! Containers and codecs go through [symphonia] (0.6): WAV (PCM 8/16/24/32-bit integer, 32/64-bit
//! float, A-law, mu-law, ADPCM), FLAC, MP3 and OGG/Vorbis, plus whatever else its `all` feature
//! enables (AIFF, CAF, MP4/AAC, MKV). Files named `*.raw` or `*.pcm` are headerless 16 kHz
//! signed 16-bit little-endian mono, the layout of LibriSpeech-era and pocketsphinx test data.
//!
//! [`load_audio`] follows openai-whisper's `load_audio`, which asks ffmpeg for mono s16le at
//! 16 kHz: channels are averaged, the signal is resampled with [`crate::resample`] and clamped
//! to [-1, 1] (the clamp that the int16 conversion applies there), without the 16-bit rounding.
//! NaN samples of float files become 0.
//!
//! [`load_audio_limited`] and [`decode_file_limited`] stop decoding as soon as the decoded audio
//! exceeds a duration cap and report [`AudioError::TooLong`]: a small compressed file that
//! expands to hours of audio (an "audio bomb") is never decoded in full, and the file is read as a
//! stream rather than into memory first.
//!
//! Bad input never panics: unreadable, unknown or corrupt files give an [`AudioError`] naming the
//! file. A stream that breaks after some packets decoded keeps what decoded (with a `tracing`
//! warning), and a panic inside a third-party decoder is caught and reported as
//! [`AudioError::DecoderPanicked`].

use std::fs::File;
use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;

use symphonia::core::codecs::audio::AudioDecoderOptions;
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, TrackType};
use symphonia::core::io::{MediaSource, MediaSourceStream};
use symphonia::core::meta::MetadataOptions;

use crate::error::AudioError;
use crate::resample::resample_mono;

/// The sample rate every model in whittle reads.
pub const TARGET_SAMPLE_RATE: u32 = 16_000;

/// The highest sample rate accepted; anything above is taken for a corrupt header.
pub const MAX_SAMPLE_RATE: u32 = 384_000;

/// Sample rate assumed for headerless `.raw` / `.pcm` files.
pub const RAW_PCM_SAMPLE_RATE: u32 = 16_000;

/// Decoded audio as stored in the file: interleaved samples at the file's own rate.
///
/// # Shapes
/// `samples` has `frames() * channels` values, frame-major (`[frame][channel]`).
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedAudio {
    /// Channels per frame (at least 1).
    pub channels: usize,
    /// Frames per second, in Hz.
    pub sample_rate: u32,
    /// Interleaved samples, nominally in [-1, 1] (float sources may exceed it).
    pub samples: Vec<f32>,
}

impl DecodedAudio {
    /// Number of frames (samples per channel).
    pub fn frames(&self) -> usize {
        self.samples.len() / self.channels.max(1)
    }

    /// Duration in seconds.
    pub fn duration_secs(&self) -> f64 {
        self.frames() as f64 / f64::from(self.sample_rate.max(1))
    }

    /// Averages the channels of each frame into one mono sample.
    pub fn to_mono(&self) -> Vec<f32> {
        if self.channels <= 1 {
            return self.samples.clone();
        }
        let scale = 1.0 / self.channels as f32;
        self.samples
            .chunks_exact(self.channels)
            .map(|frame| frame.iter().sum::<f32>() * scale)
            .collect()
    }
}

/// Loads a file as mono f32 samples at 16 kHz, clamped to [-1, 1].
pub fn load_audio(path: &Path) -> Result<Vec<f32>, AudioError> {
    let decoded = decode_file(path)?;
    to_model_input(&decoded, path)
}

/// Like [`load_audio`], refusing audio longer than `max_seconds` (at the file's own rate) with
/// [`AudioError::TooLong`] as soon as decoding passes the cap.
pub fn load_audio_limited(path: &Path, max_seconds: f64) -> Result<Vec<f32>, AudioError> {
    let decoded = decode_file_limited(path, max_seconds)?;
    to_model_input(&decoded, path)
}

/// Like [`load_audio`] for a file already in memory; `origin` names it in errors and its
/// extension selects raw PCM and hints the container.
pub fn load_audio_bytes(bytes: Vec<u8>, origin: &Path) -> Result<Vec<f32>, AudioError> {
    let decoded = decode_bytes(bytes, origin)?;
    to_model_input(&decoded, origin)
}

/// Decodes a file to interleaved samples at its own sample rate and channel count.
pub fn decode_file(path: &Path) -> Result<DecodedAudio, AudioError> {
    let bytes = std::fs::read(path).map_err(|source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    decode_bytes(bytes, path)
}

/// Like [`decode_file`], streaming the file and stopping with [`AudioError::TooLong`] once more
/// than `max_seconds` of audio has decoded (raw PCM is measured by its size, before reading).
pub fn decode_file_limited(path: &Path, max_seconds: f64) -> Result<DecodedAudio, AudioError> {
    let io_error = |source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    };
    let file = File::open(path).map_err(io_error)?;
    let bytes = file.metadata().map_err(io_error)?.len();
    if bytes == 0 {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    if is_raw_pcm(path) {
        let seconds = (bytes / 2) as f64 / f64::from(RAW_PCM_SAMPLE_RATE);
        check_duration(seconds, max_seconds, path)?;
        return decode_file(path);
    }
    decode_source(Box::new(file), path, Some(max_seconds))
}

/// Decodes an in-memory file. `origin` names it in errors; its extension selects raw PCM
/// (`raw`, `pcm`) and otherwise only hints the container, which is detected from the bytes.
pub fn decode_bytes(bytes: Vec<u8>, origin: &Path) -> Result<DecodedAudio, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty {
            path: origin.to_path_buf(),
        });
    }
    if is_raw_pcm(origin) {
        let decoded = decode_raw_s16le(&bytes, origin)?;
        if decoded.samples.is_empty() {
            return Err(AudioError::Empty {
                path: origin.to_path_buf(),
            });
        }
        return Ok(decoded);
    }
    decode_source(Box::new(Cursor::new(bytes)), origin, None)
}

/// Decodes a container with symphonia, catching a decoder panic, and refuses an empty result.
fn decode_source(
    source: Box<dyn MediaSource>,
    origin: &Path,
    max_seconds: Option<f64>,
) -> Result<DecodedAudio, AudioError> {
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        decode_with_symphonia(source, origin, max_seconds)
    }))
    .map_err(|payload| AudioError::DecoderPanicked {
        path: origin.to_path_buf(),
        message: panic_message(payload.as_ref()),
    })??;
    if decoded.samples.is_empty() {
        return Err(AudioError::Empty {
            path: origin.to_path_buf(),
        });
    }
    Ok(decoded)
}

/// Downmix, resample to 16 kHz and clamp.
fn to_model_input(decoded: &DecodedAudio, origin: &Path) -> Result<Vec<f32>, AudioError> {
    let mut mono = decoded.to_mono();
    // Float files can hold NaN or infinities; one would smear over a whole resampler chunk.
    for sample in &mut mono {
        *sample = if sample.is_nan() {
            0.0
        } else {
            sample.clamp(-1.0, 1.0)
        };
    }
    let mut samples = resample_mono(&mono, decoded.sample_rate, TARGET_SAMPLE_RATE)
        .map_err(|err| err.in_file(origin))?;
    if samples.is_empty() {
        // E.g. a single frame at 48 kHz rounds to zero samples at 16 kHz.
        return Err(AudioError::Empty {
            path: origin.to_path_buf(),
        });
    }
    // The band-limited resampler can overshoot full scale slightly near clipped input.
    for sample in &mut samples {
        *sample = sample.clamp(-1.0, 1.0);
    }
    Ok(samples)
}

fn is_raw_pcm(path: &Path) -> bool {
    path.extension()
        .and_then(|ext| ext.to_str())
        .is_some_and(|ext| ext.eq_ignore_ascii_case("raw") || ext.eq_ignore_ascii_case("pcm"))
}

/// Headerless s16le mono at [`RAW_PCM_SAMPLE_RATE`]. A trailing odd byte is a cut-off sample
/// and is dropped.
fn decode_raw_s16le(bytes: &[u8], origin: &Path) -> Result<DecodedAudio, AudioError> {
    if bytes.len() % 2 == 1 {
        tracing::warn!(
            path = %origin.display(),
            "raw PCM file has an odd number of bytes; dropping the last byte"
        );
    }
    let samples = bytes
        .chunks_exact(2)
        .map(|pair| f32::from(i16::from_le_bytes([pair[0], pair[1]])) / 32768.0)
        .collect();
    Ok(DecodedAudio {
        channels: 1,
        sample_rate: RAW_PCM_SAMPLE_RATE,
        samples,
    })
}

/// [`AudioError::TooLong`] when `seconds` exceeds `max_seconds`.
fn check_duration(seconds: f64, max_seconds: f64, origin: &Path) -> Result<(), AudioError> {
    if seconds > max_seconds {
        return Err(AudioError::TooLong {
            path: origin.to_path_buf(),
            max_seconds,
        });
    }
    Ok(())
}

fn check_sample_rate(sample_rate: u32, origin: &Path) -> Result<(), AudioError> {
    if sample_rate == 0 || sample_rate > MAX_SAMPLE_RATE {
        return Err(AudioError::BadSampleRate {
            path: origin.to_path_buf(),
            sample_rate,
        });
    }
    Ok(())
}

/// Maps a symphonia error met before any audio decoded to the crate's error.
fn classify(err: SymphoniaError, origin: &Path) -> AudioError {
    let path = origin.to_path_buf();
    match err {
        SymphoniaError::Unsupported(what) => AudioError::UnsupportedFormat {
            path,
            reason: what.to_string(),
        },
        SymphoniaError::IoError(io) if io.kind() == std::io::ErrorKind::UnexpectedEof => {
            AudioError::Corrupt {
                path,
                reason: "stream ends early (truncated file)".to_string(),
            }
        }
        SymphoniaError::IoError(source) => AudioError::Io { path, source },
        other => AudioError::Corrupt {
            path,
            reason: other.to_string(),
        },
    }
}

fn decode_with_symphonia(
    source: Box<dyn MediaSource>,
    origin: &Path,
    max_seconds: Option<f64>,
) -> Result<DecodedAudio, AudioError> {
    let mut hint = Hint::new();
    if let Some(ext) = origin.extension().and_then(|ext| ext.to_str()) {
        hint.with_extension(ext);
    }
    let source = MediaSourceStream::new(source, Default::default());
    let mut format = symphonia::default::get_probe()
        .probe(
            &hint,
            source,
            FormatOptions::default(),
            MetadataOptions::default(),
        )
        .map_err(|err| classify(err, origin))?;

    let no_track = || AudioError::NoAudioTrack {
        path: origin.to_path_buf(),
    };
    let track = format
        .default_track(TrackType::Audio)
        .ok_or_else(no_track)?;
    let track_id = track.id;
    let params = track
        .codec_params
        .as_ref()
        .and_then(|params| params.audio())
        .ok_or_else(no_track)?
        .clone();
    if let Some(rate) = params.sample_rate {
        check_sample_rate(rate, origin)?;
    }
    if params.channels.as_ref().is_some_and(|ch| ch.count() == 0) {
        return Err(AudioError::BadChannels {
            path: origin.to_path_buf(),
            reason: "zero channels declared".to_string(),
        });
    }
    let mut decoder = symphonia::default::get_codecs()
        .make_audio_decoder(&params, &AudioDecoderOptions::default())
        .map_err(|err| classify(err, origin))?;

    let mut samples: Vec<f32> = Vec::new();
    // (rate, channels) of the first decoded buffer; every later buffer must match it.
    let mut layout: Option<(u32, usize)> = None;
    let mut skipped_packets = 0usize;
    let mut last_packet_error: Option<String> = None;
    loop {
        let packet = match format.next_packet() {
            Ok(Some(packet)) => packet,
            Ok(None) => break,
            // A chained OGG stream starts a new track list: the first stream is the utterance.
            Err(SymphoniaError::ResetRequired) => break,
            Err(err) if samples.is_empty() => return Err(classify(err, origin)),
            Err(err) => {
                tracing::warn!(
                    path = %origin.display(),
                    error = %err,
                    decoded_frames = samples.len() / layout.map_or(1, |(_, ch)| ch),
                    "audio stream breaks off; keeping what decoded before the error"
                );
                break;
            }
        };
        if packet.track_id != track_id {
            continue;
        }
        let buffer = match decoder.decode(&packet) {
            Ok(buffer) => buffer,
            // Recoverable: a damaged packet is skipped, as players do.
            Err(err @ (SymphoniaError::DecodeError(_) | SymphoniaError::IoError(_))) => {
                skipped_packets += 1;
                last_packet_error = Some(err.to_string());
                continue;
            }
            Err(SymphoniaError::ResetRequired) => break,
            Err(err) => return Err(classify(err, origin)),
        };
        let rate = buffer.spec().rate();
        let channels = buffer.spec().channels().count();
        match layout {
            None => {
                check_sample_rate(rate, origin)?;
                if channels == 0 {
                    return Err(AudioError::BadChannels {
                        path: origin.to_path_buf(),
                        reason: "decoder produced zero channels".to_string(),
                    });
                }
                layout = Some((rate, channels));
            }
            Some(first) if first != (rate, channels) => {
                return Err(AudioError::BadChannels {
                    path: origin.to_path_buf(),
                    reason: format!(
                        "layout changes mid-stream from {} ch at {} Hz to {channels} ch at {rate} Hz",
                        first.1, first.0
                    ),
                });
            }
            Some(_) => {}
        }
        let start = samples.len();
        let frames = (start + buffer.samples_interleaved()) / channels;
        if let Some(max_seconds) = max_seconds {
            check_duration(frames as f64 / f64::from(rate), max_seconds, origin)?;
        }
        samples.resize(start + buffer.samples_interleaved(), 0.0);
        buffer.copy_to_slice_interleaved(&mut samples[start..]);
    }

    let Some((sample_rate, channels)) = layout else {
        return Err(match last_packet_error {
            Some(reason) => AudioError::Corrupt {
                path: origin.to_path_buf(),
                reason: format!("no packet decoded ({skipped_packets} failed; last: {reason})"),
            },
            None => AudioError::Empty {
                path: origin.to_path_buf(),
            },
        });
    };
    if skipped_packets > 0 {
        tracing::warn!(
            path = %origin.display(),
            skipped_packets,
            last_error = last_packet_error.as_deref().unwrap_or(""),
            "skipped undecodable packets"
        );
    }
    Ok(DecodedAudio {
        channels,
        sample_rate,
        samples,
    })
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(text) = payload.downcast_ref::<&str>() {
        (*text).to_string()
    } else if let Some(text) = payload.downcast_ref::<String>() {
        text.clone()
    } else {
        "non-string panic payload".to_string()
    }
}
