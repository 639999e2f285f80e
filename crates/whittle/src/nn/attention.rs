//! Multi-head scaled dot-product attention (Vaswani et al. 2017, "Attention Is All You Need")
//! as one fused CPU op with a hand-written backward, for training.
//!
//! For each batch item and head, with `P = softmax(scale Q K^T)` (`scale = 1 / sqrt(head_dim)`,
//! causal rows masked) and `O = P V`, the backward is
//! `dV = P^T dO`, `dP = dO V^T`, `dS = P (dP - rowsum(P dP)) scale`, `dQ = dS K`, `dK = dS^T Q`
//! (the same derivation as Dao et al. 2022, "FlashAttention", without its tiling). The heads are
//! read in place from the projections' `[b, t, d]` outputs, so none of candle's head splits,
//! transposes and copies are recorded; `P` is kept from the forward for the backward.
//!
//! # Shapes
//! `q [b, t, d]`, `k` and `v` `[b, s, d]`, `d = heads * head_dim`, to `[b, t, d]`. With
//! `causal`, query `i` sees keys `j <= i + s - t`.

use std::sync::OnceLock;

use candle_core::{CpuStorage, CustomOp3, DType, Layout, Shape, Tensor};
use rayon::prelude::*;

use super::fused::f32_data;
use super::gemm::{matmul, with_values, View};

/// Whether [`attention`] runs the fused kernel for these tensors (CPU, f32).
pub fn fusable(q: &Tensor, k: &Tensor, v: &Tensor) -> bool {
    [q, k, v]
        .iter()
        .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
}

/// Attention of `q` to `k`/`v` over `heads` heads; callers check [`fusable`].
pub fn attention(
    q: &Tensor,
    k: &Tensor,
    v: &Tensor,
    heads: usize,
    causal: bool,
) -> candle_core::Result<Tensor> {
    q.contiguous()?.apply_op3(
        &k.contiguous()?,
        &v.contiguous()?,
        Attention {
            heads,
            causal,
            probs: OnceLock::new(),
        },
    )
}

struct Attention {
    heads: usize,
    causal: bool,
    /// `P`, `[b, heads, t, s]`, written by the forward.
    probs: OnceLock<Vec<f32>>,
}

/// Sizes of one call.
#[derive(Clone, Copy)]
struct Dims {
    b: usize,
    t: usize,
    s: usize,
    d: usize,
    heads: usize,
    hd: usize,
}

impl Dims {
    fn new(q: &Shape, k: &Shape, v: &Shape, heads: usize) -> candle_core::Result<Self> {
        let (b, t, d) = q.dims3()?;
        let (bk, s, dk) = k.dims3()?;
        if (bk, s, dk) != v.dims3()? || bk != b || dk != d || heads == 0 || d % heads != 0 {
            candle_core::bail!(
                "attention: q {:?}, k {:?}, v {:?} with {heads} heads",
                q.dims(),
                k.dims(),
                v.dims()
            );
        }
        Ok(Self {
            b,
            t,
            s,
            d,
            heads,
            hd: d / heads,
        })
    }

    fn scale(&self) -> f32 {
        1.0 / (self.hd as f32).sqrt()
    }

    /// Head `h` of batch item `i` of a `[b, len, d]` tensor, `[len, hd]`.
    fn head<'a>(&self, x: &'a [f32], len: usize, bh: usize) -> View<'a> {
        let (i, h) = (bh / self.heads, bh % self.heads);
        View::new(
            &x[i * len * self.d + h * self.hd..],
            len,
            self.hd,
            self.d,
            1,
        )
    }
}

/// `[b, heads, len, hd]` (one block per head) to `[b, len, d]`.
fn merge_heads(x: &[f32], dims: Dims, len: usize) -> Vec<f32> {
    let Dims { heads, hd, d, .. } = dims;
    let mut out = vec![0f32; x.len()];
    out.par_chunks_mut(len * d)
        .zip(x.par_chunks(heads * len * hd))
        .for_each(|(out, x)| {
            for (h, block) in x.chunks(len * hd).enumerate() {
                for (row, src) in out.chunks_mut(d).zip(block.chunks(hd)) {
                    row[h * hd..(h + 1) * hd].copy_from_slice(src);
                }
            }
        });
    out
}

