//! Hessian-trace sensitivity of each quantizable matrix (`whittle sensitivity --metric hessian`,
//! issue 13 part 1; method 4 of `../shared/SEEDS.md`): `Ω_i(b) = Tr(H_i) · ‖Q_b(W_i) − W_i‖²`.
//!
//! `H_i` is the Hessian, with respect to matrix `i`'s weights, of the distillation loss on the
//! data: the mean over scored token positions of `KL(p_float || p_model)` at temperature 1, the
//! float model being its own teacher (the loss of [`crate::train::loss::kl_divergence`], on the
//! training forward of the model family, [`crate::train::TrainModel::forward_train`]: Whisper or a
//! Llama language model). At the float weights this loss and its
//! gradient are zero and `H` is the Gauss-Newton (Fisher) matrix, positive semi-definite.
//!
//! **Trace.** Hutchinson's estimator with Rademacher probes: `Tr(H_i) = E[v_iᵀ (H v)_i]` for
//! `v` of independent ±1 entries. One probe covers every matrix at once: `v` spans all of them,
//! and the cross terms `v_iᵀ H_ij v_j` (`i != j`) vanish in expectation.
//!
//! **Hessian-vector products** by central finite differences of gradients:
//! `H v ≈ (∇L(W + ε v) − ∇L(W − ε v)) / 2ε`, one step for every matrix, `ε = δ · rms(W)` over all
//! quantizable weights (`δ` = `relative_step`, default 1e-2); matrix `i`'s estimate is
//! `v_i · (H v)_i`. (A step per matrix would scale the cross terms `v_iᵀ H_ij v_j` by
//! `ε_j / ε_i` and, measured on the test model, make the estimates much noisier.) candle records
//! no second derivatives of whittle's fused training ops, so double backward is not available;
//! the error of the difference is `O(ε²)` (the third derivative), and at `δ = 1e-2` the logits
//! move by about 1 %, far above the f32 rounding of the gradients.
//!
//! **Stopping.** After each probe the running mean of every matrix's estimate is compared with the
//! previous one; the estimate stops when every relative change is below `tolerance` (1e-3), or at
//! `max_probes`. Both conventions of the literature are reported: `Tr(H_i)` and `Tr(H_i) / n_i`.
//!
//! **Perturbation.** `‖Q_b(W_i) − W_i‖²` of the same symmetric round-to-nearest with one f16
//! scale per group that the `kl` metric and the packed format use, at each candidate `b`.

use candle_core::{DType, Tensor, Var};
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use super::sensitivity::{
    check_candidates, float_layers, quantized_values, swap_weight, CandidateScore, LayerSensitivity,
};
use crate::error::{Error, Result};
use crate::nn::Weight;
use crate::train::batch::{Batch, TrainExample};
use crate::train::loss::kl_divergence;
use crate::train::TrainModel;

/// How [`hessian_sensitivity`] estimates the traces.
#[derive(Debug, Clone)]
pub struct HessianOptions {
    /// Candidate bit widths.
    pub candidates: Vec<u8>,
    /// Group length of the scales.
    pub group: usize,
    /// Utterances per forward batch.
    pub batch_size: usize,
    /// Most Rademacher probes.
    pub max_probes: usize,
    /// Stop when every trace's running mean changes by less than this, relatively.
    pub tolerance: f64,
    /// Finite-difference step relative to each matrix's RMS weight.
    pub relative_step: f64,
    /// Seed of the probes.
    pub seed: u64,
}

impl Default for HessianOptions {
    fn default() -> Self {
        Self {
            candidates: vec![2, 3, 4, 5, 6, 8],
            group: 64,
            batch_size: 8,
            max_probes: 64,
            tolerance: 1e-3,
            relative_step: 1e-2,
            seed: 0,
        }
    }
}

/// How the traces were estimated, as recorded in the sensitivity file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HessianEstimate {
    /// How Hessian-vector products were formed.
    pub hessian_vector_products: String,
    /// `δ`: the step is `δ · rms(W)` over every quantizable weight.
    pub relative_step: f64,
    /// The step `ε` itself.
    pub step: f64,
    /// Probes used.
    pub probes: usize,
    /// The stopping tolerance on the relative change of the running means.
    pub tolerance: f64,
    /// Whether the tolerance was met before the probe limit.
    pub converged: bool,
    /// The largest relative change of a running mean at the last probe.
    pub last_relative_change: f64,
    /// Seed of the probes.
    pub seed: u64,
}

/// After each probe: how far the estimate is.
#[derive(Debug, Clone)]
pub struct HessianProgress {
    /// Probes done.
    pub probe: usize,
    /// Most probes.
    pub max_probes: usize,
    /// Largest relative change of a running mean at this probe.
    pub relative_change: f64,
}

/// The result of [`hessian_sensitivity`].
#[derive(Debug, Clone)]
pub struct HessianSensitivity {
    /// Per matrix, with `hessian_trace` set and each candidate's `hessian` (`Ω`) and
    /// `perturbation`.
    pub layers: Vec<LayerSensitivity>,
    /// Token positions the loss averages over.
    pub scored_tokens: usize,
    /// How the traces were estimated.
    pub estimate: HessianEstimate,
}

