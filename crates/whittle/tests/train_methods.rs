//! The compression-method seam on a tiny random Whisper: every hook is called in order and a
//! method's state resumes exactly; bit-map QAT trains the token embedding when the map names it;
//! one-stage mixed precision reaches its budget, its gradients reach weights, steps and logits,
//! and extraction packs exactly the candidate the supernet chose.

mod common_train;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use candle_core::{Device, Tensor};
use common_train::common_tiny::*;
use common_train::{examples, prompt, straight_and_resumed, teacher, trained_state, TRAIN};
use whittle::compress::bitmap::LayerFormat;
use whittle::models::whisper::{WhisperTokenizer, TOKEN_EMBEDDING};
use whittle::models::Layers;
use whittle::nn::{LsqSpec, StepInit, Weight};
use whittle::train::batch::{synthetic_batch, TrainExample};
use whittle::train::method::{CompressionMethod, Extracted, LossTerm, MethodParam};
use whittle::train::trainer::{micro_batch_grads_with, MicroBatchGrads, Silent, Trainer};
use whittle::train::uniform::UniformLsq;
use whittle::train::Recipe;

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// What the recording method saw; shared with the test.
#[derive(Debug, Default, Clone, PartialEq)]
struct Calls {
    wrap: usize,
    before: Vec<usize>,
    after: Vec<usize>,
    loss_terms: usize,
    extract: usize,
    restored: usize,
}

/// Uniform LSQ plus a small differentiable penalty, recording every hook, with a state that
/// depends on the whole history of term values (so an inexact resume shows).
struct Recording {
    inner: UniformLsq,
    calls: Rc<RefCell<Calls>>,
    history: f64,
    penalised: Option<candle_core::Var>,
    /// `ready_to_ship` from this many steps done.
    ready_from: usize,
}

impl CompressionMethod for Recording {
    fn name(&self) -> &'static str {
        "recording"
    }
    fn wrap(&mut self, student: &mut dyn Layers) -> whittle::Result<Vec<MethodParam>> {
        self.calls.borrow_mut().wrap += 1;
        let params = self.inner.wrap(student)?;
        self.penalised = Some(params[0].var.clone());
        Ok(params)
    }
    fn before_step(&mut self, _: &mut dyn Layers, step: usize) -> whittle::Result<()> {
        self.calls.borrow_mut().before.push(step);
        Ok(())
    }
    fn loss_terms(&self, _: &dyn Layers) -> whittle::Result<Vec<LossTerm>> {
        self.calls.borrow_mut().loss_terms += 1;
        let w = self.penalised.as_ref().expect("wrapped").as_tensor();
        let loss = (w.sqr()?.mean_all()? * 10.0)?;
        let value = loss.to_scalar::<f32>()? as f64;
        Ok(vec![LossTerm {
            name: "penalty".into(),
            loss,
            value,
        }])
    }
    fn after_step(
        &mut self,
        _: &mut dyn Layers,
        step: usize,
        terms: &BTreeMap<String, f64>,
    ) -> whittle::Result<()> {
        self.calls.borrow_mut().after.push(step);
        self.history = self.history * 0.5 + terms["penalty"];
        Ok(())
    }
    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "history": self.history })
    }
    fn restore(&mut self, state: &serde_json::Value) -> whittle::Result<()> {
        self.calls.borrow_mut().restored += 1;
        self.history = state["history"].as_f64().expect("saved history");
        Ok(())
    }
    fn extract(&self, shipped: &mut dyn Layers) -> whittle::Result<Extracted> {
        self.calls.borrow_mut().extract += 1;
        self.inner.extract(shipped)
    }
    fn ready_to_ship(&self, steps_done: usize) -> bool {
        steps_done >= self.ready_from
    }
}

fn uniform_recipe() -> Recipe {
    Recipe::parse(
        &format!("name = \"seam\"\n[quant]\nbits = 3\n{TRAIN}"),
        "test",
    )
    .unwrap()
}

