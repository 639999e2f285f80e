//! Structured pruning of the CTC families (SEEDS.md method 3, whose literature prunes Conformer
//! ASR): attention heads, feed-forward units and the Conformer's convolution-module channels,
//! physically removed, with whole modules removed when no unit is left.
//!
//! The units are cut consistently: a head is its rows of the query, key and value projections
//! (and of the relative-position projection and biases) and its columns of the output
//! projection; a feed-forward unit is its row of `intermediate_dense` and column of
//! `output_dense`; a convolution channel is its two rows of `pointwise_conv1` (the GLU's value
//! and gate halves), its depthwise kernel and bias, and its column of `pointwise_conv2`. Each
//! kept unit's scale (a surviving gate value) and the module's branch scale are folded into
//! the output matrix, as for Whisper ([`crate::compress::prune`]). The per-layer shapes go
//! into the configuration's `whittle_layer_shapes`, so the smaller model loads back.

use std::collections::BTreeMap;

use candle_core::Tensor;

use super::config::{CtcLayerShape, Family};
use super::conformer::{ConvModule, RelAttention};
use super::model::{CtcModel, Encoder, FeedForward, Projections};
use crate::compress::prune::{
    head_rows, module_to_slice, select_rows, slice_heads, slice_units, ModuleKeep,
};
use crate::error::{Error, Result};
use crate::models::{PrunableModule, UnitKind};

/// Slice an attention module's heads; `names` are its four projections' names under `at`.
fn prune_projections(
    p: &mut Projections,
    keep: &ModuleKeep,
    head_dim: usize,
    at: &str,
    names: [&str; 4],
) -> Result<()> {
    let path = |i: usize| format!("{at}.{}", names[i]);
    slice_heads(
        [
            (&mut p.q, path(0)),
            (&mut p.k, path(1)),
            (&mut p.v, path(2)),
        ],
        (&mut p.out, path(3)),
        keep,
        head_dim,
    )?;
    p.heads = keep.units.len();
    Ok(())
}

fn prune_attention(
    module: &mut Option<Projections>,
    keep: &ModuleKeep,
    head_dim: usize,
    at: &str,
) -> Result<()> {
    let Some(p) = module_to_slice(module, keep, |p| p.heads, at)? else {
        return Ok(());
    };
    let names = ["q_proj", "k_proj", "v_proj", "out_proj"];
    prune_projections(p, keep, head_dim, at, names)
}

fn prune_relative_attention(
    module: &mut Option<RelAttention>,
    keep: &ModuleKeep,
    head_dim: usize,
    at: &str,
) -> Result<()> {
    let Some(a) = module_to_slice(module, keep, |a| a.projections.heads, at)? else {
        return Ok(());
    };
    let names = ["linear_q", "linear_k", "linear_v", "linear_out"];
    prune_projections(&mut a.projections, keep, head_dim, at, names)?;
    if let Some(pos) = &mut a.linear_pos {
        // Its output rows are head-major like a query's.
        select_rows(pos, &head_rows(keep, head_dim), &format!("{at}.linear_pos"))?;
    }
    if let Some((u, v)) = &mut a.pos_bias {
        let heads: Vec<u32> = keep.units.iter().map(|k| k.index as u32).collect();
        let idx = Tensor::new(heads.as_slice(), u.device())?;
        *u = u.index_select(&idx, 0)?;
        *v = v.index_select(&idx, 0)?;
    }
    Ok(())
}

fn prune_feed_forward(module: &mut Option<FeedForward>, keep: &ModuleKeep, at: &str) -> Result<()> {
    let Some(f) = module_to_slice(module, keep, FeedForward::width, at)? else {
        return Ok(());
    };
    let units: Vec<u32> = keep.units.iter().map(|u| u.index as u32).collect();
    slice_units(
        (
            &mut f.intermediate_dense,
            format!("{at}.intermediate_dense"),
        ),
        &units,
        (&mut f.output_dense, format!("{at}.output_dense")),
        keep,
    )
}

fn prune_conv_module(module: &mut Option<ConvModule>, keep: &ModuleKeep, at: &str) -> Result<()> {
    let Some(m) = module_to_slice(module, keep, ConvModule::channels, at)? else {
        return Ok(());
    };
    let channels = m.channels() as u32;
    let kept: Vec<u32> = keep.units.iter().map(|u| u.index as u32).collect();
    // The GLU's value half first, then its gate half.
    let rows: Vec<u32> = kept
        .iter()
        .copied()
        .chain(kept.iter().map(|&c| c + channels))
        .collect();
    let idx = Tensor::new(kept.as_slice(), m.depthwise.device())?;
    m.depthwise = m.depthwise.index_select(&idx, 0)?;
    m.depthwise_bias = m.depthwise_bias.index_select(&idx, 0)?;
    slice_units(
        (&mut m.pointwise_conv1, format!("{at}.pointwise_conv1")),
        &rows,
        (&mut m.pointwise_conv2, format!("{at}.pointwise_conv2")),
        keep,
    )
}

impl CtcModel {
    /// The shape each encoder layer holds.
    pub fn layer_shapes(&self) -> Vec<CtcLayerShape> {
        match &self.encoder {
            Encoder::Transformer { layers, .. } => layers
                .iter()
                .map(|l| CtcLayerShape {
                    attention_heads: l.attention.as_ref().map_or(0, |a| a.heads),
                    ffn_dim: l.feed_forward.as_ref().map_or(0, FeedForward::width),
                    ffn2_dim: None,
                    conv_channels: None,
                })
                .collect(),
            Encoder::Conformer { layers, .. } => layers.iter().map(|l| l.shape()).collect(),
        }
    }

