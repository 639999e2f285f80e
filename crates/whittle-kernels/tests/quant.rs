//! Quantizer accuracy limits, packing round trips, ternary values, GPTQ vs round-to-nearest and
//! validation of crafted (untrusted) packed views.

mod common;

use common::{all_formats, Rng, GRANULARITIES};
use half::f16;
use proptest::prelude::*;
use whittle_kernels::{
    Gptq, Granularity, HessianAccumulator, KernelError, Layout, PackedFormat, PackedMatrix,
    PackedMatrixRef, QuantFormat, ScaleSearch, Scheme, TernaryQuantizer, UniformQuantizer,
    ZeroPoint,
};

/// Relative RMSE ||W - Q|| / ||W|| limits on Gaussian weights, symmetric abs-max, group 64
/// (measured 0.0059, 0.024, 0.048, 0.096, 0.194, 0.397; limits leave ~10% headroom).
const MAX_REL_RMSE_W8_G64: f64 = 0.0065;
const MAX_REL_RMSE_W6_G64: f64 = 0.026;
const MAX_REL_RMSE_W5_G64: f64 = 0.052;
const MAX_REL_RMSE_W4_G64: f64 = 0.105;
const MAX_REL_RMSE_W3_G64: f64 = 0.21;
const MAX_REL_RMSE_W2_G64: f64 = 0.43;
/// Ternary (TWN) per group of 64 on Gaussian weights (measured 0.43).
const MAX_REL_RMSE_TERNARY_G64: f64 = 0.46;

fn rel_rmse(w: &[f32], q: &[f32]) -> f64 {
    let err: f64 = w.iter().zip(q).map(|(a, b)| f64::from(a - b).powi(2)).sum();
    let norm: f64 = w.iter().map(|a| f64::from(*a).powi(2)).sum();
    (err / norm).sqrt()
}

#[test]
fn round_trip_error_limits() {
    let (rows, cols) = (64, 512);
    let w = Rng::new(42).normals(rows * cols, 0.02);
    let limits = [
        (8, MAX_REL_RMSE_W8_G64),
        (6, MAX_REL_RMSE_W6_G64),
        (5, MAX_REL_RMSE_W5_G64),
        (4, MAX_REL_RMSE_W4_G64),
        (3, MAX_REL_RMSE_W3_G64),
        (2, MAX_REL_RMSE_W2_G64),
    ];
    for (bits, limit) in limits {
        let q = UniformQuantizer::symmetric(bits, Granularity::Group(64))
            .unwrap()
            .quantize(&w, rows, cols)
            .unwrap();
        let err = rel_rmse(&w, &PackedMatrix::pack(&q).dequantize());
        println!("w{bits} g64 rel_rmse {err:.4}");
        assert!(err <= limit, "w{bits} g64: rel_rmse {err} exceeds {limit}");
        // Guards against a limit so loose it could not fail.
        assert!(
            err > limit / 4.0,
            "w{bits} g64: rel_rmse {err} suspiciously small"
        );
    }
    let t = TernaryQuantizer {
        granularity: Granularity::Group(64),
    }
    .quantize(&w, rows, cols)
    .unwrap();
    let err = rel_rmse(&w, &t.dequantize());
    println!("ternary g64 rel_rmse {err:.4}");
    assert!(
        err <= MAX_REL_RMSE_TERNARY_G64,
        "ternary: rel_rmse {err} exceeds {MAX_REL_RMSE_TERNARY_G64}"
    );
}

#[test]
fn mse_clipping_never_worse_and_helps_with_outliers() {
    let (rows, cols) = (32, 256);
    let mut rng = Rng::new(3);
    let mut w = rng.normals(rows * cols, 0.02);
    for i in (0..w.len()).step_by(61) {
        w[i] *= 8.0; // heavy-tailed outliers
    }
    for zero_point in [ZeroPoint::Symmetric, ZeroPoint::Asymmetric] {
        for bits in [2, 3, 4] {
            let plain = UniformQuantizer::new(
                bits,
                zero_point,
                Granularity::Group(128),
                ScaleSearch::AbsMax,
            )
            .unwrap();
            let clipped = plain.with_scale_search(ScaleSearch::MSE_DEFAULT);
            let e_plain = rel_rmse(&w, &plain.quantize(&w, rows, cols).unwrap().dequantize());
            let e_clip = rel_rmse(&w, &clipped.quantize(&w, rows, cols).unwrap().dequantize());
            assert!(
                e_clip <= e_plain,
                "{zero_point:?} w{bits}: clipped {e_clip} > plain {e_plain}"
            );
            if bits <= 3 {
                assert!(
                    e_clip < 0.97 * e_plain,
                    "{zero_point:?} w{bits}: clipping gained nothing ({e_clip} vs {e_plain})"
                );
            }
        }
    }
}

