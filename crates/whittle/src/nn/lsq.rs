//! Fake quantization with a learned step size (LSQ; Esser et al. 2020, "Learned Step Size
//! Quantization", ICLR), the trainable state of a linear layer's weight.
//!
//! A latent float weight `w` and one positive step size `s` per output channel or per group of
//! input features give the weight the forward pass sees:
//!
//! `v = w / s`, `q = clamp(round(v), -Qn, Qp)`, `w_q = q * s`,
//!
//! with `Qn = 2^(b-1)` and `Qp = 2^(b-1) - 1`, the symmetric grid of
//! [`whittle_kernels::Scheme::Symmetric`] (codes `q + Qn`). Rounding is straight-through, so
//!
//! - `dL/dw = dL/dw_q` where `-Qn <= v <= Qp`, else 0;
//! - `dL/ds = g * sum over the group of dL/dw_q * (q - v)` inside the range, `* q` outside,
//!
//! scaled by `g = 1 / sqrt(Qp * N)`, `N` the weights sharing the step (the paper's per-tensor
//! `N` generalised to channels and groups). Steps start at `2 mean|w| / sqrt(Qp)` over their
//! group. The step the forward uses is rounded to f16 (straight-through), as the packed format
//! stores it, so [`FakeQuant::to_packed`] reproduces the trained function exactly.
//!
//! On CPU with f32 the forward and backward run as one fused, row-parallel candle custom op; on
//! other devices and dtypes the same function is composed from candle ops
//! ([`lsq_fake_quant_reference`]), which the tests also use as the reference.
//!
//! The function applies to any tensor whose last dimension is split into groups, so an input
//! (activation) quantizer is the same op on `x` with its own step; only weights use it today.
//!
//! # Shapes
//! - latent weight `[rows = out_features, cols = in_features]`;
//! - steps `[rows, groups]`, `groups = cols / group` (1 for per-channel).

use candle_core::{CpuStorage, CustomOp2, CustomOp3, DType, Layout, Shape, Tensor, Var};
use half::f16;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use whittle_kernels::{Granularity, PackedMatrix, QuantFormat, QuantizedMatrix, Scheme};

use crate::error::{Error, Result};

/// Smallest step the forward uses (2^-20, exact in f16): keeps `w / s` finite if an update drives
/// a step to zero or below.
pub const MIN_STEP: f32 = 1.0 / (1u32 << 20) as f32;

/// Bit width and step granularity of a symmetric LSQ quantizer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LsqSpec {
    /// Bits per weight, 2..=8.
    pub bits: u8,
    /// Input features per step; `None` = one step per output channel.
    pub group: Option<usize>,
}

impl LsqSpec {
    /// `2^(b-1)`: magnitude of the most negative level.
    pub fn qn(&self) -> f32 {
        (1u32 << (self.bits - 1)) as f32
    }

    /// `2^(b-1) - 1`: the most positive level.
    pub fn qp(&self) -> f32 {
        self.qn() - 1.0
    }

    /// Weights sharing one step in a row of `cols`.
    pub fn group_len(&self, cols: usize) -> usize {
        self.group.unwrap_or(cols).min(cols)
    }

    /// Check the spec against a `[rows, cols]` weight; the message says what is wrong.
    pub fn check(&self, rows: usize, cols: usize) -> std::result::Result<(), String> {
        if !(2..=8).contains(&self.bits) {
            return Err(format!("bits {} is outside 2..=8", self.bits));
        }
        if rows == 0 || cols == 0 {
            return Err(format!("weight [{rows}, {cols}] is empty"));
        }
        if let Some(g) = self.group {
            self.granularity().validate().map_err(|e| e.to_string())?;
            if !cols.is_multiple_of(self.group_len(cols)) {
                return Err(format!(
                    "group {g} does not divide {cols} input features (a pruned width? prune \
                     with `--align {g}` or the recipe's `prune.align = {g}`)"
                ));
            }
        }
        Ok(())
    }

