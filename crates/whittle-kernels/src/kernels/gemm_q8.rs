//! Packed matrix-matrix product with int8 activations on AVX-512 VNNI (the Whisper encoder:
//! `m` = 1500 rows of `x`, every weight reused 1500 times).
//!
//! The classic GEMM structure (Goto & van de Geijn 2008, "Anatomy of high-performance matrix
//! multiplication"): the weight matrix is repacked once per call into panels of
//! [`PANEL_ROWS`] rows whose codes are decoded to bytes and interleaved four inputs at a time,
//! so one 32-byte load holds 4 consecutive inputs of 8 weight rows, the operand layout of
//! `vpdpbusd` (u8 x s8 products summed in fours into i32 lanes). Each row of `x` is quantized to
//! int8 per 32-value block exactly as in the matrix-vector kernel, so both paths round the
//! activations identically. A micro-tile of [`TILE_ROWS_X`] rows of `x` by one panel keeps 8
//! int32 accumulators in registers; per block, the int32 sums are scaled by the activation block
//! scale into f32, and per weight group by the group scale, with the zero point removed once per
//! group as `z * sum_b s_x[b] sum(q_x[b])` (as in the matrix-vector kernel).
//!
//! The repacked panels are the weight's codes, one byte each, for the duration of one call: a
//! transient `n * k` bytes (1.5 MB for Whisper base's `fc1`), never an f32 copy.

use rayon::prelude::*;

use super::gemv::{add_bias, quantize_blocks};
use super::{vnni, Isa};
use crate::format::BLOCK;
use crate::pack::PackedMatrixRef;

/// Weight rows per panel: two 8-lane vectors of outputs.
pub(crate) const PANEL_ROWS: usize = 16;
/// Rows of `x` per micro-tile.
pub(crate) const TILE_ROWS_X: usize = 4;
/// Inputs per `vpdpbusd` lane.
pub(crate) const QUAD: usize = 4;
/// Rows of `x` per parallel task (a multiple of [`TILE_ROWS_X`]; small enough that a task's
/// activations stay in L2 while it sweeps every panel).
const ROWS_PER_TASK: usize = 64;

/// Rows of `x` quantized to int8 per 32-value block, zero-padded to whole blocks and to a
/// multiple of [`TILE_ROWS_X`] rows.
pub(crate) struct QuantizedActivations {
    /// `rows * stride` values.
    pub(crate) values: Vec<i8>,
    /// Values per row: `blocks * 32`.
    pub(crate) stride: usize,
    /// `rows * blocks` block scales.
    pub(crate) scales: Vec<f32>,
    /// `rows * groups`: per weight group, `sum over its blocks of scale * sum(values)`.
    pub(crate) group_sums: Vec<f32>,
}

/// One call's weight panels: codes interleaved for `vpdpbusd`, group scales and zero points.
pub(crate) struct Panels {
    /// Per panel, per quad of inputs, per row of the panel: 4 code bytes
    /// (`panels * quads * PANEL_ROWS * 4`).
    pub(crate) codes: Vec<u8>,
    /// Per panel, per group, per row: the f32 scale (0 for padding rows).
    pub(crate) scales: Vec<f32>,
    /// Per panel, per group, per row: the zero point as f32.
    pub(crate) zeros: Vec<f32>,
    /// Quads of inputs per row (`blocks * 8`).
    pub(crate) quads: usize,
    /// Weight groups per row.
    pub(crate) groups: usize,
    /// 32-value blocks per full group.
    pub(crate) blocks_per_group: usize,
}

