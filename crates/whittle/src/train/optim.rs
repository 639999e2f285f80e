//! AdamW (Loshchilov and Hutter 2019, "Decoupled Weight Decay Regularization") over named
//! candle variables in parameter groups with their own learning rates, with gradient
//! accumulation and global-norm clipping. Its moments are plain tensors so checkpoints can
//! save and restore them exactly.

use candle_core::{DType, Tensor, Var};
use rayon::prelude::*;

use crate::error::{Error, Result};

/// Which learning rate a parameter follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ParamGroup {
    /// Latent weights (with weight decay).
    Weights,
    /// LSQ steps (no weight decay).
    Scales,
    /// Architecture parameters of a search (mixed-precision logits; no weight decay).
    Arch,
}

/// A trainable parameter with its optimizer state.
#[derive(Debug, Clone)]
pub struct Param {
    /// Stable name (checkpoint key).
    pub name: String,
    /// The variable the model reads.
    pub var: Var,
    /// Learning-rate group.
    pub group: ParamGroup,
    /// First moment.
    pub m: Tensor,
    /// Second moment.
    pub v: Tensor,
}

/// Hyperparameters of one update.
#[derive(Debug, Clone, Copy)]
pub struct AdamWConfig {
    /// `(beta1, beta2)`.
    pub betas: (f64, f64),
    /// Denominator epsilon.
    pub eps: f64,
    /// Decoupled weight decay of [`ParamGroup::Weights`].
    pub weight_decay: f64,
}

/// AdamW over a list of parameters.
#[derive(Debug, Clone)]
pub struct AdamW {
    /// Parameters in a fixed order.
    pub params: Vec<Param>,
    /// Updates applied so far (bias correction uses it).
    pub steps: u64,
    /// Hyperparameters.
    pub config: AdamWConfig,
}

