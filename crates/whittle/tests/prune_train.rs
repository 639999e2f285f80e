//! L0 structured pruning (`method = "prune-l0"`) on a tiny random Whisper with 4 heads: the
//! Lagrangian meets a 50 % expected-sparsity target; the extracted, physically smaller model
//! computes what the gated student computes with its deterministic gates; a killed run resumes
//! exactly; recipe errors name their field; the layerwise distillation's learned projections
//! map the student's states, train and resume exactly.

mod common_train;

use candle_core::{DType, Device};
use common_train::common_tiny::*;
use common_train::{
    assert_recipe_errors, encoder_and_logits, examples, prompt, straight_and_resumed,
    trained_state, TRAIN,
};
use whittle::checkpoint::TensorStore;
use whittle::compress::prune::prunable_parameters;
use whittle::models::whisper::{Whisper, WhisperConfig};
use whittle::models::Layers;
use whittle::nn::{max_abs_diff, Weight};
use whittle::train::trainer::Trainer;
use whittle::train::Recipe;

fn teacher() -> Whisper {
    let config = WhisperConfig {
        encoder_attention_heads: 4,
        decoder_attention_heads: 4,
        ..config()
    };
    let store = TensorStore::new("tiny", hf_tensors(3), Device::Cpu);
    Whisper::load(&store, &config, DType::F32).unwrap()
}

fn prune_recipe(extra: &str, steps: usize) -> Recipe {
    Recipe::parse(
        &format!(
            "name = \"l0\"\nmethod = \"prune-l0\"\n[quant]\n[prune]\ntarget_sparsity = 0.5\n{extra}\n{}",
            TRAIN.replace("steps = 7\n", &format!("steps = {steps}\n"))
        ),
        "test",
    )
    .unwrap()
}

fn trainer(extra: &str, steps: usize, dir: &std::path::Path) -> Trainer {
    Trainer::new(
        prune_recipe(extra, steps),
        teacher(),
        examples(dir, 4),
        prompt(),
        None,
    )
    .unwrap()
}

/// Units only (the shipped default), and with module and layer gates: the expected sparsity
/// meets the target within 2 points; the extracted model computes the gated student's function.
#[test]
fn the_lagrangian_meets_the_target_and_extraction_computes_the_gated_model() {
    for (gates, extracted_range) in [
        ("", 0.45..0.55),
        // Only the decoder's modules are gated: the encoder keeps every unit.
        ("under = \"model.decoder.\"", 0.4..0.65),
        ("gate_modules = true\ngate_layers = true", 0.1..0.6),
        // Widths in whole multiples of 8 features: FFN units in blocks of 8, 4-wide heads in
        // pairs.
        ("align = 8", 0.3..0.7),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let steps = 150;
        let mut t = trainer(
            &format!("warmup = 0.5\ninit_log_alpha = 3.0\nlr_gates = 0.1\n{gates}"),
            steps,
            dir.path(),
        );
        let mut report = None;
        while t.state.step < steps {
            report = Some(t.train_step().unwrap());
        }
        let metrics = report.unwrap().method;
        let expected = metrics["expected_sparsity"];
        assert!(
            (expected - 0.5).abs() < 0.02,
            "{gates}: expected sparsity {expected} misses the 50 % target: {metrics:?}"
        );
        assert_eq!(metrics["target"], 0.5);

        let (shipped, extracted) = t.extract().unwrap();
        let sparsity = extracted.report["sparsity"].as_f64().unwrap();
        assert!(
            (sparsity - metrics["extracted_sparsity"]).abs() < 1e-12
                && extracted_range.contains(&sparsity),
            "{gates}: extracted sparsity {sparsity}, metrics {metrics:?}"
        );
        let before = prunable_parameters(&t.teacher);
        let after = prunable_parameters(&shipped);
        assert!(
            ((1.0 - after as f64 / before as f64) - sparsity).abs() < 1e-9,
            "the model holds {after} of {before} prunable parameters, the report says {sparsity}"
        );
        assert!(shipped.config.layer_shapes.is_some());
        if gates.contains("align") {
            let shapes = shipped.config.layer_shapes.as_ref().unwrap();
            for b in shapes.encoder.iter().chain(&shapes.decoder) {
                assert_eq!(b.ffn_dim % 8, 0, "FFN width {} not aligned", b.ffn_dim);
                assert_eq!(
                    b.self_attention_heads % 2,
                    0,
                    "{} heads not aligned",
                    b.self_attention_heads
                );
            }
        }
        if gates.contains("model.decoder.") {
            let shapes = shipped.config.layer_shapes.as_ref().unwrap();
            assert!(shapes
                .encoder
                .iter()
                .all(|b| b.self_attention_heads == 4 && b.ffn_dim == FFN));
        }
        assert!(shipped
            .layers()
            .iter()
            .all(|l| matches!(l.linear.weight, Weight::Float(_))));

        // The student between steps runs deterministic gates: the smaller model computes the
        // same.
        let (enc_gated, logits_gated) = encoder_and_logits(&t.student);
        let (enc, logits) = encoder_and_logits(&shipped);
        let (de, dl) = (
            max_abs_diff(&enc_gated, &enc).unwrap(),
            max_abs_diff(&logits_gated, &logits).unwrap(),
        );
        assert!(de < 1e-4 && dl < 1e-4, "{gates}: encoder {de}, logits {dl}");
        eprintln!(
            "{gates:?}: expected sparsity {expected:.4}, extracted {sparsity:.4}, shapes {}, gated vs extracted {de:.2e} / {dl:.2e}",
            shipped.shape_summary()
        );
        // ... and not merely the teacher's function.
        let (_, logits_teacher) = encoder_and_logits(&t.teacher);
        assert!(max_abs_diff(&logits_teacher, &logits).unwrap() > 1e-3);
    }
}

