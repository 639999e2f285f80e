//! Packed matrix-vector product `y = x · W^T + bias` for one row `x` (the Whisper decoder).
//!
//! The activation row is quantized to int8 per 32-weight block (ggml's `q8_0` idea), and every
//! weight block is unpacked to bytes in registers and multiplied with integer dot products
//! (`vpmaddubsw`/`vpmaddwd`). Per block `s_x * s_w * (q_w · q_x)` is accumulated in f32 and the
//! zero point is removed once per group as `s_w * z * sum(s_x * q_x)`. The only deviation from
//! the exact product is the activation rounding, bounded by `sum_b s_x[b]/2 * sum |w|`.
//!
//! Weight rows are processed [`TILE_ROWS`] at a time: one load of the activations feeds four
//! rows, and the four rows' int32 block dots are folded into one vector (`vphaddd`), so the
//! int-to-float conversion and the scaling FMA are paid once per block (once per block pair for
//! 4-bit) for the whole tile instead of once per row. The group scales of a tile are converted
//! from f16 once, eight groups at a time, into a small per-thread table. Per-call buffers
//! (quantized activations, scale table) are reused per thread, so a call allocates nothing but
//! the rayon hand-off, and small calls stay on the calling thread.

use std::cell::Cell;
use std::thread::LocalKey;

use half::f16;
use rayon::prelude::*;

use super::{avx2, Isa};
use crate::format::{Granularity, Layout, BLOCK};
use crate::pack::PackedMatrixRef;

/// Weight rows per tile.
pub(crate) const TILE_ROWS: usize = 4;

/// Cost of one packed multiply-add relative to the f32 kernel's, for the threading threshold:
/// the int8 tile kernel does about four times more multiply-adds per cycle (measured 2.7x at
/// 384x384 4-bit, more for larger shapes), so calls need four times the work to pay for the
/// rayon hand-off.
const PACKED_WORK_COST: f32 = 0.25;

/// The same for the sparse ternary rows, which take about the f32 kernel's time per weight
/// (mask and sign decoding per 32 weights; measured 0.8-1.0x f32 at 1536 x 384).
const SPARSE_WORK_COST: f32 = 1.0;

/// One row of `x` quantized to int8 per 32-weight block, aligned with the weight blocks.
#[derive(Default)]
pub(crate) struct Q8Row {
    /// `blocks * 32` values, zero-padded after `k`.
    pub(crate) values: Vec<i8>,
    /// Scale of each block.
    pub(crate) scales: Vec<f32>,
    /// Per weight group: `sum over its blocks of scale * sum(values)`, for the zero-point term.
    pub(crate) group_sums: Vec<f32>,
    /// After [`Q8Row::interleave_nibble_pairs`]: per pair of blocks, `[s_b; 4] ++ [s_b+1; 4]`.
    pub(crate) pair_scales: Vec<f32>,
    /// Per block `scale * sum(values)`, before grouping.
    block_sums: Vec<f32>,
}

/// `1.5 * 2^23`: f32 values below 2^22 in magnitude round to integers when added to it.
const ROUNDING_MAGIC: f32 = 12_582_912.0;

/// Quantizes `x` to int8 per 32-value block into `values` (zero-padded to whole blocks),
/// `scales` and `block_sums` (`scale * sum(values)` per block).
pub(crate) fn quantize_blocks(
    isa: Isa,
    x: &[f32],
    values: &mut [i8],
    scales: &mut [f32],
    block_sums: &mut [f32],
) {
    match isa {
        Isa::Avx2Fma | Isa::Avx512Vnni => avx2::quantize_blocks(x, values, scales, block_sums),
        Isa::Scalar => quantize_blocks_scalar(x, values, scales, block_sums),
    }
}

/// Portable quantization (the reference the AVX2 version reproduces bit for bit: same scale,
/// same reciprocal, same round-to-nearest-even).
fn quantize_blocks_scalar(
    x: &[f32],
    values: &mut [i8],
    scales: &mut [f32],
    block_sums: &mut [f32],
) {
    for (b, (xb, qb)) in x
        .chunks(BLOCK)
        .zip(values.chunks_exact_mut(BLOCK))
        .enumerate()
    {
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
        scales[b] = scale;
        block_sums[b] = scale * sum as f32;
    }
}

impl Q8Row {
    /// Quantizes `x` into this row's buffers (reusing their capacity).
    fn quantize(&mut self, isa: Isa, x: &[f32], blocks_per_group: usize) {
        let blocks = x.len().div_ceil(BLOCK);
        self.values.clear();
        self.values.resize(blocks * BLOCK, 0);
        self.scales.clear();
        self.scales.resize(blocks, 0.0);
        self.block_sums.clear();
        self.block_sums.resize(blocks, 0.0);
        quantize_blocks(
            isa,
            x,
            &mut self.values,
            &mut self.scales,
            &mut self.block_sums,
        );
        self.group_sums.clear();
        self.group_sums.extend(
            self.block_sums
                .chunks(blocks_per_group.max(1))
                .map(|c| c.iter().sum::<f32>()),
        );
        self.pair_scales.clear();
    }

