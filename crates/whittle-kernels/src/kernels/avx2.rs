//! AVX2 + FMA kernels. All `unsafe` of the crate lives here.
//!
//! Safety contract, shared by every `unsafe fn` below: the CPU supports AVX2 and FMA (the safe
//! wrappers assert [`available`]) and every pointer covers the bytes the loop reads, which the
//! wrappers assert from slice lengths before calling in. Loads are unaligned (`loadu`), and the
//! f32 tails use masked loads, so nothing past a slice's end is touched.

use super::{Q8Row, RowParams, MR, NR};
use crate::format::{Layout, BLOCK};

/// Whether AVX2, FMA (and F16C, for scales) kernels can run on this CPU.
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("fma")
            && is_x86_feature_detected!("f16c")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(not(target_arch = "x86_64"))]
mod imp {
    use super::*;
    pub(in crate::kernels) fn dot_row_packed(
        _: Layout,
        _: &[u8],
        _: &Q8Row,
        _: &RowParams<'_>,
        _: usize,
    ) -> f32 {
        unreachable!("AVX2 kernels are only selected when available()")
    }
    pub(in crate::kernels) fn dot_row_bits4_pairs(
        _: &[u8],
        _: &Q8Row,
        _: &RowParams<'_>,
        _: usize,
    ) -> f32 {
        unreachable!("AVX2 kernels are only selected when available()")
    }
    pub(in crate::kernels) fn dot_row_bytes(
        _: &[u8],
        _: &Q8Row,
        _: &RowParams<'_>,
        _: usize,
    ) -> f32 {
        unreachable!("AVX2 kernels are only selected when available()")
    }
    pub(in crate::kernels) fn dot_f32(_: &[f32], _: &[f32]) -> f32 {
        unreachable!("AVX2 kernels are only selected when available()")
    }
    pub(in crate::kernels) fn dot_tile(
        _: &[f32],
        _: usize,
        _: &[f32],
        _: usize,
        _: usize,
        _: &mut [[f32; NR]; MR],
    ) {
        unreachable!("AVX2 kernels are only selected when available()")
    }
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use super::*;
    use std::arch::x86_64::*;

    // Layout ids for the const-generic kernels.
    const BITS2: u8 = 0;
    const BITS3: u8 = 1;
    const BITS4: u8 = 2;
    const BITS5: u8 = 3;
    const BITS6: u8 = 4;
    const BITS8: u8 = 5;
    /// One already-decoded unsigned code per byte, codes < 128 (decoded ternary rows).
    const BYTES: u8 = 6;

    const fn block_bytes(layout: u8) -> usize {
        match layout {
            BITS2 => 8,
            BITS3 => 12,
            BITS4 => 16,
            BITS5 => 20,
            BITS6 => 24,
            _ => 32,
        }
    }

    /// Int8 dot of one packed row with quantized activations (see `super::super::gemv_packed`).
    pub(in crate::kernels) fn dot_row_packed(
        layout: Layout,
        packed: &[u8],
        act: &Q8Row,
        params: &RowParams<'_>,
        blocks_per_group: usize,
    ) -> f32 {
        let id = match layout {
            Layout::Bits2 => BITS2,
            Layout::Bits3 => BITS3,
            Layout::Bits4 => BITS4,
            Layout::Bits5 => BITS5,
            Layout::Bits6 => BITS6,
            Layout::Bits8 => BITS8,
            Layout::Trits5 => unreachable!("ternary 1.6-bit rows are decoded before the dot"),
        };
        let blocks = act.scales.len();
        assert!(super::available());
        assert!(packed.len() >= blocks * block_bytes(id));
        assert!(act.values.len() >= blocks * BLOCK);
        assert!(params.scales.len() * blocks_per_group >= blocks);
        assert!(act.group_sums.len() >= params.scales.len());
        // SAFETY: AVX2/FMA/F16C checked above; `packed` and `act.values` cover `blocks` blocks and
        // `group_sums` has an entry per group.
        unsafe {
            match id {
                BITS2 => dot_row::<BITS2>(packed.as_ptr(), act, params, blocks_per_group),
                BITS3 => dot_row::<BITS3>(packed.as_ptr(), act, params, blocks_per_group),
                BITS4 => dot_row::<BITS4>(packed.as_ptr(), act, params, blocks_per_group),
                BITS5 => dot_row::<BITS5>(packed.as_ptr(), act, params, blocks_per_group),
                BITS6 => dot_row::<BITS6>(packed.as_ptr(), act, params, blocks_per_group),
                _ => dot_row::<BITS8>(packed.as_ptr(), act, params, blocks_per_group),
            }
        }
    }

