//! whittle: make speech-recognition models small and fast without losing accuracy.
//!
//! Crate map (dependencies point one way): `whittle-audio` (decoding, resampling, log-mel)
//! and `whittle-text` (normalisation, WER) and `whittle-kernels` (packed formats and
//! low-bit matrix kernels) sit below this crate, which holds checkpoints, models, decoding
//! and evaluation; the `whittle` command-line tool sits on top.
#![warn(missing_docs)]

pub mod checkpoint;
pub mod compress;
pub mod data;
pub mod error;
pub mod eval;
pub mod fsutil;
pub mod machine;
pub mod model_dir;
pub mod models;
pub mod nn;
pub mod packed_file;
pub mod perplexity;
pub mod rescore;
pub mod train;

pub use error::{Error, Result};

pub use candle_core as candle;
pub use whittle_audio as audio;
pub use whittle_kernels as kernels;
pub use whittle_text as text;
