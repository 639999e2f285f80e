//! A reader for R's serialization format and R lazy-load databases (`*.rdx` / `*.rdb`).
//!
//! Debian's `r-cran-janeaustenr` stores Austen's novels as an R lazy-load database: the index
//! `Rdata.rdx` is a compressed serialization of `list(variables = list(<name> = c(offset, length),
//! ...), references = ..., compressed = ...)`, and each object lives in `Rdata.rdb` at `offset`,
//! `length` bytes long: a 4-byte big-endian uncompressed size, then (for `compressed = TRUE`) a zlib
//! stream of the object's own serialization.
//!
//! The serialization reader follows the layout written by R's `serialize.c` (R Internals, section
//! 1.8 "Serialization formats"): a format tag (`X\n` = big-endian XDR; the ASCII and native binary
//! formats are refused), the format version (2 or 3; version 3 adds the native encoding name), and
//! then items. Each item starts with a 32-bit flags word: bits 0-7 the SEXP type, bit 8 "is
//! object", bit 9 "has attributes", bit 10 "has tag", bits 12-27 the "levels" (string encoding for
//! `CHARSXP`). Vectors carry a length (`-1` announces a 64-bit length as two words) and their
//! elements, then their attribute pairlist; pairlist-like nodes carry attributes, tag, CAR and
//! CDR; symbols and environments enter a reference table that later `REFSXP` items point into.
//!
//! Only what data packages need is decoded: atomic vectors, lists, pairlists, symbols, `NULL` and
//! `NA_character_`; environments and closures are skipped over. Every length is checked against the
//! bytes left before anything is allocated, nesting is capped, decompression is capped, and any
//! malformed input gives [`CorpusError::RData`] naming the file and byte offset; nothing panics.

use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::{GzDecoder, ZlibDecoder};

use crate::error::{CorpusError, IoContext, Result};

/// Largest decompressed size of one serialized object (the biggest Austen novel is ~1 MiB).
pub const MAX_DECOMPRESSED_BYTES: u64 = 512 << 20;

/// Deepest nesting of items accepted; real data is a few levels deep.
pub const MAX_DEPTH: usize = 200;

/// Largest reference table accepted.
const MAX_REFS: usize = 1 << 20;

// SEXP type codes from Rinternals.h and serialize.c.
const NILSXP: u8 = 0;
const SYMSXP: u8 = 1;
const LISTSXP: u8 = 2;
const CLOSXP: u8 = 3;
const ENVSXP: u8 = 4;
const PROMSXP: u8 = 5;
const LANGSXP: u8 = 6;
const SPECIALSXP: u8 = 7;
const BUILTINSXP: u8 = 8;
const CHARSXP: u8 = 9;
const LGLSXP: u8 = 10;
const INTSXP: u8 = 13;
const REALSXP: u8 = 14;
const CPLXSXP: u8 = 15;
const STRSXP: u8 = 16;
const DOTSXP: u8 = 17;
const VECSXP: u8 = 19;
const EXPRSXP: u8 = 20;
const BCODESXP: u8 = 21;
const EXTPTRSXP: u8 = 22;
const WEAKREFSXP: u8 = 23;
const RAWSXP: u8 = 24;
const S4SXP: u8 = 25;
const ALTREP_SXP: u8 = 238;
const ATTRLISTSXP: u8 = 239;
const ATTRLANGSXP: u8 = 240;
const BASEENV_SXP: u8 = 241;
const EMPTYENV_SXP: u8 = 242;
const GENERICREFSXP: u8 = 245;
const CLASSREFSXP: u8 = 246;
const PERSISTSXP: u8 = 247;
const PACKAGESXP: u8 = 248;
const NAMESPACESXP: u8 = 249;
const BASENAMESPACE_SXP: u8 = 250;
const MISSINGARG_SXP: u8 = 251;
const UNBOUNDVALUE_SXP: u8 = 252;
const GLOBALENV_SXP: u8 = 253;
const NILVALUE_SXP: u8 = 254;
const REFSXP: u8 = 255;

const HAS_OBJECT_BIT: u32 = 1 << 8;
const HAS_ATTR_BIT: u32 = 1 << 9;
const HAS_TAG_BIT: u32 = 1 << 10;
// CHARSXP encoding bits inside the levels field (flags >> 12).
const LATIN1_MASK: u32 = 1 << 2;
const UTF8_MASK: u32 = 1 << 3;

/// R's `NA_integer_` (also `NA` for logicals).
pub const NA_INTEGER: i32 = i32::MIN;

/// The data part of a decoded R object.
#[derive(Debug, Clone, PartialEq)]
pub enum RData {
    /// `NULL`.
    Null,
    /// A logical vector; `None` is `NA`.
    Logical(Vec<Option<bool>>),
    /// An integer vector; `NA` is [`NA_INTEGER`].
    Integer(Vec<i32>),
    /// A double vector.
    Real(Vec<f64>),
    /// A complex vector as (re, im) pairs.
    Complex(Vec<(f64, f64)>),
    /// A character vector; `None` is `NA_character_`.
    Strings(Vec<Option<String>>),
    /// A raw (byte) vector.
    Raw(Vec<u8>),
    /// A generic vector (`list`) or expression vector.
    List(Vec<RValue>),
    /// A pairlist, call or other node chain: (tag, value) cells.
    Pairlist(Vec<(Option<String>, RValue)>),
    /// A symbol.
    Symbol(String),
    /// A single string element (`CHARSXP`); `None` is `NA_STRING`.
    Char(Option<String>),
    /// Something read past but not decoded (environments, closures, pointers); the SEXP type.
    Opaque(u8),
}

