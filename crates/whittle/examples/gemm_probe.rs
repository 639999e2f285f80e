use candle_core::{Device, Tensor};
use std::time::Instant;
fn main() {
    for (m, k, n) in [(1500, 384, 1536), (1500, 1536, 384), (3000, 512, 2048)] {
        let a = Tensor::randn(0f32, 1.0, (m, k), &Device::Cpu).unwrap();
        let b = Tensor::randn(0f32, 1.0, (k, n), &Device::Cpu).unwrap();
        let _ = a.matmul(&b).unwrap();
        let r = 5;
        let t = Instant::now();
        for _ in 0..r {
            let _ = a.matmul(&b).unwrap();
        }
        let dt = t.elapsed().as_secs_f64() / r as f64;
        println!(
            "{m}x{k}x{n}: candle/gemm {:.0} GFLOP/s",
            2.0 * (m * k * n) as f64 / dt / 1e9
        );
    }
}
