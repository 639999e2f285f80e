//! Ternary projections and the sparse ternary code layout.
//!
//! # Projections
//! A row `w` is projected onto `alpha * t` with `t` in `{-1, 0, +1}^n`:
//!
//! * [`cosine_projection`]: the `t` closest to `w` in angle, the objective of hyperspherical
//!   quantization (HQ; Liu et al. 2023, "Hyperspherical Quantization: Toward Smaller and More
//!   Accurate Models", WACV). For a support of size `k` the cosine is
//!   `sum_{i in S} |w_i| / (sqrt(k) ||w||)`, maximised over supports of size `k` by the `k` largest
//!   `|w_i|`; the best `k` is found exactly by sorting once and scanning the prefix sums. The
//!   derivation is whittle's (HQ's equations were not available; see `docs/ternary.md`).
//! * [`twn_projection`]: Ternary Weight Networks' threshold `0.7 mean|w|` (Li et al. 2016), the
//!   baseline.
//!
//! Both return the least-squares scale `alpha = <w, t> / <t, t>` (the mean `|w|` of the support).
//!
//! # Sparse layout ([`crate::Layout::TernarySparse`])
//! The codes of a `rows x cols` ternary matrix take
//!
//! * an offset table of `ceil(rows / 16) + 1` little-endian `u32`: entry `i` is the byte offset
//!   of row `16 i`'s payload from the end of the table (entry 0 is 0), and the last entry is the
//!   payload length. One offset per [`ROWS_PER_OFFSET`] rows costs 2 bits per row instead of 32;
//!   a reader finds row `r` by skipping at most 15 rows from its checkpoint (popcounts of their
//!   masks), and the kernels walk rows in order anyway;
//! * per row, `ceil(cols / 32)` little-endian `u32` nonzero masks (bit `j` of mask `b` says whether
//!   weight `32 b + j` is nonzero; bits at or past `cols` are zero), then one sign bit per
//!   nonzero in column order (bit `i` of the stream is bit `i % 8` of byte `i / 8`; 1 = negative),
//!   padded with zero bits to a whole byte.
//!
//! A row of `z` nonzeros takes `4 ceil(cols / 32) + ceil(z / 8)` bytes: about `1 + z / cols` bits
//! per weight, so the size follows the zeros. Codes decode to `1` (zero), `0` (negative) and `2`
//! (positive), the ternary scheme's codes with zero point 1.

use crate::error::{KernelError, Result};
use crate::format::BLOCK;

/// A ternary projection of one row: the support size and the least-squares scale.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TernaryProjection {
    /// Nonzeros of `t`.
    pub nonzeros: usize,
    /// `<w, t> / <t, t>` (0 when `t` is all zero).
    pub alpha: f32,
}

impl TernaryProjection {
    /// The projection with `nonzeros` nonzeros whose magnitudes sum to `sum`.
    pub fn from_sum(sum: f64, nonzeros: usize) -> Self {
        let alpha = if nonzeros == 0 {
            0.0
        } else {
            (sum / nonzeros as f64) as f32
        };
        Self { nonzeros, alpha }
    }
}

/// Sorts `(|w_i|, i)` by decreasing magnitude into `order` (ties by index, so the projection is
/// deterministic).
fn sort_by_magnitude(values: &[f32], order: &mut Vec<(f32, u32)>) {
    order.clear();
    order.extend(values.iter().enumerate().map(|(i, v)| (v.abs(), i as u32)));
    order.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
}

/// The cosine-optimal ternary projection of `values` with at most `max_nonzero` nonzeros:
/// writes `t` (`-1.0`, `0.0`, `1.0`) into `out` and returns its support and scale. `order` is
/// scratch space (reused across rows). Non-finite values are treated as their magnitude orders
/// them (callers check finiteness); an all-zero row projects to zero.
pub fn cosine_projection(
    values: &[f32],
    max_nonzero: usize,
    order: &mut Vec<(f32, u32)>,
    out: &mut [f32],
) -> TernaryProjection {
    assert_eq!(values.len(), out.len(), "projection output length");
    sort_by_magnitude(values, order);
    let limit = max_nonzero.min(values.len());
    let (mut best_k, mut best, mut sum) = (0usize, 0.0f64, 0.0f64);
    for (k, &(magnitude, _)) in order.iter().take(limit).enumerate() {
        sum += f64::from(magnitude);
        let score = sum / ((k + 1) as f64).sqrt();
        if score > best {
            best = score;
            best_k = k + 1;
        }
    }
    write_support(values, &order[..best_k], out)
}

