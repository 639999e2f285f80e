//! `whittle compress` (quantization-aware training from a recipe) and `whittle bench
//! train-step` (the time of one QAT step on a fixed batch).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use whittle::candle::{DType, Device};
use whittle::checkpoint::gguf::GgufFile;
use whittle::checkpoint::TensorStore;
use whittle::compress::bitmap::LayerFormat;
use whittle::data::Utterance;
use whittle::model_dir::{ModelFormat, WhisperCheckpoint};
use whittle::models::llama::{Llama, LlamaTokenizer};
use whittle::models::registry::{self, LoadedModel};
use whittle::models::wav2vec2::CtcRecognizer;
use whittle::models::whisper::{Transcriber, Whisper};
use whittle::models::{Layers, SpeechModel};
use whittle::train::batch::{pseudo_labels, synthetic_batch, Prompt, TrainExample};
use whittle::train::checkpoint;
use whittle::train::identity::{dataset_digest, model_digest, RunIdentity};
use whittle::train::method::CompressionMethod;
use whittle::train::mixed_precision::MixedPrecision;
use whittle::train::model::DevScore;
use whittle::train::recipe::MixedPrecisionRecipe;
use whittle::train::trainer::{
    default_work_dir, micro_batch_grads_with, wrap_student, zero_filled, DevReport,
    MicroBatchGrads, StepReport,
};
use whittle::train::uniform::UniformLsq;
use whittle::train::{
    build_examples, needs_pseudo_labels, DevSet, Recipe, TrainModel, TrainObserver, Trainer,
};

use crate::commands::{progress_bar, NormalizerArgs};

/// `whittle compress MODEL --recipe R --train DATA --dev DATA -o OUT.whittle`
#[derive(Args)]
pub struct CompressArgs {
    /// Model folder (CTranslate2 or Hugging Face): the teacher and the student's start (see
    /// `--teacher` for a separate teacher).
    model: PathBuf,
    /// Recipe (TOML), e.g. recipes/uniform-qat-w4.toml.
    #[arg(long)]
    recipe: PathBuf,
    /// Training audio: LibriSpeech-layout folder or JSONL manifest (transcripts optional with
    /// pseudo-label targets).
    #[arg(long)]
    train: PathBuf,
    /// Dev set with transcripts, scored during training to keep the best checkpoint.
    #[arg(long)]
    dev: PathBuf,
    /// Output `.whittle` file.
    #[arg(long, short)]
    output: PathBuf,
    /// Continue the run whose checkpoint is in the work folder.
    #[arg(long)]
    resume: bool,
    /// Checkpoints, metrics log and pseudo-label cache (default: OUTPUT with extension `.work`).
    #[arg(long)]
    work_dir: Option<PathBuf>,
    /// Use only the first N training utterances.
    #[arg(long)]
    train_limit: Option<usize>,
    /// The teacher's pseudo-label cache (JSONL, created if absent; default WORK_DIR/
    /// pseudo-labels.jsonl), so runs of several recipes on the same data and teacher label it once.
    #[arg(long, value_name = "FILE")]
    pseudo_labels: Option<PathBuf>,
    /// Continue although the model, training data or dev data differ from what the run (or the
    /// pseudo-label cache) was started with.
    #[arg(long)]
    force: bool,
    /// Train this bit map (per-layer formats, see docs/bitmap.md) with the recipe's uniform
    /// method, instead of the recipe's `quant.bits` / `quant.bit_map`.
    #[arg(long, value_name = "FILE")]
    bit_map: Option<PathBuf>,
    /// Distil from this model instead of MODEL itself: MODEL (then a float `.whittle` file may
    /// be given, e.g. a structurally pruned one) is the student's start, the teacher gives the
    /// pseudo-labels, the KL and the hidden-state targets. With `method = "distill"` this is the
    /// fine-tune after pruning; with a quantizing recipe, pruned and quantized in one run.
    #[arg(long, value_name = "MODEL")]
    teacher: Option<PathBuf>,
    #[command(flatten)]
    normalizer: NormalizerArgs,
}

/// `whittle bench ...`
#[derive(Args)]
pub struct BenchArgs {
    #[command(subcommand)]
    which: BenchCommand,
}

#[derive(Subcommand)]
enum BenchCommand {
    /// Time one LSQ QAT step (teacher forward, student forward, KL, backward, AdamW) on a fixed
    /// synthetic batch.
    TrainStep(TrainStepArgs),
    /// Time recognition of one synthetic clip with any model family (float folder or packed
    /// `.whittle` file): load once, then the median of several runs.
    Forward(ForwardArgs),
    /// Time one 30 s Whisper window (encoder, then a fixed number of decoder steps on a fixed
    /// token sequence) for several models in one invocation, with ratios to the first: pruned
    /// or quantized models against their source on the same work.
    Window(crate::bench_window::WindowArgs),
    /// Dense f32 products `x W^T` at Whisper's training and inference shapes on every backend
    /// this build has (the `gemm` crate, OpenBLAS with `--features openblas`, candle's matmul,
    /// whittle's own f32 microkernel), GFLOP/s and ratios to the `gemm` crate, one invocation.
    Gemm(GemmArgs),
    /// The CPU (model, instruction-set extensions) and the kernels whittle picks on it: what
    /// every benchmark records beside its figures.
    Machine {
        /// Print one JSON object.
        #[arg(long)]
        json: bool,
    },
}

/// `whittle bench gemm`
#[derive(Args)]
struct GemmArgs {
    /// Rows `m` (batch x frames): 1200 is the training batch of bench train-step (4 x 300
    /// frames), 1500 one 30 s encoder window.
    #[arg(long, value_delimiter = ',', default_values_t = [1200usize, 1500])]
    rows: Vec<usize>,
    /// `(k, n)` pairs as `KxN`: default the linear shapes of tiny.en (384, 1536) and base
    /// (512, 2048).
    #[arg(long, value_delimiter = ',', default_values_t = ["384x384".to_string(), "384x1536".into(), "1536x384".into(), "512x512".into(), "512x2048".into(), "2048x512".into()])]
    shapes: Vec<String>,
    /// Timed runs per product (the median is kept).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// One JSON object per line.
    #[arg(long)]
    json: bool,
}

