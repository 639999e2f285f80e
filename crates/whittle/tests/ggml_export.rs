//! whisper.cpp's model file: the export of float and packed models, read back with whittle's
//! strict reader, and crafted files refused by name.

mod common_wide;

use common_wide::common_tiny::*;
use whittle::compress::bitmap::{BitMap, LayerFormat};
use whittle::compress::ptq::{quantize_linears, PtqMethod};
use whittle::kernels::ggml::{self as codec, GgmlType};
use whittle::models::whisper::ggml::{
    choose_matrix_type, inexact_matrices, write_ggml, GgmlExportOptions, GgmlWhisperFile,
    GGML_MAGIC,
};
use whittle::models::whisper::{DecodeOptions, Transcriber, TOKEN_EMBEDDING};
use whittle::nn::Weight;

// whisper.cpp assumes an MLP of 4 x d_model and quantized rows of whole 32-weight blocks.
const GGML_D: usize = 32;
const GGML_FFN: usize = 128;

fn ggml_shaped_model(dir: &std::path::Path) -> Transcriber {
    let tensors = common_wide::resized_tensors(9, GGML_D, GGML_FFN);
    std::fs::create_dir_all(dir).unwrap();
    let mut config = serde_json::to_value(whittle::models::whisper::WhisperConfig {
        d_model: GGML_D,
        encoder_ffn_dim: GGML_FFN,
        decoder_ffn_dim: GGML_FFN,
        ..config()
    })
    .unwrap();
    config["model_type"] = "whisper".into();
    std::fs::write(dir.join("config.json"), config.to_string()).unwrap();
    std::fs::write(dir.join("tokenizer.json"), tokenizer_json()).unwrap();
    whittle::checkpoint::hf::save_safetensors(&dir.join("model.safetensors"), &tensors).unwrap();
    load_transcriber(dir, DecodeOptions::default())
}

fn quantize(t: &mut Transcriber, bits: u8, group: Option<usize>, embedding_bits: Option<u8>) {
    let mut map = BitMap::uniform(LayerFormat::uniform(bits, group));
    if let Some(b) = embedding_bits {
        map = map
            .with_rule(TOKEN_EMBEDDING, LayerFormat::uniform(b, group))
            .unwrap();
    }
    quantize_linears(&mut t.model, &map, PtqMethod::Rtn, None).unwrap();
}

/// The tensors whisper.cpp 1.8.5 creates for a model of this shape (`whisper_model_load`).
fn whisper_cpp_names(encoder_layers: usize, decoder_layers: usize) -> Vec<String> {
    let mut names: Vec<String> = [
        "encoder.positional_embedding",
        "encoder.conv1.weight",
        "encoder.conv1.bias",
        "encoder.conv2.weight",
        "encoder.conv2.bias",
        "encoder.ln_post.weight",
        "encoder.ln_post.bias",
        "decoder.positional_embedding",
        "decoder.token_embedding.weight",
        "decoder.ln.weight",
        "decoder.ln.bias",
    ]
    .map(String::from)
    .to_vec();
    let attention = |p: &str| {
        [
            "query.weight",
            "query.bias",
            "key.weight",
            "value.weight",
            "value.bias",
            "out.weight",
            "out.bias",
        ]
        .map(|s| format!("{p}.{s}"))
    };
    let mlp = |p: &str| {
        [
            "mlp_ln.weight",
            "mlp_ln.bias",
            "mlp.0.weight",
            "mlp.0.bias",
            "mlp.2.weight",
            "mlp.2.bias",
            "attn_ln.weight",
            "attn_ln.bias",
        ]
        .map(|s| format!("{p}.{s}"))
    };
    for i in 0..encoder_layers {
        let p = format!("encoder.blocks.{i}");
        names.extend(attention(&format!("{p}.attn")));
        names.extend(mlp(&p));
    }
    for i in 0..decoder_layers {
        let p = format!("decoder.blocks.{i}");
        names.extend(attention(&format!("{p}.attn")));
        names.extend(attention(&format!("{p}.cross_attn")));
        names.extend(mlp(&p));
        names.push(format!("{p}.cross_attn_ln.weight"));
        names.push(format!("{p}.cross_attn_ln.bias"));
    }
    names.sort();
    names
}