impl Panels {
    fn pack(w: PackedMatrixRef<'_>) -> Self {
        let (n, k) = (w.rows, w.cols);
        let blocks = k.div_ceil(BLOCK);
        let quads = blocks * BLOCK / QUAD;
        let granularity = w.format.quant.granularity;
        let groups = granularity.groups_per_row(k);
        let blocks_per_group = granularity.group_len(k).div_ceil(BLOCK);
        let panels = n.div_ceil(PANEL_ROWS);
        let panel_codes = quads * PANEL_ROWS * QUAD;
        let panel_params = groups * PANEL_ROWS;
        let mut codes = vec![0u8; panels * panel_codes];
        let mut scales = vec![0f32; panels * panel_params];
        let mut zeros = vec![0f32; panels * panel_params];
        codes
            .par_chunks_mut(panel_codes)
            .zip(scales.par_chunks_mut(panel_params))
            .zip(zeros.par_chunks_mut(panel_params))
            .enumerate()
            .for_each_init(
                || vec![0u8; blocks * BLOCK],
                |row_codes, (p, ((codes, scales), zeros))| {
                    for r in 0..PANEL_ROWS.min(n - p * PANEL_ROWS) {
                        let row = p * PANEL_ROWS + r;
                        w.decode_row_codes(row, row_codes);
                        for (q, quad) in row_codes.chunks_exact(QUAD).enumerate() {
                            let at = (q * PANEL_ROWS + r) * QUAD;
                            codes[at..at + QUAD].copy_from_slice(quad);
                        }
                        for g in 0..groups {
                            let (scale, zero) = w.group_params(row, g, groups);
                            scales[g * PANEL_ROWS + r] = scale;
                            zeros[g * PANEL_ROWS + r] = f32::from(zero);
                        }
                    }
                },
            );
        Self {
            codes,
            scales,
            zeros,
            quads,
            groups,
            blocks_per_group,
        }
    }
}

impl QuantizedActivations {
    fn quantize(x: &[f32], m: usize, k: usize, groups: usize, blocks_per_group: usize) -> Self {
        let blocks = k.div_ceil(BLOCK);
        let stride = blocks * BLOCK;
        let rows = m.next_multiple_of(TILE_ROWS_X);
        let mut values = vec![0i8; rows * stride];
        let mut scales = vec![0f32; rows * blocks];
        let mut group_sums = vec![0f32; rows * groups];
        values
            .par_chunks_mut(stride)
            .zip(scales.par_chunks_mut(blocks))
            .zip(group_sums.par_chunks_mut(groups))
            .zip(x.par_chunks(k))
            .for_each_init(
                || vec![0f32; blocks],
                |block_sums, (((values, scales), group_sums), x_row)| {
                    quantize_blocks(Isa::Avx2Fma, x_row, values, scales, block_sums);
                    for (sum, chunk) in group_sums
                        .iter_mut()
                        .zip(block_sums.chunks(blocks_per_group))
                    {
                        *sum = chunk.iter().sum();
                    }
                },
            );
        Self {
            values,
            stride,
            scales,
            group_sums,
        }
    }
}

/// `y[m][n] = x · W^T + bias` (see the module docs). The caller checked the operands and that
/// the CPU has VNNI.
pub(crate) fn gemm_vnni(
    x: &[f32],
    m: usize,
    w: PackedMatrixRef<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (n, k) = (w.rows, w.cols);
    let panels = Panels::pack(w);
    let act = QuantizedActivations::quantize(x, m, k, panels.groups, panels.blocks_per_group);
    let blocks = act.stride / BLOCK;
    let run = |task: usize, ys: &mut [f32]| {
        let row0 = task * ROWS_PER_TASK;
        let rows = ys.len() / n;
        let mut tile = [[0f32; PANEL_ROWS]; TILE_ROWS_X];
        for p in 0..n.div_ceil(PANEL_ROWS) {
            let cols = PANEL_ROWS.min(n - p * PANEL_ROWS);
            for i0 in (0..rows).step_by(TILE_ROWS_X) {
                let r = row0 + i0;
                vnni::panel_tile(
                    &panels,
                    p,
                    &act.values[r * act.stride..(r + TILE_ROWS_X) * act.stride],
                    act.stride,
                    &act.scales[r * blocks..(r + TILE_ROWS_X) * blocks],
                    &act.group_sums[r * panels.groups..(r + TILE_ROWS_X) * panels.groups],
                    &mut tile,
                );
                for (i, out) in tile.iter().enumerate().take(rows - i0) {
                    let y_row = &mut ys[(i0 + i) * n + p * PANEL_ROWS..][..cols];
                    y_row.copy_from_slice(&out[..cols]);
                }
            }
        }
        for y_row in ys.chunks_exact_mut(n) {
            add_bias(y_row, bias);
        }
    };
    if m <= ROWS_PER_TASK || rayon::current_num_threads() == 1 {
        for (task, ys) in y.chunks_mut(ROWS_PER_TASK * n).enumerate() {
            run(task, ys);
        }
    } else {
        y.par_chunks_mut(ROWS_PER_TASK * n)
            .enumerate()
            .for_each(|(task, ys)| run(task, ys));
    }
}
