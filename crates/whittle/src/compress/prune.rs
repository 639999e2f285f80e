//! Structured pruning of Whisper: attention heads, FFN units, whole modules and whole layers
//! physically removed, so the smaller model computes faster with the ordinary kernels.
//!
//! [`prune_whisper`] slices the matrices to the units a [`StructureKeep`] lists and folds each
//! kept unit's scale (the surviving soft gate value of an L0 hard-concrete gate, Louizos et al.
//! 2018, "Learning Sparse Neural Networks through L0 Regularization"; 1 for hard masks) and
//! each branch's scale (module and layer gates) into the output matrices. A head is cut
//! consistently: its rows of q/k/v (and their biases) and its columns of the output
//! projection; an FFN unit is its row of fc1 and its column of fc2. A module with no unit left
//! is removed with its norm and residual branch; a block with nothing left is a removed layer.
//!
//! [`magnitude_keep`] is the baseline without gates: in every module, keep the units of
//! largest weight norm. The score is ours (the literature's baselines vary): a head's
//! `||W_v[h]||_F * ||W_o[:, h]||_F` (its value path bounds what it adds to the residual; q and
//! k only shape its attention pattern), an FFN unit's `||W_1[u]||_2 * ||W_2[:, u]||_2`.

use candle_core::{DType, Tensor};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use std::collections::BTreeMap;

use crate::models::whisper::{AttentionModule, Block, BlockShape, FeedForward, Whisper};
use crate::models::Layers;
use crate::nn::gate::{aligned_count, unit_multiple};
use crate::nn::{Linear, Weight};

/// A unit (head or FFN unit) kept, with the scale folded into the output matrix.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeptUnit {
    /// Index in the module before pruning.
    pub index: usize,
    /// Multiplies the unit's contribution (its surviving gate value; 1 for a hard mask).
    #[serde(default = "one")]
    pub scale: f32,
}

fn one() -> f32 {
    1.0
}

/// What one module keeps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModuleKeep {
    /// Kept units in ascending index order; empty removes the module.
    pub units: Vec<KeptUnit>,
    /// Multiplies the module's whole residual branch (module and layer gates), bias included.
    #[serde(default = "one")]
    pub branch_scale: f32,
}

impl ModuleKeep {
    /// Keep units `indices` with scale 1.
    pub fn hard(indices: impl IntoIterator<Item = usize>) -> Self {
        Self {
            units: indices
                .into_iter()
                .map(|index| KeptUnit { index, scale: 1.0 })
                .collect(),
            branch_scale: 1.0,
        }
    }

    /// Keep all `n` units unchanged.
    pub fn all(n: usize) -> Self {
        Self::hard(0..n)
    }
}

/// What one block keeps. The encoder's `cross_attn` must be empty.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BlockKeep {
    /// Self-attention heads.
    pub self_attn: ModuleKeep,
    /// Cross-attention heads (decoder).
    #[serde(default = "removed")]
    pub cross_attn: ModuleKeep,
    /// FFN units.
    pub mlp: ModuleKeep,
}

fn removed() -> ModuleKeep {
    ModuleKeep::hard([])
}

/// What every block of a Whisper model keeps: the output of a gate method's extraction or of
/// [`magnitude_keep`], and the input of [`prune_whisper`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StructureKeep {
    /// One entry per encoder layer.
    pub encoder: Vec<BlockKeep>,
    /// One entry per decoder layer.
    pub decoder: Vec<BlockKeep>,
}

impl StructureKeep {
    /// Keep everything the model holds.
    pub fn everything(model: &Whisper) -> Self {
        let block = |b: &Block| {
            let s = b.shape();
            BlockKeep {
                self_attn: ModuleKeep::all(s.self_attention_heads),
                cross_attn: ModuleKeep::all(s.cross_attention_heads),
                mlp: ModuleKeep::all(s.ffn_dim),
            }
        };
        Self {
            encoder: model.encoder.layers.iter().map(block).collect(),
            decoder: model.decoder.layers.iter().map(block).collect(),
        }
    }
}

/// Prunable parameters the model holds ([`BlockShape::parameters`] of every block).
pub fn prunable_parameters(model: &Whisper) -> usize {
    let c = &model.config;
    let shapes = model.layer_shapes();
    let part = |blocks: &[BlockShape], hd: usize| -> usize {
        blocks.iter().map(|b| b.parameters(c.d_model, hd)).sum()
    };
    part(&shapes.encoder, c.encoder_head_dim()) + part(&shapes.decoder, c.decoder_head_dim())
}

