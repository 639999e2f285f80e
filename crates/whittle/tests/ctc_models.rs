//! wav2vec2, HuBERT and Wav2Vec2-Conformer CTC models against transformers' own outputs on tiny
//! random checkpoints (tests/fixtures/ctc, written by scripts/reference/make_ctc_fixtures.py), and
//! crafted `config.json` files that must be refused.

mod common_ctc;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, IndexOp, Tensor};
use common_ctc::{fixture, VARIANTS};
use whittle::checkpoint::hf::load_safetensors;
use whittle::error::Error;
use whittle::models::wav2vec2::{
    normalize_waveform, CtcModel, CtcVocab, Family, FeatureExtractorConfig, Wav2Vec2Config,
};

/// `[1, samples]` of `amplitude * sin(step * i)`.
fn sine_wave(samples: usize, step: f32, amplitude: f32) -> Tensor {
    let values: Vec<f32> = (0..samples)
        .map(|i| (i as f32 * step).sin() * amplitude)
        .collect();
    Tensor::from_vec(values, (1, samples), &Device::Cpu).unwrap()
}

/// Largest |whittle - transformers| over the largest |transformers| logit.
const RELATIVE_TOLERANCE: f32 = 1e-4;

/// max |actual - expected| / max |expected|.
fn relative_error(actual: &Tensor, expected: &Tensor) -> f32 {
    let err = whittle::nn::max_abs_diff(actual, expected).unwrap();
    let scale: f32 = expected
        .abs()
        .unwrap()
        .max_all()
        .unwrap()
        .to_scalar()
        .unwrap();
    err / scale
}

/// Asserts [`relative_error`] <= [`RELATIVE_TOLERANCE`]; returns it.
fn assert_close(actual: &Tensor, expected: &Tensor, context: &str) -> f32 {
    let relative = relative_error(actual, expected);
    assert!(
        relative <= RELATIVE_TOLERANCE,
        "{context}: relative max error {relative} exceeds {RELATIVE_TOLERANCE}"
    );
    relative
}

struct Loaded {
    model: CtcModel,
    vocab: CtcVocab,
    extractor: FeatureExtractorConfig,
    unused: Vec<String>,
}

fn load(variant: &str) -> Loaded {
    load_dir(&fixture(variant), variant)
}