#[test]
fn pruning_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ex = examples(dir.path(), 5);
    let recipe = prune_recipe("warmup = 0.5\nlr_gates = 0.2", 7);
    let make = || Trainer::new(recipe.clone(), teacher(), ex.clone(), prompt(), None).unwrap();
    let (straight, resumed) = straight_and_resumed(make, dir.path());
    assert!(
        trained_state(&resumed) == trained_state(&straight),
        "parameters or optimizer moments differ after resume"
    );
    assert_eq!(resumed.method.state(), straight.method.state());
}

/// A pruned student's fine-tune killed mid-run resumes bit for bit (weights and moments).
#[test]
fn the_fine_tune_of_a_pruned_student_resumes_exactly() {
    use whittle::compress::prune::{magnitude_keep, prune_whisper};
    let dir = tempfile::tempdir().unwrap();
    let ex = examples(dir.path(), 5);
    let mut student = teacher();
    let keep = magnitude_keep(&student, 0.5, 1).unwrap();
    prune_whisper(&mut student, &keep).unwrap();
    let recipe = Recipe::parse(
        &format!("name = \"ft\"\nmethod = \"distill\"\n[quant]\n{TRAIN}"),
        "test",
    )
    .unwrap();
    let make = || {
        Trainer::distilling(
            recipe.clone(),
            teacher(),
            student.clone(),
            ex.clone(),
            prompt(),
            None,
        )
        .unwrap()
    };
    let (straight, resumed) = straight_and_resumed(make, dir.path());
    assert!(
        trained_state(&resumed) == trained_state(&straight),
        "parameters or optimizer moments differ after resume"
    );
    assert_eq!(
        resumed.student.shape_summary(),
        straight.student.shape_summary()
    );
}

#[test]
fn prune_recipe_settings_are_checked() {
    let shipped = include_str!("../../../recipes/prune-l0.toml");
    let recipe = Recipe::parse(shipped, "prune-l0.toml").unwrap();
    assert_eq!(recipe.method.name(), "prune-l0");
    let cases = [
        (
            "target_sparsity = 0.5",
            "target_sparsity = 1.0",
            "prune.target_sparsity",
        ),
        ("warmup = 0.5", "warmup = 2.0", "prune.warmup"),
        ("lr_gates = 0.1", "lr_gates = 0.0", "prune.lr_gates"),
        ("lr_lambda1 = 0.02", "lr_lambda1 = -1.0", "prune.lr_lambda1"),
        ("lr_lambda2 = 20.0", "lr_lambda2 = 0.0", "prune.lr_lambda2"),
        (
            "gate_heads = true\ngate_ffn = true\n# Channels of Conformer convolution modules (wav2vec2-conformer; other families have none).\ngate_conv = true",
            "gate_heads = false\ngate_ffn = false\n# Channels of Conformer convolution modules (wav2vec2-conformer; other families have none).\ngate_conv = false",
            "prune.gate_heads",
        ),
        ("[quant]", "[quant]\nbits = 4", "quant"),
        ("[prune]\n", "[prun]\n", "prun"),
    ];
    assert_recipe_errors(shipped, &cases);
}

