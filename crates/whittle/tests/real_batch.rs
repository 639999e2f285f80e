//! Batched greedy decoding of real speech gives the sequential decoder's tokens, token for token:
//! Whisper tiny.en on real-15, in f32 and packed (W4 g64 linears, W8 g64 token embedding, which
//! runs the packed kernels with several rows at once). Needs the assets, as `real_whisper.rs`.

mod common_assets;

use common_assets::{assets, tiny_en};
use whittle::compress::bitmap::{BitMap, LayerFormat};
use whittle::compress::ptq::{quantize_linears, PtqMethod};
use whittle::models::whisper::{DecodeOptions, Transcriber};

fn real_15(root: &std::path::Path) -> Vec<(String, Vec<f32>)> {
    whittle::data::load_dataset(&root.join("data/real-15.jsonl"))
        .unwrap()
        .into_iter()
        .map(|u| (u.id, whittle::audio::load_audio(&u.audio).unwrap()))
        .collect()
}

/// Every clip's tokens through `transcribe` and through `transcribe_batch` in batches of `batch`.
fn assert_batched_equals_sequential(t: &Transcriber, clips: &[(String, Vec<f32>)], batch: usize) {
    let mut batched = Vec::new();
    for chunk in clips.chunks(batch) {
        let refs: Vec<&[f32]> = chunk.iter().map(|(_, s)| s.as_slice()).collect();
        batched.extend(t.transcribe_batch(&refs).unwrap());
    }
    assert_eq!(batched.len(), clips.len());
    for ((id, samples), b) in clips.iter().zip(&batched) {
        let s = t.transcribe(samples).unwrap();
        assert_eq!(
            b.window_tokens, s.window_tokens,
            "{id}: batched `{}` vs sequential `{}`",
            b.text, s.text
        );
    }
}

#[test]
fn tiny_en_batched_equals_sequential_f32() {
    let Some(root) = assets() else { return };
    let t = tiny_en(&root, DecodeOptions::default());
    // Batches of 4: the last of real-15's is partial.
    assert_batched_equals_sequential(&t, &real_15(&root), 4);
}

#[test]
fn tiny_en_batched_equals_sequential_packed_w4_g64_e8() {
    let Some(root) = assets() else { return };
    let mut t = tiny_en(&root, DecodeOptions::default());
    let bit_map = BitMap::uniform(LayerFormat::uniform(4, Some(64)))
        .with_rule("decoder.embed_tokens", LayerFormat::uniform(8, Some(64)))
        .unwrap();
    quantize_linears(&mut t.model, &bit_map, PtqMethod::Rtn, None).unwrap();
    // One batch of all 15 clips: up to 30 decoder rows per product.
    assert_batched_equals_sequential(&t, &real_15(&root), 16);
}