    /// The packed format's granularity for these steps.
    pub fn granularity(&self) -> Granularity {
        match self.group {
            Some(g) => Granularity::Group(g),
            None => Granularity::PerRow,
        }
    }

    /// LSQ's gradient scale `1 / sqrt(Qp * N)` for `N` weights per step.
    pub fn grad_scale(&self, weights_per_step: usize) -> f32 {
        1.0 / (self.qp() * weights_per_step as f32).sqrt()
    }
}

/// How the steps start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StepInit {
    /// The LSQ paper's `2 mean|w| / sqrt(Qp)`.
    #[default]
    Lsq,
    /// `max|w| / Qn` per group: the round-to-nearest grid of post-training quantization, no
    /// weight clipped.
    AbsMax,
}

/// The step the forward pass uses: clamped to [`MIN_STEP`] and rounded to f16 as stored.
#[inline]
pub fn effective_step(s: f32) -> f32 {
    f16::from_f32(s.max(MIN_STEP)).to_f32()
}

/// A trainable fake-quantized weight: latent float weight and learned steps.
#[derive(Debug, Clone)]
pub struct FakeQuant {
    /// Latent weight `[rows, cols]`.
    pub latent: Var,
    /// Steps `[rows, groups]`.
    pub steps: Var,
    /// Bits and granularity.
    pub spec: LsqSpec,
}

impl FakeQuant {
    /// Start from a float weight: latent = `w`, steps = `2 mean|w| / sqrt(Qp)` per group.
    pub fn init(w: &Tensor, spec: LsqSpec) -> Result<Self> {
        Self::init_with(w, spec, StepInit::Lsq)
    }

    /// Start from a float weight with the chosen step initialisation.
    pub fn init_with(w: &Tensor, spec: LsqSpec, init: StepInit) -> Result<Self> {
        let (rows, cols) = w.dims2()?;
        spec.check(rows, cols)
            .map_err(|r| Error::config("LSQ", r))?;
        let glen = spec.group_len(cols);
        let groups = w.reshape((rows, cols / glen, glen))?.abs()?;
        let steps = match init {
            StepInit::Lsq => (groups.mean(2)? * (2.0 / f64::from(spec.qp()).sqrt()))?,
            StepInit::AbsMax => (groups.max(2)? / f64::from(spec.qn()))?,
        };
        Ok(Self {
            latent: Var::from_tensor(&w.detach())?,
            steps: Var::from_tensor(&steps)?,
            spec,
        })
    }

    /// `(rows, cols)`.
    pub fn dims(&self) -> (usize, usize) {
        let d = self.latent.dims();
        (d[0], d[1])
    }

    /// The fake-quantized weight `[rows, cols]`, differentiable in latent and steps.
    pub fn quantized_weight(&self) -> candle_core::Result<Tensor> {
        lsq_fake_quant(self.latent.as_tensor(), self.steps.as_tensor(), self.spec)
    }

    /// Codes and f16 steps exactly as the forward pass uses them.
    pub fn to_quantized_matrix(&self) -> Result<QuantizedMatrix> {
        let (rows, cols) = self.dims();
        let w: Vec<f32> = self
            .latent
            .as_tensor()
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let s: Vec<f32> = self
            .steps
            .as_tensor()
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1()?;
        let glen = self.spec.group_len(cols);
        let (qn, qp) = (self.spec.qn(), self.spec.qp());
        let mut codes = Vec::with_capacity(rows * cols);
        for (i, &x) in w.iter().enumerate() {
            let step = effective_step(s[(i / cols) * (cols / glen) + (i % cols) / glen]);
            codes.push(((x / step).round().clamp(-qn, qp) + qn) as u8);
        }
        let scales = s
            .iter()
            .map(|&x| f16::from_f32(effective_step(x)))
            .collect();
        let format = QuantFormat {
            scheme: Scheme::Symmetric {
                bits: self.spec.bits,
            },
            granularity: self.spec.granularity(),
        };
        Ok(QuantizedMatrix::from_parts(
            rows, cols, format, codes, scales, None,
        )?)
    }

