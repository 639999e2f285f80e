//! Compression recipes: one TOML file with every hyperparameter of a training run.
//!
//! Every table refuses unknown fields, and [`Recipe::validate`] names the field it rejects
//! (`optim.lr_scales: must be positive and finite`), so a typo never silently falls back to a
//! default. The recipe is saved next to what it produced and in the packed file's header.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::nn::LsqSpec;

/// A complete training recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// Free-form name, recorded in outputs.
    pub name: String,
    /// The compression method the trainer runs (default `"uniform-lsq"`).
    #[serde(default)]
    pub method: MethodKind,
    /// How the linear weights are quantized.
    pub quant: QuantRecipe,
    /// Settings of `method = "mixed-precision"` (required by it, refused by the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mixed_precision: Option<MixedPrecisionRecipe>,
    /// Settings of `method = "ternary-hq"` (required by it, refused by the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ternary: Option<TernaryRecipe>,
    /// Settings of `method = "prune-l0"` (required by it, refused by the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune: Option<PruneRecipe>,
    /// Settings of `method = "admm"` (required by it, refused by the others).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admm: Option<AdmmRecipe>,
    /// Training-time audio augmentation (absent: the clean audio).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub augment: Option<AugmentRecipe>,
    /// Loss terms and their weights.
    pub loss: LossRecipe,
    /// Optimizer.
    pub optim: OptimRecipe,
    /// Learning-rate schedule and length.
    pub schedule: ScheduleRecipe,
    /// Batching, evaluation and checkpoints.
    pub train: TrainRecipe,
}

/// The training-time compression methods (see [`super::method`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MethodKind {
    /// LSQ fake quantization at the fixed bit widths of `quant` (uniform, or a bit map).
    #[default]
    UniformLsq,
    /// One-stage mixed precision: bit widths learned jointly with the weights.
    MixedPrecision,
    /// Ternary training: hyperspherical quantization with pruning and re-initialisation, or
    /// (with its parts switched off) the ternary QAT baselines.
    TernaryHq,
    /// Structured pruning with L0 hard-concrete gates and a sparsity Lagrangian.
    PruneL0,
    /// Quantized training by ADMM at the fixed bit widths of `quant` (uniform, or a bit map).
    Admm,
    /// Distillation of float weights, nothing compressed (the fine-tune after pruning).
    Distill,
}

impl MethodKind {
    /// The name recipes use.
    pub fn name(self) -> &'static str {
        match self {
            MethodKind::UniformLsq => "uniform-lsq",
            MethodKind::MixedPrecision => "mixed-precision",
            MethodKind::TernaryHq => "ternary-hq",
            MethodKind::PruneL0 => "prune-l0",
            MethodKind::Admm => "admm",
            MethodKind::Distill => "distill",
        }
    }
}

/// Weight quantization: one symmetric format for every linear layer, or a bit map.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuantRecipe {
    /// Bits per weight, 2..=8 (symmetric), for every block linear layer. Omit it with a
    /// `bit_map` or with `method = "mixed-precision"`.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub bits: u8,
    /// Input features per step; omit for one step per output channel.
    #[serde(default)]
    pub group: Option<usize>,
    /// Step initialisation: `"lsq"` (2 mean|w| / sqrt(Qp)) or `"abs-max"` (max|w| / Qn).
    #[serde(default)]
    pub init: crate::nn::StepInit,
    /// A bit map file (see `compress::bitmap`) giving each layer its format; layers it leaves
    /// float are not trained. The token embedding takes part when the map names it. A relative
    /// path is resolved against the recipe's folder by `whittle compress`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bit_map: Option<std::path::PathBuf>,
}

fn is_zero(bits: &u8) -> bool {
    *bits == 0
}

fn is_zero_f64(x: &f64) -> bool {
    *x == 0.0
}

fn default_beta() -> f64 {
    0.5
}

/// How the mixed-precision supernet prices model size.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SizeObjective {
    /// Expected stored size held to `budget_bits` by a Lagrange multiplier.
    #[default]
    Budget,
    /// `beta sum_layers sum_n softmax(lambda / tau)_n sqrt(bits_n)` added to the loss.
    SqrtBits,
}

