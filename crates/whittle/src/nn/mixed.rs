//! A weight that is a learned mixture of several quantized versions of one latent matrix: the
//! supernet state of one-stage mixed-precision quantization (SEEDS.md, method 1; the relaxation
//! is the Gumbel-softmax of Jang et al. 2017 and the differentiable architecture search of
//! Wu et al. 2019, "FBNet").
//!
//! Candidates `k = 1..K` are symmetric LSQ quantizers ([`super::lsq`]) of different bit widths
//! over the same group size. Each has its own learned steps; all share the latent weight `w`:
//!
//! `W~ = sum_k pi_k Q_k(w; s_k)`, `pi = softmax((lambda + g) / tau)`,
//!
//! with architecture logits `lambda [K]`, Gumbel noise `g` (drawn by the method, per step) and a
//! temperature `tau`. The hard variant uses the one-hot of the argmax in the forward and the soft
//! `pi` in the backward (straight-through). Rounding is straight-through as in LSQ, so
//!
//! - `dL/dw = G * sum_k pi_k [-Qn_k <= w/s_k <= Qp_k]`;
//! - `dL/ds_k` = `pi_k` times LSQ's step gradient of candidate `k`;
//! - `dL/dpi_k = sum G * Q_k(w)`,
//!
//! for `G = dL/dW~`. On CPU f32 the forward and this backward are one fused pass over the
//! matrix; elsewhere the same function is composed from candle ops ([`mixed_reference`]).
//!
//! # Shapes
//! latent `[rows, cols]`, steps `[K, rows, groups]`, logits `[K]`.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor, Var, D};
use rayon::prelude::*;

use super::lsq::{effective_step, lsq_fake_quant_reference, FakeQuant, LsqSpec, StepInit};
use crate::error::{Error, Result};

/// How the mixture weights are formed from the logits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Relaxation {
    /// Softmax temperature (> 0).
    pub tau: f64,
    /// One-hot of the argmax forward, soft backward.
    pub hard: bool,
}

/// The trainable supernet weight of one layer.
#[derive(Debug, Clone)]
pub struct MixedWeight {
    /// Shared latent weight `[rows, cols]`.
    pub latent: Var,
    /// Steps of every candidate, `[K, rows, groups]`.
    pub steps: Var,
    /// Architecture logits `[K]`.
    pub logits: Var,
    /// The candidates, all with the same group.
    pub candidates: Vec<LsqSpec>,
    /// Gumbel noise of the current step `[K]` (zeros when not sampling).
    pub noise: Tensor,
    /// Temperature and hardness of the current step.
    pub relaxation: Relaxation,
    /// `W~` of the current step, computed once by [`MixedWeight::prepare_step`] so a matrix
    /// used twice in one forward (the tied embedding: lookup and logits) is mixed once; cleared
    /// by [`MixedWeight::end_step`] when the variables change.
    pub step_weight: Option<Tensor>,
    /// A settled choice: the forward uses this candidate alone (no noise, no gradient to the
    /// logits) and [`MixedWeight::chosen`] returns it.
    pub frozen: Option<usize>,
}

impl MixedWeight {
    /// Start from a float weight: latent = `w`, every candidate's steps initialised as LSQ's,
    /// logits `initial_logits` (zeros give every candidate the same probability).
    pub fn init(
        w: &Tensor,
        candidates: &[LsqSpec],
        init: StepInit,
        initial_logits: &[f32],
    ) -> Result<Self> {
        w.dims2()?;
        let Some(first) = candidates.first() else {
            return Err(Error::config("mixed precision", "no candidates"));
        };
        if candidates.iter().any(|c| c.group != first.group) {
            return Err(Error::config(
                "mixed precision",
                "every candidate must have the same group",
            ));
        }
        if initial_logits.len() != candidates.len() {
            return Err(Error::config(
                "mixed precision",
                format!(
                    "{} initial logits for {} candidates",
                    initial_logits.len(),
                    candidates.len()
                ),
            ));
        }
        let steps = candidates
            .iter()
            .map(|&spec| {
                Ok(FakeQuant::init_with(w, spec, init)?
                    .steps
                    .as_tensor()
                    .clone())
            })
            .collect::<Result<Vec<_>>>()?;
        let steps = Tensor::stack(&steps, 0)?;
        let k = candidates.len();
        let logits = Tensor::from_vec(initial_logits.to_vec(), k, w.device())?;
        Ok(Self {
            latent: Var::from_tensor(&w.detach())?,
            steps: Var::from_tensor(&steps)?,
            logits: Var::from_tensor(&logits)?,
            candidates: candidates.to_vec(),
            noise: Tensor::zeros(k, DType::F32, w.device())?,
            relaxation: Relaxation {
                tau: 1.0,
                hard: false,
            },
            step_weight: None,
            frozen: None,
        })
    }

