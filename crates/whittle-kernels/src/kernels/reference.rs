//! Naive references: dequantize the whole matrix, then plain f32 dot products. Slow and simple;
//! the tests compare every kernel against these.

use super::check_operands;
use crate::error::{expect_len, Result};
use crate::pack::PackedMatrixRef;

/// `y = x · dequantize(W)^T + bias`.
pub fn matmul_naive(
    x: &[f32],
    m: usize,
    w: PackedMatrixRef<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    let dense = w.dequantize()?;
    matmul_f32_naive(x, m, &dense, w.rows, w.cols, bias, y)
}

/// `y = x · W^T + bias` with f32 `W: [n][k]`.
pub fn matmul_f32_naive(
    x: &[f32],
    m: usize,
    w: &[f32],
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    expect_len("w", crate::quant::checked_weights(n, k)?, w.len())?;
    check_operands(x, m, k, n, bias, y)?;
    for (x_row, y_row) in x.chunks_exact(k).zip(y.chunks_exact_mut(n)) {
        for (j, out) in y_row.iter_mut().enumerate() {
            let dot: f32 = x_row
                .iter()
                .zip(&w[j * k..(j + 1) * k])
                .map(|(a, b)| a * b)
                .sum();
            *out = dot + bias.map_or(0.0, |b| b[j]);
        }
    }
    Ok(())
}