/// One-stage mixed precision: per layer, candidate bit widths sharing one latent weight, mixed
/// by Gumbel-softmax over learned logits, under a size budget held by a Lagrange multiplier.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MixedPrecisionRecipe {
    /// Candidate bit widths (symmetric, the group of `quant.group`).
    #[serde(default = "default_candidates")]
    pub candidates: Vec<u8>,
    /// How model size enters the loss: `"budget"` (a size budget held by a Lagrange
    /// multiplier, whittle's one-stage method) or `"sqrt-bits"` (the fixed price
    /// `beta sum_layers sum_n a_n sqrt(n)` of the mixed-precision architecture search of Xu et
    /// al. 2021, issue 13).
    #[serde(default)]
    pub objective: SizeObjective,
    /// Target size as average stored bits per quantized weight (codes + scales); required by
    /// `objective = "budget"`, refused by `"sqrt-bits"`.
    #[serde(default, skip_serializing_if = "is_zero_f64")]
    pub budget_bits: f64,
    /// `beta` of `objective = "sqrt-bits"` (the literature's 0.5).
    #[serde(default = "default_beta")]
    pub beta: f64,
    /// Whether the token embedding (tied output projection) is searched and quantized too.
    #[serde(default = "yes")]
    pub embedding: bool,
    /// Gumbel-softmax temperature at the first step.
    #[serde(default = "default_tau_start")]
    pub tau_start: f64,
    /// Temperature at the last step (annealed exponentially).
    #[serde(default = "default_tau_end")]
    pub tau_end: f64,
    /// Forward the one-hot of the sampled argmax (straight-through) instead of the soft mixture.
    #[serde(default)]
    pub hard: bool,
    /// Add Gumbel noise to the logits in the forward (off: the deterministic softmax).
    #[serde(default = "yes")]
    pub gumbel: bool,
    /// Peak learning rate of the architecture logits (AdamW, no weight decay).
    pub lr_arch: f64,
    /// Gradient-ascent rate of the size multiplier, per step, on `expected / budget - 1`.
    pub lr_multiplier: f64,
    /// Weight `rho` of the augmented-Lagrangian term `rho / 2 (expected / budget - 1)^2`, which
    /// damps the oscillation of weights and multiplier around the budget (0: plain Lagrangian).
    #[serde(default)]
    pub penalty: f64,
    /// Last steps of the run trained on a settled bit map (0: none). At the first of them the
    /// map is fixed as extraction would write it (argmax, fitted to the budget), and from then
    /// on each layer forwards its chosen candidate alone, so the weights adapt to the map that
    /// ships and a late change of the argmax cannot break extraction (whittle's choice, see
    /// docs/mixed-precision.md).
    #[serde(default)]
    pub settle_steps: usize,
}

/// Ternary training of every block linear layer (`method = "ternary-hq"`, see
/// `train::ternary_hq`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TernaryRecipe {
    /// Normalise latent rows to the unit sphere and learn each row's norm (HQ); false: the
    /// latent is the weight and each row learns a scale (ternary QAT).
    #[serde(default = "yes")]
    pub hyperspherical: bool,
    /// `"cosine"` (the cosine-optimal ternary vector, HQ) or `"twn"` (TWN's threshold).
    #[serde(default)]
    pub projection: crate::nn::Projection,
    /// Fraction of zeros each row reaches at the end of pruning (a cap on the nonzeros; 0: no
    /// pruning beyond what the projection chooses).
    #[serde(default)]
    pub target_sparsity: f64,
    /// Where the pruning ramp starts, as a fraction of the steps.
    #[serde(default)]
    pub prune_start: f64,
    /// Where it reaches `target_sparsity` (cubic ramp in between).
    #[serde(default = "default_prune_end")]
    pub prune_end: f64,
    /// Re-initialise the latent toward its ternary projection every this many steps (0: never).
    #[serde(default)]
    pub reinit_every: usize,
    /// How far each re-initialisation moves the latent, in (0, 1].
    #[serde(default = "default_reinit_strength")]
    pub reinit_strength: f64,
    /// Bits of the token embedding (tied output projection), trained with LSQ per row; 0 keeps
    /// it float.
    #[serde(default = "default_embedding_bits")]
    pub embedding_bits: u8,
    /// Packed layout of the ternary codes: `"sparse"`, `"2bit"` or `"1.6bit"`.
    #[serde(default = "default_ternary_layout")]
    pub layout: String,
}

/// Structured pruning with L0 gates (`method = "prune-l0"`, see `train::prune_l0`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PruneRecipe {
    /// Fraction of the prunable parameters (attention and FFN modules) to remove.
    pub target_sparsity: f64,
    /// Fraction of the run over which the target ramps linearly from 0.
    #[serde(default = "default_prune_warmup")]
    pub warmup: f64,
    /// Gate attention heads.
    #[serde(default = "yes")]
    pub gate_heads: bool,
    /// Gate FFN units.
    #[serde(default = "yes")]
    pub gate_ffn: bool,
    /// Gate the channels of Conformer convolution modules (other families have none).
    #[serde(default = "yes")]
    pub gate_conv: bool,
    /// Gate only the modules whose path starts with this prefix (e.g. `"model.encoder."`);
    /// omitted: every prunable module. The others stay whole and count as kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub under: Option<String>,
    /// Gate whole attention and FFN modules (off by default: see docs/pruning.md; a module
    /// whose units are all pruned is removed either way).
    #[serde(default)]
    pub gate_modules: bool,
    /// Gate whole layers (off by default, as `gate_modules`).
    #[serde(default)]
    pub gate_layers: bool,
    /// Initial log-alpha of every gate (3: kept with probability 0.99, mean gate 1).
    #[serde(default = "default_init_log_alpha")]
    pub init_log_alpha: f64,
    /// Peak learning rate of the gates' log-alpha (AdamW, no decay).
    #[serde(default = "default_lr_gates")]
    pub lr_gates: f64,
    /// Gradient-ascent rate of the linear multiplier `lambda1` (on `s - t`).
    #[serde(default = "default_lr_lambda1")]
    pub lr_lambda1: f64,
    /// Gradient-ascent rate of the quadratic multiplier `lambda2` (on `(s - t)^2`).
    #[serde(default = "default_lr_lambda2")]
    pub lr_lambda2: f64,
    /// Extraction keeps each module's width (kept units x unit width) a multiple of this many
    /// features, rounding the expected count to the nearest such multiple (1: the expected
    /// count itself). 64 keeps pruned FFN widths divisible by the quantizers' group of 64, so
    /// the pruned model can be trained by group-wise QAT or mixed precision.
    #[serde(default = "one")]
    pub align: usize,
}

