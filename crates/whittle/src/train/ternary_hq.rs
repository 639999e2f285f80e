//! `method = "ternary-hq"`: ternary training of every block linear layer by hyperspherical
//! quantization (SEEDS.md, method 2; Liu et al. 2023, "Hyperspherical Quantization: Toward
//! Smaller and More Accurate Models", WACV), with the token embedding at a few bits by LSQ.
//!
//! - **Hyperspherical latent weights** with a learned row norm and the **cosine-optimal ternary
//!   projection** ([`crate::nn::ternary`]); the straight-through estimator passes the gradient
//!   of the ternary weight to the unit latent row. Distillation from the float model is the
//!   trainer's (KL on the decoder, hidden-state distances), as for every method.
//! - **Pruning.** A cap on each row's nonzeros, `(1 - s) n`, with `s` ramped from 0 to
//!   `target_sparsity` by the cubic schedule of Zhu & Gupta (2017) between `prune_start` and
//!   `prune_end` (fractions of the run). The cosine-optimal projection picks its own support
//!   under the cap, so rows that are already sparser are not pruned further.
//! - **Re-initialisation.** Every `reinit_every` steps the latent moves a fraction
//!   `reinit_strength` of the way to its ternary projection ([`TernaryWeight::reinitialize`]),
//!   so forward (ternary) and backward (latent) weights agree more closely.
//!
//! HQ's own hyperparameters and rules were not available (SEEDS.md section 2.3): the schedule,
//! the re-initialisation rule, the per-row granularity and the defaults are this
//! implementation's choices, documented in `docs/ternary.md`. With `hyperspherical = false` and
//! `projection = "twn"` the same method is the TWN-initialised ternary QAT baseline with a
//! learned per-row scale; `reinit_every = 0` and `target_sparsity = 0` give the ablations.
//!
//! The method has no state of its own: the cap and the re-initialisations are functions of the
//! step, and the ternary directions are recomputed from the latent before every step, so a
//! resumed run continues exactly.

use std::collections::BTreeMap;

use candle_core::DType;
use whittle_kernels::Layout;

use super::method::{pack_lsq, wrap_lsq, CompressionMethod, Extracted, MethodParam};
use super::optim::ParamGroup;
use super::recipe::TernaryRecipe;
use crate::compress::bitmap::LayerFormat;
use crate::error::{Error, Result};
use crate::models::{LayerRole, Layers};
use crate::nn::{LsqSpec, StepInit, TernarySpec, TernaryWeight, Weight};

/// Ternary training as a [`CompressionMethod`].
#[derive(Debug, Clone)]
pub struct TernaryHq {
    recipe: TernaryRecipe,
    layout: Layout,
    steps: usize,
    /// The step whose cap the student's directions hold (not checkpointed: a resumed run
    /// recomputes them).
    capped_for: Option<usize>,
}

impl TernaryHq {
    /// The method of `recipe` over a run of `steps` optimizer steps.
    pub fn new(recipe: TernaryRecipe, steps: usize) -> Result<Self> {
        let layout = recipe
            .packed_layout()
            .map_err(|e| Error::config("ternary.layout", e))?;
        Ok(Self {
            recipe,
            layout,
            steps,
            capped_for: None,
        })
    }

    fn spec(&self) -> TernarySpec {
        TernarySpec {
            hyperspherical: self.recipe.hyperspherical,
            projection: self.recipe.projection,
        }
    }

    /// Sets every ternary layer's nonzero cap for `step` and recomputes its projection.
    fn apply_cap(&mut self, student: &mut dyn Layers, step: usize) -> Result<()> {
        if self.capped_for == Some(step) {
            return Ok(());
        }
        self.capped_for = Some(step);
        let sparsity = self.recipe.sparsity_at(step, self.steps);
        for layer in student.layers_mut() {
            if let Weight::Ternary(t) = &mut layer.linear.weight {
                let cols = t.dims().1;
                t.max_nonzero = (((1.0 - sparsity) * cols as f64).floor() as usize).max(1);
                t.refresh()?;
            }
        }
        Ok(())
    }

    fn layer_format(&self) -> LayerFormat {
        LayerFormat::Ternary {
            group: None,
            trits5: self.layout == Layout::Trits5,
            sparse: self.layout == Layout::TernarySparse,
        }
    }
}

