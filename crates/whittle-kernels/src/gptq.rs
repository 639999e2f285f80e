//! GPTQ: error-compensating post-training quantization (Frantar et al. 2022, "GPTQ: Accurate
//! Post-Training Quantization for Generative Pre-trained Transformers", Algorithm 1).
//!
//! Columns are quantized left to right; each column's rounding error, scaled by the inverse
//! Hessian, is pushed onto the not-yet-quantized columns. As in the reference implementation:
//! `H = 2/N X^T X` from calibration inputs, dead inputs (`H[i][i] == 0`) are zeroed, `H` is damped
//! by `percdamp * mean(diag H)`, the update uses the upper Cholesky factor of `H^-1`, updates are
//! applied lazily in blocks of 128 columns, and group-wise scales are computed when a group's
//! first column is reached (from the error-compensated weights). Rows are independent given
//! `H^-1`, so they run in parallel.
//!
//! # Shapes
//! Weights `[rows][cols]` row-major; Hessian `[cols][cols]`; calibration inputs `[n][cols]`.

use half::f16;
use rayon::prelude::*;

use crate::error::{expect_len, KernelError, Result};
use crate::format::Granularity;
use crate::linalg::inverse_cholesky_upper;
use crate::quant::{check_finite, checked_weights, GroupParams, QuantizedMatrix, UniformQuantizer};

/// Accumulates `H = 2/N sum x x^T` over calibration batches (the reference's `add_batch`).
#[derive(Clone, Debug)]
pub struct HessianAccumulator {
    cols: usize,
    samples: usize,
    sum: Vec<f64>,
}

impl HessianAccumulator {
    /// Empty accumulator for layers with `cols` input features.
    pub fn new(cols: usize) -> Self {
        HessianAccumulator {
            cols,
            samples: 0,
            sum: vec![0.0; cols * cols],
        }
    }

    /// Adds `n` input rows `x: [n][cols]`.
    pub fn add_batch(&mut self, x: &[f32], n: usize) -> Result<()> {
        expect_len("calibration inputs", n * self.cols, x.len())?;
        check_finite("calibration inputs", x)?;
        let cols = self.cols;
        for row in x.chunks_exact(cols) {
            for (i, &xi) in row.iter().enumerate() {
                if xi != 0.0 {
                    let xi = f64::from(xi);
                    for (h, &xj) in self.sum[i * cols..i * cols + i + 1].iter_mut().zip(row) {
                        *h += xi * f64::from(xj);
                    }
                }
            }
        }
        self.samples += n;
        Ok(())
    }

    /// Adds a precomputed Gram matrix `gram = X^T X: [cols][cols]` of `n` input rows (e.g. from a
    /// multithreaded matmul); only its lower triangle is read.
    pub fn add_gram(&mut self, gram: &[f32], n: usize) -> Result<()> {
        expect_len("gram matrix", self.cols * self.cols, gram.len())?;
        check_finite("gram matrix", gram)?;
        let cols = self.cols;
        for i in 0..cols {
            let row = i * cols;
            for (h, &g) in self.sum[row..=row + i].iter_mut().zip(&gram[row..=row + i]) {
                *h += f64::from(g);
            }
        }
        self.samples += n;
        Ok(())
    }

    /// Samples seen so far.
    pub fn samples(&self) -> usize {
        self.samples
    }

    /// The symmetric `[cols][cols]` matrix `2/N X^T X`.
    pub fn finish(&self) -> Vec<f64> {
        let cols = self.cols;
        let factor = if self.samples == 0 {
            0.0
        } else {
            2.0 / self.samples as f64
        };
        let mut h = vec![0.0; cols * cols];
        for i in 0..cols {
            for j in 0..=i {
                let v = self.sum[i * cols + j] * factor;
                h[i * cols + j] = v;
                h[j * cols + i] = v;
            }
        }
        h
    }
}

/// GPTQ settings around a uniform quantizer (which supplies bit width, zero point, granularity
/// and scale search).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gptq {
    /// Grid the weights are rounded onto.
    pub quantizer: UniformQuantizer,
    /// Columns per lazy update block (reference: 128).
    pub block_size: usize,
    /// Dampening as a fraction of the mean Hessian diagonal (reference: 0.01).
    pub percdamp: f64,
}

impl Gptq {
    /// Reference settings: block 128, percdamp 0.01.
    pub fn new(quantizer: UniformQuantizer) -> Self {
        Gptq {
            quantizer,
            block_size: 128,
            percdamp: 0.01,
        }
    }

