//! Training a language model on the method seam (issue 13: ADMM and LSQ of the Transformer
//! LM), on the tiny random Llama GGUF: the training forward is the inference forward at the
//! scored positions; LSQ lowers the distillation loss and ADMM the weights' distance from
//! their grid, both selecting on dev perplexity; a killed ADMM run resumes exactly; the packed `.whittle` file reloads with its tokenizer
//! and computes what the trained student computes.

mod common_llama;
mod common_lm;

use std::path::Path;

use candle_core::{Device, Tensor};
use whittle::checkpoint::gguf::GgufFile;
use whittle::checkpoint::TensorStore;
use whittle::data::Utterance;
use whittle::models::llama::{Llama, LlamaTokenizer, ARCHITECTURE};
use whittle::models::lm::CausalLm;
use whittle::models::Layers;
use whittle::nn::Weight;
use whittle::text::normalize::EnglishNormalizer;
use whittle::train::model::{DevScore, TrainModel};
use whittle::train::trainer::{DevSet, Silent, Trainer};
use whittle::train::{Recipe, TrainExample};

const TEXTS: [&str; 6] = [
    "ab a b c.",
    "a ab 12 c b.",
    "c c ab a.",
    "b a 1 2 ab ab.",
    "ab.",
    "a b c ab a b c.",
];

fn load() -> (Llama, LlamaTokenizer, TensorStore) {
    let file = GgufFile::parse(Path::new("tiny.gguf"), common_llama::tiny_gguf(|w| w)).unwrap();
    let tokenizer = LlamaTokenizer::from_gguf(&file).unwrap();
    let (model, store) = Llama::from_gguf(&file, &Device::Cpu).unwrap();
    (model, tokenizer, store)
}

fn examples(tokenizer: &LlamaTokenizer) -> Vec<TrainExample> {
    TEXTS
        .iter()
        .enumerate()
        .map(|(i, t)| TrainExample {
            augmentation: None,
            id: format!("t{i}"),
            audio: Default::default(),
            tokens: tokenizer.document(t).unwrap(),
        })
        .collect()
}

fn dev_set(tokenizer: &LlamaTokenizer) -> DevSet<LlamaTokenizer> {
    DevSet {
        utterances: ["a b ab c.", "c 1 ab."]
            .iter()
            .enumerate()
            .map(|(i, t)| Utterance {
                id: format!("d{i}"),
                audio: Default::default(),
                text: Some(t.to_string()),
            })
            .collect(),
        normalizer: EnglishNormalizer::without_spellings(),
        tokenizer: tokenizer.clone(),
    }
}

/// A recipe of `method` (with its section) over `steps` steps of batch 3. ADMM moves its float
/// weights onto the grid at about one learning rate per step, so it gets a larger one.
fn recipe(method: &str, steps: usize) -> Recipe {
    let lr = if method.contains("admm") { 2e-2 } else { 3e-3 };
    Recipe::parse(
        &format!(
            r#"name = "lm"
{method}
[loss]
kl = 1.0
temperature = 1.0
ce = 0.0
targets = "transcript"
[optim]
lr_weights = {lr}
lr_scales = 1e-3
weight_decay = 0.0
clip_norm = 5.0
[schedule]
steps = {steps}
warmup_steps = 1
min_lr_ratio = 0.5
[train]
batch_size = 3
grad_accum = 1
seed = 3
checkpoint_every = 2
eval_every = 3
"#
        ),
        "lm.toml",
    )
    .unwrap()
}

const LSQ: &str = "method = \"uniform-lsq\"\n[quant]\nbits = 3\ngroup = 32";
const ADMM: &str = "method = \"admm\"\n[quant]\nbits = 3\ngroup = 32\n[admm]\nrho_start = 1.0\nrho_end = 1000.0\nupdate_every = 2";

/// The batch's training logits are the inference logits of each document at every position
/// but its last, padding never reaching a scored position.
#[test]
fn the_training_forward_is_the_inference_forward() {
    let (model, tokenizer, _) = load();
    let examples = examples(&tokenizer);
    common_lm::assert_training_forward_is_inference(&model, &examples[..3]);
    let refs: Vec<&TrainExample> = examples.iter().take(3).collect();
    let batch = model.make_batch(&refs, true, &()).unwrap();
    let err = model.forward_train(&batch, &[whittle::train::recipe::HiddenTap::Encoder]);
    assert!(err.unwrap_err().to_string().contains("no encoder"));
}

