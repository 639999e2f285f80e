//! Whisper's `EnglishTextNormalizer` (`whisper/normalizers/english.py`).

use std::collections::HashMap;
use std::path::Path;

use super::basic::{lower_and_drop_annotations, remove_symbols_and_diacritics};
use super::numbers::normalize_numbers;
use super::scan;
use crate::TextError;

/// Hesitations removed as whole words.
const FILLERS: [&str; 6] = ["hmm", "mm", "mhm", "mmm", "uh", "um"];

/// One of Whisper's replacement rules: `literal` becomes `replacement`, optionally only where
/// a word boundary (`\b`) precedes / follows it.
struct Replacement {
    literal: &'static str,
    replacement: &'static str,
    boundary_before: bool,
}

const fn word(literal: &'static str, replacement: &'static str) -> Replacement {
    Replacement {
        literal,
        replacement,
        boundary_before: true,
    }
}

const fn suffix(literal: &'static str, replacement: &'static str) -> Replacement {
    Replacement {
        literal,
        replacement,
        boundary_before: false,
    }
}

/// Whisper's replacement rules, applied one after another in this order; every rule requires a
/// word boundary after it.
const REPLACEMENTS: [Replacement; 49] = [
    // common contractions
    word("won't", "will not"),
    word("can't", "can not"),
    word("let's", "let us"),
    word("ain't", "aint"),
    word("y'all", "you all"),
    word("wanna", "want to"),
    word("gotta", "got to"),
    word("gonna", "going to"),
    word("i'ma", "i am going to"),
    word("imma", "i am going to"),
    word("woulda", "would have"),
    word("coulda", "could have"),
    word("shoulda", "should have"),
    word("ma'am", "madam"),
    // titles and prefixes (the trailing space is Whisper's)
    word("mr", "mister "),
    word("mrs", "missus "),
    word("st", "saint "),
    word("dr", "doctor "),
    word("prof", "professor "),
    word("capt", "captain "),
    word("gov", "governor "),
    word("ald", "alderman "),
    word("gen", "general "),
    word("sen", "senator "),
    word("rep", "representative "),
    word("pres", "president "),
    word("rev", "reverend "),
    word("hon", "honorable "),
    word("asst", "assistant "),
    word("assoc", "associate "),
    word("lt", "lieutenant "),
    word("col", "colonel "),
    word("jr", "junior "),
    word("sr", "senior "),
    word("esq", "esquire "),
    // perfect tenses
    suffix("'d been", " had been"),
    suffix("'s been", " has been"),
    suffix("'d gone", " had gone"),
    suffix("'s gone", " has gone"),
    suffix("'d done", " had done"),
    suffix("'s got", " has got"),
    // general contractions ("'s" always becomes "is", as in Whisper)
    suffix("n't", " not"),
    suffix("'re", " are"),
    suffix("'s", " is"),
    suffix("'d", " would"),
    suffix("'ll", " will"),
    suffix("'t", " not"),
    suffix("'ve", " have"),
    suffix("'m", " am"),
];

/// Whisper's English transcript normaliser, used before computing WER so that formatting
/// differences ("Mr." / "mister", "twenty-one" / "21", "colour" / "color") are not errors.
///
/// Steps, in order: lower-case; drop `[...]`, `<...>` and `(...)` spans; drop fillers (hmm, mm,
/// mhm, mmm, uh, um); expand contractions and titles; drop commas inside numbers and periods not
/// before digits; NFKD with diacritics stripped and symbols/punctuation turned into spaces except
/// `. % $ ¢ € £`; spelled-out numbers to digits ([`normalize_numbers`]); British to American
/// spelling (a word map); drop `. $ ¢ € £` not before a digit and `%` not after one; collapse
/// whitespace.
///
/// Whisper ships its spelling map as `whisper/normalizers/english.json`; it is not vendored here,
/// so load it with [`EnglishNormalizer::from_spelling_file`].
#[derive(Debug, Clone, Default)]
pub struct EnglishNormalizer {
    spellings: HashMap<String, String>,
}

impl EnglishNormalizer {
    /// A normaliser with the given British → American spelling map (word → word).
    pub fn with_spellings(spellings: HashMap<String, String>) -> Self {
        Self { spellings }
    }

    /// A normaliser that leaves spellings alone ("colour" stays "colour").
    pub fn without_spellings() -> Self {
        Self::default()
    }

    /// Reads Whisper's `english.json`, a JSON object mapping British to American spellings.
    pub fn from_spelling_file(path: &Path) -> Result<Self, TextError> {
        let text = std::fs::read_to_string(path).map_err(|source| TextError::ReadSpellings {
            path: path.to_path_buf(),
            source,
        })?;
        let spellings =
            serde_json::from_str(&text).map_err(|source| TextError::ParseSpellings {
                path: path.to_path_buf(),
                source,
            })?;
        Ok(Self::with_spellings(spellings))
    }

    /// The spelling map in use.
    pub fn spellings(&self) -> &HashMap<String, String> {
        &self.spellings
    }

    /// Normalises one transcript.
    pub fn normalize(&self, text: &str) -> String {
        let mut s = lower_and_drop_annotations(text);
        s = scan::remove_whole_words(&s, &FILLERS);
        s = scan::join_space_before_apostrophe(&s);
        for rule in &REPLACEMENTS {
            s = scan::replace_literal(
                &s,
                rule.literal,
                rule.replacement,
                rule.boundary_before,
                true,
            );
        }
        s = scan::remove_digit_commas(&s);
        s = scan::remove_periods_not_before_digits(&s);
        s = remove_symbols_and_diacritics(&s, ".%$¢€£");
        s = normalize_numbers(&s);
        s = self.respell(&s);
        s = scan::remove_symbols_not_before_digits(&s);
        s = scan::remove_percent_not_after_digits(&s);
        scan::collapse_spaces(&s)
    }

    fn respell(&self, s: &str) -> String {
        scan::split_words(s)
            .map(|w| self.spellings.get(w).map_or(w, String::as_str))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_keep_whisper_order() {
        // "'s been" must win over the general "'s" rule
        let n = EnglishNormalizer::without_spellings();
        assert_eq!(n.normalize("she's been here"), "she has been here");
        assert_eq!(n.normalize("she's here"), "she is here");
    }

    #[test]
    fn spelling_map_applies_to_whole_words() {
        let map = HashMap::from([("colour".to_string(), "color".to_string())]);
        let n = EnglishNormalizer::with_spellings(map);
        assert_eq!(n.normalize("Colour, colours"), "color colours");
    }
}
