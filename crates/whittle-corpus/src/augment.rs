//! Augmentation: additive noise at a chosen signal-to-noise ratio and a synthetic room reverb.
//!
//! - **White noise**: independent Gaussian samples.
//! - **Pink noise** (power falling 3 dB per octave): white noise through Paul Kellet's "refined"
//!   sum of first-order low-pass filters (musicdsp.org, "Pink noise filter", 1999), accurate to
//!   about ±0.05 dB above 9 Hz at 44.1 kHz and close enough at 16 kHz for augmentation.
//! - **Babble**: several other synthetic utterances, each started at a random offset and looped,
//!   summed ("multi-talker babble", as in the NOISEX-92 babble recordings).
//! - **Reverb**: convolution with an exponentially decaying Gaussian-noise impulse response whose
//!   energy falls by 60 dB after `rt60` seconds (Schroeder's statistical model of late
//!   reverberation), after a unit direct path. Convolution runs through a real FFT.
//!
//! Noise is scaled so that `10 log10(P_speech / P_noise)` equals the drawn SNR, with powers taken
//! over the whole utterance. Every draw comes from the [`Rng`] passed in, so an utterance's
//! augmentation is fixed by the corpus seed.

use std::fmt;
use std::str::FromStr;

use realfft::RealFftPlanner;
use serde::{Deserialize, Serialize};

use crate::error::{CorpusError, Result};
use crate::rng::Rng;

/// A kind of additive noise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoiseKind {
    /// Gaussian white noise.
    White,
    /// Pink (1/f) noise.
    Pink,
    /// Other synthetic utterances mixed together.
    Babble,
}

impl NoiseKind {
    fn parse(name: &str) -> Option<NoiseKind> {
        match name {
            "white" => Some(NoiseKind::White),
            "pink" => Some(NoiseKind::Pink),
            "babble" => Some(NoiseKind::Babble),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            NoiseKind::White => "white",
            NoiseKind::Pink => "pink",
            NoiseKind::Babble => "babble",
        }
    }
}

/// Which augmentations to draw, and from what ranges.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AugmentConfig {
    /// Noise kinds to choose among (uniformly); empty for no noise.
    pub noise: Vec<NoiseKind>,
    /// Probability that an utterance gets noise.
    pub noise_prob: f64,
    /// SNR range in dB.
    pub snr_db: (f64, f64),
    /// Probability that an utterance gets reverb.
    pub reverb_prob: f64,
    /// Reverberation time range in seconds.
    pub rt60_s: (f64, f64),
    /// How many other utterances make one babble track.
    pub babble_talkers: usize,
}

impl Default for AugmentConfig {
    /// No augmentation.
    fn default() -> Self {
        AugmentConfig {
            noise: Vec::new(),
            noise_prob: 1.0,
            snr_db: (10.0, 20.0),
            reverb_prob: 0.0,
            rt60_s: (0.2, 0.6),
            babble_talkers: 4,
        }
    }
}

impl AugmentConfig {
    /// The `synth-test-other` setting: white, pink or babble noise at 10-20 dB SNR on every
    /// utterance, and reverb with RT60 0.2-0.6 s on every utterance.
    pub fn noisy_reverberant() -> Self {
        AugmentConfig {
            noise: vec![NoiseKind::White, NoiseKind::Pink, NoiseKind::Babble],
            noise_prob: 1.0,
            snr_db: (10.0, 20.0),
            reverb_prob: 1.0,
            rt60_s: (0.2, 0.6),
            babble_talkers: 4,
        }
    }

    /// The `synth-test-other` setting since issue 10: white, pink or babble noise at 12-24 dB SNR
    /// on every utterance, and reverb with RT60 0.2-0.5 s on half of them. Chosen on pilot sets of
    /// *dev* sentences so that float tiny.en scores within 12-30 % WER without repetition loops
    /// (BENCHMARKS.md, "Test sets with power").
    pub fn test_other() -> Self {
        AugmentConfig {
            snr_db: (12.0, 24.0),
            reverb_prob: 0.5,
            rt60_s: (0.2, 0.5),
            ..Self::noisy_reverberant()
        }
    }

