//! Writing a compressed model to the packed `.whittle` file (see docs/format.md).

use std::path::Path;

use candle_core::DType;
use whittle_kernels::PackedMatrix;

use crate::checkpoint::TensorStore;
use crate::error::{Error, Result};
use crate::models::whisper::Whisper;
use crate::models::Layers;
use crate::nn::Weight;
use crate::packed_file::{keys, FloatDtype, PackedFileWriter};

/// Write a Whisper `model` to `path` ([`write_packed`] with Whisper's configuration and
/// tokenizer in the header).
pub fn write_whisper(
    store: &TensorStore,
    model: &mut Whisper,
    tokenizer_json: &str,
    header: &[(&str, serde_json::Value)],
    path: &Path,
) -> Result<u64> {
    let config = serde_json::to_value(&model.config).map_err(|e| Error::Json {
        context: "config".into(),
        source: e,
    })?;
    let family = [
        (keys::CONFIG.to_string(), config),
        (
            keys::TOKENIZER.to_string(),
            serde_json::Value::String(tokenizer_json.to_string()),
        ),
    ];
    write_packed(store, model, "whisper", &family, header, path)
}

/// Write `model` to `path`: packed weights as they are in the model, every other tensor from
/// `store` in its stored float dtype (f16 stays f16). `family_header` holds what the family's
/// reader needs (configuration, tokenizer); `header` fields (recipe, bit map, provenance,
/// results) are added after it. Returns the file size.
pub fn write_packed<M: Layers + ?Sized>(
    store: &TensorStore,
    model: &M,
    architecture: &str,
    family_header: &[(String, serde_json::Value)],
    header: &[(&str, serde_json::Value)],
    path: &Path,
) -> Result<u64> {
    let mut writer = PackedFileWriter::new(architecture);
    for (key, value) in family_header {
        writer.set_header_field(key, value.clone())?;
    }
    for (key, value) in header {
        writer.set_header_field(key, value.clone())?;
    }
    let mut packed: Vec<(String, std::sync::Arc<PackedMatrix>)> = Vec::new();
    for layer in model.layers() {
        if let Weight::Packed(p) = &layer.linear.weight {
            packed.push((format!("{}.weight", layer.name), p.clone()));
        }
    }
    for name in store.names() {
        if packed.iter().any(|(n, _)| n == name) {
            continue;
        }
        let tensor = store.peek(name).expect("listed name");
        let (dtype, t) = match store.stored_dtype(name) {
            Some(DType::F16) => (FloatDtype::F16, tensor.to_dtype(DType::F16)?),
            _ => (FloatDtype::F32, tensor.to_dtype(DType::F32)?),
        };
        let bytes: Vec<u8> = match dtype {
            FloatDtype::F16 => t
                .flatten_all()?
                .to_vec1::<half::f16>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
            FloatDtype::F32 => t
                .flatten_all()?
                .to_vec1::<f32>()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect(),
        };
        writer.add_float(name, t.dims(), dtype, &bytes)?;
    }
    for (name, matrix) in &packed {
        writer.add_packed(name, matrix)?;
    }
    writer.write(path)
}
