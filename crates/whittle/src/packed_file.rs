//! The `.whittle` container: one self-contained file holding a compressed model.
//!
//! A fixed 24-byte prefix (magic, version, flags, header length), a JSON header (architecture,
//! config, tokenizer, bit map, recipe, provenance, results and the tensor table), zero padding to
//! 64 bytes, then a data section in which every tensor section starts 64-byte aligned. Float
//! tensors are stored as little-endian `f32`/`f16`; packed tensors as the code, scale and zero-point
//! arrays of [`whittle_kernels::PackedMatrix`], so the runtime reads them in place from the memory
//! map ([`PackedFile::packed`] returns a borrowing [`PackedMatrixRef`]) and a loaded model never
//! holds an f32 copy of its weights. `docs/format.md` documents the layout byte by byte.
//!
//! The layout follows the habits of rten's `.rten` file (`docs/rten-file-format.md` in
//! robertknight/rten: magic, version, header length, aligned tensor data) and of safetensors (a
//! JSON tensor table with offsets relative to the data section).
//!
//! The reader treats the file as untrusted: [`PackedFile::open`] caps every length, checks every
//! offset with overflow-checked arithmetic, refuses overlapping sections and trailing bytes, and
//! validates each packed tensor against its format before returning, so accessors afterwards
//! cannot fail on the file's content.

use std::collections::{HashMap, HashSet};
use std::io::{Read as _, Write};
use std::path::{Path, PathBuf};

use half::f16;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use whittle_kernels::{
    f16_slice_from_bytes, Granularity, Layout, PackedFormat, PackedMatrix, PackedMatrixRef,
    QuantFormat, Scheme,
};

use crate::error::{Error, Result};
use crate::fsutil::write_atomic_with;

mod header;
pub use header::{MAX_ARCHITECTURE_LEN, MAX_FIELD_NAME_LEN, MAX_HEADER_FIELDS, MAX_HEADER_VALUES};

/// First 8 bytes of every `.whittle` file.
pub const MAGIC: [u8; 8] = *b"WHITTLE\0";
/// The format version this build writes and reads.
pub const VERSION: u32 = 1;
/// Bytes before the JSON header: magic (8), version (4), flags (4), header length (8).
pub const PREFIX_LEN: usize = 24;
/// Alignment of the data section and of every tensor section inside it.
pub const ALIGN: usize = 64;
/// Largest JSON header accepted (a Whisper `tokenizer.json` is about 2 MiB).
pub const MAX_HEADER_LEN: u64 = 64 << 20;
/// Largest number of tensors accepted (Whisper large has about 1,300).
pub const MAX_TENSORS: usize = 1 << 16;
/// Largest tensor rank accepted.
pub const MAX_RANK: usize = 8;
/// Longest tensor name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 1024;

/// Header keys with a defined meaning (any JSON value is accepted for each, see `docs/format.md`).
pub mod keys {
    /// Model family, a string such as `"whisper"` (required).
    pub const ARCHITECTURE: &str = "architecture";
    /// The architecture's configuration (e.g. Hugging Face `config.json`).
    pub const CONFIG: &str = "config";
    /// The tokenizer (`tokenizer.json` as an object, or its text as a string).
    pub const TOKENIZER: &str = "tokenizer";
    /// Other files the model needs (generation/decoder configuration, preprocessor, ...).
    pub const EXTRA: &str = "extra";
    /// The bit map the weights were quantized with.
    pub const BIT_MAP: &str = "bit_map";
    /// The compression recipe, or `null`.
    pub const RECIPE: &str = "recipe";
    /// Where the file came from: source model, tool version, date, command.
    pub const PROVENANCE: &str = "provenance";
    /// Measured results (WER, RTF, size), or `null` when not yet measured.
    pub const RESULTS: &str = "results";
    /// The tensor table, written by [`super::PackedFileWriter`] (reserved).
    pub const TENSORS: &str = "tensors";
}

/// Element type of a float tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FloatDtype {
    /// IEEE 754 binary32, little-endian.
    F32,
    /// IEEE 754 binary16, little-endian.
    F16,
}

impl FloatDtype {
    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            FloatDtype::F32 => 4,
            FloatDtype::F16 => 2,
        }
    }

    /// The name used in the header (`"f32"`, `"f16"`).
    pub fn name(self) -> &'static str {
        match self {
            FloatDtype::F32 => "f32",
            FloatDtype::F16 => "f16",
        }
    }
}

/// A byte range inside the data section (`offset` is relative to the data section's start).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Section {
    /// Start, relative to the data section; a multiple of [`ALIGN`].
    pub offset: u64,
    /// Length in bytes.
    pub nbytes: u64,
}

