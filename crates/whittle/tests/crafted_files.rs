//! Crafted and truncated model files give errors that name the problem, never panics.

mod common_tiny;

use candle_core::Device;
use common_tiny::*;
use whittle::checkpoint::ct2::Ct2File;
use whittle::model_dir::WhisperCheckpoint;

fn valid_model_bin() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    write_ct2(dir.path(), &hf_tensors(1), true);
    std::fs::read(dir.path().join("model.bin")).unwrap()
}

fn open_bytes(bytes: &[u8]) -> Result<Ct2File, whittle::Error> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.bin");
    std::fs::write(&path, bytes).unwrap();
    Ct2File::open(&path)
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = valid_model_bin();
    assert!(open_bytes(&bytes).is_ok());
    // Cut at many points, including inside headers and inside data.
    let step = (bytes.len() / 400).max(1);
    for cut in (0..bytes.len())
        .step_by(step)
        .chain([1, 2, 3, 5, 7, bytes.len() - 1])
    {
        let err = open_bytes(&bytes[..cut])
            .err()
            .unwrap_or_else(|| panic!("truncation at {cut} accepted"));
        let msg = err.to_string();
        assert!(msg.contains("model.bin"), "error must name the file: {msg}");
    }
}

fn patch_u32(bytes: &mut [u8], at: usize, v: u32) {
    bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

#[test]
fn crafted_headers_are_refused() {
    let bytes = valid_model_bin();
    // Wrong version.
    let mut b = bytes.clone();
    patch_u32(&mut b, 0, 7);
    assert!(open_bytes(&b)
        .err()
        .unwrap()
        .to_string()
        .contains("version 7"));
    // Spec name: u16 len at 4, then "WhisperSpec\0" (12 bytes), revision, n_vars.
    let n_vars_at = 4 + 2 + 12 + 4;
    let mut b = bytes.clone();
    patch_u32(&mut b, n_vars_at, u32::MAX);
    assert!(open_bytes(&b)
        .err()
        .unwrap()
        .to_string()
        .contains("variables"));
    // First variable: name length, name, rank, dims.
    let name_len = u16::from_le_bytes([bytes[n_vars_at + 4], bytes[n_vars_at + 5]]) as usize;
    let rank_at = n_vars_at + 4 + 2 + name_len;
    let mut b = bytes.clone();
    b[rank_at] = 200;
    assert!(open_bytes(&b)
        .err()
        .unwrap()
        .to_string()
        .contains("rank 200"));
    // A huge dimension must not allocate: it fails the byte-length check.
    let mut b = bytes.clone();
    patch_u32(&mut b, rank_at + 1, u32::MAX);
    let msg = open_bytes(&b).err().unwrap().to_string();
    assert!(
        msg.contains("does not match") || msg.contains("overflow"),
        "{msg}"
    );
    // Unknown dtype code.
    let rank = bytes[rank_at] as usize;
    let dtype_at = rank_at + 1 + 4 * rank;
    let mut b = bytes.clone();
    b[dtype_at] = 42;
    assert!(open_bytes(&b)
        .err()
        .unwrap()
        .to_string()
        .contains("dtype code 42"));
    // Byte length pointing past the end.
    let mut b = bytes.clone();
    patch_u32(&mut b, dtype_at + 1, u32::MAX - 3);
    assert!(open_bytes(&b).is_err());
    // Trailing garbage.
    let mut b = bytes.clone();
    b.extend_from_slice(b"junk");
    assert!(open_bytes(&b).is_err());
}

#[test]
fn random_bytes_never_panic() {
    let mut state = 12345u64;
    for len in [0usize, 1, 4, 17, 64, 300, 4096] {
        for _ in 0..20 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1);
                    (state >> 56) as u8
                })
                .collect();
            let _ = open_bytes(&bytes);
            let mut with_version = bytes.clone();
            if with_version.len() >= 4 {
                with_version[..4].copy_from_slice(&6u32.to_le_bytes());
                let _ = open_bytes(&with_version);
            }
        }
    }
}

#[test]
fn non_whisper_spec_is_refused_by_name() {
    let dir = tempfile::tempdir().unwrap();
    write_ct2(dir.path(), &hf_tensors(1), true);
    let mut bytes = std::fs::read(dir.path().join("model.bin")).unwrap();
    bytes[6..6 + 11].copy_from_slice(b"WhisperSpuc");
    std::fs::write(dir.path().join("model.bin"), &bytes).unwrap();
    let err = WhisperCheckpoint::open(dir.path(), &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("WhisperSpuc"), "{err}");
}

/// Issue 17: a CTranslate2 variable the configuration is read from, stored without dimensions
/// (rank 0), is refused by name instead of panicking on `[0]`.
#[test]
fn rank_zero_shape_variables_are_refused_by_name() {
    for (hf, ct2) in [
        (
            "model.decoder.embed_tokens.weight",
            "decoder/embeddings/weight",
        ),
        (
            "model.encoder.layers.0.fc1.weight",
            "encoder/layer_0/ffn/linear_0/weight",
        ),
        (
            "model.decoder.layers.0.fc1.weight",
            "decoder/layer_0/ffn/linear_0/weight",
        ),
        (
            "model.decoder.embed_positions.weight",
            "decoder/position_encodings/encodings",
        ),
        (
            "model.encoder.embed_positions.weight",
            "encoder/position_encodings/encodings",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut tensors = hf_tensors(1);
        tensors.insert(
            hf.into(),
            candle_core::Tensor::new(1f32, &Device::Cpu).unwrap(),
        );
        write_ct2(dir.path(), &tensors, true);
        let err = WhisperCheckpoint::open(dir.path(), &Device::Cpu)
            .err()
            .unwrap_or_else(|| panic!("{ct2} of rank 0 was accepted"))
            .to_string();
        assert!(err.contains(ct2) && err.contains("[]"), "{ct2}: {err}");
    }
}
