//! `method = "prune-l0"`: structured pruning with L0 hard-concrete gates, a Lagrangian on the
//! expected sparsity, and distillation from the unpruned model (SEEDS.md, method 3), physically
//! removed at extraction.
//!
//! - **Gates** ([`crate::nn::gate`]) on attention heads and FFN units (one gate per unit, on
//!   its input columns of the module's output matrix), on whole attention and FFN modules (their
//!   residual branch, bias included) and on whole layers (a log-alpha shared by the layer's
//!   modules). Each kind can be switched off in the recipe. Every block matrix keeps training
//!   as float; the token embedding, positions, norms and biases stay frozen.
//! - **Expected size.** With `P(.)` the keep probability of a gate, a module's expected
//!   parameters are `P(layer) P(module) (module_parameters + unit_parameters sum_u P(u))`; the
//!   expected sparsity `s` is one minus their sum over the model's prunable parameters.
//! - **Lagrangian** (as in Wang et al. 2020, "Structured Pruning of Large Language Models", and
//!   CoFi, Xia et al. 2022): the loss gains `U (lambda1 (s - t) + lambda2 (s - t)^2)` with the
//!   target `t` ramped linearly from 0 to `target_sparsity` over the first `warmup` of the run,
//!   and the multipliers follow gradient ascent after every step, `lambda1 += lr_lambda1 (s -
//!   t)`, `lambda2 += lr_lambda2 (s - t)^2`, so the target is met instead of traded away. Three
//!   choices of ours, each measured (docs/pruning.md): the factor `U`, the number of unit gates,
//!   because each gate's share of the size gradient is about `1 / U` (without it, real tiny.en
//!   with 12,000 gates had moved 0.9 points toward a 31 % target after 90 steps); separate rates
//!   1000x apart, because with one rate the linear multiplier winds up while the gates (AdamW,
//!   starting nearly always on) have not moved yet, and the sparsity then overshoots by 15-20
//!   points; module and layer gates off by default, because the optimizer parks such single
//!   gates near keep probability 0.5, where the expected sparsity meets the target while the
//!   deterministic extraction keeps most of the model.
//! - **Distillation** is the trainer's: KL on the decoder's token distributions and the
//!   recipe's hidden-state terms (L1 and cosine at chosen encoder layers), each optionally
//!   through a learned linear map of the student's state (`projection = true`, CoFi's layerwise
//!   distillation; [`crate::train::trainer::HiddenProjections`]). The student keeps the
//!   teacher's model width, so the map starts at the identity.
//! - **Extraction.** Deterministic gates ([`crate::nn::gate::deterministic_gates`]): each group
//!   keeps its expected number of units, ranked by keep probability, at their mean gate value;
//!   those values are folded into the weights and everything else is sliced away
//!   ([`Layers::prune_modules`]). The smaller model computes what the gated model computes with
//!   these gates.
//!
//! The noise of a step depends only on the seed and the step, and the multipliers are the
//! method's checkpointed state, so a resumed run continues exactly. Between steps (dev scoring,
//! extraction) the gates are deterministic.

use std::collections::BTreeMap;

