//! The CTC fixtures (tiny random wav2vec2, HuBERT and Conformer checkpoints with transformers'
//! references, `tests/fixtures/ctc`) and short tone clips to train them on.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};
use whittle::data::Utterance;
use whittle::models::registry::{self, LoadedModel};
use whittle::models::wav2vec2::CtcRecognizer;
use whittle::train::batch::TrainExample;

/// Every fixture variant.
pub const VARIANTS: [&str; 6] = [
    "wav2vec2-base",
    "wav2vec2-large",
    "hubert-base",
    "hubert-large",
    "conformer-relpos",
    "conformer-rotary",
];

pub fn fixture(variant: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/ctc")
        .join(variant)
}

/// A checkpoint folder or `.whittle` file through the registry, in f32.
pub fn open(path: &Path) -> LoadedModel {
    registry::open(path, &Device::Cpu, DType::F32).unwrap()
}

/// The recognizer inside a loaded CTC model.
pub fn recognizer(model: &LoadedModel) -> &CtcRecognizer {
    model
        .model
        .as_any()
        .downcast_ref::<CtcRecognizer>()
        .expect("a CTC fixture loads as a CtcRecognizer")
}

/// A fixture's recognizer, owned (a teacher).
pub fn teacher(variant: &str) -> CtcRecognizer {
    recognizer(&open(&fixture(variant))).clone()
}

/// Tone clips of different lengths (16 kHz s16le `.raw` in `dir`), as training examples (no
/// tokens: CTC distils frame posteriors) and as a dev set.
pub fn clips(dir: &Path, n: usize) -> (Vec<TrainExample>, Vec<Utterance>) {
    let mut examples = Vec::new();
    let mut dev = Vec::new();
    for i in 0..n {
        let samples = 3200 + 800 * i;
        let bytes: Vec<u8> = (0..samples)
            .flat_map(|t| {
                let x = ((t as f32 * (0.03 + 0.02 * i as f32)).sin() * 6000.0) as i16;
                x.to_le_bytes()
            })
            .collect();
        let audio = dir.join(format!("c{i}.raw"));
        std::fs::write(&audio, bytes).unwrap();
        let utterance = Utterance {
            id: format!("c{i}"),
            audio,
            text: Some("a n".into()),
        };
        examples.push(TrainExample::audio_only(&utterance));
        dev.push(utterance);
    }
    (examples, dev)
}
