//! Shared by the fuzz targets: a scratch folder in memory (`/dev/shm` where it exists), the
//! tiny Whisper's fixed files, and the bounds the harness sets.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use candle_core::{DType, Device};
use whittle::model_dir::WhisperCheckpoint;

/// The tiny test tokenizer (50 words + Whisper's special tokens), written by
/// `crates/whittle/tests/fuzz_seeds.rs`.
pub const TOKENIZER: &str = include_str!("../seeds/tokenizer.json");
/// The CTranslate2 `config.json` beside the tiny `model.bin`.
pub const CT2_CONFIG: &str = include_str!("../seeds/ct2-config.json");

/// A folder of this process's own, created once.
pub fn scratch() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = if Path::new("/dev/shm").is_dir() {
            PathBuf::from("/dev/shm")
        } else {
            std::env::temp_dir()
        };
        let dir = base.join(format!("whittle-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch folder");
        dir
    })
}

/// A folder `name` in the scratch folder holding `files`.
pub fn folder(name: &str, files: &[(&str, &[u8])]) -> PathBuf {
    let dir = scratch().join(name);
    std::fs::create_dir_all(&dir).expect("scratch subfolder");
    for (file, bytes) in files {
        std::fs::write(dir.join(file), bytes).expect("scratch write");
    }
    dir
}

/// Opens and builds the model at `path` as the commands do: a Whisper checkpoint through its
/// builder, any `.whittle` family through the registry (Whisper, the CTC encoders with their
/// per-layer shapes) and the language-model reader (`llama`, `gpt2`); errors are expected, panics
/// are findings.
pub fn load_model(path: &Path) {
    if let Ok(checkpoint) = WhisperCheckpoint::open(path, &Device::Cpu) {
        let _ = checkpoint.build(DType::F32);
    }
    let _ = whittle::models::registry::open(path, &Device::Cpu, DType::F32);
    let _ = whittle::models::lm::AnyLm::open_packed(path, &Device::Cpu);
}