    /// Quantizes `weights: [rows][cols]` given the Hessian `[cols][cols]` of its inputs.
    pub fn quantize(
        &self,
        weights: &[f32],
        rows: usize,
        cols: usize,
        hessian: &[f64],
    ) -> Result<QuantizedMatrix> {
        let format = self.quantizer.format();
        let weights_len = checked_weights(rows, cols)?;
        expect_len("weights", weights_len, weights.len())?;
        expect_len("hessian", cols * cols, hessian.len())?;
        check_finite("weights", weights)?;
        if let Some(index) = hessian.iter().position(|v| !v.is_finite()) {
            return Err(KernelError::NonFinite {
                what: "hessian",
                index,
            });
        }
        if self.block_size == 0 || self.percdamp.is_nan() || self.percdamp < 0.0 {
            return Err(KernelError::InvalidFormat(format!(
                "GPTQ needs block_size >= 1 and percdamp >= 0, got {} and {}",
                self.block_size, self.percdamp
            )));
        }

        let mut h = hessian.to_vec();
        let dead: Vec<bool> = (0..cols).map(|i| h[i * cols + i] == 0.0).collect();
        for (i, _) in dead.iter().enumerate().filter(|(_, &d)| d) {
            h[i * cols + i] = 1.0;
        }
        let mean_diag = (0..cols).map(|i| h[i * cols + i]).sum::<f64>() / cols as f64;
        let damp = self.percdamp * mean_diag;
        for i in 0..cols {
            h[i * cols + i] += damp;
        }
        let h_inv_upper = inverse_cholesky_upper(&h, cols)?;

        let granularity = format.granularity;
        let tensor_params = match granularity {
            Granularity::PerTensor => Some(self.quantizer.group_params(weights)?),
            _ => None,
        };
        let per_row: Vec<(Vec<u8>, Vec<GroupParams>)> = weights
            .par_chunks_exact(cols)
            .map(|row| self.quantize_row(row, &dead, &h_inv_upper, tensor_params))
            .collect::<Result<_>>()?;

        let mut codes = Vec::with_capacity(weights_len);
        let mut scales = Vec::new();
        let mut zeros = Vec::new();
        for (row_codes, row_params) in per_row {
            codes.extend_from_slice(&row_codes);
            if tensor_params.is_none() {
                scales.extend(row_params.iter().map(|p| f16::from_f32(p.scale)));
                zeros.extend(row_params.iter().map(|p| p.zero));
            }
        }
        if let Some(p) = tensor_params {
            scales.push(f16::from_f32(p.scale));
            zeros.push(p.zero);
        }
        let zeros = format.scheme.has_zero_points().then_some(zeros);
        QuantizedMatrix::from_parts(rows, cols, format, codes, scales, zeros)
    }

    /// GPTQ on one row; returns its codes and the parameters of each of its groups.
    fn quantize_row(
        &self,
        row: &[f32],
        dead: &[bool],
        u: &[f64],
        tensor_params: Option<GroupParams>,
    ) -> Result<(Vec<u8>, Vec<GroupParams>)> {
        let cols = row.len();
        let max_code = self.quantizer.bits.max_code();
        let group_len = self.quantizer.granularity.group_len(cols);
        let mut w: Vec<f64> = row
            .iter()
            .zip(dead)
            .map(|(&v, &d)| if d { 0.0 } else { f64::from(v) })
            .collect();
        let mut codes = vec![0u8; cols];
        let mut params_per_group = Vec::with_capacity(cols.div_ceil(group_len));
        let mut params = match tensor_params {
            Some(p) => p,
            // Per-row: parameters from the whole (dead-zeroed) row before any update.
            None => self.quantizer.group_params(&to_f32(&w))?,
        };
        let mut scratch = Vec::with_capacity(group_len);
        let mut block_err = vec![0.0f64; self.block_size];

        for start in (0..cols).step_by(self.block_size) {
            let end = (start + self.block_size).min(cols);
            for i in start..end {
                if tensor_params.is_none() && i % group_len == 0 {
                    if matches!(self.quantizer.granularity, Granularity::Group(_)) {
                        scratch.clear();
                        scratch.extend(w[i..(i + group_len).min(cols)].iter().map(|&v| v as f32));
                        params = self.quantizer.group_params(&scratch)?;
                    }
                    params_per_group.push(params);
                }
                let code = params.quantize(w[i] as f32, max_code);
                codes[i] = code;
                let err = (w[i] - f64::from(params.dequantize(code))) / u[i * cols + i];
                // Compensate the rest of this block now; later blocks lazily below.
                let u_row = &u[i * cols..(i + 1) * cols];
                for (wj, &uij) in w[i + 1..end].iter_mut().zip(&u_row[i + 1..end]) {
                    *wj -= err * uij;
                }
                block_err[i - start] = err;
            }
            for (offset, &err) in block_err[..end - start].iter().enumerate() {
                let i = start + offset;
                let u_row = &u[i * cols..(i + 1) * cols];
                for (wj, &uij) in w[end..].iter_mut().zip(&u_row[end..]) {
                    *wj -= err * uij;
                }
            }
        }
        Ok((codes, params_per_group))
    }
}

fn to_f32(values: &[f64]) -> Vec<f32> {
    values.iter().map(|&v| v as f32).collect()
}
