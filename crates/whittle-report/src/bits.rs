//! Per-layer bit-width charts: one bar per quantizable matrix, in model order (encoder blocks,
//! decoder blocks, then the token embedding), its height the layer's bits per weight and its colour
//! the layer's role. The title gives the average bits per quantized weight, weighted by parameter
//! count.
//!
//! Conventions (whittle's choices, stated in `docs/report.md`): a bar's height is the format's
//! nominal code width (uniform `b` bits, ternary log2(3) = 1.58 bits whatever its byte layout); the
//! per-group scales and zero points are not counted. Float layers are drawn at 16 bits as outlined
//! bars and are left out of the average.
//!
//! Inputs: a `.whittle` file (the resolved `bit_map` of its header, with each layer's parameter
//! count from the tensor table) or a bit map file (TOML or JSON, see `docs/bitmap.md`, or a
//! resolved map as written into headers), resolved against a model's quantizable layers.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;
use whittle::candle::{DType, Device};
use whittle::compress::bitmap::{BitMap, LayerFormat};
use whittle::compress::ptq::resolve_bit_map;
use whittle::models::whisper::TOKEN_EMBEDDING;
use whittle::packed_file::{keys, PackedFile};

use crate::draw::{
    hex, msg, text_width, write_figure, DrawResult, Figure, FONT, INK, PALETTE, RULE,
};
use crate::error::{read_text, Error, Result};

/// Height at which float layers are drawn.
pub const FLOAT_BITS: f64 = 16.0;
/// Information content of one ternary weight, log2(3).
pub const TERNARY_BITS: f64 = 1.584_962_500_721_156;

/// What a layer does in the network; it picks the bar's colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// q/k/v/out projections of self-attention.
    SelfAttention,
    /// q/k/v/out projections of the decoder's cross-attention (`encoder_attn`).
    CrossAttention,
    /// The feed-forward `fc1` and `fc2`.
    FeedForward,
    /// The token embedding (tied output projection).
    Embedding,
    /// Anything else.
    Other,
}

impl Role {
    /// The role of the layer at tensor path `name`.
    pub fn of(name: &str) -> Self {
        let leaf = name.rsplit('.').next().unwrap_or(name);
        if name.ends_with("embed_tokens") {
            Role::Embedding
        } else if leaf == "fc1" || leaf == "fc2" {
            Role::FeedForward
        } else if name.contains(".encoder_attn.") {
            Role::CrossAttention
        } else if name.contains("attn.") {
            Role::SelfAttention
        } else {
            Role::Other
        }
    }

    /// Legend text.
    pub fn label(self) -> &'static str {
        match self {
            Role::SelfAttention => "self-attention q/k/v/out",
            Role::CrossAttention => "cross-attention q/k/v/out",
            Role::FeedForward => "feed-forward fc1/fc2",
            Role::Embedding => "token embedding",
            Role::Other => "other",
        }
    }

    /// Bar colour.
    pub fn color(self) -> RGBColor {
        match self {
            Role::SelfAttention => PALETTE[0],
            Role::CrossAttention => PALETTE[4],
            Role::FeedForward => PALETTE[1],
            Role::Embedding => PALETTE[2],
            Role::Other => PALETTE[5],
        }
    }

    /// Bar colour as the SVG files write it (`#RRGGBB`), for tests and tools that read them.
    pub fn color_hex(self) -> String {
        hex(self.color())
    }
}

/// Bits per weight a bar is drawn at (see the module docs).
pub fn plotted_bits(format: LayerFormat) -> f64 {
    match format {
        LayerFormat::Float => FLOAT_BITS,
        LayerFormat::Uniform { bits, .. } => f64::from(bits),
        LayerFormat::Ternary { .. } => TERNARY_BITS,
    }
}

/// One bar.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerBits {
    /// Tensor path, e.g. `model.decoder.layers.3.fc1`.
    pub name: String,
    /// Weights in the matrix.
    pub params: u64,
    /// Its format.
    pub format: LayerFormat,
}

/// A chart: the layers of one model in model order.
#[derive(Debug, Clone)]
pub struct BitChart {
    /// Shown in the title and used for the file names (`NAME.bits.png`).
    pub name: String,
    /// Layers, in model order.
    pub layers: Vec<LayerBits>,
}

