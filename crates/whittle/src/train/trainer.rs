//! The training loop: distillation of a compressed Whisper student from its full-precision
//! teacher, with the compression itself delegated to a [`CompressionMethod`].
//!
//! Each optimizer step calls the method's `before_step`, runs `grad_accum` micro-batches
//! (teacher forward without gradients, student forward through the method's weight states, the
//! recipe's distillation loss plus the method's loss terms, backward), clips the global gradient
//! norm, applies AdamW with the scheduled learning rate of each parameter group, and calls the
//! method's `after_step`. Every `eval_every` steps the method extracts the student exactly as it
//! will ship and it is scored on the dev set; the best parameters are kept. Checkpoints every
//! `checkpoint_every` steps hold everything a resumed run needs to continue bit for bit (CPU,
//! same thread count), the method's own state included.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::{Tensor, Var};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::augment::Augmentation;
use super::batch::{Batch, TrainExample};
use super::checkpoint::{self, Best, TrainState, STATE_VERSION};
use super::loss::{qat_loss, LossParts};
use super::method::{CompressionMethod, Extracted};
use super::model::{DevScore, TrainModel};
use super::optim::{clip_global_norm, AdamW, AdamWConfig, ParamGroup};
use super::recipe::{HiddenTap, Recipe};
use super::schedule::lr_factor;
use super::uniform::UniformLsq;
use crate::data::Utterance;
use crate::error::{Error, Result};
use crate::models::whisper::{Whisper, WhisperTokenizer};
use crate::nn::{LsqSpec, StepInit, Weight};
use whittle_text::normalize::EnglishNormalizer;

/// Metrics log in the work folder (one JSON object per line).
pub const METRICS_FILE: &str = "metrics.jsonl";

/// Trainable variables by name, with their learning-rate group.
pub type NamedVars = Vec<(String, Var, ParamGroup)>;

/// Replace every linear weight of a copy of `teacher` by an LSQ fake-quantized one (the
/// uniform method's [`CompressionMethod::wrap`]). Returns the student and its trainable
/// variables: `NAME.weight` (latent) and `NAME.weight_steps`.
pub fn make_student(
    teacher: &Whisper,
    spec: LsqSpec,
    init: StepInit,
) -> Result<(Whisper, NamedVars)> {
    let mut student = teacher.clone();
    let params = UniformLsq::uniform(spec, init).wrap(&mut student)?;
    Ok((
        student,
        params
            .into_iter()
            .map(|p| (p.name, p.var, p.group))
            .collect(),
    ))
}

/// A copy of `teacher` with `method`'s weight states, and AdamW (the recipe's settings) over
/// the parameters the method returned.
pub fn wrap_student<M: TrainModel>(
    teacher: &M,
    method: &mut dyn CompressionMethod,
    recipe: &Recipe,
) -> Result<(M, AdamW)> {
    wrap_given_student(teacher.clone(), method, recipe, Vec::new())
}

/// [`wrap_student`] of a given starting student (a pruned copy of the teacher, say).
fn wrap_given_student<M: TrainModel>(
    mut student: M,
    method: &mut dyn CompressionMethod,
    recipe: &Recipe,
    extra: NamedVars,
) -> Result<(M, AdamW)> {
    let params = method
        .wrap(&mut student)?
        .into_iter()
        .map(|p| (p.name, p.var, p.group))
        .chain(extra)
        .collect();
    let optimizer = AdamW::new(
        params,
        AdamWConfig {
            betas: recipe.optim.betas,
            eps: recipe.optim.eps,
            weight_decay: recipe.optim.weight_decay,
        },
    )?;
    Ok((student, optimizer))
}

/// A copy of `student` with every fake-quantized weight packed (what the output file holds).
pub fn packed_copy(student: &Whisper) -> Result<Whisper> {
    let mut model = student.clone();
    for (_, linear) in model.quantizable_mut() {
        if let Weight::FakeQuant(fq) = &linear.weight {
            let packed = fq.to_packed()?;
            linear.set_packed(packed);
        }
    }
    Ok(model)
}