    /// Set this step's noise and relaxation, and compute its `W~` once (gradients still reach
    /// the variables through it from every micro-batch of the step).
    pub fn prepare_step(&mut self, noise: Tensor, relaxation: Relaxation) -> Result<()> {
        self.noise = noise;
        self.relaxation = relaxation;
        self.step_weight = None;
        self.step_weight = Some(self.mixed_weight()?);
        Ok(())
    }

    /// Forget this step's `W~` (call after the optimizer changed the variables).
    pub fn end_step(&mut self) {
        self.step_weight = None;
    }

    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        let d = self.latent.dims();
        (d[0], d[1])
    }

    /// The mixture weights `pi [K]` of the current step, differentiable in the logits.
    pub fn mixture(&self) -> candle_core::Result<Tensor> {
        if let Some(k) = self.frozen {
            return one_hot(k, self.candidates.len(), self.logits.device());
        }
        let z = ((self.logits.as_tensor() + &self.noise)? / self.relaxation.tau)?;
        let soft = softmax_1d(&z)?;
        if !self.relaxation.hard {
            return Ok(soft);
        }
        let hot = one_hot(self.argmax_of(&z)?, self.candidates.len(), z.device())?;
        hot + (&soft - soft.detach())?
    }

    /// Candidate probabilities `softmax(lambda)`: the distribution the Gumbel-max forward samples
    /// from at low temperature, whose mode extraction writes.
    pub fn probabilities(&self) -> candle_core::Result<Tensor> {
        softmax_1d(self.logits.as_tensor())
    }

    /// The index of the largest logit (the candidate extraction writes; ties go to the lower
    /// index), or the settled choice.
    pub fn chosen(&self) -> candle_core::Result<usize> {
        if let Some(k) = self.frozen {
            return Ok(k);
        }
        self.argmax_of(self.logits.as_tensor())
    }

    fn argmax_of(&self, z: &Tensor) -> candle_core::Result<usize> {
        let v: Vec<f32> = z.to_dtype(DType::F32)?.to_vec1()?;
        let mut best = 0;
        for (i, &x) in v.iter().enumerate() {
            if x > v[best] {
                best = i;
            }
        }
        Ok(best)
    }

    /// The mixed weight `W~ [rows, cols]`, differentiable in latent, steps and logits.
    pub fn mixed_weight(&self) -> candle_core::Result<Tensor> {
        if let Some(w) = &self.step_weight {
            return Ok(w.clone());
        }
        let pi = self.mixture()?;
        mixed_fake_quant(
            self.latent.as_tensor(),
            self.steps.as_tensor(),
            &pi,
            &self.candidates,
        )
    }

    /// Candidate `k` alone as an LSQ weight (shares the latent; the steps are a copy).
    pub fn candidate(&self, k: usize) -> Result<FakeQuant> {
        let spec = *self
            .candidates
            .get(k)
            .ok_or_else(|| Error::config("mixed precision", format!("no candidate {k}")))?;
        Ok(FakeQuant {
            latent: self.latent.clone(),
            steps: Var::from_tensor(&self.steps.as_tensor().get(k)?.detach())?,
            spec,
        })
    }
}

fn softmax_1d(z: &Tensor) -> candle_core::Result<Tensor> {
    let shifted = z.broadcast_sub(&z.max_keepdim(D::Minus1)?.detach())?;
    let e = shifted.exp()?;
    e.broadcast_div(&e.sum_keepdim(D::Minus1)?)
}

/// The one-hot vector `[k]` with a 1 at `index`.
pub(crate) fn one_hot(
    index: usize,
    k: usize,
    device: &candle_core::Device,
) -> candle_core::Result<Tensor> {
    let v: Vec<f32> = (0..k).map(|i| if i == index { 1.0 } else { 0.0 }).collect();
    Tensor::from_vec(v, k, device)
}

/// `sum_k pi_k Q_k(w; s_k)`: fused on CPU f32, composed elsewhere.
pub fn mixed_fake_quant(
    w: &Tensor,
    steps: &Tensor,
    pi: &Tensor,
    candidates: &[LsqSpec],
) -> candle_core::Result<Tensor> {
    let cpu_f32 = [w, steps, pi]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32);
    if cpu_f32 {
        w.contiguous()?.apply_op3(
            &steps.contiguous()?,
            &pi.contiguous()?,
            MixedForward {
                candidates: candidates.to_vec(),
            },
        )
    } else {
        mixed_reference(w, steps, pi, candidates)
    }
}

