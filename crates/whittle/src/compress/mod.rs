//! Compression passes over a model's named parameters.

pub mod allocate;
pub mod bitmap;
pub mod calibrate;
pub mod export;
pub mod hessian;
pub mod prune;
pub mod ptq;
pub mod sensitivity;