/// How a tensor's data is stored.
#[derive(Clone, Debug, PartialEq)]
pub enum TensorData {
    /// Plain little-endian floats.
    Float {
        /// Element type.
        dtype: FloatDtype,
        /// Where the elements are.
        section: Section,
    },
    /// Packed low-bit codes with f16 scales and optional u8 zero points.
    Packed {
        /// Output features.
        rows: usize,
        /// Input features.
        cols: usize,
        /// Scheme, granularity and code layout.
        format: PackedFormat,
        /// Packed code bytes.
        codes: Section,
        /// Little-endian f16 scales.
        scales: Section,
        /// u8 zero points (asymmetric schemes only).
        zero_points: Option<Section>,
    },
}

/// One validated entry of the tensor table.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorEntry {
    /// Tensor name, as in the source checkpoint.
    pub name: String,
    /// Logical shape (for packed tensors its product is `rows * cols`).
    pub shape: Vec<usize>,
    /// Storage.
    pub data: TensorData,
}

impl TensorEntry {
    /// Bytes the tensor occupies in the data section (alignment padding excluded).
    pub fn stored_bytes(&self) -> u64 {
        match &self.data {
            TensorData::Float { section, .. } => section.nbytes,
            TensorData::Packed {
                codes,
                scales,
                zero_points,
                ..
            } => codes.nbytes + scales.nbytes + zero_points.map_or(0, |z| z.nbytes),
        }
    }

    /// Number of weights.
    pub fn elements(&self) -> usize {
        // Checked at open/add time, so the product fits.
        self.shape.iter().product()
    }
}

/// Float or packed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TensorKind {
    /// Plain floats.
    Float,
    /// Packed low-bit codes.
    Packed,
}

/// One line of `whittle inspect`.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorSummary {
    /// Tensor name.
    pub name: String,
    /// Float or packed.
    pub kind: TensorKind,
    /// Logical shape.
    pub shape: Vec<usize>,
    /// Short format label, e.g. `f16`, `sym4 g64`, `asym3 row`, `ternary g64 trits5`.
    pub format: String,
    /// Stored bits per weight, scales and zero points included.
    pub bits_per_weight: f64,
    /// Stored bytes, alignment padding excluded.
    pub bytes: u64,
}

/// A float tensor borrowed from the memory map.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FloatTensorRef<'a> {
    /// Little-endian elements; the slice starts 64-byte aligned in memory.
    pub bytes: &'a [u8],
    /// Element type.
    pub dtype: FloatDtype,
    /// Logical shape.
    pub shape: &'a [usize],
}

impl FloatTensorRef<'_> {
    /// Decodes the elements to f32 (a copy; use `bytes` to stay zero-copy).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match self.dtype {
            FloatDtype::F32 => self
                .bytes
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect(),
            FloatDtype::F16 => self
                .bytes
                .chunks_exact(2)
                .map(|b| f16::from_le_bytes([b[0], b[1]]).to_f32())
                .collect(),
        }
    }
}

/// The stable JSON spelling of a [`PackedFormat`]:
/// `{"scheme": "symmetric"|"asymmetric"|"ternary", "bits": 2..=8 (absent for ternary),
///   "granularity": "per_tensor"|"per_row"|"group", "group": n (only for "group"),
///   "layout": "bits2"|"bits3"|"bits4"|"bits5"|"bits6"|"bits8"|"trits5"}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FormatJson {
    /// `"symmetric"`, `"asymmetric"` or `"ternary"`.
    pub scheme: String,
    /// Bit width for the uniform schemes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bits: Option<u8>,
    /// `"per_tensor"`, `"per_row"` or `"group"`.
    pub granularity: String,
    /// Group length for `"group"` granularity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<usize>,
    /// Code layout name.
    pub layout: String,
}

impl FormatJson {
    /// The JSON spelling of `format`.
    pub fn from_format(format: PackedFormat) -> Self {
        let (scheme, bits) = match format.quant.scheme {
            Scheme::Symmetric { bits } => ("symmetric", Some(bits)),
            Scheme::Asymmetric { bits } => ("asymmetric", Some(bits)),
            Scheme::Ternary => ("ternary", None),
        };
        let (granularity, group) = match format.quant.granularity {
            Granularity::PerTensor => ("per_tensor", None),
            Granularity::PerRow => ("per_row", None),
            Granularity::Group(n) => ("group", Some(n)),
        };
        FormatJson {
            scheme: scheme.into(),
            bits,
            granularity: granularity.into(),
            group,
            layout: layout_name(format.layout).into(),
        }
    }

