//! A tiny random Whisper written by the tests themselves, in Hugging Face and CTranslate2 form.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{Device, Tensor};
use whittle::checkpoint::ct2::{self, Ct2Value};
use whittle::models::whisper::WhisperConfig;

pub const D: usize = 16;
pub const HEADS: usize = 2;
pub const FFN: usize = 32;
pub const MELS: usize = 8;
pub const SOURCE_POSITIONS: usize = 1500;
pub const TARGET_POSITIONS: usize = 24;
/// 50 word tokens, then specials.
pub const WORDS: usize = 50;
pub const VOCAB: usize = 64;
pub const EOT: u32 = 50;

pub fn config() -> WhisperConfig {
    WhisperConfig {
        vocab_size: VOCAB,
        num_mel_bins: MELS,
        encoder_layers: 2,
        encoder_attention_heads: HEADS,
        decoder_layers: 2,
        decoder_attention_heads: HEADS,
        d_model: D,
        encoder_ffn_dim: FFN,
        decoder_ffn_dim: FFN,
        max_source_positions: SOURCE_POSITIONS,
        max_target_positions: TARGET_POSITIONS,
        suppress_tokens: vec![1, 2],
        begin_suppress_tokens: vec![EOT],
        activation_function: "gelu".into(),
        layer_shapes: None,
    }
}

/// Deterministic pseudo-random values in [-scale, scale].
pub fn random(shape: &[usize], seed: u64, scale: f32) -> Tensor {
    let n: usize = shape.iter().product();
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let values: Vec<f32> = (0..n)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect();
    Tensor::from_vec(values, shape, &Device::Cpu).unwrap()
}

/// Hugging Face tensors of the tiny model.
pub fn hf_tensors(seed: u64) -> BTreeMap<String, Tensor> {
    let mut t = BTreeMap::new();
    let mut s = seed;
    let mut put = |t: &mut BTreeMap<String, Tensor>, name: String, shape: &[usize], scale: f32| {
        s += 1;
        t.insert(name, random(shape, s, scale));
    };
    put(
        &mut t,
        "model.encoder.conv1.weight".into(),
        &[D, MELS, 3],
        0.3,
    );
    put(&mut t, "model.encoder.conv1.bias".into(), &[D], 0.1);
    put(&mut t, "model.encoder.conv2.weight".into(), &[D, D, 3], 0.3);
    put(&mut t, "model.encoder.conv2.bias".into(), &[D], 0.1);
    put(
        &mut t,
        "model.encoder.embed_positions.weight".into(),
        &[SOURCE_POSITIONS, D],
        0.5,
    );
    put(
        &mut t,
        "model.decoder.embed_tokens.weight".into(),
        &[VOCAB, D],
        0.5,
    );
    put(
        &mut t,
        "model.decoder.embed_positions.weight".into(),
        &[TARGET_POSITIONS, D],
        0.5,
    );
    for part in ["encoder", "decoder"] {
        put(&mut t, format!("model.{part}.layer_norm.weight"), &[D], 1.0);
        put(&mut t, format!("model.{part}.layer_norm.bias"), &[D], 0.1);
        for i in 0..2 {
            let p = format!("model.{part}.layers.{i}");
            let mut attns = vec!["self_attn"];
            if part == "decoder" {
                attns.push("encoder_attn");
            }
            for a in attns {
                for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
                    put(&mut t, format!("{p}.{a}.{proj}.weight"), &[D, D], 0.4);
                    if proj != "k_proj" {
                        put(&mut t, format!("{p}.{a}.{proj}.bias"), &[D], 0.1);
                    }
                }
                put(&mut t, format!("{p}.{a}_layer_norm.weight"), &[D], 1.0);
                put(&mut t, format!("{p}.{a}_layer_norm.bias"), &[D], 0.1);
            }
            put(&mut t, format!("{p}.fc1.weight"), &[FFN, D], 0.4);
            put(&mut t, format!("{p}.fc1.bias"), &[FFN], 0.1);
            put(&mut t, format!("{p}.fc2.weight"), &[D, FFN], 0.3);
            put(&mut t, format!("{p}.fc2.bias"), &[D], 0.1);
            put(&mut t, format!("{p}.final_layer_norm.weight"), &[D], 1.0);
            put(&mut t, format!("{p}.final_layer_norm.bias"), &[D], 0.1);
        }
    }
    t
}

