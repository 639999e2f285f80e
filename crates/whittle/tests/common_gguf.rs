//! A GGUF v3 writer for tests (the reader's tests and the Llama tests build their files with it).

#![allow(dead_code)]

use whittle::kernels::ggml::GgmlType;

/// A GGUF v3 writer for tests: metadata as raw (type, bytes), tensors as (name, dims, type,
/// bytes) laid out in order at the given alignment.
pub struct Writer {
    pub kv: Vec<(String, u32, Vec<u8>)>,
    pub tensors: Vec<(String, Vec<u64>, u32, Vec<u8>)>,
    pub alignment: usize,
}

pub fn string(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u64).to_le_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

impl Writer {
    pub fn new() -> Self {
        Self {
            kv: Vec::new(),
            tensors: Vec::new(),
            alignment: 32,
        }
    }

    pub fn kv(mut self, key: &str, ty: u32, value: Vec<u8>) -> Self {
        self.kv.push((key.into(), ty, value));
        self
    }

    pub fn tensor(mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> Self {
        self.tensors
            .push((name.into(), dims.to_vec(), ty.id(), data));
        self
    }

    /// The file, with each tensor's offset computed (or `offsets` forced).
    pub fn bytes_with(&self, offsets: Option<&[u64]>) -> Vec<u8> {
        let mut out = b"GGUF".to_vec();
        out.extend(3u32.to_le_bytes());
        out.extend((self.tensors.len() as u64).to_le_bytes());
        out.extend((self.kv.len() as u64).to_le_bytes());
        for (k, ty, v) in &self.kv {
            out.extend(string(k));
            out.extend(ty.to_le_bytes());
            out.extend(v);
        }
        let mut offset = 0u64;
        let mut placed = Vec::new();
        for (i, (name, dims, ty, data)) in self.tensors.iter().enumerate() {
            out.extend(string(name));
            out.extend((dims.len() as u32).to_le_bytes());
            for d in dims {
                out.extend(d.to_le_bytes());
            }
            out.extend(ty.to_le_bytes());
            let at = offsets.map_or(offset, |o| o[i]);
            out.extend(at.to_le_bytes());
            placed.push(at);
            offset = (offset + data.len() as u64).div_ceil(self.alignment as u64)
                * self.alignment as u64;
        }
        let start = out.len().div_ceil(self.alignment) * self.alignment;
        out.resize(start, 0);
        for ((_, _, _, data), at) in self.tensors.iter().zip(placed) {
            let at = start + at as usize;
            if out.len() < at + data.len() {
                out.resize(at + data.len(), 0);
            }
            out[at..at + data.len()].copy_from_slice(data);
        }
        out
    }

    pub fn bytes(&self) -> Vec<u8> {
        self.bytes_with(None)
    }
}

/// A GGUF string array value (type 9 of type 8).
pub fn strings(items: &[&str]) -> Vec<u8> {
    let mut v = 8u32.to_le_bytes().to_vec();
    v.extend((items.len() as u64).to_le_bytes());
    for t in items {
        v.extend(string(t));
    }
    v
}

/// A GGUF i32 array value (type 9 of type 5).
pub fn i32s(items: &[i32]) -> Vec<u8> {
    let mut v = 5u32.to_le_bytes().to_vec();
    v.extend((items.len() as u64).to_le_bytes());
    for t in items {
        v.extend(t.to_le_bytes());
    }
    v
}

/// Little-endian f32 bytes.
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}
