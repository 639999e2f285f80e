//! WER-vs-size plots of an evaluation table: every row at (file size, WER) for each test set,
//! one colour per set, the baseline (float) as a dashed reference line, and the Pareto front of
//! each set (rows that no other row beats on both size and WER) joined by a line.
//!
//! The input is the rows file `scripts/eval_table.py --json FILE` writes (`docs/report.md`):
//!
//! ```json
//! {"baseline": "float", "fp32_bytes": 151041024, "sets": ["real", "synth-test-clean"],
//!  "rows": [{"name": "w4g64-rtn", "file": "...", "bytes": 53742784, "ratio_vs_fp32": 2.81,
//!            "sets": {"real": {"wer": 0.066, "relative_change_percent": 4.1,
//!                              "ci_percent": [-3.0, 12.0], "p_value": 0.31,
//!                              "verdict": "inconclusive"}, ...}}, ...]}
//! ```
//!
//! WER is drawn on a log axis (sets differ several-fold, and a broken row can be ten times worse
//! than the rest). Markers are filled when the row's verdict on that set is `equivalent`, `better` or
//! `baseline`, hollow when it is `worse` or `inconclusive` (not shown to be lossless).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::combinators::BindKeyPoints;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde::Deserialize;

use crate::bits::file_stem;
use crate::draw::{
    hex, msg, text_width, write_figure, DrawResult, Figure, FONT, INK, PALETTE, RULE,
};
use crate::error::{read_text, Error, Result};

/// The rows file.
#[derive(Debug, Clone, Deserialize)]
pub struct Table {
    /// Name of the baseline row (default `float`).
    #[serde(default = "default_baseline")]
    pub baseline: String,
    /// Bytes of the model's weights in f32, when known.
    #[serde(default)]
    pub fp32_bytes: Option<u64>,
    /// Test sets, in the order to draw them.
    pub sets: Vec<String>,
    /// One entry per model file.
    pub rows: Vec<Row>,
}

fn default_baseline() -> String {
    "float".into()
}

/// One model file and its results.
#[derive(Debug, Clone, Deserialize)]
pub struct Row {
    /// Short name, e.g. `w4g64-gptq`.
    pub name: String,
    /// The model file, when recorded.
    #[serde(default)]
    pub file: Option<String>,
    /// File size in bytes.
    pub bytes: u64,
    /// fp32 bytes / file bytes.
    #[serde(default)]
    pub ratio_vs_fp32: Option<f64>,
    /// Results per test set.
    pub sets: BTreeMap<String, SetResult>,
}

/// A row's result on one test set.
#[derive(Debug, Clone, Deserialize)]
pub struct SetResult {
    /// Word error rate, a fraction.
    pub wer: f64,
    /// Relative WER change against the baseline, in percent (absent for the baseline).
    #[serde(default)]
    pub relative_change_percent: Option<f64>,
    /// Its 95 % confidence interval, in percent.
    #[serde(default)]
    pub ci_percent: Option<[f64; 2]>,
    /// MAPSSWE p-value against the baseline.
    #[serde(default)]
    pub p_value: Option<f64>,
    /// `worse`, `better`, `equivalent`, `inconclusive`, or `baseline`.
    #[serde(default)]
    pub verdict: Option<String>,
}

impl SetResult {
    /// Whether the marker is filled: not shown worse and not inconclusive.
    pub fn lossless(&self) -> bool {
        matches!(
            self.verdict.as_deref(),
            Some("equivalent" | "better" | "baseline")
        )
    }
}

/// Colour of the `k`-th test set's series.
pub fn set_color(k: usize) -> RGBColor {
    PALETTE[k % PALETTE.len()]
}

/// [`set_color`] as the SVG files write it (`#RRGGBB`), for tests and tools that read them.
pub fn set_color_hex(k: usize) -> String {
    hex(set_color(k))
}

/// Indices of the Pareto-optimal points of `(size, error)`: those no other point matches or beats
/// on both with one strictly better. Returned in increasing size.
pub fn pareto_front(points: &[(f64, f64)]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by(|&a, &b| {
        points[a]
            .0
            .total_cmp(&points[b].0)
            .then(points[a].1.total_cmp(&points[b].1))
    });
    let mut front = Vec::new();
    let mut best = f64::INFINITY;
    for i in order {
        if points[i].1 < best {
            best = points[i].1;
            front.push(i);
        }
    }
    front
}

