//! `method = "mixed-precision"`: one-stage learned mixed-precision quantization (SEEDS.md,
//! method 1): each layer's bit width is learned jointly with its quantized weights in a single
//! run, then the most probable width of every layer is written directly from the trained
//! weights and steps.
//!
//! - **Supernet.** Every searched layer holds a [`MixedWeight`]: K candidate LSQ quantizers
//!   (own steps each) over one latent weight, mixed by `softmax((lambda + g) / tau)` with Gumbel
//!   noise `g` (Jang et al. 2017) and architecture logits `lambda` (zeros at the start).
//! - **Temperature.** Annealed exponentially from `tau_start` to `tau_end` over the run.
//! - **Size constraint.** The expected stored size of the quantized tensors,
//!   `E = sum_layers sum_k softmax(lambda / tau)_k bytes_k` (codes and f16 scales exactly as the
//!   packed format stores candidate `k`), is held to the budget `B = budget_bits * N / 8` bytes
//!   for the `N` searched weights by the Lagrangian term `mu (E / B - 1)`. The multiplier is
//!   trained by projected gradient ascent after every optimizer step,
//!   `mu <- max(0, mu + lr_multiplier (E / B - 1))`, so the budget is met rather than traded
//!   against accuracy at a fixed price. (The literature states a size-constrained objective;
//!   the ascent rule, the noiseless `softmax(lambda / tau)` in `E` and the schedule are this
//!   implementation's choices, documented in docs/mixed-precision.md.)
//! - **Extraction.** `argmax lambda` per layer; that candidate's codes and steps are packed as
//!   they are, with no retraining ([`MixedWeight::candidate`]).
//!
//! - **Search variant.** With `objective = "sqrt-bits"` the size term is instead the fixed price
//!   `beta sum_layers sum_n softmax(lambda / tau)_n sqrt(bits_n)` of the mixed-precision
//!   architecture search of Xu et al. 2021 (arXiv 2112.11540, eq. 11 of its sibling paper,
//!   `beta = 0.5`), with no budget and no multiplier; the argmax is extracted as it is.
//!
//! - **Settling.** With `settle_steps = S`, the map is fixed at step `steps - S` by the
//!   extraction rule (argmax fitted to the budget), and the last `S` steps train each layer's
//!   chosen candidate alone (whittle's choice: a late argmax flip once broke extraction).
//!
//! Gumbel noise depends only on the seed and the step, so a resumed run draws the same noise;
//! the multiplier and the settled map are the method's checkpointed state.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use whittle_kernels::{PackedFormat, QuantFormat, Scheme};

use super::method::{
    constraint_term, recipe_rate, CompressionMethod, Extracted, GroupRate, LossTerm, MethodParam,
};
use super::optim::ParamGroup;
use super::recipe::{MixedPrecisionRecipe, Recipe, SizeObjective};
use crate::compress::bitmap::LayerFormat;
use crate::error::{Error, Result};
use crate::models::Layers;
use crate::nn::mixed::one_hot;
use crate::nn::{LsqSpec, MixedWeight, Relaxation, StepInit, Weight};

/// Name of the size term in step reports.
pub const SIZE_TERM: &str = "size";

/// One searched layer.
#[derive(Debug, Clone)]
struct SearchedLayer {
    /// Stored bytes of each candidate.
    bytes: Vec<f64>,
    weights: usize,
}

/// One-stage mixed precision as a [`CompressionMethod`].
#[derive(Debug, Clone)]
pub struct MixedPrecision {
    recipe: MixedPrecisionRecipe,
    candidates: Vec<LsqSpec>,
    init: StepInit,
    seed: u64,
    steps: usize,
    layers: Vec<SearchedLayer>,
    /// Lagrange multiplier of the size constraint.
    multiplier: f64,
    /// The settled candidate of every searched layer, once settling started.
    settled: Option<Vec<usize>>,
}

