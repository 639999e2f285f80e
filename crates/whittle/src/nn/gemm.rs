//! Bounds-checked f32 matrix products over strided views of slices, for fused ops that multiply
//! sub-matrices in place (one head of a `[b, t, d]` activation, a transposed weight) where
//! candle would first copy each operand into a contiguous tensor. The products run on the `gemm`
//! crate, the kernels behind candle's own CPU matmul, or, in a build with the cargo feature
//! `openblas` and `WHITTLE_GEMM=openblas`, on the system's OpenBLAS (`cblas_sgemm`; Debian's
//! `libopenblas-serial-dev`, which `scripts/setup.sh` installs): see [`GemmBackend`].

use std::sync::OnceLock;

use candle_core::{Storage, Tensor};

/// The library behind the dense f32 products of the fused training ops.
///
/// The `gemm` crate is the default on every CPU: on the AMD Zen 4 machine measured
/// (BENCHMARKS.md, "Dense f32 products"), it runs Whisper's training shapes at 103-112 GFLOP/s
/// per core, and Debian's OpenBLAS 0.3.21 is 4-10 % slower (one shape 6 % faster). A build with the `openblas`
/// feature takes OpenBLAS when `WHITTLE_GEMM=openblas` (on a CPU where `whittle bench gemm`
/// shows it faster); the choice is fixed for the process, so a resumed run computes as the
/// first did when the variable is the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GemmBackend {
    /// The `gemm` crate (candle's CPU matmul), with its own run-time ISA dispatch.
    GemmCrate,
    /// The system's OpenBLAS, single-threaded per call (rows split over rayon here).
    OpenBlas,
}

impl GemmBackend {
    /// Every backend this build has.
    pub fn available() -> Vec<GemmBackend> {
        let mut all = vec![GemmBackend::GemmCrate];
        if cfg!(feature = "openblas") {
            all.push(GemmBackend::OpenBlas);
        }
        all
    }

    /// The backend in use: `WHITTLE_GEMM` if it names an available one, else the `gemm`
    /// crate.
    pub fn current() -> GemmBackend {
        static CHOSEN: OnceLock<GemmBackend> = OnceLock::new();
        *CHOSEN.get_or_init(|| {
            let available = Self::available();
            let default = GemmBackend::GemmCrate;
            match std::env::var("WHITTLE_GEMM").ok().as_deref() {
                None | Some("") => default,
                Some(name) => match available.iter().find(|b| b.name() == name) {
                    Some(b) => *b,
                    None => {
                        tracing::warn!(
                            "WHITTLE_GEMM={name} is not one of this build's backends ({}); using {}",
                            available.iter().map(|b| b.name()).collect::<Vec<_>>().join(", "),
                            default.name()
                        );
                        default
                    }
                },
            }
        })
    }

    /// The name `WHITTLE_GEMM` takes.
    pub fn name(self) -> &'static str {
        match self {
            GemmBackend::GemmCrate => "gemm",
            GemmBackend::OpenBlas => "openblas",
        }
    }
}

/// `y = x W^T` for row-major `x` `[m, k]` and `w` `[n, k]` (a linear layer's layout) on
/// `backend`, with the product split over `threads` (for `whittle bench gemm`).
#[allow(clippy::too_many_arguments)]
pub fn linear_product(
    backend: GemmBackend,
    x: &[f32],
    m: usize,
    w: &[f32],
    n: usize,
    k: usize,
    y: &mut [f32],
    threads: usize,
) {
    matmul_on(
        backend,
        y,
        n,
        false,
        View::rows(x, m, k),
        View::rows(w, n, k).t(),
        1.0,
        threads,
    );
}

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
    matmul_on(
        GemmBackend::current(),
        dst,
        dst_rs,
        accumulate,
        a,
        b,
        scale,
        threads,
    );
}