/// Quantized training by ADMM (`method = "admm"`, see `train::admm`): the float weights `W`
/// train under the augmented Lagrangian `L(W) + sum_i [Lambda_i (W_i - G_i) + rho/2 |W_i - G_i|^2]`,
/// `G_i` on layer i's quantization grid.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdmmRecipe {
    /// Penalty `rho` at the first step.
    #[serde(default = "default_rho_start")]
    pub rho_start: f64,
    /// Penalty at the last step (geometric in between, updated with each projection).
    #[serde(default = "default_rho_end")]
    pub rho_end: f64,
    /// Project onto the grid (G-step) and update the multipliers every this many steps.
    #[serde(default = "default_admm_every")]
    pub update_every: usize,
    /// Scales of the grid: `"group"` (one per `quant.group`, or per row without a group) or
    /// `"layer"` (one tied scale per layer).
    #[serde(default)]
    pub scale: AdmmScale,
    /// How the G-step fits each scale: `"least-squares"` (the projection onto the grid) or
    /// `"abs-max"` (`max|V| / Qp`, never clipping a weight).
    #[serde(default)]
    pub projection: AdmmProjection,
    /// How the W-step treats the penalty: `"gradient"` (its gradient joins the loss's in the
    /// optimizer) or `"proximal"` (the optimizer steps on the loss alone, then each weight
    /// takes the exact proximal step of the penalty with step `prox_step`).
    #[serde(default)]
    pub w_step: AdmmWStep,
    /// Step `eta` of the proximal W-step: `W <- (W + eta (rho G - Lambda)) / (1 + eta rho)`
    /// after every optimizer step (`w_step = "proximal"` only).
    #[serde(default = "default_prox_step")]
    pub prox_step: f64,
}

/// How the ADMM W-step handles the penalty `<Lambda, W - G> + rho/2 |W - G|^2`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdmmWStep {
    /// The penalty is a loss term; the optimizer follows its gradient with the loss's.
    #[default]
    Gradient,
    /// The optimizer follows the loss; the penalty is applied by its exact proximal step.
    Proximal,
}

/// Training-time audio augmentation (`[augment]`, see `train::augment`): each time a training
/// utterance is drawn it may be sped up or slowed down, then get reverb, then additive noise, all
/// drawn from the recipe's seed, the step and its place in the batch, so a resumed run draws the
/// same. Teacher and student see the same augmented audio; dev scoring, pseudo-labels and
/// calibration use the clean audio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AugmentRecipe {
    /// Noise kinds, chosen uniformly: `"white"`, `"pink"`, `"brown"` (integrated white noise)
    /// or `"babble"` (the batch's other utterances mixed).
    #[serde(default = "default_augment_noise")]
    pub noise: Vec<TrainNoise>,
    /// Probability that an utterance gets noise.
    #[serde(default = "default_noise_prob")]
    pub noise_prob: f64,
    /// Signal-to-noise ratio range in dB, drawn uniformly.
    #[serde(default = "default_snr_db")]
    pub snr_db: [f64; 2],
    /// Probability that an utterance gets reverb.
    #[serde(default = "default_reverb_prob")]
    pub reverb_prob: f64,
    /// Reverberation time range in seconds, drawn uniformly.
    #[serde(default = "default_rt60_s")]
    pub rt60_s: [f64; 2],
    /// Probability that an utterance is speed-perturbed (tempo and pitch together, as played
    /// faster or slower); 0, the default, draws nothing, so older recipes draw as they did.
    #[serde(default)]
    pub speed_prob: f64,
    /// Speed factor range, drawn uniformly and rounded to 0.01 (1.1 is 10 % faster and shorter).
    #[serde(default = "default_speed")]
    pub speed: [f64; 2],
}

/// A kind of training noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TrainNoise {
    /// Gaussian white noise.
    White,
    /// Pink (1/f) noise.
    Pink,
    /// Brown (1/f^2) noise: integrated white noise.
    Brown,
    /// The other utterances of the batch, each from a random offset, summed.
    Babble,
}

