//! Format descriptors: quantization scheme, scale granularity and packed code layout.
//!
//! A weight matrix `[rows = out_features][cols = in_features]` is split per row into groups of
//! `group_len` consecutive input features; each group has one scale (and, for asymmetric schemes,
//! one integer zero point). A weight is reconstructed as `w = scale * (code - zero_point)`, with
//! codes stored unsigned. Symmetric schemes use the implicit zero point `2^(bits-1)` and ternary uses
//! `1`, so every scheme shares the same reconstruction and the same kernels.
//!
//! Packed codes are laid out per row, group-major: row `r`'s bytes start at `r * row_bytes`, and
//! group `g` of a row is contiguous. Bit layouts work on blocks of [`BLOCK`] = 32 weights (a
//! partial last block is zero-padded); see [`Layout`] for each block's bytes. Scales (`f16`) and
//! zero points (`u8`) live in separate arrays indexed `row * groups_per_row + group`
//! (a single entry for [`Granularity::PerTensor`]).

use crate::error::{KernelError, Result};

/// Weights per packed block for the bit layouts. Group sizes are multiples of it.
pub const BLOCK: usize = 32;

/// Trits stored per byte by [`Layout::Trits5`] (3^5 = 243 <= 256).
pub const TRITS_PER_BYTE: usize = 5;

/// Which weights share a scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Granularity {
    /// One scale for the whole matrix.
    PerTensor,
    /// One scale per output row (per output channel).
    PerRow,
    /// One scale per `n` consecutive input features of a row; `n` is a positive multiple of
    /// [`BLOCK`] (32, 64, 128 are usual). The last group of a row is partial when `cols % n != 0`.
    Group(usize),
}

impl Granularity {
    /// Checks that a group size is a positive multiple of [`BLOCK`].
    pub fn validate(self) -> Result<()> {
        match self {
            Granularity::Group(n) if n == 0 || n % BLOCK != 0 => Err(KernelError::InvalidFormat(
                format!("group size {n} must be a positive multiple of {BLOCK}"),
            )),
            _ => Ok(()),
        }
    }

    /// Length of a full group for rows of `cols` weights.
    pub fn group_len(self, cols: usize) -> usize {
        match self {
            Granularity::Group(n) => n.min(cols),
            Granularity::PerTensor | Granularity::PerRow => cols,
        }
    }

    /// Number of groups in one row of `cols` weights.
    pub fn groups_per_row(self, cols: usize) -> usize {
        match self {
            Granularity::Group(n) => cols.div_ceil(n),
            Granularity::PerTensor | Granularity::PerRow => usize::from(cols > 0),
        }
    }

    /// Number of scales (and zero points) for a `rows x cols` matrix, `None` on overflow.
    pub fn scale_count(self, rows: usize, cols: usize) -> Option<usize> {
        match self {
            Granularity::PerTensor => Some(1),
            _ => rows.checked_mul(self.groups_per_row(cols)),
        }
    }

    /// Index into the scale array of `group` in `row`.
    #[inline]
    pub fn scale_index(self, row: usize, group: usize, groups_per_row: usize) -> usize {
        match self {
            Granularity::PerTensor => 0,
            _ => row * groups_per_row + group,
        }
    }
}

/// Integer grid the weights are rounded onto.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Scheme {
    /// Codes `0..2^bits`, implicit zero point `2^(bits-1)`: levels `scale * [-2^(b-1), 2^(b-1) - 1]`.
    Symmetric {
        /// Bit width, 2..=8.
        bits: u8,
    },
    /// Codes `0..2^bits` with an explicit integer zero point per group.
    Asymmetric {
        /// Bit width, 2..=8.
        bits: u8,
    },
    /// Codes `{0, 1, 2}` for `{-alpha, 0, +alpha}` (implicit zero point 1).
    Ternary,
}

