//! Checkpoints whose tokenizer or config would overflow integer arithmetic (issue 17): each is
//! refused at load with an error that names the file and the field, in debug builds (overflow
//! checks on) as in release.

mod common_tiny;

use candle_core::Device;
use common_tiny::*;
use whittle::model_dir::WhisperCheckpoint;
use whittle::models::whisper::{DecodeOptions, LongFormOptions, Transcriber};

/// The tiny model's `tokenizer.json` with the special token `special` moved to id `id`.
fn tokenizer_with(special: &str, id: u32) -> String {
    let mut json: serde_json::Value = serde_json::from_str(&tokenizer_json()).unwrap();
    json["model"]["vocab"][special] = id.into();
    for added in json["added_tokens"].as_array_mut().unwrap() {
        if added["content"] == special {
            added["id"] = id.into();
        }
    }
    json.to_string()
}

/// Open and build the checkpoint in `dir`, then transcribe half a second of noise greedily
/// and with long-form decoding: every step that could overflow runs.
fn load_and_transcribe(dir: &std::path::Path) -> Result<(), whittle::Error> {
    let (model, tokenizer, _) =
        WhisperCheckpoint::open(dir, &Device::Cpu)?.build(candle_core::DType::F32)?;
    let samples: Vec<f32> = (0..8000)
        .map(|i| ((i * 7919) % 200) as f32 / 1000.0)
        .collect();
    for long_form in [None, Some(LongFormOptions::default())] {
        let t = Transcriber {
            model: model.clone(),
            tokenizer: tokenizer.clone(),
            options: DecodeOptions {
                max_new_tokens: Some(3),
                long_form,
                ..DecodeOptions::default()
            },
        };
        t.transcribe(&samples)?;
    }
    Ok(())
}

#[test]
fn the_unmodified_tiny_model_transcribes() {
    let dir = tempfile::tempdir().unwrap();
    write_hf(dir.path(), &hf_tensors(1));
    load_and_transcribe(dir.path()).unwrap();
}

#[test]
fn special_token_id_u32_max_is_refused() {
    for special in ["<|notimestamps|>", "<|endoftext|>", "<|startoftranscript|>"] {
        let dir = tempfile::tempdir().unwrap();
        write_hf(dir.path(), &hf_tensors(1));
        std::fs::write(
            dir.path().join("tokenizer.json"),
            tokenizer_with(special, u32::MAX),
        )
        .unwrap();
        let msg = load_and_transcribe(dir.path())
            .err()
            .unwrap_or_else(|| panic!("{special} = u32::MAX accepted"))
            .to_string();
        assert!(msg.contains("tokenizer.json"), "names the file: {msg}");
        assert!(msg.contains(special), "names the token: {msg}");
    }
}

#[test]
fn special_token_outside_the_vocabulary_is_refused() {
    // In range for u32 but past the model's output rows: logits would be indexed out of bounds.
    let dir = tempfile::tempdir().unwrap();
    write_hf(dir.path(), &hf_tensors(1));
    std::fs::write(
        dir.path().join("tokenizer.json"),
        tokenizer_with("<|endoftext|>", VOCAB as u32),
    )
    .unwrap();
    let msg = load_and_transcribe(dir.path()).unwrap_err().to_string();
    assert!(
        msg.contains("<|endoftext|>") && msg.contains("vocab"),
        "{msg}"
    );
}

#[test]
fn max_target_positions_too_small_is_refused() {
    for positions in [1usize, 2] {
        let dir = tempfile::tempdir().unwrap();
        let mut tensors = hf_tensors(1);
        tensors.insert(
            "model.decoder.embed_positions.weight".into(),
            random(&[positions, D], 9, 0.5),
        );
        write_hf(dir.path(), &tensors);
        let mut config = config();
        config.max_target_positions = positions;
        let config_path = dir.path().join("config.json");
        std::fs::write(&config_path, serde_json::to_string(&config).unwrap()).unwrap();
        let msg = load_and_transcribe(dir.path())
            .err()
            .unwrap_or_else(|| panic!("max_target_positions {positions} accepted"))
            .to_string();
        assert!(msg.contains("config.json"), "names the file: {msg}");
        assert!(
            msg.contains("max_target_positions"),
            "names the field: {msg}"
        );
    }
}
