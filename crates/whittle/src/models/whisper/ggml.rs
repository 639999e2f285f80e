//! whisper.cpp's model file (the legacy ggml format of `convert-pt-to-ggml.py`): a strict reader
//! and a writer of what a whittle Whisper model holds.
//!
//! Layout, little-endian, as whisper.cpp 1.8.5's `whisper_model_load` reads it:
//! `u32` magic `0x67676d6c`; eleven `i32` hyperparameters (`n_vocab, n_audio_ctx, n_audio_state,
//! n_audio_head, n_audio_layer, n_text_ctx, n_text_state, n_text_head, n_text_layer, n_mels,
//! ftype`); the mel filterbank (`i32 n_mel, i32 n_fft`, `n_mel * n_fft` `f32`); the vocabulary
//! (`i32 count`, then per token `u32 len` and its bytes); then tensors until the end of the file,
//! each `i32 n_dims, i32 name_len, i32 ggml_type`, `n_dims` `i32` extents (innermost first), the
//! name, and the data. See `docs/ggml.md`.
//!
//! whisper.cpp 1.8.5 creates every matrix with the one type of the file's `ftype` and checks each
//! stored tensor's byte size against it, so a file it loads has one matrix type; conv kernels are
//! `f16` (`f32` in an `f32` file) and everything else is `f32`. [`write_ggml`] therefore picks one
//! matrix type and copies every matrix that type holds exactly code for code (see
//! [`whittle_kernels::ggml`]); any other matrix is re-quantized with ggml's reference rounding and
//! reported with its reconstruction error.

use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::{DType, Tensor};
use whittle_kernels::ggml::{self as codec, GgmlType};

use super::model::{Attention, Whisper};
use super::tokenizer::WhisperTokenizer;
use crate::error::{Error, Result};
use crate::nn::{LayerNorm, Linear, Weight};

/// `"ggml"` read as a little-endian `u32`.
pub const GGML_MAGIC: u32 = 0x6767_6d6c;
/// ggml's quantization version, added (times 1000) to `ftype` in quantized files.
pub const GGML_QUANTIZATION_VERSION: i32 = 2;

// Caps that keep a crafted header from asking for unbounded memory before sizes are checked
// against the file length.
const MAX_DIMENSION: i32 = 1 << 20;
const MAX_TOKEN_BYTES: u32 = 1 << 12;
const MAX_NAME_BYTES: i32 = 1 << 10;
const MAX_TENSORS: usize = 1 << 16;

/// The hyperparameters of a whisper.cpp file.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct GgmlHparams {
    /// Output vocabulary (51864 for English-only models, 51865+ for multilingual ones).
    pub n_vocab: usize,
    /// Encoder positions (1500).
    pub n_audio_ctx: usize,
    /// Encoder width.
    pub n_audio_state: usize,
    /// Encoder heads.
    pub n_audio_head: usize,
    /// Encoder layers.
    pub n_audio_layer: usize,
    /// Decoder positions (448).
    pub n_text_ctx: usize,
    /// Decoder width.
    pub n_text_state: usize,
    /// Decoder heads.
    pub n_text_head: usize,
    /// Decoder layers.
    pub n_text_layer: usize,
    /// Mel bands.
    pub n_mels: usize,
    /// `enum ggml_ftype` plus 1000 x the quantization version, as stored.
    pub ftype: i32,
}

impl GgmlHparams {
    /// The matrix type the file declares.
    pub fn matrix_type(&self) -> Option<GgmlType> {
        GgmlType::from_file_type(self.ftype % 1000)
    }
}

/// One tensor's header and where its data lies in the file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GgmlTensorInfo {
    /// openai-whisper's parameter name (`encoder.blocks.0.attn.query.weight`).
    pub name: String,
    /// Stored type.
    pub ggml_type: GgmlType,
    /// Extents, innermost first (ggml's `ne`): a `[out, in]` matrix is `[in, out]`.
    pub ne: Vec<usize>,
    /// Offset of the data from the start of the file.
    pub offset: usize,
    /// Bytes of data.
    pub bytes: usize,
}

impl GgmlTensorInfo {
    /// Offset of the tensor's header (`n_dims`, name length, type, extents, name) from the start
    /// of the file: the header is written immediately before the data.
    pub fn header_offset(&self) -> usize {
        self.offset - self.name.len() - 4 * self.ne.len() - 12
    }

    /// Number of weights.
    pub fn elements(&self) -> usize {
        self.ne.iter().product()
    }
}

/// A whisper.cpp model file, read and checked completely.
#[derive(Clone, Debug)]
pub struct GgmlWhisperFile {
    /// Where it was read from.
    pub path: PathBuf,
    /// Hyperparameters.
    pub hparams: GgmlHparams,
    /// Mel bands and FFT bins of the filterbank.
    pub mel_shape: (usize, usize),
    /// The filterbank, row-major `[n_mel][n_fft]`.
    pub mel_filters: Vec<f32>,
    /// Token bytes by id (the regular tokens; whisper.cpp names the special ones itself).
    pub vocab: Vec<Vec<u8>>,
    /// Tensors in file order.
    pub tensors: Vec<GgmlTensorInfo>,
    bytes: Vec<u8>,
}

struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn malformed(&self, reason: String) -> Error {
        Error::Malformed {
            path: self.path.to_path_buf(),
            reason: format!("{reason} (at byte {})", self.at),
        }
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self
            .at
            .checked_add(n)
            .filter(|&end| end <= self.bytes.len())
            .ok_or_else(|| {
                self.malformed(format!(
                    "{what} needs {n} bytes but only {} remain",
                    self.bytes.len() - self.at
                ))
            })?;
        let slice = &self.bytes[self.at..end];
        self.at = end;
        Ok(slice)
    }

    fn i32(&mut self, what: &str) -> Result<i32> {
        let b = self.take(4, what)?;
        Ok(i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A positive `i32` no larger than [`MAX_DIMENSION`].
    fn extent(&mut self, what: &str) -> Result<usize> {
        let v = self.i32(what)?;
        if !(1..=MAX_DIMENSION).contains(&v) {
            return Err(self.malformed(format!("{what} is {v}, outside 1..={MAX_DIMENSION}")));
        }
        Ok(v as usize)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }
}

impl GgmlWhisperFile {
    /// Reads and checks `path`: every size against the file's length before anything is
    /// allocated, every tensor type and name, and that no data is left over or missing.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, bytes)
    }

    /// Whether `path` starts with the ggml magic.
    pub fn sniff(path: &Path) -> bool {
        let mut magic = [0u8; 4];
        std::fs::File::open(path)
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut magic))
            .is_ok_and(|()| u32::from_le_bytes(magic) == GGML_MAGIC)
    }

    /// Parses the bytes of a file read from `path`.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let mut c = Cursor {
            path,
            bytes: &bytes,
            at: 0,
        };
        let magic = c.u32("magic")?;
        if magic != GGML_MAGIC {
            return Err(c.malformed(format!(
                "not a whisper.cpp ggml file: magic {magic:#010x}, expected {GGML_MAGIC:#010x}"
            )));
        }
        let hparams = GgmlHparams {
            n_vocab: c.extent("n_vocab")?,
            n_audio_ctx: c.extent("n_audio_ctx")?,
            n_audio_state: c.extent("n_audio_state")?,
            n_audio_head: c.extent("n_audio_head")?,
            n_audio_layer: c.extent("n_audio_layer")?,
            n_text_ctx: c.extent("n_text_ctx")?,
            n_text_state: c.extent("n_text_state")?,
            n_text_head: c.extent("n_text_head")?,
            n_text_layer: c.extent("n_text_layer")?,
            n_mels: c.extent("n_mels")?,
            ftype: c.i32("ftype")?,
        };
        if hparams.ftype < 0 || hparams.matrix_type().is_none() {
            return Err(c.malformed(format!(
                "ftype {} is not one whittle reads (f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0)",
                hparams.ftype
            )));
        }
        let n_mel = c.extent("mel filter bands")?;
        let n_fft = c.extent("mel filter bins")?;
        let filter_bytes = n_mel
            .checked_mul(n_fft)
            .and_then(|n| n.checked_mul(4))
            .ok_or_else(|| c.malformed("mel filterbank size overflows".into()))?;
        let mel_filters = c
            .take(filter_bytes, "mel filterbank")?
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect();
        let count = c.i32("vocabulary size")?;
        if count < 0 || count as usize > c.remaining() / 4 {
            return Err(c.malformed(format!(
                "vocabulary size {count} does not fit in the rest of the file"
            )));
        }
        let mut vocab = Vec::with_capacity(count as usize);
        for id in 0..count {
            let len = c.u32("token length")?;
            if len > MAX_TOKEN_BYTES {
                return Err(c.malformed(format!(
                    "token {id} is {len} bytes long (at most {MAX_TOKEN_BYTES})"
                )));
            }
            vocab.push(c.take(len as usize, "token bytes")?.to_vec());
        }
        let mut tensors: Vec<GgmlTensorInfo> = Vec::new();
        let mut names = BTreeSet::new();
        while c.remaining() > 0 {
            if tensors.len() == MAX_TENSORS {
                return Err(c.malformed(format!("more than {MAX_TENSORS} tensors")));
            }
            let n_dims = c.i32("tensor rank")?;
            let name_len = c.i32("tensor name length")?;
            let type_id = c.i32("tensor type")?;
            if !(1..=4).contains(&n_dims) {
                return Err(c.malformed(format!("tensor rank {n_dims} is outside 1..=4")));
            }
            if !(1..=MAX_NAME_BYTES).contains(&name_len) {
                return Err(c.malformed(format!(
                    "tensor name length {name_len} is outside 1..={MAX_NAME_BYTES}"
                )));
            }
            let mut ne = Vec::with_capacity(n_dims as usize);
            for _ in 0..n_dims {
                ne.push(c.extent("tensor extent")?);
            }
            let name = String::from_utf8(c.take(name_len as usize, "tensor name")?.to_vec())
                .map_err(|_| c.malformed("tensor name is not UTF-8".into()))?;
            let ggml_type = u32::try_from(type_id)
                .ok()
                .and_then(GgmlType::from_id)
                .ok_or_else(|| {
                    c.malformed(format!(
                        "tensor `{name}` has ggml type {type_id}, not one whittle reads"
                    ))
                })?;
            let elements = ne
                .iter()
                .try_fold(1usize, |n, &d| n.checked_mul(d))
                .ok_or_else(|| c.malformed(format!("tensor `{name}`: element count overflows")))?;
            if ne[0] % ggml_type.block_len() != 0 {
                return Err(c.malformed(format!(
                    "tensor `{name}`: rows of {} weights are not whole {ggml_type} blocks",
                    ne[0]
                )));
            }
            let size = ggml_type
                .bytes_for(elements)
                .ok_or_else(|| c.malformed(format!("tensor `{name}`: byte size overflows")))?;
            if !names.insert(name.clone()) {
                return Err(c.malformed(format!("tensor `{name}` appears twice")));
            }
            let offset = c.at;
            c.take(size, &format!("data of tensor `{name}`"))?;
            tensors.push(GgmlTensorInfo {
                name,
                ggml_type,
                ne,
                offset,
                bytes: size,
            });
        }
        Ok(Self {
            path: path.to_path_buf(),
            hparams,
            mel_shape: (n_mel, n_fft),
            mel_filters,
            vocab,
            tensors,
            bytes,
        })
    }

    /// A tensor's header by name.
    pub fn tensor(&self, name: &str) -> Option<&GgmlTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// A tensor's stored bytes.
    pub fn data(&self, info: &GgmlTensorInfo) -> &[u8] {
        &self.bytes[info.offset..info.offset + info.bytes]
    }

    /// A tensor's weights as `f32`, in file order.
    pub fn values(&self, info: &GgmlTensorInfo) -> Result<Vec<f32>> {
        codec::dequantize(self.data(info), info.ggml_type, info.elements()).map_err(|e| {
            Error::Malformed {
                path: self.path.clone(),
                reason: format!("tensor `{}`: {e}", info.name),
            }
        })
    }
}