/// The loss gradient with respect to each of `weights` (installed as the quantizable matrices),
/// summed over `batches` with each batch weighted by its share of the scored tokens.
fn gradients<M: TrainModel>(
    model: &mut M,
    weights: &[Tensor],
    batches: &[(Batch, Tensor)],
    scored_tokens: usize,
) -> Result<Vec<Tensor>> {
    let vars: Vec<Var> = weights
        .iter()
        .map(Var::from_tensor)
        .collect::<candle_core::Result<_>>()?;
    for (index, var) in vars.iter().enumerate() {
        swap_weight(model, index, Weight::Float(var.as_tensor().clone()));
    }
    // A matrix the loss does not reach (no gradient recorded) keeps a zero gradient.
    let mut sums: Vec<Tensor> = vars
        .iter()
        .map(|v| v.as_tensor().zeros_like())
        .collect::<candle_core::Result<_>>()?;
    for (batch, teacher) in batches {
        let logits = model.forward_train(batch, &[])?.logits;
        let share = batch.target_count() as f64 / scored_tokens.max(1) as f64;
        let loss = (kl_divergence(&logits, teacher, 1.0)? * share)?;
        let grads = loss.backward()?;
        for (sum, var) in sums.iter_mut().zip(&vars) {
            if let Some(g) = grads.get(var.as_tensor()) {
                *sum = (&*sum + g)?;
            }
        }
    }
    Ok(sums)
}

fn sum_f64(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.sum_all()?.to_scalar::<f64>()?)
}

/// The traces of [`hutchinson_traces`].
#[derive(Debug, Clone)]
pub struct Traces {
    /// `Tr(H_i)` per quantizable matrix, in the model's order.
    pub traces: Vec<f64>,
    /// Token positions the loss averages over.
    pub scored_tokens: usize,
    /// How they were estimated.
    pub estimate: HessianEstimate,
}

/// Hutchinson estimates of `Tr(H_i)` for every quantizable matrix of the float `model` (see the
/// module docs; `options.candidates` and `group` are not used). `model` is left as it was.
pub fn hutchinson_traces<M: TrainModel>(
    model: &mut M,
    examples: &[TrainExample],
    context: &M::BatchContext,
    options: &HessianOptions,
    mut progress: impl FnMut(&HessianProgress),
) -> Result<Traces> {
    if examples.is_empty() {
        return Err(Error::config("sensitivity", "no utterances to measure on"));
    }
    if options.max_probes == 0 || !(options.relative_step > 0.0 && options.relative_step < 1.0) {
        return Err(Error::config(
            "--metric hessian",
            format!(
                "needs at least one probe and a relative step in (0, 1), got {} and {}",
                options.max_probes, options.relative_step
            ),
        ));
    }
    let mut originals = Vec::new();
    for layer in model.layers() {
        match &layer.linear.weight {
            Weight::Float(w) => originals.push((layer.name, w.clone())),
            _ => {
                return Err(Error::config(
                    &layer.name,
                    "is not a float weight; measure sensitivities on the original float model",
                ))
            }
        }
    }
    let Some(device) = originals.first().map(|(_, w)| w.device().clone()) else {
        return Err(Error::config(
            "sensitivity",
            "the model has no quantizable matrix",
        ));
    };
    let mut batches = Vec::new();
    for chunk in examples.chunks(options.batch_size.max(1)) {
        let refs: Vec<&TrainExample> = chunk.iter().collect();
        let batch = model.make_batch(&refs, true, context)?;
        let teacher = model.forward_train(&batch, &[])?.logits.detach();
        batches.push((batch, teacher));
    }
    let scored_tokens: usize = batches.iter().map(|(b, _)| b.target_count()).sum();
    let weights: Vec<Tensor> = originals
        .iter()
        .map(|(_, w)| w.to_dtype(DType::F32))
        .collect::<candle_core::Result<_>>()?;
    let mut squares = 0.0;
    let mut count = 0usize;
    for w in &weights {
        squares += sum_f64(&w.sqr()?)?;
        count += w.elem_count();
    }
    let step = options.relative_step * (squares / count.max(1) as f64).sqrt();
    if step.is_nan() || step <= 0.0 {
        return Err(Error::config(
            "--metric hessian",
            "the quantizable matrices have no nonzero weight; the Hessian step would be 0",
        ));
    }

    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(options.seed);
    let mut sums = vec![0.0f64; weights.len()];
    let mut previous: Option<Vec<f64>> = None;
    let (mut probes, mut converged, mut last_change) = (0, false, f64::INFINITY);
    let measured = (|| -> Result<()> {
        while probes < options.max_probes {
            let probe: Vec<Tensor> = weights
                .iter()
                .map(|w| {
                    let signs: Vec<f32> = (0..w.elem_count())
                        .map(|_| if rng.random::<bool>() { 1.0 } else { -1.0 })
                        .collect();
                    Tensor::from_vec(signs, w.shape(), &device)
                })
                .collect::<candle_core::Result<_>>()?;
            let shifted = |sign: f64| -> Result<Vec<Tensor>> {
                weights
                    .iter()
                    .zip(&probe)
                    .map(|(w, v)| Ok((w + (v * (sign * step))?)?))
                    .collect()
            };
            let plus = gradients(model, &shifted(1.0)?, &batches, scored_tokens)?;
            let minus = gradients(model, &shifted(-1.0)?, &batches, scored_tokens)?;
            for (i, sum) in sums.iter_mut().enumerate() {
                let difference = (&plus[i] - &minus[i])?;
                *sum += sum_f64(&(difference * &probe[i])?)? / (2.0 * step);
            }
            probes += 1;
            let means: Vec<f64> = sums.iter().map(|s| s / probes as f64).collect();
            if let Some(prev) = &previous {
                last_change = means
                    .iter()
                    .zip(prev)
                    .map(|(m, p)| (m - p).abs() / m.abs().max(f64::MIN_POSITIVE))
                    .fold(0.0, f64::max);
            }
            previous = Some(means);
            progress(&HessianProgress {
                probe: probes,
                max_probes: options.max_probes,
                relative_change: last_change,
            });
            if last_change < options.tolerance {
                converged = true;
                break;
            }
        }
        Ok(())
    })();
    for (index, (_, original)) in originals.iter().enumerate() {
        swap_weight(model, index, Weight::Float(original.clone()));
    }
    measured?;
    let traces: Vec<f64> = sums.iter().map(|s| s / probes as f64).collect();
    if let Some(i) = traces.iter().position(|t| !t.is_finite()) {
        return Err(Error::config(
            &originals[i].0,
            format!("the Hessian trace estimate is {}", traces[i]),
        ));
    }
    Ok(Traces {
        traces,
        scored_tokens,
        estimate: HessianEstimate {
            hessian_vector_products: "central finite differences of gradients".into(),
            relative_step: options.relative_step,
            step,
            probes,
            tolerance: options.tolerance,
            converged,
            last_relative_change: last_change,
            seed: options.seed,
        },
    })
}

