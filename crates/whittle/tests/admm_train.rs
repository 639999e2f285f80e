//! ADMM quantized training (`method = "admm"`) on the tiny random Whisper: the projection lands
//! on the grid and beats round-to-nearest at the abs-max scale; training drives `|W - G|` toward
//! zero; the packed file computes the model with weights `G`; a killed run resumes exactly, `G`,
//! the multipliers and `rho` included; recipe errors name their field.

mod common_train;

use candle_core::Tensor;
use common_train::{
    assert_recipe_errors, encoder_and_logits, examples, prompt, straight_and_resumed, teacher,
    trained_state, TRAIN,
};
use whittle::models::whisper::Whisper;
use whittle::models::Layers;
use whittle::nn::{max_abs_diff, LsqSpec, Weight};
use whittle::train::admm::{fit_scale, project};
use whittle::train::checkpoint;
use whittle::train::trainer::Trainer;
use whittle::train::Recipe;

/// The shared training sections with `steps` steps and the learning rate decaying to
/// `min_lr_ratio` of its peak.
fn admm_recipe(admm: &str, steps: usize, min_lr_ratio: f64) -> Recipe {
    let train = TRAIN
        .replace("steps = 7\n", &format!("steps = {steps}\n"))
        .replace(
            "min_lr_ratio = 0.1",
            &format!("min_lr_ratio = {min_lr_ratio}"),
        );
    Recipe::parse(
        &format!("name = \"admm\"\nmethod = \"admm\"\n[quant]\nbits = 3\n[admm]\n{admm}\n{train}"),
        "test",
    )
    .unwrap()
}

fn trainer(admm: &str, steps: usize, min_lr_ratio: f64, dir: &std::path::Path) -> Trainer {
    Trainer::new(
        admm_recipe(admm, steps, min_lr_ratio),
        teacher(),
        examples(dir, 4),
        prompt(),
        None,
    )
    .unwrap()
}

/// A deterministic pseudo-random vector with a few outliers.
fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = ((i as u32).wrapping_mul(2654435761).wrapping_add(seed) >> 8) as f32
                / (1u32 << 24) as f32;
            let v = (x - 0.5) * 0.2;
            if i % 97 == 0 {
                v * 6.0
            } else {
                v
            }
        })
        .collect()
}

fn sq_error(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(x, y)| f64::from(x - y).powi(2)).sum()
}

#[test]
fn the_projection_is_on_the_grid_and_no_worse_than_abs_max_rounding() {
    use whittle::train::recipe::AdmmProjection::{AbsMax, LeastSquares};
    let (rows, cols) = (6, 128);
    for bits in [2u8, 3, 4, 8] {
        for (group, tied) in [(Some(32), false), (None, false), (Some(64), true)] {
            let spec = LsqSpec { bits, group };
            let v = values(rows * cols, u32::from(bits));
            let (g, scales) = project(&v, rows, cols, spec, tied, None, LeastSquares);
            let glen = spec.group_len(cols);
            assert_eq!(scales.len(), rows * (cols / glen));
            if tied {
                assert!(scales.iter().all(|&s| s == scales[0]));
            }
            let qp = spec.qp();
            let mut rtn = Vec::new();
            for (i, (&x, &y)) in g.iter().zip(&v).enumerate() {
                let alpha = scales[i / glen];
                assert_eq!(alpha, half::f16::from_f32(alpha).to_f32(), "scale not f16");
                let q = x / alpha;
                assert!(
                    q == q.round() && q.abs() <= qp,
                    "{x} is not on the grid of {alpha}"
                );
                let group_of = &v[(i / glen) * glen..(i / glen + 1) * glen];
                let group_of = if tied { &v[..] } else { group_of };
                let amax = group_of.iter().fold(0f32, |m, z| m.max(z.abs()));
                let a0 = half::f16::from_f32(amax / qp).to_f32();
                rtn.push(a0 * (y / a0).round().clamp(-qp, qp));
            }
            // The abs-max projection is exactly that rounding.
            let (abs_max, _) = project(&v, rows, cols, spec, tied, None, AbsMax);
            assert_eq!(
                abs_max, rtn,
                "{bits} bits {group:?} tied {tied}: abs-max projection"
            );
            let (e, e_rtn) = (sq_error(&g, &v), sq_error(&rtn, &v));
            assert!(
                e <= e_rtn * (1.0 + 1e-6),
                "{bits} bits {group:?} tied {tied}: projection error {e} > abs-max rounding {e_rtn}"
            );
            // Projecting a point of the grid returns it, from either start.
            for start in [None, Some(&scales[..])] {
                let (again, _) = project(&g, rows, cols, spec, tied, start, LeastSquares);
                assert_eq!(
                    again, g,
                    "{bits} bits {group:?}: the projection is not idempotent"
                );
            }
        }
    }
    // An all-zero group projects to zero with the smallest scale.
    assert_eq!(fit_scale(&[0.0; 32], 3.0, None), whittle::nn::lsq::MIN_STEP);
}