#[test]
fn ternary_takes_three_values_per_group() {
    let (rows, cols) = (8, 200);
    let w = Rng::new(5).normals(rows * cols, 0.05);
    for granularity in [
        Granularity::PerRow,
        Granularity::Group(32),
        Granularity::Group(64),
    ] {
        let q = TernaryQuantizer { granularity }
            .quantize(&w, rows, cols)
            .unwrap();
        let group = granularity.group_len(cols);
        for layout in [Layout::Bits2, Layout::Trits5, Layout::TernarySparse] {
            let deq = PackedMatrix::pack_with(&q, layout).unwrap().dequantize();
            for (row, (deq_row, w_row)) in deq.chunks(cols).zip(w.chunks(cols)).enumerate() {
                for (g, (values, orig)) in
                    deq_row.chunks(group).zip(w_row.chunks(group)).enumerate()
                {
                    let alpha = q.group_params(row, g).0;
                    assert!(alpha > 0.0);
                    let mut seen = [false; 3];
                    for &v in values {
                        let slot = [-alpha, 0.0, alpha].iter().position(|&a| a == v);
                        let slot = slot.unwrap_or_else(|| panic!("{granularity:?} {layout:?}: value {v} not in {{-{alpha}, 0, {alpha}}}"));
                        seen[slot] = true;
                    }
                    if values.len() >= 32 {
                        assert!(
                            seen.iter().all(|&s| s),
                            "row {row} group {g}: not all three levels used"
                        );
                    }
                    // TWN closed form: alpha is the mean magnitude above 0.7 * mean|W|.
                    let delta = 0.7 * orig.iter().map(|v| v.abs()).sum::<f32>() / orig.len() as f32;
                    let big: Vec<f32> = orig
                        .iter()
                        .map(|v| v.abs())
                        .filter(|&v| v > delta)
                        .collect();
                    let expected = big.iter().sum::<f32>() / big.len() as f32;
                    assert!(
                        (alpha - expected).abs() <= expected * 1e-3,
                        "alpha {alpha} vs {expected}"
                    );
                }
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn pack_unpack_round_trip(rows in 1usize..=12, cols in 1usize..=300, seed in any::<u64>()) {
        let w = Rng::new(seed).normals(rows * cols, 0.3);
        for granularity in GRANULARITIES {
            for (name, make) in all_formats(granularity) {
                let (q, packed) = make(&w, rows, cols);
                let unpacked = packed.unpack();
                prop_assert_eq!(unpacked.codes(), q.codes(), "{}: codes differ", name);
                prop_assert_eq!(packed.dequantize(), q.dequantize(), "{}: dequantized differ", name);
                let stored = packed.codes().len() + 2 * packed.scales().len()
                    + packed.zero_points().map_or(0, <[u8]>::len);
                prop_assert_eq!(packed.stored_bytes(), stored, "{}: byte accounting", name);
                match packed.format().total_bytes(rows, cols) {
                    Some(bytes) => prop_assert_eq!(bytes, stored, "{}: byte accounting", name),
                    // The sparse layout's size depends on the codes.
                    None => prop_assert!(packed.format().layout.is_sparse(), "{}", name),
                }
            }
        }
    }
}

/// Inputs with strongly correlated features (a low-rank mix plus noise), like real activations.
fn correlated_inputs(rng: &mut Rng, samples: usize, cols: usize) -> Vec<f32> {
    let rank = 6;
    let mix = rng.normals(rank * cols, 1.0);
    let mut x = vec![0.0f32; samples * cols];
    for row in x.chunks_mut(cols) {
        let z = rng.normals(rank, 1.0);
        for (c, v) in row.iter_mut().enumerate() {
            *v = (0..rank).map(|r| z[r] * mix[r * cols + c]).sum::<f32>() + 0.1 * rng.normal();
        }
    }
    x
}

fn output_error(x: &[f32], w: &[f32], q: &[f32], cols: usize) -> f64 {
    let rows = w.len() / cols;
    let mut err = 0.0f64;
    for xr in x.chunks(cols) {
        for r in 0..rows {
            let d: f32 = xr
                .iter()
                .zip(&w[r * cols..(r + 1) * cols])
                .zip(&q[r * cols..(r + 1) * cols])
                .map(|((a, b), c)| a * (b - c))
                .sum();
            err += f64::from(d).powi(2);
        }
    }
    err.sqrt()
}

#[test]
fn gptq_beats_round_to_nearest_on_correlated_inputs() {
    let (rows, cols, samples) = (48, 192, 512);
    let mut rng = Rng::new(2022);
    let w = rng.normals(rows * cols, 0.05);
    let x = correlated_inputs(&mut rng, samples, cols);
    let mut acc = HessianAccumulator::new(cols);
    acc.add_batch(&x[..samples / 2 * cols], samples / 2)
        .unwrap();
    acc.add_batch(&x[samples / 2 * cols..], samples / 2)
        .unwrap();
    let h = acc.finish();
    for (bits, granularity, zero_point) in [
        (4, Granularity::Group(64), ZeroPoint::Symmetric),
        (3, Granularity::Group(32), ZeroPoint::Asymmetric),
        (3, Granularity::PerRow, ZeroPoint::Symmetric),
        (2, Granularity::Group(64), ZeroPoint::Asymmetric),
        (4, Granularity::PerTensor, ZeroPoint::Symmetric),
    ] {
        let rtn =
            UniformQuantizer::new(bits, zero_point, granularity, ScaleSearch::AbsMax).unwrap();
        let rtn_q = rtn.quantize(&w, rows, cols).unwrap().dequantize();
        let gptq_q = Gptq::new(rtn).quantize(&w, rows, cols, &h).unwrap();
        assert_eq!(gptq_q.format(), rtn.format());
        let gptq_q = gptq_q.dequantize();
        let e_rtn = output_error(&x, &w, &rtn_q, cols);
        let e_gptq = output_error(&x, &w, &gptq_q, cols);
        println!(
            "w{bits} {granularity:?} {zero_point:?}: ||XW-XQ|| rtn {e_rtn:.3} gptq {e_gptq:.3}"
        );
        assert!(
            e_gptq < 0.8 * e_rtn,
            "w{bits} {granularity:?}: GPTQ {e_gptq} not clearly below RTN {e_rtn}"
        );
    }
}

#[test]
fn gptq_handles_dead_inputs_and_rejects_bad_hessians() {
    let (rows, cols) = (4, 64);
    let mut rng = Rng::new(9);
    let w = rng.normals(rows * cols, 0.05);
    let mut x = rng.normals(100 * cols, 1.0);
    for row in x.chunks_mut(cols) {
        row[5] = 0.0; // input 5 never fires
    }
    let mut acc = HessianAccumulator::new(cols);
    acc.add_batch(&x, 100).unwrap();
    let h = acc.finish();
    let gptq = Gptq::new(UniformQuantizer::symmetric(4, Granularity::Group(32)).unwrap());
    let q = gptq.quantize(&w, rows, cols, &h).unwrap().dequantize();
    for r in 0..rows {
        assert_eq!(q[r * cols + 5], 0.0, "dead input must be zeroed");
    }
    let mut bad = h.clone();
    bad[1] = f64::NAN;
    assert!(matches!(
        gptq.quantize(&w, rows, cols, &bad),
        Err(KernelError::NonFinite { .. })
    ));
    let mut indefinite = vec![0.0; cols * cols];
    for i in 0..cols {
        indefinite[i * cols + i] = if i == 7 { -100.0 } else { 1.0 };
    }
    let strict = Gptq {
        percdamp: 0.0,
        ..gptq
    };
    assert!(matches!(
        strict.quantize(&w, rows, cols, &indefinite),
        Err(KernelError::NotPositiveDefinite { .. })
    ));
    assert!(gptq.quantize(&w, rows, cols, &h[1..]).is_err());
}

fn sample_view_parts() -> PackedMatrix {
    let w = Rng::new(1).normals(10 * 100, 0.1);
    let q = UniformQuantizer::asymmetric(4, Granularity::Group(64))
        .unwrap()
        .quantize(&w, 10, 100)
        .unwrap();
    PackedMatrix::pack(&q)
}

#[test]
fn crafted_views_are_rejected() {
    let owned = sample_view_parts();
    let good = owned.as_ref();
    good.validate().unwrap();

    let short = PackedMatrixRef {
        codes: &good.codes[..good.codes.len() - 1],
        ..good
    };
    assert!(matches!(
        short.validate(),
        Err(KernelError::LengthMismatch { what: "codes", .. })
    ));

    let scales = &good.scales[..good.scales.len() - 1];
    let few_scales = PackedMatrixRef { scales, ..good };
    assert!(matches!(
        few_scales.validate(),
        Err(KernelError::LengthMismatch { what: "scales", .. })
    ));

    let no_zeros = PackedMatrixRef {
        zero_points: None,
        ..good
    };
    assert!(matches!(
        no_zeros.validate(),
        Err(KernelError::LengthMismatch {
            what: "zero_points",
            ..
        })
    ));

    let overflow = PackedMatrixRef {
        rows: usize::MAX,
        cols: usize::MAX / 2,
        ..good
    };
    assert!(matches!(
        overflow.validate(),
        Err(KernelError::InvalidShape { .. })
    ));
    let overflow = PackedMatrixRef {
        rows: usize::MAX / 8,
        cols: 64,
        ..good
    };
    assert!(matches!(
        overflow.validate(),
        Err(KernelError::InvalidShape { .. })
    ));

    let empty = PackedMatrixRef { rows: 0, ..good };
    assert!(empty.validate().is_err());

    let bad_format = PackedMatrixRef {
        format: PackedFormat {
            quant: QuantFormat {
                scheme: Scheme::Asymmetric { bits: 4 },
                granularity: Granularity::Group(50),
            },
            layout: Layout::Bits4,
        },
        ..good
    };
    assert!(matches!(
        bad_format.validate(),
        Err(KernelError::InvalidFormat(_))
    ));

    let narrow_layout = PackedMatrixRef {
        format: PackedFormat {
            layout: Layout::Bits3,
            ..good.format
        },
        ..good
    };
    assert!(narrow_layout.validate().is_err());

    // Kernels validate too and never panic on a crafted view.
    let x = vec![1.0; 100];
    let mut y = vec![0.0; 10];
    assert!(whittle_kernels::matmul(&x, 1, short, None, &mut y).is_err());
    assert!(whittle_kernels::matmul(&x, 1, few_scales, None, &mut y).is_err());
    let err = short
        .validate()
        .unwrap_err()
        .in_tensor("decoder.blocks.0.mlp.0.weight");
    assert!(
        err.to_string().contains("decoder.blocks.0.mlp.0.weight"),
        "{err}"
    );
}

#[test]
fn scales_borrow_from_bytes_without_copy() {
    let scales = [f16::from_f32(0.5), f16::from_f32(-2.0)];
    // u16 storage guarantees the 2-byte alignment a memory map of the file would provide.
    let words: Vec<u16> = scales.iter().map(|s| s.to_bits()).collect();
    let aligned: &[u8] = bytemuck::cast_slice(&words);
    assert_eq!(
        whittle_kernels::f16_slice_from_bytes(aligned).unwrap(),
        &scales
    );
    assert!(whittle_kernels::f16_slice_from_bytes(&aligned[..3]).is_err());
    assert!(whittle_kernels::f16_slice_from_bytes(&aligned[1..3]).is_err());
}

#[test]
fn quantized_matrix_checks_parts() {
    let format = QuantFormat {
        scheme: Scheme::Symmetric { bits: 3 },
        granularity: Granularity::PerRow,
    };
    let ok = whittle_kernels::QuantizedMatrix::from_parts(
        1,
        2,
        format,
        vec![0, 7],
        vec![f16::ONE],
        None,
    );
    assert!(ok.is_ok());
    let too_big = whittle_kernels::QuantizedMatrix::from_parts(
        1,
        2,
        format,
        vec![0, 8],
        vec![f16::ONE],
        None,
    );
    assert!(matches!(
        too_big,
        Err(KernelError::CodeOutOfRange {
            index: 1,
            value: 8,
            ..
        })
    ));
    let zeros = whittle_kernels::QuantizedMatrix::from_parts(
        1,
        2,
        format,
        vec![0, 1],
        vec![f16::ONE],
        Some(vec![1]),
    );
    assert!(zeros.is_err());
}

#[test]
fn gram_accumulation_equals_row_accumulation() {
    let (n, cols) = (37, 24);
    let mut rng = Rng::new(5);
    let x = rng.normals(n * cols, 1.0);
    let mut by_rows = HessianAccumulator::new(cols);
    by_rows.add_batch(&x, n).unwrap();
    let mut gram = vec![0f32; cols * cols];
    for row in x.chunks_exact(cols) {
        for i in 0..cols {
            for j in 0..cols {
                gram[i * cols + j] += row[i] * row[j];
            }
        }
    }
    let mut by_gram = HessianAccumulator::new(cols);
    by_gram.add_gram(&gram, n).unwrap();
    assert_eq!(by_gram.samples(), by_rows.samples());
    for (a, b) in by_rows.finish().iter().zip(by_gram.finish()) {
        assert!((a - b).abs() < 1e-4 * (1.0 + a.abs()), "{a} vs {b}");
    }
    assert!(
        by_gram.add_gram(&gram[1..], n).is_err(),
        "wrong length must be refused"
    );
}

#[test]
fn row_lookup_equals_full_dequantization() {
    // Odd width (a partial last group) and every layout, including 1.6-bit ternary.
    let (rows, cols) = (37, 200);
    let w = Rng::new(7).normals(rows * cols, 0.05);
    for (name, make) in all_formats(Granularity::Group(64)) {
        let (_, packed) = make(&w, rows, cols);
        let full = packed.dequantize();
        let picked = [36usize, 0, 5, 5];
        let rows_out = packed.dequantize_rows(&picked).unwrap();
        for (i, &r) in picked.iter().enumerate() {
            assert_eq!(
                &rows_out[i * cols..(i + 1) * cols],
                &full[r * cols..(r + 1) * cols],
                "{name} row {r}"
            );
        }
        let err = packed.dequantize_rows(&[rows]).unwrap_err().to_string();
        assert!(err.contains("past the last row"), "{name}: {err}");
    }
}

/// Issue 17: a per-row 8-bit view with `cols = usize::MAX` overflowed `group_bytes` (a debug
/// panic in `open`, a release panic on the first dequantize); it is now a size error.
#[test]
fn overflowing_row_sizes_are_rejected() {
    let format = PackedFormat::new(
        QuantFormat {
            scheme: Scheme::Symmetric { bits: 8 },
            granularity: Granularity::PerRow,
        },
        Layout::Bits8,
    )
    .unwrap();
    let scales = [f16::ONE];
    let view = PackedMatrixRef {
        rows: 1,
        cols: usize::MAX,
        format,
        // Release builds wrapped the size to 0 bytes, so an empty code section passed.
        codes: &[],
        scales: &scales,
        zero_points: None,
    };
    assert!(view.validate().is_err());
    assert_eq!(Layout::Bits8.checked_group_bytes(usize::MAX), None);
}

/// Issue 17: 4-bit codes stored in the 8-bit layout may hold values above 15; validation used
/// to check lengths only, so unpacking such a file hit an `expect`. Codes and zero points are
/// now range-checked, naming the first bad one.
#[test]
fn codes_out_of_the_scheme_range_are_rejected() {
    let format = PackedFormat::new(
        QuantFormat {
            scheme: Scheme::Symmetric { bits: 4 },
            granularity: Granularity::Group(32),
        },
        Layout::Bits8,
    )
    .unwrap();
    let codes = vec![8u8; 2 * 32];
    let scales = [f16::ONE; 2];
    let good = PackedMatrixRef {
        rows: 2,
        cols: 32,
        format,
        codes: &codes,
        scales: &scales,
        zero_points: None,
    };
    good.validate().unwrap();
    let mut crafted = codes.clone();
    crafted[37] = 255;
    let bad = PackedMatrixRef {
        codes: &crafted,
        ..good
    };
    match bad.validate() {
        Err(KernelError::CodeOutOfRange {
            what: "codes",
            index: 37,
            value: 255,
            max: 15,
        }) => {}
        other => panic!("expected codes[37] = 255 out of range, got {other:?}"),
    }
    assert!(bad.unpack().is_err());
}