impl Table {
    /// Read and check a rows file: at least one row, every row with every set, finite WERs.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = read_text(path)?;
        let table: Table =
            serde_json::from_str(&text).map_err(|e| Error::input(path, e.to_string()))?;
        if table.rows.is_empty() {
            return Err(Error::input(path, "no rows to plot"));
        }
        if table.sets.is_empty() {
            return Err(Error::input(path, "no test sets (`sets` is empty)"));
        }
        for row in &table.rows {
            if row.bytes == 0 {
                return Err(Error::input(
                    path,
                    format!("row {}: `bytes` is 0", row.name),
                ));
            }
            for set in &table.sets {
                let result = row.sets.get(set).ok_or_else(|| {
                    Error::input(
                        path,
                        format!("row {} has no result for set {set}", row.name),
                    )
                })?;
                if !result.wer.is_finite() || result.wer < 0.0 {
                    return Err(Error::input(
                        path,
                        format!(
                            "row {}, set {set}: WER {} is not a non-negative number",
                            row.name, result.wer
                        ),
                    ));
                }
            }
        }
        Ok(table)
    }

    /// A figure of the table, named `name` (the output files are `NAME.pareto.png/svg`).
    pub fn plot(&self, name: impl Into<String>) -> ParetoPlot<'_> {
        ParetoPlot {
            table: self,
            name: name.into(),
        }
    }
}

/// A table to draw, with its name.
pub struct ParetoPlot<'a> {
    table: &'a Table,
    name: String,
}

impl ParetoPlot<'_> {
    /// Write `DIR/NAME.pareto.png` and `DIR/NAME.pareto.svg`; returns their paths.
    pub fn write(&self, dir: &Path) -> Result<[PathBuf; 2]> {
        let png = dir.join(format!("{}.pareto.png", self.name));
        let svg = dir.join(format!("{}.pareto.svg", self.name));
        write_figure(self, &png, &svg)?;
        Ok([png, svg])
    }

    /// `(MB, WER %)` of every row on `set`.
    fn points(&self, set: &str) -> Vec<(f64, f64)> {
        self.table
            .rows
            .iter()
            .map(|r| (r.bytes as f64 / 1e6, 100.0 * r.sets[set].wer))
            .collect()
    }
}

/// The figure name for a rows file: its stem.
pub fn default_name(path: &Path) -> String {
    file_stem(path)
}

