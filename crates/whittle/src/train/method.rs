//! The compression-method seam: what the trainer asks of a training-time compression method.
//!
//! The trainer owns the data, the teacher, the distillation losses, AdamW, the schedule, dev
//! scoring and checkpoints. A method owns what is specific to it:
//!
//! 1. [`CompressionMethod::wrap`]: replace the student's weights by the states it trains
//!    (fake-quantized, mixed, gated ...) and name the trainable parameters with their groups;
//! 2. [`CompressionMethod::learning_rate`]: the peak learning rate and weight decay of each
//!    group it uses (the trainer applies the recipe's schedule);
//! 3. [`CompressionMethod::before_step`] / [`CompressionMethod::after_step`]: act around each
//!    optimizer step (temperature schedules, noise, projections, multiplier updates);
//! 4. [`CompressionMethod::loss_terms`]: named terms added to the distillation loss;
//! 5. [`CompressionMethod::state`] / [`CompressionMethod::restore`] and
//!    [`CompressionMethod::state_tensors`] / [`CompressionMethod::restore_tensors`]: its own
//!    state beyond the optimizer's parameters (plain data, and tensors), saved in every
//!    checkpoint so a resumed run is bit-exact, and tensors with the best parameters;
//! 6. [`CompressionMethod::extract`]: the packed model and the format of every layer;
//! 7. [`CompressionMethod::ready_to_ship`]: whether its schedule has reached the compression the
//!    recipe asks for, so that a dev result may choose the parameters that ship (a checkpoint
//!    from a sparsity ramp's first half is better on dev because it is larger).
//!
//! Methods see the student only through [`Layers`] (its matrices with names and roles), so one
//! method serves every model family.
//!
//! A new method is a new module implementing this trait, plus its `method = "..."` name in
//! [`super::recipe::MethodKind`] and [`from_recipe`].

use std::collections::BTreeMap;

use candle_core::{Tensor, Var};

use super::optim::ParamGroup;
use super::recipe::{MethodKind, Recipe};
use crate::compress::bitmap::{BitMap, LayerFormat};
use crate::error::{Error, Result};
use crate::models::Layers;

/// A trainable parameter a method contributes.
#[derive(Debug, Clone)]
pub struct MethodParam {
    /// Stable name (checkpoint key), e.g. `model.encoder.layers.0.fc1.weight`.
    pub name: String,
    /// The variable the student reads.
    pub var: Var,
    /// Its learning-rate group.
    pub group: ParamGroup,
}

/// Peak learning rate and decoupled weight decay of a parameter group.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroupRate {
    /// Peak learning rate (the schedule scales it).
    pub lr: f64,
    /// AdamW weight decay.
    pub weight_decay: f64,
}

/// A named term of the training loss.
#[derive(Debug, Clone)]
pub struct LossTerm {
    /// Name in step reports and metrics, e.g. `size`.
    pub name: String,
    /// Added to the total loss (carries the gradient).
    pub loss: Tensor,
    /// The value reported for it, which the method reads back in
    /// [`CompressionMethod::after_step`] (for a constraint: the constraint's value, not the
    /// weighted term).
    pub value: f64,
}

/// The term `scale (linear v + quadratic v^2)` of a constraint whose violation is `v`
/// (differentiable), named `name` and reported by its value `value`: the augmented Lagrangian
/// the size-constrained methods add to the loss.
pub fn constraint_term(
    name: &str,
    violation: &Tensor,
    value: f64,
    linear: f64,
    quadratic: f64,
    scale: f64,
) -> Result<LossTerm> {
    let loss = (((violation * linear)? + (violation.sqr()? * quadratic)?)? * scale)?;
    Ok(LossTerm {
        name: name.into(),
        loss,
        value,
    })
}

/// What a finished method hands to the writer of the output file, besides the model it packed
/// in place.
#[derive(Debug, Clone)]
pub struct Extracted {
    /// The format of every quantizable layer, in model order.
    pub layers: Vec<(String, LayerFormat)>,
    /// Method-specific facts recorded in the output header (achieved size, choices ...).
    pub report: serde_json::Value,
}

/// Replaces `linear`'s weight by an LSQ fake-quantized one at `spec` and returns its two
/// parameters (latent weight, steps) named after the layer `name`. Every method that trains a
/// layer with LSQ wraps it this way, so checkpoints name the parameters alike.
pub fn wrap_lsq(
    name: &str,
    linear: &mut crate::nn::Linear,
    spec: crate::nn::LsqSpec,
    init: crate::nn::StepInit,
) -> Result<[MethodParam; 2]> {
    let w = linear
        .weight
        .to_dense()?
        .to_dtype(candle_core::DType::F32)?;
    let fq = crate::nn::FakeQuant::init_with(&w, spec, init)
        .map_err(|e| Error::config(name, e.to_string()))?;
    let params = [
        MethodParam {
            name: format!("{name}.weight"),
            var: fq.latent.clone(),
            group: ParamGroup::Weights,
        },
        MethodParam {
            name: format!("{name}.weight_steps"),
            var: fq.steps.clone(),
            group: ParamGroup::Scales,
        },
    ];
    linear.weight = crate::nn::Weight::FakeQuant(fq);
    Ok(params)
}

/// Packs `linear`'s LSQ fake-quantized weight in place, exactly as trained, and returns its
/// format; `None` (and nothing changes) for any other weight.
pub fn pack_lsq(linear: &mut crate::nn::Linear) -> Result<Option<LayerFormat>> {
    let crate::nn::Weight::FakeQuant(fq) = &linear.weight else {
        return Ok(None);
    };
    let format = LayerFormat::uniform(fq.spec.bits, fq.spec.group);
    let packed = fq.to_packed()?;
    linear.set_packed(packed);
    Ok(Some(format))
}