/// The fine-tune after pruning (`method = "distill"`, `Trainer::distilling`): a student pruned
/// by magnitude to half its units learns from the unpruned teacher (the KL on a fixed batch of
/// all the examples falls), keeps its smaller shapes and ships float; the teacher is unchanged.
#[test]
fn a_pruned_student_distils_from_the_unpruned_teacher() {
    use whittle::compress::prune::{magnitude_keep, prune_whisper};
    use whittle::train::trainer::micro_batch_grads_with;
    use whittle::train::TrainModel;
    let dir = tempfile::tempdir().unwrap();
    let teacher = teacher();
    let mut student = teacher.clone();
    let keep = magnitude_keep(&student, 0.5, 1).unwrap();
    prune_whisper(&mut student, &keep).unwrap();
    let shapes = student.shape_summary();
    let steps = 30;
    let recipe = Recipe::parse(
        &format!(
            "name = \"ft\"\nmethod = \"distill\"\n[quant]\n[loss]\nkl = 1.0\ntemperature = 1.0\n\
             ce = 0.0\ntargets = \"transcript\"\n[optim]\nlr_weights = 1e-3\nlr_scales = 1e-3\n\
             weight_decay = 0.0\nclip_norm = 5.0\n[schedule]\nsteps = {steps}\nwarmup_steps = 1\n\
             min_lr_ratio = 0.1\n[train]\nbatch_size = 2\ngrad_accum = 2\nseed = 7\n\
             checkpoint_every = 100\n"
        ),
        "test",
    )
    .unwrap();
    let examples = examples(dir.path(), 4);
    let mut t = Trainer::distilling(
        recipe.clone(),
        teacher.clone(),
        student,
        examples.clone(),
        prompt(),
        None,
    )
    .unwrap();
    let all: Vec<&whittle::train::TrainExample> = examples.iter().collect();
    let batch = teacher.make_batch(&all, true, &prompt()).unwrap();
    let kl = |t: &Trainer| {
        micro_batch_grads_with(
            &t.teacher,
            &t.student,
            &batch,
            &recipe,
            &[],
            &[],
            &[],
            1.0,
            None,
        )
        .unwrap()
        .parts
        .kl
    };
    let before = kl(&t);
    while t.state.step < steps {
        t.train_step().unwrap();
    }
    let after = kl(&t);
    eprintln!(
        "KL to the teacher on all examples: {before:.4} before, {after:.4} after {steps} steps"
    );
    assert!(
        after < 0.5 * before,
        "the KL to the teacher fell from {before} to {after} only"
    );
    let (shipped, extracted) = t.extract().unwrap();
    assert_eq!(shipped.shape_summary(), shapes);
    assert!(extracted
        .layers
        .iter()
        .all(|(_, f)| *f == whittle::compress::bitmap::LayerFormat::Float));
    assert!(shipped
        .layers()
        .iter()
        .all(|l| matches!(l.linear.weight, Weight::Float(_))));
    let (_, teacher_logits) = encoder_and_logits(&teacher);
    let (_, still) = encoder_and_logits(&t.teacher);
    assert_eq!(max_abs_diff(&teacher_logits, &still).unwrap(), 0.0);
}

