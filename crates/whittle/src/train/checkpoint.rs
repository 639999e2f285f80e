//! Training checkpoints a run can be killed and resumed from exactly.
//!
//! A checkpoint is two files in the work folder: `checkpoint-STEP.safetensors` (every
//! parameter and both Adam moments, `param.NAME`, `adam_m.NAME`, `adam_v.NAME`, and the
//! compression method's own tensors, `method.NAME`) and `state.json`
//! (step, data-order position, RNG state, optimizer step count, best dev result, elapsed time,
//! the recipe). Each is written to a temporary file and renamed; `state.json` is written last and
//! names its tensor file, so a kill at any moment leaves the previous complete checkpoint.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};

use super::method::CompressionMethod;
use super::optim::AdamW;
use super::recipe::Recipe;
use crate::error::{Error, Result};

/// The state file's name.
pub const STATE_FILE: &str = "state.json";
/// Parameters of the best dev result so far.
pub const BEST_FILE: &str = "best.safetensors";
/// Version of [`TrainState`]'s layout.
pub const STATE_VERSION: u32 = 1;

/// The best dev result so far.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Best {
    /// Optimizer step it was measured after.
    pub step: usize,
    /// The dev score the run selects on, lower is better ([`super::model::DevScore::value`]:
    /// WER for a recognizer, perplexity for a language model). Older states call it `wer`.
    #[serde(alias = "wer")]
    pub score: f64,
}

/// Everything besides tensors that a resumed run needs.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainState {
    /// Layout version.
    pub version: u32,
    /// Optimizer steps done.
    pub step: usize,
    /// Current pass over the training data.
    pub epoch: usize,
    /// Next position in this epoch's order.
    pub cursor: usize,
    /// Seed of the data-order generator (ChaCha8).
    pub rng_seed: u64,
    /// Generator word position before this epoch's shuffle (decimal u128).
    pub epoch_rng_word_pos: String,
    /// AdamW updates applied.
    pub optimizer_steps: u64,
    /// Best dev result.
    pub best: Option<Best>,
    /// Seconds spent so far, over all sessions.
    pub elapsed_seconds: f64,
    /// The recipe the run started with.
    pub recipe: Recipe,
    /// The tensor file of this checkpoint.
    pub tensors: String,
    /// The compression method's own state ([`super::method::CompressionMethod::state`]).
    #[serde(default)]
    pub method: serde_json::Value,
}

/// `name -> tensor` of the optimizer's parameters (and moments when `moments`) and the
/// method's own tensors.
fn optimizer_tensors(
    optimizer: &AdamW,
    method: &dyn CompressionMethod,
    moments: bool,
) -> Vec<(String, Tensor)> {
    let mut out: Vec<(String, Tensor)> = method
        .state_tensors()
        .into_iter()
        .map(|(name, t)| (format!("method.{name}"), t))
        .collect();
    for p in &optimizer.params {
        out.push((format!("param.{}", p.name), p.var.as_tensor().clone()));
        if moments {
            out.push((format!("adam_m.{}", p.name), p.m.clone()));
            out.push((format!("adam_v.{}", p.name), p.v.clone()));
        }
    }
    out
}

fn write_tensors(path: &Path, tensors: Vec<(String, Tensor)>) -> Result<()> {
    let bytes = safetensors::serialize(tensors, None)
        .map_err(|e| Error::malformed(path, format!("serializing: {e}")))?;
    crate::fsutil::write_atomic(path, &bytes)
}

fn read_tensors(path: &Path, device: &Device) -> Result<HashMap<String, Tensor>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    candle_core::safetensors::load_buffer(&bytes, device)
        .map_err(|e| Error::malformed(path, format!("not a valid safetensors file: {e}")))
}

