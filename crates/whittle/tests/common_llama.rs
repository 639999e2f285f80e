//! A tiny random Llama language model as a GGUF file, with its tokenizer vocabulary: the
//! fixture of the Llama tests and of the CLI's language-model commands.

#![allow(dead_code)]

#[path = "common_gguf.rs"]
pub mod common_gguf;

use common_gguf::{f32_bytes, string, strings, Writer};
use whittle::kernels::ggml::GgmlType;

pub const VOCAB: [&str; 12] = [
    "<|endoftext|>",
    "<|im_start|>",
    "a",
    "b",
    "c",
    "Ġ",
    "1",
    "2",
    "ab",
    "Ġa",
    "Ġab",
    ".",
];
pub const D: usize = 32;
pub const HEADS: usize = 4;
pub const KV_HEADS: usize = 2;
pub const FFN: usize = 64;
pub const LAYERS: usize = 2;
pub const THETA: f32 = 10_000.0;
pub const EPS: f32 = 1e-5;

/// Deterministic values in about [-0.5, 0.5).
pub fn random(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = (i * 7919 + seed * 104_729) as u64;
            let h = x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
            h as f32 / (1u64 << 24) as f32 - 0.5
        })
        .collect()
}

/// Tensor name, row-major shape, values.
pub type Weights = Vec<(String, Vec<usize>, Vec<f32>)>;

pub fn weights() -> Weights {
    let kv = KV_HEADS * D / HEADS;
    let mut out: Weights = vec![
        (
            "token_embd.weight".into(),
            vec![VOCAB.len(), D],
            random(VOCAB.len() * D, 1),
        ),
        (
            "output_norm.weight".into(),
            vec![D],
            random(D, 2).iter().map(|x| 1.0 + x).collect(),
        ),
    ];
    for l in 0..LAYERS {
        let s = 10 * (l + 1);
        for (part, shape) in [
            ("attn_q", vec![D, D]),
            ("attn_k", vec![kv, D]),
            ("attn_v", vec![kv, D]),
            ("attn_output", vec![D, D]),
            ("ffn_gate", vec![FFN, D]),
            ("ffn_up", vec![FFN, D]),
            ("ffn_down", vec![D, FFN]),
        ] {
            let n = shape.iter().product();
            out.push((
                format!("blk.{l}.{part}.weight"),
                shape,
                random(n, s + out.len()),
            ));
        }
        for part in ["attn_norm", "ffn_norm"] {
            let v = random(D, s + out.len()).iter().map(|x| 1.0 + x).collect();
            out.push((format!("blk.{l}.{part}.weight"), vec![D], v));
        }
    }
    out
}

pub fn u32v(v: u32) -> Vec<u8> {
    v.to_le_bytes().to_vec()
}

/// The tiny model as a GGUF file, with `edit` applied to the metadata writer first.
pub fn tiny_gguf(edit: impl FnOnce(Writer) -> Writer) -> Vec<u8> {
    let mut types = 5u32.to_le_bytes().to_vec();
    types.extend((VOCAB.len() as u64).to_le_bytes());
    for i in 0..VOCAB.len() {
        types.extend((if i < 2 { 3i32 } else { 1 }).to_le_bytes());
    }
    let mut w = Writer::new()
        .kv("general.architecture", 8, string("llama"))
        .kv("llama.block_count", 4, u32v(LAYERS as u32))
        .kv("llama.context_length", 4, u32v(64))
        .kv("llama.embedding_length", 4, u32v(D as u32))
        .kv("llama.feed_forward_length", 4, u32v(FFN as u32))
        .kv("llama.attention.head_count", 4, u32v(HEADS as u32))
        .kv("llama.attention.head_count_kv", 4, u32v(KV_HEADS as u32))
        .kv("llama.rope.freq_base", 6, THETA.to_le_bytes().to_vec())
        .kv(
            "llama.attention.layer_norm_rms_epsilon",
            6,
            EPS.to_le_bytes().to_vec(),
        )
        .kv("tokenizer.ggml.model", 8, string("gpt2"))
        .kv("tokenizer.ggml.pre", 8, string("smollm"))
        .kv("tokenizer.ggml.tokens", 9, strings(&VOCAB))
        .kv("tokenizer.ggml.token_type", 9, types)
        .kv("tokenizer.ggml.merges", 9, strings(&["Ġ a", "a b", "Ġa b"]))
        .kv("tokenizer.ggml.bos_token_id", 4, u32v(1))
        .kv("tokenizer.ggml.eos_token_id", 4, u32v(0));
    w = edit(w);
    for (name, shape, values) in weights() {
        let dims: Vec<u64> = shape.iter().rev().map(|&d| d as u64).collect();
        w = w.tensor(&name, &dims, GgmlType::F32, f32_bytes(&values));
    }
    w.bytes()
}
