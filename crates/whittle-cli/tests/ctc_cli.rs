//! A CTC checkpoint (tiny random HuBERT, tests/fixtures/ctc) through the same commands as Whisper:
//! inspect, transcribe, quantize (RTN and GPTQ), eval and eval --compare.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn whittle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(args)
        .env("RUST_LOG", "error")
        .output()
        .expect("run whittle")
}

fn ok(o: &Output, what: &str) -> String {
    assert!(
        o.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `whittle eval MODEL MANIFEST --out OUT`, which must succeed.
fn eval(model: &Path, manifest: &Path, out: &Path) {
    ok(
        &whittle(&[
            "eval",
            model.to_str().unwrap(),
            manifest.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--no-spellings",
        ]),
        "eval",
    );
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../whittle/tests/fixtures/ctc/hubert-base")
}

/// The fixture's clips as 16 kHz s16le `.raw` files and a manifest with transformers' texts.
fn dataset(dir: &Path) -> (PathBuf, Vec<String>) {
    let reference = candle_core::safetensors::load(
        fixture().join("reference.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture().join("reference.json")).unwrap())
            .unwrap();
    let mut lines = String::new();
    let mut texts = Vec::new();
    for (i, clip) in json["clips"].as_array().unwrap().iter().enumerate() {
        let pcm: Vec<f32> = reference[&format!("audio.{i}")]
            .to_dtype(candle_core::DType::F32)
            .unwrap()
            .to_vec1()
            .unwrap();
        let bytes: Vec<u8> = pcm.iter().flat_map(|&s| (s as i16).to_le_bytes()).collect();
        let audio = dir.join(format!("clip{i}.raw"));
        std::fs::write(&audio, bytes).unwrap();
        let text = clip["text"].as_str().unwrap().to_string();
        lines.push_str(&format!(
            "{}\n",
            serde_json::json!({ "id": format!("clip{i}"), "audio": audio, "text": text })
        ));
        texts.push(text);
    }
    let manifest = dir.join("set.jsonl");
    std::fs::write(&manifest, lines).unwrap();
    (manifest, texts)
}

/// A shipped recipe (`recipes/FILE`) with `replacements` applied (each must be found), written to
/// `dir/FILE`.
fn shipped_recipe(dir: &Path, file: &str, replacements: &[(&str, &str)]) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
    let mut text = std::fs::read_to_string(root.join(file)).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "{file} has no `{from}`");
        text = text.replacen(from, to, 1);
    }
    let path = dir.join(file);
    std::fs::write(&path, text).unwrap();
    path
}

/// Replacements that make a shipped recipe a few-step smoke run.
const SHORT: [(&str, &str); 5] = [
    ("steps = 500\n", "steps = 3\n"),
    ("warmup_steps = 20\n", "warmup_steps = 1\n"),
    ("eval_every = 100\n", "eval_every = 0\n"),
    ("checkpoint_every = 25\n", "checkpoint_every = 2\n"),
    ("batch_size = 4\n", "batch_size = 2\n"),
];

#[test]
fn a_ctc_checkpoint_goes_through_the_same_commands_as_whisper() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, texts) = dataset(dir.path());
    let model = fixture();
    let m = model.to_str().unwrap();

    let inspected = ok(&whittle(&["inspect", m]), "inspect");
    assert!(inspected.contains("Hubert CTC"), "{inspected}");

    let clip0 = dir.path().join("clip0.raw");
    let text = ok(
        &whittle(&["transcribe", m, clip0.to_str().unwrap()]),
        "transcribe",
    );
    assert_eq!(text.trim_end_matches('\n'), texts[0]);
    let refused = whittle(&["transcribe", m, clip0.to_str().unwrap(), "--format", "srt"]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("timestamps"));

    let float_eval = dir.path().join("float");
    ok(
        &whittle(&[
            "eval",
            m,
            manifest.to_str().unwrap(),
            "--out",
            float_eval.to_str().unwrap(),
            "--no-spellings",
        ]),
        "eval float",
    );
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(float_eval.join("summary.json")).unwrap())
            .unwrap();
    // The references are transformers' own output: whittle's float model matches them.
    assert_eq!(summary["wer"], 0.0, "{summary}");
    assert_eq!(summary["model"]["architecture"], "hubert");

    for (method, extra) in [
        ("rtn", vec![]),
        ("gptq", vec!["--calib", manifest.to_str().unwrap()]),
    ] {
        let packed = dir.path().join(format!("{method}.whittle"));
        let mut args = vec![
            "quantize",
            m,
            "--bits",
            "8",
            "--method",
            method,
            "-o",
            packed.to_str().unwrap(),
        ];
        args.extend(extra.iter().copied());
        ok(&whittle(&args), "quantize");
        let eval_dir = dir.path().join(format!("eval-{method}"));
        eval(&packed, &manifest, &eval_dir);
        let compared = ok(
            &whittle(&[
                "eval",
                "--compare",
                float_eval.to_str().unwrap(),
                eval_dir.to_str().unwrap(),
            ]),
            "compare",
        );
        assert!(compared.contains("verdict"), "{compared}");
    }

    let whisper_only = whittle(&[
        "eval",
        m,
        manifest.to_str().unwrap(),
        "--out",
        dir.path().join("beam").to_str().unwrap(),
        "--beam-size",
        "5",
        "--no-spellings",
    ]);
    assert!(!whisper_only.status.success());
    assert!(String::from_utf8_lossy(&whisper_only.stderr).contains("Whisper models only"));
}