/// Gradients in variable order, zeros where none reached a variable (what AdamW takes).
pub fn zero_filled(grads: Vec<Option<Tensor>>, vars: &[Var]) -> Result<Vec<Tensor>> {
    Ok(grads
        .into_iter()
        .zip(vars)
        .map(|(g, v)| g.map_or_else(|| v.as_tensor().zeros_like(), Ok))
        .collect::<candle_core::Result<_>>()?)
}

/// `state` (`[.., d_student]`) mapped by `projection` (`[d_teacher, d_student]`).
fn project_state(state: &Tensor, projection: &Tensor) -> Result<Tensor> {
    let dims = state.dims().to_vec();
    let width = *dims.last().expect("hidden states have a feature dimension");
    let rows = state.elem_count() / width.max(1);
    let mapped = state.reshape((rows, width))?.matmul(&projection.t()?)?;
    let mut out = dims;
    *out.last_mut().expect("non-empty") = projection.dim(0)?;
    Ok(mapped.reshape(out)?)
}

/// The learned linear maps of the hidden terms that ask for one (`projection = true`): one
/// `[d, d]` variable per tap, starting at the identity, named `distill.projection.AT` among the
/// optimizer's weights (so checkpoints and the best parameters carry it).
pub struct HiddenProjections {
    /// Per hidden term of the recipe, its tap's map if the term asks for one.
    pub per_term: Vec<Option<Var>>,
    /// The distinct maps, named, for the optimizer.
    pub vars: NamedVars,
}

impl HiddenProjections {
    /// Maps for `recipe`'s hidden terms. The widths come from one forward of `teacher` and
    /// `student` on the batch `probe` makes (they must agree: the map starts at the identity).
    pub fn new<M: TrainModel>(
        recipe: &Recipe,
        taps: &[HiddenTap],
        teacher: &M,
        student: &M,
        probe: impl FnOnce() -> Result<Batch>,
    ) -> Result<Self> {
        let terms = &recipe.loss.hidden;
        if !terms.iter().any(|h| h.projection) {
            return Ok(Self {
                per_term: vec![None; terms.len()],
                vars: Vec::new(),
            });
        }
        let probe = probe()?;
        let (t, s) = (
            teacher.forward_train(&probe, taps)?,
            student.forward_train(&probe, taps)?,
        );
        let mut by_tap: BTreeMap<String, Var> = BTreeMap::new();
        let mut per_term = Vec::with_capacity(terms.len());
        for (i, term) in terms.iter().enumerate() {
            if !term.projection {
                per_term.push(None);
                continue;
            }
            let width = |x: &Tensor| x.dims().last().copied().unwrap_or(0);
            let (dt, ds) = (width(&t.hidden[i]), width(&s.hidden[i]));
            if dt != ds {
                return Err(Error::config(
                    format!("loss.hidden at `{}`", term.at),
                    format!("student width {ds} != teacher width {dt}: a map from the identity needs equal widths"),
                ));
            }
            let var = match by_tap.get(&term.at) {
                Some(v) => v.clone(),
                None => {
                    let eye = Tensor::eye(dt, candle_core::DType::F32, t.hidden[i].device())?;
                    let v = Var::from_tensor(&eye)?;
                    by_tap.insert(term.at.clone(), v.clone());
                    v
                }
            };
            per_term.push(Some(var));
        }
        let vars = by_tap
            .into_iter()
            .map(|(at, v)| (format!("distill.projection.{at}"), v, ParamGroup::Weights))
            .collect();
        Ok(Self { per_term, vars })
    }
}

/// Seconds spent in each phase of a micro-batch (for benchmarks and profiles).
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub struct PhaseSeconds {
    /// Teacher forward.
    pub teacher: f64,
    /// Student forward.
    pub student: f64,
    /// Loss.
    pub loss: f64,
    /// Backward pass.
    pub backward: f64,
}