/// What [`write_ggml`] should do with the matrices.
#[derive(Clone, Copy, Debug, Default)]
pub struct GgmlExportOptions {
    /// The one matrix type of the file; `None` picks it (see [`choose_matrix_type`]).
    pub matrix_type: Option<GgmlType>,
}

/// How one tensor was written.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GgmlTensorReport {
    /// openai-whisper name in the file.
    pub name: String,
    /// Stored ggml type.
    pub ggml_type: String,
    /// What whittle held: `float`, or the packed format as `inspect` labels it (`sym4 g64`, ...).
    pub source: String,
    /// Whether it is one of the matrices stored in the file's matrix type (the linear layers
    /// and the token embedding), rather than a conv kernel, bias, norm or position table.
    pub matrix: bool,
    /// Whether the stored weights equal whittle's, bit for bit.
    pub exact: bool,
    /// Largest absolute difference from whittle's weights.
    pub max_abs_error: f32,
    /// `||stored - whittle|| / ||whittle||`.
    pub relative_rms_error: f64,
}

/// What [`write_ggml`] wrote.
#[derive(Clone, Debug, serde::Serialize)]
pub struct GgmlExportReport {
    /// The file's matrix type.
    pub matrix_type: String,
    /// File size in bytes.
    pub bytes: u64,
    /// Every tensor, in file order.
    pub tensors: Vec<GgmlTensorReport>,
}

impl GgmlExportReport {
    /// Tensors that are not bit-exact copies of whittle's weights.
    pub fn inexact(&self) -> impl Iterator<Item = &GgmlTensorReport> {
        self.tensors.iter().filter(|t| !t.exact)
    }
}

fn packed_format_name(weight: &Weight) -> String {
    match weight {
        Weight::Packed(p) => crate::packed_file::format_label(p.format()),
        Weight::Float(_) => "float".to_string(),
        Weight::FakeQuant(_) => "fake-quantized (not extracted)".to_string(),
        Weight::Mixed(_) => "mixed-precision supernet (not extracted)".to_string(),
        Weight::Ternary(_) => "ternary latent (not extracted)".to_string(),
        Weight::Gated(_) => "gated (not extracted)".to_string(),
    }
}

/// Every matrix whisper.cpp stores in the file's matrix type, with its openai-whisper name.
fn matrices(model: &Whisper) -> Vec<(String, &Linear)> {
    fn attention<'a>(out: &mut Vec<(String, &'a Linear)>, prefix: &str, a: &'a Attention) {
        for (suffix, linear) in [
            ("query", &a.q_proj),
            ("key", &a.k_proj),
            ("value", &a.v_proj),
            ("out", &a.out_proj),
        ] {
            out.push((format!("{prefix}.{suffix}.weight"), linear));
        }
    }
    let mut out = vec![(
        "decoder.token_embedding.weight".to_string(),
        &model.decoder.embed_tokens,
    )];
    for (part, layers) in [
        ("encoder", &model.encoder.layers),
        ("decoder", &model.decoder.layers),
    ] {
        for (i, block) in layers.iter().enumerate() {
            let p = format!("{part}.blocks.{i}");
            if let Some(m) = &block.self_attn {
                attention(&mut out, &format!("{p}.attn"), &m.attn);
            }
            if let Some(m) = &block.encoder_attn {
                attention(&mut out, &format!("{p}.cross_attn"), &m.attn);
            }
            if let Some(f) = &block.mlp {
                out.push((format!("{p}.mlp.0.weight"), &f.fc1));
                out.push((format!("{p}.mlp.2.weight"), &f.fc2));
            }
        }
    }
    out
}

/// The file's matrix type when none is asked for: the narrowest type that holds every packed
/// matrix code for code (`q4_0` for <= 4 bits and ternary, `q5_0` for 5, `q8_0` for 6-8; a
/// packed asymmetric matrix counts as `q8_0`), or `f16` for a model with no packed matrix.
/// Float matrices of a packed model are re-quantized to it.
pub fn choose_matrix_type(model: &Whisper) -> GgmlType {
    let rank = |t: GgmlType| match t {
        GgmlType::Q4_0 => 0,
        GgmlType::Q5_0 => 1,
        _ => 2,
    };
    matrices(model)
        .iter()
        .filter_map(|(_, linear)| match &linear.weight {
            Weight::Packed(p) => {
                Some(codec::exact_type(p.format().quant, p.cols()).unwrap_or(GgmlType::Q8_0))
            }
            _ => None,
        })
        .max_by_key(|&t| rank(t))
        .unwrap_or(GgmlType::F16)
}

