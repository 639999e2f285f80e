//! AVX-512 VNNI micro-kernel of the int8 matrix-matrix product (layout and arithmetic in
//! [`super::gemm_q8`]).
//!
//! Safety contract, as in `avx2.rs`: the CPU supports AVX2, FMA, AVX512F/VL and AVX512-VNNI (the
//! safe wrapper asserts [`available`]), and every pointer covers the bytes the loops read, which
//! the wrapper asserts from slice lengths before calling in.

use super::gemm_q8::{Panels, PANEL_ROWS, QUAD, TILE_ROWS_X};

/// Whether `vpdpbusd` on 256-bit registers (AVX512-VNNI with AVX512VL) can run on this CPU.
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512vl")
            && is_x86_feature_detected!("avx512vnni")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[i][r] = sum_k x[i][k] W[16p + r][k]` for the [`TILE_ROWS_X`] quantized rows `x_values`
/// (row stride `stride`, block scales `x_scales`, per-group sums `x_group_sums`) and panel `p`.
pub(super) fn panel_tile(
    panels: &Panels,
    p: usize,
    x_values: &[i8],
    stride: usize,
    x_scales: &[f32],
    x_group_sums: &[f32],
    out: &mut [[f32; PANEL_ROWS]; TILE_ROWS_X],
) {
    let blocks = panels.quads * QUAD / crate::format::BLOCK;
    assert!(available());
    assert!(stride >= panels.quads * QUAD && x_values.len() >= TILE_ROWS_X * stride);
    assert!(x_scales.len() >= TILE_ROWS_X * blocks);
    assert!(x_group_sums.len() >= TILE_ROWS_X * panels.groups);
    let panel_codes = panels.quads * PANEL_ROWS * QUAD;
    let panel_params = panels.groups * PANEL_ROWS;
    assert!(panels.codes.len() >= (p + 1) * panel_codes);
    assert!(panels.scales.len() >= (p + 1) * panel_params);
    assert!(panels.zeros.len() >= (p + 1) * panel_params);
    assert!(panels.groups * panels.blocks_per_group >= blocks);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: features checked above; lengths asserted above cover every read.
    unsafe {
        imp::panel_tile(panels, p, x_values, stride, x_scales, x_group_sums, out)
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("VNNI kernels are only selected when available()")
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::*;
    use crate::format::BLOCK;
    use std::arch::x86_64::*;

    /// Quads of inputs per 32-value activation block.
    const QUADS_PER_BLOCK: usize = BLOCK / QUAD;

    #[target_feature(enable = "avx2,fma,avx512f,avx512vl,avx512vnni")]
    pub(super) unsafe fn panel_tile(
        panels: &Panels,
        p: usize,
        x_values: &[i8],
        stride: usize,
        x_scales: &[f32],
        x_group_sums: &[f32],
        out: &mut [[f32; PANEL_ROWS]; TILE_ROWS_X],
    ) {
        let (quads, groups, bpg) = (panels.quads, panels.groups, panels.blocks_per_group);
        let blocks = quads / QUADS_PER_BLOCK;
        let codes = panels.codes.as_ptr().add(p * quads * PANEL_ROWS * QUAD);
        let scales = panels.scales.as_ptr().add(p * groups * PANEL_ROWS);
        let zeros = panels.zeros.as_ptr().add(p * groups * PANEL_ROWS);
        let x = x_values.as_ptr();
        let mut y = [[_mm256_setzero_ps(); 2]; TILE_ROWS_X];
        for g in 0..groups {
            let first = g * bpg;
            let last = (first + bpg).min(blocks);
            let mut group_acc = [[_mm256_setzero_ps(); 2]; TILE_ROWS_X];
            for b in first..last {
                let mut acc = [[_mm256_setzero_si256(); 2]; TILE_ROWS_X];
                for q in b * QUADS_PER_BLOCK..(b + 1) * QUADS_PER_BLOCK {
                    let w = codes.add(q * PANEL_ROWS * QUAD);
                    let w0 = _mm256_loadu_si256(w as *const __m256i);
                    let w1 = _mm256_loadu_si256(w.add(32) as *const __m256i);
                    for (i, acc) in acc.iter_mut().enumerate() {
                        let xq = (x.add(i * stride + q * QUAD) as *const i32).read_unaligned();
                        let xv = _mm256_set1_epi32(xq);
                        acc[0] = _mm256_dpbusd_epi32(acc[0], w0, xv);
                        acc[1] = _mm256_dpbusd_epi32(acc[1], w1, xv);
                    }
                }
                for (i, (acc, group_acc)) in acc.iter().zip(group_acc.iter_mut()).enumerate() {
                    let s = _mm256_set1_ps(*x_scales.get_unchecked(i * blocks + b));
                    for v in 0..2 {
                        group_acc[v] = _mm256_fmadd_ps(_mm256_cvtepi32_ps(acc[v]), s, group_acc[v]);
                    }
                }
            }
            let at = g * PANEL_ROWS;
            let sv = [
                _mm256_loadu_ps(scales.add(at)),
                _mm256_loadu_ps(scales.add(at + 8)),
            ];
            let zv = [
                _mm256_loadu_ps(zeros.add(at)),
                _mm256_loadu_ps(zeros.add(at + 8)),
            ];
            for (i, (y, group_acc)) in y.iter_mut().zip(&group_acc).enumerate() {
                let xs = _mm256_set1_ps(*x_group_sums.get_unchecked(i * groups + g));
                for v in 0..2 {
                    let t = _mm256_fnmadd_ps(zv[v], xs, group_acc[v]);
                    y[v] = _mm256_fmadd_ps(t, sv[v], y[v]);
                }
            }
        }
        for (out, y) in out.iter_mut().zip(&y) {
            _mm256_storeu_ps(out.as_mut_ptr(), y[0]);
            _mm256_storeu_ps(out.as_mut_ptr().add(8), y[1]);
        }
    }
}
