//! The `.whittle` container: round trips are exact, and crafted or truncated files give errors
//! that name the file (and the tensor), never panics.

use std::path::{Path, PathBuf};

use proptest::prelude::*;
use serde_json::{json, Value};
use whittle::packed_file::{
    keys, FloatDtype, PackedFile, PackedFileWriter, TensorKind, ALIGN, MAX_HEADER_LEN, MAX_RANK,
    MAX_TENSORS, PREFIX_LEN,
};
use whittle_kernels::{Granularity, Layout, PackedMatrix, TernaryQuantizer, UniformQuantizer};

/// Deterministic pseudo-random weights in [-1, 1) (xorshift; tests need no `rand`).
fn weights(seed: u64, n: usize) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Packed matrices covering every layout, scheme and granularity, with odd shapes and tails.
fn packed_cases() -> Vec<(&'static str, PackedMatrix)> {
    let uniform = |sym: bool, bits, granularity, rows, cols, seed| {
        let quantizer = if sym {
            UniformQuantizer::symmetric(bits, granularity)
        } else {
            UniformQuantizer::asymmetric(bits, granularity)
        };
        let q = quantizer
            .unwrap()
            .quantize(&weights(seed, rows * cols), rows, cols)
            .unwrap();
        PackedMatrix::pack(&q)
    };
    let ternary = |granularity, layout, rows, cols, seed| {
        let q = TernaryQuantizer { granularity }
            .quantize(&weights(seed, rows * cols), rows, cols)
            .unwrap();
        PackedMatrix::pack_with(&q, layout).unwrap()
    };
    vec![
        (
            "enc.fc1.sym4_g64",
            uniform(true, 4, Granularity::Group(64), 12, 128, 1),
        ),
        (
            "enc.fc2.asym3_g32_tail",
            uniform(false, 3, Granularity::Group(32), 7, 100, 2),
        ),
        (
            "dec.q.sym8_row",
            uniform(true, 8, Granularity::PerRow, 5, 64, 3),
        ),
        (
            "dec.k.sym2_tensor",
            uniform(true, 2, Granularity::PerTensor, 3, 96, 4),
        ),
        (
            "dec.v.asym5_g128",
            uniform(false, 5, Granularity::Group(128), 4, 200, 5),
        ),
        (
            "dec.o.sym6_g64",
            uniform(true, 6, Granularity::Group(64), 9, 70, 6),
        ),
        (
            "dec.fc1.ternary_trits5",
            ternary(Granularity::Group(64), Layout::Trits5, 6, 130, 7),
        ),
        (
            "dec.fc2.ternary_bits2_row",
            ternary(Granularity::PerRow, Layout::Bits2, 4, 33, 8),
        ),
        (
            "dec.fc2.ternary_sparse_g64",
            ternary(Granularity::Group(64), Layout::TernarySparse, 5, 100, 9),
        ),
    ]
}

fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
        .collect()
}

fn f32_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A writer with two float tensors, every packed case and a full header.
fn sample_writer() -> PackedFileWriter {
    let mut writer = PackedFileWriter::new("whisper");
    writer
        .set_header_field(keys::CONFIG, json!({"d_model": 64, "encoder_layers": 1}))
        .unwrap()
        .set_header_field(keys::TOKENIZER, json!("{\"model\": {\"type\": \"BPE\"}}"))
        .unwrap()
        .set_header_field(
            keys::EXTRA,
            json!({"generation_config": {"max_length": 448}}),
        )
        .unwrap()
        .set_header_field(keys::BIT_MAP, json!({"default": {"bits": 4, "group": 64}}))
        .unwrap()
        .set_header_field(keys::RECIPE, Value::Null)
        .unwrap()
        .set_header_field(keys::PROVENANCE, json!({"source": "tiny", "tool": "test"}))
        .unwrap()
        .set_header_field(keys::RESULTS, Value::Null)
        .unwrap();
    writer
        .add_float(
            "enc.conv1.weight",
            &[8, 3, 3],
            FloatDtype::F32,
            &f32_bytes(&weights(10, 72)),
        )
        .unwrap();
    writer
        .add_float(
            "enc.ln.bias",
            &[5],
            FloatDtype::F16,
            &f16_bytes(&weights(11, 5)),
        )
        .unwrap();
    for (name, matrix) in packed_cases() {
        writer.add_packed(name, &matrix).unwrap();
    }
    writer
}