/// `whittle bench forward MODEL`
#[derive(Args)]
struct ForwardArgs {
    /// Model folder or `.whittle` file.
    model: PathBuf,
    /// Clip length in seconds (a seeded tone plus noise at 16 kHz).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Timed runs.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Untimed runs first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

/// `whittle bench train-step MODEL`
#[derive(Args)]
struct TrainStepArgs {
    /// Model folder (CTranslate2 or Hugging Face).
    model: PathBuf,
    /// Utterances in the batch.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Audio seconds per utterance (encoder input frames = 100 per second).
    #[arg(long, default_value_t = 6.0)]
    seconds: f64,
    /// Text tokens per utterance (after the prompt).
    #[arg(long, default_value_t = 24)]
    tokens: usize,
    /// Bits per weight.
    #[arg(long, default_value_t = 4)]
    bits: u8,
    /// Group size (omit for per-output-channel steps).
    #[arg(long)]
    group: Option<usize>,
    /// Timed steps.
    #[arg(long, default_value_t = 5)]
    steps: usize,
    /// Untimed steps first.
    #[arg(long, default_value_t = 1)]
    warmup: usize,
    /// KL temperature.
    #[arg(long, default_value_t = 2.0)]
    temperature: f64,
    /// Learning rate of the latent weights (AdamW; defaults as scripts/reference/qat_step.py).
    #[arg(long, default_value_t = 1e-5)]
    lr: f64,
    /// Learning rate of the LSQ steps.
    #[arg(long, default_value_t = 1e-3)]
    lr_scales: f64,
    /// Decoupled weight decay of the latent weights (steps have none).
    #[arg(long, default_value_t = 0.01)]
    weight_decay: f64,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
    /// Time the step on this batch (written by `scripts/reference/qat_step.py --write-batch`)
    /// instead of the synthetic one, so whittle and PyTorch see identical tensors.
    #[arg(long, value_name = "FILE")]
    batch_file: Option<PathBuf>,
    /// Also write the batch (mel, inputs, positions, targets) to this safetensors file.
    #[arg(long)]
    dump_batch: Option<PathBuf>,
    /// Also time the one-stage mixed-precision supernet step on the same batch, with these
    /// candidate bit widths (e.g. 2,3,4,5,6,8; group --group), and print its time relative to
    /// the uniform step.
    #[arg(long, value_delimiter = ',', value_name = "BITS")]
    mixed_precision: Option<Vec<u8>>,
    /// With --mixed-precision: leave the token embedding out of the search (the uniform step
    /// never trains it).
    #[arg(long, requires = "mixed_precision")]
    mp_no_embedding: bool,
    /// Also time QAT of this bit map (the two-stage baseline's stage B, which may train the
    /// token embedding too) on the same batch, and print its time relative to the uniform step.
    #[arg(long, value_name = "FILE")]
    bit_map: Option<PathBuf>,
}

/// Median and all step times (ms), per-phase times, first and last KL of timed steps.
struct StepTimes {
    median: f64,
    all: Vec<f64>,
    phases: Vec<serde_json::Value>,
    losses: Vec<f64>,
    params: usize,
}

impl StepTimes {
    /// This method's times beside the uniform step's median, added to `fields`.
    fn relative_to(&self, uniform_median: f64, mut fields: serde_json::Value) -> serde_json::Value {
        fields["ms_per_step"] = self.median.into();
        fields["ms_per_step_all"] = serde_json::json!(self.all);
        fields["phase_ms"] = serde_json::json!(self.phases);
        fields["trainable_params"] = self.params.into();
        fields["time_vs_uniform"] = (self.median / uniform_median).into();
        fields
    }
}

/// Time `warmup + steps` optimizer steps of `student` on `batch`: forward, loss (with the
/// method's terms), backward and AdamW with the method's learning rates.
fn time_steps(
    teacher: &Whisper,
    method: &mut dyn CompressionMethod,
    batch: &whittle::train::Batch,
    recipe: &Recipe,
    warmup: usize,
    steps: usize,
) -> Result<StepTimes> {
    let (mut student, mut optimizer) = wrap_student(teacher, method, recipe)?;
    let vars: Vec<_> = optimizer.params.iter().map(|p| p.var.clone()).collect();
    let var_refs: Vec<_> = vars.iter().collect();
    let (mut all, mut phases, mut losses) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..warmup + steps {
        let t = Instant::now();
        method.before_step(&mut student, i)?;
        let MicroBatchGrads {
            parts,
            grads,
            times: phase,
            terms,
        } = micro_batch_grads_with(
            teacher,
            &student,
            batch,
            recipe,
            &[],
            &[],
            &var_refs,
            1.0,
            Some(&*method),
        )?;
        let t_opt = Instant::now();
        let grads = zero_filled(grads, &vars)?;
        optimizer.step_with(&grads, |group| {
            let r = method.learning_rate(group, recipe);
            (r.lr, r.weight_decay)
        })?;
        method.after_step(&mut student, i, &terms.into_iter().collect())?;
        losses.push(parts.kl);
        if i >= warmup {
            all.push(t.elapsed().as_secs_f64() * 1e3);
            phases.push(serde_json::json!({
                "teacher": phase.teacher * 1e3, "student": phase.student * 1e3, "loss": phase.loss * 1e3,
                "backward": phase.backward * 1e3, "optimizer": t_opt.elapsed().as_secs_f64() * 1e3,
            }));
        }
    }
    let mut sorted = all.clone();
    sorted.sort_by(f64::total_cmp);
    Ok(StepTimes {
        median: sorted[sorted.len() / 2],
        all,
        phases,
        losses,
        params: optimizer.params.iter().map(|p| p.var.elem_count()).sum(),
    })
}

fn open_teacher(model: &Path) -> Result<(WhisperCheckpoint, Whisper)> {
    let checkpoint = WhisperCheckpoint::open(model, &Device::Cpu)
        .with_context(|| format!("loading model {}", model.display()))?;
    if checkpoint.location.format == ModelFormat::Whittle {
        bail!(
            "{} is already packed; train from the original model folder",
            model.display()
        );
    }
    let teacher = Whisper::load(&checkpoint.store, &checkpoint.config, DType::F32)?;
    Ok((checkpoint, teacher))
}

fn prompt_of(checkpoint: &WhisperCheckpoint) -> Prompt {
    Prompt {
        tokens: checkpoint
            .tokenizer
            .prompt(checkpoint.config.is_multilingual()),
        eot: checkpoint.tokenizer.eot,
    }
}

/// Progress bar over optimizer steps, dev results printed above it.
struct BarObserver {
    bar: ProgressBar,
}

impl TrainObserver for BarObserver {
    fn on_step(&mut self, r: &StepReport) {
        self.bar.set_position(r.step as u64);
        self.bar.set_message(format!(
            "loss {:.4} (kl {:.4}) |g| {:.3} {:.1}s/step",
            r.loss, r.kl, r.grad_norm, r.seconds
        ));
    }
    fn on_dev(&mut self, r: &DevReport) {
        self.bar.println(format!(
            "step {}: {}{}",
            r.step,
            r.score.describe(),
            if r.best {
                " best"
            } else if !r.eligible {
                " (before the target: not eligible)"
            } else {
                ""
            }
        ));
    }
    fn on_dev_progress(&mut self, done: usize, total: usize) {
        self.bar.set_message(format!("dev {done}/{total}"));
    }
}

/// With `--teacher`, the student MODEL as family `T` (the teacher's family, checked when both
/// were loaded); without, `None` (the student starts as a copy of the teacher).
fn student_as<T: 'static>(loaded: &LoadedModel, teacher_given: bool) -> Option<&T> {
    teacher_given.then(|| {
        loaded
            .model
            .as_any()
            .downcast_ref::<T>()
            .expect("same architecture as the teacher")
    })
}

