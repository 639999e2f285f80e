//! The weight of a linear layer as a value with several states.

use std::sync::Arc;

use candle_core::{DType, Module, Tensor};
use whittle_kernels::PackedMatrix;

use super::gate::GatedWeight;
use super::lsq::FakeQuant;
use super::mixed::MixedWeight;
use super::ternary::TernaryWeight;
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
    /// Trainable latent weight with learned step sizes, fake-quantized in the forward pass
    /// (quantization-aware training, see [`super::lsq`]).
    FakeQuant(FakeQuant),
    /// A learned mixture of several fake-quantized versions of one latent weight (the supernet
    /// of one-stage mixed precision, see [`super::mixed`]).
    Mixed(MixedWeight),
    /// A trainable ternary weight (hyperspherical quantization or ternary QAT, see
    /// [`super::ternary`]).
    Ternary(TernaryWeight),
    /// A float weight whose input columns carry hard-concrete gates (structured pruning, see
    /// [`super::gate`]).
    Gated(GatedWeight),
    /// Low-bit codes with per-group scales, multiplied by kernels that dequantize inside the
    /// inner loop (no float copy of the matrix exists).
    Packed(Arc<PackedMatrix>),
}

impl Weight {
    /// `(out_features, in_features)`.
    pub fn dims(&self) -> (usize, usize) {
        match self {
            Weight::Float(w) => {
                let d = w.dims();
                (d[0], d[1])
            }
            Weight::FakeQuant(f) => f.dims(),
            Weight::Mixed(m) => m.dims(),
            Weight::Ternary(t) => t.dims(),
            Weight::Gated(g) => g.dims(),
            Weight::Packed(p) => (p.rows(), p.cols()),
        }
    }

    /// The weight the forward pass uses, differentiable in its trainable parts, when it has
    /// any (fake-quantized and mixed weights); `None` for float and packed weights.
    pub fn trainable_dense(&self) -> candle_core::Result<Option<Tensor>> {
        match self {
            Weight::FakeQuant(f) => f.quantized_weight().map(Some),
            Weight::Mixed(m) => m.mixed_weight().map(Some),
            Weight::Ternary(t) => t.ternary_weight().map(Some),
            Weight::Gated(g) => g.gated_weight().map(Some),
            Weight::Float(_) | Weight::Packed(_) => Ok(None),
        }
    }

    /// The weight as a dense float tensor (dequantizing if needed).
    pub fn to_dense(&self) -> candle_core::Result<Tensor> {
        match self {
            Weight::Float(w) => Ok(w.clone()),
            Weight::FakeQuant(f) => Ok(f.quantized_weight()?.detach()),
            Weight::Mixed(m) => Ok(m.mixed_weight()?.detach()),
            Weight::Ternary(t) => Ok(t.ternary_weight()?.detach()),
            Weight::Gated(g) => Ok(g.gated_weight()?.detach()),
            Weight::Packed(p) => Tensor::from_vec(
                p.dequantize(),
                (p.rows(), p.cols()),
                &candle_core::Device::Cpu,
            ),
        }
    }

    /// Rows `ids` (u32, any shape) of the matrix, `[ids.., in_features]`: a table lookup, as
    /// the token embedding that shares its matrix with the output projection does. A packed
    /// table dequantizes only the rows asked for.
    pub fn rows(&self, ids: &Tensor) -> candle_core::Result<Tensor> {
        let mut dims = ids.dims().to_vec();
        let flat = ids.flatten_all()?;
        let table_rows = match self {
            Weight::Float(w) => w.embedding(&flat)?,
            Weight::FakeQuant(f) => f.quantized_weight()?.embedding(&flat)?,
            Weight::Mixed(m) => m.mixed_weight()?.embedding(&flat)?,
            Weight::Ternary(t) => t.ternary_weight()?.embedding(&flat)?,
            Weight::Gated(g) => g.gated_weight()?.embedding(&flat)?,
            Weight::Packed(p) => {
                let indices: Vec<usize> = flat
                    .to_dtype(DType::U32)?
                    .to_vec1::<u32>()?
                    .into_iter()
                    .map(|i| i as usize)
                    .collect();
                let values = p
                    .dequantize_rows(&indices)
                    .map_err(|e| candle_core::Error::Msg(format!("packed table lookup: {e}")))?;
                Tensor::from_vec(values, (indices.len(), p.cols()), ids.device())?
            }
        };
        dims.push(self.dims().1);
        table_rows.reshape(dims)
    }