/// [`matmul`] on a chosen backend.
#[allow(clippy::too_many_arguments)]
fn matmul_on(
    backend: GemmBackend,
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
    #[cfg(feature = "openblas")]
    if backend == GemmBackend::OpenBlas
        && openblas::matmul(dst, dst_rs, accumulate, a, b, scale, threads)
    {
        return;
    }
    #[cfg(not(feature = "openblas"))]
    let _ = backend;
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

/// The products on OpenBLAS's `cblas_sgemm` (row-major), for operands with a unit stride.
#[cfg(feature = "openblas")]
mod openblas {
    use std::os::raw::c_int;

    use rayon::prelude::*;

    use super::View;

    const ROW_MAJOR: c_int = 101;
    const NO_TRANS: c_int = 111;
    const TRANS: c_int = 112;

    #[link(name = "openblas")]
    extern "C" {
        fn cblas_sgemm(
            layout: c_int,
            trans_a: c_int,
            trans_b: c_int,
            m: c_int,
            n: c_int,
            k: c_int,
            alpha: f32,
            a: *const f32,
            lda: c_int,
            b: *const f32,
            ldb: c_int,
            beta: f32,
            c: *mut f32,
            ldc: c_int,
        );
    }

    /// How BLAS reads `v` as a row-major operand: transposed or not, and its leading dimension;
    /// `None` when neither stride is 1 (the `gemm` crate takes those).
    fn operand(v: View) -> Option<(c_int, c_int)> {
        let ld = if v.cs == 1 && (v.rows <= 1 || v.rs >= v.cols) {
            (NO_TRANS, v.rs.max(v.cols).max(1))
        } else if v.rs == 1 && (v.cols <= 1 || v.cs >= v.rows) {
            (TRANS, v.cs.max(v.rows).max(1))
        } else {
            return None;
        };
        Some((ld.0, c_int::try_from(ld.1).ok()?))
    }

    /// `rows` rows of `a` from row `first` (row `i` starts at element `i * rs`, whether `a` is
    /// stored plainly or transposed).
    fn rows_of(a: View, first: usize, rows: usize) -> View {
        View {
            data: &a.data[first * a.rs..],
            rows,
            ..a
        }
    }

    /// `dst (+)= scale a b` as [`super::matmul`] states it; `false` (nothing written) when
    /// an operand has no unit stride or a size exceeds BLAS's `int`.
    pub(super) fn matmul(
        dst: &mut [f32],
        dst_rs: usize,
        accumulate: bool,
        a: View,
        b: View,
        scale: f32,
        threads: usize,
    ) -> bool {
        let (m, k, n) = (a.rows, a.cols, b.cols);
        let fits = |x: usize| c_int::try_from(x).is_ok();
        let (Some(_), Some(_)) = (operand(a), operand(b)) else {
            return false;
        };
        if !(fits(m) && fits(n) && fits(k) && fits(dst_rs)) {
            return false;
        }
        // Whole rows per task, at least 64 rows each (a product that small gains nothing from
        // a split).
        let tasks = threads.min(m.div_ceil(64)).max(1);
        let per_task = m.div_ceil(tasks);
        let mut chunks = Vec::with_capacity(tasks);
        let mut rest = dst;
        for first in (0..m).step_by(per_task) {
            let rows = per_task.min(m - first);
            let take = if first + rows == m {
                rest.len()
            } else {
                rows * dst_rs
            };
            let (head, tail) = std::mem::take(&mut rest).split_at_mut(take);
            chunks.push((first, rows, head));
            rest = tail;
        }
        let run = |(first, rows, out): (usize, usize, &mut [f32])| {
            let part = rows_of(a, first, rows);
            let ((ta, lda), (tb, ldb)) = (
                operand(part).expect("checked above"),
                operand(b).expect("checked above"),
            );
            // SAFETY: `super::matmul` checked that every element of `a`, `b` and `dst` that a
            // product of these shapes and strides touches lies inside the slices; `part` and
            // `out` cover rows `first..first + rows` of them.
            unsafe {
                cblas_sgemm(
                    ROW_MAJOR,
                    ta,
                    tb,
                    rows as c_int,
                    n as c_int,
                    k as c_int,
                    scale,
                    part.data.as_ptr(),
                    lda,
                    b.data.as_ptr(),
                    ldb,
                    if accumulate { 1.0 } else { 0.0 },
                    out.as_mut_ptr(),
                    dst_rs as c_int,
                );
            }
        };
        if chunks.len() == 1 {
            chunks.into_iter().for_each(run);
        } else {
            chunks.into_par_iter().for_each(run);
        }
        true
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

    /// Operands `a` `[m, k]` and `b` `[k, n]` from `seed`, their naive product and `a`
    /// stored transposed.
    fn operands(m: usize, k: usize, n: usize, seed: usize) -> [Vec<f32>; 4] {
        let a = values(m * k, seed);
        let b = values(k * n, seed + 1);
        let want = reference(&a, &b, m, k, n);
        let at = transpose(&a, m, k);
        [a, b, want, at]
    }

    /// Transposed and strided operands, scaling and accumulation against the naive product.
    #[test]
    fn strided_products_match_the_naive_product() {
        let (m, k, n) = (5, 7, 3);
        let [_, b, want, at] = operands(m, k, n, 1);
        // a stored transposed, b as columns 2..5 of a wider matrix.
        let mut wide = vec![9f32; k * 6];
        for p in 0..k {
            wide[p * 6 + 2..p * 6 + 2 + n].copy_from_slice(&b[p * n..(p + 1) * n]);
        }
        for (backend, threads) in GemmBackend::available()
            .into_iter()
            .flat_map(|b| [(b, 1), (b, 2)])
        {
            let mut dst = vec![1f32; m * 4];
            matmul_on(
                backend,
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

    /// Every backend on the fused ops' operand shapes (plain, transposed, neither stride 1,
    /// overwritten and accumulated), at sizes that split over threads, many products at once
    /// (the OpenBLAS build is called from several rayon threads concurrently).
    #[test]
    fn every_backend_computes_the_product_concurrently() {
        use rayon::prelude::*;
        let (m, k, n) = (300, 70, 50);
        let [a, b, want, at] = operands(m, k, n, 3);
        let bt = transpose(&b, k, n);
        // b with both strides 2: only the gemm crate reads it.
        let mut sparse_b = vec![0f32; 4 * k * n];
        for p in 0..k {
            for j in 0..n {
                sparse_b[2 * (p * 2 * n + j)] = b[p * n + j];
            }
        }
        for backend in GemmBackend::available() {
            let failures: Vec<String> = (0..16usize)
                .into_par_iter()
                .filter_map(|case| {
                    let a_view = if case % 2 == 0 {
                        View::rows(&a, m, k)
                    } else {
                        View::rows(&at, k, m).t()
                    };
                    let b_view = match case % 3 {
                        0 => View::rows(&b, k, n),
                        1 => View::rows(&bt, n, k).t(),
                        _ => View::new(&sparse_b, k, n, 4 * n, 2),
                    };
                    let accumulate = case % 4 >= 2;
                    let mut dst = vec![2f32; m * n];
                    matmul_on(
                        backend,
                        &mut dst,
                        n,
                        accumulate,
                        a_view,
                        b_view,
                        1.5,
                        1 + case % 2,
                    );
                    let base = if accumulate { 2.0 } else { 0.0 };
                    let worst = dst
                        .iter()
                        .zip(&want)
                        .map(|(g, w)| (g - (base + 1.5 * w)).abs())
                        .fold(0f32, f32::max);
                    (worst > 1e-3).then(|| format!("case {case}: off by {worst}"))
                })
                .collect();
            assert!(failures.is_empty(), "{backend:?}: {failures:?}");
        }
    }

    #[test]
    #[should_panic(expected = "exceeds")]
    fn a_view_past_the_slice_is_refused() {
        View::new(&[0f32; 10], 3, 4, 4, 1);
    }
}
