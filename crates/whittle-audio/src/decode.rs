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
//! Every reader is capped in duration ([`max_audio_seconds`], default
//! [`DEFAULT_MAX_AUDIO_SECONDS`] = 4 h; [`load_audio_limited`] and [`decode_file_limited`] take
//! their own cap) and reports [`AudioError::TooLong`]: from the container header where it states
//! the length (symphonia's `Track::num_frames`), otherwise by a first decoding pass that counts
//! frames without keeping them. A small compressed file that expands to hours of audio (an
//! "audio bomb") is never decoded in full, and files are read as a stream rather than into
//! memory first.
//!
//! Bad input never panics: unreadable, unknown or corrupt files give an [`AudioError`] naming the
//! file. A stream that breaks after some packets decoded keeps what decoded (with a `tracing`
//! warning), and a panic inside a third-party decoder is caught and reported as
//! [`AudioError::DecoderPanicked`].

use std::fs::File;
use std::io::Cursor;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use symphonia::core::audio::GenericAudioBufferRef;
use symphonia::core::codecs::audio::{AudioDecoder, AudioDecoderOptions};
use symphonia::core::errors::Error as SymphoniaError;
use symphonia::core::formats::probe::Hint;
use symphonia::core::formats::{FormatOptions, FormatReader, TrackType};
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

/// The default cap on the duration of one audio input: 4 hours.
///
/// Our choice, not a reference's: far above any utterance or lecture whittle transcribes, and
/// 4 h of 16 kHz mono f32 is 0.9 GB, which a machine that runs Whisper has. It stops a small
/// compressed file that claims or expands to days of audio (an "audio bomb").
pub const DEFAULT_MAX_AUDIO_SECONDS: f64 = 4.0 * 3600.0;

/// The process-wide cap, as f64 bits (0 = not set: [`DEFAULT_MAX_AUDIO_SECONDS`]).
static MAX_AUDIO_SECONDS: AtomicU64 = AtomicU64::new(0);

/// Sets the cap that [`load_audio`], [`decode_file`], [`load_audio_bytes`] and
/// [`decode_bytes`] apply (the CLI's `--max-audio-seconds`).
///
/// A process-wide setting so that every reader (transcription, evaluation, training batches,
/// calibration) is capped without threading an option through each API. Non-positive or NaN
/// values are ignored.
pub fn set_max_audio_seconds(seconds: f64) {
    if seconds > 0.0 {
        MAX_AUDIO_SECONDS.store(seconds.to_bits(), Ordering::Relaxed);
    }
}

/// The cap in force: the last [`set_max_audio_seconds`], else [`DEFAULT_MAX_AUDIO_SECONDS`].
pub fn max_audio_seconds() -> f64 {
    match MAX_AUDIO_SECONDS.load(Ordering::Relaxed) {
        0 => DEFAULT_MAX_AUDIO_SECONDS,
        bits => f64::from_bits(bits),
    }
}

/// Loads a file as mono f32 samples at 16 kHz, clamped to [-1, 1], refusing audio longer than
/// [`max_audio_seconds`].
pub fn load_audio(path: &Path) -> Result<Vec<f32>, AudioError> {
    load_audio_limited(path, max_audio_seconds())
}

/// Like [`load_audio`] with the cap `max_seconds` (at the file's own rate): longer audio is
/// refused with [`AudioError::TooLong`], from the container header where it states the length,
/// otherwise as soon as decoding passes the cap.
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

/// Decodes a file to interleaved samples at its own sample rate and channel count, refusing
/// audio longer than [`max_audio_seconds`].
pub fn decode_file(path: &Path) -> Result<DecodedAudio, AudioError> {
    decode_file_limited(path, max_audio_seconds())
}

/// Like [`decode_file`] with the cap `max_seconds`. The file is streamed, never read whole.
///
/// Memory before a refusal: constant when the header states the length (WAV, FLAC with
/// STREAMINFO, MP3 with a Xing/Info frame) or when it states none (a first pass counts the
/// decoded frames without keeping them); at most `max_seconds` of samples when the header
/// understates it (decoding stops at the cap). Raw PCM is measured by its size.
pub fn decode_file_limited(path: &Path, max_seconds: f64) -> Result<DecodedAudio, AudioError> {
    let io_error = |source| AudioError::Io {
        path: path.to_path_buf(),
        source,
    };
    let bytes = std::fs::metadata(path).map_err(io_error)?.len();
    if bytes == 0 {
        return Err(AudioError::Empty {
            path: path.to_path_buf(),
        });
    }
    if is_raw_pcm(path) {
        let seconds = (bytes / 2) as f64 / f64::from(RAW_PCM_SAMPLE_RATE);
        check_duration(seconds, max_seconds, path, Measured::Header)?;
        let bytes = std::fs::read(path).map_err(io_error)?;
        return decode_raw_nonempty(&bytes, path);
    }
    let open = || -> Result<Box<dyn MediaSource>, AudioError> {
        Ok(Box::new(File::open(path).map_err(io_error)?))
    };
    decode_source(&open, path, max_seconds)
}

/// Decodes an in-memory file with the cap [`max_audio_seconds`]. `origin` names it in errors;
/// its extension selects raw PCM (`raw`, `pcm`) and otherwise only hints the container, which
/// is detected from the bytes.
pub fn decode_bytes(bytes: Vec<u8>, origin: &Path) -> Result<DecodedAudio, AudioError> {
    if bytes.is_empty() {
        return Err(AudioError::Empty {
            path: origin.to_path_buf(),
        });
    }
    let max_seconds = max_audio_seconds();
    if is_raw_pcm(origin) {
        let seconds = (bytes.len() / 2) as f64 / f64::from(RAW_PCM_SAMPLE_RATE);
        check_duration(seconds, max_seconds, origin, Measured::Header)?;
        return decode_raw_nonempty(&bytes, origin);
    }
    let bytes: Arc<[u8]> = bytes.into();
    let open = || -> Result<Box<dyn MediaSource>, AudioError> {
        Ok(Box::new(Cursor::new(Arc::clone(&bytes))))
    };
    decode_source(&open, origin, max_seconds)
}