/// Names of the matrices that `ty` cannot hold bit for bit (they would be re-quantized).
pub fn inexact_matrices(model: &Whisper, ty: GgmlType) -> Vec<String> {
    matrices(model)
        .into_iter()
        .filter(|(_, linear)| match (&linear.weight, ty) {
            (_, GgmlType::F32) => false,
            (Weight::Packed(p), _) => codec::encode_exact(&p.unpack(), ty).is_none(),
            (Weight::Float(w), GgmlType::F16) => tensor_values(w).map_or(true, |values| {
                values.iter().any(|&v| half::f16::from_f32(v).to_f32() != v)
            }),
            _ => true,
        })
        .map(|(name, _)| name)
        .collect()
}

/// The regular tokens' bytes, ids `0..eot`: byte-level BPE strings mapped back to bytes.
fn vocabulary_bytes(tokenizer: &WhisperTokenizer) -> Result<Vec<Vec<u8>>> {
    let unicode_to_byte = byte_level_alphabet();
    let mut out = vec![Vec::new(); tokenizer.eot as usize];
    for (token, id) in tokenizer.inner().get_vocab(false) {
        let Some(slot) = out.get_mut(id as usize) else {
            continue;
        };
        let bytes: Option<Vec<u8>> = token
            .chars()
            .map(|ch| unicode_to_byte.get(&ch).copied())
            .collect();
        *slot = bytes.ok_or_else(|| Error::Tokenizer {
            context: "ggml export".into(),
            reason: format!("token {id} ({token:?}) is not a byte-level BPE token"),
        })?;
    }
    Ok(out)
}

/// GPT-2's byte-to-unicode table, inverted: printable bytes stand for themselves, the others
/// for code points from 256 on, in byte order.
fn byte_level_alphabet() -> std::collections::HashMap<char, u8> {
    let printable = |b: u8| matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF);
    let mut next = 256u32;
    (0..=255u8)
        .map(|b| {
            if printable(b) {
                (char::from(b), b)
            } else {
                let ch = char::from_u32(next).expect("code points 256..324 are chars");
                next += 1;
                (ch, b)
            }
        })
        .collect()
}

struct TensorWriter {
    out: Vec<u8>,
    reports: Vec<GgmlTensorReport>,
}

fn tensor_values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?)
}

fn error_stats(reference: &[f32], stored: &[f32]) -> (f32, f64) {
    let (mut max, mut diff, mut norm) = (0.0f32, 0.0f64, 0.0f64);
    for (&a, &b) in reference.iter().zip(stored) {
        max = max.max((a - b).abs());
        diff += f64::from(a - b).powi(2);
        norm += f64::from(a).powi(2);
    }
    (
        max,
        if norm > 0.0 {
            (diff / norm).sqrt()
        } else {
            0.0
        },
    )
}

impl TensorWriter {
    fn header(&mut self, name: &str, ty: GgmlType, ne: &[usize]) {
        let o = &mut self.out;
        o.extend_from_slice(&(ne.len() as i32).to_le_bytes());
        o.extend_from_slice(&(name.len() as i32).to_le_bytes());
        o.extend_from_slice(&(ty.id() as i32).to_le_bytes());
        for &d in ne {
            o.extend_from_slice(&(d as i32).to_le_bytes());
        }
        o.extend_from_slice(name.as_bytes());
    }

    /// Writes row-major float `values` (innermost extent `ne[0]`) as `ty`, re-rounding as needed.
    fn float(
        &mut self,
        name: &str,
        ty: GgmlType,
        ne: &[usize],
        values: &[f32],
        source: String,
        matrix: bool,
    ) -> Result<()> {
        let bytes = codec::quantize_f32(values, ne[0], ty).map_err(|e| tensor_error(name, e))?;
        let stored =
            codec::dequantize(&bytes, ty, values.len()).map_err(|e| tensor_error(name, e))?;
        let (max_abs_error, relative_rms_error) = error_stats(values, &stored);
        self.header(name, ty, ne);
        self.out.extend_from_slice(&bytes);
        self.reports.push(GgmlTensorReport {
            name: name.to_string(),
            ggml_type: ty.name().to_string(),
            source,
            matrix,
            exact: stored.iter().zip(values).all(|(a, b)| a == b),
            max_abs_error,
            relative_rms_error,
        });
        Ok(())
    }

    fn tensor(&mut self, name: &str, t: &Tensor) -> Result<()> {
        // Row-major `[a, b]` is ggml's `ne = [b, a]`; a vector stays one extent.
        let ne: Vec<usize> = t.dims().iter().rev().copied().collect();
        self.float(
            name,
            GgmlType::F32,
            &ne,
            &tensor_values(t)?,
            "float".into(),
            false,
        )
    }

    fn layer_norm(&mut self, prefix: &str, norm: &LayerNorm) -> Result<()> {
        self.tensor(&format!("{prefix}.weight"), &norm.weight)?;
        self.tensor(&format!("{prefix}.bias"), &norm.bias)
    }

    /// A linear layer's matrix (`{prefix}.weight`) and bias, when it has one.
    fn linear(&mut self, prefix: &str, linear: &Linear, ty: GgmlType) -> Result<()> {
        self.matrix(&format!("{prefix}.weight"), linear, ty)?;
        match &linear.bias {
            Some(bias) => self.tensor(&format!("{prefix}.bias"), bias),
            None => Ok(()),
        }
    }

