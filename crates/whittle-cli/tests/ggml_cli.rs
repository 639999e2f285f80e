//! `whittle export --format ggml`: refusals on a tiny random model, and, with the real tiny.en
//! and the whisper.cpp peer (`scripts/setup_peers.sh`), whisper.cpp 1.8.5 running the exported files.

#[path = "../../whittle/tests/common_tiny.rs"]
mod common_tiny;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn whittle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(args)
        .output()
        .expect("run whittle")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn export_refuses_what_whisper_cpp_cannot_load() {
    let dir = tempfile::tempdir().unwrap();
    common_tiny::write_hf(dir.path(), &common_tiny::hf_tensors(2));
    let out = dir.path().join("out.bin");
    // common_tiny's MLP is 2 x d_model; whisper.cpp assumes 4 x d_model.
    let o = whittle(&["export", p(dir.path()), "-o", p(&out)]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("MLP width of 4 x d_model"),
        "{}",
        text(&o.stderr)
    );
    assert!(!out.exists());
    let o = whittle(&[
        "export",
        p(dir.path()),
        "--ggml-type",
        "q3_k",
        "-o",
        p(&out),
    ]);
    assert!(!o.status.success());
    assert!(
        text(&o.stderr).contains("--ggml-type q3_k"),
        "{}",
        text(&o.stderr)
    );
}

/// The real tiny.en and the peer venv, or `None` (skipped with a note) unless
/// `WHITTLE_REQUIRE_PEERS=1`.
fn peer() -> Option<(PathBuf, PathBuf)> {
    let assets = std::env::var_os("WHITTLE_ASSETS")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".assets"));
    let venv = std::env::var_os("WHITTLE_PEERS_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo().join(".venv-peers"));
    let python = venv.join("bin/python");
    if assets.join("models/whisper-tiny.en/model.bin").is_file() && python.is_file() {
        return Some((assets, python));
    }
    if std::env::var("WHITTLE_REQUIRE_PEERS").as_deref() == Ok("1") {
        panic!(
            "whisper.cpp peer or tiny.en missing: run scripts/setup.sh and scripts/setup_peers.sh"
        );
    }
    eprintln!(
        "note: skipping: no whisper.cpp peer venv at {} (scripts/setup_peers.sh)",
        venv.display()
    );
    None
}

fn words(s: &str) -> String {
    s.to_lowercase()
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '\'' {
                c
            } else {
                ' '
            }
        })
        .collect::<String>()
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
}

/// whisper.cpp's transcript of JFK from `model`.
fn whisper_cpp_jfk(python: &Path, assets: &Path, model: &Path, dir: &Path) -> String {
    let manifest = dir.join("jfk.jsonl");
    let audio = assets.join("data/real-15/jfk.wav");
    std::fs::write(
        &manifest,
        serde_json::json!({"id": "jfk", "audio": audio}).to_string(),
    )
    .unwrap();
    let out = dir.join("whispercpp.jsonl");
    let o = Command::new(python)
        .arg(repo().join("scripts/reference/whispercpp_transcribe.py"))
        .args([
            "--model",
            p(model),
            "--manifest",
            p(&manifest),
            "--out",
            p(&out),
        ])
        .args(["--threads", "2"])
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "whisper.cpp failed on {}: {}",
        model.display(),
        text(&o.stderr)
    );
    let line = std::fs::read_to_string(&out).unwrap();
    let row: serde_json::Value = serde_json::from_str(line.trim()).unwrap();
    row["text"].as_str().unwrap().to_string()
}

const JFK: &str = "and so my fellow americans ask not what your country can do for you ask what you can do for your country";

