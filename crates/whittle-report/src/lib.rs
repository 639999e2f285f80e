//! Figures whittle draws from its own outputs, as PNG and SVG, with [plotters]:
//!
//! - [`bits`]: a per-layer bit-width chart of a `.whittle` file or a bit map (issue 11, "Figures");
//! - [`pareto`]: a WER-vs-size plot of the rows of an evaluation table (`scripts/eval_table.py
//!   --json`), with the Pareto front of each test set;
//! - [`shapes`]: the surviving heads and FFN units per layer of a structurally pruned model
//!   (issue 12, "Figures").
//!
//! A separate crate so that plotters, its font renderer and the embedded font stay out of the core
//! library that every other crate and binary links. Text is drawn with DejaVu Sans, embedded in
//! the binary, through plotters' pure-Rust `ab_glyph` renderer: rendering needs no system font
//! and no fontconfig, so it works on a fresh Debian machine set up by `scripts/setup.sh`.
#![warn(missing_docs)]

pub mod bits;
mod draw;
pub mod error;
pub mod pareto;
pub mod shapes;

pub use error::{Error, Result};
