//! The training forward of Whisper and the distillation losses.
//!
//! - KL divergence from the teacher's token distributions at temperature `T`, scaled by `T^2`
//!   (Hinton, Vinyals and Dean 2015, "Distilling the Knowledge in a Neural Network");
//! - cross-entropy on the target tokens;
//! - L1 or cosine distance between teacher and student hidden states.
//!
//! Token losses are averaged over the positions that carry a target (padding never enters).
//!
//! # Shapes
//! Logits are gathered to the target positions before the vocabulary projection:
//! `[n, vocab]` for `n` targets in the batch.

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

use crate::nn::fused::f32_data;

use super::batch::Batch;
use super::recipe::{HiddenKind, HiddenTap, LossRecipe};
use crate::error::{Error, Result};
use crate::models::whisper::Whisper;

/// What the training forward returns.
#[derive(Debug, Clone)]
pub struct Outputs {
    /// Logits at the target positions, `[n, vocab]`.
    pub logits: Tensor,
    /// Hidden states at the requested taps, in order.
    pub hidden: Vec<Tensor>,
}

/// Teacher-forced forward of `model` on `batch` through the model's own code: encoder on the
/// trimmed mels, decoder on the right-padded tokens, logits at the target positions only.
pub fn forward(model: &Whisper, batch: &Batch, taps: &[HiddenTap]) -> Result<Outputs> {
    let layer_taps: Vec<usize> = taps
        .iter()
        .filter_map(|t| match t {
            HiddenTap::EncoderLayer(n) => Some(*n),
            _ => None,
        })
        .collect();
    let (encoded, layers) = model
        .encoder
        .forward_with_layers(&batch.features, &layer_taps)?;
    let hidden = model
        .decoder
        .forward_teacher_forced(&batch.inputs, &encoded)?;
    let (b, len, d) = hidden.dims3()?;
    let rows = hidden
        .reshape((b * len, d))?
        .index_select(&batch.positions, 0)?;
    // The tied projection trains only when the method made the embedding trainable.
    let logits = match model.decoder.embed_tokens.weight.trainable_dense()? {
        Some(table) if crate::nn::dense::fusable(&rows, &table, None) => {
            crate::nn::dense::linear(&rows, &table, None)?
        }
        Some(table) => rows.matmul(&table.t()?)?,
        None => {
            let table = model.decoder.embed_tokens.weight.to_dense()?;
            // A float table that is a variable (the Hessian sensitivity's) gets its gradient.
            if table.is_variable() && crate::nn::dense::fusable(&rows, &table, None) {
                crate::nn::dense::linear(&rows, &table, None)?
            } else {
                crate::nn::fused::matmul_fixed_t(&rows, &table)?
            }
        }
    };
    let mut layers = layers.into_iter();
    let hidden = taps
        .iter()
        .map(|t| match t {
            HiddenTap::Encoder => encoded.clone(),
            HiddenTap::EncoderLayer(_) => layers.next().expect("one output per layer tap"),
            HiddenTap::Decoder => rows.clone(),
        })
        .collect();
    Ok(Outputs { logits, hidden })
}

/// Row-wise log-softmax; the max is a constant shift, so it is detached (less backward work).
fn log_softmax_rows(x: &Tensor) -> candle_core::Result<Tensor> {
    let shifted = x.broadcast_sub(&x.max_keepdim(D::Minus1)?.detach())?;
    shifted.broadcast_sub(&shifted.exp()?.sum_keepdim(D::Minus1)?.log()?)
}

/// `T^2 * mean over rows of KL(softmax(teacher / T) || softmax(student / T))`.
///
/// On CPU f32 the per-row divergence and its gradient `(softmax(s / T) - p) / T` are one fused
/// op over the vocabulary (the composition makes about ten passes over `[n, vocab]` each way).
pub fn kl_divergence(student: &Tensor, teacher: &Tensor, temperature: f64) -> Result<Tensor> {
    let log_p = log_softmax_rows(&(teacher.detach() / temperature)?)?;
    let kl = if student.device().is_cpu() && student.dtype() == DType::F32 {
        student
            .contiguous()?
            .apply_op2(
                &log_p.contiguous()?,
                KlRows {
                    temperature: temperature as f32,
                },
            )?
            .mean_all()?
    } else {
        let log_q = log_softmax_rows(&(student / temperature)?)?;
        (log_p.exp()? * (log_p - log_q)?)?
            .sum(D::Minus1)?
            .mean_all()?
    };
    Ok((kl * (temperature * temperature))?)
}

/// Per-row `KL(p || softmax(s / T))` of student logits `s` `[n, V]` given teacher
/// log-probabilities `log p` `[n, V]`; output `[n]`.
struct KlRows {
    temperature: f32,
}

/// `(max, log sum exp)` of `s / T` over a row.
fn row_log_partition(s: &[f32], inv_t: f32) -> (f32, f32) {
    let max = s.iter().copied().fold(f32::NEG_INFINITY, f32::max) * inv_t;
    let sum: f32 = s.iter().map(|&x| (x * inv_t - max).exp()).sum();
    (max, sum.ln())
}