fn valid_file_bytes() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.whittle");
    sample_writer().write(&path).unwrap();
    std::fs::read(path).unwrap()
}

fn open_bytes(bytes: &[u8]) -> Result<PackedFile, whittle::Error> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.whittle");
    std::fs::write(&path, bytes).unwrap();
    PackedFile::open(&path)
}

/// The error message for `bytes`, checking that it names the file.
fn open_error(bytes: &[u8]) -> String {
    let msg = match open_bytes(bytes) {
        Ok(_) => panic!("crafted file accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        msg.contains("model.whittle"),
        "error must name the file: {msg}"
    );
    msg
}

fn header_len_of(bytes: &[u8]) -> usize {
    u64::from_le_bytes(bytes[16..24].try_into().unwrap()) as usize
}

fn data_start_of(bytes: &[u8]) -> usize {
    (PREFIX_LEN + header_len_of(bytes)).div_ceil(ALIGN) * ALIGN
}

/// Rebuilds a file with an edited JSON header and the same data section.
fn with_header(bytes: &[u8], edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    let header_len = header_len_of(bytes);
    let mut header: Value =
        serde_json::from_slice(&bytes[PREFIX_LEN..PREFIX_LEN + header_len]).unwrap();
    edit(&mut header);
    let json = serde_json::to_vec(&header).unwrap();
    let mut out = bytes[..16].to_vec();
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(&json);
    out.resize((PREFIX_LEN + json.len()).div_ceil(ALIGN) * ALIGN, 0);
    out.extend_from_slice(&bytes[data_start_of(bytes)..]);
    out
}

/// A file made of the prefix, `json` and padding, with no data section.
fn file_with_json(json: &[u8]) -> Vec<u8> {
    let mut out = b"WHITTLE\0".to_vec();
    out.extend_from_slice(&1u32.to_le_bytes());
    out.extend_from_slice(&0u32.to_le_bytes());
    out.extend_from_slice(&(json.len() as u64).to_le_bytes());
    out.extend_from_slice(json);
    out.resize((PREFIX_LEN + json.len()).div_ceil(ALIGN) * ALIGN, 0);
    out
}

/// Edits the table entry of tensor `name`.
fn with_entry(bytes: &[u8], name: &str, edit: impl FnOnce(&mut Value)) -> Vec<u8> {
    with_header(bytes, |header| {
        let entry = header["tensors"]
            .as_array_mut()
            .unwrap()
            .iter_mut()
            .find(|e| e["name"] == name)
            .unwrap();
        edit(entry);
    })
}

#[test]
fn round_trip_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.whittle");
    let written = sample_writer().write(&path).unwrap();
    assert_eq!(written, std::fs::metadata(&path).unwrap().len());

    let file = PackedFile::open(&path).unwrap();
    assert_eq!(file.file_size(), written);
    assert_eq!(file.architecture(), "whisper");
    assert_eq!(
        file.header_field(keys::CONFIG),
        Some(&json!({"d_model": 64, "encoder_layers": 1}))
    );
    assert_eq!(file.header_field(keys::RECIPE), Some(&Value::Null));
    assert_eq!(
        file.header_field(keys::PROVENANCE).unwrap()["source"],
        "tiny"
    );

    let conv = file.float("enc.conv1.weight").unwrap();
    assert_eq!(conv.bytes, &f32_bytes(&weights(10, 72))[..]);
    assert_eq!(
        (conv.dtype, conv.shape),
        (FloatDtype::F32, &[8usize, 3, 3][..])
    );
    assert_eq!(conv.to_f32_vec(), weights(10, 72));
    let ln = file.float("enc.ln.bias").unwrap();
    assert_eq!(ln.bytes, &f16_bytes(&weights(11, 5))[..]);
    assert_eq!(ln.dtype, FloatDtype::F16);
    assert_eq!(
        ln.bytes.as_ptr() as usize % ALIGN,
        0,
        "float data must be 64-byte aligned in memory"
    );

    let cases = packed_cases();
    let names: Vec<&str> = file.tensor_names().collect();
    let expected: Vec<&str> = ["enc.conv1.weight", "enc.ln.bias"]
        .into_iter()
        .chain(cases.iter().map(|c| c.0))
        .collect();
    assert_eq!(names, expected);
    for (name, original) in &cases {
        let packed = file.packed(name).unwrap();
        assert_eq!(packed, original.as_ref(), "{name}");
        for ptr in [
            packed.codes.as_ptr() as usize,
            packed.scales.as_ptr() as usize,
        ] {
            assert_eq!(ptr % ALIGN, 0, "{name}: section not 64-byte aligned");
        }
        assert_eq!(
            packed.dequantize().unwrap(),
            original.dequantize(),
            "{name}"
        );
    }
}

