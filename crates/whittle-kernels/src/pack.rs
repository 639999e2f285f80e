//! Packed low-bit matrices: owned [`PackedMatrix`] and the borrowed, zero-copy [`PackedMatrixRef`].
//!
//! Byte layouts are described on [`Layout`]; this module encodes and decodes them with portable
//! code. The SIMD kernels in [`crate::kernels`] read the same bytes directly.
//!
//! # Shapes
//! `rows * row_bytes` code bytes (row-major, group-major inside a row), `scale_count` f16 scales
//! and, for asymmetric schemes, as many `u8` zero points.

use half::f16;

use crate::error::{expect_len, KernelError, Result};
use crate::format::{Layout, PackedFormat, BLOCK, TRITS_PER_BYTE};
use crate::quant::{check_codes, dequantize_code, QuantizedMatrix};

/// Owned packed matrix.
#[derive(Clone, Debug, PartialEq)]
pub struct PackedMatrix {
    rows: usize,
    cols: usize,
    format: PackedFormat,
    codes: Vec<u8>,
    scales: Vec<f16>,
    zero_points: Option<Vec<u8>>,
}

/// Borrowed packed matrix, e.g. slices of a memory-mapped file. Fields are public so a reader can
/// build one from untrusted data; call [`PackedMatrixRef::validate`] (the kernels do) before use.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PackedMatrixRef<'a> {
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// Scheme, granularity and byte layout.
    pub format: PackedFormat,
    /// `rows * format.row_bytes(cols)` bytes of packed codes.
    pub codes: &'a [u8],
    /// One scale per group (one in total for per-tensor granularity).
    pub scales: &'a [f16],
    /// One zero point per group for asymmetric schemes, `None` otherwise.
    pub zero_points: Option<&'a [u8]>,
}

impl PackedMatrix {
    /// Packs codes in the default layout of their scheme ([`Layout::for_scheme`]).
    pub fn pack(matrix: &QuantizedMatrix) -> Self {
        let layout = Layout::for_scheme(matrix.format().scheme);
        Self::pack_with(matrix, layout).expect("the default layout holds every code of its scheme")
    }

    /// Packs codes in `layout` (e.g. [`Layout::Trits5`] for ternary at 1.6 bits per weight).
    pub fn pack_with(matrix: &QuantizedMatrix, layout: Layout) -> Result<Self> {
        let format = PackedFormat::new(matrix.format(), layout)?;
        let (rows, cols) = (matrix.rows(), matrix.cols());
        if layout.is_sparse() {
            return Ok(PackedMatrix {
                rows,
                cols,
                format,
                codes: crate::ternary::encode_sparse(matrix.codes(), rows, cols)?,
                scales: matrix.scales().to_vec(),
                zero_points: matrix.zero_points().map(<[u8]>::to_vec),
            });
        }
        let row_bytes = format.row_bytes(cols).ok_or(KernelError::InvalidShape {
            rows,
            cols,
            reason: "row bytes overflow usize",
        })?;
        let group_len = format.quant.granularity.group_len(cols);
        let mut codes = vec![0u8; rows * row_bytes];
        for (packed_row, code_row) in codes
            .chunks_exact_mut(row_bytes)
            .zip(matrix.codes().chunks_exact(cols))
        {
            let mut offset = 0;
            for group in code_row.chunks(group_len) {
                let bytes = layout.group_bytes(group.len());
                encode_group(layout, group, &mut packed_row[offset..offset + bytes]);
                offset += bytes;
            }
        }
        Ok(PackedMatrix {
            rows,
            cols,
            format,
            codes,
            scales: matrix.scales().to_vec(),
            zero_points: matrix.zero_points().map(<[u8]>::to_vec),
        })
    }

    /// Builds an owned matrix from parts, validating them like [`PackedMatrixRef::validate`].
    pub fn from_parts(
        rows: usize,
        cols: usize,
        format: PackedFormat,
        codes: Vec<u8>,
        scales: Vec<f16>,
        zero_points: Option<Vec<u8>>,
    ) -> Result<Self> {
        let matrix = PackedMatrix {
            rows,
            cols,
            format,
            codes,
            scales,
            zero_points,
        };
        matrix.as_ref().validate()?;
        Ok(matrix)
    }

