//! Finding and loading a model given on the command line: a CTranslate2 folder
//! (`model.bin` + `config.json` + `tokenizer.json`), a Hugging Face folder
//! (`config.json` + `model.safetensors` + `tokenizer.json`), a `.whittle` file or a whisper.cpp
//! model file (ggml).

use std::path::{Path, PathBuf};

use candle_core::{DType, Device};

use crate::checkpoint::{ct2::Ct2File, hf, LoadReport, TensorStore};
use crate::error::{Error, Result};
use crate::models::whisper::{from_ct2, WhisperConfig, WhisperTokenizer};

/// The on-disk kind of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum ModelFormat {
    /// CTranslate2 `model.bin`.
    CTranslate2,
    /// Hugging Face safetensors.
    HuggingFace,
    /// whittle's packed `.whittle` file.
    Whittle,
    /// whisper.cpp's model file (legacy ggml, `ggml-*.bin`).
    Ggml,
}

/// A model folder with its kind detected.
#[derive(Debug, Clone)]
pub struct ModelLocation {
    /// The folder.
    pub dir: PathBuf,
    /// Its kind.
    pub format: ModelFormat,
}

impl ModelLocation {
    /// Detect the kind of `path`.
    pub fn detect(path: &Path) -> Result<Self> {
        if !path.exists() {
            return Err(Error::UnknownModel {
                path: path.into(),
                reason: "no such file or folder".into(),
            });
        }
        if path.is_file() && path.extension().is_some_and(|e| e == "whittle") {
            return Ok(Self {
                dir: path.to_path_buf(),
                format: ModelFormat::Whittle,
            });
        }
        if path.is_file() && crate::models::whisper::ggml::GgmlWhisperFile::sniff(path) {
            return Ok(Self {
                dir: path.to_path_buf(),
                format: ModelFormat::Ggml,
            });
        }
        if !path.is_dir() {
            return Err(Error::UnknownModel {
                path: path.into(),
                reason: "expected a model folder, a .whittle file or a whisper.cpp ggml file"
                    .into(),
            });
        }
        let has = |f: &str| path.join(f).is_file();
        let format = if has("model.bin") {
            ModelFormat::CTranslate2
        } else if has("model.safetensors") {
            ModelFormat::HuggingFace
        } else {
            return Err(Error::UnknownModel {
                path: path.into(),
                reason:
                    "found neither model.bin (CTranslate2) nor model.safetensors (Hugging Face)"
                        .into(),
            });
        };
        if !has("config.json") {
            return Err(Error::UnknownModel {
                path: path.into(),
                reason: "config.json is missing".into(),
            });
        }
        Ok(Self {
            dir: path.to_path_buf(),
            format,
        })
    }

    /// Size in bytes of the weight file(s).
    pub fn weights_bytes(&self) -> u64 {
        let file = match self.format {
            ModelFormat::CTranslate2 => self.dir.join("model.bin"),
            ModelFormat::HuggingFace => self.dir.join("model.safetensors"),
            ModelFormat::Whittle | ModelFormat::Ggml => self.dir.clone(),
        };
        std::fs::metadata(file).map(|m| m.len()).unwrap_or(0)
    }
}

/// Tensors, configuration and tokenizer of a Whisper checkpoint, before the model is built.
pub struct WhisperCheckpoint {
    /// Where it came from.
    pub location: ModelLocation,
    /// Tensors with Hugging Face names, in their stored dtypes.
    pub store: TensorStore,
    /// Architecture.
    pub config: WhisperConfig,
    /// Tokenizer.
    pub tokenizer: WhisperTokenizer,
    /// The tokenizer's `tokenizer.json` text, as read (embedded again on export).
    pub tokenizer_json: String,
    /// Names in the original file that no model tensor came from.
    pub unconverted: Vec<String>,
}

/// Parse a JSON file, naming it in errors.
pub(crate) fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    serde_json::from_str(&text).map_err(|e| Error::Json {
        context: path.display().to_string(),
        source: e,
    })
}

impl WhisperCheckpoint {
    /// Read a Whisper checkpoint folder.
    pub fn open(path: &Path, device: &Device) -> Result<Self> {
        let location = ModelLocation::detect(path)?;
        match location.format {
            ModelFormat::Whittle => return Self::open_packed(location, device),
            ModelFormat::Ggml => return Self::open_ggml(location, device),
            _ => {}
        }
        let tokenizer_path = path.join("tokenizer.json");
        if !tokenizer_path.is_file() {
            return Err(Error::UnknownModel {
                path: path.into(),
                reason: "tokenizer.json is missing".into(),
            });
        }
        let tokenizer_json =
            std::fs::read_to_string(&tokenizer_path).map_err(|e| Error::io(&tokenizer_path, e))?;
        let tokenizer =
            WhisperTokenizer::from_json(&tokenizer_json, &tokenizer_path.display().to_string())?;
        let (store, config, unconverted) = match location.format {
            ModelFormat::CTranslate2 => {
                let file = Ct2File::open(&path.join("model.bin"))?;
                let decoding: from_ct2::Ct2WhisperConfig = read_json(&path.join("config.json"))?;
                from_ct2::convert(&file, &decoding, device)?
            }
            ModelFormat::HuggingFace => {
                let config_path = path.join("config.json");
                let mut config: WhisperConfig = read_json(&config_path)?;
                let generation = path.join("generation_config.json");
                if config.suppress_tokens.is_empty() && generation.is_file() {
                    #[derive(serde::Deserialize)]
                    struct Generation {
                        #[serde(default)]
                        suppress_tokens: Vec<u32>,
                        #[serde(default)]
                        begin_suppress_tokens: Vec<u32>,
                    }
                    let g: Generation = read_json(&generation)?;
                    config.suppress_tokens = g.suppress_tokens;
                    config.begin_suppress_tokens = g.begin_suppress_tokens;
                }
                config.validate(&config_path.display().to_string())?;
                (
                    hf::load_safetensors(&path.join("model.safetensors"), device)?,
                    config,
                    Vec::new(),
                )
            }
            ModelFormat::Whittle | ModelFormat::Ggml => {
                unreachable!("handled by open_packed and open_ggml above")
            }
        };
        tokenizer.check_vocabulary(
            config.vocab_size,
            &path.join("tokenizer.json").display().to_string(),
        )?;
        Ok(Self {
            location,
            store,
            config,
            tokenizer,
            tokenizer_json,
            unconverted,
        })
    }

