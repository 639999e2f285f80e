//! Matrix kernels `y = x · W^T (+ bias)` that read packed weights directly.
//!
//! * Matrix-vector (`m <=` [`GEMV_MAX_ROWS`], the Whisper decoder): memory bound. Each row of `x`
//!   is quantized to int8 per 32-weight block (ggml's `q8_0` idea), and every weight block is
//!   unpacked to bytes in registers and multiplied with integer dot products
//!   (`vpmaddubsw`/`vpmaddwd`); per block `s_x * s_w * (q_w · q_x)` is accumulated in f32 and the
//!   zero point is removed once per group as `s_w * z * sum(s_x * q_x)`. The only deviation from
//!   the exact product is the activation rounding, bounded by `sum_b s_x[b]/2 * sum |w|`.
//! * Matrix-matrix (the encoder, `m = 1500`): compute bound. Panels of `W` are dequantized once
//!   into an f32 buffer and shared by all rows of `x`, which run through the same register-blocked
//!   FMA micro-kernel (4 rows of `x` by 3 rows of `W`) as the f32 baseline; results equal the
//!   f32 product of the dequantized weights up to summation order.
//! * [`matmul_f32`] is the plain f32 baseline with the same threading, for benchmark ratios.
//!
//! Every kernel has an AVX2+FMA version (picked at run time with `is_x86_feature_detected!`) and
//! a portable scalar version; [`mod@reference`] holds the naive dequantize-then-dot references the
//! tests compare against.
//!
//! # Shapes
//! `x: [m][k]`, `W: [n][k]` (packed or f32), `bias: [n]`, `y: [m][n]`, all row-major.

mod avx2;
pub mod reference;

use rayon::prelude::*;

use crate::error::{expect_len, KernelError, Result};
use half::f16;

use crate::format::{Granularity, Layout, BLOCK};
use crate::pack::PackedMatrixRef;

/// Largest `m` handled by the matrix-vector path (one int8 pass over `W` per row of `x`).
pub const GEMV_MAX_ROWS: usize = 3;

/// Multiply-adds below which a call stays on the calling thread (thread hand-off costs more).
const MIN_PARALLEL_WORK: usize = 1 << 18;

/// Instruction set a kernel runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust.
    Scalar,
    /// x86-64 AVX2 + FMA.
    Avx2Fma,
}

