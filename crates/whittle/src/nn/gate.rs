//! Hard-concrete gates (Louizos, Welling & Kingma 2018, "Learning Sparse Neural Networks through
//! L0 Regularization") on the input columns of a matrix: a gated weight for structured pruning.
//!
//! A gate with parameter `log_alpha` draws `u ~ U(0, 1)`,
//! `s = sigmoid((log u - log(1 - u) + log_alpha) / beta)`, stretches it to `(l, r)` and clips:
//! `z = min(1, max(0, s (r - l) + l))`, with beta = 2/3, l = -0.1, r = 1.1 (the paper's
//! values, which the pruning literature for speech keeps). `z` is exactly 0 or 1 with
//! positive probability, and `P(z != 0) = sigmoid(log_alpha - beta log(-l / r))` is
//! differentiable: the expected L0 norm that a size constraint acts on.
//!
//! A [`GatedWeight`] multiplies column block `u` of its matrix (a head's columns of an
//! attention output projection, an FFN unit's column of the second MLP matrix) by the unit
//! gate `z_u`, and the whole matrix and its bias by the module and layer gates: the gated
//! module's residual branch is `z_layer z_module (W diag(z_units) h + b)`.
//!
//! Outside training the gates are deterministic ([`deterministic_gates`]): a group keeps the
//! expected number of its units, those of highest keep probability, at the clipped mean value
//! `min(1, max(0, sigmoid(log_alpha) (r - l) + l))`; the others are 0, and a module left with no
//! unit loses its bias too (it is removed). That is what extraction folds into the physically
//! smaller model. (During training a step whose sampled unit gates are all 0 keeps the bias: the
//! one place where the sampled and the deterministic module differ in kind.)

use candle_core::{DType, Tensor, Var};

/// Temperature of the hard-concrete distribution.
pub const BETA: f64 = 2.0 / 3.0;
/// Lower end of the stretch interval.
pub const STRETCH_LOW: f64 = -0.1;
/// Upper end of the stretch interval.
pub const STRETCH_HIGH: f64 = 1.1;

/// `sigmoid(x)` from primitive ops (differentiable).
fn sigmoid(x: &Tensor) -> candle_core::Result<Tensor> {
    (x.neg()?.exp()? + 1.0)?.recip()
}

/// `P(z != 0)` of gates with parameters `log_alpha` (differentiable).
pub fn keep_probability(log_alpha: &Tensor) -> candle_core::Result<Tensor> {
    sigmoid(&(log_alpha - BETA * (-STRETCH_LOW / STRETCH_HIGH).ln())?)
}

/// [`keep_probability`] of one value.
pub fn keep_probability_of(log_alpha: f32) -> f32 {
    let x = log_alpha as f64 - BETA * (-STRETCH_LOW / STRETCH_HIGH).ln();
    (1.0 / (1.0 + (-x).exp())) as f32
}

/// Gate values from `log_alpha` and uniform `noise` in (0, 1) of the same shape
/// (differentiable in `log_alpha`).
pub fn sample_gates(log_alpha: &Tensor, noise: &Tensor) -> candle_core::Result<Tensor> {
    let logit = (noise.log()? - (noise.neg()? + 1.0)?.log()?)?;
    let s = sigmoid(&((logit + log_alpha)? / BETA)?)?;
    ((s * (STRETCH_HIGH - STRETCH_LOW))? + STRETCH_LOW)?
        .maximum(0.0)?
        .minimum(1.0)
}

/// How many of `n` units to keep for an expected count `expected`, in whole multiples of
/// `multiple` (the nearest multiple, at most `n`; `multiple` <= 1, or above `n`: the nearest
/// count).
pub fn aligned_count(expected: f64, n: usize, multiple: usize) -> usize {
    if multiple <= 1 || multiple > n {
        return (expected.max(0.0).round() as usize).min(n);
    }
    let blocks = (expected.max(0.0) / multiple as f64).round() as usize;
    (blocks * multiple).min(n)
}

/// Units per kept block so that `units x unit_width` features are a multiple of `align`
/// features (1 when `align` <= 1).
pub fn unit_multiple(align: usize, unit_width: usize) -> usize {
    fn gcd(a: usize, b: usize) -> usize {
        if b == 0 {
            a
        } else {
            gcd(b, a % b)
        }
    }
    if align <= 1 {
        return 1;
    }
    align / gcd(align, unit_width.max(1))
}

/// The deterministic gates of one group: keep `round(sum P(z != 0))` units, those of largest
/// `log_alpha` (ties: lower index), at their clipped mean value; 0 for the others.
pub fn deterministic_gates(log_alpha: &[f32]) -> Vec<f32> {
    deterministic_gates_in_multiples(log_alpha, 1)
}

/// [`deterministic_gates`] keeping a whole multiple of `multiple` units
/// ([`aligned_count`] of the expected count).
pub fn deterministic_gates_in_multiples(log_alpha: &[f32], multiple: usize) -> Vec<f32> {
    kept_gates(log_alpha, multiple)
        .into_iter()
        .map(|v| v.unwrap_or(0.0))
        .collect()
}

