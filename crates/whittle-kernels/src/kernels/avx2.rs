//! AVX2 + FMA kernels. All `unsafe` of the crate lives here.
//!
//! Safety contract, shared by every `unsafe fn` below: the CPU supports AVX2 and FMA (the safe
//! wrappers assert [`available`]) and every pointer covers the bytes the loop reads, which the
//! wrappers assert from slice lengths before calling in. Loads are unaligned (`loadu`), and the
//! f32 tails use masked loads, so nothing past a slice's end is touched.

use super::gemv::{CodeSource, Lanes4, Q8Row, Rows, TILE_ROWS};
use super::{MR, NR};
use crate::format::{Layout, BLOCK};
#[cfg(target_arch = "x86_64")]
use half::f16;

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
    pub(in crate::kernels) fn dot_rows_packed(
        _: CodeSource,
        _: &Rows<'_>,
        _: &Q8Row,
        _: &mut Vec<Lanes4>,
        _: &mut [f32],
    ) {
        unreachable!("AVX2 kernels are only selected when available()")
    }
    pub(in crate::kernels) fn quantize_blocks(
        _: &[f32],
        _: &mut [i8],
        _: &mut [f32],
        _: &mut [f32],
    ) {
        unreachable!("AVX2 kernels are only selected when available()")
    }
    pub(in crate::kernels) fn softmax_row(_: &mut [f32]) {
        unreachable!("AVX2 kernels are only selected when available()")
    }
    pub(in crate::kernels) fn gelu(_: &mut [f32]) {
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

    /// Int8 dots of `out.len()` consecutive weight rows with quantized activations (see
    /// `super::super::gemv`), zero-point term removed, bias not added. `table` is scratch for
    /// one tile's f32 scales.
    pub(in crate::kernels) fn dot_rows_packed(
        source: CodeSource,
        rows: &Rows<'_>,
        act: &Q8Row,
        table: &mut Vec<Lanes4>,
        out: &mut [f32],
    ) {
        let n = out.len();
        let blocks = act.scales.len();
        let (groups, bpg) = (rows.groups, rows.blocks_per_group);
        let id = match source {
            CodeSource::Packed(Layout::Bits2) => BITS2,
            CodeSource::Packed(Layout::Bits3) => BITS3,
            CodeSource::Packed(Layout::Bits4) | CodeSource::Bits4Pairs => BITS4,
            CodeSource::Packed(Layout::Bits5) => BITS5,
            CodeSource::Packed(Layout::Bits6) => BITS6,
            CodeSource::Packed(Layout::Bits8) => BITS8,
            CodeSource::Bytes => BYTES,
            CodeSource::Packed(Layout::Trits5 | Layout::TernarySparse) | CodeSource::Sparse => {
                unreachable!("ternary 1.6-bit and sparse rows are decoded before the dot")
            }
        };
        assert!(super::available());
        if n == 0 {
            return;
        }
        assert!(act.values.len() >= blocks * BLOCK);
        assert!(groups >= 1 && groups * bpg >= blocks && (groups - 1) * bpg < blocks);
        assert!(act.group_sums.len() >= groups);
        assert!(rows.codes.len() >= (n - 1) * rows.row_bytes + blocks * block_bytes(id));
        let params_len = (n - 1) * rows.scale_stride + groups;
        assert!(rows.scales.len() >= params_len);
        assert!(rows.zeros.is_none_or(|z| z.len() >= params_len));
        let pairs = source == CodeSource::Bits4Pairs;
        if pairs {
            assert!(act.pair_scales.len() >= blocks / 2 * 8);
            assert!(bpg & 1 == 0 || groups == 1);
        }
        let zp = rows.zeros.is_some();
        table.resize(
            groups.next_multiple_of(8) * table_entry(zp),
            Lanes4::default(),
        );
        // SAFETY: AVX2/FMA/F16C checked above; rows `0..n` cover `blocks` blocks of their
        // layout, `act` covers `blocks` blocks (and their pair scales when `pairs`), scales and
        // zero points hold `groups` entries per row, and `table` holds `table_entry` entries per group
        // rounded up to a multiple of 8 groups.
        unsafe {
            macro_rules! run {
                ($l:expr, $pairs:expr) => {
                    if zp {
                        tile_rows::<{ $l }, { $pairs }, true>(
                            rows,
                            act,
                            table.as_mut_ptr().cast(),
                            out,
                        )
                    } else {
                        tile_rows::<{ $l }, { $pairs }, false>(
                            rows,
                            act,
                            table.as_mut_ptr().cast(),
                            out,
                        )
                    }
                };
            }
            match id {
                BITS4 if pairs => run!(BITS4, true),
                BITS2 => run!(BITS2, false),
                BITS3 => run!(BITS3, false),
                BITS4 => run!(BITS4, false),
                BITS5 => run!(BITS5, false),
                BITS6 => run!(BITS6, false),
                BITS8 => run!(BITS8, false),
                _ => run!(BYTES, false),
            }
        }
    }

    /// Tiles of [`TILE_ROWS`] rows (a short last tile repeats its last row).
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile_rows<const L: u8, const PAIRS: bool, const ZP: bool>(
        rows: &Rows<'_>,
        act: &Q8Row,
        table: *mut f32,
        out: &mut [f32],
    ) {
        let n = out.len();
        for t0 in (0..n).step_by(TILE_ROWS) {
            let mut codes = [std::ptr::null(); TILE_ROWS];
            let mut scales = [(std::ptr::null(), 0); TILE_ROWS];
            let mut zeros = [std::ptr::null(); TILE_ROWS];
            for r in 0..TILE_ROWS {
                let row = (t0 + r).min(n - 1);
                let params = row * rows.scale_stride;
                codes[r] = rows.codes.as_ptr().add(row * rows.row_bytes);
                scales[r] = (rows.scales.as_ptr().add(params), rows.scales.len() - params);
                if let Some(z) = rows.zeros {
                    zeros[r] = z.as_ptr().add(params);
                }
            }
            scale_table::<ZP>(scales, zeros, rows, table);
            let dots = tile_dot::<L, PAIRS, ZP>(codes, act, table, rows);
            for (r, y) in out[t0..].iter_mut().take(TILE_ROWS).enumerate() {
                *y = dots[r];
            }
        }
    }

    /// Eight f16 values at `p` when `n >= 8` may be read, else the first `n` zero-extended.
    #[inline(always)]
    unsafe fn load_f16x8(p: *const f16, n: usize) -> __m256 {
        let bits = if n >= 8 {
            _mm_loadu_si128(p.cast())
        } else {
            let mut tail = [0u16; 8];
            for (i, t) in tail.iter_mut().enumerate().take(n) {
                *t = p.add(i).cast::<u16>().read_unaligned();
            }
            _mm_loadu_si128(tail.as_ptr().cast())
        };
        _mm256_cvtph_ps(bits)
    }

    /// Eight u8 values at `p` as f32 when `n >= 8` may be read, else the first `n`
    /// zero-extended.
    #[inline(always)]
    unsafe fn load_u8x8(p: *const u8, n: usize) -> __m256 {
        let bytes = if n >= 8 {
            p.cast::<u64>().read_unaligned()
        } else {
            (0..n).fold(0u64, |acc, i| acc | u64::from(*p.add(i)) << (8 * i))
        };
        _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bytes as i64)))
    }

    /// 4x8 transpose: row `r` lane `g` of `rows` goes to `out[g % 4]` lane `r + 4 * (g / 4)`.
    #[inline(always)]
    unsafe fn transpose_4x8(rows: [__m256; 4]) -> [__m256; 4] {
        let t0 = _mm256_unpacklo_ps(rows[0], rows[1]);
        let t1 = _mm256_unpackhi_ps(rows[0], rows[1]);
        let t2 = _mm256_unpacklo_ps(rows[2], rows[3]);
        let t3 = _mm256_unpackhi_ps(rows[2], rows[3]);
        [
            _mm256_shuffle_ps::<0x44>(t0, t2),
            _mm256_shuffle_ps::<0xEE>(t0, t2),
            _mm256_shuffle_ps::<0x44>(t1, t3),
            _mm256_shuffle_ps::<0xEE>(t1, t3),
        ]
    }

    /// 16-byte-aligned 4-float entries per group in the scale table: the four row scales, then
    /// with zero points the four `scale * (zero point - code shift)`.
    const fn table_entry(zero_points: bool) -> usize {
        if zero_points {
            2
        } else {
            1
        }
    }

    /// Fills the scale table of one tile (layout on [`table_entry`]), converting eight groups
    /// at a time. `scales[r]` is row `r`'s first scale and how many entries may be read from it.
    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn scale_table<const ZP: bool>(
        scales: [(*const f16, usize); TILE_ROWS],
        zeros: [*const u8; TILE_ROWS],
        rows: &Rows<'_>,
        table: *mut f32,
    ) {
        let groups = rows.groups;
        let entry = table_entry(ZP);
        for g0 in (0..groups).step_by(8) {
            let mut s = [_mm256_setzero_ps(); TILE_ROWS];
            let mut z = [_mm256_setzero_ps(); TILE_ROWS];
            for r in 0..TILE_ROWS {
                let (ptr, len) = scales[r];
                // Past this row's groups the lanes hold the next row's scales (or zeros at the
                // end of the matrix); their table entries lie past `groups` and are not read.
                let readable = if len - g0 >= 8 { 8 } else { groups - g0 };
                s[r] = load_f16x8(ptr.add(g0), readable);
                if ZP {
                    let zero = _mm256_sub_ps(
                        load_u8x8(zeros[r].add(g0), readable),
                        _mm256_set1_ps(rows.code_shift),
                    );
                    z[r] = _mm256_mul_ps(s[r], zero);
                }
            }
            // After the transpose, half h of s[j] holds group g0 + j + 4h for the four rows.
            let s = transpose_4x8(s);
            let z = transpose_4x8(z);
            for j in 0..4 {
                let low = table.add((g0 + j) * entry * 4);
                let high = table.add((g0 + 4 + j) * entry * 4);
                _mm_store_ps(low, _mm256_castps256_ps128(s[j]));
                _mm_store_ps(high, _mm256_extractf128_ps::<1>(s[j]));
                if ZP {
                    _mm_store_ps(low.add(4), _mm256_castps256_ps128(z[j]));
                    _mm_store_ps(high.add(4), _mm256_extractf128_ps::<1>(z[j]));
                }
            }
        }
    }

    /// The four row scales of a table entry in both 128-bit halves (`e` is 16-byte aligned).
    #[inline(always)]
    unsafe fn broadcast_entry(e: *const f32) -> __m256 {
        _mm256_broadcast_ps(&*e.cast::<__m128>())
    }

    /// Folds four rows' eight i32 partial sums into `[rows 0..4 of the low half | rows 0..4 of
    /// the high half]`.
    #[inline(always)]
    unsafe fn fold_rows(d: [__m256i; TILE_ROWS]) -> __m256i {
        _mm256_hadd_epi32(_mm256_hadd_epi32(d[0], d[1]), _mm256_hadd_epi32(d[2], d[3]))
    }

    /// [`fold_rows`] from sixteen i16 partial sums per row: two levels of i16 adds (each
    /// result sums four inputs, so inputs must stay within +-8191) and one widening add.
    #[inline(always)]
    unsafe fn fold_rows_i16(d: [__m256i; TILE_ROWS], ones: __m256i) -> __m256i {
        let h = _mm256_hadd_epi16(_mm256_hadd_epi16(d[0], d[1]), _mm256_hadd_epi16(d[2], d[3]));
        _mm256_madd_epi16(h, ones)
    }

    /// Whether a layout's per-row `vpmaddubsw` sums (two products of a code and an int8 value
    /// up to 127) stay within +-8191, so that [`fold_rows_i16`] cannot overflow.
    const fn folds_in_i16(layout: u8) -> bool {
        matches!(layout, BITS2 | BITS3 | BITS4 | BITS5 | BYTES)
    }

    /// Int8 dot of two [`Layout::Bits4`] blocks from one 32-byte load (activations
    /// interleaved): sixteen i16 sums, lanes 0-7 of block `b`, lanes 8-15 of block `b + 1`.
    #[inline(always)]
    unsafe fn pair_dot_bits4(p: *const u8, x_lo: __m256i, x_hi: __m256i) -> __m256i {
        let nibble = _mm256_set1_epi8(15);
        let v = _mm256_loadu_si256(p.cast());
        let lo = _mm256_and_si256(v, nibble);
        let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(v), nibble);
        // Each lane sums four products of at most 15 * 127 = 1905: 7620, within fold_rows_i16's
        // +-8191.
        _mm256_add_epi16(
            _mm256_maddubs_epi16(lo, x_lo),
            _mm256_maddubs_epi16(hi, x_hi),
        )
    }

    #[target_feature(enable = "avx2,fma,f16c")]
    unsafe fn tile_dot<const L: u8, const PAIRS: bool, const ZP: bool>(
        codes: [*const u8; TILE_ROWS],
        act: &Q8Row,
        table: *const f32,
        rows: &Rows<'_>,
    ) -> [f32; TILE_ROWS] {
        let blocks = act.scales.len();
        let bytes = block_bytes(L);
        let bpg = rows.blocks_per_group;
        let entry = table_entry(ZP);
        let x = act.values.as_ptr();
        let ones = _mm256_set1_epi16(1);
        // Zero-point term, per row: sum_g (s_w z)[g] X_g, or without zero points
        // sum_g s_w[g] X_g, multiplied by the shared zero point below.
        let mut zero_term = _mm_setzero_ps();
        for g in 0..rows.groups {
            let e = table.add(g * entry * 4);
            let scales = _mm_load_ps(if ZP { e.add(4) } else { e });
            let group_sum = _mm_set1_ps(*act.group_sums.get_unchecked(g));
            zero_term = _mm_fmadd_ps(scales, group_sum, zero_term);
        }
        // Lane r and lane r + 4 both belong to tile row r. One flat loop over blocks (or block
        // pairs), stepping to the next group's scales every `per_group` steps.
        let mut acc0 = _mm256_setzero_ps();
        let mut acc1 = _mm256_setzero_ps();
        let mut e = table;
        let mut b = 0;
        if PAIRS {
            // Pairs never straddle groups (bpg is even, or there is one group).
            let per_group = if rows.groups == 1 {
                usize::MAX
            } else {
                bpg / 2
            };
            let mut left = per_group;
            while b + 1 < blocks {
                let x_lo = _mm256_loadu_si256(x.add(b * BLOCK).cast());
                let x_hi = _mm256_loadu_si256(x.add(b * BLOCK + BLOCK).cast());
                let d = codes.map(|p| pair_dot_bits4(p.add(b * 16), x_lo, x_hi));
                let pair_scales = _mm256_loadu_ps(act.pair_scales.as_ptr().add(b / 2 * 8));
                let scales = _mm256_mul_ps(broadcast_entry(e), pair_scales);
                let dots = _mm256_cvtepi32_ps(fold_rows_i16(d, ones));
                acc0 = _mm256_fmadd_ps(dots, scales, acc0);
                std::mem::swap(&mut acc0, &mut acc1);
                b += 2;
                left -= 1;
                if left == 0 {
                    e = e.add(entry * 4);
                    left = per_group;
                }
            }
            // A trailing odd block lies in the last group.
            e = table.add((rows.groups - 1) * entry * 4);
        }
        let mut left = bpg - b % bpg;
        while b < blocks {
            let xv = _mm256_loadu_si256(x.add(b * BLOCK).cast());
            let d = codes.map(|p| block_products::<L>(p.add(b * bytes), xv));
            let folded = if folds_in_i16(L) {
                fold_rows_i16(d, ones)
            } else {
                fold_rows(d.map(|v| _mm256_madd_epi16(v, ones)))
            };
            let s = _mm256_mul_ps(
                broadcast_entry(e),
                _mm256_set1_ps(*act.scales.get_unchecked(b)),
            );
            acc0 = _mm256_fmadd_ps(_mm256_cvtepi32_ps(folded), s, acc0);
            std::mem::swap(&mut acc0, &mut acc1);
            b += 1;
            left -= 1;
            if left == 0 {
                e = e.add(entry * 4);
                left = bpg;
            }
        }
        if !ZP {
            zero_term = _mm_mul_ps(zero_term, _mm_set1_ps(rows.zero_const));
        }
        let acc = _mm256_add_ps(acc0, acc1);
        let sums = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps::<1>(acc));
        let mut out = [0.0f32; TILE_ROWS];
        _mm_storeu_ps(out.as_mut_ptr(), _mm_sub_ps(sums, zero_term));
        out
    }

    /// Quantizes `x` to int8 per 32-value block (zero-padded to whole blocks): the same scale,
    /// reciprocal and round-to-nearest-even as the portable `Q8Row::quantize_scalar`.
    pub(in crate::kernels) fn quantize_blocks(
        x: &[f32],
        values: &mut [i8],
        scales: &mut [f32],
        block_sums: &mut [f32],
    ) {
        let blocks = x.len().div_ceil(BLOCK);
        assert!(super::available());
        assert!(values.len() >= blocks * BLOCK);
        assert!(scales.len() >= blocks && block_sums.len() >= blocks);
        // SAFETY: AVX2 checked above; reads stay inside `x` (masked tails) and writes inside
        // `blocks` blocks of the outputs.
        unsafe { quantize_impl(x, values, scales, block_sums) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn quantize_impl(
        x: &[f32],
        values: &mut [i8],
        scales: &mut [f32],
        block_sums: &mut [f32],
    ) {
        let len = x.len();
        let abs_mask = _mm256_castsi256_ps(_mm256_set1_epi32(i32::MAX));
        let order = _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7);
        for b in 0..len.div_ceil(BLOCK) {
            let mut v = [_mm256_setzero_ps(); 4];
            for (c, v) in v.iter_mut().enumerate() {
                let start = b * BLOCK + c * 8;
                if start + 8 <= len {
                    *v = _mm256_loadu_ps(x.as_ptr().add(start));
                } else if start < len {
                    *v = _mm256_maskload_ps(x.as_ptr().add(start), tail_mask(len - start));
                }
            }
            let a = v.map(|v| _mm256_and_ps(v, abs_mask));
            let m = _mm256_max_ps(_mm256_max_ps(a[0], a[1]), _mm256_max_ps(a[2], a[3]));
            let m = _mm_max_ps(_mm256_castps256_ps128(m), _mm256_extractf128_ps::<1>(m));
            let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
            let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
            let scale = _mm_cvtss_f32(m) / 127.0;
            let inv = _mm256_set1_ps(if scale > 0.0 { 1.0 / scale } else { 0.0 });
            // Default MXCSR rounding: to nearest, ties to even, like the portable version.
            let q = v.map(|v| _mm256_cvtps_epi32(_mm256_mul_ps(v, inv)));
            let packed = _mm256_packs_epi16(
                _mm256_packs_epi32(q[0], q[1]),
                _mm256_packs_epi32(q[2], q[3]),
            );
            let packed = _mm256_permutevar8x32_epi32(packed, order);
            _mm256_storeu_si256(values.as_mut_ptr().add(b * BLOCK).cast(), packed);
            let sum = _mm256_add_epi32(_mm256_add_epi32(q[0], q[1]), _mm256_add_epi32(q[2], q[3]));
            let sum = _mm_add_epi32(
                _mm256_castsi256_si128(sum),
                _mm256_extracti128_si256::<1>(sum),
            );
            let sum = _mm_add_epi32(sum, _mm_shuffle_epi32::<0b01_00_11_10>(sum));
            let sum = _mm_add_epi32(sum, _mm_shuffle_epi32::<0b10_11_00_01>(sum));
            *scales.get_unchecked_mut(b) = scale;
            *block_sums.get_unchecked_mut(b) = scale * _mm_cvtsi128_si32(sum) as f32;
        }
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

    /// Sixteen i16 sums of code-activation product pairs for one block. Bits8 codes are used as
    /// signed `code - 128` (the zero point is corrected by the caller) so `vpmaddubsw` cannot
    /// saturate.
    #[inline(always)]
    unsafe fn block_products<const L: u8>(p: *const u8, xv: __m256i) -> __m256i {
        let w = unpack::<L>(p);
        if L == BITS8 {
            let signed = _mm256_xor_si256(w, _mm256_set1_epi8(-128));
            _mm256_maddubs_epi16(_mm256_abs_epi8(signed), _mm256_sign_epi8(xv, signed))
        } else {
            _mm256_maddubs_epi16(w, xv)
        }
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

    /// `exp` of 8 lanes (formula and constants in `crate::activations`).
    #[inline(always)]
    unsafe fn exp_ps(x: __m256) -> __m256 {
        use crate::activations::consts::*;
        let underflow = _mm256_cmp_ps::<_CMP_LT_OQ>(x, _mm256_set1_ps(EXP_UNDERFLOW));
        let x = _mm256_min_ps(x, _mm256_set1_ps(EXP_OVERFLOW));
        let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(
            _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::LOG2_E)),
        );
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_HI), x);
        let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(LN2_LO), r);
        let mut p = _mm256_set1_ps(EXP_COEFFS[6]);
        for &c in EXP_COEFFS[..6].iter().rev() {
            p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
        }
        let exponent = _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127));
        let pow2 = _mm256_castsi256_ps(_mm256_slli_epi32::<23>(exponent));
        _mm256_andnot_ps(underflow, _mm256_mul_ps(p, pow2))
    }

    /// GELU of 8 lanes (formula and constants in `crate::activations`).
    #[inline(always)]
    unsafe fn gelu_ps(x: __m256) -> __m256 {
        use crate::activations::consts::*;
        let z = _mm256_mul_ps(x, _mm256_set1_ps(std::f32::consts::FRAC_1_SQRT_2));
        let sign = _mm256_set1_ps(-0.0);
        let a = _mm256_andnot_ps(sign, z);
        let z2 = _mm256_mul_ps(z, z);
        let mut series = _mm256_set1_ps(ERF_SERIES[10]);
        for &c in ERF_SERIES[..10].iter().rev() {
            series = _mm256_fmadd_ps(series, z2, _mm256_set1_ps(c));
        }
        let series = _mm256_mul_ps(z, series);
        let one = _mm256_set1_ps(1.0);
        let t = _mm256_div_ps(one, _mm256_fmadd_ps(_mm256_set1_ps(AS_P), a, one));
        let mut poly = _mm256_set1_ps(AS_A[4]);
        for &c in AS_A[..4].iter().rev() {
            poly = _mm256_fmadd_ps(poly, t, _mm256_set1_ps(c));
        }
        let poly = _mm256_mul_ps(poly, t);
        let tail = _mm256_fnmadd_ps(poly, exp_ps(_mm256_xor_ps(z2, sign)), one);
        let tail = _mm256_or_ps(tail, _mm256_and_ps(z, sign));
        let small = _mm256_cmp_ps::<_CMP_LT_OQ>(a, _mm256_set1_ps(ERF_SERIES_LIMIT));
        let erf = _mm256_blendv_ps(tail, series, small);
        _mm256_mul_ps(
            _mm256_mul_ps(_mm256_add_ps(erf, one), _mm256_set1_ps(0.5)),
            x,
        )
    }

    /// GELU in place.
    pub(in crate::kernels) fn gelu(values: &mut [f32]) {
        assert!(super::available());
        // SAFETY: AVX2/FMA checked above; full vectors stay inside the slice, the tail uses
        // masked loads and stores.
        unsafe { gelu_impl(values) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn gelu_impl(values: &mut [f32]) {
        let len = values.len();
        let p = values.as_mut_ptr();
        let mut i = 0;
        while i + 8 <= len {
            _mm256_storeu_ps(p.add(i), gelu_ps(_mm256_loadu_ps(p.add(i))));
            i += 8;
        }
        if i < len {
            let mask = tail_mask(len - i);
            let v = gelu_ps(_mm256_maskload_ps(p.add(i), mask));
            _mm256_maskstore_ps(p.add(i), mask, v);
        }
    }

    /// Softmax of one row in place.
    pub(in crate::kernels) fn softmax_row(row: &mut [f32]) {
        assert!(super::available());
        // SAFETY: AVX2/FMA checked above; full vectors stay inside the slice, the tail uses
        // masked loads and stores.
        unsafe { softmax_impl(row) }
    }

    #[target_feature(enable = "avx2,fma")]
    unsafe fn softmax_impl(row: &mut [f32]) {
        let len = row.len();
        let p = row.as_mut_ptr();
        let full = len / 8 * 8;
        let tail = (full < len).then(|| tail_mask(len - full));
        let neg_inf = _mm256_set1_ps(f32::NEG_INFINITY);
        let mut max = neg_inf;
        for i in (0..full).step_by(8) {
            max = _mm256_max_ps(max, _mm256_loadu_ps(p.add(i)));
        }
        if let Some(mask) = tail {
            let v = _mm256_maskload_ps(p.add(full), mask);
            max = _mm256_max_ps(max, _mm256_blendv_ps(neg_inf, v, _mm256_castsi256_ps(mask)));
        }
        let m = _mm_max_ps(_mm256_castps256_ps128(max), _mm256_extractf128_ps::<1>(max));
        let m = _mm_max_ps(m, _mm_movehl_ps(m, m));
        let m = _mm_max_ss(m, _mm_shuffle_ps::<1>(m, m));
        let max = _mm256_set1_ps(_mm_cvtss_f32(m));
        let mut sum = _mm256_setzero_ps();
        for i in (0..full).step_by(8) {
            let e = exp_ps(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), max));
            _mm256_storeu_ps(p.add(i), e);
            sum = _mm256_add_ps(sum, e);
        }
        if let Some(mask) = tail {
            let e = exp_ps(_mm256_sub_ps(_mm256_maskload_ps(p.add(full), mask), max));
            let e = _mm256_and_ps(e, _mm256_castsi256_ps(mask));
            _mm256_maskstore_ps(p.add(full), mask, e);
            sum = _mm256_add_ps(sum, e);
        }
        let inv = _mm256_set1_ps(1.0 / hsum(sum));
        for i in (0..full).step_by(8) {
            _mm256_storeu_ps(p.add(i), _mm256_mul_ps(_mm256_loadu_ps(p.add(i)), inv));
        }
        if let Some(mask) = tail {
            let v = _mm256_mul_ps(_mm256_maskload_ps(p.add(full), mask), inv);
            _mm256_maskstore_ps(p.add(full), mask, v);
        }
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

pub(super) use imp::{dot_f32, dot_rows_packed, dot_tile, gelu, quantize_blocks, softmax_row};