/// A decoded R object: its data and its attributes (`names`, `class`, ...).
#[derive(Debug, Clone, PartialEq)]
pub struct RValue {
    /// The object's contents.
    pub data: RData,
    /// Attribute (name, value) pairs in serialization order.
    pub attributes: Vec<(String, RValue)>,
}

impl RValue {
    fn plain(data: RData) -> Self {
        RValue {
            data,
            attributes: Vec::new(),
        }
    }

    /// The attribute called `name`, if present.
    pub fn attr(&self, name: &str) -> Option<&RValue> {
        self.attributes
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value)
    }

    /// The `names` attribute as strings (`NA` names become empty strings).
    pub fn names(&self) -> Option<Vec<String>> {
        match &self.attr("names")?.data {
            RData::Strings(names) => Some(
                names
                    .iter()
                    .map(|name| name.clone().unwrap_or_default())
                    .collect(),
            ),
            _ => None,
        }
    }

    /// The element of a named list called `name`.
    pub fn list_element(&self, name: &str) -> Option<&RValue> {
        let RData::List(items) = &self.data else {
            return None;
        };
        let index = self.names()?.iter().position(|n| n == name)?;
        items.get(index)
    }

    /// A short description of the object's type, for error messages.
    pub fn type_name(&self) -> &'static str {
        match &self.data {
            RData::Null => "NULL",
            RData::Logical(_) => "logical",
            RData::Integer(_) => "integer",
            RData::Real(_) => "double",
            RData::Complex(_) => "complex",
            RData::Strings(_) => "character",
            RData::Raw(_) => "raw",
            RData::List(_) => "list",
            RData::Pairlist(_) => "pairlist",
            RData::Symbol(_) => "symbol",
            RData::Char(_) => "CHARSXP",
            RData::Opaque(_) => "unsupported object",
        }
    }
}

/// Decodes one R serialization stream (already decompressed). `origin` names the source in errors.
pub fn unserialize(bytes: &[u8], origin: &Path) -> Result<RValue> {
    let mut reader = Unserializer {
        cursor: Cursor {
            bytes,
            pos: 0,
            origin,
        },
        refs: Vec::new(),
        native_latin1: false,
        depth: 0,
    };
    reader.read_header()?;
    let value = reader.read_item()?;
    Ok(value)
}

/// Decompresses a whole serialized file (`saveRDS` output: gzip, zlib or uncompressed) and decodes it.
pub fn read_rds(path: &Path) -> Result<RValue> {
    let raw = std::fs::read(path).at(path)?;
    let bytes = decompress_auto(&raw, path)?;
    unserialize(&bytes, path)
}

fn decompress_auto(raw: &[u8], path: &Path) -> Result<Vec<u8>> {
    match raw {
        [0x1f, 0x8b, ..] => inflate(GzDecoder::new(raw), path, 0),
        [b'X', b'\n', ..] => Ok(raw.to_vec()),
        [0x78, ..] => inflate(ZlibDecoder::new(raw), path, 0),
        [b'A' | b'B', b'\n', ..] => Err(rdata_error(
            path,
            0,
            "ASCII and native-binary R serializations are not supported; only XDR (format X)",
        )),
        [0xfd, b'7', b'z', b'X', b'Z', ..] | [b'B', b'Z', b'h', ..] => Err(rdata_error(
            path,
            0,
            "xz/bzip2-compressed R data is not supported; re-save it with gzip compression",
        )),
        _ => Err(rdata_error(
            path,
            0,
            "not an R serialization (expected gzip, zlib or an 'X\\n' header)",
        )),
    }
}

fn inflate(decoder: impl Read, path: &Path, offset: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    decoder
        .take(MAX_DECOMPRESSED_BYTES + 1)
        .read_to_end(&mut out)
        .map_err(|err| rdata_error(path, offset, format!("decompression failed: {err}")))?;
    if out.len() as u64 > MAX_DECOMPRESSED_BYTES {
        return Err(rdata_error(
            path,
            offset,
            format!("object decompresses to more than {MAX_DECOMPRESSED_BYTES} bytes"),
        ));
    }
    Ok(out)
}

fn rdata_error(path: &Path, offset: u64, reason: impl Into<String>) -> CorpusError {
    CorpusError::RData {
        path: path.to_path_buf(),
        offset,
        reason: reason.into(),
    }
}

/// How objects in an `.rdb` file are compressed (the index's `compressed` entry).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RdbCompression {
    /// `compressed = TRUE`: 4-byte length, then a zlib stream.
    Zlib,
    /// `compressed = 2` or `3`: 4-byte length, a type byte (`Z`, `2`, `X`, `0`), then data.
    Tagged,
    /// `compressed = FALSE`: the serialization itself.
    None,
}

/// One object's place in the `.rdb` file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RdbEntry {
    /// The object's name (the R variable).
    pub name: String,
    /// Byte offset of its record in the `.rdb` file.
    pub offset: u64,
    /// Record length in bytes.
    pub length: u64,
}

/// An opened R lazy-load database: the parsed `.rdx` index and the path of its `.rdb` data file.
#[derive(Debug, Clone)]
pub struct LazyLoadDb {
    rdb_path: PathBuf,
    entries: Vec<RdbEntry>,
    compression: RdbCompression,
}

/// Largest `.rdb` record accepted (compressed).
const MAX_RECORD_BYTES: u64 = 256 << 20;

