//! The real assets fetched by `scripts/setup.sh` (`$WHITTLE_ASSETS`, default `.assets/`).

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use whittle::model_dir::WhisperCheckpoint;
use whittle::models::whisper::{DecodeOptions, Transcriber};

/// The assets folder when tiny.en and real-15 are there. Without them the caller skips with a
/// note, unless `WHITTLE_REQUIRE_ASSETS=1` (CI), where a missing asset is a failure.
pub fn assets() -> Option<PathBuf> {
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

/// SmolLM2-135M-Instruct's GGUF file under `root`, or `None` (with a note) when setup.sh has not
/// fetched it; a missing file fails under `WHITTLE_REQUIRE_ASSETS=1`.
pub fn smollm2(root: &Path) -> Option<PathBuf> {
    let path = root.join("models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf");
    if path.is_file() {
        return Some(path);
    }
    assert!(
        std::env::var("WHITTLE_REQUIRE_ASSETS").as_deref() != Ok("1"),
        "{} missing: run scripts/setup.sh --models-only",
        path.display()
    );
    eprintln!(
        "note: skipping: {} missing (run scripts/setup.sh)",
        path.display()
    );
    None
}

/// Whisper tiny.en in f32, checking that every tensor of the checkpoint was used.
pub fn tiny_en(root: &Path, options: DecodeOptions) -> Transcriber {
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
        options,
    }
}
