//! GPT-2 from a Hugging Face folder against transformers (issue 13 part 4: GPT-2-style
//! safetensors LMs): the fixture of `scripts/reference/make_gpt2_fixture.py` is a tiny random
//! `GPT2LMHeadModel` with its `tokenizer.json` and transformers' logits for three texts. The
//! tokenizer gives transformers' ids, the forward its logits, the training forward the same
//! logits at the scored positions, and crafted configurations are refused by name.

mod common_lm;

use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use whittle::models::gpt2::{Gpt2, Gpt2Config};
use whittle::models::lm::CausalLm;
use whittle::models::Layers;
use whittle::train::TrainExample;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gpt2")
}

#[test]
fn gpt2_matches_transformers() {
    let (model, tokenizer) = Gpt2::open(&fixture(), &Device::Cpu).unwrap();
    let reference: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("reference.json")).unwrap())
            .unwrap();
    let mut worst = 0f32;
    for case in reference["cases"].as_array().unwrap() {
        let want_ids: Vec<u32> = serde_json::from_value(case["ids"].clone()).unwrap();
        let ids = tokenizer.document(case["text"].as_str().unwrap()).unwrap();
        assert_eq!(ids, want_ids, "{}", case["text"]);
        let want: Vec<Vec<f32>> = serde_json::from_value(case["logits"].clone()).unwrap();
        let tokens = Tensor::new(ids.as_slice(), &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let got: Vec<Vec<f32>> = model
            .next_token_logits(&tokens)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        for (g, w) in got.iter().zip(&want) {
            for (a, b) in g.iter().zip(w) {
                worst = worst.max((a - b).abs());
            }
        }
    }
    assert!(worst < 1e-4, "largest logit difference {worst}");
    // The token embedding and 4 matrices per block.
    assert_eq!(model.layers().len(), 1 + 4 * 2);
    assert_eq!(model.layers()[1].linear.weight.dims(), (96, 32));
}

/// The training forward of a batch of two texts gives each text's own logits.
#[test]
fn gpt2_training_forward_is_the_inference_forward() {
    let (model, tokenizer) = Gpt2::open(&fixture(), &Device::Cpu).unwrap();
    let examples: Vec<TrainExample> = ["c c.", "a ab b 2 1 c ab ab."]
        .iter()
        .map(|t| TrainExample {
            augmentation: None,
            id: t.to_string(),
            audio: Default::default(),
            tokens: tokenizer.document(t).unwrap(),
        })
        .collect();
    common_lm::assert_training_forward_is_inference(&model, &examples);
}

#[test]
fn crafted_gpt2_configurations_are_refused() {
    let base = std::fs::read_to_string(fixture().join("config.json")).unwrap();
    let config: serde_json::Value = serde_json::from_str(&base).unwrap();
    for (field, value, expect) in [
        ("n_head", serde_json::json!(5), "n_head"),
        ("activation_function", serde_json::json!("relu"), "relu"),
        ("n_positions", serde_json::json!(1u64 << 40), "large"),
        ("n_embd", serde_json::json!(0), "n_embd"),
        (
            "scale_attn_by_inverse_layer_idx",
            serde_json::json!(true),
            "scale_attn",
        ),
        (
            "tie_word_embeddings",
            serde_json::json!(false),
            "tie_word_embeddings",
        ),
        ("add_cross_attention", serde_json::json!(true), "cross"),
    ] {
        let mut c = config.clone();
        c[field] = value;
        let err = Gpt2Config::from_json(&c.to_string(), Path::new("cfg.json"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(expect) && err.contains("cfg.json"),
            "{field}: {err}"
        );
    }
    // A checkpoint whose matrix has the wrong shape is refused naming the tensor.
    let dir = tempfile::tempdir().unwrap();
    for f in ["model.safetensors", "tokenizer.json"] {
        std::fs::copy(fixture().join(f), dir.path().join(f)).unwrap();
    }
    let mut c = config.clone();
    c["n_inner"] = serde_json::json!(64);
    std::fs::write(dir.path().join("config.json"), c.to_string()).unwrap();
    let err = match Gpt2::open(dir.path(), &Device::Cpu) {
        Ok(_) => panic!("a 64-wide feed-forward loaded from 128-wide tensors"),
        Err(e) => e.to_string(),
    };
    assert!(err.contains("mlp.c_fc"), "{err}");
}

/// A GPT-2 with packed matrices (4-bit blocks, the tied embedding at 8 bits) written to a
/// `.whittle` file of architecture `gpt2` loads back into the same function with its tokenizer;
/// the float tensors go back in Conv1D layout.
#[test]
fn packed_gpt2_round_trips_through_a_whittle_file() {
    use whittle::compress::bitmap::{BitMap, LayerFormat};
    use whittle::compress::ptq::{quantize_linears, PtqMethod};
    let (mut model, tokenizer) = Gpt2::open(&fixture(), &Device::Cpu).unwrap();
    let bit_map = BitMap::uniform(LayerFormat::uniform(4, Some(32)))
        .with_rule("wte", LayerFormat::uniform(8, Some(32)))
        .unwrap();
    quantize_linears(&mut model, &bit_map, PtqMethod::Rtn, None).unwrap();
    let ids = tokenizer.document("a ab b 2 1 c ab ab.").unwrap();
    let tokens = Tensor::new(ids.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let expected = model.next_token_logits(&tokens).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("gpt2.whittle");
    let store = whittle::checkpoint::TensorStore::new("gpt2", Default::default(), Device::Cpu);
    whittle::compress::export::write_packed(
        &store,
        &model,
        whittle::models::gpt2::ARCHITECTURE,
        &model.packed_header(&tokenizer).unwrap(),
        &[],
        &file,
    )
    .unwrap();
    let (packed, reread) = Gpt2::open_packed(&file, &Device::Cpu).unwrap();
    assert_eq!(reread.document("a ab b 2 1 c ab ab.").unwrap(), ids);
    assert!(packed
        .layers()
        .iter()
        .all(|l| matches!(l.linear.weight, whittle::nn::Weight::Packed(_))));
    let diff =
        whittle::nn::max_abs_diff(&expected, &packed.next_token_logits(&tokens).unwrap()).unwrap();
    assert!(diff < 1e-5, "packed file logits differ by {diff}");
    // A file of another architecture is refused, naming it.
    let other = dir.path().join("other.whittle");
    whittle::compress::export::write_packed(&store, &model, "llama", &[], &[], &other).unwrap();
    let err = Gpt2::open_packed(&other, &Device::Cpu)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("other.whittle") && err.contains("`llama`"),
        "{err}"
    );
}
