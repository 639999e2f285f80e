//! `method = "admm"`: quantized training by the alternating direction method of multipliers.
//!
//! The formulation is Leng et al. 2018 ("Extremely Low Bit Neural Network: Squeeze the Last Bit
//! Out with ADMM", AAAI), which Xu et al. 2021 ("Mixed Precision Quantization of Transformer
//! Language Models for Speech Recognition", arXiv 2112.11540) use to train mixed-precision
//! Transformer LMs. Each quantized layer `i` keeps a float weight `W_i`, a copy `G_i` on its grid
//! `C_i = {alpha * q : q in -Qp..=Qp}` (`Qp = 2^(b-1) - 1`, symmetric as in the literature) and a
//! multiplier `Lambda_i`. The student trains on
//!
//! `L(W) + sum_i [ <Lambda_i, W_i - G_i> + rho/2 |W_i - G_i|^2 ]`
//!
//! (the W-step, by the trainer's AdamW with the distillation loss; with `admm.w_step =
//! "proximal"` the optimizer steps on the loss alone and each weight then takes the exact
//! proximal step of the penalty, `W <- (W + eta (rho G - Lambda)) / (1 + eta rho)`), and every
//! `admm.update_every` steps
//!
//! - G-step: `G_i = project(W_i + Lambda_i / rho)`, alternating `q = clamp(round(V / alpha))`
//!   and the least-squares `alpha = <V, q> / <q, q>` until the scale stops changing;
//! - dual step: `Lambda_i += rho (W_i - G_i)`;
//! - `rho` follows a geometric schedule from `admm.rho_start` to `admm.rho_end`.
//!
//! The deployed weights are `G`: [`Admm::extract`] packs its codes and scales exactly, and dev
//! scores measure `G`. `G`, `Lambda` and `rho` are saved with every checkpoint (exact resume)
//! and with the best parameters.
//!
//! Choices where the literature is silent (docs/sensitivity.md, "ADMM"): scales are rounded to
//! f16 inside the alternation (the packed format stores f16, so the packed `G` is exactly the
//! trained `G`); the alternation starts from `max|V| / Qp` and stops after 30 rounds at most;
//! the scale is per group of `quant.group` by default, or tied over the layer
//! (`admm.scale = "layer"`, the literature's tied table); `admm.projection = "abs-max"` replaces
//! the least-squares scale by `max|V| / Qp`, so no weight is clipped (measured on SmolLM2 in
//! BENCHMARKS.md: it did not help there); the proximal W-step (the literature's W-step is
//! SGD on the whole augmented loss): with AdamW, a weight moves about one learning rate per
//! step whatever the penalty's size, so the gradient W-step cannot reach a grid point farther
//! than the steps between two projections allow; the proximal step closes a fraction
//! `eta rho / (1 + eta rho)` of the distance per step instead.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor, Var};
use half::f16;
use rayon::prelude::*;
use whittle_kernels::{PackedMatrix, QuantFormat, QuantizedMatrix, Scheme};

use super::method::{CompressionMethod, Extracted, LossTerm, MethodParam};
use super::optim::ParamGroup;
use super::recipe::{AdmmProjection, AdmmRecipe, AdmmScale, AdmmWStep};
use super::uniform::LayerSelection;
use crate::compress::bitmap::LayerFormat;
use crate::error::{Error, Result};
use crate::models::Layers;
use crate::nn::lsq::MIN_STEP;
use crate::nn::{LsqSpec, Weight};

/// Most alternations of rounding and least-squares scale in one projection.
const MAX_ALTERNATIONS: usize = 30;

/// The value `x` takes once stored as f16 (at least [`MIN_STEP`]).
fn stored_scale(x: f32) -> f32 {
    f16::from_f32(x.max(MIN_STEP)).to_f32()
}

/// The code of `v` on the grid of scale `alpha` with levels `-qmax..=qmax`.
fn code(v: f32, alpha: f32, qmax: f32) -> f32 {
    (v / alpha).round().clamp(-qmax, qmax)
}

/// The scale of the grid `{alpha q : |q| <= qmax}` nearest to `v` in the least-squares sense,
/// found by alternating rounding and the least-squares scale from `start` (default
/// `max|v| / qmax`). Scales are f16 values, as stored.
pub fn fit_scale(v: &[f32], qmax: f32, start: Option<f32>) -> f32 {
    let mut alpha =
        stored_scale(start.unwrap_or_else(|| v.iter().fold(0f32, |m, x| m.max(x.abs())) / qmax));
    for _ in 0..MAX_ALTERNATIONS {
        let (mut num, mut den) = (0f64, 0f64);
        for &x in v {
            let q = code(x, alpha, qmax);
            num += f64::from(x) * f64::from(q);
            den += f64::from(q) * f64::from(q);
        }
        if den == 0.0 {
            break;
        }
        let next = stored_scale((num / den) as f32);
        if next == alpha {
            break;
        }
        alpha = next;
    }
    alpha
}