    /// Borrowed view.
    pub fn as_ref(&self) -> PackedMatrixRef<'_> {
        PackedMatrixRef {
            rows: self.rows,
            cols: self.cols,
            format: self.format,
            codes: &self.codes,
            scales: &self.scales,
            zero_points: self.zero_points.as_deref(),
        }
    }

    /// Output features.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Input features.
    pub fn cols(&self) -> usize {
        self.cols
    }
    /// Format and layout.
    pub fn format(&self) -> PackedFormat {
        self.format
    }
    /// Packed code bytes.
    pub fn codes(&self) -> &[u8] {
        &self.codes
    }
    /// Group scales.
    pub fn scales(&self) -> &[f16] {
        &self.scales
    }
    /// Group zero points (asymmetric schemes).
    pub fn zero_points(&self) -> Option<&[u8]> {
        self.zero_points.as_deref()
    }

    /// Bytes stored: codes, scales and zero points (what a file holds for this matrix).
    pub fn stored_bytes(&self) -> usize {
        self.codes.len() + 2 * self.scales.len() + self.zero_points.as_ref().map_or(0, Vec::len)
    }

    /// Unpacks to one code per weight.
    pub fn unpack(&self) -> QuantizedMatrix {
        self.as_ref()
            .unpack()
            .expect("an owned packed matrix is valid by construction")
    }

    /// Reconstructed f32 weights `[rows][cols]`.
    pub fn dequantize(&self) -> Vec<f32> {
        self.unpack().dequantize()
    }

    /// Reconstructed f32 weights of the rows `indices`, `[indices.len()][cols]` (an embedding
    /// lookup in a packed token table). An index past the last row is an error.
    pub fn dequantize_rows(&self, indices: &[usize]) -> Result<Vec<f32>> {
        let cols = self.cols;
        let mut out = vec![0f32; indices.len() * cols];
        let mut codes = vec![0u8; cols];
        let view = self.as_ref();
        for (&row, dst) in indices.iter().zip(out.chunks_exact_mut(cols)) {
            if row >= self.rows {
                return Err(KernelError::InvalidShape {
                    rows: self.rows,
                    cols,
                    reason: "row index past the last row",
                });
            }
            view.dequantize_row(row, &mut codes, dst);
        }
        Ok(out)
    }
}

impl<'a> PackedMatrixRef<'a> {
    /// Checks every length against rows, cols and format, and every code and zero point against
    /// the scheme's range. Never panics; the `.whittle` reader calls it on untrusted data. Codes
    /// are scanned only when the layout holds values the scheme does not (a 4-bit scheme in the
    /// 8-bit layout, 7 bits in 8): otherwise every bit pattern is a valid code, and
    /// [`Layout::Trits5`] bytes above 242 decode to in-range trits.
    pub fn validate(&self) -> Result<()> {
        self.validate_lengths()?;
        let max = self.format.quant.scheme.max_code();
        if let Some(zeros) = self.zero_points {
            check_codes("zero_points", zeros, max)?;
        }
        if self.format.layout.max_code() > max {
            let mut row_codes = vec![0u8; self.cols];
            for row in 0..self.rows {
                self.decode_row_codes(row, &mut row_codes);
                if let Some(col) = row_codes.iter().position(|&c| c > max) {
                    return Err(KernelError::CodeOutOfRange {
                        what: "codes",
                        index: row * self.cols + col,
                        value: row_codes[col],
                        max,
                    });
                }
            }
        }
        Ok(())
    }