/// Gradients of one micro-batch: teacher forward (untracked), student forward, loss, backward.
/// `scale` multiplies the loss (1 / grad_accum). Parameters without a gradient get `None`.
pub fn micro_batch_grads<M: TrainModel>(
    teacher: &M,
    student: &M,
    batch: &Batch,
    recipe: &Recipe,
    taps: &[HiddenTap],
    vars: &[&Var],
    scale: f64,
) -> Result<(LossParts, Vec<Option<Tensor>>, PhaseSeconds)> {
    let micro = micro_batch_grads_with(
        teacher,
        student,
        batch,
        recipe,
        taps,
        &[],
        vars,
        scale,
        None,
    )?;
    Ok((micro.parts, micro.grads, micro.times))
}

/// What [`micro_batch_grads_with`] computes.
pub struct MicroBatchGrads {
    /// Loss terms of the recipe (the total includes the method's terms).
    pub parts: LossParts,
    /// Gradient of each variable, `None` where none reached it.
    pub grads: Vec<Option<Tensor>>,
    /// Seconds per phase.
    pub times: PhaseSeconds,
    /// The method's terms by name, with their reported values.
    pub terms: Vec<(String, f64)>,
}

/// [`micro_batch_grads`] with the loss terms of `method` added to the total; also returns each
/// term's reported value. `projections[i]`, where present, maps the student's state of hidden
/// term `i` before its distance ([`HiddenProjections`]).
#[allow(clippy::too_many_arguments)]
pub fn micro_batch_grads_with<M: TrainModel>(
    teacher: &M,
    student: &M,
    batch: &Batch,
    recipe: &Recipe,
    taps: &[HiddenTap],
    projections: &[Option<Var>],
    vars: &[&Var],
    scale: f64,
    method: Option<&dyn CompressionMethod>,
) -> Result<MicroBatchGrads> {
    let mut clock = Instant::now();
    let mut lap = || {
        let s = clock.elapsed().as_secs_f64();
        clock = Instant::now();
        s
    };
    let teacher_out = teacher.forward_train(batch, taps)?;
    let teacher_s = lap();
    let mut student_out = student.forward_train(batch, taps)?;
    for (state, projection) in student_out.hidden.iter_mut().zip(projections) {
        if let Some(p) = projection {
            *state = project_state(state, p.as_tensor())?;
        }
    }
    let student_s = lap();
    let mut parts = qat_loss(&recipe.loss, &student_out, &teacher_out, batch)?;
    let mut terms = Vec::new();
    if let Some(method) = method {
        for term in method.loss_terms(student)? {
            parts.total = (&parts.total + &term.loss)?;
            terms.push((term.name, term.value));
        }
    }
    let loss_s = lap();
    let grads = (&parts.total * scale)?.backward()?;
    let out = vars
        .iter()
        .map(|v| grads.get(v.as_tensor()).cloned())
        .collect();
    let times = PhaseSeconds {
        teacher: teacher_s,
        student: student_s,
        loss: loss_s,
        backward: lap(),
    };
    Ok(MicroBatchGrads {
        parts,
        grads: out,
        times,
        terms,
    })
}

/// What one optimizer step did.
#[derive(Debug, Clone, serde::Serialize)]
pub struct StepReport {
    /// Steps done (this one included).
    pub step: usize,
    /// Steps in the run.
    pub steps: usize,
    /// Weighted loss, mean over micro-batches.
    pub loss: f64,
    /// KL term.
    pub kl: f64,
    /// Cross-entropy term.
    pub ce: f64,
    /// Hidden-state terms.
    pub hidden: Vec<f64>,
    /// The method's loss terms (their reported values, mean over micro-batches).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub terms: BTreeMap<String, f64>,
    /// The method's figures after the step (expected size, temperature ...).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub method: BTreeMap<String, f64>,
    /// Gradient norm before clipping.
    pub grad_norm: f64,
    /// Learning rate of the weights.
    pub lr_weights: f64,
    /// Learning rate of the steps.
    pub lr_scales: f64,
    /// Target tokens in the step.
    pub tokens: usize,
    /// Encoder frames of the step's batches (sum).
    pub frames: usize,
    /// Seconds this step took.
    pub seconds: f64,
    /// Pass over the training data.
    pub epoch: usize,
}

