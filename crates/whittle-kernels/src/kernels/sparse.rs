//! Matrix-vector rows for the sparse ternary layout ([`crate::Layout::TernarySparse`]) with
//! int8 activations, straight from the masks and sign bits (no decoding to bytes).
//!
//! Per 32-weight block: BMI2 `pdep` deposits the block's compacted sign bits onto its nonzero
//! mask's positions. With AVX-512 BW/VL the mask and the signs are opmasks (a masked move and a
//! masked negation of the int8 activations); on AVX2 they become `{-1, 0, +1}` bytes (mask bits
//! to bytes by a shuffle, an AND with each byte's bit and a compare) that `vpsignb` applies.
//! `vpmaddubsw`/`vpmaddwd` sum the block, and four rows per tile fold their sums so the
//! conversion and the scaling FMA run once per block for the tile. The per-block scalar work
//! (mask, signs, `pdep`, popcount) sets the speed, which does not fall with the sparsity. The
//! result equals the decoded-bytes kernel's (the same int8 products; sums in another order).
//!
//! Safety contract of the `unsafe fn`s: the CPU has AVX2, FMA and BMI2 ([`available`] is
//! checked by the caller), and the sparse codes were validated ([`crate::ternary::SparseTernary`])
//! so every row's masks and sign bytes lie inside the codes.

use super::gemv::Q8Row;
use crate::pack::PackedMatrixRef;

/// Whether this CPU runs the sparse kernel (AVX2, FMA and BMI2's `pdep`).
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        super::avx2::available()
            && is_x86_feature_detected!("bmi2")
            && is_x86_feature_detected!("popcnt")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Whether this CPU runs the AVX-512 BW/VL opmask version.