fn outputs(model: &Whisper) -> Tensor {
    encoder_and_logits(model).1
}

/// The student with every quantized layer's weight replaced by its projection `G`.
fn student_at_projection(t: &Trainer) -> Whisper {
    let mut projections: std::collections::HashMap<String, Tensor> = t
        .method
        .state_tensors()
        .into_iter()
        .filter_map(|(name, g)| Some((name.strip_suffix(".projected")?.to_string(), g)))
        .collect();
    let mut model = t.student.clone();
    let mut replaced = 0;
    for layer in model.layers_mut() {
        if let Some(g) = projections.remove(&layer.name) {
            layer.linear.weight = Weight::Float(g);
            replaced += 1;
        }
    }
    assert!(replaced > 0 && projections.is_empty());
    model
}

/// The W-steps between two projections must be able to reach the target (20 steps here; with
/// a projection every step the multipliers outrun W and the distance grows).
#[test]
fn admm_drives_the_weights_onto_the_grid_and_ships_the_projection() {
    let dir = tempfile::tempdir().unwrap();
    let steps = 200;
    let mut t = trainer(
        "rho_start = 1.0\nrho_end = 10000.0\nupdate_every = 20",
        steps,
        0.1,
        dir.path(),
    );
    let mut distances = Vec::new();
    while t.state.step < steps {
        let report = t.train_step().unwrap();
        distances.push(report.method["distance"]);
    }
    let (first, last) = (distances[0], *distances.last().unwrap());
    eprintln!(
        "relative |W - G| every 20 steps: {:?}",
        distances.iter().step_by(20).collect::<Vec<_>>()
    );
    assert!(last < 0.01 * first, "|W - G| / |W| went {first} -> {last}");

    let (shipped, extracted) = t.extract().unwrap();
    assert!(shipped
        .layers()
        .iter()
        .filter(|l| l.role.quantized_by_default())
        .all(|l| matches!(l.linear.weight, Weight::Packed(_))));
    assert!(extracted
        .layers
        .iter()
        .any(|(_, f)| f.label().contains("3")));
    // The packed matrices hold exactly G ...
    let at_g = student_at_projection(&t);
    let flat = |x: &Tensor| x.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    for (g, p) in at_g.layers().iter().zip(shipped.layers()) {
        if let (Weight::Float(w), Weight::Packed(packed)) = (&g.linear.weight, &p.linear.weight) {
            assert_eq!(flat(w), packed.dequantize(), "{}: packed != G", g.name);
        }
    }
    // ... and compute G's function, up to the packed kernels' int8 activations, which is
    // (at convergence) the trained W's function, not the teacher's.
    let (packed, g_logits) = (outputs(&shipped), outputs(&at_g));
    let trained = outputs(&t.student);
    let teacher_logits = outputs(&t.teacher);
    let (d, dw, dt) = (
        max_abs_diff(&g_logits, &packed).unwrap(),
        max_abs_diff(&trained, &g_logits).unwrap(),
        max_abs_diff(&teacher_logits, &g_logits).unwrap(),
    );
    eprintln!("logits of G: vs packed {d:.2e}, vs W {dw:.2e}, vs teacher {dt:.2e}");
    assert!(d * 10.0 < dt, "packed vs G {d}, G vs teacher {dt}");
    assert!(dw * 3.0 < dt, "G vs W {dw}, G vs teacher {dt}");
}

/// With the penalty schedule of the shipped recipes (rho 1e-3 -> 10, far too weak for the
/// gradient W-step under AdamW), the proximal W-step brings W onto the grid, and the gradient
/// W-step does not.
#[test]
fn the_proximal_w_step_reaches_the_grid_where_the_gradient_step_stalls() {
    let steps = 100;
    let schedule = "rho_start = 1e-3\nrho_end = 10.0\nupdate_every = 10";
    let run = |w_step: &str| {
        let dir = tempfile::tempdir().unwrap();
        let mut t = trainer(
            &format!("{schedule}\nw_step = \"{w_step}\"\nprox_step = 1.0"),
            steps,
            0.1,
            dir.path(),
        );
        let mut distances = Vec::new();
        while t.state.step < steps {
            distances.push(t.train_step().unwrap().method["distance"]);
        }
        eprintln!(
            "{w_step}: relative |W - G| every 10 steps: {:?}, last {:?}",
            distances.iter().step_by(10).collect::<Vec<_>>(),
            distances.last()
        );
        (distances[0], *distances.last().unwrap(), t)
    };
    let (first, proximal, t) = run("proximal");
    assert!(
        proximal < 0.01 * first,
        "proximal: |W - G| / |W| went {first} -> {proximal}"
    );
    let (first_g, gradient, _) = run("gradient");
    assert!(
        gradient > 0.3 * first_g,
        "gradient: |W - G| / |W| went {first_g} -> {gradient}; the contrast is gone"
    );
    // Converged, the shipped G computes what the trained W computes.
    let (shipped, _) = t.extract().unwrap();
    let at_g = student_at_projection(&t);
    let (dw, dt) = (
        max_abs_diff(&outputs(&t.student), &outputs(&at_g)).unwrap(),
        max_abs_diff(&outputs(&t.teacher), &outputs(&at_g)).unwrap(),
    );
    eprintln!("logits of G: vs W {dw:.2e}, vs teacher {dt:.2e}");
    assert!(dw * 3.0 < dt, "G vs W {dw}, G vs teacher {dt}");
    let d = max_abs_diff(&outputs(&shipped), &outputs(&at_g)).unwrap();
    assert!(d * 10.0 < dt, "packed vs G {d}, G vs teacher {dt}");
}