/// A fresh run of `method` over `steps` steps, scored on the dev texts.
fn trainer(method: &str, steps: usize) -> Trainer<Llama> {
    let (model, tokenizer, _) = load();
    Trainer::new(
        recipe(method, steps),
        model,
        examples(&tokenizer),
        (),
        Some(dev_set(&tokenizer)),
    )
    .unwrap()
}

fn train(method: &str, steps: usize, dir: &Path) -> Trainer<Llama> {
    let mut trainer = trainer(method, steps);
    trainer.run(dir, None, &mut Silent).unwrap();
    trainer
}

/// LSQ and ADMM each lower the distillation loss of the 3-bit student, keep the dev step with
/// the lowest perplexity, and ship a student whose perplexity is that of the best step.
#[test]
fn lsq_and_admm_train_a_language_model_selecting_on_dev_perplexity() {
    let admm_abs_max = format!("{ADMM}\nprojection = \"abs-max\"");
    for (name, method, steps) in [
        ("lsq", LSQ, 12),
        ("admm", ADMM, 30),
        ("admm-abs-max", admm_abs_max.as_str(), 30),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut trainer = trainer(method, steps);
        // LSQ: the distillation loss of the fake-quantized student; ADMM (whose float weights
        // start at the teacher's): the distance of the weights from their grid.
        let measure = |r: &whittle::train::trainer::StepReport| match name {
            "lsq" => r.kl,
            _ => r.method["distance"],
        };
        let first = measure(&trainer.train_step().unwrap());
        let mut last = first;
        while trainer.state.step < steps {
            last = measure(&trainer.train_step().unwrap());
        }
        assert!(last < 0.7 * first, "{name}: {first} -> {last}");
        // Through the run loop: dev scores recorded, the best one shipped.
        let mut run = train(method, steps, dir.path());
        let best = run.state.best.expect("a dev result");
        let (shipped, _) = run.finish(dir.path()).unwrap();
        let Some(DevScore::Perplexity(p)) = run.evaluate_packed(&shipped, &mut Silent).unwrap()
        else {
            panic!("{name}: a language model scores perplexity")
        };
        assert_eq!(p.texts, 2);
        assert!(
            (p.perplexity - best.score).abs() < 1e-6 * best.score,
            "{name}: shipped {} best {}",
            p.perplexity,
            best.score
        );
        let packed = shipped
            .layers()
            .iter()
            .filter(|l| matches!(l.linear.weight, Weight::Packed(_)))
            .count();
        // Without a bit map the token embedding stays float.
        assert_eq!(packed, shipped.layers().len() - 1, "{name}");
    }
}

/// A killed ADMM run of the language model resumes to the same parameters, `G` and multipliers.
#[test]
fn a_killed_language_model_run_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let make = || {
        let (model, tokenizer, _) = load();
        Trainer::new(recipe(ADMM, 7), model, examples(&tokenizer), (), None).unwrap()
    };
    let mut straight = make();
    straight
        .run(&dir.path().join("a"), None, &mut Silent)
        .unwrap();
    make()
        .run(&dir.path().join("b"), Some(5), &mut Silent)
        .unwrap();
    let mut resumed = make();
    assert!(resumed.resume(&dir.path().join("b")).unwrap());
    resumed
        .run(&dir.path().join("b"), None, &mut Silent)
        .unwrap();
    let flat = |t: &Trainer<Llama>| -> Vec<Vec<f32>> {
        let mut out: Vec<Vec<f32>> = t
            .optimizer
            .params
            .iter()
            .map(|p| p.var.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect();
        for (_, tensor) in t.method.state_tensors() {
            out.push(tensor.flatten_all().unwrap().to_vec1().unwrap());
        }
        out
    };
    assert_eq!(flat(&straight), flat(&resumed));
}