    /// Parses and validates the format; the error says which field is wrong.
    pub fn to_format(&self) -> std::result::Result<PackedFormat, String> {
        let scheme = match (self.scheme.as_str(), self.bits) {
            ("symmetric", Some(bits)) => Scheme::Symmetric { bits },
            ("asymmetric", Some(bits)) => Scheme::Asymmetric { bits },
            ("ternary", None) => Scheme::Ternary,
            ("symmetric" | "asymmetric", None) => {
                return Err(format!("scheme `{}` needs `bits`", self.scheme))
            }
            ("ternary", Some(_)) => return Err("scheme `ternary` takes no `bits`".into()),
            (other, _) => return Err(format!("unknown scheme `{other}`")),
        };
        let granularity = match (self.granularity.as_str(), self.group) {
            ("per_tensor", None) => Granularity::PerTensor,
            ("per_row", None) => Granularity::PerRow,
            ("group", Some(n)) => Granularity::Group(n),
            ("group", None) => return Err("granularity `group` needs `group`".into()),
            ("per_tensor" | "per_row", Some(_)) => {
                return Err(format!(
                    "granularity `{}` takes no `group`",
                    self.granularity
                ))
            }
            (other, _) => return Err(format!("unknown granularity `{other}`")),
        };
        let layout = layout_from_name(&self.layout)
            .ok_or_else(|| format!("unknown layout `{}`", self.layout))?;
        PackedFormat::new(
            QuantFormat {
                scheme,
                granularity,
            },
            layout,
        )
        .map_err(|e| e.to_string())
    }
}

fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Bits2 => "bits2",
        Layout::Bits3 => "bits3",
        Layout::Bits4 => "bits4",
        Layout::Bits5 => "bits5",
        Layout::Bits6 => "bits6",
        Layout::Bits8 => "bits8",
        Layout::Trits5 => "trits5",
        Layout::TernarySparse => "ternary-sparse",
    }
}

fn layout_from_name(name: &str) -> Option<Layout> {
    Some(match name {
        "bits2" => Layout::Bits2,
        "bits3" => Layout::Bits3,
        "bits4" => Layout::Bits4,
        "bits5" => Layout::Bits5,
        "bits6" => Layout::Bits6,
        "bits8" => Layout::Bits8,
        "trits5" => Layout::Trits5,
        "ternary-sparse" => Layout::TernarySparse,
        _ => return None,
    })
}

/// Short human label of a packed format: `sym4 g64`, `asym3 row`, `sym8 tensor`,
/// `ternary g64 trits5` (the layout is named only when it is not the scheme's default).
pub fn format_label(format: PackedFormat) -> String {
    let scheme = match format.quant.scheme {
        Scheme::Symmetric { bits } => format!("sym{bits}"),
        Scheme::Asymmetric { bits } => format!("asym{bits}"),
        Scheme::Ternary => "ternary".into(),
    };
    let granularity = match format.quant.granularity {
        Granularity::PerTensor => "tensor".to_string(),
        Granularity::PerRow => "row".to_string(),
        Granularity::Group(n) => format!("g{n}"),
    };
    let mut label = format!("{scheme} {granularity}");
    if format.layout != Layout::for_scheme(format.quant.scheme) {
        label.push(' ');
        label.push_str(layout_name(format.layout));
    }
    label
}