#[test]
fn summaries_report_format_bits_and_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.whittle");
    sample_writer().write(&path).unwrap();
    let file = PackedFile::open(&path).unwrap();
    let summaries = file.summaries();
    assert_eq!(summaries.len(), 2 + packed_cases().len());
    let conv = &summaries[0];
    assert_eq!(
        (conv.kind, conv.format.as_str(), conv.bytes),
        (TensorKind::Float, "f32", 72 * 4)
    );
    assert_eq!(conv.bits_per_weight, 32.0);
    assert_eq!(summaries[1].bits_per_weight, 16.0);
    for (summary, (name, matrix)) in summaries[2..].iter().zip(packed_cases()) {
        assert_eq!(summary.name, name);
        assert_eq!(summary.kind, TensorKind::Packed);
        assert_eq!(summary.shape, [matrix.rows(), matrix.cols()]);
        let format = matrix.format();
        let expected_bytes = matrix.stored_bytes() as u64;
        assert_eq!(summary.bytes, expected_bytes, "{name}");
        if let Some(bytes) = format.total_bytes(matrix.rows(), matrix.cols()) {
            assert_eq!(bytes as u64, expected_bytes, "{name}");
        }
        assert_eq!(
            summary.bits_per_weight,
            expected_bytes as f64 * 8.0 / (matrix.rows() * matrix.cols()) as f64
        );
    }
    let labels: Vec<&str> = summaries[2..].iter().map(|s| s.format.as_str()).collect();
    assert_eq!(
        labels,
        [
            "sym4 g64",
            "asym3 g32",
            "sym8 row",
            "sym2 tensor",
            "asym5 g128",
            "sym6 g64",
            "ternary g64 trits5",
            "ternary row",
            "ternary g64 ternary-sparse"
        ]
    );
}

#[test]
fn empty_file_round_trips() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("empty.whittle");
    let size = PackedFileWriter::new("whisper").write(&path).unwrap();
    assert_eq!(size % ALIGN as u64, 0);
    let file = PackedFile::open(&path).unwrap();
    assert_eq!(file.tensor_names().count(), 0);
    assert!(file.summaries().is_empty());
}

#[test]
fn accessors_name_missing_and_mismatched_tensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.whittle");
    sample_writer().write(&path).unwrap();
    let file = PackedFile::open(&path).unwrap();
    let msg = file.packed("nope").unwrap_err().to_string();
    assert!(
        msg.contains("model.whittle") && msg.contains("nope"),
        "{msg}"
    );
    let msg = file.packed("enc.ln.bias").unwrap_err().to_string();
    assert!(msg.contains("enc.ln.bias") && msg.contains("f16"), "{msg}");
    let msg = file.float("enc.fc1.sym4_g64").unwrap_err().to_string();
    assert!(
        msg.contains("enc.fc1.sym4_g64") && msg.contains("sym4 g64"),
        "{msg}"
    );
}