impl Scheme {
    /// Checks the bit width range.
    pub fn validate(self) -> Result<()> {
        match self {
            Scheme::Symmetric { bits } | Scheme::Asymmetric { bits }
                if !(2..=8).contains(&bits) =>
            {
                Err(KernelError::InvalidFormat(format!(
                    "bit width {bits} is outside 2..=8"
                )))
            }
            _ => Ok(()),
        }
    }

    /// Largest code value.
    pub fn max_code(self) -> u8 {
        match self {
            Scheme::Symmetric { bits } | Scheme::Asymmetric { bits } => ((1u16 << bits) - 1) as u8,
            Scheme::Ternary => 2,
        }
    }

    /// The zero point shared by all groups, or `None` when each group stores its own.
    pub fn implicit_zero_point(self) -> Option<u8> {
        match self {
            Scheme::Symmetric { bits } => Some(1u8 << (bits - 1)),
            Scheme::Asymmetric { .. } => None,
            Scheme::Ternary => Some(1),
        }
    }

    /// Whether groups store explicit zero points.
    pub fn has_zero_points(self) -> bool {
        self.implicit_zero_point().is_none()
    }
}

/// Scheme plus granularity: everything needed to interpret unpacked codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct QuantFormat {
    /// Integer grid.
    pub scheme: Scheme,
    /// Which weights share a scale.
    pub granularity: Granularity,
}

impl QuantFormat {
    /// Validates scheme and granularity.
    pub fn validate(self) -> Result<()> {
        self.scheme.validate()?;
        self.granularity.validate()
    }
}

/// Byte layout of packed codes. Per-block byte counts below are for codes only; each group adds
/// a 2-byte `f16` scale, and asymmetric schemes a 1-byte zero point.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layout {
    /// 2-bit codes, 8 bytes per 32 weights: byte `j` (0..8) holds codes `j`, `j+8`, `j+16`, `j+24`
    /// in bits 0-1, 2-3, 4-5, 6-7, so one 64-bit load shifted by 0/2/4/6 per lane and masked gives
    /// 32 codes in order. g64: 16 + 2 = 18 bytes per 64 weights = 2.25 bpw. Also packs ternary.
    Bits2,
    /// 3-bit codes as planes 2+1, 12 bytes per 32 weights: bytes 0..8 are the low two bits in the
    /// [`Layout::Bits2`] arrangement, bytes 8..12 a little-endian `u32` whose bit `j` is bit 2 of
    /// code `j`. g64: 24 + 2 = 26 bytes per 64 weights = 3.25 bpw.
    Bits3,
    /// 4-bit codes, 16 bytes per 32 weights: byte `j` (0..16) holds code `j` in the low nibble and
    /// code `j+16` in the high nibble, so a mask and a shift give 32 codes in order.
    /// g64: 32 + 2 = 34 bytes per 64 weights = 4.25 bpw.
    Bits4,
    /// 5-bit codes as planes 4+1, 20 bytes per 32 weights: 16 bytes of low nibbles as
    /// [`Layout::Bits4`], then a `u32` bit plane of bit 4. g64: 40 + 2 = 42 bytes = 5.25 bpw.
    Bits5,
    /// 6-bit codes as planes 4+2, 24 bytes per 32 weights: 16 bytes of low nibbles as
    /// [`Layout::Bits4`], then 8 bytes of bits 4-5 as [`Layout::Bits2`]. g64: 48 + 2 = 50 bytes =
    /// 6.25 bpw.
    Bits6,
    /// One byte per code (also used for 7-bit codes), 32 bytes per 32 weights.
    /// g64: 64 + 2 = 66 bytes = 8.25 bpw.
    Bits8,
    /// Ternary codes, 5 trits per byte (1.6 bits per weight): byte `t` of a group holds
    /// `c[5t] + 3 c[5t+1] + 9 c[5t+2] + 27 c[5t+3] + 81 c[5t+4]`; a group of `n` weights takes
    /// `ceil(n / 5)` bytes. g64: 13 + 2 = 15 bytes per 64 weights = 1.875 bpw; g128: 26 + 2 = 28
    /// bytes = 1.75 bpw; per row at 384 inputs: 77 + 2 = 79 bytes = 1.65 bpw.
    Trits5,
    /// Ternary codes stored sparsely, so the size follows the zeros: per row, one `u32` nonzero
    /// mask per 32 weights and one sign bit per nonzero, after a table of row offsets (byte by
    /// byte in [`crate::ternary`]). A row of `z` nonzeros out of `n` takes
    /// `4 ceil(n / 32) + ceil(z / 8)` bytes, about `1 + z / n` bits per weight; rows differ in
    /// length, so there is no fixed row size ([`PackedFormat::row_bytes`] is `None`).
    TernarySparse,
}

