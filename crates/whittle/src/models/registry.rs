//! Which family a model belongs to, and loading it behind [`SpeechModel`].
//!
//! The family comes from the `.whittle` header's `architecture`, from a Hugging Face
//! `config.json`'s `model_type`, or is Whisper for a CTranslate2 folder (whittle reads only
//! CTranslate2's Whisper converter output).

use std::path::Path;

use candle_core::{DType, Device};

use super::SpeechModel;
use crate::checkpoint::{LoadReport, TensorStore};
use crate::error::{Error, Result};
use crate::model_dir::{ModelFormat, ModelLocation, WhisperCheckpoint};
use crate::models::whisper::{DecodeOptions, Transcriber};

/// The model families whittle loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Family {
    /// OpenAI Whisper (encoder-decoder, BPE tokens).
    Whisper,
    /// wav2vec 2.0, HuBERT or Wav2Vec2-Conformer with a CTC head (character vocabulary).
    Ctc,
}

/// `(model_type in config.json or architecture in a .whittle header, family)`.
const FAMILIES: &[(&str, Family)] = &[
    ("whisper", Family::Whisper),
    ("wav2vec2", Family::Ctc),
    ("hubert", Family::Ctc),
    ("wav2vec2-conformer", Family::Ctc),
];

impl Family {
    /// The family named `name` (a `model_type` or `.whittle` architecture).
    pub fn from_name(name: &str, source: &Path) -> Result<Self> {
        FAMILIES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, f)| *f)
            .ok_or_else(|| Error::UnknownModel {
                path: source.into(),
                reason: format!(
                    "model type `{name}` is not one whittle loads (known: {})",
                    FAMILIES
                        .iter()
                        .map(|(n, _)| *n)
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            })
    }

    /// The family of the model at `location`.
    pub fn detect(location: &ModelLocation) -> Result<Self> {
        match location.format {
            ModelFormat::CTranslate2 | ModelFormat::Ggml => Ok(Family::Whisper),
            ModelFormat::Whittle => {
                let file = crate::packed_file::PackedFile::open(&location.dir)?;
                Self::from_name(file.architecture(), &location.dir)
            }
            ModelFormat::HuggingFace => {
                #[derive(serde::Deserialize)]
                struct ModelType {
                    model_type: Option<String>,
                }
                let path = location.dir.join("config.json");
                let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
                let config: ModelType = serde_json::from_str(&text).map_err(|e| Error::Json {
                    context: path.display().to_string(),
                    source: e,
                })?;
                let name = config.model_type.ok_or_else(|| Error::UnknownModel {
                    path: path.clone(),
                    reason: "config.json has no `model_type`".into(),
                })?;
                Self::from_name(&name, &path)
            }
        }
    }
}

/// A model loaded behind [`SpeechModel`], with what writing it out again needs.
pub struct LoadedModel {
    /// Where it came from.
    pub location: ModelLocation,
    /// Its family.
    pub family: Family,
    /// Tensors by checkpoint name, in their stored dtypes (export copies the float ones).
    pub store: TensorStore,
    /// The model, ready to transcribe with its family's default decoding.
    pub model: Box<dyn SpeechModel>,
    /// Header fields a `.whittle` file needs to load this model back (configuration,
    /// tokenizer), in the form the family's reader expects.
    pub family_header: Vec<(String, serde_json::Value)>,
    /// What the load used and left unused.
    pub report: LoadReport,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("location", &self.location)
            .field("family", &self.family)
            .field("summary", &self.model.summary())
            .finish_non_exhaustive()
    }
}

/// Load the model at `path` (a checkpoint folder or a `.whittle` file) with compute in `dtype`.
pub fn open(path: &Path, device: &Device, dtype: DType) -> Result<LoadedModel> {
    let location = ModelLocation::detect(path)?;
    let family = Family::detect(&location)?;
    match family {
        Family::Whisper => {
            let checkpoint = WhisperCheckpoint::open(path, device)?;
            let family_header = checkpoint.family_header()?;
            let model = crate::models::whisper::Whisper::load(
                &checkpoint.store,
                &checkpoint.config,
                dtype,
            )?;
            let report = checkpoint.load_report();
            Ok(LoadedModel {
                location: checkpoint.location,
                family,
                store: checkpoint.store,
                model: Box::new(Transcriber {
                    model,
                    tokenizer: checkpoint.tokenizer,
                    options: DecodeOptions::default(),
                }),
                family_header,
                report,
            })
        }
        Family::Ctc => {
            let opened = crate::models::wav2vec2::family::open(&location, device, dtype)?;
            let report = opened.store.report();
            for name in &report.unused {
                tracing::warn!(source = %report.source, tensor = %name, "unused tensor");
            }
            Ok(LoadedModel {
                location,
                family,
                store: opened.store,
                model: Box::new(opened.recognizer),
                family_header: opened.family_header,
                report,
            })
        }
    }
}