impl Isa {
    /// Best instruction set of this CPU.
    pub fn detect() -> Isa {
        if Isa::Avx2Fma.is_available() {
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
    isa.require()?;
    w.validate()?;
    check_operands(x, m, w.cols, w.rows, bias, y)?;
    if m <= GEMV_MAX_ROWS {
        for (x_row, y_row) in x.chunks_exact(w.cols).zip(y.chunks_exact_mut(w.rows)) {
            gemv_packed(isa, x_row, w, bias, y_row);
        }
    } else {
        gemm(isa, x, m, Weights::Packed(w), bias, y);
    }
    Ok(())
}

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

/// Output rows per parallel task so each task has at least [`MIN_PARALLEL_WORK`] multiply-adds.
fn rows_per_task(rows: usize, work_per_row: usize) -> usize {
    let threads = rayon::current_num_threads().max(1);
    let by_work = MIN_PARALLEL_WORK.div_ceil(work_per_row.max(1));
    let by_threads = rows.div_ceil(threads * 4);
    by_work.max(by_threads).max(1)
}

/// `1.5 * 2^23`: f32 values below 2^22 in magnitude round to integers when added to it.
const ROUNDING_MAGIC: f32 = 12_582_912.0;

/// One row of `x` quantized to int8 per 32-weight block, aligned with the weight blocks.
pub(crate) struct Q8Row {
    /// `blocks * 32` values, zero-padded after `k`.
    values: Vec<i8>,
    /// Scale of each block.
    scales: Vec<f32>,
    /// Per weight group: `sum over its blocks of scale * sum(values)`, for the zero-point term.
    group_sums: Vec<f32>,
    /// After [`Q8Row::interleave_nibble_pairs`]: per pair of blocks, `[s_b; 4] ++ [s_b+1; 4]`.
    pair_scales: Vec<f32>,
}

impl Q8Row {
    fn new(x: &[f32], blocks_per_group: usize) -> Q8Row {
        let blocks = x.len().div_ceil(BLOCK);
        let mut values = vec![0i8; blocks * BLOCK];
        let mut scales = Vec::with_capacity(blocks);
        let mut block_sums = Vec::with_capacity(blocks);
        for (xb, qb) in x.chunks(BLOCK).zip(values.chunks_exact_mut(BLOCK)) {
            let amax = xb.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let scale = amax / 127.0;
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            let mut sum = 0i32;
            for (q, &v) in qb.iter_mut().zip(xb) {
                // |v * inv| <= 127 by construction; adding 1.5 * 2^23 rounds to nearest (even)
                // without a libm call; the cast saturates NaN to 0.
                *q = ((v * inv + ROUNDING_MAGIC) - ROUNDING_MAGIC) as i8;
                sum += i32::from(*q);
            }
            scales.push(scale);
            block_sums.push(scale * sum as f32);
        }
        let group_sums = block_sums
            .chunks(blocks_per_group.max(1))
            .map(|c| c.iter().sum())
            .collect();
        Q8Row {
            values,
            scales,
            group_sums,
            pair_scales: Vec::new(),
        }
    }

    /// Reorders each full pair of blocks `(2p, 2p+1)` as `x[2p][..16], x[2p+1][..16],
    /// x[2p][16..], x[2p+1][16..]`, the order in which one 32-byte load of two [`Layout::Bits4`]
    /// blocks yields codes after masking (low nibbles) and shifting (high nibbles). A trailing odd
    /// block keeps its natural order.
    fn interleave_nibble_pairs(&mut self) {
        const HALF: usize = BLOCK / 2;
        for (pair, chunk) in self.values.chunks_exact_mut(2 * BLOCK).enumerate() {
            let original: [i8; 2 * BLOCK] = chunk.try_into().expect("chunk of two blocks");
            chunk[..HALF].copy_from_slice(&original[..HALF]);
            chunk[HALF..BLOCK].copy_from_slice(&original[BLOCK..BLOCK + HALF]);
            chunk[BLOCK..BLOCK + HALF].copy_from_slice(&original[HALF..BLOCK]);
            chunk[BLOCK + HALF..].copy_from_slice(&original[BLOCK + HALF..]);
            let (s0, s1) = (self.scales[2 * pair], self.scales[2 * pair + 1]);
            self.pair_scales
                .extend_from_slice(&[s0, s0, s0, s0, s1, s1, s1, s1]);
        }
    }
}

/// Blocks of 32 weights in one full group.
fn blocks_per_group(w: &PackedMatrixRef<'_>) -> usize {
    w.format.quant.granularity.group_len(w.cols).div_ceil(BLOCK)
}

/// Matrix-vector product for one row of `x` (int8 activations, see module docs).
fn gemv_packed(isa: Isa, x: &[f32], w: PackedMatrixRef<'_>, bias: Option<&[f32]>, y: &mut [f32]) {
    let k = w.cols;
    let bpg = blocks_per_group(&w);
    let mut act = Q8Row::new(x, bpg);
    let groups_per_row = w.format.quant.granularity.groups_per_row(k);
    let row_bytes = w.format.row_bytes(k).unwrap_or(0);
    let layout = w.format.layout;
    // 4-bit fast path: two blocks per load, when block pairs never straddle two groups.
    let nibble_pairs =
        isa == Isa::Avx2Fma && layout == Layout::Bits4 && (bpg & 1 == 0 || groups_per_row == 1);
    if nibble_pairs {
        act.interleave_nibble_pairs();
    }
    // Bits8 is multiplied as signed `code - 128` to stay inside vpmaddubsw's i16 range.
    let code_shift = if isa == Isa::Avx2Fma && layout == Layout::Bits8 {
        128.0
    } else {
        0.0
    };
    let per_task = rows_per_task(w.rows, k);
    let per_tensor = w.format.quant.granularity == Granularity::PerTensor;
    // Implicit zero point (symmetric, ternary) or per-group zero points (asymmetric).
    let zero_const = w
        .format
        .quant
        .scheme
        .implicit_zero_point()
        .map_or(0.0, f32::from)
        - code_shift;
    let needs_decoding = isa == Isa::Scalar || layout == Layout::Trits5;
    let run = |(task, ys): (usize, &mut [f32])| {
        let mut decoded = if needs_decoding {
            vec![0u8; act.values.len()]
        } else {
            Vec::new()
        };
        for (i, out) in ys.iter_mut().enumerate() {
            let row = task * per_task + i;
            // Per-tensor matrices have one group per row, all sharing entry 0.
            let groups = if per_tensor {
                0..1
            } else {
                row * groups_per_row..(row + 1) * groups_per_row
            };
            let params = RowParams {
                scales: &w.scales[groups.clone()],
                zeros: w.zero_points.map(|z| &z[groups]),
                zero_const,
                code_shift,
            };
            let packed = w.row_codes(row, row_bytes);
            let dot = match isa {
                Isa::Avx2Fma if nibble_pairs => {
                    avx2::dot_row_bits4_pairs(packed, &act, &params, bpg)
                }
                Isa::Avx2Fma if layout != Layout::Trits5 => {
                    avx2::dot_row_packed(layout, packed, &act, &params, bpg)
                }
                Isa::Avx2Fma => {
                    w.decode_row_codes(row, &mut decoded);
                    avx2::dot_row_bytes(&decoded, &act, &params, bpg)
                }
                Isa::Scalar => {
                    w.decode_row_codes(row, &mut decoded);
                    dot_row_bytes_scalar(&decoded, &act, &params, bpg)
                }
            };
            *out = dot + bias.map_or(0.0, |b| b[row]);
        }
    };
    if per_task >= w.rows {
        run((0, y));
    } else {
        y.par_chunks_mut(per_task).enumerate().for_each(run);
    }
}

/// Scale and zero point of each group of one weight row.
pub(crate) struct RowParams<'a> {
    /// One f16 scale per group of the row.
    scales: &'a [f16],
    /// Per-group zero points (asymmetric schemes).
    zeros: Option<&'a [u8]>,
    /// Implicit zero point minus `code_shift` (used when `zeros` is `None`).
    zero_const: f32,
    /// Offset the kernel subtracted from every code (128 for signed Bits8 products).
    code_shift: f32,
}

impl RowParams<'_> {
    /// `z_g - code_shift` for group `g`.
    #[inline]
    fn zero(&self, g: usize) -> f32 {
        match self.zeros {
            Some(zeros) => f32::from(zeros[g]) - self.code_shift,
            None => self.zero_const,
        }
    }
}