/// A recording W3 method, ready to ship from `ready_from` steps done.
fn recording(ready_from: usize) -> (Recording, Rc<RefCell<Calls>>) {
    let calls = Rc::new(RefCell::new(Calls::default()));
    let method = Recording {
        inner: UniformLsq::uniform(
            LsqSpec {
                bits: 3,
                group: None,
            },
            StepInit::Lsq,
        ),
        calls: calls.clone(),
        history: 0.0,
        penalised: None,
        ready_from,
    };
    (method, calls)
}

fn recording_trainer(ex: &[TrainExample]) -> (Trainer, Rc<RefCell<Calls>>) {
    let (method, calls) = recording(0);
    let trainer = Trainer::with_method(
        uniform_recipe(),
        Box::new(method),
        teacher(),
        ex.to_vec(),
        prompt(),
        None,
    )
    .unwrap();
    (trainer, calls)
}

/// Each hook runs when it should: wrap once, before/after around every step in order, the loss
/// terms once per micro-batch and in the step report; a run killed after step 5 and resumed from
/// its step-4 checkpoint restores the method's state and ends identical to an uninterrupted run.
#[test]
fn every_method_hook_is_called_and_its_state_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ex = examples(dir.path(), 5);

    let (mut straight, calls) = recording_trainer(&ex);
    let report = straight.train_step().unwrap();
    assert!(report.terms.contains_key("penalty"), "{:?}", report.terms);
    straight
        .run(&dir.path().join("straight"), None, &mut Silent)
        .unwrap();
    let seen = calls.borrow().clone();
    assert_eq!(seen.wrap, 1);
    assert_eq!(seen.before, (0..7).collect::<Vec<_>>());
    assert_eq!(seen.after, (0..7).collect::<Vec<_>>());
    assert_eq!(seen.loss_terms, 7 * 2, "one call per micro-batch");
    assert_eq!(seen.restored, 0);
    let (_, extracted) = straight.finish(&dir.path().join("straight")).unwrap();
    assert_eq!(calls.borrow().extract, 1);
    assert!(extracted
        .layers
        .iter()
        .any(|(_, f)| *f == LayerFormat::uniform(3, None)));

    let killed_dir = dir.path().join("killed");
    let (mut killed, _) = recording_trainer(&ex);
    killed.run(&killed_dir, Some(5), &mut Silent).unwrap();
    let (mut resumed, resumed_calls) = recording_trainer(&ex);
    assert!(resumed.resume(&killed_dir).unwrap());
    assert_eq!(resumed_calls.borrow().restored, 1);
    resumed.run(&killed_dir, None, &mut Silent).unwrap();
    assert_eq!(resumed_calls.borrow().before, vec![4, 5, 6]);
    assert_eq!(resumed.method.state(), straight.method.state());
    assert!(
        trained_state(&resumed) == trained_state(&straight),
        "parameters differ after resume"
    );
}

