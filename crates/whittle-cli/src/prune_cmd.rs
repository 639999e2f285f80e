//! `whittle prune`: structured pruning of a Whisper model by a keep list or the magnitude
//! baseline, physically removed and written as a `.whittle` file (see docs/pruning.md).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use whittle::candle::{DType, Device};
use whittle::compress::prune::{magnitude_keep, prune_whisper, StructureKeep};
use whittle::models::registry;
use whittle::models::whisper::Transcriber;

/// `whittle prune MODEL (--magnitude SPARSITY | --keep FILE) -o OUT.whittle`
#[derive(Args)]
pub struct PruneArgs {
    /// Model folder (CTranslate2 or Hugging Face) or an unquantized `.whittle` file.
    model: PathBuf,
    /// The magnitude baseline: every attention and FFN module keeps this fraction of its heads
    /// or units removed, those of smallest weight norm (0 <= S < 1).
    #[arg(
        long,
        value_name = "S",
        conflicts_with = "keep",
        required_unless_present = "keep"
    )]
    magnitude: Option<f64>,
    /// A keep list (JSON: the units each module keeps, with scales), as a gate method's
    /// extraction writes it.
    #[arg(long, value_name = "FILE")]
    keep: Option<PathBuf>,
    /// Also write the keep list that was applied to this JSON file.
    #[arg(long, value_name = "FILE")]
    keep_out: Option<PathBuf>,
    /// Output `.whittle` file.
    #[arg(long, short)]
    output: PathBuf,
}

pub fn prune(args: PruneArgs) -> Result<()> {
    if args.output.extension().is_none_or(|e| e != "whittle") {
        bail!("output {} must end in .whittle", args.output.display());
    }
    let t0 = Instant::now();
    let mut loaded = registry::open(&args.model, &Device::Cpu, DType::F32)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    if loaded.store.packed_names().next().is_some() {
        bail!(
            "{} holds quantized matrices; prune the float model, then quantize",
            args.model.display()
        );
    }
    let source_bytes = loaded.location.weights_bytes();
    let architecture = loaded.model.architecture();
    let Some(transcriber) = loaded.model.as_any_mut().downcast_mut::<Transcriber>() else {
        bail!(
            "{}: structured pruning is implemented for Whisper; this is a {architecture} model",
            args.model.display()
        );
    };
    let model = &mut transcriber.model;
    let (keep, method) = match (&args.keep, args.magnitude) {
        (Some(path), _) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading keep list {}", path.display()))?;
            let keep: StructureKeep = serde_json::from_str(&text)
                .with_context(|| format!("parsing keep list {}", path.display()))?;
            (
                keep,
                serde_json::json!({ "method": "keep-list", "source": path.display().to_string() }),
            )
        }
        (None, Some(s)) => (
            magnitude_keep(model, s)?,
            serde_json::json!({ "method": "magnitude", "sparsity": s }),
        ),
        (None, None) => bail!("give --magnitude S or --keep FILE"),
    };
    let report =
        prune_whisper(model, &keep).with_context(|| format!("pruning {}", args.model.display()))?;
    let keep_json = serde_json::to_value(&keep)?;
    if let Some(path) = &args.keep_out {
        whittle::fsutil::write_atomic(path, serde_json::to_string_pretty(&keep_json)?.as_bytes())?;
    }
    let mut recipe = method;
    recipe["kind"] = "structured-pruning".into();
    recipe["keep"] = keep_json;
    let header = [
        ("recipe", recipe),
        ("pruning", serde_json::to_value(&report)?),
        (
            "provenance",
            crate::ptq_cmd::provenance(&args.model, &loaded, t0),
        ),
        ("results", serde_json::Value::Null),
    ];
    let bytes = whittle::compress::export::write_packed(
        &loaded.store,
        &*loaded.model,
        "whisper",
        &loaded.family_header,
        &header,
        &args.output,
    )?;
    println!(
        "{}: prunable parameters {} -> {} ({:.1} % removed), all parameters {} -> {} ({:.1} % fewer), {bytes} bytes ({:.1} MB; source {:.1} MB)\nshapes (heads[+cross heads]/FFN units; - = layer removed): {}",
        args.output.display(),
        report.prunable_before,
        report.prunable_after,
        100.0 * report.sparsity,
        report.parameters_before,
        report.parameters_after,
        100.0 * (1.0 - report.parameters_after as f64 / report.parameters_before as f64),
        bytes as f64 / 1e6,
        source_bytes as f64 / 1e6,
        report.shapes
    );
    Ok(())
}
