//! A linear layer `y = x W^T + b` as one fused CPU op with its backward, for training.
//!
//! candle records a linear layer as reshape, transpose, matmul, broadcast and add, and its
//! backward gives each recorded edge a zero tensor plus an addition, then materialises the
//! transposes; here the product reads `W` transposed in place, the bias is the product's
//! starting value, and the backward is the three textbook products
//! `dx = dy W`, `dW = dy^T x`, `db = sum_rows dy`, each only for inputs that need it.
//!
//! # Shapes
//! `x [..., in]`, `W [out, in]`, `b [out]` to `y [..., out]`.

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use std::sync::OnceLock;

use super::fused::f32_data;
use super::gemm::{matmul, with_values, View};
use super::lsq::{self, LsqSpec};

/// Whether [`linear`] runs the fused kernel for these tensors (CPU, f32).
pub fn fusable(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> bool {
    std::iter::once(x)
        .chain(std::iter::once(w))
        .chain(b)
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// `x W^T + b` over the last dimension of `x`; callers check [`fusable`].
pub fn linear(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Tensor> {
    // A layer without bias (Whisper's key projection) adds an untracked zero bias.
    let b = match b {
        Some(b) => b.contiguous()?,
        None => Tensor::zeros(w.dim(0)?, DType::F32, w.device())?,
    };
    x.contiguous()?.apply_op3(&w.contiguous()?, &b, Dense)
}

struct Dense;

/// `(rows, in, out)` of an input and a weight.
fn dims(x: &Shape, w: &Shape) -> candle_core::Result<(usize, usize, usize)> {
    let (out, inp) = w.dims2()?;
    let last = x.dims().last().copied().unwrap_or(0);
    if last != inp {
        candle_core::bail!("dense: input width {last} differs from the weight's {inp}");
    }
    Ok((x.elem_count() / inp.max(1), inp, out))
}

/// Shape of `x` with the last dimension replaced by `out`.
fn out_shape(x: &Shape, out: usize) -> Shape {
    let mut d = x.dims().to_vec();
    if let Some(last) = d.last_mut() {
        *last = out;
    }
    Shape::from(d)
}

impl Dense {
    fn forward(
        &self,
        x: &[f32],
        xl: &Layout,
        w: &[f32],
        wl: &Layout,
        b: &[f32],
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (rows, inp, out) = dims(xl.shape(), wl.shape())?;
        if b.len() != out {
            candle_core::bail!("dense: bias of {} for {out} outputs", b.len());
        }
        let y = product_with_bias(x, rows, inp, w, out, b);
        Ok((CpuStorage::F32(y), out_shape(xl.shape(), out)))
    }

    /// Gradients of `x`, `W` and `b` (each only if that input is tracked).
    fn backward(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<[Option<Tensor>; 3]> {
        let (rows, inp, out) = dims(x.shape(), w.shape())?;
        let grad = grad.contiguous()?;
        // dx = dy W, dW = dy^T x.
        let dx = x
            .track_op()
            .then(|| tensor_product(&grad, (rows, out, false), w, (out, inp), x.shape()))
            .transpose()?;
        let dw = w
            .track_op()
            .then(|| tensor_product(&grad, (rows, out, true), x, (rows, inp), w.shape()))
            .transpose()?;
        let db = if b.track_op() {
            let db = with_values(&grad, "dense backward", |g| column_sums(g, out))?;
            Some(Tensor::from_vec(db, out, b.device())?)
        } else {
            None
        };
        Ok([dx, dw, db])
    }
}

/// `a b` (`a^T b` when `a.2`) of row-major matrices `a [a.0, a.1]` and `b [b.0, b.1]`.
fn product(
    a: &[f32],
    (a_rows, a_cols, a_t): (usize, usize, bool),
    b: &[f32],
    (b_rows, b_cols): (usize, usize),
) -> Vec<f32> {
    let m = if a_t { a_cols } else { a_rows };
    let mut out = vec![0f32; m * b_cols];
    let a = View::rows(a, a_rows, a_cols);
    matmul(
        &mut out,
        b_cols,
        false,
        if a_t { a.t() } else { a },
        View::rows(b, b_rows, b_cols),
        1.0,
        rayon::current_num_threads(),
    );
    out
}

/// [`product`] of two contiguous tensors, as a tensor of `shape`.
fn tensor_product(
    a: &Tensor,
    a_dims: (usize, usize, bool),
    b: &Tensor,
    b_dims: (usize, usize),
    shape: &Shape,
) -> candle_core::Result<Tensor> {
    let out = with_values(a, "dense backward", |a| {
        with_values(b, "dense backward", |b| product(a, a_dims, b, b_dims))
    })??;
    Tensor::from_vec(out, shape, a.device())
}

/// `b + x W^T` for `x [rows, inp]`, `W [out, inp]`, `b [out]`.
fn product_with_bias(
    x: &[f32],
    rows: usize,
    inp: usize,
    w: &[f32],
    out: usize,
    b: &[f32],
) -> Vec<f32> {
    let mut y = b.repeat(rows);
    matmul(
        &mut y,
        out,
        true,
        View::rows(x, rows, inp),
        View::rows(w, out, inp).t(),
        1.0,
        rayon::current_num_threads(),
    );
    y
}

/// Sums of the columns of a row-major matrix `width` wide, over blocks of rows in parallel.
fn column_sums(g: &[f32], width: usize) -> Vec<f32> {
    const ROWS: usize = 64;
    g.par_chunks(width * ROWS)
        .map(|block| {
            let mut acc = vec![0f32; width];
            for row in block.chunks(width) {
                acc.iter_mut().zip(row).for_each(|(a, &v)| *a += v);
            }
            acc
        })
        .reduce(
            || vec![0f32; width],
            |mut a, b| {
                a.iter_mut().zip(&b).for_each(|(a, b)| *a += b);
                a
            },
        )
}

impl CustomOp3 for Dense {
    fn name(&self) -> &'static str {
        "dense"
    }
    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        sb: &CpuStorage,
        lb: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = f32_data(sx, lx, "dense input")?;
        let w = f32_data(sw, lw, "dense weight")?;
        let b = f32_data(sb, lb, "dense bias")?;
        self.forward(x, lx, w, lw, b)
    }
    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let [dx, dw, db] = self.backward(x, w, b, grad)?;
        Ok((dx, dw, db))
    }
}

/// `x W_q^T + b` with `W_q` the LSQ fake quantization of `latent` with `steps`
/// ([`super::lsq`]) in one op: the quantized weight never becomes a graph node, so the backward
/// hands `dW_q = dy^T x` straight to LSQ's backward. The bias must not be tracked (QAT trains
/// latent weights and steps); callers check [`fusable`] with `latent` as the weight.
pub fn lsq_linear(
    x: &Tensor,
    latent: &Tensor,
    steps: &Tensor,
    spec: LsqSpec,
    b: Option<&Tensor>,
) -> candle_core::Result<Tensor> {
    let bias = match b {
        Some(b) if b.track_op() => candle_core::bail!("lsq_linear: the bias must not be trained"),
        Some(b) => b.flatten_all()?.to_vec1::<f32>()?,
        None => vec![0f32; latent.dim(0)?],
    };
    x.contiguous()?.apply_op3(
        &latent.contiguous()?,
        &steps.contiguous()?,
        LsqDense {
            spec,
            bias,
            quantized: OnceLock::new(),
        },
    )
}

struct LsqDense {
    spec: LsqSpec,
    bias: Vec<f32>,
    /// `W_q`, written by the forward for the backward's `dx = dy W_q`.
    quantized: OnceLock<Vec<f32>>,
}

impl CustomOp3 for LsqDense {
    fn name(&self) -> &'static str {
        "lsq-dense"
    }

    fn cpu_fwd(
        &self,
        sx: &CpuStorage,
        lx: &Layout,
        sw: &CpuStorage,
        lw: &Layout,
        ss: &CpuStorage,
        ls: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (out, cols, glen) = lsq::lsq_dims(self.spec, lw, ls)?;
        let (rows, inp, _) = dims(lx.shape(), lw.shape())?;
        if self.bias.len() != out {
            candle_core::bail!("lsq-dense: bias of {} for {out} outputs", self.bias.len());
        }
        let x = f32_data(sx, lx, "lsq-dense input")?;
        let w = f32_data(sw, lw, "lsq-dense weight")?;
        let s = f32_data(ss, ls, "lsq-dense steps")?;
        let wq = lsq::quantize_values(w, s, cols, glen, self.spec);
        let y = product_with_bias(x, rows, inp, &wq, out, &self.bias);
        let _ = self.quantized.set(wq);
        Ok((CpuStorage::F32(y), out_shape(lx.shape(), out)))
    }

    fn bwd(
        &self,
        x: &Tensor,
        latent: &Tensor,
        steps: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (rows, inp, out) = dims(x.shape(), latent.shape())?;
        let glen = self.spec.group_len(inp);
        let Some(wq) = self.quantized.get() else {
            candle_core::bail!("{}: backward before forward", self.name());
        };
        let grad = grad.contiguous()?;
        let dx = x
            .track_op()
            .then(|| {
                let dx = with_values(&grad, self.name(), |g| {
                    product(g, (rows, out, false), wq, (out, inp))
                })?;
                Tensor::from_vec(dx, x.shape(), x.device())
            })
            .transpose()?;
        if !latent.track_op() && !steps.track_op() {
            return Ok((dx, None, None));
        }
        // dW_q = dy^T x, then LSQ's straight-through and step gradients.
        let both = with_values(&grad, self.name(), |g| {
            with_values(x, self.name(), |xv| {
                let dwq = product(g, (rows, out, true), xv, (rows, inp));
                with_values(latent, self.name(), |w| {
                    with_values(steps, self.name(), |s| {
                        lsq::backward_values(w, s, &dwq, inp, glen, self.spec)
                    })
                })
            })
        })????;
        let n = out * inp;
        let both = Tensor::from_vec(both, n + steps.elem_count(), x.device())?;
        let part = |t: &Tensor, start: usize, len: usize| {
            t.track_op()
                .then(|| both.narrow(0, start, len)?.reshape(t.shape()))
                .transpose()
        };
        Ok((dx, part(latent, 0, n)?, part(steps, n, steps.elem_count())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::test_var as var;
    use candle_core::Var;

    const TOL: f32 = 1e-4;

    /// Value and all gradients against candle's matmul + broadcast add, on a 3-d input with
    /// rows spanning several column-sum blocks, with and without bias.
    #[test]
    fn fused_linear_matches_candle_ops() {
        let x = var(&[3, 50, 24], 1);
        let w = var(&[10, 24], 2);
        let b = var(&[10], 3);
        let c = var(&[3, 50, 10], 4).as_tensor().detach();
        for bias in [Some(b.as_tensor()), None] {
            let fused = linear(x.as_tensor(), w.as_tensor(), bias).unwrap();
            let composed = {
                let y = x.as_tensor().broadcast_matmul(&w.as_tensor().t().unwrap());
                let y = y.unwrap();
                match bias {
                    Some(b) => y.broadcast_add(b).unwrap(),
                    None => y,
                }
            };
            assert_eq!(fused.dims(), &[3, 50, 10]);
            let mut checked = vec![("x", &x), ("w", &w)];
            if bias.is_some() {
                checked.push(("b", &b));
            }
            let context = format!("bias {}", bias.is_some());
            crate::nn::assert_same_function(&fused, &composed, &c, &checked, TOL, &context);
        }
    }

    /// The LSQ-fused layer against fake quantization then the plain fused layer, for
    /// per-channel and grouped steps, with some weights clipped.
    #[test]
    fn lsq_linear_matches_fake_quant_then_linear() {
        let x = var(&[2, 30, 64], 1);
        let latent = Var::from_tensor(&(var(&[12, 64], 2).as_tensor() * 0.1).unwrap()).unwrap();
        let b = var(&[12], 3).as_tensor().detach();
        let c = var(&[2, 30, 12], 4).as_tensor().detach();
        for group in [None, Some(32)] {
            let spec = LsqSpec { bits: 3, group };
            let init = crate::nn::FakeQuant::init(latent.as_tensor(), spec).unwrap();
            let steps = Var::from_tensor(&(init.steps.as_tensor() * 0.7).unwrap()).unwrap();
            let (l, s) = (latent.as_tensor(), steps.as_tensor());
            let fused = lsq_linear(x.as_tensor(), l, s, spec, Some(&b)).unwrap();
            let wq = lsq::lsq_fake_quant(l, s, spec).unwrap();
            let reference = linear(x.as_tensor(), &wq, Some(&b)).unwrap();
            let vars = [("x", &x), ("latent", &latent), ("steps", &steps)];
            crate::nn::assert_same_function(
                &fused,
                &reference,
                &c,
                &vars,
                TOL,
                &format!("{group:?}"),
            );
        }
    }

    /// Inputs that are not tracked get no gradient computed or stored.
    #[test]
    fn untracked_inputs_get_no_gradient() {
        let x = var(&[4, 8], 1);
        let w = var(&[3, 8], 2).as_tensor().detach();
        let b = var(&[3], 3).as_tensor().detach();
        let y = linear(x.as_tensor(), &w, Some(&b)).unwrap();
        let grads = y.sum_all().unwrap().backward().unwrap();
        assert!(grads.get(x.as_tensor()).is_some());
        assert!(grads.get(&w).is_none() && grads.get(&b).is_none());
    }
}