/// A dev evaluation during training.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DevReport {
    /// Step it was measured after.
    pub step: usize,
    /// The packed student's score.
    pub score: DevScore,
    /// Whether it is the best so far (among eligible results).
    pub best: bool,
    /// Whether the method's schedule had reached its target here
    /// ([`super::method::CompressionMethod::ready_to_ship`]); only then may it be the best.
    pub eligible: bool,
}

/// Callbacks for progress display (the library draws nothing itself).
pub trait TrainObserver {
    /// After each optimizer step.
    fn on_step(&mut self, _report: &StepReport) {}
    /// After each dev evaluation.
    fn on_dev(&mut self, _report: &DevReport) {}
    /// After each dev utterance (`done` of `total`).
    fn on_dev_progress(&mut self, _done: usize, _total: usize) {}
}

/// An observer that shows nothing.
pub struct Silent;
impl TrainObserver for Silent {}

/// The dev set and what scoring it needs (`T`: the family's [`TrainModel::Decoding`]).
pub struct DevSet<T = WhisperTokenizer> {
    /// Utterances (already limited).
    pub utterances: Vec<Utterance>,
    /// Text normaliser for WER.
    pub normalizer: EnglishNormalizer,
    /// What decoding needs (Whisper: the tokenizer).
    pub tokenizer: T,
}

/// A training run of a model family `M`.
pub struct Trainer<M: TrainModel = Whisper> {
    /// The recipe.
    pub recipe: Recipe,
    /// Full-precision teacher.
    pub teacher: M,
    /// Compressed student (shares its variables with the optimizer).
    pub student: M,
    /// The compression method.
    pub method: Box<dyn CompressionMethod>,
    /// Optimizer and parameters.
    pub optimizer: AdamW,
    /// Training examples.
    pub examples: Vec<TrainExample>,
    /// What batching needs (Whisper: decoder prompt and end-of-text).
    pub prompt: M::BatchContext,
    /// Dev set, if any.
    pub dev: Option<DevSet<M::Decoding>>,
    /// Progress and data-order state.
    pub state: TrainState,
    taps: Vec<HiddenTap>,
    projections: Vec<Option<Var>>,
    order: Vec<usize>,
    rng: ChaCha8Rng,
}

impl<M: TrainModel> Trainer<M> {
    /// A fresh run of the recipe's method (its bit map, if any, read from
    /// `recipe.quant.bit_map`): the student starts from the teacher's weights.
    pub fn new(
        recipe: Recipe,
        teacher: M,
        examples: Vec<TrainExample>,
        prompt: M::BatchContext,
        dev: Option<DevSet<M::Decoding>>,
    ) -> Result<Self> {
        let student = teacher.clone();
        Self::distilling(recipe, teacher, student, examples, prompt, dev)
    }

    /// A fresh run of `method` (the recipe's `method` field is not consulted).
    pub fn with_method(
        recipe: Recipe,
        method: Box<dyn CompressionMethod>,
        teacher: M,
        examples: Vec<TrainExample>,
        prompt: M::BatchContext,
        dev: Option<DevSet<M::Decoding>>,
    ) -> Result<Self> {
        let student = teacher.clone();
        Self::with_student(recipe, method, teacher, student, examples, prompt, dev)
    }

    /// A fresh run of the recipe's method that starts from `student` instead of a copy of the
    /// teacher: a structurally pruned student (its residual width and hidden taps are the
    /// teacher's) distilled from the unpruned model, with or without quantization.
    pub fn distilling(
        recipe: Recipe,
        teacher: M,
        student: M,
        examples: Vec<TrainExample>,
        prompt: M::BatchContext,
        dev: Option<DevSet<M::Decoding>>,
    ) -> Result<Self> {
        recipe.validate("recipe")?;
        let bit_map = recipe
            .quant
            .bit_map
            .as_deref()
            .map(crate::compress::bitmap::BitMap::from_file)
            .transpose()?;
        let method = super::method::from_recipe(&recipe, bit_map)?;
        Self::with_student(recipe, method, teacher, student, examples, prompt, dev)
    }

