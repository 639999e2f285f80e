//! The crate's error type. Variants that come from a file name the file; variants that come from
//! one utterance name the utterance, so a failure in a run of thousands points at the one that broke.

use std::path::PathBuf;

/// Everything that can go wrong while reading text, synthesising speech or writing a corpus.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)] // variant docs say it all; the fields are named for what they hold
pub enum CorpusError {
    /// A file or directory could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// An R lazy-load database or serialization stream is malformed or uses an unsupported feature.
    #[error("bad R data in {} at byte {offset}: {reason}", path.display())]
    RData {
        path: PathBuf,
        offset: u64,
        reason: String,
    },

    /// The R database has no object of that name.
    #[error("R database {} has no object named {name:?} (it has: {available})", path.display())]
    RObjectMissing {
        path: PathBuf,
        name: String,
        available: String,
    },

    /// A text file is empty or holds only whitespace.
    #[error("text file {} is empty", path.display())]
    EmptyText { path: PathBuf },

    /// A text file contains NUL or other control bytes, so it is not text.
    #[error("text file {} looks binary (control byte 0x{byte:02x} at offset {offset})", path.display())]
    BinaryText {
        path: PathBuf,
        offset: usize,
        byte: u8,
    },

    /// A text file is not valid UTF-8.
    #[error("text file {} is not valid UTF-8 (first bad byte at offset {offset}); convert it with iconv", path.display())]
    NotUtf8 { path: PathBuf, offset: usize },

    /// The text source yields no usable sentence.
    #[error("text source {source_name} yields no sentence of speakable length")]
    NoSentences { source_name: String },

    /// A text source name is not known.
    #[error(
        "unknown text source {0:?}: use austen, austen:<novel>, or a path to a UTF-8 text file"
    )]
    UnknownTextSource(String),

    /// A voice set or voice name could not be parsed.
    #[error("bad voice specification {spec:?}: {reason}")]
    BadVoice { spec: String, reason: String },

    /// A TTS program is not installed (or not at the configured path).
    #[error("TTS engine {engine} not found (tried {program:?}): install the Debian package `{package}` (apt-get install {package})")]
    EngineMissing {
        engine: String,
        program: String,
        package: String,
    },

    /// A TTS engine is installed but lacks the voice.
    #[error("voice {voice} is not installed: install the Debian package `{package}` (apt-get install {package})")]
    VoiceMissing { voice: String, package: String },

    /// A TTS engine ran but failed on one utterance.
    #[error("{engine} failed on utterance {utterance} with voice {voice}: {reason}")]
    EngineFailed {
        engine: String,
        voice: String,
        utterance: String,
        reason: String,
    },

    /// A WAV stream written by an engine could not be parsed.
    #[error("bad WAV from {origin}: {reason}")]
    BadWav { origin: String, reason: String },

    /// FLAC encoding failed.
    #[error("cannot encode FLAC for {utterance}: {reason}")]
    Flac { utterance: String, reason: String },

    /// Resampling failed.
    #[error("cannot resample utterance {utterance}: {source}")]
    Resample {
        utterance: String,
        #[source]
        source: whittle_audio::AudioError,
    },

    /// A manifest or corpus description could not be parsed or does not match this run.
    #[error("manifest {}: {reason}", path.display())]
    Manifest { path: PathBuf, reason: String },

    /// Invalid options.
    #[error("invalid corpus options: {0}")]
    Config(String),

    /// The run was cancelled through its cancel flag; finished utterances are kept for resuming.
    #[error("synthesis cancelled after {finished} utterances; re-run the same command to resume")]
    Cancelled { finished: usize },
}

/// The crate's result type.
pub type Result<T, E = CorpusError> = std::result::Result<T, E>;

/// Adds the path to an `std::io::Error`.
pub(crate) trait IoContext<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|source| CorpusError::Io {
            path: path.into(),
            source,
        })
    }
}