    fn validate_lengths(&self) -> Result<()> {
        let (rows, cols) = (self.rows, self.cols);
        self.format.validate()?;
        crate::quant::checked_weights(rows, cols)?;
        let overflow = KernelError::InvalidShape {
            rows,
            cols,
            reason: "packed size overflows usize",
        };
        if self.format.layout.is_sparse() {
            crate::ternary::SparseTernary::new(self.codes, rows, cols)?;
        } else {
            let code_bytes = self
                .format
                .row_bytes(cols)
                .and_then(|b| b.checked_mul(rows))
                .ok_or(overflow)?;
            expect_len("codes", code_bytes, self.codes.len())?;
        }
        let groups = self
            .format
            .quant
            .granularity
            .scale_count(rows, cols)
            .ok_or(KernelError::InvalidShape {
                rows,
                cols,
                reason: "scale count overflows usize",
            })?;
        expect_len("scales", groups, self.scales.len())?;
        match (self.zero_points, self.format.quant.scheme.has_zero_points()) {
            (Some(zeros), true) => expect_len("zero_points", groups, zeros.len()),
            (None, false) => Ok(()),
            (Some(zeros), false) => expect_len("zero_points", 0, zeros.len()),
            (None, true) => expect_len("zero_points", groups, 0),
        }
    }

    /// Packed bytes of one row.
    #[inline]
    pub(crate) fn row_codes(&self, row: usize, row_bytes: usize) -> &'a [u8] {
        &self.codes[row * row_bytes..(row + 1) * row_bytes]
    }

    /// Scale and zero point of a group (after validation).
    #[inline]
    pub(crate) fn group_params(
        &self,
        row: usize,
        group: usize,
        groups_per_row: usize,
    ) -> (f32, u8) {
        let index = self
            .format
            .quant
            .granularity
            .scale_index(row, group, groups_per_row);
        let zero = match (
            self.format.quant.scheme.implicit_zero_point(),
            self.zero_points,
        ) {
            (Some(zero), _) => zero,
            (None, Some(zeros)) => zeros[index],
            (None, None) => 0,
        };
        (self.scales[index].to_f32(), zero)
    }

    /// Decodes one row's codes into `out[..cols]` (`out` may be longer; the rest is untouched).
    pub(crate) fn decode_row_codes(&self, row: usize, out: &mut [u8]) {
        let cols = self.cols;
        let layout = self.format.layout;
        if layout.is_sparse() {
            crate::ternary::SparseTernary::trusted(self.codes, self.rows, cols)
                .decode_row(row, out);
            return;
        }
        let row_bytes = self.format.row_bytes(cols).unwrap_or(0);
        let packed = self.row_codes(row, row_bytes);
        let group_len = self.format.quant.granularity.group_len(cols);
        let mut offset = 0;
        for group in out[..cols].chunks_mut(group_len) {
            let bytes = layout.group_bytes(group.len());
            decode_group(layout, &packed[offset..offset + bytes], group);
            offset += bytes;
        }
    }

    /// Decodes one row to f32 weights into `out[..cols]`.
    pub(crate) fn dequantize_row(&self, row: usize, codes: &mut [u8], out: &mut [f32]) {
        self.decode_row_codes(row, codes);
        let cols = self.cols;
        let group_len = self.format.quant.granularity.group_len(cols);
        let groups_per_row = self.format.quant.granularity.groups_per_row(cols);
        for (group, (w, q)) in out[..cols]
            .chunks_mut(group_len)
            .zip(codes[..cols].chunks(group_len))
            .enumerate()
        {
            let (scale, zero) = self.group_params(row, group, groups_per_row);
            for (w, &q) in w.iter_mut().zip(q) {
                *w = dequantize_code(q, scale, zero);
            }
        }
    }

    /// Unpacks to one code per weight (validates first).
    pub fn unpack(&self) -> Result<QuantizedMatrix> {
        self.validate()?;
        let mut codes = vec![0u8; self.rows * self.cols];
        for (row, out) in codes.chunks_exact_mut(self.cols).enumerate() {
            self.decode_row_codes(row, out);
        }
        QuantizedMatrix::from_parts(
            self.rows,
            self.cols,
            self.format.quant,
            codes,
            self.scales.to_vec(),
            self.zero_points.map(<[u8]>::to_vec),
        )
    }

    /// Reconstructed f32 weights `[rows][cols]` (validates first).
    pub fn dequantize(&self) -> Result<Vec<f32>> {
        self.validate()?;
        let mut out = vec![0.0f32; self.rows * self.cols];
        let mut codes = vec![0u8; self.cols];
        for (row, out) in out.chunks_exact_mut(self.cols).enumerate() {
            self.dequantize_row(row, &mut codes, out);
        }
        Ok(out)
    }

    /// Copies into an owned matrix (validates first).
    pub fn to_owned(&self) -> Result<PackedMatrix> {
        PackedMatrix::from_parts(
            self.rows,
            self.cols,
            self.format,
            self.codes.to_vec(),
            self.scales.to_vec(),
            self.zero_points.map(<[u8]>::to_vec),
        )
    }
}

