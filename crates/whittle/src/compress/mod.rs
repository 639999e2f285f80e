//! Compression passes over a model's named parameters.

pub mod export;
pub mod ptq;
