//! Layers shared by every architecture. A linear or conv layer owns a [`Weight`], a value
//! that may be float, fake-quantized, gated or packed without a second copy of any model code.

pub mod attention;
pub mod dense;
pub mod fused;
pub mod gate;
pub mod gemm;
pub mod lsq;
pub mod mixed;
pub mod ternary;
mod weight;

pub use gate::{Gate, GatedWeight};
pub use lsq::{FakeQuant, LsqSpec, StepInit};
pub use mixed::{MixedWeight, Relaxation};
pub use ternary::{Projection, TernarySpec, TernaryWeight};
pub use weight::{InputObserver, Linear, Weight};

use candle_core::{DType, Module, Tensor, D};

use crate::checkpoint::TensorStore;
use crate::error::Result;

/// Whether any of `tensors` is tracked by autograd (a variable or computed from one).
pub fn needs_grad(tensors: &[&Tensor]) -> bool {
    tensors.iter().any(|t| t.track_op())
}

/// Softmax over the last dimension: candle's fused kernel when nothing is tracked, else the
/// differentiable composition (the fused one records no backward).
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if needs_grad(&[x]) {
        fused::softmax_last_dim(x)
    } else {
        candle_nn::ops::softmax_last_dim(x)
    }
}

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
        // The fused kernel is much faster but records no backward: use it only when no
        // gradient can flow through this call.
        if !needs_grad(&[x, &self.weight, &self.bias]) && x.dtype() == DType::F32 {
            return candle_nn::ops::layer_norm(
                &x.contiguous()?,
                &self.weight,
                &self.bias,
                self.eps as f32,
            );
        }
        if fused::layer_norm_fusable(x, &self.weight, &self.bias) {
            return fused::layer_norm(x, &self.weight, &self.bias, self.eps);
        }
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
///
/// The kernel is a [`Weight`] of shape `[out, in * kernel]` (the matrix of the convolution as a
/// product over unfolded input windows), so it can be fake-quantized, gated or packed like a
/// linear layer's. Non-float kernels are made dense for the convolution (no packed conv kernel
/// exists yet).
#[derive(Debug, Clone)]
pub struct Conv1d {
    /// Kernel `[out, in * kernel]`.
    pub weight: Weight,
    /// Bias `[out]`.
    pub bias: Option<Tensor>,
    /// Kernel width.
    pub kernel: usize,
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
        let weight = store.get(
            &format!("{prefix}.weight"),
            &[out_channels, in_channels, kernel],
            dtype,
        )?;
        Ok(Self {
            weight: Weight::Float(weight.reshape((out_channels, in_channels * kernel))?),
            bias: Some(store.get(&format!("{prefix}.bias"), &[out_channels], dtype)?),
            kernel,
            padding,
            stride,
        })
    }

    /// The kernel as a dense `[out, in, k]` tensor (differentiable when the weight trains).
    pub fn kernel_tensor(&self) -> candle_core::Result<Tensor> {
        let dense = match &self.weight {
            Weight::Float(w) => w.clone(),
            other => match other.trainable_dense()? {
                Some(w) => w,
                None => other.to_dense()?,
            },
        };
        let (out, flat) = dense.dims2()?;
        dense.reshape((out, flat / self.kernel, self.kernel))
    }
}

impl Module for Conv1d {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let y = x.conv1d(&self.kernel_tensor()?, self.padding, self.stride, 1, 1)?;
        match &self.bias {
            Some(b) => y.broadcast_add(&b.reshape((1, b.dim(0)?, 1))?),
            None => Ok(y),
        }
    }
}

/// Largest absolute elementwise difference of two same-shaped tensors (tolerance checks).
pub fn max_abs_diff(a: &Tensor, b: &Tensor) -> candle_core::Result<f32> {
    (a - b)?
        .abs()?
        .flatten_all()?
        .max(0)?
        .to_dtype(candle_core::DType::F32)?
        .to_scalar()
}

/// A variable of `shape` with deterministic values in about [-1.5, 1.5], for tests.
#[cfg(test)]
pub(crate) fn test_var(shape: &[usize], seed: usize) -> candle_core::Var {
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n)
        .map(|i| (((i + 3) * (seed + 11) * 7919 % 211) as f32 - 105.0) / 70.0)
        .collect();
    candle_core::Var::from_tensor(&Tensor::from_vec(v, shape, &candle_core::Device::Cpu).unwrap())
        .unwrap()
}

