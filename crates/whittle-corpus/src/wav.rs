//! A tolerant reader for the RIFF/WAVE files TTS engines write.
//!
//! Engines that stream to a pipe (`espeak-ng --stdout`) cannot seek back to fill in chunk sizes,
//! so they write placeholders such as `0x7fffffff`; this reader walks the chunks (Microsoft RIFF
//! WAVE layout: `RIFF` size `WAVE`, then `fmt ` and `data` chunks), and a `data` chunk that
//! claims more bytes than the file holds is read to the end of the file. Integer PCM of 8, 16, 24
//! and 32 bits and 32-bit float are accepted; channels are averaged to mono.

use crate::error::{CorpusError, Result};

/// Mono samples in [-1, 1] and their rate.
#[derive(Debug, Clone, PartialEq)]
pub struct Wave {
    /// Samples per second.
    pub sample_rate: u32,
    /// Mono samples in [-1, 1].
    pub samples: Vec<f32>,
}

/// Parses a WAV file's bytes; `origin` names it in errors.
pub fn parse_wav(bytes: &[u8], origin: &str) -> Result<Wave> {
    let bad = |reason: &str| CorpusError::BadWav {
        origin: origin.to_string(),
        reason: reason.to_string(),
    };
    if bytes.len() < 12 || &bytes[0..4] != b"RIFF" || &bytes[8..12] != b"WAVE" {
        return Err(bad("not a RIFF/WAVE file"));
    }
    let mut pos = 12;
    let mut format: Option<(u16, u16, u32, u16)> = None;
    while pos + 8 <= bytes.len() {
        let id = &bytes[pos..pos + 4];
        let declared = u32::from_le_bytes([
            bytes[pos + 4],
            bytes[pos + 5],
            bytes[pos + 6],
            bytes[pos + 7],
        ]) as usize;
        let body_start = pos + 8;
        let body_end = body_start.saturating_add(declared).min(bytes.len());
        let body = &bytes[body_start..body_end];
        match id {
            b"fmt " => {
                if body.len() < 16 {
                    return Err(bad("fmt chunk shorter than 16 bytes"));
                }
                let le16 = |i: usize| u16::from_le_bytes([body[i], body[i + 1]]);
                let mut tag = le16(0);
                let channels = le16(2);
                let rate = u32::from_le_bytes([body[4], body[5], body[6], body[7]]);
                let bits = le16(14);
                if tag == 0xfffe && body.len() >= 26 {
                    tag = le16(24); // WAVE_FORMAT_EXTENSIBLE: sub-format GUID starts with the tag
                }
                format = Some((tag, channels, rate, bits));
            }
            b"data" => {
                let (tag, channels, rate, bits) =
                    format.ok_or_else(|| bad("data chunk before fmt chunk"))?;
                return decode_pcm(body, tag, channels, rate, bits).map_err(|r| bad(&r));
            }
            _ => {}
        }
        // Chunks are padded to even sizes.
        pos = body_start
            .saturating_add(declared)
            .saturating_add(declared & 1);
    }
    Err(bad("no data chunk"))
}

fn decode_pcm(
    body: &[u8],
    tag: u16,
    channels: u16,
    rate: u32,
    bits: u16,
) -> std::result::Result<Wave, String> {
    if channels == 0 {
        return Err("zero channels".into());
    }
    if rate == 0 || rate > 384_000 {
        return Err(format!("implausible sample rate {rate}"));
    }
    let width = usize::from(bits / 8);
    let decode: fn(&[u8]) -> f32 = match (tag, bits) {
        (1, 8) => |b| (f32::from(b[0]) - 128.0) / 128.0,
        (1, 16) => |b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0,
        (1, 24) => |b| (i32::from_le_bytes([0, b[0], b[1], b[2]]) >> 8) as f32 / 8_388_608.0,
        (1, 32) => |b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f32 / 2_147_483_648.0,
        (3, 32) => |b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        _ => {
            return Err(format!(
                "unsupported sample format (tag {tag}, {bits} bits)"
            ))
        }
    };
    let frame = width * usize::from(channels);
    let samples = body
        .chunks_exact(frame)
        .map(|f| f.chunks_exact(width).map(decode).sum::<f32>() / f32::from(channels))
        .collect();
    Ok(Wave {
        sample_rate: rate,
        samples,
    })
}

/// Writes 16-bit mono PCM WAV bytes (used by tests and for debugging).
pub fn write_wav_i16(samples: &[i16], sample_rate: u32) -> Vec<u8> {
    let data_len = (samples.len() * 2) as u32;
    let mut out = Vec::with_capacity(44 + samples.len() * 2);
    out.extend_from_slice(b"RIFF");
    out.extend_from_slice(&(36 + data_len).to_le_bytes());
    out.extend_from_slice(b"WAVEfmt ");
    out.extend_from_slice(&16u32.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&sample_rate.to_le_bytes());
    out.extend_from_slice(&(sample_rate * 2).to_le_bytes());
    out.extend_from_slice(&2u16.to_le_bytes());
    out.extend_from_slice(&16u16.to_le_bytes());
    out.extend_from_slice(b"data");
    out.extend_from_slice(&data_len.to_le_bytes());
    for s in samples {
        out.extend_from_slice(&s.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_streamed_wav_with_placeholder_sizes() {
        let mut bytes = write_wav_i16(&[0, 16384, -16384, 32767], 22050);
        bytes[4..8].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        bytes[40..44].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        bytes.push(0x12); // half a sample at the end is ignored
        let wave = parse_wav(&bytes, "espeak-ng").unwrap();
        assert_eq!(wave.sample_rate, 22050);
        assert_eq!(wave.samples, vec![0.0, 0.5, -0.5, 32767.0 / 32768.0]);
    }

    #[test]
    fn rejects_garbage() {
        for bytes in [
            &b""[..],
            b"RIFF\0\0\0\0WAVE",
            b"hello world, not a wav file",
        ] {
            assert!(parse_wav(bytes, "x").is_err());
        }
        let mut bytes = write_wav_i16(&[1, 2], 16000);
        bytes[20] = 7; // unknown format tag
        let err = parse_wav(&bytes, "flite").unwrap_err().to_string();
        assert!(err.contains("flite") && err.contains("tag 7"), "{err}");
    }
}