impl AdamW {
    /// Fresh state (zero moments) for `params`.
    pub fn new(params: Vec<(String, Var, ParamGroup)>, config: AdamWConfig) -> Result<Self> {
        let params = params
            .into_iter()
            .map(|(name, var, group)| {
                let zeros = var.as_tensor().zeros_like()?;
                Ok(Param {
                    name,
                    var,
                    group,
                    m: zeros.clone(),
                    v: zeros,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            params,
            steps: 0,
            config,
        })
    }

    /// Apply one update with gradients `grads` (same order as the parameters) and the learning
    /// rates of the weight and step groups (weight decay on the weights only).
    pub fn step(&mut self, grads: &[Tensor], lr_weights: f64, lr_scales: f64) -> Result<()> {
        let decay = self.config.weight_decay;
        self.step_with(grads, |group| match group {
            ParamGroup::Weights => (lr_weights, decay),
            ParamGroup::Scales | ParamGroup::Arch => (lr_scales, 0.0),
        })
    }

    /// Apply one update; `rate` gives each group's `(learning rate, weight decay)`.
    pub fn step_with(
        &mut self,
        grads: &[Tensor],
        rate: impl Fn(ParamGroup) -> (f64, f64),
    ) -> Result<()> {
        if grads.len() != self.params.len() {
            return Err(Error::config(
                "AdamW",
                format!(
                    "{} gradients for {} parameters",
                    grads.len(),
                    self.params.len()
                ),
            ));
        }
        self.steps += 1;
        let (b1, b2) = self.config.betas;
        let t = self.steps as i32;
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for (p, g) in self.params.iter_mut().zip(grads) {
            let (lr, decay) = rate(p.group);
            if p.var.device().is_cpu() && p.var.dtype() == DType::F32 {
                let h = Hyper {
                    b1,
                    b2,
                    c1,
                    c2,
                    eps: self.config.eps,
                    lr,
                    decay,
                };
                fused_update(p, g, h)?;
                continue;
            }
            p.m = ((&p.m * b1)? + (g * (1.0 - b1))?)?;
            p.v = ((&p.v * b2)? + (g.sqr()? * (1.0 - b2))?)?;
            let update = ((&p.m / c1)? / ((&p.v / c2)?.sqrt()? + self.config.eps)?)?;
            let w = p.var.as_tensor();
            let decayed = if decay > 0.0 {
                (w * (1.0 - lr * decay))?
            } else {
                w.clone()
            };
            p.var.set(&(decayed - (update * lr)?)?)?;
        }
        Ok(())
    }
}

/// Scalars of one AdamW update.
#[derive(Clone, Copy)]
struct Hyper {
    b1: f64,
    b2: f64,
    c1: f64,
    c2: f64,
    eps: f64,
    lr: f64,
    decay: f64,
}

/// The same update as the tensor code in [`AdamW::step`], in one parallel pass (CPU, f32).
fn fused_update(p: &mut Param, g: &Tensor, h: Hyper) -> Result<()> {
    let shape = p.var.shape().clone();
    let device = p.var.device().clone();
    let flat = |t: &Tensor| -> Result<Vec<f32>> { Ok(t.flatten_all()?.to_vec1::<f32>()?) };
    let (mut w, mut m, mut v, g) = (flat(p.var.as_tensor())?, flat(&p.m)?, flat(&p.v)?, flat(g)?);
    // 1 - beta in f64: in f32, 1 - 0.999 is off by 5e-5 relative.
    let (b1, b2) = (h.b1 as f32, h.b2 as f32);
    let (one_minus_b1, one_minus_b2) = ((1.0 - h.b1) as f32, (1.0 - h.b2) as f32);
    let (inv_c1, inv_c2) = (1.0 / h.c1 as f32, 1.0 / h.c2 as f32);
    let (eps, lr, keep) = (h.eps as f32, h.lr as f32, (1.0 - h.lr * h.decay) as f32);
    const CHUNK: usize = 1 << 14;
    w.par_chunks_mut(CHUNK)
        .zip(m.par_chunks_mut(CHUNK))
        .zip(v.par_chunks_mut(CHUNK))
        .zip(g.par_chunks(CHUNK))
        .for_each(|(((w, m), v), g)| {
            for (((w, m), v), &g) in w.iter_mut().zip(m).zip(v).zip(g) {
                *m = b1 * *m + one_minus_b1 * g;
                *v = b2 * *v + one_minus_b2 * g * g;
                let update = (*m * inv_c1) / ((*v * inv_c2).sqrt() + eps);
                *w = *w * keep - lr * update;
            }
        });
    p.var.set(&Tensor::from_vec(w, shape.clone(), &device)?)?;
    p.m = Tensor::from_vec(m, shape.clone(), &device)?;
    p.v = Tensor::from_vec(v, shape, &device)?;
    Ok(())
}

/// Global L2 norm of `grads`.
pub fn global_norm(grads: &[Tensor]) -> Result<f64> {
    let mut total = 0f64;
    for g in grads {
        total += g
            .to_dtype(DType::F64)?
            .sqr()?
            .sum_all()?
            .to_scalar::<f64>()?;
    }
    Ok(total.sqrt())
}

/// Scale `grads` so their global norm is at most `max_norm`; returns the norm before clipping.
pub fn clip_global_norm(grads: &mut [Tensor], max_norm: f64) -> Result<f64> {
    let norm = global_norm(grads)?;
    if norm > max_norm {
        let factor = max_norm / (norm + 1e-6);
        for g in grads.iter_mut() {
            *g = (&*g * factor)?;
        }
    }
    Ok(norm)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    /// Two AdamW steps against values worked out by hand (beta1 0.9, beta2 0.999, eps 0).
    #[test]
    fn adamw_matches_the_update_rule() {
        let var = Var::from_tensor(&Tensor::new(&[1.0f32, -2.0], &Device::Cpu).unwrap()).unwrap();
        let config = AdamWConfig {
            betas: (0.9, 0.999),
            eps: 0.0,
            weight_decay: 0.1,
        };
        let mut opt =
            AdamW::new(vec![("w".into(), var.clone(), ParamGroup::Weights)], config).unwrap();
        let g = Tensor::new(&[0.5f32, -0.25], &Device::Cpu).unwrap();
        opt.step(std::slice::from_ref(&g), 0.01, 1.0).unwrap();
        // Step 1: m_hat = g, v_hat = g^2, update = sign(g); w = w (1 - lr wd) - lr sign(g).
        let w: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        assert!((w[0] - (1.0 * 0.999 - 0.01)).abs() < 1e-6, "{w:?}");
        assert!((w[1] - (-2.0 * 0.999 + 0.01)).abs() < 1e-6, "{w:?}");
        // Step 2 with the same gradient: m_hat = g and v_hat = g^2 again.
        opt.step(&[g], 0.01, 1.0).unwrap();
        let w2: Vec<f32> = var.as_tensor().to_vec1().unwrap();
        assert!((w2[0] - (w[0] * 0.999 - 0.01)).abs() < 1e-6, "{w2:?}");
        // Scales get no weight decay and their own rate.
        let s = Var::from_tensor(&Tensor::new(&[1.0f32], &Device::Cpu).unwrap()).unwrap();
        let mut opt =
            AdamW::new(vec![("s".into(), s.clone(), ParamGroup::Scales)], config).unwrap();
        opt.step(&[Tensor::new(&[2.0f32], &Device::Cpu).unwrap()], 0.01, 0.5)
            .unwrap();
        let sv = s.as_tensor().to_vec1::<f32>().unwrap()[0];
        assert!((sv - 0.5).abs() < 1e-6, "{sv}");
    }

    #[test]
    fn clipping_bounds_the_global_norm() {
        let mut grads = vec![
            Tensor::new(&[3.0f32], &Device::Cpu).unwrap(),
            Tensor::new(&[4.0f32], &Device::Cpu).unwrap(),
        ];
        let before = clip_global_norm(&mut grads, 1.0).unwrap();
        assert!((before - 5.0).abs() < 1e-9);
        assert!((global_norm(&grads).unwrap() - 1.0).abs() < 1e-5);
    }
}
