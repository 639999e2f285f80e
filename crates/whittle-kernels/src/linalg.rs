//! Small dense linear algebra for GPTQ: Cholesky factorisation and triangular inversion.
//!
//! Matrices are row-major `n x n` `f64` slices. These are the textbook algorithms (Golub & Van
//! Loan, *Matrix Computations*, 4.2 and 3.1), written with the inner loops over contiguous rows.

use crate::error::{expect_len, KernelError, Result};

/// In-place lower Cholesky factorisation `A = L L^T`; the strict upper triangle is zeroed.
pub fn cholesky_lower(a: &mut [f64], n: usize) -> Result<()> {
    expect_len("cholesky input", n * n, a.len())?;
    for j in 0..n {
        let (done, rest) = a.split_at_mut(j * n);
        let row_j = &mut rest[..n];
        // Row j of L left of the diagonal: L[j][k] = (A[j][k] - L[j][..k] . L[k][..k]) / L[k][k].
        for k in 0..j {
            let row_k = &done[k * n..k * n + k + 1];
            let dot: f64 = row_j[..k].iter().zip(&row_k[..k]).map(|(x, y)| x * y).sum();
            row_j[k] = (row_j[k] - dot) / row_k[k];
        }
        let pivot = row_j[j] - row_j[..j].iter().map(|x| x * x).sum::<f64>();
        if !(pivot > 0.0 && pivot.is_finite()) {
            return Err(KernelError::NotPositiveDefinite { column: j, pivot });
        }
        row_j[j] = pivot.sqrt();
        row_j[j + 1..].fill(0.0);
    }
    Ok(())
}

/// Inverse of a lower-triangular matrix with a non-zero diagonal (the result is lower-triangular).
pub fn invert_lower_triangular(l: &[f64], n: usize) -> Result<Vec<f64>> {
    expect_len("triangular input", n * n, l.len())?;
    let mut inv = vec![0.0; n * n];
    // Forward substitution for every column at once: row i of inv from rows < i.
    for i in 0..n {
        let diag = l[i * n + i];
        if diag == 0.0 || !diag.is_finite() {
            return Err(KernelError::NotPositiveDefinite {
                column: i,
                pivot: diag,
            });
        }
        let (done, rest) = inv.split_at_mut(i * n);
        let row_i = &mut rest[..n];
        for k in 0..i {
            let lik = l[i * n + k];
            if lik != 0.0 {
                for (out, &v) in row_i[..=k].iter_mut().zip(&done[k * n..k * n + k + 1]) {
                    *out -= lik * v;
                }
            }
        }
        for v in &mut row_i[..i] {
            *v /= diag;
        }
        row_i[i] = 1.0 / diag;
    }
    Ok(inv)
}

/// Upper Cholesky factor `U` of `H^-1` (so `H^-1 = U^T U`), the matrix GPTQ iterates over.
pub fn inverse_cholesky_upper(h: &[f64], n: usize) -> Result<Vec<f64>> {
    let mut l = h.to_vec();
    cholesky_lower(&mut l, n)?;
    let l_inv = invert_lower_triangular(&l, n)?;
    // H^-1 = L^-T L^-1: entry (i, j) = sum_k Linv[k][i] Linv[k][j], k >= max(i, j).
    let mut h_inv = vec![0.0; n * n];
    for k in 0..n {
        let row = &l_inv[k * n..k * n + k + 1];
        for (i, &a) in row.iter().enumerate() {
            if a != 0.0 {
                for (out, &b) in h_inv[i * n..i * n + k + 1].iter_mut().zip(row) {
                    *out += a * b;
                }
            }
        }
    }
    cholesky_lower(&mut h_inv, n)?;
    // Transpose L into U.
    let mut u = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..=i {
            u[j * n + i] = h_inv[i * n + j];
        }
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matmul(a: &[f64], b: &[f64], n: usize) -> Vec<f64> {
        let mut c = vec![0.0; n * n];
        for i in 0..n {
            for k in 0..n {
                for j in 0..n {
                    c[i * n + j] += a[i * n + k] * b[k * n + j];
                }
            }
        }
        c
    }

    fn transpose(a: &[f64], n: usize) -> Vec<f64> {
        let mut t = vec![0.0; n * n];
        for i in 0..n {
            for j in 0..n {
                t[j * n + i] = a[i * n + j];
            }
        }
        t
    }

    /// A = B B^T + n I with B pseudo-random, so A is symmetric positive definite.
    fn spd(n: usize) -> Vec<f64> {
        let b: Vec<f64> = (0..n * n)
            .map(|i| ((i * 7919 + 13) % 101) as f64 / 50.0 - 1.0)
            .collect();
        let mut a = matmul(&b, &transpose(&b, n), n);
        for i in 0..n {
            a[i * n + i] += n as f64;
        }
        a
    }

    fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max)
    }

    #[test]
    fn cholesky_reconstructs() {
        for n in [1, 2, 5, 17] {
            let a = spd(n);
            let mut l = a.clone();
            cholesky_lower(&mut l, n).unwrap();
            let err = max_abs_diff(&matmul(&l, &transpose(&l, n), n), &a);
            assert!(err < 1e-9, "n={n}: max_err {err}");
        }
    }

    #[test]
    fn triangular_inverse_is_inverse() {
        let n = 9;
        let mut l = spd(n);
        cholesky_lower(&mut l, n).unwrap();
        let inv = invert_lower_triangular(&l, n).unwrap();
        let mut eye = vec![0.0; n * n];
        for i in 0..n {
            eye[i * n + i] = 1.0;
        }
        let err = max_abs_diff(&matmul(&l, &inv, n), &eye);
        assert!(err < 1e-12, "max_err {err}");
    }

    #[test]
    fn inverse_cholesky_upper_factors_the_inverse() {
        let n = 12;
        let a = spd(n);
        let u = inverse_cholesky_upper(&a, n).unwrap();
        for i in 0..n {
            for j in 0..i {
                assert_eq!(u[i * n + j], 0.0, "U not upper at ({i},{j})");
            }
        }
        // (U^T U) A == I
        let prod = matmul(&matmul(&transpose(&u, n), &u, n), &a, n);
        let mut eye = vec![0.0; n * n];
        for i in 0..n {
            eye[i * n + i] = 1.0;
        }
        let err = max_abs_diff(&prod, &eye);
        assert!(err < 1e-9, "max_err {err}");
    }

    #[test]
    fn rejects_indefinite() {
        let mut a = vec![1.0, 2.0, 2.0, 1.0];
        assert!(matches!(
            cholesky_lower(&mut a, 2),
            Err(KernelError::NotPositiveDefinite { column: 1, .. })
        ));
    }
}