/// The projection of a `[rows, cols]` matrix `v` (row-major) onto the grid of `spec`'s bits with
/// one scale per group of `spec` (`tied`: one scale for the whole matrix). `fit` least-squares:
/// each alternation starts from `start`'s scale (the previous projection's, `[rows, groups]`) or
/// from the abs-max scale; abs-max: the scale is `max|v| / Qp` of the group, f16-rounded.
/// Returns the projected matrix and the scales, `[rows, groups]` row-major (a tied scale
/// repeated).
pub fn project(
    v: &[f32],
    rows: usize,
    cols: usize,
    spec: LsqSpec,
    tied: bool,
    start: Option<&[f32]>,
    fit: AdmmProjection,
) -> (Vec<f32>, Vec<f32>) {
    let qmax = spec.qp();
    let glen = spec.group_len(cols);
    let groups = cols / glen;
    let scale = |g: &[f32], start: Option<f32>| match fit {
        AdmmProjection::LeastSquares => fit_scale(g, qmax, start),
        AdmmProjection::AbsMax => stored_scale(g.iter().fold(0f32, |m, x| m.max(x.abs())) / qmax),
    };
    let scales: Vec<f32> = if tied {
        vec![scale(v, start.map(|s| s[0])); rows * groups]
    } else {
        v.par_chunks(glen)
            .enumerate()
            .map(|(i, g)| scale(g, start.map(|s| s[i])))
            .collect()
    };
    let mut projected = vec![0f32; rows * cols];
    projected
        .par_chunks_mut(glen)
        .zip(v.par_chunks(glen))
        .zip(scales.par_iter())
        .for_each(|((out, group), &alpha)| {
            for (o, &x) in out.iter_mut().zip(group) {
                *o = alpha * code(x, alpha, qmax);
            }
        });
    (projected, scales)
}

/// One quantized layer's ADMM variables.
#[derive(Debug, Clone)]
struct AdmmLayer {
    name: String,
    spec: LsqSpec,
    /// The float weight `W` the optimizer trains (the student reads it).
    weight: Var,
    /// `G`, on the grid.
    projected: Tensor,
    /// `G`'s scales, `[rows, groups]`, f16 values.
    scales: Tensor,
    /// `Lambda`.
    multiplier: Tensor,
}

impl AdmmLayer {
    /// Project `weight + multiplier / rho` onto the grid into `projected` and `scales`, from
    /// the current scales when `warm` (so `G` moves only as far as `W` does), else from the
    /// abs-max scales.
    fn project(&mut self, rho: f64, tied: bool, warm: bool, fit: AdmmProjection) -> Result<()> {
        let w = self.weight.as_tensor();
        let (rows, cols) = w.dims2()?;
        let v = (w + (&self.multiplier / rho)?)?;
        let v: Vec<f32> = v.flatten_all()?.to_vec1()?;
        let start: Option<Vec<f32>> = if warm {
            Some(self.scales.flatten_all()?.to_vec1()?)
        } else {
            None
        };
        let (g, s) = project(&v, rows, cols, self.spec, tied, start.as_deref(), fit);
        let device = w.device();
        self.projected = Tensor::from_vec(g, (rows, cols), device)?;
        let groups = s.len() / rows;
        self.scales = Tensor::from_vec(s, (rows, groups), device)?;
        Ok(())
    }

    /// The exact proximal step of the penalty `<Lambda, W - G> + rho/2 |W - G|^2` with step
    /// `eta`: `W <- argmin_X |X - W|^2 / (2 eta) + penalty(X)`
    /// `= (W + eta (rho G - Lambda)) / (1 + eta rho)`, stable for any `eta rho`.
    fn proximal_step(&self, rho: f64, eta: f64) -> Result<()> {
        let w = self.weight.as_tensor().detach();
        let target = ((&self.projected * rho)? - &self.multiplier)?;
        let next = ((w + (target * eta)?)? / (1.0 + eta * rho))?;
        self.weight.set(&next)?;
        Ok(())
    }

