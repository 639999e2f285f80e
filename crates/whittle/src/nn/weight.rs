//! The weight of a linear layer as a value with several states.

use candle_core::{DType, Module, Tensor};

use crate::checkpoint::TensorStore;
use crate::error::Result;

/// A linear layer's weight `[out_features, in_features]` in one of its states.
///
/// Model code calls [`Linear::forward`] and never matches on the state, so the same model
/// runs float, fake-quantized or packed.
#[derive(Debug, Clone)]
pub enum Weight {
    /// A dense float matrix.
    Float(Tensor),
}

impl Weight {
    /// `(out_features, in_features)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Weight::Float(w) => {
                let d = w.dims();
                (d[0], d[1])
            }
        }
    }

    /// The weight as a dense float tensor (dequantizing if needed).
    pub fn to_dense(&self) -> candle_core::Result<Tensor> {
        match self {
            Weight::Float(w) => Ok(w.clone()),
        }
    }

    /// Bytes this weight occupies in memory.
    pub fn storage_bytes(&self) -> usize {
        match self {
            Weight::Float(w) => w.elem_count() * w.dtype().size_in_bytes(),
        }
    }
}

/// `y = x W^T + b` over the last dimension of `x`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// The weight, `[out, in]`.
    pub weight: Weight,
    /// Optional bias, `[out]`.
    pub bias: Option<Tensor>,
}

impl Linear {
    /// Load `{prefix}.weight` (and `{prefix}.bias` when `with_bias`).
    pub fn load(store: &TensorStore, prefix: &str, in_features: usize, out_features: usize, with_bias: bool, dtype: DType) -> Result<Self> {
        let weight = store.get(&format!("{prefix}.weight"), &[out_features, in_features], dtype)?;
        let bias = if with_bias { Some(store.get(&format!("{prefix}.bias"), &[out_features], dtype)?) } else { None };
        Ok(Self { weight: Weight::Float(weight), bias })
    }

    /// Input width.
    pub fn in_features(&self) -> usize {
        self.weight.dims().1
    }

    /// Output width.
    pub fn out_features(&self) -> usize {
        self.weight.dims().0
    }
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        let dims = x.dims().to_vec();
        let in_features = *dims.last().expect("linear input has at least one dim");
        let rows = x.elem_count() / in_features.max(1);
        let x2 = x.reshape((rows, in_features))?;
        let y = match &self.weight {
            Weight::Float(w) => x2.matmul(&w.t()?)?,
        };
        let y = match &self.bias {
            Some(b) => y.broadcast_add(b)?,
            None => y,
        };
        let mut out_dims = dims;
        *out_dims.last_mut().expect("non-empty") = self.out_features();
        y.reshape(out_dims)
    }
}
