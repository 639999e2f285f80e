//! The tiny random Whisper of `common_tiny` widened to 64 features (FFN 128), so that group-64
//! scales divide every layer's input width; and a few short clips with transcripts.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use whittle::models::whisper::WhisperConfig;

#[path = "common_tiny.rs"]
pub mod common_tiny;

pub const WIDE_D: usize = 64;
pub const WIDE_FFN: usize = 128;

pub fn wide_config() -> WhisperConfig {
    WhisperConfig {
        d_model: WIDE_D,
        encoder_ffn_dim: WIDE_FFN,
        decoder_ffn_dim: WIDE_FFN,
        ..common_tiny::config()
    }
}

/// `common_tiny::hf_tensors` with every 16 (model width) made 64 and every 32 (FFN) made 128,
/// fresh random values at each tensor's original scale.
pub fn wide_tensors(seed: u64) -> BTreeMap<String, Tensor> {
    resized_tensors(seed, WIDE_D, WIDE_FFN)
}

/// `common_tiny::hf_tensors` with model width `d` and FFN width `ffn`, fresh random values at
/// each tensor's original scale.
pub fn resized_tensors(seed: u64, d: usize, ffn: usize) -> BTreeMap<String, Tensor> {
    common_tiny::hf_tensors(seed)
        .into_iter()
        .enumerate()
        .map(|(i, (name, t))| {
            let shape: Vec<usize> = t
                .dims()
                .iter()
                .map(|&dim| match dim {
                    common_tiny::D => d,
                    common_tiny::FFN => ffn,
                    other => other,
                })
                .collect();
            let scale = t
                .abs()
                .unwrap()
                .max_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            let fresh = common_tiny::random(&shape, seed * 1000 + i as u64, scale);
            (name, fresh)
        })
        .collect()
}

/// Write the widened model as a Hugging Face folder.
pub fn write_wide_hf(dir: &Path, seed: u64) {
    std::fs::create_dir_all(dir).unwrap();
    let mut config = serde_json::to_value(wide_config()).unwrap();
    config["model_type"] = "whisper".into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), common_tiny::tokenizer_json()).unwrap();
    whittle::checkpoint::hf::save_safetensors(&dir.join("model.safetensors"), &wide_tensors(seed))
        .unwrap();
}

/// `n` clips of 0.5-1 s (16 kHz s16le `.raw`, a tone plus noise) and a JSONL manifest with
/// word-token transcripts; returns the manifest.
pub fn write_clips(dir: &Path, n: usize) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let mut manifest = String::new();
    for u in 0..n {
        let samples = 8_000 + 2_000 * u;
        let mut state = 777u32 + u as u32;
        let bytes: Vec<u8> = (0..samples)
            .flat_map(|i| {
                state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                let noise = (state >> 16) as f32 / 65536.0 - 0.5;
                let tone = (i as f32 * 0.03 * (u + 1) as f32).sin();
                (((0.3 * tone + 0.2 * noise) * 20000.0) as i16).to_le_bytes()
            })
            .collect();
        let name = format!("clip{u}.raw");
        std::fs::write(dir.join(&name), bytes).unwrap();
        let words: Vec<String> = (0..3 + u)
            .map(|w| format!("w{}", (7 * u + 3 * w) % 40 + 1))
            .collect();
        manifest.push_str(
            &serde_json::json!({"id": format!("clip{u}"), "audio": name, "text": words.join(" ")})
                .to_string(),
        );
        manifest.push('\n');
    }
    let path = dir.join("clips.jsonl");
    std::fs::write(&path, manifest).unwrap();
    path
}