    /// Bytes this weight occupies in memory.
    pub fn storage_bytes(&self) -> usize {
        match self {
            Weight::Float(w) => w.elem_count() * w.dtype().size_in_bytes(),
            Weight::FakeQuant(f) => [f.latent.as_tensor(), f.steps.as_tensor()]
                .iter()
                .map(|t| t.elem_count() * t.dtype().size_in_bytes())
                .sum(),
            Weight::Mixed(m) => [
                m.latent.as_tensor(),
                m.steps.as_tensor(),
                m.logits.as_tensor(),
            ]
            .iter()
            .map(|t| t.elem_count() * t.dtype().size_in_bytes())
            .sum(),
            Weight::Ternary(t) => [t.latent.as_tensor(), t.scale.as_tensor()]
                .iter()
                .map(|t| t.elem_count() * t.dtype().size_in_bytes())
                .sum(),
            Weight::Gated(g) => {
                let w = g.weight.as_tensor();
                w.elem_count() * w.dtype().size_in_bytes()
            }
            Weight::Packed(p) => {
                p.codes().len() + 2 * p.scales().len() + p.zero_points().map_or(0, <[u8]>::len)
            }
        }
    }
}

/// Sees every input `[rows, in_features]` a linear layer receives, before the product.
///
/// Calibration passes (GPTQ's `X^T X`, activation ranges) attach one, run the model, and
/// detach it; model code is unchanged.
#[derive(Clone)]
pub struct InputObserver(pub Arc<ObserveFn>);

/// The callback of an [`InputObserver`].
pub type ObserveFn = dyn Fn(&Tensor) -> candle_core::Result<()> + Send + Sync;

impl std::fmt::Debug for InputObserver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("InputObserver")
    }
}

/// `y = x W^T + b` over the last dimension of `x`.
#[derive(Debug, Clone)]
pub struct Linear {
    /// The weight, `[out, in]`.
    pub weight: Weight,
    /// Optional bias, `[out]`.
    pub bias: Option<Tensor>,
    /// Called with each input, when set.
    pub observer: Option<InputObserver>,
}

impl Linear {
    /// Load `{prefix}.weight` (and `{prefix}.bias` when `with_bias`).
    pub fn load(
        store: &TensorStore,
        prefix: &str,
        in_features: usize,
        out_features: usize,
        with_bias: bool,
        dtype: DType,
    ) -> Result<Self> {
        let name = format!("{prefix}.weight");
        let weight = match store.get_packed(&name, [out_features, in_features])? {
            Some(packed) => Weight::Packed(packed),
            None => Weight::Float(store.get(&name, &[out_features, in_features], dtype)?),
        };
        let bias = if with_bias {
            Some(store.get(&format!("{prefix}.bias"), &[out_features], dtype)?)
        } else {
            None
        };
        Ok(Self::new(weight, bias))
    }

