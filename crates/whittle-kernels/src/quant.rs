//! Round-to-nearest and ternary quantizers for `[rows][cols]` f32 weight matrices.
//!
//! A quantizer is assembled from small parts, in the manner of Brevitas: a [`BitWidth`], a
//! [`ZeroPoint`] policy, a [`ScaleSearch`] (abs-max or MSE-optimal clipping) and a
//! [`Granularity`]. Rounding is round-to-nearest onto the code grid of the stored (f16-rounded)
//! scale, so codes are optimal for the scale that is actually saved.
//!
//! * Uniform: `w ≈ s * (q - z)`; symmetric uses `z = 2^(b-1)` and picks `s` so the
//!   largest-magnitude weight lands exactly on `-2^(b-1)` (the ggml `q4_0` convention, which keeps
//!   all `2^b` levels); asymmetric spans `[min, max]` (always including 0) with an integer `z`.
//! * MSE clipping: the range is shrunk by ratios `1.0, .., min_ratio` and the ratio with the
//!   smallest squared reconstruction error of the group is kept (as GPTQ's `mse` option).
//! * Ternary: Ternary Weight Networks (Li et al. 2016), `delta = 0.7 * mean|W|`,
//!   `alpha = mean(|W| : |W| > delta)`, codes for `{-alpha, 0, +alpha}`.
//!
//! # Shapes
//! Weights are row-major `[rows = out_features][cols = in_features]`; groups run along `cols`.

use half::f16;
use rayon::prelude::*;

use crate::error::{expect_len, KernelError, Result};
use crate::format::{Granularity, QuantFormat, Scheme};

/// Integer codes (one `u8` per weight, before packing) with their scales and zero points.
#[derive(Clone, Debug, PartialEq)]
pub struct QuantizedMatrix {
    rows: usize,
    cols: usize,
    format: QuantFormat,
    codes: Vec<u8>,
    scales: Vec<f16>,
    zero_points: Option<Vec<u8>>,
}

impl QuantizedMatrix {
    /// Assembles a matrix from its parts, checking every length and code range.
    pub fn from_parts(
        rows: usize,
        cols: usize,
        format: QuantFormat,
        codes: Vec<u8>,
        scales: Vec<f16>,
        zero_points: Option<Vec<u8>>,
    ) -> Result<Self> {
        format.validate()?;
        let weights = checked_weights(rows, cols)?;
        expect_len("codes", weights, codes.len())?;
        let groups =
            format
                .granularity
                .scale_count(rows, cols)
                .ok_or(KernelError::InvalidShape {
                    rows,
                    cols,
                    reason: "scale count overflows usize",
                })?;
        expect_len("scales", groups, scales.len())?;
        let max = format.scheme.max_code();
        check_codes("codes", &codes, max)?;
        match (&zero_points, format.scheme.has_zero_points()) {
            (Some(zeros), true) => {
                expect_len("zero_points", groups, zeros.len())?;
                check_codes("zero_points", zeros, max)?;
            }
            (None, false) => {}
            (Some(_), false) => {
                return Err(KernelError::InvalidFormat(format!(
                    "{:?} has an implicit zero point but zero points were given",
                    format.scheme
                )))
            }
            (None, true) => {
                return Err(KernelError::InvalidFormat(format!(
                    "{:?} needs zero points but none were given",
                    format.scheme
                )))
            }
        }
        Ok(QuantizedMatrix {
            rows,
            cols,
            format,
            codes,
            scales,
            zero_points,
        })
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Scheme and granularity.
    pub fn format(&self) -> QuantFormat {
        self.format
    }
    /// Row-major codes, one per weight.
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }
    /// Scales indexed by [`Granularity::scale_index`].
    pub fn scales(&self) -> &[f16] {
        &self.scales
    }
    /// Per-group zero points of asymmetric schemes.
    pub fn zero_points(&self) -> Option<&[u8]> {
        self.zero_points.as_deref()
    }

    /// Groups per row.
    pub fn groups_per_row(&self) -> usize {
        self.format.granularity.groups_per_row(self.cols)
    }

