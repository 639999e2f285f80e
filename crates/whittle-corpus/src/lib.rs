//! Speech corpora from public-domain text for whittle: calibration, distillation and evaluation
//! audio with exact transcripts.
//!
//! - [`rdata`]: R serialization and lazy-load databases (Austen's novels in `r-cran-janeaustenr`).
//! - [`text`]: text sources (the novels, any UTF-8 file) as chapters of paragraphs.
//! - [`normalize`]: sentence segmentation and LibriSpeech-style transcripts.
//! - [`utterances`]: candidate utterances and the fixed train/dev/test sentence partition.
//! - [`engine`]: espeak-ng, flite, festival, mbrola and pico run as processes.
//! - [`augment`]: noise at a chosen SNR (white, pink, babble) and synthetic room reverb.
//! - [`synth`]: `whittle corpus synth`, parallel and resumable, LibriSpeech layout.
//! - [`spelling`]: modern spellings for period orthography ("surprize" -> "surprise").
//! - [`split_check`]: voice and sentence disjointness and word counts of the splits (`splits.json`).
//! - [`splits`]: voice sets and the standard splits `synth-train`, `synth-dev`,
//!   `synth-test-clean`, `synth-test-other`.
//!
//! ```no_run
//! use whittle_corpus::{splits::resolve_voices, synth::*, text::*, engine::EnginePaths};
//! let text = TextSource::parse("austen:emma", std::path::Path::new(JANEAUSTENR_DATA_DIR))?;
//! let voices = resolve_voices("flite:slt,espeak-ng:en-us+m3", &EnginePaths::default())?;
//! let config = SynthConfig::new("demo", text, voices, 0.1, 7, "out/demo".into());
//! let report = synthesize_corpus(&config, &NoProgress, None)?;
//! println!("{} utterances, {:.2} h", report.utterances, report.hours);
//! # Ok::<(), whittle_corpus::CorpusError>(())
//! ```

#![warn(missing_docs)]

pub mod augment;
pub mod engine;
mod error;
pub mod flac;
pub mod normalize;
pub mod rdata;
pub mod rng;
pub mod spelling;
pub mod split_check;
pub mod splits;
pub mod synth;
pub mod text;
pub mod utterances;
pub mod wav;

pub use error::{CorpusError, Result};

/// For tests: a system package that `scripts/setup.sh` installs (espeak-ng, flite, festival,
/// r-cran-janeaustenr) is missing. Under `WHITTLE_REQUIRE_ASSETS=1` (CI) that is a failure, so
/// a test cannot pass by skipping; otherwise the test prints why it skips.
#[doc(hidden)]
pub fn skip_missing(what: &str) {
    if std::env::var("WHITTLE_REQUIRE_ASSETS").as_deref() == Ok("1") {
        panic!("{what} (WHITTLE_REQUIRE_ASSETS=1; scripts/setup.sh installs it)");
    }
    eprintln!("skipping: {what}");
}
