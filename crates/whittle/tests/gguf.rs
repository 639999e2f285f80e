//! The GGUF reader: a file written here with every value type and the tensor types SmolLM2 uses
//! reads back exactly; crafted files are refused with errors that name the file and the field;
//! every truncation of a good file is an error, never a panic; the real SmolLM2 file (when
//! `scripts/setup.sh` fetched it) parses with the architecture its metadata describes.

mod common_assets;
mod common_gguf;

use std::path::Path;

use common_gguf::{f32_bytes, string, Writer};
use whittle::checkpoint::gguf::{GgufFile, GgufValue};
use whittle_kernels::ggml::{dequantize, quantize_f32, GgmlType};

fn ramp(n: usize, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 37 % 101) as f32 - 50.0) * scale)
        .collect()
}

/// A small Llama-like file: every metadata value type, an f32 norm, an f16 vector, a q8_0
/// embedding and a q4_1 matrix.
fn good() -> Writer {
    let tokens: Vec<u8> = {
        let mut v = 8u32.to_le_bytes().to_vec();
        v.extend(3u64.to_le_bytes());
        for t in ["a", "b", "Ġc"] {
            v.extend(string(t));
        }
        v
    };
    let f16: Vec<u8> = ramp(32, 0.01)
        .iter()
        .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
        .collect();
    Writer::new()
        .kv("general.architecture", 8, string("llama"))
        .kv("llama.block_count", 4, 2u32.to_le_bytes().to_vec())
        .kv("llama.rope.freq_base", 6, 10000f32.to_le_bytes().to_vec())
        .kv("u8", 0, vec![7])
        .kv("i8", 1, vec![0xff])
        .kv("u16", 2, 513u16.to_le_bytes().to_vec())
        .kv("i16", 3, (-2i16).to_le_bytes().to_vec())
        .kv("i32", 5, (-3i32).to_le_bytes().to_vec())
        .kv("flag", 7, vec![1])
        .kv("u64", 10, 1u64.to_le_bytes().to_vec())
        .kv("i64", 11, (-4i64).to_le_bytes().to_vec())
        .kv("f64", 12, 0.5f64.to_le_bytes().to_vec())
        .kv("tokenizer.ggml.tokens", 9, tokens)
        .tensor(
            "norm.weight",
            &[64],
            GgmlType::F32,
            f32_bytes(&ramp(64, 0.1)),
        )
        .tensor("vec.weight", &[32], GgmlType::F16, f16)
        .tensor(
            "token_embd.weight",
            &[64, 3],
            GgmlType::Q8_0,
            quantize_f32(&ramp(192, 0.02), 64, GgmlType::Q8_0).unwrap(),
        )
        .tensor(
            "blk.0.ffn_up.weight",
            &[64, 5],
            GgmlType::Q4_1,
            quantize_f32(&ramp(320, 0.03), 64, GgmlType::Q4_1).unwrap(),
        )
}

fn parse(bytes: Vec<u8>) -> whittle::error::Result<GgufFile> {
    GgufFile::parse(Path::new("crafted.gguf"), bytes)
}

#[test]
fn a_written_file_reads_back_exactly() {
    let w = good();
    let file = parse(w.bytes()).unwrap();
    assert_eq!(file.str("general.architecture").unwrap(), "llama");
    assert_eq!(file.usize("llama.block_count").unwrap(), 2);
    assert_eq!(file.f64("llama.rope.freq_base").unwrap(), 10000.0);
    assert_eq!(file.metadata["i8"], GgufValue::I8(-1));
    assert_eq!(file.metadata["u16"], GgufValue::U16(513));
    assert_eq!(file.metadata["i16"], GgufValue::I16(-2));
    assert_eq!(file.metadata["i64"], GgufValue::I64(-4));
    assert_eq!(file.metadata["flag"], GgufValue::Bool(true));
    assert_eq!(file.f64("f64").unwrap(), 0.5);
    assert_eq!(file.usize("u8").unwrap(), 7);
    assert!(
        file.usize("i32").is_err(),
        "a negative value is not a count"
    );
    assert_eq!(
        file.strings("tokenizer.ggml.tokens").unwrap(),
        ["a", "b", "Ġc"]
    );
    assert_eq!(file.tensors.len(), 4);
    for (name, dims, ty, data) in &w.tensors {
        let info = file.tensor(name).unwrap();
        assert_eq!(
            info.dims,
            dims.iter().map(|&d| d as usize).collect::<Vec<_>>()
        );
        assert_eq!(info.ty.id(), *ty);
        assert_eq!(file.data(info), &data[..]);
        let expected = dequantize(data, info.ty, info.elements()).unwrap();
        assert_eq!(file.values(info).unwrap(), expected, "{name}");
    }
    let embd = file.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.shape(), [3, 64]);
    let q4 = file
        .values(file.tensor("blk.0.ffn_up.weight").unwrap())
        .unwrap();
    let max_err = q4
        .iter()
        .zip(ramp(320, 0.03))
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(max_err < 0.2, "q4_1 round trip error {max_err}");
    let store = file
        .to_store(&candle_core::Device::Cpu, |n| {
            (n != "vec.weight").then(|| format!("model.{n}"))
        })
        .unwrap();
    assert_eq!(store.names().count(), 3);
    assert!(store
        .get("model.token_embd.weight", &[3, 64], candle_core::DType::F32)
        .is_ok());
}