#[test]
fn every_truncation_is_an_error() {
    let bytes = valid_file_bytes();
    assert!(open_bytes(&bytes).is_ok());
    let data_start = data_start_of(&bytes);
    // Every cut in the prefix, header and padding, then many cuts through the data.
    let cuts = (0..data_start + 1)
        .chain((data_start..bytes.len()).step_by(7))
        .chain([bytes.len() - 1]);
    for cut in cuts {
        open_error(&bytes[..cut]);
    }
}

#[test]
fn trailing_bytes_are_refused() {
    let mut bytes = valid_file_bytes();
    bytes.extend_from_slice(&[0; 3]);
    assert!(open_error(&bytes).contains("follow the last tensor"));
}

#[test]
fn crafted_prefixes_are_refused() {
    let bytes = valid_file_bytes();
    let patch = |at: usize, value: &[u8]| {
        let mut b = bytes.clone();
        b[at..at + value.len()].copy_from_slice(value);
        b
    };
    assert!(open_error(&patch(0, b"GGUF")).contains("magic"));
    assert!(open_error(&patch(8, &2u32.to_le_bytes())).contains("version 2"));
    assert!(open_error(&patch(12, &1u32.to_le_bytes())).contains("flags"));
    assert!(open_error(&patch(16, &u64::MAX.to_le_bytes())).contains("cap"));
    assert!(open_error(&patch(16, &(MAX_HEADER_LEN + 1).to_le_bytes())).contains("cap"));
    let past_end = (bytes.len() as u64).to_le_bytes();
    assert!(open_error(&patch(16, &past_end)).contains("past the end"));
    // Shorter header length: the JSON is cut, or the padding is not zero.
    let header_len = header_len_of(&bytes) as u64;
    open_error(&patch(16, &(header_len - 1).to_le_bytes()));
    // Non-zero padding between the header and the data.
    let pad_at = PREFIX_LEN + header_len as usize;
    if pad_at < data_start_of(&bytes) {
        assert!(open_error(&patch(pad_at, &[1])).contains("padding"));
    }
    assert!(open_error(&with_header(&bytes, |h| *h = json!([1, 2]))).contains("not a JSON object"));
    assert!(open_error(&with_header(&bytes, |h| h["tensors"] = json!({}))).contains("tensors"));
    assert!(
        open_error(&with_header(&bytes, |h| h["architecture"] = json!(3))).contains("architecture")
    );
    // Deep nesting hits serde_json's recursion limit instead of overflowing the stack.
    let depth = 10_000;
    let deep = format!(
        r#"{{"architecture":"whisper","tensors":[],"extra":{}{}}}"#,
        "[".repeat(depth),
        "]".repeat(depth)
    );
    assert!(open_error(&file_with_json(deep.as_bytes())).contains("recursion"));
}

#[test]
fn too_many_tensors_are_refused_before_parsing_them() {
    let bytes = valid_file_bytes();
    let crafted = with_header(&bytes, |h| {
        h["tensors"] = Value::Array(vec![json!(0); MAX_TENSORS + 1])
    });
    assert!(open_error(&crafted).contains("cap"));
}

