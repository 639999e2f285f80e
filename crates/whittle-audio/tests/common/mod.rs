//! Helpers shared by the integration tests: a minimal WAV writer and test signals.
#![allow(dead_code)] // each test binary uses a different subset

use std::f64::consts::PI;
use std::path::{Path, PathBuf};

/// How samples are stored in a test WAV.
#[derive(Debug, Clone, Copy)]
pub enum WavEncoding {
    /// Unsigned 8-bit, offset 128.
    U8,
    I16,
    I24,
    I32,
    F32,
    F64,
}

impl WavEncoding {
    pub fn bits(self) -> u16 {
        match self {
            WavEncoding::U8 => 8,
            WavEncoding::I16 => 16,
            WavEncoding::I24 => 24,
            WavEncoding::I32 | WavEncoding::F32 => 32,
            WavEncoding::F64 => 64,
        }
    }

    fn format_tag(self) -> u16 {
        match self {
            WavEncoding::F32 | WavEncoding::F64 => 3, // WAVE_FORMAT_IEEE_FLOAT
            _ => 1,                                   // WAVE_FORMAT_PCM
        }
    }

    /// Worst-case error of a store-then-decode round trip, for samples in [-1, 1).
    pub fn round_trip_tolerance(self) -> f32 {
        match self {
            WavEncoding::F32 | WavEncoding::F64 => 1e-7,
            // Half a quantisation step of a full scale of 2^(bits-1), plus f32 rounding.
            _ => 0.5 / 2f32.powi(i32::from(self.bits()) - 1) + 1e-7,
        }
    }

    /// Stores one sample the way a conforming WAV writer does (full scale 2^(bits-1)).
    fn encode(self, x: f32, out: &mut Vec<u8>) {
        let x = f64::from(x);
        let scaled = |bits: i32| {
            let full = 2f64.powi(bits - 1);
            (x * full).round().clamp(-full, full - 1.0) as i64
        };
        match self {
            WavEncoding::U8 => out.push((scaled(8) + 128) as u8),
            WavEncoding::I16 => out.extend_from_slice(&(scaled(16) as i16).to_le_bytes()),
            WavEncoding::I24 => out.extend_from_slice(&(scaled(24) as i32).to_le_bytes()[..3]),
            WavEncoding::I32 => out.extend_from_slice(&(scaled(32) as i32).to_le_bytes()),
            WavEncoding::F32 => out.extend_from_slice(&(x as f32).to_le_bytes()),
            WavEncoding::F64 => out.extend_from_slice(&x.to_le_bytes()),
        }
    }
}

/// A canonical RIFF/WAVE file of interleaved `samples`.
pub fn wav_bytes(
    samples: &[f32],
    channels: u16,
    sample_rate: u32,
    encoding: WavEncoding,
) -> Vec<u8> {
    let mut data = Vec::new();
    for &x in samples {
        encoding.encode(x, &mut data);
    }
    let bits = encoding.bits();
    let block_align = channels * bits / 8;
    let mut wav = Vec::new();
    wav.extend_from_slice(b"RIFF");
    wav.extend_from_slice(&(36 + data.len() as u32).to_le_bytes());
    wav.extend_from_slice(b"WAVEfmt ");
    wav.extend_from_slice(&16u32.to_le_bytes());
    wav.extend_from_slice(&encoding.format_tag().to_le_bytes());
    wav.extend_from_slice(&channels.to_le_bytes());
    wav.extend_from_slice(&sample_rate.to_le_bytes());
    wav.extend_from_slice(&(sample_rate * u32::from(block_align)).to_le_bytes());
    wav.extend_from_slice(&block_align.to_le_bytes());
    wav.extend_from_slice(&bits.to_le_bytes());
    wav.extend_from_slice(b"data");
    wav.extend_from_slice(&(data.len() as u32).to_le_bytes());
    wav.extend_from_slice(&data);
    wav
}

/// `amplitude * sin(2 pi freq n / rate + phase)` for `n` in `0..len`.
pub fn sine(len: usize, freq_hz: f64, sample_rate: u32, amplitude: f64, phase: f64) -> Vec<f32> {
    (0..len)
        .map(|n| {
            (amplitude * (2.0 * PI * freq_hz * n as f64 / f64::from(sample_rate) + phase).sin())
                as f32
        })
        .collect()
}

/// Writes `bytes` to `name` inside `dir` and returns the path.
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, bytes).expect("write test file");
    path
}

/// Largest absolute difference between two equally long slices.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "length mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Frames per FLAC block in flacenc's default config.
pub const FLAC_BLOCK: usize = 4096;

/// Encodes with flacenc. Use a whole number of [`FLAC_BLOCK`]s: for a shorter last block flacenc
/// writes it as STREAMINFO's minimum block size (the spec excludes the last block), and
/// symphonia's strict sync then rejects the fixed-blocksize frames.
pub fn flac_bytes(
    interleaved: &[i32],
    channels: usize,
    bits: usize,
    sample_rate: usize,
) -> Vec<u8> {
    assert_eq!(interleaved.len() % (channels * FLAC_BLOCK), 0);
    use flacenc::component::BitRepr;
    use flacenc::error::Verify;
    let config = flacenc::config::Encoder::default()
        .into_verified()
        .expect("default FLAC config is valid");
    let source = flacenc::source::MemSource::from_samples(interleaved, channels, bits, sample_rate);
    let stream = flacenc::encode_with_fixed_block_size(&config, source, config.block_size)
        .expect("FLAC encode");
    let mut sink = flacenc::bitsink::ByteSink::new();
    stream.write(&mut sink).expect("serialise FLAC");
    sink.as_slice().to_vec()
}
