//! `whittle eval --compare A B`: is the WER difference between two evaluations significant?

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use whittle::text::significance::{
    error_segments, matched_pairs_test, sign_test, MIN_SEGMENTS_FOR_NORMAL_APPROXIMATION,
};

/// Per-utterance word errors of one evaluation.
struct Scored {
    path: PathBuf,
    rows: Vec<Row>,
}

struct Row {
    id: String,
    reference: String,
    hypothesis: String,
    errors: usize,
    words: usize,
}

fn read_scored(path: &Path) -> Result<Scored> {
    let file = if path.is_dir() {
        path.join("utterances.jsonl")
    } else {
        path.to_path_buf()
    };
    let text =
        std::fs::read_to_string(&file).with_context(|| format!("reading {}", file.display()))?;
    let mut rows = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let at = || format!("{} line {}", file.display(), n + 1);
        let v: serde_json::Value = serde_json::from_str(line).with_context(at)?;
        let field = |name: &str| -> Result<usize> {
            v["words"][name]
                .as_u64()
                .map(|x| x as usize)
                .with_context(|| format!("{}: no words.{name} (not a whittle eval output?)", at()))
        };
        let errors = field("substitutions")? + field("deletions")? + field("insertions")?;
        let id = v["id"]
            .as_str()
            .with_context(|| format!("{}: no id", at()))?
            .to_string();
        let text = |name: &str| -> Result<String> {
            Ok(v[name]
                .as_str()
                .with_context(|| format!("{}: no {name}", at()))?
                .to_string())
        };
        rows.push(Row {
            id,
            reference: text("reference_normalized")?,
            hypothesis: text("hypothesis_normalized")?,
            errors,
            words: field("reference_len")?,
        });
    }
    if rows.is_empty() {
        bail!("{} has no utterances", file.display());
    }
    Ok(Scored { path: file, rows })
}

pub fn compare(a: &Path, b: &Path, json: bool) -> Result<()> {
    let (a, b) = (read_scored(a)?, read_scored(b)?);
    let b_rows: HashMap<&str, &Row> = b.rows.iter().map(|r| (r.id.as_str(), r)).collect();
    if b_rows.len() != a.rows.len() {
        bail!(
            "{} has {} utterances but {} has {}: compare evaluations of the same set",
            a.path.display(),
            a.rows.len(),
            b.path.display(),
            b_rows.len()
        );
    }
    let (mut errors_a, mut errors_b, mut words) = (Vec::new(), Vec::new(), 0);
    let (mut segments_a, mut segments_b) = (Vec::new(), Vec::new());
    for ra in &a.rows {
        let rb = b_rows.get(ra.id.as_str()).with_context(|| {
            format!(
                "utterance `{}` of {} is missing from {}",
                ra.id,
                a.path.display(),
                b.path.display()
            )
        })?;
        if rb.reference != ra.reference {
            bail!(
                "utterance `{}` was scored against different references in the two evaluations",
                ra.id
            );
        }
        for (ea, eb) in error_segments(&ra.reference, &ra.hypothesis, &rb.hypothesis) {
            segments_a.push(ea);
            segments_b.push(eb);
        }
        errors_a.push(ra.errors);
        errors_b.push(rb.errors);
        words += ra.words;
    }
    // MAPSSWE over SCTK's segments; with too few segments its normal approximation fails
    // (two segments that both favour A would give z = infinity), so the exact sign test decides.
    let mapsswe = matched_pairs_test(&segments_a, &segments_b).ok();
    let sign_p = sign_test(&segments_a, &segments_b)?;
    let (test_name, p_value) = match mapsswe {
        Some(m) if segments_a.len() >= MIN_SEGMENTS_FOR_NORMAL_APPROXIMATION => {
            ("MAPSSWE", m.p_value)
        }
        _ => (
            "exact sign test (too few error segments for MAPSSWE)",
            sign_p,
        ),
    };
    let significant = p_value < 0.05;
    let mean_diff = mapsswe.map_or(0.0, |m| m.mean_diff);
    let wer = |e: &[usize]| e.iter().sum::<usize>() as f64 / words.max(1) as f64;
    let (wer_a, wer_b) = (wer(&errors_a), wer(&errors_b));
    let verdict = if !significant {
        "no significant difference (p >= 0.05)"
    } else if wer_a < wer_b {
        "A is significantly better (p < 0.05)"
    } else {
        "B is significantly better (p < 0.05)"
    };
    if json {
        println!(
            "{}",
            serde_json::json!({
                "a": a.path.display().to_string(),
                "b": b.path.display().to_string(),
                "utterances": errors_a.len(),
                "segments": segments_a.len(),
                "words": words,
                "wer_a": wer_a,
                "wer_b": wer_b,
                "test": test_name,
                "mapsswe": mapsswe,
                "sign_test_p": sign_p,
                "p_value": p_value,
                "significant_at_05": significant,
                "verdict": verdict,
            })
        );
    } else {
        println!(
            "A {}: WER {:.2}%\nB {}: WER {:.2}%\n{} utterances, {words} words, {} error segments (mean A-B errors {:+.3}); {test_name}: p {:.4}: {verdict}",
            a.path.display(),
            100.0 * wer_a,
            b.path.display(),
            100.0 * wer_b,
            errors_a.len(),
            segments_a.len(),
            mean_diff,
            p_value
        );
    }
    Ok(())
}
