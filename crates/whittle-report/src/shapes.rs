//! The surviving attention heads and FFN units of each layer of a structurally pruned Whisper
//! `.whittle` file (issue 12, "Figures"): per layer, the kept fraction of self-attention heads,
//! cross-attention heads (decoder) and FFN units, as grouped bars.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use whittle::models::whisper::{BlockShape, WhisperConfig};
use whittle::packed_file::{keys, PackedFile};

use crate::bits::file_stem;
use crate::draw::{msg, text_width, write_figure, DrawResult, Figure, FONT, INK, PALETTE, RULE};
use crate::error::{Error, Result};

/// Per-layer kept units of a pruned model against its unpruned shape.
#[derive(Debug, Clone)]
pub struct ShapeChart {
    /// Figure name (the file's stem).
    pub name: String,
    /// Encoder blocks as kept.
    pub encoder: Vec<BlockShape>,
    /// Decoder blocks as kept.
    pub decoder: Vec<BlockShape>,
    /// Heads per layer before pruning (encoder, decoder).
    pub heads: (usize, usize),
    /// FFN units per layer before pruning (encoder, decoder).
    pub ffn: (usize, usize),
    /// Parameters of the pruned and of the unpruned architecture.
    pub parameters: (usize, usize),
}

impl ShapeChart {
    /// The shapes recorded in a `.whittle` file's configuration.
    pub fn from_packed_file(path: &Path) -> Result<Self> {
        let file = PackedFile::open(path)?;
        if file.architecture() != "whisper" {
            return Err(Error::input(
                path,
                format!(
                    "a {} model; the figure reads Whisper's per-layer shapes",
                    file.architecture()
                ),
            ));
        }
        let config = file
            .header_field(keys::CONFIG)
            .ok_or_else(|| Error::input(path, "the header has no `config`"))?;
        let config: WhisperConfig = serde_json::from_value(config.clone())
            .map_err(|e| Error::input(path, format!("config: {e}")))?;
        config.validate(&path.display().to_string())?;
        let shapes = config.layer_shapes.clone().ok_or_else(|| {
            Error::input(
                path,
                "the configuration has no `layer_shapes` (not a pruned model)",
            )
        })?;
        let unpruned = WhisperConfig {
            layer_shapes: None,
            ..config.clone()
        };
        Ok(Self {
            name: file_stem(path),
            encoder: shapes.encoder,
            decoder: shapes.decoder,
            heads: (
                config.encoder_attention_heads,
                config.decoder_attention_heads,
            ),
            ffn: (config.encoder_ffn_dim, config.decoder_ffn_dim),
            parameters: (config.parameter_count(), unpruned.parameter_count()),
        })
    }

    /// One line for the caption.
    pub fn title(&self) -> String {
        format!(
            "{}: surviving heads and FFN units per layer ({:.1} M of {:.1} M parameters)",
            self.name,
            self.parameters.0 as f64 / 1e6,
            self.parameters.1 as f64 / 1e6
        )
    }

    /// `(label, [self heads, cross heads (None in the encoder), FFN units] as kept fractions)`.
    fn bars(&self) -> Vec<(String, [Option<f64>; 3])> {
        let frac = |kept: usize, of: usize| Some(kept as f64 / of.max(1) as f64);
        let encoder = self.encoder.iter().enumerate().map(|(i, b)| {
            (
                format!("enc {i}"),
                [
                    frac(b.self_attention_heads, self.heads.0),
                    None,
                    frac(b.ffn_dim, self.ffn.0),
                ],
            )
        });
        let decoder = self.decoder.iter().enumerate().map(|(i, b)| {
            (
                format!("dec {i}"),
                [
                    frac(b.self_attention_heads, self.heads.1),
                    frac(b.cross_attention_heads, self.heads.1),
                    frac(b.ffn_dim, self.ffn.1),
                ],
            )
        });
        encoder.chain(decoder).collect()
    }

