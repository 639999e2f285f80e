//! `whittle eval --compare A B`: is evaluation B worse than, better than or equivalent to the
//! baseline A? The statistics are in [`whittle::text::verdict`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use whittle::text::significance::error_segments;
use whittle::text::verdict::{compare_systems, format_p, CompareOptions, ALPHA, POWER};

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

/// Compares evaluation B with the baseline evaluation A and prints the verdict.
pub fn compare(a: &Path, b: &Path, json: bool, options: &CompareOptions) -> Result<()> {
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
    let (mut errors_a, mut errors_b, mut words, mut segments) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
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
        segments.extend(error_segments(
            &ra.reference,
            &ra.hypothesis,
            &rb.hypothesis,
        ));
        errors_a.push(ra.errors);
        errors_b.push(rb.errors);
        words.push(ra.words);
    }
    let c = compare_systems(&errors_a, &errors_b, &words, &segments, options)?;
    let (absolute, relative) = (
        c.difference.absolute.scaled(100.0),
        c.difference.relative.scaled(100.0),
    );
    let confidence = 100.0 * c.bootstrap.confidence;
    if json {
        // Units are in the names: WERs as fractions (as in summary.json), differences in WER
        // points or percent.
        let mde = c.mde.map(|m| {
            serde_json::json!({
                "alpha": ALPHA,
                "power": POWER,
                "unit": "error segment",
                "std_diff": m.std_diff,
                "errors_per_segment": m.errors_per_segment,
                "wer_points": 100.0 * m.wer,
                "relative_percent": 100.0 * m.relative,
            })
        });
        println!(
            "{}",
            serde_json::json!({
                "a": a.path.display().to_string(),
                "b": b.path.display().to_string(),
                "utterances": c.utterances,
                "segments": c.segments,
                "words": c.words,
                "errors_a": c.errors_a,
                "errors_b": c.errors_b,
                "wer_a": c.wer_a,
                "wer_b": c.wer_b,
                "test": c.test.name(),
                "test_kind": c.test,
                "mapsswe": c.mapsswe,
                "sign_test_p": c.sign_test_p,
                "p_value": c.p_value,
                "significant_at_05": c.p_value < ALPHA,
                "difference": {
                    "absolute_points": absolute,
                    "relative_percent": relative,
                    "confidence": c.bootstrap.confidence,
                    "bootstrap": { "unit": "utterance", "resamples": c.bootstrap.resamples, "seed": c.bootstrap.seed },
                },
                "mde": mde,
                // Rounded so that --margin 7 reads back as 7, not 7.000000000000001.
                "margin_percent": (1e9 * c.margin).round() / 1e7,
                "verdict": c.verdict,
                "verdict_text": c.sentence(),
            })
        );
        return Ok(());
    }
    let mde = match c.mde {
        Some(m) => format!(
            "{:.2} WER points ({:.1}% of A's WER; {:.3} errors per segment, per-segment sd {:.3})",
            100.0 * m.wer,
            100.0 * m.relative,
            m.errors_per_segment,
            m.std_diff
        ),
        None => "not estimable (the two systems never differ on a segment)".into(),
    };
    println!(
        "A {}: WER {:.2}%\n\
         B {}: WER {:.2}%\n\
         {} utterances, {} words, {} error segments; {}: p {}\n\
         B - A: {:+.2} WER points ({confidence}% CI {:+.2} to {:+.2}), {:+.1}% relative ({confidence}% CI {:+.1}% to {:+.1}%); bootstrap over utterances, {} resamples, seed {}\n\
         minimum detectable difference ({:.0}% power, p < {ALPHA}): {mde}\n\
         verdict: {}\n{}",
        a.path.display(),
        100.0 * c.wer_a,
        b.path.display(),
        100.0 * c.wer_b,
        c.utterances,
        c.words,
        c.segments,
        c.test.name(),
        format_p(c.p_value),
        absolute.estimate,
        absolute.lower,
        absolute.upper,
        relative.estimate,
        relative.lower,
        relative.upper,
        c.bootstrap.resamples,
        c.bootstrap.seed,
        100.0 * POWER,
        c.verdict.as_str(),
        c.sentence(),
    );
    Ok(())
}