#[test]
fn crafted_float_entries_are_refused() {
    let bytes = valid_file_bytes();
    let name = "enc.conv1.weight";
    let refused = |edit: &dyn Fn(&mut Value), expect: &str| {
        let msg = open_error(&with_entry(&bytes, name, edit));
        assert!(msg.contains(name), "error must name the tensor: {msg}");
        assert!(msg.contains(expect), "expected `{expect}` in: {msg}");
    };
    refused(&|e| e["offset"] = json!(1u64 << 40), "past the");
    refused(&|e| e["offset"] = json!(u64::MAX - 63), "past the"); // offset + nbytes overflows
    refused(&|e| e["offset"] = json!((u64::MAX / 64) * 64), "past the");
    refused(&|e| e["nbytes"] = json!(u64::MAX), "past the");
    refused(&|e| e["offset"] = json!(8), "not a multiple of 64");
    refused(&|e| e["nbytes"] = json!(72 * 4 - 4), "needs 288");
    refused(&|e| e["shape"] = json!([8, 3, 4]), "needs 384");
    refused(&|e| e["shape"] = json!([u64::MAX, u64::MAX]), "overflows");
    refused(&|e| e["shape"] = json!(vec![1; MAX_RANK + 1]), "rank");
    refused(&|e| e["dtype"] = json!("f64"), "unknown variant");
    refused(&|e| e["kind"] = json!("sparse"), "unknown kind");
    refused(&|e| e["surprise"] = json!(1), "unknown field");
    refused(&|e| e["offset"] = json!(-64), "expected u64");
    // A nameless entry is named by its position.
    let msg = open_error(&with_entry(&bytes, name, |e| e["name"] = json!(null)));
    assert!(msg.contains("tensor #0"), "{msg}");
    let msg = open_error(&with_entry(&bytes, name, |e| e["name"] = json!("")));
    assert!(msg.contains("name must be"), "{msg}");
}

#[test]
fn duplicate_and_overlapping_tensors_are_refused() {
    let bytes = valid_file_bytes();
    let msg = open_error(&with_entry(&bytes, "enc.ln.bias", |e| {
        e["name"] = json!("enc.conv1.weight")
    }));
    assert!(
        msg.contains("more than once") && msg.contains("enc.conv1.weight"),
        "{msg}"
    );
    // Point the f16 vector at the start of the f32 one: both in range, aligned, overlapping.
    let msg = open_error(&with_entry(&bytes, "enc.ln.bias", |e| {
        e["offset"] = json!(0)
    }));
    assert!(
        msg.contains("overlaps") && msg.contains("enc.conv1.weight"),
        "{msg}"
    );
}

#[test]
fn packed_sections_inconsistent_with_the_format_are_refused() {
    let bytes = valid_file_bytes();
    let sym = "enc.fc1.sym4_g64"; // 12 x 128, g64 -> codes 12 * 64 bytes, 24 scales
    let asym = "enc.fc2.asym3_g32_tail";
    let refused = |name: &str, edit: &dyn Fn(&mut Value), expect: &str| {
        let msg = open_error(&with_entry(&bytes, name, edit));
        assert!(msg.contains(name), "error must name the tensor: {msg}");
        assert!(msg.contains(expect), "expected `{expect}` in: {msg}");
    };
    refused(sym, &|e| e["codes"]["nbytes"] = json!(12 * 64 - 1), "codes");
    refused(sym, &|e| e["scales"]["nbytes"] = json!(46), "scales");
    refused(sym, &|e| e["scales"]["nbytes"] = json!(47), "scale");
    refused(sym, &|e| e["rows"] = json!(13), "does not hold");
    refused(
        sym,
        &|e| {
            e["rows"] = json!(6);
            e["shape"] = json!([6, 128])
        },
        "codes",
    );
    refused(sym, &|e| e["format"]["bits"] = json!(5), "cannot hold");
    refused(
        sym,
        &|e| {
            e["format"]["bits"] = json!(3);
            e["format"]["layout"] = json!("bits3")
        },
        "codes",
    );
    refused(sym, &|e| e["format"]["group"] = json!(32), "scales");
    refused(sym, &|e| e["format"]["group"] = json!(33), "multiple");
    refused(sym, &|e| e["format"]["group"] = json!(0), "multiple");
    refused(sym, &|e| e["format"]["bits"] = json!(9), "outside");
    refused(
        sym,
        &|e| e["format"]["scheme"] = json!("log"),
        "unknown scheme",
    );
    refused(
        sym,
        &|e| e["format"]["layout"] = json!("bits7"),
        "unknown layout",
    );
    refused(
        sym,
        &|e| e["format"]["granularity"] = json!("per_row"),
        "takes no `group`",
    );
    refused(
        sym,
        &|e| e["format"]["scheme"] = json!("ternary"),
        "no `bits`",
    );
    refused(
        sym,
        &|e| e["zero_points"] = e["scales"].clone(),
        "zero_points",
    );
    refused(asym, &|e| e["zero_points"] = json!(null), "zero_points");
    refused(
        asym,
        &|e| e["zero_points"]["nbytes"] = json!(1),
        "zero_points",
    );
    refused(
        sym,
        &|e| e["codes"]["offset"] = json!(1u64 << 50),
        "past the",
    );
    refused(
        sym,
        &|e| e["scales"]["offset"] = json!(64 * 1000 + 32),
        "not a multiple",
    );
    refused(sym, &|e| e["rows"] = json!(0), "does not hold");
    refused(
        sym,
        &|e| {
            e["rows"] = json!(0);
            e["shape"] = json!([0, 128])
        },
        "empty",
    );
}

