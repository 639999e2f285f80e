//! Per-layer KL sensitivity and the budgeted allocation on a tiny random Whisper: the measure
//! agrees with the training forward and loss, falls with the bit width, and the allocated bit
//! map packs to exactly the bytes the allocation counted.

mod common_lm;
mod common_wide;

use common_wide::common_tiny;

use std::collections::HashMap;

use candle_core::{DType, Tensor};
use whittle::compress::allocate::{allocate, AllocationRequest};
use whittle::compress::bitmap::{BitMap, LayerFormat};
use whittle::compress::hessian::{hessian_sensitivity, hutchinson_traces, HessianOptions};
use whittle::compress::ptq::{quantize_linears, PtqMethod};
use whittle::compress::sensitivity::{
    kl_sensitivity, KlOptions, KlSensitivity, Metric, SensitivityFile, FORMAT,
};
use whittle::kernels::{Granularity, PackedMatrix, UniformQuantizer};
use whittle::models::whisper::{DecodeOptions, Transcriber, TOKEN_EMBEDDING};
use whittle::nn::Weight;
use whittle::train::batch::{make_batch, Prompt, TrainExample};
use whittle::train::loss::{forward, kl_divergence};
use whittle::train::{build_examples, Targets};

struct Fixture {
    _dir: tempfile::TempDir,
    transcriber: Transcriber,
    examples: Vec<TrainExample>,
    prompt: Prompt,
}

fn fixture(seed: u64, clips: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    common_wide::write_wide_hf(dir.path(), seed);
    with_clips(dir, clips)
}

/// The model written in `dir` with `clips` clips and their transcripts as training examples.
fn with_clips(dir: tempfile::TempDir, clips: usize) -> Fixture {
    let manifest = common_wide::write_clips(&dir.path().join("clips"), clips);
    let transcriber = common_tiny::load_transcriber(dir.path(), DecodeOptions::default());
    let utterances = whittle::data::load_dataset(&manifest).unwrap();
    let examples = build_examples(
        &utterances,
        Targets::Transcript,
        &transcriber.tokenizer,
        &HashMap::new(),
    )
    .unwrap();
    let prompt = Prompt {
        tokens: transcriber.tokenizer.prompt(false),
        eot: transcriber.tokenizer.eot,
    };
    Fixture {
        _dir: dir,
        transcriber,
        examples,
        prompt,
    }
}

fn measure(f: &mut Fixture, candidates: &[u8], batch_size: usize) -> KlSensitivity {
    kl_sensitivity(
        &mut f.transcriber.model,
        &f.examples,
        &f.prompt,
        &KlOptions {
            candidates: candidates.to_vec(),
            group: 64,
            batch_size,
        },
        |_| {},
    )
    .unwrap()
}

/// Every layer, the embedding included: finite, above zero at 8 bits, and larger at 2 bits
/// than at 4 and at 4 than at 8. The model is left float and unchanged.
#[test]
fn kl_is_positive_and_falls_with_the_bit_width() {
    let mut f = fixture(21, 3);
    let batch = make_batch(
        &f.examples.iter().collect::<Vec<_>>(),
        true,
        &f.transcriber.model.config,
        &f.prompt,
        f.transcriber.model.device(),
        DType::F32,
    )
    .unwrap();
    let before = forward(&f.transcriber.model, &batch, &[]).unwrap().logits;
    let s = measure(&mut f, &[2, 4, 8], 2);
    let layers = f.transcriber.model.quantizable_mut().len();
    assert_eq!(s.layers.len(), layers);
    assert_eq!(s.layers.last().unwrap().name, TOKEN_EMBEDDING);
    assert!(s.scored_tokens > f.examples.len());
    for l in &s.layers {
        let kl: Vec<f64> = l.candidates.iter().map(|c| c.kl.unwrap()).collect();
        assert!(kl.iter().all(|k| k.is_finite()), "{}: {kl:?}", l.name);
        assert!(kl[2] > 0.0, "{}: 8 bits gives {kl:?}", l.name);
        assert!(
            kl[0] > kl[1] && kl[1] > kl[2],
            "{}: KL does not fall with bits: {kl:?}",
            l.name
        );
    }
    let after = forward(&f.transcriber.model, &batch, &[]).unwrap().logits;
    assert_eq!(
        whittle::nn::max_abs_diff(&before, &after).unwrap(),
        0.0,
        "the model was not restored"
    );
    for (_, linear) in f.transcriber.model.quantizable_mut() {
        assert!(matches!(linear.weight, Weight::Float(_)));
    }
}

