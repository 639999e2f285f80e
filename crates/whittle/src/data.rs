//! Evaluation and training datasets: a LibriSpeech-layout folder (`*/*/*.trans.txt` beside
//! the audio) or a JSONL manifest (`{"audio": path, "text": ...}` per line, paths relative to
//! the manifest's folder).

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// One utterance of a dataset.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Utterance {
    /// Identifier (LibriSpeech id, the manifest's `id`, or the audio file stem).
    pub id: String,
    /// Audio file.
    pub audio: PathBuf,
    /// Reference transcript, when known.
    pub text: Option<String>,
}

#[derive(serde::Deserialize)]
struct ManifestLine {
    #[serde(default)]
    id: Option<String>,
    audio: String,
    #[serde(default)]
    text: Option<String>,
}

/// Audio extensions searched for beside a LibriSpeech transcript, in order.
const AUDIO_EXTENSIONS: &[&str] = &["flac", "wav", "mp3", "ogg", "raw"];

/// Read a dataset from a JSONL manifest or a LibriSpeech-layout folder. Manifest lines may
/// lack a transcript (audio to transcribe, calibration audio).
pub fn load_dataset(path: &Path) -> Result<Vec<Utterance>> {
    load(path, Transcripts::Optional)
}

/// [`load_dataset`] for scoring: a manifest line without a transcript (no `text`, or `null`) is
/// refused, naming the file and line. An empty string is an explicit empty transcript.
pub fn load_labelled_dataset(path: &Path) -> Result<Vec<Utterance>> {
    load(path, Transcripts::Required)
}

/// Whether every manifest line must carry a transcript.
#[derive(Clone, Copy, PartialEq)]
enum Transcripts {
    Optional,
    Required,
}

fn load(path: &Path, transcripts: Transcripts) -> Result<Vec<Utterance>> {
    if path.is_dir() {
        let manifest = path.join("manifest.jsonl");
        let found = librispeech(path)?;
        if found.is_empty() && manifest.is_file() {
            return read_jsonl(&manifest, transcripts);
        }
        if found.is_empty() {
            return Err(Error::Dataset {
                path: path.into(),
                reason: "no */*/*.trans.txt transcripts and no manifest.jsonl".into(),
            });
        }
        Ok(found)
    } else if path.is_file() {
        read_jsonl(path, transcripts)
    } else {
        Err(Error::Dataset {
            path: path.into(),
            reason: "no such file or folder".into(),
        })
    }
}

/// Read a JSONL manifest.
pub fn jsonl(path: &Path) -> Result<Vec<Utterance>> {
    read_jsonl(path, Transcripts::Optional)
}

fn read_jsonl(path: &Path, transcripts: Transcripts) -> Result<Vec<Utterance>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let base = path.parent().unwrap_or(Path::new("."));
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let entry: ManifestLine = serde_json::from_str(line).map_err(|e| Error::Dataset {
            path: path.into(),
            reason: format!("line {}: {e}", n + 1),
        })?;
        if transcripts == Transcripts::Required && entry.text.is_none() {
            return Err(Error::Dataset {
                path: path.into(),
                reason: format!(
                    "line {}: no transcript (`text`) for `{}`; scoring needs one on every line",
                    n + 1,
                    entry.audio
                ),
            });
        }
        let audio = base.join(&entry.audio);
        let id = entry.id.unwrap_or_else(|| {
            Path::new(&entry.audio)
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| format!("line{}", n + 1))
        });
        out.push(Utterance {
            id,
            audio,
            text: entry.text,
        });
    }
    check_unique(path, &out)?;
    if out.is_empty() {
        return Err(Error::Dataset {
            path: path.into(),
            reason: "the manifest lists no utterances".into(),
        });
    }
    Ok(out)
}

fn check_unique(path: &Path, utterances: &[Utterance]) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for u in utterances {
        if !seen.insert(&u.id) {
            return Err(Error::Dataset {
                path: path.into(),
                reason: format!("utterance id `{}` appears twice", u.id),
            });
        }
    }
    Ok(())
}

