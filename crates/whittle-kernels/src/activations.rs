//! In-place row softmax and GELU for inference, vectorized and split across threads.
//!
//! Transformer encoders spend a large share of their time outside the matrix products: the
//! attention softmax takes one `exp` per score (Whisper's encoder: 6 heads x 1500 x 1500 per
//! layer) and the MLP one `erf` per hidden unit. Scalar libm calls on one core make these as
//! slow as the products; here both run 8 lanes wide with polynomial approximations:
//!
//! * `exp(x) = 2^n * p(r)` with `n = round(x / ln 2)` and `r = x - n ln 2` (Cody-Waite split
//!   of `ln 2`), `p` the degree-6 Taylor polynomial of `e^r` on `|r| <= ln 2 / 2`
//!   (truncation below 2e-8 relative); inputs below [`EXP_UNDERFLOW`] give 0.
//! * `erf(z)`: the Maclaurin series `2/sqrt(pi) sum (-1)^n z^(2n+1) / (n! (2n+1))` to `n = 10`
//!   for `|z| < ERF_SERIES_LIMIT` (truncation below 2e-9), else Abramowitz & Stegun 7.1.26,
//!   `1 - (a1 t + ... + a5 t^5) e^(-z^2)` with `t = 1 / (1 + p z)` (absolute error <= 1.5e-7).
//! * GELU in candle's (and PyTorch's) exact form `0.5 x (1 + erf(x / sqrt 2))`.
//!
//! The portable versions evaluate the same formulas one value at a time; tests compare both
//! against f64 references. Slices shorter than 65536 values stay on one thread.

use rayon::prelude::*;

use crate::kernels::Isa;

/// Values per call below which the work stays on the calling thread.
const MIN_PARALLEL_VALUES: usize = 1 << 16;

/// Inputs of `exp` below this give exactly 0 (`e^-87.3` is the smallest normal f32).
pub const EXP_UNDERFLOW: f32 = -87.336_55;

/// Inputs of `exp` are clamped to this (`2^127 e^r` stays finite).
pub(crate) const EXP_OVERFLOW: f32 = 88.3;

/// Below this `|z|` the erf series is used; above it, A&S 7.1.26.
pub(crate) const ERF_SERIES_LIMIT: f32 = 0.9;

/// `ln 2` split so that `n * LN2_HI` is exact for `|n| < 2^10` (Cody & Waite).
pub(crate) const LN2_HI: f32 = 0.693_359_4;
pub(crate) const LN2_LO: f32 = -2.121_944_4e-4;

/// `1 / k!` for the exp polynomial, `k = 0..=6`.
pub(crate) const EXP_COEFFS: [f32; 7] = [
    1.0,
    1.0,
    0.5,
    1.0 / 6.0,
    1.0 / 24.0,
    1.0 / 120.0,
    1.0 / 720.0,
];

/// `2/sqrt(pi) (-1)^n / (n! (2n+1))`, `n = 0..=10`: erf's Maclaurin coefficients in `z^2`.
pub(crate) const ERF_SERIES: [f32; 11] = {
    let mut c = [0.0f32; 11];
    let mut n = 0;
    let mut factorial = 1.0f64;
    while n < 11 {
        if n > 0 {
            factorial *= n as f64;
        }
        let sign = if n % 2 == 0 { 1.0 } else { -1.0 };
        c[n] = (sign * std::f64::consts::FRAC_2_SQRT_PI / (factorial * (2 * n + 1) as f64)) as f32;
        n += 1;
    }
    c
};

/// Abramowitz & Stegun 7.1.26: `p`, then `a1..a5`.
pub(crate) const AS_P: f32 = 0.327_591_1;
pub(crate) const AS_A: [f32; 5] = [
    0.254_829_6,
    -0.284_496_72,
    1.421_413_8,
    -1.453_152_1,
    1.061_405_4,
];

