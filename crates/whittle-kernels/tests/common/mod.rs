//! Deterministic random data shared by the integration tests.
#![allow(dead_code)]

use whittle_kernels::{
    Granularity, Isa, Layout, PackedMatrix, QuantizedMatrix, TernaryQuantizer, UniformQuantizer,
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
    for layout in [Layout::Bits2, Layout::Trits5, Layout::TernarySparse] {
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

/// The instruction sets of `candidates` this CPU runs, for the tests to cover. Panics when
/// `WHITTLE_REQUIRE_ISA` (a comma list of `scalar`, `avx2`, `avx512vnni`) names one the CPU
/// lacks: CI on a VNNI machine sets it so that the VNNI kernels cannot silently go untested.
pub fn isas(candidates: &[Isa]) -> Vec<Isa> {
    let required = std::env::var("WHITTLE_REQUIRE_ISA").unwrap_or_default();
    for name in required.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let isa = match name.to_ascii_lowercase().as_str() {
            "scalar" => Isa::Scalar,
            "avx2" | "avx2fma" => Isa::Avx2Fma,
            "avx512vnni" | "vnni" => Isa::Avx512Vnni,
            _ => panic!("WHITTLE_REQUIRE_ISA: unknown `{name}` (scalar, avx2, avx512vnni)"),
        };
        assert!(
            isa.is_available(),
            "WHITTLE_REQUIRE_ISA={required}: this CPU lacks {isa:?}, so its kernels would go untested"
        );
    }
    candidates
        .iter()
        .copied()
        .filter(|isa| isa.is_available())
        .collect()
}

/// Every instruction set a kernel exists for.
pub const ALL_ISAS: [Isa; 3] = [Isa::Scalar, Isa::Avx2Fma, Isa::Avx512Vnni];