/// A word-level `tokenizer.json` with Whisper's special tokens.
pub fn tokenizer_json() -> String {
    let mut vocab = serde_json::Map::new();
    for i in 0..WORDS {
        vocab.insert(format!("w{i}"), (i as u64).into());
    }
    let specials = [
        "<|endoftext|>",
        "<|startoftranscript|>",
        "<|en|>",
        "<|translate|>",
        "<|transcribe|>",
        "<|notimestamps|>",
    ];
    let mut added = Vec::new();
    for (k, s) in specials.iter().enumerate() {
        let id = WORDS + k;
        vocab.insert(s.to_string(), (id as u64).into());
        added.push(serde_json::json!({"id": id, "content": s, "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}));
    }
    for id in WORDS + specials.len()..VOCAB {
        vocab.insert(format!("<|ts{id}|>"), (id as u64).into());
    }
    serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": {"type": "WhitespaceSplit"}, "post_processor": null,
        "decoder": null, "model": {"type": "WordLevel", "vocab": vocab, "unk_token": "w0"}
    })
    .to_string()
}

/// Write the Hugging Face folder: config.json, model.safetensors, tokenizer.json.
pub fn write_hf(dir: &Path, tensors: &BTreeMap<String, Tensor>) {
    std::fs::create_dir_all(dir).unwrap();
    // As Hugging Face writes it: `model_type` names the family.
    let mut config = serde_json::to_value(config()).unwrap();
    config["model_type"] = "whisper".into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).unwrap();
    whittle::checkpoint::hf::save_safetensors(&dir.join("model.safetensors"), tensors).unwrap();
}