pub fn compress(args: CompressArgs) -> Result<()> {
    let t0 = Instant::now();
    if args.output.extension().is_none_or(|e| e != "whittle") {
        bail!("output {} must end in .whittle", args.output.display());
    }
    let recipe_text = std::fs::read_to_string(&args.recipe)
        .with_context(|| format!("reading {}", args.recipe.display()))?;
    let mut recipe = Recipe::parse(&recipe_text, &args.recipe.display().to_string())?;
    if let Some(path) = &args.bit_map {
        use whittle::train::MethodKind;
        if !matches!(recipe.method, MethodKind::UniformLsq | MethodKind::Admm) {
            bail!(
                "--bit-map trains a fixed bit map with method = \"uniform-lsq\" or \"admm\"; {} uses \"{}\"",
                args.recipe.display(),
                recipe.method.name()
            );
        }
        recipe.quant.bits = 0;
        recipe.quant.bit_map = Some(path.clone());
    } else if let Some(path) = recipe.quant.bit_map.clone() {
        // A recipe's bit map is relative to the recipe's folder.
        if path.is_relative() {
            let dir = args.recipe.parent().unwrap_or(Path::new("."));
            recipe.quant.bit_map = Some(dir.join(path));
        }
    }
    recipe.validate(&args.recipe.display().to_string())?;
    let bit_map_text = match &recipe.quant.bit_map {
        Some(path) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading bit map {}", path.display()))?,
        ),
        None => None,
    };
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| default_work_dir(&args.output));
    let has_checkpoint = checkpoint::load_state(&work_dir)?.is_some();
    match (args.resume, has_checkpoint) {
        (false, true) => bail!(
            "{} holds a checkpoint: pass --resume to continue it, or choose another --work-dir",
            work_dir.display()
        ),
        (true, false) => bail!("--resume: no checkpoint in {}", work_dir.display()),
        _ => {}
    }
    std::fs::create_dir_all(&work_dir)
        .with_context(|| format!("creating {}", work_dir.display()))?;
    let (normalizer, _) = args.normalizer.load()?;
    let language_model =
        GgufFile::sniff(&args.model) || whittle::models::gpt2::Gpt2::is_gpt2_folder(&args.model);
    if !language_model {
        let location = whittle::model_dir::ModelLocation::detect(&args.model)
            .with_context(|| format!("loading model {}", args.model.display()))?;
        if location.format == ModelFormat::Whittle && args.teacher.is_none() {
            bail!(
                "{} is already packed; train from the original model folder (or give the \
                 unpruned model as --teacher to distil this float file)",
                args.model.display()
            );
        }
    } else if args.teacher.is_some() {
        bail!("--teacher: language models distil from themselves only");
    }
    // A language model trains on texts: a `.txt` file's lines or a manifest's transcripts.
    let load = |path: &Path| -> Result<Vec<Utterance>> {
        if language_model {
            Ok(crate::perplexity_cmd::texts(path)?
                .into_iter()
                .map(|t| Utterance {
                    id: t.id,
                    audio: PathBuf::new(),
                    text: Some(t.text),
                })
                .collect())
        } else {
            Ok(whittle::data::load_dataset(path)?)
        }
    };
    let mut train = load(&args.train)?;
    if let Some(n) = args.train_limit {
        train.truncate(n);
    }
    let mut dev = load(&args.dev)?;
    if let Some(n) = recipe.train.dev_limit {
        dev = whittle::data::evenly_spaced(dev, n);
    }
    if let Some(u) = dev.iter().find(|u| u.text.is_none()) {
        bail!(
            "dev set {}: utterance `{}` has no transcript",
            args.dev.display(),
            u.id
        );
    }
    // The pseudo-labels are the teacher's; a run is identified by its student and teacher.
    let teacher_digest = model_digest(args.teacher.as_ref().unwrap_or(&args.model))?;
    let identity = RunIdentity {
        model: match &args.teacher {
            Some(_) => format!(
                "{} distilled from {teacher_digest}",
                model_digest(&args.model)?
            ),
            None => teacher_digest.clone(),
        },
        train: dataset_digest(&train),
        dev: dataset_digest(&dev),
    };
    check_identity(
        &work_dir.join(IDENTITY_FILE),
        &identity,
        args.resume,
        args.force,
        "run",
    )?;
    // What the run actually uses: the recipe with --bit-map applied and paths resolved.
    let effective_recipe = recipe.to_toml()?;
    let saved = format!(
        "# {} as run by whittle compress (the original text is in the output's header)\n{effective_recipe}",
        args.recipe.display()
    );
    whittle::fsutil::write_atomic(&work_dir.join("recipe.toml"), saved.as_bytes())?;
    whittle::fsutil::write_atomic(&args.output.with_extension("recipe.toml"), saved.as_bytes())?;
    if let Some(text) = &bit_map_text {
        whittle::fsutil::write_atomic(&work_dir.join("bit-map.toml"), text.as_bytes())?;
    }
    let run = Run {
        args: &args,
        recipe,
        recipe_text,
        bit_map_text,
        work_dir,
        t0,
    };
    if language_model {
        return train_language_model(run, &train, dev, normalizer);
    }
    let loaded = registry::open(&args.model, &Device::Cpu, DType::F32)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let teacher_loaded = match &args.teacher {
        Some(path) => {
            if loaded.store.packed_names().next().is_some() {
                bail!(
                    "{} holds quantized matrices; the student must be float (prune, then compress)",
                    args.model.display()
                );
            }
            let t = registry::open(path, &Device::Cpu, DType::F32)
                .with_context(|| format!("loading teacher {}", path.display()))?;
            if t.model.architecture() != loaded.model.architecture() {
                bail!(
                    "teacher {} is a {} model, the student {} a {} model",
                    path.display(),
                    t.model.architecture(),
                    args.model.display(),
                    loaded.model.architecture()
                );
            }
            Some(t)
        }
        None => None,
    };
    // The teacher gives the targets; the student (MODEL) is what gets written.
    let teacher_of = teacher_loaded.as_ref().unwrap_or(&loaded);
    if let Some(transcriber) = teacher_of.model.as_any().downcast_ref::<Transcriber>() {
        let tokenizer = transcriber.tokenizer.clone();
        let teacher = transcriber.model.clone();
        let student =
            student_as::<Transcriber>(&loaded, teacher_loaded.is_some()).map(|t| t.model.clone());
        run.check_fit(student.as_ref().unwrap_or(&teacher))?;
        let mut pseudo = HashMap::new();
        if needs_pseudo_labels(run.recipe.loss.targets, &train) {
            let cache = args
                .pseudo_labels
                .clone()
                .unwrap_or_else(|| run.work_dir.join("pseudo-labels.jsonl"));
            // The labels are the teacher's: a cache made by another model is refused.
            let labels_identity = RunIdentity {
                model: teacher_digest.clone(),
                train: String::new(),
                dev: String::new(),
            };
            check_identity(
                &cache.with_extension("identity.json"),
                &labels_identity,
                cache.is_file(),
                args.force,
                "pseudo-label cache",
            )?;
            let bar = progress_bar(0);
            bar.set_message("teacher pseudo-labels");
            pseudo = pseudo_labels(transcriber, &train, &cache, |done, total| {
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            })?;
            bar.finish_and_clear();
        }
        let examples = build_examples(&train, run.recipe.loss.targets, &tokenizer, &pseudo)?;
        let prompt = Prompt {
            tokens: tokenizer.prompt(teacher.config.is_multilingual()),
            eot: tokenizer.eot,
        };
        let dev_set = DevSet {
            utterances: dev,
            normalizer,
            tokenizer,
        };
        return run.train_and_write(
            Source::of(&loaded),
            teacher,
            student,
            examples,
            prompt,
            dev_set,
        );
    }
    if let Some(recognizer) = teacher_of.model.as_any().downcast_ref::<CtcRecognizer>() {
        let student = student_as::<CtcRecognizer>(&loaded, teacher_loaded.is_some()).cloned();
        if run.recipe.loss.ce > 0.0 {
            bail!(
                "{}: loss.ce = {} needs token targets; a {} model distils frame posteriors \
                 (set ce = 0 and use kl and hidden terms)",
                args.recipe.display(),
                run.recipe.loss.ce,
                recognizer.architecture()
            );
        }
        run.check_fit(student.as_ref().unwrap_or(recognizer))?;
        // Frame posteriors need no labels: examples carry no tokens.
        let examples = train.iter().map(TrainExample::audio_only).collect();
        let dev_set = DevSet {
            utterances: dev,
            normalizer,
            tokenizer: (),
        };
        return run.train_and_write(
            Source::of(&loaded),
            recognizer.clone(),
            student,
            examples,
            (),
            dev_set,
        );
    }
    bail!(
        "{}: compress does not train {} models",
        args.model.display(),
        loaded.model.architecture()
    )
}

