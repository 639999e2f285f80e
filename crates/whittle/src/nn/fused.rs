//! Fused CPU kernels with a backward pass for the element-wise parts of training, where candle
//! would otherwise record a chain of primitive ops (one pass and one allocation each, and the
//! same again backward). Each op runs rows in parallel with rayon and falls back to candle's
//! composition on other devices and dtypes; the tests compare both.

use candle_core::{CpuStorage, CustomOp1, CustomOp2, DType, Layout, Shape, Tensor, D};
use rayon::prelude::*;

/// Contiguous f32 data of a CPU storage.
pub(crate) fn f32_data<'a>(
    s: &'a CpuStorage,
    l: &Layout,
    op: &str,
) -> candle_core::Result<&'a [f32]> {
    match l.contiguous_offsets() {
        Some((a, b)) => Ok(&s.as_slice::<f32>()?[a..b]),
        None => candle_core::bail!("{op}: input must be contiguous"),
    }
}

/// Whether the fused CPU kernel applies to `x`.
fn fusable(x: &Tensor) -> bool {
    x.device().is_cpu() && x.dtype() == DType::F32
}

/// Rows of `width` elements processed in parallel.
const MIN_ROWS_PER_TASK: usize = 8;

/// GELU with the exact erf form, `0.5 x (1 + erf(x / sqrt 2))`.
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    if x.track_op() && fusable(x) {
        x.contiguous()?.apply_op1(GeluErf)
    } else {
        x.gelu_erf()
    }
}

struct GeluErf;
struct GeluErfBackward;

#[inline]
fn gelu_value(x: f32) -> f32 {
    (candle_core::cpu::erf::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2) + 1.0) * 0.5 * x
}

#[inline]
fn gelu_derivative(x: f32) -> f32 {
    const INV_SQRT_2PI: f32 = 0.398_942_3;
    0.5 * (1.0 + candle_core::cpu::erf::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2))
        + x * INV_SQRT_2PI * (-0.5 * x * x).exp()
}

impl CustomOp1 for GeluErf {
    fn name(&self) -> &'static str {
        "fused-gelu-erf"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_data(s, l, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(4096)
            .zip(x.par_chunks(4096))
            .for_each(|(o, x)| o.iter_mut().zip(x).for_each(|(o, &x)| *o = gelu_value(x)));
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
    fn bwd(
        &self,
        arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            arg.apply_op2_no_bwd(&grad.contiguous()?, &GeluErfBackward)?,
        ))
    }
}

impl CustomOp2 for GeluErfBackward {
    fn name(&self) -> &'static str {
        "fused-gelu-erf-backward"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_data(s1, l1, self.name())?;
        let g = f32_data(s2, l2, self.name())?;
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(4096)
            .zip(x.par_chunks(4096).zip(g.par_chunks(4096)))
            .for_each(|(o, (x, g))| {
                for ((o, &x), &g) in o.iter_mut().zip(x).zip(g) {
                    *o = g * gelu_derivative(x);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// Softmax over the last dimension with a backward pass (`dx = y (dy - sum(dy y))`).
pub fn softmax_last_dim(x: &Tensor) -> candle_core::Result<Tensor> {
    if fusable(x) {
        x.contiguous()?.apply_op1(Softmax)
    } else {
        candle_nn::ops::softmax(x, D::Minus1)
    }
}

struct Softmax;
struct SoftmaxBackward;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "fused-softmax"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_data(s, l, self.name())?;
        let width = l.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(width)
            .zip(x.par_chunks(width))
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(o, x)| {
                let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let mut sum = 0f32;
                for (o, &x) in o.iter_mut().zip(x) {
                    *o = (x - max).exp();
                    sum += *o;
                }
                let inv = 1.0 / sum;
                o.iter_mut().for_each(|o| *o *= inv);
            });
        Ok((CpuStorage::F32(out), l.shape().clone()))
    }
    fn bwd(
        &self,
        _arg: &Tensor,
        res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(
            res.apply_op2_no_bwd(&grad.contiguous()?, &SoftmaxBackward)?,
        ))
    }
}

impl CustomOp2 for SoftmaxBackward {
    fn name(&self) -> &'static str {
        "fused-softmax-backward"
    }
    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let y = f32_data(s1, l1, self.name())?;
        let g = f32_data(s2, l2, self.name())?;
        let width = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; y.len()];
        out.par_chunks_mut(width)
            .zip(y.par_chunks(width).zip(g.par_chunks(width)))
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(o, (y, g))| {
                let dot: f32 = y.iter().zip(g).map(|(y, g)| y * g).sum();
                for ((o, &y), &g) in o.iter_mut().zip(y).zip(g) {
                    *o = y * (g - dot);
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{Device, Var};

    const TOL: f32 = 1e-5;

    fn input() -> Var {
        let v: Vec<f32> = (0..6 * 37)
            .map(|i| ((i * 7919 % 101) as f32 - 50.0) / 12.0)
            .collect();
        Var::from_tensor(&Tensor::from_vec(v, (2, 3, 37), &Device::Cpu).unwrap()).unwrap()
    }

    /// Fused op and candle's composition agree in value and gradient.
    fn check(
        fused: fn(&Tensor) -> candle_core::Result<Tensor>,
        reference: fn(&Tensor) -> candle_core::Result<Tensor>,
    ) {
        let x = input();
        let c = Tensor::from_vec(
            (0..6 * 37)
                .map(|i| (i as f32 * 0.37).sin())
                .collect::<Vec<_>>(),
            (2, 3, 37),
            &Device::Cpu,
        )
        .unwrap();
        let a = fused(x.as_tensor()).unwrap();
        let b = reference(x.as_tensor()).unwrap();
        let err = crate::nn::max_abs_diff(&a, &b);
        assert!(err < TOL, "value max_err {err}");
        let ga = (a * &c).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &c).unwrap().sum_all().unwrap().backward().unwrap();
        let err = crate::nn::max_abs_diff(
            ga.get(x.as_tensor()).unwrap(),
            gb.get(x.as_tensor()).unwrap(),
        );
        assert!(err < TOL, "gradient max_err {err}");
    }

    #[test]
    fn fused_softmax_matches_candle() {
        check(softmax_last_dim, |x| candle_nn::ops::softmax(x, D::Minus1));
    }

    #[test]
    fn fused_gelu_matches_candle() {
        check(gelu_erf, |x| x.gelu_erf());
    }
}
