//! Packed-vs-f32 speed ratios on Whisper's layer shapes, robust to a busy machine: the f32 and
//! packed kernels are timed alternately and the minimum of many runs is kept (the run least
//! disturbed by other processes). Prints a markdown table.
//!
//! `cargo run --release -p whittle-kernels --example matmul_ratios [-- gemv|gemm]`

use std::hint::black_box;
use std::time::Duration;

mod timing;
use timing::{fmt, min_times, values};
use whittle_kernels::{
    matmul, matmul_f32, matmul_q8, Granularity, PackedMatrix, TernaryQuantizer, UniformQuantizer,
};

const SHAPES: &[(&str, &str, usize, usize, bool)] = &[
    ("tiny.en", "q/k/v/out 384x384", 384, 384, true),
    ("tiny.en", "fc1 1536x384", 1536, 384, true),
    ("tiny.en", "fc2 384x1536", 384, 1536, true),
    ("tiny.en", "logits 51864x384", 51864, 384, false),
    ("base", "q/k/v/out 512x512", 512, 512, true),
    ("base", "fc1 2048x512", 2048, 512, true),
    ("base", "fc2 512x2048", 512, 2048, true),
    ("base", "logits 51865x512", 51865, 512, false),
];

fn main() {
    let filter = std::env::args().nth(1).unwrap_or_default();
    // The last column runs the 4-bit matrix through `matmul_q8` (int8 activations at every m;
    // the same kernel as `matmul` when m = 1).
    let names = [
        "q8_g64",
        "q4_g64",
        "q3_g64",
        "q2_g64",
        "t2_g64",
        "q4_g64 int8-act",
    ];
    println!(
        "| kind | model | layer | m | f32 | {} |",
        names.map(|n| format!("{n} (x f32)")).join(" | ")
    );
    println!("|{}", "---|".repeat(5 + names.len()));
    for &(model, layer, n, k, encoder) in SHAPES {
        let w = values(n * k, n as u64 + k as u64, 0.05);
        let bias = values(n, 99, 0.01);
        let group = Granularity::Group(64);
        let mut packed: Vec<PackedMatrix> = [8u8, 4, 3, 2]
            .iter()
            .map(|&bits| {
                let q = UniformQuantizer::symmetric(bits, group)
                    .unwrap()
                    .quantize(&w, n, k)
                    .unwrap();
                PackedMatrix::pack(&q)
            })
            .collect();
        let t = TernaryQuantizer { granularity: group }
            .quantize(&w, n, k)
            .unwrap();
        packed.push(PackedMatrix::pack(&t));
        for m in [1, 1500] {
            let kind = if m == 1 { "gemv" } else { "gemm" };
            if (m > 1 && !encoder) || (!filter.is_empty() && filter != kind) {
                continue;
            }
            let x = values(m * k, 7, 1.0);
            let mut ys = vec![vec![0.0f32; m * n]; packed.len() + 2];
            let (y0, rest) = ys.split_first_mut().unwrap();
            let mut fs: Vec<Box<dyn FnMut() + '_>> = vec![Box::new(|| {
                matmul_f32(black_box(&x), m, &w, n, k, Some(&bias), y0).unwrap()
            })];
            let (q8_y, rest) = rest.split_last_mut().unwrap();
            for (p, y) in packed.iter().zip(rest.iter_mut()) {
                let x = &x;
                let bias = &bias;
                fs.push(Box::new(move || {
                    matmul(black_box(x), m, p.as_ref(), Some(bias), y).unwrap()
                }));
            }
            let (q4, x_ref, bias_ref) = (&packed[1], &x, &bias);
            fs.push(Box::new(move || {
                matmul_q8(black_box(x_ref), m, q4.as_ref(), Some(bias_ref), q8_y).unwrap()
            }));
            let budget = Duration::from_millis(if m == 1 { 600 } else { 2500 });
            let times = min_times(&mut fs, budget);
            let base = times[0].as_secs_f64();
            let cells: Vec<String> = times[1..]
                .iter()
                .map(|t| format!("{} ({:.2}x)", fmt(*t), base / t.as_secs_f64()))
                .collect();
            println!(
                "| {kind} | {model} | {layer} | {m} | {} | {} |",
                fmt(times[0]),
                cells.join(" | ")
            );
        }
    }
}
