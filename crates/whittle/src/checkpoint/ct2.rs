//! Reader and writer for CTranslate2 `model.bin` (binary version 6).
//!
//! Layout (little-endian): `u32 version`, `u16`-length-prefixed NUL-terminated spec name,
//! `u32 revision`, `u32 n_vars`, then per variable a name string, `u8 rank`, `rank x u32`
//! dims, `u8 dtype` (0 f32, 1 i8, 2 i16, 3 i32, 4 f16, 5 bf16), `u32 nbytes` and the raw
//! data; then `u32 n_alias` and (alias, target) string pairs. The file is memory-mapped and
//! every length is checked against the bytes that remain before anything is read or
//! allocated, so a crafted or truncated file is refused with an error naming the variable.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::error::{Error, Result};

/// The only binary version this reader accepts.
pub const SUPPORTED_VERSION: u32 = 6;
/// Largest rank a variable may declare.
const MAX_RANK: usize = 8;

/// Element type of a CTranslate2 variable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ct2Dtype {
    /// 32-bit float.
    F32,
    /// 8-bit signed integer.
    I8,
    /// 16-bit signed integer.
    I16,
    /// 32-bit signed integer.
    I32,
    /// IEEE half precision.
    F16,
    /// bfloat16.
    BF16,
}

impl Ct2Dtype {
    fn from_code(code: u8) -> Option<Self> {
        Some(match code {
            0 => Self::F32,
            1 => Self::I8,
            2 => Self::I16,
            3 => Self::I32,
            4 => Self::F16,
            5 => Self::BF16,
            _ => return None,
        })
    }

    fn code(self) -> u8 {
        match self {
            Self::F32 => 0,
            Self::I8 => 1,
            Self::I16 => 2,
            Self::I32 => 3,
            Self::F16 => 4,
            Self::BF16 => 5,
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            Self::I8 => 1,
            Self::I16 | Self::F16 | Self::BF16 => 2,
            Self::F32 | Self::I32 => 4,
        }
    }
}

/// One variable of a `model.bin`: its shape, type and where its bytes lie in the file.
#[derive(Debug, Clone)]
pub struct Ct2Variable {
    /// Dimensions (empty for scalars).
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: Ct2Dtype,
    /// Byte range of the data inside the file.
    pub offset: usize,
    /// Length of the data in bytes.
    pub nbytes: usize,
}

/// A parsed, memory-mapped CTranslate2 model file.
pub struct Ct2File {
    path: PathBuf,
    map: memmap2::Mmap,
    /// The model spec name, e.g. `WhisperSpec`.
    pub spec: String,
    /// The spec revision.
    pub revision: u32,
    /// Variables by name.
    pub variables: BTreeMap<String, Ct2Variable>,
    /// Alias name to target name (e.g. tied output projection).
    pub aliases: BTreeMap<String, String>,
}

struct Cursor<'a> {
    path: &'a Path,
    data: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let remaining = self.data.len() - self.pos;
        if n > remaining {
            return Err(Error::malformed(
                self.path,
                format!(
                    "{what} needs {n} bytes at offset {} but only {remaining} remain (truncated?)",
                    self.pos
                ),
            ));
        }
        let out = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        let b = self.take(4, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let len = self.u16(what)? as usize;
        let bytes = self.take(len, what)?;
        let bytes = bytes.strip_suffix(&[0]).unwrap_or(bytes);
        String::from_utf8(bytes.to_vec()).map_err(|_| {
            Error::malformed(
                self.path,
                format!("{what} at offset {} is not UTF-8", self.pos - len),
            )
        })
    }
}

