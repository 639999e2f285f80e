//! Hugging Face checkpoints: `config.json` + `model.safetensors` (memory-mapped).

use std::collections::BTreeMap;
use std::path::Path;

use candle_core::{DType, Device};

use super::TensorStore;
use crate::error::{Error, Result};

/// Largest safetensors header read (the format's own limit is 100 MB).
const MAX_HEADER_BYTES: u64 = 100 << 20;

/// Load every tensor of a safetensors file into a [`TensorStore`], keeping stored dtypes.
///
/// Tensors are read one at a time with positioned reads (no memory map), so the peak memory of
/// a load is the tensors themselves plus one tensor's bytes, not the file twice (a memory map
/// would keep every page it touched resident beside the copies).
pub fn load_safetensors(path: &Path, device: &Device) -> Result<TensorStore> {
    use std::os::unix::fs::FileExt;
    let bad =
        |reason: String| Error::malformed(path, format!("not a valid safetensors file: {reason}"));
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let file_len = file.metadata().map_err(|e| Error::io(path, e))?.len();
    let mut len_bytes = [0u8; 8];
    file.read_exact_at(&mut len_bytes, 0)
        .map_err(|_| bad("shorter than its 8-byte header length".into()))?;
    let header_len = u64::from_le_bytes(len_bytes);
    if header_len > MAX_HEADER_BYTES || header_len + 8 > file_len {
        return Err(bad(format!(
            "header length {header_len} does not fit the file ({file_len} bytes, at most {MAX_HEADER_BYTES})"
        )));
    }
    let mut header = vec![0u8; header_len as usize];
    file.read_exact_at(&mut header, 8)
        .map_err(|e| Error::io(path, e))?;
    let entries: BTreeMap<String, serde_json::Value> =
        serde_json::from_slice(&header).map_err(|e| bad(format!("header: {e}")))?;
    let data_start = 8 + header_len;
    let data_len = file_len - data_start;
    let mut infos: Vec<(String, safetensors::tensor::TensorInfo)> =
        Vec::with_capacity(entries.len());
    for (name, value) in entries {
        if name == "__metadata__" {
            continue;
        }
        let info: safetensors::tensor::TensorInfo =
            serde_json::from_value(value).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        infos.push((name, info));
    }
    infos.sort_by_key(|(_, info)| info.data_offsets.0);
    let mut tensors = BTreeMap::new();
    let mut bytes = Vec::new();
    for (name, info) in infos {
        let dtype =
            DType::try_from(info.dtype).map_err(|e| bad(format!("tensor `{name}`: {e}")))?;
        let (start, end) = info.data_offsets;
        let elements = info
            .shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .ok_or_else(|| bad(format!("tensor `{name}`: shape {:?} overflows", info.shape)))?;
        let expected = elements.checked_mul(dtype.size_in_bytes());
        if start > end || end as u64 > data_len || expected != Some(end - start) {
            return Err(bad(format!(
                "tensor `{name}`: bytes {start}..{end} do not hold shape {:?} of {dtype:?} within {data_len} data bytes",
                info.shape
            )));
        }
        bytes.resize(end - start, 0);
        file.read_exact_at(&mut bytes, data_start + start as u64)
            .map_err(|e| Error::io(path, e))?;
        let tensor = candle_core::Tensor::from_raw_buffer(&bytes, dtype, &info.shape, device)?;
        tensors.insert(name, tensor);
    }
    Ok(TensorStore::new(
        path.display().to_string(),
        tensors,
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