/// A bit map that names the token embedding trains it (the largest matrix) with the others,
/// at its own width; layers the map leaves float are not trained.
#[test]
fn bit_map_qat_trains_the_token_embedding() {
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("map.toml");
    std::fs::write(
        &map,
        format!(
            "default = {{ bits = 4 }}\n[layers]\n\"{TOKEN_EMBEDDING}\" = {{ bits = 8 }}\n\"encoder.layers.0.fc1\" = \"float\"\n"
        ),
    )
    .unwrap();
    let recipe = Recipe::parse(
        &format!(
            "name = \"map\"\n[quant]\nbit_map = \"{}\"\n{TRAIN}",
            map.display()
        ),
        "test",
    )
    .unwrap();
    let ex = examples(dir.path(), 4);
    let mut trainer = Trainer::new(recipe.clone(), teacher(), ex, prompt(), None).unwrap();
    let names: Vec<&str> = trainer
        .optimizer
        .params
        .iter()
        .map(|p| p.name.as_str())
        .collect();
    assert!(names.contains(&"model.decoder.embed_tokens.weight"));
    assert!(!names
        .iter()
        .any(|n| n.starts_with("model.encoder.layers.0.fc1.")));
    let before = flat(
        trainer
            .student
            .decoder
            .embed_tokens
            .weight
            .to_dense()
            .unwrap()
            .as_ref(),
    );
    for _ in 0..2 {
        trainer.train_step().unwrap();
    }
    let after = flat(
        &trainer
            .student
            .decoder
            .embed_tokens
            .weight
            .to_dense()
            .unwrap(),
    );
    assert!(before != after, "the embedding did not train");
    let (shipped, extracted) = trainer.finish(&dir.path().join("work")).unwrap();
    let formats: BTreeMap<_, _> = extracted.layers.iter().cloned().collect();
    assert_eq!(formats[TOKEN_EMBEDDING], LayerFormat::uniform(8, None));
    assert_eq!(formats["model.encoder.layers.0.fc1"], LayerFormat::Float);
    assert_eq!(
        formats["model.decoder.layers.1.fc2"],
        LayerFormat::uniform(4, None)
    );
    let Weight::Packed(table) = &shipped.decoder.embed_tokens.weight else {
        panic!("the embedding is not packed");
    };
    assert_eq!(
        table.format().quant.scheme,
        whittle_kernels::Scheme::Symmetric { bits: 8 }
    );
}

fn mixed_recipe(budget: f64, steps: usize) -> Recipe {
    Recipe::parse(
        &format!(
            "name = \"mp\"\nmethod = \"mixed-precision\"\n[quant]\n[mixed_precision]\n\
             candidates = [2, 4, 8]\nbudget_bits = {budget}\ntau_start = 1.0\ntau_end = 0.05\n\
             lr_arch = 0.05\nlr_multiplier = 2.0\n{}",
            TRAIN.replace("steps = 7\n", &format!("steps = {steps}\n"))
        ),
        "test",
    )
    .unwrap()
}

/// Every parameter of the supernet (latent weights, each candidate's steps, the logits) gets a
/// non-zero gradient through the full training forward with the size term active.
#[test]
fn supernet_gradients_reach_weights_steps_and_logits() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(
        mixed_recipe(4.0, 4),
        teacher(),
        examples(dir.path(), 3),
        prompt(),
        None,
    )
    .unwrap();
    // Make the size term bite from the first step.
    trainer
        .method
        .restore(&serde_json::json!({ "multiplier": 1.0 }))
        .unwrap();
    trainer.method.before_step(&mut trainer.student, 0).unwrap();
    let batch =
        synthetic_batch(2, 60, 5, &trainer.teacher.config, &prompt(), &Device::Cpu).unwrap();
    let vars: Vec<_> = trainer.optimizer.params.iter().map(|p| &p.var).collect();
    let MicroBatchGrads { grads, terms, .. } = micro_batch_grads_with(
        &trainer.teacher,
        &trainer.student,
        &batch,
        &trainer.recipe,
        &[],
        &[],
        &vars,
        1.0,
        Some(trainer.method.as_ref()),
    )
    .unwrap();
    assert_eq!(terms[0].0, "size");
    let kinds = ["weight", "weight_steps", "arch_logits"];
    for (p, g) in trainer.optimizer.params.iter().zip(&grads) {
        let g = g
            .as_ref()
            .unwrap_or_else(|| panic!("{} received no gradient", p.name));
        let norm: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
        assert!(
            norm > 0.0 && norm.is_finite(),
            "{}: gradient norm {norm}",
            p.name
        );
    }
    for kind in kinds {
        assert!(
            trainer
                .optimizer
                .params
                .iter()
                .any(|p| p.name.ends_with(kind)),
            "no {kind} parameters"
        );
    }
}