/// What [`prune_whisper`] did.
#[derive(Debug, Clone, Serialize)]
pub struct PruneReport {
    /// Prunable parameters before.
    pub prunable_before: usize,
    /// Prunable parameters after.
    pub prunable_after: usize,
    /// `1 - after / before`.
    pub sparsity: f64,
    /// All parameters before (tied embedding once).
    pub parameters_before: usize,
    /// All parameters after.
    pub parameters_after: usize,
    /// Per-layer shapes after, as [`Whisper::shape_summary`] prints them.
    pub shapes: String,
}

/// Physically remove what `keep` does not list from `model` (float weights only: prune
/// before quantizing), folding the kept scales into the output projections, and record the
/// per-layer shapes in its configuration.
pub fn prune_whisper(model: &mut Whisper, keep: &StructureKeep) -> Result<PruneReport> {
    let c = model.config.clone();
    let prunable_before = prunable_parameters(model);
    let parameters_before = c.parameter_count();
    for (part, blocks, keeps, cross) in [
        ("encoder", &mut model.encoder.layers, &keep.encoder, false),
        ("decoder", &mut model.decoder.layers, &keep.decoder, true),
    ] {
        if keeps.len() != blocks.len() {
            return Err(Error::config(
                "prune",
                format!(
                    "{} {part} entries for {} {part} layers",
                    keeps.len(),
                    blocks.len()
                ),
            ));
        }
        for (i, (block, k)) in blocks.iter_mut().zip(keeps).enumerate() {
            let layer = format!("model.{part}.layers.{i}");
            let at = |module: &str| format!("{layer}.{module}");
            if !cross && !k.cross_attn.units.is_empty() {
                return Err(Error::config(
                    at("encoder_attn"),
                    "encoder blocks have no cross-attention to keep",
                ));
            }
            prune_attention(&mut block.self_attn, &k.self_attn, &at("self_attn"))?;
            prune_attention(&mut block.encoder_attn, &k.cross_attn, &at("encoder_attn"))?;
            prune_mlp(&mut block.mlp, &k.mlp, &layer)?;
        }
    }
    model.config.layer_shapes = Some(model.layer_shapes());
    if model.config.is_uniform() {
        model.config.layer_shapes = None;
    }
    model.config.validate("pruned model")?;
    let prunable_after = prunable_parameters(model);
    Ok(PruneReport {
        prunable_before,
        prunable_after,
        sparsity: 1.0 - prunable_after as f64 / prunable_before.max(1) as f64,
        parameters_before,
        parameters_after: model.config.parameter_count(),
        shapes: model.shape_summary(),
    })
}

/// Check `keep` against `n` units: ascending, in range, finite scales.
fn check_units(keep: &ModuleKeep, n: usize, at: &str) -> Result<()> {
    let mut last = None;
    for u in &keep.units {
        if u.index >= n || last.is_some_and(|l| u.index <= l) {
            return Err(Error::config(
                at,
                format!(
                    "kept unit {} is out of range or out of order ({n} units, ascending)",
                    u.index
                ),
            ));
        }
        if !u.scale.is_finite() {
            return Err(Error::config(
                at,
                format!("unit {} has scale {}", u.index, u.scale),
            ));
        }
        last = Some(u.index);
    }
    if !keep.branch_scale.is_finite() {
        return Err(Error::config(at, "branch scale is not finite"));
    }
    Ok(())
}

/// The module `keep` slices, after the checks every family shares: `None` when the model does
/// not hold it (and `keep` keeps nothing of it), or when `keep` removes it (it is set to `None`:
/// no tensors, no residual branch). `units` counts the module's units.
pub(crate) fn module_to_slice<'a, T>(
    module: &'a mut Option<T>,
    keep: &ModuleKeep,
    units: impl Fn(&T) -> usize,
    at: &str,
) -> Result<Option<&'a mut T>> {
    match module.as_ref() {
        None if keep.units.is_empty() => return Ok(None),
        None => {
            return Err(Error::config(
                at,
                "keeps units of a module the model does not hold",
            ))
        }
        Some(m) => check_units(keep, units(m), at)?,
    }
    if keep.units.is_empty() {
        *module = None;
        return Ok(None);
    }
    Ok(module.as_mut())
}

/// The rows of a head-major matrix that `keep`'s heads own.
pub(crate) fn head_rows(keep: &ModuleKeep, head_dim: usize) -> Vec<u32> {
    keep.units
        .iter()
        .flat_map(|u| (u.index * head_dim..(u.index + 1) * head_dim).map(|r| r as u32))
        .collect()
}

