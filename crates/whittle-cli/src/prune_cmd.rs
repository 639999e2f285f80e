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
    /// Model folder (Whisper: CTranslate2 or Hugging Face; a wav2vec2, HuBERT or Conformer CTC
    /// checkpoint) or an unquantized `.whittle` file.
    model: PathBuf,
    /// The magnitude baseline: every attention, FFN (and Conformer convolution) module has this
    /// fraction of its heads, units or channels removed, those of smallest weight norm
    /// (0 <= S < 1).
    #[arg(
        long,
        value_name = "S",
        conflicts_with = "keep",
        required_unless_present = "keep"
    )]
    magnitude: Option<f64>,
    /// With --magnitude: keep each module's width (kept units x unit width) a whole multiple of
    /// this many features, the nearest one to the fraction asked (64 keeps pruned FFN widths
    /// divisible by a quantizer group of 64, so the pruned model can be trained by group-wise
    /// QAT or mixed precision; 1: the nearest unit count).
    #[arg(long, value_name = "N", default_value_t = 1, requires = "magnitude",
          value_parser = clap::value_parser!(u64).range(1..))]
    align: u64,
    /// A keep list (JSON: the units each module keeps, with scales), as a gate method's
    /// extraction writes it. Whisper: per encoder and decoder block; other families: a map from
    /// module path to what it keeps.
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
    if loaded.family != registry::Family::Whisper {
        return prune_modules(&args, loaded, source_bytes, t0);
    }
    let Some(transcriber) = loaded.model.as_any_mut().downcast_mut::<Transcriber>() else {
        bail!("{}: not a Whisper transcriber", args.model.display());
    };
    let model = &mut transcriber.model;
    let (keep, method) = match keep_list::<StructureKeep>(&args)? {
        Some(listed) => listed,
        None => magnitude(&args, |s, align| Ok(magnitude_keep(model, s, align)?))?,
    };
    let report =
        prune_whisper(model, &keep).with_context(|| format!("pruning {}", args.model.display()))?;
    let bytes = write_pruned(
        &args,
        &loaded,
        method,
        &keep,
        serde_json::to_value(&report)?,
        t0,
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

/// `prune` of a family other than Whisper (the CTC encoders): the keep list maps each prunable
/// module's path to what it keeps (`{"MODULE": {"units": [...], "branch_scale": b}}`; a module
/// not named keeps everything).
fn prune_modules(
    args: &PruneArgs,
    mut loaded: registry::LoadedModel,
    source_bytes: u64,
    t0: Instant,
) -> Result<()> {
    use std::collections::BTreeMap;
    use whittle::compress::prune::{magnitude_module_keep, ModuleKeep};
    let prunable =
        |model: &dyn whittle::models::SpeechModel| whittle::models::prunable_parameter_count(model);
    if loaded.model.prunable_modules().is_empty() {
        bail!(
            "{}: a {} model has no prunable module",
            args.model.display(),
            loaded.model.architecture()
        );
    }
    let (keep, method) = match keep_list::<BTreeMap<String, ModuleKeep>>(args)? {
        Some(listed) => listed,
        None => magnitude(args, |s, align| {
            Ok(magnitude_module_keep(&*loaded.model, s, align)?)
        })?,
    };
    let (prunable_before, parameters_before) =
        (prunable(&*loaded.model), loaded.model.parameter_count());
    loaded
        .model
        .prune_modules(&keep)
        .with_context(|| format!("pruning {}", args.model.display()))?;
    let (prunable_after, parameters_after) =
        (prunable(&*loaded.model), loaded.model.parameter_count());
    let sparsity = 1.0 - prunable_after as f64 / prunable_before.max(1) as f64;
    let report = serde_json::json!({
        "prunable_before": prunable_before,
        "prunable_after": prunable_after,
        "sparsity": sparsity,
        "parameters_before": parameters_before,
        "parameters_after": parameters_after,
    });
    let bytes = write_pruned(args, &loaded, method, &keep, report, t0)?;
    println!(
        "{}: prunable parameters {prunable_before} -> {prunable_after} ({:.1} % removed), all parameters {parameters_before} -> {parameters_after} ({:.1} % fewer), {bytes} bytes ({:.1} MB; source {:.1} MB)",
        args.output.display(),
        100.0 * sparsity,
        100.0 * (1.0 - parameters_after as f64 / parameters_before.max(1) as f64),
        bytes as f64 / 1e6,
        source_bytes as f64 / 1e6,
    );
    Ok(())
}

/// The keep list `--keep` names, with the recipe's description of it (`None`: no `--keep`).
fn keep_list<T: serde::de::DeserializeOwned>(
    args: &PruneArgs,
) -> Result<Option<(T, serde_json::Value)>> {
    let Some(path) = &args.keep else {
        return Ok(None);
    };
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading keep list {}", path.display()))?;
    let keep = serde_json::from_str(&text)
        .with_context(|| format!("parsing keep list {}", path.display()))?;
    let method = serde_json::json!({ "method": "keep-list", "source": path.display().to_string() });
    Ok(Some((keep, method)))
}

/// The magnitude baseline's keep list at `--magnitude S`, with the recipe's description of it.
fn magnitude<T>(
    args: &PruneArgs,
    keep: impl FnOnce(f64, usize) -> Result<T>,
) -> Result<(T, serde_json::Value)> {
    let Some(s) = args.magnitude else {
        bail!("give --magnitude S or --keep FILE");
    };
    let align = usize::try_from(args.align).context("--align is too large")?;
    Ok((
        keep(s, align)?,
        serde_json::json!({ "method": "magnitude", "sparsity": s, "align": align }),
    ))
}

/// Write the pruned model with its recipe (`method` plus the keep list applied) and `report`,
/// and the keep list to `--keep-out` when asked. Returns the file's size.
fn write_pruned(
    args: &PruneArgs,
    loaded: &registry::LoadedModel,
    method: serde_json::Value,
    keep: &impl serde::Serialize,
    report: serde_json::Value,
    t0: Instant,
) -> Result<u64> {
    let keep_json = serde_json::to_value(keep)?;
    if let Some(path) = &args.keep_out {
        whittle::fsutil::write_atomic(path, serde_json::to_string_pretty(&keep_json)?.as_bytes())?;
    }
    let mut recipe = method;
    recipe["kind"] = "structured-pruning".into();
    recipe["keep"] = keep_json;
    let header = [
        ("recipe", recipe),
        ("pruning", report),
        (
            "provenance",
            crate::ptq_cmd::provenance(&args.model, loaded, t0),
        ),
        ("results", serde_json::Value::Null),
    ];
    Ok(whittle::compress::export::write_packed(
        &loaded.store,
        &*loaded.model,
        loaded.model.architecture(),
        &loaded.family_header,
        &header,
        &args.output,
    )?)
}