// ---------------------------------------------------------------------------------------------
// Header JSON entries (the wire form; validated into `TensorEntry`).

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct FloatEntryJson {
    name: String,
    kind: String,
    shape: Vec<u64>,
    dtype: FloatDtype,
    offset: u64,
    nbytes: u64,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct PackedEntryJson {
    name: String,
    kind: String,
    shape: Vec<u64>,
    rows: u64,
    cols: u64,
    format: FormatJson,
    codes: Section,
    scales: Section,
    zero_points: Option<Section>,
}

fn entry_to_json(entry: &TensorEntry) -> Value {
    let shape = entry.shape.iter().map(|&d| d as u64).collect();
    let name = entry.name.clone();
    let json = match &entry.data {
        TensorData::Float { dtype, section } => serde_json::to_value(FloatEntryJson {
            name,
            kind: "float".into(),
            shape,
            dtype: *dtype,
            offset: section.offset,
            nbytes: section.nbytes,
        }),
        TensorData::Packed {
            rows,
            cols,
            format,
            codes,
            scales,
            zero_points,
        } => serde_json::to_value(PackedEntryJson {
            name,
            kind: "packed".into(),
            shape,
            rows: *rows as u64,
            cols: *cols as u64,
            format: FormatJson::from_format(*format),
            codes: *codes,
            scales: *scales,
            zero_points: *zero_points,
        }),
    };
    json.expect("tensor entries contain only strings and integers")
}

// ---------------------------------------------------------------------------------------------
// Writer.

/// One tensor waiting to be written.
enum PendingData {
    Float(Vec<u8>),
    Packed(PackedMatrix),
}

/// Builds a `.whittle` file: header fields and tensors, then [`PackedFileWriter::write`].
///
/// ```no_run
/// # use whittle::packed_file::{FloatDtype, PackedFileWriter, keys};
/// let mut writer = PackedFileWriter::new("whisper");
/// writer.set_header_field(keys::CONFIG, serde_json::json!({"d_model": 384}))?;
/// writer.add_float("model.encoder.layer_norm.weight", &[384], FloatDtype::F32, &[0u8; 384 * 4])?;
/// let bytes = writer.write(std::path::Path::new("tiny.whittle"))?;
/// # Ok::<(), whittle::Error>(())
/// ```
pub struct PackedFileWriter {
    header: Map<String, Value>,
    entries: Vec<TensorEntry>,
    pending: Vec<PendingData>,
    names: HashSet<String>,
    /// End of the last section placed so far, relative to the data section.
    data_len: u64,
}

impl PackedFileWriter {
    /// An empty file for a model of `architecture` (e.g. `"whisper"`).
    pub fn new(architecture: impl Into<String>) -> Self {
        let mut header = Map::new();
        header.insert(
            keys::ARCHITECTURE.into(),
            Value::String(architecture.into()),
        );
        PackedFileWriter {
            header,
            entries: Vec::new(),
            pending: Vec::new(),
            names: HashSet::new(),
            data_len: 0,
        }
    }

    /// Sets a header field (see [`keys`]); `tensors` is reserved and `architecture` must be a
    /// string.
    pub fn set_header_field(&mut self, key: &str, value: Value) -> Result<&mut Self> {
        if key == keys::TENSORS {
            return Err(Error::config(
                "packed file header",
                "`tensors` is written by the writer",
            ));
        }
        if key == keys::ARCHITECTURE && !value.is_string() {
            return Err(Error::config(
                "packed file header",
                "`architecture` must be a string",
            ));
        }
        self.header.insert(key.to_string(), value);
        Ok(self)
    }

    /// Adds a float tensor from its little-endian element bytes.
    pub fn add_float(
        &mut self,
        name: &str,
        shape: &[usize],
        dtype: FloatDtype,
        bytes: &[u8],
    ) -> Result<&mut Self> {
        self.check_new_tensor(name, shape)?;
        let expected = shape
            .iter()
            .try_fold(dtype.size(), |acc, &d| acc.checked_mul(d))
            .ok_or_else(|| tensor_config(name, format!("shape {shape:?} overflows")))?;
        if bytes.len() != expected {
            return Err(tensor_config(
                name,
                format!(
                    "{} bytes given, shape {shape:?} of {} needs {expected}",
                    bytes.len(),
                    dtype.name()
                ),
            ));
        }
        let section = self.place(bytes.len());
        self.push(
            name,
            shape,
            TensorData::Float { dtype, section },
            PendingData::Float(bytes.to_vec()),
        );
        Ok(self)
    }

    /// Adds a packed matrix with its logical shape `[rows, cols]`.
    pub fn add_packed(&mut self, name: &str, matrix: &PackedMatrix) -> Result<&mut Self> {
        self.add_packed_with_shape(name, &[matrix.rows(), matrix.cols()], matrix)
    }

    /// Adds a packed matrix whose logical shape differs from `[rows, cols]` (e.g. a convolution
    /// kernel `[out, in, k]` packed as `out x (in * k)`); the shape's product must be
    /// `rows * cols`.
    pub fn add_packed_with_shape(
        &mut self,
        name: &str,
        shape: &[usize],
        matrix: &PackedMatrix,
    ) -> Result<&mut Self> {
        self.check_new_tensor(name, shape)?;
        let elements = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
        if elements != matrix.rows().checked_mul(matrix.cols()) {
            return Err(tensor_config(
                name,
                format!(
                    "shape {shape:?} does not hold {}x{}",
                    matrix.rows(),
                    matrix.cols()
                ),
            ));
        }
        let codes = self.place(matrix.codes().len());
        let scales = self.place(matrix.scales().len() * 2);
        let zero_points = matrix.zero_points().map(|z| self.place(z.len()));
        let data = TensorData::Packed {
            rows: matrix.rows(),
            cols: matrix.cols(),
            format: matrix.format(),
            codes,
            scales,
            zero_points,
        };
        self.push(name, shape, data, PendingData::Packed(matrix.clone()));
        Ok(self)
    }

    /// Number of tensors added.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no tensor was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Writes the file atomically (temporary sibling, fsync, rename) and returns its size in
    /// bytes. On error nothing is left at `path` (an existing file there is untouched).
    pub fn write(&self, path: &Path) -> Result<u64> {
        let mut header = self.header.clone();
        let tensors = self.entries.iter().map(entry_to_json).collect();
        header.insert(keys::TENSORS.into(), Value::Array(tensors));
        let json = serde_json::to_vec(&Value::Object(header)).map_err(|source| Error::Json {
            context: format!("{}: header", path.display()),
            source,
        })?;
        if json.len() as u64 > MAX_HEADER_LEN {
            return Err(Error::config(
                format!("{}: header", path.display()),
                format!(
                    "JSON header is {} bytes, above the {MAX_HEADER_LEN}-byte cap",
                    json.len()
                ),
            ));
        }
        // The reader's caps (values, fields, lengths): never write a file it would refuse.
        header::parse_header(&json)
            .map_err(|reason| Error::config(format!("{}: header", path.display()), reason))?;
        let data_start = align_up((PREFIX_LEN + json.len()) as u64);
        let total = data_start + self.data_len;
        write_atomic_with(path, |w| {
            w.write_all(&MAGIC)?;
            w.write_all(&VERSION.to_le_bytes())?;
            w.write_all(&0u32.to_le_bytes())?;
            w.write_all(&(json.len() as u64).to_le_bytes())?;
            w.write_all(&json)?;
            write_zeros(w, data_start - (PREFIX_LEN + json.len()) as u64)?;
            let mut position = 0u64;
            for (entry, pending) in self.entries.iter().zip(&self.pending) {
                match (&entry.data, pending) {
                    (TensorData::Float { section, .. }, PendingData::Float(bytes)) => {
                        write_section(w, &mut position, *section, bytes)?;
                    }
                    (
                        TensorData::Packed {
                            codes,
                            scales,
                            zero_points,
                            ..
                        },
                        PendingData::Packed(m),
                    ) => {
                        write_section(w, &mut position, *codes, m.codes())?;
                        let scale_bytes: Vec<u8> =
                            m.scales().iter().flat_map(|s| s.to_le_bytes()).collect();
                        write_section(w, &mut position, *scales, &scale_bytes)?;
                        if let (Some(section), Some(zeros)) = (zero_points, m.zero_points()) {
                            write_section(w, &mut position, *section, zeros)?;
                        }
                    }
                    _ => unreachable!("entries and pending data are pushed together"),
                }
            }
            debug_assert_eq!(position, self.data_len);
            Ok(())
        })?;
        Ok(total)
    }

    fn check_new_tensor(&self, name: &str, shape: &[usize]) -> Result<()> {
        if name.is_empty() || name.len() > MAX_NAME_LEN {
            return Err(tensor_config(
                name,
                format!("name must be 1..={MAX_NAME_LEN} bytes, got {}", name.len()),
            ));
        }
        if self.names.contains(name) {
            return Err(tensor_config(
                name,
                "a tensor of this name was already added",
            ));
        }
        if shape.len() > MAX_RANK {
            return Err(tensor_config(
                name,
                format!("rank {} exceeds {MAX_RANK}", shape.len()),
            ));
        }
        if self.entries.len() >= MAX_TENSORS {
            return Err(tensor_config(
                name,
                format!("more than {MAX_TENSORS} tensors"),
            ));
        }
        Ok(())
    }

    /// Reserves the next aligned section of `nbytes`.
    fn place(&mut self, nbytes: usize) -> Section {
        let offset = align_up(self.data_len);
        self.data_len = offset + nbytes as u64;
        Section {
            offset,
            nbytes: nbytes as u64,
        }
    }

    fn push(&mut self, name: &str, shape: &[usize], data: TensorData, pending: PendingData) {
        self.names.insert(name.to_string());
        self.entries.push(TensorEntry {
            name: name.to_string(),
            shape: shape.to_vec(),
            data,
        });
        self.pending.push(pending);
    }
}

fn tensor_config(name: &str, reason: impl Into<String>) -> Error {
    Error::config(format!("packed file writer, tensor `{name}`"), reason)
}

fn align_up(n: u64) -> u64 {
    n.div_ceil(ALIGN as u64) * ALIGN as u64
}

fn write_zeros(w: &mut impl Write, n: u64) -> std::io::Result<()> {
    std::io::copy(&mut std::io::repeat(0).take(n), w).map(|_| ())
}

fn write_section(
    w: &mut impl Write,
    position: &mut u64,
    section: Section,
    bytes: &[u8],
) -> std::io::Result<()> {
    write_zeros(w, section.offset - *position)?;
    w.write_all(bytes)?;
    *position = section.offset + section.nbytes;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Reader.

/// A validated, memory-mapped `.whittle` file. Tensor data is never copied: accessors return
/// slices of the map.
pub struct PackedFile {
    path: PathBuf,
    map: memmap2::Mmap,
    /// Header fields except the tensor table.
    fields: Map<String, Value>,
    architecture: String,
    /// Absolute file offset of the data section.
    data_start: usize,
    entries: Vec<TensorEntry>,
    index: HashMap<String, usize>,
}

impl std::fmt::Debug for PackedFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedFile")
            .field("path", &self.path)
            .field("architecture", &self.architecture)
            .field("file_size", &self.map.len())
            .field("tensors", &self.entries.len())
            .finish()
    }
}

