//! The crate's error type. Every variant that comes from a file names that file, so a failure in a
//! batch of thousands of utterances points at the one that broke.

use std::path::{Path, PathBuf};

use crate::decode::Measured;

/// Everything that can go wrong while decoding or resampling audio.
///
/// Fields: `path` is the file (or the name given for in-memory bytes), `reason` the decoder's
/// own message.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
pub enum AudioError {
    /// The file could not be opened or read.
    #[error("cannot read audio file {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// No decoder recognises the container or the codec inside it.
    #[error("unsupported or unrecognised audio format in {}: {reason}", path.display())]
    UnsupportedFormat { path: PathBuf, reason: String },

    /// The container holds no audio track.
    #[error("no audio track in {}", path.display())]
    NoAudioTrack { path: PathBuf },

    /// The stream is malformed and nothing usable could be decoded from it.
    #[error("corrupt audio stream in {}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },

    /// The file decoded to zero samples.
    #[error("audio file {} contains no samples", path.display())]
    Empty { path: PathBuf },

    /// The declared sample rate is 0 or above [`MAX_SAMPLE_RATE`](crate::decode::MAX_SAMPLE_RATE).
    #[error("audio file {} declares an implausible sample rate of {sample_rate} Hz", path.display())]
    BadSampleRate { path: PathBuf, sample_rate: u32 },

    /// The stream declares zero channels, or changes its channel count or rate mid-stream.
    #[error("audio file {} has an unusable channel layout: {reason}", path.display())]
    BadChannels { path: PathBuf, reason: String },

    /// The audio is longer than the cap (`--max-audio-seconds`): `seconds` is the length the
    /// header states, or how far decoding got before it stopped (see `measured`).
    #[error("audio file {} lasts {}{seconds:.1} s, over the {max_seconds} s limit (--max-audio-seconds)", path.display(), match measured { Measured::Header => "", Measured::Decoding => "at least " })]
    TooLong {
        path: PathBuf,
        seconds: f64,
        max_seconds: f64,
        measured: Measured,
    },

    /// A third-party decoder panicked on this input; the panic was caught and reported instead.
    #[error("the decoder panicked on {}: {message}", path.display())]
    DecoderPanicked { path: PathBuf, message: String },

    /// Resampling failed (bad rates or a resampler error). `path` is `None` for in-memory samples.
    #[error("cannot resample {} from {from_hz} Hz to {to_hz} Hz: {reason}", origin(path.as_deref()))]
    Resample {
        path: Option<PathBuf>,
        from_hz: u32,
        to_hz: u32,
        reason: String,
    },
}

fn origin(path: Option<&Path>) -> String {
    match path {
        Some(path) => path.display().to_string(),
        None => "in-memory samples".to_string(),
    }
}

impl AudioError {
    /// Attaches the file a resampling error came from; other variants already carry their path.
    pub(crate) fn in_file(self, file: &Path) -> Self {
        match self {
            AudioError::Resample {
                path: None,
                from_hz,
                to_hz,
                reason,
            } => AudioError::Resample {
                path: Some(file.to_path_buf()),
                from_hz,
                to_hz,
                reason,
            },
            other => other,
        }
    }
}