impl CompressionMethod for TernaryHq {
    fn name(&self) -> &'static str {
        "ternary-hq"
    }

    fn wrap(&mut self, student: &mut dyn Layers) -> Result<Vec<MethodParam>> {
        let mut params = Vec::new();
        let spec = self.spec();
        for layer in student.layers_mut() {
            let (name, role, linear) = (layer.name, layer.role, layer.linear);
            if role == LayerRole::TokenEmbedding {
                if self.recipe.embedding_bits != 0 {
                    let lsq = LsqSpec {
                        bits: self.recipe.embedding_bits,
                        group: None,
                    };
                    params.extend(wrap_lsq(&name, linear, lsq, StepInit::AbsMax)?);
                }
                continue;
            }
            let w = linear.weight.to_dense()?.to_dtype(DType::F32)?;
            let t =
                TernaryWeight::init(&w, spec).map_err(|e| Error::config(&name, e.to_string()))?;
            params.push(MethodParam {
                name: format!("{name}.weight"),
                var: t.latent.clone(),
                group: ParamGroup::Weights,
            });
            params.push(MethodParam {
                name: format!("{name}.weight_scale"),
                var: t.scale.clone(),
                group: ParamGroup::Scales,
            });
            linear.weight = Weight::Ternary(t);
        }
        if params.is_empty() {
            return Err(Error::config(
                "ternary-hq",
                "the model has no linear layer to train",
            ));
        }
        Ok(params)
    }

    fn ready_to_ship(&self, steps_done: usize) -> bool {
        // The last trained step (index steps_done - 1) held the full sparsity cap.
        self.recipe
            .sparsity_at(steps_done.saturating_sub(1), self.steps)
            >= self.recipe.target_sparsity
    }

    fn before_step(&mut self, student: &mut dyn Layers, step: usize) -> Result<()> {
        self.apply_cap(student, step)?;
        let every = self.recipe.reinit_every;
        if every > 0 && step > 0 && step.is_multiple_of(every) {
            for layer in student.layers_mut() {
                if let Weight::Ternary(t) = &mut layer.linear.weight {
                    t.reinitialize(self.recipe.reinit_strength)?;
                }
            }
        }
        Ok(())
    }

    fn after_step(
        &mut self,
        student: &mut dyn Layers,
        step: usize,
        _terms: &BTreeMap<String, f64>,
    ) -> Result<()> {
        // The directions follow the updated latent, so dev scoring and extraction between
        // steps see the weights the next step will train.
        self.apply_cap(student, step + 1)
    }

    fn metrics(&self, student: &dyn Layers) -> Result<BTreeMap<String, f64>> {
        let (mut zeros, mut weights, mut cosine, mut layers) = (0.0, 0usize, 0.0, 0usize);
        for layer in student.layers() {
            if let Weight::Ternary(t) = &layer.linear.weight {
                let (rows, cols) = t.dims();
                zeros += t.sparsity()? * (rows * cols) as f64;
                weights += rows * cols;
                cosine += t.mean_cosine()?;
                layers += 1;
            }
        }
        let mut out = BTreeMap::new();
        if weights > 0 {
            out.insert("sparsity".into(), zeros / weights as f64);
            out.insert("latent_cosine".into(), cosine / layers as f64);
        }
        Ok(out)
    }

    fn extract(&self, shipped: &mut dyn Layers) -> Result<Extracted> {
        let mut layers = Vec::new();
        let (mut zeros, mut weights, mut code_bytes) = (0usize, 0usize, 0usize);
        for layer in shipped.layers_mut() {
            let (name, linear) = (layer.name, layer.linear);
            let format = match &linear.weight {
                Weight::Ternary(t) => {
                    let packed = t.to_packed(self.layout)?;
                    let (rows, cols) = t.dims();
                    weights += rows * cols;
                    zeros += packed.unpack().codes().iter().filter(|&&c| c == 1).count();
                    code_bytes += packed.stored_bytes();
                    linear.set_packed(packed);
                    self.layer_format()
                }
                _ => pack_lsq(linear)?.unwrap_or(LayerFormat::Float),
            };
            layers.push((name, format));
        }
        let report = serde_json::json!({
            "ternary_weights": weights,
            "ternary_sparsity": zeros as f64 / weights.max(1) as f64,
            "ternary_bytes": code_bytes,
            "ternary_bits_per_weight": code_bytes as f64 * 8.0 / weights.max(1) as f64,
            // The floor of any lossless layout of i.i.d. codes at this sparsity.
            "ternary_entropy_bits": whittle_kernels::ternary::ternary_entropy_bits(
                zeros as f64 / weights.max(1) as f64
            ),
            "layout": self.recipe.layout,
        });
        Ok(Extracted { layers, report })
    }
}
