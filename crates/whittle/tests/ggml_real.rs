//! whisper.cpp files of real tiny.en: exported, imported back, and exported again byte for byte;
//! the tokenizer rebuilt from the file's vocabulary agrees with tiny.en's `tokenizer.json`.

mod common_assets;

use candle_core::{DType, Device};
use common_assets::*;
use whittle::compress::bitmap::{BitMap, LayerFormat};
use whittle::compress::ptq::{quantize_linears, PtqMethod};
use whittle::model_dir::WhisperCheckpoint;
use whittle::models::whisper::ggml::{
    default_suppress_tokens, write_ggml, GgmlExportOptions, GgmlWhisperFile,
};
use whittle::models::whisper::{DecodeOptions, Transcriber, TOKEN_EMBEDDING};

fn import(path: &std::path::Path) -> Transcriber {
    let ck = WhisperCheckpoint::open(path, &Device::Cpu).unwrap();
    assert!(ck.unconverted.is_empty(), "{:?}", ck.unconverted);
    let (model, tokenizer, report) = ck.build(DType::F32).unwrap();
    assert!(report.unused.is_empty(), "{:?}", report.unused);
    Transcriber {
        model,
        tokenizer,
        options: DecodeOptions::default(),
    }
}

/// Imports `first` and exports the import to `dir/again.bin`; returns the import after checking
/// that the two files are byte for byte the same.
fn round_trip(first: &std::path::Path, dir: &std::path::Path) -> Transcriber {
    let imported = import(first);
    let second = dir.join("again.bin");
    write_ggml(
        &imported.model,
        &imported.tokenizer,
        GgmlExportOptions::default(),
        &second,
    )
    .unwrap();
    assert!(std::fs::read(first).unwrap() == std::fs::read(&second).unwrap());
    imported
}

fn jfk(root: &std::path::Path) -> Vec<f32> {
    whittle::audio::load_audio(&root.join("data/real-15/jfk.wav")).unwrap()
}

#[test]
fn tiny_en_round_trips_through_ggml_byte_for_byte() {
    let Some(root) = assets() else { return };
    let dir = tempfile::tempdir().unwrap();
    let original = tiny_en(&root, DecodeOptions::default());
    let first = dir.path().join("tiny.en-f16.bin");
    let report = write_ggml(
        &original.model,
        &original.tokenizer,
        GgmlExportOptions::default(),
        &first,
    )
    .unwrap();
    // tiny.en ships as f16, so f16 holds every matrix exactly.
    assert_eq!(report.matrix_type, "f16");
    assert!(report
        .tensors
        .iter()
        .filter(|t| t.ggml_type == "f16")
        .all(|t| t.exact));

    let imported = round_trip(&first, dir.path());
    assert_eq!(imported.model.config.vocab_size, 51864);

    // The imported model is the same model: identical transcript of JFK.
    let audio = jfk(&root);
    let a = original.transcribe(&audio).unwrap().text;
    let b = imported.transcribe(&audio).unwrap().text;
    assert_eq!(a, b);
    assert!(
        a.contains("ask not what your country can do for you"),
        "{a}"
    );
}

#[test]
fn packed_matrices_round_trip_code_for_code() {
    let Some(root) = assets() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut t = tiny_en(&root, DecodeOptions::default());
    let map = BitMap::uniform(LayerFormat::uniform(4, Some(32)))
        .with_rule(TOKEN_EMBEDDING, LayerFormat::uniform(5, Some(32)))
        .unwrap();
    quantize_linears(&mut t.model, &map, PtqMethod::Rtn, None).unwrap();
    let first = dir.path().join("w4-e5.bin");
    let report = write_ggml(&t.model, &t.tokenizer, GgmlExportOptions::default(), &first).unwrap();
    assert_eq!(report.matrix_type, "q5_0");
    assert_eq!(
        report
            .tensors
            .iter()
            .filter(|r| r.ggml_type == "q5_0")
            .count(),
        65
    );
    assert!(report
        .tensors
        .iter()
        .filter(|r| r.ggml_type == "q5_0")
        .all(|r| r.exact));
    let imported = round_trip(&first, dir.path());
    // The imported 4-bit codes sit in q5_0 groups of 32: same weights, same transcript.
    let audio = jfk(&root);
    assert_eq!(
        t.transcribe(&audio).unwrap().text,
        imported.transcribe(&audio).unwrap().text
    );
}

#[test]
fn rebuilt_tokenizer_agrees_with_tiny_en() {
    let Some(root) = assets() else { return };
    let dir = tempfile::tempdir().unwrap();
    let original = tiny_en(&root, DecodeOptions::default());
    let path = dir.path().join("tiny.en.bin");
    write_ggml(
        &original.model,
        &original.tokenizer,
        GgmlExportOptions::default(),
        &path,
    )
    .unwrap();
    let file = GgmlWhisperFile::read(&path).unwrap();
    assert_eq!(file.vocab.len(), 50256);
    let rebuilt = file.checkpoint(&Device::Cpu).unwrap();
    let (a, b) = (&original.tokenizer, &rebuilt.tokenizer);
    for text in [
        " And so, my fellow Americans: ask not what your country can do for you.",
        " It was the best of times, it was the worst of times... 1,234.56% (ünïcödé) naïve café",
        " Mr. Dashwood's \"prudent\" plans -- ♪ [laughs] ♪",
    ] {
        let ids = a.encode(text).unwrap();
        assert_eq!(b.encode(text).unwrap(), ids, "{text}");
        assert_eq!(b.decode(&ids).unwrap(), a.decode(&ids).unwrap());
    }
    assert_eq!(
        (b.eot, b.sot, b.transcribe, b.no_timestamps, b.english),
        (a.eot, a.sot, a.transcribe, a.no_timestamps, a.english)
    );
    assert_eq!((b.sot_prev, b.no_speech), (a.sot_prev, a.no_speech));
    // openai-whisper's non-speech list plus the control tokens, as tiny.en's config lists them.
    assert_eq!(
        default_suppress_tokens(b).unwrap(),
        original.model.config.suppress_tokens
    );
    assert_eq!(
        rebuilt.config.suppress_tokens,
        original.model.config.suppress_tokens
    );
}
