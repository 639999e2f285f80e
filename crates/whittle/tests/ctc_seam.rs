//! The CTC families through the model seam: the registry loads each fixture, post-training
//! quantization (RTN and GPTQ) packs it, and the `.whittle` file loads back and decodes the same.

mod common_ctc;

use std::path::Path;

use common_ctc::{fixture, open, VARIANTS};

use candle_core::{DType, Device};
use whittle::compress::bitmap::{BitMap, LayerFormat};
use whittle::compress::calibrate::calibrate;
use whittle::compress::ptq::{quantizable_layers, quantize_linears, PtqMethod};
use whittle::data::Utterance;
use whittle::models::registry::{self, Family, LoadedModel};
use whittle::nn::Weight;

/// The fixture's clips (samples in [-1, 1)) and transformers' greedy text of each.
fn clips(variant: &str) -> Vec<(Vec<f32>, String)> {
    let dir = fixture(variant);
    let reference =
        candle_core::safetensors::load(dir.join("reference.safetensors"), &Device::Cpu).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("reference.json")).unwrap())
            .unwrap();
    json["clips"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, clip)| {
            let pcm: Vec<f32> = reference[&format!("audio.{i}")]
                .to_dtype(DType::F32)
                .unwrap()
                .to_vec1()
                .unwrap();
            (
                pcm.iter().map(|s| s / 32768.0).collect(),
                clip["text"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn transcribe(model: &LoadedModel, clips: &[(Vec<f32>, String)]) -> Vec<String> {
    let refs: Vec<&[f32]> = clips.iter().map(|(s, _)| s.as_slice()).collect();
    model.model.transcribe_batch(&refs).unwrap()
}

#[test]
fn every_ctc_fixture_transcribes_through_the_registry_as_transformers() {
    for variant in VARIANTS {
        let loaded = open(&fixture(variant));
        assert_eq!(loaded.family, Family::Ctc, "{variant}");
        let config: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixture(variant).join("config.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(
            loaded.model.architecture(),
            config["model_type"].as_str().unwrap(),
            "{variant}"
        );
        let clips = clips(variant);
        let expected: Vec<String> = clips.iter().map(|(_, t)| t.clone()).collect();
        assert_eq!(transcribe(&loaded, &clips), expected, "{variant}");
        assert!(loaded.model.parameter_count() > 0);
        assert_eq!(
            loaded.model.layers().last().map(|l| l.name.as_str()),
            Some("lm_head")
        );
    }
}

/// Writes each clip as 16 kHz s16le `.raw` and returns them as utterances.
fn raw_utterances(dir: &Path, clips: &[(Vec<f32>, String)]) -> Vec<Utterance> {
    clips
        .iter()
        .enumerate()
        .map(|(i, (samples, text))| {
            let path = dir.join(format!("clip{i}.raw"));
            let bytes: Vec<u8> = samples
                .iter()
                .flat_map(|s| ((s * 32768.0).round() as i16).to_le_bytes())
                .collect();
            std::fs::write(&path, bytes).unwrap();
            Utterance {
                id: format!("clip{i}"),
                audio: path,
                text: Some(text.clone()),
            }
        })
        .collect()
}

#[test]
fn ptq_packs_each_family_and_the_file_loads_back_and_decodes_the_same() {
    let dir = tempfile::tempdir().unwrap();
    for (v, variant) in VARIANTS.into_iter().enumerate() {
        let clips = clips(variant);
        let mut loaded = open(&fixture(variant));
        // GPTQ for one variant of each encoder kind, RTN for the others.
        let method = if v % 2 == 0 {
            PtqMethod::Gptq
        } else {
            PtqMethod::Rtn
        };
        let bit_map = BitMap::uniform(LayerFormat::uniform(8, None));
        let calibration = (method == PtqMethod::Gptq).then(|| {
            let utterances = raw_utterances(dir.path(), &clips);
            let names = quantizable_layers(&*loaded.model);
            calibrate(&mut *loaded.model, &names, &utterances, |_| {}).unwrap()
        });
        let reports =
            quantize_linears(&mut *loaded.model, &bit_map, method, calibration.as_ref()).unwrap();
        assert_eq!(reports.len(), loaded.model.layers().len(), "{variant}");
        assert!(reports.iter().all(|r| r.relative_rmse < 0.02), "{variant}");
        let in_memory = transcribe(&loaded, &clips);

        let file = dir.path().join(format!("{variant}.whittle"));
        whittle::compress::export::write_packed(
            &loaded.store,
            &*loaded.model,
            loaded.model.architecture(),
            &loaded.family_header,
            &[],
            &file,
        )
        .unwrap();
        let packed = open(&file);
        assert_eq!(packed.family, Family::Ctc);
        assert_eq!(packed.model.architecture(), loaded.model.architecture());
        assert!(
            packed
                .model
                .layers()
                .iter()
                .all(|l| matches!(l.linear.weight, Weight::Packed(_))),
            "{variant}: every linear layer loads packed"
        );
        assert_eq!(transcribe(&packed, &clips), in_memory, "{variant}");
        assert!(
            std::fs::metadata(&file).unwrap().len()
                < std::fs::metadata(fixture(variant).join("model.safetensors"))
                    .unwrap()
                    .len(),
            "{variant}: the packed file is smaller"
        );
        assert!(packed.report.unused.iter().all(|n| !n.ends_with("weight")
            || n.contains("masked_spec_embed")
            || n.contains("pos_conv_embed")));
    }
}

#[test]
fn crafted_ctc_folders_are_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("model");
    std::fs::create_dir_all(&copy).unwrap();
    for entry in std::fs::read_dir(fixture("wav2vec2-base")).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), copy.join(entry.file_name())).unwrap();
    }
    std::fs::remove_file(copy.join("vocab.json")).unwrap();
    let err = registry::open(&copy, &Device::Cpu, DType::F32)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("vocab.json"), "{err}");

    std::fs::write(copy.join("vocab.json"), r#"{"<pad>": 0, "a": 1000}"#).unwrap();
    let err = registry::open(&copy, &Device::Cpu, DType::F32)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(err.contains("vocab_size"), "{err}");
}