fn sorted_entries(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

/// Read a LibriSpeech-layout folder: `speaker/chapter/speaker-chapter.trans.txt`.
pub fn librispeech(root: &Path) -> Result<Vec<Utterance>> {
    let mut out = Vec::new();
    for speaker in sorted_entries(root)?.into_iter().filter(|p| p.is_dir()) {
        for chapter in sorted_entries(&speaker)?.into_iter().filter(|p| p.is_dir()) {
            for file in sorted_entries(&chapter)? {
                if !file.to_string_lossy().ends_with(".trans.txt") {
                    continue;
                }
                let text = std::fs::read_to_string(&file).map_err(|e| Error::io(&file, e))?;
                for (n, line) in text.lines().enumerate() {
                    let line = line.trim();
                    if line.is_empty() {
                        continue;
                    }
                    let (id, words) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
                    let audio = AUDIO_EXTENSIONS
                        .iter()
                        .map(|ext| chapter.join(format!("{id}.{ext}")))
                        .find(|p| p.is_file())
                        .ok_or_else(|| Error::Dataset {
                            path: file.clone(),
                            reason: format!("line {}: no audio file for utterance `{id}`", n + 1),
                        })?;
                    out.push(Utterance {
                        id: id.to_string(),
                        audio,
                        text: Some(words.trim().to_string()),
                    });
                }
            }
        }
    }
    check_unique(root, &out)?;
    Ok(out)
}

/// `n` items spread evenly over `items` (every `len/n`-th, in order), or all of them when `n` is not
/// smaller. A dev subset taken this way covers every voice of a manifest grouped by speaker, where
/// its first `n` lines may hold only a few voices.
pub fn evenly_spaced<T>(items: Vec<T>, n: usize) -> Vec<T> {
    let len = items.len();
    if n >= len {
        return items;
    }
    let mut next = 0;
    items
        .into_iter()
        .enumerate()
        .filter(|&(i, _)| {
            // Item i is taken when it is the first at or past the next chosen position.
            let take = next < n && i * n >= next * len;
            if take {
                next += 1;
            }
            take
        })
        .map(|(_, item)| item)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manifest_paths_are_relative_to_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m.jsonl");
        std::fs::write(&m, "{\"audio\": \"a/x.wav\", \"text\": \"hello\"}\n\n{\"id\": \"y\", \"audio\": \"b.flac\"}\n").unwrap();
        let u = jsonl(&m).unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].id, "x");
        assert_eq!(u[0].audio, dir.path().join("a/x.wav"));
        assert_eq!(u[1].text, None);
    }

    #[test]
    fn scoring_refuses_a_line_without_transcript() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m.jsonl");
        std::fs::write(
            &m,
            "{\"audio\": \"a.wav\", \"text\": \"\"}\n{\"audio\": \"b.wav\", \"text\": null}\n",
        )
        .unwrap();
        assert_eq!(load_dataset(&m).unwrap().len(), 2);
        let err = load_labelled_dataset(&m).unwrap_err().to_string();
        assert!(
            err.contains("line 2") && err.contains("m.jsonl") && err.contains("b.wav"),
            "{err}"
        );
        std::fs::write(&m, "{\"audio\": \"a.wav\", \"text\": \"\"}\n").unwrap();
        assert_eq!(
            load_labelled_dataset(&m).unwrap()[0].text.as_deref(),
            Some("")
        );
    }

    #[test]
    fn bad_manifest_line_names_the_line() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m.jsonl");
        std::fs::write(&m, "{\"audio\": \"x.wav\"}\n{not json\n").unwrap();
        let err = jsonl(&m).unwrap_err().to_string();
        assert!(err.contains("line 2"), "{err}");
    }

    #[test]
    fn duplicate_ids_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let m = dir.path().join("m.jsonl");
        std::fs::write(&m, "{\"audio\": \"x.wav\"}\n{\"audio\": \"other/x.wav\"}\n").unwrap();
        assert!(jsonl(&m).unwrap_err().to_string().contains("twice"));
    }

    #[test]
    fn librispeech_layout_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let ch = dir.path().join("19/198");
        std::fs::create_dir_all(&ch).unwrap();
        std::fs::write(
            ch.join("19-198.trans.txt"),
            "19-198-0000 HELLO WORLD\n19-198-0001 AGAIN\n",
        )
        .unwrap();
        std::fs::write(ch.join("19-198-0000.flac"), b"").unwrap();
        std::fs::write(ch.join("19-198-0001.wav"), b"").unwrap();
        let u = load_dataset(dir.path()).unwrap();
        assert_eq!(u.len(), 2);
        assert_eq!(u[0].text.as_deref(), Some("HELLO WORLD"));
        assert!(u[1].audio.ends_with("19-198-0001.wav"));
        std::fs::remove_file(ch.join("19-198-0001.wav")).unwrap();
        assert!(load_dataset(dir.path())
            .unwrap_err()
            .to_string()
            .contains("19-198-0001"));
    }

    #[test]
    fn evenly_spaced_covers_the_whole_list() {
        assert_eq!(evenly_spaced((0..10).collect(), 5), vec![0, 2, 4, 6, 8]);
        assert_eq!(evenly_spaced((0..10).collect(), 3), vec![0, 4, 7]);
        assert_eq!(evenly_spaced((0..4).collect(), 9), vec![0, 1, 2, 3]);
        assert!(evenly_spaced((0..4).collect::<Vec<_>>(), 0).is_empty());
        // 126 utterances of 8 voices in blocks: 40 of them reach every block.
        let picked = evenly_spaced((0..126).collect::<Vec<usize>>(), 40);
        assert_eq!(picked.len(), 40);
        let blocks: std::collections::BTreeSet<usize> =
            picked.iter().map(|i| i * 8 / 126).collect();
        assert_eq!(blocks.len(), 8);
    }
}
