//! Per-layer quantization sensitivity: how much the model's output changes when one matrix,
//! and only that one, is quantized at each candidate bit width (stage A of two-stage mixed
//! precision, issue 11 part 3; `whittle sensitivity`, issue 13 part 1).
//!
//! Metric `kl`: for layer `i` at `b` bits, the mean over every scored token position of
//! `KL(p_float || p_{i,b})`, in nats, where `p` is the next-token distribution (temperature 1)
//! of the decoder teacher-forced on the float model's greedy transcript (or the dataset's
//! transcript) of each utterance. Only matrix `i` differs from the float model: it is replaced by
//! the dequantized values of its packed `b`-bit codes (symmetric round-to-nearest on the abs-max
//! grid, one f16 scale per group), so the measure is of weight rounding alone, not of the int8
//! activation rounding of the packed kernels. Batches, teacher forcing and the float logits are
//! the training code's ([`crate::train::batch::make_batch`], [`crate::train::loss::forward`]);
//! the divergence has the definition of [`crate::train::loss::kl_divergence`] at `T = 1` but
//! is accumulated in f64, because the training op's f32 rounding (about 2e-4 nats per token
//! over a 51,864-token vocabulary) exceeds what an 8-bit layer changes.
//!
//! Cost: the float logits of each batch are computed once and kept (`[tokens, vocab]` f32). A
//! decoder matrix or the token embedding reuses the float encoder output, so only the decoder
//! runs; an encoder matrix of block `i` re-runs the encoder from block `i`'s cached input.
//! Layers x candidates x batches partial forward passes in all.
//!
//! Metric `hessian` (Hutchinson trace x quantization perturbation, issue 13) is in
//! [`super::hessian`]; it shares this file format, the candidates and the quantizer.

use std::path::Path;

use candle_core::{DType, Tensor};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use whittle_kernels::{Granularity, Layout, PackedFormat, PackedMatrix, QuantFormat, Scheme};

use crate::error::{Error, Result};
use crate::models::whisper::Whisper;
use crate::nn::Weight;
use crate::train::batch::{make_batch, Batch, Prompt, TrainExample};
use crate::train::loss::forward;
#[cfg(doc)]
use crate::train::loss::kl_divergence;

/// The `format` tag of a sensitivity file.
pub const FORMAT: &str = "whittle-sensitivity-v1";

/// What a sensitivity measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Metric {
    /// Output KL divergence with only the layer quantized.
    Kl,
    /// Hessian trace x quantization perturbation, `Tr(H_i) · ‖Q_b(W_i) − W_i‖²`.
    Hessian,
}

impl Metric {
    /// Lower-case name, as on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Metric::Kl => "kl",
            Metric::Hessian => "hessian",
        }
    }
}

/// One candidate of one layer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CandidateScore {
    /// Bit width (symmetric, 2..=8).
    pub bits: u8,
    /// Stored bytes at this width: packed codes plus one f16 scale per group, as the packed
    /// format stores them.
    pub bytes: u64,
    /// Mean KL divergence (nats per scored token), metric `kl`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kl: Option<f64>,
    /// `Ω = Tr(H) · ‖Q_b(W) − W‖²`, metric `hessian`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hessian: Option<f64>,
    /// `‖Q_b(W) − W‖²`, metric `hessian`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub perturbation: Option<f64>,
}

impl CandidateScore {
    /// The sensitivity under `metric`, if the file holds it.
    pub fn score(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::Kl => self.kl,
            Metric::Hessian => self.hessian,
        }
    }
}

/// Sensitivities of one quantizable matrix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LayerSensitivity {
    /// Tensor path (bit-map name), e.g. `model.decoder.layers.0.fc1`.
    pub name: String,
    /// Output features.
    pub rows: usize,
    /// Input features.
    pub cols: usize,
    /// `rows * cols`.
    pub params: u64,
    /// Bytes at 16 bits per weight, for reference.
    pub float_bytes: u64,
    /// Hutchinson estimate of the trace of the loss Hessian in this matrix's weights (metric
    /// `hessian`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hessian_trace: Option<f64>,
    /// The trace divided by the matrix's weight count (the other convention of the literature).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hessian_trace_per_weight: Option<f64>,
    /// One entry per candidate, in the file's candidate order.
    pub candidates: Vec<CandidateScore>,
}

