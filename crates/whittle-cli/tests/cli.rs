//! The `whittle` binary on a tiny random model: exit codes and messages of bad input, and the
//! quantize -> inspect -> eval path through a `.whittle` file.

#[path = "../../whittle/tests/common_wide.rs"]
mod common_wide;

#[path = "../../whittle/tests/common_assets.rs"]
mod common_assets;

#[path = "../../whittle/tests/common_llama.rs"]
mod common_llama;

use common_wide::common_tiny;

mod common_compress;
use common_compress::{compress_args, compress_fixture};

use std::path::Path;
use std::process::{Command, Output};

fn whittle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(args)
        .output()
        .expect("run whittle")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// An eval output where utterance i (10 words) has `errors[i]` substituted words.
fn write_eval(dir: &Path, errors: &[usize]) {
    write_eval_from(dir, errors, 0);
}

/// Like [`write_eval`], substituting every third word from word `first` on, so that two
/// outputs with different `first` make their errors on different words.
fn write_eval_from(dir: &Path, errors: &[usize], first: usize) {
    std::fs::create_dir_all(dir).unwrap();
    let lines: String = errors
        .iter()
        .enumerate()
        .map(|(i, &e)| {
            let reference: Vec<String> = (0..10).map(|w| format!("w{w}")).collect();
            let mut hypothesis = reference.clone();
            for w in hypothesis.iter_mut().skip(first).step_by(3).take(e) {
                *w = "x".into();
            }
            let row = serde_json::json!({
                "id": format!("u{i}"),
                "reference_normalized": reference.join(" "),
                "hypothesis_normalized": hypothesis.join(" "),
                "words": { "substitutions": e, "deletions": 0, "insertions": 0, "reference_len": 10 },
            });
            format!("{row}\n")
        })
        .collect();
    std::fs::write(dir.join("utterances.jsonl"), lines).unwrap();
}