/// [`hutchinson_traces`], then `Ω_i(b)` at each candidate (see the module docs). `model` is left
/// as it was.
pub fn hessian_sensitivity<M: TrainModel>(
    model: &mut M,
    examples: &[TrainExample],
    context: &M::BatchContext,
    options: &HessianOptions,
    progress: impl FnMut(&HessianProgress),
) -> Result<HessianSensitivity> {
    let candidates = check_candidates(&options.candidates)?;
    let originals = float_layers(model, &candidates, options.group)?;
    let traces = hutchinson_traces(model, examples, context, options, progress)?;
    let mut layers = Vec::with_capacity(originals.len());
    for ((name, original, bytes), &trace) in originals.into_iter().zip(&traces.traces) {
        let (rows, cols) = original.dims2()?;
        let values: Vec<f32> = original.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let mut scores = Vec::with_capacity(candidates.len());
        for (&bits, &stored) in candidates.iter().zip(&bytes) {
            let quantized = quantized_values(&name, &values, rows, cols, bits, options.group)?;
            let perturbation: f64 = values
                .iter()
                .zip(&quantized)
                .map(|(&w, &q)| (f64::from(q) - f64::from(w)).powi(2))
                .sum();
            scores.push(CandidateScore {
                bits,
                bytes: stored,
                kl: None,
                hessian: Some(trace * perturbation),
                perturbation: Some(perturbation),
            });
        }
        let params = (rows * cols) as u64;
        layers.push(LayerSensitivity {
            name,
            rows,
            cols,
            params,
            float_bytes: params * 2,
            hessian_trace: Some(trace),
            hessian_trace_per_weight: Some(trace / params as f64),
            candidates: scores,
        });
    }
    Ok(HessianSensitivity {
        layers,
        scored_tokens: traces.scored_tokens,
        estimate: traces.estimate,
    })
}

/// `∇L` of the distillation loss at the float weights with matrix `index`'s weight replaced by
/// `weight`, for the exact-diagonal check of the tests: the gradient of that matrix only.
#[doc(hidden)]
pub fn layer_gradient<M: TrainModel>(
    model: &mut M,
    examples: &[TrainExample],
    context: &M::BatchContext,
    index: usize,
    weight: &Tensor,
) -> Result<Tensor> {
    let refs: Vec<&TrainExample> = examples.iter().collect();
    let batch = model.make_batch(&refs, true, context)?;
    let teacher = model.forward_train(&batch, &[])?.logits.detach();
    let scored = batch.target_count();
    let originals: Vec<Tensor> = model
        .layers()
        .iter()
        .map(|l| match &l.linear.weight {
            Weight::Float(w) => Ok(w.clone()),
            _ => Err(Error::config("sensitivity", "the model must be float")),
        })
        .collect::<Result<_>>()?;
    let mut weights = originals.clone();
    weights[index] = weight.clone();
    let grads = gradients(model, &weights, &[(batch, teacher)], scored);
    for (i, w) in originals.into_iter().enumerate() {
        swap_weight(model, i, Weight::Float(w));
    }
    Ok(grads?.swap_remove(index))
}
