//! End-to-end on the real Whisper tiny.en fetched by `scripts/setup.sh`.
//!
//! These tests need `.assets/` (or `$WHITTLE_ASSETS`). Without it they print a note and pass,
//! unless `WHITTLE_REQUIRE_ASSETS=1` (set by `scripts/test.sh`, which CI runs), where a
//! missing asset is a failure.

use std::path::PathBuf;

use candle_core::{DType, Device};
use whittle::model_dir::WhisperCheckpoint;
use whittle::models::whisper::{DecodeOptions, Transcriber};

fn assets() -> Option<PathBuf> {
    let root = std::env::var_os("WHITTLE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.assets"));
    let ok = root.join("models/whisper-tiny.en/model.bin").is_file()
        && root.join("data/real-15.jsonl").is_file();
    if ok {
        return Some(root);
    }
    if std::env::var("WHITTLE_REQUIRE_ASSETS").as_deref() == Ok("1") {
        panic!(
            "assets missing under {}: run scripts/setup.sh --models-only",
            root.display()
        );
    }
    eprintln!(
        "note: skipping: no assets under {} (run scripts/setup.sh)",
        root.display()
    );
    None
}

fn tiny_en(root: &std::path::Path, beam_size: usize) -> Transcriber {
    let ck = WhisperCheckpoint::open(&root.join("models/whisper-tiny.en"), &Device::Cpu).unwrap();
    let (model, tokenizer, report) = ck.build(DType::F32).unwrap();
    assert!(
        report.unused.is_empty(),
        "tiny.en load left tensors unused: {:?}",
        report.unused
    );
    Transcriber {
        model,
        tokenizer,
        options: DecodeOptions {
            beam_size,
            ..Default::default()
        },
    }
}

const JFK: &str = "And so my fellow Americans ask not what your country can do for you, ask what you can do for your country.";

#[test]
fn tiny_en_transcribes_jfk() {
    let Some(root) = assets() else { return };
    let t = tiny_en(&root, 1);
    let samples = whittle::audio::load_audio(&root.join("data/real-15/jfk.wav")).unwrap();
    let text = t.transcribe(&samples).unwrap().text;
    assert_eq!(text, JFK);
}

#[test]
fn tiny_en_beam_search_transcribes_jfk() {
    let Some(root) = assets() else { return };
    let t = tiny_en(&root, 5);
    let samples = whittle::audio::load_audio(&root.join("data/real-15/jfk.wav")).unwrap();
    assert_eq!(t.transcribe(&samples).unwrap().text, JFK);
}
