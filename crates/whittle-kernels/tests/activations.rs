//! Softmax and GELU approximations against f64 references, on every instruction set, with
//! lengths that leave vector tails.

mod common;

use common::Rng;
use proptest::prelude::*;
use whittle_kernels::activations::{
    erf_approx, exp_approx, gelu_with, softmax_rows_with, EXP_UNDERFLOW,
};
use whittle_kernels::Isa;

/// Relative error of the exp approximation (measured below 2.5e-7).
const EXP_REL_TOL: f64 = 4e-7;
/// Absolute error of the erf approximation (A&S 7.1.26 is 1.5e-7, plus f32 rounding).
const ERF_ABS_TOL: f64 = 3e-7;
/// GELU error: `0.5 |x| ERF_ABS_TOL` plus a few f32 roundings of the result.
const GELU_REL_TOL: f64 = 5e-7;

/// The activations have no VNNI version.
fn isas() -> Vec<Isa> {
    common::isas(&[Isa::Scalar, Isa::Avx2Fma])
}

/// erf by its Maclaurin series in f64 (converges everywhere; 80 terms are exact to ~1e-13 on
/// |z| <= 4, where cancellation costs at most 1e4 x f64 epsilon).
fn erf_f64(z: f64) -> f64 {
    if z.abs() > 4.0 {
        return z.signum();
    }
    let mut term = z;
    let mut sum = z;
    for n in 1..80 {
        term *= -z * z / n as f64;
        sum += term / (2 * n + 1) as f64;
    }
    sum * std::f64::consts::FRAC_2_SQRT_PI
}

fn gelu_f64(x: f64) -> f64 {
    0.5 * x * (1.0 + erf_f64(x / std::f64::consts::SQRT_2))
}

#[test]
fn exp_matches_f64_over_its_range() {
    let mut x = -87.0f32;
    while x < 88.0 {
        let got = f64::from(exp_approx(x));
        let want = f64::from(x).exp();
        assert!(
            ((got - want) / want).abs() < EXP_REL_TOL,
            "exp({x}) = {got}, want {want}"
        );
        x += 0.0137;
    }
    assert_eq!(exp_approx(EXP_UNDERFLOW - 1.0), 0.0);
    assert_eq!(exp_approx(f32::NEG_INFINITY), 0.0);
}

#[test]
fn erf_matches_f64_reference() {
    let mut z = -5.0f32;
    while z < 5.0 {
        let got = f64::from(erf_approx(z));
        let want = erf_f64(f64::from(z));
        assert!(
            (got - want).abs() < ERF_ABS_TOL,
            "erf({z}) = {got}, want {want}"
        );
        z += 0.00113;
    }
}

fn check_gelu(values: &[f32]) {
    for isa in isas() {
        let mut y = values.to_vec();
        gelu_with(isa, &mut y);
        for (&x, &g) in values.iter().zip(&y) {
            let want = gelu_f64(f64::from(x));
            let tol = GELU_REL_TOL * f64::from(x).abs().max(1e-3);
            assert!(
                (f64::from(g) - want).abs() <= tol,
                "{isa:?} gelu({x}) = {g}, want {want}"
            );
        }
    }
}

fn check_softmax(values: &[f32], row_len: usize) {
    for isa in isas() {
        let mut y = values.to_vec();
        softmax_rows_with(isa, &mut y, row_len);
        for (row_in, row_out) in values.chunks(row_len).zip(y.chunks(row_len)) {
            let max = row_in.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
            let sum: f64 = row_in.iter().map(|&v| (f64::from(v) - max).exp()).sum();
            let total: f64 = row_out.iter().map(|&v| f64::from(v)).sum();
            assert!((total - 1.0).abs() < 1e-5, "{isa:?} row sums to {total}");
            // exp's error plus the worst-case rounding of an f32 sum of `row_len` terms.
            let rel_tol = EXP_REL_TOL + row_len as f64 * f64::from(f32::EPSILON);
            for (&x, &p) in row_in.iter().zip(row_out) {
                let want = (f64::from(x) - max).exp() / sum;
                assert!(
                    (f64::from(p) - want).abs() <= rel_tol * want + 1e-12,
                    "{isa:?} softmax: got {p}, want {want}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn gelu_matches_reference(len in 0usize..200, scale in 0.01f32..6.0, seed in any::<u64>()) {
        check_gelu(&Rng::new(seed).normals(len, scale));
    }

    #[test]
    fn softmax_matches_reference(
        rows in 1usize..6,
        row_len in 1usize..140,
        scale in 0.1f32..30.0,
        seed in any::<u64>(),
    ) {
        check_softmax(&Rng::new(seed).normals(rows * row_len, scale), row_len);
    }
}

/// Large enough to run on several threads, with a partial vector at the end of every row.
#[test]
fn large_inputs_split_across_threads() {
    let mut rng = Rng::new(3);
    check_gelu(&rng.normals(100_003, 3.0));
    check_softmax(&rng.normals(300 * 1501, 8.0), 1501);
}

#[test]
fn masked_scores_get_zero_weight() {
    let mut row = vec![0.5f32, f32::NEG_INFINITY, 1.5, f32::NEG_INFINITY, -2.0];
    for isa in isas() {
        let mut y = row.clone();
        softmax_rows_with(isa, &mut y, 5);
        assert_eq!((y[1], y[3]), (0.0, 0.0), "{isa:?}");
    }
    row.truncate(1);
    softmax_rows_with(Isa::Scalar, &mut row, 1);
    assert_eq!(row, [1.0]);
}
