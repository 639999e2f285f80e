//! Loading the same tiny random Whisper from CTranslate2 and Hugging Face files.

mod common_tiny;

use candle_core::{DType, Device, Tensor};
use common_tiny::*;
use whittle::model_dir::{ModelFormat, WhisperCheckpoint};
use whittle::models::whisper::{DecodeOptions, Transcriber, Whisper};
use whittle::nn::max_abs_diff;

fn load(
    dir: &std::path::Path,
) -> (
    Whisper,
    whittle::checkpoint::LoadReport,
    whittle::models::whisper::WhisperTokenizer,
) {
    let ck = WhisperCheckpoint::open(dir, &Device::Cpu).unwrap();
    let (m, t, r) = ck.build(DType::F32).unwrap();
    (m, r, t)
}

fn logits(model: &Whisper) -> Tensor {
    let mel = random(&[1, MELS, 40], 99, 1.0);
    let enc = model.encoder.forward(&mel).unwrap();
    let mut cache = model.decoder.new_cache(&enc).unwrap();
    let tokens = Tensor::new(&[[51u32, 55, 3, 7, 9]], &Device::Cpu).unwrap();
    let hidden = model.decoder.forward_hidden(&tokens, &mut cache).unwrap();
    model.decoder.logits(&hidden).unwrap()
}

#[test]
fn ct2_and_safetensors_give_identical_logits() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = hf_tensors(7);
    write_hf(&dir.path().join("hf"), &tensors);
    write_ct2(&dir.path().join("ct2"), &tensors, false);
    let (hf, hf_report, _) = load(&dir.path().join("hf"));
    let (ct2, ct2_report, _) = load(&dir.path().join("ct2"));
    assert!(
        hf_report.unused.is_empty(),
        "unused: {:?}",
        hf_report.unused
    );
    assert!(
        ct2_report.unused.is_empty(),
        "unused: {:?}",
        ct2_report.unused
    );
    let (a, b) = (logits(&hf), logits(&ct2));
    assert_eq!(a.dims(), &[1, 5, VOCAB]);
    assert_eq!(
        max_abs_diff(&a, &b).unwrap(),
        0.0,
        "CT2 and HF logits differ"
    );
}

/// f16 storage rounds weights; logits must agree to within what that rounding allows.
const F16_LOGIT_TOL: f32 = 2e-2;

#[test]
fn f16_ct2_matches_f32_within_rounding() {
    let dir = tempfile::tempdir().unwrap();
    let tensors = hf_tensors(11);
    write_hf(&dir.path().join("hf"), &tensors);
    write_ct2(&dir.path().join("ct2"), &tensors, true);
    let ck = WhisperCheckpoint::open(&dir.path().join("ct2"), &Device::Cpu).unwrap();
    assert_eq!(ck.location.format, ModelFormat::CTranslate2);
    assert_eq!(
        ck.store.stored_dtype("model.decoder.embed_tokens.weight"),
        Some(DType::F16),
        "f16 must stay f16 in the store"
    );
    let (ct2, _, _) = ck.build(DType::F32).unwrap();
    let (hf, _, _) = load(&dir.path().join("hf"));
    let diff = max_abs_diff(&logits(&hf), &logits(&ct2)).unwrap();
    assert!(
        diff > 0.0 && diff < F16_LOGIT_TOL,
        "max_err {diff} outside (0, {F16_LOGIT_TOL})"
    );
}

#[test]
fn unused_tensors_are_reported_and_missing_ones_named() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = hf_tensors(3);
    tensors.insert("extra.tensor".into(), random(&[2], 1, 1.0));
    write_hf(dir.path(), &tensors);
    let (_, report, _) = load(dir.path());
    assert_eq!(report.unused, vec!["extra.tensor".to_string()]);

    tensors.remove("model.decoder.layers.1.fc2.bias");
    write_hf(dir.path(), &tensors);
    let err = WhisperCheckpoint::open(dir.path(), &Device::Cpu)
        .unwrap()
        .build(DType::F32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.decoder.layers.1.fc2.bias"), "{err}");
}

