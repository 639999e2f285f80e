//! Typed errors for quantizers, packed-format validation and kernels.

/// Everything that can go wrong in this crate. Bad input gives one of these, never a panic.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// A format descriptor is not supported (bit width out of range, bad group size, layout mismatch).
    #[error("invalid format: {0}")]
    InvalidFormat(String),
    /// A buffer has the wrong length for the declared shape and format.
    #[error("{what}: expected {expected} elements, got {actual}")]
    LengthMismatch {
        /// Which buffer (`"codes"`, `"scales"`, `"x"`, ...).
        what: &'static str,
        /// Length implied by the shape and format.
        expected: usize,
        /// Length actually given.
        actual: usize,
    },
    /// The matrix shape is empty or its element/byte count overflows `usize`.
    #[error("invalid shape {rows}x{cols}: {reason}")]
    InvalidShape {
        /// Declared rows (output features).
        rows: usize,
        /// Declared columns (input features).
        cols: usize,
        /// Why the shape was rejected.
        reason: &'static str,
    },
    /// A value that must be finite was NaN or infinite (weights, scales).
    #[error("non-finite value in {what} at index {index}")]
    NonFinite {
        /// Which input.
        what: &'static str,
        /// Flat index of the first offending value.
        index: usize,
    },
    /// A code or zero point does not fit the format's bit width.
    #[error("{what} value {value} at index {index} exceeds the format maximum {max}")]
    CodeOutOfRange {
        /// `"codes"` or `"zero_points"`.
        what: &'static str,
        /// Flat index of the first offending value.
        index: usize,
        /// The value found.
        value: u8,
        /// Largest value the format allows.
        max: u8,
    },
    /// GPTQ's dampened Hessian (or its inverse) is not positive definite.
    #[error("matrix is not positive definite (pivot {pivot} at column {column}); increase dampening or add calibration data")]
    NotPositiveDefinite {
        /// Column where the Cholesky factorisation failed.
        column: usize,
        /// The non-positive pivot.
        pivot: f64,
    },
    /// An error from a named tensor (attached by callers such as the `.whittle` reader).
    #[error("tensor `{name}`: {source}")]
    Tensor {
        /// Tensor name as stored in the file or checkpoint.
        name: String,
        /// The underlying error.
        #[source]
        source: Box<KernelError>,
    },
}

impl KernelError {
    /// Wraps this error with the name of the tensor it concerns.
    pub fn in_tensor(self, name: impl Into<String>) -> Self {
        KernelError::Tensor {
            name: name.into(),
            source: Box::new(self),
        }
    }
}

/// Crate result type.
pub type Result<T, E = KernelError> = std::result::Result<T, E>;

/// Checks a slice length, naming the buffer in the error.
pub(crate) fn expect_len(what: &'static str, expected: usize, actual: usize) -> Result<()> {
    if expected == actual {
        Ok(())
    } else {
        Err(KernelError::LengthMismatch {
            what,
            expected,
            actual,
        })
    }
}