/// `whittle compress` trains a CTC checkpoint with the shipped uniform W4 recipe (KL plus an
/// encoder-output term: nothing a CTC model lacks), and the file evaluates; token cross-entropy
/// is refused with the reason.
#[test]
fn compress_trains_a_ctc_checkpoint_from_the_shipped_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = dataset(dir.path());
    let recipe = shipped_recipe(
        dir.path(),
        "uniform-qat-w4.toml",
        &[
            ("group = 64\n", ""),
            ("steps = 500\n", "steps = 4\n"),
            ("warmup_steps = 20\n", "warmup_steps = 1\n"),
            ("eval_every = 100\n", "eval_every = 2\n"),
            ("checkpoint_every = 25\n", "checkpoint_every = 2\n"),
            ("batch_size = 4\n", "batch_size = 2\n"),
        ],
    );
    let text = std::fs::read_to_string(&recipe).unwrap();
    std::fs::write(dir.path().join("ctc.toml"), &text).unwrap();
    std::fs::write(
        dir.path().join("ce.toml"),
        text.replacen("ce = 0.0\n", "ce = 0.5\n", 1),
    )
    .unwrap();
    let model = fixture();
    let compress = |recipe: &str, out: &str| {
        whittle(&[
            "compress",
            model.to_str().unwrap(),
            "--recipe",
            dir.path().join(recipe).to_str().unwrap(),
            "--train",
            manifest.to_str().unwrap(),
            "--dev",
            manifest.to_str().unwrap(),
            "-o",
            dir.path().join(out).to_str().unwrap(),
            "--no-spellings",
        ])
    };
    let refused = compress("ce.toml", "refused.whittle");
    assert!(!refused.status.success());
    let err = String::from_utf8_lossy(&refused.stderr);
    assert!(err.contains("loss.ce") && err.contains("hubert"), "{err}");

    let printed = ok(&compress("ctc.toml", "w4.whittle"), "compress");
    assert!(printed.contains("4 steps"), "{printed}");
    let packed = dir.path().join("w4.whittle");
    let inspected = ok(&whittle(&["inspect", packed.to_str().unwrap()]), "inspect");
    assert!(inspected.contains("architecture hubert"), "{inspected}");
    assert!(inspected.contains("sym4"), "{inspected}");
    eval(&packed, &manifest, &dir.path().join("eval"));
}

/// `whittle compress` prunes a Conformer CTC checkpoint with the shipped L0 recipe (a few steps,
/// gates starting at keep probability 0.83 so the extraction is smaller without long training):
/// the file holds fewer heads, units and channels, `inspect` lists them per layer, and it
/// transcribes through `eval`.
#[test]
fn compress_prunes_a_conformer_with_the_shipped_l0_recipe() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = dataset(dir.path());
    let replacements: Vec<(&str, &str)> = [("init_log_alpha = 3.0\n", "init_log_alpha = 0.0\n")]
        .into_iter()
        .chain(SHORT)
        .collect();
    let recipe = shipped_recipe(dir.path(), "prune-l0.toml", &replacements);
    let model = fixture().with_file_name("conformer-relpos");
    let pruned = dir.path().join("pruned.whittle");
    let printed = ok(
        &whittle(&[
            "compress",
            model.to_str().unwrap(),
            "--recipe",
            recipe.to_str().unwrap(),
            "--train",
            manifest.to_str().unwrap(),
            "--dev",
            manifest.to_str().unwrap(),
            "-o",
            pruned.to_str().unwrap(),
            "--no-spellings",
        ]),
        "compress",
    );
    assert!(printed.contains("3 steps"), "{printed}");
    let inspected = ok(&whittle(&["inspect", pruned.to_str().unwrap()]), "inspect");
    let line = inspected
        .lines()
        .find(|l| l.starts_with("pruned"))
        .unwrap_or_else(|| panic!("inspect lists no pruned shapes: {inspected}"));
    assert!(
        line.contains("FFN1 units/heads/conv channels/FFN2 units") && line.contains("0: "),
        "{line}"
    );
    // Every FFN and conv module keeps about 0.83 of its 32 units (fewer after the steps).
    let (_, per_layer) = line.split_once("removed): ").unwrap();
    for layer in per_layer.split(", ") {
        let counts: Vec<usize> = layer[3..].split('/').map(|n| n.parse().unwrap()).collect();
        let unpruned = [32, 4, 32, 32];
        assert!(
            counts.iter().zip(unpruned).all(|(&c, u)| c <= u)
                && [0, 2, 3]
                    .iter()
                    .all(|&i| counts[i] < unpruned[i] && counts[i] > 16),
            "{line}"
        );
    }
    assert!(
        std::fs::metadata(&pruned).unwrap().len()
            < std::fs::metadata(model.join("model.safetensors"))
                .unwrap()
                .len()
    );
    eval(&pruned, &manifest, &dir.path().join("eval"));
}