impl CustomOp3 for Attention {
    fn name(&self) -> &'static str {
        "fused-attention"
    }

    fn cpu_fwd(
        &self,
        sq: &CpuStorage,
        lq: &Layout,
        sk: &CpuStorage,
        lk: &Layout,
        sv: &CpuStorage,
        lv: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let dims = Dims::new(lq.shape(), lk.shape(), lv.shape(), self.heads)?;
        let Dims { b, t, s, hd, .. } = dims;
        let q = f32_data(sq, lq, self.name())?;
        let k = f32_data(sk, lk, self.name())?;
        let v = f32_data(sv, lv, self.name())?;
        let mut probs = vec![0f32; b * self.heads * t * s];
        let mut heads_out = vec![0f32; b * self.heads * t * hd];
        probs
            .par_chunks_mut(t * s)
            .zip(heads_out.par_chunks_mut(t * hd))
            .enumerate()
            .for_each(|(bh, (p, o))| {
                matmul(
                    p,
                    s,
                    false,
                    dims.head(q, t, bh),
                    dims.head(k, s, bh).t(),
                    dims.scale(),
                    1,
                );
                if self.causal {
                    for (i, row) in p.chunks_mut(s).enumerate() {
                        row[(i + 1 + s - t).min(s)..].fill(f32::NEG_INFINITY);
                    }
                }
                whittle_kernels::activations::softmax_rows(p, s);
                matmul(
                    o,
                    hd,
                    false,
                    View::rows(p, t, s),
                    dims.head(v, s, bh),
                    1.0,
                    1,
                );
            });
        let out = merge_heads(&heads_out, dims, t);
        // The forward runs once per op; the backward reads P from here.
        let _ = self.probs.set(probs);
        Ok((CpuStorage::F32(out), lq.shape().clone()))
    }

    fn bwd(
        &self,
        q: &Tensor,
        k: &Tensor,
        v: &Tensor,
        _res: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let dims = Dims::new(q.shape(), k.shape(), v.shape(), self.heads)?;
        let Dims { b, t, s, hd, .. } = dims;
        let Some(probs) = self.probs.get() else {
            candle_core::bail!("{}: backward before forward", self.name());
        };
        let grad = grad.contiguous()?;
        let bh_count = b * self.heads;
        let (mut dq, mut dk, mut dv) = (
            vec![0f32; bh_count * t * hd],
            vec![0f32; bh_count * s * hd],
            vec![0f32; bh_count * s * hd],
        );
        with_values(&grad, self.name(), |g| {
            with_values(q, self.name(), |qv| {
                with_values(k, self.name(), |kv| {
                    with_values(v, self.name(), |vv| {
                        dq.par_chunks_mut(t * hd)
                            .zip(dk.par_chunks_mut(s * hd))
                            .zip(dv.par_chunks_mut(s * hd))
                            .zip(probs.par_chunks(t * s))
                            .enumerate()
                            .for_each(|(bh, (((dq, dk), dv), p))| {
                                let go = dims.head(g, t, bh);
                                let pv = View::rows(p, t, s);
                                matmul(dv, hd, false, pv.t(), go, 1.0, 1);
                                let mut ds = vec![0f32; t * s];
                                matmul(&mut ds, s, false, go, dims.head(vv, s, bh).t(), 1.0, 1);
                                for (ds, p) in ds.chunks_mut(s).zip(p.chunks(s)) {
                                    let dot: f32 = ds.iter().zip(p).map(|(a, b)| a * b).sum();
                                    for (ds, &p) in ds.iter_mut().zip(p) {
                                        *ds = p * (*ds - dot) * dims.scale();
                                    }
                                }
                                let dsv = View::rows(&ds, t, s);
                                matmul(dq, hd, false, dsv, dims.head(kv, s, bh), 1.0, 1);
                                matmul(dk, hd, false, dsv.t(), dims.head(qv, t, bh), 1.0, 1);
                            })
                    })
                })
            })
        })????;
        let make = |x: &Tensor, heads: Vec<f32>, len: usize| -> candle_core::Result<_> {
            if x.track_op() {
                Ok(Some(Tensor::from_vec(
                    merge_heads(&heads, dims, len),
                    x.shape(),
                    x.device(),
                )?))
            } else {
                Ok(None)
            }
        };
        Ok((make(q, dq, t)?, make(k, dk, s)?, make(v, dv, s)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::test_var as var;
    use candle_core::{Device, D};

    const TOL: f32 = 1e-5;

    /// The unfused composition: split heads, scaled scores, additive causal mask, softmax, merge.
    fn composed(q: &Tensor, k: &Tensor, v: &Tensor, heads: usize, causal: bool) -> Tensor {
        let split = |x: &Tensor| {
            let (b, n, d) = x.dims3().unwrap();
            x.reshape((b, n, heads, d / heads))
                .unwrap()
                .transpose(1, 2)
                .unwrap()
                .contiguous()
                .unwrap()
        };
        let (b, t, d) = q.dims3().unwrap();
        let s = k.dim(1).unwrap();
        let scale = 1.0 / ((d / heads) as f64).sqrt();
        let mut scores = (split(q).matmul(&split(k).t().unwrap()).unwrap() * scale).unwrap();
        if causal {
            let mask: Vec<f32> = (0..t * s)
                .map(|i| {
                    if i % s > i / s + s - t {
                        f32::NEG_INFINITY
                    } else {
                        0.0
                    }
                })
                .collect();
            let mask = Tensor::from_vec(mask, (t, s), &Device::Cpu).unwrap();
            scores = scores.broadcast_add(&mask).unwrap();
        }
        candle_nn::ops::softmax(&scores, D::Minus1)
            .unwrap()
            .matmul(&split(v))
            .unwrap()
            .transpose(1, 2)
            .unwrap()
            .reshape((b, t, d))
            .unwrap()
    }

    /// Value and the gradients of q, k and v against the composition: self-attention with and
    /// without the causal mask, and cross-attention with more keys than queries.
    #[test]
    fn fused_attention_matches_the_composition() {
        for (t, s, causal) in [(7, 7, false), (7, 7, true), (5, 9, false), (4, 6, true)] {
            let (b, heads, d) = (2, 3, 12);
            let q = var(&[b, t, d], 1);
            let k = var(&[b, s, d], 2);
            let v = var(&[b, s, d], 3);
            let c = var(&[b, t, d], 4).as_tensor().detach();
            let fused =
                attention(q.as_tensor(), k.as_tensor(), v.as_tensor(), heads, causal).unwrap();
            let reference = composed(q.as_tensor(), k.as_tensor(), v.as_tensor(), heads, causal);
            crate::nn::assert_same_function(
                &fused,
                &reference,
                &c,
                &[("q", &q), ("k", &k), ("v", &v)],
                TOL,
                &format!("t {t} s {s} causal {causal}"),
            );
        }
    }
}