    /// Whether this configuration changes anything.
    pub fn is_active(&self) -> bool {
        (!self.noise.is_empty() && self.noise_prob > 0.0) || self.reverb_prob > 0.0
    }

    /// Whether babble noise may be drawn.
    pub fn needs_babble(&self) -> bool {
        self.noise_prob > 0.0 && self.noise.contains(&NoiseKind::Babble)
    }
}

impl fmt::Display for AugmentConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let noise: Vec<&str> = self.noise.iter().map(|n| n.name()).collect();
        write!(
            f,
            "noise={},noise-prob={},snr={}:{},reverb={},rt60={}:{},talkers={}",
            if noise.is_empty() {
                "none".to_string()
            } else {
                noise.join("+")
            },
            self.noise_prob,
            self.snr_db.0,
            self.snr_db.1,
            self.reverb_prob,
            self.rt60_s.0,
            self.rt60_s.1,
            self.babble_talkers
        )
    }
}

impl FromStr for AugmentConfig {
    type Err = CorpusError;

    /// Parses `none`, `other` (= [`AugmentConfig::test_other`]), or comma-separated
    /// `key=value` pairs: `noise=white+pink+babble`, `noise-prob=0.8`, `snr=10:20`, `reverb=0.5`
    /// (a probability), `rt60=0.2:0.6`, `talkers=4`.
    fn from_str(spec: &str) -> Result<Self> {
        let bad = |reason: String| CorpusError::Config(format!("--augment {spec:?}: {reason}"));
        match spec.trim() {
            "none" | "" => return Ok(AugmentConfig::default()),
            "other" => return Ok(AugmentConfig::test_other()),
            _ => {}
        }
        let mut config = AugmentConfig::default();
        let number = |key: &str, value: &str| -> Result<f64> {
            value
                .parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .ok_or_else(|| bad(format!("{key} needs a number, got {value:?}")))
        };
        let range = |key: &str, value: &str| -> Result<(f64, f64)> {
            let (lo, hi) = value.split_once(':').unwrap_or((value, value));
            let (lo, hi) = (number(key, lo)?, number(key, hi)?);
            if lo > hi {
                return Err(bad(format!("{key} range {lo}:{hi} is reversed")));
            }
            Ok((lo, hi))
        };
        let probability = |key: &str, value: &str| -> Result<f64> {
            let p = number(key, value)?;
            if (0.0..=1.0).contains(&p) {
                Ok(p)
            } else {
                Err(bad(format!(
                    "{key} must be a probability in [0, 1], got {p}"
                )))
            }
        };
        for pair in spec.split(',') {
            let (key, value) = pair
                .split_once('=')
                .ok_or_else(|| bad(format!("expected key=value, got {pair:?}")))?;
            match key.trim() {
                "noise" => {
                    config.noise = if value == "none" {
                        Vec::new()
                    } else {
                        value
                            .split('+')
                            .map(|n| {
                                NoiseKind::parse(n).ok_or_else(|| {
                                    bad(format!("unknown noise {n:?} (white, pink, babble)"))
                                })
                            })
                            .collect::<Result<_>>()?
                    }
                }
                "noise-prob" => config.noise_prob = probability("noise-prob", value)?,
                "snr" => config.snr_db = range("snr", value)?,
                "reverb" => config.reverb_prob = probability("reverb", value)?,
                "rt60" => {
                    config.rt60_s = range("rt60", value)?;
                    if config.rt60_s.0 < 0.05 || config.rt60_s.1 > 3.0 {
                        return Err(bad("rt60 must lie within 0.05-3 s".into()));
                    }
                }
                "talkers" => {
                    config.babble_talkers = value
                        .parse()
                        .ok()
                        .filter(|&n| (1..=16).contains(&n))
                        .ok_or_else(|| bad("talkers must be 1-16".into()))?
                }
                other => return Err(bad(format!("unknown key {other:?}"))),
            }
        }
        Ok(config)
    }
}

