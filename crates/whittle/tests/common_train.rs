//! Training fixtures on the tiny random Whisper of `common_tiny`: the teacher, the decoder
//! prompt and short tone clips with word-token targets.

#![allow(dead_code)]

use std::path::Path;

use candle_core::{DType, Device};
use whittle::checkpoint::TensorStore;
use whittle::models::whisper::{Whisper, WhisperTokenizer};
use whittle::train::batch::{Prompt, TrainExample};

#[path = "common_tiny.rs"]
pub mod common_tiny;

use common_tiny::{config, hf_tensors, tokenizer_json, WORDS};

/// The training sections of the method tests' recipes: 7 short steps, checkpoints every 2.
pub const TRAIN: &str = r#"
[loss]
kl = 1.0
temperature = 2.0
ce = 0.5
targets = "transcript"
[optim]
lr_weights = 3e-3
lr_scales = 1e-3
weight_decay = 0.01
clip_norm = 5.0
[schedule]
steps = 7
warmup_steps = 2
min_lr_ratio = 0.1
[train]
batch_size = 2
grad_accum = 2
seed = 7
checkpoint_every = 2
"#;

pub fn teacher() -> Whisper {
    let store = TensorStore::new("tiny", hf_tensors(3), Device::Cpu);
    Whisper::load(&store, &config(), DType::F32).unwrap()
}

pub fn prompt() -> Prompt {
    let tok = WhisperTokenizer::from_json(&tokenizer_json(), "tiny").unwrap();
    Prompt {
        tokens: tok.prompt(false),
        eot: tok.eot,
    }
}

/// Headerless 16 kHz PCM files of different lengths with word-token targets.
pub fn examples(dir: &Path, n: usize) -> Vec<TrainExample> {
    (0..n)
        .map(|i| {
            let samples = 4000 + 1600 * i;
            let bytes: Vec<u8> = (0..samples)
                .flat_map(|t| {
                    let x = ((t as f32 * (0.05 + 0.01 * i as f32)).sin() * 8000.0) as i16;
                    x.to_le_bytes()
                })
                .collect();
            let audio = dir.join(format!("u{i}.raw"));
            std::fs::write(&audio, bytes).unwrap();
            TrainExample {
                augmentation: None,
                id: format!("u{i}"),
                audio,
                tokens: (0..3 + i % 4)
                    .map(|k| ((7 * i + 3 * k) % WORDS) as u32)
                    .collect(),
            }
        })
        .collect()
}

/// Encoder output and teacher-forced logits of a fixed input (batch 1, 60 frames, 4 tokens).
pub fn encoder_and_logits(model: &Whisper) -> (candle_core::Tensor, candle_core::Tensor) {
    let batch =
        whittle::train::batch::synthetic_batch(1, 60, 4, &model.config, &prompt(), &Device::Cpu)
            .unwrap();
    let enc = model.encoder.forward(&batch.features).unwrap();
    let hidden = model
        .decoder
        .forward_teacher_forced(&batch.inputs, &enc)
        .unwrap();
    let logits = model.decoder.logits(&hidden).unwrap();
    (enc, logits)
}

/// Every trainable parameter with its AdamW moments, flattened, in optimizer order.
pub fn trained_state(trainer: &whittle::train::Trainer) -> Vec<Vec<f32>> {
    let flat = |t: &candle_core::Tensor| t.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    trainer
        .optimizer
        .params
        .iter()
        .flat_map(|p| [flat(p.var.as_tensor()), flat(&p.m), flat(&p.v)])
        .collect()
}

/// Run one trainer from `make` straight through, and another killed after step 5 and resumed
/// from its checkpoint in `dir`; returns `(straight, resumed)`.
pub fn straight_and_resumed(
    make: impl Fn() -> whittle::train::Trainer,
    dir: &Path,
) -> (whittle::train::Trainer, whittle::train::Trainer) {
    use whittle::train::trainer::Silent;
    let mut straight = make();
    straight
        .run(&dir.join("straight"), None, &mut Silent)
        .unwrap();
    let killed_dir = dir.join("killed");
    make().run(&killed_dir, Some(5), &mut Silent).unwrap();
    let mut resumed = make();
    assert!(resumed.resume(&killed_dir).unwrap());
    resumed.run(&killed_dir, None, &mut Silent).unwrap();
    (straight, resumed)
}

/// Each `(from, to, field)`: the shipped recipe text contains `from`, and with it replaced by
/// `to` the recipe is refused with an error naming `field`.
pub fn assert_recipe_errors(shipped: &str, cases: &[(&str, &str, &str)]) {
    for (from, to, field) in cases {
        assert!(
            shipped.contains(from),
            "test case `{from}` not in the recipe"
        );
        let err = whittle::train::Recipe::parse(&shipped.replacen(from, to, 1), "r.toml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(field),
            "error for `{to}` does not name `{field}`: {err}"
        );
    }
}