use candle_core::{DType, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::method::{
    constraint_term, CompressionMethod, Extracted, GroupRate, LossTerm, MethodParam,
};
use super::optim::ParamGroup;
use super::recipe::{PruneRecipe, Recipe};
use crate::compress::bitmap::LayerFormat;
use crate::compress::prune::{KeptUnit, ModuleKeep};
use crate::error::{Error, Result};
use crate::models::{LayerRole, Layers, PrunableModule, UnitKind};
use crate::nn::gate::{deterministic_gates, keep_probability, unit_multiple, Gate, GatedWeight};
use crate::nn::Weight;

/// Name of the sparsity term in step reports (its value is `s - t`).
pub const SPARSITY_TERM: &str = "sparsity";

/// L0 structured pruning as a [`CompressionMethod`].
#[derive(Debug, Clone)]
pub struct PruneL0 {
    recipe: PruneRecipe,
    seed: u64,
    steps: usize,
    /// The modules gated, in model order (set by `wrap`).
    modules: Vec<PrunableModule>,
    /// Prunable parameters of the unpruned model.
    total: usize,
    /// Of those, the parameters of modules the recipe does not gate.
    ungated: usize,
    /// The step being trained (for the target ramp).
    step: usize,
    lambda1: f64,
    lambda2: f64,
}

impl PruneL0 {
    /// The method of `recipe` over a run of `steps` steps, with noise seeded by `seed`.
    pub fn new(recipe: PruneRecipe, seed: u64, steps: usize) -> Self {
        Self {
            recipe,
            seed,
            steps,
            modules: Vec::new(),
            total: 0,
            ungated: 0,
            step: 0,
            lambda1: 0.0,
            lambda2: 0.0,
        }
    }

    /// The sparsity target at `step`: linear from 0 to the target over the warm-up.
    pub fn target_at(&self, step: usize) -> f64 {
        let warmup = self.recipe.warmup * self.steps as f64;
        if warmup <= 0.0 {
            return self.recipe.target_sparsity;
        }
        self.recipe.target_sparsity * (step as f64 / warmup).min(1.0)
    }

    /// The gated weight of every module, in [`Self::modules`] order.
    fn gated<'a>(&self, model: &'a dyn Layers) -> Result<Vec<&'a GatedWeight>> {
        let layers = model.layers();
        self.modules
            .iter()
            .map(|m| {
                layers
                    .iter()
                    .find(|l| l.name == m.output)
                    .and_then(|l| match &l.linear.weight {
                        Weight::Gated(g) => Some(g),
                        _ => None,
                    })
                    .ok_or_else(|| Error::config(&m.output, "is not gated"))
            })
            .collect()
    }

    /// Expected prunable parameters as a fraction of the unpruned count (differentiable).
    fn expected_density(&self, model: &dyn Layers) -> Result<Option<Tensor>> {
        let mut total: Option<Tensor> = None;
        for (m, g) in self.modules.iter().zip(self.gated(model)?) {
            let units = keep_probability(g.units.log_alpha.as_tensor())?.sum_all()?;
            let mut kept = ((units * m.unit_parameters as f64)? + m.module_parameters as f64)?;
            for gate in [&g.module, &g.layer].into_iter().flatten() {
                kept = (kept * keep_probability(gate.log_alpha.as_tensor())?.sum_all()?)?;
            }
            total = Some(match total {
                Some(t) => (t + kept)?,
                None => kept,
            });
        }
        Ok(match total {
            Some(t) => Some(((t + self.ungated as f64)? / self.total.max(1) as f64)?),
            None => None,
        })
    }

    /// Unit gates (heads and FFN units) in the gated modules.
    fn gated_units(&self) -> usize {
        self.modules.iter().map(|m| m.units).sum()
    }

    /// The deterministic keep list of every module (what extraction applies).
    fn keep_list(&self, model: &dyn Layers) -> Result<BTreeMap<String, ModuleKeep>> {
        let first = |gate: &Option<Gate>| -> Result<f32> {
            Ok(match gate {
                Some(g) => deterministic_gates(&g.log_alpha.as_tensor().to_vec1::<f32>()?)[0],
                None => 1.0,
            })
        };
        let mut out = BTreeMap::new();
        for (m, g) in self.modules.iter().zip(self.gated(model)?) {
            let branch = first(&g.module)? * first(&g.layer)?;
            let units = g.units.kept()?;
            // A module whose kept units are all 0 is removed, bias included, as the
            // deterministic gated forward removes it.
            let all_zero = units.iter().flatten().all(|&z| z == 0.0);
            let kept: Vec<KeptUnit> = if branch == 0.0 || all_zero {
                Vec::new()
            } else {
                units
                    .iter()
                    .enumerate()
                    .filter_map(|(index, z)| z.map(|scale| KeptUnit { index, scale }))
                    .collect()
            };
            out.insert(
                m.name.clone(),
                ModuleKeep {
                    units: kept,
                    branch_scale: branch,
                },
            );
        }
        Ok(out)
    }

    /// Prunable parameters the keep list retains.
    fn kept_parameters(&self, keep: &BTreeMap<String, ModuleKeep>) -> usize {
        self.ungated
            + self
                .modules
                .iter()
                .map(|m| match keep.get(&m.name) {
                    Some(k) if !k.units.is_empty() => {
                        m.module_parameters + m.unit_parameters * k.units.len()
                    }
                    _ => 0,
                })
                .sum::<usize>()
    }

    /// Set every gate's noise for `step`, or clear it (deterministic gates).
    fn set_noise(&self, student: &mut dyn Layers, step: Option<usize>) -> Result<()> {
        // The noise of a step depends only on (seed, step): resumed runs draw the same. A layer
        // gate is one random variable: its modules share one draw.
        let mut rng = step.map(|s| {
            ChaCha8Rng::seed_from_u64(
                self.seed ^ (s as u64 + 1).wrapping_mul(0xD1B5_4A32_D192_ED03),
            )
        });
        let mut draw = |n: usize, device: &candle_core::Device| -> Result<Option<Tensor>> {
            let Some(rng) = rng.as_mut() else {
                return Ok(None);
            };
            let u: Vec<f32> = (0..n)
                .map(|_| rng.random::<f64>().clamp(1e-6, 1.0 - 1e-6) as f32)
                .collect();
            Ok(Some(Tensor::from_vec(u, n, device)?))
        };
        let mut layer_noise: BTreeMap<String, Option<Tensor>> = BTreeMap::new();
        let names: Vec<(String, String)> = self
            .modules
            .iter()
            .map(|m| (m.output.clone(), m.layer.clone()))
            .collect();
        for layer in student.layers_mut() {
            let Some((_, layer_name)) = names.iter().find(|(o, _)| *o == layer.name) else {
                continue;
            };
            let Weight::Gated(g) = &mut layer.linear.weight else {
                continue;
            };
            let device = g.weight.as_tensor().device().clone();
            g.units.noise = draw(g.units.log_alpha.as_tensor().dim(0)?, &device)?;
            if let Some(m) = &mut g.module {
                m.noise = draw(1, &device)?;
            }
            if let Some(l) = &mut g.layer {
                if !layer_noise.contains_key(layer_name) {
                    let noise = draw(1, &device)?;
                    layer_noise.insert(layer_name.clone(), noise);
                }
                l.noise = layer_noise[layer_name].clone();
            }
        }
        Ok(())
    }
}