    fn attention(&mut self, prefix: &str, a: &Attention, ty: GgmlType) -> Result<()> {
        self.linear(&format!("{prefix}.query"), &a.q_proj, ty)?;
        self.linear(&format!("{prefix}.key"), &a.k_proj, ty)?;
        self.linear(&format!("{prefix}.value"), &a.v_proj, ty)?;
        self.linear(&format!("{prefix}.out"), &a.out_proj, ty)
    }

    fn matrix(&mut self, name: &str, linear: &Linear, ty: GgmlType) -> Result<()> {
        let (rows, cols) = linear.weight.dims();
        let source = packed_format_name(&linear.weight);
        if let Weight::Packed(p) = &linear.weight {
            let q = p.unpack();
            if let Some(bytes) = codec::encode_exact(&q, ty) {
                self.header(name, ty, &[cols, rows]);
                self.out.extend_from_slice(&bytes);
                self.reports.push(GgmlTensorReport {
                    name: name.to_string(),
                    ggml_type: ty.name().to_string(),
                    source,
                    matrix: true,
                    exact: true,
                    max_abs_error: 0.0,
                    relative_rms_error: 0.0,
                });
                return Ok(());
            }
        }
        let values = tensor_values(&linear.weight.to_dense()?)?;
        self.float(name, ty, &[cols, rows], &values, source, true)
    }
}

fn tensor_error(name: &str, e: whittle_kernels::KernelError) -> Error {
    Error::Kernel(whittle_kernels::KernelError::Tensor {
        name: name.to_string(),
        source: Box::new(e),
    })
}

/// Writes `model` as a whisper.cpp model file at `path` (atomically), with `tokenizer`'s
/// vocabulary and whittle's mel filterbank.
pub fn write_ggml(
    model: &Whisper,
    tokenizer: &WhisperTokenizer,
    options: GgmlExportOptions,
    path: &Path,
) -> Result<GgmlExportReport> {
    let c = &model.config;
    let context = format!("ggml export of {}", path.display());
    let refuse = |reason: String| Error::Config {
        context: context.clone(),
        reason,
    };
    if !c.is_uniform() {
        return Err(refuse(
            "whisper.cpp's format holds one head count and one MLP width for all layers; this \
             model is structurally pruned (per-layer shapes)"
                .into(),
        ));
    }
    if c.encoder_ffn_dim != 4 * c.d_model || c.decoder_ffn_dim != 4 * c.d_model {
        return Err(refuse(format!(
            "whisper.cpp assumes an MLP width of 4 x d_model ({}); this model has {} (encoder) and {} (decoder)",
            4 * c.d_model,
            c.encoder_ffn_dim,
            c.decoder_ffn_dim
        )));
    }
    let ty = options
        .matrix_type
        .unwrap_or_else(|| choose_matrix_type(model));
    if ty.is_quantized() && !c.d_model.is_multiple_of(ty.block_len()) {
        return Err(refuse(format!(
            "d_model {} is not a multiple of {ty}'s block of {}",
            c.d_model,
            ty.block_len()
        )));
    }
    let ftype = ty.file_type()
        + if ty.is_quantized() {
            GGML_QUANTIZATION_VERSION * 1000
        } else {
            0
        };
    let mut out = Vec::new();
    out.extend_from_slice(&GGML_MAGIC.to_le_bytes());
    for v in [
        c.vocab_size,
        c.max_source_positions,
        c.d_model,
        c.encoder_attention_heads,
        c.encoder_layers,
        c.max_target_positions,
        c.d_model,
        c.decoder_attention_heads,
        c.decoder_layers,
        c.num_mel_bins,
    ] {
        out.extend_from_slice(&(v as i32).to_le_bytes());
    }
    out.extend_from_slice(&ftype.to_le_bytes());
    let n_fft = whittle_audio::mel::N_FFT;
    let filters = whittle_audio::mel::mel_filters(c.num_mel_bins, n_fft, 16_000);
    out.extend_from_slice(&(c.num_mel_bins as i32).to_le_bytes());
    out.extend_from_slice(&((n_fft / 2 + 1) as i32).to_le_bytes());
    out.extend(filters.iter().flat_map(|v| v.to_le_bytes()));
    let vocab = vocabulary_bytes(tokenizer)?;
    out.extend_from_slice(&(vocab.len() as i32).to_le_bytes());
    for token in &vocab {
        out.extend_from_slice(&(token.len() as u32).to_le_bytes());
        out.extend_from_slice(token);
    }

    let mut w = TensorWriter {
        out,
        reports: Vec::new(),
    };
    let conv_type = if ty == GgmlType::F32 {
        GgmlType::F32
    } else {
        GgmlType::F16
    };
    let enc = &model.encoder;
    w.tensor("encoder.positional_embedding", &enc.embed_positions)?;
    for (name, conv) in [("encoder.conv1", &enc.conv1), ("encoder.conv2", &enc.conv2)] {
        let kernel = conv.kernel_tensor()?;
        let (out_ch, in_ch, k) = kernel.dims3()?;
        w.float(
            &format!("{name}.weight"),
            conv_type,
            &[k, in_ch, out_ch],
            &tensor_values(&kernel)?,
            packed_format_name(&conv.weight),
            false,
        )?;
        let bias = conv
            .bias
            .as_ref()
            .ok_or_else(|| refuse(format!("{name} has no bias")))?;
        w.float(
            &format!("{name}.bias"),
            GgmlType::F32,
            &[1, out_ch],
            &tensor_values(bias)?,
            "float".into(),
            false,
        )?;
    }
    for (part, layers) in [("encoder", &enc.layers), ("decoder", &model.decoder.layers)] {
        if part == "decoder" {
            w.tensor(
                "decoder.positional_embedding",
                &model.decoder.embed_positions,
            )?;
            w.matrix(
                "decoder.token_embedding.weight",
                &model.decoder.embed_tokens,
                ty,
            )?;
        }
        for (i, block) in layers.iter().enumerate() {
            let p = format!("{part}.blocks.{i}");
            // Uniform shapes were checked above: every module is present.
            let (Some(attn), Some(mlp)) = (&block.self_attn, &block.mlp) else {
                return Err(refuse(format!("{p} has a pruned module")));
            };
            w.attention(&format!("{p}.attn"), &attn.attn, ty)?;
            w.layer_norm(&format!("{p}.attn_ln"), &attn.norm)?;
            if let Some(cross) = &block.encoder_attn {
                w.attention(&format!("{p}.cross_attn"), &cross.attn, ty)?;
                w.layer_norm(&format!("{p}.cross_attn_ln"), &cross.norm)?;
            }
            w.linear(&format!("{p}.mlp.0"), &mlp.fc1, ty)?;
            w.linear(&format!("{p}.mlp.2"), &mlp.fc2, ty)?;
            w.layer_norm(&format!("{p}.mlp_ln"), &mlp.norm)?;
        }
        if part == "encoder" {
            w.layer_norm("encoder.ln_post", &enc.layer_norm)?;
        } else {
            w.layer_norm("decoder.ln", &model.decoder.layer_norm)?;
        }
    }
    let bytes = w.out.len() as u64;
    crate::fsutil::write_atomic_with(path, |f| f.write_all(&w.out))?;
    Ok(GgmlExportReport {
        matrix_type: ty.name().to_string(),
        bytes,
        tensors: w.reports,
    })
}

