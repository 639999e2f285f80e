//! Decoder perplexity on the tiny random Whisper: the mean NLL per token is the training
//! cross-entropy of the same teacher-forced batch, every transcript token plus end-of-text is
//! scored, the result does not depend on the batch size, and a clip without a transcript is
//! refused by name.

mod common_train;

use candle_core::{DType, Device};
use common_train::common_tiny::tokenizer_json;
use common_train::{examples, prompt, teacher};
use whittle::data::Utterance;
use whittle::models::whisper::WhisperTokenizer;
use whittle::perplexity::decoder_perplexity;
use whittle::train::batch::make_batch;

fn utterances(dir: &std::path::Path) -> Vec<Utterance> {
    examples(dir, 5)
        .into_iter()
        .map(|e| Utterance {
            id: e.id,
            audio: e.audio,
            text: Some(
                e.tokens
                    .iter()
                    .map(|t| format!("w{t}"))
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
        })
        .collect()
}

#[test]
fn perplexity_is_the_teacher_forced_cross_entropy_at_any_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let model = teacher();
    let tok = WhisperTokenizer::from_json(&tokenizer_json(), "tiny").unwrap();
    let utts = utterances(dir.path());
    let whole = decoder_perplexity(&model, &tok, &utts, 5, |_| {}).unwrap();

    let examples = examples(dir.path(), 5);
    let expected_tokens: usize = examples.iter().map(|e| e.tokens.len() + 1).sum();
    assert_eq!(whole.tokens, expected_tokens);
    assert_eq!(whole.utterances.len(), 5);
    for (score, e) in whole.utterances.iter().zip(&examples) {
        assert_eq!(score.id, e.id);
        assert_eq!(score.tokens, e.tokens.len() + 1);
        assert!(score.nll > 0.0);
    }

    let refs: Vec<_> = examples.iter().collect();
    let batch = make_batch(
        &refs,
        false,
        &model.config,
        &prompt(),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let logits = whittle::train::loss::forward(&model, &batch, &[])
        .unwrap()
        .logits;
    let ce = whittle::train::loss::cross_entropy(&logits, &batch.targets)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap();
    assert!(
        (whole.nll_per_token() - f64::from(ce)).abs() < 1e-5,
        "perplexity's NLL {} vs cross-entropy {ce}",
        whole.nll_per_token()
    );
    assert!((whole.perplexity() - whole.nll_per_token().exp()).abs() < 1e-12);

    for batch_size in [1, 2] {
        let mut calls = Vec::new();
        let p =
            decoder_perplexity(&model, &tok, &utts, batch_size, |done| calls.push(done)).unwrap();
        assert_eq!(calls.last(), Some(&5));
        for (a, b) in p.utterances.iter().zip(&whole.utterances) {
            assert_eq!(a.tokens, b.tokens);
            assert!(
                (a.nll - b.nll).abs() < 1e-4 * b.nll,
                "{a:?} vs {b:?} at batch {batch_size}"
            );
        }
    }
}

#[test]
fn perplexity_refuses_an_utterance_without_a_transcript() {
    let dir = tempfile::tempdir().unwrap();
    let model = teacher();
    let tok = WhisperTokenizer::from_json(&tokenizer_json(), "tiny").unwrap();
    let mut utts = utterances(dir.path());
    utts[2].text = None;
    let err = decoder_perplexity(&model, &tok, &utts, 2, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("u2") && err.contains("transcript"), "{err}");
    let err = decoder_perplexity(&model, &tok, &utts, 0, |_| {})
        .unwrap_err()
        .to_string();
    assert!(err.contains("batch size"), "{err}");
}