/// The same function composed from candle ops: the tests' reference.
pub fn mixed_reference(
    w: &Tensor,
    steps: &Tensor,
    pi: &Tensor,
    candidates: &[LsqSpec],
) -> candle_core::Result<Tensor> {
    let mut out = w.zeros_like()?;
    for (k, &spec) in candidates.iter().enumerate() {
        let q = lsq_fake_quant_reference(w, &steps.get(k)?, spec)?;
        out = (out + q.broadcast_mul(&pi.get(k)?)?)?;
    }
    Ok(out)
}

/// `(rows, cols, groups, glen)`, checking the steps and mixture against the weight.
fn mixed_dims(
    candidates: &[LsqSpec],
    lw: &Layout,
    ls: &Layout,
    lp: &Layout,
) -> candle_core::Result<(usize, usize, usize, usize)> {
    let (rows, cols) = lw.shape().dims2()?;
    let k = candidates.len();
    let glen = candidates.first().map_or(cols, |c| c.group_len(cols));
    let groups = cols / glen.max(1);
    if ls.shape().dims() != [k, rows, groups] || groups * glen != cols {
        candle_core::bail!(
            "mixed precision: steps {:?} do not match {k} candidates of weight [{rows}, {cols}] with group {glen}",
            ls.shape().dims()
        );
    }
    if lp.shape().dims() != [k] {
        candle_core::bail!(
            "mixed precision: mixture {:?} is not [{k}]",
            lp.shape().dims()
        );
    }
    Ok((rows, cols, groups, glen))
}

struct MixedForward {
    candidates: Vec<LsqSpec>,
}

impl CustomOp3 for MixedForward {
    fn name(&self) -> &'static str {
        "mixed-precision-fake-quant"
    }

    fn cpu_fwd(
        &self,
        sw: &CpuStorage,
        lw: &Layout,
        ss: &CpuStorage,
        ls: &Layout,
        sp: &CpuStorage,
        lp: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, cols, groups, glen) = mixed_dims(&self.candidates, lw, ls, lp)?;
        let w = super::fused::f32_data(sw, lw, "weight")?;
        let s = super::fused::f32_data(ss, ls, "steps")?;
        let pi = super::fused::f32_data(sp, lp, "mixture")?;
        let levels: Vec<(f32, f32)> = self.candidates.iter().map(|c| (c.qn(), c.qp())).collect();
        let plane = rows * groups;
        let mut out = vec![0f32; rows * cols];
        out.par_chunks_mut(cols)
            .zip(w.par_chunks(cols))
            .enumerate()
            .for_each(|(r, (o_row, w_row))| {
                for (k, &(qn, qp)) in levels.iter().enumerate() {
                    if pi[k] == 0.0 {
                        continue;
                    }
                    let s_row = &s[k * plane + r * groups..k * plane + (r + 1) * groups];
                    for ((o, wg), &step) in
                        o_row.chunks_mut(glen).zip(w_row.chunks(glen)).zip(s_row)
                    {
                        let step = effective_step(step);
                        let scale = pi[k] * step;
                        for (y, &x) in o.iter_mut().zip(wg) {
                            *y += (x / step).round().clamp(-qn, qp) * scale;
                        }
                    }
                }
            });
        Ok((CpuStorage::F32(out), Shape::from((rows, cols))))
    }

    fn bwd(
        &self,
        w: &Tensor,
        s: &Tensor,
        pi: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, cols) = w.dims2()?;
        let k = self.candidates.len();
        let (n, ns) = (rows * cols, s.elem_count());
        let mixture: Vec<f32> = pi.to_dtype(DType::F32)?.to_vec1()?;
        let all = w.apply_op3_no_bwd(
            s,
            &grad.contiguous()?,
            &MixedBackward {
                candidates: self.candidates.clone(),
                mixture,
            },
        )?;
        let grad_w = all.narrow(0, 0, n)?.reshape((rows, cols))?;
        let grad_s = all.narrow(0, n, ns)?.reshape(s.shape())?;
        let grad_pi = all.narrow(0, n + ns, k)?;
        Ok((Some(grad_w), Some(grad_s), Some(grad_pi)))
    }
}

/// `(w, s, G)` to `dL/dw`, `dL/ds` (`[K, rows, groups]`) and `dL/dpi`, concatenated flat.
struct MixedBackward {
    candidates: Vec<LsqSpec>,
    mixture: Vec<f32>,
}

