//! Text sources for corpora: Jane Austen's six novels from Debian's `r-cran-janeaustenr`, and any
//! plain UTF-8 text file.
//!
//! Both become a [`Document`]: chapters of paragraphs. A line such as `CHAPTER 12`, `Chapter XIV`
//! or `CHAPTER I.` starts a chapter (the heading itself is not spoken); `VOLUME II` lines and
//! `* * *` separators are dropped; blank lines separate paragraphs; whatever precedes the first
//! chapter heading (title page, preface) is dropped when the text has headings at all.
//!
//! *Sense and Sensibility* chapter 1 is read aloud in the LibriVox clips whittle evaluates on, so
//! [`TextSource::load`] never returns it; it is available only through [`leak_check_paragraphs`].

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{CorpusError, IoContext, Result};
use crate::rdata::LazyLoadDb;

/// Where Debian's `r-cran-janeaustenr` installs its lazy-load database.
pub const JANEAUSTENR_DATA_DIR: &str = "/usr/lib/R/site-library/janeaustenr/data";

/// Largest plain-text file accepted.
pub const MAX_TEXT_BYTES: u64 = 256 << 20;

/// Jane Austen's six completed novels, in publication order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Novel {
    /// *Sense and Sensibility* (1811).
    SenseSensibility,
    /// *Pride and Prejudice* (1813).
    PridePrejudice,
    /// *Mansfield Park* (1814).
    MansfieldPark,
    /// *Emma* (1815).
    Emma,
    /// *Northanger Abbey* (1817).
    NorthangerAbbey,
    /// *Persuasion* (1817).
    Persuasion,
}

impl Novel {
    /// All six, in publication order.
    pub const ALL: [Novel; 6] = [
        Novel::SenseSensibility,
        Novel::PridePrejudice,
        Novel::MansfieldPark,
        Novel::Emma,
        Novel::NorthangerAbbey,
        Novel::Persuasion,
    ];

    /// The object's name in janeaustenr, also its id in whittle (`emma`, `prideprejudice`, ...).
    pub fn id(self) -> &'static str {
        match self {
            Novel::SenseSensibility => "sensesensibility",
            Novel::PridePrejudice => "prideprejudice",
            Novel::MansfieldPark => "mansfieldpark",
            Novel::Emma => "emma",
            Novel::NorthangerAbbey => "northangerabbey",
            Novel::Persuasion => "persuasion",
        }
    }

    /// 1-based position in publication order; the thousands of LibriSpeech-style chapter ids.
    pub fn number(self) -> u32 {
        Novel::ALL.iter().position(|&n| n == self).unwrap_or(0) as u32 + 1
    }

    /// Parses an id (`emma`) or a loose title (`sense-and-sensibility`, `Pride and Prejudice`).
    pub fn from_name(name: &str) -> Option<Novel> {
        let squashed: String = name
            .to_ascii_lowercase()
            .chars()
            .filter(|c| c.is_ascii_alphabetic())
            .collect();
        let squashed = squashed.replace("and", "");
        Novel::ALL
            .into_iter()
            .find(|n| n.id() == squashed || n.id() == squashed.replace("the", ""))
    }
}

/// A chapter: its 1-based number in reading order and its paragraphs (line breaks joined).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chapter {
    /// 1-based position in reading order (a new volume does not restart it).
    pub number: u32,
    /// Paragraphs with line breaks joined by spaces.
    pub paragraphs: Vec<String>,
}

/// A text split into chapters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Document {
    /// Short id used in utterance provenance (`emma`, or the file stem).
    pub id: String,
    /// Numeric book id for LibriSpeech-style chapter ids (1-6 for the novels, 0 for user files).
    pub book_number: u32,
    /// The chapters in reading order.
    pub chapters: Vec<Chapter>,
}

/// Reads one novel from the janeaustenr lazy-load database in `data_dir`.
pub fn read_austen_novel(data_dir: &Path, novel: Novel) -> Result<Document> {
    let db = LazyLoadDb::open(&data_dir.join("Rdata"))?;
    read_novel_from_db(&db, novel)
}

fn read_novel_from_db(db: &LazyLoadDb, novel: Novel) -> Result<Document> {
    let lines = db.read_strings(novel.id())?;
    let lines = lines.iter().map(|line| line.as_deref().unwrap_or(""));
    Ok(document_from_lines(novel.id(), novel.number(), lines))
}