/// `compress` of a language model (a GGUF Llama or a GPT-2 folder): distil it into its
/// compressed student on `train`'s texts, selecting on `dev`'s perplexity, and write a
/// `.whittle` file of architecture `llama` or `gpt2`.
fn train_language_model(
    run: Run<'_>,
    train: &[Utterance],
    dev: Vec<Utterance>,
    normalizer: whittle::text::normalize::EnglishNormalizer,
) -> Result<()> {
    if run.recipe.loss.targets == whittle::train::Targets::PseudoLabel {
        bail!(
            "{}: a language model trains on its texts, not pseudo-labels (set loss.targets = \"transcript\")",
            run.args.recipe.display()
        );
    }
    if whittle::models::gpt2::Gpt2::is_gpt2_folder(&run.args.model) {
        use whittle::models::gpt2::{Gpt2, ARCHITECTURE};
        let (teacher, tokenizer) = Gpt2::open(&run.args.model, &Device::Cpu)
            .with_context(|| format!("loading model {}", run.args.model.display()))?;
        let family_header = teacher.packed_header(&tokenizer)?;
        // The model writes every tensor it holds: the store only lends stored dtypes (none).
        let store = TensorStore::new("gpt2", Default::default(), Device::Cpu);
        let source = Source {
            store: &store,
            architecture: ARCHITECTURE,
            family_header: &family_header,
            format: "hugging-face".into(),
        };
        return train_text_model(run, source, teacher, tokenizer, train, dev, normalizer);
    }
    let file = GgufFile::read(&run.args.model)?;
    let tokenizer = LlamaTokenizer::from_gguf(&file)?;
    let (teacher, store) = Llama::from_gguf(&file, &Device::Cpu)?;
    drop(file);
    let family_header = Llama::packed_header(&teacher, &tokenizer)?;
    let source = Source {
        store: &store,
        architecture: whittle::models::llama::ARCHITECTURE,
        family_header: &family_header,
        format: "gguf".into(),
    };
    train_text_model(run, source, teacher, tokenizer, train, dev, normalizer)
}