fn default_augment_noise() -> Vec<TrainNoise> {
    vec![TrainNoise::Brown, TrainNoise::Pink, TrainNoise::Babble]
}
fn default_noise_prob() -> f64 {
    0.5
}
fn default_snr_db() -> [f64; 2] {
    [5.0, 30.0]
}
fn default_reverb_prob() -> f64 {
    0.3
}
fn default_rt60_s() -> [f64; 2] {
    [0.1, 0.7]
}
fn default_speed() -> [f64; 2] {
    [0.9, 1.1]
}

/// How the ADMM G-step fits the grid's scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdmmProjection {
    /// Alternate rounding and the least-squares scale (the Euclidean projection for the codes
    /// found); may clip outliers.
    #[default]
    LeastSquares,
    /// The abs-max scale `max|V| / Qp`, then rounding: no weight is clipped.
    AbsMax,
}

/// Which weights share one scale of the ADMM grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdmmScale {
    /// One scale per group of `quant.group` input features (per row without a group).
    #[default]
    Group,
    /// One scale for the whole layer (the literature's tied table).
    Layer,
}

fn default_rho_start() -> f64 {
    1e-3
}
fn default_rho_end() -> f64 {
    1.0
}
fn default_admm_every() -> usize {
    10
}
fn default_prox_step() -> f64 {
    1.0
}

fn default_prune_warmup() -> f64 {
    0.5
}
fn default_init_log_alpha() -> f64 {
    3.0
}
fn default_lr_gates() -> f64 {
    0.05
}
fn default_lr_lambda1() -> f64 {
    0.02
}
fn default_lr_lambda2() -> f64 {
    20.0
}

fn default_prune_end() -> f64 {
    0.6
}
fn default_reinit_strength() -> f64 {
    0.5
}
fn default_embedding_bits() -> u8 {
    8
}
fn default_ternary_layout() -> String {
    "sparse".into()
}

impl TernaryRecipe {
    /// The packed layout named by `layout`.
    pub fn packed_layout(&self) -> std::result::Result<whittle_kernels::Layout, String> {
        match self.layout.as_str() {
            "sparse" => Ok(whittle_kernels::Layout::TernarySparse),
            "2bit" => Ok(whittle_kernels::Layout::Bits2),
            "1.6bit" => Ok(whittle_kernels::Layout::Trits5),
            other => Err(format!(
                "\"{other}\" is not \"sparse\", \"2bit\" or \"1.6bit\""
            )),
        }
    }

    /// Sparsity cap at `step` of `steps`: `target (1 - (1 - p)^3)` with `p` the position in
    /// the ramp (the gradual pruning schedule of Zhu & Gupta 2017).
    pub fn sparsity_at(&self, step: usize, steps: usize) -> f64 {
        let position = step as f64 / steps.max(1) as f64;
        let span = (self.prune_end - self.prune_start).max(1e-12);
        let p = ((position - self.prune_start) / span).clamp(0.0, 1.0);
        self.target_sparsity * (1.0 - (1.0 - p).powi(3))
    }
}

fn default_candidates() -> Vec<u8> {
    vec![2, 3, 4, 5, 6, 8]
}
fn default_tau_start() -> f64 {
    1.0
}
fn default_tau_end() -> f64 {
    0.1
}

impl QuantRecipe {
    /// The LSQ quantizer of this recipe (uniform method without a bit map).
    pub fn spec(&self) -> LsqSpec {
        LsqSpec {
            bits: self.bits,
            group: self.group,
        }
    }
}

/// Which token sequence the decoder is teacher-forced on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Targets {
    /// The teacher's greedy transcript (cached in the work folder); works without transcripts.
    PseudoLabel,
    /// The dataset's transcript; an utterance without one is an error.
    Transcript,
    /// The transcript where there is one, else the teacher's pseudo-label.
    TranscriptOrPseudoLabel,
}

/// Where a hidden-state loss compares teacher and student.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HiddenKind {
    /// Mean absolute difference.
    L1,
    /// `1 - cosine similarity` per position, averaged.
    Cosine,
}

/// One hidden-state distillation term.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HiddenLoss {
    /// `"encoder"` (final encoder output), `"encoder.N"` (output of encoder layer N) or
    /// `"decoder"` (final decoder hidden state, text positions only).
    pub at: String,
    /// Distance.
    pub kind: HiddenKind,
    /// Weight in the total loss.
    pub weight: f64,
    /// Compare `P h_student` with the teacher's state, `P` a learned linear map (one per tap,
    /// shared by the tap's terms, starting at the identity, trained with the weights and not
    /// part of the shipped model): the layerwise distillation of CoFi (Xia et al. 2022).
    #[serde(default)]
    pub projection: bool,
}