    /// Reorders each full pair of blocks `(2p, 2p+1)` as `x[2p][..16], x[2p+1][..16],
    /// x[2p][16..], x[2p+1][16..]`, the order in which one 32-byte load of two [`Layout::Bits4`]
    /// blocks yields codes after masking (low nibbles) and shifting (high nibbles). A trailing odd
    /// block keeps its natural order.
    fn interleave_nibble_pairs(&mut self) {
        const HALF: usize = BLOCK / 2;
        for (pair, chunk) in self.values.chunks_exact_mut(2 * BLOCK).enumerate() {
            let original: [i8; 2 * BLOCK] = chunk.try_into().expect("chunk of two blocks");
            chunk[HALF..BLOCK].copy_from_slice(&original[BLOCK..BLOCK + HALF]);
            chunk[BLOCK..BLOCK + HALF].copy_from_slice(&original[HALF..BLOCK]);
            let (s0, s1) = (self.scales[2 * pair], self.scales[2 * pair + 1]);
            self.pair_scales
                .extend_from_slice(&[s0, s0, s0, s0, s1, s1, s1, s1]);
        }
    }
}

/// How the tile kernel reads a row's codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum CodeSource {
    /// Packed bytes of a block layout, one block at a time.
    Packed(Layout),
    /// [`Layout::Bits4`], two blocks per 32-byte load (activations interleaved to match).
    Bits4Pairs,
    /// Already decoded codes, one byte each (< 128): decoded [`Layout::Trits5`] rows.
    Bytes,
    /// [`Layout::TernarySparse`] masks and sign bits, read by `super::sparse`.
    Sparse,
}

/// A run of consecutive weight rows as the tile kernels read them: row `r`'s codes start at
/// `r * row_bytes`, its scales (and zero points) at `r * scale_stride`.
pub(crate) struct Rows<'a> {
    /// Codes from the first row on.
    pub(crate) codes: &'a [u8],
    /// Code bytes from one row to the next.
    pub(crate) row_bytes: usize,
    /// f16 group scales from the first row on.
    pub(crate) scales: &'a [f16],
    /// Per-group zero points from the first row on (asymmetric schemes).
    pub(crate) zeros: Option<&'a [u8]>,
    /// Scale entries from one row to the next: `groups`, or 0 when all rows share one scale.
    pub(crate) scale_stride: usize,
    /// Groups per row.
    pub(crate) groups: usize,
    /// Blocks of 32 weights in one full group.
    pub(crate) blocks_per_group: usize,
    /// Implicit zero point minus `code_shift` (used when `zeros` is `None`).
    pub(crate) zero_const: f32,
    /// Offset the kernel subtracts from every code (128 for signed Bits8 products).
    pub(crate) code_shift: f32,
}

impl Rows<'_> {
    /// `z_g - code_shift` for group `g` of row `r`.
    #[inline]
    pub(crate) fn zero(&self, r: usize, g: usize) -> f32 {
        match self.zeros {
            Some(zeros) => f32::from(zeros[r * self.scale_stride + g]) - self.code_shift,
            None => self.zero_const,
        }
    }
}

/// Four f32 lanes aligned for 128-bit loads: one entry of a tile's scale table.
#[derive(Clone, Copy, Default)]
#[repr(C, align(16))]
pub(crate) struct Lanes4(pub(crate) [f32; 4]);

/// Per-thread scratch of one task: the scale table of the current tile and decoded codes.
#[derive(Default)]
struct TaskScratch {
    table: Vec<Lanes4>,
    decoded: Vec<u8>,
}

thread_local! {
    static ACTIVATIONS: Cell<Option<Q8Row>> = const { Cell::new(None) };
    static TASK_SCRATCH: Cell<Option<TaskScratch>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's reusable `T`. The value is taken out while `f` runs, so a
/// re-entrant call (rayon may run another job on this thread while it waits) gets a fresh one
/// instead of a double borrow.
fn with_reused<T: Default, R>(
    slot: &'static LocalKey<Cell<Option<T>>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    let mut value = slot.with(Cell::take).unwrap_or_default();
    let result = f(&mut value);
    slot.with(|cell| cell.set(Some(value)));
    result
}

/// What the int8 row kernels need to know about a packed matrix, worked out once per call.
struct PackedPlan<'a> {
    isa: Isa,
    /// The sparse ternary rows use AVX-512 opmasks (on [`Isa::Avx512Vnni`]).
    sparse_avx512: bool,
    w: PackedMatrixRef<'a>,
    source: CodeSource,
    blocks_per_group: usize,
    groups: usize,
    row_bytes: usize,
    scale_stride: usize,
    zero_const: f32,
    code_shift: f32,
}

