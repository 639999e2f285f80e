//! Packed low-bit weight formats, quantizers and the matrix kernels that read them.
//!
//! This is whittle's "linalg" layer (in the spirit of sonos/tract's `linalg` and ggml's block
//! formats): pure Rust, no tensor library. It backs the packed `.whittle` file and the low-bit
//! runtime.
//!
//! * [`mod@format`]: scheme, granularity and the exact byte layouts (bits-per-weight arithmetic on
//!   each [`Layout`] variant).
//! * [`quant`]: round-to-nearest (abs-max or MSE clipping) and ternary (TWN) quantizers, built
//!   from parts; [`gptq`]: GPTQ error compensation; [`linalg`]: the Cholesky helpers it needs.
//! * [`ggml`]: ggml's block types (`q4_0`, `q5_0`, `q8_0`, ...) and the code-for-code mapping of
//!   whittle's symmetric formats onto them, for whisper.cpp interop.
//! * [`ternary`]: the cosine-optimal ternary projection of hyperspherical quantization, TWN's,
//!   and the sparse ternary layout whose size follows the zeros.
//! * [`pack`]: [`PackedMatrix`] and the zero-copy [`PackedMatrixRef`] with `validate()`.
//! * [`activations`]: in-place row softmax and GELU, vectorized and multithreaded.
//! * [`kernels`]: `y = x · W^T + bias` straight from packed weights (AVX2+FMA with run-time
//!   detection, scalar fallback, naive references), plus the f32 baseline.
//!
//! ```
//! use whittle_kernels::{matmul, Granularity, PackedMatrix, UniformQuantizer};
//! let (n, k) = (8, 64);
//! let w: Vec<f32> = (0..n * k).map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0).collect();
//! let q = UniformQuantizer::symmetric(4, Granularity::Group(32))?.quantize(&w, n, k)?;
//! let packed = PackedMatrix::pack(&q);
//! let x = vec![0.5f32; k];
//! let mut y = vec![0.0f32; n];
//! matmul(&x, 1, packed.as_ref(), None, &mut y)?;
//! # Ok::<(), whittle_kernels::KernelError>(())
//! ```
#![warn(missing_docs)]
#![deny(rustdoc::broken_intra_doc_links)]

pub mod activations;
pub mod error;
pub mod format;
pub mod ggml;
pub mod gptq;
pub mod kernels;
pub mod linalg;
pub mod pack;
pub mod quant;
pub mod ternary;

pub use error::{KernelError, Result};
pub use format::{Granularity, Layout, PackedFormat, QuantFormat, Scheme, BLOCK};
pub use gptq::{Gptq, HessianAccumulator};
pub use kernels::{
    matmul, matmul_f32, matmul_f32_with, matmul_packed, matmul_packed_with, matmul_q8,
    matmul_q8_packed, matmul_q8_with, matmul_with, Isa,
};
pub use pack::{f16_slice_from_bytes, PackedMatrix, PackedMatrixRef};
pub use quant::{
    BitWidth, GroupParams, QuantizedMatrix, ScaleSearch, TernaryQuantizer, UniformQuantizer,
    ZeroPoint,
};
