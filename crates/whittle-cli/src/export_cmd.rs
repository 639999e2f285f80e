//! `whittle export`: write a model in another runtime's format (whisper.cpp's ggml).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use whittle::candle::{DType, Device};
use whittle::kernels::ggml::GgmlType;
use whittle::models::registry;
use whittle::models::whisper::ggml::{write_ggml, GgmlExportOptions};
use whittle::models::whisper::Transcriber;

/// Output formats of `whittle export`.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExportFormat {
    /// whisper.cpp's model file (`ggml-*.bin`).
    Ggml,
}

/// `whittle export MODEL --format ggml -o ggml-model.bin`
#[derive(Args)]
pub struct ExportArgs {
    /// Model folder (CTranslate2 or Hugging Face) or `.whittle` file.
    model: PathBuf,
    /// Output format.
    #[arg(long, value_enum, default_value = "ggml")]
    format: ExportFormat,
    /// Output file.
    #[arg(short, long)]
    output: PathBuf,
    /// The file's one matrix type (whisper.cpp loads one per file): `auto` keeps every packed
    /// matrix code for code in the narrowest type that holds it; or f32, f16, q8_0, q5_0, q4_0,
    /// q5_1, q4_1, re-quantizing what that type cannot hold exactly.
    #[arg(long, default_value = "auto")]
    ggml_type: String,
    /// Fail instead of writing when any matrix would be re-quantized.
    #[arg(long)]
    require_exact: bool,
    /// Write the per-tensor report (type, exactness, reconstruction error) as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
}

pub fn export(args: ExportArgs) -> Result<()> {
    let matrix_type = match args.ggml_type.as_str() {
        "auto" => None,
        name => Some(GgmlType::parse(name).with_context(|| {
            format!("--ggml-type {name}: expected auto, f32, f16, q8_0, q5_0, q4_0, q5_1 or q4_1")
        })?),
    };
    let loaded = registry::open(&args.model, &Device::Cpu, DType::F32)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let Some(transcriber) = loaded.model.as_any().downcast_ref::<Transcriber>() else {
        bail!(
            "--format ggml writes whisper.cpp files, for Whisper models only; {} is a {} model",
            args.model.display(),
            loaded.model.architecture()
        );
    };
    match args.format {
        ExportFormat::Ggml => {}
    }
    let options = GgmlExportOptions { matrix_type };
    if args.require_exact {
        let chosen = matrix_type.unwrap_or_else(|| {
            whittle::models::whisper::ggml::choose_matrix_type(&transcriber.model)
        });
        let inexact = whittle::models::whisper::ggml::inexact_matrices(&transcriber.model, chosen);
        if !inexact.is_empty() {
            bail!(
                "--require-exact: {} matrices cannot be stored exactly as {chosen}: {}",
                inexact.len(),
                inexact.join(", ")
            );
        }
    }
    let report = write_ggml(
        &transcriber.model,
        &transcriber.tokenizer,
        options,
        &args.output,
    )
    .with_context(|| format!("writing {}", args.output.display()))?;
    let (matrices, others): (Vec<_>, Vec<_>) = report.tensors.iter().partition(|t| t.matrix);
    for t in matrices.iter().filter(|t| !t.exact) {
        eprintln!(
            "warning: {} ({}) re-quantized to {}: relative RMS error {:.3e}, max |error| {:.3e}",
            t.name, t.source, t.ggml_type, t.relative_rms_error, t.max_abs_error
        );
    }
    println!(
        "wrote {} ({} bytes, whisper.cpp ggml, matrices {}): {} of {} matrices copied code for code",
        args.output.display(),
        report.bytes,
        report.matrix_type,
        matrices.iter().filter(|t| t.exact).count(),
        matrices.len()
    );
    let rounded: Vec<_> = others.iter().filter(|t| !t.exact).collect();
    if let Some(worst) = rounded
        .iter()
        .max_by(|a, b| a.relative_rms_error.total_cmp(&b.relative_rms_error))
    {
        println!(
            "{} other tensors rounded to their whisper.cpp type (largest relative RMS error {:.3e}, {})",
            rounded.len(),
            worst.relative_rms_error,
            worst.name
        );
    }
    if let Some(path) = &args.report {
        let json = serde_json::to_vec_pretty(&report)?;
        whittle::fsutil::write_atomic(path, &json)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}
