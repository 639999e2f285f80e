//! Runs one matrix-vector shape in a loop, for `perf record`, and prints the fastest time per
//! call over batches of 50 calls (the batch least disturbed by other processes).
//!
//! `cargo run --release -p whittle-kernels --example profile_gemv -- <n> <k> <bits> <iters>`
//! (`bits` = 32 runs the f32 baseline; `GROUP=128` changes the group size from 64; `ISA=scalar`
//! runs the portable kernels).

use std::time::Instant;
use whittle_kernels::{matmul_f32, matmul_with, Granularity, Isa, PackedMatrix, UniformQuantizer};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("integer argument"))
        .collect();
    let (n, k, bits, iters) = (args[0], args[1], args[2] as u8, args[3]);
    let group = std::env::var("GROUP")
        .ok()
        .and_then(|g| g.parse().ok())
        .unwrap_or(64);
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 5000.0)
        .collect();
    let x: Vec<f32> = (0..k).map(|i| (i % 13) as f32 - 6.0).collect();
    let mut y = vec![0.0f32; n];
    let packed = (bits != 32).then(|| {
        let q = UniformQuantizer::symmetric(bits, Granularity::Group(group))
            .and_then(|q| q.quantize(&w, n, k))
            .expect("quantize");
        PackedMatrix::pack(&q)
    });
    let isa = match std::env::var("ISA").as_deref() {
        Ok("scalar") => Isa::Scalar,
        _ => Isa::detect(),
    };
    const BATCH: usize = 50;
    let mut best = f64::MAX;
    for _ in 0..iters.div_ceil(BATCH) {
        let start = Instant::now();
        for _ in 0..BATCH {
            match &packed {
                Some(p) => matmul_with(isa, std::hint::black_box(&x), 1, p.as_ref(), None, &mut y),
                None => matmul_f32(std::hint::black_box(&x), 1, &w, n, k, None, &mut y),
            }
            .expect("matmul");
        }
        best = best.min(start.elapsed().as_secs_f64() / BATCH as f64);
    }
    println!(
        "{n}x{k} bits {bits} g{group} {isa:?}: {:.2} µs per call (fastest batch)",
        best * 1e6
    );
}