impl Ct2File {
    /// Memory-map and parse `path`; no tensor data is copied.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        // SAFETY: the map is read-only; a file changed under us gives wrong numbers, not UB in safe code
        // that only reads bytes through bounds-checked slices.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let (spec, revision, variables, aliases) = Self::parse(path, &map)?;
        Ok(Self {
            path: path.to_path_buf(),
            map,
            spec,
            revision,
            variables,
            aliases,
        })
    }

    #[allow(clippy::type_complexity)]
    fn parse(
        path: &Path,
        data: &[u8],
    ) -> Result<(
        String,
        u32,
        BTreeMap<String, Ct2Variable>,
        BTreeMap<String, String>,
    )> {
        let mut c = Cursor { path, data, pos: 0 };
        let version = c.u32("binary version")?;
        if version != SUPPORTED_VERSION {
            return Err(Error::malformed(
                path,
                format!("CTranslate2 binary version {version}; only version {SUPPORTED_VERSION} is supported"),
            ));
        }
        let spec = c.string("spec name")?;
        let revision = c.u32("spec revision")?;
        let n_vars = c.u32("variable count")? as usize;
        // Each variable needs at least 2 (name len) + 1 (rank) + 1 (dtype) + 4 (nbytes) bytes.
        if n_vars > (data.len() - c.pos) / 8 {
            return Err(Error::malformed(
                path,
                format!("declares {n_vars} variables, more than the file can hold"),
            ));
        }
        let mut variables = BTreeMap::new();
        for index in 0..n_vars {
            let name = c.string(&format!("name of variable #{index}"))?;
            let rank = c.u8(&format!("rank of `{name}`"))? as usize;
            if rank > MAX_RANK {
                return Err(Error::malformed(
                    path,
                    format!("variable `{name}` declares rank {rank} (max {MAX_RANK})"),
                ));
            }
            let mut shape = Vec::with_capacity(rank);
            for _ in 0..rank {
                shape.push(c.u32(&format!("dims of `{name}`"))? as usize);
            }
            let code = c.u8(&format!("dtype of `{name}`"))?;
            let dtype = Ct2Dtype::from_code(code).ok_or_else(|| {
                Error::malformed(
                    path,
                    format!("variable `{name}` has unknown dtype code {code}"),
                )
            })?;
            let nbytes = c.u32(&format!("byte length of `{name}`"))? as usize;
            let elements = shape
                .iter()
                .try_fold(1usize, |acc, &d| acc.checked_mul(d))
                .ok_or_else(|| {
                    Error::malformed(path, format!("variable `{name}` shape {shape:?} overflows"))
                })?;
            if elements.checked_mul(dtype.size()) != Some(nbytes) {
                return Err(Error::malformed(
                    path,
                    format!("variable `{name}` shape {shape:?} x {dtype:?} does not match its byte length {nbytes}"),
                ));
            }
            let offset = c.pos;
            c.take(nbytes, &format!("data of `{name}`"))?;
            if variables
                .insert(
                    name.clone(),
                    Ct2Variable {
                        shape,
                        dtype,
                        offset,
                        nbytes,
                    },
                )
                .is_some()
            {
                return Err(Error::malformed(
                    path,
                    format!("variable `{name}` appears twice"),
                ));
            }
        }
        let mut aliases = BTreeMap::new();
        if c.pos < data.len() {
            let n_alias = c.u32("alias count")? as usize;
            if n_alias > (data.len() - c.pos) / 4 {
                return Err(Error::malformed(
                    path,
                    format!("declares {n_alias} aliases, more than the file can hold"),
                ));
            }
            for _ in 0..n_alias {
                let alias = c.string("alias name")?;
                let target = c.string(&format!("target of alias `{alias}`"))?;
                if !variables.contains_key(&target) {
                    return Err(Error::malformed(
                        path,
                        format!("alias `{alias}` points to unknown `{target}`"),
                    ));
                }
                aliases.insert(alias, target);
            }
        }
        if c.pos != data.len() {
            return Err(Error::malformed(
                path,
                format!("{} trailing bytes after the aliases", data.len() - c.pos),
            ));
        }
        Ok((spec, revision, variables, aliases))
    }

    /// The file this was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Size of the file in bytes.
    pub fn file_size(&self) -> usize {
        self.map.len()
    }

    /// Raw bytes of a variable (aliases resolved).
    pub fn bytes(&self, name: &str) -> Option<&[u8]> {
        let name = self.aliases.get(name).map(String::as_str).unwrap_or(name);
        self.variables
            .get(name)
            .map(|v| &self.map[v.offset..v.offset + v.nbytes])
    }

    /// A variable as a candle tensor in its stored float dtype (f16 stays f16).
    pub fn tensor(&self, name: &str, device: &Device) -> Result<Tensor> {
        let var = self.variable(name)?;
        let dtype = match var.dtype {
            Ct2Dtype::F32 => DType::F32,
            Ct2Dtype::F16 => DType::F16,
            Ct2Dtype::BF16 => DType::BF16,
            other => {
                return Err(Error::DtypeMismatch {
                    source_name: self.path.display().to_string(),
                    tensor: name.to_string(),
                    expected: "f32, f16 or bf16".into(),
                    actual: format!("{other:?}"),
                })
            }
        };
        let bytes = self.bytes(name).expect("variable checked above");
        Ok(Tensor::from_raw_buffer(bytes, dtype, &var.shape, device)?)
    }

    /// A variable's metadata (aliases resolved).
    pub fn variable(&self, name: &str) -> Result<&Ct2Variable> {
        let resolved = self.aliases.get(name).map(String::as_str).unwrap_or(name);
        self.variables
            .get(resolved)
            .ok_or_else(|| Error::MissingTensor {
                source_name: self.path.display().to_string(),
                tensor: name.to_string(),
            })
    }

    /// An integer scalar such as `encoder/num_heads`.
    pub fn scalar_int(&self, name: &str) -> Result<i64> {
        let var = self.variable(name)?;
        let bytes = self.bytes(name).expect("variable checked above");
        if !var.shape.is_empty() && var.shape.iter().product::<usize>() != 1 {
            return Err(Error::malformed(
                &self.path,
                format!("`{name}` is not a scalar (shape {:?})", var.shape),
            ));
        }
        Ok(match var.dtype {
            Ct2Dtype::I8 => bytes[0] as i8 as i64,
            Ct2Dtype::I16 => i16::from_le_bytes([bytes[0], bytes[1]]) as i64,
            Ct2Dtype::I32 => i32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as i64,
            other => {
                return Err(Error::DtypeMismatch {
                    source_name: self.path.display().to_string(),
                    tensor: name.to_string(),
                    expected: "an integer scalar".into(),
                    actual: format!("{other:?}"),
                })
            }
        })
    }
}