/// A `sens.json` file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SensitivityFile {
    /// [`FORMAT`].
    pub format: String,
    /// The model measured.
    pub model: String,
    /// The audio it was measured on.
    pub data: String,
    /// What the scores are.
    pub metric: Metric,
    /// Candidate bit widths, ascending.
    pub candidates: Vec<u8>,
    /// Group length of the scales (input features per f16 scale).
    pub group: usize,
    /// Utterances used.
    pub utterances: usize,
    /// Which tokens the decoder was teacher-forced on.
    pub targets: String,
    /// Token positions scored (the KL is their mean).
    pub scored_tokens: usize,
    /// Summed parameters of the layers.
    pub params: u64,
    /// Summed bytes of the layers at 16 bits per weight.
    pub float_bytes: u64,
    /// Wall time of the measurement.
    pub seconds: f64,
    /// Worker threads.
    pub threads: usize,
    /// whittle's version.
    pub whittle_version: String,
    /// How the Hessian traces were estimated (metric `hessian`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hessian: Option<super::hessian::HessianEstimate>,
    /// Every quantizable matrix, in the model's order.
    pub layers: Vec<LayerSensitivity>,
}

impl SensitivityFile {
    /// Read and check a sensitivity file: the format tag, every layer has every candidate in
    /// order, and each byte count is what the packed format stores.
    pub fn read(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let context = path.display().to_string();
        let file: Self = serde_json::from_str(&text).map_err(|e| Error::Json {
            context: context.clone(),
            source: e,
        })?;
        file.validate(&context)?;
        Ok(file)
    }

    /// The checks of [`Self::read`]; `context` names the file in errors.
    pub fn validate(&self, context: &str) -> Result<()> {
        if self.format != FORMAT {
            return Err(Error::config(
                context,
                format!("format is \"{}\", expected \"{FORMAT}\"", self.format),
            ));
        }
        let candidates = check_candidates(&self.candidates)
            .map_err(|e| Error::config(context, format!("candidates: {e}")))?;
        if candidates != self.candidates {
            return Err(Error::config(
                context,
                "candidates must be ascending without repeats",
            ));
        }
        if self.layers.is_empty() {
            return Err(Error::config(context, "no layers"));
        }
        for layer in &self.layers {
            let bad = |msg: String| Error::config(format!("{context}: layer {}", layer.name), msg);
            let bits: Vec<u8> = layer.candidates.iter().map(|c| c.bits).collect();
            if bits != self.candidates {
                return Err(bad(format!(
                    "candidates {bits:?} differ from the file's {:?}",
                    self.candidates
                )));
            }
            for c in &layer.candidates {
                let expected =
                    candidate_bytes(&layer.name, layer.rows, layer.cols, c.bits, self.group)?;
                if c.bytes != expected {
                    return Err(bad(format!(
                        "{} bits: {} bytes, but {}x{} at group {} packs to {expected}",
                        c.bits, c.bytes, layer.rows, layer.cols, self.group
                    )));
                }
                match c.score(self.metric) {
                    Some(v) if v.is_finite() => {}
                    Some(v) => {
                        return Err(bad(format!("{} bits: score {v} is not finite", c.bits)))
                    }
                    None => {
                        return Err(bad(format!(
                            "{} bits: no `{}` score",
                            c.bits,
                            self.metric.name()
                        )))
                    }
                }
            }
        }
        Ok(())
    }
}