/// Write a checkpoint into `dir`; older checkpoint tensor files are removed afterwards.
pub fn save(
    dir: &Path,
    state: &mut TrainState,
    optimizer: &AdamW,
    method: &dyn CompressionMethod,
) -> Result<()> {
    let name = format!("checkpoint-{:07}.safetensors", state.step);
    write_tensors(&dir.join(&name), optimizer_tensors(optimizer, method, true))?;
    state.tensors = name.clone();
    let json = serde_json::to_string_pretty(state).expect("state is plain data");
    crate::fsutil::write_atomic(&dir.join(STATE_FILE), json.as_bytes())?;
    for entry in std::fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .flatten()
    {
        let file = entry.file_name().to_string_lossy().into_owned();
        if file.starts_with("checkpoint-") && file.ends_with(".safetensors") && file != name {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// The state of the checkpoint in `dir`, if there is one.
pub fn load_state(dir: &Path) -> Result<Option<TrainState>> {
    let path = dir.join(STATE_FILE);
    if !path.is_file() {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let state: TrainState = serde_json::from_str(&text).map_err(|e| Error::Json {
        context: path.display().to_string(),
        source: e,
    })?;
    if state.version != STATE_VERSION {
        return Err(Error::malformed(
            &path,
            format!(
                "state version {} (this build reads {STATE_VERSION})",
                state.version
            ),
        ));
    }
    Ok(Some(state))
}

/// `take(key, like)`: the tensor `key` of `tensors` (read from `path`), checked against the
/// shape and dtype of `like`.
fn take_checked(
    tensors: &mut HashMap<String, Tensor>,
    path: &Path,
    key: String,
    like: &Tensor,
) -> Result<Tensor> {
    let t = tensors.remove(&key).ok_or_else(|| Error::MissingTensor {
        source_name: path.display().to_string(),
        tensor: key.clone(),
    })?;
    if t.dims() != like.dims() || t.dtype() != like.dtype() {
        return Err(Error::ShapeMismatch {
            source_name: path.display().to_string(),
            tensor: key,
            expected: like.dims().to_vec(),
            actual: t.dims().to_vec(),
        });
    }
    Ok(t)
}

fn device_of(optimizer: &AdamW) -> Device {
    optimizer
        .params
        .first()
        .map(|p| p.var.device().clone())
        .unwrap_or(Device::Cpu)
}

/// Restore parameters and moments of `optimizer`, and the method's tensors, from the
/// checkpoint of `state` in `dir`.
pub fn restore(
    dir: &Path,
    state: &TrainState,
    optimizer: &mut AdamW,
    method: &mut dyn CompressionMethod,
) -> Result<()> {
    let path: PathBuf = dir.join(&state.tensors);
    let mut tensors = read_tensors(&path, &device_of(optimizer))?;
    for p in optimizer.params.iter_mut() {
        let value = take_checked(
            &mut tensors,
            &path,
            format!("param.{}", p.name),
            p.var.as_tensor(),
        )?;
        p.var.set(&value)?;
        p.m = take_checked(&mut tensors, &path, format!("adam_m.{}", p.name), &p.m)?;
        p.v = take_checked(&mut tensors, &path, format!("adam_v.{}", p.name), &p.v)?;
    }
    method.restore_tensors(&mut |name, like| {
        take_checked(&mut tensors, &path, format!("method.{name}"), like)
    })?;
    optimizer.steps = state.optimizer_steps;
    Ok(())
}

/// Save the current parameters (and the method's tensors) as the best ones.
pub fn save_best(dir: &Path, optimizer: &AdamW, method: &dyn CompressionMethod) -> Result<()> {
    write_tensors(
        &dir.join(BEST_FILE),
        optimizer_tensors(optimizer, method, false),
    )
}

/// Load the best parameters into the optimizer's variables, and the method's tensors.
pub fn load_best(dir: &Path, optimizer: &AdamW, method: &mut dyn CompressionMethod) -> Result<()> {
    let path = dir.join(BEST_FILE);
    let mut tensors = read_tensors(&path, &device_of(optimizer))?;
    for p in &optimizer.params {
        let t = take_checked(
            &mut tensors,
            &path,
            format!("param.{}", p.name),
            p.var.as_tensor(),
        )?;
        p.var.set(&t)?;
    }
    method.restore_tensors(&mut |name, like| {
        take_checked(&mut tensors, &path, format!("method.{name}"), like)
    })
}