/// What was applied to one utterance (recorded in the manifest).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    #[serde(skip_serializing_if = "Option::is_none")]
    /// The noise added, if any.
    pub noise: Option<NoiseKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Its signal-to-noise ratio in dB.
    pub snr_db: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    /// Reverberation time of the room impulse response, if reverb was applied.
    pub rt60_s: Option<f64>,
}

/// Gaussian white noise.
pub fn white_noise(len: usize, rng: &mut Rng) -> Vec<f32> {
    (0..len).map(|_| rng.gaussian() as f32).collect()
}

/// Pink noise from Paul Kellet's refined filter.
pub fn pink_noise(len: usize, rng: &mut Rng) -> Vec<f32> {
    let mut b = [0f64; 7];
    (0..len)
        .map(|_| {
            let white = rng.gaussian();
            b[0] = 0.99886 * b[0] + white * 0.0555179;
            b[1] = 0.99332 * b[1] + white * 0.0750759;
            b[2] = 0.96900 * b[2] + white * 0.1538520;
            b[3] = 0.86650 * b[3] + white * 0.3104856;
            b[4] = 0.55000 * b[4] + white * 0.5329522;
            b[5] = -0.7616 * b[5] - white * 0.0168980;
            let pink = b[0] + b[1] + b[2] + b[3] + b[4] + b[5] + b[6] + white * 0.5362;
            b[6] = white * 0.115926;
            pink as f32
        })
        .collect()
}

/// Babble: `talkers` clips from `bank`, each looped from a random offset, summed.
pub fn babble_noise<C: AsRef<[f32]>>(
    len: usize,
    bank: &[C],
    talkers: usize,
    rng: &mut Rng,
) -> Vec<f32> {
    let mut out = vec![0f32; len];
    let usable: Vec<&[f32]> = bank
        .iter()
        .map(AsRef::as_ref)
        .filter(|clip| !clip.is_empty())
        .collect();
    if usable.is_empty() {
        return out;
    }
    for _ in 0..talkers {
        let clip = usable[rng.below(usable.len() as u64) as usize];
        let offset = rng.below(clip.len() as u64) as usize;
        for (i, sample) in out.iter_mut().enumerate() {
            *sample += clip[(offset + i) % clip.len()];
        }
    }
    out
}

fn power(signal: &[f32]) -> f64 {
    if signal.is_empty() {
        return 0.0;
    }
    signal
        .iter()
        .map(|&s| f64::from(s) * f64::from(s))
        .sum::<f64>()
        / signal.len() as f64
}

/// Adds `noise` (at least as long as `speech`) scaled to the given SNR in dB.
pub fn add_noise(speech: &mut [f32], noise: &[f32], snr_db: f64) {
    let (ps, pn) = (
        power(speech),
        power(&noise[..speech.len().min(noise.len())]),
    );
    if ps == 0.0 || pn == 0.0 {
        return;
    }
    let gain = (ps / (pn * 10f64.powf(snr_db / 10.0))).sqrt() as f32;
    for (s, n) in speech.iter_mut().zip(noise) {
        *s += gain * n;
    }
}

/// A synthetic room impulse response: a unit direct path, then Gaussian noise under an envelope
/// falling 60 dB in `rt60` seconds, scaled so the reverberant tail carries as much energy as the
/// direct path.
pub fn room_impulse_response(rt60_s: f64, sample_rate: u32, rng: &mut Rng) -> Vec<f32> {
    let len = ((rt60_s * f64::from(sample_rate)) as usize).max(2);
    // exp(-decay * n) reaches 1e-3 amplitude (-60 dB) at n = rt60 * rate.
    let decay = 3.0 * std::f64::consts::LN_10 / (rt60_s * f64::from(sample_rate));
    let mut tail: Vec<f64> = (1..len)
        .map(|n| rng.gaussian() * (-decay * n as f64).exp())
        .collect();
    let energy: f64 = tail.iter().map(|x| x * x).sum();
    if energy > 0.0 {
        let scale = energy.sqrt().recip();
        tail.iter_mut().for_each(|x| *x *= scale);
    }
    std::iter::once(1.0f32)
        .chain(tail.into_iter().map(|x| x as f32))
        .collect()
}