/// The trained student written as a `.whittle` file of architecture `llama` reloads with its
/// tokenizer and computes the same logits; a Whisper reader refuses it by name.
#[test]
fn the_packed_language_model_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let (_, tokenizer, store) = load();
    let mut trainer = train(LSQ, 4, dir.path());
    let (shipped, _) = trainer.finish(dir.path()).unwrap();
    let path = dir.path().join("lm.whittle");
    let header = Llama::packed_header(&shipped, &tokenizer).unwrap();
    whittle::compress::export::write_packed(&store, &shipped, ARCHITECTURE, &header, &[], &path)
        .unwrap();
    let (reloaded, tok2) = Llama::open_packed(&path, &Device::Cpu).unwrap();
    assert_eq!(
        tok2.document(TEXTS[1]).unwrap(),
        tokenizer.document(TEXTS[1]).unwrap()
    );
    assert_eq!((tok2.bos, tok2.eos), (tokenizer.bos, tokenizer.eos));
    let ids = Tensor::new(
        tokenizer.document(TEXTS[5]).unwrap().as_slice(),
        &Device::Cpu,
    )
    .unwrap()
    .unsqueeze(0)
    .unwrap();
    let logits = |m: &Llama| -> Vec<f32> {
        m.next_token_logits(&ids)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    };
    assert_eq!(logits(&shipped), logits(&reloaded));
    assert!(reloaded
        .layers()
        .iter()
        .all(|l| matches!(l.linear.weight, Weight::Packed(_)) == (l.name != "token_embd")));
    let err = whittle::models::registry::open(&path, &Device::Cpu, candle_core::DType::F32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("llama"), "{err}");
    // A missing file is refused naming it; a header without a tokenizer naming the key.
    let err = Llama::open_packed(Path::new("/nonexistent.whittle"), &Device::Cpu).unwrap_err();
    assert!(err.to_string().contains("nonexistent"), "{err}");
    let bare = dir.path().join("bare.whittle");
    let config_only: Vec<_> = header
        .into_iter()
        .filter(|(k, _)| k != "tokenizer")
        .collect();
    whittle::compress::export::write_packed(
        &store,
        &shipped,
        ARCHITECTURE,
        &config_only,
        &[],
        &bare,
    )
    .unwrap();
    let err = Llama::open_packed(&bare, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("tokenizer") && err.contains("bare.whittle"),
        "{err}"
    );
}

/// On the language model, Hutchinson's estimate of a block matrix's Hessian trace is within 5 %
/// of the trace formed from every diagonal entry (central differences of the gradient along
/// each coordinate, the same step), as for Whisper in `sensitivity.rs`. Measured while writing
/// it: the smallest matrices converge more slowly, because one probe spans every matrix and the
/// cross terms of the large tied embedding dominate their variance (`blk.1.attn_v`, 512
/// weights: 17 % off at 600 probes, 7 % at 2,400; `blk.1.ffn_down`, 2,048 weights: 4.6 % and
/// 2.1 %).
#[test]
fn language_model_hutchinson_trace_matches_the_exact_diagonal() {
    use whittle::compress::hessian::{hutchinson_traces, HessianOptions};
    let (mut model, tokenizer, _) = load();
    let examples = examples(&tokenizer);
    let options = HessianOptions {
        batch_size: 8,
        max_probes: 600,
        tolerance: 0.0,
        ..HessianOptions::default()
    };
    let traces = hutchinson_traces(&mut model, &examples, &(), &options, |_| {}).unwrap();
    let names: Vec<String> = model.layers().into_iter().map(|l| l.name).collect();
    let name = "blk.1.ffn_down";
    let index = names.iter().position(|n| n == name).unwrap();
    let exact =
        common_lm::exact_hessian_trace(&mut model, &examples, &(), index, traces.estimate.step);
    let estimate = traces.traces[index];
    assert!(exact > 0.0, "exact trace {exact}");
    let relative = (estimate - exact).abs() / exact;
    assert!(
        relative < 0.05,
        "{name}: Hutchinson {estimate} vs exact {exact}"
    );
    assert!(model
        .layers()
        .iter()
        .all(|l| matches!(l.linear.weight, Weight::Float(_))));
}

/// The shipped language-model recipes parse and train the tiny model (group 32 here: the tiny
/// model's width is 32).
#[test]
fn shipped_language_model_recipes_train() {
    for (name, text) in [
        ("lm-lsq", include_str!("../../../recipes/lm-lsq.toml")),
        ("lm-admm", include_str!("../../../recipes/lm-admm.toml")),
        (
            "lm-mp-search",
            include_str!("../../../recipes/lm-mp-search.toml"),
        ),
    ] {
        let mut recipe = Recipe::parse(text, name).unwrap();
        recipe.quant.group = Some(32);
        recipe.schedule.steps = 2;
        recipe.schedule.warmup_steps = 1;
        recipe.train.batch_size = 2;
        let dir = tempfile::tempdir().unwrap();
        let (model, tokenizer, _) = load();
        let mut trainer = Trainer::new(recipe, model, examples(&tokenizer), (), None).unwrap();
        trainer.run(dir.path(), None, &mut Silent).unwrap();
        assert_eq!(trainer.state.step, 2, "{name}");
    }
}