/// The cached partial passes and the f64 divergence give what the training forward and the
/// training KL give with the layer quantized by hand (an encoder matrix of block 1, a decoder
/// cross-attention key projection, the embedding).
#[test]
fn kl_matches_the_training_forward_and_loss() {
    let mut f = fixture(22, 3);
    let all = f.examples.len();
    let s = measure(&mut f, &[2, 3], all);
    let batch = make_batch(
        &f.examples.iter().collect::<Vec<_>>(),
        true,
        &f.transcriber.model.config,
        &f.prompt,
        f.transcriber.model.device(),
        DType::F32,
    )
    .unwrap();
    let teacher = forward(&f.transcriber.model, &batch, &[]).unwrap().logits;
    for name in [
        "model.encoder.layers.1.fc1",
        "model.decoder.layers.0.encoder_attn.k_proj",
        TOKEN_EMBEDDING,
    ] {
        let measured = s.layers.iter().find(|l| l.name == name).unwrap();
        for c in &measured.candidates {
            let mut model = f.transcriber.model.clone();
            {
                let mut layers = model.quantizable_mut();
                let linear = &mut layers.iter_mut().find(|(n, _)| n == name).unwrap().1;
                let (rows, cols) = linear.weight.dims();
                let w = linear.float_weight_values().unwrap();
                let q = UniformQuantizer::symmetric(c.bits, Granularity::Group(64))
                    .unwrap()
                    .quantize(&w, rows, cols)
                    .unwrap();
                let packed = PackedMatrix::pack(&q);
                assert_eq!(
                    (packed.codes().len() + 2 * packed.scales().len()) as u64,
                    c.bytes,
                    "{name} W{}",
                    c.bits
                );
                let deq =
                    Tensor::from_vec(packed.dequantize(), (rows, cols), &candle_core::Device::Cpu)
                        .unwrap();
                linear.weight = Weight::Float(deq);
            }
            let student = forward(&model, &batch, &[]).unwrap().logits;
            let expected = kl_divergence(&student, &teacher, 1.0)
                .unwrap()
                .to_scalar::<f32>()
                .unwrap() as f64;
            let got = c.kl.unwrap();
            assert!(
                (got - expected).abs() <= 1e-5 + 1e-3 * expected,
                "{name} W{}: {got} vs the training KL {expected}",
                c.bits
            );
        }
    }
}

#[test]
fn bad_candidates_and_groups_are_refused_naming_the_layer() {
    let mut f = fixture(23, 1);
    let mut run = |candidates: Vec<u8>, group: usize| {
        kl_sensitivity(
            &mut f.transcriber.model,
            &f.examples,
            &f.prompt,
            &KlOptions {
                candidates,
                group,
                batch_size: 1,
            },
            |_| {},
        )
        .unwrap_err()
        .to_string()
    };
    let err = run(vec![4, 9], 64);
    assert!(err.contains("9 bits") && err.contains("2..=8"), "{err}");
    // 128 divides the FFN's 128 inputs but not the 64 of the first attention projection.
    let err = run(vec![4], 128);
    assert!(
        err.contains("model.encoder.layers.0.self_attn.q_proj") && err.contains("64 input"),
        "{err}"
    );
    let err = run(vec![4], 48);
    assert!(err.contains("--group"), "{err}");
}

/// A sensitivity file of measured `layers` on the two-clip fixture.
fn sensitivity_file(
    metric: Metric,
    candidates: Vec<u8>,
    scored_tokens: usize,
    layers: Vec<whittle::compress::sensitivity::LayerSensitivity>,
    hessian: Option<whittle::compress::hessian::HessianEstimate>,
) -> SensitivityFile {
    SensitivityFile {
        format: FORMAT.into(),
        model: "tiny".into(),
        data: "clips".into(),
        metric,
        candidates,
        group: 64,
        utterances: 2,
        targets: "transcript".into(),
        scored_tokens,
        params: layers.iter().map(|l| l.params).sum(),
        float_bytes: layers.iter().map(|l| l.float_bytes).sum(),
        seconds: 0.0,
        threads: 1,
        whittle_version: "test".into(),
        hessian,
        layers,
    }
}

