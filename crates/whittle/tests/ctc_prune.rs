//! Structured pruning of the CTC families (tiny random fixtures of every variant): the physically
//! smaller model computes what the full-size model computes with the same units masked and
//! scaled; it is written to a `.whittle` file with its per-layer shapes, loads back, quantizes and
//! decodes the same; L0 gates (`method = "prune-l0"`) on a Conformer, heads, feed-forward units
//! and convolution channels, meet their sparsity target and extract the gated model's function.

mod common_ctc;

use std::collections::BTreeMap;

use common_ctc::{clips, fixture, open, recognizer, VARIANTS};

use candle_core::Tensor;
use whittle::compress::bitmap::{BitMap, LayerFormat};
use whittle::compress::prune::{KeptUnit, ModuleKeep};
use whittle::compress::ptq::{quantize_linears, PtqMethod};
use whittle::models::wav2vec2::CtcRecognizer;
use whittle::models::{Layers, UnitKind};
use whittle::nn::{max_abs_diff, Weight};
use whittle::text::normalize::EnglishNormalizer;
use whittle::train::trainer::{DevSet, Trainer};
use whittle::train::Recipe;

/// A tone of `samples` samples with frequency step `f`.
fn tone(samples: usize, f: f32) -> Vec<f32> {
    (0..samples)
        .map(|t| (t as f32 * f).sin() * 0.2 + (t as f32 * f * 2.7).cos() * 0.05)
        .collect()
}

/// Logits of two clips, concatenated over frames.
fn logits(model: &CtcRecognizer) -> Tensor {
    let a = model.logits(&tone(4000, 0.031)).unwrap();
    let b = model.logits(&tone(6400, 0.047)).unwrap();
    Tensor::cat(&[&a, &b], 1).unwrap()
}

/// Every module keeps every other unit (alternating which), with unit scales 0.5 + 0.1 u and a
/// branch scale of 0.9; the second module of the model is removed whole.
fn keep_plan(model: &dyn Layers) -> BTreeMap<String, ModuleKeep> {
    model
        .prunable_modules()
        .iter()
        .enumerate()
        .map(|(j, m)| {
            let keep = if j == 1 {
                ModuleKeep::hard([])
            } else {
                ModuleKeep {
                    units: (0..m.units)
                        .filter(|u| u % 2 == j % 2)
                        .map(|index| KeptUnit {
                            index,
                            scale: 0.5 + 0.1 * index as f32,
                        })
                        .collect(),
                    branch_scale: 0.9,
                }
            };
            (m.name.clone(), keep)
        })
        .collect()
}

/// The full-size model with `keep` applied as masks and scales on each module's output matrix
/// (removed units' columns zeroed, kept ones scaled, the bias scaled by the branch).
fn masked(model: &mut dyn Layers, keep: &BTreeMap<String, ModuleKeep>) {
    let modules = model.prunable_modules();
    for layer in model.layers_mut() {
        let Some(m) = modules.iter().find(|m| m.output == layer.name) else {
            continue;
        };
        let k = &keep[&m.name];
        let branch = if k.units.is_empty() {
            0.0
        } else {
            k.branch_scale
        };
        let columns: Vec<f32> = (0..m.units)
            .flat_map(|u| {
                let scale = k
                    .units
                    .iter()
                    .find(|kept| kept.index == u)
                    .map_or(0.0, |kept| kept.scale * branch);
                std::iter::repeat_n(scale, m.unit_width)
            })
            .collect();
        let linear = layer.linear;
        let Weight::Float(w) = &linear.weight else {
            panic!("{}: float fixture", m.output)
        };
        let columns = Tensor::new(columns.as_slice(), w.device()).unwrap();
        linear.weight = Weight::Float(w.broadcast_mul(&columns.unsqueeze(0).unwrap()).unwrap());
        if let Some(b) = &linear.bias {
            linear.bias = Some((b * branch as f64).unwrap());
        }
    }
}

