//! Packed low-bit kernels vs the f32 kernel on Whisper's real layer shapes, in one run.
//!
//! Matrix-vector (`m = 1`, the decoder) on every shape, matrix-matrix (`m = 1500` encoder frames)
//! on the encoder shapes, there also through `matmul_q8` (`*_q8act`: int8 activations, the VNNI
//! panel kernel where the CPU has it). Ratios come from comparing `f32` with `q*` inside one group.
//!
//! `cargo bench -p whittle-kernels --bench packed_matmul -- --warm-up-time 1 --measurement-time 3`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use whittle_kernels::{
    matmul, matmul_f32, matmul_q8, Granularity, PackedMatrix, TernaryQuantizer, UniformQuantizer,
};

/// (model, layer, out_features n, in_features k, encoder layer?)
const SHAPES: &[(&str, &str, usize, usize, bool)] = &[
    ("tiny.en", "qkvo_384x384", 384, 384, true),
    ("tiny.en", "fc1_1536x384", 1536, 384, true),
    ("tiny.en", "fc2_384x1536", 384, 1536, true),
    ("tiny.en", "logits_51864x384", 51864, 384, false),
    ("base", "qkvo_512x512", 512, 512, true),
    ("base", "fc1_2048x512", 2048, 512, true),
    ("base", "fc2_512x2048", 512, 2048, true),
    ("base", "logits_51865x512", 51865, 512, false),
];

const ENCODER_FRAMES: usize = 1500;

/// Deterministic pseudo-normal values (sum of uniforms), scaled like trained weights.
fn values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..len)
        .map(|_| (uniform() + uniform() + uniform() - 1.5) * scale)
        .collect()
}

fn packed_variants(w: &[f32], n: usize, k: usize) -> Vec<(&'static str, PackedMatrix)> {
    let group = Granularity::Group(64);
    let uniform = |bits| {
        let q = UniformQuantizer::symmetric(bits, group)
            .and_then(|q| q.quantize(w, n, k))
            .expect("quantize bench weights");
        PackedMatrix::pack(&q)
    };
    let ternary = TernaryQuantizer { granularity: group }
        .quantize(w, n, k)
        .expect("quantize bench weights");
    vec![
        ("q8_g64", uniform(8)),
        ("q4_g64", uniform(4)),
        ("q3_g64", uniform(3)),
        ("q2_g64", uniform(2)),
        ("t2_g64", PackedMatrix::pack(&ternary)),
    ]
}

fn bench_shapes(c: &mut Criterion) {
    for (index, &(model, layer, n, k, encoder)) in SHAPES.iter().enumerate() {
        let w = values(n * k, index as u64 + 1, 0.05);
        let bias = values(n, 99, 0.01);
        let packed = packed_variants(&w, n, k);
        let mut runs = vec![1];
        if encoder {
            runs.push(ENCODER_FRAMES);
        }
        for m in runs {
            let x = values(m * k, 7, 1.0);
            let mut y = vec![0.0f32; m * n];
            let kind = if m == 1 { "gemv" } else { "gemm" };
            let mut group = c.benchmark_group(format!("{kind}/{model}/{layer}"));
            group.throughput(Throughput::Elements((m * n * k) as u64));
            group.bench_function(BenchmarkId::from_parameter("f32"), |b| {
                b.iter(|| {
                    matmul_f32(black_box(&x), m, &w, n, k, Some(&bias), &mut y).unwrap();
                })
            });
            for (name, p) in &packed {
                group.bench_function(BenchmarkId::from_parameter(name), |b| {
                    b.iter(|| matmul(black_box(&x), m, p.as_ref(), Some(&bias), &mut y).unwrap())
                });
                // The encoder's path: int8 activations (the VNNI panel kernel where available).
                if m > 1 {
                    group.bench_function(
                        BenchmarkId::from_parameter(format!("{name}_q8act")),
                        |b| {
                            b.iter(|| {
                                matmul_q8(black_box(&x), m, p.as_ref(), Some(&bias), &mut y)
                                    .unwrap()
                            })
                        },
                    );
                }
            }
            group.finish();
        }
    }
}

criterion_group!(benches, bench_shapes);
criterion_main!(benches);