/// Sort key putting layers in model order: encoder blocks, decoder blocks (by block index, then
/// self-attention q/k/v/out, cross-attention q/k/v/out, fc1, fc2), the token embedding, the rest.
fn model_order(name: &str) -> (u8, usize, u8, String) {
    let path = name.strip_prefix("model.").unwrap_or(name);
    let part = if path.ends_with("embed_tokens") {
        2
    } else if path.starts_with("encoder.") {
        0
    } else if path.starts_with("decoder.") {
        1
    } else {
        3
    };
    let block = path
        .split_once("layers.")
        .and_then(|(_, rest)| rest.split('.').next())
        .and_then(|i| i.parse().ok())
        .unwrap_or(0);
    let attention = |attn: &str, base: u8| {
        ["q_proj", "k_proj", "v_proj", "out_proj"]
            .iter()
            .position(|p| path.ends_with(&format!("{attn}.{p}")))
            .map(|i| base + i as u8)
    };
    let within = attention("self_attn", 0)
        .or_else(|| attention("encoder_attn", 4))
        .unwrap_or(if path.ends_with(".fc1") {
            8
        } else if path.ends_with(".fc2") {
            9
        } else {
            10
        });
    (part, block, within, path.to_string())
}

/// Short x-axis label: `E0 q`, `D3 xo` (cross-attention out), `D1 fc2`, `embed`.
pub fn short_label(name: &str) -> String {
    let (part, block, within, path) = model_order(name);
    let prefix = match part {
        0 => format!("E{block} "),
        1 => format!("D{block} "),
        2 => return "embed".into(),
        _ => String::new(),
    };
    let leaf = match within {
        0..=7 => {
            let x = if within >= 4 { "x" } else { "" };
            format!("{x}{}", ["q", "k", "v", "o"][within as usize % 4])
        }
        8 => "fc1".into(),
        9 => "fc2".into(),
        _ => path.rsplit('.').next().unwrap_or(&path).to_string(),
    };
    format!("{prefix}{leaf}")
}

impl BitChart {
    /// A chart of `layers`, put in model order.
    pub fn new(name: impl Into<String>, mut layers: Vec<LayerBits>) -> Self {
        layers.sort_by_cached_key(|l| model_order(&l.name));
        Self {
            name: name.into(),
            layers,
        }
    }

    /// The layers of a `.whittle` file, from the resolved `bit_map` in its header and the tensor
    /// table. A file whose map leaves out the token embedding (QAT outputs list the linear layers
    /// only) gets it as a float bar when the file stores it in float.
    pub fn from_packed_file(path: &Path) -> Result<Self> {
        let file = PackedFile::open(path)?;
        let map = file
            .header_field(keys::BIT_MAP)
            .filter(|v| !v.is_null())
            .ok_or_else(|| {
                Error::input(path, "the header has no `bit_map` (not a quantized file?)")
            })?;
        let entries = map_layers(map).map_err(|r| Error::input(path, format!("bit_map: {r}")))?;
        let mut layers = Vec::with_capacity(entries.len() + 1);
        for (name, format) in entries {
            let tensor = format!("{name}.weight");
            let entry = file.tensor(&tensor).ok_or_else(|| {
                Error::input(
                    path,
                    format!("bit_map names layer {name}, but the file has no tensor `{tensor}`"),
                )
            })?;
            layers.push(LayerBits {
                name,
                params: entry.elements() as u64,
                format,
            });
        }
        let embedding = format!("{TOKEN_EMBEDDING}.weight");
        if !layers.iter().any(|l| l.name == TOKEN_EMBEDDING) {
            if let Some(entry) = file.tensor(&embedding) {
                if file.float(&embedding).is_ok() {
                    layers.push(LayerBits {
                        name: TOKEN_EMBEDDING.into(),
                        params: entry.elements() as u64,
                        format: LayerFormat::Float,
                    });
                }
            }
        }
        if layers.is_empty() {
            return Err(Error::input(path, "the header's bit_map lists no layers"));
        }
        Ok(Self::new(file_stem(path), layers))
    }

