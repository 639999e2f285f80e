//! ggml's tensor types (as whisper.cpp and llama.cpp store them) and their exact relation to
//! whittle's formats.
//!
//! ggml's legacy block types quantize 32 consecutive weights of a row with one `f16` scale `d`:
//!
//! | type | bytes per 32 | block | value |
//! |---|---|---|---|
//! | `q4_0` | 18 | `d`, 16 bytes of nibbles | `d * (q - 8)`, `q` in 0..=15 |
//! | `q5_0` | 22 | `d`, `u32` of bit 4, 16 bytes of nibbles | `d * (q - 16)`, `q` in 0..=31 |
//! | `q8_0` | 34 | `d`, 32 `i8` | `d * q`, `q` in -128..=127 |
//! | `q4_1` | 20 | `d`, `m`, 16 bytes of nibbles | `d * q + m` |
//! | `q5_1` | 24 | `d`, `m`, `u32` of bit 4, nibbles | `d * q + m` |
//!
//! Nibble byte `j` holds element `j` (low) and `j + 16` (high), exactly as whittle's
//! [`Layout::Bits4`](crate::Layout::Bits4). whittle's symmetric grid is `scale * (code - 2^(b-1))`
//! with an `f16` scale per group of a multiple of 32 weights, so a symmetric (or ternary) matrix of
//! `b` bits maps onto `q4_0` (`b <= 4`), `q5_0` (`b <= 5`) or `q8_0` (`b <= 8`) **code for code**:
//! the same integers and the same scale bits, each group's scale repeated in each of its 32-weight
//! blocks. Nothing is re-rounded. Asymmetric groups do not map exactly (`m = -scale * zero` would
//! need rounding to `f16`) and are re-quantized.
//!
//! [`quantize_f32`] is ggml's reference rounding (`quantize_row_*_ref` in ggml-quants.c),
//! rewritten here, for the tensors that must be re-quantized.

use half::f16;

use crate::error::{KernelError, Result};
use crate::format::{Granularity, QuantFormat, Scheme};
use crate::quant::QuantizedMatrix;

/// Weights per block of the quantized ggml types.
pub const GGML_BLOCK: usize = 32;

/// A ggml tensor type whittle reads and writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum GgmlType {
    /// `f32`.
    F32,
    /// IEEE half precision.
    F16,
    /// Symmetric 4-bit blocks of 32.
    Q4_0,
    /// Affine 4-bit blocks of 32 (scale and minimum).
    Q4_1,
    /// Symmetric 5-bit blocks of 32.
    Q5_0,
    /// Affine 5-bit blocks of 32.
    Q5_1,
    /// Symmetric 8-bit blocks of 32.
    Q8_0,
}

impl GgmlType {
    /// Every supported type, narrowest quantized first.
    pub const ALL: [GgmlType; 7] = [
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q5_0,
        GgmlType::Q5_1,
        GgmlType::Q8_0,
        GgmlType::F16,
        GgmlType::F32,
    ];