/// A parsed [`HiddenLoss::at`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenTap {
    /// Encoder output after the final norm.
    Encoder,
    /// Output of encoder layer N.
    EncoderLayer(usize),
    /// Decoder output after the final norm.
    Decoder,
}

impl HiddenLoss {
    /// Parse `at`.
    pub fn tap(&self) -> std::result::Result<HiddenTap, String> {
        match self.at.as_str() {
            "encoder" => Ok(HiddenTap::Encoder),
            "decoder" => Ok(HiddenTap::Decoder),
            other => other
                .strip_prefix("encoder.")
                .and_then(|n| n.parse().ok())
                .map(HiddenTap::EncoderLayer)
                .ok_or_else(|| format!("`{other}` is not `encoder`, `encoder.N` or `decoder`")),
        }
    }
}

/// Loss terms. The total is `kl * KL + ce * CE + sum(hidden weight * distance)`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LossRecipe {
    /// Weight of the KL divergence from the teacher's token distributions.
    pub kl: f64,
    /// Softmax temperature of the KL term (the term is multiplied by T^2, Hinton et al. 2015).
    pub temperature: f64,
    /// Weight of the cross-entropy on the target tokens.
    #[serde(default)]
    pub ce: f64,
    /// Which tokens the decoder is teacher-forced on.
    pub targets: Targets,
    /// Hidden-state terms.
    #[serde(default)]
    pub hidden: Vec<HiddenLoss>,
}

/// AdamW (Loshchilov and Hutter 2019) with separate learning rates for weights and steps.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimRecipe {
    /// Peak learning rate of the latent weights.
    pub lr_weights: f64,
    /// Peak learning rate of the LSQ steps.
    pub lr_scales: f64,
    /// Decoupled weight decay of the latent weights (steps have none).
    #[serde(default)]
    pub weight_decay: f64,
    /// Adam's `(beta1, beta2)`.
    #[serde(default = "default_betas")]
    pub betas: (f64, f64),
    /// Adam's epsilon.
    #[serde(default = "default_eps")]
    pub eps: f64,
    /// Clip the global gradient norm to this value; omit for no clipping.
    #[serde(default)]
    pub clip_norm: Option<f64>,
}

fn default_betas() -> (f64, f64) {
    (0.9, 0.999)
}
fn default_eps() -> f64 {
    1e-8
}

/// Linear warm-up, then cosine decay to `min_lr_ratio` of the peak.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduleRecipe {
    /// Optimizer steps in the run.
    pub steps: usize,
    /// Steps of linear warm-up.
    pub warmup_steps: usize,
    /// Final learning rate as a fraction of the peak.
    #[serde(default)]
    pub min_lr_ratio: f64,
}

/// Batching, evaluation and checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainRecipe {
    /// Utterances per micro-batch.
    pub batch_size: usize,
    /// Micro-batches per optimizer step.
    #[serde(default = "one")]
    pub grad_accum: usize,
    /// Seed of the data order.
    #[serde(default)]
    pub seed: u64,
    /// Dev WER every this many optimizer steps (and at the end); 0 = only at the end.
    #[serde(default)]
    pub eval_every: usize,
    /// Evaluate on N dev utterances only, spread evenly over the dev set (so a manifest grouped by
    /// voice keeps every voice).
    #[serde(default)]
    pub dev_limit: Option<usize>,
    /// Checkpoint every this many optimizer steps (and at the end).
    pub checkpoint_every: usize,
    /// Trim the encoder input to the longest utterance of the batch (fast); `false` pads every
    /// batch to the 30 s window the model is evaluated with (about 5x the encoder cost on
    /// short clips, but no train/eval mismatch near the end of the audio).
    #[serde(default = "yes")]
    pub trim: bool,
}

fn yes() -> bool {
    true
}

fn one() -> usize {
    1
}

impl Recipe {
    /// Read and validate a recipe file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parse and validate recipe text; `context` names it in errors.
    pub fn parse(text: &str, context: &str) -> Result<Self> {
        let recipe: Recipe =
            toml::from_str(text).map_err(|e| Error::config(context, e.to_string()))?;
        recipe.validate(context)?;
        Ok(recipe)
    }

