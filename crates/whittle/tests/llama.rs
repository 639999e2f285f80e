//! The Llama language model and its GGUF tokenizer on a tiny random GGUF file written here: the
//! forward equals a plain-loop reference (RMSNorm, adjacent-pair rotary positions, grouped
//! key/value heads, causal softmax, SwiGLU, tied output); it is causal; the tokenizer splits
//! digits and merges as the file says; text perplexity is batch-size invariant and equals the
//! logits' cross-entropy; crafted configurations and tokenizers are refused by name. With the
//! assets, SmolLM2-135M continues a well-known sentence as expected.

mod common_assets;
mod common_llama;

use std::path::Path;

use candle_core::{Device, Tensor};
use common_llama::common_gguf::string;
use common_llama::*;
use whittle::checkpoint::gguf::GgufFile;
use whittle::models::llama::{Llama, LlamaTokenizer};
use whittle::models::lm::CausalLm;
use whittle::models::Layers;
use whittle::perplexity::{lm_perplexity, ScoredText};

fn load(bytes: Vec<u8>) -> whittle::error::Result<(Llama, LlamaTokenizer)> {
    let file = GgufFile::parse(Path::new("tiny.gguf"), bytes)?;
    let tok = LlamaTokenizer::from_gguf(&file)?;
    let (model, _) = Llama::from_gguf(&file, &Device::Cpu)?;
    Ok((model, tok))
}

/// The model's logits `[t][vocab]` of one sequence.
fn logits_of(model: &Llama, ids: &[u32]) -> Vec<Vec<f32>> {
    let tokens = Tensor::new(ids, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    model
        .next_token_logits(&tokens)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap()
}

/// `x W^T` for row-major `w` `[out, in]`.
fn matvec(w: &[f32], x: &[f32], out: usize) -> Vec<f32> {
    (0..out)
        .map(|o| x.iter().zip(&w[o * x.len()..]).map(|(a, b)| a * b).sum())
        .collect()
}

fn rms_norm(x: &[f32], w: &[f32]) -> Vec<f32> {
    let ms = x.iter().map(|v| v * v).sum::<f32>() / x.len() as f32;
    let s = 1.0 / (ms + EPS).sqrt();
    x.iter().zip(w).map(|(v, g)| v * s * g).collect()
}

/// Rotate adjacent pairs of one head's vector at position `p`.
fn rope(v: &mut [f32], p: usize) {
    let hd = v.len();
    for i in 0..hd / 2 {
        let angle = p as f32 * THETA.powf(-2.0 * i as f32 / hd as f32);
        let (c, s) = (angle.cos(), angle.sin());
        let (a, b) = (v[2 * i], v[2 * i + 1]);
        v[2 * i] = a * c - b * s;
        v[2 * i + 1] = a * s + b * c;
    }
}

/// The reference forward: logits `[t][vocab]` of `ids`.
fn reference(ids: &[u32]) -> Vec<Vec<f32>> {
    let w: std::collections::HashMap<String, Vec<f32>> =
        weights().into_iter().map(|(n, _, v)| (n, v)).collect();
    let hd = D / HEADS;
    let group = HEADS / KV_HEADS;
    let emb = &w["token_embd.weight"];
    let mut x: Vec<Vec<f32>> = ids
        .iter()
        .map(|&i| emb[i as usize * D..(i as usize + 1) * D].to_vec())
        .collect();
    for l in 0..LAYERS {
        let g = |p: &str| &w[&format!("blk.{l}.{p}.weight")];
        let normed: Vec<Vec<f32>> = x.iter().map(|r| rms_norm(r, g("attn_norm"))).collect();
        let proj = |p: &str, out: usize| -> Vec<Vec<f32>> {
            normed.iter().map(|r| matvec(g(p), r, out)).collect()
        };
        let (mut q, mut k, v) = (
            proj("attn_q", D),
            proj("attn_k", KV_HEADS * hd),
            proj("attn_v", KV_HEADS * hd),
        );
        for (p, (qr, kr)) in q.iter_mut().zip(k.iter_mut()).enumerate() {
            qr.chunks_mut(hd).for_each(|h| rope(h, p));
            kr.chunks_mut(hd).for_each(|h| rope(h, p));
        }
        for t in 0..ids.len() {
            let mut out = vec![0f32; D];
            for h in 0..HEADS {
                let kvh = h / group;
                let qh = &q[t][h * hd..(h + 1) * hd];
                let scores: Vec<f32> = (0..=t)
                    .map(|s| {
                        let kh = &k[s][kvh * hd..(kvh + 1) * hd];
                        qh.iter().zip(kh).map(|(a, b)| a * b).sum::<f32>() / (hd as f32).sqrt()
                    })
                    .collect();
                let max = scores.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
                let e: Vec<f32> = scores.iter().map(|s| (s - max).exp()).collect();
                let z: f32 = e.iter().sum();
                for (s, p) in e.iter().enumerate() {
                    for j in 0..hd {
                        out[h * hd + j] += p / z * v[s][kvh * hd + j];
                    }
                }
            }
            let o = matvec(g("attn_output"), &out, D);
            x[t].iter_mut().zip(o).for_each(|(a, b)| *a += b);
        }
        for r in x.iter_mut() {
            let n = rms_norm(r, g("ffn_norm"));
            let gate = matvec(g("ffn_gate"), &n, FFN);
            let up = matvec(g("ffn_up"), &n, FFN);
            let hidden: Vec<f32> = gate
                .iter()
                .zip(&up)
                .map(|(a, b)| a / (1.0 + (-a).exp()) * b)
                .collect();
            let d = matvec(g("ffn_down"), &hidden, D);
            r.iter_mut().zip(d).for_each(|(a, b)| *a += b);
        }
    }
    x.iter()
        .map(|r| matvec(emb, &rms_norm(r, &w["output_norm.weight"]), VOCAB.len()))
        .collect()
}

#[test]
fn the_forward_matches_the_reference_and_is_causal() {
    let (model, _) = load(tiny_gguf(|w| w)).unwrap();
    assert_eq!(model.config.num_kv_heads, KV_HEADS);
    assert!(
        model.output.is_none(),
        "the tiny file ties the output projection"
    );
    assert_eq!(model.layers().len(), 1 + 7 * LAYERS);
    let ids = [0u32, 8, 10, 5, 6, 7, 11];
    let logits = logits_of(&model, &ids);
    let expected = reference(&ids);
    let diff = logits
        .iter()
        .flatten()
        .zip(expected.iter().flatten())
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-4, "logits differ from the reference by {diff}");
    // A prefix sees the same logits: nothing attends to later positions.
    let prefix = Tensor::new(&ids[..4], &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    let short: Vec<Vec<f32>> = model
        .next_token_logits(&prefix)
        .unwrap()
        .squeeze(0)
        .unwrap()
        .to_vec2()
        .unwrap();
    for (a, b) in short.iter().zip(&logits) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5);
        }
    }
}