fn load_dir(dir: &Path, variant: &str) -> Loaded {
    let config = Wav2Vec2Config::from_file(&dir.join("config.json")).unwrap();
    let store = load_safetensors(&dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let model = CtcModel::load(&store, &config, DType::F32).unwrap();
    // Every linear layer is named by its checkpoint tensor.
    for (name, _) in model.linears() {
        assert!(
            store.contains(&format!("{name}.weight")),
            "{variant}: linear `{name}` has no tensor `{name}.weight`"
        );
    }
    Loaded {
        model,
        vocab: CtcVocab::from_file(&dir.join("vocab.json")).unwrap(),
        extractor: FeatureExtractorConfig::from_model_dir(dir).unwrap(),
        unused: store.report().unused,
    }
}

/// The model's logits and greedy text for each fixture clip match transformers'.
fn check_variant(variant: &str, do_normalize: bool) {
    check_dir(&fixture(variant), variant, Some(do_normalize));
}

fn check_dir(dir: &Path, variant: &str, do_normalize: Option<bool>) {
    let Loaded {
        model,
        vocab,
        extractor,
        unused,
    } = load_dir(dir, variant);
    if let Some(expected) = do_normalize {
        assert_eq!(extractor.do_normalize, expected, "{variant}: do_normalize");
    }
    // Only what transformers itself never runs in a CTC forward may be left over.
    for name in &unused {
        let expected = name.ends_with("masked_spec_embed")
            || name.ends_with("num_batches_tracked")
            || (model.config().family == Family::Conformer
                && name.contains("encoder.pos_conv_embed."));
        assert!(expected, "{variant}: tensor `{name}` was not used");
    }

    let reference =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    let clips = json["clips"].as_array().unwrap();
    assert!(!clips.is_empty());
    for (i, clip) in clips.iter().enumerate() {
        let pcm = reference[&format!("audio.{i}")]
            .to_dtype(DType::F32)
            .unwrap()
            .to_vec1::<f32>()
            .unwrap();
        let mut samples: Vec<f32> = pcm.iter().map(|&s| s / 32768.0).collect();
        if extractor.do_normalize {
            samples = normalize_waveform(&samples);
        }
        let n = samples.len();
        let waveform = Tensor::from_vec(samples, (1, n), &Device::Cpu).unwrap();
        let (logits, hidden) = model.forward_with_hidden(&waveform).unwrap();
        let expected = &reference[&format!("logits.{i}")];
        assert_eq!(logits.dims(), expected.dims(), "{variant} clip {i}: shape");
        assert_eq!(model.output_frames(n), expected.dim(1).unwrap());
        assert_eq!(hidden.len(), model.config().num_hidden_layers + 1);

        let relative = assert_close(&logits, expected, &format!("{variant} clip {i}"));
        println!("{variant} clip {i}: {n} samples, relative max error {relative:.3e}");

        if i + 1 == clips.len() {
            check_hidden_states(variant, &hidden, &reference);
        }

        let text = clip["text"].as_str().unwrap();
        let ids: Vec<u32> = clip["ids"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_u64().unwrap() as u32)
            .collect();
        assert_eq!(
            vocab.decode_ids(&ids),
            text,
            "{variant} clip {i}: decoding transformers' argmax ids"
        );
        assert_eq!(
            vocab.decode_greedy(&logits.i(0).unwrap()).unwrap(),
            text,
            "{variant} clip {i}: greedy text of whittle's logits"
        );
    }
}

/// whittle's hidden-state taps are transformers' `hidden_states` (a window of the last clip's).
fn check_hidden_states(
    variant: &str,
    hidden: &[Tensor],
    reference: &std::collections::HashMap<String, Tensor>,
) {
    assert!(
        reference.contains_key("hidden.0"),
        "{variant}: no hidden states in the fixture"
    );
    for (k, state) in hidden.iter().enumerate() {
        let expected = &reference[&format!("hidden.{k}")];
        let window = state.narrow(1, 0, expected.dim(1).unwrap()).unwrap();
        assert_close(&window, expected, &format!("{variant} hidden state {k}"));
    }
}

#[test]
fn wav2vec2_base_matches_transformers() {
    check_variant("wav2vec2-base", false);
}

#[test]
fn wav2vec2_large_matches_transformers() {
    check_variant("wav2vec2-large", true);
}

#[test]
fn hubert_base_matches_transformers() {
    check_variant("hubert-base", false);
}

#[test]
fn hubert_large_matches_transformers() {
    check_variant("hubert-large", true);
}

#[test]
fn conformer_relpos_matches_transformers() {
    check_variant("conformer-relpos", true);
}

#[test]
fn conformer_rotary_matches_transformers() {
    check_variant("conformer-rotary", false);
}

/// A fixture folder written elsewhere, e.g. a released-size random model from
/// `make_ctc_fixtures.py --full-size --out DIR` (too large to commit):
/// `WHITTLE_CTC_FIXTURE=DIR/wav2vec2-base cargo test --release -p whittle --test ctc_models -- --ignored`.
#[test]
#[ignore = "needs WHITTLE_CTC_FIXTURE, a folder written by make_ctc_fixtures.py"]
fn external_fixture_matches_transformers() {
    let dir = PathBuf::from(
        std::env::var_os("WHITTLE_CTC_FIXTURE")
            .expect("set WHITTLE_CTC_FIXTURE to a fixture folder"),
    );
    let name = dir.file_name().unwrap().to_string_lossy().into_owned();
    check_dir(&dir, &name, None);
}

/// Rows of a batch are independent: a batch of two clips gives each clip's own logits.
#[test]
fn batch_rows_match_single_clips() {
    let Loaded { model, .. } = load("conformer-relpos");
    let clip = |seed: u64| -> Vec<f32> {
        (0..3200)
            .map(|i| (i as f32 * 0.013 * (seed + 1) as f32).sin() * 0.4)
            .collect()
    };
    let (a, b) = (clip(1), clip(2));
    let batch = Tensor::from_vec([a.clone(), b.clone()].concat(), (2, 3200), &Device::Cpu).unwrap();
    let both = model.forward(&batch).unwrap();
    for (row, samples) in [a, b].into_iter().enumerate() {
        let single = model
            .forward(&Tensor::from_vec(samples, (1, 3200), &Device::Cpu).unwrap())
            .unwrap();
        let err = whittle::nn::max_abs_diff(&both.i(row..row + 1).unwrap(), &single).unwrap();
        assert!(err < 1e-4, "row {row}: max_err {err}");
    }
}

/// The positional conv's weight norm under the older `weight_g` / `weight_v` names, or already
/// folded into `weight`, loads the same model as transformers 5's parametrization names.
#[test]
fn every_weight_norm_layout_loads_the_same_model() {
    let dir = fixture("wav2vec2-base");
    let config = Wav2Vec2Config::from_file(&dir.join("config.json")).unwrap();
    let tensors =
        candle_core::safetensors::load(dir.join("model.safetensors"), &Device::Cpu).unwrap();
    let conv = "wav2vec2.encoder.pos_conv_embed.conv";
    let g_name = format!("{conv}.parametrizations.weight.original0");
    let v_name = format!("{conv}.parametrizations.weight.original1");
    let (g, v) = (tensors[&g_name].clone(), tensors[&v_name].clone());
    let without_parametrization = || {
        let mut t = tensors.clone();
        t.remove(&g_name);
        t.remove(&v_name);
        t
    };
    let mut legacy = without_parametrization();
    legacy.insert(format!("{conv}.weight_g"), g.clone());
    legacy.insert(format!("{conv}.weight_v"), v.clone());
    let mut folded = without_parametrization();
    folded.insert(
        format!("{conv}.weight"),
        whittle::models::wav2vec2::model::fold_weight_norm(&g, &v).unwrap(),
    );

    let waveform = sine_wave(4000, 0.021, 0.3);
    let logits = |tensors: std::collections::HashMap<String, Tensor>| {
        let store = whittle::checkpoint::TensorStore::new(
            "crafted",
            tensors.into_iter().collect(),
            Device::Cpu,
        );
        let model = CtcModel::load(&store, &config, DType::F32).unwrap();
        let unused = store.report().unused;
        assert!(
            unused.iter().all(|n| !n.contains("pos_conv_embed")),
            "positional conv tensors left unused: {unused:?}"
        );
        model.forward(&waveform).unwrap()
    };
    let reference = logits(tensors.clone());
    for (layout, tensors) in [("weight_g/weight_v", legacy), ("folded weight", folded)] {
        let err = whittle::nn::max_abs_diff(&logits(tensors), &reference).unwrap();
        assert!(err < 1e-6, "{layout}: max_err {err}");
    }
}

/// What the model exports loads back into the same model, with nothing left over (the
/// weight norm and batch norm arrive folded).
#[test]
fn exported_tensors_load_back_into_the_same_model() {
    let waveform = sine_wave(3000, 0.029, 0.4);
    for variant in VARIANTS {
        let Loaded { model, .. } = load(variant);
        let tensors = model.tensors().unwrap();
        let store = whittle::checkpoint::TensorStore::new("exported", tensors, Device::Cpu);
        let reloaded = CtcModel::load(&store, model.config(), DType::F32).unwrap();
        let unused = store.report().unused;
        assert!(
            unused.is_empty(),
            "{variant}: exported but unused: {unused:?}"
        );
        let err = whittle::nn::max_abs_diff(
            &reloaded.forward(&waveform).unwrap(),
            &model.forward(&waveform).unwrap(),
        )
        .unwrap();
        assert!(err < 1e-5, "{variant}: max_err {err}");
    }
}

/// Every linear layer packed to 8 bits (per-row scales) runs through the packed kernels, stays
/// close to the float model, and loads back from a store holding the packed matrices (the
/// Conformer's pointwise convs included) into the same function.
#[test]
fn packed_linear_layers_run_and_load_back() {
    use whittle::kernels::{Granularity, PackedMatrix, UniformQuantizer};
    let waveform = sine_wave(3000, 0.023, 0.4);
    for variant in VARIANTS {
        let Loaded { mut model, .. } = load(variant);
        let float_logits = model.forward(&waveform).unwrap();
        let float_tensors = model.tensors().unwrap();
        let quantizer = UniformQuantizer::symmetric(8, Granularity::PerRow).unwrap();
        let mut packed = Vec::new();
        for (name, linear) in model.linears_mut() {
            let (rows, cols) = linear.weight.dims();
            let values = linear.float_weight_values().unwrap();
            let matrix = PackedMatrix::pack(&quantizer.quantize(&values, rows, cols).unwrap());
            linear.set_packed(matrix.clone());
            packed.push((format!("{name}.weight"), matrix));
        }
        let logits = model.forward(&waveform).unwrap();
        let relative = relative_error(&logits, &float_logits);
        assert!(
            relative < 0.05,
            "{variant}: W8 logits' relative max error {relative}"
        );

        let mut tensors = float_tensors;
        for (name, _) in &packed {
            tensors.remove(name);
        }
        let mut store = whittle::checkpoint::TensorStore::new("packed", tensors, Device::Cpu);
        for (name, matrix) in packed {
            store.insert_packed(name, matrix);
        }
        let reloaded = CtcModel::load(&store, model.config(), DType::F32).unwrap();
        assert!(
            store.report().unused.is_empty(),
            "{variant}: {:?}",
            store.report().unused
        );
        let err =
            whittle::nn::max_abs_diff(&reloaded.forward(&waveform).unwrap(), &logits).unwrap();
        assert!(
            err < 1e-5,
            "{variant}: reloaded packed model differs by {err}"
        );
    }
}

/// Gradients reach every linear layer through the whole forward (feature encoder, positional conv
/// or relative positions, attention, conv module, CTC head), as training and distillation need.
#[test]
fn every_linear_layer_receives_a_gradient() {
    for variant in ["wav2vec2-large", "conformer-relpos", "conformer-rotary"] {
        let Loaded { mut model, .. } = load(variant);
        let vars: Vec<(String, candle_core::Var)> = model
            .linears_mut()
            .into_iter()
            .map(|(name, linear)| {
                let var =
                    candle_core::Var::from_tensor(&linear.weight.to_dense().unwrap()).unwrap();
                linear.weight = whittle::nn::Weight::Float(var.as_tensor().clone());
                (name, var)
            })
            .collect();
        let waveform = sine_wave(2400, 0.017, 0.5);
        let loss = model
            .forward(&waveform)
            .unwrap()
            .sqr()
            .unwrap()
            .sum_all()
            .unwrap();
        let grads = loss.backward().unwrap();
        for (name, var) in &vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{variant}: no gradient for `{name}`"));
            let size: f32 = g.abs().unwrap().sum_all().unwrap().to_scalar().unwrap();
            assert!(size > 0.0, "{variant}: zero gradient for `{name}`");
        }
    }
}

