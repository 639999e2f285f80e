//! whisper.cpp's model file: the strict reader (`GgmlWhisperFile::parse`), every tensor's
//! dequantization, the import (`checkpoint`: the tokenizer rebuilt from the vocabulary, packed
//! blocks) and the model load through the registry.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use whittle::models::whisper::ggml::GgmlWhisperFile;

fuzz_target!(|data: &[u8]| {
    let dir = common::folder("ggml", &[("ggml-model.bin", data)]);
    let path = dir.join("ggml-model.bin");
    let Ok(file) = GgmlWhisperFile::parse(&path, data.to_vec()) else {
        return;
    };
    for info in &file.tensors {
        let _ = file.values(info);
    }
    let _ = file.checkpoint(&candle_core::Device::Cpu);
    common::load_model(&path);
});
