//! Post-training quantization of a tiny random Whisper: bit maps, calibration and GPTQ.

mod common_tiny;

use candle_core::{Device, Tensor};
use common_tiny::*;
use whittle::compress::bitmap::{BitMap, LayerFormat};
use whittle::compress::calibrate::calibrate;
use whittle::compress::ptq::{quantizable_layers, quantize_linears, PtqMethod};
use whittle::data::Utterance;
use whittle::models::whisper::{DecodeOptions, Transcriber, TOKEN_EMBEDDING};
use whittle::nn::{max_abs_diff, Weight};

fn transcriber(dir: &std::path::Path) -> Transcriber {
    load_transcriber(
        dir,
        DecodeOptions {
            max_new_tokens: Some(6),
            ..Default::default()
        },
    )
}

/// Two short 16 kHz s16le `.raw` clips of deterministic noise with a tone.
fn calibration_audio(dir: &std::path::Path) -> Vec<Utterance> {
    (0..2)
        .map(|u| {
            let path = dir.join(format!("calib{u}.raw"));
            let n = 16_000 + 4_000 * u;
            let mut state = 12345u32 + u as u32;
            let bytes: Vec<u8> = (0..n)
                .flat_map(|i| {
                    state = state.wrapping_mul(1664525).wrapping_add(1013904223);
                    let noise = (state >> 16) as f32 / 65536.0 - 0.5;
                    let tone = (i as f32 * 0.05 * (u + 1) as f32).sin();
                    (((0.3 * tone + 0.2 * noise) * 20000.0) as i16).to_le_bytes()
                })
                .collect();
            std::fs::write(&path, bytes).unwrap();
            Utterance {
                id: format!("calib{u}"),
                audio: path,
                text: None,
            }
        })
        .collect()
}

fn encoder_error(reference: &Tensor, t: &Transcriber, mel: &Tensor) -> f32 {
    let out = t.model.encoder.forward(mel).unwrap();
    (out - reference)
        .unwrap()
        .sqr()
        .unwrap()
        .sum_all()
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
        .sqrt()
}

#[test]
fn gptq_calibrates_every_quantized_layer_and_beats_rtn_on_its_inputs() {
    let dir = tempfile::tempdir().unwrap();
    write_hf(dir.path(), &hf_tensors(11));
    let utterances = calibration_audio(dir.path());

    let mut float = transcriber(dir.path());
    let names = quantizable_layers(&float.model);
    let samples = whittle::audio::load_audio(&utterances[0].audio).unwrap();
    let frames = samples.len() / 160 / 2 * 2;
    let mel = whittle::audio::mel::log_mel_spectrogram(&samples, MELS).window(0, frames);
    let mel = Tensor::from_vec(mel.data, (1, MELS, frames), &Device::Cpu).unwrap();
    let reference = float.model.encoder.forward(&mel).unwrap();

    let calibration = calibrate(&mut float, &names, &utterances, |_| {}).unwrap();
    assert_eq!(calibration.hessians.len(), names.len());
    for (name, h) in &calibration.hessians {
        assert!(h.samples() > 0, "{name} saw no calibration input");
    }
    for (name, linear) in float.model.linears_mut() {
        assert!(linear.observer.is_none(), "{name} kept its observer");
    }

    let bit_map = BitMap::uniform(LayerFormat::uniform(3, None));
    let mut rtn = transcriber(dir.path());
    quantize_linears(&mut rtn.model, &bit_map, PtqMethod::Rtn, None).unwrap();
    let mut gptq = transcriber(dir.path());
    let reports = quantize_linears(
        &mut gptq.model,
        &bit_map,
        PtqMethod::Gptq,
        Some(&calibration),
    )
    .unwrap();
    for r in &reports {
        // The default leaves the tied embedding float; every linear layer gets GPTQ.
        let expected = if r.name == TOKEN_EMBEDDING {
            "none"
        } else {
            "gptq"
        };
        assert_eq!(r.method, expected, "{}", r.name);
    }
    let (e_rtn, e_gptq) = (
        encoder_error(&reference, &rtn, &mel),
        encoder_error(&reference, &gptq, &mel),
    );
    println!("encoder output error: rtn {e_rtn:.4} gptq {e_gptq:.4}");
    assert!(e_gptq < e_rtn, "GPTQ {e_gptq} not below RTN {e_rtn}");
    // The quantized model still transcribes.
    gptq.transcribe(&samples).unwrap();
}

#[test]
fn gptq_without_calibration_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    write_hf(dir.path(), &hf_tensors(3));
    let mut t = transcriber(dir.path());
    let err = quantize_linears(
        &mut t.model,
        &BitMap::uniform(LayerFormat::uniform(4, None)),
        PtqMethod::Gptq,
        None,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("calib"), "{err}");
}