#[test]
fn whisper_cpp_runs_the_f16_export_and_transcribes_jfk_exactly() {
    let Some((assets, python)) = peer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("ggml-tiny.en.bin");
    let o = whittle(&[
        "export",
        p(&assets.join("models/whisper-tiny.en")),
        "--format",
        "ggml",
        "-o",
        p(&model),
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("65 of 65 matrices copied code for code"),
        "{}",
        text(&o.stdout)
    );
    assert_eq!(
        words(&whisper_cpp_jfk(&python, &assets, &model, dir.path())),
        JFK
    );
}

/// Quantizes tiny.en with `quantize_args`, exports it with `--require-exact` (every one of the 65
/// matrices must land in q8_0 code for code), and returns whisper.cpp's JFK transcript after
/// checking that whittle reading the same file transcribes the same words.
fn exact_q8_0_export_transcribes_alike(
    assets: &Path,
    python: &Path,
    dir: &Path,
    quantize_args: &[&str],
) -> String {
    let packed = dir.join("packed.whittle");
    let tiny = assets.join("models/whisper-tiny.en");
    let mut args = vec!["quantize", p(&tiny)];
    args.extend_from_slice(quantize_args);
    args.extend(["-o", p(&packed)]);
    let o = whittle(&args);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let model = dir.join("ggml-model.bin");
    let o = whittle(&["export", p(&packed), "--require-exact", "-o", p(&model)]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(
        text(&o.stdout).contains("matrices q8_0): 65 of 65"),
        "{}",
        text(&o.stdout)
    );
    let cpp = whisper_cpp_jfk(python, assets, &model, dir);
    let o = whittle(&[
        "transcribe",
        p(&model),
        p(&assets.join("data/real-15/jfk.wav")),
        "--no-fallback",
    ]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(words(&cpp), words(&text(&o.stdout)));
    cpp
}

#[test]
fn whisper_cpp_runs_an_exact_q8_0_export_as_whittle_does() {
    let Some((assets, python)) = peer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let cpp = exact_q8_0_export_transcribes_alike(
        &assets,
        &python,
        dir.path(),
        &["--bits", "8", "--embedding-bits", "8", "--group", "32"],
    );
    assert_eq!(words(&cpp), JFK);
}

#[test]
fn whisper_cpp_runs_a_mixed_precision_export_in_one_exact_type() {
    let Some((assets, python)) = peer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let map = dir.path().join("bits.toml");
    // 4, 5, 6 and 8 bits: every matrix fits q8_0 code for code.
    std::fs::write(
        &map,
        "default = { bits = 4, group = 32 }\n[layers]\n\"encoder.layers.*\" = { bits = 5, group = 64 }\n\"decoder.layers.0.*\" = { bits = 8 }\n\"decoder.embed_tokens\" = { bits = 6, group = 32 }\n",
    )
    .unwrap();
    exact_q8_0_export_transcribes_alike(&assets, &python, dir.path(), &["--bit-map", p(&map)]);
}

#[test]
fn whisper_cpp_refuses_a_file_with_two_matrix_types() {
    // whisper.cpp 1.8.5 creates every matrix with the file's one type and checks each stored
    // tensor's size against it, so a per-tensor mix does not load there (whittle reads it).
    let Some((assets, python)) = peer() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let tiny = assets.join("models/whisper-tiny.en");
    let (q5, q8) = (dir.path().join("q5.bin"), dir.path().join("q8.bin"));
    for (ty, path) in [("q5_0", &q5), ("q8_0", &q8)] {
        let o = whittle(&["export", p(&tiny), "--ggml-type", ty, "-o", p(path)]);
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let read = |path: &Path| {
        (
            whittle::models::whisper::ggml::GgmlWhisperFile::read(path).unwrap(),
            std::fs::read(path).unwrap(),
        )
    };
    let ((f5, b5), (f8, b8)) = (read(&q5), read(&q8));
    let span = |info: &whittle::models::whisper::ggml::GgmlTensorInfo| {
        info.header_offset()..info.offset + info.bytes
    };
    let first = span(&f5.tensors[0]).start;
    let mut mixed = b5[..first].to_vec();
    for info in &f5.tensors {
        if info.name == "encoder.blocks.0.mlp.0.weight" {
            mixed.extend_from_slice(&b8[span(f8.tensor(&info.name).unwrap())]);
        } else {
            mixed.extend_from_slice(&b5[span(info)]);
        }
    }
    let model = dir.path().join("mixed.bin");
    std::fs::write(&model, &mixed).unwrap();
    let o = whittle(&[
        "transcribe",
        p(&model),
        p(&assets.join("data/real-15/jfk.wav")),
        "--no-fallback",
    ]);
    assert!(
        o.status.success(),
        "whittle reads per-tensor types: {}",
        text(&o.stderr)
    );
    let manifest = dir.path().join("jfk.jsonl");
    std::fs::write(
        &manifest,
        serde_json::json!({"id": "jfk", "audio": assets.join("data/real-15/jfk.wav")}).to_string(),
    )
    .unwrap();
    let o = Command::new(&python)
        .arg(repo().join("scripts/reference/whispercpp_transcribe.py"))
        .args([
            "--model",
            p(&model),
            "--manifest",
            p(&manifest),
            "--out",
            p(&dir.path().join("o.jsonl")),
        ])
        .output()
        .unwrap();
    assert!(
        !o.status.success(),
        "whisper.cpp loaded a file with two matrix types"
    );
    assert!(
        text(&o.stderr).contains("has wrong size in model file"),
        "{}",
        text(&o.stderr)
    );
}