    /// Scale and zero point of a group, as used by `w = scale * (code - zero)`.
    pub fn group_params(&self, row: usize, group: usize) -> (f32, u8) {
        let index = self
            .format
            .granularity
            .scale_index(row, group, self.groups_per_row());
        let zero = match (&self.zero_points, self.format.scheme.implicit_zero_point()) {
            (_, Some(zero)) => zero,
            (Some(zeros), None) => zeros[index],
            (None, None) => 0,
        };
        (self.scales[index].to_f32(), zero)
    }

    /// Reconstructed f32 weights, row-major `[rows][cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        let group_len = self.format.granularity.group_len(self.cols).max(1);
        let mut out = vec![0.0f32; self.codes.len()];
        for (row, (out_row, code_row)) in out
            .chunks_exact_mut(self.cols.max(1))
            .zip(self.codes.chunks_exact(self.cols.max(1)))
            .enumerate()
        {
            for (group, (out_group, code_group)) in out_row
                .chunks_mut(group_len)
                .zip(code_row.chunks(group_len))
                .enumerate()
            {
                let (scale, zero) = self.group_params(row, group);
                for (w, &q) in out_group.iter_mut().zip(code_group) {
                    *w = dequantize_code(q, scale, zero);
                }
            }
        }
        out
    }
}

/// `scale * (code - zero)`, the one reconstruction rule of every scheme.
#[inline]
pub fn dequantize_code(code: u8, scale: f32, zero: u8) -> f32 {
    scale * (f32::from(code) - f32::from(zero))
}

pub(crate) fn checked_weights(rows: usize, cols: usize) -> Result<usize> {
    if rows == 0 || cols == 0 {
        return Err(KernelError::InvalidShape {
            rows,
            cols,
            reason: "matrix is empty",
        });
    }
    rows.checked_mul(cols).ok_or(KernelError::InvalidShape {
        rows,
        cols,
        reason: "rows * cols overflows usize",
    })
}

pub(crate) fn check_codes(what: &'static str, values: &[u8], max: u8) -> Result<()> {
    match values.iter().position(|&v| v > max) {
        Some(index) => Err(KernelError::CodeOutOfRange {
            what,
            index,
            value: values[index],
            max,
        }),
        None => Ok(()),
    }
}

pub(crate) fn check_finite(what: &'static str, values: &[f32]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        Some(index) => Err(KernelError::NonFinite { what, index }),
        None => Ok(()),
    }
}

/// Bit width of a uniform quantizer, 2..=8.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BitWidth(u8);

impl BitWidth {
    /// Validates the range 2..=8.
    pub fn new(bits: u8) -> Result<Self> {
        Scheme::Symmetric { bits }.validate()?;
        Ok(BitWidth(bits))
    }
    /// Number of bits.
    pub fn bits(self) -> u8 {
        self.0
    }
    /// Largest code, `2^bits - 1`.
    pub fn max_code(self) -> u8 {
        ((1u16 << self.0) - 1) as u8
    }
}

/// How the zero point is chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ZeroPoint {
    /// Implicit `2^(bits-1)`; the grid is symmetric around 0.
    Symmetric,
    /// Integer zero point per group, chosen from the group's min and max.
    Asymmetric,
}

/// How the scale of a group is found.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ScaleSearch {
    /// Cover the full range of the group.
    AbsMax,
    /// Try `steps` clip ratios from 1.0 down to `min_ratio` and keep the one with the smallest
    /// squared reconstruction error.
    MseClip {
        /// Number of ratios tried (>= 1).
        steps: usize,
        /// Smallest ratio, in (0, 1].
        min_ratio: f32,
    },
}

impl ScaleSearch {
    /// The usual grid: 11 ratios from 1.0 to 0.5.
    pub const MSE_DEFAULT: ScaleSearch = ScaleSearch::MseClip {
        steps: 11,
        min_ratio: 0.5,
    };
}

/// Scale (already rounded to f16 precision) and zero point of one group.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GroupParams {
    /// Scale as stored (f16 value widened to f32).
    pub scale: f32,
    /// Integer zero point.
    pub zero: u8,
}

