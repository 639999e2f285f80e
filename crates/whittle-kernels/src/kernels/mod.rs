//! Matrix kernels `y = x · W^T (+ bias)` that read packed weights directly.
//!
//! * Matrix-vector (`m <=` [`GEMV_MAX_ROWS`], the Whisper decoder): memory bound. Each row of `x`
//!   is quantized to int8 per 32-weight block (ggml's `q8_0` idea) and multiplied with integer
//!   dot products, four weight rows at a time (details in the `gemv` module). The only deviation
//!   from the exact product is the activation rounding, bounded by `sum_b s_x[b]/2 * sum |w|`.
//! * Matrix-matrix (the encoder, `m = 1500`): compute bound. Panels of `W` are dequantized once
//!   into an f32 buffer and shared by all rows of `x`, which run through the same register-blocked
//!   FMA micro-kernel (4 rows of `x` by 3 rows of `W`) as the f32 baseline; results equal the
//!   f32 product of the dequantized weights up to summation order.
//! * [`matmul_q8`] (what the models call) rounds every row of `x` to int8 as the matrix-vector
//!   path does; from [`VNNI_GEMM_MIN_ROWS`] rows on a CPU with AVX-512 VNNI it repacks `W` into
//!   `vpdpbusd` panels once per call and runs a 4 x 16 int8 micro-tile (the `gemm_q8` module),
//!   elsewhere it runs the matrix-vector tiles for every row of `x`, one weight panel at a time.
//!   Below [`VNNI_GEMM_MIN_ROWS`] every output row equals the one-row product bit for bit (the
//!   VNNI kernel sums the same int8 products in another order), so batched decoding gives the
//!   tokens of one-sequence decoding.
//! * [`matmul_f32`] is the plain f32 baseline with the same threading, for benchmark ratios.
//!
//! Every kernel has an AVX2+FMA version (picked at run time with `is_x86_feature_detected!`) and
//! a portable scalar version; [`mod@reference`] holds the naive dequantize-then-dot references the
//! tests compare against.
//!
//! # Shapes
//! `x: [m][k]`, `W: [n][k]` (packed or f32), `bias: [n]`, `y: [m][n]`, all row-major.

mod avx2;
mod gemm_q8;
mod gemv;
pub mod reference;
mod sparse;
mod vnni;

use rayon::prelude::*;

use crate::error::{expect_len, KernelError, Result};
use crate::pack::PackedMatrixRef;

/// Largest `m` handled by the matrix-vector path (one int8 pass over `W` per row of `x`).
pub const GEMV_MAX_ROWS: usize = 3;

/// Multiply-adds below which a call stays on the calling thread (thread hand-off costs more).
const MIN_PARALLEL_WORK: usize = 1 << 18;

/// AVX2 row softmax for [`crate::activations`] (callers check [`Isa::is_available`]).
pub(crate) fn avx2_softmax_row(row: &mut [f32]) {
    avx2::softmax_row(row)
}

/// AVX2 GELU for [`crate::activations`] (callers check [`Isa::is_available`]).
pub(crate) fn avx2_gelu(values: &mut [f32]) {
    avx2::gelu(values)
}

/// Instruction set a kernel runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust.
    Scalar,
    /// x86-64 AVX2 + FMA.
    Avx2Fma,
    /// [`Isa::Avx2Fma`] plus AVX-512 VNNI (`vpdpbusd` on 256-bit registers, AVX512VL): the
    /// int8 matrix-matrix kernel of [`matmul_q8`] (the encoder); other kernels run on AVX2.
    Avx512Vnni,
}

/// The sparse ternary kernel [`Isa::detect`]'s choice runs on this CPU (the rule of the
/// packed matrix-vector plan).
pub fn sparse_ternary_isa() -> &'static str {
    let isa = Isa::detect();
    if isa == Isa::Avx512Vnni && sparse::avx512_available() {
        "AVX-512 BW/VL opmasks"
    } else if isa.without_vnni() == Isa::Avx2Fma && sparse::available() {
        "AVX2+BMI2"
    } else {
        "scalar"
    }
}

impl Isa {
    /// Best instruction set of this CPU.
    pub fn detect() -> Isa {
        if Isa::Avx512Vnni.is_available() {
            Isa::Avx512Vnni
        } else if Isa::Avx2Fma.is_available() {
            Isa::Avx2Fma
        } else {
            Isa::Scalar
        }
    }