    fn with_student(
        recipe: Recipe,
        mut method: Box<dyn CompressionMethod>,
        teacher: M,
        student: M,
        examples: Vec<TrainExample>,
        prompt: M::BatchContext,
        dev: Option<DevSet<M::Decoding>>,
    ) -> Result<Self> {
        recipe.validate("recipe")?;
        if examples.is_empty() {
            return Err(Error::config("training data", "no training examples"));
        }
        let taps: Vec<HiddenTap> = recipe
            .loss
            .hidden
            .iter()
            .map(|h| h.tap().map_err(|r| Error::config("loss.hidden", r)))
            .collect::<Result<_>>()?;
        let probe = || teacher.make_batch(&[&examples[0]], recipe.train.trim, &prompt);
        let projections = HiddenProjections::new(&recipe, &taps, &teacher, &student, probe)?;
        let (student, optimizer) =
            wrap_given_student(student, method.as_mut(), &recipe, projections.vars)?;
        let projections = projections.per_term;
        let rng = ChaCha8Rng::seed_from_u64(recipe.train.seed);
        let state = TrainState {
            version: STATE_VERSION,
            step: 0,
            epoch: 0,
            cursor: 0,
            rng_seed: recipe.train.seed,
            epoch_rng_word_pos: "0".into(),
            optimizer_steps: 0,
            best: None,
            elapsed_seconds: 0.0,
            recipe: recipe.clone(),
            tensors: String::new(),
            method: method.state(),
        };
        let mut trainer = Self {
            recipe,
            teacher,
            student,
            method,
            optimizer,
            examples,
            prompt,
            dev,
            state,
            taps,
            projections,
            order: Vec::new(),
            rng,
        };
        trainer.shuffle_epoch();
        Ok(trainer)
    }

    /// Per hidden term of the recipe, its learned map (`projection = true`), if any.
    pub fn hidden_projections(&self) -> &[Option<Var>] {
        &self.projections
    }

    /// Continue from the checkpoint in `dir`; `Ok(false)` when there is none.
    pub fn resume(&mut self, dir: &Path) -> Result<bool> {
        let Some(state) = checkpoint::load_state(dir)? else {
            return Ok(false);
        };
        if state.recipe != self.recipe {
            return Err(Error::config(
                dir.join(checkpoint::STATE_FILE).display().to_string(),
                "the run was started with a different recipe (see its `recipe` field); use a new work folder",
            ));
        }
        checkpoint::restore(dir, &state, &mut self.optimizer, self.method.as_mut())?;
        self.method.restore(&state.method)?;
        let pos: u128 = state.epoch_rng_word_pos.parse().map_err(|_| {
            Error::malformed(
                dir.join(checkpoint::STATE_FILE),
                "`epoch_rng_word_pos` is not an integer",
            )
        })?;
        self.rng = ChaCha8Rng::seed_from_u64(state.rng_seed);
        self.rng.set_word_pos(pos);
        self.state = state;
        let cursor = self.state.cursor;
        self.shuffle_epoch();
        self.state.cursor = cursor;
        truncate_metrics(&dir.join(METRICS_FILE), self.state.step)?;
        Ok(true)
    }

    /// Draw this epoch's order (the generator position before the draw is saved).
    fn shuffle_epoch(&mut self) {
        self.state.epoch_rng_word_pos = self.rng.get_word_pos().to_string();
        self.order = (0..self.examples.len()).collect();
        self.order.shuffle(&mut self.rng);
        self.state.cursor = 0;
    }

    fn next_indices(&mut self) -> Vec<usize> {
        (0..self.recipe.train.batch_size)
            .map(|_| {
                if self.state.cursor == self.order.len() {
                    self.state.epoch += 1;
                    self.shuffle_epoch();
                }
                self.state.cursor += 1;
                self.order[self.state.cursor - 1]
            })
            .collect()
    }