    /// The layers of `model` (a model folder or `.whittle` file) with the formats the bit map file
    /// `path` gives them: a bit map as `whittle quantize --bit-map` reads it (the token embedding is
    /// quantized only when named exactly), or a resolved map (`{"layers": {path: format}}`), in
    /// which layers not listed are float.
    pub fn from_bit_map_file(path: &Path, model: &Path) -> Result<Self> {
        let text = read_text(path)?;
        let source = path.display().to_string();
        let value: Value = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| Error::input(path, e.to_string()))?
        } else {
            toml::from_str(&text).map_err(|e| Error::input(path, e.to_string()))?
        };
        let loaded = whittle::models::registry::open(model, &Device::Cpu, DType::F32)?;
        let shapes: Vec<(String, u64)> = loaded
            .model
            .layers()
            .into_iter()
            .map(|layer| {
                let (rows, cols) = layer.linear.weight.dims();
                (layer.name, (rows * cols) as u64)
            })
            .collect();
        let formats: BTreeMap<String, LayerFormat> = match BitMap::from_value(&value, &source) {
            Ok(map) => resolve_bit_map(&*loaded.model, &map)?
                .into_iter()
                .map(|l| (l.name, l.format))
                .collect(),
            // Not a bit map: a resolved map (header or eval summary) has other keys.
            Err(bit_map_error) => match map_layers(&value) {
                Ok(entries) => entries.into_iter().collect(),
                Err(_) => return Err(bit_map_error.into()),
            },
        };
        for name in formats.keys() {
            let bare = |n: &str| n.strip_prefix("model.").unwrap_or(n).to_string();
            if !shapes.iter().any(|(n, _)| bare(n) == bare(name)) {
                return Err(Error::input(
                    path,
                    format!(
                        "layer {name} is not a quantizable layer of {}",
                        model.display()
                    ),
                ));
            }
        }
        let layers = shapes
            .into_iter()
            .map(|(name, params)| {
                let bare = name.strip_prefix("model.").unwrap_or(&name);
                let format = formats
                    .get(&name)
                    .or_else(|| formats.get(bare))
                    .copied()
                    .unwrap_or(LayerFormat::Float);
                LayerBits {
                    name,
                    params,
                    format,
                }
            })
            .collect();
        Ok(Self::new(file_stem(path), layers))
    }

    /// Average bits per quantized weight (non-float layers), weighted by parameter count;
    /// `None` when every layer is float.
    pub fn average_bits(&self) -> Option<f64> {
        let (bits, params) = self
            .layers
            .iter()
            .filter(|l| l.format != LayerFormat::Float)
            .fold((0.0, 0u64), |(b, p), l| {
                (b + plotted_bits(l.format) * l.params as f64, p + l.params)
            });
        (params > 0).then(|| bits / params as f64)
    }

    /// Layers that are not float.
    pub fn quantized_layers(&self) -> usize {
        self.layers
            .iter()
            .filter(|l| l.format != LayerFormat::Float)
            .count()
    }

    /// Title line: name, average bits, quantized layers.
    pub fn title(&self) -> String {
        let average = self.average_bits().map_or_else(
            || "no quantized layer".to_string(),
            |b| format!("{b:.2} code bits per quantized weight (scales excluded)"),
        );
        format!(
            "{}: {average} (weighted by parameters); {} of {} layers quantized",
            self.name,
            self.quantized_layers(),
            self.layers.len()
        )
    }

    /// Write `DIR/NAME.bits.png` and `DIR/NAME.bits.svg`; returns their paths.
    pub fn write(&self, dir: &Path) -> Result<[std::path::PathBuf; 2]> {
        let png = dir.join(format!("{}.bits.png", self.name));
        let svg = dir.join(format!("{}.bits.svg", self.name));
        write_figure(self, &png, &svg)?;
        Ok([png, svg])
    }
}

/// File name without its extension, for figure names.
pub(crate) fn file_stem(path: &Path) -> String {
    path.file_stem()
        .map_or_else(|| "figure".into(), |s| s.to_string_lossy().into_owned())
}

/// The `layers` of a resolved map: `{path: {format, bits, group, ...}}`, as `whittle quantize`
/// writes into headers, or `{path: {bits, group, ...}}` (uniform), as QAT writes.
fn map_layers(map: &Value) -> std::result::Result<Vec<(String, LayerFormat)>, String> {
    let layers = map
        .get("layers")
        .and_then(Value::as_object)
        .ok_or("expected an object with a `layers` table")?;
    layers
        .iter()
        .map(|(name, entry)| {
            layer_format(entry)
                .map(|f| (name.clone(), f))
                .map_err(|r| format!("layers.\"{name}\": {r}"))
        })
        .collect()
}