/// Candidate bit widths ascending without repeats; each must be 2..=8.
pub fn check_candidates(bits: &[u8]) -> Result<Vec<u8>> {
    if bits.is_empty() {
        return Err(Error::config("--candidates", "no candidate bit widths"));
    }
    if let Some(b) = bits.iter().find(|b| !(2..=8).contains(*b)) {
        return Err(Error::config(
            "--candidates",
            format!("{b} bits: candidates must be 2..=8"),
        ));
    }
    let mut sorted = bits.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    Ok(sorted)
}

/// The packed format of `bits`-bit symmetric codes with one f16 scale per `group` inputs.
fn packed_format(bits: u8, group: usize) -> Result<PackedFormat> {
    let scheme = Scheme::Symmetric { bits };
    Ok(PackedFormat::new(
        QuantFormat {
            scheme,
            granularity: Granularity::Group(group),
        },
        Layout::for_scheme(scheme),
    )?)
}

/// Stored bytes (codes + scales) of a `rows x cols` matrix at `bits` with groups of `group`.
/// `group` must divide `cols` (a partial group would make the layer's rate differ from its
/// neighbours' and from what the mixed-precision supernet assumes); `layer` names it in errors.
pub fn candidate_bytes(
    layer: &str,
    rows: usize,
    cols: usize,
    bits: u8,
    group: usize,
) -> Result<u64> {
    Granularity::Group(group)
        .validate()
        .map_err(|e| Error::config("--group", e.to_string()))?;
    if !cols.is_multiple_of(group) {
        return Err(Error::config(
            layer,
            format!("group {group} does not divide its {cols} input columns"),
        ));
    }
    packed_format(bits, group)?
        .total_bytes(rows, cols)
        .map(|b| b as u64)
        .ok_or_else(|| Error::config(layer, "byte count overflows"))
}

/// What [`kl_sensitivity`] measures with.
#[derive(Debug, Clone)]
pub struct KlOptions {
    /// Candidate bit widths (checked by [`check_candidates`]).
    pub candidates: Vec<u8>,
    /// Group length of the scales (a multiple of 32 dividing every layer's columns).
    pub group: usize,
    /// Utterances per forward batch.
    pub batch_size: usize,
}

/// Where [`kl_sensitivity`] is.
#[derive(Debug, Clone)]
pub struct KlProgress<'a> {
    /// The layer quantized.
    pub layer: &'a str,
    /// Its bit width.
    pub bits: u8,
    /// Its mean KL.
    pub kl: f64,
    /// Evaluations done (layer x candidate).
    pub done: usize,
    /// Evaluations in all.
    pub total: usize,
}

/// The measurements of [`kl_sensitivity`].
#[derive(Debug, Clone)]
pub struct KlSensitivity {
    /// One entry per quantizable matrix, in the model's order.
    pub layers: Vec<LayerSensitivity>,
    /// Token positions the KL is averaged over.
    pub scored_tokens: usize,
}

/// Logits at the scored positions of `batch` from a given encoder output: the decoder half of
/// [`forward`] (which also runs the encoder), for matrices the encoder does not use.
fn decoder_logits(model: &Whisper, batch: &Batch, encoded: &Tensor) -> Result<Tensor> {
    let hidden = model
        .decoder
        .forward_teacher_forced(&batch.inputs, encoded)?;
    let (b, len, d) = hidden.dims3()?;
    let rows = hidden
        .reshape((b * len, d))?
        .index_select(&batch.positions, 0)?;
    let table = model.decoder.embed_tokens.weight.to_dense()?;
    Ok(crate::nn::fused::matmul_fixed_t(&rows, &table)?)
}

/// The float model's next-token logits at a batch's scored positions, with each row's log
/// partition function.
struct Reference {
    logits: Vec<f32>,
    log_z: Vec<f64>,
    vocab: usize,
}

/// `ln sum_j exp(x_j)` in f64.
pub(crate) fn log_partition(row: &[f32]) -> f64 {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max) as f64;
    max + row
        .iter()
        .map(|&x| (x as f64 - max).exp())
        .sum::<f64>()
        .ln()
}

