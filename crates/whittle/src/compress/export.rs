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

/// Write `model` to `path`: packed weights as they are in the model, and every other tensor as
/// the model holds it ([`Layers::held_tensors`]; pruned and retrained models round-trip), in
/// the dtype the checkpoint stored it in (f16 stays f16; new tensors are f32). Families that
/// hold no such list copy the other tensors from `store`. `family_header` holds what the
/// family's reader needs (configuration, tokenizer), its configuration replaced by the model's
/// own ([`Layers::config_header`]) when it has one; `header` fields (recipe, bit map,
/// provenance, results) are added after it. Returns the file size.
pub fn write_packed<M: Layers + ?Sized>(
    store: &TensorStore,
    model: &M,
    architecture: &str,
    family_header: &[(String, serde_json::Value)],
    header: &[(&str, serde_json::Value)],
    path: &Path,
) -> Result<u64> {
    let mut writer = PackedFileWriter::new(architecture);
    let own_config = model.config_header()?;
    for (key, value) in family_header {
        let value = match &own_config {
            Some(config) if key == keys::CONFIG => config.clone(),
            _ => value.clone(),
        };
        writer.set_header_field(key, value)?;
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
    let floats: Vec<(String, candle_core::Tensor)> = match model.held_tensors()? {
        Some(held) => held,
        None => store
            .names()
            .filter(|name| !packed.iter().any(|(n, _)| n == name))
            .map(|name| {
                (
                    name.to_string(),
                    store.peek(name).expect("listed name").clone(),
                )
            })
            .collect(),
    };
    for (name, tensor) in &floats {
        // A store without the `model.` prefix names the same tensor without it.
        let stored = store.stored_dtype(name).or_else(|| {
            name.strip_prefix("model.")
                .and_then(|n| store.stored_dtype(n))
        });
        let (dtype, t) = match stored {
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
