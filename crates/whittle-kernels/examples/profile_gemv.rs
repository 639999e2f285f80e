//! Runs one packed matrix-vector shape in a loop, for `perf record`.
//!
//! `cargo run --release -p whittle-kernels --example profile_gemv -- <n> <k> <bits> <iters>`
//! (`bits` = 32 runs the f32 baseline).

use whittle_kernels::{matmul, matmul_f32, Granularity, PackedMatrix, UniformQuantizer};

fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|a| a.parse().expect("integer argument"))
        .collect();
    let (n, k, bits, iters) = (args[0], args[1], args[2] as u8, args[3]);
    let w: Vec<f32> = (0..n * k)
        .map(|i| ((i * 7919 % 1009) as f32 - 504.0) / 5000.0)
        .collect();
    if bits == 32 {
        let mut y = vec![0.0f32; n];
        let x: Vec<f32> = (0..k).map(|i| (i % 13) as f32 - 6.0).collect();
        for _ in 0..iters {
            matmul_f32(std::hint::black_box(&x), 1, &w, n, k, None, &mut y).unwrap();
        }
        return;
    }
    let q = UniformQuantizer::symmetric(bits, Granularity::Group(64))
        .unwrap()
        .quantize(&w, n, k)
        .unwrap();
    let packed = PackedMatrix::pack(&q);
    let x: Vec<f32> = (0..k).map(|i| (i % 13) as f32 - 6.0).collect();
    let mut y = vec![0.0f32; n];
    let start = std::time::Instant::now();
    for _ in 0..iters {
        matmul(std::hint::black_box(&x), 1, packed.as_ref(), None, &mut y).unwrap();
    }
    println!(
        "{:.2} µs per call",
        start.elapsed().as_secs_f64() * 1e6 / iters as f64
    );
}
