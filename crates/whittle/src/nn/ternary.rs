//! A trainable ternary weight: hyperspherical quantization (HQ; Liu et al. 2023,
//! "Hyperspherical Quantization: Toward Smaller and More Accurate Models", WACV) and the
//! TWN-initialised ternary QAT baseline, as one state of a linear layer's weight.
//!
//! The forward weight of output row `r` is `s_r t_r`, with `t_r` in `{-1, 0, +1}^n`:
//!
//! - **Hyperspherical** (`hyperspherical = true`): the latent row `v_r` is normalised,
//!   `u_r = v_r / ||v_r||`, and `t_r` is the cosine-optimal ternary projection of `u_r`
//!   ([`whittle_kernels::ternary::cosine_projection`]) with at most `max_nonzero` nonzeros. The
//!   scale is `s_r = g_r / sqrt(k_r)` for a learned row norm `g_r` and `k_r` nonzeros, so
//!   `s_r t_r` has norm `g_r`: the row is a learned length times a unit ternary direction.
//!   Straight-through: `dL/du_r = g_r dL/dW_r` (the ternary direction stands in for `u_r`), which
//!   flows through the normalisation to `v_r`.
//! - **Plain** (`hyperspherical = false`): `t_r` is the projection of `v_r` itself (TWN's
//!   threshold, or cosine-optimal), `s_r` a learned scale initialised to TWN's least-squares
//!   `alpha`, and `dL/dv_r = dL/dW_r` (the usual ternary STE, LSQ-style learned scale).
//!
//! `s_r` is rounded to f16 in the forward (straight-through), as the packed format stores it,
//! so [`TernaryWeight::to_packed`] computes exactly the trained function.
//!
//! The projection (a sort per row) runs in [`TernaryWeight::refresh`], once per optimizer step
//! (the latent only changes at steps), not once per micro-batch.

use candle_core::{DType, Tensor, Var, D};
use half::f16;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use whittle_kernels::ternary::{
    cosine_projection, top_k_projection, twn_projection, TernaryProjection,
};
use whittle_kernels::{Granularity, Layout, PackedMatrix, QuantFormat, QuantizedMatrix, Scheme};

use crate::error::{Error, Result};

/// Which ternary vector a row is projected to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Projection {
    /// The ternary vector of smallest angle to the row (HQ's objective).
    #[default]
    Cosine,
    /// TWN's threshold `0.7 mean|w|` (then capped at `max_nonzero` by magnitude).
    Twn,
}

/// How a ternary weight is parametrised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TernarySpec {
    /// Normalise each latent row to the unit sphere (HQ) and learn its norm.
    pub hyperspherical: bool,
    /// The projection.
    pub projection: Projection,
}

/// A trainable ternary weight (see the module docs).
#[derive(Debug, Clone)]
pub struct TernaryWeight {
    /// Latent weight `[rows, cols]`.
    pub latent: Var,
    /// Learned per-row scale `[rows, 1]`: the row norm `g` (hyperspherical) or `alpha` (plain).
    pub scale: Var,
    /// Parametrisation.
    pub spec: TernarySpec,
    /// Most nonzeros a row may keep (the pruning schedule lowers it).
    pub max_nonzero: usize,
    /// `t` of the last [`TernaryWeight::refresh`], `[rows, cols]`, detached.
    directions: Tensor,
    /// Nonzeros of each row of `directions`, `[rows, 1]` (at least 1, for the division).
    nonzeros: Tensor,
}

/// The projection of every row of a `[rows, cols]` matrix: `t` values and nonzeros per row.
fn project_rows(
    values: &[f32],
    cols: usize,
    spec: TernarySpec,
    max_nonzero: usize,
) -> (Vec<f32>, Vec<TernaryProjection>) {
    let mut t = vec![0f32; values.len()];
    let projections = t
        .par_chunks_mut(cols)
        .zip(values.par_chunks(cols))
        .map_init(Vec::new, |order, (t, row)| {
            let unit;
            let row = if spec.hyperspherical {
                let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                unit = row
                    .iter()
                    .map(|v| v / norm.max(f32::MIN_POSITIVE))
                    .collect::<Vec<_>>();
                &unit[..]
            } else {
                row
            };
            match spec.projection {
                Projection::Cosine => cosine_projection(row, max_nonzero, order, t),
                Projection::Twn => {
                    let p = twn_projection(row, t);
                    if p.nonzeros <= max_nonzero {
                        p
                    } else {
                        top_k_projection(row, max_nonzero, order, t)
                    }
                }
            }
        })
        .collect();
    (t, projections)
}