fn matrix_of<'a>(t: &'a Transcriber, name: &str) -> &'a whittle::nn::Linear {
    let m = &t.model;
    if name == "decoder.token_embedding.weight" {
        return &m.decoder.embed_tokens;
    }
    let parts: Vec<&str> = name.split('.').collect();
    let layers = if parts[0] == "encoder" {
        &m.encoder.layers
    } else {
        &m.decoder.layers
    };
    let block = &layers[parts[2].parse::<usize>().unwrap()];
    let attn = |a: &'a whittle::models::whisper::model::Attention| match parts[4] {
        "query" => &a.q_proj,
        "key" => &a.k_proj,
        "value" => &a.v_proj,
        _ => &a.out_proj,
    };
    match (parts[3], parts[4]) {
        ("attn", _) => attn(&block.self_attn.as_ref().unwrap().attn),
        ("cross_attn", _) => attn(&block.encoder_attn.as_ref().unwrap().attn),
        ("mlp", "0") => &block.mlp.as_ref().unwrap().fc1,
        _ => &block.mlp.as_ref().unwrap().fc2,
    }
}

fn dense_values(linear: &whittle::nn::Linear) -> Vec<f32> {
    linear
        .weight
        .to_dense()
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn is_matrix(name: &str) -> bool {
    name.ends_with(".weight")
        && (name.contains(".attn.")
            || name.contains(".cross_attn.")
            || name.contains(".mlp.")
            || name.contains("token_embedding"))
}

#[test]
fn packed_model_exports_code_for_code_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = ggml_shaped_model(&dir.path().join("model"));
    quantize(&mut t, 4, Some(64), Some(8));
    assert_eq!(choose_matrix_type(&t.model), GgmlType::Q8_0);
    assert!(inexact_matrices(&t.model, GgmlType::Q8_0).is_empty());
    assert_eq!(
        inexact_matrices(&t.model, GgmlType::Q4_0),
        ["decoder.token_embedding.weight"]
    );
    let path = dir.path().join("ggml-model.bin");
    let report = write_ggml(&t.model, &t.tokenizer, GgmlExportOptions::default(), &path).unwrap();
    assert_eq!(report.matrix_type, "q8_0");
    assert_eq!(report.bytes, std::fs::metadata(&path).unwrap().len());

    let file = GgmlWhisperFile::read(&path).unwrap();
    let c = &t.model.config;
    let h = file.hparams;
    assert_eq!(
        (
            h.n_vocab,
            h.n_audio_ctx,
            h.n_audio_state,
            h.n_audio_head,
            h.n_audio_layer
        ),
        (
            c.vocab_size,
            c.max_source_positions,
            GGML_D,
            c.encoder_attention_heads,
            c.encoder_layers
        )
    );
    assert_eq!(
        (
            h.n_text_ctx,
            h.n_text_state,
            h.n_text_head,
            h.n_text_layer,
            h.n_mels
        ),
        (
            c.max_target_positions,
            GGML_D,
            c.decoder_attention_heads,
            c.decoder_layers,
            MELS
        )
    );
    // ftype: GGML_FTYPE_MOSTLY_Q8_0 (7) + 1000 x quantization version 2.
    assert_eq!(h.ftype, 2007);
    assert_eq!(file.mel_shape, (MELS, 201));
    // The regular tokens, ids 0..eot, as bytes.
    assert_eq!(file.vocab.len(), EOT as usize);
    assert_eq!(file.vocab[7], b"w7");

    let mut names: Vec<String> = file.tensors.iter().map(|t| t.name.clone()).collect();
    names.sort();
    assert_eq!(names, whisper_cpp_names(c.encoder_layers, c.decoder_layers));

    for info in &file.tensors {
        let expected_type = if is_matrix(&info.name) {
            GgmlType::Q8_0
        } else if info.name.starts_with("encoder.conv") && info.name.ends_with("weight") {
            GgmlType::F16
        } else {
            GgmlType::F32
        };
        assert_eq!(info.ggml_type, expected_type, "{}", info.name);
        if is_matrix(&info.name) {
            let linear = matrix_of(&t, &info.name);
            let (rows, cols) = linear.weight.dims();
            assert_eq!(info.ne, [cols, rows], "{}", info.name);
            // Code for code: the bytes are the packed codes and scales, and whisper.cpp's
            // reconstruction is whittle's, bit for bit.
            let Weight::Packed(p) = &linear.weight else {
                panic!("{} should be packed", info.name)
            };
            assert_eq!(
                file.data(info),
                codec::encode_exact(&p.unpack(), GgmlType::Q8_0).unwrap(),
                "{}",
                info.name
            );
            let stored = file.values(info).unwrap();
            let ours = dense_values(linear);
            assert!(
                stored
                    .iter()
                    .zip(&ours)
                    .all(|(a, b)| a.to_bits() == b.to_bits()),
                "{}",
                info.name
            );
        }
    }
    let conv = file.tensor("encoder.conv1.weight").unwrap();
    assert_eq!(conv.ne, [3, MELS, GGML_D]);
    assert_eq!(file.tensor("encoder.conv2.bias").unwrap().ne, [1, GGML_D]);
    assert_eq!(
        file.tensor("encoder.positional_embedding").unwrap().ne,
        [GGML_D, c.max_source_positions]
    );
    let ln = file.tensor("decoder.ln.bias").unwrap();
    assert_eq!(ln.ne, [GGML_D]);
    assert_eq!(
        file.values(ln).unwrap(),
        t.model.decoder.layer_norm.bias.to_vec1::<f32>().unwrap()
    );
    // The report marks exactly the matrices stored in the file's matrix type.
    assert!(report
        .tensors
        .iter()
        .all(|r| r.matrix == is_matrix(&r.name)));
    // Every matrix was copied; the rest are float tensors rounded to whisper.cpp's types.
    assert!(report
        .tensors
        .iter()
        .filter(|r| is_matrix(&r.name))
        .all(|r| r.exact && r.relative_rms_error == 0.0));
}