    fn open_ggml(location: ModelLocation, device: &Device) -> Result<Self> {
        let file = crate::models::whisper::ggml::GgmlWhisperFile::read(&location.dir)?;
        let checkpoint = file.checkpoint(device)?;
        for note in &checkpoint.notes {
            tracing::warn!(source = %location.dir.display(), "{note}");
        }
        Ok(Self {
            location,
            store: checkpoint.store,
            config: checkpoint.config,
            tokenizer: checkpoint.tokenizer,
            tokenizer_json: checkpoint.tokenizer_json,
            unconverted: checkpoint.notes,
        })
    }

    fn open_packed(location: ModelLocation, device: &Device) -> Result<Self> {
        use crate::packed_file::{keys, PackedFile};
        let path = location.dir.clone();
        let file = PackedFile::open(&path)?;
        if file.architecture() != "whisper" {
            return Err(Error::UnknownModel {
                path,
                reason: format!("architecture `{}` is not whisper", file.architecture()),
            });
        }
        let config: WhisperConfig =
            serde_json::from_value(file.header_field(keys::CONFIG).cloned().unwrap_or_default())
                .map_err(|e| Error::Json {
                    context: format!("{}: header `config`", path.display()),
                    source: e,
                })?;
        config.validate(&path.display().to_string())?;
        let tokenizer_json = match file.header_field(keys::TOKENIZER) {
            Some(serde_json::Value::String(text)) => text.clone(),
            Some(object @ serde_json::Value::Object(_)) => object.to_string(),
            _ => return Err(Error::malformed(&path, "header has no `tokenizer`")),
        };
        let tokenizer = WhisperTokenizer::from_json(
            &tokenizer_json,
            &format!("{}: header `tokenizer`", path.display()),
        )?;
        tokenizer.check_vocabulary(
            config.vocab_size,
            &format!("{}: header `tokenizer`", path.display()),
        )?;
        let store = packed_store(&file, &path, device)?;
        Ok(Self {
            location,
            store,
            config,
            tokenizer,
            tokenizer_json,
            unconverted: Vec::new(),
        })
    }

    /// Build the model in `dtype` and report what the load used.
    pub fn build(
        self,
        dtype: DType,
    ) -> Result<(
        crate::models::whisper::Whisper,
        WhisperTokenizer,
        LoadReport,
    )> {
        let model = crate::models::whisper::Whisper::load(&self.store, &self.config, dtype)?;
        let report = self.load_report();
        Ok((model, self.tokenizer, report))
    }

    /// What building the model used of the store (call after building), logged as warnings for
    /// each unused tensor.
    pub fn load_report(&self) -> LoadReport {
        let mut report = self.store.report();
        report
            .unused
            .extend(self.unconverted.iter().map(|n| format!("(file) {n}")));
        for name in &report.unused {
            tracing::warn!(source = %report.source, tensor = %name, "unused tensor");
        }
        tracing::info!(source = %report.source, used = report.used, unused = report.unused.len(), missing = 0, "loaded model");
        report
    }

    /// The `.whittle` header fields this checkpoint's reader needs: the configuration and the
    /// tokenizer's JSON text.
    pub fn family_header(&self) -> Result<Vec<(String, serde_json::Value)>> {
        let config = serde_json::to_value(&self.config).map_err(|e| Error::Json {
            context: format!("{}: config", self.location.dir.display()),
            source: e,
        })?;
        Ok(vec![
            (crate::packed_file::keys::CONFIG.to_string(), config),
            (
                crate::packed_file::keys::TOKENIZER.to_string(),
                serde_json::Value::String(self.tokenizer_json.clone()),
            ),
        ])
    }
}

/// Every tensor of a `.whittle` file in a [`TensorStore`]: float tensors in their stored dtype,
/// packed ones as one owned copy of their codes (file-sized, never f32).
pub fn packed_store(
    file: &crate::packed_file::PackedFile,
    path: &Path,
    device: &Device,
) -> Result<TensorStore> {
    use crate::packed_file::{FloatDtype, TensorData};
    let mut store = TensorStore::new(
        path.display().to_string(),
        Default::default(),
        device.clone(),
    );
    for entry in file.tensors() {
        match &entry.data {
            TensorData::Float { .. } => {
                let t = file.float(&entry.name)?;
                let dtype = match t.dtype {
                    FloatDtype::F16 => DType::F16,
                    FloatDtype::F32 => DType::F32,
                };
                store.insert(
                    entry.name.clone(),
                    candle_core::Tensor::from_raw_buffer(t.bytes, dtype, t.shape, device)?,
                );
            }
            TensorData::Packed { .. } => {
                // One owned copy of the codes (file-sized, never f32).
                store.insert_packed(entry.name.clone(), file.packed(&entry.name)?.to_owned()?);
            }
        }
    }
    Ok(store)
}
