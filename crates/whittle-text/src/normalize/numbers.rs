//! Spelled-out numbers to digits, following `EnglishNumberNormalizer` of Whisper's
//! `whisper/normalizers/english.py`.
//!
//! The reference is a left-to-right state machine over whitespace-separated words that keeps a
//! pending value, either a Python `int` or a digit string, and an optional currency/sign prefix.
//! Which of the two kinds the value has decides later steps (`"twenty" "one"` adds,
//! `"one" "twenty"` concatenates), so [`Value`] keeps the distinction. Integers may grow past
//! any machine word (`"nine decillion"`), so they are kept as decimal digit strings.

use super::scan;

/// A natural number of any size, as canonical ASCII decimal digits (no leading zeros).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Natural(String);

impl Natural {
    fn from_small(value: u32) -> Self {
        Natural(value.to_string())
    }

    fn power_of_ten(exponent: usize) -> Self {
        Natural(format!("1{}", "0".repeat(exponent)))
    }

    fn from_digit_values(digits: impl IntoIterator<Item = u8>) -> Self {
        let text: String = digits
            .into_iter()
            .map(|d| char::from(b'0' + d))
            .skip_while(|&c| c == '0')
            .collect();
        if text.is_empty() {
            Natural("0".to_string())
        } else {
            Natural(text)
        }
    }

    fn is_zero(&self) -> bool {
        self.0 == "0"
    }

    /// `value % 10^k == 0`.
    fn divisible_by_power_of_ten(&self, k: usize) -> bool {
        self.is_zero() || (self.0.len() > k && self.0.bytes().rev().take(k).all(|b| b == b'0'))
    }

    fn add(&self, other: &Natural) -> Natural {
        let (a, b) = (self.0.as_bytes(), other.0.as_bytes());
        let mut digits = Vec::with_capacity(a.len().max(b.len()) + 1);
        let mut carry = 0u8;
        for k in 0..a.len().max(b.len()) {
            let da = if k < a.len() {
                a[a.len() - 1 - k] - b'0'
            } else {
                0
            };
            let db = if k < b.len() {
                b[b.len() - 1 - k] - b'0'
            } else {
                0
            };
            let sum = da + db + carry;
            digits.push(sum % 10);
            carry = sum / 10;
        }
        if carry > 0 {
            digits.push(carry);
        }
        Natural::from_digit_values(digits.into_iter().rev())
    }

    fn times_power_of_ten(&self, exponent: usize) -> Natural {
        if self.is_zero() {
            return self.clone();
        }
        Natural(format!("{}{}", self.0, "0".repeat(exponent)))
    }

    /// `value // 1000 * 1000 + value % 1000 * 10^exponent`: a multiplier scales only the
    /// last group of three digits ("two thousand five hundred" = 2000 + 5 * 100).
    fn scale_last_group(&self, exponent: usize) -> Natural {
        let split = self.0.len().saturating_sub(3);
        let thousands =
            Natural::from_digit_values(self.0[..split].bytes().map(|b| b - b'0').chain([0, 0, 0]));
        let residual = Natural::from_digit_values(self.0[split..].bytes().map(|b| b - b'0'));
        thousands.add(&residual.times_power_of_ten(exponent))
    }
}

/// The pending number: an `int` or a `str` in the reference.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Value {
    Int(Natural),
    Text(String),
}

impl Value {
    /// Python's `str(value)`.
    fn render(&self) -> String {
        match self {
            Value::Int(n) => n.0.clone(),
            Value::Text(t) => t.clone(),
        }
    }
}

/// Python's `str(value or "")`: nothing pending and integer zero both give "".
fn render_or_empty(value: Option<&Value>) -> String {
    match value {
        None => String::new(),
        Some(Value::Int(n)) if n.is_zero() => String::new(),
        Some(v) => v.render(),
    }
}