    /// Write `DIR/NAME.shapes.png` and `DIR/NAME.shapes.svg`; returns their paths.
    pub fn write(&self, dir: &Path) -> Result<[std::path::PathBuf; 2]> {
        let png = dir.join(format!("{}.shapes.png", self.name));
        let svg = dir.join(format!("{}.shapes.svg", self.name));
        write_figure(self, &png, &svg)?;
        Ok([png, svg])
    }
}

const SERIES: [&str; 3] = ["self-attention heads", "cross-attention heads", "FFN units"];

impl Figure for ShapeChart {
    fn size(&self) -> (u32, u32) {
        let layers = (self.encoder.len() + self.decoder.len()) as u32;
        ((160 + 64 * layers).max(900), 520)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(msg)?;
        let bars = self.bars();
        let n = bars.len();
        let mut chart = ChartBuilder::on(root)
            .caption(self.title(), (FONT, 20).into_font().color(&INK))
            .margin(14)
            .x_label_area_size(40)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..n as f64, 0f64..1.25f64)
            .map_err(msg)?;
        chart
            .configure_mesh()
            .disable_x_mesh()
            .x_labels(0)
            .y_labels(6)
            .y_label_formatter(&|y| format!("{:.0} %", y * 100.0))
            .y_desc("kept")
            .label_style((FONT, 14).into_font().color(&INK))
            .axis_desc_style((FONT, 14).into_font().color(&INK))
            .light_line_style(WHITE)
            .bold_line_style(RULE.mix(0.5))
            .draw()
            .map_err(msg)?;
        for (k, _) in SERIES.iter().enumerate() {
            let color = PALETTE[k];
            chart
                .draw_series(bars.iter().enumerate().filter_map(|(i, (_, values))| {
                    let v = values[k]?;
                    let x = i as f64 + 0.1 + 0.27 * k as f64;
                    // A removed module shows as an outline on the axis.
                    let style = if v == 0.0 {
                        color.stroke_width(2)
                    } else {
                        color.filled()
                    };
                    Some(Rectangle::new([(x, 0.0), (x + 0.25, v.max(0.004))], style))
                }))
                .map_err(msg)?;
        }
        let label_style = TextStyle::from((FONT, 14).into_font())
            .color(&INK)
            .pos(Pos::new(HPos::Center, VPos::Top));
        for (i, (label, _)) in bars.iter().enumerate() {
            let (x, y) = chart.backend_coord(&(i as f64 + 0.5, 0.0));
            root.draw(&Text::new(label.clone(), (x, y + 6), label_style.clone()))
                .map_err(msg)?;
        }
        let legend_style = TextStyle::from((FONT, 14).into_font())
            .color(&INK)
            .pos(Pos::new(HPos::Left, VPos::Center));
        let (mut x, y) = chart.backend_coord(&(0.0, 1.17));
        x += 10;
        for (k, text) in SERIES.iter().enumerate() {
            root.draw(&Circle::new((x + 6, y), 6, PALETTE[k].filled()))
                .map_err(msg)?;
            x += 17;
            root.draw(&Text::new(text.to_string(), (x, y), legend_style.clone()))
                .map_err(msg)?;
            x += text_width(root, text, &legend_style)? + 22;
        }
        let note = "outline on the axis: module removed";
        root.draw(&Text::new(note.to_string(), (x, y), legend_style.clone()))
            .map_err(msg)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bars_are_kept_fractions_with_no_cross_attention_in_the_encoder() {
        let shape = |s, c, f| BlockShape {
            self_attention_heads: s,
            cross_attention_heads: c,
            ffn_dim: f,
        };
        let chart = ShapeChart {
            name: "t".into(),
            encoder: vec![shape(3, 0, 768)],
            decoder: vec![shape(6, 0, 0)],
            heads: (6, 6),
            ffn: (1536, 1536),
            parameters: (1, 2),
        };
        let bars = chart.bars();
        assert_eq!(bars[0].1, [Some(0.5), None, Some(0.5)]);
        assert_eq!(bars[1].1, [Some(1.0), Some(0.0), Some(0.0)]);
        assert_eq!(bars[1].0, "dec 0");
    }
}