    /// One optimizer step over `grad_accum` micro-batches.
    pub fn train_step(&mut self) -> Result<StepReport> {
        let t0 = Instant::now();
        let accum = self.recipe.train.grad_accum;
        let vars: Vec<Var> = self
            .optimizer
            .params
            .iter()
            .map(|p| p.var.clone())
            .collect();
        let var_refs: Vec<&Var> = vars.iter().collect();
        let mut grads: Vec<Option<Tensor>> = vec![None; vars.len()];
        let (mut loss, mut kl, mut ce) = (0.0, 0.0, 0.0);
        let mut hidden = vec![0.0; self.recipe.loss.hidden.len()];
        let mut terms: BTreeMap<String, f64> = BTreeMap::new();
        let (mut tokens, mut frames) = (0, 0);
        self.method
            .before_step(&mut self.student, self.state.step)?;
        for micro in 0..accum {
            let indices = self.next_indices();
            let drawn: Vec<TrainExample> = indices
                .iter()
                .enumerate()
                .map(|(position, &i)| {
                    let mut e = self.examples[i].clone();
                    e.augmentation = self.recipe.augment.as_ref().map(|recipe| Augmentation {
                        recipe: recipe.clone(),
                        seed: Augmentation::seed_for(
                            self.recipe.train.seed,
                            self.state.step,
                            micro,
                            position,
                        ),
                    });
                    e
                })
                .collect();
            let examples: Vec<&TrainExample> = drawn.iter().collect();
            let batch = self
                .teacher
                .make_batch(&examples, self.recipe.train.trim, &self.prompt)?;
            tokens += batch.target_count();
            frames += batch.features.dim(candle_core::D::Minus1)?;
            let MicroBatchGrads {
                parts,
                grads: micro,
                terms: micro_terms,
                ..
            } = micro_batch_grads_with(
                &self.teacher,
                &self.student,
                &batch,
                &self.recipe,
                &self.taps,
                &self.projections,
                &var_refs,
                1.0 / accum as f64,
                Some(self.method.as_ref()),
            )?;
            for (name, value) in micro_terms {
                *terms.entry(name).or_insert(0.0) += value / accum as f64;
            }
            loss += super::loss_value(&parts.total)? / accum as f64;
            kl += parts.kl / accum as f64;
            ce += parts.ce / accum as f64;
            for (h, v) in hidden.iter_mut().zip(&parts.hidden) {
                *h += v / accum as f64;
            }
            for (acc, g) in grads.iter_mut().zip(micro) {
                *acc = match (acc.take(), g) {
                    (Some(a), Some(g)) => Some((a + g)?),
                    (a, g) => a.or(g),
                };
            }
        }
        let mut grads = zero_filled(grads, &vars)?;
        let grad_norm = match self.recipe.optim.clip_norm {
            Some(max) => clip_global_norm(&mut grads, max)?,
            None => super::optim::global_norm(&grads)?,
        };
        let factor = lr_factor(&self.recipe.schedule, self.state.step);
        let rate = |group: ParamGroup| {
            let r = self.method.learning_rate(group, &self.recipe);
            (r.lr * factor, r.weight_decay)
        };
        let (lr_w, lr_s) = (rate(ParamGroup::Weights).0, rate(ParamGroup::Scales).0);
        self.optimizer.step_with(&grads, rate)?;
        self.method
            .after_step(&mut self.student, self.state.step, &terms)?;
        self.state.step += 1;
        self.state.optimizer_steps = self.optimizer.steps;
        let method = self.method.metrics(&self.student)?;
        Ok(StepReport {
            step: self.state.step,
            steps: self.recipe.schedule.steps,
            loss,
            kl,
            ce,
            hidden,
            terms,
            method,
            grad_norm,
            lr_weights: lr_w,
            lr_scales: lr_s,
            tokens,
            frames,
            seconds: t0.elapsed().as_secs_f64(),
            epoch: self.state.epoch,
        })
    }

    /// Score the student, extracted as it will ship, on the dev set.
    pub fn evaluate_dev(&self, observer: &mut dyn TrainObserver) -> Result<Option<DevScore>> {
        if self.dev.is_none() {
            return Ok(None);
        }
        self.evaluate_packed(&self.extract()?.0, observer)
    }