impl Figure for ParetoPlot<'_> {
    fn size(&self) -> (u32, u32) {
        (1280, 760)
    }

    fn draw<DB: DrawingBackend>(&self, root: &DrawingArea<DB, Shift>) -> DrawResult {
        root.fill(&WHITE).map_err(msg)?;
        let t = self.table;
        let (width, _) = self.size();
        let body = root
            .margin(10, 0, 0, 0)
            .titled(
                &format!("{}: WER vs file size ({} rows)", self.name, t.rows.len()),
                (FONT, 20).into_font().color(&INK),
            )
            .map_err(msg)?;
        let (plot_area, legend_area) = body.split_horizontally(width as i32 - LEGEND_WIDTH);
        let all: Vec<(f64, f64)> = t.sets.iter().flat_map(|s| self.points(s)).collect();
        let (x_min, x_max) = all
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), p| {
                (a.min(p.0), b.max(p.0))
            });
        let pad = ((x_max - x_min) * 0.06).max(x_max * 0.02);
        let x_range = (x_min - pad).max(0.0)..x_max + 2.0 * pad;
        // Enough decimals that neighbouring ticks differ.
        let x_decimals =
            (1.0 - (x_range.end - x_range.start).log10().floor()).clamp(0.0, 4.0) as usize;
        // WER on a log axis: sets differ several-fold in WER and a broken model can be ten times
        // worse than the rest; a log axis keeps every row readable. A WER of 0 sits on the floor.
        let positive = all.iter().map(|p| p.1).filter(|&y| y > 0.0);
        let y_low = positive.clone().fold(f64::INFINITY, f64::min);
        let y_low = if y_low.is_finite() { y_low / 1.4 } else { 0.1 };
        let y_high = positive.fold(y_low * 10.0, f64::max) * 1.4;
        let floor = |y: f64| y.max(y_low);

        let x_desc = match t.fp32_bytes {
            Some(b) => format!(
                "file size (MB); above the plot: compression vs fp32 ({:.1} MB)",
                b as f64 / 1e6
            ),
            None => "file size (MB)".into(),
        };
        let mut chart = ChartBuilder::on(&plot_area)
            .margin(16)
            .margin_top(28)
            .x_label_area_size(52)
            .y_label_area_size(60)
            .build_cartesian_2d(
                x_range.clone(),
                (y_low..y_high)
                    .log_scale()
                    .with_key_points(log_ticks(y_low, y_high)),
            )
            .map_err(msg)?;
        chart
            .configure_mesh()
            .x_desc(x_desc)
            .y_desc("WER (%), log scale")
            .x_label_formatter(&|x| format!("{x:.*}", x_decimals))
            .y_label_formatter(&|y| {
                if (y - y.round()).abs() < 1e-9 {
                    format!("{y:.0}")
                } else {
                    format!("{y:.1}")
                }
            })
            .label_style((FONT, 14).into_font().color(&INK))
            .axis_desc_style((FONT, 14).into_font().color(&INK))
            .max_light_lines(0)
            .bold_line_style(RULE.mix(0.6))
            .draw()
            .map_err(msg)?;

        let baseline = t.rows.iter().position(|r| r.name == t.baseline);
        let mut labels = Vec::new();
        for (k, set) in t.sets.iter().enumerate() {
            let color = set_color(k);
            let points: Vec<(f64, f64)> = self
                .points(set)
                .into_iter()
                .map(|(x, y)| (x, floor(y)))
                .collect();
            if let Some(b) = baseline {
                chart
                    .draw_series(DashedLineSeries::new(
                        [(x_range.start, points[b].1), (x_range.end, points[b].1)],
                        6,
                        4,
                        color.mix(0.8).stroke_width(1),
                    ))
                    .map_err(msg)?;
            }
            let front: Vec<(f64, f64)> = pareto_front(&points)
                .into_iter()
                .map(|i| points[i])
                .collect();
            chart
                .draw_series(LineSeries::new(front, color.stroke_width(2)))
                .map_err(msg)?;
            // One circle in the set's colour per point (hollow ones get a white centre).
            chart
                .draw_series(t.rows.iter().zip(&points).map(|(row, &p)| {
                    let centre = if row.sets[set].lossless() {
                        color
                    } else {
                        WHITE
                    };
                    EmptyElement::at(p)
                        + Circle::new((0, 0), 6, color.filled())
                        + Circle::new((0, 0), 3, centre.filled())
                }))
                .map_err(msg)?;
            for (row, &p) in t.rows.iter().zip(&points) {
                labels.push((chart.backend_coord(&p), row.name.clone(), color));
            }
        }
        place_labels(root, labels)?;

        // Compression ratio vs fp32 above each distinct file size.
        if let Some(fp32) = t.fp32_bytes {
            let ratio_style = TextStyle::from((FONT, 12).into_font())
                .color(&RGBColor(90, 90, 90))
                .pos(Pos::new(HPos::Center, VPos::Bottom));
            let top = chart.plotting_area().get_pixel_range().1.start;
            let mut drawn: Vec<i32> = Vec::new();
            let mut sizes: Vec<u64> = t.rows.iter().map(|r| r.bytes).collect();
            sizes.sort_unstable();
            for bytes in sizes {
                let (x, _) = chart.backend_coord(&(bytes as f64 / 1e6, y_low));
                if drawn.iter().any(|&d| (d - x).abs() < 34) {
                    continue;
                }
                drawn.push(x);
                let text = format!("{:.2}x", fp32 as f64 / bytes as f64);
                root.draw(&Text::new(text, (x, top - 4), ratio_style.clone()))
                    .map_err(msg)?;
            }
        }

        // Legend in its own column: one swatch (a rectangle) per set, then what the marks mean.
        let legend_style = TextStyle::from((FONT, 14).into_font()).color(&INK);
        let mut lines: Vec<(Option<RGBColor>, String)> = t
            .sets
            .iter()
            .enumerate()
            .map(|(k, s)| (Some(set_color(k)), s.clone()))
            .collect();
        lines.push((None, String::new()));
        lines.push((None, "solid line: the set's Pareto front".into()));
        if baseline.is_some() {
            lines.push((None, format!("dashed line: {} WER", t.baseline)));
        }
        lines.push((None, "filled: equivalent or better".into()));
        lines.push((None, "hollow: worse or inconclusive".into()));
        lines.push((None, "(verdicts vs the baseline, per set)".into()));
        for (i, (color, text)) in lines.iter().enumerate() {
            let y = 70 + 22 * i as i32;
            if let Some(c) = color {
                legend_area
                    .draw(&Rectangle::new([(4, y + 2), (20, y + 14)], c.filled()))
                    .map_err(msg)?;
            }
            legend_area
                .draw(&Text::new(text.clone(), (28, y), legend_style.clone()))
                .map_err(msg)?;
        }
        Ok(())
    }
}

