//! Ternary layouts against f32 and W4 on Whisper's layer shapes, in one process: stored bits
//! per weight and the kernel time of each, timed alternately (minimum of many runs, robust to a
//! busy machine). Prints a markdown table.
//!
//! Rows per shape: `m = 1` through `matmul_packed` (the decoder's matrix-vector path) and, for encoder
//! shapes, `m = 1500` through `matmul_q8_packed` (what the models call for the encoder). The ternary
//! matrices are cosine-optimal projections per row with at most `(1 - s) k` nonzeros, so the
//! sparse layout is measured at the sparsities ternary training produces (about 50 % without a
//! cap) and above.
//!
//! `cargo run --release -p whittle-kernels --example ternary_ratios [-- gemv|gemm]`

use std::hint::black_box;
use std::time::Duration;

mod timing;
use timing::{fmt, min_times, values};

use half::f16;
use whittle_kernels::ternary::cosine_projection;
use whittle_kernels::{
    matmul_f32, matmul_packed, matmul_packed_with, matmul_q8_packed, Granularity, Isa, Layout,
    PackedMatrix, QuantFormat, QuantizedMatrix, Scheme, UniformQuantizer,
};

const SHAPES: &[(&str, &str, usize, usize, bool)] = &[
    ("tiny.en", "q/k/v/out 384x384", 384, 384, true),
    ("tiny.en", "fc1 1536x384", 1536, 384, true),
    ("tiny.en", "fc2 384x1536", 384, 1536, true),
    ("base", "q/k/v/out 512x512", 512, 512, true),
    ("base", "fc1 2048x512", 2048, 512, true),
    ("base", "fc2 512x2048", 512, 2048, true),
];

/// Cosine-optimal ternary codes per row with at most `(1 - sparsity) k` nonzeros.
fn ternary(w: &[f32], n: usize, k: usize, sparsity: f64) -> QuantizedMatrix {
    let limit = ((1.0 - sparsity) * k as f64).floor() as usize;
    let (mut order, mut t) = (Vec::new(), vec![0f32; k]);
    let mut codes = Vec::with_capacity(n * k);
    let mut scales = Vec::with_capacity(n);
    for row in w.chunks(k) {
        let p = cosine_projection(row, limit, &mut order, &mut t);
        codes.extend(t.iter().map(|&v| (v as i32 + 1) as u8));
        scales.push(f16::from_f32(p.alpha));
    }
    let format = QuantFormat {
        scheme: Scheme::Ternary,
        granularity: Granularity::PerRow,
    };
    QuantizedMatrix::from_parts(n, k, format, codes, scales, None).unwrap()
}

fn bits(p: &PackedMatrix) -> f64 {
    p.stored_bytes() as f64 * 8.0 / (p.rows() * p.cols()) as f64
}

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    for &(model, layer, n, k, encoder) in SHAPES {
        let w = values(n * k, n as u64 + k as u64, 0.05);
        let bias = values(n, 99, 0.01);
        let w4 = PackedMatrix::pack(
            &UniformQuantizer::symmetric(4, Granularity::Group(64))
                .unwrap()
                .quantize(&w, n, k)
                .unwrap(),
        );
        let free = ternary(&w, n, k, 0.0);
        let zero_fraction = |q: &QuantizedMatrix| {
            q.codes().iter().filter(|&&c| c == 1).count() as f64 / (n * k) as f64
        };
        let mut variants: Vec<(String, PackedMatrix)> = vec![
            ("W4 g64".into(), w4),
            (
                format!("ternary 2bit s={:.2}", zero_fraction(&free)),
                PackedMatrix::pack_with(&free, Layout::Bits2).unwrap(),
            ),
            (
                format!("ternary 1.6bit s={:.2}", zero_fraction(&free)),
                PackedMatrix::pack_with(&free, Layout::Trits5).unwrap(),
            ),
        ];
        for sparsity in [0.0, 0.7, 0.9] {
            let q = ternary(&w, n, k, sparsity);
            variants.push((
                format!("sparse s={:.2}", zero_fraction(&q)),
                PackedMatrix::pack_with(&q, Layout::TernarySparse).unwrap(),
            ));
        }
        // The same matrix on the AVX2 path (the row above uses AVX-512 opmasks where the CPU
        // has them).
        let avx2_sparse = variants.last().unwrap().1.clone();
        let avx2_name = format!("{} (AVX2 path)", variants.last().unwrap().0);
        for m in [1, 1500] {
            let kind = if m == 1 { "gemv" } else { "gemm" };
            if (m > 1 && !encoder) || (!filter.is_empty() && filter != kind) {
                continue;
            }
            let x = values(m * k, 7, 1.0);
            let mut ys = vec![vec![0.0f32; m * n]; variants.len() + 2];
            let (y0, rest) = ys.split_first_mut().unwrap();
            let (y_last, rest) = rest.split_last_mut().unwrap();
            let (w_ref, bias_ref) = (&w, &bias);
            let x_ref = &x;
            let mut fs: Vec<Box<dyn FnMut() + '_>> = vec![Box::new(move || {
                matmul_f32(black_box(x_ref), m, w_ref, n, k, Some(bias_ref), y0).unwrap()
            })];
            for ((_, p), y) in variants.iter().zip(rest.iter_mut()) {
                fs.push(Box::new(move || {
                    // What the models call: the owned matrix, validated once at load.
                    if m == 1 {
                        matmul_packed(black_box(x_ref), m, p, Some(bias_ref), y).unwrap()
                    } else {
                        matmul_q8_packed(black_box(x_ref), m, p, Some(bias_ref), y).unwrap()
                    }
                }));
            }
            let avx2_ref = &avx2_sparse;
            if m == 1 && Isa::Avx2Fma.is_available() {
                fs.push(Box::new(move || {
                    matmul_packed_with(
                        Isa::Avx2Fma,
                        black_box(x_ref),
                        m,
                        avx2_ref,
                        Some(bias_ref),
                        y_last,
                    )
                    .unwrap()
                }));
            }
            let budget = Duration::from_millis(if m == 1 { 600 } else { 2500 });
            let times = min_times(&mut fs, budget);
            println!("\n{kind} {model} {layer} (m = {m}):\n");
            println!("| weights | bits/weight | time | vs f32 | vs W4 |");
            println!("|---|---|---|---|---|");
            println!("| f32 | 32 | {} | 1.00x | |", fmt(times[0]));
            let w4_time = times[1].as_secs_f64();
            let mut rows: Vec<(&str, &PackedMatrix)> =
                variants.iter().map(|(n, p)| (n.as_str(), p)).collect();
            if times.len() > variants.len() + 1 {
                rows.push((avx2_name.as_str(), &avx2_sparse));
            }
            for ((name, p), t) in rows.into_iter().zip(&times[1..]) {
                println!(
                    "| {name} | {:.3} | {} | {:.2}x | {:.2}x |",
                    bits(p),
                    fmt(*t),
                    times[0].as_secs_f64() / t.as_secs_f64(),
                    w4_time / t.as_secs_f64()
                );
            }
        }
    }
}