/// sensitivities -> exact allocation -> bit map file -> post-training quantization: every layer
/// gets its allocated width, packs to the bytes the allocation counted, and the total is
/// within the budget. An infeasible budget names the least achievable one.
#[test]
fn allocated_bit_map_packs_to_the_counted_bytes() {
    let mut f = fixture(24, 2);
    let measured = measure(&mut f, &[2, 3, 4, 8], 2);
    let sens = sensitivity_file(
        Metric::Kl,
        vec![2, 3, 4, 8],
        measured.scored_tokens,
        measured.layers,
        None,
    );
    let dir = tempfile::tempdir().unwrap();
    let sens_path = dir.path().join("sens.json");
    std::fs::write(&sens_path, serde_json::to_string(&sens).unwrap()).unwrap();
    let sens = SensitivityFile::read(&sens_path).unwrap();
    let request = |budget_bits: f64| AllocationRequest {
        budget_bits,
        candidates: None,
        min_bits: 2,
    };
    let allocation = allocate(&sens, &request(3.5)).unwrap();
    assert!(allocation.bytes <= allocation.budget_bytes);
    assert!(
        allocation.histogram().len() > 1,
        "expected a mixed allocation: {:?}",
        allocation.histogram()
    );
    let (text, _) = allocation.bit_map("sens.json", &sens).unwrap();
    assert!(
        text.starts_with('#') && text.contains("total sensitivity"),
        "{text}"
    );
    let map_path = dir.path().join("bits.toml");
    std::fs::write(&map_path, &text).unwrap();
    let bit_map = BitMap::from_file(&map_path).unwrap();
    let mut model = f.transcriber.model.clone();
    let reports = quantize_linears(&mut model, &bit_map, PtqMethod::Rtn, None).unwrap();
    assert_eq!(reports.len(), allocation.layers.len());
    for (report, choice) in reports.iter().zip(&allocation.layers) {
        assert_eq!(report.name, choice.name);
        assert_eq!(
            report.format,
            LayerFormat::uniform(choice.bits, Some(64)),
            "{}",
            report.name
        );
        assert_eq!(report.packed_bytes as u64, choice.bytes, "{}", report.name);
    }
    let packed: u64 = reports.iter().map(|r| r.packed_bytes as u64).sum();
    assert_eq!(packed, allocation.bytes);

    // 2-bit codes at g64 take 2.25 bits per weight with their scales: 2.2 cannot fit.
    let err = allocate(&sens, &request(2.2)).unwrap_err().to_string();
    assert!(
        err.contains("minimum achievable budget is 2.25 bits"),
        "{err}"
    );
    // --min-bits 3 leaves 2 bits out, so 3.25 is the floor.
    let err = allocate(
        &sens,
        &AllocationRequest {
            min_bits: 3,
            ..request(3.0)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("3.25 bits"), "{err}");
    let all_three = allocate(
        &sens,
        &AllocationRequest {
            min_bits: 3,
            ..request(3.25)
        },
    )
    .unwrap();
    assert!(all_three.layers.iter().all(|l| l.bits == 3));
    let err = allocate(
        &sens,
        &AllocationRequest {
            candidates: Some(vec![5]),
            ..request(6.0)
        },
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("5 bits was not measured"), "{err}");
}

/// The tiny Whisper of `common_tiny` (width 16) on two clips: small enough to form one matrix's
/// Hessian diagonal exactly, coordinate by coordinate.
fn narrow_fixture(seed: u64) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    common_tiny::write_hf(dir.path(), &common_tiny::hf_tensors(seed));
    with_clips(dir, 2)
}

