//! The model seam: the registry picks the family, Whisper runs through `SpeechModel`, and
//! crafted folders and files are refused by name.

mod common_tiny;

use candle_core::{DType, Device};
use common_tiny::*;
use whittle::models::registry::{self, Family};
use whittle::models::whisper::{DecodeOptions, Transcriber};
use whittle::models::{LayerRole, Layers};

/// Half a second of a tone plus deterministic noise.
fn clip(seed: u32) -> Vec<f32> {
    (0..8000u32)
        .map(|i| {
            let noise = ((i.wrapping_mul(2654435761).wrapping_add(seed) >> 16) % 1000) as f32;
            0.3 * (i as f32 * 0.05).sin() + 0.001 * (noise - 500.0)
        })
        .collect()
}

#[test]
fn registry_loads_whisper_that_transcribes_as_the_direct_path() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = hf_tensors(5);
    write_hf(&dir.path().join("hf"), &tensors);
    write_ct2(&dir.path().join("ct2"), &tensors, false);
    for form in ["hf", "ct2"] {
        let path = dir.path().join(form);
        let loaded = registry::open(&path, &Device::Cpu, DType::F32).unwrap();
        assert_eq!(loaded.family, Family::Whisper, "{form}");
        assert_eq!(loaded.model.architecture(), "whisper");
        assert!(loaded.model.summary().contains("d_model 16"), "{form}");
        let direct: Transcriber = load_transcriber(&path, DecodeOptions::default());
        let clips = [clip(1), clip(2)];
        let refs: Vec<&[f32]> = clips.iter().map(|c| c.as_slice()).collect();
        let through_seam = loaded.model.transcribe_batch(&refs).unwrap();
        let expected: Vec<String> = clips
            .iter()
            .map(|c| direct.transcribe(c).unwrap().text)
            .collect();
        assert_eq!(through_seam, expected, "{form}");
        // The family header holds what loads the model back.
        let keys: Vec<&str> = loaded
            .family_header
            .iter()
            .map(|(k, _)| k.as_str())
            .collect();
        assert_eq!(keys, ["config", "tokenizer"], "{form}");
    }
}

#[test]
fn whisper_layers_have_roles_in_quantization_order() {
    let dir = tempfile::tempdir().unwrap();
    write_hf(dir.path(), &hf_tensors(6));
    let mut transcriber = load_transcriber(dir.path(), DecodeOptions::default());
    let names: Vec<String> = transcriber
        .model
        .quantizable_mut()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    let layers = transcriber.layers();
    let seam_names: Vec<String> = layers.iter().map(|l| l.name.clone()).collect();
    assert_eq!(seam_names, names);
    let role = |name: &str| layers.iter().find(|l| l.name == name).unwrap().role;
    assert_eq!(
        role("model.encoder.layers.0.self_attn.k_proj"),
        LayerRole::AttentionKey
    );
    assert_eq!(
        role("model.decoder.layers.0.encoder_attn.out_proj"),
        LayerRole::AttentionOutput
    );
    assert_eq!(
        role("model.decoder.layers.0.fc2"),
        LayerRole::FeedForwardOut
    );
    assert_eq!(
        role("model.decoder.embed_tokens"),
        LayerRole::TokenEmbedding
    );
    let defaults = layers
        .iter()
        .filter(|l| !l.role.quantized_by_default())
        .count();
    assert_eq!(defaults, 1, "only the embedding waits for an exact rule");
}

fn open_err(path: &std::path::Path) -> String {
    registry::open(path, &Device::Cpu, DType::F32)
        .map(|_| ())
        .unwrap_err()
        .to_string()
}

#[test]
fn unknown_families_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    write_hf(dir.path(), &hf_tensors(3));
    let config_path = dir.path().join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&config_path).unwrap()).unwrap();
    config["model_type"] = "speech_to_text_9000".into();
    std::fs::write(&config_path, config.to_string()).unwrap();
    let err = open_err(dir.path());
    assert!(
        err.contains("speech_to_text_9000") && err.contains("config.json"),
        "{err}"
    );
    config.as_object_mut().unwrap().remove("model_type");
    std::fs::write(&config_path, config.to_string()).unwrap();
    let err = open_err(dir.path());
    assert!(err.contains("no `model_type`"), "{err}");

    let file = dir.path().join("odd.whittle");
    let mut writer = whittle::packed_file::PackedFileWriter::new("wav2vec9");
    writer
        .add_float("x", &[2], whittle::packed_file::FloatDtype::F32, &[0u8; 8])
        .unwrap();
    writer.write(&file).unwrap();
    let err = open_err(&file);
    assert!(
        err.contains("wav2vec9") && err.contains("odd.whittle"),
        "{err}"
    );
}
