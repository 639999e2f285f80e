//! `method = "distill"`: plain distillation of float weights, nothing compressed. It is the
//! fine-tune that follows structured pruning (SEEDS.md method 3: the pruned model distilled
//! from the unpruned one), run as `whittle compress PRUNED.whittle --teacher UNPRUNED ...`: the
//! student keeps its smaller shapes, the teacher gives the KL and hidden-state targets, and the
//! file written is float.
//!
//! Every layer but the token embedding trains (the embedding stays as it is, as in uniform QAT);
//! biases and norms are not trained by any method here.

use super::method::{CompressionMethod, Extracted, MethodParam};
use super::optim::ParamGroup;
use crate::compress::bitmap::LayerFormat;
use crate::error::Result;
use crate::models::{LayerRole, Layers};
use crate::nn::Weight;
use candle_core::{DType, Var};

/// Distillation of float weights as a [`CompressionMethod`].
#[derive(Debug, Clone, Default)]
pub struct Distill;

impl CompressionMethod for Distill {
    fn name(&self) -> &'static str {
        "distill"
    }

    fn wrap(&mut self, student: &mut dyn Layers) -> Result<Vec<MethodParam>> {
        let mut params = Vec::new();
        for layer in student.layers_mut() {
            if layer.role == LayerRole::TokenEmbedding {
                continue;
            }
            let w = layer.linear.weight.to_dense()?.to_dtype(DType::F32)?;
            let var = Var::from_tensor(&w.copy()?)?;
            layer.linear.weight = Weight::Float(var.as_tensor().clone());
            params.push(MethodParam {
                name: format!("{}.weight", layer.name),
                var,
                group: ParamGroup::Weights,
            });
        }
        Ok(params)
    }

    fn extract(&self, shipped: &mut dyn Layers) -> Result<Extracted> {
        for layer in shipped.layers_mut() {
            if let Weight::Float(w) = &layer.linear.weight {
                layer.linear.weight = Weight::Float(w.detach().copy()?);
            }
        }
        let layers = shipped
            .layers()
            .into_iter()
            .map(|l| (l.name, LayerFormat::Float))
            .collect();
        Ok(Extracted {
            layers,
            report: serde_json::json!({ "method": "distill" }),
        })
    }
}