impl Reference {
    fn new(logits: &Tensor) -> Result<Self> {
        let (_, vocab) = logits.dims2()?;
        let logits: Vec<f32> = logits.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let log_z = logits.par_chunks(vocab).map(log_partition).collect();
        Ok(Self {
            logits,
            log_z,
            vocab,
        })
    }

    /// Summed over rows, `KL(softmax(reference) || softmax(student))` in f64:
    /// `ln Z_s - ln Z_t + sum_j p_j (t_j - s_j)`. Both terms are first order in the logit change
    /// and the divergence second order, so it is accumulated in f64; identical logits give
    /// exactly 0. (The training loss's fused f32 op, [`kl_divergence`], is off by about 2e-4
    /// nats per row over Whisper's 51,864 tokens, more than an 8-bit layer's divergence.)
    fn kl_sum(&self, student: &Tensor) -> Result<f64> {
        let s: Vec<f32> = student.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        if s.len() != self.logits.len() {
            return Err(Error::config(
                "sensitivity",
                format!(
                    "student logits {:?} do not match the reference's {} values",
                    student.dims(),
                    self.logits.len()
                ),
            ));
        }
        Ok(s.par_chunks(self.vocab)
            .zip(self.logits.par_chunks(self.vocab))
            .zip(self.log_z.par_iter())
            .map(|((s, t), &log_zt)| {
                let cross: f64 = t
                    .iter()
                    .zip(s)
                    .map(|(&t, &s)| (t as f64 - log_zt).exp() * (t as f64 - s as f64))
                    .sum();
                log_partition(s) - log_zt + cross
            })
            .sum())
    }
}

/// What the float model gives on one batch, kept for every layer's evaluation.
struct Cached {
    reference: Reference,
    /// Input of each encoder layer (`[0]` = the embedded mel).
    encoder_inputs: Vec<Tensor>,
    /// The encoder output.
    encoded: Tensor,
}

/// The encoder block a matrix belongs to, `None` for decoder matrices and the embedding.
fn encoder_layer(name: &str) -> Option<usize> {
    name.strip_prefix("model.encoder.layers.")?
        .split('.')
        .next()?
        .parse()
        .ok()
}

/// Sets the weight of quantizable matrix `index` and returns the previous one.
pub(crate) fn swap_weight(
    model: &mut (impl crate::models::Layers + ?Sized),
    index: usize,
    weight: Weight,
) -> Weight {
    let mut layers = model.layers_mut();
    std::mem::replace(&mut layers[index].linear.weight, weight)
}

/// The logits of `model` on `batch`, re-running only what a change to quantizable matrix `name`
/// affects.
fn logits_after_change(
    model: &Whisper,
    batch: &Batch,
    cached: &Cached,
    name: &str,
) -> Result<Tensor> {
    let encoded = match encoder_layer(name) {
        Some(i) => {
            let input = cached.encoder_inputs.get(i).ok_or_else(|| {
                Error::config(name, "names an encoder layer the model does not have")
            })?;
            model.encoder.forward_from(input, i)?
        }
        None => cached.encoded.clone(),
    };
    decoder_logits(model, batch, &encoded)
}

/// The weights of a `rows x cols` matrix after `bits`-bit symmetric round-to-nearest with one f16
/// scale per `group` inputs, through the packed format (so the bytes are checked against
/// [`candidate_bytes`]); `name` names the matrix in errors.
pub(crate) fn quantized_values(
    name: &str,
    values: &[f32],
    rows: usize,
    cols: usize,
    bits: u8,
    group: usize,
) -> Result<Vec<f32>> {
    let format = packed_format(bits, group)?;
    let kernel_err = |e: whittle_kernels::KernelError| Error::config(name, e.to_string());
    let q = whittle_kernels::UniformQuantizer::symmetric(bits, format.quant.granularity)
        .and_then(|q| q.quantize(values, rows, cols))
        .map_err(kernel_err)?;
    let packed = PackedMatrix::pack_with(&q, format.layout).map_err(kernel_err)?;
    let packed_bytes = packed.codes().len() + 2 * packed.scales().len();
    let stored = candidate_bytes(name, rows, cols, bits, group)?;
    if packed_bytes as u64 != stored {
        return Err(Error::config(
            name,
            format!("{bits} bits packed to {packed_bytes} bytes, the format says {stored}"),
        ));
    }
    Ok(packed.dequantize())
}