#[test]
fn the_tokenizer_splits_digits_and_merges_as_the_file_says() {
    let (_, tok) = load(tiny_gguf(|w| w)).unwrap();
    assert_eq!(tok.encode("ab ab 12").unwrap(), [8, 10, 5, 6, 7]);
    assert_eq!(tok.encode("<|im_start|>a").unwrap(), [1, 2]);
    assert_eq!(tok.decode(&[8, 10, 5, 6, 7]).unwrap(), "ab ab 12");
    assert_eq!(
        (tok.bos, tok.eos, tok.end_of_text),
        (Some(1), Some(0), Some(0))
    );
}

#[test]
fn text_perplexity_is_batch_invariant_and_the_cross_entropy() {
    let (model, tok) = load(tiny_gguf(|w| w)).unwrap();
    let texts: Vec<ScoredText> = ["ab ab 12.", "a", "ab c 2 1 ab.", "b b"]
        .iter()
        .enumerate()
        .map(|(i, t)| ScoredText {
            id: format!("t{i}"),
            text: t.to_string(),
        })
        .collect();
    let whole = lm_perplexity(&model, &tok, &texts, 4, |_| {}).unwrap();
    for batch in [1, 3] {
        let p = lm_perplexity(&model, &tok, &texts, batch, |_| {}).unwrap();
        for (a, b) in p.utterances.iter().zip(&whole.utterances) {
            assert_eq!(a.tokens, b.tokens);
            assert!((a.nll - b.nll).abs() < 1e-4, "{a:?} vs {b:?}");
        }
    }
    // The first text by hand: its tokens after <|endoftext|>, each scored by the reference.
    let mut ids = vec![0u32];
    ids.extend(tok.encode("ab ab 12.").unwrap());
    let logits = reference(&ids);
    let nll: f64 = (1..ids.len())
        .map(|i| {
            let row = &logits[i - 1];
            let max = row.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            let lse = row
                .iter()
                .map(|x| f64::from(x - max).exp())
                .sum::<f64>()
                .ln()
                + f64::from(max);
            lse - f64::from(row[ids[i] as usize])
        })
        .sum();
    assert_eq!(whole.utterances[0].tokens, ids.len() - 1);
    assert!(
        (whole.utterances[0].nll - nll).abs() < 1e-3,
        "{} vs {nll}",
        whole.utterances[0].nll
    );
}