/// The reference's `re.match(r"^\d+(\.\d+)?$", word)`, returning the digit values of the
/// integer and fractional parts.
fn parse_plain_number(word: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let (integer, fraction) = match word.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (word, None),
    };
    let digits = |part: &str| -> Option<Vec<u8>> {
        if part.is_empty() {
            return None;
        }
        part.chars().map(scan::decimal_value).collect()
    };
    let integer = digits(integer)?;
    let fraction = match fraction {
        Some(f) => digits(f)?,
        None => Vec::new(),
    };
    Some((integer, fraction))
}

/// Python's `Fraction(text) * 10^exponent` when it is an integer, for the strings the state
/// machine builds (digits and at most one period, e.g. "1.5", ".5", "5."); `None` where the
/// reference's `Fraction` raises or the product is not whole.
fn decimal_text_times_power_of_ten(text: &str, exponent: usize) -> Option<Natural> {
    let (integer, fraction) = text.split_once('.').unwrap_or((text, ""));
    let integer: Vec<u8> = integer
        .chars()
        .map(scan::decimal_value)
        .collect::<Option<_>>()?;
    let mut fraction: Vec<u8> = fraction
        .chars()
        .map(scan::decimal_value)
        .collect::<Option<_>>()?;
    if integer.is_empty() && fraction.is_empty() {
        return None;
    }
    while fraction.last() == Some(&0) {
        fraction.pop();
    }
    if fraction.len() > exponent {
        return None;
    }
    let padding = exponent - fraction.len();
    Some(Natural::from_digit_values(
        integer
            .into_iter()
            .chain(fraction)
            .chain(std::iter::repeat_n(0, padding)),
    ))
}

