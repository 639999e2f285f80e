//! Hugging Face checkpoints: `config.json` + `model.safetensors` (memory-mapped).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::Device;

use super::TensorStore;
use crate::error::{Error, Result};

/// Load every tensor of a safetensors file into a [`TensorStore`], keeping stored dtypes.
pub fn load_safetensors(path: &Path, device: &Device) -> Result<TensorStore> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    // SAFETY: read-only map; tensors are copied out of it before it is dropped.
    let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
    let tensors = candle_core::safetensors::load_buffer(&map, device)
        .map_err(|e| Error::malformed(path, format!("not a valid safetensors file: {e}")))?;
    Ok(TensorStore::new(
        path.display().to_string(),
        tensors.into_iter().collect::<BTreeMap<_, _>>(),
        device.clone(),
    ))
}

/// Write tensors to a safetensors file atomically.
pub fn save_safetensors(
    path: &Path,
    tensors: &BTreeMap<String, candle_core::Tensor>,
) -> Result<()> {
    let tmp = crate::fsutil::temporary_sibling(path);
    let tensors: std::collections::HashMap<_, _> = tensors
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    candle_core::safetensors::save(&tensors, &tmp)
        .map_err(|e| Error::malformed(path, e.to_string()))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io(path, e))
}