/// The relative-position Conformer fixture with its last feature-encoder conv widened from 16 to
/// 32 channels (the channels duplicated), so that every matrix's input width is a multiple of 32
/// and a group of 32 applies to all of them.
fn widened_conformer(dir: &Path) -> PathBuf {
    use candle_core::{Device, Tensor};
    let source = fixture().with_file_name("conformer-relpos");
    let out = dir.join("conformer-wide");
    std::fs::create_dir_all(&out).unwrap();
    for file in [
        "vocab.json",
        "tokenizer_config.json",
        "preprocessor_config.json",
    ] {
        std::fs::copy(source.join(file), out.join(file)).unwrap();
    }
    let mut config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(source.join("config.json")).unwrap())
            .unwrap();
    let last = config["conv_dim"].as_array().unwrap().len() - 1;
    config["conv_dim"][last] = 32.into();
    std::fs::write(out.join("config.json"), config.to_string()).unwrap();
    let tensors =
        candle_core::safetensors::load(source.join("model.safetensors"), &Device::Cpu).unwrap();
    let widened: std::collections::HashMap<String, Tensor> = tensors
        .into_iter()
        .map(|(name, t)| {
            let axis = if name.contains(&format!("conv_layers.{last}.")) {
                Some(0)
            } else if name.contains("feature_projection.projection.weight") {
                Some(1)
            } else if name.contains("feature_projection.layer_norm") {
                Some(0)
            } else {
                None
            };
            let t = match axis {
                Some(axis) => Tensor::cat(&[&t, &t], axis).unwrap(),
                None => t,
            };
            (name, t)
        })
        .collect();
    candle_core::safetensors::save(&widened, out.join("model.safetensors")).unwrap();
    out
}

/// Stage A of two-stage mixed precision on a CTC checkpoint: `sensitivity` (KL of the frame
/// posteriors, and the Hessian metric) writes a sensitivity file per matrix, `allocate` turns it
/// into a bit map within the budget, and `quantize --bit-map` packs the model by it.
#[test]
fn sensitivity_and_allocation_run_on_a_ctc_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = dataset(dir.path());
    let model = widened_conformer(dir.path());
    // Per block: two FFNs of 2 matrices, q/k/v/out, linear_pos, 2 pointwise convs; then the
    // feature projection and the CTC head.
    let layers = 2 * 11 + 2;
    for metric in ["kl", "hessian"] {
        let sens = dir.path().join(format!("{metric}.json"));
        ok(
            &whittle(&[
                "sensitivity",
                model.to_str().unwrap(),
                "--data",
                manifest.to_str().unwrap(),
                "--metric",
                metric,
                "--candidates",
                "2,4,8",
                "--group",
                "32",
                "--probes",
                "4",
                "-o",
                sens.to_str().unwrap(),
            ]),
            metric,
        );
        let file: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&sens).unwrap()).unwrap();
        assert_eq!(file["layers"].as_array().unwrap().len(), layers, "{metric}");
        assert_eq!(file["targets"], "frames");
        assert!(file["scored_tokens"].as_u64().unwrap() > 0);
        if metric == "kl" {
            // Fewer bits never hurt less, on every matrix.
            for layer in file["layers"].as_array().unwrap() {
                let kl: Vec<f64> = layer["candidates"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c["kl"].as_f64().unwrap())
                    .collect();
                assert!(kl[0] >= kl[1] && kl[1] >= kl[2] && kl[2] >= 0.0, "{layer}");
            }
        }
    }
    let map = dir.path().join("map.toml");
    ok(
        &whittle(&[
            "allocate",
            dir.path().join("kl.json").to_str().unwrap(),
            "--budget-bits",
            "4",
            "-o",
            map.to_str().unwrap(),
        ]),
        "allocate",
    );
    let packed = dir.path().join("mixed.whittle");
    ok(
        &whittle(&[
            "quantize",
            model.to_str().unwrap(),
            "--bit-map",
            map.to_str().unwrap(),
            "-o",
            packed.to_str().unwrap(),
        ]),
        "quantize",
    );
    eval(&packed, &manifest, &dir.path().join("eval"));
}