impl PackedFile {
    /// Memory-maps `path` and validates all of it (see the module docs); errors name the file and,
    /// where one is involved, the tensor.
    pub fn open(path: &Path) -> Result<Self> {
        let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
        let size = file.metadata().map_err(|e| Error::io(path, e))?.len();
        if size < PREFIX_LEN as u64 {
            return Err(Error::malformed(
                path,
                format!("{size} bytes, shorter than the {PREFIX_LEN}-byte .whittle prefix"),
            ));
        }
        // SAFETY: the map is read-only and every read goes through bounds-checked slices; a file
        // changed by another process while mapped gives wrong numbers, as with any mmap reader.
        let map = unsafe { memmap2::Mmap::map(&file) }.map_err(|e| Error::io(path, e))?;
        let parsed = parse(path, &map)?;
        Ok(PackedFile {
            path: path.to_path_buf(),
            map,
            fields: parsed.fields,
            architecture: parsed.architecture,
            data_start: parsed.data_start,
            index: parsed
                .entries
                .iter()
                .enumerate()
                .map(|(i, e)| (e.name.clone(), i))
                .collect(),
            entries: parsed.entries,
        })
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Total size of the file in bytes (every byte counts toward compression ratios).
    pub fn file_size(&self) -> u64 {
        self.map.len() as u64
    }

    /// The header's fields except the tensor table (see [`Self::tensors`]).
    pub fn header_fields(&self) -> &Map<String, Value> {
        &self.fields
    }

    /// One header field (see [`keys`]), `None` when absent (always `None` for `tensors`).
    pub fn header_field(&self, key: &str) -> Option<&Value> {
        self.fields.get(key)
    }

    /// The `architecture` field, e.g. `"whisper"`.
    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    /// Tensor names in file order.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|e| e.name.as_str())
    }