    /// The packed weight that computes the same function as [`FakeQuant::quantized_weight`].
    pub fn to_packed(&self) -> Result<PackedMatrix> {
        Ok(PackedMatrix::pack(&self.to_quantized_matrix()?))
    }
}

/// Fake-quantize `w [rows, cols]` with steps `s [rows, groups]`: fused on CPU f32, composed
/// from candle ops elsewhere.
pub fn lsq_fake_quant(w: &Tensor, s: &Tensor, spec: LsqSpec) -> candle_core::Result<Tensor> {
    if w.device().is_cpu() && w.dtype() == DType::F32 && s.dtype() == DType::F32 {
        w.contiguous()?
            .apply_op2(&s.contiguous()?, LsqForward { spec })
    } else {
        lsq_fake_quant_reference(w, s, spec)
    }
}

/// The same function composed from candle ops (straight-through rounding by `detach`), for
/// devices without the fused kernel and as the tests' reference.
pub fn lsq_fake_quant_reference(
    w: &Tensor,
    s: &Tensor,
    spec: LsqSpec,
) -> candle_core::Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    let glen = spec.group_len(cols);
    let g = f64::from(spec.grad_scale(glen));
    // Each straight-through term is `value.detach() + (x - x.detach())`: the forward value is
    // exact and the backward sees `x`.
    let through = |value: &Tensor, x: &Tensor| value.detach() + (x - x.detach())?;
    // Forward: the stored f16 step; backward: identity, then LSQ's gradient scale g.
    let s16 = s
        .clamp(MIN_STEP, f32::MAX)?
        .to_dtype(DType::F16)?
        .to_dtype(s.dtype())?;
    let s_g = through(&s16, &(s * g)?)?.reshape((rows, cols / glen, 1))?;
    let v = w
        .reshape((rows, cols / glen, glen))?
        .broadcast_div(&s_g)?
        .clamp(-f64::from(spec.qn()), f64::from(spec.qp()))?;
    let q = through(&v.round()?, &v)?;
    q.broadcast_mul(&s_g)?.reshape((rows, cols))
}

/// `w_q` of row-major `w [rows, cols]` with steps `s [rows, cols / glen]`.
pub(crate) fn quantize_values(
    w: &[f32],
    s: &[f32],
    cols: usize,
    glen: usize,
    spec: LsqSpec,
) -> Vec<f32> {
    let (qn, qp) = (spec.qn(), spec.qp());
    let mut out = vec![0f32; w.len()];
    out.par_chunks_mut(cols)
        .zip(w.par_chunks(cols))
        .zip(s.par_chunks(cols / glen))
        .for_each(|((o_row, w_row), s_row)| {
            for ((o, wg), &step) in o_row.chunks_mut(glen).zip(w_row.chunks(glen)).zip(s_row) {
                let step = effective_step(step);
                for (y, &x) in o.iter_mut().zip(wg) {
                    *y = (x / step).round().clamp(-qn, qp) * step;
                }
            }
        });
    out
}

/// `dL/dw` followed by `dL/ds` (flat) of [`quantize_values`] given `g = dL/dw_q`.
pub(crate) fn backward_values(
    w: &[f32],
    s: &[f32],
    g: &[f32],
    cols: usize,
    glen: usize,
    spec: LsqSpec,
) -> Vec<f32> {
    let groups = cols / glen;
    let rows = w.len() / cols;
    let (qn, qp) = (spec.qn(), spec.qp());
    let scale = spec.grad_scale(glen);
    let mut out = vec![0f32; rows * cols + rows * groups];
    let (grad_w, grad_s) = out.split_at_mut(rows * cols);
    grad_w
        .par_chunks_mut(cols)
        .zip(grad_s.par_chunks_mut(groups))
        .zip(w.par_chunks(cols).zip(s.par_chunks(groups)))
        .zip(g.par_chunks(cols))
        .for_each(|(((gw_row, gs_row), (w_row, s_row)), g_row)| {
            for (((gw, gs), (wg, &step)), gg) in gw_row
                .chunks_mut(glen)
                .zip(gs_row.iter_mut())
                .zip(w_row.chunks(glen).zip(s_row))
                .zip(g_row.chunks(glen))
            {
                let step = effective_step(step);
                let mut acc = 0f32;
                for ((dw, &x), &dy) in gw.iter_mut().zip(wg).zip(gg) {
                    let v = x / step;
                    if v < -qn {
                        *dw = 0.0;
                        acc -= dy * qn;
                    } else if v > qp {
                        *dw = 0.0;
                        acc += dy * qp;
                    } else {
                        *dw = dy;
                        acc += dy * (v.round() - v);
                    }
                }
                *gs = acc * scale;
            }
        });
    out
}

