//! Structured pruning on a tiny random Whisper with 4 heads: the physically smaller model
//! computes what the full-size model computes with its removed units masked and its kept
//! scales applied; the pruned `.whittle` file round-trips (also after quantization) and shows
//! the smaller shapes; crafted keep lists and shapes are refused.

mod common_train;

use candle_core::{DType, Device, Tensor};
use common_train::common_tiny::*;
use whittle::checkpoint::TensorStore;
use whittle::compress::prune::{
    magnitude_keep, prunable_parameters, prune_whisper, BlockKeep, KeptUnit, ModuleKeep,
    StructureKeep,
};
use whittle::models::whisper::{Whisper, WhisperConfig};
use whittle::models::{Layers, SpeechModel};
use whittle::nn::{max_abs_diff, Linear, Weight};

const PRUNE_HEADS: usize = 4;

fn four_head_config() -> WhisperConfig {
    WhisperConfig {
        encoder_attention_heads: PRUNE_HEADS,
        decoder_attention_heads: PRUNE_HEADS,
        ..config()
    }
}

fn model() -> Whisper {
    let store = TensorStore::new("tiny", hf_tensors(11), Device::Cpu);
    Whisper::load(&store, &four_head_config(), DType::F32).unwrap()
}

fn soft(units: &[(usize, f32)], branch_scale: f32) -> ModuleKeep {
    ModuleKeep {
        units: units
            .iter()
            .map(|&(index, scale)| KeptUnit { index, scale })
            .collect(),
        branch_scale,
    }
}

/// Encoder 0 keeps heads 1 and 3 (soft scales) and half the FFN; encoder 1 loses its
/// self-attention; decoder 0 keeps one self head, no cross-attention and no FFN; decoder 1
/// is removed entirely.
fn keep_plan() -> StructureKeep {
    let removed = ModuleKeep::hard([]);
    StructureKeep {
        encoder: vec![
            BlockKeep {
                self_attn: soft(&[(1, 0.8), (3, 1.0)], 0.9),
                cross_attn: removed.clone(),
                mlp: soft(
                    &(0..FFN)
                        .step_by(2)
                        .map(|u| (u, 0.5 + u as f32 / 64.0))
                        .collect::<Vec<_>>(),
                    1.1,
                ),
            },
            BlockKeep {
                self_attn: removed.clone(),
                cross_attn: removed.clone(),
                mlp: ModuleKeep::all(FFN),
            },
        ],
        decoder: vec![
            BlockKeep {
                self_attn: ModuleKeep::hard([2]),
                cross_attn: removed.clone(),
                mlp: removed.clone(),
            },
            BlockKeep {
                self_attn: removed.clone(),
                cross_attn: removed.clone(),
                mlp: removed,
            },
        ],
    }
}

fn dense(l: &Linear) -> Tensor {
    match &l.weight {
        Weight::Float(w) => w.clone(),
        _ => panic!("float weight expected"),
    }
}

/// Multiply column `c` of `l`'s weight by `scales[c]` and its bias by `bias_scale`: the gated
/// full-size computation written into the weights.
fn scale_columns(l: &mut Linear, scales: &[f32], bias_scale: f32) {
    let s = Tensor::new(scales, &Device::Cpu)
        .unwrap()
        .unsqueeze(0)
        .unwrap();
    l.weight = Weight::Float(dense(l).broadcast_mul(&s).unwrap());
    l.bias = l.bias.as_ref().map(|b| (b * bias_scale as f64).unwrap());
}

fn column_scales(keep: &ModuleKeep, units: usize, width: usize) -> Vec<f32> {
    let mut scales = vec![0f32; units * width];
    for u in &keep.units {
        for c in 0..width {
            scales[u.index * width + c] = u.scale * keep.branch_scale;
        }
    }
    scales
}