/// Keep `keep`'s heads of an attention module: their rows of the query, key and value
/// projections (`inputs`) and their columns of the output projection, scaled by the unit and
/// branch scales. Each matrix comes with its path for errors.
pub(crate) fn slice_heads(
    inputs: [(&mut Linear, String); 3],
    output: (&mut Linear, String),
    keep: &ModuleKeep,
    head_dim: usize,
) -> Result<()> {
    let rows = head_rows(keep, head_dim);
    for (linear, at) in inputs {
        select_rows(linear, &rows, &at)?;
    }
    let scales: Vec<f32> = keep
        .units
        .iter()
        .flat_map(|u| std::iter::repeat_n(u.scale * keep.branch_scale, head_dim))
        .collect();
    select_columns(output.0, &rows, &scales, keep.branch_scale, &output.1)
}

/// Keep `keep`'s units: `input_rows` of `input` (each unit's rows, in unit order: one per unit,
/// or more, as a GLU's value and gate rows) and one column per unit of `output`, scaled by the
/// unit and branch scales.
pub(crate) fn slice_units(
    input: (&mut Linear, String),
    input_rows: &[u32],
    output: (&mut Linear, String),
    keep: &ModuleKeep,
) -> Result<()> {
    let units: Vec<u32> = keep.units.iter().map(|u| u.index as u32).collect();
    select_rows(input.0, input_rows, &input.1)?;
    let scales: Vec<f32> = keep
        .units
        .iter()
        .map(|u| u.scale * keep.branch_scale)
        .collect();
    select_columns(output.0, &units, &scales, keep.branch_scale, &output.1)
}

fn prune_attention(
    module: &mut Option<AttentionModule>,
    keep: &ModuleKeep,
    at: &str,
) -> Result<()> {
    let Some(m) = module_to_slice(module, keep, |m| m.attn.heads, at)? else {
        return Ok(());
    };
    let hd = m.attn.head_dim();
    let a = &mut m.attn;
    slice_heads(
        [
            (&mut a.q_proj, format!("{at}.q_proj")),
            (&mut a.k_proj, format!("{at}.k_proj")),
            (&mut a.v_proj, format!("{at}.v_proj")),
        ],
        (&mut a.out_proj, format!("{at}.out_proj")),
        keep,
        hd,
    )?;
    a.heads = keep.units.len();
    Ok(())
}

/// The MLP of the layer at path `layer` (its matrices are `{layer}.fc1` and `{layer}.fc2`).
fn prune_mlp(module: &mut Option<FeedForward>, keep: &ModuleKeep, layer: &str) -> Result<()> {
    let Some(f) = module_to_slice(module, keep, FeedForward::width, &format!("{layer}.mlp"))?
    else {
        return Ok(());
    };
    let units: Vec<u32> = keep.units.iter().map(|u| u.index as u32).collect();
    slice_units(
        (&mut f.fc1, format!("{layer}.fc1")),
        &units,
        (&mut f.fc2, format!("{layer}.fc2")),
        keep,
    )
}

fn float_weight<'a>(l: &'a Linear, at: &str) -> Result<&'a Tensor> {
    match &l.weight {
        Weight::Float(w) => Ok(w),
        _ => Err(Error::config(
            at,
            "structured pruning slices float weights: prune before quantizing or training",
        )),
    }
}

/// Keep rows `rows` of the weight and bias.
pub(crate) fn select_rows(l: &mut Linear, rows: &[u32], at: &str) -> Result<()> {
    let w = float_weight(l, at)?;
    let idx = Tensor::new(rows, w.device())?;
    l.weight = Weight::Float(w.index_select(&idx, 0)?);
    if let Some(b) = &l.bias {
        l.bias = Some(b.index_select(&idx, 0)?);
    }
    Ok(())
}

/// Keep columns `cols` of the weight, scaled by `scales`, and scale the bias by `bias_scale`.
fn select_columns(
    l: &mut Linear,
    cols: &[u32],
    scales: &[f32],
    bias_scale: f32,
    at: &str,
) -> Result<()> {
    let w = float_weight(l, at)?;
    let idx = Tensor::new(cols, w.device())?;
    let scales = Tensor::new(scales, w.device())?.to_dtype(w.dtype())?;
    let sliced = w
        .index_select(&idx, 1)?
        .broadcast_mul(&scales.unsqueeze(0)?)?;
    l.weight = Weight::Float(sliced);
    if let Some(b) = &l.bias {
        l.bias = Some((b * bias_scale as f64)?);
    }
    Ok(())
}

