//! Post-training quantization of linear layers, each to the format its bit map gives:
//! round-to-nearest with optional MSE-optimal clipping, GPTQ error compensation from
//! calibration inputs (Frantar et al. 2022), or TWN ternary (Li et al. 2016, "Ternary Weight
//! Networks"). The tied token embedding is packed only when the bit map names it; positions, norms
//! and the conv stem stay float and are counted as such.

use serde::{Deserialize, Serialize};
use whittle_kernels::{Gptq, PackedMatrix, ScaleSearch, TernaryQuantizer, UniformQuantizer};

use super::bitmap::{BitMap, LayerFormat, ResolvedLayer};
use super::calibrate::Calibration;
use crate::error::{Error, Result};
use crate::models::Layers;

/// How to round.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PtqMethod {
    /// Round to nearest over the abs-max range.
    Rtn,
    /// Round to nearest after a per-group search for the clipping range with least squared error.
    Mse,
    /// GPTQ: columns rounded in order, each one's error compensated on the rest through the
    /// inverse of the layer's `X^T X` (needs calibration data).
    Gptq,
}

impl PtqMethod {
    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            PtqMethod::Rtn => "rtn",
            PtqMethod::Mse => "mse",
            PtqMethod::Gptq => "gptq",
        }
    }
}

/// What one layer became.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    /// Tensor path.
    pub name: String,
    /// `[out, in]`.
    pub shape: [usize; 2],
    /// Format from the bit map.
    pub format: LayerFormat,
    /// The bit-map pattern that chose the format (`None`: the default).
    pub rule: Option<String>,
    /// How it was rounded (`twn` for ternary, `none` for float).
    pub method: &'static str,
    /// Bytes of codes, scales and zero points (of the float weight for float layers).
    pub packed_bytes: usize,
    /// Relative RMS error of the dequantized weight.
    pub relative_rmse: f64,
}

/// Paths of the layers a bit map applies to, in the model's order (for Whisper: every linear
/// layer, then the tied token embedding).
pub fn quantizable_layers<M: Layers + ?Sized>(model: &M) -> Vec<String> {
    model.layers().into_iter().map(|l| l.name).collect()
}

/// The bit map's choice for each quantizable layer of `model`. Layers whose role is not
/// [quantized by default](crate::models::LayerRole::quantized_by_default) (the token embedding,
/// the largest matrix of a small Whisper and its output projection) are quantized only when a
/// rule names them exactly.
pub fn resolve_bit_map<M: Layers + ?Sized>(
    model: &M,
    bit_map: &BitMap,
) -> Result<Vec<ResolvedLayer>> {
    let layers = model.layers();
    let names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    let explicit: Vec<&str> = layers
        .iter()
        .filter(|l| !l.role.quantized_by_default())
        .map(|l| l.name.as_str())
        .collect();
    bit_map.resolve(&names, &explicit)
}

/// Quantize the linear layers of `model` in place as `bit_map` says. `calibration` is needed
/// (and only used) for [`PtqMethod::Gptq`].
pub fn quantize_linears<M: Layers + ?Sized>(
    model: &mut M,
    bit_map: &BitMap,
    method: PtqMethod,
    calibration: Option<&Calibration>,
) -> Result<Vec<LayerReport>> {
    let resolved = resolve_bit_map(model, bit_map)?;
    if method == PtqMethod::Gptq && calibration.is_none() {
        return Err(Error::config(
            "--method gptq",
            "GPTQ needs calibration audio (--calib DATASET)",
        ));
    }
    let mut reports = Vec::new();
    for (model_layer, layer) in model.layers_mut().into_iter().zip(resolved) {
        let (name, linear) = (model_layer.name, model_layer.linear);
        debug_assert_eq!(name, layer.name);
        let (rows, cols) = linear.weight.dims();
        let kernel_err = |e: whittle_kernels::KernelError| Error::config(&name, e.to_string());
        let (Some(granularity), Some(layout)) = (layer.format.granularity(), layer.format.layout())
        else {
            reports.push(LayerReport {
                name,
                shape: [rows, cols],
                format: layer.format,
                rule: layer.rule,
                method: "none",
                packed_bytes: linear.weight.storage_bytes(),
                relative_rmse: 0.0,
            });
            continue;
        };
        if matches!(linear.weight, crate::nn::Weight::Packed(_)) {
            return Err(Error::config(
                &name,
                "is already packed; quantize the original float model",
            ));
        }
        let w = linear.float_weight_values()?;
        let (q, used) = match layer.format {
            LayerFormat::Ternary { .. } => (
                TernaryQuantizer { granularity }
                    .quantize(&w, rows, cols)
                    .map_err(kernel_err)?,
                "twn",
            ),
            LayerFormat::Uniform {
                bits, symmetric, ..
            } => {
                let mut quantizer = if symmetric {
                    UniformQuantizer::symmetric(bits, granularity)
                } else {
                    UniformQuantizer::asymmetric(bits, granularity)
                }
                .map_err(kernel_err)?;
                match method {
                    PtqMethod::Rtn => (
                        quantizer.quantize(&w, rows, cols).map_err(kernel_err)?,
                        "rtn",
                    ),
                    PtqMethod::Mse => {
                        quantizer = quantizer.with_scale_search(ScaleSearch::MSE_DEFAULT);
                        (
                            quantizer.quantize(&w, rows, cols).map_err(kernel_err)?,
                            "mse",
                        )
                    }
                    PtqMethod::Gptq => {
                        let hessian = calibration
                            .and_then(|c| c.hessians.get(&name))
                            .filter(|h| h.samples() > 0)
                            .ok_or_else(|| {
                                Error::config(&name, "no calibration inputs reached this layer")
                            })?
                            .finish();
                        (
                            Gptq::new(quantizer)
                                .quantize(&w, rows, cols, &hessian)
                                .map_err(kernel_err)?,
                            "gptq",
                        )
                    }
                }
            }
            LayerFormat::Float => unreachable!("float layers have no granularity"),
        };
        let packed = PackedMatrix::pack_with(&q, layout).map_err(kernel_err)?;
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
            format: layer.format,
            rule: layer.rule,
            method: used,
            packed_bytes,
            relative_rmse: (err / norm.max(1e-30)).sqrt(),
        });
    }
    Ok(reports)
}
