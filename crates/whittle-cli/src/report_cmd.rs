//! `whittle report`: figures from whittle's outputs (per-layer bit widths, WER vs size), drawn by
//! the `whittle-report` crate as PNG and SVG.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use whittle_report::bits::BitChart;
use whittle_report::pareto::{self, Table};
use whittle_report::shapes::ShapeChart;

/// `whittle report (bits INPUT... | pareto TABLE | shapes INPUT...) -o DIR`
#[derive(Args)]
pub struct ReportArgs {
    #[command(subcommand)]
    figure: Figure,
}

#[derive(Subcommand)]
enum Figure {
    /// Per-layer bit-width chart of each INPUT: NAME.bits.png and NAME.bits.svg.
    Bits(BitsArgs),
    /// WER-vs-size Pareto plot of the rows of TABLE (`scripts/eval_table.py --json`):
    /// NAME.pareto.png and NAME.pareto.svg.
    Pareto(ParetoArgs),
    /// Surviving heads and FFN units per layer of each structurally pruned `.whittle` INPUT:
    /// NAME.shapes.png and NAME.shapes.svg.
    Shapes(ShapesArgs),
}

#[derive(Args)]
struct ShapesArgs {
    /// Pruned Whisper `.whittle` files.
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Output folder (created if missing).
    #[arg(long, short)]
    output: PathBuf,
}

#[derive(Args)]
struct BitsArgs {
    /// `.whittle` files, or bit map files (TOML/JSON, plain or resolved; these need --model).
    #[arg(required = true)]
    inputs: Vec<PathBuf>,
    /// Model whose layers a bit map file is resolved against (model folder or `.whittle` file).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Output folder (created if missing).
    #[arg(long, short)]
    output: PathBuf,
}

#[derive(Args)]
struct ParetoArgs {
    /// Rows file written by `scripts/eval_table.py --json FILE`.
    table: PathBuf,
    /// Figure name (default: the table file's stem).
    #[arg(long)]
    name: Option<String>,
    /// Output folder (created if missing).
    #[arg(long, short)]
    output: PathBuf,
}

pub fn run(args: ReportArgs) -> Result<()> {
    match args.figure {
        Figure::Bits(a) => bits(a),
        Figure::Pareto(a) => pareto(a),
        Figure::Shapes(a) => shapes(a),
    }
}

fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))
}

/// Draw one figure per input into `output` with `draw` (returning the figure's title and files),
/// refusing two inputs of the same file stem, whose figures would overwrite each other.
fn figures_per_input(
    inputs: &[PathBuf],
    output: &Path,
    mut draw: impl FnMut(&Path) -> Result<(String, [PathBuf; 2])>,
) -> Result<()> {
    // Figures are named after their input's file stem: check before drawing any.
    let mut names = std::collections::HashSet::new();
    for input in inputs {
        let name = input.file_stem().unwrap_or_default().to_string_lossy();
        if !names.insert(name.to_string()) {
            bail!(
                "{}: another input is also named {name}; its figures would overwrite these (write them to another folder)",
                input.display()
            );
        }
    }
    create_dir(output)?;
    for input in inputs {
        let (title, [png, svg]) = draw(input)?;
        println!(
            "{}: {title} -> {}, {}",
            input.display(),
            png.display(),
            svg.display()
        );
    }
    Ok(())
}

fn bits(args: BitsArgs) -> Result<()> {
    figures_per_input(&args.inputs, &args.output, |input| {
        let is_packed = input.extension().is_some_and(|e| e == "whittle");
        let chart = if is_packed {
            BitChart::from_packed_file(input)
        } else {
            let Some(model) = &args.model else {
                bail!(
                    "{}: a bit map file needs --model MODEL (a model folder or .whittle file) for its layers and their sizes",
                    input.display()
                );
            };
            BitChart::from_bit_map_file(input, model)
        }
        .with_context(|| format!("reading {}", input.display()))?;
        Ok((chart.title(), chart.write(&args.output)?))
    })
}

fn pareto(args: ParetoArgs) -> Result<()> {
    let table = Table::from_file(&args.table)?;
    create_dir(&args.output)?;
    let name = args
        .name
        .unwrap_or_else(|| pareto::default_name(&args.table));
    let [png, svg] = table.plot(name).write(&args.output)?;
    println!(
        "{}: {} rows x {} sets -> {}, {}",
        args.table.display(),
        table.rows.len(),
        table.sets.len(),
        png.display(),
        svg.display()
    );
    Ok(())
}

fn shapes(args: ShapesArgs) -> Result<()> {
    figures_per_input(&args.inputs, &args.output, |input| {
        let chart = ShapeChart::from_packed_file(input)
            .with_context(|| format!("reading {}", input.display()))?;
        Ok((chart.title(), chart.write(&args.output)?))
    })
}