impl GroupParams {
    /// Rounds `w` to the nearest code of this grid (the rounding part).
    #[inline]
    pub fn quantize(self, w: f32, max_code: u8) -> u8 {
        if self.scale == 0.0 {
            return self.zero;
        }
        let q = (w / self.scale).round() + f32::from(self.zero);
        q.clamp(0.0, f32::from(max_code)) as u8
    }

    /// Reconstructs a code.
    #[inline]
    pub fn dequantize(self, code: u8) -> f32 {
        dequantize_code(code, self.scale, self.zero)
    }
}

/// Uniform round-to-nearest quantizer built from parts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UniformQuantizer {
    /// Bit width.
    pub bits: BitWidth,
    /// Zero-point policy.
    pub zero_point: ZeroPoint,
    /// Which weights share a scale.
    pub granularity: Granularity,
    /// Scale search.
    pub scale_search: ScaleSearch,
}

impl UniformQuantizer {
    /// Symmetric abs-max quantizer.
    pub fn symmetric(bits: u8, granularity: Granularity) -> Result<Self> {
        Self::new(bits, ZeroPoint::Symmetric, granularity, ScaleSearch::AbsMax)
    }

    /// Asymmetric min-max quantizer.
    pub fn asymmetric(bits: u8, granularity: Granularity) -> Result<Self> {
        Self::new(
            bits,
            ZeroPoint::Asymmetric,
            granularity,
            ScaleSearch::AbsMax,
        )
    }

    /// General constructor; validates every part.
    pub fn new(
        bits: u8,
        zero_point: ZeroPoint,
        granularity: Granularity,
        scale_search: ScaleSearch,
    ) -> Result<Self> {
        let quantizer = UniformQuantizer {
            bits: BitWidth::new(bits)?,
            zero_point,
            granularity,
            scale_search,
        };
        quantizer.format().validate()?;
        if let ScaleSearch::MseClip { steps, min_ratio } = scale_search {
            if steps == 0 || !(min_ratio > 0.0 && min_ratio <= 1.0) {
                return Err(KernelError::InvalidFormat(format!(
                    "MSE clip search needs steps >= 1 and min_ratio in (0, 1], got {steps} and {min_ratio}"
                )));
            }
        }
        Ok(quantizer)
    }

    /// Same quantizer with MSE-optimal clipping.
    pub fn with_scale_search(mut self, scale_search: ScaleSearch) -> Self {
        self.scale_search = scale_search;
        self
    }

    /// The format of the codes this quantizer produces.
    pub fn format(&self) -> QuantFormat {
        let bits = self.bits.bits();
        QuantFormat {
            scheme: match self.zero_point {
                ZeroPoint::Symmetric => Scheme::Symmetric { bits },
                ZeroPoint::Asymmetric => Scheme::Asymmetric { bits },
            },
            granularity: self.granularity,
        }
    }

    /// Grid covering `values` clipped by `ratio` (1.0 = full range).
    fn params_for_ratio(&self, values: &[f32], ratio: f32) -> Result<GroupParams> {
        let max_code = self.bits.max_code();
        let (scale, zero) = match self.zero_point {
            ZeroPoint::Symmetric => {
                // Signed extreme mapped onto the most negative code.
                let extreme =
                    values
                        .iter()
                        .copied()
                        .fold(0.0f32, |acc, v| if v.abs() > acc.abs() { v } else { acc });
                let half = f32::from(1u8 << (self.bits.bits() - 1));
                (extreme * ratio / -half, 1u8 << (self.bits.bits() - 1))
            }
            ZeroPoint::Asymmetric => {
                let min = values.iter().copied().fold(0.0f32, f32::min) * ratio;
                let max = values.iter().copied().fold(0.0f32, f32::max) * ratio;
                let scale = (max - min) / f32::from(max_code);
                let scale = round_to_f16(scale)?;
                let zero = if scale == 0.0 {
                    0.0
                } else {
                    (-min / scale).round().clamp(0.0, f32::from(max_code))
                };
                (scale, zero as u8)
            }
        };
        Ok(GroupParams {
            scale: round_to_f16(scale)?,
            zero,
        })
    }