/// Portable `exp` with the vector version's formula.
pub fn exp_approx(x: f32) -> f32 {
    if x.is_nan() {
        return x;
    }
    if x < EXP_UNDERFLOW {
        return 0.0;
    }
    let x = x.min(EXP_OVERFLOW);
    let n = (x * std::f32::consts::LOG2_E).round_ties_even();
    let r = (-n).mul_add(LN2_LO, (-n).mul_add(LN2_HI, x));
    let p = EXP_COEFFS
        .iter()
        .rev()
        .fold(0.0f32, |acc, &c| acc.mul_add(r, c));
    p * 2f32.powi(n as i32)
}

/// Portable `erf` with the vector version's formula.
pub fn erf_approx(z: f32) -> f32 {
    let a = z.abs();
    if a < ERF_SERIES_LIMIT {
        let z2 = z * z;
        return z * ERF_SERIES
            .iter()
            .rev()
            .fold(0.0f32, |acc, &c| acc.mul_add(z2, c));
    }
    let t = 1.0 / AS_P.mul_add(a, 1.0);
    let poly = AS_A.iter().rev().fold(0.0f32, |acc, &c| acc.mul_add(t, c)) * t;
    let e = (-poly).mul_add(exp_approx(-(a * a)), 1.0);
    e.copysign(z)
}

/// Portable GELU, `0.5 x (1 + erf(x / sqrt 2))`.
pub fn gelu_approx(x: f32) -> f32 {
    (erf_approx(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * x
}

/// Softmax of every `row_len`-long row of `x`, in place, on the best instruction set.
pub fn softmax_rows(x: &mut [f32], row_len: usize) {
    softmax_rows_with(Isa::detect(), x, row_len)
}

/// [`softmax_rows`] on a chosen instruction set (falls back to portable code when `isa` is not
/// available). A trailing partial row is treated as a row of its own.
pub fn softmax_rows_with(isa: Isa, x: &mut [f32], row_len: usize) {
    if row_len == 0 {
        return;
    }
    let isa = if isa.is_available() { isa } else { Isa::Scalar };
    let run = |rows: &mut [f32]| {
        for row in rows.chunks_mut(row_len) {
            match isa {
                Isa::Avx2Fma | Isa::Avx512Vnni => crate::kernels::avx2_softmax_row(row),
                Isa::Scalar => softmax_row_scalar(row),
            }
        }
    };
    split_rows(x, row_len, run);
}

/// GELU of every value of `x`, in place, on the best instruction set.
pub fn gelu(x: &mut [f32]) {
    gelu_with(Isa::detect(), x)
}

/// [`gelu`] on a chosen instruction set (portable code when `isa` is not available).
pub fn gelu_with(isa: Isa, x: &mut [f32]) {
    let isa = if isa.is_available() { isa } else { Isa::Scalar };
    let run = |values: &mut [f32]| match isa {
        Isa::Avx2Fma | Isa::Avx512Vnni => crate::kernels::avx2_gelu(values),
        Isa::Scalar => values.iter_mut().for_each(|v| *v = gelu_approx(*v)),
    };
    split_rows(x, 64, run);
}

/// Runs `f` over `x` in chunks of whole `row_len` rows: one chunk when small, else about four
/// per thread.
fn split_rows(x: &mut [f32], row_len: usize, f: impl Fn(&mut [f32]) + Sync + Send) {
    let threads = rayon::current_num_threads().max(1);
    if x.len() < MIN_PARALLEL_VALUES || threads == 1 {
        f(x);
        return;
    }
    let rows = x.len().div_ceil(row_len);
    let chunk = rows.div_ceil(threads * 4) * row_len;
    x.par_chunks_mut(chunk).for_each(f);
}

fn softmax_row_scalar(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = exp_approx(*v - max);
        sum += *v;
    }
    let inv = 1.0 / sum;
    row.iter_mut().for_each(|v| *v *= inv);
}

/// Constants the AVX2 versions share with the portable ones.
pub(crate) mod consts {
    pub(crate) use super::{
        AS_A, AS_P, ERF_SERIES, ERF_SERIES_LIMIT, EXP_COEFFS, EXP_OVERFLOW, EXP_UNDERFLOW, LN2_HI,
        LN2_LO,
    };
}