#[test]
fn crafted_models_and_tokenizers_are_refused_by_name() {
    // (metadata key, value type, replacement value, expected error)
    let cases: [(&str, u32, Vec<u8>, &str); 4] = [
        (
            "llama.attention.head_count_kv",
            4,
            u32v(3),
            "num_heads 4 is not a multiple of num_kv_heads 3",
        ),
        (
            "tokenizer.ggml.pre",
            8,
            string("llama3"),
            "tokenizer.ggml.pre `llama3` is not supported",
        ),
        (
            "tokenizer.ggml.model",
            8,
            string("llama"),
            "tokenizer.ggml.model `llama`",
        ),
        (
            "tokenizer.ggml.bos_token_id",
            4,
            u32v(99),
            "tokenizer.ggml.bos_token_id 99 is outside the vocabulary of 12",
        ),
    ];
    for (key, ty, value, expected) in cases {
        let bytes = tiny_gguf(|mut w| {
            for kv in w.kv.iter_mut().filter(|kv| kv.0 == key) {
                *kv = (key.to_string(), ty, value.clone());
            }
            w
        });
        let err = load(bytes).unwrap_err().to_string();
        assert!(
            err.contains("tiny.gguf") && err.contains(expected),
            "{key}: {err}"
        );
    }
    // A missing tensor is named.
    let mut file = GgufFile::parse(Path::new("tiny.gguf"), tiny_gguf(|w| w)).unwrap();
    file.tensors.retain(|t| t.name != "blk.1.ffn_up.weight");
    let Err(err) = Llama::from_gguf(&file, &Device::Cpu) else {
        panic!("a model without blk.1.ffn_up.weight loaded");
    };
    let err = err.to_string();
    assert!(err.contains("blk.1.ffn_up.weight"), "{err}");
}

/// SmolLM2-135M-Instruct continues "The quick brown fox jumps over the lazy" with " dog".
#[test]
fn smollm2_continues_a_known_sentence() {
    let Some(root) = common_assets::assets() else {
        return;
    };
    let Some(path) = common_assets::smollm2(&root) else {
        return;
    };
    let file = GgufFile::read(&path).unwrap();
    let tok = LlamaTokenizer::from_gguf(&file).unwrap();
    let (model, _) = Llama::from_gguf(&file, &Device::Cpu).unwrap();
    let mut ids = vec![tok.end_of_text.unwrap()];
    ids.extend(
        tok.encode("The quick brown fox jumps over the lazy")
            .unwrap(),
    );
    let last = logits_of(&model, &ids).pop().unwrap();
    let best = last
        .iter()
        .enumerate()
        .fold((0, f32::MIN), |a, (i, &x)| if x > a.1 { (i, x) } else { a })
        .0;
    assert_eq!(tok.decode(&[best as u32]).unwrap(), " dog");
    assert_eq!(
        tok.encode("In 1984").unwrap().len(),
        6,
        "digits split one by one"
    );
}

