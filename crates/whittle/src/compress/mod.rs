//! Compression passes over a model's named parameters.

pub mod ptq;