/// The full-size model with `keep` applied as masks and scales (a removed module's branch is
/// zero, bias included).
fn masked(model: &Whisper, keep: &StructureKeep) -> Whisper {
    let mut m = model.clone();
    let hd = D / PRUNE_HEADS;
    for (blocks, keeps) in [
        (&mut m.encoder.layers, &keep.encoder),
        (&mut m.decoder.layers, &keep.decoder),
    ] {
        for (b, k) in blocks.iter_mut().zip(keeps) {
            for (module, mk) in [
                (&mut b.self_attn, &k.self_attn),
                (&mut b.encoder_attn, &k.cross_attn),
            ] {
                if let Some(a) = module {
                    let bias = if mk.units.is_empty() {
                        0.0
                    } else {
                        mk.branch_scale
                    };
                    scale_columns(
                        &mut a.attn.out_proj,
                        &column_scales(mk, PRUNE_HEADS, hd),
                        bias,
                    );
                }
            }
            if let Some(f) = &mut b.mlp {
                let bias = if k.mlp.units.is_empty() {
                    0.0
                } else {
                    k.mlp.branch_scale
                };
                scale_columns(&mut f.fc2, &column_scales(&k.mlp, FFN, 1), bias);
            }
        }
    }
    m
}

fn mel(seed: u64) -> Tensor {
    random(&[1, MELS, 40], seed, 1.0)
}

fn tokens() -> Tensor {
    Tensor::new(&[[51u32, 52, 55, 3, 17, 9]], &Device::Cpu).unwrap()
}

/// Encoder output and teacher-forced logits.
fn outputs(model: &Whisper) -> (Tensor, Tensor) {
    let enc = model.encoder.forward(&mel(5)).unwrap();
    let hidden = model
        .decoder
        .forward_teacher_forced(&tokens(), &enc)
        .unwrap();
    (enc, model.decoder.logits(&hidden).unwrap())
}

/// Logits of incremental (cached) decoding, token by token.
fn cached_logits(model: &Whisper) -> Vec<Tensor> {
    let enc = model.encoder.forward(&mel(5)).unwrap();
    let mut cache = model.decoder.new_cache(&enc).unwrap();
    let t = tokens();
    (0..t.dim(1).unwrap())
        .map(|i| {
            model
                .decoder
                .last_logits(&t.narrow(1, i, 1).unwrap(), &mut cache)
                .unwrap()
        })
        .collect()
}

#[test]
fn pruned_model_computes_the_masked_function() {
    let full = model();
    let keep = keep_plan();
    let reference = masked(&full, &keep);
    let mut pruned = full.clone();
    let report = prune_whisper(&mut pruned, &keep).unwrap();

    let (enc_ref, logits_ref) = outputs(&reference);
    let (enc, logits) = outputs(&pruned);
    let (de, dl) = (
        max_abs_diff(&enc_ref, &enc).unwrap(),
        max_abs_diff(&logits_ref, &logits).unwrap(),
    );
    assert!(de < 1e-4 && dl < 1e-4, "encoder {de}, logits {dl}");
    for (a, b) in cached_logits(&reference).iter().zip(cached_logits(&pruned)) {
        let d = max_abs_diff(a, &b).unwrap();
        assert!(d < 1e-4, "cached decoding {d}");
    }
    // The masks change the function: the check above is not comparing a model with itself.
    let (_, logits_full) = outputs(&full);
    assert!(max_abs_diff(&logits_full, &logits).unwrap() > 1e-2);

    // Physically smaller: shapes, parameter counts and the config agree.
    let l0 = &pruned.encoder.layers[0];
    let attn = &l0.self_attn.as_ref().unwrap().attn;
    assert_eq!(
        (attn.heads, attn.q_proj.out_features()),
        (2, 2 * D / PRUNE_HEADS)
    );
    assert_eq!(attn.out_proj.in_features(), 2 * D / PRUNE_HEADS);
    assert_eq!(l0.mlp.as_ref().unwrap().fc2.in_features(), FFN / 2);
    assert!(pruned.encoder.layers[1].self_attn.is_none());
    let d0 = &pruned.decoder.layers[0];
    assert!(d0.encoder_attn.is_none() && d0.mlp.is_none());
    assert!(pruned.decoder.layers[1].shape().is_empty());
    assert_eq!(
        report.shapes,
        format!("encoder 2/{} 0/{FFN}; decoder 1+0/0 -", FFN / 2)
    );
    let held: usize = pruned
        .held_tensors()
        .unwrap()
        .unwrap()
        .iter()
        .map(|(_, t)| t.elem_count())
        .sum();
    assert_eq!(held, pruned.config.parameter_count());
    assert_eq!(report.parameters_after, held);
    assert_eq!(report.prunable_after, prunable_parameters(&pruned));
    assert!(report.sparsity > 0.5 && report.sparsity < 0.9, "{report:?}");
    assert_eq!(
        report.parameters_before - report.parameters_after,
        report.prunable_before - report.prunable_after
    );
}