/// A variable to write with [`write`].
pub enum Ct2Value<'a> {
    /// A float tensor, written as f16.
    F16Tensor(&'a Tensor),
    /// A float tensor, written as f32.
    F32Tensor(&'a Tensor),
    /// An int8 scalar.
    I8(i8),
    /// An int16 scalar.
    I16(i16),
}

/// Write a version-6 `model.bin` (used by tests and converters). Written to a temporary file
/// and renamed, so a crash never leaves a half-written model.
pub fn write(
    path: &Path,
    spec: &str,
    revision: u32,
    variables: &[(String, Ct2Value)],
    aliases: &[(String, String)],
) -> Result<()> {
    let mut out = Vec::new();
    let put_str = |out: &mut Vec<u8>, s: &str| {
        out.extend_from_slice(&((s.len() + 1) as u16).to_le_bytes());
        out.extend_from_slice(s.as_bytes());
        out.push(0);
    };
    out.extend_from_slice(&SUPPORTED_VERSION.to_le_bytes());
    put_str(&mut out, spec);
    out.extend_from_slice(&revision.to_le_bytes());
    out.extend_from_slice(&(variables.len() as u32).to_le_bytes());
    for (name, value) in variables {
        put_str(&mut out, name);
        let (shape, dtype, bytes): (Vec<usize>, Ct2Dtype, Vec<u8>) = match value {
            Ct2Value::F16Tensor(t) => {
                let v: Vec<half::f16> = t.to_dtype(DType::F16)?.flatten_all()?.to_vec1()?;
                (
                    t.dims().to_vec(),
                    Ct2Dtype::F16,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            }
            Ct2Value::F32Tensor(t) => {
                let v: Vec<f32> = t.to_dtype(DType::F32)?.flatten_all()?.to_vec1()?;
                (
                    t.dims().to_vec(),
                    Ct2Dtype::F32,
                    v.iter().flat_map(|x| x.to_le_bytes()).collect(),
                )
            }
            Ct2Value::I8(x) => (vec![], Ct2Dtype::I8, vec![*x as u8]),
            Ct2Value::I16(x) => (vec![], Ct2Dtype::I16, x.to_le_bytes().to_vec()),
        };
        out.push(shape.len() as u8);
        for d in &shape {
            out.extend_from_slice(&(*d as u32).to_le_bytes());
        }
        out.push(dtype.code());
        out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(&(aliases.len() as u32).to_le_bytes());
    for (alias, target) in aliases {
        put_str(&mut out, alias);
        put_str(&mut out, target);
    }
    crate::fsutil::write_atomic(path, &out)
}
