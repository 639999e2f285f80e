//! Checks shared by the language-model tests (Llama, GPT-2) and the Hessian tests (any family).

#![allow(dead_code)]

use candle_core::{Device, Tensor};
use whittle::models::lm::CausalLm;
use whittle::nn::Weight;
use whittle::train::{TrainExample, TrainModel};

/// The training forward of `examples` as one batch gives, at every scored position, the
/// inference logits of each document alone (within 1e-4), and targets its next tokens.
pub fn assert_training_forward_is_inference<M: CausalLm + TrainModel<BatchContext = ()>>(
    model: &M,
    examples: &[TrainExample],
) {
    let refs: Vec<&TrainExample> = examples.iter().collect();
    let batch = model.make_batch(&refs, true, &()).unwrap();
    let rows: Vec<Vec<f32>> = model
        .forward_train(&batch, &[])
        .unwrap()
        .logits
        .to_vec2()
        .unwrap();
    let targets: Vec<u32> = batch.targets.to_vec1().unwrap();
    let mut k = 0;
    for e in &refs {
        let ids = Tensor::new(&e.tokens[..e.tokens.len() - 1], &Device::Cpu)
            .unwrap()
            .unsqueeze(0)
            .unwrap();
        let alone: Vec<Vec<f32>> = model
            .next_token_logits(&ids)
            .unwrap()
            .squeeze(0)
            .unwrap()
            .to_vec2()
            .unwrap();
        for (j, row) in alone.iter().enumerate() {
            assert_eq!(targets[k], e.tokens[j + 1], "text {} position {j}", e.id);
            let diff = row
                .iter()
                .zip(&rows[k])
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(diff < 1e-4, "text {} position {j}: {diff}", e.id);
            k += 1;
        }
    }
    assert_eq!(k, rows.len());
}

/// The Hessian trace of quantizable matrix `index` formed from every diagonal entry: central
/// differences, with step `h`, of that matrix's gradient along each coordinate.
pub fn exact_hessian_trace<M: TrainModel>(
    model: &mut M,
    examples: &[TrainExample],
    context: &M::BatchContext,
    index: usize,
    h: f64,
) -> f64 {
    use whittle::compress::hessian::layer_gradient;
    let Weight::Float(w) = model.layers()[index].linear.weight.clone() else {
        panic!("float")
    };
    let values: Vec<f32> = w.flatten_all().unwrap().to_vec1().unwrap();
    let mut exact = 0.0;
    for k in 0..values.len() {
        let mut grad_at = |sign: f64| {
            let mut shifted = values.clone();
            shifted[k] += (sign * h) as f32;
            let t = Tensor::from_vec(shifted, w.shape(), w.device()).unwrap();
            let g = layer_gradient(model, examples, context, index, &t).unwrap();
            g.flatten_all().unwrap().to_vec1::<f32>().unwrap()[k] as f64
        };
        exact += (grad_at(1.0) - grad_at(-1.0)) / (2.0 * h);
    }
    exact
}