#[test]
fn admm_resumes_exactly() {
    for w_step in ["gradient", "proximal"] {
        resumes_exactly(&format!(
            "rho_start = 0.01\nrho_end = 10.0\nupdate_every = 2\nw_step = \"{w_step}\""
        ));
    }
}

fn resumes_exactly(admm: &str) {
    let dir = tempfile::tempdir().unwrap();
    let make = || trainer(admm, 7, 0.1, dir.path());
    let (straight, resumed) = straight_and_resumed(make, dir.path());
    let (a, b) = (trained_state(&straight), trained_state(&resumed));
    for (i, (x, y)) in a.iter().zip(&b).enumerate() {
        let d = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        assert!(
            d == 0.0,
            "parameter/moment {i} of {} differs after resume by {d}",
            a.len()
        );
    }
    let state = |t: &Trainer| {
        t.method
            .state_tensors()
            .into_iter()
            .map(|(n, x)| (n, x.flatten_all().unwrap().to_vec1::<f32>().unwrap()))
            .collect::<Vec<_>>()
    };
    assert!(!state(&straight).is_empty());
    assert_eq!(state(&straight), state(&resumed));
    assert_eq!(straight.method.state(), resumed.method.state());
    // The best parameters carry G: a fresh trainer that loads them ships the same file.
    let best = dir.path().join("best");
    std::fs::create_dir_all(&best).unwrap();
    checkpoint::save_best(&best, &straight.optimizer, straight.method.as_ref()).unwrap();
    let mut fresh = make();
    checkpoint::load_best(&best, &fresh.optimizer, fresh.method.as_mut()).unwrap();
    let flat = |m: &Whisper| outputs(m).flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(
        flat(&straight.extract().unwrap().0),
        flat(&fresh.extract().unwrap().0)
    );
}

#[test]
fn admm_recipe_settings_are_checked() {
    let shipped = include_str!("../../../recipes/admm-w4.toml");
    let recipe = Recipe::parse(shipped, "admm-w4.toml").unwrap();
    assert_eq!(recipe.method.name(), "admm");
    assert_recipe_errors(
        shipped,
        &[
            ("rho_start = ", "rho_start = -", "admm.rho_start"),
            ("rho_end = ", "rho_end = -", "admm.rho_end"),
            ("update_every = ", "update_every = 0#", "admm.update_every"),
            ("prox_step = 1.0", "prox_step = 0.0", "admm.prox_step"),
            ("w_step = \"proximal\"", "w_step = \"newton\"", "w_step"),
            ("scale = \"group\"", "scale = \"row\"", "scale"),
            ("[admm]", "[admm]\nextra = 1", "extra"),
            ("method = \"admm\"", "method = \"uniform-lsq\"", "admm"),
        ],
    );
}

/// `scale = "layer"` ties one scale over each layer: every packed matrix stores a single value
/// in all its scale slots, and it still holds exactly G.
#[test]
fn a_tied_scale_is_one_value_per_layer() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = trainer(
        "rho_start = 0.1\nrho_end = 10.0\nupdate_every = 2\nscale = \"layer\"",
        4,
        0.1,
        dir.path(),
    );
    while t.state.step < 4 {
        t.train_step().unwrap();
    }
    let (shipped, extracted) = t.extract().unwrap();
    assert_eq!(extracted.report["scale"], "layer");
    let at_g = student_at_projection(&t);
    let mut packed_layers = 0;
    for (g, p) in at_g.layers().iter().zip(shipped.layers()) {
        if let (Weight::Float(w), Weight::Packed(packed)) = (&g.linear.weight, &p.linear.weight) {
            let scales = packed.scales();
            assert!(
                scales.iter().all(|&s| s == scales[0]),
                "{}: scales {scales:?}",
                g.name
            );
            let flat = w.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            assert_eq!(flat, packed.dequantize(), "{}", g.name);
            packed_layers += 1;
        }
    }
    assert!(packed_layers > 0);
}
