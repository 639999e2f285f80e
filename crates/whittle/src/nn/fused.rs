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

/// GELU with the exact erf form, `0.5 x (1 + erf(x / sqrt 2))`: on the CPU in f32 the
/// vectorised kernel of `whittle_kernels` (candle's scalar `erf` took 5 % of a wav2vec2-base
/// forward), with its backward when the input trains.
pub fn gelu_erf(x: &Tensor) -> candle_core::Result<Tensor> {
    if fusable(x) {
        x.contiguous()?.apply_op1(GeluErf)
    } else {
        x.gelu_erf()
    }
}

struct GeluErf;
struct GeluErfBackward;

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
        // The forward is the inference kernel on a copy; only the backward is specific here.
        let mut out = f32_data(s, l, self.name())?.to_vec();
        whittle_kernels::activations::gelu(&mut out);
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
        let width = l.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut out = f32_data(s, l, self.name())?.to_vec();
        whittle_kernels::activations::softmax_rows(&mut out, width);
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
        let err = crate::nn::max_abs_diff(&a, &b).unwrap();
        assert!(err < TOL, "value max_err {err}");
        let ga = (a * &c).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (b * &c).unwrap().sum_all().unwrap().backward().unwrap();
        let err = crate::nn::max_abs_diff(
            ga.get(x.as_tensor()).unwrap(),
            gb.get(x.as_tensor()).unwrap(),
        )
        .unwrap();
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

/// `x [n, d] · w^T` for a matrix `w [m, d]` that is never trained (the decoder's tied output
/// projection during QAT): candle's matmul backward would also form the `[m, d]` gradient of
/// `w` (for Whisper's vocabulary, twice the product's cost) only to drop it.
pub fn matmul_fixed_t(x: &Tensor, w: &Tensor) -> candle_core::Result<Tensor> {
    if x.track_op() && fusable(x) && !w.track_op() {
        x.contiguous()?.apply_op1(FixedProjection { w: w.clone() })
    } else {
        x.matmul(&w.t()?)
    }
}

struct FixedProjection {
    w: Tensor,
}

impl CustomOp1 for FixedProjection {
    fn name(&self) -> &'static str {
        "fixed-projection"
    }
    fn cpu_fwd(&self, s: &CpuStorage, l: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (n, d) = l.shape().dims2()?;
        let x = Tensor::from_slice(
            f32_data(s, l, self.name())?,
            (n, d),
            &candle_core::Device::Cpu,
        )?;
        let y = x.matmul(&self.w.to_dtype(DType::F32)?.t()?)?;
        let shape = y.shape().clone();
        Ok((CpuStorage::F32(y.flatten_all()?.to_vec1()?), shape))
    }
    fn bwd(
        &self,
        _arg: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.w.to_dtype(grad.dtype())?)?))
    }
}

/// Layer normalisation over the last dimension with a backward pass for input, scale and shift.
pub fn layer_norm(x: &Tensor, w: &Tensor, b: &Tensor, eps: f64) -> candle_core::Result<Tensor> {
    x.contiguous()?.apply_op3(
        &w.contiguous()?,
        &b.contiguous()?,
        LayerNorm { eps: eps as f32 },
    )
}

/// Whether [`layer_norm`]'s fused kernel applies.
pub fn layer_norm_fusable(x: &Tensor, w: &Tensor, b: &Tensor) -> bool {
    fusable(x) && fusable(w) && fusable(b)
}

struct LayerNorm {
    eps: f32,
}
struct LayerNormBackward {
    eps: f32,
}

/// `(mean, 1 / std)` of a row.
#[inline]
fn row_stats(x: &[f32], eps: f32) -> (f32, f32) {
    let n = x.len() as f32;
    let mean = x.iter().sum::<f32>() / n;
    let var = x.iter().map(|&v| (v - mean) * (v - mean)).sum::<f32>() / n;
    (mean, 1.0 / (var + eps).sqrt())
}

impl candle_core::CustomOp3 for LayerNorm {
    fn name(&self) -> &'static str {
        "fused-layer-norm"
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
        let x = f32_data(s1, l1, self.name())?;
        let w = f32_data(s2, l2, self.name())?;
        let b = f32_data(s3, l3, self.name())?;
        let d = w.len().max(1);
        if x.len() % d != 0 || b.len() != d {
            candle_core::bail!("{}: widths of input, scale and shift differ", self.name());
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .with_min_len(MIN_ROWS_PER_TASK)
            .for_each(|(o, x)| {
                let (mean, rstd) = row_stats(x, self.eps);
                for (((o, &x), &w), &b) in o.iter_mut().zip(x).zip(w).zip(b) {
                    *o = (x - mean) * rstd * w + b;
                }
            });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let d = w.elem_count();
        let n = x.elem_count();
        let all =
            x.apply_op3_no_bwd(w, &grad.contiguous()?, &LayerNormBackward { eps: self.eps })?;
        // Frozen scale and shift (e.g. QAT of the linear layers only) get no gradient entry.
        let part = |t: &Tensor, start: usize, len: usize, shape: &Shape| {
            t.track_op()
                .then(|| all.narrow(0, start, len)?.reshape(shape))
                .transpose()
        };
        Ok((
            part(x, 0, n, x.shape())?,
            part(w, n, d, w.shape())?,
            part(b, n + d, d, w.shape())?,
        ))
    }
}