    /// Int8 dot of a [`Layout::Bits4`] row, two blocks per step; `act` must have been through
    /// `Q8Row::interleave_nibble_pairs` and block pairs must not straddle groups.
    pub(in crate::kernels) fn dot_row_bits4_pairs(
        packed: &[u8],
        act: &Q8Row,
        params: &RowParams<'_>,
        blocks_per_group: usize,
    ) -> f32 {
        let blocks = act.scales.len();
        assert!(super::available());
        assert!(packed.len() >= blocks * block_bytes(BITS4));
        assert!(act.values.len() >= blocks * BLOCK);
        assert!(act.pair_scales.len() >= blocks / 2 * 8);
        assert!(params.scales.len() * blocks_per_group >= blocks);
        assert!(act.group_sums.len() >= params.scales.len());
        assert!(blocks_per_group & 1 == 0 || params.scales.len() == 1);
        // SAFETY: AVX2/FMA/F16C checked above; `packed`, `act.values` and `act.pair_scales`
        // cover every block and `group_sums` has an entry per group.
        unsafe { bits4_pairs(packed.as_ptr(), act, params, blocks_per_group) }
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn bits4_pairs(
        packed: *const u8,
        act: &Q8Row,
        params: &RowParams<'_>,
        blocks_per_group: usize,
    ) -> f32 {
        let blocks = act.scales.len();
        let x = act.values.as_ptr();
        let pair_scales = act.pair_scales.as_ptr();
        let nibble = _mm256_set1_epi8(15);
        let ones = _mm256_set1_epi16(1);
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut zero_term = 0.0f32;
        for (g, scale) in params.scales.iter().enumerate() {
            let scale = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(scale.to_bits()))));
            zero_term += scale * params.zero(g) * act.group_sums.get_unchecked(g);
            let scale_v = _mm256_set1_ps(scale);
            let end = ((g + 1) * blocks_per_group).min(blocks);
            let mut b = g * blocks_per_group;
            while b + 1 < end {
                // Bytes of blocks b and b+1: low nibbles are codes 0..16 of each, high 16..32.
                let v = _mm256_loadu_si256(packed.add(b * 16).cast());
                let lo = _mm256_and_si256(v, nibble);
                let hi = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
                let x_lo = _mm256_loadu_si256(x.add(b * BLOCK).cast());
                let x_hi = _mm256_loadu_si256(x.add(b * BLOCK + BLOCK).cast());
                // Each vpmaddubsw lane is at most 2 * 15 * 127, so the i16 sum cannot overflow.
                let pairs = _mm256_add_epi16(
                    _mm256_maddubs_epi16(lo, x_lo),
                    _mm256_maddubs_epi16(hi, x_hi),
                );
                // Lanes 0-3: block b, lanes 4-7: block b+1.
                let dots = _mm256_madd_epi16(pairs, ones);
                let scales = _mm256_mul_ps(_mm256_loadu_ps(pair_scales.add(b / 2 * 8)), scale_v);
                let next = _mm256_fmadd_ps(_mm256_cvtepi32_ps(dots), scales, acc0);
                acc0 = acc1;
                acc1 = next;
                b += 2;
            }
            if b < end {
                let d = block_dot::<BITS4>(packed.add(b * 16), x.add(b * BLOCK), ones);
                let s = _mm256_set1_ps(scale * *act.scales.get_unchecked(b));
                acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d), s, acc0);
            }
        }
        hsum(_mm256_add_ps(acc0, acc1)) - zero_term
    }

    /// Int8 dot of a decoded row (one code < 128 per byte, padded to whole blocks).
    pub(in crate::kernels) fn dot_row_bytes(
        codes: &[u8],
        act: &Q8Row,
        params: &RowParams<'_>,
        blocks_per_group: usize,
    ) -> f32 {
        assert!(super::available());
        assert!(codes.len() >= act.scales.len() * BLOCK);
        assert!(act.values.len() >= act.scales.len() * BLOCK);
        assert!(params.scales.len() * blocks_per_group >= act.scales.len());
        assert!(act.group_sums.len() >= params.scales.len());
        // SAFETY: AVX2/FMA/F16C checked above; `codes` and `act.values` cover every block and
        // `group_sums` has an entry per group.
        unsafe { dot_row::<BYTES>(codes.as_ptr(), act, params, blocks_per_group) }
    }

    /// 32 two-bit codes from 8 bytes: byte j holds codes j, j+8, j+16, j+24.
    #[inline(always)]
    unsafe fn unpack_bits2(p: *const u8) -> __m256i {
        let v = _mm256_set1_epi64x(p.cast::<i64>().read_unaligned());
        let shifted = _mm256_srlv_epi64(v, _mm256_set_epi64x(6, 4, 2, 0));
        _mm256_and_si256(shifted, _mm256_set1_epi8(3))
    }

    /// 32 four-bit codes from 16 bytes: byte j holds codes j (low) and j+16 (high).
    #[inline(always)]
    unsafe fn unpack_bits4(p: *const u8) -> __m256i {
        let v = _mm_loadu_si128(p.cast());
        let mask = _mm_set1_epi8(15);
        let lo = _mm_and_si128(v, mask);
        let hi = _mm_and_si128(_mm_srli_epi16(v, 4), mask);
        _mm256_set_m128i(hi, lo)
    }

    /// Byte j = `value` where bit j of the little-endian u32 at `p` is set, else 0.
    #[inline(always)]
    unsafe fn unpack_plane(p: *const u8, value: i8) -> __m256i {
        let v = _mm256_set1_epi32(p.cast::<i32>().read_unaligned());
        #[rustfmt::skip]
        let spread = _mm256_setr_epi8(
            0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1,
            2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3, 3, 3, 3, 3,
        );
        let bytes = _mm256_shuffle_epi8(v, spread);
        let select = _mm256_set1_epi64x(0x8040_2010_0804_0201_u64 as i64);
        let hit = _mm256_cmpeq_epi8(_mm256_and_si256(bytes, select), select);
        _mm256_and_si256(hit, _mm256_set1_epi8(value))
    }

    #[inline(always)]
    unsafe fn unpack<const L: u8>(p: *const u8) -> __m256i {
        match L {
            BITS2 => unpack_bits2(p),
            BITS3 => _mm256_or_si256(unpack_bits2(p), unpack_plane(p.add(8), 4)),
            BITS4 => unpack_bits4(p),
            BITS5 => _mm256_or_si256(unpack_bits4(p), unpack_plane(p.add(16), 16)),
            BITS6 => _mm256_or_si256(
                unpack_bits4(p),
                _mm256_slli_epi16(unpack_bits2(p.add(16)), 4),
            ),
            _ => _mm256_loadu_si256(p.cast()),
        }
    }

    /// Eight i32 partial sums of `codes · x` for one block. Bits8 codes are used as signed
    /// `code - 128` (caller corrects the zero point) so `vpmaddubsw` cannot saturate.
    #[inline(always)]
    unsafe fn block_dot<const L: u8>(p: *const u8, x: *const i8, ones: __m256i) -> __m256i {
        let w = unpack::<L>(p);
        let xv = _mm256_loadu_si256(x.cast());
        let pairs = if L == BITS8 {
            let signed = _mm256_xor_si256(w, _mm256_set1_epi8(-128));
            _mm256_maddubs_epi16(_mm256_abs_epi8(signed), _mm256_sign_epi8(xv, signed))
        } else {
            _mm256_maddubs_epi16(w, xv)
        };
        _mm256_madd_epi16(pairs, ones)
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn dot_row<const L: u8>(
        packed: *const u8,
        act: &Q8Row,
        params: &RowParams<'_>,
        blocks_per_group: usize,
    ) -> f32 {
        let blocks = act.scales.len();
        let bytes = block_bytes(L);
        let x = act.values.as_ptr();
        let ones = _mm256_set1_epi16(1);
        // Two accumulators hide the FMA latency.
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut zero_term = 0.0f32;
        for (g, scale) in params.scales.iter().enumerate() {
            let scale = _mm_cvtss_f32(_mm_cvtph_ps(_mm_cvtsi32_si128(i32::from(scale.to_bits()))));
            zero_term += scale * params.zero(g) * act.group_sums.get_unchecked(g);
            let end = ((g + 1) * blocks_per_group).min(blocks);
            let mut b = g * blocks_per_group;
            while b + 1 < end {
                let d0 = block_dot::<L>(packed.add(b * bytes), x.add(b * BLOCK), ones);
                let d1 = block_dot::<L>(packed.add((b + 1) * bytes), x.add((b + 1) * BLOCK), ones);
                let s0 = _mm256_set1_ps(scale * *act.scales.get_unchecked(b));
                let s1 = _mm256_set1_ps(scale * *act.scales.get_unchecked(b + 1));
                acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d0), s0, acc0);
                acc1 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d1), s1, acc1);
                b += 2;
            }
            if b < end {
                let d0 = block_dot::<L>(packed.add(b * bytes), x.add(b * BLOCK), ones);
                let s0 = _mm256_set1_ps(scale * *act.scales.get_unchecked(b));
                acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(d0), s0, acc0);
            }
        }
        hsum(_mm256_add_ps(acc0, acc1)) - zero_term
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// Lane mask selecting the first `rem` (< 8) lanes, for masked tail loads.
    #[inline(always)]
    unsafe fn tail_mask(rem: usize) -> __m256i {
        _mm256_cmpgt_epi32(
            _mm256_set1_epi32(rem as i32),
            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
        )
    }

    /// f32 dot product.
    pub(in crate::kernels) fn dot_f32(x: &[f32], w: &[f32]) -> f32 {
        assert!(super::available());
        assert_eq!(x.len(), w.len());
        // SAFETY: AVX2/FMA checked above; both slices hold `x.len()` floats.
        unsafe { dot_f32_impl(x.as_ptr(), w.as_ptr(), x.len()) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn dot_f32_impl(x: *const f32, w: *const f32, k: usize) -> f32 {
        let mut acc = [_mm256_setzero_ps(); 4];
        let mut p = 0;
        while p + 32 <= k {
            for (lane, a) in acc.iter_mut().enumerate() {
                let o = p + lane * 8;
                *a = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(o)), _mm256_loadu_ps(w.add(o)), *a);
            }
            p += 32;
        }
        while p + 8 <= k {
            acc[0] = _mm256_fmadd_ps(_mm256_loadu_ps(x.add(p)), _mm256_loadu_ps(w.add(p)), acc[0]);
            p += 8;
        }
        if p < k {
            let mask = tail_mask(k - p);
            let xv = _mm256_maskload_ps(x.add(p), mask);
            let wv = _mm256_maskload_ps(w.add(p), mask);
            acc[1] = _mm256_fmadd_ps(xv, wv, acc[1]);
        }
        hsum(_mm256_add_ps(
            _mm256_add_ps(acc[0], acc[1]),
            _mm256_add_ps(acc[2], acc[3]),
        ))
    }

    /// `out[i][j] = x[i] · w[j]` for `mr <= MR` rows of `x` and `nr <= NR` rows of `w`.
    pub(in crate::kernels) fn dot_tile(
        x: &[f32],
        mr: usize,
        w: &[f32],
        nr: usize,
        k: usize,
        out: &mut [[f32; NR]; MR],
    ) {
        assert!(super::available());
        assert!((1..=MR).contains(&mr) && (1..=NR).contains(&nr));
        assert!(x.len() >= mr * k && w.len() >= nr * k);
        let (x, w) = (x.as_ptr(), w.as_ptr());
        // SAFETY: AVX2/FMA checked above; `x` holds `mr` rows and `w` holds `nr` rows of `k`.
        unsafe {
            match (mr, nr) {
                (4, 3) => tile::<4, 3>(x, w, k, out),
                (4, 2) => tile::<4, 2>(x, w, k, out),
                (4, 1) => tile::<4, 1>(x, w, k, out),
                (3, 3) => tile::<3, 3>(x, w, k, out),
                (3, 2) => tile::<3, 2>(x, w, k, out),
                (3, 1) => tile::<3, 1>(x, w, k, out),
                (2, 3) => tile::<2, 3>(x, w, k, out),
                (2, 2) => tile::<2, 2>(x, w, k, out),
                (2, 1) => tile::<2, 1>(x, w, k, out),
                (1, 3) => tile::<1, 3>(x, w, k, out),
                (1, 2) => tile::<1, 2>(x, w, k, out),
                _ => tile::<1, 1>(x, w, k, out),
            }
        }
    }

    /// Register-blocked micro-kernel: R x C accumulators of 8 lanes, reduced at the end.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn tile<const R: usize, const C: usize>(
        x: *const f32,
        w: *const f32,
        k: usize,
        out: &mut [[f32; NR]; MR],
    ) {
        let mut acc = [[_mm256_setzero_ps(); C]; R];
        let mut p = 0;
        while p + 8 <= k {
            let mut wv = [_mm256_setzero_ps(); C];
            for (j, v) in wv.iter_mut().enumerate() {
                *v = _mm256_loadu_ps(w.add(j * k + p));
            }
            for (i, acc_row) in acc.iter_mut().enumerate() {
                let xv = _mm256_loadu_ps(x.add(i * k + p));
                for (a, &v) in acc_row.iter_mut().zip(&wv) {
                    *a = _mm256_fmadd_ps(xv, v, *a);
                }
            }
            p += 8;
        }
        if p < k {
            let mask = tail_mask(k - p);
            let mut wv = [_mm256_setzero_ps(); C];
            for (j, v) in wv.iter_mut().enumerate() {
                *v = _mm256_maskload_ps(w.add(j * k + p), mask);
            }
            for (i, acc_row) in acc.iter_mut().enumerate() {
                let xv = _mm256_maskload_ps(x.add(i * k + p), mask);
                for (a, &v) in acc_row.iter_mut().zip(&wv) {
                    *a = _mm256_fmadd_ps(xv, v, *a);
                }
            }
        }
        for (out_row, acc_row) in out.iter_mut().zip(&acc) {
            for (o, &a) in out_row.iter_mut().zip(acc_row) {
                *o = hsum(a);
            }
        }
    }
}

pub(super) use imp::{dot_f32, dot_row_bits4_pairs, dot_row_bytes, dot_row_packed, dot_tile};