impl<'a> PackedPlan<'a> {
    fn new(isa: Isa, w: PackedMatrixRef<'a>) -> Self {
        let sparse_avx512 = isa == Isa::Avx512Vnni && super::sparse::avx512_available();
        // Matrix-vector rows run on the AVX2 kernels on VNNI machines too (but the sparse
        // ternary rows, above).
        let isa = isa.without_vnni();
        let k = w.cols;
        let granularity = w.format.quant.granularity;
        let blocks_per_group = granularity.group_len(k).div_ceil(BLOCK);
        let groups = granularity.groups_per_row(k);
        let layout = w.format.layout;
        let source = match (isa, layout) {
            (Isa::Avx2Fma, Layout::TernarySparse) if super::sparse::available() => {
                CodeSource::Sparse
            }
            (_, Layout::Trits5 | Layout::TernarySparse) | (Isa::Scalar, _) => CodeSource::Bytes,
            // Two blocks per load need block pairs that never straddle two groups.
            (Isa::Avx2Fma, Layout::Bits4) if blocks_per_group & 1 == 0 || groups == 1 => {
                CodeSource::Bits4Pairs
            }
            (Isa::Avx2Fma | Isa::Avx512Vnni, layout) => CodeSource::Packed(layout),
        };
        // Bits8 is multiplied as signed `code - 128` to stay inside vpmaddubsw's i16 range.
        let code_shift = if isa == Isa::Avx2Fma && layout == Layout::Bits8 {
            128.0
        } else {
            0.0
        };
        let zero_const = w
            .format
            .quant
            .scheme
            .implicit_zero_point()
            .map_or(0.0, f32::from)
            - code_shift;
        PackedPlan {
            isa,
            sparse_avx512,
            w,
            source,
            blocks_per_group,
            groups,
            row_bytes: w.format.row_bytes(k).unwrap_or(0),
            scale_stride: if granularity == Granularity::PerTensor {
                0
            } else {
                groups
            },
            zero_const,
            code_shift,
        }
    }

    /// Multiply-add cost relative to the f32 kernel, for the threading threshold.
    fn work_cost(&self) -> f32 {
        if self.source == CodeSource::Sparse {
            SPARSE_WORK_COST
        } else {
            PACKED_WORK_COST
        }
    }

    /// Rows `first..` of the matrix.
    fn rows_from(&self, first: usize) -> Rows<'a> {
        let params = first * self.scale_stride;
        Rows {
            codes: &self.w.codes[first * self.row_bytes..],
            row_bytes: self.row_bytes,
            scales: &self.w.scales[params..],
            zeros: self.w.zero_points.map(|z| &z[params..]),
            scale_stride: self.scale_stride,
            groups: self.groups,
            blocks_per_group: self.blocks_per_group,
            zero_const: self.zero_const,
            code_shift: self.code_shift,
        }
    }

    /// Quantizes one row of `x` into `act`, in the order the kernel reads it.
    fn quantize(&self, act: &mut Q8Row, x: &[f32]) {
        act.quantize(self.isa, x, self.blocks_per_group);
        if self.source == CodeSource::Bits4Pairs {
            act.interleave_nibble_pairs();
        }
    }

    /// `ys[i] = W[row0 + i] · x` (no bias) on this thread.
    fn dot_rows(&self, act: &Q8Row, row0: usize, ys: &mut [f32]) {
        if self.source == CodeSource::Sparse {
            return super::sparse::dot_rows(&self.w, row0, act, ys, self.sparse_avx512);
        }
        with_reused(&TASK_SCRATCH, |scratch| {
            if self.source != CodeSource::Bytes {
                let rows = self.rows_from(row0);
                avx2::dot_rows_packed(self.source, &rows, act, &mut scratch.table, ys);
                return;
            }
            // Decoded rows (ternary 1.6-bit, or any layout on the portable path), one tile at
            // a time.
            let stride = act.values.len();
            scratch.decoded.clear();
            scratch.decoded.resize(TILE_ROWS * stride, 0);
            for (t, out) in ys.chunks_mut(TILE_ROWS).enumerate() {
                let first = row0 + t * TILE_ROWS;
                for (r, buffer) in scratch
                    .decoded
                    .chunks_exact_mut(stride)
                    .take(out.len())
                    .enumerate()
                {
                    self.w.decode_row_codes(first + r, buffer);
                }
                let rows = Rows {
                    codes: &scratch.decoded,
                    row_bytes: stride,
                    ..self.rows_from(first)
                };
                match self.isa {
                    Isa::Avx2Fma | Isa::Avx512Vnni => {
                        avx2::dot_rows_packed(self.source, &rows, act, &mut scratch.table, out)
                    }
                    Isa::Scalar => dot_rows_bytes_scalar(&rows, act, out),
                }
            }
        })
    }
}