/// One resolved layer entry (extra fields such as `method` or `bytes` are ignored).
fn layer_format(entry: &Value) -> std::result::Result<LayerFormat, String> {
    if entry.as_str() == Some("float") {
        return Ok(LayerFormat::Float);
    }
    let group = || {
        entry
            .get("group")
            .and_then(Value::as_u64)
            .map(|g| g as usize)
    };
    let kind = entry
        .get("format")
        .and_then(Value::as_str)
        .or_else(|| entry.get("bits").map(|_| "uniform"));
    match kind {
        Some("float") => Ok(LayerFormat::Float),
        Some("ternary") => Ok(LayerFormat::Ternary {
            group: group(),
            trits5: entry
                .get("trits5")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                || entry.get("layout").and_then(Value::as_str) == Some("1.6bit"),
            sparse: entry
                .get("sparse")
                .and_then(Value::as_bool)
                .unwrap_or(false)
                || entry.get("layout").and_then(Value::as_str) == Some("sparse"),
        }),
        Some("uniform") => {
            let bits = entry
                .get("bits")
                .and_then(Value::as_u64)
                .filter(|b| (1..=16).contains(b))
                .ok_or("`bits` must be an integer from 1 to 16")?;
            Ok(LayerFormat::Uniform {
                bits: bits as u8,
                group: group(),
                symmetric: entry
                    .get("symmetric")
                    .and_then(Value::as_bool)
                    .unwrap_or(true),
            })
        }
        Some(other) => Err(format!("unknown format \"{other}\"")),
        None => Err("expected \"float\" or an object with `format` or `bits`".into()),
    }
}

impl Figure for BitChart {
    fn size(&self) -> (u32, u32) {
        ((140 + 18 * self.layers.len() as u32).max(900), 560)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(msg)?;
        let n = self.layers.len();
        let mut chart = ChartBuilder::on(root)
            .caption(self.title(), (FONT, 20).into_font().color(&INK))
            .margin(14)
            .x_label_area_size(64)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..n as f64, 0f64..19f64)
            .map_err(msg)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(10)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .y_desc("bits per weight")
            .label_style((FONT, 14).into_font().color(&INK))
            .axis_desc_style((FONT, 14).into_font().color(&INK))
            .light_line_style(WHITE)
            .bold_line_style(RULE.mix(0.5))
            .draw()
            .map_err(msg)?;

        // Thin separators between transformer blocks.
        let boundaries = (1..n).filter(|&i| {
            let (a, b) = (
                model_order(&self.layers[i - 1].name),
                model_order(&self.layers[i].name),
            );
            (a.0, a.1) != (b.0, b.1)
        });
        chart
            .draw_series(boundaries.map(|i| {
                PathElement::new(vec![(i as f64, 0.0), (i as f64, FLOAT_BITS + 0.5)], RULE)
            }))
            .map_err(msg)?;

        chart
            .draw_series(self.layers.iter().enumerate().map(|(i, l)| {
                let color = Role::of(&l.name).color();
                let style = if l.format == LayerFormat::Float {
                    color.stroke_width(2)
                } else {
                    color.filled()
                };
                let x = i as f64;
                Rectangle::new([(x + 0.14, 0.0), (x + 0.86, plotted_bits(l.format))], style)
            }))
            .map_err(msg)?;

        // The value above the first bar of each run of equal widths.
        let value_style = TextStyle::from((FONT, 12).into_font())
            .color(&INK)
            .pos(Pos::new(HPos::Center, VPos::Bottom));
        for (i, l) in self.layers.iter().enumerate() {
            let bits = plotted_bits(l.format);
            if i > 0 && plotted_bits(self.layers[i - 1].format) == bits {
                continue;
            }
            let text = match l.format {
                LayerFormat::Float => "float".to_string(),
                LayerFormat::Ternary { .. } => "1.58".to_string(),
                LayerFormat::Uniform { bits, .. } => bits.to_string(),
            };
            chart
                .draw_series(std::iter::once(Text::new(
                    text,
                    (i as f64 + 0.5, bits + 0.25),
                    value_style.clone(),
                )))
                .map_err(msg)?;
        }