#[test]
fn random_bytes_are_refused() {
    let mut state = 0x1234_5678_9abc_def0u64;
    for round in 0..300 {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = (state >> 33) as usize % 4096;
        let mut bytes: Vec<u8> = weights(state, len)
            .iter()
            .map(|w| (w * 127.0) as i8 as u8)
            .collect();
        // Half the rounds start with a valid prefix so parsing gets past the magic.
        if round % 2 == 0 && bytes.len() >= PREFIX_LEN {
            bytes[..8].copy_from_slice(b"WHITTLE\0");
            bytes[8..16].copy_from_slice(&[1, 0, 0, 0, 0, 0, 0, 0]);
        }
        open_error(&bytes);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    /// Any single corrupted byte gives a result or an error, never a panic; a corrupted prefix or
    /// header is always refused or still parses to the same tensors.
    #[test]
    fn corrupted_files_never_panic(position in any::<prop::sample::Index>(), value in any::<u8>()) {
        let bytes = valid_file();
        let mut corrupted = bytes.to_vec();
        let at = position.index(corrupted.len());
        corrupted[at] = value;
        if let Ok(file) = open_bytes(&corrupted) {
            for name in file.tensor_names().map(str::to_string).collect::<Vec<_>>() {
                match file.tensor(&name).unwrap().data {
                    whittle::packed_file::TensorData::Float { .. } => {
                        file.float(&name).unwrap();
                    }
                    whittle::packed_file::TensorData::Packed { .. } => {
                        file.packed(&name).unwrap().dequantize().unwrap();
                    }
                }
            }
        }
    }
}

fn valid_file() -> &'static [u8] {
    static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    BYTES.get_or_init(valid_file_bytes)
}

fn leftover_temporaries(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".tmp"))
        .collect()
}

fn refusal(result: whittle::Result<&mut PackedFileWriter>) -> String {
    result.err().expect("refused").to_string()
}