fn f32_values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?)
}

impl TernaryWeight {
    /// Start from a float weight `[rows, cols]`: latent = `w`, scale = the least-squares one of
    /// the initial projection (so the first forward is the post-training ternary weight).
    pub fn init(w: &Tensor, spec: TernarySpec) -> Result<Self> {
        let (rows, cols) = w.dims2()?;
        if rows == 0 || cols == 0 {
            return Err(Error::config(
                "ternary",
                format!("weight [{rows}, {cols}] is empty"),
            ));
        }
        let values = f32_values(w)?;
        if let Some(i) = values.iter().position(|v| !v.is_finite()) {
            return Err(Error::config(
                "ternary",
                format!("weight value {i} is not finite"),
            ));
        }
        let (_, projections) = project_rows(&values, cols, spec, cols);
        // Hyperspherical: alpha is that of the unit row, so g = ||w|| alpha sqrt(k) makes
        // g t / sqrt(k) = ||w|| alpha t, the least-squares ternary weight of w.
        let scales: Vec<f32> = values
            .chunks(cols)
            .zip(&projections)
            .map(|(row, p)| {
                if spec.hyperspherical {
                    let norm = row.iter().map(|v| v * v).sum::<f32>().sqrt();
                    norm * p.alpha * (p.nonzeros as f32).sqrt()
                } else {
                    p.alpha
                }
            })
            .collect();
        let device = w.device();
        let mut weight = Self {
            latent: Var::from_tensor(&w.to_dtype(DType::F32)?)?,
            scale: Var::from_tensor(&Tensor::from_vec(scales, (rows, 1), device)?)?,
            spec,
            max_nonzero: cols,
            directions: Tensor::zeros((rows, cols), DType::F32, device)?,
            nonzeros: Tensor::ones((rows, 1), DType::F32, device)?,
        };
        weight.refresh()?;
        Ok(weight)
    }

    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        let d = self.latent.dims();
        (d[0], d[1])
    }

    /// Recomputes the ternary directions from the latent (after each optimizer step).
    pub fn refresh(&mut self) -> Result<()> {
        let (rows, cols) = self.dims();
        let values = f32_values(self.latent.as_tensor())?;
        let (t, projections) = project_rows(&values, cols, self.spec, self.max_nonzero);
        let device = self.latent.device();
        self.directions = Tensor::from_vec(t, (rows, cols), device)?;
        let counts: Vec<f32> = projections
            .iter()
            .map(|p| p.nonzeros.max(1) as f32)
            .collect();
        self.nonzeros = Tensor::from_vec(counts, (rows, 1), device)?;
        Ok(())
    }

    /// Fraction of zero weights in the current ternary directions.
    pub fn sparsity(&self) -> Result<f64> {
        let (rows, cols) = self.dims();
        let nonzero: f32 = self.directions.abs()?.sum_all()?.to_scalar()?;
        Ok(1.0 - f64::from(nonzero) / (rows * cols) as f64)
    }

    /// Mean cosine between the latent rows and their ternary directions (how far the STE's
    /// stand-in is from the latent: 1 means the forward and backward weights agree).
    pub fn mean_cosine(&self) -> Result<f64> {
        let latent = self.latent.as_tensor();
        let dot = (latent * &self.directions)?.sum(D::Minus1)?;
        let norms = (latent.sqr()?.sum(D::Minus1)?.sqrt()?
            * self.directions.sqr()?.sum(D::Minus1)?.sqrt()?)?;
        let cos = (dot / (norms + 1e-12)?)?;
        Ok(f64::from(cos.mean_all()?.to_scalar::<f32>()?))
    }

    /// The per-row scale the forward uses: `g / sqrt(k)` or `alpha`, unrounded.
    fn raw_scale(&self) -> candle_core::Result<Tensor> {
        if self.spec.hyperspherical {
            self.scale.as_tensor().broadcast_div(&self.nonzeros.sqrt()?)
        } else {
            Ok(self.scale.as_tensor().clone())
        }
    }

    /// The ternary weight `[rows, cols]` the forward pass uses, differentiable in the latent
    /// (straight-through) and the scale.
    pub fn ternary_weight(&self) -> candle_core::Result<Tensor> {
        let raw = self.raw_scale()?;
        // f16 rounding as stored, straight-through.
        let stored = raw.to_dtype(DType::F16)?.to_dtype(DType::F32)?;
        let scale = (&raw + (stored - &raw)?.detach())?;
        let value = self.directions.broadcast_mul(&scale)?;
        let latent = self.latent.as_tensor();
        // The straight-through path: zero in value, the gradient of the (normalised) latent.
        let through = if self.spec.hyperspherical {
            let norm = latent.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
            let unit = latent.broadcast_div(&(norm + 1e-12)?)?;
            (&unit - unit.detach())?.broadcast_mul(&self.scale.as_tensor().detach())?
        } else {
            (latent - latent.detach())?
        };
        value + through
    }

    /// Codes (`0`, `1`, `2`) and f16 per-row scales exactly as the forward uses them.
    ///
    /// The directions are projected afresh from the latent (at the current cap), not read from
    /// the cache of the last [`TernaryWeight::refresh`]: a trainer that restores earlier (best)
    /// parameters into the latent and scale before extracting would otherwise pack the last
    /// step's directions with the restored scales.
    pub fn to_quantized_matrix(&self) -> Result<QuantizedMatrix> {
        let mut fresh = self.clone();
        fresh.refresh()?;
        fresh.cached_quantized_matrix()
    }

    /// [`TernaryWeight::to_quantized_matrix`] from the cached directions.
    fn cached_quantized_matrix(&self) -> Result<QuantizedMatrix> {
        let (rows, cols) = self.dims();
        let t = f32_values(&self.directions)?;
        let scales = f32_values(&self.raw_scale()?)?;
        let codes = t.iter().map(|&v| (v as i32 + 1) as u8).collect();
        let scales = scales.iter().map(|&s| f16::from_f32(s)).collect();
        Ok(QuantizedMatrix::from_parts(
            rows,
            cols,
            QuantFormat {
                scheme: Scheme::Ternary,
                granularity: Granularity::PerRow,
            },
            codes,
            scales,
            None,
        )?)
    }

    /// The packed weight computing the same function as [`TernaryWeight::ternary_weight`].
    pub fn to_packed(&self, layout: Layout) -> Result<PackedMatrix> {
        Ok(PackedMatrix::pack_with(
            &self.to_quantized_matrix()?,
            layout,
        )?)
    }

    /// Pulls the latent toward its ternary projection: `v <- (1 - rho) v + rho p`, with `p` the
    /// projection at the latent's own scale (`||v|| t / sqrt(k)` hyperspherical, `alpha t`
    /// plain), so pruned coordinates decay toward 0 and kept ones toward equal magnitude.
    pub fn reinitialize(&mut self, rho: f64) -> Result<()> {
        let latent = self.latent.as_tensor();
        let target = if self.spec.hyperspherical {
            let norm = latent.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
            self.directions
                .broadcast_mul(&norm.broadcast_div(&self.nonzeros.sqrt()?)?)?
        } else {
            let alpha = (latent.abs()? * self.directions.abs()?)?
                .sum_keepdim(D::Minus1)?
                .broadcast_div(&self.nonzeros)?;
            self.directions.broadcast_mul(&alpha)?
        };
        let next = ((latent * (1.0 - rho))? + (target * rho)?)?.detach();
        self.latent.set(&next)?;
        self.refresh()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::{max_abs_diff, test_var};
    use candle_core::Device;

    fn spec(hyperspherical: bool, projection: Projection) -> TernarySpec {
        TernarySpec {
            hyperspherical,
            projection,
        }
    }

    #[test]
    fn packed_weight_is_the_forward_weight() {
        for s in [
            spec(true, Projection::Cosine),
            spec(false, Projection::Twn),
            spec(false, Projection::Cosine),
        ] {
            let w = test_var(&[12, 64], 3).as_tensor().clone();
            let mut t = TernaryWeight::init(&w, s).unwrap();
            t.max_nonzero = 20;
            t.refresh().unwrap();
            let forward = t.ternary_weight().unwrap();
            for layout in [Layout::Bits2, Layout::TernarySparse] {
                let packed = t.to_packed(layout).unwrap();
                let dense = Tensor::from_vec(packed.dequantize(), (12, 64), &Device::Cpu).unwrap();
                assert_eq!(
                    max_abs_diff(&forward, &dense).unwrap(),
                    0.0,
                    "{s:?} {layout:?}"
                );
            }
            assert!(t.sparsity().unwrap() >= 1.0 - 20.0 / 64.0 - 1e-9);
        }
    }

    #[test]
    fn initial_forward_is_the_least_squares_ternary_weight() {
        let w = test_var(&[6, 96], 1).as_tensor().clone();
        let t = TernaryWeight::init(&w, spec(true, Projection::Cosine)).unwrap();
        let values = f32_values(&w).unwrap();
        let forward = f32_values(&t.ternary_weight().unwrap()).unwrap();
        for (row, out) in values.chunks(96).zip(forward.chunks(96)) {
            let mut order = Vec::new();
            let mut dir = vec![0f32; 96];
            let p = cosine_projection(row, 96, &mut order, &mut dir);
            for (d, o) in dir.iter().zip(out) {
                let expected = f16::from_f32(p.alpha).to_f32() * d;
                assert!((expected - o).abs() <= 1e-3 * p.alpha, "{expected} vs {o}");
            }
        }
    }

    #[test]
    fn gradients_reach_latent_and_scale() {
        let w = test_var(&[4, 32], 2).as_tensor().clone();
        for s in [spec(true, Projection::Cosine), spec(false, Projection::Twn)] {
            let t = TernaryWeight::init(&w, s).unwrap();
            let c = test_var(&[4, 32], 5).as_tensor().clone();
            let loss = (t.ternary_weight().unwrap() * &c)
                .unwrap()
                .sum_all()
                .unwrap();
            let grads = loss.backward().unwrap();
            let gl = grads.get(t.latent.as_tensor()).expect("latent gradient");
            let gs = grads.get(t.scale.as_tensor()).expect("scale gradient");
            assert!(
                gl.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 0.0
            );
            assert!(
                gs.abs()
                    .unwrap()
                    .sum_all()
                    .unwrap()
                    .to_scalar::<f32>()
                    .unwrap()
                    > 0.0
            );
            if s.hyperspherical {
                // The normalisation's gradient is orthogonal to each latent row.
                let radial = (gl * t.latent.as_tensor()).unwrap().sum(D::Minus1).unwrap();
                let max: f32 = radial.abs().unwrap().max(0).unwrap().to_scalar().unwrap();
                assert!(max < 1e-4, "radial gradient {max}");
            } else {
                // Plain STE: dL/dv = dL/dW = c.
                assert!(max_abs_diff(gl, &c).unwrap() < 1e-6);
            }
        }
    }

    /// Parameters restored into the latent and scale after the last refresh (a trainer keeping
    /// its best checkpoint) are packed with their own directions, not the cached ones.
    #[test]
    fn packing_projects_the_current_latent() {
        let w = test_var(&[6, 64], 7).as_tensor().clone();
        for s in [spec(true, Projection::Cosine), spec(false, Projection::Twn)] {
            let t = TernaryWeight::init(&w, s).unwrap();
            let best_latent = t.latent.as_tensor().copy().unwrap();
            let best_scale = t.scale.as_tensor().copy().unwrap();
            let expected = t.to_packed(Layout::TernarySparse).unwrap();
            // Training moves on (and refreshes), then the best parameters come back.
            let moved = (t.latent.as_tensor() * test_var(&[6, 64], 9).as_tensor()).unwrap();
            t.latent.set(&moved).unwrap();
            let mut trained = t.clone();
            trained.refresh().unwrap();
            trained.latent.set(&best_latent).unwrap();
            trained.scale.set(&best_scale).unwrap();
            assert_eq!(
                trained.to_packed(Layout::TernarySparse).unwrap(),
                expected,
                "{s:?}"
            );
        }
    }

    #[test]
    fn reinitialization_raises_the_cosine() {
        let w = test_var(&[8, 128], 4).as_tensor().clone();
        let mut t = TernaryWeight::init(&w, spec(true, Projection::Cosine)).unwrap();
        let before = t.mean_cosine().unwrap();
        t.reinitialize(0.5).unwrap();
        let after = t.mean_cosine().unwrap();
        assert!(after > before, "{before} -> {after}");
        t.reinitialize(1.0).unwrap();
        assert!(t.mean_cosine().unwrap() > 0.999);
    }
}
