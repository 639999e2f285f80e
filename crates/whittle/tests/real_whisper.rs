//! End-to-end on the real Whisper tiny.en fetched by `scripts/setup.sh`.
//!
//! These tests need `.assets/` (or `$WHITTLE_ASSETS`). Without it they print a note and pass,
//! unless `WHITTLE_REQUIRE_ASSETS=1` (set by `scripts/test.sh`, which CI runs), where a
//! missing asset is a failure.

mod common_assets;

use common_assets::assets;
use whittle::models::whisper::{DecodeOptions, Transcriber};

fn tiny_en(root: &std::path::Path, beam_size: usize) -> Transcriber {
    common_assets::tiny_en(
        root,
        DecodeOptions {
            beam_size,
            ..Default::default()
        },
    )
}

const JFK: &str = "And so my fellow Americans ask not what your country can do for you, ask what you can do for your country.";

#[test]
fn tiny_en_transcribes_jfk() {
    let Some(root) = assets() else { return };
    let t = tiny_en(&root, 1);
    let samples = whittle::audio::load_audio(&root.join("data/real-15/jfk.wav")).unwrap();
    let text = t.transcribe(&samples).unwrap().text;
    assert_eq!(text, JFK);
}

#[test]
fn tiny_en_beam_search_transcribes_jfk() {
    let Some(root) = assets() else { return };
    let t = tiny_en(&root, 5);
    let samples = whittle::audio::load_audio(&root.join("data/real-15/jfk.wav")).unwrap();
    assert_eq!(t.transcribe(&samples).unwrap().text, JFK);
}