    /// All tensor entries in file order.
    pub fn tensors(&self) -> &[TensorEntry] {
        &self.entries
    }

    /// The entry of `name`, `None` when absent.
    pub fn tensor(&self, name: &str) -> Option<&TensorEntry> {
        self.index.get(name).map(|&i| &self.entries[i])
    }

    /// Whether the file holds a tensor called `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// The float tensor `name`, borrowed from the map.
    pub fn float(&self, name: &str) -> Result<FloatTensorRef<'_>> {
        let entry = self.entry(name)?;
        match &entry.data {
            TensorData::Float { dtype, section } => Ok(FloatTensorRef {
                bytes: self.section_bytes(*section),
                dtype: *dtype,
                shape: &entry.shape,
            }),
            TensorData::Packed { format, .. } => {
                Err(self.kind_mismatch(name, "f32 or f16", &format_label(*format)))
            }
        }
    }

    /// The packed tensor `name`, borrowed from the map (no copy, no dequantization).
    pub fn packed(&self, name: &str) -> Result<PackedMatrixRef<'_>> {
        let entry = self.entry(name)?;
        match &entry.data {
            TensorData::Packed {
                rows,
                cols,
                format,
                codes,
                scales,
                zero_points,
            } => {
                let matrix = PackedMatrixRef {
                    rows: *rows,
                    cols: *cols,
                    format: *format,
                    codes: self.section_bytes(*codes),
                    scales: f16_slice_from_bytes(self.section_bytes(*scales))
                        .map_err(|e| self.tensor_error(name, e))?,
                    zero_points: zero_points.map(|z| self.section_bytes(z)),
                };
                Ok(matrix)
            }
            TensorData::Float { dtype, .. } => {
                Err(self.kind_mismatch(name, "packed", dtype.name()))
            }
        }
    }

    /// Per-tensor format, bits and bytes, in file order (for `whittle inspect`).
    pub fn summaries(&self) -> Vec<TensorSummary> {
        self.entries.iter().map(summarize).collect()
    }

    fn entry(&self, name: &str) -> Result<&TensorEntry> {
        self.tensor(name).ok_or_else(|| Error::MissingTensor {
            source_name: self.path.display().to_string(),
            tensor: name.to_string(),
        })
    }

    fn section_bytes(&self, section: Section) -> &[u8] {
        // Bounds were checked at open.
        let start = self.data_start + section.offset as usize;
        &self.map[start..start + section.nbytes as usize]
    }

    fn kind_mismatch(&self, name: &str, expected: &str, actual: &str) -> Error {
        Error::DtypeMismatch {
            source_name: self.path.display().to_string(),
            tensor: name.to_string(),
            expected: expected.to_string(),
            actual: actual.to_string(),
        }
    }

    fn tensor_error(&self, name: &str, e: whittle_kernels::KernelError) -> Error {
        Error::malformed(&self.path, e.in_tensor(name).to_string())
    }
}

fn summarize(entry: &TensorEntry) -> TensorSummary {
    let elements = entry.elements();
    let bytes = entry.stored_bytes();
    let bits_per_weight = if elements == 0 {
        0.0
    } else {
        bytes as f64 * 8.0 / elements as f64
    };
    let (kind, format) = match &entry.data {
        TensorData::Float { dtype, .. } => (TensorKind::Float, dtype.name().to_string()),
        TensorData::Packed { format, .. } => (TensorKind::Packed, format_label(*format)),
    };
    TensorSummary {
        name: entry.name.clone(),
        kind,
        shape: entry.shape.clone(),
        format,
        bits_per_weight,
        bytes,
    }
}