/// Stored bytes (codes + f16 scales) of a `rows x cols` matrix at `spec`.
pub fn stored_bytes(spec: LsqSpec, rows: usize, cols: usize) -> Result<usize> {
    let format = PackedFormat::default_for(QuantFormat {
        scheme: Scheme::Symmetric { bits: spec.bits },
        granularity: spec.granularity(),
    });
    format
        .total_bytes(rows, cols)
        .ok_or_else(|| Error::config("mixed precision", "matrix size overflows"))
}

impl MixedPrecision {
    /// The method for `recipe`; `group` and `init` are `quant.group` and `quant.init`, `seed`
    /// seeds the Gumbel noise, `steps` is the run length (for the temperature schedule).
    pub fn new(
        recipe: MixedPrecisionRecipe,
        group: Option<usize>,
        init: StepInit,
        seed: u64,
        steps: usize,
    ) -> Self {
        let candidates = recipe
            .candidates
            .iter()
            .map(|&bits| LsqSpec { bits, group })
            .collect();
        Self {
            recipe,
            candidates,
            init,
            seed,
            steps,
            layers: Vec::new(),
            multiplier: 0.0,
            settled: None,
        }
    }

    /// The first step trained on the settled map (`None`: no settling).
    fn settle_start(&self) -> Option<usize> {
        let settle = self.recipe.settle_steps;
        (settle > 0).then(|| self.steps.saturating_sub(settle))
    }

    /// Argmax of every searched layer, fitted to the budget (the map extraction writes).
    fn fitted_choice(&self, model: &dyn Layers) -> Result<(Vec<usize>, usize)> {
        let searched = self.searched(model);
        let mut logits = Vec::with_capacity(searched.len());
        let mut choice = Vec::with_capacity(searched.len());
        for m in &searched {
            logits.push(
                m.logits
                    .as_tensor()
                    .to_dtype(DType::F32)?
                    .to_vec1::<f32>()?,
            );
            choice.push(m.chosen()?);
        }
        let snapped = match self.recipe.objective {
            SizeObjective::Budget => {
                snap_to_budget(&self.layers, &logits, &mut choice, self.budget_bytes())
            }
            SizeObjective::SqrtBits => 0,
        };
        Ok((choice, snapped))
    }

    /// Temperature at `step` (exponential from `tau_start` to `tau_end`).
    pub fn temperature(&self, step: usize) -> f64 {
        let t = if self.steps > 1 {
            (step.min(self.steps - 1)) as f64 / (self.steps - 1) as f64
        } else {
            1.0
        };
        self.recipe.tau_start * (self.recipe.tau_end / self.recipe.tau_start).powf(t)
    }

    /// The budget in bytes for the searched layers.
    pub fn budget_bytes(&self) -> f64 {
        let weights: usize = self.layers.iter().map(|l| l.weights).sum();
        self.recipe.budget_bits * weights as f64 / 8.0
    }

    /// The supernet weights of the searched layers, in the order of `self.layers`.
    fn searched<'a>(&self, model: &'a dyn Layers) -> Vec<&'a MixedWeight> {
        model
            .layers()
            .into_iter()
            .filter_map(|layer| match &layer.linear.weight {
                Weight::Mixed(m) => Some(m),
                _ => None,
            })
            .collect()
    }

    /// The search variant's size price `beta sum_l sum_n softmax(lambda_l / tau)_n sqrt(n)`.
    fn sqrt_bits_term(&self, student: &dyn Layers) -> Result<Vec<LossTerm>> {
        let prices: Vec<f32> = self
            .candidates
            .iter()
            .map(|c| (f64::from(c.bits).sqrt() * self.recipe.beta) as f32)
            .collect();
        let mut total: Option<Tensor> = None;
        for m in self.searched(student) {
            let prices = Tensor::from_vec(prices.clone(), prices.len(), m.logits.device())?;
            let term = (m.probabilities()? * prices)?.sum_all()?;
            total = Some(match total {
                Some(acc) => (acc + term)?,
                None => term,
            });
        }
        let Some(loss) = total else {
            return Ok(Vec::new());
        };
        let value = super::loss_value(&loss)?;
        Ok(vec![LossTerm {
            name: SIZE_TERM.into(),
            loss,
            value,
        }])
    }

    /// Bytes of the current argmax choice of every searched layer.
    fn chosen_bytes(&self, model: &dyn Layers) -> Result<f64> {
        let mut total = 0.0;
        for (m, layer) in self.searched(model).into_iter().zip(&self.layers) {
            total += layer.bytes[m.chosen()?];
        }
        Ok(total)
    }
}

