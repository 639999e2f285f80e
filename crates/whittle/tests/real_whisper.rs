//! End-to-end on the real Whisper tiny.en fetched by `scripts/setup.sh`.
//!
//! These tests need `.assets/` (or `$WHITTLE_ASSETS`). Without it they print a note and pass,
//! unless `WHITTLE_REQUIRE_ASSETS=1` (set by `scripts/test.sh`, which CI runs), where a
//! missing asset is a failure.

mod common_assets;

use std::path::PathBuf;

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

/// The N-best list of beam search: five distinct hypotheses, best first by mean log-probability,
/// the first being what beam search transcribes.
#[test]
fn tiny_en_n_best_lists_beam_searchs_hypotheses_best_first() {
    let Some(root) = assets() else { return };
    let t = tiny_en(&root, 5);
    let samples = whittle::audio::load_audio(&root.join("data/real-15/jfk.wav")).unwrap();
    let list = t.n_best(&samples, 5).unwrap();
    assert_eq!(list.len(), 5);
    assert_eq!(list[0].text, JFK);
    let mean = |h: &whittle::models::whisper::NBestHypothesis| h.sum_logprob / h.tokens as f64;
    for pair in list.windows(2) {
        assert!(mean(&pair[0]) >= mean(&pair[1]), "{list:?}");
        assert!(pair[0].sum_logprob < 0.0);
    }
    let mut texts: Vec<_> = list.iter().map(|h| h.text.clone()).collect();
    texts.dedup();
    assert_eq!(texts.len(), 5, "{texts:?}");
    let long = vec![0f32; 16_000 * 31];
    let err = t.n_best(&long, 5).unwrap_err().to_string();
    assert!(err.contains("longer than one 30 s window"), "{err}");
}

/// `data/real.jsonl`'s `two_cities` line: the audio path and its transcript.
fn two_cities(root: &std::path::Path) -> Option<(PathBuf, String)> {
    let manifest = root.join("data/real.jsonl");
    let line = std::fs::read_to_string(&manifest).ok().and_then(|text| {
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["id"] == "two_cities")
    });
    let found = line.and_then(|v| {
        let audio = manifest.parent()?.join(v["audio"].as_str()?);
        let text = v["text"].as_str()?.to_string();
        audio.is_file().then_some((audio, text))
    });
    if found.is_none() {
        if std::env::var("WHITTLE_REQUIRE_ASSETS").as_deref() == Ok("1") {
            panic!(
                "two_cities missing from {}: run scripts/setup.sh --models-only",
                manifest.display()
            );
        }
        eprintln!("note: skipping: no two_cities in {}", manifest.display());
    }
    found
}

#[test]
fn tiny_en_transcribes_two_cities_long_form() {
    let Some(root) = assets() else { return };
    let Some((audio, reference)) = two_cities(&root) else {
        return;
    };
    let t = tiny_en(&root, 1);
    let samples = whittle::audio::load_audio(&audio).unwrap();
    let out = t
        .transcribe_long_form(
            &samples,
            &whittle::models::whisper::LongFormOptions::default(),
        )
        .unwrap();
    assert!(
        out.duration > 40.0,
        "two_cities is 44 s, got {}",
        out.duration
    );
    let normalizer = whittle::text::normalize::EnglishNormalizer::without_spellings();
    let (_, _, words, _) = whittle::eval::score(&normalizer, &reference, &out.text);
    assert!(words.rate() < 0.15, "WER {} on: {}", words.rate(), out.text);
    assert!(out.segments.len() >= 3, "{:?}", out.segments);
    let mut previous_end = 0.0;
    for s in &out.segments {
        assert!(
            s.start >= previous_end - 1e-9 && s.start < s.end && s.end <= out.duration,
            "segment times not monotonic within the audio: {:?}",
            out.segments
        );
        previous_end = s.end;
    }
    assert!(
        previous_end > 30.0,
        "the segments must reach past the first window"
    );
}