pub(super) fn avx512_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `out[i] = W[row0 + i] · x` (no bias) for a validated sparse ternary `w`, `act` the int8
/// activations of `x`; with AVX-512 BW/VL opmasks when `avx512`, else AVX2.
pub(super) fn dot_rows(
    w: &PackedMatrixRef<'_>,
    row0: usize,
    act: &Q8Row,
    out: &mut [f32],
    avx512: bool,
) {
    assert!(available(), "the sparse kernel needs AVX2, FMA and BMI2");
    assert!(!avx512 || avx512_available());
    assert!(row0 + out.len() <= w.rows);
    assert!(act.values.len() >= w.cols.div_ceil(crate::format::BLOCK) * crate::format::BLOCK);
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the CPU features were checked above; the codes are validated (caller's
    // contract) and the activation buffer covers every block.
    unsafe {
        if avx512 {
            imp::dot_rows_avx512(w, row0, act, out)
        } else {
            imp::dot_rows_avx2(w, row0, act, out)
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    unreachable!("the sparse kernel is only selected when available()")
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::x86_64::*;

    use super::Q8Row;
    use crate::format::BLOCK;
    use crate::pack::PackedMatrixRef;
    use crate::ternary::SparseTernary;

    /// Weight rows per tile.
    const TILE: usize = 4;

    /// At least 57 bits of `payload` from bit `bit` on (zeros past its end). The bits past a
    /// row's sign stream belong to the next row; `pdep` with the block's mask uses only the
    /// block's own. Reading from the whole payload keeps the 8-byte load on its fast path for
    /// all but the last bytes of the matrix.
    #[inline(always)]
    fn sign_bits(payload: &[u8], bit: usize) -> u64 {
        let byte = bit / 8;
        let word = match payload.get(byte..byte + 8) {
            Some(b) => u64::from_le_bytes(b.try_into().expect("8 bytes")),
            None => {
                let mut buf = [0u8; 8];
                let tail = payload.get(byte..).unwrap_or(&[]);
                buf[..tail.len()].copy_from_slice(tail);
                u64::from_le_bytes(buf)
            }
        };
        word >> (bit % 8)
    }

    /// Bytes `0xFF` where bit `j` of `mask` is set, else 0.
    #[inline(always)]
    unsafe fn mask_bytes(mask: u32) -> __m256i {
        let spread = _mm256_shuffle_epi8(
            _mm256_set1_epi32(mask as i32),
            _mm256_setr_epi8(
                0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1, 2, 2, 2, 2, 2, 2, 2, 2, 3, 3, 3, 3,
                3, 3, 3, 3,
            ),
        );
        let bit = _mm256_set1_epi64x(0x8040_2010_0804_0201u64 as i64);
        _mm256_cmpeq_epi8(_mm256_and_si256(spread, bit), bit)
    }

    #[inline(always)]
    unsafe fn hsum(v: __m256) -> f32 {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }

    /// A row being read: its masks and the bit position of its next sign in the payload.
    struct Cursor<'a> {
        masks: &'a [u8],
        bit: usize,
    }

    impl Cursor<'_> {
        /// The activations of block `b` times the block's ternary weights, as signed bytes
        /// (advancing past its signs). AVX-512 applies the mask and the signs as opmasks;
        /// AVX2 turns them into `{-1, 0, +1}` bytes for `vpsignb`.
        #[inline(always)]
        unsafe fn signed<const AVX512: bool>(
            &mut self,
            payload: &[u8],
            b: usize,
            x: __m256i,
            ones8: __m256i,
        ) -> __m256i {
            let m = u32::from_le_bytes([
                self.masks[4 * b],
                self.masks[4 * b + 1],
                self.masks[4 * b + 2],
                self.masks[4 * b + 3],
            ]);
            let negative = _pdep_u32(sign_bits(payload, self.bit) as u32, m);
            self.bit += m.count_ones() as usize;
            if AVX512 {
                let kept = _mm256_maskz_mov_epi8(m, x);
                _mm256_mask_sub_epi8(kept, negative, _mm256_setzero_si256(), kept)
            } else {
                let t =
                    _mm256_or_si256(_mm256_and_si256(mask_bytes(m), ones8), mask_bytes(negative));
                _mm256_sign_epi8(x, t)
            }
        }
    }

    /// The sum of one block's signed bytes in eight i32 lanes.
    #[inline(always)]
    unsafe fn block_sums(signed: __m256i, ones8: __m256i, ones16: __m256i) -> __m256i {
        _mm256_madd_epi16(_mm256_maddubs_epi16(ones8, signed), ones16)
    }

    /// The kernel on AVX2 + BMI2.
    #[target_feature(enable = "avx2,fma,bmi2,f16c,popcnt")]
    pub(super) unsafe fn dot_rows_avx2(
        w: &PackedMatrixRef<'_>,
        row0: usize,
        act: &Q8Row,
        out: &mut [f32],
    ) {
        dot_rows::<false>(w, row0, act, out)
    }

    /// The kernel with AVX-512 BW/VL opmasks.
    #[target_feature(enable = "avx2,fma,bmi2,f16c,popcnt,avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn dot_rows_avx512(
        w: &PackedMatrixRef<'_>,
        row0: usize,
        act: &Q8Row,
        out: &mut [f32],
    ) {
        dot_rows::<true>(w, row0, act, out)
    }

    #[inline(always)]
    unsafe fn dot_rows<const AVX512: bool>(
        w: &PackedMatrixRef<'_>,
        row0: usize,
        act: &Q8Row,
        out: &mut [f32],
    ) {
        let cols = w.cols;
        let view = SparseTernary::trusted(w.codes, w.rows, cols);
        let granularity = w.format.quant.granularity;
        let groups = granularity.groups_per_row(cols);
        let blocks = cols.div_ceil(BLOCK);
        let blocks_per_group = granularity.group_len(cols).div_ceil(BLOCK);
        let ones8 = _mm256_set1_epi8(1);
        let ones16 = _mm256_set1_epi16(1);
        let payload = view.payload();
        let mask_len = view.mask_bytes();
        let mut offset = view.row_offset(row0);
        // Plain functions, not closures: a closure does not inherit this function's target
        // features, so its intrinsics would not inline (a call per block).
        #[inline(always)]
        fn cursor<'a>(payload: &'a [u8], offset: &mut usize, mask_len: usize) -> Cursor<'a> {
            let masks = &payload[*offset..*offset + mask_len];
            // Not `ternary::row_bytes_from_masks`: its usize sum measured 25 % slower here.
            let nonzeros: u32 = masks
                .chunks_exact(4)
                .map(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]).count_ones())
                .sum();
            let c = Cursor {
                masks,
                bit: (*offset + mask_len) * 8,
            };
            *offset += mask_len + (nonzeros as usize).div_ceil(8);
            c
        }
        #[inline(always)]
        unsafe fn x_at(act: &Q8Row, b: usize) -> __m256i {
            _mm256_loadu_si256(act.values.as_ptr().add(b * BLOCK) as *const __m256i)
        }
        // Four rows at a time: four independent chains per block, whose i32 sums are folded
        // into one vector (lanes 0-3 and 4-7: the rows' two halves) so the conversion and the
        // scaling FMA are paid once per block for the four rows.
        let mut tiles = out.chunks_exact_mut(TILE);
        let mut row = row0;
        for ys in &mut tiles {
            let mut rows: [Cursor; TILE] =
                std::array::from_fn(|_| cursor(payload, &mut offset, mask_len));
            let mut totals = _mm_setzero_ps();
            for g in 0..groups {
                let mut acc = _mm256_setzero_ps();
                for b in g * blocks_per_group..((g + 1) * blocks_per_group).min(blocks) {
                    let x = x_at(act, b);
                    let s0 = block_sums(
                        rows[0].signed::<AVX512>(payload, b, x, ones8),
                        ones8,
                        ones16,
                    );
                    let s1 = block_sums(
                        rows[1].signed::<AVX512>(payload, b, x, ones8),
                        ones8,
                        ones16,
                    );
                    let s2 = block_sums(
                        rows[2].signed::<AVX512>(payload, b, x, ones8),
                        ones8,
                        ones16,
                    );
                    let s3 = block_sums(
                        rows[3].signed::<AVX512>(payload, b, x, ones8),
                        ones8,
                        ones16,
                    );
                    let folded =
                        _mm256_hadd_epi32(_mm256_hadd_epi32(s0, s1), _mm256_hadd_epi32(s2, s3));
                    acc = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(folded),
                        _mm256_set1_ps(act.scales[b]),
                        acc,
                    );
                }
                let sums = _mm_add_ps(_mm256_castps256_ps128(acc), _mm256_extractf128_ps(acc, 1));
                let scales: [f32; TILE] =
                    std::array::from_fn(|r| w.group_params(row + r, g, groups).0);
                totals = _mm_fmadd_ps(sums, _mm_loadu_ps(scales.as_ptr()), totals);
            }
            _mm_storeu_ps(ys.as_mut_ptr(), totals);
            row += TILE;
        }
        for y in tiles.into_remainder() {
            let mut c = cursor(payload, &mut offset, mask_len);
            let mut total = 0.0f32;
            for g in 0..groups {
                let mut acc = _mm256_setzero_ps();
                for b in g * blocks_per_group..((g + 1) * blocks_per_group).min(blocks) {
                    let sums = block_sums(
                        c.signed::<AVX512>(payload, b, x_at(act, b), ones8),
                        ones8,
                        ones16,
                    );
                    acc = _mm256_fmadd_ps(
                        _mm256_cvtepi32_ps(sums),
                        _mm256_set1_ps(act.scales[b]),
                        acc,
                    );
                }
                total += w.group_params(row, g, groups).0 * hsum(acc);
            }
            *y = total;
            row += 1;
        }
    }
}
