//! Bounds-checked f32 matrix products over strided views of slices, for fused ops that multiply
//! sub-matrices in place (one head of a `[b, t, d]` activation, a transposed weight) where
//! candle would first copy each operand into a contiguous tensor. The products run on the `gemm`
//! crate, the kernels behind candle's own CPU matmul.

use candle_core::{Storage, Tensor};

/// A `rows x cols` matrix read from a slice: element `(i, j)` is `data[i * rs + j * cs]`.
#[derive(Clone, Copy)]
pub(crate) struct View<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> View<'a> {
    /// A strided view; panics if the last element lies outside `data` (a bug in the caller).
    pub(crate) fn new(data: &'a [f32], rows: usize, cols: usize, rs: usize, cs: usize) -> Self {
        if rows > 0 && cols > 0 {
            let last = (rows - 1) * rs + (cols - 1) * cs;
            assert!(
                last < data.len(),
                "view {rows}x{cols} (strides {rs}, {cs}) exceeds {} values",
                data.len()
            );
        }
        Self {
            data,
            rows,
            cols,
            rs,
            cs,
        }
    }

    /// The first `rows * cols` values of `data` in row-major order.
    pub(crate) fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose (no copy).
    pub(crate) fn t(self) -> Self {
        Self {
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
            ..self
        }
    }
}

/// `dst = a b` (or `dst += a b` with `accumulate`), times `scale`, where `dst` holds the
/// `[a.rows, b.cols]` result with row stride `dst_rs`. `threads > 1` splits the product over
/// rayon's pool; fused ops that already run one product per task pass 1.
pub(crate) fn matmul(
    dst: &mut [f32],
    dst_rs: usize,
    accumulate: bool,
    a: View,
    b: View,
    scale: f32,
    threads: usize,
) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(k, b.rows, "inner dimensions differ");
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        n <= dst_rs && (m - 1) * dst_rs + n <= dst.len(),
        "destination {m}x{n} (row stride {dst_rs}) exceeds {} values",
        dst.len()
    );
    if k == 0 {
        if !accumulate {
            dst.chunks_mut(dst_rs)
                .take(m)
                .for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
    let parallelism = if threads > 1 {
        gemm::Parallelism::Rayon(threads)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above keep every element gemm reads or writes inside the slices.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst.as_mut_ptr(),
            1,
            dst_rs as isize,
            accumulate,
            a.data.as_ptr(),
            a.cs as isize,
            a.rs as isize,
            b.data.as_ptr(),
            b.cs as isize,
            b.rs as isize,
            1.0,
            scale,
            false,
            false,
            false,
            parallelism,
        )
    }
}

/// Runs `f` on the values of a contiguous f32 CPU tensor.
pub(crate) fn with_values<R>(
    t: &Tensor,
    op: &str,
    f: impl FnOnce(&[f32]) -> R,
) -> candle_core::Result<R> {
    let (storage, layout) = t.storage_and_layout();
    match &*storage {
        Storage::Cpu(cpu) => Ok(f(super::fused::f32_data(cpu, layout, op)?)),
        _ => candle_core::bail!("{op}: needs a CPU tensor"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive `a b` of row-major matrices.
    fn reference(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        let mut out = vec![0f32; m * n];
        for i in 0..m {
            for j in 0..n {
                out[i * n + j] = (0..k).map(|p| a[i * k + p] * b[p * n + j]).sum();
            }
        }
        out
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104729) % 97) as f32 / 48.0 - 1.0)
            .collect()
    }

    fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..cols * rows)
            .map(|i| x[(i % rows) * cols + i / rows])
            .collect()
    }

    /// Transposed and strided operands, scaling and accumulation against the naive product.
    #[test]
    fn strided_products_match_the_naive_product() {
        let (m, k, n) = (5, 7, 3);
        let a = values(m * k, 1);
        let b = values(k * n, 2);
        let want = reference(&a, &b, m, k, n);
        // a stored transposed, b as columns 2..5 of a wider matrix.
        let at = transpose(&a, m, k);
        let mut wide = vec![9f32; k * 6];
        for p in 0..k {
            wide[p * 6 + 2..p * 6 + 2 + n].copy_from_slice(&b[p * n..(p + 1) * n]);
        }
        for threads in [1, 2] {
            let mut dst = vec![1f32; m * 4];
            matmul(
                &mut dst,
                4,
                true,
                View::rows(&at, k, m).t(),
                View::new(&wide[2..], k, n, 6, 1),
                0.5,
                threads,
            );
            for i in 0..m {
                for j in 0..n {
                    let expected = 1.0 + 0.5 * want[i * n + j];
                    let got = dst[i * 4 + j];
                    assert!(
                        (got - expected).abs() < 1e-5,
                        "({i}, {j}): {got} vs {expected}"
                    );
                }
                assert_eq!(
                    dst[i * 4 + 3],
                    1.0,
                    "column outside the product was written"
                );
            }
        }
    }

    #[test]
    #[should_panic(expected = "exceeds")]
    fn a_view_past_the_slice_is_refused() {
        View::new(&[0f32; 10], 3, 4, 4, 1);
    }
}
