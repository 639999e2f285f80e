//! Batched greedy decoding gives the sequential decoder's tokens, on a tiny random Whisper.

mod common_tiny;

use candle_core::{IndexOp, Tensor};
use common_tiny::*;
use whittle::compress::bitmap::{BitMap, LayerFormat};
use whittle::compress::ptq::{quantize_linears, PtqMethod};
use whittle::models::whisper::{DecodeOptions, Transcriber};

/// The tiny model with its end-of-text row scaled by `eot_scale`, so that some sequences end
/// early and others run to the token limit (a batch where sequences drop out at different steps).
fn transcriber(dir: &std::path::Path, eot_scale: f64) -> Transcriber {
    let mut tensors = hf_tensors(5);
    let name = "model.decoder.embed_tokens.weight";
    let table = &tensors[name];
    let eot = table.i(EOT as usize..EOT as usize + 1).unwrap();
    let rows = [
        table.i(..EOT as usize).unwrap(),
        (eot * eot_scale).unwrap(),
        table.i(EOT as usize + 1..).unwrap(),
    ];
    tensors.insert(name.into(), Tensor::cat(&rows, 0).unwrap());
    write_hf(dir, &tensors);
    load_transcriber(dir, DecodeOptions::default())
}

/// Clips of different lengths: a tone whose pitch and loudness change from clip to clip over
/// deterministic noise; the last one is longer than a 30 s window.
fn clips() -> Vec<Vec<f32>> {
    let seconds = [0.4, 2.5, 1.0, 6.0, 0.2, 3.3, 12.0, 0.9, 31.0];
    seconds
        .iter()
        .enumerate()
        .map(|(c, &s)| {
            let n = (s * 16_000.0) as usize;
            let mut state = 99u32 + c as u32;
            (0..n)
                .map(|i| {
                    state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                    let noise = (state >> 16) as f32 / 65536.0 - 0.5;
                    let t = i as f32 / 16_000.0;
                    let tone = (t * (150.0 + 90.0 * c as f32) * std::f32::consts::TAU).sin();
                    0.1 * (c as f32 + 1.0) / 9.0 * tone + 0.2 * noise
                })
                .collect()
        })
        .collect()
}

/// Runs `clips` through `transcribe_batch` `batch` at a time and through `transcribe` one by
/// one; returns the token sequences of both.
fn both_ways(t: &Transcriber, clips: &[Vec<f32>], batch: usize) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let sequential: Vec<Vec<u32>> = clips
        .iter()
        .map(|c| t.transcribe(c).unwrap().window_tokens.concat())
        .collect();
    let mut batched = Vec::new();
    for chunk in clips.chunks(batch) {
        let refs: Vec<&[f32]> = chunk.iter().map(Vec::as_slice).collect();
        for tr in t.transcribe_batch(&refs).unwrap() {
            batched.push(tr.window_tokens.concat());
        }
    }
    (sequential, batched)
}

fn check(t: &Transcriber, clips: &[Vec<f32>], batch: usize) {
    let (sequential, batched) = both_ways(t, clips, batch);
    let limit = TARGET_POSITIONS / 2;
    let lengths: std::collections::BTreeSet<usize> = sequential.iter().map(Vec::len).collect();
    // The setup must exercise drop-out: some sequences end early, at different steps.
    assert!(
        lengths.len() >= 3 && lengths.iter().any(|&l| l < limit),
        "token counts {lengths:?} (limit {limit}): no sequence leaves the batch early"
    );
    assert_eq!(batched.len(), sequential.len());
    for (i, (b, s)) in batched.iter().zip(&sequential).enumerate() {
        assert_eq!(b, s, "clip {i}: batched tokens differ from sequential");
    }
}

#[test]
fn batched_greedy_equals_sequential_f32() {
    let dir = tempfile::tempdir().unwrap();
    let t = transcriber(dir.path(), 3.0);
    let clips = clips();
    assert!(!t.batchable(&clips[8]), "a 31 s clip is decoded alone");
    assert!(t.batchable(&clips[0]));
    // 9 clips in batches of 4: the last batch is partial and holds the long clip.
    check(&t, &clips, 4);
}

/// The packed kernels with `m > 1` rows (the decoder's live sequences; 2 prompt tokens each at
/// the first step) round as the one-row kernel does, so the tokens are identical too.
#[test]
fn batched_greedy_equals_sequential_packed() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = transcriber(dir.path(), 3.0);
    let bit_map = BitMap::uniform(LayerFormat::uniform(4, None))
        .with_rule("decoder.embed_tokens", LayerFormat::uniform(8, None))
        .unwrap();
    quantize_linears(&mut t.model, &bit_map, PtqMethod::Rtn, None).unwrap();
    let mut clips = clips();
    clips.pop();
    // Twice over, so one batch of all 16 reaches the repacked-panel kernel's row count.
    let more: Vec<Vec<f32>> = clips
        .iter()
        .map(|c| c.iter().map(|v| -v).collect())
        .collect();
    clips.extend(more);
    check(&t, &clips, clips.len());
    check(&t, &clips, 5);
}

/// Beam search is not batched: `transcribe_batch` falls back to it clip by clip.
#[test]
fn beam_search_falls_back_to_one_clip_at_a_time() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = transcriber(dir.path(), 3.0);
    t.options.beam_size = 3;
    let clips = clips();
    assert!(!t.batchable(&clips[0]));
    let (sequential, batched) = both_ways(&t, &clips[..4], 3);
    assert_eq!(batched, sequential);
}
