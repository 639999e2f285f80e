//! The CTC families behind the model interface: a [`CtcRecognizer`] (network, vocabulary and the
//! feature extractor's normalisation) is the [`SpeechModel`], read from a Hugging Face folder or
//! a `.whittle` file.
//!
//! A `.whittle` file of a CTC model carries in its header `config` (the `config.json` document),
//! `ctc_vocab` (the texts of `vocab.json`, `tokenizer_config.json` and `added_tokens.json`) and
//! `feature_extractor` (`do_normalize`, `sampling_rate`).

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::{DType, Device, Tensor};

use super::config::{FeatureExtractorConfig, Wav2Vec2Config};
use super::ctc::{normalize_waveform, CtcVocab, CtcVocabFiles};
use super::model::CtcModel;
use crate::checkpoint::{hf, TensorStore};
use crate::error::{Error, Result};
use crate::model_dir::{ModelFormat, ModelLocation};
use crate::models::{LayerMut, LayerRef, Layers, PrunableModule, SpeechModel};
use crate::packed_file::keys;

/// Header key of the vocabulary files' texts.
pub const VOCAB_KEY: &str = "ctc_vocab";
/// Header key of the feature extractor's settings.
pub const FEATURE_EXTRACTOR_KEY: &str = "feature_extractor";

/// A CTC network with what turns its logits into text.
#[derive(Debug, Clone)]
pub struct CtcRecognizer {
    /// The network.
    pub model: CtcModel,
    /// Its vocabulary.
    pub vocab: CtcVocab,
    /// Normalise each clip to zero mean, unit variance before the network.
    pub normalize: bool,
    /// Parameters the network computes with ([`CtcModel::parameter_count`]).
    pub parameters: usize,
    /// The `config.json` document it was loaded from (a `.whittle` header keeps it whole).
    pub config_document: serde_json::Value,
}

/// A CTC checkpoint opened: the recognizer, its tensors, and the header fields that load it
/// back from a `.whittle` file.
pub struct OpenedCtc {
    /// The model.
    pub recognizer: CtcRecognizer,
    /// The tensors (export copies the float ones).
    pub store: TensorStore,
    /// `config`, `ctc_vocab` and `feature_extractor`.
    pub family_header: Vec<(String, serde_json::Value)>,
}

fn header_json(
    path: &Path,
    key: &str,
    value: Option<&serde_json::Value>,
) -> Result<serde_json::Value> {
    value
        .cloned()
        .ok_or_else(|| Error::malformed(path, format!("header has no `{key}`")))
}

fn typed<T: serde::de::DeserializeOwned>(value: serde_json::Value, context: String) -> Result<T> {
    serde_json::from_value(value).map_err(|source| Error::Json { context, source })
}

/// Open the CTC checkpoint at `location` (a Hugging Face folder or a `.whittle` file).
pub fn open(location: &ModelLocation, device: &Device, dtype: DType) -> Result<OpenedCtc> {
    let path = &location.dir;
    let (config_value, vocab_files, extractor, store) = match location.format {
        ModelFormat::HuggingFace => {
            let config_path = path.join("config.json");
            let text =
                std::fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
            let value: serde_json::Value =
                serde_json::from_str(&text).map_err(|source| Error::Json {
                    context: config_path.display().to_string(),
                    source,
                })?;
            let vocab_path = path.join("vocab.json");
            if !vocab_path.is_file() {
                return Err(Error::UnknownModel {
                    path: path.clone(),
                    reason: "vocab.json (the CTC vocabulary) is missing".into(),
                });
            }
            (
                value,
                CtcVocabFiles::read(&vocab_path)?,
                FeatureExtractorConfig::from_model_dir(path)?,
                hf::load_safetensors(&path.join("model.safetensors"), device)?,
            )
        }
        ModelFormat::Whittle => {
            let file = crate::packed_file::PackedFile::open(path)?;
            let context = |key: &str| format!("{}: header `{key}`", path.display());
            let config = header_json(path, keys::CONFIG, file.header_field(keys::CONFIG))?;
            let vocab = typed(
                header_json(path, VOCAB_KEY, file.header_field(VOCAB_KEY))?,
                context(VOCAB_KEY),
            )?;
            let extractor = typed(
                header_json(
                    path,
                    FEATURE_EXTRACTOR_KEY,
                    file.header_field(FEATURE_EXTRACTOR_KEY),
                )?,
                context(FEATURE_EXTRACTOR_KEY),
            )?;
            let store = crate::model_dir::packed_store(&file, path, device)?;
            (config, vocab, extractor, store)
        }
        ModelFormat::CTranslate2 | ModelFormat::Ggml => {
            return Err(Error::UnknownModel {
                path: path.clone(),
                reason: "CTranslate2 folders and whisper.cpp files hold Whisper models only".into(),
            })
        }
    };
    let config_context = match location.format {
        ModelFormat::Whittle | ModelFormat::Ggml => path.clone(),
        _ => path.join("config.json"),
    };
    let config = Wav2Vec2Config::from_json(&config_value.to_string(), &config_context)?;
    let vocab = CtcVocab::from_files(&vocab_files, path)?;
    if vocab.len() > config.vocab_size {
        return Err(Error::config(
            path.join("vocab.json").display().to_string(),
            format!(
                "{} symbols, but the CTC head has vocab_size {}",
                vocab.len(),
                config.vocab_size
            ),
        ));
    }
    let model = CtcModel::load(&store, &config, dtype)?;
    let recognizer = CtcRecognizer {
        parameters: model.parameter_count()?,
        model,
        vocab,
        normalize: extractor.do_normalize,
        config_document: config_value.clone(),
    };
    let family_header = vec![
        (keys::CONFIG.to_string(), config_value),
        (
            VOCAB_KEY.to_string(),
            serde_json::to_value(&vocab_files).map_err(|source| Error::Json {
                context: VOCAB_KEY.into(),
                source,
            })?,
        ),
        (
            FEATURE_EXTRACTOR_KEY.to_string(),
            serde_json::json!({
                "do_normalize": extractor.do_normalize,
                "sampling_rate": extractor.sampling_rate,
            }),
        ),
    ];
    Ok(OpenedCtc {
        recognizer,
        store,
        family_header,
    })
}