/// Trained to a budget between the candidates, the extracted model meets it within 2 % (the
/// multiplier holds it), uses more than one width, and each layer's packed matrix is exactly
/// the chosen candidate's fake-quantized weight.
#[test]
fn one_stage_mixed_precision_meets_its_budget_and_extracts_exactly() {
    let dir = tempfile::tempdir().unwrap();
    // 16-wide rows fill half a 32-weight block and add a 16-bit scale: the candidates store 5,
    // 9 or 17 bits per weight.
    let budget = 7.0;
    let mut trainer = Trainer::new(
        mixed_recipe(budget, 60),
        teacher(),
        examples(dir.path(), 6),
        prompt(),
        None,
    )
    .unwrap();
    let mut last = None;
    while trainer.state.step < 60 {
        let r = trainer.train_step().unwrap();
        if std::env::var_os("WHITTLE_TRACE").is_some() {
            eprintln!("{} {:?} {:?}", r.step, r.terms, r.method);
        }
        last = Some(r);
    }
    let last = last.unwrap();
    let (shipped, extracted) = trainer.extract().unwrap();
    let achieved = extracted.report["achieved_bits"].as_f64().unwrap();
    // How many layers the final fit to the budget moved off their argmax (reported, not
    // asserted: on this random model the task gives the logits little to prefer).
    eprintln!(
        "achieved {achieved} bits, {} snapped layers",
        extracted.report["snapped_layers"]
    );
    assert!(
        achieved <= budget * 1.02 && achieved >= budget * 0.98,
        "achieved {achieved} bits for a budget of {budget} (last step {:?})",
        last.method
    );
    let widths: std::collections::BTreeSet<_> = extracted
        .layers
        .iter()
        .filter_map(|(_, f)| match f {
            LayerFormat::Uniform { bits, .. } => Some(*bits),
            _ => None,
        })
        .collect();
    assert!(widths.len() > 1, "one width only: {widths:?}");
    let mut student = trainer.student.clone();
    let mut packed = shipped.clone();
    let choices = extracted.report["choices"].as_array().unwrap();
    for (((name, s), (_, p)), choice) in student
        .quantizable_mut()
        .into_iter()
        .zip(packed.quantizable_mut())
        .zip(choices)
    {
        let (Weight::Mixed(m), Weight::Packed(p)) = (&s.weight, &p.weight) else {
            panic!("{name}: not a supernet weight / packed after extraction");
        };
        assert_eq!(choice["layer"], name.as_str());
        let bits = choice["bits"].as_u64().unwrap() as u8;
        let k = m.candidates.iter().position(|c| c.bits == bits).unwrap();
        let chosen = m.candidate(k).unwrap();
        assert_eq!(
            flat(&chosen.quantized_weight().unwrap()),
            p.dequantize(),
            "{name}: packed weights differ from the chosen candidate"
        );
    }
}

/// A mixed-precision run killed after step 5 and resumed from its step-4 checkpoint ends
/// identical to an uninterrupted one: same noise per step, same multiplier, same parameters.
#[test]
fn mixed_precision_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ex = examples(dir.path(), 5);
    let make =
        || Trainer::new(mixed_recipe(7.0, 7), teacher(), ex.clone(), prompt(), None).unwrap();
    let (straight, resumed) = straight_and_resumed(make, dir.path());
    assert_ne!(straight.method.state()["multiplier"], 0.0);
    assert_eq!(resumed.method.state(), straight.method.state());
    assert!(
        trained_state(&resumed) == trained_state(&straight),
        "parameters differ after resume"
    );
}