        // Layer names under the axis, rotated.
        let label_style = TextStyle::from((FONT, 12).into_font())
            .color(&INK)
            .transform(FontTransform::Rotate90)
            .pos(Pos::new(HPos::Left, VPos::Center));
        for (i, l) in self.layers.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            root.draw(&Text::new(
                short_label(&l.name),
                (x, y + 6),
                label_style.clone(),
            ))
            .map_err(msg)?;
        }

        // Legend (circles, so that the SVG's rectangles are the bars alone), inside the plot
        // above the 16-bit line.
        let mut roles: Vec<Role> = self.layers.iter().map(|l| Role::of(&l.name)).collect();
        roles.sort();
        roles.dedup();
        // (text, marker: colour and whether filled; none for a plain note)
        let mut items: Vec<(String, Option<(RGBColor, bool)>)> = roles
            .iter()
            .map(|r| (r.label().to_string(), Some((r.color(), true))))
            .collect();
        if self.layers.iter().any(|l| l.format == LayerFormat::Float) {
            items.push((
                "outlined: kept in float (drawn at 16)".into(),
                Some((INK, false)),
            ));
        }
        if self
            .layers
            .iter()
            .any(|l| matches!(l.format, LayerFormat::Ternary { .. }))
        {
            items.push(("ternary drawn at log2(3) = 1.58".into(), None));
        }
        let legend_style = TextStyle::from((FONT, 14).into_font())
            .color(&INK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        let (mut x, y) = chart.backend_coord(&(0.0, 18.0));
        x += 10;
        for (text, marker) in items {
            if let Some((color, filled)) = marker {
                let style = if filled {
                    color.filled()
                } else {
                    color.stroke_width(1)
                };
                root.draw(&Circle::new((x + 6, y), 6, style)).map_err(msg)?;
                x += 17;
            }
            root.draw(&Text::new(text.clone(), (x, y), legend_style.clone()))
                .map_err(msg)?;
            x += text_width(root, &text, &legend_style)? + 22;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layers_sort_into_model_order() {
        let names = [
            "model.decoder.embed_tokens",
            "model.decoder.layers.10.fc1",
            "model.decoder.layers.2.encoder_attn.q_proj",
            "model.decoder.layers.2.self_attn.out_proj",
            "model.encoder.layers.1.fc2",
            "model.encoder.layers.1.self_attn.k_proj",
            "model.encoder.layers.0.fc1",
        ];
        let chart = BitChart::new(
            "t",
            names
                .iter()
                .map(|n| LayerBits {
                    name: n.to_string(),
                    params: 1,
                    format: LayerFormat::Float,
                })
                .collect(),
        );
        let labels: Vec<String> = chart.layers.iter().map(|l| short_label(&l.name)).collect();
        assert_eq!(
            labels,
            ["E0 fc1", "E1 k", "E1 fc2", "D2 o", "D2 xq", "D10 fc1", "embed"]
        );
    }

    #[test]
    fn average_is_weighted_by_parameters_and_skips_float() {
        let layer = |name: &str, params, format| LayerBits {
            name: name.into(),
            params,
            format,
        };
        let chart = BitChart::new(
            "t",
            vec![
                layer(
                    "model.encoder.layers.0.fc1",
                    300,
                    LayerFormat::uniform(4, Some(64)),
                ),
                layer(
                    "model.encoder.layers.0.fc2",
                    100,
                    LayerFormat::uniform(8, None),
                ),
                layer("model.decoder.embed_tokens", 10_000, LayerFormat::Float),
                layer(
                    "model.encoder.layers.0.self_attn.q_proj",
                    100,
                    LayerFormat::Ternary {
                        group: Some(64),
                        trits5: true,
                        sparse: false,
                    },
                ),
            ],
        );
        let expected = (300.0 * 4.0 + 100.0 * 8.0 + 100.0 * TERNARY_BITS) / 500.0;
        let got = chart.average_bits().unwrap();
        assert!((got - expected).abs() < 1e-12, "{got} != {expected}");
        assert_eq!(chart.quantized_layers(), 3);
        let all_float = BitChart::new("f", vec![layer("x.fc1", 5, LayerFormat::Float)]);
        assert_eq!(all_float.average_bits(), None);
    }

    #[test]
    fn resolved_entries_parse_in_both_header_shapes() {
        let ptq: Value = serde_json::json!({"format": "uniform", "bits": 3, "group": 64, "symmetric": false, "method": "gptq"});
        let qat: Value = serde_json::json!({"bits": 4, "group": 64, "method": "lsq-qat"});
        let ternary: Value = serde_json::json!({"format": "ternary", "group": 64, "trits5": true});
        assert_eq!(
            layer_format(&ptq).unwrap(),
            LayerFormat::Uniform {
                bits: 3,
                group: Some(64),
                symmetric: false
            }
        );
        assert_eq!(
            layer_format(&qat).unwrap(),
            LayerFormat::uniform(4, Some(64))
        );
        assert_eq!(
            layer_format(&ternary).unwrap(),
            LayerFormat::Ternary {
                group: Some(64),
                trits5: true,
                sparse: false,
            }
        );
        assert!(layer_format(&serde_json::json!({"format": "int4"})).is_err());
        assert!(layer_format(&serde_json::json!({"group": 64})).is_err());
    }
}
