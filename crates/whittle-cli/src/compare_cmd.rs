//! `whittle eval --compare A B`: is the WER difference between two evaluations significant?

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use whittle::text::significance::matched_pairs_test;

/// Per-utterance word errors of one evaluation.
struct Scored {
    path: PathBuf,
    /// id -> (normalised reference, word errors, reference words), in file order.
    rows: Vec<(String, String, usize, usize)>,
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
        let reference = v["reference_normalized"].as_str().unwrap_or("").to_string();
        rows.push((id, reference, errors, field("reference_len")?));
    }
    if rows.is_empty() {
        bail!("{} has no utterances", file.display());
    }
    Ok(Scored { path: file, rows })
}

pub fn compare(a: &Path, b: &Path, json: bool) -> Result<()> {
    let (a, b) = (read_scored(a)?, read_scored(b)?);
    let b_rows: HashMap<&str, (&str, usize)> = b
        .rows
        .iter()
        .map(|(id, r, e, _)| (id.as_str(), (r.as_str(), *e)))
        .collect();
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
    for (id, reference, e, n) in &a.rows {
        let (ref_b, e_b) = b_rows.get(id.as_str()).with_context(|| {
            format!(
                "utterance `{id}` of {} is missing from {}",
                a.path.display(),
                b.path.display()
            )
        })?;
        if ref_b != reference {
            bail!(
                "utterance `{id}` was scored against different references in the two evaluations"
            );
        }
        errors_a.push(*e);
        errors_b.push(*e_b);
        words += n;
    }
    let test = matched_pairs_test(&errors_a, &errors_b)?;
    let wer = |e: &[usize]| e.iter().sum::<usize>() as f64 / words.max(1) as f64;
    let (wer_a, wer_b) = (wer(&errors_a), wer(&errors_b));
    let verdict = if !test.significant_at_05 {
        "no significant difference (p >= 0.05)"
    } else if test.mean_diff < 0.0 {
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
                "utterances": test.n,
                "words": words,
                "wer_a": wer_a,
                "wer_b": wer_b,
                "test": "MAPSSWE (utterance segments)",
                "mean_diff": test.mean_diff,
                "z": test.z,
                "p_value": test.p_value,
                "significant_at_05": test.significant_at_05,
                "verdict": verdict,
            })
        );
    } else {
        println!(
            "A {}: WER {:.2}%\nB {}: WER {:.2}%\n{} utterances, {words} words; MAPSSWE (utterance segments): mean A-B errors {:+.3}, z {:.3}, p {:.4}: {verdict}",
            a.path.display(),
            100.0 * wer_a,
            b.path.display(),
            100.0 * wer_b,
            test.n,
            test.mean_diff,
            test.z,
            test.p_value
        );
    }
    Ok(())
}