#[test]
fn wrong_shape_names_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let mut tensors = hf_tensors(3);
    tensors.insert(
        "model.encoder.layers.0.fc1.weight".into(),
        random(&[FFN + 1, D], 1, 1.0),
    );
    write_hf(dir.path(), &tensors);
    let err = WhisperCheckpoint::open(dir.path(), &Device::Cpu)
        .unwrap()
        .build(DType::F32)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("model.encoder.layers.0.fc1.weight") && err.contains("33"),
        "{err}"
    );
}

#[test]
fn greedy_and_beam_decoding_run_and_agree_on_a_peaked_model() {
    let dir = tempfile::tempdir().unwrap();
    write_ct2(dir.path(), &hf_tensors(5), false);
    let (model, _, tokenizer) = load(dir.path());
    let mut t = Transcriber {
        model,
        tokenizer,
        options: DecodeOptions {
            beam_size: 1,
            max_new_tokens: Some(8),
            ..Default::default()
        },
    };
    let mel = random(&[1, MELS, 3000], 4, 1.0);
    let greedy = t.decode_window(&mel).unwrap();
    assert!(greedy.len() <= 8);
    assert!(
        greedy.iter().all(|&tok| tok < EOT && tok != 1 && tok != 2),
        "suppressed or special token produced: {greedy:?}"
    );
    t.options.beam_size = 5;
    let beam = t.decode_window(&mel).unwrap();
    assert!(beam.len() <= 8);
    assert!(beam.iter().all(|&tok| tok < EOT));
    // Beam search with width 1 must reproduce greedy decoding exactly.
    let encoded = t.model.encoder.forward(&mel).unwrap();
    assert_eq!(t.beam_search(&encoded, 1).unwrap(), greedy);
}

#[test]
fn model_folder_errors_are_clear() {
    let dir = tempfile::tempdir().unwrap();
    let err = WhisperCheckpoint::open(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("model.bin") && err.contains("model.safetensors"),
        "{err}"
    );
    let err = WhisperCheckpoint::open(&dir.path().join("nope"), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("no such"), "{err}");
    std::fs::write(dir.path().join("model.safetensors"), b"garbage").unwrap();
    std::fs::write(
        dir.path().join("config.json"),
        serde_json::to_string(&config()).unwrap(),
    )
    .unwrap();
    std::fs::write(dir.path().join("tokenizer.json"), tokenizer_json()).unwrap();
    let err = WhisperCheckpoint::open(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("model.safetensors"), "{err}");
    std::fs::write(dir.path().join("config.json"), "{\"d_model\": 0}").unwrap();
    let err = WhisperCheckpoint::open(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("config.json"), "{err}");
}

#[test]
fn long_form_decoding_is_timed_monotonic_and_reproducible() {
    use whittle::models::whisper::{FallbackOptions, LongFormOptions};
    let dir = tempfile::tempdir().unwrap();
    write_ct2(dir.path(), &hf_tensors(5), false);
    let (model, _, tokenizer) = load(dir.path());
    let timestamp_begin = tokenizer.timestamp_begin;
    let t = Transcriber {
        model,
        tokenizer,
        options: DecodeOptions {
            max_new_tokens: Some(6),
            ..Default::default()
        },
    };
    // 31 s: more than one window.
    let samples: Vec<f32> = (0..16_000 * 31)
        .map(|i| 0.3 * ((i as f32) * 0.031).sin() * ((i as f32) * 0.0007).cos())
        .collect();
    let options = |seed| LongFormOptions {
        fallback: FallbackOptions {
            temperatures: vec![0.0, 0.5, 1.0],
            best_of: 2,
            seed,
            ..Default::default()
        },
        ..Default::default()
    };
    let a = t.transcribe_long_form(&samples, &options(1)).unwrap();
    assert!(a.window_tokens.len() >= 2, "31 s must take several windows");
    for tokens in &a.window_tokens {
        assert!(
            tokens
                .iter()
                .all(|&tok| tok < EOT || tok >= timestamp_begin),
            "special token sampled: {tokens:?}"
        );
    }
    let mut last_start = 0.0;
    for s in &a.segments {
        assert!(s.start <= s.end && s.end <= a.duration, "{s:?}");
        assert!(
            s.start >= last_start,
            "segments out of order: {:?}",
            a.segments
        );
        last_start = s.start;
    }
    assert_eq!(a, t.transcribe_long_form(&samples, &options(1)).unwrap());
}