/// The family-independent part of [`train_language_model`].
fn train_text_model<M>(
    run: Run<'_>,
    source: Source<'_>,
    teacher: M,
    tokenizer: LlamaTokenizer,
    train: &[Utterance],
    dev: Vec<Utterance>,
    normalizer: whittle::text::normalize::EnglishNormalizer,
) -> Result<()>
where
    M: TrainModel<BatchContext = (), Decoding = LlamaTokenizer> + Layers + Clone,
{
    run.check_fit(&teacher)?;
    let examples = train
        .iter()
        .map(|u| {
            let text = u.text.as_deref().unwrap_or_default();
            Ok(TrainExample {
                augmentation: None,
                id: u.id.clone(),
                audio: PathBuf::new(),
                tokens: tokenizer
                    .document(text)
                    .with_context(|| format!("training text `{}`", u.id))?,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    if let Some(e) = examples.iter().find(|e| e.tokens.len() < 2) {
        bail!(
            "{}: training text `{}` is empty",
            run.args.train.display(),
            e.id
        );
    }
    let dev_set = DevSet {
        utterances: dev,
        normalizer,
        tokenizer,
    };
    run.train_and_write(source, teacher, None, examples, (), dev_set)
}

/// What writing the packed file needs of the source model.
struct Source<'a> {
    store: &'a TensorStore,
    architecture: &'a str,
    family_header: &'a [(String, serde_json::Value)],
    format: serde_json::Value,
}

impl<'a> Source<'a> {
    fn of(loaded: &'a LoadedModel) -> Self {
        Self {
            store: &loaded.store,
            architecture: loaded.model.architecture(),
            family_header: &loaded.family_header,
            format: serde_json::to_value(loaded.location.format).unwrap_or_default(),
        }
    }
}

/// The settings of a `compress` run that do not depend on the model family.
struct Run<'a> {
    args: &'a CompressArgs,
    recipe: Recipe,
    recipe_text: String,
    bit_map_text: Option<String>,
    work_dir: PathBuf,
    t0: Instant,
}

impl Run<'_> {
    /// Refuse a recipe the model cannot take (a group that does not divide a layer, a bit map
    /// naming no layer) before any long pass, by wrapping a copy of the model.
    fn check_fit<M: Layers + Clone>(&self, model: &M) -> Result<()> {
        let bit_map = self
            .recipe
            .quant
            .bit_map
            .as_deref()
            .map(whittle::compress::bitmap::BitMap::from_file)
            .transpose()?;
        whittle::train::method::from_recipe(&self.recipe, bit_map)?
            .wrap(&mut model.clone())
            .with_context(|| {
                format!(
                    "{} does not fit {}",
                    self.args.recipe.display(),
                    self.args.model.display()
                )
            })?;
        Ok(())
    }

    /// Train `teacher`'s student on `examples`, keep the best dev checkpoint, and write the
    /// packed file with its recipe, bit map, provenance and dev result.
    /// Train (the student starts from `student`, else from the teacher) and write the file.
    fn train_and_write<M: TrainModel>(
        self,
        source: Source<'_>,
        teacher: M,
        student: Option<M>,
        examples: Vec<TrainExample>,
        context: M::BatchContext,
        dev_set: DevSet<M::Decoding>,
    ) -> Result<()> {
        let Run {
            args,
            recipe,
            recipe_text,
            bit_map_text,
            work_dir,
            t0,
        } = self;
        let dev = Some(dev_set);
        let mut trainer = match student {
            Some(student) => {
                Trainer::distilling(recipe.clone(), teacher, student, examples, context, dev)?
            }
            None => Trainer::new(recipe.clone(), teacher, examples, context, dev)?,
        };
        if args.resume {
            trainer.resume(&work_dir)?;
            eprintln!(
                "resuming {} at step {}",
                work_dir.display(),
                trainer.state.step
            );
        }
        let bar = ProgressBar::new(recipe.schedule.steps as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{elapsed_precise}] {bar:30} step {pos}/{len} ETA {eta} {msg}",
            )
            .expect("valid template"),
        );
        bar.set_position(trainer.state.step as u64);
        bar.reset_eta();
        let mut observer = BarObserver { bar };
        trainer.run(&work_dir, None, &mut observer)?;
        observer.bar.finish_and_clear();

        let (packed, extracted) = trainer.finish(&work_dir)?;
        let final_dev: Option<DevScore> = trainer.evaluate_packed(&packed, &mut observer)?;
        let method_name = trainer.method.name();
        let mut quantized = (0usize, 0usize);
        let layers: serde_json::Map<String, serde_json::Value> = extracted
            .layers
            .iter()
            .map(|(name, format)| {
                let mut v = serde_json::to_value(format).unwrap_or_default();
                if let Some(o) = v.as_object_mut() {
                    if *format != LayerFormat::Float {
                        o.insert("method".into(), method_name.into());
                    }
                }
                (name.clone(), v)
            })
            .collect();
        for layer in packed.layers() {
            if let whittle::nn::Weight::Packed(p) = &layer.linear.weight {
                quantized.0 += layer.linear.weight.storage_bytes();
                quantized.1 += p.rows() * p.cols();
            }
        }
        let float = crate::ptq_cmd::float_description(&packed, &extracted.layers);
        let average_bits = quantized.0 as f64 * 8.0 / quantized.1.max(1) as f64;
        let header = [
            (
                "bit_map",
                serde_json::json!({
                    "float": float,
                    "layers": layers,
                    "quantized_bytes": quantized.0,
                    "quantized_weights": quantized.1,
                    "average_bits": average_bits,
                }),
            ),
            (
                "recipe",
                serde_json::json!({
                    "kind": "training",
                    "method": method_name,
                    "recipe": recipe,
                    "toml": recipe_text,
                    "bit_map_toml": bit_map_text,
                    "method_report": extracted.report,
                }),
            ),
            (
                "provenance",
                serde_json::json!({
                    "source": args.model.display().to_string(),
                    "source_format": source.format,
                    "train": args.train.display().to_string(),
                    "train_utterances": trainer.examples.len(),
                    "dev": args.dev.display().to_string(),
                    "whittle_version": env!("CARGO_PKG_VERSION"),
                    "training_seconds": trainer.state.elapsed_seconds,
                    "steps": trainer.state.step,
                    "best": trainer.state.best,
                    "threads": rayon::current_num_threads(),
                }),
            ),
            (
                "results",
                serde_json::json!({ "dev": final_dev, "dev_dataset": args.dev.display().to_string() }),
            ),
        ];
        let map_path = args.output.with_extension("bitmap.toml");
        whittle::fsutil::write_atomic(
            &map_path,
            bit_map_toml(&extracted.layers, &args.output).as_bytes(),
        )?;
        let bytes = whittle::compress::export::write_packed(
            source.store,
            &packed,
            source.architecture,
            source.family_header,
            &header,
            &args.output,
        )?;
        let dev_text = final_dev
            .map(|score| {
                format!(
                    "{} (the selection set, not a test result: evaluate on a test set)",
                    score.describe()
                )
            })
            .unwrap_or_default();
        let weights = if quantized.1 > 0 {
            format!("quantized layers {average_bits:.3} bits per weight")
        } else {
            "float weights".to_string()
        };
        // Structured pruning reports what it kept (see `whittle inspect` for the shapes).
        let shapes = match (
            extracted
                .report
                .get("kept_parameters")
                .and_then(|v| v.as_u64()),
            extracted.report.get("sparsity").and_then(|v| v.as_f64()),
        ) {
            (Some(kept), Some(sparsity)) => format!(
                "; {kept} prunable parameters kept, {:.1} % removed",
                100.0 * sparsity
            ),
            _ => String::new(),
        };
        println!(
            "{}: {bytes} bytes ({:.1} MB; {weights}{shapes}), {} steps in {:.0} s of training ({:.0} s total), {dev_text}",
            args.output.display(),
            bytes as f64 / 1e6,
            trainer.state.step,
            trainer.state.elapsed_seconds,
            t0.elapsed().as_secs_f64(),
        );
        Ok(())
    }
}

