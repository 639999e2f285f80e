//! Modern spellings for period orthography.
//!
//! Austen writes "surprize", "chuse", "shew", "to-day" and "every thing". A recogniser trained on
//! modern text writes "surprise", "choose", "show", "today" and "everything", and Whisper's English
//! normaliser (which maps British to American spellings) does not map these, so a reference in
//! 1811 orthography charges the model for the spelling. Corpus sentences are therefore modernised
//! before they are spoken and transcribed, by the committed table `modern_spellings.tsv` (one
//! `old<TAB>modern` rule per line, with its rationale and counts in the file's header).

use std::collections::HashMap;
use std::sync::OnceLock;

use regex::{Captures, Regex};

/// The committed table: `old<TAB>modern` lines, `#` comments.
pub const MODERN_SPELLINGS_TSV: &str = include_str!("modern_spellings.tsv");

/// The rules of [`MODERN_SPELLINGS_TSV`] as `(old, modern)` pairs, in file order.
pub fn modern_spelling_rules() -> Vec<(&'static str, &'static str)> {
    MODERN_SPELLINGS_TSV
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (old, modern) = l.split_once('\t').unwrap_or((l, l));
            (old.trim(), modern.trim())
        })
        .collect()
}

struct Moderniser {
    pattern: Regex,
    /// Old form (lower case, single spaces) to modern form.
    modern: HashMap<String, &'static str>,
}

fn moderniser() -> &'static Moderniser {
    static MODERNISER: OnceLock<Moderniser> = OnceLock::new();
    MODERNISER.get_or_init(|| {
        let rules = modern_spelling_rules();
        // Longest first, so "every thing" wins over any shorter rule sharing its start.
        let mut olds: Vec<&str> = rules.iter().map(|(old, _)| *old).collect();
        olds.sort_by_key(|o| std::cmp::Reverse(o.len()));
        let alternatives: Vec<String> = olds
            .iter()
            .map(|old| {
                old.split(' ')
                    .map(regex::escape)
                    .collect::<Vec<_>>()
                    .join(r"\s+")
            })
            .collect();
        // Word boundaries that also refuse a neighbouring hyphen or apostrophe, so "any-thing-else"
        // style compounds and "every thing's" are left alone rather than half rewritten.
        let pattern = format!(r"(?i)(^|[^\w'-])({})($|[^\w'-])", alternatives.join("|"));
        Moderniser {
            pattern: Regex::new(&pattern).expect("the committed table forms a valid pattern"),
            modern: rules
                .into_iter()
                .map(|(old, modern)| (old.to_lowercase(), modern))
                .collect(),
        }
    })
}

/// Rewrites every period spelling of the table in `text` to its modern form, keeping the case of
/// the first letter and everything around the word.
pub fn modernize_spelling(text: &str) -> String {
    let m = moderniser();
    // Neighbouring matches share a boundary character ("every thing every thing"), and a match
    // consumes it, so the second one is found by another pass. No output is another rule's input
    // (tested), so the passes stop.
    let mut current = text.to_string();
    for _ in 0..4 {
        let next = m
            .pattern
            .replace_all(&current, |caps: &Captures| {
                let old = &caps[2];
                let key = old
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
                    .to_lowercase();
                let modern = m.modern.get(&key).copied().unwrap_or(old);
                let modern = if old.starts_with(char::is_uppercase) {
                    let mut chars = modern.chars();
                    chars
                        .next()
                        .map(|c| c.to_uppercase().chain(chars).collect::<String>())
                        .unwrap_or_default()
                } else {
                    modern.to_string()
                };
                format!("{}{}{}", &caps[1], modern, &caps[3])
            })
            .into_owned();
        if next == current {
            break;
        }
        current = next;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_well_formed() {
        let rules = modern_spelling_rules();
        assert!(rules.len() >= 40, "{} rules", rules.len());
        let mut seen = std::collections::HashSet::new();
        for (old, modern) in &rules {
            assert!(
                !old.is_empty() && !modern.is_empty(),
                "{old:?} -> {modern:?}"
            );
            assert_ne!(old, modern);
            assert!(seen.insert(old.to_lowercase()), "{old} listed twice");
            // No rule's output is another rule's input: one pass is final.
            assert!(
                rules.iter().all(|(o, _)| !o.eq_ignore_ascii_case(modern)),
                "{modern} is rewritten again"
            );
        }
    }

    #[test]
    fn rewrites_whole_words_keeping_case_and_punctuation() {
        assert_eq!(
            modernize_spelling("Surprize! I chuse to shew it to-day, and every thing."),
            "Surprise! I choose to show it today, and everything."
        );
        assert_eq!(
            modernize_spelling("\"Every  body\" said any\nthing for ever"),
            "\"Everybody\" said anything forever"
        );
        assert_eq!(
            modernize_spelling("every thing every thing"),
            "everything everything"
        );
    }

    #[test]
    fn leaves_other_words_alone() {
        for text in [
            "showed shown show choose",
            "shewdness",
            "thing every",
            "everything's fine",
            "a to-day-ish plan",
            "",
        ] {
            assert_eq!(modernize_spelling(text), text);
        }
    }
}