#[test]
fn writer_refuses_bad_tensors() {
    let mut writer = PackedFileWriter::new("whisper");
    writer
        .add_float("a", &[2], FloatDtype::F32, &[0; 8])
        .unwrap();
    assert!(
        refusal(writer.add_float("a", &[2], FloatDtype::F32, &[0; 8])).contains("already added")
    );
    assert!(refusal(writer.add_float("", &[2], FloatDtype::F32, &[0; 8])).contains("name must be"));
    assert!(refusal(writer.add_float("b", &[3], FloatDtype::F32, &[0; 8])).contains("needs 12"));
    assert!(
        refusal(writer.add_float("b", &[usize::MAX, 4], FloatDtype::F16, &[]))
            .contains("overflows")
    );
    assert!(
        refusal(writer.add_float("b", &[1; MAX_RANK + 1], FloatDtype::F16, &[0; 2]))
            .contains("rank")
    );
    let (_, matrix) = packed_cases().remove(0);
    assert!(refusal(writer.add_packed_with_shape("c", &[5, 5], &matrix)).contains("does not hold"));
    assert!(writer.set_header_field(keys::TENSORS, json!([])).is_err());
    assert!(writer
        .set_header_field(keys::ARCHITECTURE, json!(1))
        .is_err());
    // Refused additions leave the writer as it was.
    assert_eq!(writer.len(), 1);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.whittle");
    writer.write(&path).unwrap();
    assert_eq!(
        PackedFile::open(&path)
            .unwrap()
            .tensor_names()
            .collect::<Vec<_>>(),
        ["a"]
    );
}

#[test]
fn failed_writes_leave_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    // The destination is a folder: the whole file is written to the temporary sibling, then the
    // rename fails; the temporary must be removed and the folder left alone.
    let dest = dir.path().join("model.whittle");
    std::fs::create_dir(&dest).unwrap();
    std::fs::write(dest.join("keep"), b"x").unwrap();
    let msg = sample_writer().write(&dest).unwrap_err().to_string();
    assert!(msg.contains("model.whittle"), "{msg}");
    assert!(dest.is_dir() && dest.join("keep").exists());
    assert_eq!(leftover_temporaries(dir.path()), Vec::<PathBuf>::new());

    // The parent is a regular file: nothing can be created.
    let blocker = dir.path().join("blocker");
    std::fs::write(&blocker, b"x").unwrap();
    assert!(sample_writer()
        .write(&blocker.join("model.whittle"))
        .is_err());
    assert_eq!(std::fs::read(&blocker).unwrap(), b"x");

    // A successful write replaces an existing file whole.
    let path = dir.path().join("replace.whittle");
    std::fs::write(&path, b"old contents").unwrap();
    let size = sample_writer().write(&path).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), size);
    assert!(PackedFile::open(&path).is_ok());
    assert_eq!(leftover_temporaries(dir.path()), Vec::<PathBuf>::new());
}

#[test]
fn layout_is_as_documented() {
    let bytes = valid_file_bytes();
    assert_eq!(&bytes[..8], b"WHITTLE\0");
    assert_eq!(u32::from_le_bytes(bytes[8..12].try_into().unwrap()), 1);
    assert_eq!(u32::from_le_bytes(bytes[12..16].try_into().unwrap()), 0);
    let data_start = data_start_of(&bytes);
    let header: Value =
        serde_json::from_slice(&bytes[PREFIX_LEN..PREFIX_LEN + header_len_of(&bytes)]).unwrap();
    let conv = &header["tensors"][0];
    assert_eq!(conv["kind"], "float");
    assert_eq!(conv["offset"], 0);
    // The first tensor's bytes are the first bytes of the data section.
    assert_eq!(
        &bytes[data_start..data_start + 4],
        &weights(10, 1)[0].to_le_bytes()
    );
    let packed = &header["tensors"][2];
    assert_eq!(
        packed["format"],
        json!({"scheme": "symmetric", "bits": 4, "granularity": "group", "group": 64, "layout": "bits4"})
    );
    assert_eq!(packed["zero_points"], Value::Null);
    let ternary = &header["tensors"][8];
    assert_eq!(
        ternary["format"],
        json!({"scheme": "ternary", "granularity": "group", "group": 64, "layout": "trits5"})
    );
    for entry in header["tensors"].as_array().unwrap() {
        for offset in [
            &entry["offset"],
            &entry["codes"]["offset"],
            &entry["scales"]["offset"],
        ] {
            if let Some(offset) = offset.as_u64() {
                assert_eq!(offset % ALIGN as u64, 0);
            }
        }
    }
}
