//! The library's error type. Every variant names the file, tensor or utterance involved.

use std::path::PathBuf;

/// Errors raised by whittle's library crates.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O failure on a named file.
    #[error("{path}: {source}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying failure.
        source: std::io::Error,
    },
    /// A checkpoint or packed file is malformed (crafted, truncated or of an unknown version).
    #[error("{path}: malformed file: {reason}")]
    Malformed {
        /// The file involved.
        path: PathBuf,
        /// What is wrong, with offsets where they help.
        reason: String,
    },
    /// A tensor the model needs is absent from the checkpoint.
    #[error("{source_name}: missing tensor `{tensor}`")]
    MissingTensor {
        /// The checkpoint (file path or description).
        source_name: String,
        /// The tensor name the model asked for.
        tensor: String,
    },
    /// A tensor exists but has the wrong shape.
    #[error("{source_name}: tensor `{tensor}` has shape {actual:?}, expected {expected:?}")]
    ShapeMismatch {
        /// The checkpoint.
        source_name: String,
        /// The tensor name.
        tensor: String,
        /// Shape the model expects.
        expected: Vec<usize>,
        /// Shape found in the checkpoint.
        actual: Vec<usize>,
    },
    /// A tensor exists but has a dtype the model cannot use.
    #[error("{source_name}: tensor `{tensor}` has dtype {actual}, expected {expected}")]
    DtypeMismatch {
        /// The checkpoint.
        source_name: String,
        /// The tensor name.
        tensor: String,
        /// Dtype(s) accepted.
        expected: String,
        /// Dtype found.
        actual: String,
    },
    /// A configuration value is invalid.
    #[error("{context}: invalid configuration: {reason}")]
    Config {
        /// Where the configuration came from (file or field).
        context: String,
        /// What is wrong.
        reason: String,
    },
    /// A folder is not a model whittle recognises.
    #[error("{path}: not a model folder or file whittle recognises: {reason}")]
    UnknownModel {
        /// The path given.
        path: PathBuf,
        /// What was looked for.
        reason: String,
    },
    /// Tokenizer loading or decoding failed.
    #[error("tokenizer {context}: {reason}")]
    Tokenizer {
        /// The tokenizer file or operation.
        context: String,
        /// The tokenizers crate's message.
        reason: String,
    },
    /// A dataset manifest or transcript is malformed.
    #[error("dataset {path}: {reason}")]
    Dataset {
        /// The manifest or transcript file.
        path: PathBuf,
        /// What is wrong, naming the line or utterance.
        reason: String,
    },
    /// Audio could not be read.
    #[error(transparent)]
    Audio(#[from] whittle_audio::AudioError),
    /// Text normalisation resources could not be read.
    #[error(transparent)]
    Text(#[from] whittle_text::TextError),
    /// A tensor operation failed.
    #[error("tensor operation failed: {0}")]
    Candle(#[from] candle_core::Error),
    /// A packed-kernel operation failed.
    #[error(transparent)]
    Kernel(#[from] whittle_kernels::KernelError),
    /// A JSON document could not be parsed.
    #[error("{context}: {source}")]
    Json {
        /// The file or field involved.
        context: String,
        /// The parser's message.
        source: serde_json::Error,
    },
}

/// The library's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Build an [`Error::Io`] for `path`.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    /// Build an [`Error::Malformed`] for `path`.
    pub fn malformed(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Malformed {
            path: path.into(),
            reason: reason.into(),
        }
    }

    /// Build an [`Error::Config`].
    pub fn config(context: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Config {
            context: context.into(),
            reason: reason.into(),
        }
    }
}