impl LazyLoadDb {
    /// Opens the database whose files are `<base>.rdx` and `<base>.rdb`. `base` may also be given
    /// with either extension.
    pub fn open(base: &Path) -> Result<Self> {
        let base = match base.extension().and_then(|ext| ext.to_str()) {
            Some("rdx" | "rdb") => base.with_extension(""),
            _ => base.to_path_buf(),
        };
        let rdx_path = append_extension(&base, "rdx");
        let rdb_path = append_extension(&base, "rdb");
        let index = read_rds(&rdx_path)?;
        let bad =
            |reason: &str| rdata_error(&rdx_path, 0, format!("bad lazy-load index: {reason}"));
        let variables = index
            .list_element("variables")
            .ok_or_else(|| bad("no `variables` element"))?;
        let names = variables
            .names()
            .ok_or_else(|| bad("`variables` has no names"))?;
        let RData::List(keys) = &variables.data else {
            return Err(bad("`variables` is not a list"));
        };
        if keys.len() != names.len() {
            return Err(bad("`variables` and its names differ in length"));
        }
        let mut entries = Vec::with_capacity(keys.len());
        for (name, key) in names.into_iter().zip(keys) {
            let (offset, length) = key_pair(key).ok_or_else(|| {
                bad(&format!(
                    "key of {name:?} is not two non-negative numbers (offset, length)"
                ))
            })?;
            entries.push(RdbEntry {
                name,
                offset,
                length,
            });
        }
        let compression = match index.list_element("compressed").map(|v| &v.data) {
            Some(RData::Logical(v)) if v.first() == Some(&Some(false)) => RdbCompression::None,
            Some(RData::Logical(_)) | None => RdbCompression::Zlib,
            Some(RData::Integer(v)) if v.first().is_some_and(|&c| c >= 2) => RdbCompression::Tagged,
            Some(RData::Real(v)) if v.first().is_some_and(|&c| c >= 2.0) => RdbCompression::Tagged,
            Some(RData::Integer(v)) if v.first() == Some(&0) => RdbCompression::None,
            Some(RData::Real(v)) if v.first() == Some(&0.0) => RdbCompression::None,
            Some(_) => RdbCompression::Zlib,
        };
        Ok(LazyLoadDb {
            rdb_path,
            entries,
            compression,
        })
    }

    /// The objects in the database, in index order.
    pub fn entries(&self) -> &[RdbEntry] {
        &self.entries
    }