/// With `settle_steps`, the map is fixed (within the budget) when the last steps start: those
/// steps forward the chosen candidates alone and add no size term, extraction writes exactly the
/// settled map, and a run resumed from a checkpoint taken while settled ends identical.
#[test]
fn a_settled_map_is_trained_extracted_and_resumed_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let ex = examples(dir.path(), 5);
    let settled_recipe = || {
        let mut recipe = mixed_recipe(7.0, 7);
        recipe.mixed_precision.as_mut().unwrap().settle_steps = 4;
        recipe
    };
    let make = || Trainer::new(settled_recipe(), teacher(), ex.clone(), prompt(), None).unwrap();
    let mut trainer = make();
    let mut map_at_settle = None;
    while trainer.state.step < 7 {
        let r = trainer.train_step().unwrap();
        let settled = trainer.method.state()["settled"].clone();
        if r.step <= 3 {
            assert!(settled.is_null(), "settled at step {}: {settled}", r.step);
            assert!(r.terms.contains_key("size"));
        } else {
            assert!(!settled.is_null(), "not settled at step {}", r.step);
            assert!(!r.terms.contains_key("size"), "size term while settled");
            let map = map_at_settle.get_or_insert_with(|| settled.clone());
            assert_eq!(&settled, map, "the settled map changed");
            // The forward mixes the settled candidate alone.
            let choice: Vec<usize> = serde_json::from_value(settled).unwrap();
            let mut student = trainer.student.clone();
            for ((name, linear), &k) in student.quantizable_mut().into_iter().zip(&choice) {
                let Weight::Mixed(m) = &linear.weight else {
                    panic!("{name}: not a supernet weight");
                };
                let mut expected = vec![0f32; m.candidates.len()];
                expected[k] = 1.0;
                assert_eq!(flat(&m.mixture().unwrap()), expected, "{name}");
            }
        }
    }
    let settled: Vec<usize> = serde_json::from_value(map_at_settle.unwrap()).unwrap();
    let (_, extracted) = trainer.extract().unwrap();
    assert_eq!(extracted.report["settled"], true);
    let written: Vec<usize> = extracted.report["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| [2, 4, 8].iter().position(|&b| b == c["bits"]).unwrap())
        .collect();
    assert_eq!(written, settled, "extraction differs from the settled map");
    let achieved = extracted.report["achieved_bits"].as_f64().unwrap();
    assert!(
        achieved <= 7.0 + 1e-9,
        "settled map over budget: {achieved}"
    );

    let (straight, resumed) = straight_and_resumed(make, dir.path());
    assert!(!straight.method.state()["settled"].is_null());
    assert_eq!(resumed.method.state(), straight.method.state());
    assert!(
        trained_state(&resumed) == trained_state(&straight),
        "parameters differ after a resume inside the settled steps"
    );
}

/// A checkpoint's settled map that does not fit the model is refused, naming the field.
#[test]
fn a_settled_map_of_another_model_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = Trainer::new(
        mixed_recipe(7.0, 7),
        teacher(),
        examples(dir.path(), 2),
        prompt(),
        None,
    )
    .unwrap();
    for bad in [serde_json::json!([0]), serde_json::json!(vec![9; 64])] {
        let err = trainer
            .method
            .restore(&serde_json::json!({ "multiplier": 0.0, "settled": bad }))
            .unwrap_err()
            .to_string();
        assert!(err.contains("settled"), "{err}");
    }
}

/// A dev set of the training clips, each transcribed `w1 w2`.
fn dev_set(ex: &[TrainExample]) -> whittle::train::DevSet {
    whittle::train::DevSet {
        utterances: ex
            .iter()
            .map(|e| whittle::data::Utterance {
                id: e.id.clone(),
                audio: e.audio.clone(),
                text: Some("w1 w2".into()),
            })
            .collect(),
        normalizer: whittle::text::normalize::EnglishNormalizer::without_spellings(),
        tokenizer: WhisperTokenizer::from_json(&tokenizer_json(), "tiny").unwrap(),
    }
}