/// Reads a plain-text file: UTF-8 required; empty, binary or non-UTF-8 input is an error naming
/// the file.
pub fn read_plain_text(path: &Path) -> Result<Document> {
    let text = read_text_file(path)?;
    let id = path
        .file_stem()
        .map(|stem| {
            stem.to_string_lossy()
                .chars()
                .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
                .collect::<String>()
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "text".to_string());
    Ok(document_from_lines(&id, 0, text.lines()))
}

/// Reads and validates a text file's contents.
pub fn read_text_file(path: &Path) -> Result<String> {
    let size = std::fs::metadata(path).at(path)?.len();
    if size > MAX_TEXT_BYTES {
        return Err(CorpusError::Config(format!(
            "text file {} is {size} bytes, more than the {MAX_TEXT_BYTES} accepted",
            path.display()
        )));
    }
    let bytes = std::fs::read(path).at(path)?;
    validate_text(&bytes, path).map(str::to_string)
}

/// Checks that `bytes` are non-empty UTF-8 text without control bytes; returns the text without a BOM.
pub fn validate_text<'a>(bytes: &'a [u8], path: &Path) -> Result<&'a str> {
    let bytes = bytes.strip_prefix(b"\xef\xbb\xbf").unwrap_or(bytes);
    if let Some(offset) = bytes
        .iter()
        .position(|&b| b < 0x20 && !matches!(b, b'\t' | b'\n' | b'\r' | 0x0c))
    {
        return Err(CorpusError::BinaryText {
            path: path.to_path_buf(),
            offset,
            byte: bytes[offset],
        });
    }
    let text = std::str::from_utf8(bytes).map_err(|err| CorpusError::NotUtf8 {
        path: path.to_path_buf(),
        offset: err.valid_up_to(),
    })?;
    if text.trim().is_empty() {
        return Err(CorpusError::EmptyText {
            path: path.to_path_buf(),
        });
    }
    Ok(text)
}

fn is_roman_or_arabic(token: &str) -> bool {
    let token = token.trim_end_matches('.');
    !token.is_empty()
        && (token.chars().all(|c| c.is_ascii_digit())
            || token.chars().all(|c| "IVXLCivxlc".contains(c)))
}

fn is_chapter_heading(line: &str) -> bool {
    let mut words = line.split_whitespace();
    match (words.next(), words.next(), words.next()) {
        (Some(first), Some(number), None) => {
            first.eq_ignore_ascii_case("chapter") && is_roman_or_arabic(number)
        }
        _ => false,
    }
}

fn is_volume_heading(line: &str) -> bool {
    let mut words = line.split_whitespace();
    match (words.next(), words.next()) {
        (Some(first), Some(number)) => {
            first.eq_ignore_ascii_case("volume") && is_roman_or_arabic(number)
        }
        _ => false,
    }
}

fn is_separator(line: &str) -> bool {
    let trimmed = line.trim();
    !trimmed.is_empty() && trimmed.chars().all(|c| c == '*' || c.is_whitespace())
}

/// Splits lines into chapters and paragraphs (see the module docs for the rules).
pub fn document_from_lines<'a>(
    id: &str,
    book_number: u32,
    lines: impl Iterator<Item = &'a str>,
) -> Document {
    let lines: Vec<&str> = lines.collect();
    let has_headings = lines.iter().any(|line| is_chapter_heading(line));
    let mut chapters: Vec<Chapter> = Vec::new();
    let mut current: Option<Chapter> = (!has_headings).then(|| Chapter {
        number: 1,
        paragraphs: Vec::new(),
    });
    let mut paragraph = String::new();
    let flush = |paragraph: &mut String, chapter: &mut Option<Chapter>| {
        if let Some(chapter) = chapter {
            if !paragraph.trim().is_empty() {
                chapter.paragraphs.push(paragraph.trim().to_string());
            }
        }
        paragraph.clear();
    };
    for line in lines {
        if has_headings && is_chapter_heading(line) {
            flush(&mut paragraph, &mut current);
            let number = chapters.len() as u32 + u32::from(current.is_some()) + 1;
            if let Some(done) = current.take() {
                chapters.push(done);
            }
            current = Some(Chapter {
                number,
                paragraphs: Vec::new(),
            });
        } else if line.trim().is_empty() || is_volume_heading(line) || is_separator(line) {
            flush(&mut paragraph, &mut current);
        } else {
            if !paragraph.is_empty() {
                paragraph.push(' ');
            }
            paragraph.push_str(line.trim());
        }
    }
    flush(&mut paragraph, &mut current);
    chapters.extend(current);
    Document {
        id: id.to_string(),
        book_number,
        chapters,
    }
}