#[test]
fn bit_map_gives_each_layer_its_format() {
    let dir = tempfile::tempdir().unwrap();
    write_hf(dir.path(), &hf_tensors(4));
    let map_path = dir.path().join("bits.toml");
    std::fs::write(
        &map_path,
        r#"
default = { bits = 4 }
[layers]
"encoder.layers.*.fc1" = { bits = 3, group = 32, symmetric = false }
"decoder.layers.0.*" = "float"
"*.fc2" = { format = "ternary", layout = "1.6bit" }
"#,
    )
    .unwrap();
    let bit_map = BitMap::from_file(&map_path).unwrap();
    let mut t = transcriber(dir.path());
    let reports = quantize_linears(&mut t.model, &bit_map, PtqMethod::Rtn, None).unwrap();
    for (report, (name, linear)) in reports.iter().zip(t.model.linears_mut()) {
        assert_eq!(report.name, name);
        match (&report.format, &linear.weight) {
            (LayerFormat::Float, Weight::Float(_)) => {
                assert!(
                    name.contains("decoder.layers.0."),
                    "{name} should not be float"
                );
            }
            (LayerFormat::Ternary { trits5: true, .. }, Weight::Packed(p)) => {
                assert!(
                    name.ends_with("fc2") && !name.contains("decoder.layers.0."),
                    "{name}"
                );
                assert_eq!(p.format().layout, whittle::kernels::Layout::Trits5);
                // Ternary: every row takes at most three distinct values {-a, 0, +a}.
                let cols = p.cols();
                for row in p.dequantize().chunks(cols) {
                    let mut distinct: Vec<f32> = row.to_vec();
                    distinct.sort_by(f32::total_cmp);
                    distinct.dedup();
                    assert!(distinct.len() <= 3, "{name}: {distinct:?}");
                }
            }
            (LayerFormat::Uniform { bits: 3, .. }, Weight::Packed(p)) => {
                assert!(
                    name.starts_with("model.encoder") && name.ends_with("fc1"),
                    "{name}"
                );
                assert!(
                    p.zero_points().is_some(),
                    "asymmetric layers carry zero points"
                );
            }
            (
                LayerFormat::Uniform {
                    bits: 4,
                    group: None,
                    ..
                },
                Weight::Packed(_),
            ) => {
                assert!(report.rule.is_none(), "{name} should come from the default");
            }
            (format, weight) => panic!("{name}: format {format:?} but weight {weight:?}"),
        }
    }
    let embedding = reports.last().unwrap();
    assert_eq!(embedding.name, TOKEN_EMBEDDING);
    assert_eq!(
        embedding.format,
        LayerFormat::Float,
        "the default leaves it float"
    );
    // Quantizing again is refused (the weights are already packed).
    let err = quantize_linears(&mut t.model, &bit_map, PtqMethod::Rtn, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("already packed"), "{err}");
}

/// The packed token embedding serves both of its uses: table lookups return exactly the
/// dequantized rows, and logits equal the float projection onto those rows up to the int8
/// rounding of the hidden state.
#[test]
fn packed_token_embedding_serves_lookup_and_logits() {
    let dir = tempfile::tempdir().unwrap();
    write_hf(dir.path(), &hf_tensors(5));
    let mut packed = transcriber(dir.path());
    let bit_map = BitMap::uniform(LayerFormat::uniform(4, None))
        .with_rule("decoder.embed_tokens", LayerFormat::uniform(8, Some(32)))
        .unwrap();
    quantize_linears(&mut packed.model, &bit_map, PtqMethod::Rtn, None).unwrap();
    let Weight::Packed(table) = &packed.model.decoder.embed_tokens.weight else {
        panic!("the named embedding was not packed");
    };
    // Reference: the same model with the dequantized table as a float weight.
    let mut reference = packed.model.clone();
    let dense = Tensor::from_vec(
        table.dequantize(),
        (table.rows(), table.cols()),
        &Device::Cpu,
    )
    .unwrap();
    reference.decoder.embed_tokens.weight = Weight::Float(dense);

    let ids = Tensor::new(&[[3u32, 0, 7], [1, 1, 2]], &Device::Cpu).unwrap();
    let a = packed.model.decoder.embed_tokens.weight.rows(&ids).unwrap();
    let b = reference.decoder.embed_tokens.weight.rows(&ids).unwrap();
    assert_eq!(a.dims(), &[2, 3, table.cols()]);
    assert_eq!(max_abs_diff(&a, &b).unwrap(), 0.0);

    let hidden = Tensor::randn(0f32, 1.0, (2, 3, table.cols()), &Device::Cpu).unwrap();
    let la = packed.model.decoder.logits(&hidden).unwrap();
    let lb = reference.decoder.logits(&hidden).unwrap();
    let err = max_abs_diff(&la, &lb).unwrap();
    assert!(err < 0.05, "packed logits differ by {err}");

    let out_of_range = Tensor::new(&[[table.rows() as u32]], &Device::Cpu).unwrap();
    let e = packed
        .model
        .decoder
        .embed_tokens
        .weight
        .rows(&out_of_range)
        .unwrap_err()
        .to_string();
    assert!(e.contains("past the last row"), "{e}");
}
