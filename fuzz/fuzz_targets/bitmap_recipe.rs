//! Bit-map and recipe parsing: the first byte picks a TOML bit map (resolved against the tiny
//! Whisper's layer names), a JSON bit map, or a recipe; the rest is the text.
#![no_main]

use std::sync::OnceLock;

use candle_core::DType;
use libfuzzer_sys::fuzz_target;
use whittle::compress::bitmap::BitMap;
use whittle::compress::ptq::quantizable_layers;
use whittle::models::whisper::{Whisper, TOKEN_EMBEDDING};
use whittle::train::recipe::Recipe;

#[path = "../../crates/whittle/tests/common_tiny.rs"]
mod common_tiny;

/// Layer paths of the tests' tiny Whisper, as `quantize` resolves bit maps against them.
fn layers() -> &'static [String] {
    static LAYERS: OnceLock<Vec<String>> = OnceLock::new();
    LAYERS.get_or_init(|| {
        let store = whittle::checkpoint::TensorStore::new(
            "tiny",
            common_tiny::hf_tensors(1),
            candle_core::Device::Cpu,
        );
        let mut model = Whisper::load(&store, &common_tiny::config(), DType::F32).unwrap();
        quantizable_layers(&mut model)
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&pick, text)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(text) else {
        return;
    };
    match pick % 3 {
        0 => {
            if let Ok(value) = toml::from_str::<serde_json::Value>(text) {
                if let Ok(map) = BitMap::from_value(&value, "fuzz.toml") {
                    let _ = map.resolve(layers(), &[TOKEN_EMBEDDING]);
                }
            }
        }
        1 => {
            if let Ok(value) = serde_json::from_str::<serde_json::Value>(text) {
                if let Ok(map) = BitMap::from_value(&value, "fuzz.json") {
                    let _ = map.resolve(layers(), &[TOKEN_EMBEDDING]);
                }
            }
        }
        _ => {
            if let Ok(recipe) = Recipe::parse(text, "fuzz.toml") {
                let _ = recipe.to_toml();
            }
        }
    }
});