// ---------------------------------------------------------------------------------------------
// Import: a whisper.cpp file as a whittle checkpoint.

/// whisper.cpp's language tokens, in id order after `<|startoftranscript|>` (`g_lang`).
const LANGUAGES: [&str; 100] = [
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it",
    "id", "hi", "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur",
    "hr", "bg", "lt", "la", "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn",
    "et", "mk", "br", "eu", "is", "hy", "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si",
    "km", "sn", "yo", "so", "af", "oc", "ka", "be", "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo",
    "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl", "mg", "as", "tt", "haw", "ln",
    "ha", "ba", "jw", "su", "yue",
];

/// The special tokens of a Whisper vocabulary of `n_vocab` ids, by id, as whisper.cpp lays them
/// out (`whisper_vocab`): `<|endoftext|>` at 50256 (English-only) or 50257 (multilingual), then
/// `<|startoftranscript|>`, the languages, the task and control tokens and 1501 timestamps.
fn special_tokens(n_vocab: usize) -> std::result::Result<(usize, Vec<String>), String> {
    let multilingual = n_vocab >= 51865;
    let languages = n_vocab
        .checked_sub(51765 + usize::from(multilingual))
        .filter(|n| (1..=LANGUAGES.len()).contains(n))
        .ok_or_else(|| {
            format!("n_vocab {n_vocab} is not a Whisper vocabulary (51864 English-only, 51865-51866 multilingual)")
        })?;
    let eot = 50256 + usize::from(multilingual);
    let mut names = vec![
        "<|endoftext|>".to_string(),
        "<|startoftranscript|>".to_string(),
    ];
    names.extend(LANGUAGES[..languages].iter().map(|l| format!("<|{l}|>")));
    names.extend(
        [
            "<|translate|>",
            "<|transcribe|>",
            "<|startoflm|>",
            "<|startofprev|>",
            if n_vocab >= 51866 {
                "<|nospeech|>"
            } else {
                "<|nocaptions|>"
            },
            "<|notimestamps|>",
        ]
        .map(String::from),
    );
    names.extend((0..=1500).map(|i| format!("<|{:.2}|>", i as f64 * 0.02)));
    debug_assert_eq!(eot + names.len(), n_vocab);
    Ok((eot, names))
}

/// GPT-2's byte-to-unicode table (the inverse of [`byte_level_alphabet`]).
fn byte_to_unicode() -> [char; 256] {
    let mut table = ['\0'; 256];
    for (ch, byte) in byte_level_alphabet() {
        table[byte as usize] = ch;
    }
    table
}

/// BPE merges implied by a rank-ordered vocabulary (tiktoken's encoding needs only ranks): for
/// each token, byte-pair merging of its bytes with the ranks below its own ends in two parts,
/// which are its merge. Tokens that do not end in two parts (single bytes, unreachable tokens)
/// give none.
fn derive_merges(vocab: &[Vec<u8>]) -> Vec<(usize, usize)> {
    let mut rank: std::collections::HashMap<&[u8], usize> = std::collections::HashMap::new();
    for (id, token) in vocab.iter().enumerate() {
        if !token.is_empty() {
            rank.entry(token.as_slice()).or_insert(id);
        }
    }
    let mut merges = Vec::new();
    for (id, token) in vocab.iter().enumerate() {
        if token.len() < 2 || rank.get(token.as_slice()) != Some(&id) {
            continue;
        }
        // Part boundaries into `token`.
        let mut bounds: Vec<usize> = (0..=token.len()).collect();
        loop {
            let best = (0..bounds.len() - 2)
                .filter_map(|i| {
                    rank.get(&token[bounds[i]..bounds[i + 2]])
                        .filter(|&&r| r < id)
                        .map(|&r| (r, i))
                })
                .min();
            match best {
                Some((_, i)) => {
                    bounds.remove(i + 1);
                }
                None => break,
            }
        }
        if bounds.len() == 3 {
            let left = rank.get(&token[bounds[0]..bounds[1]]);
            let right = rank.get(&token[bounds[1]..bounds[2]]);
            if let (Some(&l), Some(&r)) = (left, right) {
                merges.push((l, r));
            }
        }
    }
    merges
}