/// The identity a run's work folder records.
const IDENTITY_FILE: &str = "identity.json";

/// Record `identity` at `path` for a new run; for a continued one (`existing`), compare with the
/// recorded one and refuse a difference unless `force`.
fn check_identity(
    path: &Path,
    identity: &RunIdentity,
    existing: bool,
    force: bool,
    what: &str,
) -> Result<()> {
    if existing && path.is_file() {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let recorded: RunIdentity = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a run identity", path.display()))?;
        let differences = identity.differences(&recorded);
        if !differences.is_empty() {
            let list = differences.join(", ");
            if !force {
                bail!(
                    "the {what} recorded in {} was made with another {list}; use a new work folder \
                     (or --pseudo-labels file), or pass --force to continue anyway",
                    path.display()
                );
            }
            eprintln!(
                "warning: --force: continuing the {what} of {} with another {list}",
                path.display()
            );
        } else {
            return Ok(());
        }
    } else if existing {
        eprintln!(
            "warning: the {what} has no {}; recording this run's identity",
            path.display()
        );
    }
    let json = serde_json::to_string_pretty(identity)?;
    whittle::fsutil::write_atomic(path, json.as_bytes())?;
    Ok(())
}

/// The formats of `layers` as a bit map file (`whittle quantize --bit-map`, `compress --bit-map`).
fn bit_map_toml(layers: &[(String, LayerFormat)], output: &Path) -> String {
    format!(
        "# The formats of {}, written by whittle compress; usable as --bit-map.\n[layers]\n{}",
        output.display(),
        whittle::compress::bitmap::layers_toml(layers.iter().map(|(n, f)| (n.as_str(), *f)))
    )
}

pub fn bench(args: BenchArgs) -> Result<()> {
    match args.which {
        BenchCommand::TrainStep(a) => train_step(a),
        BenchCommand::Forward(a) => forward(a),
        BenchCommand::Window(a) => crate::bench_window::window(a),
        BenchCommand::Gemm(a) => gemm_bench(a),
        BenchCommand::Machine { json } => {
            let machine = whittle::machine::Machine::detect();
            if json {
                println!("{}", serde_json::to_string(&machine)?);
            } else {
                println!("{}", machine.summary());
            }
            Ok(())
        }
    }
}

