//! What a training run was started on, so a resumed run or a reused pseudo-label cache cannot be
//! mixed up with another model or dataset (issue 17, "runs that cannot be mixed up").
//!
//! - The model is identified by the SHA-256 of its weight and configuration files.
//! - A dataset is identified by the SHA-256 of its utterance list: id, audio path, audio file size
//!   and transcript of every utterance, in order. Audio contents are not read (hours of audio
//!   would cost minutes); a file replaced by one of another size is caught, one rewritten in
//!   place at the same size is not.

use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::data::Utterance;
use crate::error::{Error, Result};

/// Files of a model folder that define its function (those present are hashed).
const MODEL_FILES: [&str; 5] = [
    "model.bin",
    "model.safetensors",
    "config.json",
    "tokenizer.json",
    "preprocessor_config.json",
];

/// The identity of a run's inputs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunIdentity {
    /// SHA-256 of the model's files.
    pub model: String,
    /// SHA-256 of the training utterance list.
    pub train: String,
    /// SHA-256 of the dev utterance list.
    pub dev: String,
}

impl RunIdentity {
    /// The inputs of this run that differ from `other`'s, by name (`model`, `train`, `dev`).
    pub fn differences(&self, other: &RunIdentity) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.model != other.model {
            out.push("model");
        }
        if self.train != other.train {
            out.push("training data");
        }
        if self.dev != other.dev {
            out.push("dev data");
        }
        out
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a model folder's defining files (or of the file itself, for a `.whittle` file).
pub fn model_digest(path: &Path) -> Result<String> {
    let mut hasher = Sha256::new();
    let files: Vec<std::path::PathBuf> = if path.is_dir() {
        MODEL_FILES
            .iter()
            .map(|f| path.join(f))
            .filter(|p| p.is_file())
            .collect()
    } else {
        vec![path.to_path_buf()]
    };
    if files.is_empty() {
        return Err(Error::config(
            path.display().to_string(),
            "no model files to identify the model by",
        ));
    }
    let mut buffer = vec![0u8; 1 << 20];
    for file in files {
        hasher.update(
            file.file_name()
                .map(|n| n.as_encoded_bytes())
                .unwrap_or_default(),
        );
        let mut reader = std::fs::File::open(&file).map_err(|e| Error::io(&file, e))?;
        loop {
            let n = reader.read(&mut buffer).map_err(|e| Error::io(&file, e))?;
            if n == 0 {
                break;
            }
            hasher.update(&buffer[..n]);
        }
    }
    Ok(hex(&hasher.finalize()))
}

/// SHA-256 of an utterance list (id, audio path, audio size, transcript of each, in order).
pub fn dataset_digest(utterances: &[Utterance]) -> String {
    let mut hasher = Sha256::new();
    for u in utterances {
        let size = std::fs::metadata(&u.audio).map(|m| m.len()).ok();
        let line = serde_json::json!([u.id, u.audio, size, u.text]).to_string();
        hasher.update(line.as_bytes());
        hasher.update(b"\n");
    }
    hex(&hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_change_with_the_inputs() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("model.bin"), b"weights").unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        let a = model_digest(dir.path()).unwrap();
        assert_eq!(a, model_digest(dir.path()).unwrap());
        std::fs::write(dir.path().join("model.bin"), b"weightz").unwrap();
        assert_ne!(a, model_digest(dir.path()).unwrap());
        assert!(model_digest(&dir.path().join("none")).is_err());

        let audio = dir.path().join("a.raw");
        std::fs::write(&audio, [0u8; 10]).unwrap();
        let u = |text: &str| Utterance {
            id: "a".into(),
            audio: audio.clone(),
            text: Some(text.into()),
        };
        let d = dataset_digest(&[u("x")]);
        assert_eq!(d, dataset_digest(&[u("x")]));
        assert_ne!(d, dataset_digest(&[u("y")]));
        std::fs::write(&audio, [0u8; 12]).unwrap();
        assert_ne!(d, dataset_digest(&[u("x")]));
    }
}