/// The projection keeping the `k` largest magnitudes of `values` (signs kept): the support a
/// pruning cap leaves when another rule chose more nonzeros. `order` is scratch space.
pub fn top_k_projection(
    values: &[f32],
    k: usize,
    order: &mut Vec<(f32, u32)>,
    out: &mut [f32],
) -> TernaryProjection {
    assert_eq!(values.len(), out.len(), "projection output length");
    sort_by_magnitude(values, order);
    write_support(values, &order[..k.min(values.len())], out)
}

/// TWN's projection: `t_i = sign(w_i)` where `|w_i| > 0.7 mean|w|`, else 0.
pub fn twn_projection(values: &[f32], out: &mut [f32]) -> TernaryProjection {
    assert_eq!(values.len(), out.len(), "projection output length");
    let mean = values.iter().map(|v| f64::from(v.abs())).sum::<f64>() / values.len().max(1) as f64;
    let delta = crate::quant::TWN_DELTA_FACTOR * mean as f32;
    let (mut sum, mut nonzeros) = (0.0f64, 0usize);
    for (t, &w) in out.iter_mut().zip(values) {
        *t = if w.abs() > delta { w.signum() } else { 0.0 };
        if *t != 0.0 {
            sum += f64::from(w.abs());
            nonzeros += 1;
        }
    }
    TernaryProjection::from_sum(sum, nonzeros)
}

fn write_support(values: &[f32], support: &[(f32, u32)], out: &mut [f32]) -> TernaryProjection {
    out.fill(0.0);
    let mut sum = 0.0f64;
    for &(magnitude, i) in support {
        let i = i as usize;
        out[i] = if values[i] < 0.0 { -1.0 } else { 1.0 };
        sum += f64::from(magnitude);
    }
    TernaryProjection::from_sum(sum, support.len())
}

/// Cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let (mut dot, mut aa, mut bb) = (0.0f64, 0.0f64, 0.0f64);
    for (&x, &y) in a.iter().zip(b) {
        dot += f64::from(x) * f64::from(y);
        aa += f64::from(x) * f64::from(x);
        bb += f64::from(y) * f64::from(y);
    }
    if aa == 0.0 || bb == 0.0 {
        0.0
    } else {
        dot / (aa.sqrt() * bb.sqrt())
    }
}

/// Entropy of i.i.d. ternary codes with `zero_fraction` zeros and equally likely signs, in bits
/// per weight: the floor no lossless layout of such codes beats on average.
pub fn ternary_entropy_bits(zero_fraction: f64) -> f64 {
    let p = zero_fraction.clamp(0.0, 1.0);
    let h = |x: f64| if x <= 0.0 { 0.0 } else { -x * x.log2() };
    h(p) + h(1.0 - p) + (1.0 - p)
}

/// Rows per entry of the sparse layout's offset table.
pub const ROWS_PER_OFFSET: usize = 16;

/// Bytes of the offset table for `rows` rows.
fn table_bytes(rows: usize) -> Option<usize> {
    rows.div_ceil(ROWS_PER_OFFSET)
        .checked_add(1)?
        .checked_mul(4)
}

/// Nonzeros marked in `masks` (little-endian `u32`s).
#[inline]
fn mask_nonzeros(masks: &[u8]) -> usize {
    masks
        .chunks_exact(4)
        .map(|m| u32::from_le_bytes([m[0], m[1], m[2], m[3]]).count_ones() as usize)
        .sum()
}

/// Payload bytes of a row whose masks are `masks`.
#[inline]
fn row_bytes_from_masks(masks: &[u8]) -> usize {
    masks.len() + mask_nonzeros(masks).div_ceil(8)
}

/// Payload bytes of a row of `cols` weights with `nonzeros` nonzeros.
#[cfg(test)]
fn row_payload_bytes(cols: usize, nonzeros: usize) -> usize {
    cols.div_ceil(BLOCK) * 4 + nonzeros.div_ceil(8)
}