    /// The student as the method ships it: a packed copy, and the format of every layer.
    pub fn extract(&self) -> Result<(M, Extracted)> {
        let mut shipped = self.student.clone();
        let extracted = self.method.extract(&mut shipped)?;
        Ok((shipped, extracted))
    }

    /// Score `model` (e.g. the result of [`Trainer::finish`]) on the dev set.
    pub fn evaluate_packed(
        &self,
        model: &M,
        observer: &mut dyn TrainObserver,
    ) -> Result<Option<DevScore>> {
        let Some(dev) = &self.dev else {
            return Ok(None);
        };
        let total = dev.utterances.len();
        let score = model.score(&dev.tokenizer, &dev.utterances, &dev.normalizer, &mut |i| {
            observer.on_dev_progress(i + 1, total)
        })?;
        Ok(Some(score))
    }

    /// Train until the recipe's last step, checkpointing into `dir`. `stop_at` ends the session
    /// early after that many steps (as a kill would, but cleanly), for tests.
    pub fn run(
        &mut self,
        dir: &Path,
        stop_at: Option<usize>,
        observer: &mut dyn TrainObserver,
    ) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let steps = self.recipe.schedule.steps;
        let train = self.recipe.train;
        while self.state.step < steps {
            if stop_at == Some(self.state.step) {
                return Ok(());
            }
            let t0 = Instant::now();
            let report = self.train_step()?;
            append_metrics(
                &dir.join(METRICS_FILE),
                &serde_json::json!({ "kind": "train", "report": report }),
            )?;
            observer.on_step(&report);
            let step = self.state.step;
            if (train.eval_every > 0 && step.is_multiple_of(train.eval_every)) || step == steps {
                if let Some(score) = self.evaluate_dev(observer)? {
                    let eligible = step == steps || self.method.ready_to_ship(step);
                    let best = eligible && self.state.best.is_none_or(|b| score.value() < b.score);
                    if best {
                        checkpoint::save_best(dir, &self.optimizer, self.method.as_ref())?;
                        self.state.best = Some(Best {
                            step,
                            score: score.value(),
                        });
                    }
                    let dev = DevReport {
                        step,
                        score,
                        best,
                        eligible,
                    };
                    append_metrics(
                        &dir.join(METRICS_FILE),
                        &serde_json::json!({ "kind": "dev", "report": dev }),
                    )?;
                    observer.on_dev(&dev);
                }
            }
            self.state.elapsed_seconds += t0.elapsed().as_secs_f64();
            if step.is_multiple_of(train.checkpoint_every) || step == steps {
                self.state.method = self.method.state();
                checkpoint::save(dir, &mut self.state, &self.optimizer, self.method.as_ref())?;
            }
        }
        Ok(())
    }

    /// After training: load the best dev parameters (if any dev result was kept) and return the
    /// student as the method extracts it ([`Trainer::extract`]).
    pub fn finish(&mut self, dir: &Path) -> Result<(M, Extracted)> {
        if self.state.best.is_some() && dir.join(checkpoint::BEST_FILE).is_file() {
            checkpoint::load_best(dir, &self.optimizer, self.method.as_mut())?;
        }
        self.extract()
    }
}

/// Directory-independent location of a run's outputs (`OUT.whittle` -> `OUT.work/`).
pub fn default_work_dir(output: &Path) -> PathBuf {
    output.with_extension("work")
}

fn append_metrics(path: &Path, value: &serde_json::Value) -> Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| Error::io(path, e))?;
    writeln!(file, "{value}").map_err(|e| Error::io(path, e))
}

/// Drop log lines of steps after `step` (written after the checkpoint a run resumes from).
fn truncate_metrics(path: &Path, step: usize) -> Result<()> {
    if !path.is_file() {
        return Ok(());
    }
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let kept: String = text
        .lines()
        .filter(|line| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v["report"]["step"].as_u64())
                .is_some_and(|s| s as usize <= step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    crate::fsutil::write_atomic(path, kept.as_bytes())
}