#[test]
fn pruned_ctc_models_compute_the_masked_function_and_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    for variant in VARIANTS {
        let mut loaded = open(&fixture(variant));
        let modules = loaded.model.prunable_modules();
        let conformer = variant.starts_with("conformer");
        assert_eq!(
            modules.len(),
            2 * if conformer { 4 } else { 2 },
            "{variant}: {modules:?}"
        );
        assert_eq!(
            modules.iter().any(|m| m.kind == UnitKind::ConvChannels),
            conformer
        );
        let keep = keep_plan(&*loaded.model);
        let mut reference = recognizer(&loaded).clone();
        masked(&mut reference, &keep);
        let expected = logits(&reference);
        assert!(
            max_abs_diff(&expected, &logits(recognizer(&loaded))).unwrap() > 1e-3,
            "{variant}: the masks change the function"
        );

        let before = loaded.model.parameter_count();
        let prunable_before = recognizer(&loaded).model.prunable_parameters();
        loaded.model.prune_modules(&keep).unwrap();
        let pruned = recognizer(&loaded);
        let diff = max_abs_diff(&expected, &logits(pruned)).unwrap();
        assert!(
            diff < 1e-4,
            "{variant}: pruned vs masked logits differ by {diff}"
        );
        // What the keep plan leaves, counted from the modules' descriptions.
        let kept: usize = modules
            .iter()
            .map(|m| match keep[&m.name].units.len() {
                0 => 0,
                n => m.module_parameters + n * m.unit_parameters,
            })
            .sum();
        assert_eq!(pruned.model.prunable_parameters(), kept, "{variant}");
        assert_eq!(
            before - loaded.model.parameter_count(),
            prunable_before - kept,
            "{variant}: the parameter count follows"
        );
        let shapes = pruned
            .model
            .config()
            .whittle_layer_shapes
            .clone()
            .expect("pruned shapes are recorded");
        assert!(
            !pruned
                .model
                .layers()
                .iter()
                .any(|l| l.name == modules[1].output),
            "{variant}: the removed module's matrices are gone"
        );

        // Written with its shapes, it loads back into the same function.
        let file = dir.path().join(format!("{variant}-pruned.whittle"));
        whittle::compress::export::write_packed(
            &loaded.store,
            &*loaded.model,
            loaded.model.architecture(),
            &loaded.family_header,
            &[],
            &file,
        )
        .unwrap();
        let mut reloaded = open(&file);
        assert_eq!(
            recognizer(&reloaded).model.config().whittle_layer_shapes,
            Some(shapes),
            "{variant}"
        );
        assert!(
            reloaded.report.unused.is_empty(),
            "{variant}: unused {:?}",
            reloaded.report.unused
        );
        let diff = max_abs_diff(&expected, &logits(recognizer(&reloaded))).unwrap();
        assert!(diff < 1e-4, "{variant}: reloaded logits differ by {diff}");
        assert_eq!(
            reloaded.model.parameter_count(),
            loaded.model.parameter_count(),
            "{variant}"
        );

        // Pruned, then quantized: packed layers of the smaller shapes load back and decode alike.
        let bit_map = BitMap::uniform(LayerFormat::uniform(8, None));
        quantize_linears(&mut *reloaded.model, &bit_map, PtqMethod::Rtn, None).unwrap();
        let in_memory = logits(recognizer(&reloaded));
        let packed_file = dir.path().join(format!("{variant}-pruned-w8.whittle"));
        whittle::compress::export::write_packed(
            &reloaded.store,
            &*reloaded.model,
            reloaded.model.architecture(),
            &reloaded.family_header,
            &[],
            &packed_file,
        )
        .unwrap();
        let packed = open(&packed_file);
        assert!(packed
            .model
            .layers()
            .iter()
            .all(|l| matches!(l.linear.weight, Weight::Packed(_))));
        let diff = max_abs_diff(&in_memory, &logits(recognizer(&packed))).unwrap();
        assert!(diff < 1e-5, "{variant}: packed logits differ by {diff}");
    }
}

#[test]
fn keep_lists_are_checked_against_the_model() {
    let mut loaded = open(&fixture("conformer-relpos"));
    let name = loaded.model.prunable_modules()[0].name.clone();
    let cases = [
        (
            "wav2vec2_conformer.encoder.layers.9.ffn1".to_string(),
            ModuleKeep::hard([0]),
            "not a prunable module",
        ),
        (
            name.clone(),
            ModuleKeep::hard([1, 0]),
            "out of range or out of order",
        ),
        (
            name.clone(),
            ModuleKeep::hard([10_000]),
            "out of range or out of order",
        ),
    ];
    for (module, keep, expected) in cases {
        let plan = BTreeMap::from([(module.clone(), keep)]);
        let err = loaded.model.prune_modules(&plan).unwrap_err().to_string();
        assert!(
            err.contains(expected) && err.contains(&module),
            "{module}: `{err}` lacks `{expected}`"
        );
    }
}

