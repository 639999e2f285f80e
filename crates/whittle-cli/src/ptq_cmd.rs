//! Post-training quantization options shared by `quantize`, `eval` and `transcribe`, and the
//! `whittle quantize` command.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::Args;
use whittle::candle::{DType, Device};
use whittle::compress::bitmap::{BitMap, LayerFormat};
use whittle::compress::calibrate::{calibrate, Calibration};
use whittle::compress::ptq::{quantize_linears, resolve_bit_map, LayerReport, PtqMethod};
use whittle::model_dir::ModelFormat;
use whittle::models::{registry, LayerRole, Layers, SpeechModel};

use crate::commands::progress_bar;

/// How to quantize the linear layers after loading.
#[derive(Args, Clone, Default)]
pub struct PtqArgs {
    /// Bits of every linear layer (2..=8), or 0 for ternary (TWN). The token embedding stays
    /// float unless --embedding-bits; positions, norms and the conv stem stay float.
    #[arg(long, visible_alias = "quantize", conflicts_with = "bit_map")]
    pub bits: Option<u8>,
    /// Group size along the input dimension for --bits (multiple of 32; omit for one scale per
    /// output channel).
    #[arg(long, requires = "bits")]
    pub group: Option<usize>,
    /// Bits of the token embedding, which is also the output projection (2..=8, with --group),
    /// added to --bits or --bit-map as the rule `decoder.embed_tokens`.
    #[arg(long)]
    pub embedding_bits: Option<u8>,
    /// Per-layer formats: a TOML/JSON bit map of tensor-path globs (see docs/bitmap.md).
    #[arg(long, value_name = "FILE")]
    pub bit_map: Option<PathBuf>,
    /// Rounding: round-to-nearest, RTN after an MSE-optimal clipping search, or GPTQ
    /// (error compensation from --calib audio). Ternary layers always use TWN.
    #[arg(long, default_value = "rtn", value_parser = ["rtn", "mse", "gptq"])]
    pub method: String,
    /// Calibration dataset for --method gptq (JSONL manifest or LibriSpeech-layout folder).
    #[arg(long, value_name = "DATASET")]
    pub calib: Option<PathBuf>,
    /// Calibration utterances used from --calib (the first N).
    #[arg(long, default_value_t = 32)]
    pub calib_limit: usize,
}

impl PtqArgs {
    /// The bit map these options describe; `None` when no quantization was asked for.
    pub fn bit_map(&self) -> Result<Option<BitMap>> {
        self.bit_map_with_embedding("decoder.embed_tokens")
    }

    /// [`PtqArgs::bit_map`] for a model whose token embedding is the layer `embedding`.
    fn bit_map_with_embedding(&self, embedding: &str) -> Result<Option<BitMap>> {
        let Some(map) = self.base_bit_map()? else {
            if self.embedding_bits.is_some() {
                bail!("--embedding-bits needs --bits or --bit-map");
            }
            return Ok(None);
        };
        let Some(bits) = self.embedding_bits else {
            return Ok(Some(map));
        };
        if !(2..=8).contains(&bits) {
            bail!("--embedding-bits {bits}: expected 2..=8");
        }
        let group = match &self.bit_map {
            Some(_) => None,
            None => self.group,
        };
        Ok(Some(
            map.with_rule(embedding, LayerFormat::uniform(bits, group))?,
        ))
    }

    fn base_bit_map(&self) -> Result<Option<BitMap>> {
        if let Some(path) = &self.bit_map {
            return Ok(Some(BitMap::from_file(path)?));
        }
        let Some(bits) = self.bits else {
            if self.calib.is_some() || self.method != "rtn" {
                bail!("--method/--calib need --bits or --bit-map");
            }
            return Ok(None);
        };
        let format = match bits {
            0 => LayerFormat::Ternary {
                group: self.group,
                trits5: false,
                sparse: false,
            },
            2..=8 => LayerFormat::uniform(bits, self.group),
            other => bail!("--bits {other}: expected 2..=8, or 0 for ternary"),
        };
        if let Some(g) = self.group {
            whittle::kernels::Granularity::Group(g)
                .validate()
                .with_context(|| format!("--group {g}"))?;
        }
        Ok(Some(BitMap::uniform(format)))
    }

    fn method(&self) -> PtqMethod {
        match self.method.as_str() {
            "mse" => PtqMethod::Mse,
            "gptq" => PtqMethod::Gptq,
            _ => PtqMethod::Rtn,
        }
    }

