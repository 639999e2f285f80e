//! Hugging Face loading: `config.json` and `model.safetensors` from the input (u32 LE length of
//! the config, the config, then the safetensors bytes), beside the tiny model's tokenizer.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((len, rest)) = data.split_first_chunk::<4>() else {
        return;
    };
    let len = (u32::from_le_bytes(*len) as usize).min(rest.len());
    let (config, safetensors) = rest.split_at(len);
    let dir = common::folder(
        "hf",
        &[
            ("config.json", config),
            ("model.safetensors", safetensors),
            ("tokenizer.json", common::TOKENIZER.as_bytes()),
        ],
    );
    common::load_model(&dir);
});
