//! The training engine on a tiny random Whisper: gradients reach every parameter through the
//! full training forward, the loss goes down, and a killed run resumes bit for bit.

mod common_train;

use candle_core::{DType, Device, Tensor};
use common_train::{examples, prompt, teacher};
use whittle::train::batch::{synthetic_batch, TrainExample};
use whittle::train::trainer::{make_student, micro_batch_grads, Silent, Trainer};
use whittle::train::Recipe;

const RECIPE: &str = r#"
name = "test"
[quant]
bits = 3
group = 32
[loss]
kl = 1.0
temperature = 2.0
ce = 0.5
targets = "transcript"
[[loss.hidden]]
at = "encoder"
kind = "cosine"
weight = 0.5
[[loss.hidden]]
at = "encoder.0"
kind = "l1"
weight = 0.5
[[loss.hidden]]
at = "decoder"
kind = "l1"
weight = 0.5
[optim]
lr_weights = 3e-3
lr_scales = 1e-3
weight_decay = 0.01
clip_norm = 5.0
[schedule]
steps = 7
warmup_steps = 2
min_lr_ratio = 0.1
[train]
batch_size = 2
grad_accum = 2
seed = 7
checkpoint_every = 2
"#;

fn recipe(text: &str) -> Recipe {
    Recipe::parse(text, "test recipe").unwrap()
}

/// Every trainable variable (latent weights and steps of all linear layers) receives a
/// non-zero gradient through the full training forward with every loss term active.
#[test]
fn every_trainable_parameter_gets_a_nonzero_gradient() {
    let r = recipe(RECIPE);
    let teacher = teacher();
    let (student, params) = make_student(&teacher, r.quant.spec(), r.quant.init).unwrap();
    // 2 layers x (4 + 2) encoder + 2 x (8 + 2) decoder linears, each with weight and steps.
    assert_eq!(params.len(), 2 * (2 * 6 + 2 * 10));
    let batch = synthetic_batch(2, 60, 5, &teacher.config, &prompt(), &Device::Cpu).unwrap();
    let taps: Vec<_> = r.loss.hidden.iter().map(|h| h.tap().unwrap()).collect();
    let vars: Vec<_> = params.iter().map(|(_, v, _)| v).collect();
    let (parts, grads, _) =
        micro_batch_grads(&teacher, &student, &batch, &r, &taps, &vars, 1.0).unwrap();
    assert!(parts.kl > 0.0 && parts.ce > 0.0, "{parts:?}");
    for ((name, _, _), g) in params.iter().zip(&grads) {
        let g = g
            .as_ref()
            .unwrap_or_else(|| panic!("{name} received no gradient"));
        let norm: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(
            norm > 0.0 && norm.is_finite(),
            "{name}: gradient norm {norm}"
        );
    }
}

fn params_of(trainer: &Trainer) -> Vec<(String, Vec<f32>)> {
    let flat = |t: &Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    trainer
        .optimizer
        .params
        .iter()
        .flat_map(|p| {
            [
                (p.name.clone(), flat(p.var.as_tensor())),
                (format!("{}.m", p.name), flat(&p.m)),
                (format!("{}.v", p.name), flat(&p.v)),
            ]
        })
        .collect()
}

/// The distillation loss on a fixed batch falls over a few steps.
#[test]
fn loss_decreases_on_a_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let text = RECIPE
        .replace("steps = 7", "steps = 20")
        .replace("lr_weights = 3e-3", "lr_weights = 1e-2")
        // Distillation only: the random teacher cannot fit random transcripts in a few steps.
        .replace("ce = 0.5", "ce = 0.0")
        .replace("batch_size = 2", "batch_size = 4")
        .replace("grad_accum = 2", "grad_accum = 1");
    let r = recipe(&text);
    let ex = examples(dir.path(), 4);
    let mut trainer = Trainer::new(r.clone(), teacher(), ex.clone(), prompt(), None).unwrap();
    let refs: Vec<&TrainExample> = ex.iter().collect();
    let batch = whittle::train::batch::make_batch(
        &refs,
        true,
        &trainer.teacher.config,
        &trainer.prompt,
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let taps: Vec<_> = r.loss.hidden.iter().map(|h| h.tap().unwrap()).collect();
    let loss_now = |t: &Trainer| {
        let vars: Vec<_> = t.optimizer.params.iter().map(|p| &p.var).collect();
        let (parts, _, _) =
            micro_batch_grads(&t.teacher, &t.student, &batch, &r, &taps, &vars, 1.0).unwrap();
        parts.total.to_scalar::<f32>().unwrap()
    };
    let before = loss_now(&trainer);
    trainer
        .run(&dir.path().join("work"), None, &mut Silent)
        .unwrap();
    let after = loss_now(&trainer);
    assert!(after < 0.8 * before, "loss {before} -> {after}");
}

/// A run killed after step 5 (last checkpoint at step 4) and resumed ends with exactly the
/// parameters and Adam moments of an uninterrupted run, across epoch boundaries.
#[test]
fn resumed_run_equals_uninterrupted_run() {
    let dir = tempfile::tempdir().unwrap();
    let ex = examples(dir.path(), 5);
    let r = recipe(RECIPE);
    let straight_dir = dir.path().join("straight");
    let mut straight = Trainer::new(r.clone(), teacher(), ex.clone(), prompt(), None).unwrap();
    straight.run(&straight_dir, None, &mut Silent).unwrap();

    let killed_dir = dir.path().join("killed");
    let mut killed = Trainer::new(r.clone(), teacher(), ex.clone(), prompt(), None).unwrap();
    killed.run(&killed_dir, Some(5), &mut Silent).unwrap();
    assert_eq!(killed.state.step, 5);
    drop(killed);

    let mut resumed = Trainer::new(r, teacher(), ex, prompt(), None).unwrap();
    assert!(resumed.resume(&killed_dir).unwrap());
    assert_eq!(resumed.state.step, 4, "resumes from the last checkpoint");
    resumed.run(&killed_dir, None, &mut Silent).unwrap();
    assert_eq!(resumed.state.step, 7);
    assert_eq!(resumed.state.epoch, straight.state.epoch);
    for ((name, a), (_, b)) in params_of(&straight).iter().zip(&params_of(&resumed)) {
        assert!(a == b, "{name} differs after resume");
    }
    // The metrics log holds each step once.
    let log = std::fs::read_to_string(killed_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(log.lines().count(), 7, "{log}");
}

/// A different recipe cannot resume another run's checkpoint.
#[test]
fn resume_refuses_a_changed_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let ex = examples(dir.path(), 3);
    let work = dir.path().join("work");
    let mut t = Trainer::new(recipe(RECIPE), teacher(), ex.clone(), prompt(), None).unwrap();
    t.run(&work, Some(2), &mut Silent).unwrap();
    let changed = recipe(&RECIPE.replace("lr_scales = 1e-3", "lr_scales = 2e-3"));
    let mut other = Trainer::new(changed, teacher(), ex, prompt(), None).unwrap();
    let err = other.resume(&work).unwrap_err().to_string();
    assert!(err.contains("different recipe"), "{err}");
}