/// Reinterprets little-endian f16 bytes (e.g. from a memory-mapped file) as scales without
/// copying. Fails if the bytes are misaligned for `f16` or of odd length.
pub fn f16_slice_from_bytes(bytes: &[u8]) -> Result<&[f16]> {
    if cfg!(target_endian = "big") {
        return Err(KernelError::InvalidFormat(
            "zero-copy f16 scales need a little-endian target".into(),
        ));
    }
    bytemuck::try_cast_slice(bytes).map_err(|e| {
        KernelError::InvalidFormat(format!("f16 scale bytes cannot be borrowed in place: {e}"))
    })
}

/// Packs one group of codes into `out` (exactly `layout.group_bytes(codes.len())` bytes).
fn encode_group(layout: Layout, codes: &[u8], out: &mut [u8]) {
    match layout.block_bytes() {
        Some(block_bytes) => {
            for (block, out) in codes.chunks(BLOCK).zip(out.chunks_exact_mut(block_bytes)) {
                let mut padded = [0u8; BLOCK];
                padded[..block.len()].copy_from_slice(block);
                encode_block(layout, &padded, out);
            }
        }
        None => {
            for (trits, byte) in codes.chunks(TRITS_PER_BYTE).zip(out.iter_mut()) {
                *byte = trits.iter().rev().fold(0u8, |acc, &t| acc * 3 + t);
            }
        }
    }
}

/// Unpacks one group of `out.len()` codes.
pub(crate) fn decode_group(layout: Layout, packed: &[u8], out: &mut [u8]) {
    match layout.block_bytes() {
        Some(block_bytes) => {
            for (block, out) in packed.chunks_exact(block_bytes).zip(out.chunks_mut(BLOCK)) {
                let mut codes = [0u8; BLOCK];
                decode_block(layout, block, &mut codes);
                out.copy_from_slice(&codes[..out.len()]);
            }
        }
        None => {
            // Fixed-size copies for whole bytes (a variable-length copy per 5 trits compiled to
            // a memmove call per byte: 320 µs for a 1536 x 384 matrix-vector product).
            let whole_bytes = out.len() / TRITS_PER_BYTE;
            let mut whole = out.chunks_exact_mut(TRITS_PER_BYTE);
            for (&byte, out) in packed.iter().zip(&mut whole) {
                let trits = &TRIT_TABLE[usize::from(byte)];
                let out: &mut [u8; TRITS_PER_BYTE] = out.try_into().expect("chunks of 5");
                *out = [trits[0], trits[1], trits[2], trits[3], trits[4]];
            }
            let tail = whole.into_remainder();
            if let Some(&byte) = packed.get(whole_bytes) {
                let n = tail.len();
                tail.copy_from_slice(&TRIT_TABLE[usize::from(byte)][..n]);
            }
        }
    }
}

/// The five trits of every byte value; values above 242 wrap (keeping codes in range).
pub(crate) const TRIT_TABLE: [[u8; 8]; 256] = {
    let mut table = [[0u8; 8]; 256];
    let mut byte = 0;
    while byte < 256 {
        let mut value = byte;
        let mut i = 0;
        while i < TRITS_PER_BYTE {
            table[byte][i] = (value % 3) as u8;
            value /= 3;
            i += 1;
        }
        byte += 1;
    }
    table
};