    /// The recipe as TOML text.
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|e| Error::config("recipe", e.to_string()))
    }

    /// Check every value; the error names the field.
    pub fn validate(&self, context: &str) -> Result<()> {
        let fail =
            |field: &str, reason: String| Err(Error::config(context, format!("{field}: {reason}")));
        let positive = |field: &str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                fail(field, format!("{v} must be positive and finite"))
            }
        };
        let non_negative = |field: &str, v: f64| {
            if v.is_finite() && v >= 0.0 {
                Ok(())
            } else {
                fail(field, format!("{v} must be non-negative and finite"))
            }
        };
        if self.ternary.is_some() != (self.method == MethodKind::TernaryHq) {
            return fail(
                "ternary",
                "method = \"ternary-hq\" needs a [ternary] table, and only it takes one".into(),
            );
        }
        if let Some(t) = &self.ternary {
            if self.mixed_precision.is_some() {
                return fail(
                    "mixed_precision",
                    "only for method = \"mixed-precision\"".into(),
                );
            }
            if self.quant.bits != 0 || self.quant.bit_map.is_some() || self.quant.group.is_some() {
                return fail(
                    "quant",
                    "ternary training sets every block linear layer ternary with one scale per row: omit quant.bits, quant.group and quant.bit_map".into(),
                );
            }
            if !(0.0..1.0).contains(&t.target_sparsity) {
                return fail(
                    "ternary.target_sparsity",
                    format!("{} must be in [0, 1)", t.target_sparsity),
                );
            }
            if !(0.0..=1.0).contains(&t.prune_start)
                || !(0.0..=1.0).contains(&t.prune_end)
                || t.prune_end < t.prune_start
            {
                return fail(
                    "ternary.prune_start",
                    format!(
                        "prune_start {} and prune_end {} must satisfy 0 <= start <= end <= 1",
                        t.prune_start, t.prune_end
                    ),
                );
            }
            if !(t.reinit_strength > 0.0 && t.reinit_strength <= 1.0) {
                return fail(
                    "ternary.reinit_strength",
                    format!("{} must be in (0, 1]", t.reinit_strength),
                );
            }
            if t.embedding_bits != 0 && !(2..=8).contains(&t.embedding_bits) {
                return fail(
                    "ternary.embedding_bits",
                    format!("{} must be 0 (float) or 2..=8", t.embedding_bits),
                );
            }
            if let Err(reason) = t.packed_layout() {
                return fail("ternary.layout", reason);
            }
        }
        if self.prune.is_some() != (self.method == MethodKind::PruneL0) {
            return fail(
                "prune",
                "method = \"prune-l0\" needs a [prune] table, and only it takes one".into(),
            );
        }
        if let Some(p) = &self.prune {
            if self.mixed_precision.is_some() || self.ternary.is_some() {
                return fail(
                    "prune",
                    "prune-l0 takes no [mixed_precision] or [ternary]".into(),
                );
            }
            if self.quant.bits != 0 || self.quant.bit_map.is_some() || self.quant.group.is_some() {
                return fail(
                    "quant",
                    "prune-l0 trains float weights (quantize the pruned model afterwards): omit quant.bits, quant.group and quant.bit_map".into(),
                );
            }
            if !(p.target_sparsity > 0.0 && p.target_sparsity < 1.0) {
                return fail(
                    "prune.target_sparsity",
                    format!("{} must be in (0, 1)", p.target_sparsity),
                );
            }
            if !(0.0..=1.0).contains(&p.warmup) {
                return fail("prune.warmup", format!("{} must be in [0, 1]", p.warmup));
            }
            if !p.gate_heads && !p.gate_ffn && !p.gate_conv {
                return fail(
                    "prune.gate_heads",
                    "gate heads, FFN units, convolution channels or several".into(),
                );
            }
            if !p.init_log_alpha.is_finite() {
                return fail("prune.init_log_alpha", "must be finite".into());
            }
            positive("prune.lr_gates", p.lr_gates)?;
            positive("prune.lr_lambda1", p.lr_lambda1)?;
            positive("prune.lr_lambda2", p.lr_lambda2)?;
            if p.align == 0 {
                return fail(
                    "prune.align",
                    "must be at least 1 (1: keep the expected count)".into(),
                );
            }
        }
        if let Some(a) = &self.augment {
            let probability = |field: &str, v: f64| {
                if (0.0..=1.0).contains(&v) {
                    Ok(())
                } else {
                    fail(field, format!("{v} is not a probability in [0, 1]"))
                }
            };
            probability("augment.noise_prob", a.noise_prob)?;
            probability("augment.reverb_prob", a.reverb_prob)?;
            probability("augment.speed_prob", a.speed_prob)?;
            let [lo, hi] = a.speed;
            if !(lo.is_finite() && hi.is_finite() && 0.5 <= lo && lo <= hi && hi <= 2.0) {
                return fail(
                    "augment.speed",
                    format!("[{lo}, {hi}] is not a range of speed factors in [0.5, 2]"),
                );
            }
            if a.noise_prob > 0.0 && a.noise.is_empty() {
                return fail(
                    "augment.noise",
                    "noise_prob > 0 needs at least one kind".into(),
                );
            }
            let [lo, hi] = a.snr_db;
            if !(lo.is_finite() && hi.is_finite() && lo <= hi) {
                return fail("augment.snr_db", format!("[{lo}, {hi}] is not a range"));
            }
            let [lo, hi] = a.rt60_s;
            if !(lo.is_finite() && lo > 0.0 && lo <= hi && hi <= 5.0) {
                return fail(
                    "augment.rt60_s",
                    format!("[{lo}, {hi}] is not a range of seconds in (0, 5]"),
                );
            }
        }
        if self.admm.is_some() != (self.method == MethodKind::Admm) {
            return fail(
                "admm",
                "method = \"admm\" needs an [admm] table, and only it takes one".into(),
            );
        }
        if let Some(a) = &self.admm {
            positive("admm.rho_start", a.rho_start)?;
            positive("admm.rho_end", a.rho_end)?;
            if a.update_every == 0 {
                return fail("admm.update_every", "must be at least 1".into());
            }
            positive("admm.prox_step", a.prox_step)?;
        }
        match (self.method, &self.mixed_precision) {
            (MethodKind::TernaryHq | MethodKind::PruneL0, _) => {}
            (MethodKind::Distill, Some(_)) => {
                return fail(
                    "mixed_precision",
                    "only for method = \"mixed-precision\"".into(),
                )
            }
            (MethodKind::Distill, None) => {
                if self.quant.bits != 0 || self.quant.bit_map.is_some() {
                    return fail(
                        "quant",
                        "method = \"distill\" trains float weights: omit quant.bits and quant.bit_map"
                            .into(),
                    );
                }
            }
            (MethodKind::UniformLsq | MethodKind::Admm, None) => {
                let needs_bits = self.quant.bit_map.is_none() || self.quant.bits != 0;
                if needs_bits && !(2..=8).contains(&self.quant.bits) {
                    return fail(
                        "quant.bits",
                        format!(
                            "{} is outside 2..=8 (give bits, or a bit_map)",
                            self.quant.bits
                        ),
                    );
                }
                if self.quant.bit_map.is_some() && self.quant.bits != 0 {
                    return fail(
                        "quant.bits",
                        "give either bits or a bit_map, not both".into(),
                    );
                }
            }
            (MethodKind::UniformLsq | MethodKind::Admm, Some(_)) => {
                return fail(
                    "mixed_precision",
                    "only for method = \"mixed-precision\"".into(),
                )
            }
            (MethodKind::MixedPrecision, None) => {
                return fail(
                    "mixed_precision",
                    "method = \"mixed-precision\" needs a [mixed_precision] table".into(),
                )
            }
            (MethodKind::MixedPrecision, Some(mp)) => {
                if self.quant.bits != 0 || self.quant.bit_map.is_some() {
                    return fail(
                        "quant",
                        "mixed precision learns the bit widths: omit quant.bits and quant.bit_map"
                            .into(),
                    );
                }
                if mp.candidates.is_empty() || mp.candidates.iter().any(|b| !(2..=8).contains(b)) {
                    return fail(
                        "mixed_precision.candidates",
                        format!("{:?} must be non-empty, each in 2..=8", mp.candidates),
                    );
                }
                let mut sorted = mp.candidates.clone();
                sorted.sort_unstable();
                sorted.dedup();
                if sorted.len() != mp.candidates.len() {
                    return fail(
                        "mixed_precision.candidates",
                        format!("{:?} repeats a width", mp.candidates),
                    );
                }
                match mp.objective {
                    SizeObjective::Budget => {
                        positive("mixed_precision.budget_bits", mp.budget_bits)?
                    }
                    SizeObjective::SqrtBits => {
                        if mp.budget_bits != 0.0 {
                            return fail(
                                "mixed_precision.budget_bits",
                                "objective = \"sqrt-bits\" prices size by beta; it takes no budget"
                                    .into(),
                            );
                        }
                        positive("mixed_precision.beta", mp.beta)?;
                    }
                }
                positive("mixed_precision.tau_start", mp.tau_start)?;
                positive("mixed_precision.tau_end", mp.tau_end)?;
                positive("mixed_precision.lr_arch", mp.lr_arch)?;
                non_negative("mixed_precision.lr_multiplier", mp.lr_multiplier)?;
                non_negative("mixed_precision.penalty", mp.penalty)?;
            }
        }
        if let Some(g) = self.quant.group {
            if g == 0 || g % whittle_kernels::BLOCK != 0 {
                return fail(
                    "quant.group",
                    format!(
                        "{g} must be a positive multiple of {}",
                        whittle_kernels::BLOCK
                    ),
                );
            }
        }
        non_negative("loss.kl", self.loss.kl)?;
        positive("loss.temperature", self.loss.temperature)?;
        non_negative("loss.ce", self.loss.ce)?;
        for (i, h) in self.loss.hidden.iter().enumerate() {
            if let Err(reason) = h.tap() {
                return fail(&format!("loss.hidden[{i}].at"), reason);
            }
            non_negative(&format!("loss.hidden[{i}].weight"), h.weight)?;
        }
        let total =
            self.loss.kl + self.loss.ce + self.loss.hidden.iter().map(|h| h.weight).sum::<f64>();
        if total <= 0.0 {
            return fail("loss", "every loss weight is zero".into());
        }
        positive("optim.lr_weights", self.optim.lr_weights)?;
        positive("optim.lr_scales", self.optim.lr_scales)?;
        non_negative("optim.weight_decay", self.optim.weight_decay)?;
        let (b1, b2) = self.optim.betas;
        if !((0.0..1.0).contains(&b1) && (0.0..1.0).contains(&b2)) {
            return fail(
                "optim.betas",
                format!("({b1}, {b2}) must both lie in [0, 1)"),
            );
        }
        positive("optim.eps", self.optim.eps)?;
        if let Some(c) = self.optim.clip_norm {
            positive("optim.clip_norm", c)?;
        }
        if self.schedule.steps == 0 {
            return fail("schedule.steps", "must be at least 1".into());
        }
        if self.schedule.warmup_steps > self.schedule.steps {
            return fail(
                "schedule.warmup_steps",
                format!(
                    "{} exceeds schedule.steps {}",
                    self.schedule.warmup_steps, self.schedule.steps
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.schedule.min_lr_ratio) {
            return fail(
                "schedule.min_lr_ratio",
                format!("{} is outside [0, 1]", self.schedule.min_lr_ratio),
            );
        }
        if self.train.batch_size == 0 {
            return fail("train.batch_size", "must be at least 1".into());
        }
        if self.train.grad_accum == 0 {
            return fail("train.grad_accum", "must be at least 1".into());
        }
        if self.train.checkpoint_every == 0 {
            return fail("train.checkpoint_every", "must be at least 1".into());
        }
        if self.train.dev_limit == Some(0) {
            return fail(
                "train.dev_limit",
                "must be at least 1 (omit it for the whole set)".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const W4: &str = include_str!("../../../../recipes/uniform-qat-w4.toml");

    /// Every recipe in `recipes/` parses and survives a round trip through TOML.
    #[test]
    fn shipped_recipes_parse() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
        let mut seen = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            let name = path.display().to_string();
            let text = std::fs::read_to_string(&path).unwrap();
            let r = Recipe::parse(&text, &name).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                Recipe::parse(&r.to_toml().unwrap(), &name).unwrap(),
                r,
                "{name}"
            );
            seen += 1;
        }
        assert!(seen >= 9, "only {seen} recipes in {}", dir.display());
    }

    /// Each broken recipe is refused with an error naming the field.
    #[test]
    fn validation_errors_name_the_field() {
        let cases = [
            ("bits = 4", "bits = 9", "quant.bits"),
            ("group = 64", "group = 48", "quant.group"),
            ("temperature = 2.0", "temperature = 0.0", "loss.temperature"),
            ("lr_scales = 1e-4", "lr_scales = -1e-4", "optim.lr_scales"),
            (
                "warmup_steps = 20",
                "warmup_steps = 5000",
                "schedule.warmup_steps",
            ),
            ("batch_size = 4", "batch_size = 0", "train.batch_size"),
            (
                "at = \"encoder\"",
                "at = \"encoder.x\"",
                "loss.hidden[0].at",
            ),
            // Unknown fields: toml names the key.
            ("bits = 4", "bits = 4\nbitz = 3", "bitz"),
            ("[optim]", "[optim]\nlearning_rate = 1.0", "learning_rate"),
            ("method = \"uniform-lsq\"", "method = \"mixed\"", "method"),
            (
                "method = \"uniform-lsq\"",
                "method = \"mixed-precision\"",
                "mixed_precision",
            ),
        ];
        for (from, to, field) in cases {
            assert!(W4.contains(from), "test case `{from}` not in the recipe");
            let err = Recipe::parse(&W4.replacen(from, to, 1), "r.toml")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(field),
                "error for `{to}` does not name `{field}`: {err}"
            );
        }
    }

    /// Mixed-precision settings are checked field by field, and bits are refused beside them.
    #[test]
    fn mixed_precision_validation_names_the_field() {
        let mp = include_str!("../../../../recipes/mp-onestage.toml");
        let cases = [
            (
                "candidates = [2, 3, 4, 5, 6, 8]",
                "candidates = [2, 9]",
                "mixed_precision.candidates",
            ),
            (
                "candidates = [2, 3, 4, 5, 6, 8]",
                "candidates = [4, 4]",
                "repeats",
            ),
            (
                "budget_bits = 3.5",
                "budget_bits = 0.0",
                "mixed_precision.budget_bits",
            ),
            ("tau_end = 0.1", "tau_end = -1.0", "mixed_precision.tau_end"),
            ("group = 64", "group = 64\nbits = 4", "omit quant.bits"),
            ("penalty = 1.0", "penalty = 1.0\ngamma = 2", "gamma"),
            (
                "budget_bits = 3.5",
                "budget_bits = 3.5\nobjective = \"sqrt-bits\"",
                "it takes no budget",
            ),
        ];
        for (from, to, field) in cases {
            assert!(mp.contains(from), "test case `{from}` not in the recipe");
            let err = Recipe::parse(&mp.replacen(from, to, 1), "mp.toml")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains(field),
                "error for `{to}` does not name `{field}`: {err}"
            );
        }
    }
}
