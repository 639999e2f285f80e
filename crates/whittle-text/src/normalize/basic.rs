//! Whisper's language-independent normaliser (`whisper/normalizers/basic.py`).

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, GeneralCategoryGroup, UnicodeGeneralCategory};
use unicode_segmentation::UnicodeSegmentation;

use super::scan;

/// Letters that NFKD does not split into a base letter and a mark, spelled out the way Whisper does.
fn spelled_diacritic(c: char) -> Option<&'static str> {
    Some(match c {
        'œ' => "oe",
        'Œ' => "OE",
        'ø' => "o",
        'Ø' => "O",
        'æ' => "ae",
        'Æ' => "AE",
        'ß' => "ss",
        'ẞ' => "SS",
        'đ' | 'ð' => "d",
        'Đ' | 'Ð' => "D",
        'þ' | 'Þ' => "th",
        'ł' => "l",
        'Ł' => "L",
        _ => return None,
    })
}

/// Marks, symbols and punctuation (general categories M*, S*, P*).
fn is_mark_symbol_or_punctuation(c: char) -> bool {
    matches!(
        c.general_category_group(),
        GeneralCategoryGroup::Mark
            | GeneralCategoryGroup::Symbol
            | GeneralCategoryGroup::Punctuation
    )
}

/// NFKD-decomposes `s`, drops nonspacing marks (Mn), spells out the letters NFKD leaves alone
/// (`æ` → `ae`, `ß` → `ss`, ...) and turns every other mark, symbol or punctuation character
/// into a space, except the characters in `keep`.
pub fn remove_symbols_and_diacritics(s: &str, keep: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.nfkd() {
        if keep.contains(c) {
            out.push(c);
        } else if let Some(spelled) = spelled_diacritic(c) {
            out.push_str(spelled);
        } else if c.general_category() == GeneralCategory::NonspacingMark {
        } else if is_mark_symbol_or_punctuation(c) {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// NFKC-composes `s` and turns marks, symbols and punctuation into spaces, keeping diacritics.
pub fn remove_symbols(s: &str) -> String {
    s.nfkc()
        .map(|c| {
            if is_mark_symbol_or_punctuation(c) {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// Lower-cases and drops `[...]`, `<...>` and `(...)` spans, as both Whisper normalisers begin.
pub(crate) fn lower_and_drop_annotations(s: &str) -> String {
    scan::remove_parenthesised(&scan::remove_bracketed(&s.to_lowercase()))
}

/// Whisper's `BasicTextNormalizer`, used for languages other than English.
///
/// Lower-cases, removes bracketed and parenthesised spans, replaces symbols and punctuation by
/// spaces (optionally also stripping diacritics), optionally splits into grapheme clusters, and
/// collapses whitespace runs into single spaces (leading/trailing spaces are kept, as Whisper does).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BasicNormalizer {
    /// Strip diacritics too (`remove_diacritics=True` in Whisper).
    pub remove_diacritics: bool,
    /// Separate every grapheme cluster by a space (`split_letters=True`), for CER-like scoring of
    /// languages written without spaces.
    pub split_letters: bool,
}

impl BasicNormalizer {
    /// Normalises one transcript.
    pub fn normalize(&self, s: &str) -> String {
        let s = lower_and_drop_annotations(s);
        let cleaned = if self.remove_diacritics {
            remove_symbols_and_diacritics(&s, "")
        } else {
            remove_symbols(&s)
        };
        let mut s = cleaned.to_lowercase();
        if self.split_letters {
            s = s.graphemes(true).collect::<Vec<_>>().join(" ");
        }
        scan::collapse_spaces(&s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn diacritics_are_stripped_or_spelled_out() {
        assert_eq!(
            remove_symbols_and_diacritics("café œuvre straße", ""),
            "cafe oeuvre strasse"
        );
        assert_eq!(remove_symbols_and_diacritics("a-b $5", "$"), "a b $5");
    }

    #[test]
    fn basic_normalizer_keeps_diacritics_unless_asked() {
        let keep = BasicNormalizer::default();
        assert_eq!(
            keep.normalize("Ça va? [music] (laughs) Très bien!"),
            "ça va très bien "
        );
        let strip = BasicNormalizer {
            remove_diacritics: true,
            split_letters: false,
        };
        assert_eq!(strip.normalize("Ça va?"), "ca va ");
    }

    #[test]
    fn split_letters_separates_grapheme_clusters() {
        let split = BasicNormalizer {
            remove_diacritics: false,
            split_letters: true,
        };
        assert_eq!(split.normalize("你好 ab"), "你 好 a b");
    }
}