struct Parsed {
    fields: Map<String, Value>,
    architecture: String,
    data_start: usize,
    entries: Vec<TensorEntry>,
}

fn read_u32(bytes: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"))
}

/// Validates the whole file (the caller has checked that it holds the prefix).
fn parse(path: &Path, bytes: &[u8]) -> Result<Parsed> {
    let bad = |reason: String| Error::malformed(path, reason);
    if bytes[..8] != MAGIC {
        return Err(bad(format!(
            "not a .whittle file: magic is {:?}, expected {:?}",
            String::from_utf8_lossy(&bytes[..8]),
            String::from_utf8_lossy(&MAGIC)
        )));
    }
    let version = read_u32(bytes, 8);
    if version != VERSION {
        return Err(bad(format!(
            "format version {version}; this build reads version {VERSION}"
        )));
    }
    let flags = read_u32(bytes, 12);
    if flags != 0 {
        return Err(bad(format!(
            "unknown flags {flags:#x} (version {VERSION} defines none)"
        )));
    }
    let header_len = read_u64(bytes, 16);
    if header_len > MAX_HEADER_LEN {
        return Err(bad(format!(
            "header length {header_len} exceeds the {MAX_HEADER_LEN}-byte cap"
        )));
    }
    // Below the cap, so it fits usize and the sums below cannot overflow.
    let header_end = PREFIX_LEN + header_len as usize;
    if header_end > bytes.len() {
        return Err(bad(format!(
            "header length {header_len} runs past the end of the {}-byte file (truncated?)",
            bytes.len()
        )));
    }
    let data_start = align_up(header_end as u64) as usize;
    if data_start > bytes.len() {
        return Err(bad(format!(
            "data section should start at {data_start} but the file is {} bytes (truncated?)",
            bytes.len()
        )));
    }
    if let Some(i) = bytes[header_end..data_start].iter().position(|&b| b != 0) {
        return Err(bad(format!(
            "non-zero header padding at offset {}",
            header_end + i
        )));
    }
    let header::RawHeader {
        architecture,
        tensors: table,
        fields,
    } = header::parse_header(&bytes[PREFIX_LEN..header_end]).map_err(bad)?;
    let data_len = (bytes.len() - data_start) as u64;
    let mut entries = Vec::with_capacity(table.len());
    let mut names = HashSet::with_capacity(table.len());
    for (position, raw) in table.iter().enumerate() {
        let entry = parse_entry(raw, position, data_len).map_err(&bad)?;
        if !names.insert(entry.name.clone()) {
            return Err(bad(format!(
                "tensor `{}` appears more than once",
                entry.name
            )));
        }
        if let TensorData::Packed {
            rows,
            cols,
            format,
            codes,
            scales,
            zero_points,
        } = &entry.data
        {
            let section =
                |s: Section| &bytes[data_start + s.offset as usize..][..s.nbytes as usize];
            let matrix =
                f16_slice_from_bytes(section(*scales)).map(|scale_slice| PackedMatrixRef {
                    rows: *rows,
                    cols: *cols,
                    format: *format,
                    codes: section(*codes),
                    scales: scale_slice,
                    zero_points: zero_points.map(section),
                });
            matrix
                .and_then(|m| m.validate())
                .map_err(|e| bad(e.in_tensor(entry.name.clone()).to_string()))?;
        }
        entries.push(entry);
    }
    check_layout(&entries, data_len).map_err(bad)?;
    Ok(Parsed {
        fields,
        architecture,
        data_start,
        entries,
    })
}

/// Sections must not overlap and the file must end where the last section ends.
fn check_layout(entries: &[TensorEntry], data_len: u64) -> std::result::Result<(), String> {
    let mut sections: Vec<(u64, u64, &str, &str)> = Vec::new();
    for entry in entries {
        match &entry.data {
            TensorData::Float { section, .. } => {
                sections.push((section.offset, section.nbytes, &entry.name, "data"))
            }
            TensorData::Packed {
                codes,
                scales,
                zero_points,
                ..
            } => {
                sections.push((codes.offset, codes.nbytes, &entry.name, "codes"));
                sections.push((scales.offset, scales.nbytes, &entry.name, "scales"));
                if let Some(z) = zero_points {
                    sections.push((z.offset, z.nbytes, &entry.name, "zero_points"));
                }
            }
        }
    }
    sections.retain(|s| s.1 > 0);
    sections.sort_unstable();
    for pair in sections.windows(2) {
        let (a, b) = (pair[0], pair[1]);
        // In range, so no overflow.
        if a.0 + a.1 > b.0 {
            return Err(format!(
                "tensor `{}` {} (bytes {}..{}) overlaps tensor `{}` {} (from {})",
                a.2,
                a.3,
                a.0,
                a.0 + a.1,
                b.2,
                b.3,
                b.0
            ));
        }
    }
    let end = sections.iter().map(|s| s.0 + s.1).max().unwrap_or(0);
    if end != data_len {
        return Err(format!(
            "{} bytes follow the last tensor's data (data section is {data_len} bytes, tensors end at {end})",
            data_len - end
        ));
    }
    Ok(())
}

