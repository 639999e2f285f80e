//! FLAC output at 16 kHz, 16-bit mono (the LibriSpeech format), through the `flacenc` encoder,
//! and a reader for the STREAMINFO block (FLAC format specification, RFC 9639 section 8.2) used
//! to check finished files when a run resumes.

use flacenc::component::BitRepr;
use flacenc::error::Verify;

use crate::error::{CorpusError, Result};

/// The corpus sample rate.
pub const SAMPLE_RATE: u32 = 16_000;

/// Converts [-1, 1] floats to 16-bit PCM (clamped, rounded to nearest).
pub fn to_i16(samples: &[f32]) -> Vec<i16> {
    samples
        .iter()
        .map(|&s| (s.clamp(-1.0, 1.0) * 32767.0).round() as i16)
        .collect()
}

/// Encodes 16 kHz 16-bit mono PCM as a FLAC file. `utterance` names it in errors.
pub fn encode_flac(pcm: &[i16], utterance: &str) -> Result<Vec<u8>> {
    let fail = |reason: String| CorpusError::Flac {
        utterance: utterance.to_string(),
        reason,
    };
    let mut config = flacenc::config::Encoder::default();
    // Utterances are encoded in parallel already; one thread each keeps the pool in charge.
    config.multithread = false;
    let config = config
        .into_verified()
        .map_err(|(_, err)| fail(format!("encoder configuration: {err:?}")))?;
    let samples: Vec<i32> = pcm.iter().map(|&s| i32::from(s)).collect();
    let source = flacenc::source::MemSource::from_samples(&samples, 1, 16, SAMPLE_RATE as usize);
    let stream = flacenc::encode_with_fixed_block_size(&config, source, config.block_size)
        .map_err(|err| fail(format!("{err:?}")))?;
    let mut sink = flacenc::bitsink::ByteSink::new();
    stream
        .write(&mut sink)
        .map_err(|err| fail(format!("{err:?}")))?;
    let mut bytes = sink.as_slice().to_vec();
    fix_min_block_size(&mut bytes, config.block_size, pcm.len());
    Ok(bytes)
}

/// flacenc records a short last block as STREAMINFO's minimum block size, which the format
/// excludes ("the minimum block size ... excluding the last block"); strict decoders such as
/// symphonia then reject the fixed-blocksize frames. Writes the true minimum.
fn fix_min_block_size(bytes: &mut [u8], block_size: usize, total_samples: usize) {
    if bytes.len() < 12 || &bytes[0..4] != b"fLaC" {
        return;
    }
    let min_block = block_size.min(total_samples).clamp(16, 65535) as u16;
    bytes[8..10].copy_from_slice(&min_block.to_be_bytes());
}

/// What a FLAC file's STREAMINFO block says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlacInfo {
    /// Samples per second.
    pub sample_rate: u32,
    /// Channel count.
    pub channels: u8,
    /// Bits per sample.
    pub bits_per_sample: u8,
    /// Samples per channel in the whole stream.
    pub total_samples: u64,
}

impl FlacInfo {
    /// Duration in seconds.
    pub fn duration_s(&self) -> f64 {
        self.total_samples as f64 / f64::from(self.sample_rate.max(1))
    }
}

/// Reads STREAMINFO from the start of a FLAC file; `None` if the bytes are not FLAC.
pub fn flac_info(bytes: &[u8]) -> Option<FlacInfo> {
    if bytes.len() < 42 || &bytes[0..4] != b"fLaC" || bytes[4] & 0x7f != 0 {
        return None;
    }
    let block_len = u32::from_be_bytes([0, bytes[5], bytes[6], bytes[7]]);
    if block_len != 34 {
        return None;
    }
    let info = &bytes[8..42];
    let mut packed = [0u8; 8];
    packed.copy_from_slice(&info[10..18]);
    let bits = u64::from_be_bytes(packed);
    Some(FlacInfo {
        sample_rate: (bits >> 44) as u32,
        channels: ((bits >> 41) & 0x7) as u8 + 1,
        bits_per_sample: ((bits >> 36) & 0x1f) as u8 + 1,
        total_samples: bits & 0xf_ffff_ffff,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_decodable_16k_mono_flac() {
        let pcm: Vec<i16> = (0..20_000)
            .map(|i| ((i as f32 * 0.01).sin() * 12_000.0) as i16)
            .collect();
        let bytes = encode_flac(&pcm, "u1").unwrap();
        let info = flac_info(&bytes).unwrap();
        assert_eq!(
            info,
            FlacInfo {
                sample_rate: 16_000,
                channels: 1,
                bits_per_sample: 16,
                total_samples: 20_000
            }
        );
        assert!(bytes.len() < pcm.len() * 2, "FLAC should compress a sine");
        // Lossless: decoding gives back the same samples.
        let decoded =
            whittle_audio::decode_bytes(bytes.clone(), std::path::Path::new("u1.flac")).unwrap();
        assert_eq!(decoded.sample_rate, 16_000);
        let back: Vec<i16> = decoded
            .samples
            .iter()
            .map(|&s| (s * 32768.0).round() as i16)
            .collect();
        assert_eq!(back, pcm);
        // Deterministic.
        assert_eq!(encode_flac(&pcm, "u1").unwrap(), bytes);
    }

    #[test]
    fn flac_info_rejects_other_bytes() {
        assert!(flac_info(b"RIFF....WAVE").is_none());
        assert!(flac_info(b"fLaC").is_none());
    }

    #[test]
    fn to_i16_clamps_and_rounds() {
        assert_eq!(to_i16(&[0.0, 1.5, -2.0, 0.5]), [0, 32767, -32767, 16384]);
    }
}
