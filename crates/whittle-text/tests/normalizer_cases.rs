//! Golden cases produced by Whisper's own Python normalisers (`fixtures/make_normalizer_cases.py`
//! wrote `fixtures/normalizer_cases.json`), plus a hand-written table per rule.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use whittle_text::{BasicNormalizer, EnglishNormalizer, TextError};

#[derive(Deserialize)]
struct EnglishCase {
    input: String,
    expected: String,
    expected_without_spellings: String,
}

#[derive(Deserialize)]
struct BasicCase {
    input: String,
    remove_diacritics: bool,
    split_letters: bool,
    expected: String,
}

#[derive(Deserialize)]
struct Cases {
    english: Vec<EnglishCase>,
    basic: Vec<BasicCase>,
}

fn fixture() -> Cases {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/normalizer_cases.json");
    let text = std::fs::read_to_string(&path).expect("fixture is part of the crate");
    serde_json::from_str(&text).expect("fixture is valid JSON")
}

/// Checks every case and reports all mismatches at once.
fn assert_all_match<'a>(what: &str, cases: impl Iterator<Item = (&'a str, &'a str, String)>) {
    let mut total = 0;
    let mut mismatches = Vec::new();
    for (input, expected, actual) in cases {
        total += 1;
        if actual != expected {
            mismatches.push(format!("{input:?}: expected {expected:?}, got {actual:?}"));
        }
    }
    println!(
        "{what}: {}/{total} cases match Whisper",
        total - mismatches.len()
    );
    assert!(mismatches.is_empty(), "{what}:\n{}", mismatches.join("\n"));
}

#[test]
fn english_matches_whisper_without_spelling_map() {
    let cases = fixture();
    assert!(cases.english.len() >= 40);
    let normalizer = EnglishNormalizer::without_spellings();
    assert_all_match(
        "english, no spelling map",
        cases.english.iter().map(|c| {
            (
                c.input.as_str(),
                c.expected_without_spellings.as_str(),
                normalizer.normalize(&c.input),
            )
        }),
    );
}

/// Whisper's `english.json` is not vendored; set `WHITTLE_SPELLINGS` to its path to run this.
#[test]
fn english_matches_whisper_with_spelling_map() {
    let Some(path) = std::env::var_os("WHITTLE_SPELLINGS").map(PathBuf::from) else {
        println!("skipped: set WHITTLE_SPELLINGS to whisper/normalizers/english.json");
        return;
    };
    let normalizer = EnglishNormalizer::from_spelling_file(&path).expect("spelling map loads");
    assert!(
        normalizer.spellings().len() > 1000,
        "{} has too few entries",
        path.display()
    );
    let cases = fixture();
    assert_all_match(
        "english, Whisper spelling map",
        cases.english.iter().map(|c| {
            (
                c.input.as_str(),
                c.expected.as_str(),
                normalizer.normalize(&c.input),
            )
        }),
    );
}

#[test]
fn basic_matches_whisper() {
    let cases = fixture();
    assert_all_match(
        "basic",
        cases.basic.iter().map(|c| {
            let normalizer = BasicNormalizer {
                remove_diacritics: c.remove_diacritics,
                split_letters: c.split_letters,
            };
            (
                c.input.as_str(),
                c.expected.as_str(),
                normalizer.normalize(&c.input),
            )
        }),
    );
}

#[test]
fn english_rule_table() {
    let spellings: HashMap<String, String> = [("colour", "color"), ("harbour", "harbor")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let normalizer = EnglishNormalizer::with_spellings(spellings);
    let table = [
        // casing and whitespace
        ("HeLLo   World", "hello world"),
        ("\tline\none\n", "line one"),
        // punctuation
        ("Wait, what?!", "wait what"),
        ("e.g. this", "e g this"),
        ("well-known", "well known"),
        // brackets and parentheses
        ("keep [drop this] keep", "keep keep"),
        ("keep <noise> keep", "keep keep"),
        ("keep (aside) keep", "keep keep"),
        // fillers
        ("um so uh yes", "so yes"),
        ("hmm mhm", ""),
        ("umbrella", "umbrella"),
        // contractions
        ("won't", "will not"),
        ("can't", "can not"),
        ("let's", "let us"),
        ("we're", "we are"),
        ("they've", "they have"),
        ("I'll", "i will"),
        ("I'd", "i would"),
        ("I'm", "i am"),
        ("didn't", "did not"),
        ("it's", "it is"),
        ("he's been", "he has been"),
        ("gonna", "going to"),
        // titles
        ("Mr. Brown", "mister brown"),
        ("Dr Who", "doctor who"),
        ("Sammy Davis Jr.", "sammy davis junior"),
        // diacritics and symbols
        ("Crème brûlée", "creme brulee"),
        ("Straße", "strasse"),
        // numbers
        ("twenty one", "21"),
        ("one hundred and five", "105"),
        ("two thousand and twenty three", "2023"),
        ("nineteen ninety", "1990"),
        ("three point one four", "3.14"),
        ("first", "1st"),
        ("twenty first", "21st"),
        ("the nineties", "the 90s"),
        ("fifty percent", "50%"),
        ("twenty dollars", "$20"),
        ("$5.50", "$5.50"),
        ("five dollars and fifty cents", "$5.50"),
        ("fifty cents", "¢50"),
        ("two and a half", "2.5"),
        ("minus seven", "-7"),
        ("double five", "55"),
        ("1,000,000", "1000000"),
        ("the 1960s", "the 1960s"),
        ("one", "one"),
        // spellings
        ("The colour of the harbour", "the color of the harbor"),
    ];
    assert!(table.len() >= 40);
    for (input, expected) in table {
        assert_eq!(normalizer.normalize(input), expected, "input {input:?}");
    }
}

#[test]
fn spelling_file_errors_name_the_file() {
    let dir = std::env::temp_dir().join(format!("whittle-text-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("english.json");
    std::fs::write(&bad, "[1, 2]").unwrap();
    let error = EnglishNormalizer::from_spelling_file(&bad).unwrap_err();
    assert!(matches!(error, TextError::ParseSpellings { .. }));
    assert!(error.to_string().contains("english.json"), "{error}");

    std::fs::write(&bad, r#"{"colour": "color"}"#).unwrap();
    let normalizer = EnglishNormalizer::from_spelling_file(&bad).unwrap();
    assert_eq!(normalizer.normalize("colour"), "color");

    let missing = dir.join("missing.json");
    let error = EnglishNormalizer::from_spelling_file(&missing).unwrap_err();
    assert!(matches!(error, TextError::ReadSpellings { .. }));
    assert!(error.to_string().contains("missing.json"), "{error}");
    std::fs::remove_dir_all(&dir).unwrap();
}
