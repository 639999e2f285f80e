//! Ternary projections (cosine-optimal against TWN and brute force) and the sparse ternary
//! layout's refusal of crafted bytes.

mod common;

use common::Rng;
use whittle_kernels::ternary::{
    cosine, cosine_projection, encode_sparse, twn_projection, SparseTernary,
};
use whittle_kernels::{Granularity, Layout, PackedFormat, PackedMatrixRef, QuantFormat, Scheme};

/// The best cosine over all 3^n ternary vectors.
fn brute_force_cosine(w: &[f32]) -> f64 {
    let n = w.len();
    let mut best = 0.0f64;
    let mut t = vec![0.0f32; n];
    for code in 0..3usize.pow(n as u32) {
        let mut c = code;
        for v in t.iter_mut() {
            *v = (c % 3) as f32 - 1.0;
            c /= 3;
        }
        best = best.max(cosine(w, &t));
    }
    best
}

#[test]
fn cosine_projection_matches_brute_force_on_small_rows() {
    let mut rng = Rng::new(11);
    let (mut order, mut t) = (Vec::new(), Vec::new());
    for trial in 0..200 {
        let n = 1 + trial % 8;
        // Mix of scales, heavy tails and exact ties.
        let mut w: Vec<f32> = (0..n)
            .map(|_| rng.normal() * (1.0 + 3.0 * rng.uniform()))
            .collect();
        if trial % 5 == 0 && n > 1 {
            w[1] = -w[0];
        }
        t.resize(n, 0.0);
        let p = cosine_projection(&w, n, &mut order, &mut t);
        let got = cosine(&w, &t);
        let best = brute_force_cosine(&w);
        assert!(
            (got - best).abs() < 1e-9,
            "trial {trial}: {got} vs brute force {best} for {w:?}"
        );
        assert_eq!(p.nonzeros, t.iter().filter(|v| **v != 0.0).count());
        // The scale is the least-squares one: <w, t> / <t, t>.
        let dot: f64 = w.iter().zip(&t).map(|(a, b)| f64::from(a * b)).sum();
        assert!((f64::from(p.alpha) - dot / p.nonzeros as f64).abs() < 1e-5);
    }
}

#[test]
fn cosine_projection_beats_twn_on_random_rows() {
    let mut rng = Rng::new(5);
    let (mut order, mut t_cos, mut t_twn) = (Vec::new(), Vec::new(), Vec::new());
    let (mut wins, mut total_gain) = (0, 0.0);
    for trial in 0..100 {
        let n = 384;
        // Gaussian rows, and Laplace-like heavy-tailed rows (closer to trained weights).
        let w: Vec<f32> = (0..n)
            .map(|_| {
                let g = rng.normal();
                if trial % 2 == 0 {
                    g
                } else {
                    g * g.abs() * rng.uniform().max(0.05)
                }
            })
            .collect();
        t_cos.resize(n, 0.0);
        t_twn.resize(n, 0.0);
        cosine_projection(&w, n, &mut order, &mut t_cos);
        twn_projection(&w, &mut t_twn);
        let (c, b) = (cosine(&w, &t_cos), cosine(&w, &t_twn));
        assert!(c >= b - 1e-12, "trial {trial}: cosine {c} below TWN's {b}");
        wins += usize::from(c > b + 1e-9);
        total_gain += c - b;
    }
    assert!(
        wins > 50,
        "cosine-optimal strictly better on only {wins} of 100 rows"
    );
    println!("mean cosine gain over TWN: {:.4}", total_gain / 100.0);
}

#[test]
fn cosine_projection_respects_the_nonzero_limit() {
    let mut rng = Rng::new(9);
    let w = rng.normals(256, 1.0);
    let (mut order, mut t) = (Vec::new(), vec![0.0; 256]);
    let free = cosine_projection(&w, 256, &mut order, &mut t);
    for limit in [0, 1, 10, free.nonzeros / 2, free.nonzeros, 256] {
        let p = cosine_projection(&w, limit, &mut order, &mut t);
        assert!(p.nonzeros <= limit);
        assert_eq!(p.nonzeros, limit.min(free.nonzeros), "limit {limit}");
    }
}

fn sparse_format() -> PackedFormat {
    PackedFormat::new(
        QuantFormat {
            scheme: Scheme::Ternary,
            granularity: Granularity::PerRow,
        },
        Layout::TernarySparse,
    )
    .unwrap()
}