    /// Whether this CPU can run kernels for `self`.
    pub fn is_available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2Fma => avx2::available(),
            Isa::Avx512Vnni => avx2::available() && vnni::available(),
        }
    }

    /// The instruction set of the kernels that have no VNNI version.
    pub(crate) fn without_vnni(self) -> Isa {
        match self {
            Isa::Avx512Vnni => Isa::Avx2Fma,
            other => other,
        }
    }

    fn require(self) -> Result<()> {
        if self.is_available() {
            Ok(())
        } else {
            Err(KernelError::InvalidFormat(format!(
                "{self:?} kernels are not supported by this CPU"
            )))
        }
    }
}

/// `y[m][n] = x[m][k] · W^T + bias` with packed `W: [n][k]`, on the best available ISA.
pub fn matmul(
    x: &[f32],
    m: usize,
    w: PackedMatrixRef<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    matmul_with(Isa::detect(), x, m, w, bias, y)
}

/// [`matmul`] on a chosen instruction set (tests use it to check every path).
pub fn matmul_with(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: PackedMatrixRef<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    w.validate()?;
    matmul_valid(isa, x, m, w, bias, y)
}

/// [`matmul`] with an owned packed matrix (valid by construction, so not validated again;
/// see [`matmul_q8_packed`]).
pub fn matmul_packed(
    x: &[f32],
    m: usize,
    w: &crate::pack::PackedMatrix,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    matmul_valid(Isa::detect(), x, m, w.as_ref(), bias, y)
}

/// [`matmul_packed`] on a chosen instruction set (benchmarks compare the paths).
pub fn matmul_packed_with(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: &crate::pack::PackedMatrix,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    matmul_valid(isa, x, m, w.as_ref(), bias, y)
}

/// [`matmul_with`] after `w` was validated.
fn matmul_valid(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: PackedMatrixRef<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    isa.require()?;
    check_operands(x, m, w.cols, w.rows, bias, y)?;
    if m <= GEMV_MAX_ROWS {
        for (x_row, y_row) in x.chunks_exact(w.cols).zip(y.chunks_exact_mut(w.rows)) {
            gemv::gemv_packed(isa, x_row, w, bias, y_row);
        }
    } else {
        gemm(isa, x, m, Weights::Packed(w), bias, y);
    }
    Ok(())
}

/// `y[m][n] = x[m][k] · W^T + bias` with packed `W` and int8 activations for every `m`: each
/// row of `x` is rounded to int8 per 32-value block, as the matrix-vector path does, and
/// multiplied with integer dot products. Faster than [`matmul`] for `m` > [`GEMV_MAX_ROWS`]
/// (the encoder), at the price of the activation rounding bounded in the module docs.
pub fn matmul_q8(
    x: &[f32],
    m: usize,
    w: PackedMatrixRef<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    matmul_q8_with(Isa::detect(), x, m, w, bias, y)
}

/// [`matmul_q8`] on a chosen instruction set.
pub fn matmul_q8_with(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: PackedMatrixRef<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    w.validate()?;
    matmul_q8_valid(isa, x, m, w, bias, y)
}

/// [`matmul_q8`] with an owned packed matrix, which is valid by construction: the per-call
/// validation of a borrowed view is skipped. That validation scans every code for layouts
/// wider than their scheme (ternary in 2 bits) and walks the offset table of the sparse
/// ternary layout, which costs as much as the product itself at decoder sizes; models call
/// this.
pub fn matmul_q8_packed(
    x: &[f32],
    m: usize,
    w: &crate::pack::PackedMatrix,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    matmul_q8_valid(Isa::detect(), x, m, w.as_ref(), bias, y)
}

/// [`matmul_q8_with`] after `w` was validated.
fn matmul_q8_valid(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: PackedMatrixRef<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    isa.require()?;
    check_operands(x, m, w.cols, w.rows, bias, y)?;
    if m == 1 {
        gemv::gemv_packed(isa, x, w, bias, y);
    } else if isa == Isa::Avx512Vnni && m >= VNNI_GEMM_MIN_ROWS {
        gemm_q8::gemm_vnni(x, m, w, bias, y);
    } else {
        gemv::gemm_packed_q8(isa, x, m, w, bias, y);
    }
    Ok(())
}