/// Each quantizable matrix of `model` with its float weight and its bytes at each candidate.
pub(crate) fn float_layers(
    model: &(impl crate::models::Layers + ?Sized),
    candidates: &[u8],
    group: usize,
) -> Result<Vec<(String, Tensor, Vec<u64>)>> {
    let mut layers = Vec::new();
    for crate::models::LayerRef { name, linear, .. } in model.layers() {
        let Weight::Float(w) = &linear.weight else {
            return Err(Error::config(
                &name,
                "is not a float weight; measure sensitivities on the original float model",
            ));
        };
        let (rows, cols) = w.dims2()?;
        let bytes = candidates
            .iter()
            .map(|&b| candidate_bytes(&name, rows, cols, b, group))
            .collect::<Result<Vec<_>>>()?;
        layers.push((name, w.clone(), bytes));
    }
    Ok(layers)
}

/// Checks, before any costly step, that every quantizable matrix of `model` is float and that
/// `group` divides its input width, and the candidates.
pub fn check_model(model: &mut Whisper, candidates: &[u8], group: usize) -> Result<()> {
    float_layers(model, &check_candidates(candidates)?, group).map(|_| ())
}

/// Per layer and candidate, the mean KL divergence of the model's next-token distributions with
/// only that layer quantized from those of the float `model`, over `examples` (see the module
/// docs). `model` must be float; it is left as it was.
pub fn kl_sensitivity(
    model: &mut Whisper,
    examples: &[TrainExample],
    prompt: &Prompt,
    options: &KlOptions,
    mut progress: impl FnMut(&KlProgress),
) -> Result<KlSensitivity> {
    let candidates = check_candidates(&options.candidates)?;
    if examples.is_empty() {
        return Err(Error::config("sensitivity", "no utterances to measure on"));
    }
    let originals = float_layers(model, &candidates, options.group)?;
    let device = model.device().clone();
    let batches: Vec<Batch> = examples
        .chunks(options.batch_size.max(1))
        .map(|chunk| {
            let refs: Vec<&TrainExample> = chunk.iter().collect();
            make_batch(&refs, true, &model.config, prompt, &device, model.dtype)
        })
        .collect::<Result<_>>()?;
    // The float model's logits (through the training forward) and encoder states, once.
    let mut cached = Vec::with_capacity(batches.len());
    let encoder_layers = model.encoder.layers.len();
    for batch in &batches {
        let reference = Reference::new(&forward(model, batch, &[])?.logits)?;
        let keep: Vec<usize> = (0..encoder_layers.saturating_sub(1)).collect();
        let (encoded, outputs) = model.encoder.forward_with_layers(&batch.features, &keep)?;
        let mut encoder_inputs = vec![model.encoder.embed(&batch.features)?];
        encoder_inputs.extend(outputs);
        cached.push(Cached {
            reference,
            encoder_inputs,
            encoded,
        });
    }
    let scored_tokens: usize = batches.iter().map(Batch::target_count).sum();
    let layers = kl_per_candidate(
        model,
        originals,
        &candidates,
        options.group,
        |model, index, weight| {
            swap_weight(model, index, weight);
        },
        |model, name| {
            let mut sum = 0.0;
            for (batch, cached) in batches.iter().zip(&cached) {
                let logits = logits_after_change(model, batch, cached, name)?;
                sum += cached.reference.kl_sum(&logits)?;
            }
            Ok(sum / scored_tokens.max(1) as f64)
        },
        &mut progress,
    )?;
    Ok(KlSensitivity {
        layers,
        scored_tokens,
    })
}