/// Portable int8 row dot: `sum_g s_w[g] (sum_{b in g} s_x[b] (q_w[b] · q_x[b]) - z_g X_g)`.
fn dot_row_bytes_scalar(codes: &[u8], act: &Q8Row, params: &RowParams<'_>, bpg: usize) -> f32 {
    let mut total = 0.0f32;
    let blocks = act.scales.len();
    for (g, scale) in params.scales.iter().enumerate() {
        let mut acc = 0.0f32;
        for b in g * bpg..((g + 1) * bpg).min(blocks) {
            let range = b * BLOCK..(b + 1) * BLOCK;
            let dot: i32 = codes[range.clone()]
                .iter()
                .zip(&act.values[range])
                .map(|(&q, &x)| i32::from(q) * i32::from(x))
                .sum();
            acc += act.scales[b] * dot as f32;
        }
        total += scale.to_f32() * (acc - params.zero(g) * act.group_sums[g]);
    }
    total
}

/// f32 matrix-vector baseline.
fn gemv_f32(isa: Isa, x: &[f32], w: &[f32], k: usize, bias: Option<&[f32]>, y: &mut [f32]) {
    let n = y.len();
    let per_task = rows_per_task(n, k);
    let run = |(task, ys): (usize, &mut [f32])| {
        for (i, out) in ys.iter_mut().enumerate() {
            let row = task * per_task + i;
            let w_row = &w[row * k..(row + 1) * k];
            let dot = match isa {
                Isa::Avx2Fma => avx2::dot_f32(x, w_row),
                Isa::Scalar => x.iter().zip(w_row).map(|(a, b)| a * b).sum(),
            };
            *out = dot + bias.map_or(0.0, |b| b[row]);
        }
    };
    if per_task >= n {
        run((0, y));
    } else {
        y.par_chunks_mut(per_task).enumerate().for_each(run);
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
                    Isa::Avx2Fma => avx2::dot_tile(x_tile, mr, w_tile, nr, k, &mut out),
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