/// Encodes ternary codes (`0`, `1`, `2`; `[rows][cols]`) in the sparse layout.
pub fn encode_sparse(codes: &[u8], rows: usize, cols: usize) -> Result<Vec<u8>> {
    let overflow = || KernelError::InvalidShape {
        rows,
        cols,
        reason: "sparse ternary size overflows",
    };
    if rows.checked_mul(cols) != Some(codes.len()) {
        return Err(KernelError::LengthMismatch {
            what: "codes",
            expected: rows.saturating_mul(cols),
            actual: codes.len(),
        });
    }
    let table = table_bytes(rows).ok_or_else(overflow)?;
    let mut out = vec![0u8; table];
    let blocks = cols.div_ceil(BLOCK);
    for (r, row) in codes.chunks_exact(cols.max(1)).take(rows).enumerate() {
        if r % ROWS_PER_OFFSET == 0 {
            let start = u32::try_from(out.len() - table).map_err(|_| overflow())?;
            let entry = 4 * (r / ROWS_PER_OFFSET);
            out[entry..entry + 4].copy_from_slice(&start.to_le_bytes());
        }
        let mut signs = Vec::with_capacity(cols / 8 + 1);
        let (mut byte, mut bit) = (0u8, 0u32);
        for b in 0..blocks {
            let mut mask = 0u32;
            for (j, &code) in row[b * BLOCK..((b + 1) * BLOCK).min(cols)]
                .iter()
                .enumerate()
            {
                if code > 2 {
                    return Err(KernelError::CodeOutOfRange {
                        what: "codes",
                        index: r * cols + b * BLOCK + j,
                        value: code,
                        max: 2,
                    });
                }
                if code != 1 {
                    mask |= 1 << j;
                    byte |= u8::from(code == 0) << bit;
                    bit += 1;
                    if bit == 8 {
                        signs.push(byte);
                        (byte, bit) = (0, 0);
                    }
                }
            }
            out.extend_from_slice(&mask.to_le_bytes());
        }
        if bit > 0 {
            signs.push(byte);
        }
        out.extend_from_slice(&signs);
    }
    let end = u32::try_from(out.len() - table).map_err(|_| overflow())?;
    out[table - 4..table].copy_from_slice(&end.to_le_bytes());
    Ok(out)
}

/// A validated view of sparse ternary codes.
#[derive(Clone, Copy, Debug)]
pub struct SparseTernary<'a> {
    bytes: &'a [u8],
    rows: usize,
    cols: usize,
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([bytes[at], bytes[at + 1], bytes[at + 2], bytes[at + 3]])
}

impl<'a> SparseTernary<'a> {
    /// Checks every offset, row length, mask and padding bit of untrusted bytes; never panics.
    pub fn new(bytes: &'a [u8], rows: usize, cols: usize) -> Result<Self> {
        let invalid =
            |reason: String| KernelError::InvalidFormat(format!("sparse ternary codes: {reason}"));
        let table = table_bytes(rows)
            .ok_or_else(|| invalid(format!("{rows} rows overflow the offset table")))?;
        if bytes.len() < table {
            return Err(invalid(format!(
                "{} bytes cannot hold the offset table of {rows} rows ({table} bytes)",
                bytes.len()
            )));
        }
        let payload = &bytes[table..];
        let last = read_u32(bytes, table - 4) as usize;
        if last != payload.len() {
            return Err(invalid(format!(
                "the offset table ends at byte {last} of a {}-byte payload",
                payload.len()
            )));
        }
        let mask_bytes = cols
            .div_ceil(BLOCK)
            .checked_mul(4)
            .ok_or_else(|| invalid(format!("{cols} columns overflow the masks")))?;
        let tail_bits = cols % BLOCK;
        let mut at = 0usize;
        for r in 0..rows {
            if r % ROWS_PER_OFFSET == 0 {
                let entry = read_u32(bytes, 4 * (r / ROWS_PER_OFFSET)) as usize;
                if entry != at {
                    return Err(invalid(format!(
                        "the offset of row {r} is {entry}, but the rows before it end at {at}"
                    )));
                }
            }
            let masks = payload
                .get(at..at.saturating_add(mask_bytes))
                .ok_or_else(|| invalid(format!("row {r}: the masks run past the payload")))?;
            if tail_bits != 0 && read_u32(masks, mask_bytes - 4) >> tail_bits != 0 {
                return Err(invalid(format!(
                    "row {r}: mask bits set past column {cols}"
                )));
            }
            let len = row_bytes_from_masks(masks);
            let row = payload
                .get(at..at + len)
                .ok_or_else(|| invalid(format!("row {r}: the sign bits run past the payload")))?;
            let used = mask_nonzeros(masks) % 8;
            if used != 0 && row[len - 1] >> used != 0 {
                return Err(invalid(format!("row {r}: sign padding bits are set")));
            }
            at += len;
        }
        if at != payload.len() {
            return Err(invalid(format!(
                "the rows end at byte {at} of a {}-byte payload",
                payload.len()
            )));
        }
        Ok(Self { bytes, rows, cols })
    }