    /// Scale and zero point for one group of weights (the scale and zero-point parts).
    pub fn group_params(&self, values: &[f32]) -> Result<GroupParams> {
        match self.scale_search {
            ScaleSearch::AbsMax => self.params_for_ratio(values, 1.0),
            ScaleSearch::MseClip { steps, min_ratio } => {
                let max_code = self.bits.max_code();
                let mut best = self.params_for_ratio(values, 1.0)?;
                let mut best_err = squared_error(values, best, max_code);
                for step in 1..steps {
                    let ratio = 1.0 - (1.0 - min_ratio) * step as f32 / (steps - 1) as f32;
                    let params = self.params_for_ratio(values, ratio)?;
                    let err = squared_error(values, params, max_code);
                    if err < best_err {
                        best = params;
                        best_err = err;
                    }
                }
                Ok(best)
            }
        }
    }

    /// Quantizes a row-major `[rows][cols]` matrix.
    pub fn quantize(&self, weights: &[f32], rows: usize, cols: usize) -> Result<QuantizedMatrix> {
        let format = self.format();
        let max_code = self.bits.max_code();
        quantize_groups(weights, rows, cols, format, |group| {
            let params = self.group_params(group)?;
            Ok((
                params,
                group
                    .iter()
                    .map(|&w| params.quantize(w, max_code))
                    .collect(),
            ))
        })
    }
}

fn squared_error(values: &[f32], params: GroupParams, max_code: u8) -> f64 {
    values
        .iter()
        .map(|&w| {
            let err = f64::from(w - params.dequantize(params.quantize(w, max_code)));
            err * err
        })
        .sum()
}

/// Rounds a scale to f16 precision, rejecting values f16 cannot hold.
pub(crate) fn round_to_f16(scale: f32) -> Result<f32> {
    let stored = f16::from_f32(scale).to_f32();
    if stored.is_finite() {
        Ok(stored)
    } else {
        Err(KernelError::NonFinite {
            what: "scale (weights exceed the f16 scale range)",
            index: 0,
        })
    }
}

/// Ternary Weight Networks quantizer (`{-alpha, 0, +alpha}` per group).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TernaryQuantizer {
    /// Which weights share `alpha` (per row or group-wise are usual).
    pub granularity: Granularity,
}

/// TWN threshold factor: `delta = 0.7 * mean|W|`.
pub const TWN_DELTA_FACTOR: f32 = 0.7;

impl TernaryQuantizer {
    /// Format of the produced codes.
    pub fn format(&self) -> QuantFormat {
        QuantFormat {
            scheme: Scheme::Ternary,
            granularity: self.granularity,
        }
    }

    /// Closed-form TWN threshold and scale for one group.
    pub fn group_params(values: &[f32]) -> Result<(f32, f32)> {
        let mean_abs = values.iter().map(|v| f64::from(v.abs())).sum::<f64>() / values.len() as f64;
        let delta = TWN_DELTA_FACTOR * mean_abs as f32;
        let (sum, count) = values
            .iter()
            .filter(|v| v.abs() > delta)
            .fold((0.0f64, 0usize), |(s, n), v| {
                (s + f64::from(v.abs()), n + 1)
            });
        let alpha = if count == 0 {
            0.0
        } else {
            (sum / count as f64) as f32
        };
        Ok((delta, round_to_f16(alpha)?))
    }

    /// Quantizes a row-major `[rows][cols]` matrix.
    pub fn quantize(&self, weights: &[f32], rows: usize, cols: usize) -> Result<QuantizedMatrix> {
        quantize_groups(weights, rows, cols, self.format(), |group| {
            let (delta, alpha) = Self::group_params(group)?;
            let codes = group
                .iter()
                .map(|&w| {
                    if alpha == 0.0 {
                        1
                    } else if w > delta {
                        2
                    } else if w < -delta {
                        0
                    } else {
                        1
                    }
                })
                .collect();
            Ok((
                GroupParams {
                    scale: alpha,
                    zero: 1,
                },
                codes,
            ))
        })
    }
}

