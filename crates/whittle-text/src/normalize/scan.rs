//! Character classes and substitutions with the semantics of Python's `re` module on `str`
//! patterns, which the Whisper normalisers are written in.
//!
//! Each function here stands for one regular expression of the reference and names it in its
//! doc comment. They scan left to right and never rescan replaced text, like `re.sub`.

use unicode_properties::{GeneralCategoryGroup, UnicodeGeneralCategory};

/// Python's `\s` and `str.split()` whitespace: Rust's `White_Space` plus the four ASCII
/// information separators U+001C..U+001F, which Python also counts as space.
pub(crate) fn is_space(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Python's `\w`: `str.isalnum()` (general category L* or N*) or `_`.
pub(crate) fn is_word(c: char) -> bool {
    c == '_'
        || matches!(
            c.general_category_group(),
            GeneralCategoryGroup::Letter | GeneralCategoryGroup::Number
        )
}

/// Python's `\d`: any character of general category Nd.
pub(crate) fn is_decimal(c: char) -> bool {
    c.is_ascii_digit() || c.general_category() == unicode_properties::GeneralCategory::DecimalNumber
}

/// Value of a decimal digit of any script, as Python's `int()` reads it.
///
/// Unicode assigns Nd characters in aligned runs of ten, zero first, so a digit's value is its
/// distance from the start of its run modulo ten.
pub(crate) fn decimal_value(c: char) -> Option<u8> {
    if let Some(d) = c.to_digit(10) {
        return Some(d as u8);
    }
    if !is_decimal(c) {
        return None;
    }
    let mut start = c as u32;
    while let Some(prev) = start.checked_sub(1).and_then(char::from_u32) {
        if !is_decimal(prev) {
            break;
        }
        start -= 1;
    }
    Some(((c as u32 - start) % 10) as u8)
}

/// `\b` between `before` and `after` (`None` is the edge of the string).
pub(crate) fn is_boundary(before: Option<char>, after: Option<char>) -> bool {
    before.is_some_and(is_word) != after.is_some_and(is_word)
}

/// Python's `str.split()` without arguments.
pub(crate) fn split_words(s: &str) -> impl Iterator<Item = &str> {
    s.split(is_space).filter(|w| !w.is_empty())
}

/// `re.sub(r"\s+", " ", s)`.
pub(crate) fn collapse_spaces(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_space = false;
    for c in s.chars() {
        if is_space(c) {
            if !in_space {
                out.push(' ');
            }
            in_space = true;
        } else {
            out.push(c);
            in_space = false;
        }
    }
    out
}

/// `re.sub(r"[<\[][^>\]]*[>\]]", "", s)`: drops `[...]` and `<...>` spans, mixed closers included.
pub(crate) fn remove_bracketed(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if matches!(chars[i], '<' | '[') {
            if let Some(len) = chars[i + 1..].iter().position(|&c| matches!(c, '>' | ']')) {
                i += len + 2;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// `re.sub(r"\(([^)]+?)\)", "", s)`: drops non-empty `(...)` spans (`()` stays).
pub(crate) fn remove_parenthesised(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '(' && chars.get(i + 1).is_some_and(|&c| c != ')') {
            if let Some(len) = chars[i + 2..].iter().position(|&c| c == ')') {
                i += len + 3;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Removes every maximal run of `\w` characters that is one of `words`; this is what
/// `re.sub(r"\b(w1|w2|...)\b", "", s)` does when every alternative is made of word characters.
pub(crate) fn remove_whole_words(s: &str, words: &[&str]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut run_start: Option<usize> = None;
    let flush = |out: &mut String, run: &str| {
        if !words.contains(&run) {
            out.push_str(run);
        }
    };
    for (at, c) in s.char_indices() {
        match (is_word(c), run_start) {
            (true, None) => run_start = Some(at),
            (false, Some(start)) => {
                flush(&mut out, &s[start..at]);
                run_start = None;
                out.push(c);
            }
            (false, None) => out.push(c),
            (true, Some(_)) => {}
        }
    }
    if let Some(start) = run_start {
        flush(&mut out, &s[start..]);
    }
    out
}

/// `re.sub(pattern, replacement, s)` for a literal pattern, optionally wrapped in `\b` on
/// either side. Boundaries are judged on the original text, as lookarounds are.
pub(crate) fn replace_literal(
    s: &str,
    literal: &str,
    replacement: &str,
    boundary_before: bool,
    boundary_after: bool,
) -> String {
    let first = literal.chars().next();
    let last = literal.chars().next_back();
    let mut out = String::with_capacity(s.len() + 16);
    let mut at = 0;
    let mut copied_to = 0;
    while at < s.len() {
        let rest = &s[at..];
        let matched = rest.starts_with(literal)
            && (!boundary_before || is_boundary(s[..at].chars().next_back(), first))
            && (!boundary_after || is_boundary(last, rest[literal.len()..].chars().next()));
        if matched && !literal.is_empty() {
            out.push_str(&s[copied_to..at]);
            out.push_str(replacement);
            at += literal.len();
            copied_to = at;
        } else {
            at += rest.chars().next().map_or(1, char::len_utf8);
        }
    }
    out.push_str(&s[copied_to..]);
    out
}

/// `re.sub(r"\s+'", "'", s)`: whitespace directly before an apostrophe is dropped.
pub(crate) fn join_space_before_apostrophe(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = String::new();
    for c in s.chars() {
        if is_space(c) {
            pending_space.push(c);
            continue;
        }
        if c != '\'' {
            out.push_str(&pending_space);
        }
        pending_space.clear();
        out.push(c);
    }
    out.push_str(&pending_space);
    out
}

/// `re.sub(r"(\d),(\d)", r"\1\2", s)`: thousands separators between digits are dropped
/// (non-overlapping, so `1,2,3` keeps its second comma as Python does).
pub(crate) fn remove_digit_commas(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if i + 2 < chars.len()
            && is_decimal(chars[i])
            && chars[i + 1] == ','
            && is_decimal(chars[i + 2])
        {
            out.push(chars[i]);
            out.push(chars[i + 2]);
            i += 3;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

/// `re.sub(r"\.([^0-9]|$)", r" \1", s)`: periods not followed by an ASCII digit become spaces.
pub(crate) fn remove_periods_not_before_digits(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i] == '.' {
            match chars.get(i + 1) {
                None => {
                    out.push(' ');
                    i += 1;
                    continue;
                }
                Some(&next) if !next.is_ascii_digit() => {
                    out.push(' ');
                    out.push(next);
                    i += 2;
                    continue;
                }
                Some(_) => {}
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// `re.sub(r"[.$¢€£]([^0-9])", r" \1", s)`: numeric symbols not followed by a digit become spaces.
pub(crate) fn remove_symbols_not_before_digits(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if matches!(chars[i], '.' | '$' | '¢' | '€' | '£') {
            if let Some(&next) = chars.get(i + 1).filter(|c| !c.is_ascii_digit()) {
                out.push(' ');
                out.push(next);
                i += 2;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// `re.sub(r"([^0-9])%", r"\1 ", s)`: a percent sign not after a digit becomes a space.
pub(crate) fn remove_percent_not_after_digits(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if !chars[i].is_ascii_digit() && chars.get(i + 1) == Some(&'%') {
            out.push(chars[i]);
            out.push(' ');
            i += 2;
        } else {
            out.push(chars[i]);
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literal_replacement_respects_boundaries_of_the_original_text() {
        assert_eq!(
            replace_literal("mr mr", "mr", "mister ", true, true),
            "mister  mister "
        );
        assert_eq!(replace_literal("mrs", "mr", "x", true, true), "mrs");
        assert_eq!(
            replace_literal("don't", "n't", " not", false, true),
            "do not"
        );
    }

    #[test]
    fn brackets_and_parentheses_follow_python_matching() {
        assert_eq!(remove_bracketed("a [b> c <d] e [f"), "a  c  e [f");
        assert_eq!(remove_parenthesised("a () b ((c) d (e"), "a () b  d (e");
    }

    #[test]
    fn unicode_digits_have_their_script_values() {
        assert_eq!(decimal_value('٣'), Some(3));
        assert_eq!(decimal_value('९'), Some(9));
        assert_eq!(decimal_value('x'), None);
    }

    #[test]
    fn whitespace_includes_information_separators() {
        assert_eq!(collapse_spaces("a\u{1f}\u{a0} b"), "a b");
        assert_eq!(
            split_words(" a\u{1c}b ").collect::<Vec<_>>(),
            vec!["a", "b"]
        );
    }
}