    /// Wraps bytes that [`SparseTernary::new`] accepted before (no checks).
    pub(crate) fn trusted(bytes: &'a [u8], rows: usize, cols: usize) -> Self {
        Self { bytes, rows, cols }
    }

    /// Byte offset of row `r`'s payload from the end of the offset table.
    #[inline]
    pub fn row_offset(&self, r: usize) -> usize {
        let checkpoint = r / ROWS_PER_OFFSET;
        let mut at = read_u32(self.bytes, 4 * checkpoint) as usize;
        let mask_bytes = self.mask_bytes();
        let payload = self.payload();
        for _ in checkpoint * ROWS_PER_OFFSET..r {
            at += row_bytes_from_masks(&payload[at..at + mask_bytes]);
        }
        at
    }

    /// The payload: every row's masks and signs, after the offset table.
    #[inline]
    pub fn payload(&self) -> &'a [u8] {
        &self.bytes[(self.rows.div_ceil(ROWS_PER_OFFSET) + 1) * 4..]
    }

    /// Mask bytes per row.
    #[inline]
    pub fn mask_bytes(&self) -> usize {
        self.cols.div_ceil(BLOCK) * 4
    }

    /// The masks and the sign bytes of the row whose payload starts at `offset`, and the offset
    /// of the next row.
    #[inline]
    pub fn row_at(&self, offset: usize) -> (&'a [u8], &'a [u8], usize) {
        let payload = self.payload();
        let masks = &payload[offset..offset + self.mask_bytes()];
        let len = row_bytes_from_masks(masks);
        (
            masks,
            &payload[offset + masks.len()..offset + len],
            offset + len,
        )
    }

    /// The masks and the sign bytes of row `r`.
    #[inline]
    pub fn row(&self, r: usize) -> (&'a [u8], &'a [u8]) {
        let (masks, signs, _) = self.row_at(self.row_offset(r));
        (masks, signs)
    }

    /// Nonzeros of the whole matrix (one pass over the rows).
    pub fn nonzeros(&self) -> usize {
        let mut offset = 0;
        (0..self.rows)
            .map(|_| {
                let (masks, _, next) = self.row_at(offset);
                offset = next;
                mask_nonzeros(masks)
            })
            .sum()
    }

    /// Decodes row `r` into codes `out[..cols]`.
    pub fn decode_row(&self, r: usize, out: &mut [u8]) {
        let (masks, signs) = self.row(r);
        let out = &mut out[..self.cols];
        out.fill(1);
        let mut bit = 0usize;
        for (b, mask) in masks.chunks_exact(4).enumerate() {
            let mut mask = u32::from_le_bytes([mask[0], mask[1], mask[2], mask[3]]);
            while mask != 0 {
                let j = mask.trailing_zeros() as usize;
                let negative = (signs[bit / 8] >> (bit % 8)) & 1 == 1;
                out[b * BLOCK + j] = if negative { 0 } else { 2 };
                bit += 1;
                mask &= mask - 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_size() {
        let (rows, cols) = (3, 70);
        let codes: Vec<u8> = (0..rows * cols)
            .map(|i| [1, 1, 0, 2, 1][(i * 7) % 5])
            .collect();
        let bytes = encode_sparse(&codes, rows, cols).unwrap();
        let view = SparseTernary::new(&bytes, rows, cols).unwrap();
        let mut out = vec![9u8; cols];
        for r in 0..rows {
            view.decode_row(r, &mut out);
            assert_eq!(out, codes[r * cols..(r + 1) * cols]);
        }
        let nonzeros = codes.iter().filter(|&&c| c != 1).count();
        assert_eq!(view.nonzeros(), nonzeros);
        let per_row: usize = (0..rows)
            .map(|r| {
                row_payload_bytes(
                    cols,
                    codes[r * cols..(r + 1) * cols]
                        .iter()
                        .filter(|&&c| c != 1)
                        .count(),
                )
            })
            .sum();
        assert_eq!(
            bytes.len(),
            4 * (rows.div_ceil(ROWS_PER_OFFSET) + 1) + per_row
        );
    }

    #[test]
    fn entropy_bound() {
        assert!((ternary_entropy_bits(0.0) - 1.0).abs() < 1e-12);
        assert!((ternary_entropy_bits(1.0)).abs() < 1e-12);
        assert!((ternary_entropy_bits(0.5) - 1.5).abs() < 1e-12);
    }
}