impl CompressionMethod for PruneL0 {
    fn name(&self) -> &'static str {
        "prune-l0"
    }

    fn wrap(&mut self, student: &mut dyn Layers) -> Result<Vec<MethodParam>> {
        let r = self.recipe.clone();
        let all = student.prunable_modules();
        self.modules = all
            .iter()
            .filter(|m| {
                let kind = match m.kind {
                    UnitKind::Heads => r.gate_heads,
                    UnitKind::FeedForward => r.gate_ffn,
                    UnitKind::ConvChannels => r.gate_conv,
                };
                kind && r
                    .under
                    .as_ref()
                    .is_none_or(|p| m.name.starts_with(p.as_str()))
            })
            .cloned()
            .collect();
        if self.modules.is_empty() {
            return Err(Error::config(
                "prune-l0",
                "the model has no prunable module (or the recipe gates none: check gate_heads, gate_ffn, gate_conv and under)",
            ));
        }
        let size = |m: &PrunableModule| m.module_parameters + m.unit_parameters * m.units;
        self.total = all.iter().map(size).sum();
        self.ungated = self.total - self.modules.iter().map(size).sum::<usize>();
        let mut params = Vec::new();
        let mut layer_gates: BTreeMap<String, Gate> = BTreeMap::new();
        let mut gate_params = Vec::new();
        for layer in student.layers_mut() {
            let (name, role, linear) = (layer.name, layer.role, layer.linear);
            if role == LayerRole::TokenEmbedding {
                continue;
            }
            let w = linear.weight.to_dense()?.to_dtype(DType::F32)?;
            let var = Var::from_tensor(&w.copy()?)?;
            params.push(MethodParam {
                name: format!("{name}.weight"),
                var: var.clone(),
                group: ParamGroup::Weights,
            });
            let Some(m) = self.modules.iter().find(|m| m.output == name) else {
                linear.weight = Weight::Float(var.as_tensor().clone());
                continue;
            };
            let device = w.device();
            let mut units = Gate::new(m.units, r.init_log_alpha, device)?;
            units.multiple = unit_multiple(r.align, m.unit_width);
            gate_params.push(MethodParam {
                name: format!("{}.unit_gates", m.name),
                var: units.log_alpha.clone(),
                group: ParamGroup::Arch,
            });
            let module = if r.gate_modules {
                let g = Gate::new(1, r.init_log_alpha, device)?;
                gate_params.push(MethodParam {
                    name: format!("{}.module_gate", m.name),
                    var: g.log_alpha.clone(),
                    group: ParamGroup::Arch,
                });
                Some(g)
            } else {
                None
            };
            let layer_gate = if r.gate_layers {
                if !layer_gates.contains_key(&m.layer) {
                    let g = Gate::new(1, r.init_log_alpha, device)?;
                    gate_params.push(MethodParam {
                        name: format!("{}.layer_gate", m.layer),
                        var: g.log_alpha.clone(),
                        group: ParamGroup::Arch,
                    });
                    layer_gates.insert(m.layer.clone(), g);
                }
                layer_gates.get(&m.layer).cloned()
            } else {
                None
            };
            linear.weight = Weight::Gated(GatedWeight {
                weight: var,
                unit_width: m.unit_width,
                units,
                module,
                layer: layer_gate,
            });
        }
        params.extend(gate_params);
        Ok(params)
    }

    fn learning_rate(&self, group: ParamGroup, recipe: &Recipe) -> GroupRate {
        match group {
            ParamGroup::Arch => GroupRate {
                lr: self.recipe.lr_gates,
                weight_decay: 0.0,
            },
            other => super::method::recipe_rate(other, recipe),
        }
    }

    fn ready_to_ship(&self, steps_done: usize) -> bool {
        // The last trained step (index steps_done - 1) held the full target.
        self.target_at(steps_done.saturating_sub(1)) >= self.recipe.target_sparsity
    }

    fn before_step(&mut self, student: &mut dyn Layers, step: usize) -> Result<()> {
        self.step = step;
        self.set_noise(student, Some(step))
    }

    fn loss_terms(&self, student: &dyn Layers) -> Result<Vec<LossTerm>> {
        let Some(density) = self.expected_density(student)? else {
            return Ok(Vec::new());
        };
        let target = self.target_at(self.step);
        // s - t with s = 1 - density.
        let violation = ((density.neg()? + 1.0)? - target)?;
        let value = super::loss_value(&violation)?;
        // Each gate's share of the size gradient is about 1 / (gated units): scaled by their
        // number, the multipliers need the same magnitude on a model of any size.
        let units = self.gated_units() as f64;
        Ok(vec![constraint_term(
            SPARSITY_TERM,
            &violation,
            value,
            self.lambda1,
            self.lambda2,
            units,
        )?])
    }

    fn after_step(
        &mut self,
        student: &mut dyn Layers,
        _step: usize,
        terms: &BTreeMap<String, f64>,
    ) -> Result<()> {
        if let Some(v) = terms.get(SPARSITY_TERM) {
            self.lambda1 += self.recipe.lr_lambda1 * v;
            self.lambda2 += self.recipe.lr_lambda2 * v * v;
        }
        self.set_noise(student, None)
    }

    fn metrics(&self, student: &dyn Layers) -> Result<BTreeMap<String, f64>> {
        let mut out = BTreeMap::new();
        if let Some(d) = self.expected_density(student)? {
            out.insert("expected_sparsity".into(), 1.0 - super::loss_value(&d)?);
        }
        let keep = self.keep_list(student)?;
        out.insert(
            "extracted_sparsity".into(),
            1.0 - self.kept_parameters(&keep) as f64 / self.total.max(1) as f64,
        );
        out.insert("target".into(), self.target_at(self.step));
        out.insert("lambda1".into(), self.lambda1);
        out.insert("lambda2".into(), self.lambda2);
        Ok(out)
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "lambda1": self.lambda1, "lambda2": self.lambda2 })
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        let get = |k: &str| {
            state[k]
                .as_f64()
                .ok_or_else(|| Error::config("checkpoint", format!("prune-l0 state has no `{k}`")))
        };
        self.lambda1 = get("lambda1")?;
        self.lambda2 = get("lambda2")?;
        Ok(())
    }

    fn extract(&self, shipped: &mut dyn Layers) -> Result<Extracted> {
        let keep = self.keep_list(shipped)?;
        let kept = self.kept_parameters(&keep);
        // Trained weights as plain float tensors (no longer the optimizer's variables); gates
        // are folded by the pruning below.
        for layer in shipped.layers_mut() {
            let linear = layer.linear;
            let dense = match &linear.weight {
                Weight::Gated(g) => Some(g.weight.as_tensor().detach().copy()?),
                Weight::Float(w) => Some(w.detach().copy()?),
                _ => None,
            };
            if let Some(w) = dense {
                linear.weight = Weight::Float(w);
            }
        }
        shipped.prune_modules(&keep)?;
        let layers = shipped
            .layers()
            .into_iter()
            .map(|l| (l.name, LayerFormat::Float))
            .collect();
        let mut modules = serde_json::Map::new();
        for (name, k) in &keep {
            modules.insert(
                name.clone(),
                serde_json::json!({
                    "kept": k.units.iter().map(|u| u.index).collect::<Vec<_>>(),
                    "branch_scale": k.branch_scale,
                }),
            );
        }
        let report = serde_json::json!({
            "prunable_parameters": self.total,
            "kept_parameters": kept,
            "sparsity": 1.0 - kept as f64 / self.total.max(1) as f64,
            "target_sparsity": self.recipe.target_sparsity,
            "lambda1": self.lambda1,
            "lambda2": self.lambda2,
            "modules": modules,
        });
        Ok(Extracted { layers, report })
    }
}