/// Fused forward; its backward is [`LsqBackward`].
struct LsqForward {
    spec: LsqSpec,
}

/// `(rows, cols, groups, group_len)` of a weight and its steps.
pub(crate) fn lsq_dims(
    spec: LsqSpec,
    lw: &Layout,
    ls: &Layout,
) -> candle_core::Result<(usize, usize, usize)> {
    let (rows, cols) = lw.shape().dims2()?;
    let glen = spec.group_len(cols);
    let groups = cols / glen.max(1);
    if ls.shape().dims() != [rows, groups] || groups * glen != cols {
        candle_core::bail!(
            "LSQ: steps {:?} do not match weight [{rows}, {cols}] with group {glen}",
            ls.shape().dims()
        );
    }
    Ok((rows, cols, glen))
}

impl CustomOp2 for LsqForward {
    fn name(&self) -> &'static str {
        "lsq-fake-quant"
    }

    fn cpu_fwd(
        &self,
        sw: &CpuStorage,
        lw: &Layout,
        ss: &CpuStorage,
        ls: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, cols, glen) = lsq_dims(self.spec, lw, ls)?;
        let w = super::fused::f32_data(sw, lw, "weight")?;
        let s = super::fused::f32_data(ss, ls, "steps")?;
        let out = quantize_values(w, s, cols, glen, self.spec);
        Ok((CpuStorage::F32(out), Shape::from((rows, cols))))
    }

    fn bwd(
        &self,
        w: &Tensor,
        s: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let (rows, cols) = w.dims2()?;
        let n = rows * cols;
        let both = w.apply_op3_no_bwd(s, &grad.contiguous()?, &LsqBackward { spec: self.spec })?;
        let grad_w = both.narrow(0, 0, n)?.reshape((rows, cols))?;
        let grad_s = both.narrow(0, n, s.elem_count())?.reshape(s.shape())?;
        Ok((Some(grad_w), Some(grad_s)))
    }
}

/// Fused backward of [`LsqForward`]: `(w, s, dL/dw_q)` to `dL/dw` and `dL/ds`, returned
/// concatenated (flat) because a custom op has one output.
struct LsqBackward {
    spec: LsqSpec,
}

impl CustomOp3 for LsqBackward {
    fn name(&self) -> &'static str {
        "lsq-fake-quant-backward"
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
        let (rows, cols, glen) = lsq_dims(self.spec, lw, ls)?;
        let groups = cols / glen;
        let w = super::fused::f32_data(sw, lw, "weight")?;
        let s = super::fused::f32_data(ss, ls, "steps")?;
        let g = super::fused::f32_data(sg, lg, "gradient")?;
        let out = backward_values(w, s, g, cols, glen, self.spec);
        Ok((
            CpuStorage::F32(out),
            Shape::from(rows * cols + rows * groups),
        ))
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::Device;

    /// Fused and composed forward compute the same f32 operations.
    const FORWARD_TOL: f32 = 1e-6;
    /// Fused (f32) gradients against the composed f32 autograd gradients.
    const GRAD_TOL: f32 = 1e-4;
    /// Relative tolerance of analytic gradients against central finite differences (f64).
    const FD_REL_TOL: f64 = 1e-6;

