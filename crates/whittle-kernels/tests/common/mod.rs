//! Deterministic random data shared by the integration tests.
#![allow(dead_code)]

use whittle_kernels::{
    Granularity, Layout, PackedMatrix, QuantizedMatrix, TernaryQuantizer, UniformQuantizer,
};

/// xorshift64* generator: tests own their randomness so failures reproduce exactly.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.uniform().max(1e-7);
        let u2 = self.uniform();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }
    pub fn normals(&mut self, len: usize, scale: f32) -> Vec<f32> {
        (0..len).map(|_| self.normal() * scale).collect()
    }
}

/// Quantizes `(weights, rows, cols)` and packs the result.
pub type MakeFormat = Box<dyn Fn(&[f32], usize, usize) -> (QuantizedMatrix, PackedMatrix)>;

/// Every (name, scheme) the kernels support, quantized and packed.
pub fn all_formats(granularity: Granularity) -> Vec<(String, MakeFormat)> {
    let mut out: Vec<(String, MakeFormat)> = Vec::new();
    for bits in 2..=8u8 {
        for symmetric in [true, false] {
            let name = format!(
                "{}{bits} {granularity:?}",
                if symmetric { "sym" } else { "asym" }
            );
            out.push((
                name,
                Box::new(move |w, rows, cols| {
                    let q = if symmetric {
                        UniformQuantizer::symmetric(bits, granularity)
                    } else {
                        UniformQuantizer::asymmetric(bits, granularity)
                    }
                    .unwrap()
                    .quantize(w, rows, cols)
                    .unwrap();
                    let p = PackedMatrix::pack(&q);
                    (q, p)
                }),
            ));
        }
    }
    for layout in [Layout::Bits2, Layout::Trits5] {
        out.push((
            format!("ternary {layout:?} {granularity:?}"),
            Box::new(move |w, rows, cols| {
                let q = TernaryQuantizer { granularity }
                    .quantize(w, rows, cols)
                    .unwrap();
                let p = PackedMatrix::pack_with(&q, layout).unwrap();
                (q, p)
            }),
        ));
    }
    out
}

pub const GRANULARITIES: [Granularity; 5] = [
    Granularity::PerTensor,
    Granularity::PerRow,
    Granularity::Group(32),
    Granularity::Group(64),
    Granularity::Group(128),
];
