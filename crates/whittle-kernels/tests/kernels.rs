//! Every packed kernel against the naive dequantize-then-dot reference, on random shapes with
//! odd sizes and tails, for every format, granularity and instruction set.

mod common;

use common::{all_formats, Rng, GRANULARITIES};
use proptest::prelude::*;
use whittle_kernels::kernels::reference::{matmul_f32_naive, matmul_naive};
use whittle_kernels::kernels::{GEMV_MAX_ROWS, VNNI_GEMM_MIN_ROWS};

// The property test's second range of m must reach the VNNI kernel.
const _: () = assert!(VNNI_GEMM_MIN_ROWS <= 136);
use whittle_kernels::{matmul_f32_with, matmul_q8_with, matmul_with, Isa, BLOCK};

/// Relative slack for f32 summation-order differences.
const F32_REL_TOL: f32 = 1e-4;

fn isas() -> Vec<Isa> {
    common::isas(&common::ALL_ISAS)
}

/// Prints the instruction sets these tests cover on this CPU (`-- --nocapture` shows it; CI
/// does) and fails under `WHITTLE_REQUIRE_ISA` when one required is missing.
#[test]
fn instruction_sets_covered() {
    let covered = isas();
    let missing: Vec<Isa> = common::ALL_ISAS
        .into_iter()
        .filter(|isa| !covered.contains(isa))
        .collect();
    println!("kernel tests cover {covered:?}; not on this CPU: {missing:?}");
    assert!(covered.contains(&Isa::Scalar));
}

/// Allowed |kernel - reference| for output (i, j). The matrix-vector path rounds each 32-block
/// of `x` to int8 with step `s = max|x_b| / 127`, so it may differ by `sum_b s/2 * sum_b |w|`.
fn tolerance(x_row: &[f32], w_row: &[f32], int8_activations: bool) -> f32 {
    let magnitude: f32 = x_row.iter().zip(w_row).map(|(a, b)| (a * b).abs()).sum();
    let mut bound = F32_REL_TOL * magnitude + 1e-5;
    if int8_activations {
        for (xb, wb) in x_row.chunks(BLOCK).zip(w_row.chunks(BLOCK)) {
            let step = xb.iter().fold(0.0f32, |a, v| a.max(v.abs())) / 127.0;
            bound += step / 2.0 * wb.iter().map(|v| v.abs()).sum::<f32>() * (1.0 + 1e-3);
        }
    }
    bound
}

