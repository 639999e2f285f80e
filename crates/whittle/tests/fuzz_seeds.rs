//! Writes the seed corpora of `fuzz/` from the tests' tiny random Whisper (narrowed to 16
//! encoder positions so that each seed stays a few tens of kilobytes), the CTC and GPT-2
//! fixtures and the tiny Llama GGUF. Run by hand when the formats change:
//! `FUZZ_SEEDS=$PWD/fuzz/seeds cargo test --release -p whittle --test fuzz_seeds -- --ignored`
//! (an absolute path: the test runs in its crate folder).

mod common_llama;
mod common_wide;

use common_wide::common_tiny;

use std::path::Path;

use candle_core::{DType, Device};
use common_tiny::*;
use whittle::compress::bitmap::{BitMap, LayerFormat};
use whittle::compress::ptq::{quantize_linears, PtqMethod};
use whittle::model_dir::WhisperCheckpoint;

const POSITIONS: usize = 16;

fn small_tensors() -> std::collections::BTreeMap<String, candle_core::Tensor> {
    let mut t = hf_tensors(1);
    t.insert(
        "model.encoder.embed_positions.weight".into(),
        random(&[POSITIONS, D], 7, 0.5),
    );
    t
}

fn write_small_hf(dir: &Path) {
    write_hf(dir, &small_tensors());
    let mut c = config();
    c.max_source_positions = POSITIONS;
    std::fs::write(dir.join("config.json"), serde_json::to_string(&c).unwrap()).unwrap();
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to.parent().unwrap()).unwrap();
    std::fs::copy(from, to).unwrap();
}