fn decode_raw_nonempty(bytes: &[u8], origin: &Path) -> Result<DecodedAudio, AudioError> {
    let decoded = decode_raw_s16le(bytes, origin)?;
    if decoded.samples.is_empty() {
        return Err(AudioError::Empty {
            path: origin.to_path_buf(),
        });
    }
    Ok(decoded)
}

/// Opens the same bytes again from the start (the counting pass reads the stream twice).
type Opener<'a> = dyn Fn() -> Result<Box<dyn MediaSource>, AudioError> + 'a;

/// Decodes a container with symphonia, catching a decoder panic, and refuses an empty result.
fn decode_source(
    open: &Opener<'_>,
    origin: &Path,
    max_seconds: f64,
) -> Result<DecodedAudio, AudioError> {
    let decoded = catch_unwind(AssertUnwindSafe(|| {
        decode_with_symphonia(open, origin, max_seconds)
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

/// How a duration over the cap was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Measured {
    /// Stated by the container header (or the size of a raw PCM file): the exact length.
    Header,
    /// Reached while decoding, which stopped there: the audio is at least this long.
    Decoding,
}

/// [`AudioError::TooLong`] when `seconds` exceeds `max_seconds`.
fn check_duration(
    seconds: f64,
    max_seconds: f64,
    origin: &Path,
    measured: Measured,
) -> Result<(), AudioError> {
    // NaN caps refuse nothing; callers validate them.
    if seconds > max_seconds {
        return Err(AudioError::TooLong {
            path: origin.to_path_buf(),
            seconds,
            max_seconds,
            measured,
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

/// A probed container with the decoder of its default audio track.
struct TrackReader<'a> {
    format: Box<dyn FormatReader>,
    decoder: Box<dyn AudioDecoder>,
    track_id: u32,
    /// Length stated by the header, in seconds, when it states frames and a rate.
    header_seconds: Option<f64>,
    origin: &'a Path,
}

impl<'a> TrackReader<'a> {
    fn open(source: Box<dyn MediaSource>, origin: &'a Path) -> Result<Self, AudioError> {
        let mut hint = Hint::new();
        if let Some(ext) = origin.extension().and_then(|ext| ext.to_str()) {
            hint.with_extension(ext);
        }
        let source = MediaSourceStream::new(source, Default::default());
        let format = symphonia::default::get_probe()
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
        let num_frames = track.num_frames;
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
        let header_seconds = num_frames
            .zip(params.sample_rate)
            .map(|(frames, rate)| frames as f64 / f64::from(rate));
        let decoder = symphonia::default::get_codecs()
            .make_audio_decoder(&params, &AudioDecoderOptions::default())
            .map_err(|err| classify(err, origin))?;
        Ok(Self {
            format,
            decoder,
            track_id,
            header_seconds,
            origin,
        })
    }

    /// Decodes the track to the end, handing each buffer to `sink` with its frame count,
    /// after checking that the decoded length stays within `max_seconds`. Returns the layout
    /// `(rate, channels)`.
    fn decode_all(
        mut self,
        max_seconds: f64,
        mut sink: impl FnMut(&GenericAudioBufferRef<'_>),
    ) -> Result<(u32, usize), AudioError> {
        let origin = self.origin;
        // (rate, channels) of the first decoded buffer; every later buffer must match it.
        let mut layout: Option<(u32, usize)> = None;
        let mut frames = 0usize;
        let mut skipped_packets = 0usize;
        let mut last_packet_error: Option<String> = None;
        loop {
            let packet = match self.format.next_packet() {
                Ok(Some(packet)) => packet,
                Ok(None) => break,
                // A chained OGG stream starts a new track list: the first stream is the utterance.
                Err(SymphoniaError::ResetRequired) => break,
                Err(err) if layout.is_none() => return Err(classify(err, origin)),
                Err(err) => {
                    tracing::warn!(
                        path = %origin.display(),
                        error = %err,
                        decoded_frames = frames,
                        "audio stream breaks off; keeping what decoded before the error"
                    );
                    break;
                }
            };
            if packet.track_id != self.track_id {
                continue;
            }
            let buffer = match self.decoder.decode(&packet) {
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
            frames += buffer.samples_interleaved() / channels;
            check_duration(
                frames as f64 / f64::from(rate),
                max_seconds,
                origin,
                Measured::Decoding,
            )?;
            sink(&buffer);
        }
        let Some(layout) = layout else {
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
        Ok(layout)
    }
}

fn decode_with_symphonia(
    open: &Opener<'_>,
    origin: &Path,
    max_seconds: f64,
) -> Result<DecodedAudio, AudioError> {
    let reader = TrackReader::open(open()?, origin)?;
    match reader.header_seconds {
        Some(seconds) => check_duration(seconds, max_seconds, origin, Measured::Header)?,
        // No stated length: count the decoded frames first, keeping none of them, so that a
        // bomb is refused in constant memory.
        None => {
            TrackReader::open(open()?, origin)?.decode_all(max_seconds, |_| {})?;
        }
    }
    let mut samples: Vec<f32> = Vec::new();
    let (sample_rate, channels) = reader.decode_all(max_seconds, |buffer| {
        let start = samples.len();
        samples.resize(start + buffer.samples_interleaved(), 0.0);
        buffer.copy_to_slice_interleaved(&mut samples[start..]);
    })?;
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
