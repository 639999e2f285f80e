//! The trainer on the CTC families (tiny random fixtures): uniform LSQ and one-stage mixed
//! precision train through `TrainModel for CtcRecognizer`, score the dev set, extract packed
//! layers and resume bit for bit; hyperspherical ternary and ADMM train and pack a Conformer;
//! token cross-entropy is refused with the reason.

mod common_ctc;

use common_ctc::{clips, teacher};

use candle_core::Tensor;
use whittle::compress::bitmap::LayerFormat;
use whittle::data::Utterance;
use whittle::models::wav2vec2::CtcRecognizer;
use whittle::text::normalize::EnglishNormalizer;
use whittle::train::batch::TrainExample;
use whittle::train::trainer::{DevSet, Silent, Trainer};
use whittle::train::Recipe;

fn recipe(method: &str, ce: f64) -> Recipe {
    Recipe::parse(
        &format!(
            r#"name = "ctc"
{method}
[loss]
kl = 1.0
temperature = 2.0
ce = {ce}
targets = "transcript"
[[loss.hidden]]
at = "encoder.0"
kind = "cosine"
weight = 0.1
[optim]
lr_weights = 3e-3
lr_scales = 1e-3
weight_decay = 0.01
clip_norm = 5.0
[schedule]
steps = 6
warmup_steps = 1
min_lr_ratio = 0.1
[train]
batch_size = 2
grad_accum = 2
seed = 3
checkpoint_every = 2
eval_every = 3
"#
        ),
        "test",
    )
    .unwrap()
}

const UNIFORM: &str = "[quant]\nbits = 4";
const MIXED: &str = "method = \"mixed-precision\"\n[quant]\n[mixed_precision]\n\
                     candidates = [2, 4, 8]\nbudget_bits = 4.0\ntau_start = 1.0\ntau_end = 0.05\n\
                     lr_arch = 0.05\nlr_multiplier = 2.0";

fn trainer(
    variant: &str,
    method: &str,
    examples: &[TrainExample],
    dev: &[Utterance],
) -> Trainer<CtcRecognizer> {
    Trainer::new(
        recipe(method, 0.0),
        teacher(variant),
        examples.to_vec(),
        (),
        Some(DevSet {
            utterances: dev.to_vec(),
            normalizer: EnglishNormalizer::without_spellings(),
            tokenizer: (),
        }),
    )
    .unwrap()
}

fn params(t: &Trainer<CtcRecognizer>) -> Vec<Vec<f32>> {
    let flat = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    t.optimizer
        .params
        .iter()
        .flat_map(|p| [flat(p.var.as_tensor()), flat(&p.m), flat(&p.v)])
        .collect()
}

#[test]
fn uniform_qat_trains_each_encoder_kind_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (examples, dev) = clips(dir.path(), 5);
    for variant in ["wav2vec2-base", "hubert-large", "conformer-relpos"] {
        let work = dir.path().join(variant);
        let mut straight = trainer(variant, UNIFORM, &examples, &dev);
        let first = straight.train_step().unwrap();
        assert!(
            first.kl.is_finite() && first.kl > 0.0,
            "{variant}: {first:?}"
        );
        assert!(first.hidden[0].is_finite(), "{variant}");
        assert!(first.tokens > 0, "{variant}: frames carry the loss");
        let mut straight = trainer(variant, UNIFORM, &examples, &dev);
        straight
            .run(&work.join("straight"), None, &mut Silent)
            .unwrap();
        let best = straight.state.best.expect("dev scored");
        assert!(best.score.is_finite(), "{variant}");

        let mut killed = trainer(variant, UNIFORM, &examples, &dev);
        killed
            .run(&work.join("killed"), Some(3), &mut Silent)
            .unwrap();
        let mut resumed = trainer(variant, UNIFORM, &examples, &dev);
        assert!(resumed.resume(&work.join("killed")).unwrap());
        resumed
            .run(&work.join("killed"), None, &mut Silent)
            .unwrap();
        assert!(
            params(&resumed) == params(&straight),
            "{variant}: resume is exact"
        );

        let (shipped, extracted) = straight.finish(&work.join("straight")).unwrap();
        assert_eq!(extracted.layers.len(), shipped.model.linears().len());
        assert!(
            extracted
                .layers
                .iter()
                .all(|(_, f)| *f == LayerFormat::uniform(4, None)),
            "{variant}: every CTC layer (head and projections too) is quantized by default"
        );
    }
}

#[test]
fn mixed_precision_searches_a_ctc_model_within_its_budget() {
    let dir = tempfile::tempdir().unwrap();
    let (examples, dev) = clips(dir.path(), 4);
    let mut t = trainer("hubert-base", MIXED, &examples, &dev);
    t.run(&dir.path().join("work"), None, &mut Silent).unwrap();
    let (_, extracted) = t.extract().unwrap();
    let achieved = extracted.report["achieved_bits"].as_f64().unwrap();
    assert!(achieved <= 4.0 + 1e-9, "achieved {achieved} bits");
}

#[test]
fn token_cross_entropy_is_refused_for_ctc_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (examples, _) = clips(dir.path(), 2);
    let mut t = Trainer::new(
        recipe(UNIFORM, 0.5),
        teacher("wav2vec2-base"),
        examples,
        (),
        None,
    )
    .unwrap();
    let err = t.train_step().unwrap_err().to_string();
    assert!(err.contains("loss.ce") && err.contains("CTC"), "{err}");
}

const TERNARY: &str = "method = \"ternary-hq\"\n[quant]\n[ternary]\nhyperspherical = true\n\
                       projection = \"cosine\"\ntarget_sparsity = 0.5\nprune_start = 0.0\n\
                       prune_end = 0.5\nreinit_every = 3\nreinit_strength = 0.5\nlayout = \"sparse\"";
const ADMM: &str =
    "method = \"admm\"\n[quant]\nbits = 4\n[admm]\nrho_start = 1.0\nrho_end = 100.0\n\
                    update_every = 2";

/// The other training-time methods reach the CTC families through the same seam: hyperspherical
/// ternary training packs every layer to the sparse ternary layout, ADMM to its 4-bit grid, and
/// the packed model transcribes.
#[test]
fn ternary_and_admm_train_a_conformer() {
    let dir = tempfile::tempdir().unwrap();
    let (examples, dev) = clips(dir.path(), 4);
    let is_expected = |method: &str, f: &LayerFormat| match f {
        LayerFormat::Ternary { sparse, .. } => method == TERNARY && *sparse,
        LayerFormat::Uniform { bits: 4, .. } => method == ADMM,
        _ => false,
    };
    for method in [TERNARY, ADMM] {
        let mut t = trainer("conformer-relpos", method, &examples, &dev);
        let work = dir.path().join(method.split('"').nth(1).unwrap());
        t.run(&work, None, &mut Silent).unwrap();
        let (shipped, extracted) = t.finish(&work).unwrap();
        assert!(
            extracted.layers.iter().all(|(_, f)| is_expected(method, f)),
            "{method}: {:?}",
            extracted.layers
        );
        assert!(shipped
            .model
            .linears()
            .iter()
            .all(|(_, l)| matches!(l.weight, whittle::nn::Weight::Packed(_))));
        let clip: Vec<f32> = (0..4000).map(|t| (t as f32 * 0.05).sin() * 0.2).collect();
        assert!(
            shipped.logits(&clip).is_ok(),
            "{method}: the packed model runs"
        );
    }
}
