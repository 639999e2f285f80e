//! A strict reader of GGUF v3 files (llama.cpp's model format, `docs/gguf.md` of ggml): the
//! metadata key/value table, the tensor directory and the tensor data, dequantized to f32.
//!
//! Layout (all integers little-endian): magic `GGUF`, version `u32` (3), tensor count `u64`,
//! key/value count `u64`; each key/value is a string key, a `u32` type and the value; each tensor
//! is a string name, `u32` dimension count, that many `u64` dimensions (fastest first), a `u32`
//! ggml type and a `u64` offset from the start of the data section, which begins at the next
//! multiple of `general.alignment` (default 32) after the directory. A string is a `u64` length
//! and UTF-8 bytes; an array is a `u32` element type, a `u64` count and the elements.
//!
//! Every count, length and offset is checked against the bytes that remain before anything is
//! allocated, so a crafted file fails with an error naming the file and the field instead of
//! exhausting memory: duplicate keys or tensor names, unknown value or tensor types, more than 4
//! dimensions, sizes that overflow, misaligned or overlapping tensor data and data past the end
//! of the file are all refused.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use candle_core::{Device, Tensor};
use whittle_kernels::ggml::{dequantize, GgmlType};

use super::TensorStore;
use crate::error::{Error, Result};

/// The file magic.
pub const MAGIC: &[u8; 4] = b"GGUF";
/// The version this reader takes.
pub const VERSION: u32 = 3;
/// Alignment of the data section when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: usize = 32;
/// Most dimensions of a tensor (`GGML_MAX_DIMS`).
pub const MAX_DIMS: usize = 4;
/// Deepest nesting of arrays.
const MAX_ARRAY_DEPTH: usize = 2;

/// A metadata value.
#[derive(Debug, Clone, PartialEq)]
pub enum GgufValue {
    /// `uint8`.
    U8(u8),
    /// `int8`.
    I8(i8),
    /// `uint16`.
    U16(u16),
    /// `int16`.
    I16(i16),
    /// `uint32`.
    U32(u32),
    /// `int32`.
    I32(i32),
    /// `float32`.
    F32(f32),
    /// `bool` (one byte, 0 or 1).
    Bool(bool),
    /// UTF-8 string.
    String(String),
    /// Array of one element type.
    Array(Vec<GgufValue>),
    /// `uint64`.
    U64(u64),
    /// `int64`.
    I64(i64),
    /// `float64`.
    F64(f64),
}

impl GgufValue {
    /// The value as an unsigned integer, if it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            GgufValue::U8(v) => Some(u64::from(v)),
            GgufValue::U16(v) => Some(u64::from(v)),
            GgufValue::U32(v) => Some(u64::from(v)),
            GgufValue::U64(v) => Some(v),
            GgufValue::I8(v) => u64::try_from(v).ok(),
            GgufValue::I16(v) => u64::try_from(v).ok(),
            GgufValue::I32(v) => u64::try_from(v).ok(),
            GgufValue::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, if it is a float.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            GgufValue::F32(v) => Some(f64::from(v)),
            GgufValue::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a string, if it is one.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            GgufValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, if it is an array.
    pub fn as_array(&self) -> Option<&[GgufValue]> {
        match self {
            GgufValue::Array(v) => Some(v),
            _ => None,
        }
    }
}

/// One entry of the tensor directory.
#[derive(Debug, Clone, PartialEq)]
pub struct GgufTensorInfo {
    /// Tensor name.
    pub name: String,
    /// Dimensions as stored, fastest first (`ne[0]` is the row length).
    pub dims: Vec<usize>,
    /// Storage type.
    pub ty: GgmlType,
    /// Absolute offset of the data in the file.
    pub offset: usize,
    /// Bytes of data.
    pub bytes: usize,
}

impl GgufTensorInfo {
    /// Number of values.
    pub fn elements(&self) -> usize {
        self.dims.iter().product()
    }

    /// The row-major shape (slowest first), as candle and PyTorch write it.
    pub fn shape(&self) -> Vec<usize> {
        self.dims.iter().rev().copied().collect()
    }
}