impl CtcRecognizer {
    /// Logits `[1, frames, vocab]` of one clip (normalised first when the extractor says so).
    pub fn logits(&self, samples: &[f32]) -> Result<Tensor> {
        let input = if self.normalize {
            normalize_waveform(samples)
        } else {
            samples.to_vec()
        };
        let waveform = Tensor::from_vec(input, (1, samples.len()), self.model.device())?;
        self.model.forward(&waveform)
    }
}

impl Layers for CtcRecognizer {
    fn layers(&self) -> Vec<LayerRef<'_>> {
        self.model.layers()
    }

    fn layers_mut(&mut self) -> Vec<LayerMut<'_>> {
        self.model.layers_mut()
    }

    fn held_tensors(&self) -> Result<Option<Vec<(String, Tensor)>>> {
        self.model.held_tensors()
    }

    fn prunable_modules(&self) -> Vec<PrunableModule> {
        self.model.prunable_modules()
    }

    fn prune_modules(
        &mut self,
        keep: &std::collections::BTreeMap<String, crate::compress::prune::ModuleKeep>,
    ) -> Result<()> {
        self.model.prune_modules(keep)?;
        self.parameters = self.model.parameter_count()?;
        Ok(())
    }

    /// The loaded `config.json` document with the model's `whittle_layer_shapes` (set, or
    /// removed when every layer is whole again).
    fn config_header(&self) -> Result<Option<serde_json::Value>> {
        let mut document = self.config_document.clone();
        let Some(fields) = document.as_object_mut() else {
            return Ok(None);
        };
        match &self.model.config().whittle_layer_shapes {
            Some(shapes) => {
                let value = serde_json::to_value(shapes).map_err(|source| Error::Json {
                    context: "whittle_layer_shapes".into(),
                    source,
                })?;
                fields.insert("whittle_layer_shapes".into(), value);
            }
            None => {
                fields.remove("whittle_layer_shapes");
            }
        }
        Ok(Some(document))
    }
}

impl SpeechModel for CtcRecognizer {
    fn architecture(&self) -> &'static str {
        self.model.config().family.model_type()
    }

    fn summary(&self) -> String {
        let c = self.model.config();
        format!(
            "{:?} CTC: hidden {}, {} layers x {} heads (ffn {}), conv feature encoder {:?}, vocab {}, {}",
            c.family,
            c.hidden_size,
            c.num_hidden_layers,
            c.num_attention_heads,
            c.intermediate_size,
            c.conv_dim,
            c.vocab_size,
            if self.normalize { "normalised input" } else { "raw input" }
        )
    }

    fn parameter_count(&self) -> usize {
        self.parameters
    }

    /// One clip at a time: unpadded, so no attention mask is needed and every clip gives the
    /// logits it would alone (group-norm feature encoders have no padding mask in transformers
    /// either).
    fn transcribe_batch(&self, clips: &[&[f32]]) -> Result<Vec<String>> {
        clips
            .iter()
            .map(|clip| {
                let logits = self.logits(clip)?;
                self.vocab.decode_greedy(&logits.squeeze(0)?)
            })
            .collect()
    }

    /// The forward of the clip, observed whole.
    fn observe_calibration(&self, samples: &[f32], observing: &AtomicBool) -> Result<()> {
        observing.store(true, Ordering::Relaxed);
        let run = self.logits(samples);
        observing.store(false, Ordering::Relaxed);
        run.map(|_| ())
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}