/// Tick values 1, 2, 3, 4, 5, 7 x 10^k inside `[low, high]`.
fn log_ticks(low: f64, high: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    let mut decade = 10f64.powi(low.log10().floor() as i32);
    while decade <= high {
        for m in [1.0, 2.0, 3.0, 4.0, 5.0, 7.0] {
            let v = m * decade;
            if v >= low && v <= high {
                ticks.push(v);
            }
        }
        decade *= 10.0;
    }
    ticks
}

/// Width of the legend column, in pixels.
const LEGEND_WIDTH: i32 = 300;

/// Draw each point's label to its right in the point's colour, moved up or down (in steps of a
/// line) until it overlaps no label already placed.
fn place_labels<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    mut labels: Vec<((i32, i32), String, RGBColor)>,
) -> DrawResult {
    const LINE: i32 = 12;
    labels.sort_by_key(|((x, y), _, _)| (*y, *x));
    let mut placed: Vec<(i32, i32, i32, i32)> = Vec::new();
    for ((x, y), text, color) in labels {
        let style = TextStyle::from((FONT, 12).into_font()).color(&color);
        let w = text_width(root, &text, &style)?;
        let (x0, x1) = (x + 9, x + 9 + w);
        let free = |top: i32| {
            placed
                .iter()
                .all(|&(a0, b0, a1, b1)| x1 <= a0 || x0 >= a1 || top + LINE <= b0 || top >= b1)
        };
        let top = (0..40)
            .map(|k| y - LINE / 2 + if k % 2 == 0 { k / 2 } else { -(k + 1) / 2 } * LINE)
            .find(|&top| free(top))
            .unwrap_or(y - LINE / 2);
        placed.push((x0, top, x1, top + LINE));
        if (top + LINE / 2 - y).abs() > LINE / 2 {
            // Moved off its point: a leader line says which point it names.
            root.draw(&PathElement::new(
                vec![(x + 6, y), (x0 - 1, top + LINE / 2)],
                color.stroke_width(1),
            ))
            .map_err(msg)?;
        }
        root.draw(&Text::new(text, (x0, top), style)).map_err(msg)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Brute force: a point is on the front when no other point is at least as good on both axes
    /// and strictly better on one.
    fn naive_front(points: &[(f64, f64)]) -> Vec<usize> {
        let mut front: Vec<usize> = (0..points.len())
            .filter(|&i| {
                !(0..points.len()).any(|j| {
                    let (a, b) = (points[j], points[i]);
                    j != i && a.0 <= b.0 && a.1 <= b.1 && (a.0 < b.0 || a.1 < b.1)
                })
            })
            .collect();
        front.sort_by(|&a, &b| points[a].0.total_cmp(&points[b].0));
        front
    }

    #[test]
    fn front_matches_brute_force() {
        let mut state = 7u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) % 20) as f64
        };
        for _ in 0..200 {
            let n = 1 + (next() as usize % 9);
            let points: Vec<(f64, f64)> = (0..n).map(|_| (next(), next())).collect();
            // Exact duplicates: keep one of them, as the brute force keeps none; drop them here.
            let mut unique = points.clone();
            unique.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
            unique.dedup();
            let got: Vec<(f64, f64)> = pareto_front(&unique).iter().map(|&i| unique[i]).collect();
            let want: Vec<(f64, f64)> = naive_front(&unique).iter().map(|&i| unique[i]).collect();
            assert_eq!(got, want, "points {unique:?}");
        }
    }
}