/// `y += bias` for one output row.
pub(crate) fn add_bias(y: &mut [f32], bias: Option<&[f32]>) {
    if let Some(bias) = bias {
        for (y, b) in y.iter_mut().zip(bias) {
            *y += b;
        }
    }
}

/// Matrix-vector product for one row of `x` (see the module docs); rows of `W` are split
/// across threads.
pub(crate) fn gemv_packed(
    isa: Isa,
    x: &[f32],
    w: PackedMatrixRef<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let plan = PackedPlan::new(isa, w);
    with_reused(&ACTIVATIONS, |act| {
        plan.quantize(act, x);
        let act = &*act;
        match super::gemv_rows_per_task(w.rows, w.cols, plan.work_cost(), TILE_ROWS) {
            None => plan.dot_rows(act, 0, y),
            Some(per_task) => y
                .par_chunks_mut(per_task)
                .enumerate()
                .for_each(|(task, ys)| plan.dot_rows(act, task * per_task, ys)),
        }
    });
    add_bias(y, bias);
}

/// Weight rows a task of [`gemm_packed_q8`] sweeps with every row of `x` while they stay in
/// cache (24 KB of 8-bit codes at `k` = 384).
const WEIGHT_PANEL_ROWS: usize = 64;

/// Matrix-matrix product with int8 activations for a few rows of `x` (batched decoding): every
/// row of `x` is quantized as in [`gemv_packed`], then each panel of [`WEIGHT_PANEL_ROWS`]
/// weight rows is read from memory once and multiplied with all rows of `x` by the same tile
/// kernel, so each output equals the matrix-vector product's for that row bit for bit, while the
/// weights are read once per call instead of once per row. Panels are split across threads.
pub(crate) fn gemm_packed_q8(
    isa: Isa,
    x: &[f32],
    m: usize,
    w: PackedMatrixRef<'_>,
    bias: Option<&[f32]>,
    y: &mut [f32],
) {
    let (n, k) = (w.rows, w.cols);
    let plan = PackedPlan::new(isa, w);
    let acts: Vec<Q8Row> = x
        .chunks_exact(k)
        .map(|row| {
            let mut act = Q8Row::default();
            plan.quantize(&mut act, row);
            act
        })
        .collect();
    // Panel-major results `[panel][row of x][weight row in panel]`, so tasks write disjoint slices.
    let panel = WEIGHT_PANEL_ROWS;
    let mut by_panel = vec![0f32; n.div_ceil(panel) * m * panel];
    let run = |p: usize, out: &mut [f32]| {
        let row0 = p * panel;
        let len = panel.min(n - row0);
        for (act, ys) in acts.iter().zip(out.chunks_exact_mut(panel)) {
            plan.dot_rows(act, row0, &mut ys[..len]);
        }
    };
    match super::gemv_rows_per_task(n, m * k, plan.work_cost(), 1) {
        None => by_panel
            .chunks_mut(m * panel)
            .enumerate()
            .for_each(|(p, out)| run(p, out)),
        Some(_) => by_panel
            .par_chunks_mut(m * panel)
            .enumerate()
            .for_each(|(p, out)| run(p, out)),
    }
    for (i, y_row) in y.chunks_exact_mut(n).enumerate().take(m) {
        for (p, ys) in y_row.chunks_mut(panel).enumerate() {
            let start = (p * m + i) * panel;
            ys.copy_from_slice(&by_panel[start..start + ys.len()]);
        }
        add_bias(y_row, bias);
    }
}

/// Portable int8 dot of decoded rows, one per output:
/// `sum_g s_w[g] (sum_{b in g} s_x[b] (q_w[b] · q_x[b]) - z_g X_g)`.
fn dot_rows_bytes_scalar(rows: &Rows<'_>, act: &Q8Row, out: &mut [f32]) {
    let blocks = act.scales.len();
    let bpg = rows.blocks_per_group;
    for (r, out) in out.iter_mut().enumerate() {
        let codes = &rows.codes[r * rows.row_bytes..];
        let scales = &rows.scales[r * rows.scale_stride..][..rows.groups];
        let mut total = 0.0f32;
        for (g, scale) in scales.iter().enumerate() {
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
            total += scale.to_f32() * (acc - rows.zero(r, g) * act.group_sums[g]);
        }
        *out = total;
    }
}