impl candle_core::CustomOp3 for LayerNormBackward {
    fn name(&self) -> &'static str {
        "fused-layer-norm-backward"
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
        let x = f32_data(s1, l1, self.name())?;
        let w = f32_data(s2, l2, self.name())?;
        let g = f32_data(s3, l3, self.name())?;
        let d = w.len().max(1);
        let mut dx = vec![0f32; x.len()];
        // dx row by row; scale and shift gradients summed per block of rows, then over blocks.
        const ROWS: usize = 32;
        let partial: Vec<Vec<f32>> = dx
            .par_chunks_mut(d * ROWS)
            .zip(x.par_chunks(d * ROWS).zip(g.par_chunks(d * ROWS)))
            .map(|(dx, (x, g))| {
                let mut acc = vec![0f32; 2 * d];
                for (dx, (x, g)) in dx.chunks_mut(d).zip(x.chunks(d).zip(g.chunks(d))) {
                    let (mean, rstd) = row_stats(x, self.eps);
                    let (mut mean_gh, mut mean_gh_xhat) = (0f32, 0f32);
                    for (i, (&x, &g)) in x.iter().zip(g).enumerate() {
                        let xhat = (x - mean) * rstd;
                        let gh = g * w[i];
                        mean_gh += gh;
                        mean_gh_xhat += gh * xhat;
                        acc[i] += g * xhat;
                        acc[d + i] += g;
                    }
                    mean_gh /= d as f32;
                    mean_gh_xhat /= d as f32;
                    for (i, (dx, (&x, &g))) in dx.iter_mut().zip(x.iter().zip(g)).enumerate() {
                        let xhat = (x - mean) * rstd;
                        *dx = rstd * (g * w[i] - mean_gh - xhat * mean_gh_xhat);
                    }
                }
                acc
            })
            .collect();
        let mut out = dx;
        let mut tail = vec![0f32; 2 * d];
        for p in &partial {
            tail.iter_mut().zip(p).for_each(|(t, v)| *t += v);
        }
        out.extend(tail);
        let len = out.len();
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

#[cfg(test)]
mod more_tests {
    use super::*;
    use candle_core::{Device, Var};

    /// Fused layer norm: value and all three gradients against the composition.
    #[test]
    fn fused_layer_norm_matches_the_composition() {
        let x = Var::from_tensor(
            &Tensor::from_vec(
                (0..5 * 48)
                    .map(|i| ((i * 37 % 29) as f32 - 14.0) / 5.0)
                    .collect::<Vec<_>>(),
                (5, 48),
                &Device::Cpu,
            )
            .unwrap(),
        )
        .unwrap();
        let w = Var::from_tensor(
            &Tensor::from_vec(
                (0..48)
                    .map(|i| 1.0 + (i as f32 * 0.3).sin())
                    .collect::<Vec<_>>(),
                48,
                &Device::Cpu,
            )
            .unwrap(),
        )
        .unwrap();
        let b = Var::from_tensor(
            &Tensor::from_vec(
                (0..48).map(|i| (i as f32 * 0.7).cos()).collect::<Vec<_>>(),
                48,
                &Device::Cpu,
            )
            .unwrap(),
        )
        .unwrap();
        let c = Tensor::from_vec(
            (0..5 * 48)
                .map(|i| (i as f32 * 0.11).sin())
                .collect::<Vec<_>>(),
            (5, 48),
            &Device::Cpu,
        )
        .unwrap();
        let composed = {
            let x = x.as_tensor();
            let mean = x.mean_keepdim(D::Minus1).unwrap();
            let centered = x.broadcast_sub(&mean).unwrap();
            let var = centered.sqr().unwrap().mean_keepdim(D::Minus1).unwrap();
            centered
                .broadcast_div(&(var + 1e-5).unwrap().sqrt().unwrap())
                .unwrap()
                .broadcast_mul(w.as_tensor())
                .unwrap()
                .broadcast_add(b.as_tensor())
                .unwrap()
        };
        let fused = layer_norm(x.as_tensor(), w.as_tensor(), b.as_tensor(), 1e-5).unwrap();
        assert!(crate::nn::max_abs_diff(&fused, &composed).unwrap() < 1e-5);
        let ga = (fused * &c).unwrap().sum_all().unwrap().backward().unwrap();
        let gb = (composed * &c)
            .unwrap()
            .sum_all()
            .unwrap()
            .backward()
            .unwrap();
        for (name, v) in [("x", &x), ("w", &w), ("b", &b)] {
            let err = crate::nn::max_abs_diff(
                ga.get(v.as_tensor()).unwrap(),
                gb.get(v.as_tensor()).unwrap(),
            )
            .unwrap();
            assert!(err < 1e-4, "{name} gradient max_err {err}");
        }
    }