    /// `G` as the packed format stores it: codes `q + Qn` and f16 scales.
    fn to_packed(&self) -> Result<PackedMatrix> {
        let (rows, cols) = self.projected.dims2()?;
        let g: Vec<f32> = self.projected.flatten_all()?.to_vec1()?;
        let s: Vec<f32> = self.scales.flatten_all()?.to_vec1()?;
        let glen = self.spec.group_len(cols);
        let qn = self.spec.qn();
        let codes = g
            .iter()
            .enumerate()
            .map(|(i, &x)| {
                let alpha = s[i / glen];
                ((x / alpha).round() + qn) as u8
            })
            .collect();
        let format = QuantFormat {
            scheme: Scheme::Symmetric {
                bits: self.spec.bits,
            },
            granularity: self.spec.granularity(),
        };
        let matrix = QuantizedMatrix::from_parts(
            rows,
            cols,
            format,
            codes,
            s.iter().map(|&x| f16::from_f32(x)).collect(),
            None,
        )
        .map_err(|e| Error::config(&self.name, e.to_string()))?;
        Ok(PackedMatrix::pack(&matrix))
    }

    /// `|W - G|^2` and `|W|^2`.
    fn distances(&self) -> Result<(f64, f64)> {
        let w = self.weight.as_tensor();
        let d = (w - &self.projected)?
            .sqr()?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        let n = w
            .sqr()?
            .sum_all()?
            .to_dtype(DType::F64)?
            .to_scalar::<f64>()?;
        Ok((d, n))
    }
}

/// ADMM quantized training as a [`CompressionMethod`].
#[derive(Debug, Clone)]
pub struct Admm {
    recipe: AdmmRecipe,
    selection: LayerSelection,
    steps: usize,
    rho: f64,
    layers: Vec<AdmmLayer>,
}

impl Admm {
    /// ADMM of the layers `selection` quantizes, over a run of `steps` optimizer steps.
    pub fn new(recipe: AdmmRecipe, selection: LayerSelection, steps: usize) -> Self {
        let rho = recipe.rho_start;
        Self {
            recipe,
            selection,
            steps,
            rho,
            layers: Vec::new(),
        }
    }

    /// The current penalty `rho`.
    pub fn rho(&self) -> f64 {
        self.rho
    }

    /// The penalty after `step` optimizer steps: geometric from `rho_start` to `rho_end`.
    fn scheduled_rho(&self, step: usize) -> f64 {
        let t = step as f64 / self.steps.max(1) as f64;
        self.recipe.rho_start * (self.recipe.rho_end / self.recipe.rho_start).powf(t.min(1.0))
    }

    fn tied(&self) -> bool {
        self.recipe.scale == AdmmScale::Layer
    }

    /// `|W - G| / |W|` over every quantized layer.
    pub fn relative_distance(&self) -> Result<f64> {
        let (mut d, mut n) = (0.0, 0.0);
        for layer in &self.layers {
            let (dl, nl) = layer.distances()?;
            d += dl;
            n += nl;
        }
        Ok(if n > 0.0 { (d / n).sqrt() } else { 0.0 })
    }

    /// Each quantized layer's `G`, by layer name.
    pub fn projections(&self) -> BTreeMap<String, Tensor> {
        self.layers
            .iter()
            .map(|l| (l.name.clone(), l.projected.clone()))
            .collect()
    }
}