    /// Reads and decodes the object called `name`.
    pub fn read(&self, name: &str) -> Result<RValue> {
        let entry = self
            .entries
            .iter()
            .find(|entry| entry.name == name)
            .ok_or_else(|| CorpusError::RObjectMissing {
                path: self.rdb_path.clone(),
                name: name.to_string(),
                available: self
                    .entries
                    .iter()
                    .map(|e| e.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?;
        let record = self.read_record(entry)?;
        let bytes = self.decompress_record(&record, entry.offset)?;
        unserialize(&bytes, &self.rdb_path)
    }

    /// Reads the character vector called `name` (`NA` elements become `None`).
    pub fn read_strings(&self, name: &str) -> Result<Vec<Option<String>>> {
        let value = self.read(name)?;
        match value.data {
            RData::Strings(strings) => Ok(strings),
            _ => Err(rdata_error(
                &self.rdb_path,
                0,
                format!(
                    "object {name:?} is a {}, not a character vector",
                    value.type_name()
                ),
            )),
        }
    }

    fn read_record(&self, entry: &RdbEntry) -> Result<Vec<u8>> {
        use std::io::{Seek, SeekFrom};
        if entry.length > MAX_RECORD_BYTES || entry.length < 4 {
            return Err(rdata_error(
                &self.rdb_path,
                entry.offset,
                format!(
                    "record of {:?} has implausible length {}",
                    entry.name, entry.length
                ),
            ));
        }
        let mut file = std::fs::File::open(&self.rdb_path).at(&self.rdb_path)?;
        let file_len = file.metadata().at(&self.rdb_path)?.len();
        if entry.offset.saturating_add(entry.length) > file_len {
            return Err(rdata_error(
                &self.rdb_path,
                entry.offset,
                format!(
                    "record of {:?} ({} bytes) runs past the end of the file ({file_len} bytes)",
                    entry.name, entry.length
                ),
            ));
        }
        file.seek(SeekFrom::Start(entry.offset))
            .at(&self.rdb_path)?;
        let mut record = vec![0u8; entry.length as usize];
        file.read_exact(&mut record).at(&self.rdb_path)?;
        Ok(record)
    }

    fn decompress_record(&self, record: &[u8], offset: u64) -> Result<Vec<u8>> {
        let path = &self.rdb_path;
        let (len_bytes, body) = record.split_at(4);
        let declared = u32::from_be_bytes([len_bytes[0], len_bytes[1], len_bytes[2], len_bytes[3]]);
        let (kind, data) = match self.compression {
            RdbCompression::None => return Ok(record.to_vec()),
            RdbCompression::Zlib => (b'Z', body),
            RdbCompression::Tagged => match body.split_first() {
                Some((&kind, rest)) => (kind, rest),
                None => return Err(rdata_error(path, offset, "record has no compression tag")),
            },
        };
        let out = match kind {
            b'Z' => inflate(ZlibDecoder::new(data), path, offset + 4)?,
            b'0' => data.to_vec(),
            b'2' | b'X' => {
                return Err(rdata_error(
                    path,
                    offset,
                    "bzip2/xz-compressed records are not supported (only zlib)",
                ))
            }
            other => {
                return Err(rdata_error(
                    path,
                    offset,
                    format!("unknown record compression tag 0x{other:02x}"),
                ))
            }
        };
        if out.len() as u64 != u64::from(declared) {
            return Err(rdata_error(
                path,
                offset,
                format!(
                    "record decompressed to {} bytes but declares {declared}",
                    out.len()
                ),
            ));
        }
        Ok(out)
    }
}

fn append_extension(base: &Path, ext: &str) -> PathBuf {
    let mut name = base.as_os_str().to_os_string();
    name.push(".");
    name.push(ext);
    PathBuf::from(name)
}

/// An index key: `c(offset, length)` as integers or doubles.
fn key_pair(key: &RValue) -> Option<(u64, u64)> {
    let as_u64 = |x: f64| (x >= 0.0 && x.fract() == 0.0 && x < 2f64.powi(53)).then_some(x as u64);
    match &key.data {
        RData::Integer(v) if v.len() == 2 => {
            Some((u64::try_from(v[0]).ok()?, u64::try_from(v[1]).ok()?))
        }
        RData::Real(v) if v.len() == 2 => Some((as_u64(v[0])?, as_u64(v[1])?)),
        _ => None,
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    origin: &'a Path,
}

impl Cursor<'_> {
    fn error(&self, reason: impl Into<String>) -> CorpusError {
        rdata_error(self.origin, self.pos as u64, reason)
    }

    fn remaining(&self) -> usize {
        self.bytes.len() - self.pos
    }

    fn take(&mut self, n: usize) -> Result<&[u8]> {
        if n > self.remaining() {
            return Err(self.error(format!(
                "truncated: need {n} bytes, {} left",
                self.remaining()
            )));
        }
        let slice = &self.bytes[self.pos..self.pos + n];
        self.pos += n;
        Ok(slice)
    }

    fn i32(&mut self) -> Result<i32> {
        let b = self.take(4)?;
        Ok(i32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn f64(&mut self) -> Result<f64> {
        let b = self.take(8)?;
        let mut word = [0u8; 8];
        word.copy_from_slice(b);
        Ok(f64::from_be_bytes(word))
    }

    /// Reads a vector length and checks that `len * min_bytes_each` bytes remain.
    fn length(&mut self, min_bytes_each: usize) -> Result<usize> {
        let first = self.i32()?;
        let len = match first {
            -1 => {
                let upper = self.i32()?;
                let lower = self.i32()?;
                if upper < 0 || lower < 0 {
                    return Err(self.error("negative long-vector length"));
                }
                ((upper as u64) << 32) | lower as u64
            }
            n if n < 0 => return Err(self.error(format!("negative length {n}"))),
            n => n as u64,
        };
        let needed = len.saturating_mul(min_bytes_each as u64);
        if needed > self.remaining() as u64 {
            return Err(self.error(format!(
                "length {len} needs at least {needed} bytes but only {} remain",
                self.remaining()
            )));
        }
        Ok(len as usize)
    }
}

struct Unserializer<'a> {
    cursor: Cursor<'a>,
    refs: Vec<RValue>,
    native_latin1: bool,
    depth: usize,
}

fn sexp_type(flags: u32) -> u8 {
    (flags & 0xff) as u8
}

impl Unserializer<'_> {
    fn read_header(&mut self) -> Result<()> {
        let format = self.cursor.take(2)?;
        match format {
            b"X\n" => {}
            b"A\n" | b"B\n" => {
                return Err(self
                    .cursor
                    .error("ASCII and native-binary R serializations are not supported; only XDR"))
            }
            _ => return Err(self.cursor.error("missing 'X\\n' serialization header")),
        }
        let version = self.cursor.i32()?;
        let _writer_version = self.cursor.i32()?;
        let _min_reader_version = self.cursor.i32()?;
        match version {
            2 => {}
            3 => {
                let len = self.cursor.i32()?;
                if !(0..=255).contains(&len) {
                    return Err(self
                        .cursor
                        .error(format!("bad native-encoding name length {len}")));
                }
                let name = self.cursor.take(len as usize)?;
                let name = String::from_utf8_lossy(name).to_ascii_lowercase();
                self.native_latin1 = name.contains("latin1") || name.contains("8859-1");
            }
            other => {
                return Err(self.cursor.error(format!(
                    "unsupported serialization version {other} (expected 2 or 3)"
                )))
            }
        }
        Ok(())
    }

    fn read_item(&mut self) -> Result<RValue> {
        let flags = self.cursor.i32()? as u32;
        self.read_item_with_flags(flags)
    }

    fn read_item_with_flags(&mut self, flags: u32) -> Result<RValue> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(self
                .cursor
                .error(format!("objects nested deeper than {MAX_DEPTH} levels")));
        }
        let result = self.read_item_inner(flags);
        self.depth -= 1;
        result
    }

    fn read_item_inner(&mut self, flags: u32) -> Result<RValue> {
        let kind = sexp_type(flags);
        let has_attr = flags & HAS_ATTR_BIT != 0;
        let _is_object = flags & HAS_OBJECT_BIT != 0;
        match kind {
            NILVALUE_SXP | NILSXP => Ok(RValue::plain(RData::Null)),
            EMPTYENV_SXP | BASEENV_SXP | GLOBALENV_SXP | BASENAMESPACE_SXP | UNBOUNDVALUE_SXP
            | MISSINGARG_SXP => Ok(RValue::plain(RData::Opaque(kind))),
            REFSXP => {
                let mut index = (flags >> 8) as usize;
                if index == 0 {
                    index = self.cursor.i32()?.max(0) as usize;
                }
                self.refs
                    .get(index.wrapping_sub(1))
                    .cloned()
                    .ok_or_else(|| {
                        self.cursor.error(format!(
                            "reference {index} points past the {} known references",
                            self.refs.len()
                        ))
                    })
            }
            PERSISTSXP | PACKAGESXP | NAMESPACESXP => {
                let strings = self.read_string_vec_body()?;
                let value = RValue::plain(RData::Strings(strings));
                self.add_ref(value.clone())?;
                Ok(RValue::plain(RData::Opaque(kind)))
            }
            SYMSXP => {
                let name = self.read_item()?;
                let RData::Char(name) = name.data else {
                    return Err(self.cursor.error("symbol name is not a CHARSXP"));
                };
                let value = RValue::plain(RData::Symbol(name.unwrap_or_else(|| "NA".into())));
                self.add_ref(value.clone())?;
                Ok(value)
            }
            ENVSXP => {
                self.add_ref(RValue::plain(RData::Opaque(ENVSXP)))?;
                let _locked = self.cursor.i32()?;
                for _part in ["enclosure", "frame", "hash table", "attributes"] {
                    self.read_item()?;
                }
                Ok(RValue::plain(RData::Opaque(ENVSXP)))
            }
            LISTSXP | LANGSXP | CLOSXP | PROMSXP | DOTSXP | ATTRLANGSXP | ATTRLISTSXP => {
                self.read_node_chain(flags)
            }
            EXTPTRSXP => {
                self.add_ref(RValue::plain(RData::Opaque(EXTPTRSXP)))?;
                self.read_item()?; // protected value
                self.read_item()?; // tag
                self.finish_with_attributes(RData::Opaque(kind), has_attr)
            }
            WEAKREFSXP => {
                self.add_ref(RValue::plain(RData::Opaque(WEAKREFSXP)))?;
                self.finish_with_attributes(RData::Opaque(kind), has_attr)
            }
            SPECIALSXP | BUILTINSXP => {
                let len = self.cursor.length(1)?;
                self.cursor.take(len)?;
                Ok(RValue::plain(RData::Opaque(kind)))
            }
            CHARSXP => {
                let levels = flags >> 12;
                let len = self.cursor.i32()?;
                if len == -1 {
                    return Ok(RValue::plain(RData::Char(None)));
                }
                if len < 0 {
                    return Err(self.cursor.error(format!("negative string length {len}")));
                }
                let bytes = self.cursor.take(len as usize)?.to_vec();
                let text = self.decode_string(&bytes, levels)?;
                Ok(RValue::plain(RData::Char(Some(text))))
            }
            LGLSXP => {
                let len = self.cursor.length(4)?;
                let mut out = Vec::with_capacity(len);
                for _ in 0..len {
                    out.push(match self.cursor.i32()? {
                        NA_INTEGER => None,
                        0 => Some(false),
                        _ => Some(true),
                    });
                }
                self.finish_with_attributes(RData::Logical(out), has_attr)
            }
            INTSXP => {
                let len = self.cursor.length(4)?;
                let mut out = Vec::with_capacity(len);
                for _ in 0..len {
                    out.push(self.cursor.i32()?);
                }
                self.finish_with_attributes(RData::Integer(out), has_attr)
            }
            REALSXP => {
                let len = self.cursor.length(8)?;
                let mut out = Vec::with_capacity(len);
                for _ in 0..len {
                    out.push(self.cursor.f64()?);
                }
                self.finish_with_attributes(RData::Real(out), has_attr)
            }
            CPLXSXP => {
                let len = self.cursor.length(16)?;
                let mut out = Vec::with_capacity(len);
                for _ in 0..len {
                    out.push((self.cursor.f64()?, self.cursor.f64()?));
                }
                self.finish_with_attributes(RData::Complex(out), has_attr)
            }
            RAWSXP => {
                let len = self.cursor.length(1)?;
                let out = self.cursor.take(len)?.to_vec();
                self.finish_with_attributes(RData::Raw(out), has_attr)
            }
            STRSXP => {
                let strings = self.read_string_vec_elements()?;
                self.finish_with_attributes(RData::Strings(strings), has_attr)
            }
            VECSXP | EXPRSXP => {
                let len = self.cursor.length(4)?;
                let mut out = Vec::with_capacity(len);
                for _ in 0..len {
                    out.push(self.read_item()?);
                }
                self.finish_with_attributes(RData::List(out), has_attr)
            }
            S4SXP => self.finish_with_attributes(RData::Opaque(S4SXP), has_attr),
            ALTREP_SXP => self.read_altrep(),
            BCODESXP | CLASSREFSXP | GENERICREFSXP => Err(self.cursor.error(format!(
                "unsupported SEXP type {kind} (byte code or class references)"
            ))),
            other => Err(self.cursor.error(format!("unknown SEXP type {other}"))),
        }
    }

    fn add_ref(&mut self, value: RValue) -> Result<()> {
        if self.refs.len() >= MAX_REFS {
            return Err(self
                .cursor
                .error(format!("more than {MAX_REFS} referenced objects")));
        }
        self.refs.push(value);
        Ok(())
    }

    fn decode_string(&self, bytes: &[u8], levels: u32) -> Result<String> {
        let latin1 = levels & LATIN1_MASK != 0 || (self.native_latin1 && levels & UTF8_MASK == 0);
        if latin1 && std::str::from_utf8(bytes).is_err() {
            return Ok(bytes.iter().map(|&b| char::from(b)).collect());
        }
        String::from_utf8(bytes.to_vec()).map_err(|err| {
            self.cursor.error(format!(
                "string is neither UTF-8 nor marked latin1 (bad byte at {})",
                err.utf8_error().valid_up_to()
            ))
        })
    }

    /// `STRSXP` elements: a length, then one `CHARSXP` item each (at least 8 bytes apiece).
    fn read_string_vec_elements(&mut self) -> Result<Vec<Option<String>>> {
        let len = self.cursor.length(8)?;
        let mut out = Vec::with_capacity(len);
        for _ in 0..len {
            let item = self.read_item()?;
            match item.data {
                RData::Char(text) => out.push(text),
                _ => {
                    return Err(self.cursor.error(format!(
                        "character vector element is a {}, not a CHARSXP",
                        item.type_name()
                    )))
                }
            }
        }
        Ok(out)
    }

    /// The body of a persistent-string vector: a zero word, then a string vector.
    fn read_string_vec_body(&mut self) -> Result<Vec<Option<String>>> {
        if self.cursor.i32()? != 0 {
            return Err(self
                .cursor
                .error("names in persistent string vectors are not supported"));
        }
        self.read_string_vec_elements()
    }

    fn finish_with_attributes(&mut self, data: RData, has_attr: bool) -> Result<RValue> {
        let attributes = if has_attr {
            self.read_attributes()?
        } else {
            Vec::new()
        };
        Ok(RValue { data, attributes })
    }

    fn read_attributes(&mut self) -> Result<Vec<(String, RValue)>> {
        let list = self.read_item()?;
        match list.data {
            RData::Pairlist(cells) => Ok(cells
                .into_iter()
                .map(|(tag, value)| (tag.unwrap_or_default(), value))
                .collect()),
            RData::Null => Ok(Vec::new()),
            _ => Err(self.cursor.error("attributes are not a pairlist")),
        }
    }

    /// A chain of pairlist-like nodes, read iteratively so that long pairlists do not recurse.
    fn read_node_chain(&mut self, first_flags: u32) -> Result<RValue> {
        let kind = sexp_type(first_flags);
        let mut attributes = Vec::new();
        let mut cells = Vec::new();
        let mut flags = first_flags;
        loop {
            if flags & HAS_ATTR_BIT != 0 {
                let attrs = self.read_attributes()?;
                if cells.is_empty() {
                    attributes = attrs;
                }
            }
            let tag = if flags & HAS_TAG_BIT != 0 {
                match self.read_item()?.data {
                    RData::Symbol(name) => Some(name),
                    RData::Char(name) => name,
                    _ => None,
                }
            } else {
                None
            };
            let car = self.read_item()?;
            cells.push((tag, car));
            if cells.len() > self.cursor.remaining() + 1 {
                return Err(self.cursor.error("pairlist longer than its data"));
            }
            let next = self.cursor.i32()? as u32;
            match sexp_type(next) {
                LISTSXP | LANGSXP | DOTSXP | ATTRLISTSXP | ATTRLANGSXP => flags = next,
                NILVALUE_SXP => break,
                _ => {
                    let tail = self.read_item_with_flags(next)?;
                    cells.push((None, tail));
                    break;
                }
            }
        }
        let data = if matches!(kind, LISTSXP | ATTRLISTSXP | LANGSXP | ATTRLANGSXP | DOTSXP) {
            RData::Pairlist(cells)
        } else {
            RData::Opaque(kind)
        };
        Ok(RValue { data, attributes })
    }

    /// ALTREP objects: class info, state, attributes. Compact sequences and wrappers are expanded;
    /// other classes are refused.
    fn read_altrep(&mut self) -> Result<RValue> {
        let info = self.read_item()?;
        let state = self.read_item()?;
        let attributes = self.read_attributes()?;
        let class = match &info.data {
            RData::Pairlist(cells) => match cells.first().map(|(_, v)| &v.data) {
                Some(RData::Symbol(name)) => name.clone(),
                _ => String::new(),
            },
            _ => String::new(),
        };
        let data = match class.as_str() {
            "compact_intseq" | "compact_realseq" => {
                let RData::Real(params) = &state.data else {
                    return Err(self.cursor.error(format!("bad {class} state")));
                };
                let [n, start, step] = params[..] else {
                    return Err(self.cursor.error(format!("bad {class} state length")));
                };
                if !(0.0..=self.cursor.bytes.len() as f64 * 64.0).contains(&n) {
                    return Err(self.cursor.error(format!("implausible {class} length {n}")));
                }
                let values = (0..n as usize).map(|i| start + step * i as f64);
                if class == "compact_intseq" {
                    RData::Integer(values.map(|v| v as i32).collect())
                } else {
                    RData::Real(values.collect())
                }
            }
            name if name.starts_with("wrap_") => match state.data {
                RData::List(mut parts) if !parts.is_empty() => parts.swap_remove(0).data,
                _ => return Err(self.cursor.error(format!("bad {name} state"))),
            },
            "deferred_string" => match state.data {
                RData::Pairlist(mut cells) if !cells.is_empty() => {
                    let (_, arg) = cells.swap_remove(0);
                    match arg.data {
                        RData::Integer(v) => {
                            RData::Strings(v.iter().map(|x| Some(x.to_string())).collect())
                        }
                        RData::Real(v) => {
                            RData::Strings(v.iter().map(|x| Some(x.to_string())).collect())
                        }
                        other => other,
                    }
                }
                _ => return Err(self.cursor.error("bad deferred_string state")),
            },
            other => {
                return Err(self
                    .cursor
                    .error(format!("unsupported ALTREP class {other:?}")))
            }
        };
        Ok(RValue { data, attributes })
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;

    /// Builds XDR serializations by hand, the way R's `serialize(x, NULL, xdr = TRUE)` lays them out.
    #[derive(Default)]
    pub(crate) struct RWriter {
        pub bytes: Vec<u8>,
    }

    impl RWriter {
        pub fn header(version: i32) -> Self {
            let mut w = RWriter::default();
            w.bytes.extend_from_slice(b"X\n");
            w.int(version);
            w.int(0x0004_0201); // R 4.2.1 wrote it
            w.int(0x0002_0300); // readable by R >= 2.3.0
            if version == 3 {
                w.int(5);
                w.bytes.extend_from_slice(b"UTF-8");
            }
            w
        }
        pub fn int(&mut self, v: i32) -> &mut Self {
            self.bytes.extend_from_slice(&v.to_be_bytes());
            self
        }
        pub fn flags(&mut self, kind: u8, attr: bool, tag: bool) -> &mut Self {
            let mut f = u32::from(kind);
            if attr {
                f |= HAS_ATTR_BIT;
            }
            if tag {
                f |= HAS_TAG_BIT;
            }
            self.int(f as i32)
        }
        pub fn charsxp(&mut self, s: Option<&str>) -> &mut Self {
            match s {
                None => self.flags(CHARSXP, false, false).int(-1),
                Some(s) => {
                    self.int((u32::from(CHARSXP) | (UTF8_MASK << 12)) as i32);
                    self.int(s.len() as i32);
                    self.bytes.extend_from_slice(s.as_bytes());
                    self
                }
            }
        }
        pub fn strsxp(&mut self, items: &[Option<&str>], attr: bool) -> &mut Self {
            self.flags(STRSXP, attr, false).int(items.len() as i32);
            for s in items {
                self.charsxp(*s);
            }
            self
        }
        pub fn intsxp(&mut self, items: &[i32]) -> &mut Self {
            self.flags(INTSXP, false, false).int(items.len() as i32);
            for &v in items {
                self.int(v);
            }
            self
        }
        /// A `names` attribute pairlist; `first_symbol` false writes the tag as a back-reference.
        pub fn names_attr(&mut self, names: &[&str], symbol_ref: Option<i32>) -> &mut Self {
            self.flags(LISTSXP, false, true);
            match symbol_ref {
                None => {
                    self.flags(SYMSXP, false, false).charsxp(Some("names"));
                }
                Some(index) => {
                    self.int(((index as u32) << 8 | u32::from(REFSXP)) as i32);
                }
            }
            let opts: Vec<Option<&str>> = names.iter().map(|n| Some(*n)).collect();
            self.strsxp(&opts, false);
            self.flags(NILVALUE_SXP, false, false)
        }
        pub fn nil(&mut self) -> &mut Self {
            self.flags(NILVALUE_SXP, false, false)
        }
    }

    fn zlib(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(bytes).unwrap();
        enc.finish().unwrap()
    }

    fn origin() -> &'static Path {
        Path::new("test.rds")
    }

    #[test]
    fn decodes_character_vector_with_na_in_both_versions() {
        for version in [2, 3] {
            let mut w = RWriter::header(version);
            w.strsxp(
                &[
                    Some("It is a truth"),
                    None,
                    Some("universally ackn\u{f6}wledged"),
                ],
                false,
            );
            let value = unserialize(&w.bytes, origin()).unwrap();
            assert_eq!(
                value.data,
                RData::Strings(vec![
                    Some("It is a truth".into()),
                    None,
                    Some("universally ackn\u{f6}wledged".into())
                ])
            );
        }
    }

    #[test]
    fn decodes_latin1_marked_strings() {
        let mut w = RWriter::header(2);
        w.flags(STRSXP, false, false).int(1);
        w.int((u32::from(CHARSXP) | (LATIN1_MASK << 12)) as i32)
            .int(3);
        w.bytes.extend_from_slice(&[b'c', 0xe9, b'!']);
        let value = unserialize(&w.bytes, origin()).unwrap();
        assert_eq!(value.data, RData::Strings(vec![Some("c\u{e9}!".into())]));
    }

    #[test]
    fn decodes_named_list_with_symbol_reference() {
        // list(a = "x", b = list(c = 1:2)) : the inner `names` symbol is a back-reference.
        let mut w = RWriter::header(3);
        w.flags(VECSXP, true, false).int(2);
        w.strsxp(&[Some("x")], false);
        w.flags(VECSXP, true, false).int(1);
        w.intsxp(&[1, 2]);
        w.names_attr(&["c"], None); // symbol `names` becomes reference 1
        w.names_attr(&["a", "b"], Some(1));
        let value = unserialize(&w.bytes, origin()).unwrap();
        assert_eq!(value.names().unwrap(), vec!["a", "b"]);
        let inner = value.list_element("b").unwrap();
        assert_eq!(inner.names().unwrap(), vec!["c"]);
        assert_eq!(
            inner.list_element("c").unwrap().data,
            RData::Integer(vec![1, 2])
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let mut w = RWriter::header(3);
        w.flags(VECSXP, true, false).int(2);
        w.strsxp(&[Some("alpha"), None], false);
        w.intsxp(&[7, 8, 9]);
        w.names_attr(&["s", "i"], None);
        let full = w.bytes.clone();
        assert!(unserialize(&full, origin()).is_ok());
        for cut in 0..full.len() {
            let err = unserialize(&full[..cut], origin()).unwrap_err();
            assert!(
                matches!(err, CorpusError::RData { .. }),
                "cut at {cut}: {err}"
            );
        }
    }

    #[test]
    fn huge_declared_lengths_are_refused_before_allocation() {
        let mut w = RWriter::header(2);
        w.flags(STRSXP, false, false).int(i32::MAX);
        let err = unserialize(&w.bytes, origin()).unwrap_err().to_string();
        assert!(err.contains("only 0 remain"), "{err}");
        let mut w = RWriter::header(2);
        w.flags(REALSXP, false, false)
            .int(-1)
            .int(0x7fff_ffff)
            .int(0);
        assert!(unserialize(&w.bytes, origin()).is_err());
    }

    #[test]
    fn garbage_and_unsupported_headers_give_clear_errors() {
        let cases: [(&[u8], &str); 4] = [
            (b"hello world, not R", "not an R serialization"),
            (b"A\n2\n", "ASCII"),
            (&[0xfd, b'7', b'z', b'X', b'Z', 0], "xz/bzip2"),
            (b"", "not an R serialization"),
        ];
        for (bytes, expected) in cases {
            let err = decompress_auto(bytes, origin())
                .and_then(|b| unserialize(&b, origin()))
                .unwrap_err()
                .to_string();
            assert!(err.contains(expected), "{err} lacks {expected}");
        }
        let mut w = RWriter::header(2);
        w.int(200); // not a SEXP type
        let err = unserialize(&w.bytes, origin()).unwrap_err().to_string();
        assert!(err.contains("unknown SEXP type 200"), "{err}");
        let mut w = RWriter::header(9);
        w.nil();
        let err = unserialize(&w.bytes, origin()).unwrap_err().to_string();
        assert!(err.contains("version 9"), "{err}");
    }

    #[test]
    fn deep_nesting_is_capped() {
        let mut w = RWriter::header(2);
        for _ in 0..(MAX_DEPTH + 5) {
            w.flags(VECSXP, false, false).int(1);
        }
        w.nil();
        let err = unserialize(&w.bytes, origin()).unwrap_err().to_string();
        assert!(err.contains("nested deeper"), "{err}");
    }

    #[test]
    fn bad_reference_is_an_error() {
        let mut w = RWriter::header(2);
        w.int(((7u32 << 8) | u32::from(REFSXP)) as i32);
        let err = unserialize(&w.bytes, origin()).unwrap_err().to_string();
        assert!(err.contains("reference 7"), "{err}");
    }

    /// Writes `<dir>/Rdata.rdx` and `<dir>/Rdata.rdb` holding the given character vectors, laid out
    /// as R's `makeLazyLoadDB(compress = TRUE)` does.
    pub(crate) fn write_lazyload_db(dir: &Path, objects: &[(&str, Vec<Option<&str>>)]) {
        let mut rdb = Vec::new();
        let mut keys = Vec::new();
        for (_, strings) in objects {
            let mut w = RWriter::header(3);
            w.strsxp(strings, false);
            let offset = rdb.len() as i32;
            rdb.extend_from_slice(&(w.bytes.len() as u32).to_be_bytes());
            rdb.extend_from_slice(&zlib(&w.bytes));
            keys.push((offset, rdb.len() as i32 - offset));
        }
        let mut w = RWriter::header(3);
        w.flags(VECSXP, true, false).int(3);
        w.flags(VECSXP, true, false).int(objects.len() as i32);
        for (offset, len) in &keys {
            w.intsxp(&[*offset, *len]);
        }
        let names: Vec<&str> = objects.iter().map(|(n, _)| *n).collect();
        w.names_attr(&names, None);
        w.flags(VECSXP, false, false).int(0); // references
        w.flags(LGLSXP, false, false).int(1).int(1); // compressed = TRUE
        w.names_attr(&["variables", "references", "compressed"], Some(1));
        std::fs::write(dir.join("Rdata.rdx"), gzip(&w.bytes)).unwrap();
        std::fs::write(dir.join("Rdata.rdb"), rdb).unwrap();
    }

    #[test]
    fn lazyload_db_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        write_lazyload_db(
            dir.path(),
            &[
                ("emma", vec![Some("EMMA"), Some(""), Some("CHAPTER I")]),
                ("persuasion", vec![Some("PERSUASION"), None]),
            ],
        );
        let db = LazyLoadDb::open(&dir.path().join("Rdata")).unwrap();
        let names: Vec<_> = db.entries().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["emma", "persuasion"]);
        assert_eq!(
            db.read_strings("persuasion").unwrap(),
            vec![Some("PERSUASION".to_string()), None]
        );
        assert_eq!(db.read_strings("emma").unwrap().len(), 3);
        let err = db.read("sanditon").unwrap_err().to_string();
        assert!(
            err.contains("sanditon") && err.contains("emma, persuasion"),
            "{err}"
        );
    }