    /// The modules structured pruning may shrink, layer by layer.
    pub(super) fn prunable(&self) -> Vec<PrunableModule> {
        let c = self.config();
        let (h, hd) = (c.hidden_size, c.head_dim());
        let relative = c.position_embeddings_type
            == Some(super::config::PositionEmbeddings::Relative)
            && c.family == Family::Conformer;
        // A head: q/k/v rows with biases and output columns, plus the relative-position
        // projection's rows and both position biases.
        let head = 4 * h * hd + 3 * hd + if relative { h * hd + 2 * hd } else { 0 };
        let ffn_unit = 2 * h + 1;
        // Two rows of pointwise_conv1, the depthwise kernel and bias, a pointwise_conv2 column.
        let channel = 3 * h + c.conv_depthwise_kernel_size + 1;
        let prefix = c.family.tensor_prefix();
        let mut out = Vec::new();
        for (i, shape) in self.layer_shapes().into_iter().enumerate() {
            let layer = format!("{prefix}.encoder.layers.{i}");
            // `matrices`: the output matrix, then the one whose rows carry the units' values.
            let module =
                |name: &str, [output, value]: [&str; 2], kind, units, unit_width, unit, whole| {
                    PrunableModule {
                        name: format!("{layer}.{name}"),
                        layer: layer.clone(),
                        output: format!("{layer}.{name}.{output}"),
                        value_input: format!("{layer}.{name}.{value}"),
                        kind,
                        units,
                        unit_width,
                        unit_parameters: unit,
                        module_parameters: whole,
                    }
                };
            let ffn = |name: &str, units: usize| {
                module(
                    name,
                    ["output_dense", "intermediate_dense"],
                    UnitKind::FeedForward,
                    units,
                    1,
                    ffn_unit,
                    h,
                )
            };
            let heads = shape.attention_heads;
            match c.family {
                Family::Wav2Vec2 | Family::Hubert => {
                    if heads > 0 {
                        out.push(module(
                            "attention",
                            ["out_proj", "v_proj"],
                            UnitKind::Heads,
                            heads,
                            hd,
                            head,
                            h,
                        ));
                    }
                    if shape.ffn_dim > 0 {
                        out.push(ffn("feed_forward", shape.ffn_dim));
                    }
                }
                Family::Conformer => {
                    if shape.ffn_dim > 0 {
                        out.push(ffn("ffn1", shape.ffn_dim));
                    }
                    if heads > 0 {
                        out.push(module(
                            "self_attn",
                            ["linear_out", "linear_v"],
                            UnitKind::Heads,
                            heads,
                            hd,
                            head,
                            h,
                        ));
                    }
                    let channels = shape.conv_channels.unwrap_or(0);
                    if channels > 0 {
                        // The module's own layer norm goes with it (pointwise convs have no bias).
                        out.push(module(
                            "conv_module",
                            ["pointwise_conv2", "pointwise_conv1"],
                            UnitKind::ConvChannels,
                            channels,
                            1,
                            channel,
                            2 * h,
                        ));
                    }
                    let ffn2 = shape.ffn2_dim.unwrap_or(0);
                    if ffn2 > 0 {
                        out.push(ffn("ffn2", ffn2));
                    }
                }
            }
        }
        out
    }

    /// Prunable parameters the model holds.
    pub fn prunable_parameters(&self) -> usize {
        crate::models::prunable_parameter_count(self)
    }

    /// Physically remove what `keep` does not list (see the module docs) and record the
    /// per-layer shapes in the configuration.
    pub(super) fn prune(&mut self, keep: &BTreeMap<String, ModuleKeep>) -> Result<()> {
        let known: Vec<String> = self.prunable().into_iter().map(|m| m.name).collect();
        if let Some(unknown) = keep.keys().find(|k| !known.contains(k)) {
            return Err(Error::config(
                unknown.as_str(),
                "not a prunable module of this model",
            ));
        }
        let hd = self.config().head_dim();
        let prefix = self.config().family.tensor_prefix();
        match &mut self.encoder {
            Encoder::Transformer { layers, .. } => {
                for (i, l) in layers.iter_mut().enumerate() {
                    let at = |name: &str| format!("{prefix}.encoder.layers.{i}.{name}");
                    if let Some(k) = keep.get(&at("attention")) {
                        prune_attention(&mut l.attention, k, hd, &at("attention"))?;
                    }
                    if let Some(k) = keep.get(&at("feed_forward")) {
                        prune_feed_forward(&mut l.feed_forward, k, &at("feed_forward"))?;
                    }
                }
            }
            Encoder::Conformer { layers, .. } => {
                for (i, l) in layers.iter_mut().enumerate() {
                    let at = |name: &str| format!("{prefix}.encoder.layers.{i}.{name}");
                    let get = |name: &str| keep.get(&at(name));
                    if let Some(k) = get("ffn1") {
                        prune_feed_forward(&mut l.ffn1, k, &at("ffn1"))?;
                    }
                    if let Some(k) = get("self_attn") {
                        prune_relative_attention(&mut l.self_attn, k, hd, &at("self_attn"))?;
                    }
                    if let Some(k) = get("conv_module") {
                        prune_conv_module(&mut l.conv_module, k, &at("conv_module"))?;
                    }
                    if let Some(k) = get("ffn2") {
                        prune_feed_forward(&mut l.ffn2, k, &at("ffn2"))?;
                    }
                }
            }
        }
        let shapes = self.layer_shapes();
        let mut unpruned = self.config.clone();
        unpruned.whittle_layer_shapes = None;
        let uniform = shapes
            .iter()
            .enumerate()
            .all(|(i, s)| *s == unpruned.layer_shape(i));
        self.config.whittle_layer_shapes = (!uniform).then_some(shapes);
        Ok(())
    }
}