impl CustomOp2 for KlRows {
    fn name(&self) -> &'static str {
        "kl-rows"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let s = f32_data(s1, l1, self.name())?;
        let lp = f32_data(s2, l2, self.name())?;
        let (n, v) = l1.shape().dims2()?;
        let inv_t = 1.0 / self.temperature;
        let mut out = vec![0f32; n];
        out.par_iter_mut()
            .zip(s.par_chunks(v).zip(lp.par_chunks(v)))
            .for_each(|(o, (s, lp))| {
                let (max, log_z) = row_log_partition(s, inv_t);
                *o = s
                    .iter()
                    .zip(lp)
                    .map(|(&x, &lp)| lp.exp() * (lp - (x * inv_t - max - log_z)))
                    .sum();
            });
        Ok((CpuStorage::F32(out), Shape::from(n)))
    }

    fn bwd(
        &self,
        s: &Tensor,
        lp: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let g = s.apply_op3_no_bwd(
            lp,
            &grad.contiguous()?,
            &KlRowsBackward {
                temperature: self.temperature,
            },
        )?;
        Ok((Some(g), None))
    }
}

/// `dKL/ds = grad_row * (softmax(s / T) - p) / T`.
struct KlRowsBackward {
    temperature: f32,
}

impl CustomOp3 for KlRowsBackward {
    fn name(&self) -> &'static str {
        "kl-rows-backward"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let s = f32_data(s1, l1, self.name())?;
        let lp = f32_data(s2, l2, self.name())?;
        let g = f32_data(s3, l3, self.name())?;
        let (n, v) = l1.shape().dims2()?;
        let inv_t = 1.0 / self.temperature;
        let mut out = vec![0f32; n * v];
        out.par_chunks_mut(v)
            .zip(s.par_chunks(v).zip(lp.par_chunks(v)))
            .zip(g.par_iter())
            .for_each(|((o, (s, lp)), &g)| {
                let (max, log_z) = row_log_partition(s, inv_t);
                let scale = g * inv_t;
                for ((o, &x), &lp) in o.iter_mut().zip(s).zip(lp) {
                    *o = scale * ((x * inv_t - max - log_z).exp() - lp.exp());
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((n, v))))
    }
}

/// Mean cross-entropy of `logits` `[n, vocab]` against `targets` `[n]` (u32).
pub fn cross_entropy(logits: &Tensor, targets: &Tensor) -> Result<Tensor> {
    let log_q = log_softmax_rows(logits)?;
    let picked = log_q.gather(&targets.unsqueeze(1)?, 1)?;
    Ok(picked.mean_all()?.neg()?)
}

/// Distance between hidden states (last dimension = features).
pub fn hidden_distance(student: &Tensor, teacher: &Tensor, kind: HiddenKind) -> Result<Tensor> {
    let teacher = teacher.detach();
    Ok(match kind {
        HiddenKind::L1 => (student - &teacher)?.abs()?.mean_all()?,
        HiddenKind::Cosine => {
            let dot = (student * &teacher)?.sum(D::Minus1)?;
            let norms = (student.sqr()?.sum(D::Minus1)?.sqrt()?
                * teacher.sqr()?.sum(D::Minus1)?.sqrt()?)?;
            (1.0 - (dot / (norms + 1e-8)?)?.mean_all()?)?
        }
    })
}

/// The total loss and its parts (as numbers, for logs).
#[derive(Debug, Clone)]
pub struct LossParts {
    /// Weighted sum, differentiable.
    pub total: Tensor,
    /// KL term (unweighted).
    pub kl: f64,
    /// Cross-entropy term (unweighted).
    pub ce: f64,
    /// Hidden-state terms (unweighted), in recipe order.
    pub hidden: Vec<f64>,
}

fn scalar(t: &Tensor) -> Result<f64> {
    Ok(t.to_dtype(DType::F64)?.to_scalar::<f64>()?)
}