    #[test]
    fn corrupt_lazyload_records_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        write_lazyload_db(dir.path(), &[("emma", vec![Some("EMMA")])]);
        let rdb_path = dir.path().join("Rdata.rdb");
        let good = std::fs::read(&rdb_path).unwrap();
        // Truncated data file: the record runs past the end.
        std::fs::write(&rdb_path, &good[..good.len() - 3]).unwrap();
        let db = LazyLoadDb::open(&dir.path().join("Rdata.rdx")).unwrap();
        assert!(db
            .read("emma")
            .unwrap_err()
            .to_string()
            .contains("past the end"));
        // Garbage instead of zlib.
        let mut garbage = good.clone();
        for b in &mut garbage[4..] {
            *b = 0x55;
        }
        std::fs::write(&rdb_path, &garbage).unwrap();
        assert!(db
            .read("emma")
            .unwrap_err()
            .to_string()
            .contains("decompression"));
        // Wrong declared length.
        let mut wrong = good.clone();
        wrong[3] ^= 1;
        std::fs::write(&rdb_path, &wrong).unwrap();
        assert!(db
            .read("emma")
            .unwrap_err()
            .to_string()
            .contains("declares"));
        // Truncated and garbage index files.
        let rdx = std::fs::read(dir.path().join("Rdata.rdx")).unwrap();
        std::fs::write(dir.path().join("Rdata.rdx"), &rdx[..rdx.len() / 2]).unwrap();
        assert!(LazyLoadDb::open(&dir.path().join("Rdata")).is_err());
        std::fs::write(dir.path().join("Rdata.rdx"), b"\x1f\x8bnot really gzip").unwrap();
        assert!(LazyLoadDb::open(&dir.path().join("Rdata")).is_err());
        // Missing files name the path.
        let err = LazyLoadDb::open(&dir.path().join("Nothing"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("Nothing.rdx"), "{err}");
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(body in proptest::collection::vec(proptest::num::u8::ANY, 0..200)) {
            let mut w = RWriter::header(3);
            w.bytes.extend_from_slice(&body);
            let _ = unserialize(&w.bytes, origin());
        }
    }
}