/// The dev path of a run: the extracted student is scored every `eval_every` steps and at the
/// end, the best result is kept (state and `best.safetensors`), and `finish` restores exactly
/// those parameters before extracting.
#[test]
fn dev_scoring_keeps_the_best_parameters_and_finish_restores_them() {
    let dir = tempfile::tempdir().unwrap();
    let ex = examples(dir.path(), 4);
    let dev = dev_set(&ex);
    let recipe = Recipe::parse(
        &format!(
            "name = \"dev\"\n[quant]\nbits = 3\n{}",
            TRAIN.replace("seed = 7\n", "seed = 7\neval_every = 2\n")
        ),
        "test",
    )
    .unwrap();
    let work = dir.path().join("work");
    let mut trainer = Trainer::new(recipe, teacher(), ex, prompt(), Some(dev)).unwrap();
    trainer.run(&work, None, &mut Silent).unwrap();
    let devs: Vec<(u64, f64)> = std::fs::read_to_string(work.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "dev")
        .map(|v| {
            (
                v["report"]["step"].as_u64().unwrap(),
                v["report"]["score"]["wer"].as_f64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        devs.iter().map(|d| d.0).collect::<Vec<_>>(),
        vec![2, 4, 6, 7]
    );
    let best = trainer.state.best.expect("a best dev result");
    let first_min = devs
        .iter()
        .fold(devs[0], |b, &d| if d.1 < b.1 { d } else { b });
    assert_eq!((best.step as u64, best.score), first_min);
    let saved =
        candle_core::safetensors::load(work.join("best.safetensors"), &Device::Cpu).unwrap();
    trainer.finish(&work).unwrap();
    for p in &trainer.optimizer.params {
        let want = &saved[&format!("param.{}", p.name)];
        assert_eq!(
            flat(p.var.as_tensor()),
            flat(want),
            "{} not restored",
            p.name
        );
    }
}

/// A dev result from before the method's schedule reached its target (a sparsity ramp, say) is
/// scored and logged but never kept as the best: only eligible results, and the last step, may
/// choose the parameters that ship.
#[test]
fn dev_results_before_the_target_are_not_kept_as_best() {
    let dir = tempfile::tempdir().unwrap();
    let ex = examples(dir.path(), 4);
    let dev = || dev_set(&ex);
    let recipe = || {
        Recipe::parse(
            &format!(
                "name = \"ready\"\n[quant]\nbits = 3\n{}",
                TRAIN.replace("seed = 7\n", "seed = 7\neval_every = 2\n")
            ),
            "test",
        )
        .unwrap()
    };
    let run = |ready_from: usize, name: &str| {
        let (method, _) = recording(ready_from);
        let work = dir.path().join(name);
        let mut trainer = Trainer::with_method(
            recipe(),
            Box::new(method),
            teacher(),
            ex.clone(),
            prompt(),
            Some(dev()),
        )
        .unwrap();
        trainer.run(&work, None, &mut Silent).unwrap();
        let devs: Vec<(u64, f64, bool, bool)> = std::fs::read_to_string(work.join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["kind"] == "dev")
            .map(|v| {
                let r = &v["report"];
                (
                    r["step"].as_u64().unwrap(),
                    r["score"]["wer"].as_f64().unwrap(),
                    r["eligible"].as_bool().unwrap(),
                    r["best"].as_bool().unwrap(),
                )
            })
            .collect();
        (trainer.state.best.expect("a best dev result"), devs)
    };
    // Eligible from step 6: steps 2 and 4 are scored, never best.
    let (best, devs) = run(6, "late");
    assert_eq!(
        devs.iter().map(|d| (d.0, d.2)).collect::<Vec<_>>(),
        vec![(2, false), (4, false), (6, true), (7, true)]
    );
    assert!(devs[..2].iter().all(|d| !d.3));
    let want = if devs[3].1 < devs[2].1 {
        devs[3]
    } else {
        devs[2]
    };
    assert_eq!((best.step as u64, best.score), (want.0, want.1));
    // Never eligible: the last step is kept all the same.
    let (best, devs) = run(usize::MAX, "never");
    assert_eq!(best.step, 7);
    assert!(devs.last().unwrap().3);
    assert!(devs[..3].iter().all(|d| !d.2 && !d.3));
}

/// The shipped ramped recipes are eligible for selection only once their ramp has finished: the
/// L0 gates after the target warm-up (half of 500 steps), hyperspherical ternary after its
/// sparsity ramp (60 % of 300 steps); mixed precision, whose extraction always fits the budget,
/// from the start.
#[test]
fn ramped_methods_are_ready_to_ship_after_their_ramps() {
    let recipes = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
    let method = |file: &str| {
        let recipe = Recipe::load(&recipes.join(file)).unwrap();
        whittle::train::method::from_recipe(&recipe, None).unwrap()
    };
    let gates = method("prune-l0.toml");
    assert!(!gates.ready_to_ship(100) && !gates.ready_to_ship(250));
    assert!(gates.ready_to_ship(251) && gates.ready_to_ship(500));
    let ternary = method("ternary-hq.toml");
    assert!(!ternary.ready_to_ship(100) && !ternary.ready_to_ship(180));
    assert!(ternary.ready_to_ship(181) && ternary.ready_to_ship(300));
    assert!(method("mp-onestage.toml").ready_to_ship(1));
}

/// The search variant (`objective = "sqrt-bits"`, the fixed size price of issue 13's
/// architecture search): a large `beta` drives every layer to the narrowest candidate, a tiny
/// one leaves the task loss in charge; the price term is `beta sum_l sum_n a_n sqrt(n)`; the
/// shipped recipe parses, and a budget is refused with it.
#[test]
fn the_sqrt_bits_price_pulls_the_search_toward_narrow_widths() {
    let search = |beta: f64, steps: usize| {
        Recipe::parse(
            &format!(
                "name = \"search\"\nmethod = \"mixed-precision\"\n[quant]\n[mixed_precision]\n\
                 candidates = [2, 4, 8]\nobjective = \"sqrt-bits\"\nbeta = {beta}\n\
                 tau_start = 1.0\ntau_end = 0.05\nlr_arch = 0.05\nlr_multiplier = 0.0\n{}",
                TRAIN.replace("steps = 7\n", &format!("steps = {steps}\n"))
            ),
            "test",
        )
        .unwrap()
    };
    let mut achieved = Vec::new();
    for beta in [1e-6, 5.0] {
        let dir = tempfile::tempdir().unwrap();
        let mut trainer = Trainer::new(
            search(beta, 40),
            teacher(),
            examples(dir.path(), 4),
            prompt(),
            None,
        )
        .unwrap();
        let first = trainer.train_step().unwrap();
        // At the start every candidate is equally likely: the price is beta (sqrt 2 + 2 +
        // sqrt 8) / 3 per layer.
        let layers = trainer.student.layers().len() - 1;
        let per_layer = (2f64.sqrt() + 2.0 + 8f64.sqrt()) / 3.0;
        assert!(
            (first.terms["size"] - beta * per_layer * layers as f64).abs()
                < 0.05 * beta * per_layer * layers as f64,
            "{:?}",
            first.terms
        );
        while trainer.state.step < 40 {
            trainer.train_step().unwrap();
        }
        let (_, extracted) = trainer.extract().unwrap();
        achieved.push(extracted.report["achieved_bits"].as_f64().unwrap());
        assert_eq!(extracted.report["objective"], "sqrt-bits");
    }
    // 16-wide rows: 2 bits store 5 bits per weight with the scale (see above).
    assert!(achieved[1] < 5.01, "beta 5 left {} bits", achieved[1]);
    assert!(achieved[0] > achieved[1] + 1.0, "{achieved:?}");
    let shipped = include_str!("../../../recipes/mp-search.toml");
    let recipe = Recipe::parse(shipped, "mp-search.toml").unwrap();
    assert_eq!(
        recipe.mixed_precision.unwrap().objective,
        whittle::train::recipe::SizeObjective::SqrtBits
    );
    let err = Recipe::parse(
        &shipped.replace("\nbeta = 0.5\n", "\nbeta = 0.5\nbudget_bits = 3.0\n"),
        "mp-search.toml",
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("mixed_precision.budget_bits"), "{err}");
}