/// 2-bit arrangement: byte `j` holds codes `j + 8k` at bits `2k`.
fn encode_bits2(codes: &[u8; BLOCK], out: &mut [u8]) {
    for (j, byte) in out[..8].iter_mut().enumerate() {
        *byte = (0..4).fold(0u8, |acc, k| acc | (codes[j + 8 * k] & 3) << (2 * k));
    }
}

/// 4-bit arrangement: byte `j` holds codes `j` and `j + 16`.
fn encode_bits4(codes: &[u8; BLOCK], out: &mut [u8]) {
    for (j, byte) in out[..16].iter_mut().enumerate() {
        *byte = (codes[j] & 15) | (codes[j + 16] & 15) << 4;
    }
}

/// Bit plane: bit `j` of a little-endian u32 is bit `bit` of code `j`.
fn encode_plane(codes: &[u8; BLOCK], bit: u32, out: &mut [u8]) {
    let plane = (0..BLOCK).fold(0u32, |acc, j| acc | u32::from((codes[j] >> bit) & 1) << j);
    out[..4].copy_from_slice(&plane.to_le_bytes());
}

fn encode_block(layout: Layout, codes: &[u8; BLOCK], out: &mut [u8]) {
    match layout {
        Layout::Bits2 => encode_bits2(codes, out),
        Layout::Bits3 => {
            encode_bits2(codes, out);
            encode_plane(codes, 2, &mut out[8..]);
        }
        Layout::Bits4 => encode_bits4(codes, out),
        Layout::Bits5 => {
            encode_bits4(codes, out);
            encode_plane(codes, 4, &mut out[16..]);
        }
        Layout::Bits6 => {
            encode_bits4(codes, out);
            encode_bits2(&codes.map(|c| c >> 4), &mut out[16..]);
        }
        Layout::Bits8 => out[..BLOCK].copy_from_slice(codes),
        Layout::Trits5 | Layout::TernarySparse => unreachable!("{layout:?} is not block based"),
    }
}

fn decode_bits2(packed: &[u8], out: &mut [u8; BLOCK], shift: u32) {
    for (j, &byte) in packed[..8].iter().enumerate() {
        for k in 0..4 {
            out[j + 8 * k] |= ((byte >> (2 * k)) & 3) << shift;
        }
    }
}

fn decode_bits4(packed: &[u8], out: &mut [u8; BLOCK]) {
    for (j, &byte) in packed[..16].iter().enumerate() {
        out[j] |= byte & 15;
        out[j + 16] |= byte >> 4;
    }
}

fn decode_plane(packed: &[u8], bit: u32, out: &mut [u8; BLOCK]) {
    let plane = u32::from_le_bytes([packed[0], packed[1], packed[2], packed[3]]);
    for (j, code) in out.iter_mut().enumerate() {
        *code |= (((plane >> j) & 1) as u8) << bit;
    }
}

/// Decodes one block of a bit layout into 32 codes.
pub(crate) fn decode_block(layout: Layout, packed: &[u8], out: &mut [u8; BLOCK]) {
    *out = [0; BLOCK];
    match layout {
        Layout::Bits2 => decode_bits2(packed, out, 0),
        Layout::Bits3 => {
            decode_bits2(packed, out, 0);
            decode_plane(&packed[8..], 2, out);
        }
        Layout::Bits4 => decode_bits4(packed, out),
        Layout::Bits5 => {
            decode_bits4(packed, out);
            decode_plane(&packed[16..], 4, out);
        }
        Layout::Bits6 => {
            decode_bits4(packed, out);
            decode_bits2(&packed[16..], out, 4);
        }
        Layout::Bits8 => out.copy_from_slice(&packed[..BLOCK]),
        Layout::Trits5 | Layout::TernarySparse => unreachable!("{layout:?} is not block based"),
    }
}