/// A byte-level BPE `tokenizer.json` for a whisper.cpp vocabulary: the regular tokens with
/// merges derived from their ranks, and whisper.cpp's special tokens.
pub fn tokenizer_json_from_vocab(vocab: &[Vec<u8>], n_vocab: usize) -> Result<String> {
    let (eot, specials) = special_tokens(n_vocab).map_err(|reason| Error::Tokenizer {
        context: "whisper.cpp vocabulary".into(),
        reason,
    })?;
    if vocab.len() > eot {
        return Err(Error::Tokenizer {
            context: "whisper.cpp vocabulary".into(),
            reason: format!(
                "{} regular tokens, but <|endoftext|> is id {eot} for n_vocab {n_vocab}",
                vocab.len()
            ),
        });
    }
    let alphabet = byte_to_unicode();
    let text = |bytes: &[u8]| -> String { bytes.iter().map(|&b| alphabet[b as usize]).collect() };
    let mut bpe_vocab = serde_json::Map::new();
    for (id, token) in vocab.iter().enumerate() {
        if !token.is_empty() {
            bpe_vocab.entry(text(token)).or_insert(id.into());
        }
    }
    let merges: Vec<serde_json::Value> = derive_merges(vocab)
        .into_iter()
        .map(|(l, r)| format!("{} {}", text(&vocab[l]), text(&vocab[r])).into())
        .collect();
    let mut added = Vec::with_capacity(specials.len());
    for (k, name) in specials.iter().enumerate() {
        bpe_vocab.insert(name.clone(), (eot + k).into());
        added.push(serde_json::json!({
            "id": eot + k, "content": name, "single_word": false, "lstrip": false,
            "rstrip": false, "normalized": false, "special": true
        }));
    }
    let byte_level = |prefix: bool| serde_json::json!({"type": "ByteLevel", "add_prefix_space": prefix, "trim_offsets": true, "use_regex": true});
    Ok(serde_json::json!({
        "version": "1.0", "truncation": null, "padding": null, "added_tokens": added,
        "normalizer": null, "pre_tokenizer": byte_level(false), "post_processor": null,
        "decoder": byte_level(true),
        "model": {
            "type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
            "ignore_merges": false, "vocab": bpe_vocab, "merges": merges
        }
    })
    .to_string())
}

/// openai-whisper's `suppress_tokens = "-1"`: the non-speech symbols (`non_speech_tokens`) plus
/// the task and control tokens, as the released models' generation configs list them.
pub fn default_suppress_tokens(tokenizer: &WhisperTokenizer) -> Result<Vec<u32>> {
    let mut symbols: Vec<String> = "\"#()*+/:;<=>@[\\]^_`{|}~「」『』"
        .chars()
        .map(String::from)
        .collect();
    symbols.extend(
        "<< >> <<< >>> -- --- -( -[ (' (\" (( )) ((( ))) [[ ]] {{ }} ♪♪ ♪♪♪"
            .split(' ')
            .map(String::from),
    );
    let miscellaneous = "♩♪♫♬♭♮♯";
    symbols.extend(miscellaneous.chars().map(String::from));
    let mut result = BTreeSet::new();
    for start in [" -", " '"] {
        if let Some(&t) = tokenizer.encode(start)?.first() {
            result.insert(t);
        }
    }
    for symbol in &symbols {
        let misc = symbol.chars().count() == 1 && miscellaneous.contains(symbol.as_str());
        for text in [symbol.clone(), format!(" {symbol}")] {
            let tokens = tokenizer.encode(&text)?;
            if tokens.len() == 1 || (misc && !tokens.is_empty()) {
                result.insert(tokens[0]);
            }
        }
    }
    let inner = tokenizer.inner();
    for name in [
        "<|startoftranscript|>",
        "<|translate|>",
        "<|transcribe|>",
        "<|startoflm|>",
        "<|startofprev|>",
        "<|nocaptions|>",
        "<|nospeech|>",
    ] {
        if let Some(id) = inner.token_to_id(name) {
            result.insert(id);
        }
    }
    Ok(result.into_iter().collect())
}

/// The Hugging Face name whittle's Whisper loads for a whisper.cpp tensor name.
fn hf_name(name: &str) -> Option<String> {
    let fixed = match name {
        "encoder.positional_embedding" => Some("model.encoder.embed_positions.weight"),
        "decoder.positional_embedding" => Some("model.decoder.embed_positions.weight"),
        "decoder.token_embedding.weight" => Some("model.decoder.embed_tokens.weight"),
        "encoder.ln_post.weight" => Some("model.encoder.layer_norm.weight"),
        "encoder.ln_post.bias" => Some("model.encoder.layer_norm.bias"),
        "decoder.ln.weight" => Some("model.decoder.layer_norm.weight"),
        "decoder.ln.bias" => Some("model.decoder.layer_norm.bias"),
        "encoder.conv1.weight"
        | "encoder.conv1.bias"
        | "encoder.conv2.weight"
        | "encoder.conv2.bias" => return Some(format!("model.{name}")),
        _ => None,
    };
    if let Some(f) = fixed {
        return Some(f.to_string());
    }
    let mut parts = name.splitn(4, '.');
    let (part, blocks, layer, rest) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if !matches!(part, "encoder" | "decoder") || blocks != "blocks" {
        return None;
    }
    let layer: usize = layer.parse().ok()?;
    let (module, param) = rest.rsplit_once('.')?;
    let mapped = match module {
        "attn.query" => "self_attn.q_proj",
        "attn.key" => "self_attn.k_proj",
        "attn.value" => "self_attn.v_proj",
        "attn.out" => "self_attn.out_proj",
        "attn_ln" => "self_attn_layer_norm",
        "cross_attn.query" => "encoder_attn.q_proj",
        "cross_attn.key" => "encoder_attn.k_proj",
        "cross_attn.value" => "encoder_attn.v_proj",
        "cross_attn.out" => "encoder_attn.out_proj",
        "cross_attn_ln" => "encoder_attn_layer_norm",
        "mlp.0" => "fc1",
        "mlp.2" => "fc2",
        "mlp_ln" => "final_layer_norm",
        _ => return None,
    };
    Some(format!("model.{part}.layers.{layer}.{mapped}.{param}"))
}