/// A parsed GGUF file, holding its bytes.
#[derive(Clone)]
pub struct GgufFile {
    /// Where it was read from (named in errors).
    pub path: PathBuf,
    /// Metadata by key.
    pub metadata: BTreeMap<String, GgufValue>,
    /// The tensor directory, in file order.
    pub tensors: Vec<GgufTensorInfo>,
    bytes: Vec<u8>,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GgufFile")
            .field("path", &self.path)
            .field("metadata keys", &self.metadata.len())
            .field("tensors", &self.tensors.len())
            .field("bytes", &self.bytes.len())
            .finish()
    }
}

/// A bounds-checked cursor over the file's bytes.
struct Cursor<'a> {
    path: &'a Path,
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn fail(&self, what: &str, reason: impl std::fmt::Display) -> Error {
        Error::malformed(self.path, format!("{what} (byte {}): {reason}", self.pos))
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        if n > self.remaining() {
            return Err(self.fail(
                what,
                format!("needs {n} bytes, {} remain", self.remaining()),
            ));
        }
        let out = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        Ok(self.take(N, what)?.try_into().expect("took N bytes"))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A `u64` count of items of at least `min_item_bytes` each that must fit in the rest of
    /// the file.
    fn count(&mut self, what: &str, min_item_bytes: usize) -> Result<usize> {
        let n = self.u64(what)?;
        let fits = usize::try_from(n)
            .ok()
            .filter(|&n| n.saturating_mul(min_item_bytes.max(1)) <= self.remaining());
        fits.ok_or_else(|| {
            self.fail(
                what,
                format!(
                    "{n} items of at least {min_item_bytes} bytes do not fit in the {} bytes left",
                    self.remaining()
                ),
            )
        })
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.count(what, 1)?;
        let raw = self.take(len, what)?;
        String::from_utf8(raw.to_vec()).map_err(|e| self.fail(what, format!("not UTF-8: {e}")))
    }

    fn value(&mut self, ty: u32, what: &str, depth: usize) -> Result<GgufValue> {
        Ok(match ty {
            0 => GgufValue::U8(self.array::<1>(what)?[0]),
            1 => GgufValue::I8(self.array::<1>(what)?[0] as i8),
            2 => GgufValue::U16(u16::from_le_bytes(self.array(what)?)),
            3 => GgufValue::I16(i16::from_le_bytes(self.array(what)?)),
            4 => GgufValue::U32(self.u32(what)?),
            5 => GgufValue::I32(i32::from_le_bytes(self.array(what)?)),
            6 => GgufValue::F32(f32::from_le_bytes(self.array(what)?)),
            7 => match self.array::<1>(what)?[0] {
                0 => GgufValue::Bool(false),
                1 => GgufValue::Bool(true),
                b => return Err(self.fail(what, format!("bool byte {b} is neither 0 nor 1"))),
            },
            8 => GgufValue::String(self.string(what)?),
            9 => {
                if depth >= MAX_ARRAY_DEPTH {
                    return Err(self.fail(what, "arrays nested too deeply"));
                }
                let item = self.u32(what)?;
                let min = value_min_bytes(item)
                    .ok_or_else(|| self.fail(what, format!("unknown array element type {item}")))?;
                let n = self.count(what, min)?;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(item, what, depth + 1)?);
                }
                GgufValue::Array(items)
            }
            10 => GgufValue::U64(self.u64(what)?),
            11 => GgufValue::I64(i64::from_le_bytes(self.array(what)?)),
            12 => GgufValue::F64(f64::from_le_bytes(self.array(what)?)),
            other => return Err(self.fail(what, format!("unknown value type {other}"))),
        })
    }
}

/// Fewest bytes a value of type `ty` takes (`None`: unknown type).
fn value_min_bytes(ty: u32) -> Option<usize> {
    Some(match ty {
        0 | 1 | 7 => 1,
        2 | 3 => 2,
        4..=6 => 4,
        8 => 8,
        9 => 12,
        10..=12 => 8,
        _ => return None,
    })
}

impl GgufFile {
    /// Read and parse `path`.
    pub fn read(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::parse(path, bytes)
    }

    /// Whether `path` starts with the GGUF magic.
    pub fn sniff(path: &Path) -> bool {
        use std::io::Read;
        let mut magic = [0u8; 4];
        std::fs::File::open(path)
            .and_then(|mut f| f.read_exact(&mut magic))
            .is_ok()
            && &magic == MAGIC
    }

