//! Post-training quantization of every linear layer: round-to-nearest with optional
//! MSE-optimal clipping, or TWN ternary (Li et al. 2016, "Ternary Weight Networks").
//! Embeddings, positions, norms and the conv stem stay float and are counted as such.

use serde::{Deserialize, Serialize};
use whittle_kernels::{Granularity, PackedMatrix, ScaleSearch, TernaryQuantizer, UniformQuantizer};

use crate::error::{Error, Result};
use crate::models::whisper::Whisper;

/// How to round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PtqMethod {
    /// Round to nearest over the abs-max range.
    Rtn,
    /// Round to nearest after a per-group search for the clipping range with least squared error.
    Mse,
}

/// A uniform precision for all linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UniformSpec {
    /// Bits per weight (2..=8), or 0 for ternary.
    pub bits: u8,
    /// Group size along the input dimension; `None` = per output channel.
    pub group: Option<usize>,
    /// Rounding method.
    pub method: PtqMethod,
}

/// What one layer became.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// Tensor path.
    pub name: String,
    /// `[out, in]`.
    pub shape: [usize; 2],
    /// Bytes of codes, scales and zero points.
    pub packed_bytes: usize,
    /// Relative RMS error of the dequantized weight.
    pub relative_rmse: f64,
}

/// Quantize every linear layer of `model` in place.
pub fn quantize_linears(model: &mut Whisper, spec: UniformSpec) -> Result<Vec<LayerReport>> {
    let granularity = match spec.group {
        Some(g) => Granularity::Group(g),
        None => Granularity::PerRow,
    };
    let mut reports = Vec::new();
    for (name, linear) in model.linears_mut() {
        let (rows, cols) = linear.weight.dims();
        let w = linear.float_weight_values()?;
        let kernel_err = |e: whittle_kernels::KernelError| Error::config(&name, e.to_string());
        let q = if spec.bits == 0 {
            TernaryQuantizer { granularity }
                .quantize(&w, rows, cols)
                .map_err(kernel_err)?
        } else {
            let mut quantizer =
                UniformQuantizer::symmetric(spec.bits, granularity).map_err(kernel_err)?;
            if spec.method == PtqMethod::Mse {
                quantizer = quantizer.with_scale_search(ScaleSearch::MSE_DEFAULT);
            }
            quantizer.quantize(&w, rows, cols).map_err(kernel_err)?
        };
        let packed = PackedMatrix::pack(&q);
        let deq = packed.dequantize();
        let (mut err, mut norm) = (0f64, 0f64);
        for (a, b) in w.iter().zip(&deq) {
            err += ((a - b) as f64).powi(2);
            norm += (*a as f64).powi(2);
        }
        let packed_bytes = linear.set_packed(packed);
        reports.push(LayerReport {
            name,
            shape: [rows, cols],
            packed_bytes,
            relative_rmse: (err / norm.max(1e-30)).sqrt(),
        });
    }
    Ok(reports)
}
