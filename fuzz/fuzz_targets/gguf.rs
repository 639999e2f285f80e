//! The GGUF reader (every bounds check of `GgufFile::parse`), dequantization of each tensor, and
//! the Llama configuration, tokenizer and model built from it, with one forward of a short
//! prompt when all of them load.
#![no_main]

use std::path::Path;

use candle_core::{Device, Tensor};
use libfuzzer_sys::fuzz_target;
use whittle::checkpoint::gguf::GgufFile;
use whittle::models::lm::CausalLm;
use whittle::models::llama::{Llama, LlamaTokenizer};

fuzz_target!(|data: &[u8]| {
    let Ok(file) = GgufFile::parse(Path::new("fuzz.gguf"), data.to_vec()) else {
        return;
    };
    for info in &file.tensors {
        let _ = file.values(info);
    }
    let tokenizer = LlamaTokenizer::from_gguf(&file);
    let Ok((model, _)) = Llama::from_gguf(&file, &Device::Cpu) else {
        return;
    };
    let Ok(tokenizer) = tokenizer else {
        return;
    };
    let Ok(ids) = tokenizer.encode("a b 12") else {
        return;
    };
    if ids.is_empty() || ids.len() > model.context_length() {
        return;
    }
    if let Ok(tokens) = Tensor::new(ids.as_slice(), &Device::Cpu).and_then(|t| t.unsqueeze(0)) {
        let _ = model.hidden(&tokens);
    }
    let _ = tokenizer.decode(&ids);
});