/// Runs `quantize_group` over every group (rows in parallel) and assembles the matrix.
/// Per-tensor granularity computes one set of parameters from the whole matrix.
fn quantize_groups<F>(
    weights: &[f32],
    rows: usize,
    cols: usize,
    format: QuantFormat,
    quantize_group: F,
) -> Result<QuantizedMatrix>
where
    F: Fn(&[f32]) -> Result<(GroupParams, Vec<u8>)> + Sync,
{
    format.validate()?;
    let weights_len = checked_weights(rows, cols)?;
    expect_len("weights", weights_len, weights.len())?;
    check_finite("weights", weights)?;
    let granularity = format.granularity;
    let with_zeros = format.scheme.has_zero_points();

    if granularity == Granularity::PerTensor {
        let (params, codes) = quantize_group(weights)?;
        return QuantizedMatrix::from_parts(
            rows,
            cols,
            format,
            codes,
            vec![f16::from_f32(params.scale)],
            with_zeros.then(|| vec![params.zero]),
        );
    }

    let group_len = granularity.group_len(cols);
    let per_row: Vec<(Vec<u8>, Vec<GroupParams>)> = weights
        .par_chunks_exact(cols)
        .map(|row| {
            let mut codes = Vec::with_capacity(cols);
            let mut params = Vec::with_capacity(granularity.groups_per_row(cols));
            for group in row.chunks(group_len) {
                let (p, c) = quantize_group(group)?;
                codes.extend_from_slice(&c);
                params.push(p);
            }
            Ok((codes, params))
        })
        .collect::<Result<_>>()?;

    let mut codes = Vec::with_capacity(weights_len);
    let mut scales = Vec::new();
    let mut zeros = Vec::new();
    for (row_codes, row_params) in per_row {
        codes.extend_from_slice(&row_codes);
        for p in row_params {
            scales.push(f16::from_f32(p.scale));
            zeros.push(p.zero);
        }
    }
    QuantizedMatrix::from_parts(
        rows,
        cols,
        format,
        codes,
        scales,
        with_zeros.then_some(zeros),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symmetric_maps_extreme_to_lowest_code() {
        let q = UniformQuantizer::symmetric(4, Granularity::PerRow).unwrap();
        let m = q.quantize(&[0.5, -1.0, 0.25, 0.0], 1, 4).unwrap();
        assert_eq!(m.codes(), &[12, 0, 10, 8]);
        assert_eq!(m.dequantize(), vec![0.5, -1.0, 0.25, 0.0]);
    }

    #[test]
    fn asymmetric_represents_zero_exactly() {
        let q = UniformQuantizer::asymmetric(3, Granularity::PerRow).unwrap();
        let m = q.quantize(&[0.1, 0.7, 0.0, 0.35], 1, 4).unwrap();
        assert_eq!(m.dequantize()[2], 0.0);
        assert!(m.zero_points().is_some());
    }

    #[test]
    fn all_zero_group_gives_zero_scale() {
        let q = UniformQuantizer::symmetric(4, Granularity::Group(32)).unwrap();
        let m = q.quantize(&[0.0; 64], 1, 64).unwrap();
        assert!(m.dequantize().iter().all(|&w| w == 0.0));
    }

    #[test]
    fn rejects_bad_input() {
        let q = UniformQuantizer::symmetric(4, Granularity::PerRow).unwrap();
        assert!(matches!(
            q.quantize(&[1.0, f32::NAN], 1, 2),
            Err(KernelError::NonFinite { index: 1, .. })
        ));
        assert!(matches!(
            q.quantize(&[1.0; 3], 2, 2),
            Err(KernelError::LengthMismatch { .. })
        ));
        assert!(matches!(
            q.quantize(&[], usize::MAX, 2),
            Err(KernelError::InvalidShape { .. })
        ));
        assert!(UniformQuantizer::symmetric(1, Granularity::PerRow).is_err());
    }
}