impl Layout {
    /// Default layout for a scheme: the narrowest bit layout that holds its codes (7 bits use
    /// [`Layout::Bits8`], ternary uses [`Layout::Bits2`]).
    pub fn for_scheme(scheme: Scheme) -> Layout {
        match scheme {
            Scheme::Ternary => Layout::Bits2,
            Scheme::Symmetric { bits } | Scheme::Asymmetric { bits } => match bits {
                0..=2 => Layout::Bits2,
                3 => Layout::Bits3,
                4 => Layout::Bits4,
                5 => Layout::Bits5,
                6 => Layout::Bits6,
                _ => Layout::Bits8,
            },
        }
    }

    /// Bytes per 32-weight block, `None` for [`Layout::Trits5`] (which is not block based).
    pub fn block_bytes(self) -> Option<usize> {
        match self {
            Layout::Bits2 => Some(8),
            Layout::Bits3 => Some(12),
            Layout::Bits4 => Some(16),
            Layout::Bits5 => Some(20),
            Layout::Bits6 => Some(24),
            Layout::Bits8 => Some(32),
            Layout::Trits5 | Layout::TernarySparse => None,
        }
    }

    /// Whether rows take different numbers of bytes (the codes start with a row offset table).
    pub fn is_sparse(self) -> bool {
        self == Layout::TernarySparse
    }

    /// Largest code the layout can hold.
    pub fn max_code(self) -> u8 {
        match self {
            Layout::Bits2 => 3,
            Layout::Bits3 => 7,
            Layout::Bits4 => 15,
            Layout::Bits5 => 31,
            Layout::Bits6 => 63,
            Layout::Bits8 => 255,
            Layout::Trits5 | Layout::TernarySparse => 2,
        }
    }

    /// Bytes taken by a group of `len` weights (for lengths already validated by
    /// [`Layout::checked_group_bytes`]).
    pub fn group_bytes(self, len: usize) -> usize {
        self.checked_group_bytes(len).unwrap_or(usize::MAX)
    }

    /// Bytes taken by a group of `len` weights, `None` on overflow (crafted sizes).
    pub fn checked_group_bytes(self, len: usize) -> Option<usize> {
        if self.is_sparse() {
            return None;
        }
        match self.block_bytes() {
            Some(bytes) => len.div_ceil(BLOCK).checked_mul(bytes),
            None => Some(len.div_ceil(TRITS_PER_BYTE)),
        }
    }
}

/// A quantization format plus the byte layout of its packed codes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PackedFormat {
    /// How codes are interpreted.
    pub quant: QuantFormat,
    /// How codes are laid out in bytes.
    pub layout: Layout,
}

impl PackedFormat {
    /// Combines a quantization format with a layout, checking that the layout holds every code.
    pub fn new(quant: QuantFormat, layout: Layout) -> Result<Self> {
        let format = PackedFormat { quant, layout };
        format.validate()?;
        Ok(format)
    }

    /// The default packed format for a quantization format (see [`Layout::for_scheme`]).
    pub fn default_for(quant: QuantFormat) -> Self {
        PackedFormat {
            quant,
            layout: Layout::for_scheme(quant.scheme),
        }
    }

    /// Checks scheme, granularity and that the layout holds the scheme's codes.
    pub fn validate(self) -> Result<()> {
        self.quant.validate()?;
        if self.quant.scheme.max_code() > self.layout.max_code() {
            return Err(KernelError::InvalidFormat(format!(
                "layout {:?} cannot hold codes of {:?}",
                self.layout, self.quant.scheme
            )));
        }
        Ok(())
    }