    /// `enum ggml_type` value stored per tensor.
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q5_0 => 6,
            GgmlType::Q5_1 => 7,
            GgmlType::Q8_0 => 8,
        }
    }

    /// The type of an `enum ggml_type` value, `None` for types whittle does not handle.
    pub fn from_id(id: u32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.id() == id)
    }

    /// `enum ggml_ftype` of a file whose matrices are of this type (whisper.cpp's `ftype` field,
    /// before the quantization version is added).
    pub fn file_type(self) -> i32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 7,
            GgmlType::Q5_0 => 8,
            GgmlType::Q5_1 => 9,
        }
    }

    /// The matrix type of a file type, `None` for file types whittle does not handle.
    pub fn from_file_type(ftype: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.file_type() == ftype)
    }

    /// ggml's name (`q4_0`, `f16`, ...).
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "f32",
            GgmlType::F16 => "f16",
            GgmlType::Q4_0 => "q4_0",
            GgmlType::Q4_1 => "q4_1",
            GgmlType::Q5_0 => "q5_0",
            GgmlType::Q5_1 => "q5_1",
            GgmlType::Q8_0 => "q8_0",
        }
    }

    /// The type named `name` (as [`GgmlType::name`] writes it).
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.name() == name)
    }

    /// Weights per block (1 for the float types).
    pub fn block_len(self) -> usize {
        if self.is_quantized() {
            GGML_BLOCK
        } else {
            1
        }
    }

    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q5_0 => 22,
            GgmlType::Q5_1 => 24,
            GgmlType::Q8_0 => 34,
        }
    }

    /// Whether the type is a block-quantized one.
    pub fn is_quantized(self) -> bool {
        !matches!(self, GgmlType::F32 | GgmlType::F16)
    }

    /// Bytes of `elements` weights, `None` when `elements` is not a whole number of blocks or
    /// the size overflows.
    pub fn bytes_for(self, elements: usize) -> Option<usize> {
        if !elements.is_multiple_of(self.block_len()) {
            return None;
        }
        (elements / self.block_len()).checked_mul(self.block_bytes())
    }

    /// Stored bits per weight.
    pub fn bits_per_weight(self) -> f64 {
        (self.block_bytes() * 8) as f64 / self.block_len() as f64
    }

    /// Offset added to a signed integer level to get the stored code, and the largest code, for
    /// the symmetric block types.
    fn symmetric_grid(self) -> Option<(i32, i32)> {
        match self {
            GgmlType::Q4_0 => Some((8, 15)),
            GgmlType::Q5_0 => Some((16, 31)),
            GgmlType::Q8_0 => Some((128, 255)),
            _ => None,
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The narrowest ggml type that holds a matrix of `format` code for code, `None` when none
/// does (asymmetric schemes, groups that are not a multiple of 32 weights).
pub fn exact_type(format: QuantFormat, cols: usize) -> Option<GgmlType> {
    if !cols.is_multiple_of(GGML_BLOCK) {
        return None;
    }
    if let Granularity::Group(n) = format.granularity {
        if n % GGML_BLOCK != 0 {
            return None;
        }
    }
    match format.scheme {
        Scheme::Ternary => Some(GgmlType::Q4_0),
        Scheme::Symmetric { bits } if bits <= 4 => Some(GgmlType::Q4_0),
        Scheme::Symmetric { bits: 5 } => Some(GgmlType::Q5_0),
        Scheme::Symmetric { .. } => Some(GgmlType::Q8_0),
        Scheme::Asymmetric { .. } => None,
    }
}

/// Signed level range `[lo, hi]` of a scheme's codes after subtracting the implicit zero point.
fn level_range(scheme: Scheme) -> Option<(i32, i32)> {
    let zero = i32::from(scheme.implicit_zero_point()?);
    Some((-zero, i32::from(scheme.max_code()) - zero))
}

/// Copies a whittle matrix into ggml blocks of `ty` without re-rounding, or `None` when `ty`
/// cannot hold it exactly. For `f32` and `f16` the dequantized weights are written, which is exact
/// for `f32` always and for `f16` only when every weight is an `f16` value.
pub fn encode_exact(matrix: &QuantizedMatrix, ty: GgmlType) -> Option<Vec<u8>> {
    let (rows, cols) = (matrix.rows(), matrix.cols());
    match ty {
        GgmlType::F32 => {
            let values = matrix.dequantize();
            return Some(values.iter().flat_map(|v| v.to_le_bytes()).collect());
        }
        GgmlType::F16 => {
            let values = matrix.dequantize();
            let mut out = Vec::with_capacity(values.len() * 2);
            for v in values {
                let h = f16::from_f32(v);
                if h.to_f32() != v {
                    return None;
                }
                out.extend_from_slice(&h.to_le_bytes());
            }
            return Some(out);
        }
        _ => {}
    }
    let (offset, max) = ty.symmetric_grid()?;
    let (lo, hi) = level_range(matrix.format().scheme)?;
    if lo + offset < 0 || hi + offset > max || cols % GGML_BLOCK != 0 {
        return None;
    }
    let granularity = matrix.format().granularity;
    if let Granularity::Group(n) = granularity {
        if n % GGML_BLOCK != 0 {
            return None;
        }
    }
    let zero = i32::from(matrix.format().scheme.implicit_zero_point()?);
    let groups_per_row = matrix.groups_per_row();
    let group_len = granularity.group_len(cols);
    let mut out = Vec::with_capacity(ty.bytes_for(rows * cols)?);
    let mut levels = [0u8; GGML_BLOCK];
    for row in 0..rows {
        let codes = &matrix.codes()[row * cols..(row + 1) * cols];
        for (block, block_codes) in codes.chunks_exact(GGML_BLOCK).enumerate() {
            let group = block * GGML_BLOCK / group_len;
            let index = granularity.scale_index(row, group, groups_per_row);
            let scale = matrix.scales()[index];
            for (level, &code) in levels.iter_mut().zip(block_codes) {
                *level = (i32::from(code) - zero + offset) as u8;
            }
            push_symmetric_block(&mut out, ty, scale, &levels);
        }
    }
    Some(out)
}

/// Appends one block of a symmetric type from its stored codes (`level + offset`).
fn push_symmetric_block(out: &mut Vec<u8>, ty: GgmlType, scale: f16, codes: &[u8; GGML_BLOCK]) {
    out.extend_from_slice(&scale.to_le_bytes());
    match ty {
        GgmlType::Q4_0 => push_nibbles(out, codes),
        GgmlType::Q5_0 => {
            out.extend_from_slice(&high_bit_plane(codes).to_le_bytes());
            push_nibbles(out, codes);
        }
        GgmlType::Q8_0 => out.extend(codes.iter().map(|&c| (c as i32 - 128) as i8 as u8)),
        _ => unreachable!("only symmetric block types reach here"),
    }
}

fn push_nibbles(out: &mut Vec<u8>, codes: &[u8; GGML_BLOCK]) {
    for j in 0..GGML_BLOCK / 2 {
        out.push((codes[j] & 0x0F) | ((codes[j + GGML_BLOCK / 2] & 0x0F) << 4));
    }
}

fn high_bit_plane(codes: &[u8; GGML_BLOCK]) -> u32 {
    codes.iter().enumerate().fold(0u32, |plane, (j, &c)| {
        plane | (u32::from((c >> 4) & 1) << j)
    })
}

fn read_f16(bytes: &[u8]) -> f16 {
    f16::from_le_bytes([bytes[0], bytes[1]])
}

/// Unpacks the 32 stored codes of a `q4_0`/`q4_1` (`plane = None`) or `q5_0`/`q5_1` block.
fn unpack_nibbles(nibbles: &[u8], plane: Option<u32>, codes: &mut [u8; GGML_BLOCK]) {
    for j in 0..GGML_BLOCK / 2 {
        codes[j] = nibbles[j] & 0x0F;
        codes[j + GGML_BLOCK / 2] = nibbles[j] >> 4;
    }
    if let Some(plane) = plane {
        for (j, code) in codes.iter_mut().enumerate() {
            *code |= (((plane >> j) & 1) as u8) << 4;
        }
    }
}

fn check_len(ty: GgmlType, bytes: &[u8], elements: usize) -> Result<()> {
    let expected = ty.bytes_for(elements).ok_or_else(|| {
        KernelError::InvalidFormat(format!(
            "{elements} weights are not a whole number of {ty} blocks of {}",
            ty.block_len()
        ))
    })?;
    if bytes.len() != expected {
        return Err(KernelError::LengthMismatch {
            what: "ggml tensor bytes",
            expected,
            actual: bytes.len(),
        });
    }
    Ok(())
}

/// The weights of `elements` values stored as `ty` (ggml's `dequantize_row_*`).
pub fn dequantize(bytes: &[u8], ty: GgmlType, elements: usize) -> Result<Vec<f32>> {
    check_len(ty, bytes, elements)?;
    let mut out = Vec::with_capacity(elements);
    let mut codes = [0u8; GGML_BLOCK];
    match ty {
        GgmlType::F32 => out.extend(
            bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
        ),
        GgmlType::F16 => out.extend(bytes.chunks_exact(2).map(|b| read_f16(b).to_f32())),
        GgmlType::Q8_0 => {
            for block in bytes.chunks_exact(ty.block_bytes()) {
                let d = read_f16(block).to_f32();
                out.extend(block[2..].iter().map(|&q| d * f32::from(q as i8)));
            }
        }
        GgmlType::Q4_0 | GgmlType::Q5_0 => {
            for block in bytes.chunks_exact(ty.block_bytes()) {
                let d = read_f16(block).to_f32();
                let (plane, nibbles, offset) = if ty == GgmlType::Q5_0 {
                    let p = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
                    (Some(p), &block[6..], 16.0)
                } else {
                    (None, &block[2..], 8.0)
                };
                unpack_nibbles(nibbles, plane, &mut codes);
                out.extend(codes.iter().map(|&q| d * (f32::from(q) - offset)));
            }
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 => {
            for block in bytes.chunks_exact(ty.block_bytes()) {
                let d = read_f16(block).to_f32();
                let m = read_f16(&block[2..]).to_f32();
                let (plane, nibbles) = if ty == GgmlType::Q5_1 {
                    let p = u32::from_le_bytes([block[4], block[5], block[6], block[7]]);
                    (Some(p), &block[8..])
                } else {
                    (None, &block[4..])
                };
                unpack_nibbles(nibbles, plane, &mut codes);
                out.extend(codes.iter().map(|&q| d * f32::from(q) + m));
            }
        }
    }
    Ok(out)
}

/// A `q4_0`, `q5_0` or `q8_0` matrix as whittle's symmetric `b`-bit format with groups of 32,
/// code for code (the inverse of [`encode_exact`]); `Ok(None)` for the other types.
pub fn decode_exact(
    bytes: &[u8],
    ty: GgmlType,
    rows: usize,
    cols: usize,
) -> Result<Option<QuantizedMatrix>> {
    let Some((offset, _)) = ty.symmetric_grid() else {
        return Ok(None);
    };
    let elements = rows.checked_mul(cols).ok_or(KernelError::InvalidShape {
        rows,
        cols,
        reason: "element count overflows usize",
    })?;
    if !cols.is_multiple_of(GGML_BLOCK) {
        return Err(KernelError::InvalidShape {
            rows,
            cols,
            reason: "rows of a block type must hold whole blocks of 32",
        });
    }
    check_len(ty, bytes, elements)?;
    let bits = match ty {
        GgmlType::Q4_0 => 4,
        GgmlType::Q5_0 => 5,
        _ => 8,
    };
    let scheme = Scheme::Symmetric { bits };
    let zero = i32::from(scheme.implicit_zero_point().unwrap_or(0));
    let mut codes = Vec::with_capacity(elements);
    let mut scales = Vec::with_capacity(elements / GGML_BLOCK);
    let mut block_codes = [0u8; GGML_BLOCK];
    for block in bytes.chunks_exact(ty.block_bytes()) {
        scales.push(read_f16(block));
        match ty {
            GgmlType::Q4_0 => unpack_nibbles(&block[2..], None, &mut block_codes),
            GgmlType::Q5_0 => {
                let plane = u32::from_le_bytes([block[2], block[3], block[4], block[5]]);
                unpack_nibbles(&block[6..], Some(plane), &mut block_codes);
            }
            _ => {
                for (code, &q) in block_codes.iter_mut().zip(&block[2..]) {
                    *code = (i32::from(q as i8) + 128) as u8;
                }
            }
        }
        // Stored code `level + offset` becomes whittle's `level + zero`.
        codes.extend(
            block_codes
                .iter()
                .map(|&c| (i32::from(c) - offset + zero) as u8),
        );
    }
    let format = QuantFormat {
        scheme,
        granularity: Granularity::Group(GGML_BLOCK),
    };
    QuantizedMatrix::from_parts(rows, cols, format, codes, scales, None).map(Some)
}

/// Quantizes a row-major `[rows][cols]` matrix to `ty` with ggml's reference rounding
/// (`quantize_row_*_ref`): `q4_0`/`q5_0` take the scale from the signed value of largest
/// magnitude (`d = max / -8`, `max / -16`), `q8_0` from the largest magnitude (`d = amax / 127`),
/// `q4_1`/`q5_1` from the block's minimum and range.
pub fn quantize_f32(values: &[f32], cols: usize, ty: GgmlType) -> Result<Vec<u8>> {
    if let Some(index) = values.iter().position(|v| !v.is_finite()) {
        return Err(KernelError::NonFinite {
            what: "weights",
            index,
        });
    }
    if cols == 0 || !values.len().is_multiple_of(cols) || !cols.is_multiple_of(ty.block_len()) {
        return Err(KernelError::InvalidShape {
            rows: values.len() / cols.max(1),
            cols,
            reason: "rows must hold whole ggml blocks",
        });
    }
    let mut out = Vec::with_capacity(ty.bytes_for(values.len()).unwrap_or(0));
    match ty {
        GgmlType::F32 => out.extend(values.iter().flat_map(|v| v.to_le_bytes())),
        GgmlType::F16 => out.extend(values.iter().flat_map(|&v| f16::from_f32(v).to_le_bytes())),
        _ => {
            for block in values.chunks_exact(GGML_BLOCK) {
                quantize_block(block, ty, &mut out);
            }
        }
    }
    Ok(out)
}

fn quantize_block(x: &[f32], ty: GgmlType, out: &mut Vec<u8>) {
    let mut codes = [0u8; GGML_BLOCK];
    match ty {
        GgmlType::Q4_0 | GgmlType::Q5_0 => {
            let (levels, max_code) = if ty == GgmlType::Q4_0 {
                (8.0f32, 15i32)
            } else {
                (16.0, 31)
            };
            let mut amax = 0.0f32;
            let mut max = 0.0f32;
            for &v in x {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            let d = max / -levels;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            for (code, &v) in codes.iter_mut().zip(x) {
                // ggml truncates toward zero after adding `levels + 0.5` (via an `int8_t` cast).
                *code = ((v * id + levels + 0.5) as i8 as i32).min(max_code) as u8;
            }
            let scale = f16::from_f32(d);
            out.extend_from_slice(&scale.to_le_bytes());
            if ty == GgmlType::Q5_0 {
                out.extend_from_slice(&high_bit_plane(&codes).to_le_bytes());
            }
            push_nibbles(out, &codes);
        }
        GgmlType::Q4_1 | GgmlType::Q5_1 => {
            let max_code = if ty == GgmlType::Q4_1 { 15 } else { 31 };
            let min = x.iter().copied().fold(f32::MAX, f32::min);
            let max = x.iter().copied().fold(-f32::MAX, f32::max);
            let d = (max - min) / max_code as f32;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            for (code, &v) in codes.iter_mut().zip(x) {
                let q = ((v - min) * id + 0.5) as i8 as i32;
                *code = if ty == GgmlType::Q4_1 {
                    q.min(max_code) as u8
                } else {
                    q as u8
                };
            }
            out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
            out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
            if ty == GgmlType::Q5_1 {
                out.extend_from_slice(&high_bit_plane(&codes).to_le_bytes());
            }
            push_nibbles(out, &codes);
        }
        GgmlType::Q8_0 => {
            let amax = x.iter().fold(0.0f32, |a, v| a.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
            out.extend(x.iter().map(|&v| (v * id).round() as i8 as u8));
        }
        GgmlType::F32 | GgmlType::F16 => unreachable!("float types are not block quantized"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::{TernaryQuantizer, UniformQuantizer};

    fn weights(rows: usize, cols: usize, seed: u32) -> Vec<f32> {
        (0..rows * cols)
            .map(|i| {
                let x = (i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed);
                ((x >> 8) % 2001) as f32 / 1000.0 - 1.0
            })
            .collect()
    }

    #[test]
    fn symmetric_formats_map_code_for_code_and_back() {
        let (rows, cols) = (6, 128);
        let w = weights(rows, cols, 7);
        for bits in 2..=8u8 {
            for granularity in [
                Granularity::Group(32),
                Granularity::Group(64),
                Granularity::PerRow,
                Granularity::PerTensor,
            ] {
                let q = UniformQuantizer::symmetric(bits, granularity)
                    .unwrap()
                    .quantize(&w, rows, cols)
                    .unwrap();
                let ty = exact_type(q.format(), cols).unwrap();
                let bytes = encode_exact(&q, ty).unwrap();
                assert_eq!(bytes.len(), ty.bytes_for(rows * cols).unwrap());
                // ggml's reconstruction of the blocks is whittle's, bit for bit.
                let ggml = dequantize(&bytes, ty, rows * cols).unwrap();
                let whittle = q.dequantize();
                assert!(
                    ggml.iter()
                        .zip(&whittle)
                        .all(|(a, b)| a.to_bits() == b.to_bits()),
                    "{bits} bits {granularity:?} as {ty}"
                );
                // Decoding gives group-32 codes that re-encode to the same bytes.
                let back = decode_exact(&bytes, ty, rows, cols).unwrap().unwrap();
                assert_eq!(encode_exact(&back, ty).unwrap(), bytes);
            }
        }
    }

    #[test]
    fn narrower_codes_fit_wider_types_exactly() {
        let (rows, cols) = (3, 64);
        let w = weights(rows, cols, 3);
        let q = UniformQuantizer::symmetric(4, Granularity::Group(64))
            .unwrap()
            .quantize(&w, rows, cols)
            .unwrap();
        for ty in [
            GgmlType::Q4_0,
            GgmlType::Q5_0,
            GgmlType::Q8_0,
            GgmlType::F32,
        ] {
            let bytes = encode_exact(&q, ty).unwrap();
            assert_eq!(dequantize(&bytes, ty, rows * cols).unwrap(), q.dequantize());
        }
        let t = TernaryQuantizer {
            granularity: Granularity::Group(64),
        }
        .quantize(&w, rows, cols)
        .unwrap();
        let bytes = encode_exact(&t, GgmlType::Q4_0).unwrap();
        assert_eq!(
            dequantize(&bytes, GgmlType::Q4_0, rows * cols).unwrap(),
            t.dequantize()
        );
        // Five-bit codes do not fit q4_0; asymmetric codes fit nothing exactly.
        let q5 = UniformQuantizer::symmetric(5, Granularity::Group(32))
            .unwrap()
            .quantize(&w, rows, cols)
            .unwrap();
        assert!(encode_exact(&q5, GgmlType::Q4_0).is_none());
        let asym = UniformQuantizer::asymmetric(4, Granularity::Group(32))
            .unwrap()
            .quantize(&w, rows, cols)
            .unwrap();
        assert_eq!(exact_type(asym.format(), cols), None);
        assert!(encode_exact(&asym, GgmlType::Q4_0).is_none());
    }

    #[test]
    fn q4_0_block_layout_matches_ggml() {
        // One block whose largest magnitude is positive: ggml's scale is negative.
        let mut x = [0.0f32; 32];
        x[0] = 8.0;
        x[16] = -4.0;
        x[31] = 1.0;
        let bytes = quantize_f32(&x, 32, GgmlType::Q4_0).unwrap();
        assert_eq!(bytes.len(), 18);
        assert_eq!(read_f16(&bytes).to_f32(), -1.0);
        // x * id + 8.5 truncated: 8 -> 0, -4 -> 12, 1 -> 7, 0 -> 8.
        assert_eq!(bytes[2], (12 << 4));
        assert_eq!(bytes[2 + 15] & 0x0F, 8);
        assert_eq!(bytes[2 + 15] >> 4, 7);
        assert_eq!(
            dequantize(&bytes, GgmlType::Q4_0, 32).unwrap()[..2],
            [8.0, 0.0]
        );
    }

    #[test]
    fn reference_quantizers_reconstruct_closely() {
        let (rows, cols) = (4, 96);
        let w = weights(rows, cols, 11);
        for (ty, tolerance) in [
            (GgmlType::Q4_0, 0.14),
            (GgmlType::Q4_1, 0.07),
            (GgmlType::Q5_0, 0.07),
            (GgmlType::Q5_1, 0.04),
            (GgmlType::Q8_0, 0.005),
            (GgmlType::F16, 0.001),
            (GgmlType::F32, 0.0),
        ] {
            let bytes = quantize_f32(&w, cols, ty).unwrap();
            assert_eq!(bytes.len(), ty.bytes_for(w.len()).unwrap());
            let back = dequantize(&bytes, ty, w.len()).unwrap();
            let worst = w
                .iter()
                .zip(&back)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0f32, f32::max);
            assert!(worst <= tolerance, "{ty}: {worst}");
        }
    }

    #[test]
    fn bad_lengths_and_values_are_refused() {
        assert!(dequantize(&[0u8; 17], GgmlType::Q4_0, 32).is_err());
        assert!(dequantize(&[0u8; 18], GgmlType::Q4_0, 31).is_err());
        assert!(decode_exact(&[0u8; 18], GgmlType::Q4_0, 1, 31).is_err());
        assert!(decode_exact(&[0u8; 18], GgmlType::Q4_0, usize::MAX, 64).is_err());
        assert!(quantize_f32(&[f32::NAN; 32], 32, GgmlType::Q8_0).is_err());
        assert!(quantize_f32(&[0.0; 48], 48, GgmlType::Q8_0).is_err());
        assert_eq!(GgmlType::from_id(4), None);
        assert_eq!(GgmlType::from_file_type(4), None);
        for ty in GgmlType::ALL {
            assert_eq!(GgmlType::from_id(ty.id()), Some(ty));
            assert_eq!(GgmlType::parse(ty.name()), Some(ty));
            assert_eq!(GgmlType::from_file_type(ty.file_type()), Some(ty));
        }
    }
}