fn check_all_formats(rows: usize, cols: usize, m: usize, seed: u64, with_bias: bool) {
    let mut rng = Rng::new(seed);
    let w = rng.normals(rows * cols, 0.1);
    let x = rng.normals(m * cols, 1.0);
    let bias = with_bias.then(|| rng.normals(rows, 0.1));
    for granularity in GRANULARITIES {
        for (name, make) in all_formats(granularity) {
            let (_, packed) = make(&w, rows, cols);
            let view = packed.as_ref();
            let dense = view.dequantize().unwrap();
            let mut expected = vec![0.0f32; m * rows];
            matmul_naive(&x, m, view, bias.as_deref(), &mut expected).unwrap();
            for isa in isas() {
                // `matmul` rounds activations to int8 only on the matrix-vector path,
                // `matmul_q8` for every m.
                for (kernel, int8) in [("matmul", m <= GEMV_MAX_ROWS), ("matmul_q8", true)] {
                    let mut y = vec![f32::NAN; m * rows];
                    if kernel == "matmul" {
                        matmul_with(isa, &x, m, view, bias.as_deref(), &mut y).unwrap();
                    } else {
                        matmul_q8_with(isa, &x, m, view, bias.as_deref(), &mut y).unwrap();
                    }
                    for i in 0..m {
                        for j in 0..rows {
                            let x_row = &x[i * cols..(i + 1) * cols];
                            let w_row = &dense[j * cols..(j + 1) * cols];
                            let tol = tolerance(x_row, w_row, int8);
                            let (got, want) = (y[i * rows + j], expected[i * rows + j]);
                            assert!(
                                (got - want).abs() <= tol,
                                "{kernel} {name} {isa:?} {rows}x{cols} m={m} y[{i}][{j}]: got {got}, \
                                 want {want}, err {} exceeds {tol}",
                                (got - want).abs()
                            );
                        }
                    }
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn packed_kernels_match_reference(
        rows in 1usize..=70,
        cols in 1usize..=300,
        // Past VNNI_GEMM_MIN_ROWS, so the repacked-panel kernel runs too.
        m in prop_oneof![1usize..=9, 14usize..=40, 120usize..=136],
        seed in any::<u64>(),
        with_bias in any::<bool>(),
    ) {
        check_all_formats(rows, cols, m, seed, with_bias);
    }

    #[test]
    fn f32_kernels_match_reference(
        n in 1usize..=70,
        k in 1usize..=300,
        m in 1usize..=9,
        seed in any::<u64>(),
    ) {
        let mut rng = Rng::new(seed);
        let w = rng.normals(n * k, 0.1);
        let x = rng.normals(m * k, 1.0);
        let bias = rng.normals(n, 0.1);
        let mut expected = vec![0.0; m * n];
        matmul_f32_naive(&x, m, &w, n, k, Some(&bias), &mut expected).unwrap();
        for isa in isas() {
            let mut y = vec![f32::NAN; m * n];
            matmul_f32_with(isa, &x, m, &w, n, k, Some(&bias), &mut y).unwrap();
            for i in 0..m {
                for j in 0..n {
                    let tol = tolerance(&x[i * k..(i + 1) * k], &w[j * k..(j + 1) * k], false);
                    let (got, want) = (y[i * n + j], expected[i * n + j]);
                    prop_assert!((got - want).abs() <= tol,
                        "{isa:?} {n}x{k} m={m} y[{i}][{j}]: got {got}, want {want}");
                }
            }
        }
    }
}

/// Shapes larger than one parallel task and one super-panel, so threading and panel edges run.
#[test]
fn large_shapes_match_reference() {
    for (rows, cols, m) in [(777, 200, 1), (777, 200, 13), (1030, 96, 2), (45, 384, 150)] {
        check_all_formats(rows, cols, m, rows as u64, true);
    }
}

#[test]
fn operand_lengths_are_checked() {
    let mut rng = Rng::new(1);
    let w = rng.normals(4 * 64, 0.1);
    let q =
        whittle_kernels::UniformQuantizer::symmetric(4, whittle_kernels::Granularity::Group(32))
            .unwrap()
            .quantize(&w, 4, 64)
            .unwrap();
    let packed = whittle_kernels::PackedMatrix::pack(&q);
    let x = vec![0.0; 64];
    let mut y = vec![0.0; 4];
    assert!(whittle_kernels::matmul(&x[..63], 1, packed.as_ref(), None, &mut y).is_err());
    assert!(whittle_kernels::matmul(&x, 1, packed.as_ref(), None, &mut y[..3]).is_err());
    assert!(whittle_kernels::matmul(&x, 1, packed.as_ref(), Some(&[0.0; 5]), &mut y).is_err());
    assert!(whittle_kernels::matmul(&x, 0, packed.as_ref(), None, &mut []).is_err());
    assert!(whittle_kernels::matmul_f32(&x, 1, &w, 4, 64, None, &mut y).is_ok());
    assert!(whittle_kernels::matmul_f32(&x, 1, &w[1..], 4, 64, None, &mut y).is_err());
}

/// Batched decoding and encoding stack rows of several inputs into one product and must give
/// the results of one input at a time, bit for bit. Below `VNNI_GEMM_MIN_ROWS` every row of
/// `matmul_q8` equals the matrix-vector product of that row alone (the decoder: one row per
/// sequence); from it on (the repacked-panel kernel, the encoder) a row does not depend on how
/// many other rows share the product.
#[test]
fn product_rows_do_not_depend_on_the_batch() {
    // 150 weight rows: two full weight panels and a tail that is not a whole tile.
    let (rows, cols) = (150, 384);
    let mut rng = Rng::new(17);
    let w = rng.normals(rows * cols, 0.1);
    let bias = rng.normals(rows, 0.1);
    let big = 2 * VNNI_GEMM_MIN_ROWS + 3;
    let x = rng.normals(big * cols, 1.0);
    let mut failures = Vec::new();
    for granularity in GRANULARITIES {
        for (name, make) in all_formats(granularity) {
            let (_, packed) = make(&w, rows, cols);
            let view = packed.as_ref();
            for isa in isas() {
                let product = |m: usize| {
                    let mut y = vec![f32::NAN; m * rows];
                    matmul_q8_with(isa, &x[..m * cols], m, view, Some(&bias), &mut y).unwrap();
                    y
                };
                let single: Vec<f32> = x
                    .chunks_exact(cols)
                    .take(VNNI_GEMM_MIN_ROWS)
                    .flat_map(|row| {
                        let mut y = vec![f32::NAN; rows];
                        matmul_q8_with(isa, row, 1, view, Some(&bias), &mut y).unwrap();
                        y
                    })
                    .collect();
                // (rows multiplied together, what their first rows must equal)
                let cases = [
                    (2, &single),
                    (5, &single),
                    (16, &single),
                    (64, &single),
                    (VNNI_GEMM_MIN_ROWS - 1, &single),
                    (big, &product(VNNI_GEMM_MIN_ROWS)),
                ];
                for (m, expected) in cases {
                    let got = product(m);
                    let n = m.min(expected.len() / rows) * rows;
                    let differing = got[..n]
                        .iter()
                        .zip(&expected[..n])
                        .filter(|(a, b)| a.to_bits() != b.to_bits())
                        .count();
                    if differing > 0 {
                        failures.push(format!("{name} {isa:?} m={m}: {differing}/{n} differ"));
                    }
                }
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} products differ from the same rows multiplied alone:\n{}",
        failures.len(),
        failures.join("\n")
    );
}