/// A seeded clip: a 220 Hz tone with a slow vibrato plus uniform noise, as
/// `scripts/reference/ctc_forward.py` builds it.
pub(crate) fn synthetic_clip(seconds: f64) -> Vec<f32> {
    let n = (seconds * 16_000.0).round() as usize;
    let mut state = 0x2545_f491_4f6c_dd1du64;
    (0..n)
        .map(|i| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            let noise = (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5;
            let t = i as f32 / 16_000.0;
            0.3 * (2.0 * std::f32::consts::PI * 220.0 * t + (3.0 * t).sin()).sin() + 0.05 * noise
        })
        .collect()
}

fn gemm_bench(args: GemmArgs) -> Result<()> {
    use whittle::nn::gemm::{linear_product, GemmBackend};
    let threads = rayon::current_num_threads();
    let machine = whittle::machine::Machine::detect();
    if !args.json {
        println!("machine: {}", machine.summary());
        println!(
            "{threads} threads, median of {} runs, GFLOP/s (ratio to the gemm crate)",
            args.runs
        );
        println!();
        println!("| m | k | n | gemm crate | openblas | candle matmul | whittle f32 kernel |");
        println!("|---|---|---|---|---|---|---|");
    }
    let median_ms = |f: &mut dyn FnMut()| {
        f();
        let mut times: Vec<f64> = (0..args.runs.max(1))
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .collect();
        times.sort_by(f64::total_cmp);
        times[times.len() / 2]
    };
    // Each operand at most 2^28 values (1 GiB of f32): a typo cannot allocate without bound.
    const MAX_VALUES: usize = 1 << 28;
    let shapes: Vec<(usize, usize)> = args
        .shapes
        .iter()
        .map(|shape| {
            shape
                .split_once('x')
                .and_then(|(k, n)| Some((k.parse::<usize>().ok()?, n.parse::<usize>().ok()?)))
                .filter(|&(k, n)| k > 0 && n > 0)
                .ok_or_else(|| anyhow::anyhow!("--shapes: `{shape}` is not KxN with K, N > 0"))
        })
        .collect::<Result<_>>()?;
    for &m in &args.rows {
        for &(k, n) in &shapes {
            let fits = |a: usize, b: usize| a.checked_mul(b).is_some_and(|v| v <= MAX_VALUES);
            if m == 0 || !(fits(m, k) && fits(n, k) && fits(m, n)) {
                bail!(
                    "bench gemm: m = {m}, k = {k}, n = {n}: each of m, k, n must be positive and \
                     each operand at most {MAX_VALUES} values"
                );
            }
            let x: Vec<f32> = (0..m * k)
                .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
                .collect();
            let w: Vec<f32> = (0..n * k)
                .map(|i| ((i % 89) as f32 - 44.0) / 89.0)
                .collect();
            let mut y = vec![0f32; m * n];
            let gflop = 2.0 * (m * k * n) as f64 / 1e9;
            let mut results: Vec<(String, Option<f64>)> = Vec::new();
            for backend in [GemmBackend::GemmCrate, GemmBackend::OpenBlas] {
                let ms = GemmBackend::available().contains(&backend).then(|| {
                    median_ms(&mut || linear_product(backend, &x, m, &w, n, k, &mut y, threads))
                });
                results.push((backend.name().to_string(), ms));
            }
            let (xt, wt) = (
                whittle::candle::Tensor::from_slice(&x, (m, k), &Device::Cpu)?,
                whittle::candle::Tensor::from_slice(&w, (n, k), &Device::Cpu)?,
            );
            let wt_t = wt.t()?;
            let candle = median_ms(&mut || {
                let _ = xt.matmul(&wt_t).expect("shapes agree");
            });
            results.push(("candle".into(), Some(candle)));
            let kernel = median_ms(&mut || {
                whittle::kernels::kernels::matmul_f32(&x, m, &w, n, k, None, &mut y)
                    .expect("shapes agree");
            });
            results.push(("whittle_f32_kernel".into(), Some(kernel)));
            let base = results[0].1.expect("the gemm crate is always there");
            if args.json {
                let row: serde_json::Map<String, serde_json::Value> = results
                    .iter()
                    .map(|(name, ms)| {
                        (
                            name.clone(),
                            serde_json::json!(ms.map(|ms| serde_json::json!({
                                "ms": ms, "gflops": gflop / (ms / 1e3), "speed_vs_gemm_crate": base / ms
                            }))),
                        )
                    })
                    .collect();
                println!(
                    "{}",
                    serde_json::json!({"m": m, "k": k, "n": n, "threads": threads,
                        "backends": row, "machine": machine})
                );
            } else {
                let cells: Vec<String> = results
                    .iter()
                    .map(|(_, ms)| match ms {
                        Some(ms) => format!("{:.0} ({:.2}x)", gflop / (ms / 1e3), base / ms),
                        None => "not built".into(),
                    })
                    .collect();
                println!("| {m} | {k} | {n} | {} |", cells.join(" | "));
            }
        }
    }
    Ok(())
}

fn forward(args: ForwardArgs) -> Result<()> {
    if args.runs == 0 || args.seconds.is_nan() || args.seconds <= 0.0 {
        bail!("--runs must be at least 1 and --seconds positive");
    }
    let t0 = Instant::now();
    let loaded = registry::open(&args.model, &Device::Cpu, DType::F32)
        .with_context(|| format!("loading model {}", args.model.display()))?;
    let load_seconds = t0.elapsed().as_secs_f64();
    let clip = synthetic_clip(args.seconds);
    let mut times = Vec::with_capacity(args.runs);
    let mut text = String::new();
    for run in 0..args.warmup + args.runs {
        let start = Instant::now();
        text = loaded.model.transcribe_batch(&[&clip])?.join(" ");
        if run >= args.warmup {
            times.push(start.elapsed().as_secs_f64() * 1e3);
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    let report = serde_json::json!({
        "model": args.model.display().to_string(),
        "architecture": loaded.model.architecture(),
        "seconds": args.seconds,
        "median_ms": median,
        "all_ms": times,
        "rtf": median / 1e3 / args.seconds,
        "load_seconds": load_seconds,
        "threads": rayon::current_num_threads(),
        "machine": whittle::machine::Machine::detect(),
        "text": text,
    });
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{}: {} s clip in {median:.1} ms (median of {}; RTF {:.4}), {} threads",
            args.model.display(),
            args.seconds,
            args.runs,
            median / 1e3 / args.seconds,
            rayon::current_num_threads()
        );
    }
    Ok(())
}