/// SmolLM2 against llama.cpp (`scripts/reference/llama_cpp_logits.py` with llama-cpp-python
/// 0.3.36, fixture in tests/fixtures): llama.cpp runs an f32 copy of the file (every tensor
/// dequantized by PyPI `gguf`), the same float weights whittle computes with. The same token ids
/// for three prompts, and at every position the logits of llama.cpp's 20 best tokens within 0.1
/// (0.005 apart on average when recorded; logits are 10-30), the same best token wherever
/// llama.cpp's margin exceeds 0.1. (On the q4_1 file itself llama.cpp rounds activations to 8
/// bits and differs from its own f32 copy by 0.25 on average.)
#[test]
fn smollm2_matches_llama_cpp() {
    let Some(root) = common_assets::assets() else {
        return;
    };
    let Some(path) = common_assets::smollm2(&root) else {
        return;
    };
    let fixture: serde_json::Value =
        serde_json::from_str(include_str!("fixtures/smollm2_llamacpp.json")).unwrap();
    let file = GgufFile::read(&path).unwrap();
    let tok = LlamaTokenizer::from_gguf(&file).unwrap();
    let (model, _) = Llama::from_gguf(&file, &Device::Cpu).unwrap();
    // Largest single difference, and the largest mean over all compared logits.
    const TOLERANCE: f32 = 0.1;
    const MEAN_TOLERANCE: f32 = 0.02;
    // The best token must agree where llama.cpp's margin to the runner-up exceeds this.
    const MARGIN: f32 = 0.1;
    let (mut worst, mut total, mut count) = (0f32, 0f32, 0usize);
    let (mut agreements, mut decided) = (0, 0);
    for case in fixture["cases"].as_array().unwrap() {
        let text = case["text"].as_str().unwrap();
        let expected: Vec<u32> = case["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap() as u32)
            .collect();
        let mut ids = vec![tok.end_of_text.unwrap()];
        ids.extend(tok.encode(text).unwrap());
        assert_eq!(ids, expected, "tokens of {text:?}");
        let logits = logits_of(&model, &ids);
        for (pos, top) in case["top"].as_array().unwrap().iter().enumerate() {
            let top_ids: Vec<usize> = top["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_u64().unwrap() as usize)
                .collect();
            let top_logits: Vec<f32> = top["logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            for (&id, &l) in top_ids.iter().zip(&top_logits) {
                let d = (logits[pos][id] - l).abs();
                worst = worst.max(d);
                total += d;
                count += 1;
                assert!(
                    d < TOLERANCE,
                    "{text:?} position {pos} token {id}: whittle {} llama.cpp {l}",
                    logits[pos][id]
                );
            }
            let best = logits[pos]
                .iter()
                .enumerate()
                .fold((0, f32::MIN), |a, (i, &x)| if x > a.1 { (i, x) } else { a })
                .0;
            agreements += usize::from(best == top_ids[0]);
            if top_logits[0] - top_logits[1] > MARGIN {
                decided += 1;
                assert_eq!(best, top_ids[0], "{text:?} position {pos}");
            }
        }
    }
    let mean = total / count as f32;
    eprintln!(
        "logits vs llama.cpp: mean difference {mean:.3}, largest {worst:.3} over {count}; best token agrees at {agreements} positions ({decided} with a clear margin)"
    );
    assert!(mean < MEAN_TOLERANCE, "mean logit difference {mean}");
}

/// KL sensitivity of the language model: every matrix gets a divergence per candidate that
/// falls with the bit width, the model is left as it was, and the file's byte counts are the
/// packed format's (so `allocate` reads it).
#[test]
fn lm_kl_sensitivity_falls_with_the_bit_width() {
    use whittle::compress::sensitivity::{lm_kl_sensitivity, KlOptions};
    let (mut model, tok) = load(tiny_gguf(|w| w)).unwrap();
    let before = logits_of(&model, &[0, 8, 10, 5]);
    let sequences: Vec<Vec<u32>> = ["ab ab 12.", "b c a", "ab 21 c."]
        .iter()
        .map(|t| {
            let mut ids = vec![0];
            ids.extend(tok.encode(t).unwrap());
            ids
        })
        .collect();
    let options = KlOptions {
        candidates: vec![2, 4, 8],
        group: 32,
        batch_size: 1,
    };
    let measured = lm_kl_sensitivity(&mut model, &sequences, &options, |_| {}).unwrap();
    assert_eq!(measured.layers.len(), 1 + 7 * LAYERS);
    assert_eq!(
        measured.scored_tokens,
        sequences.iter().map(|s| s.len() - 1).sum::<usize>()
    );
    for layer in &measured.layers {
        let kl: Vec<f64> = layer.candidates.iter().map(|c| c.kl.unwrap()).collect();
        assert!(
            kl[0] > kl[1] && kl[1] > kl[2] && kl[2] >= 0.0,
            "{}: {kl:?}",
            layer.name
        );
        assert_eq!(
            layer.candidates[1].bytes,
            whittle::compress::sensitivity::candidate_bytes(
                &layer.name,
                layer.rows,
                layer.cols,
                4,
                32
            )
            .unwrap()
        );
    }
    assert_eq!(logits_of(&model, &[0, 8, 10, 5]), before);
}
