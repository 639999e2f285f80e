//! The report crate's error type; every variant names the file involved.

use std::path::PathBuf;

/// Errors raised while reading inputs or drawing figures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Reading a model, bit map or packed file failed (the library error names the file).
    #[error(transparent)]
    Whittle(#[from] whittle::Error),
    /// A file could not be read.
    #[error("{path}: {reason}")]
    Io {
        /// The file involved.
        path: PathBuf,
        /// The underlying failure (shown in the message, so not also chained as a source,
        /// which `{:#}` would print twice).
        reason: std::io::Error,
    },
    /// An input is readable but not what a figure needs.
    #[error("{path}: {reason}")]
    Input {
        /// The file involved.
        path: PathBuf,
        /// What is wrong with it.
        reason: String,
    },
    /// plotters or the PNG encoder failed while drawing or encoding a figure.
    #[error("{path}: cannot draw the figure: {reason}")]
    Draw {
        /// The figure being written.
        path: PathBuf,
        /// The renderer's message.
        reason: String,
    },
}

impl Error {
    /// An unusable input `path`.
    pub fn input(path: impl Into<PathBuf>, reason: impl Into<String>) -> Self {
        Error::Input {
            path: path.into(),
            reason: reason.into(),
        }
    }
}

/// The text of `path`, or an error naming it.
pub(crate) fn read_text(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|reason| Error::Io {
        path: path.to_path_buf(),
        reason,
    })
}

/// Result with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;