/// The recipe's rates: `optim.lr_weights` with its weight decay for weights, `optim.lr_scales`
/// without decay for steps and (unless a method says otherwise) architecture parameters.
pub fn recipe_rate(group: ParamGroup, recipe: &Recipe) -> GroupRate {
    match group {
        ParamGroup::Weights => GroupRate {
            lr: recipe.optim.lr_weights,
            weight_decay: recipe.optim.weight_decay,
        },
        ParamGroup::Scales | ParamGroup::Arch => GroupRate {
            lr: recipe.optim.lr_scales,
            weight_decay: 0.0,
        },
    }
}

/// A training-time compression method (see the module docs for the order of the calls).
pub trait CompressionMethod {
    /// The recipe name of the method, e.g. `uniform-lsq`.
    fn name(&self) -> &'static str;

    /// Replace the weights this method trains in `student` (a copy of the teacher) and return
    /// the trainable parameters in a fixed order.
    fn wrap(&mut self, student: &mut dyn Layers) -> Result<Vec<MethodParam>>;

    /// Peak learning rate and weight decay of `group`, given the recipe.
    fn learning_rate(&self, group: ParamGroup, recipe: &Recipe) -> GroupRate {
        recipe_rate(group, recipe)
    }

    /// Before optimizer step `step` (0-based): set per-step state of the student.
    fn before_step(&mut self, _student: &mut dyn Layers, _step: usize) -> Result<()> {
        Ok(())
    }

    /// Terms added to the loss of each micro-batch.
    fn loss_terms(&self, _student: &dyn Layers) -> Result<Vec<LossTerm>> {
        Ok(Vec::new())
    }

    /// After optimizer step `step` (0-based), with the mean value of each loss term over the
    /// step's micro-batches.
    fn after_step(
        &mut self,
        _student: &mut dyn Layers,
        _step: usize,
        _terms: &BTreeMap<String, f64>,
    ) -> Result<()> {
        Ok(())
    }

    /// Figures to log with each step (expected size, temperature ...).
    fn metrics(&self, _student: &dyn Layers) -> Result<BTreeMap<String, f64>> {
        Ok(BTreeMap::new())
    }

    /// The method's own state (beyond the optimizer's parameters), saved in checkpoints.
    fn state(&self) -> serde_json::Value {
        serde_json::Value::Null
    }

    /// Restore what [`CompressionMethod::state`] saved.
    fn restore(&mut self, _state: &serde_json::Value) -> Result<()> {
        Ok(())
    }

    /// The method's own tensors (projections, multipliers ...) by name, saved with every
    /// checkpoint and with the best parameters.
    fn state_tensors(&self) -> Vec<(String, Tensor)> {
        Vec::new()
    }

    /// Restore what [`CompressionMethod::state_tensors`] saved: `load(name, current)` returns
    /// the saved tensor of that name, checked against the current one's shape and dtype.
    fn restore_tensors(
        &mut self,
        _load: &mut dyn FnMut(&str, &Tensor) -> Result<Tensor>,
    ) -> Result<()> {
        Ok(())
    }

    /// Turn `shipped` (a copy of the trained student) into the model as it ships, in place:
    /// packed weights where the method quantized.
    fn extract(&self, shipped: &mut dyn Layers) -> Result<Extracted>;

    /// Whether the student after `steps_done` optimizer steps is compressed as far as the recipe
    /// asks (its ramps finished), so it may be kept as the best dev checkpoint. The last step is
    /// always eligible; methods whose extraction always meets the target keep the default.
    fn ready_to_ship(&self, _steps_done: usize) -> bool {
        true
    }
}

/// The method a recipe asks for. `bit_map` is the recipe's `quant.bit_map`, already read.
pub fn from_recipe(recipe: &Recipe, bit_map: Option<BitMap>) -> Result<Box<dyn CompressionMethod>> {
    match recipe.method {
        MethodKind::Distill => Ok(Box::new(super::distill::Distill)),
        MethodKind::Admm => {
            let admm = recipe
                .admm
                .clone()
                .ok_or_else(|| Error::config("recipe", "method = \"admm\" needs [admm]"))?;
            Ok(Box::new(super::admm::Admm::new(
                admm,
                super::uniform::LayerSelection::new(recipe.quant.spec(), bit_map),
                recipe.schedule.steps,
            )))
        }
        MethodKind::UniformLsq => Ok(Box::new(match bit_map {
            Some(map) => super::uniform::UniformLsq::with_bit_map(map, recipe.quant.init),
            None => super::uniform::UniformLsq::uniform(recipe.quant.spec(), recipe.quant.init),
        })),
        MethodKind::MixedPrecision => {
            let mp = recipe.mixed_precision.clone().ok_or_else(|| {
                Error::config(
                    "recipe",
                    "method = \"mixed-precision\" needs [mixed_precision]",
                )
            })?;
            Ok(Box::new(super::mixed_precision::MixedPrecision::new(
                mp,
                recipe.quant.group,
                recipe.quant.init,
                recipe.train.seed,
                recipe.schedule.steps,
            )))
        }
        MethodKind::PruneL0 => {
            let prune = recipe
                .prune
                .clone()
                .ok_or_else(|| Error::config("recipe", "method = \"prune-l0\" needs [prune]"))?;
            Ok(Box::new(super::prune_l0::PruneL0::new(
                prune,
                recipe.train.seed,
                recipe.schedule.steps,
            )))
        }
        MethodKind::TernaryHq => {
            let ternary = recipe.ternary.clone().ok_or_else(|| {
                Error::config("recipe", "method = \"ternary-hq\" needs [ternary]")
            })?;
            Ok(Box::new(super::ternary_hq::TernaryHq::new(
                ternary,
                recipe.schedule.steps,
            )?))
        }
    }
}