/// Where corpus text comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TextSource {
    /// Some of Austen's novels from the janeaustenr database in `data_dir`.
    Austen {
        /// The directory holding `Rdata.rdx` and `Rdata.rdb`.
        data_dir: PathBuf,
        /// Which novels.
        novels: Vec<Novel>,
    },
    /// A plain UTF-8 text file.
    File(PathBuf),
}

impl TextSource {
    /// Parses `austen` (all six novels), `austen:emma,persuasion`, `austen-except:sensesensibility`,
    /// or a path to a text file. `austen_dir` is where janeaustenr's database lives.
    pub fn parse(spec: &str, austen_dir: &Path) -> Result<Self> {
        let austen = |novels| TextSource::Austen {
            data_dir: austen_dir.to_path_buf(),
            novels,
        };
        let parse_list = |list: &str| -> Result<Vec<Novel>> {
            list.split(',')
                .map(|name| {
                    Novel::from_name(name.trim())
                        .ok_or_else(|| CorpusError::UnknownTextSource(name.to_string()))
                })
                .collect()
        };
        if spec == "austen" {
            Ok(austen(Novel::ALL.to_vec()))
        } else if let Some(list) = spec.strip_prefix("austen:") {
            Ok(austen(parse_list(list)?))
        } else if let Some(list) = spec.strip_prefix("austen-except:") {
            let excluded = parse_list(list)?;
            Ok(austen(
                Novel::ALL
                    .into_iter()
                    .filter(|n| !excluded.contains(n))
                    .collect(),
            ))
        } else if Path::new(spec).exists() {
            Ok(TextSource::File(PathBuf::from(spec)))
        } else {
            Err(CorpusError::UnknownTextSource(spec.to_string()))
        }
    }

    /// A stable description recorded in `corpus.json`.
    pub fn describe(&self) -> String {
        match self {
            TextSource::Austen { novels, .. } => format!(
                "austen:{}",
                novels.iter().map(|n| n.id()).collect::<Vec<_>>().join(",")
            ),
            TextSource::File(path) => format!("file:{}", path.display()),
        }
    }

    /// Loads the documents. *Sense and Sensibility* chapter 1 is always left out.
    pub fn load(&self) -> Result<Vec<Document>> {
        match self {
            TextSource::Austen { data_dir, novels } => {
                let db = LazyLoadDb::open(&data_dir.join("Rdata"))?;
                novels
                    .iter()
                    .map(|&novel| {
                        let mut doc = read_novel_from_db(&db, novel)?;
                        if novel == Novel::SenseSensibility {
                            doc.chapters.retain(|c| c.number != LEAK_CHECK_CHAPTER);
                        }
                        Ok(doc)
                    })
                    .collect()
            }
            TextSource::File(path) => Ok(vec![read_plain_text(path)?]),
        }
    }
}

/// The chapter of *Sense and Sensibility* that the real LibriVox clips read.
pub const LEAK_CHECK_CHAPTER: u32 = 1;