/// Norm of each of `n` equal slices of `t` along `dim` (rows for dim 0, columns for dim 1).
fn slice_norms(t: &Tensor, dim: usize, n: usize) -> Result<Vec<f32>> {
    let t = t.to_dtype(DType::F32)?;
    let len = t.dim(dim)? / n;
    (0..n)
        .map(|i| {
            let s = t.narrow(dim, i * len, len)?;
            Ok(s.sqr()?.sum_all()?.sqrt()?.to_scalar::<f32>()?)
        })
        .collect()
}

/// The `keep` highest-scoring indices of `scores`, ascending.
fn top_indices(scores: &[f32], keep: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..scores.len()).collect();
    order.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]).then(a.cmp(&b)));
    let mut kept = order[..keep.min(scores.len())].to_vec();
    kept.sort_unstable();
    kept
}

/// The magnitude baseline on any family: every prunable module ([`Layers::prunable_modules`])
/// keeps `round((1 - sparsity) * units)` of its units (at least one; with `align` > 1 the
/// nearest count whose width is a whole multiple of `align` features, at least one such
/// block), those of largest
/// `||V[u]|| * ||O[:, u]||` (Frobenius norms of the unit's rows of the value matrix and columns
/// of the output matrix; see the module docs). No module or layer is removed, so the prunable
/// sparsity is close to `sparsity` but not exact.
pub fn magnitude_module_keep(
    model: &(impl Layers + ?Sized),
    sparsity: f64,
    align: usize,
) -> Result<BTreeMap<String, ModuleKeep>> {
    if !(0.0..1.0).contains(&sparsity) {
        return Err(Error::config(
            "magnitude pruning",
            format!("sparsity {sparsity} is outside [0, 1)"),
        ));
    }
    let layers = model.layers();
    let weight = |name: &str| -> Result<&Tensor> {
        let layer = layers
            .iter()
            .find(|l| l.name == name)
            .ok_or_else(|| Error::config(name, "no such layer in the model"))?;
        float_weight(layer.linear, name)
    };
    model
        .prunable_modules()
        .into_iter()
        .map(|m| {
            let n = m.units;
            let values = weight(&m.value_input)?.narrow(0, 0, n * m.unit_width)?;
            let v = slice_norms(&values, 0, n)?;
            let o = slice_norms(weight(&m.output)?, 1, n)?;
            let scores: Vec<f32> = v.iter().zip(&o).map(|(a, b)| a * b).collect();
            // The nearest whole multiple of `align` features, and at least one block.
            let multiple = unit_multiple(align, m.unit_width);
            let kept = aligned_count((1.0 - sparsity) * n as f64, n, multiple)
                .max(multiple.min(n))
                .max(1);
            Ok((m.name, ModuleKeep::hard(top_indices(&scores, kept))))
        })
        .collect()
}

/// [`magnitude_module_keep`] of a Whisper model, as the per-block keep list its keep files use.
pub fn magnitude_keep(model: &Whisper, sparsity: f64, align: usize) -> Result<StructureKeep> {
    let modules = magnitude_module_keep(model, sparsity, align)?;
    let module = |path: String| modules.get(&path).cloned().unwrap_or_else(removed);
    let blocks = |part: &str, n: usize| -> Vec<BlockKeep> {
        (0..n)
            .map(|i| {
                let layer = format!("model.{part}.layers.{i}");
                BlockKeep {
                    self_attn: module(format!("{layer}.self_attn")),
                    cross_attn: module(format!("{layer}.encoder_attn")),
                    mlp: module(format!("{layer}.mlp")),
                }
            })
            .collect()
    };
    Ok(StructureKeep {
        encoder: blocks("encoder", model.encoder.layers.len()),
        decoder: blocks("decoder", model.decoder.layers.len()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn top_indices_are_ascending_and_stable() {
        assert_eq!(top_indices(&[0.1, 0.9, 0.5, 0.9], 2), vec![1, 3]);
        assert_eq!(top_indices(&[1.0, 1.0, 1.0], 1), vec![0]);
        assert_eq!(top_indices(&[3.0, 1.0, 2.0], 5), vec![0, 1, 2]);
    }

    #[test]
    fn slice_norms_split_rows_and_columns() {
        let t = Tensor::new(
            &[[3f32, 0.0], [4.0, 0.0], [0.0, 1.0], [0.0, 0.0]],
            &candle_core::Device::Cpu,
        )
        .unwrap();
        assert_eq!(slice_norms(&t, 0, 2).unwrap(), vec![5.0, 1.0]);
        assert_eq!(slice_norms(&t, 1, 2).unwrap(), vec![5.0, 1.0]);
    }
}