    /// Quantize `model` in place (calibrating first for GPTQ). Returns a JSON record of what was
    /// done (resolved bit map, per-layer reports, timings), or `Null` when nothing was asked for.
    pub fn apply(&self, model: &mut dyn SpeechModel) -> Result<serde_json::Value> {
        let Some(bit_map) = self.bit_map()? else {
            return Ok(serde_json::Value::Null);
        };
        let method = self.method();
        let t0 = Instant::now();
        let calibration = match (method, &self.calib) {
            (PtqMethod::Gptq, None) => bail!("--method gptq needs --calib DATASET"),
            (PtqMethod::Gptq, Some(path)) => Some(self.calibrate(model, &bit_map, path)?),
            (_, Some(_)) => bail!("--calib is only used by --method gptq"),
            (_, None) => None,
        };
        let calibration_seconds = t0.elapsed().as_secs_f64();
        let layers = quantize_linears(model, &bit_map, method, calibration.as_ref())?;
        let seconds = t0.elapsed().as_secs_f64();
        let packed: usize = layers.iter().map(|l| l.packed_bytes).sum();
        tracing::info!(
            layers = layers.len(),
            packed_bytes = packed,
            seconds,
            "quantized linear layers"
        );
        Ok(serde_json::json!({
            "kind": "post-training",
            "method": method.name(),
            "bit_map_source": bit_map.source,
            "bit_map": resolved_bit_map(model, &layers),
            "calibration": calibration.as_ref().map(|c| serde_json::json!({
                "dataset": self.calib.as_ref().map(|p| p.display().to_string()),
                "utterances": c.utterances,
                "audio_seconds": c.audio_seconds,
                "seconds": calibration_seconds,
            })),
            "linear_bytes": packed,
            "seconds": seconds,
            "layers": layers,
        }))
    }

    /// Quantize a model that takes no audio (a language model) in place, by RTN or MSE
    /// clipping; `embedding` names its token embedding for --embedding-bits. Returns the packed
    /// bytes of its matrices, or `None` when nothing was asked for.
    pub fn apply_without_audio(
        &self,
        model: &mut dyn whittle::models::Layers,
        embedding: &str,
    ) -> Result<Option<usize>> {
        let Some(bit_map) = self.bit_map_with_embedding(embedding)? else {
            return Ok(None);
        };
        let method = self.method();
        if method == PtqMethod::Gptq || self.calib.is_some() {
            bail!("--method gptq calibrates on audio; use rtn or mse for a language model");
        }
        let layers = quantize_linears(model, &bit_map, method, None)?;
        Ok(Some(layers.iter().map(|l| l.packed_bytes).sum()))
    }

    fn calibrate(
        &self,
        model: &mut dyn SpeechModel,
        bit_map: &BitMap,
        path: &std::path::Path,
    ) -> Result<Calibration> {
        let mut utterances = whittle::data::load_dataset(path)
            .with_context(|| format!("reading calibration set {}", path.display()))?;
        utterances.truncate(self.calib_limit);
        if utterances.is_empty() {
            bail!("calibration set {} has no utterances", path.display());
        }
        let wanted: Vec<String> = resolve_bit_map(model, bit_map)?
            .into_iter()
            .filter(|l| matches!(l.format, LayerFormat::Uniform { .. }))
            .map(|l| l.name)
            .collect();
        let bar = progress_bar(utterances.len());
        bar.set_message("calibrating (X^T X per layer)");
        let calibration = calibrate(model, &wanted, &utterances, |_| bar.inc(1))?;
        bar.finish_and_clear();
        Ok(calibration)
    }
}

/// `{layer: {format, bits, group, method, rule, relative_rmse}}` plus what stays float.
fn resolved_bit_map(model: &dyn SpeechModel, layers: &[LayerReport]) -> serde_json::Value {
    let formats: Vec<(String, LayerFormat)> =
        layers.iter().map(|l| (l.name.clone(), l.format)).collect();
    let layers: serde_json::Map<String, serde_json::Value> = layers
        .iter()
        .map(|l| {
            let mut v = serde_json::to_value(l.format).unwrap_or_default();
            if let Some(o) = v.as_object_mut() {
                o.insert("method".into(), l.method.into());
                o.insert("rule".into(), l.rule.clone().into());
                o.insert("relative_rmse".into(), l.relative_rmse.into());
                o.insert("bytes".into(), l.packed_bytes.into());
            }
            (l.name.clone(), v)
        })
        .collect();
    serde_json::json!({
        "float": float_description(model, &formats),
        "layers": layers,
    })
}