/// Layerwise distillation through learned projections (`projection = true`): one map per tap,
/// shared by the tap's terms, starting at the identity; the distance is taken of `P h`, not
/// `P^T h`; the map trains and resumes exactly.
#[test]
fn learned_projections_map_the_student_state_train_and_resume() {
    use candle_core::Tensor;
    use whittle::train::loss::hidden_distance;
    use whittle::train::recipe::HiddenKind;
    use whittle::train::trainer::micro_batch_grads_with;
    use whittle::train::TrainModel;
    const HIDDEN: &str = "[[loss.hidden]]\nat = \"encoder.0\"\nkind = \"l1\"\nweight = 1.0\n\
        projection = true\n[[loss.hidden]]\nat = \"encoder.0\"\nkind = \"cosine\"\n\
        weight = 1.0\nprojection = true\n[[loss.hidden]]\nat = \"encoder\"\nkind = \"l1\"\n\
        weight = 1.0\n";
    let dir = tempfile::tempdir().unwrap();
    let ex = examples(dir.path(), 5);
    let recipe = Recipe::parse(
        &format!(
            "name = \"l0\"\nmethod = \"prune-l0\"\n[quant]\n[prune]\ntarget_sparsity = 0.5\n{TRAIN}{HIDDEN}"
        ),
        "test",
    )
    .unwrap();
    let make = || Trainer::new(recipe.clone(), teacher(), ex.clone(), prompt(), None).unwrap();
    let t = make();
    let named: Vec<_> = t
        .optimizer
        .params
        .iter()
        .filter(|p| p.name.starts_with("distill.projection."))
        .collect();
    assert_eq!(named.len(), 1, "one map for the tap encoder.0");
    assert_eq!(named[0].name, "distill.projection.encoder.0");
    let maps = t.hidden_projections();
    assert!(maps[2].is_none());
    let (a, b) = (maps[0].as_ref().unwrap(), maps[1].as_ref().unwrap());
    assert_eq!(
        a.as_tensor().id(),
        b.as_tensor().id(),
        "the tap's terms share one map"
    );
    let d = a.as_tensor().dim(0).unwrap();
    let eye = Tensor::eye(d, DType::F32, &Device::Cpu).unwrap();
    assert_eq!(max_abs_diff(a.as_tensor(), &eye).unwrap(), 0.0);

    // A non-symmetric map: the l1 term is that of P h against the teacher's state.
    let random = Tensor::randn(0f32, 0.3, (d, d), &Device::Cpu).unwrap();
    a.set(&(random + &eye).unwrap()).unwrap();
    let all: Vec<&whittle::train::TrainExample> = ex.iter().collect();
    let batch = t.teacher.make_batch(&all, true, &prompt()).unwrap();
    let taps: Vec<_> = recipe
        .loss
        .hidden
        .iter()
        .map(|h| h.tap().unwrap())
        .collect();
    let parts = micro_batch_grads_with(
        &t.teacher,
        &t.student,
        &batch,
        &recipe,
        &taps,
        maps,
        &[],
        1.0,
        None,
    )
    .unwrap()
    .parts;
    let (hs, ht) = (
        t.student.forward_train(&batch, &taps).unwrap().hidden,
        t.teacher.forward_train(&batch, &taps).unwrap().hidden,
    );
    let p = a.as_tensor();
    let mapped = hs[0].broadcast_matmul(&p.t().unwrap()).unwrap();
    let want = hidden_distance(&mapped, &ht[0], HiddenKind::L1)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        (parts.hidden[0] - f64::from(want)).abs() < 1e-5 * f64::from(want),
        "l1 through the map {} != {want}",
        parts.hidden[0]
    );
    let transposed = hs[0].broadcast_matmul(p).unwrap();
    let wrong = hidden_distance(&transposed, &ht[0], HiddenKind::L1)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!((parts.hidden[0] - f64::from(wrong)).abs() > 1e-3 * f64::from(want));

    // It trains, and a killed run resumes bit for bit with it.
    let (straight, resumed) = straight_and_resumed(make, dir.path());
    let map = straight.hidden_projections()[0]
        .as_ref()
        .unwrap()
        .as_tensor()
        .clone();
    assert!(
        max_abs_diff(&map, &eye).unwrap() > 0.0,
        "the map did not train"
    );
    assert!(
        trained_state(&resumed) == trained_state(&straight),
        "parameters, maps or optimizer moments differ after resume"
    );
}