    /// Deterministic weights in [-0.1, 0.1) (a 64-bit LCG).
    pub(crate) fn weights(rows: usize, cols: usize, seed: u64, dtype: DType) -> Tensor {
        let mut state = seed;
        let v: Vec<f64> = (0..rows * cols)
            .map(|_| {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((state >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.2
            })
            .collect();
        Tensor::from_vec(v, (rows, cols), &Device::Cpu)
            .unwrap()
            .to_dtype(dtype)
            .unwrap()
    }

    fn max_rel(a: &Tensor, b: &Tensor) -> f32 {
        let scale = crate::nn::max_abs_diff(b, &b.zeros_like().unwrap()).unwrap();
        crate::nn::max_abs_diff(a, b).unwrap() / scale.max(1e-12)
    }

    fn specs() -> Vec<LsqSpec> {
        vec![
            LsqSpec {
                bits: 2,
                group: None,
            },
            LsqSpec {
                bits: 3,
                group: Some(32),
            },
            LsqSpec {
                bits: 4,
                group: Some(64),
            },
            LsqSpec {
                bits: 8,
                group: None,
            },
        ]
    }

    /// Forward values lie on the grid `s * {-Qn..Qp}` of the stored step; fused equals composed.
    #[test]
    fn forward_is_on_the_grid_and_fused_matches_reference() {
        for spec in specs() {
            let w = weights(6, 128, u64::from(spec.bits), DType::F32);
            // Halve the steps so some weights clip.
            let fq = FakeQuant::init(&w, spec).unwrap();
            let s = (fq.steps.as_tensor() * 0.5).unwrap();
            let fused = lsq_fake_quant(&w, &s, spec).unwrap();
            let reference = lsq_fake_quant_reference(&w, &s, spec).unwrap();
            let err = crate::nn::max_abs_diff(&fused, &reference).unwrap();
            assert!(
                err < FORWARD_TOL,
                "{spec:?}: max_err {err} exceeds {FORWARD_TOL}"
            );
            let glen = spec.group_len(128);
            let y: Vec<Vec<f32>> = fused.to_vec2().unwrap();
            let sv: Vec<Vec<f32>> = s.to_vec2().unwrap();
            for (r, row) in y.iter().enumerate() {
                for (c, &x) in row.iter().enumerate() {
                    let step = effective_step(sv[r][c / glen]);
                    let q = x / step;
                    assert!(
                        (q - q.round()).abs() < 1e-4,
                        "{spec:?}: {x} is off the grid of {step}"
                    );
                    assert!(q.round() >= -spec.qn() && q.round() <= spec.qp());
                }
            }
        }
    }

    /// Gradients of `sum(c * w_q)`: fused backward against candle autograd of the composition.
    #[test]
    fn fused_gradients_match_autograd_of_the_composition() {
        for spec in specs() {
            let w = Var::from_tensor(&weights(5, 128, 7, DType::F32)).unwrap();
            let init = FakeQuant::init(w.as_tensor(), spec).unwrap();
            let s = Var::from_tensor(&(init.steps.as_tensor() * 0.6).unwrap()).unwrap();
            let c = weights(5, 128, 99, DType::F32);
            let grads = |f: &dyn Fn() -> Tensor| {
                let g = (f() * &c).unwrap().sum_all().unwrap().backward().unwrap();
                (
                    g.get(w.as_tensor()).unwrap().clone(),
                    g.get(s.as_tensor()).unwrap().clone(),
                )
            };
            let (gw_f, gs_f) =
                grads(&|| lsq_fake_quant(w.as_tensor(), s.as_tensor(), spec).unwrap());
            let (gw_r, gs_r) =
                grads(&|| lsq_fake_quant_reference(w.as_tensor(), s.as_tensor(), spec).unwrap());
            let ew = max_rel(&gw_f, &gw_r);
            let es = max_rel(&gs_f, &gs_r);
            assert!(ew < GRAD_TOL, "{spec:?}: weight grad max_rel {ew}");
            assert!(es < GRAD_TOL, "{spec:?}: step grad max_rel {es}");
        }
    }

    /// Straight-through: `dL/dw` is the upstream gradient inside the clipping range and exactly
    /// zero outside it.
    #[test]
    fn weight_gradient_is_straight_through_inside_and_zero_outside() {
        let spec = LsqSpec {
            bits: 3,
            group: None,
        };
        let w = Var::from_tensor(
            &Tensor::new(&[[-1.0f32, -0.33, 0.0, 0.26, 0.7, 0.9]], &Device::Cpu).unwrap(),
        )
        .unwrap();
        let s = Var::from_tensor(&Tensor::new(&[[0.125f32]], &Device::Cpu).unwrap()).unwrap();
        let upstream = Tensor::new(&[[1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0]], &Device::Cpu).unwrap();
        let y = lsq_fake_quant(w.as_tensor(), s.as_tensor(), spec).unwrap();
        // Qn = 4, Qp = 3: -1.0 clips to -0.5, 0.7 and 0.9 clip to 0.375.
        let values: Vec<f32> = y.flatten_all().unwrap().to_vec1().unwrap();
        assert_eq!(values, vec![-0.5, -0.375, 0.0, 0.25, 0.375, 0.375]);
        let grads = (y * &upstream)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        let gw: Vec<f32> = grads
            .get(w.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        assert_eq!(gw, vec![0.0, 2.0, 3.0, 4.0, 0.0, 0.0]);
        // dL/ds = g * (1*(-4) + 2*(-3 - -2.64) + 3*0 + 4*(2 - 2.08) + 5*3 + 6*3), g = 1/sqrt(3*6).
        let gs: f32 = grads
            .get(s.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0];
        let expected =
            (-4.0 + 2.0 * (-3.0 + 2.64) + 4.0 * (2.0 - 2.08) + 15.0 + 18.0) / (18f32).sqrt();
        assert!(
            (gs - expected).abs() < 1e-4,
            "step grad {gs}, expected {expected}"
        );
    }

    /// Analytic LSQ gradients equal central finite differences of the straight-through
    /// surrogate `s (clamp(w / s) + r)`, with the rounding residue `r` and the f16 step
    /// correction frozen at the base point (f64; steps divided by LSQ's gradient scale).
    #[test]
    fn lsq_gradients_match_finite_differences() {
        for spec in specs() {
            let (rows, cols) = (3, 64);
            let glen = spec.group_len(cols);
            let w0 = weights(rows, cols, 3, DType::F64);
            let init = FakeQuant::init(&w0.to_dtype(DType::F32).unwrap(), spec).unwrap();
            let s0 = (init.steps.as_tensor().to_dtype(DType::F64).unwrap() * 0.7).unwrap();
            let c = weights(rows, cols, 41, DType::F64);
            let wv = Var::from_tensor(&w0).unwrap();
            let sv = Var::from_tensor(&s0).unwrap();
            let y = lsq_fake_quant_reference(wv.as_tensor(), sv.as_tensor(), spec).unwrap();
            let grads = (y * &c).unwrap().sum_all().unwrap().backward().unwrap();
            let gw: Vec<f64> = grads
                .get(wv.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let gs: Vec<f64> = grads
                .get(sv.as_tensor())
                .unwrap()
                .flatten_all()
                .unwrap()
                .to_vec1()
                .unwrap();
            let w: Vec<f64> = w0.flatten_all().unwrap().to_vec1().unwrap();
            let s: Vec<f64> = s0.flatten_all().unwrap().to_vec1().unwrap();
            let cv: Vec<f64> = c.flatten_all().unwrap().to_vec1().unwrap();
            let (qn, qp) = (f64::from(spec.qn()), f64::from(spec.qp()));
            let gidx = |i: usize| (i / cols) * (cols / glen) + (i % cols) / glen;
            let s16 = |x: f64| f64::from(effective_step(x as f32));
            // Frozen at the base point: f16 correction of each step, rounding residue of each weight.
            let ds: Vec<f64> = s.iter().map(|&x| s16(x) - x).collect();
            let r: Vec<f64> = w
                .iter()
                .enumerate()
                .map(|(i, &x)| {
                    let v = (x / s16(s[gidx(i)])).clamp(-qn, qp);
                    v.round() - v
                })
                .collect();
            let surrogate = |w: &[f64], s: &[f64]| -> f64 {
                w.iter()
                    .enumerate()
                    .map(|(i, &x)| {
                        let step = s[gidx(i)] + ds[gidx(i)];
                        cv[i] * step * ((x / step).clamp(-qn, qp) + r[i])
                    })
                    .sum()
            };
            let h = 1e-7;
            for i in 0..w.len() {
                let (mut wp, mut wm) = (w.clone(), w.clone());
                wp[i] += h;
                wm[i] -= h;
                let fd = (surrogate(&wp, &s) - surrogate(&wm, &s)) / (2.0 * h);
                assert!(
                    (fd - gw[i]).abs() <= FD_REL_TOL * (1.0 + fd.abs()),
                    "{spec:?} w[{i}]: fd {fd} vs {}",
                    gw[i]
                );
            }
            let g = f64::from(spec.grad_scale(glen));
            for j in 0..s.len() {
                let (mut sp, mut sm) = (s.clone(), s.clone());
                sp[j] += h * s[j];
                sm[j] -= h * s[j];
                let fd = (surrogate(&w, &sp) - surrogate(&w, &sm)) / (2.0 * h * s[j]);
                let analytic = gs[j] / g;
                assert!(
                    (fd - analytic).abs() <= 1e-5 * (1.0 + fd.abs()),
                    "{spec:?} s[{j}]: fd {fd} vs {analytic}"
                );
            }
        }
    }

    /// The packed weight reproduces the fake-quantized one exactly (same codes and f16 steps).
    #[test]
    fn packed_weight_equals_fake_quantized_weight() {
        for spec in specs() {
            let w = weights(8, 128, 5, DType::F32);
            let fq = FakeQuant::init(&w, spec).unwrap();
            fq.steps
                .set(&(fq.steps.as_tensor() * 0.8).unwrap())
                .unwrap();
            let packed = fq.to_packed().unwrap();
            let dense = Tensor::from_vec(packed.dequantize(), (8, 128), &Device::Cpu).unwrap();
            let err = crate::nn::max_abs_diff(&dense, &fq.quantized_weight().unwrap()).unwrap();
            assert!(err == 0.0, "{spec:?}: packed differs by {err}");
        }
    }

    /// Packed kernels round each 32-block of the input to int8 (`matmul_q8`) and sum in another
    /// order than candle's matmul: with these small inputs the observed error is about 5e-4.
    const PACKED_FORWARD_TOL: f32 = 5e-3;

    /// A linear layer computes the same outputs after its fake-quantized weight is packed.
    #[test]
    fn packed_linear_forward_equals_fake_quant_forward() {
        use crate::nn::{Linear, Weight};
        use candle_core::Module;
        for spec in specs() {
            let w = weights(24, 128, 11, DType::F32);
            let bias = weights(1, 24, 12, DType::F32).squeeze(0).unwrap();
            let x = weights(7, 128, 13, DType::F32)
                .reshape((1, 7, 128))
                .unwrap();
            let fq = FakeQuant::init(&w, spec).unwrap();
            let mut linear = Linear::new(Weight::FakeQuant(fq.clone()), Some(bias));
            let a = linear.forward(&x).unwrap();
            linear.set_packed(fq.to_packed().unwrap());
            let b = linear.forward(&x).unwrap();
            let err = crate::nn::max_abs_diff(&a, &b).unwrap();
            assert!(
                err < PACKED_FORWARD_TOL,
                "{spec:?}: max_err {err} exceeds {PACKED_FORWARD_TOL}"
            );
        }
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        let w = weights(4, 96, 1, DType::F32);
        let err = FakeQuant::init(
            &w,
            LsqSpec {
                bits: 9,
                group: None,
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("bits 9"), "{err}");
        let err = FakeQuant::init(
            &w,
            LsqSpec {
                bits: 4,
                group: Some(64),
            },
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not divide"), "{err}");
    }
}
