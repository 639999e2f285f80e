//! The `whittle compress` fixture shared by the CLI tests: a tiny model, a manifest of tones
//! and a shipped recipe cut down to a few steps.

#![allow(dead_code)]

use std::path::Path;

use crate::common_tiny;

/// A tiny model, a training/dev manifest of tones with transcripts, and the shipped recipe
/// `name` cut down to a few steps on per-channel scales (the tiny model's rows are 16 wide).
pub fn compress_fixture(
    recipe_name: &str,
    replace: &[(&str, &str)],
) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    common_tiny::write_hf(&model, &common_tiny::hf_tensors(21));
    let mut manifest = String::new();
    for i in 0..4 {
        let samples: Vec<u8> = (0..8000 + 1600 * i)
            .flat_map(|t| {
                (((t as f32 * (0.03 + 0.01 * i as f32)).sin() * 6000.0) as i16).to_le_bytes()
            })
            .collect();
        std::fs::write(dir.path().join(format!("u{i}.raw")), samples).unwrap();
        manifest.push_str(&format!("{{\"audio\":\"u{i}.raw\",\"text\":\"w{i}\"}}\n"));
    }
    std::fs::write(dir.path().join("set.jsonl"), manifest).unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
    let mut text = std::fs::read_to_string(root.join(recipe_name)).unwrap();
    for (from, to) in [
        ("group = 64\n", ""),
        ("steps = 500\n", "steps = 6\n"),
        ("warmup_steps = 20\n", "warmup_steps = 1\n"),
        ("eval_every = 100\n", "eval_every = 3\n"),
        ("dev_limit = 40\n", "dev_limit = 2\n"),
        ("checkpoint_every = 25\n", "checkpoint_every = 3\n"),
        ("batch_size = 4\n", "batch_size = 2\n"),
    ]
    .iter()
    .chain(replace)
    {
        // The two-stage recipe takes its group from the bit map.
        if *from == "group = 64\n" && !text.contains(from) {
            continue;
        }
        assert!(text.contains(from), "{recipe_name} has no `{from}`");
        text = text.replacen(from, to, 1);
    }
    std::fs::write(dir.path().join("recipe.toml"), text).unwrap();
    (dir, model)
}

/// The arguments of `whittle compress` on the fixture in `dir`, writing `dir/out.whittle`.
pub fn compress_args(dir: &Path, model: &Path, extra: &[&str]) -> Vec<String> {
    let path = |p: &Path| p.display().to_string();
    let mut args: Vec<String> = vec![
        "compress".into(),
        path(model),
        "--recipe".into(),
        path(&dir.join("recipe.toml")),
        "--train".into(),
        path(&dir.join("set.jsonl")),
        "--dev".into(),
        path(&dir.join("set.jsonl")),
        "-o".into(),
        path(&dir.join("out.whittle")),
        "--no-spellings".into(),
    ];
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}
