//! Layers shared by every architecture. A linear or conv layer owns a [`Weight`], a value
//! that is float today and may become fake-quantized, gated or packed without a second copy
//! of any model code.

mod weight;

pub use weight::{Linear, Weight};

use candle_core::{DType, Module, Tensor, D};

use crate::checkpoint::TensorStore;
use crate::error::Result;

/// Layer normalisation over the last dimension.
///
/// Written out with primitive ops (mean, variance, affine) because candle's fused layer norm
/// records no backward pass (see shared/CANDLE.md); the same layer serves inference and training.
#[derive(Debug, Clone)]
pub struct LayerNorm {
    /// Scale, `[d]`.
    pub weight: Tensor,
    /// Shift, `[d]`.
    pub bias: Tensor,
    /// Added to the variance.
    pub eps: f64,
}

impl LayerNorm {
    /// Load `{prefix}.weight` and `{prefix}.bias` of width `dim`.
    pub fn load(store: &TensorStore, prefix: &str, dim: usize, dtype: DType) -> Result<Self> {
        Ok(Self {
            weight: store.get(&format!("{prefix}.weight"), &[dim], dtype)?,
            bias: store.get(&format!("{prefix}.bias"), &[dim], dtype)?,
            eps: 1e-5,
        })
    }
}

impl Module for LayerNorm {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let centered = x.broadcast_sub(&mean)?;
        let var = centered.sqr()?.mean_keepdim(D::Minus1)?;
        let normed = centered.broadcast_div(&(var + self.eps)?.sqrt()?)?;
        normed
            .broadcast_mul(&self.weight)?
            .broadcast_add(&self.bias)
    }
}

/// 1-D convolution over `[batch, channels, time]` with padding and stride.
#[derive(Debug, Clone)]
pub struct Conv1d {
    /// Kernel `[out, in, k]`.
    pub weight: Tensor,
    /// Bias `[out]`.
    pub bias: Option<Tensor>,
    /// Zero padding on each side.
    pub padding: usize,
    /// Stride.
    pub stride: usize,
}

impl Conv1d {
    /// Load `{prefix}.weight` `[out, in, k]` and `{prefix}.bias` `[out]`.
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        store: &TensorStore,
        prefix: &str,
        in_channels: usize,
        out_channels: usize,
        kernel: usize,
        padding: usize,
        stride: usize,
        dtype: DType,
    ) -> Result<Self> {
        Ok(Self {
            weight: store.get(
                &format!("{prefix}.weight"),
                &[out_channels, in_channels, kernel],
                dtype,
            )?,
            bias: Some(store.get(&format!("{prefix}.bias"), &[out_channels], dtype)?),
            padding,
            stride,
        })
    }
}

impl Module for Conv1d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.conv1d(&self.weight, self.padding, self.stride, 1, 1)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1))?),
            None => Ok(y),
        }
    }
}