/// The paragraphs of *Sense and Sensibility* chapter 1: the "leak check" list, kept out of every
/// corpus so that a model trained on synthetic data cannot have seen the real clips' text.
pub fn leak_check_paragraphs(data_dir: &Path) -> Result<Vec<String>> {
    let doc = read_austen_novel(data_dir, Novel::SenseSensibility)?;
    doc.chapters
        .into_iter()
        .find(|c| c.number == LEAK_CHECK_CHAPTER)
        .map(|c| c.paragraphs)
        .ok_or_else(|| CorpusError::NoSentences {
            source_name: "sensesensibility chapter 1".into(),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_chapters_and_paragraphs() {
        let lines = [
            "EMMA",
            "By Jane Austen",
            "VOLUME I",
            "CHAPTER I",
            "",
            "Emma Woodhouse, handsome, clever,",
            "and rich.",
            "",
            "Second paragraph.",
            "                          * * * * *",
            "Third.",
            "CHAPTER II.",
            "Next chapter.",
        ];
        let doc = document_from_lines("emma", 4, lines.into_iter());
        assert_eq!(doc.chapters.len(), 2);
        assert_eq!(doc.chapters[0].number, 1);
        assert_eq!(
            doc.chapters[0].paragraphs,
            [
                "Emma Woodhouse, handsome, clever, and rich.",
                "Second paragraph.",
                "Third."
            ]
        );
        assert_eq!(doc.chapters[1].number, 2);
        assert_eq!(doc.chapters[1].paragraphs, ["Next chapter."]);
    }

    #[test]
    fn text_without_headings_is_one_chapter() {
        let doc = document_from_lines("notes", 0, "One.\n\nTwo.".lines());
        assert_eq!(doc.chapters.len(), 1);
        assert_eq!(doc.chapters[0].paragraphs, ["One.", "Two."]);
    }

    #[test]
    fn bad_text_files_give_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cases: [(&str, &[u8], &str); 4] = [
            ("empty.txt", b"", "is empty"),
            ("blank.txt", b"  \n\n\t ", "is empty"),
            ("binary.bin", b"\x7fELF\x02\x01\x01\x00\x00", "looks binary"),
            ("latin1.txt", b"caf\xe9 au lait", "not valid UTF-8"),
        ];
        for (name, bytes, expected) in cases {
            let path = dir.path().join(name);
            std::fs::write(&path, bytes).unwrap();
            let err = read_plain_text(&path).unwrap_err().to_string();
            assert!(err.contains(expected), "{name}: {err}");
            assert!(
                err.contains(name),
                "{name}: error does not name the file: {err}"
            );
        }
        let missing = dir.path().join("missing.txt");
        let err = read_plain_text(&missing).unwrap_err().to_string();
        assert!(err.contains("missing.txt"), "{err}");
        let good = dir.path().join("good.txt");
        std::fs::write(&good, "\u{feff}Hello there. Fine words.\n").unwrap();
        let doc = read_plain_text(&good).unwrap();
        assert_eq!(doc.chapters[0].paragraphs, ["Hello there. Fine words."]);
    }

    #[test]
    fn parses_text_sources() {
        let dir = Path::new("/data");
        assert_eq!(
            TextSource::parse("austen:emma,Pride and Prejudice", dir).unwrap(),
            TextSource::Austen {
                data_dir: dir.into(),
                novels: vec![Novel::Emma, Novel::PridePrejudice]
            }
        );
        let TextSource::Austen { novels, .. } =
            TextSource::parse("austen-except:sense-and-sensibility", dir).unwrap()
        else {
            panic!("expected austen");
        };
        assert_eq!(novels.len(), 5);
        assert!(!novels.contains(&Novel::SenseSensibility));
        assert!(TextSource::parse("austen:sanditon", dir).is_err());
        assert!(TextSource::parse("/no/such/file.txt", dir).is_err());
    }

    #[test]
    fn reads_the_installed_janeaustenr_database() {
        let dir = Path::new(JANEAUSTENR_DATA_DIR);
        if !dir.join("Rdata.rdx").exists() {
            crate::skip_missing("r-cran-janeaustenr is not installed");
            return;
        }
        // Line counts as R reports them (`length(janeaustenr::emma)` ...).
        let db = LazyLoadDb::open(&dir.join("Rdata")).unwrap();
        for (novel, lines) in [
            (Novel::SenseSensibility, 12624),
            (Novel::PridePrejudice, 13030),
            (Novel::MansfieldPark, 15349),
            (Novel::Emma, 16235),
            (Novel::NorthangerAbbey, 7856),
            (Novel::Persuasion, 8328),
        ] {
            assert_eq!(
                db.read_strings(novel.id()).unwrap().len(),
                lines,
                "{novel:?}"
            );
        }
        let source = TextSource::parse("austen", dir).unwrap();
        let docs = source.load().unwrap();
        let chapters: Vec<usize> = docs.iter().map(|d| d.chapters.len()).collect();
        // 50 + 61 + 48 + 55 + 31 + 24 chapters, less Sense and Sensibility chapter 1.
        assert_eq!(chapters, [49, 61, 48, 55, 31, 24]);
        assert!(
            docs[1].chapters[0].paragraphs[0].starts_with("It is a truth universally acknowledged")
        );
        let leak = leak_check_paragraphs(dir).unwrap();
        assert!(leak[0].starts_with("The family of Dashwood had long been settled in Sussex."));
        let all_text: String = docs
            .iter()
            .flat_map(|d| d.chapters.iter().flat_map(|c| c.paragraphs.iter()))
            .map(String::as_str)
            .collect();
        assert!(!all_text.contains("The family of Dashwood had long been settled"));
    }
}