/// Rows of `x` from which [`matmul_q8`] repacks the weight into `vpdpbusd` panels. Below it the
/// matrix-vector tiles run for every row, rounding as a one-row product does: batched decoding
/// (live sequences times prompt tokens at the first step) stays under it up to 32 sequences of a
/// 4-token prompt, and the encoder (1500 rows) is far above it.
pub const VNNI_GEMM_MIN_ROWS: usize = 128;

/// f32 baseline `y[m][n] = x[m][k] · W^T + bias` with `W: [n][k]`, on the best available ISA.
pub fn matmul_f32(
    x: &[f32],
    m: usize,
    w: &[f32],
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    matmul_f32_with(Isa::detect(), x, m, w, n, k, bias, y)
}

/// [`matmul_f32`] on a chosen instruction set.
#[allow(clippy::too_many_arguments)]
pub fn matmul_f32_with(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: &[f32],
    n: usize,
    k: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) -> Result<()> {
    isa.require()?;
    let weights = crate::quant::checked_weights(n, k)?;
    expect_len("w", weights, w.len())?;
    check_operands(x, m, k, n, bias, y)?;
    if m == 1 {
        gemv_f32(isa, x, w, k, bias, y);
    } else {
        gemm(isa, x, m, Weights::F32 { w, k }, bias, y);
    }
    Ok(())
}

fn check_operands(
    x: &[f32],
    m: usize,
    k: usize,
    n: usize,
    bias: Option<&[f32]>,
    y: &[f32],
) -> Result<()> {
    let overflow = || KernelError::InvalidShape {
        rows: m,
        cols: k.max(n),
        reason: "operand size overflows usize",
    };
    if m == 0 {
        return Err(KernelError::InvalidShape {
            rows: m,
            cols: k,
            reason: "x has no rows",
        });
    }
    expect_len("x", m.checked_mul(k).ok_or_else(overflow)?, x.len())?;
    expect_len("y", m.checked_mul(n).ok_or_else(overflow)?, y.len())?;
    if let Some(bias) = bias {
        expect_len("bias", n, bias.len())?;
    }
    Ok(())
}

/// Output rows per parallel task of a matrix-vector product of `rows x cols`, or `None` when
/// the `rows * cols * cost` multiply-adds (in f32-kernel units: `cost` < 1 for kernels that do
/// more per cycle) do not exceed [`MIN_PARALLEL_WORK`] and the call should stay on this thread.
/// Two tasks per thread, in multiples of `align` rows, so a thread slowed by other load holds
/// the call up less.
pub(crate) fn gemv_rows_per_task(
    rows: usize,
    cols: usize,
    cost: f32,
    align: usize,
) -> Option<usize> {
    let threads = rayon::current_num_threads().max(1);
    let work = (rows.saturating_mul(cols) as f32 * cost) as usize;
    (threads > 1 && work > MIN_PARALLEL_WORK)
        .then(|| rows.div_ceil(threads * 2).next_multiple_of(align))
}

/// f32 matrix-vector baseline.
fn gemv_f32(isa: Isa, x: &[f32], w: &[f32], k: usize, bias: Option<&[f32]>, y: &mut [f32]) {
    let n = y.len();
    let run = |row0: usize, ys: &mut [f32]| {
        for (i, out) in ys.iter_mut().enumerate() {
            let row = row0 + i;
            let w_row = &w[row * k..(row + 1) * k];
            let dot = match isa {
                Isa::Avx2Fma | Isa::Avx512Vnni => avx2::dot_f32(x, w_row),
                Isa::Scalar => x.iter().zip(w_row).map(|(a, b)| a * b).sum(),
            };
            *out = dot + bias.map_or(0.0, |b| b[row]);
        }
    };
    match gemv_rows_per_task(n, k, 1.0, 1) {
        None => run(0, y),
        Some(per_task) => y
            .par_chunks_mut(per_task)
            .enumerate()
            .for_each(|(task, ys)| run(task * per_task, ys)),
    }
}

/// Weights of a matrix-matrix product.
#[derive(Clone, Copy)]
enum Weights<'a> {
    F32 { w: &'a [f32], k: usize },
    Packed(PackedMatrixRef<'a>),
}

impl Weights<'_> {
    fn shape(&self) -> (usize, usize) {
        match self {
            Weights::F32 { w, k } => (w.len() / k, *k),
            Weights::Packed(p) => (p.rows, p.cols),
        }
    }
}