#[test]
fn pruned_files_round_trip_before_and_after_quantization() {
    let dir = tempfile::tempdir().unwrap();
    let store = TensorStore::new("tiny", hf_tensors(11), Device::Cpu);
    let mut pruned = model();
    prune_whisper(&mut pruned, &keep_plan()).unwrap();
    let (_, logits) = outputs(&pruned);

    let path = dir.path().join("pruned.whittle");
    whittle::compress::export::write_whisper(&store, &mut pruned, &tokenizer_json(), &[], &path)
        .unwrap();
    let (reloaded, tokenizer, _) = whittle::model_dir::WhisperCheckpoint::open(&path, &Device::Cpu)
        .unwrap()
        .build(DType::F32)
        .unwrap();
    assert_eq!(reloaded.config, pruned.config);
    let (_, reloaded_logits) = outputs(&reloaded);
    // f16 storage of tensors the source stored in f32 would differ; these were f32.
    assert!(max_abs_diff(&logits, &reloaded_logits).unwrap() < 1e-6);
    let file = whittle::packed_file::PackedFile::open(&path).unwrap();
    let shape_of = |name: &str| {
        file.summaries()
            .into_iter()
            .find(|s| s.name == name)
            .map(|s| s.shape)
    };
    assert_eq!(
        shape_of("model.encoder.layers.0.fc1.weight"),
        Some(vec![FFN / 2, D])
    );
    assert_eq!(shape_of("model.decoder.layers.1.fc1.weight"), None);
    assert_eq!(
        shape_of("model.decoder.layers.0.encoder_attn.q_proj.weight"),
        None
    );

    // A header whose shapes disagree with the tensors is refused, naming the tensor.
    let store = whittle::model_dir::packed_store(&file, &path, &Device::Cpu).unwrap();
    let mut lying = pruned.config.clone();
    lying.layer_shapes.as_mut().unwrap().encoder[0].ffn_dim = FFN;
    let err = Whisper::load(&store, &lying, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.encoder.layers.0.fc1.weight"), "{err}");
    let mut lying = pruned.config.clone();
    lying.layer_shapes.as_mut().unwrap().decoder[1].self_attention_heads = 1;
    let err = Whisper::load(&store, &lying, DType::F32)
        .unwrap_err()
        .to_string();
    assert!(err.contains("model.decoder.layers.1.self_attn"), "{err}");

    // The family summary (what `inspect` prints) names the per-layer shapes.
    let transcriber = whittle::models::whisper::Transcriber {
        model: reloaded,
        tokenizer,
        options: Default::default(),
    };
    assert!(
        transcriber
            .summary()
            .contains(&format!("pruned: encoder 2/{} 0/{FFN}", FFN / 2)),
        "{}",
        transcriber.summary()
    );

    // whisper.cpp's format cannot hold per-layer shapes.
    let err = whittle::models::whisper::ggml::write_ggml(
        &transcriber.model,
        &transcriber.tokenizer,
        Default::default(),
        &dir.path().join("pruned.bin"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("pruned"), "{err}");

    // Pruned, then quantized (W8 RTN), in one file.
    let mut quantized = transcriber.model.clone();
    let map = whittle::compress::bitmap::BitMap::uniform(
        whittle::compress::bitmap::LayerFormat::uniform(8, None),
    );
    whittle::compress::ptq::quantize_linears(
        &mut quantized,
        &map,
        whittle::compress::ptq::PtqMethod::Rtn,
        None,
    )
    .unwrap();
    let (_, q_logits) = outputs(&quantized);
    let qpath = dir.path().join("pruned-w8.whittle");
    whittle::compress::export::write_whisper(
        &store,
        &mut quantized,
        &tokenizer_json(),
        &[],
        &qpath,
    )
    .unwrap();
    let (q_reloaded, _, _) = whittle::model_dir::WhisperCheckpoint::open(&qpath, &Device::Cpu)
        .unwrap()
        .build(DType::F32)
        .unwrap();
    let (_, q_reloaded_logits) = outputs(&q_reloaded);
    assert!(max_abs_diff(&q_logits, &q_reloaded_logits).unwrap() < 1e-5);
    assert!(
        std::fs::metadata(&qpath).unwrap().len() < std::fs::metadata(&path).unwrap().len(),
        "W8 file is not smaller than the f32 one"
    );
}

#[test]
fn magnitude_keeps_the_units_of_largest_norm() {
    let mut m = model();
    // Make head 2 of encoder layer 0 and FFN unit 7 of decoder layer 1 dominant.
    let hd = D / PRUNE_HEADS;
    let attn = &mut m.encoder.layers[0].self_attn.as_mut().unwrap().attn;
    let mut rows = vec![1f32; D];
    rows[2 * hd..3 * hd].fill(10.0);
    let s = Tensor::new(rows.as_slice(), &Device::Cpu)
        .unwrap()
        .unsqueeze(1)
        .unwrap();
    attn.v_proj.weight = Weight::Float(dense(&attn.v_proj).broadcast_mul(&s).unwrap());
    let f = m.decoder.layers[1].mlp.as_mut().unwrap();
    let mut cols = vec![1f32; FFN];
    cols[7] = 10.0;
    scale_columns(&mut f.fc2, &cols, 1.0);

    let keep = magnitude_keep(&m, 0.75, 1).unwrap();
    let indices = |k: &ModuleKeep| k.units.iter().map(|u| u.index).collect::<Vec<_>>();
    assert_eq!(indices(&keep.encoder[0].self_attn), vec![2]);
    assert!(indices(&keep.decoder[1].mlp).contains(&7));
    assert_eq!(keep.decoder[1].mlp.units.len(), FFN / 4);
    assert!(keep.encoder[0].cross_attn.units.is_empty());
    let report = prune_whisper(&mut m, &keep).unwrap();
    assert!(
        (report.sparsity - 0.75).abs() < 0.05,
        "sparsity {}",
        report.sparsity
    );
    assert!(magnitude_keep(&m, 1.0, 1).is_err());
}

/// With an alignment, every module keeps a width that is a whole multiple of it, the multiple
/// nearest to the fraction asked: FFN units in blocks of 8, and heads of D / PRUNE_HEADS
/// features in whole numbers whose width is a multiple of 8.
#[test]
fn aligned_magnitude_pruning_keeps_whole_blocks() {
    let m = model();
    let hd = D / PRUNE_HEADS;
    for sparsity in [0.2, 0.35, 0.6] {
        let keep = magnitude_keep(&m, sparsity, 8).unwrap();
        for block in keep.encoder.iter().chain(&keep.decoder) {
            let ffn = block.mlp.units.len();
            assert_eq!(ffn % 8, 0, "FFN keeps {ffn} units");
            let nearest = ((1.0 - sparsity) * FFN as f64 / 8.0).round() as usize * 8;
            assert_eq!(ffn, nearest.max(8));
            let heads = block.self_attn.units.len();
            assert_eq!((heads * hd) % 8, 0, "{heads} heads of width {hd}");
        }
    }
}

#[test]
fn crafted_keep_lists_and_shapes_are_refused() {
    type Edit = Box<dyn Fn(&mut StructureKeep)>;
    let cases: Vec<(&str, Edit)> = vec![
        (
            "out of range",
            Box::new(|k| k.encoder[0].self_attn = ModuleKeep::hard([PRUNE_HEADS])),
        ),
        (
            "out of order",
            Box::new(|k| k.encoder[0].self_attn = ModuleKeep::hard([2, 1])),
        ),
        (
            "encoder cross-attention",
            Box::new(|k| k.encoder[1].cross_attn = ModuleKeep::hard([0])),
        ),
        (
            "missing layer",
            Box::new(|k| {
                k.decoder.pop();
            }),
        ),
        (
            "non-finite scale",
            Box::new(|k| k.decoder[0].mlp.units[0].scale = f32::NAN),
        ),
    ];
    for (what, edit) in cases {
        let mut m = model();
        let mut keep = StructureKeep::everything(&m);
        edit(&mut keep);
        let err = prune_whisper(&mut m, &keep).expect_err(what).to_string();
        assert!(
            err.contains("model.") || err.contains("decoder"),
            "{what}: {err}"
        );
    }
    // Keeping units of a module already removed.
    let mut m = model();
    prune_whisper(&mut m, &keep_plan()).unwrap();
    let err = prune_whisper(&mut m, &keep_plan_all_of(&model()))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("does not hold") || err.contains("out of range"),
        "{err}"
    );
    // Packed weights cannot be sliced.
    let mut q = model();
    let map = whittle::compress::bitmap::BitMap::uniform(
        whittle::compress::bitmap::LayerFormat::uniform(8, None),
    );
    whittle::compress::ptq::quantize_linears(
        &mut q,
        &map,
        whittle::compress::ptq::PtqMethod::Rtn,
        None,
    )
    .unwrap();
    let err = prune_whisper(&mut q, &keep_plan()).unwrap_err().to_string();
    assert!(err.contains("prune before quantizing"), "{err}");

    // Per-layer shapes in a config are checked.
    let bad_shapes = [
        (r#"{"encoder": [], "decoder": []}"#, "entries"),
        (
            r#"{"encoder": [{"self_attention_heads": 5, "ffn_dim": 4}, {"self_attention_heads": 1, "ffn_dim": 4}],
                "decoder": [{"self_attention_heads": 1, "cross_attention_heads": 1, "ffn_dim": 4}, {"self_attention_heads": 1, "ffn_dim": 4}]}"#,
            "more heads",
        ),
        (
            r#"{"encoder": [{"self_attention_heads": 1, "cross_attention_heads": 1, "ffn_dim": 4}, {"self_attention_heads": 1, "ffn_dim": 4}],
                "decoder": [{"self_attention_heads": 1, "ffn_dim": 4}, {"self_attention_heads": 1, "ffn_dim": 4}]}"#,
            "no cross-attention",
        ),
        (
            r#"{"encoder": [{"self_attention_heads": 1, "ffn_dim": 99999999}, {"self_attention_heads": 1, "ffn_dim": 4}],
                "decoder": [{"self_attention_heads": 1, "ffn_dim": 4}, {"self_attention_heads": 1, "ffn_dim": 4}]}"#,
            "exceeds",
        ),
    ];
    for (shapes, expected) in bad_shapes {
        let mut c = serde_json::to_value(four_head_config()).unwrap();
        c["layer_shapes"] = serde_json::from_str(shapes).unwrap();
        let c: WhisperConfig = serde_json::from_value(c).unwrap();
        let err = c.validate("crafted").unwrap_err().to_string();
        assert!(err.contains(expected), "{expected}: {err}");
    }
}

/// Keep every unit of the unpruned `reference` (more than a pruned model holds).
fn keep_plan_all_of(reference: &Whisper) -> StructureKeep {
    StructureKeep::everything(reference)
}

#[test]
fn layer_indices_and_tensor_names_survive_pruning() {
    let mut m = model();
    prune_whisper(&mut m, &keep_plan()).unwrap();
    let names: Vec<String> = m.layers().into_iter().map(|l| l.name).collect();
    assert!(names.contains(&"model.encoder.layers.1.fc1".to_string()));
    assert!(!names
        .iter()
        .any(|n| n.starts_with("model.decoder.layers.1.")));
    assert!(!names.contains(&"model.encoder.layers.1.self_attn.q_proj".to_string()));
}