#[test]
fn matrices_a_type_cannot_hold_are_requantized_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = ggml_shaped_model(&dir.path().join("model"));
    // W4 g32 with the token embedding left float: the file is q4_0 and the embedding is
    // re-quantized with ggml's rounding.
    quantize(&mut t, 4, Some(32), None);
    assert_eq!(choose_matrix_type(&t.model), GgmlType::Q4_0);
    let path = dir.path().join("q4.bin");
    let report = write_ggml(&t.model, &t.tokenizer, GgmlExportOptions::default(), &path).unwrap();
    let embedding = report
        .tensors
        .iter()
        .find(|r| r.name == "decoder.token_embedding.weight")
        .unwrap();
    assert!(!embedding.exact);
    assert_eq!(embedding.source, "float");
    assert!(embedding.relative_rms_error > 0.01 && embedding.relative_rms_error < 0.2);
    assert_eq!(
        report.inexact().filter(|r| is_matrix(&r.name)).count(),
        1,
        "only the embedding is re-quantized"
    );
    let file = GgmlWhisperFile::read(&path).unwrap();
    assert_eq!(file.hparams.ftype, 2002);
    // Forcing q5_0 keeps 4-bit codes exact in the wider type.
    let report = write_ggml(
        &t.model,
        &t.tokenizer,
        GgmlExportOptions {
            matrix_type: Some(GgmlType::Q5_0),
        },
        &path,
    )
    .unwrap();
    assert!(report
        .tensors
        .iter()
        .filter(|r| is_matrix(&r.name) && !r.name.contains("token_embedding"))
        .all(|r| r.exact && r.source == "sym4 g32"));
}

#[test]
fn float_model_exports_f16_and_f32() {
    let dir = tempfile::tempdir().unwrap();
    let t = ggml_shaped_model(&dir.path().join("model"));
    assert_eq!(choose_matrix_type(&t.model), GgmlType::F16);
    let path = dir.path().join("f32.bin");
    let report = write_ggml(
        &t.model,
        &t.tokenizer,
        GgmlExportOptions {
            matrix_type: Some(GgmlType::F32),
        },
        &path,
    )
    .unwrap();
    assert!(
        report.tensors.iter().all(|r| r.exact),
        "f32 holds everything"
    );
    let file = GgmlWhisperFile::read(&path).unwrap();
    assert_eq!(file.hparams.ftype, 0);
    let conv = file.tensor("encoder.conv1.weight").unwrap();
    assert_eq!(conv.ggml_type, GgmlType::F32);
    let info = file.tensor("encoder.blocks.1.mlp.0.weight").unwrap();
    assert_eq!(
        file.values(info).unwrap(),
        dense_values(&t.model.encoder.layers[1].mlp.as_ref().unwrap().fc1)
    );
    let report = write_ggml(&t.model, &t.tokenizer, GgmlExportOptions::default(), &path).unwrap();
    assert_eq!(report.matrix_type, "f16");
    assert_eq!(GgmlWhisperFile::read(&path).unwrap().hparams.ftype, 1);
}

#[test]
fn whisper_cpp_shape_limits_are_refused_up_front() {
    let dir = tempfile::tempdir().unwrap();
    // common_tiny's MLP is 2 x d_model, which whisper.cpp cannot load.
    write_hf(dir.path(), &hf_tensors(1));
    let t = load_transcriber(dir.path(), DecodeOptions::default());
    let path = dir.path().join("out.bin");
    let err = write_ggml(&t.model, &t.tokenizer, GgmlExportOptions::default(), &path)
        .unwrap_err()
        .to_string();
    assert!(err.contains("MLP width of 4 x d_model"), "{err}");
    assert!(!path.exists());
}

