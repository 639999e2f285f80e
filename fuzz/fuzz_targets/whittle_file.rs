//! The `.whittle` reader (every validation of `PackedFile::open`), its accessors, and model load.
#![no_main]

mod common;

use libfuzzer_sys::fuzz_target;
use whittle::packed_file::PackedFile;

fuzz_target!(|data: &[u8]| {
    let dir = common::folder("whittle", &[("model.whittle", data)]);
    let path = dir.join("model.whittle");
    let Ok(file) = PackedFile::open(&path) else {
        return;
    };
    // Accessors cannot fail on content once `open` succeeded (module docs): exercise them.
    for entry in file.tensors() {
        let _ = file.float(&entry.name).map(|t| t.to_f32_vec());
        if let Ok(matrix) = file.packed(&entry.name) {
            let _ = matrix.dequantize();
            let _ = matrix.to_owned().map(|m| m.unpack());
        }
    }
    let _ = file.summaries();
    common::load_model(&path);
});
