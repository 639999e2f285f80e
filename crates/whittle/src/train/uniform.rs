//! `method = "uniform-lsq"`: quantization-aware training with learned step sizes (LSQ, Esser
//! et al. 2020) at fixed bit widths, one format for every block linear layer or a bit map per
//! layer (stage B of the two-stage mixed-precision baseline trains the allocated map this way).

use super::method::{pack_lsq, wrap_lsq, CompressionMethod, Extracted, MethodParam};
use crate::compress::bitmap::{BitMap, LayerFormat};
use crate::compress::ptq::resolve_bit_map;
use crate::error::{Error, Result};
use crate::models;
use crate::nn::{LsqSpec, StepInit};

/// Which layers train at which precision.
#[derive(Debug, Clone)]
pub enum LayerSelection {
    /// Every layer quantized by default at one spec (the token embedding stays float).
    Uniform(LsqSpec),
    /// Per layer, as the bit map says (the embedding only when named).
    Map(BitMap),
}

impl LayerSelection {
    /// The recipe's selection: its bit map when there is one, else `spec` for every layer.
    pub fn new(spec: LsqSpec, bit_map: Option<BitMap>) -> Self {
        match bit_map {
            Some(map) => LayerSelection::Map(map),
            None => LayerSelection::Uniform(spec),
        }
    }

    /// The symmetric spec of each quantizable layer of `model` (`None`: stays float); `method`
    /// names the method in errors.
    pub fn specs(
        &self,
        model: &dyn models::Layers,
        method: &str,
    ) -> Result<Vec<(String, Option<LsqSpec>)>> {
        match self {
            LayerSelection::Uniform(spec) => Ok(model
                .layers()
                .into_iter()
                .filter(|l| l.role.quantized_by_default())
                .map(|l| (l.name, Some(*spec)))
                .collect()),
            LayerSelection::Map(map) => resolve_bit_map(model, map)?
                .into_iter()
                .map(|layer| {
                    let spec = match layer.format {
                        LayerFormat::Float => None,
                        LayerFormat::Uniform {
                            bits,
                            group,
                            symmetric: true,
                        } => Some(LsqSpec { bits, group }),
                        other => {
                            return Err(Error::config(
                                format!("{}: layer {}", map.source, layer.name),
                                format!(
                                    "{} cannot be trained by {method} (symmetric uniform or float only)",
                                    other.label()
                                ),
                            ))
                        }
                    };
                    Ok((layer.name, spec))
                })
                .collect(),
        }
    }
}

/// Uniform LSQ as a [`CompressionMethod`].
#[derive(Debug, Clone)]
pub struct UniformLsq {
    layers: LayerSelection,
    init: StepInit,
}

impl UniformLsq {
    /// Every block linear layer at `spec`.
    pub fn uniform(spec: LsqSpec, init: StepInit) -> Self {
        Self {
            layers: LayerSelection::Uniform(spec),
            init,
        }
    }

    /// Each layer at its bit map format (symmetric uniform or float).
    pub fn with_bit_map(map: BitMap, init: StepInit) -> Self {
        Self {
            layers: LayerSelection::Map(map),
            init,
        }
    }
}

impl CompressionMethod for UniformLsq {
    fn name(&self) -> &'static str {
        "uniform-lsq"
    }

    fn wrap(&mut self, student: &mut dyn models::Layers) -> Result<Vec<MethodParam>> {
        let specs = self.layers.specs(student, "uniform LSQ")?;
        let mut params = Vec::new();
        for layer in student.layers_mut() {
            let (name, linear) = (layer.name, layer.linear);
            let Some((_, Some(spec))) = specs.iter().find(|(n, _)| *n == name) else {
                continue;
            };
            params.extend(wrap_lsq(&name, linear, *spec, self.init)?);
        }
        if params.is_empty() {
            return Err(Error::config(
                "uniform-lsq",
                "the bit map leaves every layer float: nothing to train",
            ));
        }
        Ok(params)
    }

    fn extract(&self, shipped: &mut dyn models::Layers) -> Result<Extracted> {
        let mut layers = Vec::new();
        for layer in shipped.layers_mut() {
            let (name, linear) = (layer.name, layer.linear);
            layers.push((name, pack_lsq(linear)?.unwrap_or(LayerFormat::Float)));
        }
        Ok(Extracted {
            layers,
            report: serde_json::Value::Null,
        })
    }
}