#[test]
#[ignore = "writes fuzz/ seed files; run by hand with FUZZ_SEEDS=DIR"]
fn write_fuzz_seeds() {
    let out = std::path::PathBuf::from(std::env::var_os("FUZZ_SEEDS").expect("set FUZZ_SEEDS"));
    let tmp = tempfile::tempdir().unwrap();

    // CTranslate2 model.bin (f16) and its folder's fixed files for the harness.
    let ct2 = tmp.path().join("ct2");
    write_ct2(&ct2, &small_tensors(), true);
    copy(
        &ct2.join("model.bin"),
        &out.join("ct2_whisper/tiny-f16.bin"),
    );
    copy(&ct2.join("tokenizer.json"), &out.join("tokenizer.json"));
    copy(&ct2.join("config.json"), &out.join("ct2-config.json"));

    // Hugging Face: u32 LE length of config.json, config.json, model.safetensors.
    let hf = tmp.path().join("hf");
    write_small_hf(&hf);
    let config = std::fs::read(hf.join("config.json")).unwrap();
    let mut seed = (config.len() as u32).to_le_bytes().to_vec();
    seed.extend_from_slice(&config);
    seed.extend_from_slice(&std::fs::read(hf.join("model.safetensors")).unwrap());
    std::fs::create_dir_all(out.join("hf_safetensors")).unwrap();
    std::fs::write(out.join("hf_safetensors/tiny-f32"), seed).unwrap();

    // .whittle: every linear layer at 4 bits per row, the rest in float.
    let ck = WhisperCheckpoint::open(&hf, &Device::Cpu).unwrap();
    let mut model =
        whittle::models::whisper::Whisper::load(&ck.store, &ck.config, DType::F32).unwrap();
    let map = BitMap::uniform(LayerFormat::uniform(4, None));
    quantize_linears(&mut model, &map, PtqMethod::Rtn, None).unwrap();
    let tokenizer = std::fs::read_to_string(hf.join("tokenizer.json")).unwrap();
    let path = out.join("whittle_file/tiny-w4.whittle");
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    whittle::compress::export::write_whisper(&ck.store, &mut model, &tokenizer, &[], &path)
        .unwrap();
    // The same model with every linear layer ternary in the sparse layout (row offset table,
    // masks, sign bits).
    let mut model =
        whittle::models::whisper::Whisper::load(&ck.store, &ck.config, DType::F32).unwrap();
    let map = BitMap::uniform(LayerFormat::Ternary {
        group: None,
        trits5: false,
        sparse: true,
    });
    quantize_linears(&mut model, &map, PtqMethod::Rtn, None).unwrap();
    let path = out.join("whittle_file/tiny-ternary-sparse.whittle");
    whittle::compress::export::write_whisper(&ck.store, &mut model, &tokenizer, &[], &path)
        .unwrap();

    // Structurally pruned (per-layer shapes in the header: half the heads and FFN units by
    // magnitude), then 4 bits per row.
    let mut model =
        whittle::models::whisper::Whisper::load(&ck.store, &ck.config, DType::F32).unwrap();
    let keep = whittle::compress::prune::magnitude_keep(&model, 0.5, 1).unwrap();
    whittle::compress::prune::prune_whisper(&mut model, &keep).unwrap();
    let map = BitMap::uniform(LayerFormat::uniform(4, None));
    quantize_linears(&mut model, &map, PtqMethod::Rtn, None).unwrap();
    let path = out.join("whittle_file/tiny-pruned-w4.whittle");
    whittle::compress::export::write_whisper(&ck.store, &mut model, &tokenizer, &[], &path)
        .unwrap();

    // A CTC model (the relative-position Conformer fixture) pruned by magnitude to half its
    // heads, units and convolution channels (`whittle_layer_shapes` in the header), then 8 bits
    // per row.
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut ctc = whittle::models::registry::open(
        &fixtures.join("ctc/conformer-relpos"),
        &Device::Cpu,
        DType::F32,
    )
    .unwrap();
    let keep = whittle::compress::prune::magnitude_module_keep(&*ctc.model, 0.5, 1).unwrap();
    ctc.model.prune_modules(&keep).unwrap();
    let map = BitMap::uniform(LayerFormat::uniform(8, None));
    quantize_linears(&mut *ctc.model, &map, PtqMethod::Rtn, None).unwrap();
    whittle::compress::export::write_packed(
        &ctc.store,
        &*ctc.model,
        ctc.model.architecture(),
        &ctc.family_header,
        &[],
        &out.join("whittle_file/conformer-pruned-w8.whittle"),
    )
    .unwrap();

    // GGUF: the tiny random Llama of the language-model tests, with its vocabulary.
    std::fs::create_dir_all(out.join("gguf")).unwrap();
    std::fs::write(
        out.join("gguf/tiny-llama.gguf"),
        common_llama::tiny_gguf(|w| w),
    )
    .unwrap();

    // A GPT-2 language model (the transformers fixture), 4-bit blocks of 32.
    let (mut gpt2, gpt2_tokenizer) =
        whittle::models::gpt2::Gpt2::open(&fixtures.join("gpt2"), &Device::Cpu).unwrap();
    let map = BitMap::uniform(LayerFormat::uniform(4, Some(32)));
    quantize_linears(&mut gpt2, &map, PtqMethod::Rtn, None).unwrap();
    whittle::compress::export::write_packed(
        &whittle::checkpoint::TensorStore::new("gpt2", Default::default(), Device::Cpu),
        &gpt2,
        whittle::models::gpt2::ARCHITECTURE,
        &gpt2.packed_header(&gpt2_tokenizer).unwrap(),
        &[],
        &out.join("whittle_file/gpt2-w4.whittle"),
    )
    .unwrap();

    // whisper.cpp ggml: width 32 and MLP 128 (whisper.cpp's 4 x d_model, whole 32-weight
    // blocks), 4-bit matrices as q4_0. The second seed has Whisper's English vocabulary size
    // (51,864 rows of the q4_0 embedding, 0.9 MB), the smallest file the import accepts.
    for (name, vocab) in [("tiny-q4_0.bin", VOCAB), ("tiny-q4_0-vocab.bin", 51_864)] {
        let dir = tmp.path().join(name);
        let mut tensors = common_wide::resized_tensors(3, 32, 128);
        tensors.insert(
            "model.encoder.embed_positions.weight".into(),
            random(&[POSITIONS, 32], 7, 0.5),
        );
        tensors.insert(
            "model.decoder.embed_tokens.weight".into(),
            random(&[vocab, 32], 8, 0.5),
        );
        write_hf(&dir, &tensors);
        let mut c = common_tiny::config();
        c.max_source_positions = POSITIONS;
        (
            c.d_model,
            c.encoder_ffn_dim,
            c.decoder_ffn_dim,
            c.vocab_size,
        ) = (32, 128, 128, vocab);
        let mut json = serde_json::to_value(&c).unwrap();
        json["model_type"] = "whisper".into();
        std::fs::write(dir.join("config.json"), json.to_string()).unwrap();
        let ck = WhisperCheckpoint::open(&dir, &Device::Cpu).unwrap();
        let (mut model, tokenizer, _) = ck.build(DType::F32).unwrap();
        let map = BitMap::uniform(LayerFormat::uniform(4, Some(32)))
            .with_rule(
                whittle::models::whisper::TOKEN_EMBEDDING,
                LayerFormat::uniform(4, Some(32)),
            )
            .unwrap();
        quantize_linears(&mut model, &map, PtqMethod::Rtn, None).unwrap();
        let path = out.join("ggml_whisper").join(name);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        whittle::models::whisper::ggml::write_ggml(&model, &tokenizer, Default::default(), &path)
            .unwrap();
    }
}