impl CompressionMethod for Admm {
    fn name(&self) -> &'static str {
        "admm"
    }

    fn wrap(&mut self, student: &mut dyn Layers) -> Result<Vec<MethodParam>> {
        let specs = self.selection.specs(student, "ADMM")?;
        let tied = self.tied();
        let mut params = Vec::new();
        self.layers.clear();
        for layer in student.layers_mut() {
            let (name, linear) = (layer.name, layer.linear);
            let Some((_, Some(spec))) = specs.iter().find(|(n, _)| *n == name) else {
                continue;
            };
            let w = linear.weight.to_dense()?.to_dtype(DType::F32)?;
            let (rows, cols) = w.dims2()?;
            spec.check(rows, cols)
                .map_err(|reason| Error::config(&name, reason))?;
            let weight = Var::from_tensor(&w.copy()?)?;
            linear.weight = Weight::Float(weight.as_tensor().clone());
            params.push(MethodParam {
                name: format!("{name}.weight"),
                var: weight.clone(),
                group: ParamGroup::Weights,
            });
            let mut admm = AdmmLayer {
                name,
                spec: *spec,
                multiplier: w.zeros_like()?,
                projected: w.zeros_like()?,
                scales: Tensor::zeros((rows, 1), DType::F32, w.device())?,
                weight,
            };
            admm.project(self.rho, tied, false, self.recipe.projection)?;
            self.layers.push(admm);
        }
        if params.is_empty() {
            return Err(Error::config(
                "admm",
                "the bit map leaves every layer float: nothing to train",
            ));
        }
        Ok(params)
    }

    fn loss_terms(&self, _student: &dyn Layers) -> Result<Vec<LossTerm>> {
        let mut total: Option<Tensor> = None;
        for layer in &self.layers {
            let diff = (layer.weight.as_tensor() - &layer.projected)?;
            let term = ((&diff * &layer.multiplier)?.sum_all()?
                + (diff.sqr()?.sum_all()? * (self.rho / 2.0))?)?;
            total = Some(match total {
                Some(t) => (t + term)?,
                None => term,
            });
        }
        let loss = total.expect("wrap keeps at least one layer");
        let value = loss.to_dtype(DType::F64)?.to_scalar::<f64>()?;
        // The proximal W-step applies the penalty itself: the optimizer's loss leaves it out,
        // and the step log reports its value as the `admm` term.
        let loss = match self.recipe.w_step {
            AdmmWStep::Gradient => loss,
            AdmmWStep::Proximal => loss.zeros_like()?,
        };
        Ok(vec![LossTerm {
            name: "admm".into(),
            loss,
            value,
        }])
    }

    fn after_step(
        &mut self,
        _student: &mut dyn Layers,
        step: usize,
        _terms: &BTreeMap<String, f64>,
    ) -> Result<()> {
        let done = step + 1;
        let (rho, tied, fit) = (self.rho, self.tied(), self.recipe.projection);
        if self.recipe.w_step == AdmmWStep::Proximal {
            let eta = self.recipe.prox_step;
            for layer in &self.layers {
                layer.proximal_step(rho, eta)?;
            }
        }
        if !done.is_multiple_of(self.recipe.update_every) {
            return Ok(());
        }
        for layer in &mut self.layers {
            layer.project(rho, tied, true, fit)?;
            // Detached: the multiplier is a constant of the next W-steps, not a function of W.
            let gap = (layer.weight.as_tensor().detach() - &layer.projected)?;
            layer.multiplier = (&layer.multiplier + (gap * rho)?)?;
        }
        self.rho = self.scheduled_rho(done);
        Ok(())
    }

    fn metrics(&self, _student: &dyn Layers) -> Result<BTreeMap<String, f64>> {
        Ok(BTreeMap::from([
            ("rho".to_string(), self.rho),
            ("distance".to_string(), self.relative_distance()?),
        ]))
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "rho": self.rho })
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        self.rho = state["rho"]
            .as_f64()
            .ok_or_else(|| Error::config("checkpoint state", "the ADMM state has no `rho`"))?;
        Ok(())
    }

    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        self.layers
            .iter()
            .flat_map(|l| {
                [
                    (format!("{}.projected", l.name), l.projected.clone()),
                    (format!("{}.scales", l.name), l.scales.clone()),
                    (format!("{}.multiplier", l.name), l.multiplier.clone()),
                ]
            })
            .collect()
    }

    fn restore_tensors(
        &mut self,
        load: &mut dyn FnMut(&str, &Tensor) -> Result<Tensor>,
    ) -> Result<()> {
        for l in &mut self.layers {
            l.projected = load(&format!("{}.projected", l.name), &l.projected)?;
            l.scales = load(&format!("{}.scales", l.name), &l.scales)?;
            l.multiplier = load(&format!("{}.multiplier", l.name), &l.multiplier)?;
        }
        Ok(())
    }

    fn extract(&self, shipped: &mut dyn Layers) -> Result<Extracted> {
        let mut layers = Vec::new();
        for layer in shipped.layers_mut() {
            let (name, linear) = (layer.name, layer.linear);
            let format = match self.layers.iter().find(|l| l.name == name) {
                Some(admm) => {
                    linear.set_packed(admm.to_packed()?);
                    LayerFormat::uniform(admm.spec.bits, admm.spec.group)
                }
                None => LayerFormat::Float,
            };
            layers.push((name, format));
        }
        Ok(Extracted {
            layers,
            report: serde_json::json!({
                "rho": self.rho,
                "relative_distance": self.relative_distance()?,
                "scale": if self.tied() { "layer" } else { "group" },
            }),
        })
    }
}