/// Asserts that `fused` and `reference` agree in value and in the gradients of `sum(c * y)` with
/// respect to each of `vars`, within `tol`; `context` names the case in failure messages.
#[cfg(test)]
pub(crate) fn assert_same_function(
    fused: &Tensor,
    reference: &Tensor,
    c: &Tensor,
    vars: &[(&str, &candle_core::Var)],
    tol: f32,
    context: &str,
) {
    let err = max_abs_diff(fused, reference).unwrap();
    assert!(err < tol, "{context}: value max_err {err} exceeds {tol}");
    let grads = |y: &Tensor| (y * c).unwrap().sum_all().unwrap().backward().unwrap();
    let (ga, gb) = (grads(fused), grads(reference));
    for (name, v) in vars {
        let err = max_abs_diff(
            ga.get(v.as_tensor()).unwrap(),
            gb.get(v.as_tensor()).unwrap(),
        )
        .unwrap();
        assert!(
            err < tol,
            "{context}: {name} gradient max_err {err} exceeds {tol}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn layer_norm(weight: Tensor, bias: Tensor) -> LayerNorm {
        LayerNorm {
            weight,
            bias,
            eps: 1e-5,
        }
    }

    /// The fused inference path and the differentiable path compute the same function.
    #[test]
    fn fused_and_differentiable_layer_norm_agree() {
        let x = Tensor::arange(0f32, 24.0, &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 4))
            .unwrap()
            .sin()
            .unwrap();
        let w = Tensor::new(&[1.0f32, 0.5, -2.0, 3.0], &Device::Cpu).unwrap();
        let b = Tensor::new(&[0.1f32, 0.2, 0.3, 0.4], &Device::Cpu).unwrap();
        let fused = layer_norm(w.clone(), b.clone()).forward(&x).unwrap();
        let wv = Var::from_tensor(&w).unwrap();
        let slow = layer_norm(wv.as_tensor().clone(), b).forward(&x).unwrap();
        let err = max_abs_diff(&fused, &slow).unwrap();
        assert!(err < 1e-5, "max_err {err}");
        // The tracked path must give the weight a non-zero gradient.
        let grads = slow.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let g: f32 = grads
            .get(wv.as_tensor())
            .expect("weight gradient")
            .abs()
            .unwrap()
            .sum_all()
            .unwrap()
            .to_scalar()
            .unwrap();
        assert!(g > 0.0, "layer-norm weight received no gradient");
    }

    /// The conv kernel as a `[out, in * k]` weight: float gives candle's conv exactly, and a
    /// packed kernel convolves with its dequantized values.
    #[test]
    fn conv_weight_states_convolve_the_same_kernel() {
        use whittle_kernels::{Granularity, PackedMatrix, UniformQuantizer};
        let (out, inp, k) = (6, 4, 3);
        let kernel = test_var(&[out, inp, k], 1).as_tensor().clone();
        let x = test_var(&[2, inp, 10], 2).as_tensor().clone();
        let bias = Tensor::new(&[0.1f32, -0.2, 0.3, 0.0, 0.5, -0.5], &Device::Cpu).unwrap();
        let conv = |weight: Weight| Conv1d {
            weight,
            bias: Some(bias.clone()),
            kernel: k,
            padding: 1,
            stride: 2,
        };
        let float = conv(Weight::Float(kernel.reshape((out, inp * k)).unwrap()));
        let expected = x
            .conv1d(&kernel, 1, 2, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, out, 1)).unwrap())
            .unwrap();
        let y = float.forward(&x).unwrap();
        assert_eq!(y.dims(), &[2, out, 5]);
        assert!(max_abs_diff(&y, &expected).unwrap() < 1e-6);

        let values: Vec<f32> = kernel.flatten_all().unwrap().to_vec1().unwrap();
        let q = UniformQuantizer::symmetric(8, Granularity::PerRow)
            .unwrap()
            .quantize(&values, out, inp * k)
            .unwrap();
        let packed = PackedMatrix::pack(&q);
        let dequantized =
            Tensor::from_vec(packed.dequantize(), (out, inp, k), &Device::Cpu).unwrap();
        let packed_conv = conv(Weight::Packed(std::sync::Arc::new(packed)));
        let expected = x
            .conv1d(&dequantized, 1, 2, 1, 1)
            .unwrap()
            .broadcast_add(&bias.reshape((1, out, 1)).unwrap())
            .unwrap();
        let err = max_abs_diff(&packed_conv.forward(&x).unwrap(), &expected).unwrap();
        assert!(err < 1e-5, "packed kernel max_err {err}");
    }

    #[test]
    fn tracked_softmax_has_a_gradient_and_matches_fused() {
        let x = Var::from_tensor(
            &Tensor::new(&[[1.0f32, 2.0, 0.5], [0.0, -1.0, 3.0]], &Device::Cpu).unwrap(),
        )
        .unwrap();
        let tracked = softmax_last_dim(x.as_tensor()).unwrap();
        let fused = softmax_last_dim(&x.as_tensor().detach()).unwrap();
        let err = max_abs_diff(&tracked, &fused).unwrap();
        assert!(err < 1e-6, "max_err {err}");
        let weights = Tensor::new(&[[1.0f32, 0.0, 0.0], [0.0, 0.0, 1.0]], &Device::Cpu).unwrap();
        let grads = (tracked * weights)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        assert!(
            grads.get(x.as_tensor()).is_some(),
            "softmax input received no gradient"
        );
    }
}