fn train_step(args: TrainStepArgs) -> Result<()> {
    if args.steps == 0 {
        bail!("--steps must be at least 1");
    }
    let (checkpoint, teacher) = open_teacher(&args.model)?;
    let recipe = Recipe::parse(
        &format!(
            "name = \"bench\"\n[quant]\nbits = {}\n{}\n[loss]\nkl = 1.0\ntemperature = {}\ntargets = \"transcript\"\n\
             [optim]\nlr_weights = {}\nlr_scales = {}\nweight_decay = {}\n[schedule]\nsteps = 1\nwarmup_steps = 0\n\
             [train]\nbatch_size = {}\ncheckpoint_every = 1\n",
            args.bits,
            args.group.map(|g| format!("group = {g}")).unwrap_or_default(),
            args.temperature,
            args.lr,
            args.lr_scales,
            args.weight_decay,
            args.batch
        ),
        "bench options",
    )?;
    let frames = (args.seconds * 100.0).round() as usize;
    let batch = match &args.batch_file {
        Some(path) => {
            whittle::train::batch::batch_from_file(path, &checkpoint.config, &Device::Cpu)?
        }
        None => synthetic_batch(
            args.batch,
            frames,
            args.tokens,
            &checkpoint.config,
            &prompt_of(&checkpoint),
            &Device::Cpu,
        )?,
    };
    if let Some(path) = &args.dump_batch {
        let tensors = [
            ("mel", &batch.features),
            ("inputs", &batch.inputs),
            ("positions", &batch.positions),
            ("targets", &batch.targets),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
        whittle::checkpoint::hf::save_safetensors(path, &tensors)?;
    }
    let time = |method: &mut dyn CompressionMethod| {
        time_steps(&teacher, method, &batch, &recipe, args.warmup, args.steps)
    };
    let times = time(&mut UniformLsq::uniform(
        recipe.quant.spec(),
        recipe.quant.init,
    ))?;
    let mixed = match &args.mixed_precision {
        Some(candidates) => {
            let mp = MixedPrecisionRecipe {
                candidates: candidates.clone(),
                objective: Default::default(),
                budget_bits: 3.5,
                beta: 0.5,
                embedding: !args.mp_no_embedding,
                tau_start: 1.0,
                tau_end: 0.1,
                hard: false,
                gumbel: true,
                lr_arch: 0.01,
                lr_multiplier: 0.5,
                penalty: 1.0,
                settle_steps: 0,
            };
            Some(time(&mut MixedPrecision::new(
                mp,
                args.group,
                recipe.quant.init,
                0,
                args.warmup + args.steps,
            ))?)
        }
        None => None,
    };
    let mapped = match &args.bit_map {
        Some(path) => {
            let map = whittle::compress::bitmap::BitMap::from_file(path)?;
            Some(time(&mut UniformLsq::with_bit_map(map, recipe.quant.init))?)
        }
        None => None,
    };
    let (median, losses) = (times.median, &times.losses);
    let summary = serde_json::json!({
        "ms_per_step": median,
        "ms_per_step_all": times.all,
        "phase_ms": times.phases,
        "loss_first": losses[0],
        "loss_last": losses[losses.len() - 1],
        "batch": args.batch,
        "frames": batch.features.dim(2)?,
        "target_tokens": batch.target_count(),
        "bits": args.bits,
        "group": args.group,
        "temperature": args.temperature,
        "lr_weights": recipe.optim.lr_weights,
        "lr_scales": recipe.optim.lr_scales,
        "weight_decay": recipe.optim.weight_decay,
        "trainable_params": times.params,
        "mixed_precision": mixed.as_ref().map(|m| m.relative_to(median, serde_json::json!({
            "candidates": args.mixed_precision,
            "embedding": !args.mp_no_embedding,
        }))),
        "bit_map": mapped.as_ref().map(|m| m.relative_to(median, serde_json::json!({
            "file": args.bit_map.as_ref().map(|p| p.display().to_string()),
        }))),
        "threads": rayon::current_num_threads(),
        "machine": whittle::machine::Machine::detect(),
        "model": args.model.display().to_string(),
    });
    if args.json {
        println!("{summary}");
    } else {
        eprintln!("phases (ms): {}", summary["phase_ms"]);
        println!(
            "train step (B={} frames={} targets={} W{} {}): {:.1} ms/step median of {}, loss {:.5} -> {:.5}",
            args.batch,
            batch.features.dim(2)?,
            batch.target_count(),
            args.bits,
            args.group.map_or("per-channel".to_string(), |g| format!("g{g}")),
            median,
            times.all.len(),
            losses[0],
            losses[losses.len() - 1]
        );
        if let Some(m) = &mixed {
            eprintln!(
                "mixed-precision phases (ms): {}",
                serde_json::json!(m.phases)
            );
            println!(
                "mixed-precision supernet step ({:?}, embedding {}): {:.1} ms/step median of {}, {:.2}x the uniform step",
                args.mixed_precision.as_deref().unwrap_or_default(),
                if args.mp_no_embedding { "float" } else { "searched" },
                m.median,
                m.all.len(),
                m.median / median
            );
        }
        if let Some(m) = &mapped {
            println!(
                "bit-map step ({}): {:.1} ms/step median of {}, {:.2}x the uniform step",
                args.bit_map.as_deref().unwrap_or(Path::new("")).display(),
                m.median,
                m.all.len(),
                m.median / median
            );
        }
    }
    Ok(())
}
