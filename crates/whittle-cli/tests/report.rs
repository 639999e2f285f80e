//! `whittle report` on a tiny random model and a small rows file: the figures are valid PNG and
//! SVG, with one bar per layer at its bit width and one marker per row and set where its size and
//! WER put it; bad inputs fail with the file named.

#[path = "../../whittle/tests/common_tiny.rs"]
mod common_tiny;

use std::path::Path;
use std::process::{Command, Output};

use whittle_report::bits::{Role, TERNARY_BITS};
use whittle_report::pareto::set_color_hex;

fn whittle(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(args)
        .output()
        .expect("run whittle")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The attributes of every `<tag .../>` element of an SVG document.
fn elements(svg: &str, tag: &str) -> Vec<std::collections::HashMap<String, String>> {
    svg.split(&format!("<{tag} "))
        .skip(1)
        .map(|rest| {
            let body = &rest[..rest.find('>').unwrap()];
            body.split('"')
                .collect::<Vec<_>>()
                .chunks(2)
                .filter(|kv| kv.len() == 2)
                .map(|kv| {
                    let key = kv[0].trim().trim_end_matches('=').to_string();
                    (key, kv[1].to_string())
                })
                .collect()
        })
        .collect()
}

fn num(e: &std::collections::HashMap<String, String>, key: &str) -> f64 {
    e[key].parse().unwrap()
}

/// Decode a PNG; returns (width, height, RGB bytes).
fn read_png(path: &Path) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// Width and height of an SVG document.
fn svg_size(svg: &str) -> (u32, u32) {
    let root = &elements(svg, "svg")[0];
    (num(root, "width") as u32, num(root, "height") as u32)
}

/// Pixels of exactly `hex` (`#RRGGBB`) in an RGB buffer.
fn pixels_of(rgb: &[u8], hex: &str) -> usize {
    let c: Vec<u8> = (0..3)
        .map(|i| u8::from_str_radix(&hex[1 + 2 * i..3 + 2 * i], 16).unwrap())
        .collect();
    rgb.chunks(3).filter(|px| *px == c.as_slice()).count()
}

/// A bit map for the tiny model: W4 per channel, fc1 W8, fc2 ternary, one layer float.
const BIT_MAP: &str = r#"
default = { bits = 4 }
[layers]
"*.fc1" = { bits = 8 }
"*.fc2" = "ternary"
"encoder.layers.0.self_attn.q_proj" = "float"
"#;

/// Expected (bits drawn, parameters, quantized) per layer of the tiny model in model order.
fn expected_layers() -> Vec<(f64, usize, bool)> {
    let (d, ffn) = (common_tiny::D, common_tiny::FFN);
    let mut out = Vec::new();
    for part in ["encoder", "decoder"] {
        let layers = if part == "encoder" {
            common_tiny::config().encoder_layers
        } else {
            common_tiny::config().decoder_layers
        };
        for i in 0..layers {
            let projections = if part == "encoder" { 4 } else { 8 };
            for j in 0..projections {
                let float = part == "encoder" && i == 0 && j == 0;
                out.push((if float { 16.0 } else { 4.0 }, d * d, !float));
            }
            out.push((8.0, ffn * d, true));
            out.push((TERNARY_BITS, d * ffn, true));
        }
    }
    out.push((16.0, common_tiny::VOCAB * d, false)); // the embedding stays float
    out
}

/// Check one bit chart: valid PNG of the SVG's size with bars in it, and one SVG bar per layer,
/// left to right in model order, each as tall as its bit width.
fn check_bit_chart(png: &Path, svg: &Path) {
    let text = std::fs::read_to_string(svg).unwrap();
    let (w, h, rgb) = read_png(png);
    assert_eq!((w, h), svg_size(&text));
    let role_colors: Vec<String> = [
        Role::SelfAttention,
        Role::CrossAttention,
        Role::FeedForward,
        Role::Embedding,
    ]
    .iter()
    .map(|r| r.color_hex())
    .collect();
    for role in [Role::SelfAttention, Role::FeedForward] {
        assert!(
            pixels_of(&rgb, &role.color_hex()) > 100,
            "{}: no {role:?} bars in the PNG",
            png.display()
        );
    }
    let mut bars: Vec<_> = elements(&text, "rect")
        .into_iter()
        .filter(|e| role_colors.contains(&e["fill"]) || role_colors.contains(&e["stroke"]))
        .collect();
    let expected = expected_layers();
    assert_eq!(bars.len(), expected.len(), "{}: bars", svg.display());
    bars.sort_by(|a, b| num(a, "x").total_cmp(&num(b, "x")));
    let px_per_bit = num(&bars[1], "height") / 4.0; // E0 k: W4
    for (i, (bar, (bits, _, quantized))) in bars.iter().zip(&expected).enumerate() {
        let bits_drawn = num(bar, "height") / px_per_bit;
        assert!(
            (bits_drawn - bits).abs() < 0.15,
            "bar {i}: drawn at {bits_drawn:.2} bits, expected {bits}"
        );
        assert_eq!(
            bar["fill"] != "none",
            *quantized,
            "bar {i}: filled iff quantized"
        );
    }
    // The last bar is the embedding, in its own colour.
    assert_eq!(bars.last().unwrap()["stroke"], Role::Embedding.color_hex());
}

#[test]
fn report_bits_draws_each_layer_at_its_width_from_a_file_and_from_its_bit_map() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    common_tiny::write_hf(&model, &common_tiny::hf_tensors(21));
    let map = dir.path().join("mixed.toml");
    std::fs::write(&map, BIT_MAP).unwrap();
    let file = dir.path().join("tiny-mixed.whittle");
    let o = whittle(&["quantize", p(&model), "--bit-map", p(&map), "-o", p(&file)]);
    assert!(o.status.success(), "{}", stderr(&o));

    let out = dir.path().join("figures");
    let o = whittle(&["report", "bits", p(&file), "-o", p(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_bit_chart(
        &out.join("tiny-mixed.bits.png"),
        &out.join("tiny-mixed.bits.svg"),
    );
    // The title's average: bits x parameters over the quantized layers.
    let (sum, params) = expected_layers()
        .iter()
        .filter(|l| l.2)
        .fold((0.0, 0usize), |(s, n), &(b, p, _)| {
            (s + b * p as f64, n + p)
        });
    let average = format!("{:.2} code bits per quantized weight", sum / params as f64);
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains(&average),
        "expected `{average}` in {stdout}"
    );

    // The same map resolved against the model gives the same chart.
    let o = whittle(&[
        "report",
        "bits",
        p(&map),
        "--model",
        p(&model),
        "-o",
        p(&out),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    check_bit_chart(&out.join("mixed.bits.png"), &out.join("mixed.bits.svg"));
    assert!(String::from_utf8_lossy(&o.stdout).contains(&average));
}

/// Rows: (name, MB, WER on set a, WER on set b, verdict on a, verdict on b).
const ROWS: [(&str, f64, f64, f64, &str, &str); 4] = [
    ("float", 8.0, 0.05, 0.20, "baseline", "baseline"),
    ("w8", 4.0, 0.05, 0.21, "equivalent", "equivalent"),
    ("w4", 2.0, 0.09, 0.26, "worse", "inconclusive"),
    ("w3", 1.5, 0.40, 0.90, "worse", "worse"),
];

#[test]
fn report_pareto_draws_one_marker_per_row_and_set() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<serde_json::Value> = ROWS
        .iter()
        .map(|&(name, mb, a, b, va, vb)| {
            serde_json::json!({
                "name": name, "bytes": (mb * 1e6) as u64, "ratio_vs_fp32": 16.0 / mb,
                "sets": {"a": {"wer": a, "verdict": va}, "b": {"wer": b, "verdict": vb, "p_value": 0.5}}
            })
        })
        .collect();
    let table = dir.path().join("rows.json");
    let doc = serde_json::json!({"baseline": "float", "fp32_bytes": 16_000_000u64, "sets": ["a", "b"], "rows": rows});
    std::fs::write(&table, doc.to_string()).unwrap();
    let out = dir.path().join("figures");
    let o = whittle(&["report", "pareto", p(&table), "-o", p(&out)]);
    assert!(o.status.success(), "{}", stderr(&o));

    let text = std::fs::read_to_string(out.join("rows.pareto.svg")).unwrap();
    let (w, h, rgb) = read_png(&out.join("rows.pareto.png"));
    assert_eq!((w, h), svg_size(&text));
    assert!(
        pixels_of(&rgb, &set_color_hex(1)) > 50,
        "no set-b marks in the PNG"
    );
    let circles = elements(&text, "circle");
    for (k, set) in ["a", "b"].iter().enumerate() {
        let color = set_color_hex(k);
        // Each row: an outer disc in the set's colour; its centre is the colour again when the
        // row is not worse or inconclusive, white otherwise.
        let mut outer: Vec<_> = circles
            .iter()
            .filter(|c| c["fill"] == color && num(c, "r") > 4.0)
            .collect();
        assert_eq!(outer.len(), ROWS.len(), "set {set}: markers");
        let filled = circles
            .iter()
            .filter(|c| c["fill"] == color && num(c, "r") < 4.0)
            .count();
        let lossless = ROWS
            .iter()
            .filter(|r| matches!(if k == 0 { r.4 } else { r.5 }, "baseline" | "equivalent"))
            .count();
        assert_eq!(filled, lossless, "set {set}: filled markers");
        // Left to right by size; higher WER is higher up (smaller y).
        outer.sort_by(|a, b| num(a, "cx").total_cmp(&num(b, "cx")));
        let mut by_size: Vec<_> = ROWS.iter().collect();
        by_size.sort_by(|a, b| a.1.total_cmp(&b.1));
        for pair in outer.windows(2).zip(by_size.windows(2)) {
            let ([a, b], [ra, rb]) = pair else {
                unreachable!()
            };
            let (wa, wb) = if k == 0 { (ra.2, rb.2) } else { (ra.3, rb.3) };
            let (ya, yb) = (num(a, "cy"), num(b, "cy"));
            if wa > wb {
                assert!(ya < yb, "set {set}: {} above {}", ra.0, rb.0);
            } else if wa < wb {
                assert!(ya > yb, "set {set}: {} below {}", ra.0, rb.0);
            }
        }
    }
    assert!(text.contains("\nw3\n"), "points are labelled");
}

#[test]
fn report_refuses_bad_inputs_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("figures");
    let missing = dir.path().join("missing.whittle");
    let o = whittle(&["report", "bits", p(&missing), "-o", p(&out)]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("missing.whittle"), "{}", stderr(&o));

    let map = dir.path().join("map.toml");
    std::fs::write(&map, "default = { bits = 4 }\n").unwrap();
    let o = whittle(&["report", "bits", p(&map), "-o", p(&out)]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("map.toml") && stderr(&o).contains("--model"),
        "{}",
        stderr(&o)
    );

    let empty = dir.path().join("empty.json");
    std::fs::write(&empty, r#"{"sets": ["a"], "rows": []}"#).unwrap();
    let o = whittle(&["report", "pareto", p(&empty), "-o", p(&out)]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("empty.json") && stderr(&o).contains("no rows"),
        "{}",
        stderr(&o)
    );

    let partial = dir.path().join("partial.json");
    std::fs::write(
        &partial,
        r#"{"sets": ["a", "b"], "rows": [{"name": "w4", "bytes": 10, "sets": {"a": {"wer": 0.1}}}]}"#,
    )
    .unwrap();
    let o = whittle(&["report", "pareto", p(&partial), "-o", p(&out)]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("row w4 has no result for set b"),
        "{}",
        stderr(&o)
    );
    assert!(!out.join("partial.pareto.png").exists());
}