    /// Packed code bytes of one row of `cols` weights, `None` on overflow or for the sparse
    /// layout (whose rows differ in length).
    pub fn row_bytes(self, cols: usize) -> Option<usize> {
        let group = self.quant.granularity.group_len(cols);
        if group == 0 {
            return Some(0);
        }
        let full_groups = cols / group;
        let tail = cols % group;
        full_groups
            .checked_mul(self.layout.checked_group_bytes(group)?)?
            .checked_add(self.layout.checked_group_bytes(tail)?)
    }

    /// Byte offset of `group` inside a row (all groups before it are full).
    #[inline]
    pub fn group_offset(self, cols: usize, group: usize) -> usize {
        group
            * self
                .layout
                .group_bytes(self.quant.granularity.group_len(cols))
    }

    /// Total stored bytes (codes + scales + zero points) for a `rows x cols` matrix (`None` for
    /// the sparse layout, whose size depends on the codes).
    pub fn total_bytes(self, rows: usize, cols: usize) -> Option<usize> {
        let codes = rows.checked_mul(self.row_bytes(cols)?)?;
        let groups = self.quant.granularity.scale_count(rows, cols)?;
        let per_group = 2 + usize::from(self.quant.scheme.has_zero_points());
        codes.checked_add(groups.checked_mul(per_group)?)
    }

    /// Stored bits per weight including scales and zero points.
    pub fn bits_per_weight(self, rows: usize, cols: usize) -> Option<f64> {
        let bytes = self.total_bytes(rows, cols)?;
        let weights = rows.checked_mul(cols)?;
        (weights > 0).then(|| bytes as f64 * 8.0 / weights as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn group64(scheme: Scheme, layout: Layout) -> PackedFormat {
        PackedFormat::new(
            QuantFormat {
                scheme,
                granularity: Granularity::Group(64),
            },
            layout,
        )
        .unwrap()
    }

    #[test]
    fn documented_bits_per_weight() {
        let sym = |bits| Scheme::Symmetric { bits };
        let cases = [
            (group64(sym(2), Layout::Bits2), 2.25),
            (group64(sym(3), Layout::Bits3), 3.25),
            (group64(sym(4), Layout::Bits4), 4.25),
            (group64(sym(5), Layout::Bits5), 5.25),
            (group64(sym(6), Layout::Bits6), 6.25),
            (group64(sym(8), Layout::Bits8), 8.25),
            (
                group64(Scheme::Asymmetric { bits: 4 }, Layout::Bits4),
                4.375,
            ),
            (group64(Scheme::Ternary, Layout::Trits5), 1.875),
        ];
        for (format, bpw) in cases {
            assert_eq!(format.bits_per_weight(384, 384), Some(bpw), "{format:?}");
        }
    }

    #[test]
    fn partial_groups_take_partial_blocks() {
        let format = group64(Scheme::Symmetric { bits: 4 }, Layout::Bits4);
        // 100 = 64 + 36: 2 blocks + 2 blocks (second one padded).
        assert_eq!(format.row_bytes(100), Some(64));
        let trits = group64(Scheme::Ternary, Layout::Trits5);
        assert_eq!(trits.row_bytes(100), Some(13 + 8));
    }

    #[test]
    fn rejects_bad_formats() {
        let quant = QuantFormat {
            scheme: Scheme::Symmetric { bits: 4 },
            granularity: Granularity::Group(48),
        };
        assert!(quant.validate().is_err());
        let quant = QuantFormat {
            scheme: Scheme::Symmetric { bits: 9 },
            granularity: Granularity::PerRow,
        };
        assert!(quant.validate().is_err());
        let quant = QuantFormat {
            scheme: Scheme::Symmetric { bits: 4 },
            granularity: Granularity::PerRow,
        };
        assert!(PackedFormat::new(quant, Layout::Bits3).is_err());
        assert!(PackedFormat::new(quant, Layout::Trits5).is_err());
    }
}