/// Per layer of `originals` (name, float weight, stored bytes per candidate) and candidate:
/// `set(model, index, weight)` installs the candidate's dequantized weight, `measure(model,
/// name)` gives the mean KL from the float model, and the float weight goes back. The loop both
/// KL metrics share (Whisper's and a language model's).
#[allow(clippy::too_many_arguments)]
fn kl_per_candidate<M>(
    model: &mut M,
    originals: Vec<(String, Tensor, Vec<u64>)>,
    candidates: &[u8],
    group: usize,
    set: impl Fn(&mut M, usize, Weight),
    mut measure: impl FnMut(&M, &str) -> Result<f64>,
    progress: &mut impl FnMut(&KlProgress),
) -> Result<Vec<LayerSensitivity>> {
    let total = originals.len() * candidates.len();
    let mut layers = Vec::with_capacity(originals.len());
    for (index, (name, original, bytes)) in originals.into_iter().enumerate() {
        let (rows, cols) = original.dims2()?;
        let values: Vec<f32> = original.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
        let mut scores = Vec::with_capacity(candidates.len());
        for (&bits, &stored) in candidates.iter().zip(&bytes) {
            let quantized = quantized_values(&name, &values, rows, cols, bits, group)?;
            let dequantized = Tensor::from_vec(quantized, (rows, cols), original.device())?
                .to_dtype(original.dtype())?;
            set(model, index, Weight::Float(dequantized));
            let measured = measure(model, &name);
            set(model, index, Weight::Float(original.clone()));
            let kl = measured?;
            if !kl.is_finite() {
                return Err(Error::config(
                    &name,
                    format!("the KL divergence at {bits} bits is {kl}"),
                ));
            }
            scores.push(CandidateScore {
                bits,
                bytes: stored,
                kl: Some(kl),
                hessian: None,
                perturbation: None,
            });
            progress(&KlProgress {
                layer: &name,
                bits,
                kl,
                done: index * candidates.len() + scores.len(),
                total,
            });
        }
        layers.push(LayerSensitivity {
            name,
            rows,
            cols,
            params: (rows * cols) as u64,
            float_bytes: (rows * cols * 2) as u64,
            hessian_trace: None,
            hessian_trace_per_weight: None,
            candidates: scores,
        });
    }
    Ok(layers)
}

/// [`kl_sensitivity`] for a language model ([`crate::models::lm::CausalLm`]), on token
/// sequences: per matrix and candidate, the mean KL divergence of the next-token distributions
/// at every position of `sequences` (each scored from its second token) with only that matrix
/// quantized, from those of the float model. Each sequence runs alone (no padding), so the
/// positions scored are exactly the sequences' own. `model` must be float; it is left as it was.
pub fn lm_kl_sensitivity<M: crate::models::lm::CausalLm>(
    model: &mut M,
    sequences: &[Vec<u32>],
    options: &KlOptions,
    mut progress: impl FnMut(&KlProgress),
) -> Result<KlSensitivity> {
    let sequences: Vec<&Vec<u32>> = sequences.iter().filter(|s| s.len() > 1).collect();
    if sequences.is_empty() {
        return Err(Error::config(
            "sensitivity",
            "no texts of two or more tokens to measure on",
        ));
    }
    let device = model.device();
    let inputs: Vec<Tensor> = sequences
        .iter()
        .map(|s| Ok(Tensor::new(s.as_slice(), &device)?.unsqueeze(0)?))
        .collect::<Result<_>>()?;
    // Logits at the scored positions (all but the last, whose next token is not in the text).
    let logits = |model: &M, input: &Tensor| -> Result<Tensor> {
        let t = input.dims2()?.1;
        Ok(model
            .next_token_logits(input)?
            .squeeze(0)?
            .narrow(0, 0, t - 1)?)
    };
    kl_of_whole_inputs(model, &inputs, options, logits, &mut progress)
}