/// A valid small file to corrupt.
fn valid_file(dir: &std::path::Path) -> Vec<u8> {
    let mut t = ggml_shaped_model(&dir.join("model"));
    quantize(&mut t, 4, Some(32), Some(4));
    let path = dir.join("valid.bin");
    write_ggml(&t.model, &t.tokenizer, GgmlExportOptions::default(), &path).unwrap();
    std::fs::read(&path).unwrap()
}

fn refused(dir: &std::path::Path, bytes: &[u8]) -> String {
    let path = dir.join("crafted.bin");
    std::fs::write(&path, bytes).unwrap();
    let err = GgmlWhisperFile::read(&path).unwrap_err().to_string();
    assert!(err.contains("crafted.bin"), "error names the file: {err}");
    err
}

#[test]
fn crafted_files_are_refused_with_named_errors() {
    let dir = tempfile::tempdir().unwrap();
    let valid = valid_file(dir.path());
    assert!(GgmlWhisperFile::parse(std::path::Path::new("valid.bin"), valid.clone()).is_ok());
    let set_i32 = |at: usize, v: i32| {
        let mut b = valid.clone();
        b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        b
    };
    assert!(refused(dir.path(), &valid[..3]).contains("magic needs 4 bytes"));
    assert!(refused(dir.path(), &set_i32(0, 0x4655_4747)).contains("not a whisper.cpp ggml file"));
    assert!(refused(dir.path(), &set_i32(4, 0)).contains("n_vocab is 0"));
    assert!(refused(dir.path(), &set_i32(4 + 4 * 4, -3)).contains("n_audio_layer is -3"));
    assert!(refused(dir.path(), &set_i32(44, 2004)).contains("ftype 2004"));
    // Mel filterbank of 2^20 x 2^20 floats: refused against the file length, not allocated.
    let big_mel = {
        let mut b = set_i32(48, 1 << 20);
        b[52..56].copy_from_slice(&(1i32 << 20).to_le_bytes());
        b
    };
    assert!(refused(dir.path(), &big_mel).contains("mel filterbank needs"));
    let vocab_at = 56 + 4 * MELS * 201;
    assert!(refused(dir.path(), &set_i32(vocab_at, i32::MAX)).contains("vocabulary size"));
    assert!(refused(dir.path(), &set_i32(vocab_at + 4, 1 << 30)).contains("token 0 is"));

    // The first tensor header follows the vocabulary.
    let file = GgmlWhisperFile::parse(std::path::Path::new("v"), valid.clone()).unwrap();
    let first = &file.tensors[0];
    let header_at = first.header_offset();
    assert!(refused(dir.path(), &set_i32(header_at, 7)).contains("tensor rank 7"));
    assert!(refused(dir.path(), &set_i32(header_at + 4, 0)).contains("name length 0"));
    assert!(refused(dir.path(), &set_i32(header_at + 8, 4)).contains("ggml type 4"));
    assert!(refused(dir.path(), &set_i32(header_at + 12, 0)).contains("tensor extent is 0"));
    // Data running past the end of the file, and a header cut short.
    assert!(refused(dir.path(), &valid[..valid.len() - 1]).contains("data of tensor"));
    let last = file.tensors.last().unwrap();
    assert!(refused(dir.path(), &valid[..last.offset - last.name.len() - 2]).contains("needs"));
    // A tensor that appears twice.
    let mut twice = valid.clone();
    twice.extend_from_slice(&valid[header_at..first.offset + first.bytes]);
    assert!(refused(dir.path(), &twice).contains("appears twice"));
    // A q4_0 matrix whose rows are not whole blocks.
    let matrix = file
        .tensors
        .iter()
        .find(|t| t.ggml_type == GgmlType::Q4_0)
        .unwrap();
    let matrix_header = matrix.header_offset();
    let err = refused(dir.path(), &set_i32(matrix_header + 12, 48));
    assert!(err.contains("not whole q4_0 blocks"), "{err}");
}

#[test]
fn magic_is_sniffed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("m.bin");
    std::fs::write(&path, GGML_MAGIC.to_le_bytes()).unwrap();
    assert!(GgmlWhisperFile::sniff(&path));
    std::fs::write(&path, b"GGUF").unwrap();
    assert!(!GgmlWhisperFile::sniff(&path));
}