impl CompressionMethod for MixedPrecision {
    fn name(&self) -> &'static str {
        "mixed-precision"
    }

    fn wrap(&mut self, student: &mut dyn Layers) -> Result<Vec<MethodParam>> {
        let zeros = vec![0f32; self.candidates.len()];
        let mut params = Vec::new();
        self.layers.clear();
        for layer in student.layers_mut() {
            if !layer.role.quantized_by_default() && !self.recipe.embedding {
                continue;
            }
            let (name, linear) = (layer.name, layer.linear);
            let w = linear.weight.to_dense()?.to_dtype(DType::F32)?;
            let (rows, cols) = w.dims2()?;
            let mixed = MixedWeight::init(&w, &self.candidates, self.init, &zeros)
                .map_err(|e| Error::config(&name, e.to_string()))?;
            let bytes = self
                .candidates
                .iter()
                .map(|&c| stored_bytes(c, rows, cols).map(|b| b as f64))
                .collect::<Result<_>>()?;
            for (suffix, var, group) in [
                ("weight", &mixed.latent, ParamGroup::Weights),
                ("weight_steps", &mixed.steps, ParamGroup::Scales),
                ("arch_logits", &mixed.logits, ParamGroup::Arch),
            ] {
                params.push(MethodParam {
                    name: format!("{name}.{suffix}"),
                    var: var.clone(),
                    group,
                });
            }
            self.layers.push(SearchedLayer {
                bytes,
                weights: rows * cols,
            });
            linear.weight = Weight::Mixed(mixed);
        }
        Ok(params)
    }

    fn learning_rate(&self, group: ParamGroup, recipe: &Recipe) -> GroupRate {
        match group {
            ParamGroup::Arch => GroupRate {
                lr: self.recipe.lr_arch,
                weight_decay: 0.0,
            },
            _ => recipe_rate(group, recipe),
        }
    }

    fn before_step(&mut self, student: &mut dyn Layers, step: usize) -> Result<()> {
        if self.settled.is_none() && self.settle_start().is_some_and(|start| step >= start) {
            let (choice, _) = self.fitted_choice(student)?;
            tracing::info!(step, "mixed precision: bit map settled");
            self.settled = Some(choice);
        }
        if let Some(choice) = &self.settled {
            // Idempotent, so a resumed run (whose layers start unsettled) settles them here.
            for (m, &k) in searched_mut(student).into_iter().zip(choice) {
                m.frozen = Some(k);
            }
        }
        let relaxation = Relaxation {
            tau: self.temperature(step),
            hard: self.recipe.hard,
        };
        // The noise of a step depends only on (seed, step): resumed runs draw the same.
        let mut rng = ChaCha8Rng::seed_from_u64(
            self.seed ^ (step as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        let k = self.candidates.len();
        for layer in student.layers_mut() {
            let linear = layer.linear;
            if let Weight::Mixed(m) = &mut linear.weight {
                let noise: Vec<f32> = (0..k)
                    .map(|_| {
                        let u: f64 = rng.random::<f64>().clamp(1e-12, 1.0 - 1e-12);
                        if self.recipe.gumbel {
                            (-(-u.ln()).ln()) as f32
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let noise = Tensor::from_vec(noise, k, m.logits.device())?;
                m.prepare_step(noise, relaxation)?;
            }
        }
        Ok(())
    }

    fn loss_terms(&self, student: &dyn Layers) -> Result<Vec<LossTerm>> {
        if self.settled.is_some() {
            // The map is fixed within the budget: nothing left to constrain.
            return Ok(Vec::new());
        }
        if self.recipe.objective == SizeObjective::SqrtBits {
            return self.sqrt_bits_term(student);
        }
        let budget = self.budget_bytes();
        let mut expected: Option<Tensor> = None;
        for (m, layer) in self.searched(student).into_iter().zip(&self.layers) {
            let bytes: Vec<f32> = layer.bytes.iter().map(|b| (b / budget) as f32).collect();
            let bytes = Tensor::from_vec(bytes, layer.bytes.len(), m.logits.device())?;
            // Value: the size of the argmax choice (what would ship); gradient: that of the
            // expected size under softmax(lambda) (straight-through).
            let soft = m.probabilities()?;
            let hot = one_hot(m.chosen()?, layer.bytes.len(), soft.device())?;
            let weights = (hot + (&soft - soft.detach())?)?;
            let e = (weights * bytes)?.sum_all()?;
            expected = Some(match expected {
                Some(acc) => (acc + e)?,
                None => e,
            });
        }
        let Some(ratio) = expected else {
            return Ok(Vec::new());
        };
        let value = super::loss_value(&ratio)?;
        let violation = (ratio - 1.0)?;
        Ok(vec![constraint_term(
            SIZE_TERM,
            &violation,
            value,
            self.multiplier,
            self.recipe.penalty / 2.0,
            1.0,
        )?])
    }

    fn after_step(
        &mut self,
        student: &mut dyn Layers,
        _step: usize,
        terms: &BTreeMap<String, f64>,
    ) -> Result<()> {
        for layer in student.layers_mut() {
            let linear = layer.linear;
            if let Weight::Mixed(m) = &mut linear.weight {
                m.end_step();
            }
        }
        if self.recipe.objective == SizeObjective::Budget {
            if let Some(ratio) = terms.get(SIZE_TERM) {
                self.multiplier += self.recipe.lr_multiplier * (ratio - 1.0);
            }
        }
        Ok(())
    }

    fn metrics(&self, student: &dyn Layers) -> Result<BTreeMap<String, f64>> {
        let weights: usize = self.layers.iter().map(|l| l.weights).sum();
        let mut out = BTreeMap::new();
        out.insert("multiplier".into(), self.multiplier);
        if let Some(m) = self.searched(student).first() {
            out.insert("tau".into(), m.relaxation.tau);
        }
        out.insert(
            "argmax_bits".into(),
            self.chosen_bytes(student)? * 8.0 / weights.max(1) as f64,
        );
        Ok(out)
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "multiplier": self.multiplier, "settled": self.settled })
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        self.multiplier = state["multiplier"].as_f64().ok_or_else(|| {
            Error::config("checkpoint", "mixed-precision state has no `multiplier`")
        })?;
        self.settled = match state.get("settled") {
            None | Some(serde_json::Value::Null) => None,
            Some(v) => {
                let choice: Vec<usize> = serde_json::from_value(v.clone()).map_err(|e| {
                    Error::config("checkpoint", format!("mixed-precision `settled`: {e}"))
                })?;
                if choice.len() != self.layers.len()
                    || choice.iter().any(|&k| k >= self.candidates.len())
                {
                    return Err(Error::config(
                        "checkpoint",
                        format!(
                            "mixed-precision `settled` holds {} choices for {} searched layers \
                             of {} candidates",
                            choice.len(),
                            self.layers.len(),
                            self.candidates.len()
                        ),
                    ));
                }
                Some(choice)
            }
        };
        Ok(())
    }

    fn extract(&self, shipped: &mut dyn Layers) -> Result<Extracted> {
        let (choice, snapped) = match &self.settled {
            Some(choice) => (choice.clone(), 0),
            None => self.fitted_choice(shipped)?,
        };
        let mut layers = Vec::new();
        let mut choices = Vec::new();
        let (mut bytes, mut weights) = (0usize, 0usize);
        let mut searched_index = 0;
        for layer in shipped.layers_mut() {
            let (name, linear) = (layer.name, layer.linear);
            let Weight::Mixed(m) = &linear.weight else {
                layers.push((name, LayerFormat::Float));
                continue;
            };
            let k = choice[searched_index];
            searched_index += 1;
            let probabilities: Vec<f32> = m.probabilities()?.to_vec1()?;
            let chosen = m.candidate(k)?;
            let (rows, cols) = chosen.dims();
            bytes += stored_bytes(chosen.spec, rows, cols)?;
            weights += rows * cols;
            let format = LayerFormat::uniform(chosen.spec.bits, chosen.spec.group);
            choices.push(serde_json::json!({
                "layer": name,
                "bits": chosen.spec.bits,
                "argmax_bits": m.candidates[m.chosen()?].bits,
                "probabilities": probabilities,
            }));
            linear.set_packed(chosen.to_packed()?);
            layers.push((name, format));
        }
        let achieved_bits = bytes as f64 * 8.0 / weights.max(1) as f64;
        Ok(Extracted {
            layers,
            report: serde_json::json!({
                "objective": self.recipe.objective,
                "budget_bits": self.recipe.budget_bits,
                "beta": self.recipe.beta,
                "achieved_bits": achieved_bits,
                "quantized_bytes": bytes,
                "quantized_weights": weights,
                "multiplier": self.multiplier,
                "candidates": self.recipe.candidates,
                "snapped_layers": snapped,
                "settled": self.settled.is_some(),
                "choices": choices,
            }),
        })
    }
}

/// The supernet weights of `model`'s searched layers, mutably, in layer order.
fn searched_mut(model: &mut dyn Layers) -> Vec<&mut MixedWeight> {
    model
        .layers_mut()
        .into_iter()
        .filter_map(|layer| match &mut layer.linear.weight {
            Weight::Mixed(m) => Some(m),
            _ => None,
        })
        .collect()
}

/// Fit the argmax choice to the budget: while it exceeds the budget, step a layer down to a
/// cheaper candidate (the move that gives up the least logit per byte saved); then, while a move
/// to a dearer candidate still fits, take the one that gives up the least logit per byte added.
/// Returns how many moves were made (0 when training already landed on the budget).
fn snap_to_budget(
    layers: &[SearchedLayer],
    logits: &[Vec<f32>],
    choice: &mut [usize],
    budget: f64,
) -> usize {
    let mut total: f64 = layers
        .iter()
        .zip(choice.iter())
        .map(|(l, &k)| l.bytes[k])
        .sum();
    let mut moves = 0;
    // `delta` < 0: cheaper moves (only while over budget); > 0: dearer moves that fit.
    let best_move = |choice: &[usize], total: f64, cheaper: bool| {
        let mut best: Option<(f64, usize, usize)> = None;
        for (i, layer) in layers.iter().enumerate() {
            let current = choice[i];
            for (k, &b) in layer.bytes.iter().enumerate() {
                let delta = b - layer.bytes[current];
                let admissible = if cheaper {
                    delta < 0.0
                } else {
                    delta > 0.0 && total + delta <= budget
                };
                if !admissible {
                    continue;
                }
                let cost = f64::from(logits[i][current] - logits[i][k]) / delta.abs();
                if best.is_none_or(|(c, _, _)| cost < c) {
                    best = Some((cost, i, k));
                }
            }
        }
        best
    };
    while total > budget {
        let Some((_, i, k)) = best_move(choice, total, true) else {
            break;
        };
        total += layers[i].bytes[k] - layers[i].bytes[choice[i]];
        choice[i] = k;
        moves += 1;
    }
    while let Some((_, i, k)) = best_move(choice, total, false) {
        total += layers[i].bytes[k] - layers[i].bytes[choice[i]];
        choice[i] = k;
        moves += 1;
    }
    moves
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stored_bytes_follow_the_packed_layouts() {
        let spec = |bits| LsqSpec {
            bits,
            group: Some(64),
        };
        // g64: codes + one f16 scale per 64 weights.
        assert_eq!(stored_bytes(spec(4), 2, 128).unwrap(), 2 * (2 * 32 + 2 * 2));
        assert_eq!(stored_bytes(spec(3), 1, 64).unwrap(), 24 + 2);
        assert_eq!(stored_bytes(spec(8), 1, 64).unwrap(), 64 + 2);
    }
}