    /// A layer without observer.
    pub fn new(weight: Weight, bias: Option<Tensor>) -> Self {
        Self {
            weight,
            bias,
            observer: None,
        }
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

/// How a linear layer multiplies: a dense float matrix (float or fake-quantized weights) or
/// the packed kernels.
enum Product<'a> {
    Dense(Tensor),
    Packed(&'a PackedMatrix),
}

impl Module for Linear {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        // Branch gates scale the bias with the matrix.
        let gated_bias = match &self.weight {
            Weight::Gated(g) => g.gated_bias(self.bias.as_ref())?,
            _ => None,
        };
        let bias = gated_bias.as_ref().or(self.bias.as_ref());
        if let Weight::FakeQuant(f) = &self.weight {
            let (latent, steps) = (f.latent.as_tensor(), f.steps.as_tensor());
            // QAT on CPU: quantization and product in one op (the bias is not trained).
            if self.observer.is_none()
                && !bias.is_some_and(Tensor::track_op)
                && super::dense::fusable(x, latent, bias)
                && steps.dtype() == DType::F32
            {
                return super::dense::lsq_linear(x, latent, steps, f.spec, bias);
            }
        }
        let product = match &self.weight {
            Weight::Float(w) => Product::Dense(w.clone()),
            Weight::FakeQuant(f) => Product::Dense(f.quantized_weight()?),
            Weight::Mixed(m) => Product::Dense(m.mixed_weight()?),
            Weight::Ternary(t) => Product::Dense(t.ternary_weight()?),
            Weight::Gated(g) => Product::Dense(g.gated_weight()?),
            Weight::Packed(p) => Product::Packed(p),
        };
        // Dense f32 on CPU: one fused op (bias inside the product, a backward of its own when
        // training), on any input rank, so no reshapes, transposes or broadcasts are recorded.
        if let Product::Dense(w) = &product {
            if self.observer.is_none() && super::dense::fusable(x, w, bias) {
                return super::dense::linear(x, w, bias);
            }
        }
        let dims = x.dims().to_vec();
        let in_features = *dims.last().expect("linear input has at least one dim");
        let rows = x.elem_count() / in_features.max(1);
        let x2 = x.reshape((rows, in_features))?;
        if let Some(observer) = &self.observer {
            (observer.0)(&x2)?;
        }
        let y = match product {
            Product::Dense(w) => dense_matmul(&x2, &w, bias)?,
            Product::Packed(p) => packed_matmul(&x2, p, bias)?,
        };
        let mut out_dims = dims;
        *out_dims.last_mut().expect("non-empty") = self.out_features();
        y.reshape(out_dims)
    }
}

/// `x [rows, in] · W^T + b` with a dense weight (differentiable).
fn dense_matmul(x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> candle_core::Result<Tensor> {
    let y = x.matmul(&w.t()?)?;
    match bias {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// `x [rows, in] · W^T + b` through the packed int8-activation kernels (inference only: no
/// gradient; `whittle_kernels::matmul_q8`, also for encoder-sized `rows`). Input and bias are
/// read in place from their CPU storage; only the output is allocated.
fn packed_matmul(
    x: &Tensor,
    w: &PackedMatrix,
    bias: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let (rows, _) = x.dims2()?;
    let mut out = vec![0f32; rows * w.rows()];
    with_f32_values(x, |input| match bias {
        Some(b) => with_f32_values(b, |bias| {
            packed_kernel(input, rows, w, Some(bias), &mut out)
        })?,
        None => packed_kernel(input, rows, w, None, &mut out),
    })??;
    Tensor::from_vec(out, (rows, w.rows()), x.device())?.to_dtype(x.dtype())
}

fn packed_kernel(
    input: &[f32],
    rows: usize,
    w: &PackedMatrix,
    bias: Option<&[f32]>,
    out: &mut [f32],
) -> candle_core::Result<()> {
    whittle_kernels::matmul_q8_packed(input, rows, w, bias, out)
        .map_err(|e| candle_core::Error::Msg(format!("packed matmul: {e}")))
}

/// Runs `f` on the row-major f32 values of `t`, borrowed from its CPU storage when it is
/// already f32 and contiguous, else from a converted copy.
fn with_f32_values<R>(t: &Tensor, f: impl FnOnce(&[f32]) -> R) -> candle_core::Result<R> {
    let t = t.to_dtype(DType::F32)?.contiguous()?;
    let (storage, layout) = t.storage_and_layout();
    if let (candle_core::Storage::Cpu(cpu), Some((start, end))) =
        (&*storage, layout.contiguous_offsets())
    {
        return Ok(f(&cpu.as_slice::<f32>()?[start..end]));
    }
    drop(storage);
    Ok(f(&t.flatten_all()?.to_vec1::<f32>()?))
}

impl Linear {
    /// Replace a float weight by its packed form; returns the bytes the packed weight takes.
    pub fn set_packed(&mut self, packed: PackedMatrix) -> usize {
        self.weight = Weight::Packed(Arc::new(packed));
        self.weight.storage_bytes()
    }

    /// The float weight as row-major f32 values (for quantizers).
    pub fn float_weight_values(&self) -> candle_core::Result<Vec<f32>> {
        self.weight
            .to_dense()?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;
    use whittle_kernels::{Granularity, UniformQuantizer};

    /// Packed forward equals the float forward over the dequantized weight up to the int8
    /// rounding of each 32-block of `x` (step max|x_b|/127 = 0.0094 here): at most
    /// step/2 * sum|w| = 0.26 on these rows; random rounding keeps the observed error near 0.01.
    const INT8_ACTIVATION_TOL: f32 = 0.05;

    #[test]
    fn packed_linear_matches_dequantized_float_linear() {
        // m = 1 splits the weight rows across threads, m = 5 the rows of x.
        for m in [1, 5] {
            check_packed_linear(m);
        }
    }

    fn check_packed_linear(m: usize) {
        let (n, k) = (24, 96);
        let w: Vec<f32> = (0..n * k)
            .map(|i| ((i * 7919 % 211) as f32 - 105.0) / 90.0)
            .collect();
        let x: Vec<f32> = (0..m * k)
            .map(|i| ((i * 104729 % 97) as f32 - 48.0) / 40.0)
            .collect();
        let bias = Tensor::from_vec(
            (0..n).map(|i| i as f32 / 10.0).collect::<Vec<_>>(),
            n,
            &Device::Cpu,
        )
        .unwrap();
        let q = UniformQuantizer::symmetric(4, Granularity::Group(32))
            .unwrap()
            .quantize(&w, n, k)
            .unwrap();
        let packed = PackedMatrix::pack(&q);
        let dequant = Tensor::from_vec(packed.dequantize(), (n, k), &Device::Cpu).unwrap();
        let float = Linear::new(Weight::Float(dequant), Some(bias.clone()));
        let mut packed_linear = Linear::new(
            Weight::Float(Tensor::zeros((n, k), DType::F32, &Device::Cpu).unwrap()),
            Some(bias),
        );
        packed_linear.set_packed(packed);
        let xs = Tensor::from_vec(x, (1, m, k), &Device::Cpu).unwrap();
        let a = float.forward(&xs).unwrap();
        let b = packed_linear.forward(&xs).unwrap();
        assert_eq!(b.dims(), &[1, m, n]);
        let err = crate::nn::max_abs_diff(&a, &b).unwrap();
        assert!(
            err < INT8_ACTIVATION_TOL,
            "m = {m}: max_err {err} exceeds {INT8_ACTIVATION_TOL}"
        );
        assert!(
            packed_linear.weight.storage_bytes() < n * k,
            "4-bit storage must be under 1 byte per weight"
        );
    }
}