/// The units [`deterministic_gates_in_multiples`] keeps, with their values (`None`: removed).
/// With `multiple` > 1 a kept unit may hold 0 (its mean gate is clamped): it stays, as a zero,
/// so the kept width remains a whole multiple; with `multiple` 1 such a unit is removed.
pub fn kept_gates(log_alpha: &[f32], multiple: usize) -> Vec<Option<f32>> {
    let values = ranked_gates(log_alpha, multiple);
    let keep_zeros = multiple > 1;
    values
        .into_iter()
        .map(|v| v.filter(|&z| z > 0.0 || keep_zeros))
        .collect()
}

/// The `aligned_count` units of largest `log_alpha` with their clipped mean values.
fn ranked_gates(log_alpha: &[f32], multiple: usize) -> Vec<Option<f32>> {
    let expected: f64 = log_alpha
        .iter()
        .map(|&a| f64::from(keep_probability_of(a)))
        .sum();
    let keep = aligned_count(expected, log_alpha.len(), multiple);
    let mut order: Vec<usize> = (0..log_alpha.len()).collect();
    order.sort_by(|&a, &b| log_alpha[b].total_cmp(&log_alpha[a]).then(a.cmp(&b)));
    let mut values = vec![None; log_alpha.len()];
    for &i in &order[..keep] {
        let mean = 1.0 / (1.0 + (-(log_alpha[i] as f64)).exp());
        values[i] =
            Some((mean * (STRETCH_HIGH - STRETCH_LOW) + STRETCH_LOW).clamp(0.0, 1.0) as f32);
    }
    values
}

/// One group of gates: trainable `log_alpha`, and the noise of the current training step
/// (`None`: deterministic gates).
#[derive(Debug, Clone)]
pub struct Gate {
    /// Parameters, `[n]`.
    pub log_alpha: Var,
    /// Uniform noise `[n]` for the current step, or `None`.
    pub noise: Option<Tensor>,
    /// The deterministic gates keep a whole multiple of this many units (1: any count).
    pub multiple: usize,
}

impl Gate {
    /// Gates of `n` units starting at `log_alpha` (the same value for all).
    pub fn new(
        n: usize,
        log_alpha: f64,
        device: &candle_core::Device,
    ) -> candle_core::Result<Self> {
        Ok(Self {
            log_alpha: Var::from_tensor(&Tensor::full(log_alpha as f32, n, device)?)?,
            noise: None,
            multiple: 1,
        })
    }

    /// The deterministic gate values (0 for a removed unit).
    pub fn deterministic(&self) -> candle_core::Result<Vec<f32>> {
        Ok(self.kept()?.into_iter().map(|v| v.unwrap_or(0.0)).collect())
    }

    /// The units extraction keeps, with their values ([`kept_gates`]).
    pub fn kept(&self) -> candle_core::Result<Vec<Option<f32>>> {
        let la = self
            .log_alpha
            .as_tensor()
            .to_dtype(DType::F32)?
            .to_vec1::<f32>()?;
        Ok(kept_gates(&la, self.multiple))
    }

    /// The gate values `[n]`: sampled with the step's noise, or deterministic.
    pub fn values(&self) -> candle_core::Result<Tensor> {
        let la = self.log_alpha.as_tensor();
        match &self.noise {
            Some(noise) => sample_gates(la, noise),
            None => Tensor::from_vec(self.deterministic()?, la.dims(), la.device()),
        }
    }
}

/// A float weight `[out, in]` whose input columns are gated in blocks of `unit_width` by
/// `units`, and which the optional `module` and `layer` gates (one value each) scale whole,
/// bias included. The weight itself trains too.
#[derive(Debug, Clone)]
pub struct GatedWeight {
    /// The matrix.
    pub weight: Var,
    /// Columns per unit (a head's width, or 1 for FFN units).
    pub unit_width: usize,
    /// One gate per unit, `[in / unit_width]`.
    pub units: Gate,
    /// The gate on the whole module, `[1]`.
    pub module: Option<Gate>,
    /// The gate on the whole layer, `[1]` (its log-alpha is shared by the layer's modules).
    pub layer: Option<Gate>,
}

impl GatedWeight {
    /// `(out_features, in_features)`.
    pub fn dims(&self) -> (usize, usize) {
        let d = self.weight.as_tensor().dims();
        (d[0], d[1])
    }

    /// The product of the module and layer gates, `[1]`, or `None` without either. With
    /// deterministic gates, a module whose unit gates are all 0 is removed, bias included
    /// (scale 0), as extraction removes it.
    pub fn branch_scale(&self) -> candle_core::Result<Option<Tensor>> {
        self.branch_scale_given(&self.units.values()?)
    }