/// A clip too short for one output frame is an error, not a panic.
#[test]
fn too_short_input_is_refused() {
    let Loaded { model, .. } = load("wav2vec2-base");
    let short = Tensor::zeros((1, 10), DType::F32, &Device::Cpu).unwrap();
    let err = model.forward(&short).unwrap_err().to_string();
    assert!(err.contains("10 samples"), "{err}");
}

fn crafted_config(edit: impl FnOnce(&mut serde_json::Value)) -> (tempfile::TempDir, PathBuf) {
    let mut config: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture("wav2vec2-base").join("config.json")).unwrap(),
    )
    .unwrap();
    edit(&mut config);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    std::fs::write(&path, config.to_string()).unwrap();
    (dir, path)
}

#[test]
fn unknown_model_type_is_refused() {
    let (_dir, path) = crafted_config(|c| c["model_type"] = "speech_to_text".into());
    match Wav2Vec2Config::from_file(&path) {
        Err(e @ Error::UnknownModel { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("speech_to_text") && msg.contains("config.json"),
                "{msg}"
            );
        }
        other => panic!("expected Error::UnknownModel, got {other:?}"),
    }
}

#[test]
fn inconsistent_dims_are_refused() {
    let (_dir, path) = crafted_config(|c| {
        c["hidden_size"] = 30.into();
        c["num_attention_heads"] = 4.into();
    });
    match Wav2Vec2Config::from_file(&path) {
        Err(e @ Error::Config { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("hidden_size 30") && msg.contains("config.json"),
                "{msg}"
            );
        }
        other => panic!("expected Error::Config, got {other:?}"),
    }
}

/// A config whose vocabulary disagrees with the checkpoint's `lm_head` fails the load and names
/// the tensor.
#[test]
fn vocab_size_differing_from_lm_head_is_refused() {
    let (_dir, path) = crafted_config(|c| c["vocab_size"] = 13.into());
    let config = Wav2Vec2Config::from_file(&path).unwrap();
    let store = load_safetensors(
        &fixture("wav2vec2-base").join("model.safetensors"),
        &Device::Cpu,
    )
    .unwrap();
    match CtcModel::load(&store, &config, DType::F32) {
        Err(Error::ShapeMismatch { tensor, .. }) => assert_eq!(tensor, "lm_head.weight"),
        other => panic!("expected Error::ShapeMismatch, got {:?}", other.err()),
    }
}