/// Validates one table entry against the data section's length.
fn parse_entry(
    raw: &Value,
    position: usize,
    data_len: u64,
) -> std::result::Result<TensorEntry, String> {
    let object = raw
        .as_object()
        .ok_or_else(|| format!("tensor #{position} is not a JSON object"))?;
    let name = object
        .get("name")
        .and_then(Value::as_str)
        .ok_or_else(|| format!("tensor #{position} has no string `name`"))?;
    let label = format!("tensor #{position} `{name}`");
    if name.is_empty() || name.len() > MAX_NAME_LEN {
        return Err(format!("{label}: name must be 1..={MAX_NAME_LEN} bytes"));
    }
    let kind = object
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    let entry_error = |e: serde_json::Error| format!("{label}: {e}");
    let (shape, data) = match kind {
        "float" => {
            let json: FloatEntryJson = serde_json::from_value(raw.clone()).map_err(entry_error)?;
            let shape = checked_shape(&json.shape).map_err(|e| format!("{label}: {e}"))?;
            let section = Section {
                offset: json.offset,
                nbytes: json.nbytes,
            };
            check_section(section, data_len).map_err(|e| format!("{label} data: {e}"))?;
            let expected = shape
                .iter()
                .try_fold(json.dtype.size() as u64, |acc, &d| {
                    acc.checked_mul(d as u64)
                })
                .ok_or_else(|| format!("{label}: shape {shape:?} overflows"))?;
            if json.nbytes != expected {
                return Err(format!(
                    "{label}: {} bytes, but shape {shape:?} of {} needs {expected}",
                    json.nbytes,
                    json.dtype.name()
                ));
            }
            (
                shape,
                TensorData::Float {
                    dtype: json.dtype,
                    section,
                },
            )
        }
        "packed" => {
            let json: PackedEntryJson = serde_json::from_value(raw.clone()).map_err(entry_error)?;
            let shape = checked_shape(&json.shape).map_err(|e| format!("{label}: {e}"))?;
            let rows = usize::try_from(json.rows)
                .map_err(|_| format!("{label}: rows {} too large", json.rows))?;
            let cols = usize::try_from(json.cols)
                .map_err(|_| format!("{label}: cols {} too large", json.cols))?;
            let elements = shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
            if elements.is_none() || elements != rows.checked_mul(cols) {
                return Err(format!(
                    "{label}: shape {shape:?} does not hold {rows}x{cols} weights"
                ));
            }
            let format = json
                .format
                .to_format()
                .map_err(|e| format!("{label}: format: {e}"))?;
            check_section(json.codes, data_len).map_err(|e| format!("{label} codes: {e}"))?;
            check_section(json.scales, data_len).map_err(|e| format!("{label} scales: {e}"))?;
            if let Some(z) = json.zero_points {
                check_section(z, data_len).map_err(|e| format!("{label} zero_points: {e}"))?;
            }
            // Exact section sizes are checked by `PackedMatrixRef::validate` once sliced.
            let data = TensorData::Packed {
                rows,
                cols,
                format,
                codes: json.codes,
                scales: json.scales,
                zero_points: json.zero_points,
            };
            (shape, data)
        }
        other => {
            return Err(format!(
                "{label}: unknown kind `{other}` (expected `float` or `packed`)"
            ))
        }
    };
    Ok(TensorEntry {
        name: name.to_string(),
        shape,
        data,
    })
}

fn checked_shape(shape: &[u64]) -> std::result::Result<Vec<usize>, String> {
    if shape.len() > MAX_RANK {
        return Err(format!("rank {} exceeds {MAX_RANK}", shape.len()));
    }
    let shape: Vec<usize> = shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| format!("dimension {d} too large")))
        .collect::<std::result::Result<_, _>>()?;
    shape
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| format!("shape {shape:?} overflows"))?;
    Ok(shape)
}

fn check_section(section: Section, data_len: u64) -> std::result::Result<(), String> {
    if !section.offset.is_multiple_of(ALIGN as u64) {
        return Err(format!(
            "offset {} is not a multiple of {ALIGN}",
            section.offset
        ));
    }
    match section.offset.checked_add(section.nbytes) {
        Some(end) if end <= data_len => Ok(()),
        _ => Err(format!(
            "bytes {}..+{} extend past the {data_len}-byte data section (truncated?)",
            section.offset, section.nbytes
        )),
    }
}