/// L0 gates on every head, feed-forward unit and convolution channel of the relative-position
/// Conformer: the expected sparsity meets a 50 % target within 2 points, and the extracted model
/// (all four module kinds smaller) computes the gated student's function.
#[test]
fn l0_gates_prune_a_conformer_to_its_target() {
    let dir = tempfile::tempdir().unwrap();
    let (examples, dev) = clips(dir.path(), 4);
    let steps = 120;
    let recipe = Recipe::parse(
        &format!(
            r#"name = "l0-ctc"
method = "prune-l0"
[quant]
[prune]
target_sparsity = 0.5
warmup = 0.5
init_log_alpha = 3.0
lr_gates = 0.1
[loss]
kl = 1.0
temperature = 2.0
ce = 0.0
targets = "transcript"
[[loss.hidden]]
at = "encoder.1"
kind = "cosine"
weight = 0.1
[optim]
lr_weights = 1e-3
lr_scales = 1e-3
weight_decay = 0.0
clip_norm = 5.0
[schedule]
steps = {steps}
warmup_steps = 1
min_lr_ratio = 0.1
[train]
batch_size = 2
grad_accum = 1
seed = 5
checkpoint_every = 1000
eval_every = 0
"#
        ),
        "test",
    )
    .unwrap();
    let teacher = recognizer(&open(&fixture("conformer-relpos"))).clone();
    let mut t = Trainer::new(
        recipe,
        teacher,
        examples,
        (),
        Some(DevSet {
            utterances: dev,
            normalizer: EnglishNormalizer::without_spellings(),
            tokenizer: (),
        }),
    )
    .unwrap();
    let mut report = None;
    while t.state.step < steps {
        report = Some(t.train_step().unwrap());
    }
    let metrics = report.unwrap().method;
    let expected = metrics["expected_sparsity"];
    assert!(
        (expected - 0.5).abs() < 0.02,
        "expected sparsity {expected} misses the 50 % target: {metrics:?}"
    );
    let gated = logits(&t.student);
    let (shipped, extracted) = t.extract().unwrap();
    let sparsity = extracted.report["sparsity"].as_f64().unwrap();
    assert!(
        (0.4..0.6).contains(&sparsity),
        "extracted sparsity {sparsity}"
    );
    let before = t.teacher.model.prunable_parameters();
    let after = shipped.model.prunable_parameters();
    assert!(
        ((1.0 - after as f64 / before as f64) - sparsity).abs() < 1e-9,
        "the model holds {after} of {before} prunable parameters, the report says {sparsity}"
    );
    let shapes = shipped.model.layer_shapes();
    let unpruned = t.teacher.model.layer_shapes();
    for (field, smaller) in [
        (
            "attention heads",
            shapes
                .iter()
                .zip(&unpruned)
                .any(|(s, u)| s.attention_heads < u.attention_heads),
        ),
        (
            "ffn1",
            shapes
                .iter()
                .zip(&unpruned)
                .any(|(s, u)| s.ffn_dim < u.ffn_dim),
        ),
        (
            "ffn2",
            shapes
                .iter()
                .zip(&unpruned)
                .any(|(s, u)| s.ffn2_dim < u.ffn2_dim),
        ),
        (
            "conv channels",
            shapes
                .iter()
                .zip(&unpruned)
                .any(|(s, u)| s.conv_channels < u.conv_channels),
        ),
    ] {
        assert!(smaller, "no layer lost {field}: {shapes:?}");
    }
    let diff = max_abs_diff(&gated, &logits(&shipped)).unwrap();
    assert!(diff < 1e-4, "gated vs extracted logits differ by {diff}");
    let teacher_diff = max_abs_diff(&logits(&t.teacher), &logits(&shipped)).unwrap();
    assert!(
        teacher_diff > 1e-3,
        "the extracted model is not the teacher"
    );
}