/// Convolves `signal` with `ir` and keeps the first `signal.len()` samples.
pub fn convolve_same_length(signal: &[f32], ir: &[f32]) -> Vec<f32> {
    if signal.is_empty() || ir.is_empty() {
        return signal.to_vec();
    }
    let n = (signal.len() + ir.len() - 1).next_power_of_two();
    let mut planner = RealFftPlanner::<f32>::new();
    let forward = planner.plan_fft_forward(n);
    let inverse = planner.plan_fft_inverse(n);
    let spectrum = |x: &[f32]| {
        let mut input = forward.make_input_vec();
        input[..x.len()].copy_from_slice(x);
        let mut out = forward.make_output_vec();
        // Lengths come from the planner, so processing cannot fail.
        forward.process(&mut input, &mut out).ok();
        out
    };
    let a = spectrum(signal);
    let b = spectrum(ir);
    let mut product: Vec<_> = a.iter().zip(&b).map(|(x, y)| x * y).collect();
    let mut out = inverse.make_output_vec();
    inverse.process(&mut product, &mut out).ok();
    let scale = 1.0 / n as f32;
    out.truncate(signal.len());
    out.iter_mut().for_each(|x| *x *= scale);
    out
}

/// Applies the configured augmentations to one utterance: reverb first (the room), then noise
/// (picked up by the microphone). `babble_bank` holds other utterances for babble noise.
pub fn augment(
    speech: &mut Vec<f32>,
    config: &AugmentConfig,
    babble_bank: &[Vec<f32>],
    sample_rate: u32,
    rng: &mut Rng,
) -> Applied {
    let mut applied = Applied::default();
    // Draw every decision up front so the stream does not depend on which branches run.
    let reverb_roll = rng.next_f64();
    let rt60 = rng.uniform(config.rt60_s.0, config.rt60_s.1.max(config.rt60_s.0 + 1e-9));
    let noise_roll = rng.next_f64();
    let snr = rng.uniform(config.snr_db.0, config.snr_db.1.max(config.snr_db.0 + 1e-9));
    let kind_index = rng.next_u64();
    let mut noise_rng = Rng::new(rng.next_u64());
    let mut ir_rng = Rng::new(rng.next_u64());

    if reverb_roll < config.reverb_prob {
        let ir = room_impulse_response(rt60, sample_rate, &mut ir_rng);
        *speech = convolve_same_length(speech, &ir);
        applied.rt60_s = Some(round3(rt60));
    }
    if !config.noise.is_empty() && noise_roll < config.noise_prob {
        let kind = config.noise[(kind_index % config.noise.len() as u64) as usize];
        let noise = match kind {
            NoiseKind::White => white_noise(speech.len(), &mut noise_rng),
            NoiseKind::Pink => pink_noise(speech.len(), &mut noise_rng),
            NoiseKind::Babble => babble_noise(
                speech.len(),
                babble_bank,
                config.babble_talkers,
                &mut noise_rng,
            ),
        };
        add_noise(speech, &noise, snr);
        applied.noise = Some(kind);
        applied.snr_db = Some(round3(snr));
    }
    applied
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn snr_db(clean: &[f32], noisy: &[f32]) -> f64 {
        let noise: Vec<f32> = noisy.iter().zip(clean).map(|(n, c)| n - c).collect();
        10.0 * (power(clean) / power(&noise)).log10()
    }

    fn sine(len: usize) -> Vec<f32> {
        (0..len).map(|i| (i as f32 * 0.05).sin() * 0.3).collect()
    }

    #[test]
    fn noise_is_added_at_the_requested_snr() {
        for kind in [NoiseKind::White, NoiseKind::Pink, NoiseKind::Babble] {
            let clean = sine(16000);
            let mut rng = Rng::new(3);
            let noise = match kind {
                NoiseKind::White => white_noise(clean.len(), &mut rng),
                NoiseKind::Pink => pink_noise(clean.len(), &mut rng),
                NoiseKind::Babble => babble_noise(
                    clean.len(),
                    &[sine(700), white_noise(900, &mut Rng::new(1))],
                    3,
                    &mut rng,
                ),
            };
            let mut noisy = clean.clone();
            add_noise(&mut noisy, &noise, 12.5);
            let got = snr_db(&clean, &noisy);
            assert!((got - 12.5).abs() < 1e-3, "{kind:?}: snr {got}");
        }
    }

    #[test]
    fn pink_noise_has_more_power_at_low_frequencies() {
        let noise = pink_noise(1 << 16, &mut Rng::new(5));
        // Power of first differences (a high-pass) relative to total power: pink noise has little.
        let diff: Vec<f32> = noise.windows(2).map(|w| w[1] - w[0]).collect();
        let white = white_noise(1 << 16, &mut Rng::new(5));
        let white_diff: Vec<f32> = white.windows(2).map(|w| w[1] - w[0]).collect();
        let pink_ratio = power(&diff) / power(&noise);
        let white_ratio = power(&white_diff) / power(&white);
        assert!(
            pink_ratio < 0.5 * white_ratio,
            "pink {pink_ratio} white {white_ratio}"
        );
    }

    #[test]
    fn impulse_response_decays_by_60_db_over_rt60() {
        let ir = room_impulse_response(0.4, 16000, &mut Rng::new(2));
        assert_eq!(ir.len(), 6400);
        assert_eq!(ir[0], 1.0);
        let energy =
            |s: &[f32]| s.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>() / s.len() as f64;
        let early = energy(&ir[1..400]);
        let late = energy(&ir[6000..6400]);
        let drop_db = 10.0 * (early / late).log10();
        // Envelope energy falls 60 dB over the whole length; these windows sit ~0.36 s apart.
        assert!((45.0..65.0).contains(&drop_db), "drop {drop_db} dB");
    }

    #[test]
    fn fft_convolution_matches_direct_convolution() {
        let signal = sine(300);
        let ir = [1.0, 0.5, -0.25, 0.125];
        let fast = convolve_same_length(&signal, &ir);
        for (n, &got) in fast.iter().enumerate() {
            let direct: f32 = (0..ir.len())
                .filter(|&k| k <= n)
                .map(|k| ir[k] * signal[n - k])
                .sum();
            assert!((got - direct).abs() < 1e-5, "n={n}: {got} vs {direct}");
        }
    }

    #[test]
    fn augmentation_is_deterministic() {
        let config = AugmentConfig::noisy_reverberant();
        let bank = vec![sine(4000)];
        let run = || {
            let mut speech = sine(8000);
            let applied = augment(
                &mut speech,
                &config,
                &bank,
                16000,
                &mut Rng::derive(11, "augment", 7),
            );
            (speech, applied)
        };
        let (a, applied) = run();
        let (b, _) = run();
        assert_eq!(a, b);
        assert!(applied.noise.is_some() && applied.rt60_s.is_some());
        let snr = applied.snr_db.unwrap();
        assert!((10.0..=20.0).contains(&snr));
    }

    #[test]
    fn parses_augment_specs() {
        let config: AugmentConfig = "noise=white+babble,snr=5:15,reverb=0.5,rt60=0.3:0.8"
            .parse()
            .unwrap();
        assert_eq!(config.noise, vec![NoiseKind::White, NoiseKind::Babble]);
        assert_eq!(config.snr_db, (5.0, 15.0));
        assert_eq!(config.reverb_prob, 0.5);
        let round_trip: AugmentConfig = config.to_string().parse().unwrap();
        assert_eq!(round_trip, config);
        assert!(!"none".parse::<AugmentConfig>().unwrap().is_active());
        assert!("other".parse::<AugmentConfig>().unwrap().needs_babble());
        for bad in [
            "noise=brown",
            "snr=20:10",
            "reverb=2",
            "rt60=0:9",
            "color=red",
            "noise",
        ] {
            assert!(bad.parse::<AugmentConfig>().is_err(), "{bad}");
        }
    }
}