/// `whittle prune --magnitude` on a Conformer CTC checkpoint: every module keeps half its units
/// (by weight norm), the keep list it writes reproduces the same file through `--keep`, and the
/// pruned file transcribes.
#[test]
fn magnitude_pruning_and_keep_lists_work_on_a_conformer() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = dataset(dir.path());
    let model = fixture().with_file_name("conformer-relpos");
    let (first, second, keep) = (
        dir.path().join("mag.whittle"),
        dir.path().join("again.whittle"),
        dir.path().join("keep.json"),
    );
    let printed = ok(
        &whittle(&[
            "prune",
            model.to_str().unwrap(),
            "--magnitude",
            "0.5",
            "--keep-out",
            keep.to_str().unwrap(),
            "-o",
            first.to_str().unwrap(),
        ]),
        "prune",
    );
    assert!(printed.contains("% removed"), "{printed}");
    let list: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&keep).unwrap()).unwrap();
    let ffn = &list["wav2vec2_conformer.encoder.layers.0.ffn1"]["units"];
    assert_eq!(ffn.as_array().unwrap().len(), 16, "{list}");
    let inspected = ok(&whittle(&["inspect", first.to_str().unwrap()]), "inspect");
    assert!(inspected.contains("0: 16/2/16/16"), "{inspected}");
    ok(
        &whittle(&[
            "prune",
            model.to_str().unwrap(),
            "--keep",
            keep.to_str().unwrap(),
            "-o",
            second.to_str().unwrap(),
        ]),
        "prune --keep",
    );
    let (a, b) = (dir.path().join("eval-a"), dir.path().join("eval-b"));
    eval(&first, &manifest, &a);
    eval(&second, &manifest, &b);
    // The transcripts, from each run's per-utterance lines.
    let hypotheses = |d: &Path| -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(d).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|x| x == "jsonl") {
                for line in std::fs::read_to_string(path).unwrap().lines() {
                    let v: serde_json::Value = serde_json::from_str(line).unwrap();
                    out.push(v["hypothesis"].as_str().unwrap_or_default().to_string());
                }
            }
        }
        out
    };
    assert!(!hypotheses(&a).is_empty());
    assert_eq!(hypotheses(&a), hypotheses(&b));
}

/// A pruned model distilled from the unpruned one: `compress PRUNED.whittle --teacher MODEL`
/// with the shipped `recipes/distill.toml` (float fine-tune) and with the uniform W4 recipe
/// (pruned and quantized in one run); both files keep the pruned shapes and evaluate.
#[test]
fn compress_distils_a_pruned_model_from_its_teacher() {
    let dir = tempfile::tempdir().unwrap();
    let (manifest, _) = dataset(dir.path());
    let model = fixture().with_file_name("conformer-relpos");
    let pruned = dir.path().join("pruned.whittle");
    ok(
        &whittle(&[
            "prune",
            model.to_str().unwrap(),
            "--magnitude",
            "0.5",
            "-o",
            pruned.to_str().unwrap(),
        ]),
        "prune",
    );
    let distill = shipped_recipe(dir.path(), "distill.toml", &SHORT);
    let w4_replacements: Vec<(&str, &str)> = [("group = 64\n", "group = 32\n")]
        .into_iter()
        .chain(SHORT)
        .collect();
    let w4 = shipped_recipe(dir.path(), "uniform-qat-w4.toml", &w4_replacements);
    for (recipe, out, format) in [(&distill, "distilled", "f32"), (&w4, "pruned-w4", "sym4")] {
        let file = dir.path().join(format!("{out}.whittle"));
        ok(
            &whittle(&[
                "compress",
                pruned.to_str().unwrap(),
                "--teacher",
                model.to_str().unwrap(),
                "--recipe",
                recipe.to_str().unwrap(),
                "--train",
                manifest.to_str().unwrap(),
                "--dev",
                manifest.to_str().unwrap(),
                "-o",
                file.to_str().unwrap(),
                "--no-spellings",
            ]),
            out,
        );
        let inspected = ok(&whittle(&["inspect", file.to_str().unwrap()]), "inspect");
        assert!(inspected.contains("0: 16/2/16/16"), "{out}: {inspected}");
        assert!(inspected.contains(format), "{out}: {inspected}");
        eval(&file, &manifest, &dir.path().join(format!("eval-{out}")));
    }
    // Without a teacher a `.whittle` student is refused, naming the way out.
    let refused = whittle(&[
        "compress",
        pruned.to_str().unwrap(),
        "--recipe",
        distill.to_str().unwrap(),
        "--train",
        manifest.to_str().unwrap(),
        "--dev",
        manifest.to_str().unwrap(),
        "-o",
        dir.path().join("x.whittle").to_str().unwrap(),
        "--no-spellings",
    ]);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("--teacher"));
}