impl CustomOp3 for MixedBackward {
    fn name(&self) -> &'static str {
        "mixed-precision-fake-quant-backward"
    }

    fn cpu_fwd(
        &self,
        sw: &CpuStorage,
        lw: &Layout,
        ss: &CpuStorage,
        ls: &Layout,
        sg: &CpuStorage,
        lg: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let k = self.candidates.len();
        let (rows, cols) = lw.shape().dims2()?;
        let glen = self.candidates.first().map_or(cols, |c| c.group_len(cols));
        let groups = cols / glen.max(1);
        if ls.shape().dims() != [k, rows, groups] || lg.shape().dims() != [rows, cols] {
            candle_core::bail!("mixed precision backward: mismatched shapes");
        }
        let w = super::fused::f32_data(sw, lw, "weight")?;
        let s = super::fused::f32_data(ss, ls, "steps")?;
        let g = super::fused::f32_data(sg, lg, "gradient")?;
        let specs: Vec<(f32, f32, f32)> = self
            .candidates
            .iter()
            .map(|c| (c.qn(), c.qp(), c.grad_scale(glen)))
            .collect();
        let pi = &self.mixture;
        let plane = rows * groups;
        // Per row: dL/dw, then dL/ds of every candidate `[K, groups]`, then dL/dpi `[K]`.
        let row_len = cols + k * groups + k;
        let mut scratch = vec![0f32; rows * row_len];
        scratch
            .par_chunks_mut(row_len)
            .enumerate()
            .for_each(|(r, out)| {
                let (gw_row, rest) = out.split_at_mut(cols);
                let (gs_row, gpi) = rest.split_at_mut(k * groups);
                let w_row = &w[r * cols..(r + 1) * cols];
                let g_row = &g[r * cols..(r + 1) * cols];
                for (c, &(qn, qp, scale)) in specs.iter().enumerate() {
                    let s_row = &s[c * plane + r * groups..c * plane + (r + 1) * groups];
                    let mut dpi = 0f32;
                    for (j, ((wg, gg), &step)) in w_row
                        .chunks(glen)
                        .zip(g_row.chunks(glen))
                        .zip(s_row)
                        .enumerate()
                    {
                        let step = effective_step(step);
                        let base = j * glen;
                        let mut acc = 0f32;
                        for (i, (&x, &dy)) in wg.iter().zip(gg).enumerate() {
                            let v = x / step;
                            let q = v.round().clamp(-qn, qp);
                            dpi += dy * q * step;
                            if v < -qn {
                                acc -= dy * qn;
                            } else if v > qp {
                                acc += dy * qp;
                            } else {
                                gw_row[base + i] += pi[c] * dy;
                                acc += dy * (v.round() - v);
                            }
                        }
                        gs_row[c * groups + j] = pi[c] * acc * scale;
                    }
                    gpi[c] = dpi;
                }
            });
        let mut out = vec![0f32; rows * cols + k * plane + k];
        let (grad_w, rest) = out.split_at_mut(rows * cols);
        let (grad_s, grad_pi) = rest.split_at_mut(k * plane);
        for (r, row) in scratch.chunks(row_len).enumerate() {
            grad_w[r * cols..(r + 1) * cols].copy_from_slice(&row[..cols]);
            for c in 0..k {
                let src = &row[cols + c * groups..cols + (c + 1) * groups];
                grad_s[c * plane + r * groups..c * plane + (r + 1) * groups].copy_from_slice(src);
            }
            for (acc, &x) in grad_pi.iter_mut().zip(&row[cols + k * groups..]) {
                *acc += x;
            }
        }
        Ok((
            CpuStorage::F32(out),
            Shape::from(rows * cols + k * plane + k),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::lsq::tests::weights;
    use candle_core::Device;

    fn candidates() -> Vec<LsqSpec> {
        [2, 3, 4, 8]
            .iter()
            .map(|&bits| LsqSpec {
                bits,
                group: Some(32),
            })
            .collect()
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap()
    }

    fn max_rel(a: &[f64], b: &[f64]) -> f64 {
        let scale = b.iter().fold(0f64, |m, x| m.max(x.abs())).max(1e-12);
        a.iter().zip(b).fold(0f64, |m, (x, y)| m.max((x - y).abs())) / scale
    }

    /// The fused op and its backward equal the composition of LSQ reference ops.
    #[test]
    fn fused_mixture_matches_the_composed_reference() {
        let (rows, cols) = (5, 96);
        let w = weights(rows, cols, 7, DType::F32);
        let mixed =
            MixedWeight::init(&w, &candidates(), StepInit::Lsq, &[0.3, -0.2, 0.5, 0.1]).unwrap();
        let c = weights(rows, cols, 11, DType::F32);
        let run = |fused: bool| {
            let pi = mixed.mixture().unwrap();
            let y = if fused {
                mixed.mixed_weight().unwrap()
            } else {
                mixed_reference(
                    mixed.latent.as_tensor(),
                    mixed.steps.as_tensor(),
                    &pi,
                    &mixed.candidates,
                )
                .unwrap()
            };
            let grads = (&y * &c).unwrap().sum_all().unwrap().backward().unwrap();
            let g = |v: &Var| flat(grads.get(v.as_tensor()).expect("gradient reaches it"));
            (
                flat(&y),
                g(&mixed.latent),
                g(&mixed.steps),
                g(&mixed.logits),
            )
        };
        let (yf, wf, sf, lf) = run(true);
        let (yr, wr, sr, lr) = run(false);
        assert!(max_rel(&yf, &yr) < 1e-6, "forward differs");
        assert!(max_rel(&wf, &wr) < 1e-4, "dL/dw differs");
        assert!(max_rel(&sf, &sr) < 1e-4, "dL/ds differs");
        assert!(
            max_rel(&lf, &lr) < 1e-4,
            "dL/dlambda differs: {lf:?} vs {lr:?}"
        );
        assert!(lf.iter().any(|x| x.abs() > 1e-6), "logit gradient is zero");
    }

    /// The logit gradient equals central finite differences of the mixture (smooth in lambda),
    /// in f64 through the composed path.
    #[test]
    fn logit_gradient_matches_finite_differences() {
        let (rows, cols) = (3, 64);
        let specs = candidates();
        let w = weights(rows, cols, 5, DType::F64);
        let init = MixedWeight::init(
            &w.to_dtype(DType::F32).unwrap(),
            &specs,
            StepInit::Lsq,
            &[0.0; 4],
        )
        .unwrap();
        let steps = init.steps.as_tensor().to_dtype(DType::F64).unwrap();
        let c = weights(rows, cols, 9, DType::F64);
        let tau = 0.7;
        let value = |lambda: &[f64]| -> (f64, Option<Vec<f64>>) {
            let lv = Var::from_tensor(&Tensor::new(lambda, &Device::Cpu).unwrap()).unwrap();
            let pi = softmax_1d(&(lv.as_tensor() / tau).unwrap()).unwrap();
            let y = mixed_reference(&w, &steps, &pi, &specs).unwrap();
            let loss = (y * &c).unwrap().sum_all().unwrap();
            let grads = loss.backward().unwrap();
            let g = grads.get(lv.as_tensor()).map(flat);
            (loss.to_scalar::<f64>().unwrap(), g)
        };
        let lambda = [0.2, -0.4, 0.9, 0.1];
        let (_, analytic) = value(&lambda);
        let analytic = analytic.expect("gradient reaches the logits");
        let h = 1e-6;
        for i in 0..lambda.len() {
            let (mut p, mut m) = (lambda, lambda);
            p[i] += h;
            m[i] -= h;
            let fd = (value(&p).0 - value(&m).0) / (2.0 * h);
            assert!(
                (fd - analytic[i]).abs() <= 1e-6 * (1.0 + fd.abs()),
                "lambda[{i}]: fd {fd} vs {}",
                analytic[i]
            );
        }
    }

    /// With a one-hot mixture the supernet weight is exactly the chosen candidate's LSQ weight,
    /// which is what its packed matrix dequantizes to.
    #[test]
    fn one_hot_mixture_is_the_chosen_candidate_and_packs_exactly() {
        let (rows, cols) = (4, 64);
        let w = weights(rows, cols, 3, DType::F32);
        let mut mixed =
            MixedWeight::init(&w, &candidates(), StepInit::Lsq, &[0.0, 3.0, 1.0, 0.5]).unwrap();
        mixed.relaxation = Relaxation {
            tau: 1.0,
            hard: true,
        };
        assert_eq!(mixed.chosen().unwrap(), 1);
        let y = flat(&mixed.mixed_weight().unwrap());
        let chosen = mixed.candidate(1).unwrap();
        let packed = chosen.to_packed().unwrap();
        let dequant: Vec<f64> = packed.dequantize().into_iter().map(f64::from).collect();
        assert_eq!(
            y, dequant,
            "hard supernet forward differs from the packed candidate"
        );
    }
}