    /// [`Self::branch_scale`] with the unit gate values already computed.
    fn branch_scale_given(&self, units: &Tensor) -> candle_core::Result<Option<Tensor>> {
        if self.units.noise.is_none() && units.abs()?.sum_all()?.to_scalar::<f32>()? == 0.0 {
            return Ok(Some(units.zeros_like()?.narrow(0, 0, 1)?));
        }
        let mut scale: Option<Tensor> = None;
        for gate in [&self.module, &self.layer].into_iter().flatten() {
            let v = gate.values()?;
            scale = Some(match scale {
                Some(s) => (s * v)?,
                None => v,
            });
        }
        Ok(scale)
    }

    /// The gate of every input column, `[in]`, branch gates included.
    pub fn column_scales(&self) -> candle_core::Result<Tensor> {
        let units = self.units.values()?;
        let n = units.dim(0)?;
        let branch = self.branch_scale_given(&units)?;
        let mut cols = units
            .unsqueeze(1)?
            .broadcast_as((n, self.unit_width))?
            .reshape(n * self.unit_width)?;
        if let Some(b) = branch {
            cols = cols.broadcast_mul(&b)?;
        }
        Ok(cols)
    }

    /// The gated matrix the forward uses (differentiable in the weight and the gates).
    pub fn gated_weight(&self) -> candle_core::Result<Tensor> {
        let w = self.weight.as_tensor();
        w.broadcast_mul(&self.column_scales()?.to_dtype(w.dtype())?.unsqueeze(0)?)
    }

    /// `bias` scaled by the branch gates.
    pub fn gated_bias(&self, bias: Option<&Tensor>) -> candle_core::Result<Option<Tensor>> {
        let Some(b) = bias else { return Ok(None) };
        Ok(Some(match self.branch_scale()? {
            Some(s) => b.broadcast_mul(&s.to_dtype(b.dtype())?)?,
            None => b.clone(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn sampled_gates_hit_zero_and_one_and_match_the_keep_probability() {
        let n = 20_000;
        let la = Tensor::full(0.5f32, n, &Device::Cpu).unwrap();
        let noise: Vec<f32> = (0..n).map(|i| (i as f32 + 0.5) / n as f32).collect();
        let noise = Tensor::from_vec(noise, n, &Device::Cpu).unwrap();
        let z = sample_gates(&la, &noise).unwrap().to_vec1::<f32>().unwrap();
        let zeros = z.iter().filter(|&&v| v == 0.0).count() as f32 / n as f32;
        let ones = z.iter().filter(|&&v| v == 1.0).count();
        assert!(ones > 0 && z.iter().all(|v| (0.0..=1.0).contains(v)));
        let p = keep_probability_of(0.5);
        assert!(
            (1.0 - zeros - p).abs() < 1e-3,
            "P(z != 0) {} vs {p}",
            1.0 - zeros
        );
        let from_tensor = keep_probability(&Tensor::new(&[0.5f32], &Device::Cpu).unwrap())
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()[0];
        assert!((from_tensor - p).abs() < 1e-6);
    }

    #[test]
    fn aligned_counts_round_to_the_nearest_whole_multiple() {
        assert_eq!(aligned_count(1228.8, 1536, 64), 1216);
        assert_eq!(aligned_count(1250.0, 1536, 64), 1280);
        assert_eq!(aligned_count(1228.8, 1536, 1), 1229);
        assert_eq!(aligned_count(20.0, 1536, 64), 0);
        assert_eq!(aligned_count(1530.0, 1536, 64), 1536);
        // Fewer units than one block: the nearest count.
        assert_eq!(aligned_count(7.4, 16, 64), 7);
        assert_eq!(unit_multiple(64, 1), 64);
        assert_eq!(unit_multiple(64, 64), 1);
        assert_eq!(unit_multiple(64, 96), 2);
        assert_eq!(unit_multiple(1, 1), 1);
        let la: Vec<f32> = (0..256).map(|i| if i < 100 { 9.0 } else { -9.0 }).collect();
        let kept = |m| kept_gates(&la, m).iter().filter(|z| z.is_some()).count();
        assert_eq!((kept(1), kept(64), kept(32)), (100, 128, 96));
        // The 28 units beyond the 100 likely ones are kept as zeros.
        let values = deterministic_gates_in_multiples(&la, 64);
        assert_eq!(values.iter().filter(|&&z| z > 0.0).count(), 100);
    }

    #[test]
    fn deterministic_gates_keep_the_expected_count_of_the_most_likely() {
        // Keep probabilities about 0.99, 0.99, 0.2, 0.83: expected 3.0 -> keep 3.
        let la = [5.0f32, 5.0, -3.0, 0.0];
        let g = deterministic_gates(&la);
        assert_eq!(g[2], 0.0);
        assert_eq!((g[0], g[1]), (1.0, 1.0));
        assert!((g[3] - 0.5).abs() < 1e-6, "{g:?}");
        assert_eq!(deterministic_gates(&[-9.0, -9.0]), vec![0.0, 0.0]);
    }
}