#[test]
fn sparse_layout_refuses_crafted_bytes() {
    let (rows, cols) = (3usize, 40usize);
    let codes: Vec<u8> = (0..rows * cols)
        .map(|i| [1u8, 0, 2, 1, 1, 2][i % 6])
        .collect();
    let good = encode_sparse(&codes, rows, cols).unwrap();
    assert!(SparseTernary::new(&good, rows, cols).is_ok());
    let scales = vec![half::f16::ONE; rows];
    let view = |codes: &[u8]| {
        PackedMatrixRef {
            rows,
            cols,
            format: sparse_format(),
            codes,
            scales: &scales,
            zero_points: None,
        }
        .validate()
    };
    assert!(view(&good).is_ok());
    let table = 4 * 2;
    let mut cases: Vec<(&str, Vec<u8>)> = Vec::new();
    cases.push(("truncated table", good[..table - 1].to_vec()));
    cases.push(("truncated payload", good[..good.len() - 1].to_vec()));
    let mut extra = good.clone();
    extra.push(0);
    cases.push(("trailing byte", extra));
    let mut first = good.clone();
    first[0] = 1;
    cases.push(("first offset", first));
    let mut past = good.clone();
    past[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
    cases.push(("payload length past the end", past));
    // A mask bit past column 40 (the second mask covers columns 32..40).
    let mut tail = good.clone();
    tail[table + 4 + 3] |= 0x80;
    cases.push(("mask bit past the last column", tail));
    // Row 0 claims 32 nonzeros in its first block: its sign bytes swallow the next row.
    let mut nonzeros = good.clone();
    nonzeros[table..table + 4].copy_from_slice(&u32::MAX.to_le_bytes());
    cases.push(("mask disagrees with the sign bytes", nonzeros));
    let row0_nonzeros = codes[..cols].iter().filter(|&&c| c != 1).count();
    let row0_end = 8 + row0_nonzeros.div_ceil(8);
    let mut padding = good.clone();
    assert_ne!(row0_nonzeros % 8, 0, "the fixture needs a padded sign byte");
    padding[table + row0_end - 1] |= 0x80;
    cases.push(("sign padding bits", padding));
    for (what, bytes) in cases {
        let err = view(&bytes).expect_err(what);
        assert!(err.to_string().contains("sparse ternary"), "{what}: {err}");
    }
}

#[test]
fn sparse_layout_size_follows_the_zeros() {
    let (rows, cols) = (64usize, 384usize);
    let mut rng = Rng::new(3);
    for zero_fraction in [0.0f32, 0.5, 0.9] {
        let codes: Vec<u8> = (0..rows * cols)
            .map(|_| {
                if rng.uniform() < zero_fraction {
                    1
                } else if rng.uniform() < 0.5 {
                    0
                } else {
                    2
                }
            })
            .collect();
        let bytes = encode_sparse(&codes, rows, cols).unwrap();
        let bits = bytes.len() as f64 * 8.0 / (rows * cols) as f64;
        let expected = 1.0 + (1.0 - f64::from(zero_fraction));
        assert!(
            (bits - expected).abs() < 0.03,
            "{zero_fraction}: {bits} bits per weight"
        );
    }
}

/// Very sparse ternary matrices (empty blocks and rows, tails, per-row and group scales) through
/// every kernel path against the naive reference: the matrix-vector rows read the masks and
/// sign bits directly on AVX2 + BMI2, the other paths decode them.
#[test]
fn sparse_kernels_match_the_reference_at_high_sparsity() {
    use whittle_kernels::kernels::reference::matmul_naive;
    use whittle_kernels::{matmul_q8_with, matmul_with, PackedMatrix, QuantizedMatrix};
    let mut rng = Rng::new(21);
    for &(rows, cols, zero_fraction) in &[
        (37usize, 100usize, 0.9f32),
        (64, 384, 0.97),
        (20, 1536, 0.6),
        (5, 31, 1.0),
    ] {
        for granularity in [Granularity::PerRow, Granularity::Group(64)] {
            let codes: Vec<u8> = (0..rows * cols)
                .map(|i| {
                    // Row 3 entirely zero; otherwise random at the zero fraction.
                    if i / cols == 3 || rng.uniform() < zero_fraction {
                        1
                    } else if rng.uniform() < 0.5 {
                        0
                    } else {
                        2
                    }
                })
                .collect();
            let scale_count = granularity.scale_count(rows, cols).unwrap();
            let scales = (0..scale_count)
                .map(|i| half::f16::from_f32(0.01 + 0.001 * (i % 17) as f32))
                .collect();
            let format = QuantFormat {
                scheme: Scheme::Ternary,
                granularity,
            };
            let q = QuantizedMatrix::from_parts(rows, cols, format, codes, scales, None).unwrap();
            let packed = PackedMatrix::pack_with(&q, Layout::TernarySparse).unwrap();
            assert_eq!(packed.unpack().codes(), q.codes());
            for m in [1usize, 2, 5] {
                let x = rng.normals(m * cols, 1.0);
                let mut expected = vec![0f32; m * rows];
                matmul_naive(&x, m, packed.as_ref(), None, &mut expected).unwrap();
                for isa in common::isas(&common::ALL_ISAS) {
                    for q8 in [false, true] {
                        let mut y = vec![0f32; m * rows];
                        if q8 {
                            matmul_q8_with(isa, &x, m, packed.as_ref(), None, &mut y).unwrap();
                        } else {
                            matmul_with(isa, &x, m, packed.as_ref(), None, &mut y).unwrap();
                        }
                        let dense = packed.dequantize();
                        for (i, (got, want)) in y.iter().zip(&expected).enumerate() {
                            let (r, j) = (i / rows, i % rows);
                            let x_row = &x[r * cols..(r + 1) * cols];
                            let w_row = &dense[j * cols..(j + 1) * cols];
                            // int8 activation rounding: half a step per 32-block times sum |w|.
                            let mut bound = 1e-4
                                * x_row
                                    .iter()
                                    .zip(w_row)
                                    .map(|(a, b)| (a * b).abs())
                                    .sum::<f32>()
                                + 1e-5;
                            for (xb, wb) in x_row.chunks(32).zip(w_row.chunks(32)) {
                                let step = xb.iter().fold(0f32, |a, v| a.max(v.abs())) / 127.0;
                                bound +=
                                    step / 2.0 * wb.iter().map(|v| v.abs()).sum::<f32>() * 1.001;
                            }
                            assert!(
                                (got - want).abs() <= bound,
                                "{rows}x{cols} zeros {zero_fraction} {granularity:?} m={m} {isa:?} q8={q8}: y[{i}] = {got}, reference {want}"
                            );
                        }
                    }
                }
            }
        }
    }
}
