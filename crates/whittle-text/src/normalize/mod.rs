//! Transcript normalisers that reproduce OpenAI Whisper's (`whisper/normalizers/`, MIT), so
//! that WER figures are comparable with the ones published for Whisper models.
//!
//! * [`EnglishNormalizer`]: `EnglishTextNormalizer` (contractions, titles, numbers to digits,
//!   British → American spelling, symbol removal).
//! * [`BasicNormalizer`]: `BasicTextNormalizer`, for other languages.
//! * [`normalize_numbers`]: `EnglishNumberNormalizer` on its own.
//!
//! The reference is a chain of Python regular expressions; each is reimplemented here with
//! Python's `re` semantics for Unicode strings (`\w` is a letter, digit or `_` of any script,
//! `\s` includes U+001C..U+001F), including its quirks, because a normaliser that differs from
//! the one a WER was measured with changes the WER. Unicode tables come from the
//! `unicode-normalization`/`unicode-properties` crates, whose Unicode version may be newer than
//! Python's `unicodedata`; characters assigned in between can be classified differently.

mod basic;
mod english;
mod numbers;
pub(crate) mod scan;

pub use basic::{remove_symbols, remove_symbols_and_diacritics, BasicNormalizer};
pub use english::EnglishNormalizer;
pub use numbers::normalize_numbers;