/// Rows of `x` per micro-tile.
const MR: usize = 4;
/// Rows of `W` per micro-tile.
const NR: usize = 3;
/// Rows of `W` per L2-resident panel inside a task.
const PANEL_ROWS: usize = 48;
/// Rows of `W` dequantized together (once per call) before all rows of `x` use them.
const SUPER_PANEL_ROWS: usize = 384;

/// Matrix-matrix product: super-panels of `W` (dequantized once when packed), then rows of `x`
/// in parallel blocks, each sweeping L2-sized panels with a 4x3 register-blocked micro-kernel.
fn gemm(isa: Isa, x: &[f32], m: usize, weights: Weights<'_>, bias: Option<&[f32]>, y: &mut [f32]) {
    let (n, k) = weights.shape();
    let threads = rayon::current_num_threads().max(1);
    let x_rows_per_task = m.div_ceil(threads * 4).next_multiple_of(MR).min(256);
    let mut buffer = Vec::new();
    for sp_start in (0..n).step_by(SUPER_PANEL_ROWS) {
        let sp_rows = SUPER_PANEL_ROWS.min(n - sp_start);
        let panel: &[f32] = match weights {
            Weights::F32 { w, k } => &w[sp_start * k..(sp_start + sp_rows) * k],
            Weights::Packed(p) => {
                buffer.resize(sp_rows * k, 0.0);
                buffer.par_chunks_mut(k).enumerate().for_each_init(
                    || vec![0u8; k],
                    |codes, (i, row)| p.dequantize_row(sp_start + i, codes, row),
                );
                &buffer
            }
        };
        let run = |(task, ys): (usize, &mut [f32])| {
            let x_block = &x[task * x_rows_per_task * k..][..ys.len() / n * k];
            gemm_block(isa, x_block, panel, k, n, sp_start, bias, ys);
        };
        if m * sp_rows * k < MIN_PARALLEL_WORK {
            run((0, y));
        } else {
            y.par_chunks_mut(x_rows_per_task * n)
                .enumerate()
                .for_each(run);
        }
    }
}

/// `y[i][col0 + j] = x[i] · panel[j] + bias[col0 + j]` for one block of rows of `x`.
#[allow(clippy::too_many_arguments)]
fn gemm_block(
    isa: Isa,
    x: &[f32],
    panel: &[f32],
    k: usize,
    n: usize,
    col0: usize,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let m = x.len() / k;
    let panel_rows = panel.len() / k;
    for p0 in (0..panel_rows).step_by(PANEL_ROWS) {
        let p1 = (p0 + PANEL_ROWS).min(panel_rows);
        for i0 in (0..m).step_by(MR) {
            let mr = MR.min(m - i0);
            let x_tile = &x[i0 * k..(i0 + mr) * k];
            for j0 in (p0..p1).step_by(NR) {
                let nr = NR.min(p1 - j0);
                let w_tile = &panel[j0 * k..(j0 + nr) * k];
                let mut out = [[0.0f32; NR]; MR];
                match isa {
                    Isa::Avx2Fma | Isa::Avx512Vnni => {
                        avx2::dot_tile(x_tile, mr, w_tile, nr, k, &mut out)
                    }
                    Isa::Scalar => dot_tile_scalar(x_tile, mr, w_tile, nr, k, &mut out),
                }
                for (i, out_row) in out.iter().enumerate().take(mr) {
                    let y_row = &mut y[(i0 + i) * n..(i0 + i + 1) * n];
                    for (j, &v) in out_row.iter().enumerate().take(nr) {
                        let col = col0 + j0 + j;
                        y_row[col] = v + bias.map_or(0.0, |b| b[col]);
                    }
                }
            }
        }
    }
}

fn dot_tile_scalar(
    x: &[f32],
    mr: usize,
    w: &[f32],
    nr: usize,
    k: usize,
    out: &mut [[f32; NR]; MR],
) {
    for (i, out_row) in out.iter_mut().enumerate().take(mr) {
        let x_row = &x[i * k..(i + 1) * k];
        for (j, o) in out_row.iter_mut().enumerate().take(nr) {
            *o = x_row
                .iter()
                .zip(&w[j * k..(j + 1) * k])
                .map(|(a, b)| a * b)
                .sum();
        }
    }
}