/// Patch `bytes` at the first occurrence of `find` with `replace` (same length).
fn patched(bytes: &[u8], find: &[u8], replace: &[u8]) -> Vec<u8> {
    let at = bytes
        .windows(find.len())
        .position(|w| w == find)
        .expect("pattern present");
    let mut out = bytes.to_vec();
    out[at..at + replace.len()].copy_from_slice(replace);
    out
}

#[test]
fn crafted_files_are_refused_by_name() {
    let good_bytes = good().bytes();
    let key_len = |k: &str| (k.len() as u64).to_le_bytes();
    let huge = u64::MAX.to_le_bytes();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("magic", patched(&good_bytes, b"GGUF", b"GGML"), "magic"),
        (
            "version",
            patched(&good_bytes, &[b'F', 3, 0, 0, 0], &[b'F', 2, 0, 0, 0]),
            "version 2",
        ),
        (
            "tensor count",
            {
                let mut b = good_bytes.clone();
                b[8..16].copy_from_slice(&(1u64 << 40).to_le_bytes());
                b
            },
            "tensors do not fit",
        ),
        (
            "metadata count",
            {
                let mut b = good_bytes.clone();
                b[16..24].copy_from_slice(&huge);
                b
            },
            "metadata count",
        ),
        (
            "string length",
            patched(&good_bytes, &key_len("general.architecture"), &huge),
            "metadata key 0",
        ),
        (
            "value type",
            {
                let mut find = b"llama.block_count".to_vec();
                find.extend(4u32.to_le_bytes());
                let mut rep = b"llama.block_count".to_vec();
                rep.extend(99u32.to_le_bytes());
                patched(&good_bytes, &find, &rep)
            },
            "unknown value type 99",
        ),
        (
            "bool",
            {
                let mut find = b"flag".to_vec();
                find.extend(7u32.to_le_bytes());
                find.push(1);
                let mut rep = b"flag".to_vec();
                rep.extend(7u32.to_le_bytes());
                rep.push(2);
                patched(&good_bytes, &find, &rep)
            },
            "neither 0 nor 1",
        ),
        (
            "array count",
            {
                let mut find = 8u32.to_le_bytes().to_vec();
                find.extend(3u64.to_le_bytes());
                let mut rep = 8u32.to_le_bytes().to_vec();
                rep.extend((1u64 << 50).to_le_bytes());
                patched(&good_bytes, &find, &rep)
            },
            "tokenizer.ggml.tokens",
        ),
        (
            "tensor type",
            {
                let mut find = b"norm.weight".to_vec();
                find.extend(1u32.to_le_bytes());
                find.extend(64u64.to_le_bytes());
                find.extend(0u32.to_le_bytes());
                let mut rep = find.clone();
                let n = rep.len();
                rep[n - 4..].copy_from_slice(&12u32.to_le_bytes());
                patched(&good_bytes, &find, &rep)
            },
            "tensor `norm.weight` type",
        ),
        (
            "dimension count",
            {
                let mut find = b"norm.weight".to_vec();
                find.extend(1u32.to_le_bytes());
                let mut rep = b"norm.weight".to_vec();
                rep.extend(5u32.to_le_bytes());
                patched(&good_bytes, &find, &rep)
            },
            "tensor `norm.weight` dimension count",
        ),
        (
            "block multiple",
            {
                let mut find = b"blk.0.ffn_up.weight".to_vec();
                find.extend(2u32.to_le_bytes());
                find.extend(64u64.to_le_bytes());
                let mut rep = b"blk.0.ffn_up.weight".to_vec();
                rep.extend(2u32.to_le_bytes());
                rep.extend(48u64.to_le_bytes());
                patched(&good_bytes, &find, &rep)
            },
            "not a multiple of q4_1's block",
        ),
        (
            "dimension overflow",
            {
                let mut find = b"token_embd.weight".to_vec();
                find.extend(2u32.to_le_bytes());
                find.extend(64u64.to_le_bytes());
                find.extend(3u64.to_le_bytes());
                let mut rep = b"token_embd.weight".to_vec();
                rep.extend(2u32.to_le_bytes());
                rep.extend(64u64.to_le_bytes());
                rep.extend((1u64 << 62).to_le_bytes());
                patched(&good_bytes, &find, &rep)
            },
            "overflow",
        ),
        (
            "past the end",
            {
                let mut b = good().bytes_with(Some(&[0, 256, 512, 1 << 20]));
                b.truncate(good_bytes.len());
                b
            },
            "run past the end",
        ),
        (
            "misaligned",
            good().bytes_with(Some(&[0, 260, 512, 1024])),
            "not a multiple of the alignment",
        ),
        (
            "overlap",
            good().bytes_with(Some(&[0, 0, 512, 1024])),
            "overlap",
        ),
        (
            "duplicate key",
            patched(&good_bytes, b"u16", b"u64"),
            "`u64` repeats",
        ),
        (
            "alignment",
            {
                let mut w = good();
                w.kv.push(("general.alignment".into(), 4, 24u32.to_le_bytes().to_vec()));
                w.bytes()
            },
            "power of two",
        ),
    ];
    for (case, bytes, expected) in cases {
        let Err(err) = parse(bytes) else {
            panic!("{case}: the crafted file parsed");
        };
        let err = err.to_string();
        assert!(
            err.contains("crafted.gguf") && err.contains(expected),
            "{case}: {err}"
        );
    }
    // Two tensors of one name.
    let mut w = good();
    w.tensors[1].0 = "norm.weight".into();
    let err = parse(w.bytes()).unwrap_err().to_string();
    assert!(err.contains("tensor `norm.weight` repeats"), "{err}");
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = good().bytes();
    for len in 0..bytes.len() {
        if let Ok(file) = parse(bytes[..len].to_vec()) {
            panic!(
                "a file cut to {len} of {} bytes parsed: {file:?}",
                bytes.len()
            );
        }
    }
}