/// Hutchinson's estimate of one matrix's Hessian trace is within 5 % of the trace formed
/// exactly from every diagonal entry (central differences of the gradient along each
/// coordinate, the same step), for a decoder and an encoder matrix.
#[test]
fn hutchinson_trace_matches_the_exact_diagonal() {
    let mut f = narrow_fixture(5);
    let options = HessianOptions {
        batch_size: 8,
        max_probes: 600,
        tolerance: 0.0,
        ..HessianOptions::default()
    };
    let model = &mut f.transcriber.model;
    let traces = hutchinson_traces(model, &f.examples, &f.prompt, &options, |_| {}).unwrap();
    assert_eq!(traces.estimate.probes, 600);
    assert!(!traces.estimate.converged);
    let names: Vec<String> = model
        .quantizable_mut()
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for name in [
        "model.decoder.layers.0.self_attn.v_proj",
        "model.encoder.layers.1.fc2",
    ] {
        let index = names.iter().position(|n| n == name).unwrap();
        // The estimate's own step (one for every matrix).
        let exact = common_lm::exact_hessian_trace(
            model,
            &f.examples,
            &f.prompt,
            index,
            traces.estimate.step,
        );
        let estimate = traces.traces[index];
        assert!(exact > 0.0, "{name}: exact trace {exact}");
        let relative = (estimate - exact).abs() / exact;
        println!(
            "{name}: Hutchinson {estimate:.4e}, exact {exact:.4e}, relative error {relative:.3}"
        );
        assert!(
            relative < 0.05,
            "{name}: Hutchinson {estimate} vs exact {exact}"
        );
    }
    // The model is left float and unchanged.
    assert!(matches!(
        model.quantizable_mut()[0].1.weight,
        Weight::Float(_)
    ));
}

/// On the wide model: every trace is finite and above zero, Ω falls with the bit width, the
/// file round-trips, and the allocation reads the Hessian scores.
#[test]
fn hessian_sensitivity_scores_every_candidate() {
    let mut f = fixture(31, 2);
    let options = HessianOptions {
        candidates: vec![2, 4, 8],
        group: 64,
        batch_size: 2,
        max_probes: 24,
        ..HessianOptions::default()
    };
    let measured = hessian_sensitivity(
        &mut f.transcriber.model,
        &f.examples,
        &f.prompt,
        &options,
        |_| {},
    )
    .unwrap();
    assert_eq!(measured.estimate.probes, 24);
    assert_eq!(
        measured.estimate.hessian_vector_products,
        "central finite differences of gradients"
    );
    // With 24 joint probes a trace estimate may still have either sign (the cross terms of
    // other matrices; `hutchinson_trace_matches_the_exact_diagonal` checks the converged value),
    // so only the bookkeeping is checked here.
    for l in &measured.layers {
        let trace = l.hessian_trace.unwrap();
        assert!(trace.is_finite(), "{}: {trace}", l.name);
        assert_eq!(l.hessian_trace_per_weight.unwrap(), trace / l.params as f64);
        let perturbation: Vec<f64> = l
            .candidates
            .iter()
            .map(|c| c.perturbation.unwrap())
            .collect();
        assert!(
            perturbation[0] > perturbation[1] && perturbation[1] > perturbation[2],
            "{}: {perturbation:?}",
            l.name
        );
        for c in &l.candidates {
            assert_eq!(c.hessian.unwrap(), trace * c.perturbation.unwrap());
        }
    }
    let sens = sensitivity_file(
        Metric::Hessian,
        vec![2, 4, 8],
        measured.scored_tokens,
        measured.layers.clone(),
        Some(measured.estimate.clone()),
    );
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sens.json");
    std::fs::write(&path, serde_json::to_string(&sens).unwrap()).unwrap();
    let read = SensitivityFile::read(&path).unwrap();
    assert_eq!(read.metric, Metric::Hessian);
    assert_eq!(read.hessian.as_ref().unwrap().probes, 24);
    assert_eq!(read.layers.len(), sens.layers.len());
    let request = AllocationRequest {
        budget_bits: 4.5,
        candidates: None,
        min_bits: 2,
    };
    let allocation = allocate(&read, &request).unwrap();
    assert_eq!(allocation.metric, Metric::Hessian);
    assert_eq!(allocation.layers.len(), read.layers.len());
}