const ONES: [&str; 19] = [
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 8] = [
    "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];
/// Multiplier names with their powers of ten.
const MULTIPLIERS: [(&str, usize); 12] = [
    ("hundred", 2),
    ("thousand", 3),
    ("million", 6),
    ("billion", 9),
    ("trillion", 12),
    ("quadrillion", 15),
    ("quintillion", 18),
    ("sextillion", 21),
    ("septillion", 24),
    ("octillion", 27),
    ("nonillion", 30),
    ("decillion", 33),
];

fn is_zero_word(word: &str) -> bool {
    matches!(word, "o" | "oh" | "zero")
}

fn ones_value(word: &str) -> Option<u32> {
    ONES.iter().position(|&w| w == word).map(|i| i as u32 + 1)
}

/// Plurals ("sixes") and ordinals ("fourth"). The ordinals are built as Whisper builds them,
/// name + "th" (or "h" after a "t"), so "ninth" is not among them but "nineth" is.
fn ones_suffixed_value(word: &str) -> Option<(u32, &'static str)> {
    match word {
        "zeroth" => return Some((0, "th")),
        "first" => return Some((1, "st")),
        "second" => return Some((2, "nd")),
        "third" => return Some((3, "rd")),
        "fifth" => return Some((5, "th")),
        "twelfth" => return Some((12, "th")),
        "sixes" => return Some((6, "s")),
        _ => {}
    }
    if let Some(value) = word.strip_suffix('s').and_then(ones_value) {
        return (value != 6).then_some((value, "s"));
    }
    let value = word
        .strip_suffix("th")
        .filter(|base| !base.ends_with('t'))
        .and_then(ones_value)
        .or_else(|| {
            let base = word.strip_suffix('h').filter(|base| base.ends_with('t'))?;
            ones_value(base)
        })?;
    (value > 3 && value != 5 && value != 12).then_some((value, "th"))
}

fn tens_value(word: &str) -> Option<u32> {
    TENS.iter()
        .position(|&w| w == word)
        .map(|i| (i as u32 + 2) * 10)
}

/// "twenties" and "twentieth".
fn tens_suffixed_value(word: &str) -> Option<(u32, &'static str)> {
    if let Some(stem) = word.strip_suffix("ies") {
        return tens_value(&format!("{stem}y")).map(|v| (v, "s"));
    }
    let stem = word.strip_suffix("ieth")?;
    tens_value(&format!("{stem}y")).map(|v| (v, "th"))
}

fn multiplier_exponent(word: &str) -> Option<usize> {
    MULTIPLIERS
        .iter()
        .find(|(w, _)| *w == word)
        .map(|&(_, e)| e)
}

/// "hundreds" and "thousandth".
fn multiplier_suffixed(word: &str) -> Option<(usize, &'static str)> {
    if let Some(e) = word.strip_suffix('s').and_then(multiplier_exponent) {
        return Some((e, "s"));
    }
    word.strip_suffix("th")
        .and_then(multiplier_exponent)
        .map(|e| (e, "th"))
}

/// Signs that apply to the number after them.
fn preceding_prefix(word: &str) -> Option<char> {
    match word {
        "minus" | "negative" => Some('-'),
        "plus" | "positive" => Some('+'),
        _ => None,
    }
}

/// Currencies that apply to the number before them.
fn following_prefix(word: &str) -> Option<char> {
    match word {
        "pound" | "pounds" => Some('£'),
        "euro" | "euros" => Some('€'),
        "dollar" | "dollars" => Some('$'),
        "cent" | "cents" => Some('¢'),
        _ => None,
    }
}

fn is_suffixer(word: &str) -> bool {
    matches!(word, "per" | "percent")
}

fn is_special(word: &str) -> bool {
    matches!(word, "and" | "double" | "triple" | "point")
}

fn is_prefix_symbol(c: char) -> bool {
    matches!(c, '-' | '+' | '£' | '€' | '$' | '¢')
}

/// Words that can follow "point" as a digit.
fn is_decimal_word(word: &str) -> bool {
    ones_value(word).is_some() || tens_value(word).is_some() || is_zero_word(word)
}

/// Any word the state machine treats specially (the reference's `self.words`).
fn is_number_word(word: &str) -> bool {
    is_decimal_word(word)
        || ones_suffixed_value(word).is_some()
        || tens_suffixed_value(word).is_some()
        || multiplier_exponent(word).is_some()
        || multiplier_suffixed(word).is_some()
        || preceding_prefix(word).is_some()
        || following_prefix(word).is_some()
        || is_suffixer(word)
        || is_special(word)
}

/// Adds a ones word (0..=19) to the pending value: into the free last digit(s) of an integer
/// ("twenty" "one"), replacing the trailing zero after a tens word in a digit string, or by
/// concatenation otherwise ("one" "two" → "12").
fn combine_ones(value: Option<Value>, ones: u32, prev: Option<&str>) -> Value {
    let prev_is_ones = prev.is_some_and(|p| ones_value(p).is_some());
    let prev_is_tens = prev.is_some_and(|p| tens_value(p).is_some());
    match value {
        None => Value::Int(Natural::from_small(ones)),
        Some(Value::Int(n)) if !prev_is_ones => {
            let free_digits = if ones < 10 { 1 } else { 2 };
            if n.divisible_by_power_of_ten(free_digits) {
                Value::Int(n.add(&Natural::from_small(ones)))
            } else {
                Value::Text(format!("{}{ones}", n.0))
            }
        }
        Some(v) => {
            let mut text = v.render();
            if prev_is_tens && ones < 10 && text.ends_with('0') {
                text.pop();
            }
            Value::Text(format!("{text}{ones}"))
        }
    }
}

/// Adds a tens word to the pending value ("one hundred" "twenty" → 120, "nineteen" "twenty"
/// → "1920").
fn combine_tens(value: Option<Value>, tens: u32) -> Value {
    match value {
        None => Value::Int(Natural::from_small(tens)),
        Some(Value::Text(t)) => Value::Text(format!("{t}{tens}")),
        Some(Value::Int(n)) if n.divisible_by_power_of_ten(2) => {
            Value::Int(n.add(&Natural::from_small(tens)))
        }
        Some(Value::Int(n)) => Value::Text(format!("{}{tens}", n.0)),
    }
}

/// State of one pass over the words.
#[derive(Default)]
struct Machine {
    prefix: Option<char>,
    value: Option<Value>,
    output: Vec<String>,
}

impl Machine {
    /// The reference's `output()`: applies and clears the prefix, clears the value.
    fn emit(&mut self, text: impl Into<String>) {
        let mut text = text.into();
        if let Some(prefix) = self.prefix.take() {
            text.insert(0, prefix);
        }
        self.value = None;
        self.output.push(text);
    }

    fn emit_value(&mut self) {
        if let Some(value) = self.value.take() {
            self.emit(value.render());
        }
    }

    fn run(mut self, words: &[&str]) -> Vec<String> {
        let mut skip = false;
        for (index, &current) in words.iter().enumerate() {
            if skip {
                skip = false;
                continue;
            }
            let prev = index.checked_sub(1).map(|i| words[i]);
            let next = words.get(index + 1).copied();
            skip = self.step(prev, current, next);
        }
        self.emit_value();
        self.output
    }

    /// Processes one word; returns whether the next word was consumed too.
    fn step(&mut self, prev: Option<&str>, current: &str, next: Option<&str>) -> bool {
        let next_is_numeric = next.is_some_and(|w| parse_plain_number(w).is_some());
        let next_is_number_word = next.is_some_and(is_number_word);
        let first = current.chars().next();
        let symbol = first.filter(|&c| is_prefix_symbol(c));
        let unsigned = symbol.map_or(current, |c| &current[c.len_utf8()..]);

        if let Some((integer, fraction)) = parse_plain_number(unsigned) {
            if let Some(value) = self.value.take() {
                if let Value::Text(text) = &value {
                    if text.ends_with('.') {
                        // decimals and IP-address parts after "point"
                        self.value = Some(Value::Text(format!("{text}{current}")));
                        return false;
                    }
                }
                self.emit(value.render());
            }
            if symbol.is_some() {
                self.prefix = symbol;
            }
            self.value = Some(if fraction.iter().all(|&d| d == 0) {
                Value::Int(Natural::from_digit_values(integer))
            } else {
                Value::Text(unsigned.to_string())
            });
        } else if !is_number_word(current) {
            self.emit_value();
            self.emit(current);
        } else if is_zero_word(current) {
            self.value = Some(Value::Text(render_or_empty(self.value.as_ref()) + "0"));
        } else if let Some(ones) = ones_value(current) {
            self.value = Some(combine_ones(self.value.take(), ones, prev));
        } else if let Some((ones, suffix)) = ones_suffixed_value(current) {
            let combined = combine_ones(self.value.take(), ones, prev);
            self.emit(combined.render() + suffix);
        } else if let Some(tens) = tens_value(current) {
            self.value = Some(combine_tens(self.value.take(), tens));
        } else if let Some((tens, suffix)) = tens_suffixed_value(current) {
            let combined = combine_tens(self.value.take(), tens);
            self.emit(combined.render() + suffix);
        } else if let Some(exponent) = multiplier_exponent(current) {
            self.value = Some(Value::Int(match self.value.take() {
                None => Natural::power_of_ten(exponent),
                Some(Value::Int(n)) => n.scale_last_group(exponent),
                Some(Value::Text(text)) => match decimal_text_times_power_of_ten(&text, exponent) {
                    Some(n) => n,
                    None => {
                        self.emit(text);
                        Natural::power_of_ten(exponent)
                    }
                },
            }));
        } else if let Some((exponent, suffix)) = multiplier_suffixed(current) {
            match self.value.take() {
                None => self.emit(Natural::power_of_ten(exponent).0 + suffix),
                Some(Value::Int(n)) => self.emit(n.scale_last_group(exponent).0 + suffix),
                Some(Value::Text(text)) => match decimal_text_times_power_of_ten(&text, exponent) {
                    Some(n) => self.emit(n.0 + suffix),
                    None => {
                        self.emit(text);
                        self.emit(Natural::power_of_ten(exponent).0 + suffix);
                    }
                },
            }
        } else if let Some(sign) = preceding_prefix(current) {
            self.emit_value();
            if next_is_number_word || next_is_numeric {
                self.prefix = Some(sign);
            } else {
                self.emit(current);
            }
        } else if let Some(currency) = following_prefix(current) {
            match self.value.take() {
                Some(value) => {
                    self.prefix = Some(currency);
                    self.emit(value.render());
                }
                None => self.emit(current),
            }
        } else if is_suffixer(current) {
            match self.value.take() {
                None => self.emit(current),
                Some(value) if current == "percent" => self.emit(value.render() + "%"),
                Some(value) if next == Some("cent") => {
                    self.emit(value.render() + "%");
                    return true;
                }
                Some(value) => {
                    self.emit(value.render());
                    self.emit(current);
                }
            }
        } else if !next_is_number_word && !next_is_numeric {
            // a special word ("and", "double", "triple", "point") before a non-number
            self.emit_value();
            self.emit(current);
        } else if current == "and" {
            // "and" is silent after a multiplier ("one hundred and five")
            if prev.and_then(multiplier_exponent).is_none() {
                self.emit_value();
                self.emit(current);
            }
        } else if current == "double" || current == "triple" {
            let repeated = next.filter(|&w| ones_value(w).is_some() || is_zero_word(w));
            match repeated {
                Some(word) => {
                    let digit = ones_value(word).unwrap_or(0).to_string();
                    let times = if current == "double" { 2 } else { 3 };
                    let text = render_or_empty(self.value.as_ref()) + &digit.repeat(times);
                    self.value = Some(Value::Text(text));
                    return true;
                }
                None => {
                    self.emit_value();
                    self.emit(current);
                }
            }
        } else if current == "point" {
            // Whisper drops "point" silently when the next word is a number word but not a digit
            if next.is_some_and(is_decimal_word) || next_is_numeric {
                self.value = Some(Value::Text(render_or_empty(self.value.as_ref()) + "."));
            }
        }
        false
    }
}

/// `\band\s+a\s+half\b`: returns the byte length of a match starting at `at`.
fn and_a_half_at(s: &str, at: usize) -> Option<usize> {
    if !scan::is_boundary(s[..at].chars().next_back(), Some('a')) {
        return None;
    }
    let mut rest = s[at..].strip_prefix("and")?;
    for word in ["a", "half"] {
        let trimmed = rest.trim_start_matches(scan::is_space);
        if trimmed.len() == rest.len() {
            return None;
        }
        rest = trimmed.strip_prefix(word)?;
    }
    if !scan::is_boundary(Some('f'), rest.chars().next()) {
        return None;
    }
    Some(s.len() - at - rest.len())
}

/// `re.split(r"\band\s+a\s+half\b", s)`.
fn split_and_a_half(s: &str) -> Vec<&str> {
    let mut segments = Vec::new();
    let (mut at, mut segment_start) = (0, 0);
    while at < s.len() {
        if let Some(len) = and_a_half_at(s, at) {
            segments.push(&s[segment_start..at]);
            at += len;
            segment_start = at;
        } else {
            at += s[at..].chars().next().map_or(1, char::len_utf8);
        }
    }
    segments.push(&s[segment_start..]);
    segments
}

/// Rewrites "<number> and a half" as "<number> point five", and separates digits from letters
/// except ordinal/plural suffixes ("21 st" → "21st").
fn preprocess(s: &str) -> String {
    let segments = split_and_a_half(s);
    let last = segments.len() - 1;
    let mut parts: Vec<&str> = Vec::new();
    for (index, segment) in segments.iter().enumerate() {
        let Some(last_word) = scan::split_words(segment).last() else {
            continue;
        };
        parts.push(segment);
        if index != last {
            let numeric = is_decimal_word(last_word) || multiplier_exponent(last_word).is_some();
            parts.push(if numeric { "point five" } else { "and a half" });
        }
    }
    let joined = parts.join(" ");

    // a space at each ASCII letter/digit boundary
    let mut spaced = String::with_capacity(joined.len() + 8);
    let mut prev: Option<char> = None;
    for c in joined.chars() {
        if let Some(p) = prev {
            let letter_digit = p.is_ascii_lowercase() && c.is_ascii_digit();
            let digit_letter = p.is_ascii_digit() && c.is_ascii_lowercase();
            if letter_digit || digit_letter {
                spaced.push(' ');
            }
        }
        spaced.push(c);
        prev = Some(c);
    }
    join_number_suffixes(&spaced)
}

/// `re.sub(r"([0-9])\s+(st|nd|rd|th|s)\b", r"\1\2", s)`.
fn join_number_suffixes(s: &str) -> String {
    let chars: Vec<char> = s.chars().collect();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if chars[i].is_ascii_digit() {
            let mut j = i + 1;
            while j < chars.len() && scan::is_space(chars[j]) {
                j += 1;
            }
            if j > i + 1 {
                let suffix = ["st", "nd", "rd", "th", "s"].into_iter().find(|suffix| {
                    let len = suffix.chars().count();
                    chars.len() >= j + len
                        && chars[j..j + len].iter().copied().eq(suffix.chars())
                        && !chars.get(j + len).copied().is_some_and(scan::is_word)
                });
                if let Some(suffix) = suffix {
                    out.push(chars[i]);
                    out.push_str(suffix);
                    i = j + suffix.len();
                    continue;
                }
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

fn is_currency(c: char) -> bool {
    matches!(c, '€' | '£' | '$')
}

/// Length of the run of ASCII digits at the start of `chars`.
fn ascii_digit_run(chars: &[char]) -> usize {
    chars.iter().take_while(|c| c.is_ascii_digit()).count()
}

/// `[0-9]{1,2}\b` at the start of `chars`: the one or two digits matched.
fn one_or_two_digits(chars: &[char]) -> Option<usize> {
    (1..=2).rev().find(|&len| {
        ascii_digit_run(chars) >= len && !chars.get(len).copied().is_some_and(scan::is_word)
    })
}

/// Digits as Python's `int()` then `str()` prints them (leading zeros dropped).
fn strip_leading_zeros(digits: &[char]) -> String {
    Natural::from_digit_values(digits.iter().map(|&c| c as u8 - b'0')).0
}

/// Combines currency and cents ("$2 and ¢7" → "$2.07", "$0.50" → "¢50") and writes a lone
/// "1"/"1s" as "one"/"ones".
fn postprocess(s: &str) -> String {
    // ([€£$])([0-9]+) (?:and )?¢([0-9]{1,2})\b  →  currency integer . cents
    let chars: Vec<char> = s.chars().collect();
    let mut combined = String::with_capacity(s.len());
    let mut i = 0;
    while i < chars.len() {
        if is_currency(chars[i]) {
            let integer = ascii_digit_run(&chars[i + 1..]);
            let after_space = i + 1 + integer + 1;
            if integer > 0 && chars.get(i + 1 + integer) == Some(&' ') {
                let mut cent_sign = after_space;
                if chars[after_space..].starts_with(&['a', 'n', 'd', ' ']) {
                    cent_sign += 4;
                }
                if chars.get(cent_sign) == Some(&'¢') {
                    if let Some(cents) = one_or_two_digits(&chars[cent_sign + 1..]) {
                        let cents_text = strip_leading_zeros(&chars[cent_sign + 1..][..cents]);
                        combined.push(chars[i]);
                        combined.extend(&chars[i + 1..i + 1 + integer]);
                        combined.push_str(&format!(".{cents_text:0>2}"));
                        i = cent_sign + 1 + cents;
                        continue;
                    }
                }
            }
        }
        combined.push(chars[i]);
        i += 1;
    }

    // [€£$]0.([0-9]{1,2})\b  →  ¢cents   (the reference's "." matches any character)
    let chars: Vec<char> = combined.chars().collect();
    let mut cents_only = String::with_capacity(combined.len());
    let mut i = 0;
    while i < chars.len() {
        if is_currency(chars[i])
            && chars.get(i + 1) == Some(&'0')
            && chars.get(i + 2).is_some_and(|&c| c != '\n')
        {
            if let Some(cents) = one_or_two_digits(&chars[(i + 3).min(chars.len())..]) {
                cents_only.push('¢');
                cents_only.push_str(&strip_leading_zeros(&chars[i + 3..i + 3 + cents]));
                i += 3 + cents;
                continue;
            }
        }
        cents_only.push(chars[i]);
        i += 1;
    }

    // \b1(s?)\b  →  one\1
    let chars: Vec<char> = cents_only.chars().collect();
    let mut out = String::with_capacity(cents_only.len() + 8);
    let mut i = 0;
    while i < chars.len() {
        let prev = i.checked_sub(1).map(|p| chars[p]);
        if chars[i] == '1' && !prev.is_some_and(scan::is_word) {
            let ends_word = |at: usize| !chars.get(at).copied().is_some_and(scan::is_word);
            if chars.get(i + 1) == Some(&'s') && ends_word(i + 2) {
                out.push_str("ones");
                i += 2;
                continue;
            }
            if ends_word(i + 1) {
                out.push_str("one");
                i += 1;
                continue;
            }
        }
        out.push(chars[i]);
        i += 1;
    }
    out
}

/// Converts spelled-out numbers in lower-cased, punctuation-free text to digits, the way
/// Whisper's `EnglishNumberNormalizer` does: "twenty one" → "21", "one hundred and five" →
/// "105", "twenty first" → "21st", "one point five" → "1.5", "fifty percent" → "50%",
/// "twenty dollars" → "$20", "double five" → "55", "two and a half" → "2.5".
///
/// Its quirks are kept on purpose, since scores are only comparable with the reference's:
/// e.g. a lone "1" is written "one", "o" and "oh" are zeros, "ninth" is not an ordinal.
pub fn normalize_numbers(s: &str) -> String {
    let preprocessed = preprocess(s);
    let words: Vec<&str> = scan::split_words(&preprocessed).collect();
    postprocess(&Machine::default().run(&words).join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_arithmetic_matches_integers() {
        // only the last three digits are scaled: 2000 + 25 * 10^6, as in the reference
        assert_eq!(Natural::from_small(2025).scale_last_group(6).0, "25002000");
        assert_eq!(Natural::from_small(125).scale_last_group(3).0, "125000");
        assert_eq!(
            Natural::from_small(1999).add(&Natural::from_small(1)).0,
            "2000"
        );
        assert!(Natural::from_small(100).divisible_by_power_of_ten(2));
        assert!(!Natural::from_small(10).divisible_by_power_of_ten(2));
        assert!(Natural::from_small(0).divisible_by_power_of_ten(2));
        assert!(!Natural::from_small(5).divisible_by_power_of_ten(1));
    }

    #[test]
    fn large_numbers_do_not_overflow() {
        assert_eq!(
            normalize_numbers("nine hundred ninety nine decillion"),
            format!("999{}", "0".repeat(33))
        );
    }

    #[test]
    fn decimal_text_scaling_follows_fraction_arithmetic() {
        assert_eq!(
            decimal_text_times_power_of_ten("1.5", 3).map(|n| n.0),
            Some("1500".into())
        );
        assert_eq!(
            decimal_text_times_power_of_ten(".25", 2).map(|n| n.0),
            Some("25".into())
        );
        assert_eq!(decimal_text_times_power_of_ten("1.234", 2), None);
        assert_eq!(decimal_text_times_power_of_ten("1.$5", 2), None);
        assert_eq!(decimal_text_times_power_of_ten(".", 2), None);
    }

    #[test]
    fn suffixed_words_are_recognised_like_the_reference() {
        assert_eq!(ones_suffixed_value("eighth"), Some((8, "th")));
        assert_eq!(ones_suffixed_value("nineth"), Some((9, "th")));
        assert_eq!(ones_suffixed_value("ninth"), None);
        assert_eq!(ones_suffixed_value("sixs"), None);
        assert_eq!(ones_suffixed_value("sixes"), Some((6, "s")));
        assert_eq!(tens_suffixed_value("forties"), Some((40, "s")));
        assert_eq!(multiplier_suffixed("thousandth"), Some((3, "th")));
    }
}
