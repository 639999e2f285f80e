//! The CTranslate2 reader and the Whisper converter: `model.bin` from the input, beside the tiny
//! model's `config.json` and `tokenizer.json`.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = common::folder(
        "ct2",
        &[
            ("model.bin", data),
            ("config.json", common::CT2_CONFIG.as_bytes()),
            ("tokenizer.json", common::TOKENIZER.as_bytes()),
        ],
    );
    common::load_model(&dir);
});