/// The real SmolLM2-135M-Instruct file (Q4_1 matrices, Q8_0 tied embedding, F32 norms).
#[test]
fn smollm2_parses_with_its_architecture() {
    let Some(root) = common_assets::assets() else {
        return;
    };
    let Some(path) = common_assets::smollm2(&root) else {
        return;
    };
    let file = GgufFile::read(&path).unwrap();
    assert_eq!(file.str("general.architecture").unwrap(), "llama");
    assert_eq!(file.usize("llama.block_count").unwrap(), 30);
    assert_eq!(file.usize("llama.embedding_length").unwrap(), 576);
    assert_eq!(file.usize("llama.feed_forward_length").unwrap(), 1536);
    assert_eq!(file.usize("llama.attention.head_count").unwrap(), 9);
    assert_eq!(file.usize("llama.attention.head_count_kv").unwrap(), 3);
    assert_eq!(file.strings("tokenizer.ggml.tokens").unwrap().len(), 49_152);
    let embd = file.tensor("token_embd.weight").unwrap();
    assert_eq!((embd.ty, embd.shape()), (GgmlType::Q8_0, vec![49_152, 576]));
    let q4 = file
        .tensors
        .iter()
        .filter(|t| t.ty == GgmlType::Q4_1)
        .count();
    assert_eq!(q4, 210);
    let values = file
        .values(file.tensor("blk.0.ffn_up.weight").unwrap())
        .unwrap();
    assert_eq!(values.len(), 576 * 1536);
    assert!(values.iter().all(|v| v.is_finite()));
}