/// [`kl_sensitivity`] for a CTC model (wav2vec2, HuBERT, Conformer): per matrix and candidate,
/// the mean KL divergence of the frame posteriors over the CTC vocabulary at every output frame
/// of `clips` (mono 16 kHz samples, each run alone as the recognizer runs it) with only that
/// matrix quantized, from those of the float model. `model` must be float; it is left as it was.
pub fn ctc_kl_sensitivity(
    model: &mut crate::models::wav2vec2::CtcRecognizer,
    clips: &[Vec<f32>],
    options: &KlOptions,
    mut progress: impl FnMut(&KlProgress),
) -> Result<KlSensitivity> {
    if clips.is_empty() {
        return Err(Error::config("sensitivity", "no clips to measure on"));
    }
    let logits = |model: &crate::models::wav2vec2::CtcRecognizer,
                  clip: &Vec<f32>|
     -> Result<Tensor> { Ok(model.logits(clip)?.squeeze(0)?) };
    kl_of_whole_inputs(model, clips, options, logits, &mut progress)
}

/// The KL metric for a model whose inputs each run alone, unpadded: `logits(model, input)`
/// gives the rows `[n, vocab]` scored for one input (a text's positions, a clip's frames); each
/// layer's KL is the mean over every scored row of every input. What the language-model and
/// CTC metrics share.
fn kl_of_whole_inputs<M: crate::models::Layers, I>(
    model: &mut M,
    inputs: &[I],
    options: &KlOptions,
    logits: impl Fn(&M, &I) -> Result<Tensor>,
    progress: &mut impl FnMut(&KlProgress),
) -> Result<KlSensitivity> {
    let candidates = check_candidates(&options.candidates)?;
    let originals = float_layers(model, &candidates, options.group)?;
    let references: Vec<Reference> = inputs
        .iter()
        .map(|x| Reference::new(&logits(model, x)?))
        .collect::<Result<_>>()?;
    let scored: usize = references.iter().map(|r| r.log_z.len()).sum();
    let layers = kl_per_candidate(
        model,
        originals,
        &candidates,
        options.group,
        |model, index, weight| model.layers_mut()[index].linear.weight = weight,
        |model, _| {
            let mut sum = 0.0;
            for (input, reference) in inputs.iter().zip(&references) {
                sum += reference.kl_sum(&logits(model, input)?)?;
            }
            Ok(sum / scored as f64)
        },
        progress,
    )?;
    Ok(KlSensitivity {
        layers,
        scored_tokens: scored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The byte count is the format's: codes per 32-block plus 2 bytes per group.
    #[test]
    fn candidate_bytes_follow_the_packed_layout() {
        // 384 x 384 at g64: 6 groups per row.
        let groups = 384 * 6;
        let cases = [
            (2, 16),
            (3, 24),
            (4, 32),
            (5, 40),
            (6, 48),
            (7, 64),
            (8, 64),
        ];
        for (bits, code_bytes_per_group) in cases {
            let got = candidate_bytes("x", 384, 384, bits, 64).unwrap();
            assert_eq!(
                got,
                (groups * (code_bytes_per_group + 2)) as u64,
                "{bits} bits"
            );
        }
        let err = candidate_bytes("model.encoder.layers.0.fc2", 8, 96, 4, 64)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("model.encoder.layers.0.fc2") && err.contains("96"),
            "{err}"
        );
        let err = candidate_bytes("x", 8, 96, 4, 48).unwrap_err().to_string();
        assert!(err.contains("--group"), "{err}");
    }

    #[test]
    fn candidates_are_checked_and_sorted() {
        assert_eq!(check_candidates(&[8, 2, 4, 4]).unwrap(), vec![2, 4, 8]);
        for bad in [&[][..], &[1, 4], &[4, 9]] {
            let err = check_candidates(bad).unwrap_err().to_string();
            assert!(err.contains("--candidates"), "{err}");
        }
    }
}
