//! Checkpoint readers and the name-addressed tensor store that models load from.
//!
//! Every reader produces a [`TensorStore`] keyed by the Hugging Face tensor names of the
//! architecture, so each model is written once against one naming scheme. The store records
//! which tensors the model took; [`TensorStore::report`] lists the unused ones so a load
//! always says what it ignored.

pub mod ct2;
pub mod gguf;
pub mod hf;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// Tensors from one checkpoint, by name, with usage tracking.
pub struct TensorStore {
    source_name: String,
    tensors: BTreeMap<String, Tensor>,
    /// Dtype each tensor had on disk (the store may hold it converted).
    stored_dtypes: BTreeMap<String, DType>,
    /// Linear weights already in packed low-bit form, by tensor name (`....weight`).
    packed: BTreeMap<String, std::sync::Arc<whittle_kernels::PackedMatrix>>,
    used: Mutex<BTreeSet<String>>,
    device: Device,
}

/// What a model load took from, and left in, a checkpoint.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LoadReport {
    /// The checkpoint the model was loaded from.
    pub source: String,
    /// Tensors the model read.
    pub used: usize,
    /// Tensors present in the checkpoint that the model never read.
    pub unused: Vec<String>,
    /// Tensors the model wanted but did not find (empty on success: a missing tensor fails the load).
    pub missing: Vec<String>,
}

impl TensorStore {
    /// A store over `tensors`, described as `source_name` in errors.
    pub fn new(
        source_name: impl Into<String>,
        tensors: BTreeMap<String, Tensor>,
        device: Device,
    ) -> Self {
        let stored_dtypes = tensors
            .iter()
            .map(|(k, t)| (k.clone(), t.dtype()))
            .collect();
        Self {
            source_name: source_name.into(),
            tensors,
            stored_dtypes,
            packed: BTreeMap::new(),
            used: Mutex::new(BTreeSet::new()),
            device,
        }
    }

    /// The description used in errors (usually the file path).
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Device the tensors live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Whether a tensor is present.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// All tensor names, sorted.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// Dtype the tensor had in the file.
    pub fn stored_dtype(&self, name: &str) -> Option<DType> {
        self.stored_dtypes.get(name).copied()
    }

    /// Fetch `name` without marking it used (for inspection).
    pub fn peek(&self, name: &str) -> Option<&Tensor> {
        self.tensors.get(name)
    }

    /// Fetch `name`, check its shape, mark it used, and convert it to `dtype`.
    pub fn get(&self, name: &str, shape: &[usize], dtype: DType) -> Result<Tensor> {
        let tensor = self.get_unchecked(name)?;
        if tensor.dims() != shape {
            return Err(Error::ShapeMismatch {
                source_name: self.source_name.clone(),
                tensor: name.to_string(),
                expected: shape.to_vec(),
                actual: tensor.dims().to_vec(),
            });
        }
        Ok(tensor.to_dtype(dtype)?)
    }

    /// Fetch `name` with whatever shape it has, marking it used.
    pub fn get_unchecked(&self, name: &str) -> Result<Tensor> {
        let tensor = self.tensors.get(name).ok_or_else(|| Error::MissingTensor {
            source_name: self.source_name.clone(),
            tensor: name.to_string(),
        })?;
        match tensor.dtype() {
            DType::F16 | DType::BF16 | DType::F32 | DType::F64 => {}
            other => {
                return Err(Error::DtypeMismatch {
                    source_name: self.source_name.clone(),
                    tensor: name.to_string(),
                    expected: "a float dtype (f16, bf16, f32, f64)".into(),
                    actual: format!("{other:?}"),
                })
            }
        }
        self.used
            .lock()
            .expect("usage set poisoned")
            .insert(name.to_string());
        Ok(tensor.clone())
    }

    /// Add a packed linear weight under `name`.
    pub fn insert_packed(
        &mut self,
        name: impl Into<String>,
        matrix: whittle_kernels::PackedMatrix,
    ) {
        self.packed.insert(name.into(), std::sync::Arc::new(matrix));
    }

    /// A packed weight, checked against `[rows, cols]` and marked used.
    pub fn get_packed(
        &self,
        name: &str,
        shape: [usize; 2],
    ) -> Result<Option<std::sync::Arc<whittle_kernels::PackedMatrix>>> {
        let Some(p) = self.packed.get(name) else {
            return Ok(None);
        };
        if [p.rows(), p.cols()] != shape {
            return Err(Error::ShapeMismatch {
                source_name: self.source_name.clone(),
                tensor: name.to_string(),
                expected: shape.to_vec(),
                actual: vec![p.rows(), p.cols()],
            });
        }
        self.used
            .lock()
            .expect("usage set poisoned")
            .insert(name.to_string());
        Ok(Some(p.clone()))
    }

    /// Names of the packed weights.
    pub fn packed_names(&self) -> impl Iterator<Item = &str> {
        self.packed.keys().map(String::as_str)
    }

    /// Which tensors were used and which were not.
    pub fn report(&self) -> LoadReport {
        let used = self.used.lock().expect("usage set poisoned");
        LoadReport {
            source: self.source_name.clone(),
            used: used.len(),
            unused: self
                .tensors
                .keys()
                .chain(self.packed.keys())
                .filter(|k| !used.contains(*k))
                .cloned()
                .collect(),
            missing: Vec::new(),
        }
    }

    /// Total number of elements across all tensors.
    pub fn parameter_count(&self) -> usize {
        self.tensors.values().map(|t| t.elem_count()).sum()
    }

    /// Elements of the tensors a model read so far (float ones and packed matrices): the
    /// parameters of the architecture, without tensors the checkpoint carries but no layer uses.
    pub fn used_parameter_count(&self) -> usize {
        let used = self.used.lock().expect("usage set poisoned");
        let float: usize = self
            .tensors
            .iter()
            .filter(|(name, _)| used.contains(*name))
            .map(|(_, t)| t.elem_count())
            .sum();
        let packed: usize = self
            .packed
            .iter()
            .filter(|(name, _)| used.contains(*name))
            .map(|(_, p)| p.rows() * p.cols())
            .sum();
        float + packed
    }

    /// Insert or replace a tensor (used by format converters and tests).
    pub fn insert(&mut self, name: impl Into<String>, tensor: Tensor) {
        let name = name.into();
        self.stored_dtypes.insert(name.clone(), tensor.dtype());
        self.tensors.insert(name, tensor);
    }
}