/// The recipe's weighted loss of `student` against `teacher` outputs on `batch`.
pub fn qat_loss(
    recipe: &LossRecipe,
    student: &Outputs,
    teacher: &Outputs,
    batch: &Batch,
) -> Result<LossParts> {
    if student.hidden.len() != recipe.hidden.len() || teacher.hidden.len() != recipe.hidden.len() {
        return Err(Error::config(
            "loss",
            "hidden-state outputs do not match loss.hidden",
        ));
    }
    let mut total = student.logits.zeros_like()?.sum_all()?;
    let (mut kl, mut ce) = (0.0, 0.0);
    if recipe.kl > 0.0 {
        let t = kl_divergence(&student.logits, &teacher.logits, recipe.temperature)?;
        kl = scalar(&t)?;
        total = (total + (t * recipe.kl)?)?;
    }
    if recipe.ce > 0.0 {
        if batch.targets.elem_count() != student.logits.dim(0)? {
            return Err(Error::config(
                "loss.ce",
                "this model family's batches have no token targets (CTC models train on kl and \
                 hidden terms only)",
            ));
        }
        let t = cross_entropy(&student.logits, &batch.targets)?;
        ce = scalar(&t)?;
        total = (total + (t * recipe.ce)?)?;
    }
    let mut hidden = Vec::with_capacity(recipe.hidden.len());
    for ((term, s), t) in recipe
        .hidden
        .iter()
        .zip(&student.hidden)
        .zip(&teacher.hidden)
    {
        let d = hidden_distance(s, t, term.kind)?;
        hidden.push(scalar(&d)?);
        if term.weight > 0.0 {
            total = (total + (d * term.weight)?)?;
        }
    }
    Ok(LossParts {
        total,
        kl,
        ce,
        hidden,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    fn t<const N: usize>(v: &[[f32; 3]; N]) -> Tensor {
        Tensor::new(v, &Device::Cpu).unwrap()
    }

    /// KL against a direct computation, zero for identical inputs, gradient `T (q - p)` per
    /// row / n (the T^2 scaling cancels the 1/T of the softmax).
    #[test]
    fn kl_matches_the_definition_and_its_gradient() {
        let s = Var::from_tensor(&t(&[[1.0, 2.0, 0.5], [0.0, -1.0, 3.0]])).unwrap();
        let teacher = t(&[[0.5, 1.0, 2.0], [1.0, 1.0, 1.0]]);
        let temp = 2.0;
        let kl = kl_divergence(s.as_tensor(), &teacher, temp).unwrap();
        let sm = |row: &[f32]| {
            let z: Vec<f64> = row.iter().map(|&x| (f64::from(x) / temp).exp()).collect();
            let sum: f64 = z.iter().sum();
            z.into_iter().map(|x| x / sum).collect::<Vec<_>>()
        };
        let (sv, tv): (Vec<Vec<f32>>, Vec<Vec<f32>>) =
            (s.as_tensor().to_vec2().unwrap(), teacher.to_vec2().unwrap());
        let mut expected = 0.0;
        let mut grads = Vec::new();
        for (a, b) in sv.iter().zip(&tv) {
            let (q, p) = (sm(a), sm(b));
            expected += p.iter().zip(&q).map(|(p, q)| p * (p / q).ln()).sum::<f64>();
            grads.push(
                q.iter()
                    .zip(&p)
                    .map(|(q, p)| temp * (q - p) / 2.0)
                    .collect::<Vec<_>>(),
            );
        }
        expected *= temp * temp / 2.0;
        let got = scalar(&kl).unwrap();
        assert!((got - expected).abs() < 1e-5, "{got} vs {expected}");
        let g = kl
            .backward()
            .unwrap()
            .get(s.as_tensor())
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        for (gr, er) in g.iter().zip(&grads) {
            for (a, b) in gr.iter().zip(er) {
                assert!((f64::from(*a) - b).abs() < 1e-5, "{a} vs {b}");
            }
        }
        // The composition (used off CPU) agrees with the fused op.
        let composed = {
            let log_q = log_softmax_rows(&(s.as_tensor() / temp).unwrap()).unwrap();
            let log_p = log_softmax_rows(&(&teacher / temp).unwrap()).unwrap();
            let kl = (log_p.exp().unwrap() * (log_p - log_q).unwrap())
                .unwrap()
                .sum(D::Minus1)
                .unwrap();
            scalar(&kl.mean_all().unwrap()).unwrap() * temp * temp
        };
        assert!((composed - got).abs() < 1e-5, "{composed} vs {got}");
        let same = kl_divergence(&teacher, &teacher, temp).unwrap();
        assert!(scalar(&same).unwrap().abs() < 1e-6);
    }

    #[test]
    fn cross_entropy_and_hidden_distances() {
        let logits = t(&[[0.0, 0.0, 0.0], [10.0, 0.0, 0.0]]);
        let targets = Tensor::new(&[1u32, 0], &Device::Cpu).unwrap();
        let ce = scalar(&cross_entropy(&logits, &targets).unwrap()).unwrap();
        let expected = (3f64.ln() + (1.0 + 2.0 * (-10f64).exp()).ln()) / 2.0;
        assert!((ce - expected).abs() < 1e-5, "{ce} vs {expected}");
        let a = t(&[[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]]);
        let b = t(&[[2.0, 0.0, 0.0], [0.0, 0.0, 1.0]]);
        let cos = scalar(&hidden_distance(&a, &b, HiddenKind::Cosine).unwrap()).unwrap();
        assert!((cos - 0.5).abs() < 1e-6, "{cos}");
        let l1 = scalar(&hidden_distance(&a, &b, HiddenKind::L1).unwrap()).unwrap();
        assert!((l1 - 4.0 / 6.0).abs() < 1e-6, "{l1}");
    }
}