/// Write the CTranslate2 folder, fusing q/k/v as CTranslate2 does (k bias zero).
pub fn write_ct2(dir: &Path, tensors: &BTreeMap<String, Tensor>, f16: bool) {
    std::fs::create_dir_all(dir).unwrap();
    let c = config();
    std::fs::write(
        dir.join("config.json"),
        serde_json::json!({"suppress_ids": c.suppress_tokens, "suppress_ids_begin": c.begin_suppress_tokens, "lang_ids": []}).to_string(),
    )
    .unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).unwrap();
    let g = |n: &str| tensors[n].clone();
    let zeros = Tensor::zeros(D, candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut owned: Vec<(String, Tensor)> = vec![
        (
            "encoder/conv1/weight".into(),
            g("model.encoder.conv1.weight"),
        ),
        ("encoder/conv1/bias".into(), g("model.encoder.conv1.bias")),
        (
            "encoder/conv2/weight".into(),
            g("model.encoder.conv2.weight"),
        ),
        ("encoder/conv2/bias".into(), g("model.encoder.conv2.bias")),
        (
            "encoder/position_encodings/encodings".into(),
            g("model.encoder.embed_positions.weight"),
        ),
        (
            "encoder/layer_norm/gamma".into(),
            g("model.encoder.layer_norm.weight"),
        ),
        (
            "encoder/layer_norm/beta".into(),
            g("model.encoder.layer_norm.bias"),
        ),
        (
            "decoder/embeddings/weight".into(),
            g("model.decoder.embed_tokens.weight"),
        ),
        (
            "decoder/position_encodings/encodings".into(),
            g("model.decoder.embed_positions.weight"),
        ),
        (
            "decoder/layer_norm/gamma".into(),
            g("model.decoder.layer_norm.weight"),
        ),
        (
            "decoder/layer_norm/beta".into(),
            g("model.decoder.layer_norm.bias"),
        ),
    ];
    for part in ["encoder", "decoder"] {
        for i in 0..2 {
            let h = format!("model.{part}.layers.{i}");
            let c2 = format!("{part}/layer_{i}");
            let cat = |names: &[&str]| {
                Tensor::cat(
                    &names
                        .iter()
                        .map(|n| g(&format!("{h}.{n}")))
                        .collect::<Vec<_>>(),
                    0,
                )
                .unwrap()
            };
            owned.push((
                format!("{c2}/self_attention/linear_0/weight"),
                cat(&[
                    "self_attn.q_proj.weight",
                    "self_attn.k_proj.weight",
                    "self_attn.v_proj.weight",
                ]),
            ));
            owned.push((
                format!("{c2}/self_attention/linear_0/bias"),
                Tensor::cat(
                    &[
                        g(&format!("{h}.self_attn.q_proj.bias")),
                        zeros.clone(),
                        g(&format!("{h}.self_attn.v_proj.bias")),
                    ],
                    0,
                )
                .unwrap(),
            ));
            for (c, hf) in [
                (
                    "self_attention/linear_1/weight",
                    "self_attn.out_proj.weight",
                ),
                ("self_attention/linear_1/bias", "self_attn.out_proj.bias"),
                (
                    "self_attention/layer_norm/gamma",
                    "self_attn_layer_norm.weight",
                ),
                (
                    "self_attention/layer_norm/beta",
                    "self_attn_layer_norm.bias",
                ),
                ("ffn/layer_norm/gamma", "final_layer_norm.weight"),
                ("ffn/layer_norm/beta", "final_layer_norm.bias"),
                ("ffn/linear_0/weight", "fc1.weight"),
                ("ffn/linear_0/bias", "fc1.bias"),
                ("ffn/linear_1/weight", "fc2.weight"),
                ("ffn/linear_1/bias", "fc2.bias"),
            ] {
                owned.push((format!("{c2}/{c}"), g(&format!("{h}.{hf}"))));
            }
            if part == "decoder" {
                for (c, hf) in [
                    (
                        "attention/layer_norm/gamma",
                        "encoder_attn_layer_norm.weight",
                    ),
                    ("attention/layer_norm/beta", "encoder_attn_layer_norm.bias"),
                    ("attention/linear_0/weight", "encoder_attn.q_proj.weight"),
                    ("attention/linear_0/bias", "encoder_attn.q_proj.bias"),
                    ("attention/linear_2/weight", "encoder_attn.out_proj.weight"),
                    ("attention/linear_2/bias", "encoder_attn.out_proj.bias"),
                ] {
                    owned.push((format!("{c2}/{c}"), g(&format!("{h}.{hf}"))));
                }
                owned.push((
                    format!("{c2}/attention/linear_1/weight"),
                    cat(&["encoder_attn.k_proj.weight", "encoder_attn.v_proj.weight"]),
                ));
                owned.push((
                    format!("{c2}/attention/linear_1/bias"),
                    Tensor::cat(
                        &[zeros.clone(), g(&format!("{h}.encoder_attn.v_proj.bias"))],
                        0,
                    )
                    .unwrap(),
                ));
            }
        }
    }
    let mut vars: Vec<(String, Ct2Value)> = owned
        .iter()
        .map(|(n, t)| {
            (
                n.clone(),
                if f16 {
                    Ct2Value::F16Tensor(t)
                } else {
                    Ct2Value::F32Tensor(t)
                },
            )
        })
        .collect();
    vars.push(("encoder/num_heads".into(), Ct2Value::I16(HEADS as i16)));
    vars.push(("decoder/num_heads".into(), Ct2Value::I16(HEADS as i16)));
    vars.push(("decoder/activation".into(), Ct2Value::I8(3)));
    let aliases = vec![(
        "decoder/projection/weight".to_string(),
        "decoder/embeddings/weight".to_string(),
    )];
    ct2::write(&dir.join("model.bin"), "WhisperSpec", 3, &vars, &aliases).unwrap();
}

/// The model written to `dir` (either form), in f32, ready to transcribe with `options`.
pub fn load_transcriber(
    dir: &Path,
    options: whittle::models::whisper::DecodeOptions,
) -> whittle::models::whisper::Transcriber {
    let (model, tokenizer, _) = whittle::model_dir::WhisperCheckpoint::open(dir, &Device::Cpu)
        .unwrap()
        .build(candle_core::DType::F32)
        .unwrap();
    whittle::models::whisper::Transcriber {
        model,
        tokenizer,
        options,
    }
}