/// A whisper.cpp file as a whittle Whisper checkpoint.
pub struct GgmlCheckpoint {
    /// Tensors under Hugging Face names: `q4_0`/`q5_0`/`q8_0` matrices packed code for code
    /// (symmetric groups of 32), float tensors in their stored dtype.
    pub store: crate::checkpoint::TensorStore,
    /// The architecture from the hyperparameters.
    pub config: super::WhisperConfig,
    /// The rebuilt tokenizer.
    pub tokenizer: WhisperTokenizer,
    /// Its `tokenizer.json` text.
    pub tokenizer_json: String,
    /// Tensors that could not be kept as stored (affine `q4_1`/`q5_1` matrices, quantized conv
    /// kernels) and were dequantized, and file tensors no Whisper parameter comes from.
    pub notes: Vec<String>,
}

impl GgmlWhisperFile {
    /// Everything a whittle Whisper needs, from this file.
    pub fn checkpoint(&self, device: &candle_core::Device) -> Result<GgmlCheckpoint> {
        let h = self.hparams;
        let context = self.path.display().to_string();
        let malformed = |reason: String| Error::Malformed {
            path: self.path.clone(),
            reason,
        };
        if h.n_audio_state != h.n_text_state {
            return Err(malformed(format!(
                "n_audio_state {} differs from n_text_state {} (Whisper shares one width)",
                h.n_audio_state, h.n_text_state
            )));
        }
        let tokenizer_json = tokenizer_json_from_vocab(&self.vocab, h.n_vocab)
            .map_err(|e| malformed(e.to_string()))?;
        let tokenizer = WhisperTokenizer::from_json(&tokenizer_json, &context)?;
        let ffn = self
            .tensor("encoder.blocks.0.mlp.0.weight")
            .and_then(|t| t.ne.get(1).copied())
            .unwrap_or(4 * h.n_audio_state);
        let mut config = super::WhisperConfig {
            vocab_size: h.n_vocab,
            num_mel_bins: h.n_mels,
            encoder_layers: h.n_audio_layer,
            encoder_attention_heads: h.n_audio_head,
            decoder_layers: h.n_text_layer,
            decoder_attention_heads: h.n_text_head,
            d_model: h.n_audio_state,
            encoder_ffn_dim: ffn,
            decoder_ffn_dim: ffn,
            max_source_positions: h.n_audio_ctx,
            max_target_positions: h.n_text_ctx,
            suppress_tokens: Vec::new(),
            begin_suppress_tokens: Vec::new(),
            activation_function: "gelu".into(),
            layer_shapes: None,
        };
        config.suppress_tokens = default_suppress_tokens(&tokenizer)?;
        config.validate(&context)?;
        tokenizer.check_vocabulary(config.vocab_size, &context)?;

        let mut store = crate::checkpoint::TensorStore::new(
            context.clone(),
            Default::default(),
            device.clone(),
        );
        let mut notes = Vec::new();
        for info in &self.tensors {
            let Some(name) = hf_name(&info.name) else {
                notes.push(format!("{}: not a Whisper parameter, ignored", info.name));
                continue;
            };
            let mut shape: Vec<usize> = info.ne.iter().rev().copied().collect();
            if name.ends_with("conv1.bias") || name.ends_with("conv2.bias") {
                // Stored `[n, 1]` by the converter.
                shape.retain(|&d| d != 1);
                if shape.is_empty() {
                    shape.push(1);
                }
            }
            let data = self.data(info);
            if info.ggml_type.is_quantized() && shape.len() == 2 {
                let tensor_error = |e| malformed(format!("tensor `{}`: {e}", info.name));
                if let Some(q) = codec::decode_exact(data, info.ggml_type, shape[0], shape[1])
                    .map_err(tensor_error)?
                {
                    store.insert_packed(name, whittle_kernels::PackedMatrix::pack(&q));
                    continue;
                }
                notes.push(format!(
                    "{}: {} has no exact whittle format, dequantized to f32",
                    info.name, info.ggml_type
                ));
            } else if info.ggml_type.is_quantized() {
                notes.push(format!(
                    "{}: {} {}-d tensor dequantized to f32",
                    info.name,
                    info.ggml_type,
                    shape.len()
                ));
            }
            let tensor = match info.ggml_type {
                GgmlType::F16 => Tensor::from_raw_buffer(data, DType::F16, &shape, device)?,
                GgmlType::F32 => Tensor::from_raw_buffer(data, DType::F32, &shape, device)?,
                _ => Tensor::from_vec(self.values(info)?, shape.as_slice(), device)?,
            };
            store.insert(name, tensor);
        }
        Ok(GgmlCheckpoint {
            store,
            config,
            tokenizer,
            tokenizer_json,
            notes,
        })
    }
}