/// What a packed file stores as float besides the layers listed in its bit map (the header's
/// `bit_map.float`): the token embedding when it was not quantized, and the family's other
/// tensors.
pub fn float_description<M: Layers + ?Sized>(
    model: &M,
    formats: &[(String, LayerFormat)],
) -> String {
    let float_embedding = model.layers().iter().any(|l| {
        l.role == LayerRole::TokenEmbedding
            && formats
                .iter()
                .any(|(name, format)| *name == l.name && *format == LayerFormat::Float)
    });
    let mut parts = Vec::new();
    if float_embedding {
        parts.push("token embedding (tied output projection)");
    }
    parts.push("positions, layer norms, convolutions, biases");
    format!("{}: stored as in the source file", parts.join(", "))
}

/// `whittle quantize MODEL (--bits B | --bit-map FILE) [--method rtn|mse|gptq] [--calib DATA] -o OUT.whittle`
#[derive(Args)]
pub struct QuantizeArgs {
    /// Model folder (CTranslate2 or Hugging Face, any family) or float `.whittle` file (a pruned
    /// model, say).
    model: PathBuf,
    #[command(flatten)]
    ptq: PtqArgs,
    /// Output `.whittle` file.
    #[arg(long, short)]
    output: PathBuf,
}

pub fn quantize(args: QuantizeArgs) -> Result<()> {
    if args.output.extension().is_none_or(|e| e != "whittle") {
        bail!("output {} must end in .whittle", args.output.display());
    }
    if args.ptq.bits.is_none() && args.ptq.bit_map.is_none() {
        bail!("give --bits B (every linear layer) or --bit-map FILE");
    }
    let t0 = Instant::now();
    let mut loaded = registry::open(&args.model, &Device::Cpu, DType::F32)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    // A float `.whittle` file (a pruned model) may be quantized; a packed one may not.
    if loaded.location.format == ModelFormat::Whittle
        && loaded.store.packed_names().next().is_some()
    {
        bail!(
            "{} is already packed; quantize the original model folder",
            args.model.display()
        );
    }
    let record = args.ptq.apply(&mut *loaded.model)?;
    // Matrices actually packed (float layers of a bit map, and the embedding unless named, are not).
    let layers = record["layers"].as_array().map_or(0, |layers| {
        layers
            .iter()
            .filter(|l| l["method"].as_str().is_some_and(|m| m != "none"))
            .count()
    });
    let header = [
        ("bit_map", record["bit_map"].clone()),
        (
            "recipe",
            serde_json::json!({
                "kind": "post-training",
                "method": record["method"],
                "bit_map_source": record["bit_map_source"],
                "calibration": record["calibration"],
            }),
        ),
        ("provenance", provenance(&args.model, &loaded, t0)),
        ("results", serde_json::Value::Null),
    ];
    let bytes = whittle::compress::export::write_packed(
        &loaded.store,
        &*loaded.model,
        loaded.model.architecture(),
        &loaded.family_header,
        &header,
        &args.output,
    )?;
    let fp32 = loaded.model.parameter_count() as f64 * 4.0;
    let shipped = loaded.location.weights_bytes() as f64;
    println!(
        "{}: {layers} matrices packed ({} method), {bytes} bytes ({:.1} MB): {:.2}x smaller than fp32 ({:.1} MB), {:.2}x smaller than the shipped file ({:.1} MB)",
        args.output.display(),
        args.ptq.method,
        bytes as f64 / 1e6,
        fp32 / bytes as f64,
        fp32 / 1e6,
        shipped / bytes as f64,
        shipped / 1e6
    );
    Ok(())
}

/// The `provenance` header field of a file written from `loaded` (read from `source`) by a
/// command that started at `t0`.
pub fn provenance(
    source: &std::path::Path,
    loaded: &registry::LoadedModel,
    t0: Instant,
) -> serde_json::Value {
    serde_json::json!({
        "source": source.display().to_string(),
        "source_format": loaded.location.format,
        "source_bytes": loaded.location.weights_bytes(),
        "whittle_version": env!("CARGO_PKG_VERSION"),
        "seconds": t0.elapsed().as_secs_f64(),
    })
}