#[test]
fn eval_compare_reports_significance_and_refuses_unpaired_sets() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c, short) = (
        dir.path().join("a"),
        dir.path().join("b"),
        dir.path().join("c"),
        dir.path().join("short"),
    );
    write_eval(&a, &[0; 30]);
    write_eval(
        &b,
        &[
            1, 2, 1, 3, 2, 1, 2, 1, 1, 2, 3, 1, 2, 1, 1, 2, 1, 3, 2, 1, 1, 2, 1, 1, 2, 3, 1, 2, 1,
            1,
        ],
    );
    write_eval(
        &c,
        &[
            0, 1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
            0,
        ],
    );
    write_eval(&short, &[0; 29]);

    let o = whittle(&["eval", "--compare", p(&a), p(&b), "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["significant_at_05"], true, "{v}");
    assert_eq!(v["test"], "MAPSSWE", "{v}");
    assert!(
        v["mapsswe"]["mean_diff"].as_f64().unwrap() < 0.0,
        "A has fewer errors: {v}"
    );
    assert_eq!(v["verdict"], "worse", "{v}");
    assert!(
        v["difference"]["absolute_points"]["lower"]
            .as_f64()
            .unwrap()
            > 0.0,
        "the CI excludes 0: {v}"
    );
    // A makes no errors, so the relative change is unbounded: null in JSON.
    assert!(
        v["difference"]["relative_percent"]["estimate"].is_null(),
        "{v}"
    );

    let o = whittle(&["eval", "--compare", p(&a), p(&c), "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["significant_at_05"], false,
        "two errors in 300 words: {v}"
    );

    let o = whittle(&["eval", "--compare", p(&a), p(&short)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("same set"), "{}", stderr(&o));
}

#[test]
fn eval_compare_prints_the_interval_the_mde_and_the_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name);
    // The same error rate on different utterances and words: A errs i mod 3 times on
    // utterance i, B (i + 1) mod 3 times.
    let noisy_pair = |name: &str, n: usize| {
        let a: Vec<usize> = (0..n).map(|i| i % 3).collect();
        let b: Vec<usize> = (0..n).map(|i| (i + 1) % 3).collect();
        write_eval_from(&path(&format!("{name}-a")), &a, 0);
        write_eval_from(&path(&format!("{name}-b")), &b, 1);
    };
    noisy_pair("small", 30);
    noisy_pair("large", 3000);
    let json = |a: &str, b: &str, extra: &[&str]| -> serde_json::Value {
        let (a, b) = (path(a), path(b));
        let mut args = vec!["eval", "--compare", p(&a), p(&b), "--json"];
        args.extend(extra);
        let o = whittle(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    };

    // Identical systems: p = 1, a zero interval, equivalent, no MDE (nothing ever differs).
    let v = json("small-a", "small-a", &[]);
    assert_eq!(v["p_value"], 1.0, "{v}");
    assert_eq!(v["verdict"], "equivalent", "{v}");
    for unit in ["absolute_points", "relative_percent"] {
        for bound in ["lower", "upper"] {
            assert_eq!(v["difference"][unit][bound], 0.0, "{unit} {bound}: {v}");
        }
    }
    assert!(v["mde"].is_null(), "{v}");

    // A noisy equal pair: inconclusive on 30 utterances, equivalent on 3,000.
    let v = json("small-a", "small-b", &[]);
    assert_eq!(
        (v["wer_a"].as_f64(), v["wer_b"].as_f64()),
        (Some(0.1), Some(0.1))
    );
    assert!(v["p_value"].as_f64().unwrap() >= 0.05, "{v}");
    assert!(
        v["difference"]["relative_percent"]["upper"]
            .as_f64()
            .unwrap()
            > 10.0,
        "{v}"
    );
    assert_eq!(v["verdict"], "inconclusive", "{v}");
    assert_eq!(v["margin_percent"], 10.0, "{v}");
    assert_eq!(v["difference"]["bootstrap"]["resamples"], 10_000, "{v}");
    let small_mde = v["mde"]["wer_points"].as_f64().unwrap();
    let v = json("large-a", "large-b", &[]);
    assert_eq!(v["verdict"], "equivalent", "{v}");
    assert!(
        v["difference"]["relative_percent"]["upper"]
            .as_f64()
            .unwrap()
            <= 10.0,
        "{v}"
    );
    // 100x the utterances: the MDE shrinks about 10x.
    let large_mde = v["mde"]["wer_points"].as_f64().unwrap();
    assert!(
        (7.0..14.0).contains(&(small_mde / large_mde)),
        "{small_mde} {large_mde}"
    );
    // A margin tighter than the interval turns the same evidence inconclusive.
    let v = json("large-a", "large-b", &["--margin", "2"]);
    assert_eq!(
        (&v["verdict"], &v["margin_percent"]),
        (&"inconclusive".into(), &2.0.into())
    );

    // The seed fixes the interval.
    let seeded = |seed: &str| {
        json(
            "small-a",
            "small-b",
            &["--bootstrap", "500", "--bootstrap-seed", seed],
        )["difference"]
            .clone()
    };
    assert_eq!(seeded("5"), seeded("5"));
    assert_ne!(seeded("5"), seeded("6"));

    // The text output carries the same.
    let o = whittle(&[
        "eval",
        "--compare",
        p(&path("small-a")),
        p(&path("small-b")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    for expected in [
        "30 utterances, 300 words",
        "MAPSSWE: p = 1.0000",
        "B - A: +0.00 WER points (95% CI ",
        "bootstrap over utterances, 10000 resamples, seed 0",
        "minimum detectable difference (80% power, p < 0.05): ",
        "verdict: inconclusive\nInconclusive: ",
        "above the 10% margin",
    ] {
        assert!(text.contains(expected), "`{expected}` not in:\n{text}");
    }
    let o = whittle(&[
        "eval",
        "--compare",
        p(&path("small-a")),
        p(&path("small-b")),
        "--margin=-1",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("margin"), "{}", stderr(&o));
}

#[test]
fn quantize_writes_a_packed_file_that_inspect_and_eval_read() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    common_tiny::write_hf(&model, &common_tiny::hf_tensors(8));
    let out = dir.path().join("tiny-w4.whittle");
    let o = whittle(&[
        "quantize",
        p(&model),
        "--bits",
        "4",
        "--embedding-bits",
        "8",
        "-o",
        p(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = whittle(&["inspect", p(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listing = String::from_utf8_lossy(&o.stdout);
    let line = |tensor: &str| {
        listing
            .lines()
            .find(|l| l.starts_with(tensor))
            .unwrap_or_else(|| panic!("{tensor} not listed:\n{listing}"))
            .to_string()
    };
    assert!(line("model.decoder.layers.0.fc1.weight").contains("sym4"));
    // The tied embedding is packed too, and kept once.
    assert!(line("model.decoder.embed_tokens.weight").contains("sym8"));
    assert_eq!(listing.matches("embed_tokens").count(), 1, "{listing}");

    // A two-utterance manifest of silence, evaluated from the packed file.
    let silence = vec![0u8; 2 * 16_000];
    std::fs::write(dir.path().join("a.raw"), &silence).unwrap();
    std::fs::write(dir.path().join("b.raw"), &silence).unwrap();
    std::fs::write(
        dir.path().join("set.jsonl"),
        "{\"audio\":\"a.raw\",\"text\":\"x\"}\n{\"audio\":\"b.raw\",\"text\":\"y\"}\n",
    )
    .unwrap();
    let eval_dir = dir.path().join("eval");
    let o = whittle(&[
        "eval",
        p(&out),
        p(&dir.path().join("set.jsonl")),
        "--out",
        p(&eval_dir),
        "--no-spellings",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(eval_dir.join("summary.json")).unwrap()).unwrap();
    assert_eq!(summary["totals"]["utterances"], 2);
}

#[test]
fn bad_quantize_options_fail_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    common_tiny::write_hf(&model, &common_tiny::hf_tensors(9));
    let out = dir.path().join("x.whittle");
    let bad_map = dir.path().join("bits.toml");
    std::fs::write(&bad_map, "default = { bits = 4, grup = 64 }\n").unwrap();
    let cases: [(&[&str], &str); 6] = [
        (&["--bit-map", p(&bad_map)], "unknown field `grup`"),
        (&["--embedding-bits", "8"], "--bits"),
        (
            &["--bits", "4", "--embedding-bits", "1"],
            "--embedding-bits 1",
        ),
        (&["--bits", "4", "--method", "gptq"], "--calib"),
        (&["--bits", "9"], "2..=8"),
        (&["--bits", "4", "--group", "48"], "--group 48"),
    ];
    for (extra, message) in cases {
        let mut args = vec!["quantize", p(&model), "-o", p(&out)];
        args.extend_from_slice(extra);
        let o = whittle(&args);
        assert!(!o.status.success(), "{extra:?} succeeded");
        assert!(stderr(&o).contains(message), "{extra:?}: {}", stderr(&o));
        assert!(!out.exists(), "{extra:?} left an output file");
    }
}

#[test]
fn transcribe_writes_subtitles_per_input_and_refuses_ambiguous_output() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    common_tiny::write_hf(&model, &common_tiny::hf_tensors(11));
    // Two seconds of a chirp, 16 kHz s16le, in two folders under the same name.
    let chirp: Vec<u8> = (0..32_000)
        .flat_map(|i| {
            let t = i as f32 / 16_000.0;
            (((t * t * 900.0).sin() * 8000.0) as i16).to_le_bytes()
        })
        .collect();
    for sub in ["x", "y"] {
        std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        std::fs::write(dir.path().join(sub).join("a.raw"), &chirp).unwrap();
    }
    std::fs::write(dir.path().join("b.raw"), &chirp).unwrap();
    let a = dir.path().join("x/a.raw");
    let b = dir.path().join("b.raw");
    let transcribe = |extra: &[&str]| {
        let mut args = vec!["transcribe", p(&model), p(&a), p(&b)];
        args.extend_from_slice(extra);
        whittle(&args)
    };

    let o = transcribe(&["--format", "srt"]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("--output-dir"), "{}", stderr(&o));
    assert!(o.stdout.is_empty(), "nothing decoded before the refusal");

    let subs = dir.path().join("subs");
    let o = transcribe(&["--format", "srt", "--output-dir", p(&subs), "--no-fallback"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for name in ["a.srt", "b.srt"] {
        let text = std::fs::read_to_string(subs.join(name)).unwrap();
        assert!(
            text.is_empty() || text.starts_with("1\n00:00:"),
            "{name}: {text:?}"
        );
    }

    let o = transcribe(&["--format", "json", "--seed", "3"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert!(lines[1]["segments"].is_array() && lines[1]["audio"] == p(&b));

    let same_stem = dir.path().join("y/a.raw");
    let o = whittle(&[
        "transcribe",
        p(&model),
        p(&a),
        p(&same_stem),
        "--output-dir",
        p(&subs),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("would both write"), "{}", stderr(&o));
}

/// A tiny model and a folder for eval manifests.
fn eval_fixture() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    common_tiny::write_hf(&model, &common_tiny::hf_tensors(12));
    (dir, model)
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

/// `whittle eval MODEL MANIFEST --out OUT --no-spellings EXTRA...`
fn eval_run(model: &Path, manifest: &Path, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "eval",
        p(model),
        p(manifest),
        "--out",
        p(out),
        "--no-spellings",
    ];
    args.extend_from_slice(extra);
    whittle(&args)
}

/// One field of every line of an eval's utterances.jsonl.
fn column(out: &Path, field: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(out.join("utterances.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()[field].clone())
        .collect()
}

/// A corrupt file and an empty file among good clips: the good ones are scored and written, the
/// bad ones are listed in summary.json with their reasons (not in utterances.jsonl), and the exit
/// status says the run had failures. `--strict` stops at the first one and writes nothing.
#[test]
fn eval_records_unreadable_clips_and_fails_at_the_end() {
    let (dir, model) = eval_fixture();
    let tone: Vec<u8> = (0..16_000i32)
        .flat_map(|i| (((i % 37) * 400 - 7000) as i16).to_le_bytes())
        .collect();
    std::fs::write(dir.path().join("good.raw"), &tone).unwrap();
    std::fs::write(dir.path().join("good2.raw"), &tone[..20_000]).unwrap();
    std::fs::write(
        dir.path().join("corrupt.wav"),
        b"RIFF\x10\x00\x00\x00WAVEjunkjunk",
    )
    .unwrap();
    std::fs::write(dir.path().join("empty.flac"), b"").unwrap();
    let manifest = dir.path().join("set.jsonl");
    std::fs::write(
        &manifest,
        "{\"audio\":\"good.raw\",\"text\":\"w1\"}\n{\"audio\":\"corrupt.wav\",\"text\":\"w2\"}\n\
         {\"audio\":\"empty.flac\",\"text\":\"w3\"}\n{\"audio\":\"good2.raw\",\"text\":\"w4\"}\n",
    )
    .unwrap();
    for batch in ["1", "3"] {
        let out = dir.path().join(format!("eval{batch}"));
        let o = eval_run(&model, &manifest, &out, &["--batch-size", batch]);
        assert!(!o.status.success(), "a run with failed clips exited 0");
        assert!(stderr(&o).contains("2 of 4 clips failed"), "{}", stderr(&o));
        let summary = read_json(&out.join("summary.json"));
        assert_eq!(summary["totals"]["utterances"], 2);
        assert_eq!(summary["failed"], 2);
        let failures = summary["failures"].as_array().unwrap();
        let reason = |id: &str| {
            failures
                .iter()
                .find(|f| f["id"] == id)
                .unwrap_or_else(|| panic!("{id} not listed: {failures:?}"))["reason"]
                .as_str()
                .unwrap()
                .to_string()
        };
        assert!(reason("corrupt").contains("corrupt.wav"), "{failures:?}");
        assert!(reason("empty").contains("no samples"), "{failures:?}");
        assert_eq!(column(&out, "id"), ["good", "good2"]);
    }
    // Batched and one-at-a-time transcripts agree.
    assert_eq!(
        column(&dir.path().join("eval1"), "hypothesis"),
        column(&dir.path().join("eval3"), "hypothesis")
    );

    let strict = dir.path().join("strict");
    let o = eval_run(&model, &manifest, &strict, &["--strict"]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("corrupt.wav") && !stderr(&o).contains("empty.flac"),
        "--strict did not stop at the first failure: {}",
        stderr(&o)
    );
    assert!(!strict.exists(), "--strict wrote outputs");
}

/// A clip over `--max-audio-seconds` (alias `--max-duration`) is a failure with the cap in its reason; under it, it is scored.
#[test]
fn eval_duration_cap_fails_long_clips() {
    let (dir, model) = eval_fixture();
    // 1.5 s of a 16-bit PCM WAV tone.
    let samples: Vec<i16> = (0..24_000)
        .map(|i| ((i % 50) * 300 - 7500) as i16)
        .collect();
    let mut wav = Vec::new();
    let data_len = (samples.len() * 2) as u32;
    for chunk in [
        &b"RIFF"[..],
        &(36 + data_len).to_le_bytes(),
        b"WAVEfmt ",
        &16u32.to_le_bytes(),
        &1u16.to_le_bytes(),
        &1u16.to_le_bytes(),
        &16_000u32.to_le_bytes(),
        &32_000u32.to_le_bytes(),
        &2u16.to_le_bytes(),
        &16u16.to_le_bytes(),
        b"data",
        &data_len.to_le_bytes(),
    ] {
        wav.extend_from_slice(chunk);
    }
    wav.extend(samples.iter().flat_map(|s| s.to_le_bytes()));
    std::fs::write(dir.path().join("long.wav"), &wav).unwrap();
    let manifest = dir.path().join("set.jsonl");
    std::fs::write(&manifest, "{\"audio\":\"long.wav\",\"text\":\"w1\"}\n").unwrap();
    let run = |cap: &str| {
        let out = dir.path().join(format!("cap{cap}"));
        let flag = if cap == "1" {
            "--max-audio-seconds"
        } else {
            "--max-duration"
        };
        let o = eval_run(&model, &manifest, &out, &[flag, cap]);
        (o, read_json(&out.join("summary.json")))
    };
    let (o, summary) = run("1");
    assert!(!o.status.success());
    assert_eq!(summary["totals"]["utterances"], 0);
    let reason = summary["failures"][0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("lasts 1.5 s, over the 1 s limit"),
        "{reason}"
    );
    let (o, summary) = run("2");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(summary["failed"], 0);
    assert_eq!(summary["totals"]["utterances"], 1);
}

/// eval refuses a manifest line without a transcript before loading the model, naming the file
/// and line; transcribe-only datasets stay valid elsewhere (data.rs tests).
#[test]
fn eval_refuses_a_manifest_line_without_text() {
    let (dir, model) = eval_fixture();
    std::fs::write(dir.path().join("a.raw"), vec![0u8; 3200]).unwrap();
    let manifest = dir.path().join("set.jsonl");
    std::fs::write(
        &manifest,
        "{\"audio\":\"a.raw\",\"text\":\"w1\"}\n{\"id\":\"b\",\"audio\":\"a.raw\"}\n",
    )
    .unwrap();
    let out = dir.path().join("out");
    let o = eval_run(&model, &manifest, &out, &[]);
    assert!(!o.status.success());
    let err = stderr(&o);
    assert!(
        err.contains("set.jsonl") && err.contains("line 2") && err.contains("no transcript"),
        "{err}"
    );
    assert!(!out.exists());
}

fn compress_run(dir: &Path, model: &Path, extra: &[&str]) -> Output {
    let args = compress_args(dir, model, extra);
    whittle(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

/// Packed formats listed by `whittle inspect` (`symN` per tensor line).
fn inspected_formats(file: &Path) -> std::collections::BTreeMap<String, String> {
    let o = whittle(&["inspect", p(file)]);
    assert!(o.status.success(), "{}", stderr(&o));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| {
            let name = l.split_whitespace().next()?;
            let format = l.split_whitespace().find(|w| w.starts_with("sym"))?;
            Some((name.to_string(), format.to_string()))
        })
        .collect()
}

/// The shipped one-stage mixed-precision recipe writes a file with more than one bit width, and
/// records the achieved size and the recipe in its header.
#[test]
fn compress_mixed_precision_writes_several_bit_widths() {
    // The 16-wide rows pad to 32-weight blocks: the candidates store 5 to 17 bits per weight.
    let (dir, model) = compress_fixture(
        "mp-onestage.toml",
        &[("budget_bits = 3.5\n", "budget_bits = 9.0\n")],
    );
    let o = compress_run(dir.path(), &model, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let formats = inspected_formats(&dir.path().join("out.whittle"));
    let widths: std::collections::BTreeSet<_> = formats.values().collect();
    assert!(widths.len() > 1, "one width only: {formats:?}");
    assert!(
        formats.contains_key("model.decoder.embed_tokens.weight"),
        "{formats:?}"
    );
    // The formats written beside the file are a bit map that reproduces them.
    let again = dir.path().join("again.whittle");
    let map = dir.path().join("out.bitmap.toml");
    let o = whittle(&["quantize", p(&model), "--bit-map", p(&map), "-o", p(&again)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(inspected_formats(&again), formats);
    let file = whittle::packed_file::PackedFile::open(&dir.path().join("out.whittle")).unwrap();
    let text = serde_json::to_string(file.header_fields()).unwrap();
    assert!(text.contains("\"method\":\"mixed-precision\""), "{text}");
    assert!(text.contains("achieved_bits"), "{text}");
}

/// Stage B of the two-stage baseline: `--bit-map` trains that map with uniform LSQ, the token
/// embedding included when the map names it.
#[test]
fn compress_trains_a_bit_map_given_on_the_command_line() {
    let (dir, model) = compress_fixture("mp-twostage.toml", &[]);
    let map = dir.path().join("map.toml");
    std::fs::write(
        &map,
        "default = { bits = 3 }\n[layers]\n\"model.decoder.embed_tokens\" = { bits = 8 }\n\"decoder.layers.*.fc1\" = { bits = 6 }\n",
    )
    .unwrap();
    let o = compress_run(dir.path(), &model, &["--bit-map", p(&map)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let formats = inspected_formats(&dir.path().join("out.whittle"));
    assert_eq!(
        formats["model.decoder.embed_tokens.weight"], "sym8",
        "{formats:?}"
    );
    assert_eq!(
        formats["model.decoder.layers.1.fc1.weight"], "sym6",
        "{formats:?}"
    );
    assert_eq!(
        formats["model.encoder.layers.0.fc2.weight"], "sym3",
        "{formats:?}"
    );
    // Without --bit-map the recipe's own `bit_map = "bitmap.toml"` is missing: a clear error.
    let o = compress_run(
        dir.path(),
        &model,
        &["--work-dir", p(&dir.path().join("w2"))],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bitmap.toml"), "{}", stderr(&o));

    // The benchmark times that map's step beside the uniform one (timing the two-stage
    // baseline's stage B); the map also trains the embedding, so more values train.
    let o = whittle(&[
        "bench",
        "train-step",
        p(&model),
        "--bit-map",
        p(&map),
        "--batch",
        "2",
        "--seconds",
        "1",
        "--tokens",
        "3",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let report: serde_json::Value = serde_json::from_str(&stdout(&o)).unwrap();
    let mapped = &report["bit_map"];
    assert!(
        mapped["time_vs_uniform"].as_f64().unwrap() > 0.0,
        "{report}"
    );
    assert!(
        mapped["trainable_params"].as_u64() > report["trainable_params"].as_u64(),
        "{report}"
    );
}

/// sensitivity -> allocate -> quantize --bit-map on a tiny model: the packed file holds several
/// bit widths; bad options fail naming what is wrong, without output.
#[test]
fn sensitivity_then_allocate_then_quantize() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    common_wide::write_wide_hf(&model, 31);
    let data = common_wide::write_clips(&dir.path().join("clips"), 3);
    let sens = dir.path().join("sens.json");
    let o = whittle(&[
        "sensitivity",
        p(&model),
        "--data",
        p(&data),
        "--metric",
        "kl",
        "--candidates",
        "8,2,4",
        "-o",
        p(&sens),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        dir.path().join("sens.labels.jsonl").is_file(),
        "pseudo-labels kept"
    );
    let json = read_json(&sens);
    assert_eq!(json["metric"], "kl");
    assert_eq!(json["candidates"], serde_json::json!([2, 4, 8]));
    assert_eq!(json["utterances"], 3);
    let layers = json["layers"].as_array().unwrap();
    // 2 encoder blocks x 6 + 2 decoder blocks x 10 matrices + the embedding.
    assert_eq!(layers.len(), 33);
    assert_eq!(layers[32]["name"], "model.decoder.embed_tokens");

    let map = dir.path().join("bits.toml");
    let o = whittle(&["allocate", p(&sens), "--budget-bits", "3.5", "-o", p(&map)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let stdout = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(stdout.contains("achieved"), "{stdout}");
    let out = dir.path().join("mp.whittle");
    let o = whittle(&["quantize", p(&model), "--bit-map", p(&map), "-o", p(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = whittle(&["inspect", p(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listing = String::from_utf8_lossy(&o.stdout).into_owned();
    let widths: std::collections::BTreeSet<&str> = ["sym2", "sym4", "sym8"]
        .into_iter()
        .filter(|w| listing.contains(w))
        .collect();
    assert!(widths.len() > 1, "one width only: {widths:?}\n{listing}");
    assert!(listing
        .lines()
        .any(|l| l.starts_with("model.decoder.embed_tokens") && l.contains("sym")));

    let bad = dir.path().join("bad.json");
    let cases: [(&[&str], &str); 3] = [
        (&["--metric", "hessian", "--step", "2"], "--step"),
        (&["--metric", "kl", "--candidates", "2,9"], "2..=8"),
        (
            &["--metric", "kl", "--group", "128"],
            "model.encoder.layers.0.self_attn.q_proj",
        ),
    ];
    for (extra, message) in cases {
        let mut args = vec!["sensitivity", p(&model), "--data", p(&data), "-o", p(&bad)];
        args.extend_from_slice(extra);
        let o = whittle(&args);
        assert!(!o.status.success(), "{extra:?} succeeded");
        assert!(stderr(&o).contains(message), "{extra:?}: {}", stderr(&o));
        assert!(!bad.exists(), "{extra:?} left an output file");
        assert!(
            !dir.path().join("bad.labels.jsonl").exists(),
            "{extra:?} decoded first"
        );
    }
    // The Hessian metric writes the trace, the perturbation and Ω, and allocates from Ω.
    let hessian = dir.path().join("hessian.json");
    let o = whittle(&[
        "sensitivity",
        p(&model),
        "--data",
        p(&data),
        "--metric",
        "hessian",
        "--probes",
        "3",
        "--candidates",
        "2,4,8",
        "--labels",
        p(&dir.path().join("sens.labels.jsonl")),
        "-o",
        p(&hessian),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let json = read_json(&hessian);
    assert_eq!(json["metric"], "hessian");
    assert_eq!(json["hessian"]["probes"], 3);
    assert_eq!(
        json["hessian"]["hessian_vector_products"],
        "central finite differences of gradients"
    );
    let first = &json["layers"][0];
    assert!(first["hessian_trace"].is_f64() && first["hessian_trace_per_weight"].is_f64());
    assert!(first["candidates"][0]["hessian"].is_f64());
    let o = whittle(&[
        "allocate",
        p(&hessian),
        "--budget-bits",
        "4.5",
        "-o",
        p(&map),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    let bad_map = dir.path().join("bad.toml");
    let o = whittle(&[
        "allocate",
        p(&sens),
        "--budget-bits",
        "2",
        "-o",
        p(&bad_map),
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("minimum achievable budget is 2.25 bits"),
        "{}",
        stderr(&o)
    );
    assert!(!bad_map.exists());
}

/// Issue 17: `--resume` refuses a run started on other training data, and a pseudo-label cache
/// made by another model is refused; `--force` overrides. The recipe is checked against the
/// model before any labelling.
#[test]
fn compress_refuses_to_mix_up_runs() {
    let (dir, model) = compress_fixture("mp-twostage.toml", &[]);
    let map = dir.path().join("map.toml");
    std::fs::write(&map, "default = { bits = 4 }\n").unwrap();
    let o = compress_run(dir.path(), &model, &["--bit-map", p(&map)]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Other training data: one transcript changed.
    let set = std::fs::read_to_string(dir.path().join("set.jsonl")).unwrap();
    let other = dir.path().join("other.jsonl");
    std::fs::write(&other, set.replacen("w0", "changed", 1)).unwrap();
    let resume = |extra: &[&str]| {
        let (recipe, out) = (
            dir.path().join("recipe.toml"),
            dir.path().join("out.whittle"),
        );
        let dev = dir.path().join("set.jsonl");
        let mut args = vec![
            "compress",
            p(&model),
            "--recipe",
            p(&recipe),
            "--train",
            p(&other),
            "--dev",
            p(&dev),
            "-o",
            p(&out),
            "--no-spellings",
            "--bit-map",
            p(&map),
            "--resume",
        ];
        args.extend_from_slice(extra);
        whittle(&args)
    };
    let o = resume(&[]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("another training data"),
        "{}",
        stderr(&o)
    );
    let o = resume(&["--force"]);
    assert!(o.status.success(), "{}", stderr(&o));

    // The pseudo-label cache of this run, offered to a run of another model.
    let other_model = dir.path().join("model2");
    common_tiny::write_hf(&other_model, &common_tiny::hf_tensors(22));
    let cache = dir.path().join("out.work/pseudo-labels.jsonl");
    assert!(cache.is_file());
    let o = whittle(&[
        "compress",
        p(&other_model),
        "--recipe",
        p(&dir.path().join("recipe.toml")),
        "--train",
        p(&dir.path().join("set.jsonl")),
        "--dev",
        p(&dir.path().join("set.jsonl")),
        "-o",
        p(&dir.path().join("b.whittle")),
        "--no-spellings",
        "--bit-map",
        p(&map),
        "--pseudo-labels",
        p(&cache),
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("another model"), "{}", stderr(&o));

    // A bit map the model cannot take is refused before labelling (no cache is written).
    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        "default = { bits = 4 }\n[layers]\n\"encoder.layers.9.fc1\" = { bits = 3 }\n",
    )
    .unwrap();
    let fresh = dir.path().join("fresh.work");
    let o = compress_run(
        dir.path(),
        &model,
        &["--bit-map", p(&bad), "--work-dir", p(&fresh)],
    );
    assert!(!o.status.success());
    assert!(stderr(&o).contains("does not fit"), "{}", stderr(&o));
    assert!(!fresh.join("pseudo-labels.jsonl").exists());
}

/// `whittle prune` writes a physically smaller float file that inspect describes, `quantize`
/// packs and `eval` reads; a packed input is refused.
#[test]
fn prune_then_quantize_then_eval() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    std::fs::create_dir_all(&model).unwrap();
    common_tiny::write_hf(&model, &common_tiny::hf_tensors(8));
    let pruned = dir.path().join("pruned.whittle");
    let keep = dir.path().join("keep.json");
    let o = whittle(&[
        "prune",
        p(&model),
        "--magnitude",
        "0.5",
        "--keep-out",
        p(&keep),
        "-o",
        p(&pruned),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains("removed"));
    let o = whittle(&["inspect", p(&pruned)]);
    let listing = String::from_utf8_lossy(&o.stdout).to_string();
    // 2 heads -> 1, FFN 32 -> 16 in every layer.
    assert!(
        listing.contains("encoder 1/16 1/16; decoder 1+1/16 1+1/16"),
        "{listing}"
    );
    let fc1 = listing
        .lines()
        .find(|l| l.starts_with("model.encoder.layers.0.fc1.weight"))
        .unwrap();
    assert!(fc1.contains("[16, 16]"), "{fc1}");

    // The keep list it wrote reproduces the file's shapes.
    let again = dir.path().join("again.whittle");
    let o = whittle(&["prune", p(&model), "--keep", p(&keep), "-o", p(&again)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let tensors = |f: &Path| {
        let o = whittle(&["inspect", p(f)]);
        String::from_utf8_lossy(&o.stdout)
            .lines()
            .skip(1)
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(tensors(&again), tensors(&pruned));

    let packed = dir.path().join("pruned-w8.whittle");
    let o = whittle(&["quantize", p(&pruned), "--bits", "8", "-o", p(&packed)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = whittle(&["inspect", p(&packed)]);
    let listing = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(listing.contains("pruned "), "{listing}");
    assert!(listing.contains("sym8"), "{listing}");

    let silence = vec![0u8; 2 * 16_000];
    std::fs::write(dir.path().join("a.raw"), &silence).unwrap();
    std::fs::write(
        dir.path().join("set.jsonl"),
        "{\"audio\":\"a.raw\",\"text\":\"x\"}\n",
    )
    .unwrap();
    let o = whittle(&[
        "eval",
        p(&packed),
        p(&dir.path().join("set.jsonl")),
        "--out",
        p(&dir.path().join("eval")),
        "--no-spellings",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));

    // The figure of the surviving units; an unpruned file is refused.
    let figures = dir.path().join("figures");
    let o = whittle(&["report", "shapes", p(&pruned), "-o", p(&figures)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let svg = std::fs::read_to_string(figures.join("pruned.shapes.svg")).unwrap();
    assert!(svg.contains("FFN units"), "{svg}");
    assert!(figures.join("pruned.shapes.png").is_file());
    let unpruned = dir.path().join("w8.whittle");
    let o = whittle(&["quantize", p(&model), "--bits", "8", "-o", p(&unpruned)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = whittle(&["report", "shapes", p(&unpruned), "-o", p(&figures)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("not a pruned model"), "{}", stderr(&o));

    // The window benchmark times both on the same work, with ratios to the first.
    let o = whittle(&[
        "bench",
        "window",
        p(&model),
        p(&pruned),
        "--runs",
        "1",
        "--warmup",
        "0",
        "--tokens",
        "3",
        "--json",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let rows: Vec<serde_json::Value> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["total_ratio"], 1.0);
    assert!(rows[1]["parameters"].as_u64() < rows[0]["parameters"].as_u64());

    // Packed inputs cannot be sliced; a bad sparsity is refused.
    let o = whittle(&["prune", p(&packed), "--magnitude", "0.5", "-o", p(&again)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("quantized matrices"), "{}", stderr(&o));
    let o = whittle(&["prune", p(&model), "--magnitude", "1.5", "-o", p(&again)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("sparsity"), "{}", stderr(&o));
}

/// The shipped L0 recipe, shortened, writes a physically smaller model of the tiny Whisper.
#[test]
fn compress_prune_l0_writes_a_smaller_model() {
    let (dir, model) = compress_fixture(
        "prune-l0.toml",
        &[
            ("steps = 6\n", "steps = 40\n"),
            ("lr_gates = 0.1\n", "lr_gates = 0.2\n"),
            ("init_log_alpha = 3.0\n", "init_log_alpha = 1.0\n"),
            ("at = \"encoder.1\"", "at = \"encoder.0\""),
        ],
    );
    let o = compress_run(dir.path(), &model, &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let printed = String::from_utf8_lossy(&o.stdout).to_string();
    assert!(
        printed.contains("float weights") && printed.contains("removed"),
        "{printed}"
    );
    let file = whittle::packed_file::PackedFile::open(&dir.path().join("out.whittle")).unwrap();
    let config = file
        .header_field(whittle::packed_file::keys::CONFIG)
        .unwrap();
    assert!(config.get("layer_shapes").is_some(), "{config}");
    let pruned: usize = file
        .summaries()
        .iter()
        .map(|s| s.shape.iter().product::<usize>())
        .sum();
    let full: usize = common_tiny::hf_tensors(21)
        .values()
        .map(|t| t.elem_count())
        .sum();
    assert!(pruned < full, "{pruned} parameters, {full} before");
}

/// `whittle perplexity` scores every transcript token plus end-of-text, prints the perplexity
/// and writes per-utterance scores; the same run at another batch size agrees.
#[test]
fn perplexity_scores_the_transcripts() {
    let (dir, model) = eval_fixture();
    let tone: Vec<u8> = (0..16_000i32)
        .flat_map(|i| (((i % 37) * 400 - 7000) as i16).to_le_bytes())
        .collect();
    std::fs::write(dir.path().join("a.raw"), &tone).unwrap();
    std::fs::write(dir.path().join("b.raw"), &tone[..12_000]).unwrap();
    let manifest = dir.path().join("set.jsonl");
    std::fs::write(
        &manifest,
        "{\"audio\":\"a.raw\",\"text\":\"w1 w2 w3\"}\n{\"audio\":\"b.raw\",\"text\":\"w4\"}\n",
    )
    .unwrap();
    let mut totals = Vec::new();
    for batch in ["1", "2"] {
        let out = dir.path().join(format!("ppl{batch}.json"));
        let o = whittle(&[
            "perplexity",
            p(&model),
            p(&manifest),
            "--batch-size",
            batch,
            "-o",
            p(&out),
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert!(
            stdout(&o).contains("2 texts, 6 tokens: perplexity"),
            "{}",
            stdout(&o)
        );
        let report = read_json(&out);
        assert_eq!(report["tokens"], 6);
        assert_eq!(report["texts"][0]["tokens"], 4);
        assert_eq!(report["texts"][1]["tokens"], 2);
        totals.push(report["nll"].as_f64().unwrap());
    }
    assert!(
        (totals[0] - totals[1]).abs() < 1e-4 * totals[0],
        "{totals:?}"
    );
    let o = whittle(&["perplexity", p(&model), p(&manifest), "-o", "x.txt"]);
    assert!(!o.status.success() && stderr(&o).contains("must end in .json"));
}

/// `whittle corpus texts` writes each manifest line's written sentence (case and punctuation)
/// from its `source`, and names a source that is not in the text.
#[test]
fn corpus_texts_recovers_the_written_sentences() {
    let austen = Path::new("/usr/lib/R/site-library/janeaustenr/data");
    if !austen.join("Rdata.rdx").is_file() {
        assert!(
            std::env::var("WHITTLE_REQUIRE_ASSETS").as_deref() != Ok("1"),
            "janeaustenr missing: run scripts/setup.sh"
        );
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("corpus.json"),
        r#"{"config": {"text": "austen:emma", "duration_s": [2.0, 20.0]}}"#,
    )
    .unwrap();
    let manifest = dir.path().join("manifest.jsonl");
    std::fs::write(
        &manifest,
        "{\"id\":\"a\",\"source\":\"emma/1/1/1\",\"text\":\"EMMA WOODHOUSE\"}\n",
    )
    .unwrap();
    let out = dir.path().join("texts.txt");
    let o = whittle(&["corpus", "texts", p(&manifest), "-o", p(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = std::fs::read_to_string(&out).unwrap();
    assert!(
        text.starts_with("Emma Woodhouse, handsome, clever, and rich"),
        "{text}"
    );
    assert_eq!(text.lines().count(), 1);
    std::fs::write(
        &manifest,
        "{\"id\":\"a\",\"source\":\"emma/99/1/1\",\"text\":\"X\"}\n",
    )
    .unwrap();
    let o = whittle(&["corpus", "texts", p(&manifest), "-o", p(&out)]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("source `emma/99/1/1`"),
        "{}",
        stderr(&o)
    );
}

/// `whittle inspect` of a GGUF language model prints its configuration, tokenizer and tensors.
#[test]
fn inspect_describes_a_gguf_language_model() {
    let Some(root) = common_assets::assets() else {
        return;
    };
    let Some(path) = common_assets::smollm2(&root) else {
        return;
    };
    let o = whittle(&["inspect", p(&path)]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("272 tensors, architecture llama"), "{out}");
    assert!(
        out.contains("30 layers, d 576, FFN 1536, 9 query / 3 key-value heads, vocab 49152"),
        "{out}"
    );
    assert!(out
        .lines()
        .any(|l| l.starts_with("token_embd.weight") && l.contains("q8_0")));
}

/// `whittle rescore` on hand-written N-best lists with the tiny random GGUF LM: weight 0 keeps
/// the first hypothesis everywhere; `--tune` picks a weight from dev lists and writes `eval`'s
/// outputs; `whittle perplexity` scores the same LM on a text file, quantized or not.
#[test]
fn rescore_reranks_n_best_lists_with_a_gguf_lm() {
    let dir = tempfile::tempdir().unwrap();
    let lm = dir.path().join("tiny.gguf");
    std::fs::write(&lm, common_llama::tiny_gguf(|w| w)).unwrap();
    let list = |id: &str, reference: &str, hyps: &[(&str, f64)]| {
        let hypotheses: Vec<_> = hyps
            .iter()
            .map(|(t, lp)| serde_json::json!({"text": t, "tokens": 3, "sum_logprob": lp}))
            .collect();
        serde_json::json!({"id": id, "audio": format!("{id}.wav"), "reference": reference,
            "audio_seconds": 1.0, "hypotheses": hypotheses})
        .to_string()
    };
    let lists = dir.path().join("lists.jsonl");
    std::fs::write(
        &lists,
        [
            list("u1", "ab ab", &[("ab ab", -1.0), ("ab c", -1.1)]),
            list("u2", "b c a", &[("b c c", -0.5), ("b c a", -0.6)]),
        ]
        .join("\n"),
    )
    .unwrap();
    let beam = dir.path().join("beam");
    let o = whittle(&[
        "rescore",
        p(&lists),
        "--lm",
        p(&lm),
        "--weight",
        "0",
        "--out",
        p(&beam),
        "--no-spellings",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(column(&beam, "hypothesis"), ["ab ab", "b c c"]);
    let tuned = dir.path().join("tuned");
    let o = whittle(&[
        "rescore",
        p(&lists),
        "--lm",
        p(&lm),
        "--tune",
        p(&lists),
        "--out",
        p(&tuned),
        "--no-spellings",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("dev: LM weight"), "{}", stdout(&o));
    let summary = read_json(&tuned.join("summary.json"));
    assert!(summary["weight"].as_f64().unwrap() >= 0.0);
    assert_eq!(summary["totals"]["utterances"], 2);
    // Tuned on these very lists, it is never worse than weight 0 on them.
    assert!(summary["wer"].as_f64().unwrap() <= summary["wer_without_lm"].as_f64().unwrap());
    assert_eq!(column(&tuned, "id"), ["u1", "u2"]);
    let o = whittle(&["rescore", p(&lists), "--lm", p(&lm), "--out", p(&tuned)]);
    assert!(
        !o.status.success() && stderr(&o).contains("--weight W or --tune"),
        "{}",
        stderr(&o)
    );

    let texts = dir.path().join("texts.txt");
    std::fs::write(&texts, "ab ab 12.\n\nb c a\n").unwrap();
    let o = whittle(&["perplexity", p(&lm), p(&texts)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("2 texts"), "{}", stdout(&o));
    let o = whittle(&[
        "perplexity",
        p(&lm),
        p(&texts),
        "--bits",
        "8",
        "--group",
        "32",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("smaller than fp32"), "{}", stdout(&o));
    let o = whittle(&[
        "perplexity",
        p(&lm),
        p(&texts),
        "--bits",
        "4",
        "--method",
        "gptq",
    ]);
    assert!(
        !o.status.success() && stderr(&o).contains("gptq"),
        "{}",
        stderr(&o)
    );
}

/// `whittle rescore` of a one-utterance N-best list in `dir` with the language model `lm`, which
/// must succeed and score the utterance.
fn rescore_one_list(lm: &Path, dir: &Path) {
    let lists = dir.join("lists.jsonl");
    let hyps = serde_json::json!([{"text": "ab a", "tokens": 2, "sum_logprob": -1.0},
        {"text": "c c", "tokens": 2, "sum_logprob": -1.2}]);
    std::fs::write(
        &lists,
        serde_json::json!({"id": "u1", "audio": "u1.wav", "reference": "ab a",
            "audio_seconds": 1.0, "hypotheses": hyps})
        .to_string(),
    )
    .unwrap();
    let rescored = dir.join("rescored");
    let o = whittle(&[
        "rescore",
        p(&lists),
        "--lm",
        p(lm),
        "--weight",
        "0.5",
        "--out",
        p(&rescored),
        "--no-spellings",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        read_json(&rescored.join("summary.json"))["totals"]["utterances"],
        1
    );
}

/// `whittle compress` of a GGUF language model on text files: LSQ of a bit map that names the
/// token embedding, selected on dev perplexity, written as a `.whittle` file of architecture
/// `llama` that `perplexity`, `rescore` and `inspect` read; `sensitivity --metric hessian`
/// measures the LM; pseudo-label targets are refused.
#[test]
fn compress_trains_a_gguf_language_model_on_texts() {
    let dir = tempfile::tempdir().unwrap();
    let lm = dir.path().join("tiny.gguf");
    std::fs::write(&lm, common_llama::tiny_gguf(|w| w)).unwrap();
    let train = dir.path().join("train.txt");
    std::fs::write(
        &train,
        "ab a b c.\na ab 12 c b.\nc c ab a.\nb a 1 2 ab ab.\n",
    )
    .unwrap();
    let dev = dir.path().join("dev.txt");
    std::fs::write(&dev, "a b ab c.\nc 1 ab.\n").unwrap();
    let map = dir.path().join("map.toml");
    std::fs::write(
        &map,
        "[layers]\n\"token_embd\" = { bits = 8, group = 32 }\n\"blk.*\" = { bits = 4, group = 32 }\n",
    )
    .unwrap();
    let recipe = |targets: &str| {
        format!(
            "name = \"lm\"\nmethod = \"uniform-lsq\"\n[quant]\nbit_map = \"map.toml\"\n\
             [loss]\nkl = 1.0\ntemperature = 1.0\nce = 0.0\ntargets = \"{targets}\"\n\
             [optim]\nlr_weights = 1e-3\nlr_scales = 1e-3\nweight_decay = 0.0\nclip_norm = 5.0\n\
             [schedule]\nsteps = 4\nwarmup_steps = 1\nmin_lr_ratio = 0.5\n\
             [train]\nbatch_size = 2\ngrad_accum = 1\nseed = 1\ncheckpoint_every = 2\neval_every = 2\n"
        )
    };
    let recipe_path = dir.path().join("lm.toml");
    std::fs::write(&recipe_path, recipe("transcript")).unwrap();
    let compress = |out: &Path| {
        whittle(&[
            "compress",
            p(&lm),
            "--recipe",
            p(&recipe_path),
            "--train",
            p(&train),
            "--dev",
            p(&dev),
            "-o",
            p(out),
            "--no-spellings",
        ])
    };
    let out = dir.path().join("lm.whittle");
    let o = compress(&out);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("dev perplexity"), "{}", stdout(&o));
    let o = whittle(&[
        "perplexity",
        p(&out),
        p(&dev),
        "-o",
        p(&dir.path().join("c.json")),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("smaller than fp32"), "{}", stdout(&o));
    let o = whittle(&["perplexity", p(&out), p(&dev), "--bits", "4"]);
    assert!(
        !o.status.success() && stderr(&o).contains("already packed"),
        "{}",
        stderr(&o)
    );
    let o = whittle(&["inspect", p(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("llama"), "{}", stdout(&o));
    // The packed LM rescores N-best lists.
    rescore_one_list(&out, dir.path());

    // The LM's Hessian sensitivity on the same texts.
    let sens = dir.path().join("sens.json");
    let o = whittle(&[
        "sensitivity",
        p(&lm),
        "--data",
        p(&train),
        "--metric",
        "hessian",
        "--probes",
        "4",
        "--candidates",
        "2,4",
        "--group",
        "32",
        "-o",
        p(&sens),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let file = read_json(&sens);
    assert_eq!(file["metric"], "hessian");
    assert_eq!(file["hessian"]["probes"], 4);
    assert_eq!(file["layers"].as_array().unwrap().len(), 1 + 7 * 2);

    std::fs::write(&recipe_path, recipe("pseudo-label")).unwrap();
    let o = compress(&dir.path().join("x.whittle"));
    assert!(
        !o.status.success() && stderr(&o).contains("pseudo-labels"),
        "{}",
        stderr(&o)
    );
}

/// A Hugging Face GPT-2 folder (the transformers fixture): `perplexity` scores texts float and
/// quantized, and `sensitivity` measures its matrices.
#[test]
fn perplexity_and_sensitivity_read_a_hugging_face_gpt2() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../whittle/tests/fixtures/gpt2");
    let dir = tempfile::tempdir().unwrap();
    let texts = dir.path().join("texts.txt");
    std::fs::write(&texts, "ab a b c.\nc c ab.\n").unwrap();
    let o = whittle(&["perplexity", p(&model), p(&texts)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("2 texts"), "{}", stdout(&o));
    let o = whittle(&[
        "perplexity",
        p(&model),
        p(&texts),
        "--bits",
        "4",
        "--group",
        "32",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("smaller than fp32"), "{}", stdout(&o));
    let sens = dir.path().join("sens.json");
    let o = whittle(&[
        "sensitivity",
        p(&model),
        "--data",
        p(&texts),
        "--metric",
        "kl",
        "--candidates",
        "2,4",
        "--group",
        "32",
        "-o",
        p(&sens),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(read_json(&sens)["layers"].as_array().unwrap().len(), 9);
}

/// `whittle compress` of a Hugging Face GPT-2 folder: LSQ of a bit map with the tied embedding
/// at 8 bits, written as a `.whittle` file of architecture `gpt2` that `perplexity`, `rescore`
/// and `inspect` read.
#[test]
fn compress_trains_a_hugging_face_gpt2() {
    let model = Path::new(env!("CARGO_MANIFEST_DIR")).join("../whittle/tests/fixtures/gpt2");
    let dir = tempfile::tempdir().unwrap();
    let train = dir.path().join("train.txt");
    std::fs::write(
        &train,
        "ab a b c.\na ab 12 c b.\nc c ab a.\nb a 1 2 ab ab.\n",
    )
    .unwrap();
    let dev = dir.path().join("dev.txt");
    std::fs::write(&dev, "a b ab c.\nc 1 ab.\n").unwrap();
    std::fs::write(
        dir.path().join("map.toml"),
        "[layers]\n\"wte\" = { bits = 8, group = 32 }\n\"h.*\" = { bits = 4, group = 32 }\n",
    )
    .unwrap();
    let recipe = dir.path().join("lm.toml");
    std::fs::write(
        &recipe,
        "name = \"gpt2\"\nmethod = \"uniform-lsq\"\n[quant]\nbit_map = \"map.toml\"\n\
         [loss]\nkl = 1.0\ntemperature = 1.0\nce = 0.0\ntargets = \"transcript\"\n\
         [optim]\nlr_weights = 1e-3\nlr_scales = 1e-3\nweight_decay = 0.0\nclip_norm = 5.0\n\
         [schedule]\nsteps = 4\nwarmup_steps = 1\nmin_lr_ratio = 0.5\n\
         [train]\nbatch_size = 2\ngrad_accum = 1\nseed = 1\ncheckpoint_every = 2\neval_every = 2\n",
    )
    .unwrap();
    let out = dir.path().join("gpt2.whittle");
    let o = whittle(&[
        "compress",
        p(&model),
        "--recipe",
        p(&recipe),
        "--train",
        p(&train),
        "--dev",
        p(&dev),
        "-o",
        p(&out),
        "--no-spellings",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("dev perplexity"), "{}", stdout(&o));
    let o = whittle(&["perplexity", p(&out), p(&dev)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("smaller than fp32"), "{}", stdout(&o));
    let o = whittle(&["inspect", p(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("architecture gpt2"), "{}", stdout(&o));
    rescore_one_list(&out, dir.path());
}

/// `whittle bench machine` names the CPU and the kernels in use, as text and as JSON (what the
/// benchmark scripts store beside their figures).
#[test]
fn bench_machine_reports_the_cpu_and_the_kernels() {
    let out = whittle(&["bench", "machine", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    for key in [
        "cpu",
        "flags",
        "packed_kernels",
        "sparse_ternary_kernel",
        "dense_f32_gemm",
    ] {
        assert!(m.get(key).is_some(), "no `{key}` in {m}");
    }
    assert!(m["logical_cpus"].as_u64().unwrap() >= 1);
    let text = whittle(&["bench", "machine"]);
    let line = String::from_utf8_lossy(&text.stdout);
    assert!(line.starts_with(m["cpu"].as_str().unwrap()), "{line}");
    assert!(
        line.contains(m["dense_f32_gemm"].as_str().unwrap()),
        "{line}"
    );
}

/// `whittle bench gemm` times every backend this build has at the shapes asked for, and
/// refuses a malformed shape by naming it.
#[test]
fn bench_gemm_times_each_backend_and_names_a_bad_shape() {
    let out = whittle(&[
        "--threads",
        "1",
        "bench",
        "gemm",
        "--rows",
        "64",
        "--shapes",
        "32x48",
        "--runs",
        "1",
        "--json",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let row: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(
        (row["m"].as_u64(), row["k"].as_u64(), row["n"].as_u64()),
        (Some(64), Some(32), Some(48))
    );
    for backend in ["gemm", "candle", "whittle_f32_kernel"] {
        let gflops = row["backends"][backend]["gflops"].as_f64().unwrap();
        assert!(gflops > 0.0, "{backend}: {gflops}");
    }
    let bad = whittle(&["bench", "gemm", "--shapes", "32by48"]);
    assert!(!bad.status.success());
    assert!(stderr(&bad).contains("32by48"), "{}", stderr(&bad));
    let huge = whittle(&[
        "bench",
        "gemm",
        "--rows",
        "4000000000",
        "--shapes",
        "4096x4096",
    ]);
    assert!(!huge.status.success());
    assert!(stderr(&huge).contains("at most"), "{}", stderr(&huge));
}

/// `perplexity --compare --json` gives the same comparison as the sentence: B's change of
/// perplexity with its interval and verdict; B uniformly 10 % more likely per token is
/// "better" against A, and A against itself is "equivalent" with a zero change.
#[test]
fn perplexity_compare_prints_json() {
    let dir = tempfile::tempdir().unwrap();
    let scores = |name: &str, nll_per_token: f64| {
        let texts: Vec<_> = (0..40)
            .map(|i| {
                let tokens = 10 + i % 7;
                serde_json::json!({ "id": format!("line {}", i + 1), "tokens": tokens,
                    "nll": nll_per_token * tokens as f64 * (1.0 + 0.01 * (i % 3) as f64) })
            })
            .collect();
        let tokens: u64 = texts.iter().map(|t| t["tokens"].as_u64().unwrap()).sum();
        let nll: f64 = texts.iter().map(|t| t["nll"].as_f64().unwrap()).sum();
        let path = dir.path().join(name);
        let doc = serde_json::json!({ "perplexity": (nll / tokens as f64).exp(), "texts": texts });
        std::fs::write(&path, doc.to_string()).unwrap();
        path
    };
    let (a, b) = (scores("a.json", 4.0), scores("b.json", 4.0 + (0.9f64).ln()));
    let json = |x: &std::path::Path, y: &std::path::Path| {
        let o = whittle(&["perplexity", "--compare", p(x), p(y), "--json"]);
        assert!(o.status.success(), "{}", stderr(&o));
        serde_json::from_slice::<serde_json::Value>(&o.stdout).unwrap()
    };
    let v = json(&a, &b);
    assert_eq!(v["verdict"], "better", "{v}");
    assert_eq!(v["texts"], 40);
    let change = v["change_percent"].as_f64().unwrap();
    assert!((change + 10.0).abs() < 1.0, "{v}");
    let ci = v["ci95_percent"].as_array().unwrap();
    assert!(ci[0].as_f64().unwrap() <= change && change <= ci[1].as_f64().unwrap());
    let same = json(&a, &a);
    assert_eq!(same["verdict"], "equivalent", "{same}");
    assert_eq!(same["change_percent"], 0.0);
}