    /// Parse a whole file held in `bytes`; `path` names it in errors.
    pub fn parse(path: &Path, bytes: Vec<u8>) -> Result<Self> {
        let mut c = Cursor {
            path,
            bytes: &bytes,
            pos: 0,
        };
        if c.take(4, "magic")? != MAGIC {
            return Err(Error::malformed(path, "not a GGUF file (no `GGUF` magic)"));
        }
        let version = c.u32("version")?;
        if version != VERSION {
            return Err(Error::malformed(
                path,
                format!("GGUF version {version}; this reader takes version {VERSION}"),
            ));
        }
        // A directory entry takes at least 8 + 4 + 4 + 8 bytes, a key/value at least 8 + 4 + 1.
        let tensor_count = c.u64("tensor count")?;
        let kv_count = c.count("metadata count", 13)?;
        let mut metadata = BTreeMap::new();
        for i in 0..kv_count {
            let key = c.string(&format!("metadata key {i}"))?;
            let ty = c.u32(&format!("type of `{key}`"))?;
            let value = c.value(ty, &format!("value of `{key}`"), 0)?;
            if metadata.insert(key.clone(), value).is_some() {
                return Err(Error::malformed(
                    path,
                    format!("metadata key `{key}` repeats"),
                ));
            }
        }
        let tensor_count = usize::try_from(tensor_count)
            .ok()
            .filter(|&n| n.saturating_mul(24) <= c.remaining())
            .ok_or_else(|| {
                Error::malformed(
                    path,
                    format!("{tensor_count} tensors do not fit in the file's directory"),
                )
            })?;
        let alignment = match metadata.get("general.alignment") {
            None => DEFAULT_ALIGNMENT,
            Some(v) => v
                .as_u64()
                .and_then(|a| usize::try_from(a).ok())
                .filter(|a| a.is_power_of_two())
                .ok_or_else(|| {
                    Error::malformed(
                        path,
                        format!("general.alignment {v:?} is not a power of two"),
                    )
                })?,
        };
        let mut tensors = Vec::with_capacity(tensor_count);
        let mut names = HashSet::new();
        for i in 0..tensor_count {
            let name = c.string(&format!("tensor {i} name"))?;
            let what = |field: &str| format!("tensor `{name}` {field}");
            let n_dims = c.u32(&what("dimension count"))? as usize;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(c.fail(
                    &what("dimension count"),
                    format!("{n_dims} is not 1..={MAX_DIMS}"),
                ));
            }
            let mut dims = Vec::with_capacity(n_dims);
            for _ in 0..n_dims {
                let d = c.u64(&what("dimension"))?;
                dims.push(usize::try_from(d).map_err(|_| c.fail(&what("dimension"), d))?);
            }
            let ty_id = c.u32(&what("type"))?;
            let ty = GgmlType::from_id(ty_id).ok_or_else(|| {
                c.fail(
                    &what("type"),
                    format!("ggml type {ty_id} is not read by whittle (f32, f16, q4_0, q4_1, q5_0, q5_1, q8_0)"),
                )
            })?;
            let offset = c.u64(&what("offset"))?;
            let elements = dims
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| c.fail(&what("dimensions"), format!("{dims:?} overflow")))?;
            if !dims[0].is_multiple_of(ty.block_len()) {
                return Err(c.fail(
                    &what("dimensions"),
                    format!(
                        "row length {} is not a multiple of {}'s block of {}",
                        dims[0],
                        ty.name(),
                        ty.block_len()
                    ),
                ));
            }
            let size = ty
                .bytes_for(elements)
                .ok_or_else(|| c.fail(&what("dimensions"), format!("{dims:?} overflow")))?;
            let offset = usize::try_from(offset)
                .ok()
                .filter(|o| o % alignment == 0)
                .ok_or_else(|| {
                    c.fail(
                        &what("offset"),
                        format!("{offset} is not a multiple of the alignment {alignment}"),
                    )
                })?;
            if !names.insert(name.clone()) {
                return Err(Error::malformed(path, format!("tensor `{name}` repeats")));
            }
            tensors.push(GgufTensorInfo {
                name,
                dims,
                ty,
                offset,
                bytes: size,
            });
        }
        let data_start = c.pos.div_ceil(alignment) * alignment;
        let mut spans: Vec<(usize, usize, &str)> = Vec::with_capacity(tensors.len());
        for t in &mut tensors {
            let start = data_start.checked_add(t.offset);
            let end = start.and_then(|s| s.checked_add(t.bytes));
            match (start, end) {
                (Some(start), Some(end)) if end <= bytes.len() => {
                    t.offset = start;
                    spans.push((start, end, &t.name));
                }
                _ => {
                    return Err(Error::malformed(
                        path,
                        format!(
                            "tensor `{}`: {} bytes at data offset {} run past the end of the file ({} bytes)",
                            t.name, t.bytes, t.offset, bytes.len()
                        ),
                    ))
                }
            }
        }
        spans.sort_unstable();
        for pair in spans.windows(2) {
            if pair[1].0 < pair[0].1 {
                return Err(Error::malformed(
                    path,
                    format!("tensors `{}` and `{}` overlap", pair[0].2, pair[1].2),
                ));
            }
        }
        Ok(Self {
            path: path.to_path_buf(),
            metadata,
            tensors,
            bytes,
        })
    }

    /// The directory entry of `name`.
    pub fn tensor(&self, name: &str) -> Option<&GgufTensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// The stored bytes of a tensor.
    pub fn data(&self, info: &GgufTensorInfo) -> &[u8] {
        &self.bytes[info.offset..info.offset + info.bytes]
    }

    /// A tensor's values, dequantized, in row-major order of [`GgufTensorInfo::shape`].
    pub fn values(&self, info: &GgufTensorInfo) -> Result<Vec<f32>> {
        dequantize(self.data(info), info.ty, info.elements())
            .map_err(|e| Error::malformed(&self.path, format!("tensor `{}`: {e}", info.name)))
    }

    /// The metadata value of `key`, or an error naming the file and the key.
    pub fn value(&self, key: &str) -> Result<&GgufValue> {
        self.metadata
            .get(key)
            .ok_or_else(|| Error::malformed(&self.path, format!("metadata key `{key}` is missing")))
    }

    /// An unsigned integer of the metadata.
    pub fn usize(&self, key: &str) -> Result<usize> {
        let v = self.value(key)?;
        v.as_u64()
            .and_then(|x| usize::try_from(x).ok())
            .ok_or_else(|| {
                Error::malformed(
                    &self.path,
                    format!("`{key}` = {v:?} is not an unsigned integer"),
                )
            })
    }

    /// A float of the metadata.
    pub fn f64(&self, key: &str) -> Result<f64> {
        let v = self.value(key)?;
        v.as_f64()
            .ok_or_else(|| Error::malformed(&self.path, format!("`{key}` = {v:?} is not a float")))
    }

    /// A string of the metadata.
    pub fn str(&self, key: &str) -> Result<&str> {
        let v = self.value(key)?;
        v.as_str()
            .ok_or_else(|| Error::malformed(&self.path, format!("`{key}` is not a string")))
    }

    /// An array of strings of the metadata.
    pub fn strings(&self, key: &str) -> Result<Vec<&str>> {
        let v = self.value(key)?;
        v.as_array()
            .and_then(|items| {
                items
                    .iter()
                    .map(GgufValue::as_str)
                    .collect::<Option<Vec<_>>>()
            })
            .ok_or_else(|| {
                Error::malformed(&self.path, format!("`{key}` is not an array of strings"))
            })
    }

    /// Every tensor dequantized to f32 with its row-major shape, in a store named after the
    /// file; `rename` maps GGUF names to the model's names (`None` leaves a tensor out).
    pub fn to_store(
        &self,
        device: &Device,
        rename: impl Fn(&str) -> Option<String>,
    ) -> Result<TensorStore> {
        let mut tensors = BTreeMap::new();
        for info in &self.tensors {
            let Some(name) = rename(&info.name) else {
                continue;
            };
            let values = self.values(info)?;
            tensors.insert(name, Tensor::from_vec(values, info.shape(), device)?);
        }
        Ok(TensorStore::new(
            self.path.display().to_string(),
            tensors,
            device.clone(),
        ))
    }
}