    #[test]
    fn fixed_projection_matches_matmul() {
        let x = Var::from_tensor(
            &Tensor::from_vec(
                (0..3 * 8)
                    .map(|i| (i as f32 * 0.3).sin())
                    .collect::<Vec<_>>(),
                (3, 8),
                &Device::Cpu,
            )
            .unwrap(),
        )
        .unwrap();
        let w = Tensor::from_vec(
            (0..5 * 8)
                .map(|i| (i as f32 * 0.2).cos())
                .collect::<Vec<_>>(),
            (5, 8),
            &Device::Cpu,
        )
        .unwrap();
        let a = matmul_fixed_t(x.as_tensor(), &w).unwrap();
        let b = x.as_tensor().matmul(&w.t().unwrap()).unwrap();
        assert!(crate::nn::max_abs_diff(&a, &b).unwrap() < 1e-5);
        let ga = a.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        let gb = b.sqr().unwrap().sum_all().unwrap().backward().unwrap();
        assert!(
            crate::nn::max_abs_diff(
                ga.get(x.as_tensor()).unwrap(),
                gb.get(x.as_tensor()).unwrap()
            )
            .unwrap()
                < 1e-4
        );
    }
}

/// Inference-only group norm with one group per channel, then GELU (exact-erf kernel) when
/// `gelu`: for `x [b, c, t]` (f32, CPU), each row of `t` values is normalised to zero mean and
/// unit variance (statistics in f64), scaled by `scale[c]`, shifted by `shift[c]`. One pass
/// over a copy instead of the eight tensors the composed ops allocate (wav2vec2's first
/// feature-encoder conv output is 512 x 32,000 values for 10 s of audio). `None` when the
/// input is not a plain f32 CPU tensor or tracks gradients: the caller composes the ops then.
pub fn channel_norm(
    x: &Tensor,
    scale: &Tensor,
    shift: &Tensor,
    eps: f64,
    gelu: bool,
) -> candle_core::Result<Option<Tensor>> {
    if x.track_op() || !fusable(x) || x.rank() != 3 {
        return Ok(None);
    }
    let (b, c, t) = x.dims3()?;
    let scale: Vec<f32> = scale.to_dtype(DType::F32)?.to_vec1()?;
    let shift: Vec<f32> = shift.to_dtype(DType::F32)?.to_vec1()?;
    if scale.len() != c || shift.len() != c || t == 0 {
        return Ok(None);
    }
    let mut data: Vec<f32> = x.flatten_all()?.to_vec1()?;
    data.par_chunks_mut(t)
        .enumerate()
        .for_each(|(row, values)| {
            let n = values.len() as f64;
            let mean = values.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = values
                .iter()
                .map(|&v| (v as f64 - mean) * (v as f64 - mean))
                .sum::<f64>()
                / n;
            let inv = 1.0 / (var + eps).sqrt();
            let (s, h) = (scale[row % c] as f64, shift[row % c] as f64);
            let (a, bias) = ((inv * s) as f32, (h - mean * inv * s) as f32);
            for v in values.iter_mut() {
                *v = *v * a + bias;
            }
            if gelu {
                whittle_kernels::activations::gelu(values);
            }
        });
    Ok(Some(Tensor::from_vec(data, (b, c, t), x.device())?))
}

#[cfg(test)]
mod channel_norm_tests {
    use super::*;

    /// The fused group norm (+ GELU) equals the composed ops, and declines tensors that train.
    #[test]
    fn channel_norm_matches_the_composed_ops() {
        let x = crate::nn::test_var(&[2, 3, 50], 1)
            .as_tensor()
            .affine(3.0, 0.7)
            .unwrap()
            .detach();
        let scale = Tensor::new(&[0.5f32, -1.5, 2.0], x.device()).unwrap();
        let shift = Tensor::new(&[0.1f32, 0.0, -0.3], x.device()).unwrap();
        let eps = 1e-5;
        let mean = x.mean_keepdim(2).unwrap();
        let centered = x.broadcast_sub(&mean).unwrap();
        let var = centered.sqr().unwrap().mean_keepdim(2).unwrap();
        let composed = centered
            .broadcast_div(&(var + eps).unwrap().sqrt().unwrap())
            .unwrap()
            .broadcast_mul(&scale.reshape((1, 3, 1)).unwrap())
            .unwrap()
            .broadcast_add(&shift.reshape((1, 3, 1)).unwrap())
            .unwrap();
        for gelu in [false, true] {
            let expected = if gelu {
                composed.gelu_erf().unwrap()
            } else {
                composed.clone()
            };
            let fused = channel_norm(&x, &scale, &shift, eps, gelu)
                .unwrap()
                .expect("a plain f32 CPU tensor is fused");
            let diff = crate::nn::max_abs_diff(&expected, &fused).unwrap();
            assert!(diff < 1e-4, "gelu {gelu}: {diff}");
        }
        let training = crate::nn::test_var(&[1, 3, 8], 2);
        assert!(
            channel_norm(training.as_tensor(), &scale, &shift, eps, true)
                .unwrap()
                .is_none()
        );
    }
}
