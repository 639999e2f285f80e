//! Bit maps: which format and bit width each weight gets, by tensor-path globs.
//!
//! A bit map file (TOML, or JSON with the same structure) has a `default` and a `layers` table:
//!
//! ```toml
//! default = { bits = 4, group = 64 }
//! [layers]
//! "decoder.layers.*.fc1" = { bits = 3, group = 64 }
//! "encoder.layers.0.*" = "float"
//! "*.k_proj" = { format = "ternary", group = 64 }
//! ```
//!
//! A rule is `"float"`, `"ternary"` or a table with `format` (`uniform`, `ternary`, `float`;
//! default `uniform`), `bits` (2..=8), `group` (a multiple of 32, or `"channel"` for one scale
//! per output channel, the default), `symmetric` (default true) and, for ternary, `layout`
//! (`"2bit"`, `"1.6bit"` or `"sparse"`). Patterns match a layer's path with or without the leading
//! `model.`. When several patterns match, the most specific one (most literal characters) wins;
//! a tie between different formats is an error, as is a pattern that matches no layer.
//! Layers outside the map (embeddings, positions, norms, the conv stem) stay float, and the
//! resolved map written beside every output says so explicitly.

use std::path::Path;

use globset::{Glob, GlobMatcher};
use serde::Serialize;
use serde_json::Value;
use whittle_kernels::{Granularity, Layout, Scheme};

use crate::error::{Error, Result};

/// What one weight matrix becomes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "format", rename_all = "lowercase")]
pub enum LayerFormat {
    /// Kept in float.
    Float,
    /// Uniform `bits`-bit codes.
    Uniform {
        /// 2..=8.
        bits: u8,
        /// Group length along the input dimension; `None` = one scale per output channel.
        group: Option<usize>,
        /// Symmetric (no zero point) or asymmetric.
        symmetric: bool,
    },
    /// Ternary {-a, 0, +a} (TWN threshold).
    Ternary {
        /// Group length; `None` = per output channel.
        group: Option<usize>,
        /// 1.6 bits per weight (5 trits per byte) rather than 2.
        trits5: bool,
        /// The sparse layout (nonzero masks and sign bits, about `1 + nonzero fraction` bits per
        /// weight), which overrides `trits5`.
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        sparse: bool,
    },
}

impl LayerFormat {
    /// Uniform symmetric `bits` with `group` (or per channel).
    pub fn uniform(bits: u8, group: Option<usize>) -> Self {
        LayerFormat::Uniform {
            bits,
            group,
            symmetric: true,
        }
    }

    /// Granularity of the scales (`None` for float).
    pub fn granularity(self) -> Option<Granularity> {
        let group = match self {
            LayerFormat::Float => return None,
            LayerFormat::Uniform { group, .. } | LayerFormat::Ternary { group, .. } => group,
        };
        Some(group.map_or(Granularity::PerRow, Granularity::Group))
    }

    /// Byte layout of the packed codes (`None` for float).
    pub fn layout(self) -> Option<Layout> {
        match self {
            LayerFormat::Float => None,
            LayerFormat::Ternary { sparse: true, .. } => Some(Layout::TernarySparse),
            LayerFormat::Ternary { trits5: true, .. } => Some(Layout::Trits5),
            LayerFormat::Ternary { .. } => Some(Layout::Bits2),
            LayerFormat::Uniform { bits, .. } => {
                Some(Layout::for_scheme(Scheme::Symmetric { bits }))
            }
        }
    }

    /// Short label such as `W4 g64`, `W8 ch`, `ternary g64 (1.6 bit)`, `float`.
    pub fn label(self) -> String {
        let group = |g: Option<usize>| g.map_or("ch".to_string(), |g| format!("g{g}"));
        match self {
            LayerFormat::Float => "float".into(),
            LayerFormat::Uniform {
                bits,
                group: g,
                symmetric,
            } => format!(
                "W{bits} {}{}",
                group(g),
                if symmetric { "" } else { " asym" }
            ),
            LayerFormat::Ternary {
                group: g,
                trits5,
                sparse,
            } => format!(
                "ternary {}{}",
                group(g),
                if sparse {
                    " (sparse)"
                } else if trits5 {
                    " (1.6 bit)"
                } else {
                    ""
                }
            ),
        }
    }
}

/// `"PATH" = FORMAT` lines of a bit map's `[layers]` table, one per layer, in the syntax
/// [`BitMap::from_value`] reads back (the writers of `compress` and `allocate` share it).
pub fn layers_toml<'a>(layers: impl IntoIterator<Item = (&'a str, LayerFormat)>) -> String {
    let group = |g: Option<usize>| g.map_or("\"channel\"".to_string(), |g| g.to_string());
    let mut out = String::new();
    for (name, format) in layers {
        let value = match format {
            LayerFormat::Float => "\"float\"".to_string(),
            LayerFormat::Uniform {
                bits,
                group: g,
                symmetric,
            } => format!(
                "{{ bits = {bits}, group = {}{} }}",
                group(g),
                if symmetric { "" } else { ", symmetric = false" }
            ),
            LayerFormat::Ternary {
                group: g,
                trits5,
                sparse,
            } => format!(
                "{{ format = \"ternary\", group = {}, layout = \"{}\" }}",
                group(g),
                if sparse {
                    "sparse"
                } else if trits5 {
                    "1.6bit"
                } else {
                    "2bit"
                }
            ),
        };
        let key = serde_json::to_string(name).expect("a string serializes");
        out.push_str(&format!("{key} = {value}\n"));
    }
    out
}

/// One `pattern = format` line of a bit map.
#[derive(Debug, Clone)]
pub struct BitMapRule {
    /// The glob as written.
    pub pattern: String,
    matcher: GlobMatcher,
    /// Literal (non-wildcard) characters: the rule's specificity.
    specificity: usize,
    /// What matching layers become.
    pub format: LayerFormat,
}

/// Characters that make a pattern a glob rather than a literal tensor path.
const GLOB_CHARS: [char; 6] = ['*', '?', '[', ']', '{', '}'];

impl BitMapRule {
    fn new(pattern: &str, glob: &Glob, format: LayerFormat) -> Self {
        Self {
            pattern: pattern.to_string(),
            matcher: glob.compile_matcher(),
            specificity: pattern.chars().filter(|c| !GLOB_CHARS.contains(c)).count(),
            format,
        }
    }

    /// Whether the pattern names one path, without wildcards.
    fn is_literal(&self) -> bool {
        self.specificity == self.pattern.chars().count()
    }

    fn matches(&self, name: &str) -> bool {
        self.matcher.is_match(name)
            || self
                .matcher
                .is_match(name.strip_prefix("model.").unwrap_or(name))
    }
}

/// A per-layer precision specification.
#[derive(Debug, Clone)]
pub struct BitMap {
    /// Format of layers no rule matches; `None` makes such layers an error.
    pub default: Option<LayerFormat>,
    /// Glob rules.
    pub rules: Vec<BitMapRule>,
    /// Where the map came from (file path or `--bits`), for messages.
    pub source: String,
}

/// The format chosen for one layer, and why.
#[derive(Debug, Clone, Serialize)]
pub struct ResolvedLayer {
    /// Tensor path of the layer.
    pub name: String,
    /// Its format.
    pub format: LayerFormat,
    /// The pattern that chose it, `None` for the default.
    pub rule: Option<String>,
}

impl BitMap {
    /// Every layer gets `format`.
    pub fn uniform(format: LayerFormat) -> Self {
        Self {
            default: Some(format),
            rules: Vec::new(),
            source: format!("uniform {}", format.label()),
        }
    }

    /// Adds the rule `pattern = format` (as a `[layers]` line would).
    pub fn with_rule(mut self, pattern: &str, format: LayerFormat) -> Result<Self> {
        let glob =
            Glob::new(pattern).map_err(|e| Error::config(pattern, format!("invalid glob: {e}")))?;
        self.rules.push(BitMapRule::new(pattern, &glob, format));
        self.source = format!("{} + {pattern} = {}", self.source, format.label());
        Ok(self)
    }

    /// Read a `.toml` or `.json` bit map file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let source = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let value: Value = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text).map_err(|e| Error::config(&source, e.to_string()))?
        } else {
            toml::from_str(&text).map_err(|e| Error::config(&source, e.to_string()))?
        };
        Self::from_value(&value, &source)
    }

    /// Build from parsed TOML/JSON; `source` names it in errors.
    pub fn from_value(value: &Value, source: &str) -> Result<Self> {
        let bad = |field: &str, msg: String| Error::config(format!("{source}: {field}"), msg);
        let table = value.as_object().ok_or_else(|| {
            bad(
                "(top level)",
                "expected a table with `default` and `layers`".into(),
            )
        })?;
        for key in table.keys() {
            if key != "default" && key != "layers" {
                return Err(bad(
                    key,
                    "unknown key (expected `default` or `layers`)".into(),
                ));
            }
        }
        let default = table
            .get("default")
            .map(|v| parse_format(v, &format!("{source}: default")))
            .transpose()?;
        let mut rules = Vec::new();
        if let Some(layers) = table.get("layers") {
            let layers = layers
                .as_object()
                .ok_or_else(|| bad("layers", "expected a table of `\"glob\" = format`".into()))?;
            for (pattern, v) in layers {
                let field = format!("{source}: layers.\"{pattern}\"");
                let glob = Glob::new(pattern)
                    .map_err(|e| Error::config(&field, format!("invalid glob: {e}")))?;
                rules.push(BitMapRule::new(pattern, &glob, parse_format(v, &field)?));
            }
        }
        if default.is_none() && rules.is_empty() {
            return Err(bad(
                "(top level)",
                "the bit map has neither `default` nor `layers`".into(),
            ));
        }
        Ok(Self {
            default,
            rules,
            source: source.to_string(),
        })
    }

    /// The format of each of `layers` (tensor paths of the quantizable layers). Layers in
    /// `explicit_only` (the tied token embedding) are chosen only by a rule that names them
    /// without wildcards; the default and glob rules leave them float.
    pub fn resolve(&self, layers: &[String], explicit_only: &[&str]) -> Result<Vec<ResolvedLayer>> {
        let is_explicit_only = |name: &str| explicit_only.contains(&name);
        let applies = |rule: &BitMapRule, name: &str| {
            rule.matches(name) && (rule.is_literal() || !is_explicit_only(name))
        };
        // A pattern that matches nothing is most likely a typo.
        for rule in &self.rules {
            if !layers.iter().any(|n| applies(rule, n)) {
                return Err(Error::config(
                    format!("{}: layers.\"{}\"", self.source, rule.pattern),
                    "matches no quantizable layer (see `whittle inspect MODEL` for tensor paths; \
                     the token embedding is matched only by its exact path)",
                ));
            }
        }
        let mut resolved = Vec::with_capacity(layers.len());
        for name in layers {
            let matching: Vec<usize> = (0..self.rules.len())
                .filter(|&i| applies(&self.rules[i], name))
                .collect();
            let best = matching.iter().map(|&i| self.rules[i].specificity).max();
            let winners: Vec<usize> = matching
                .iter()
                .copied()
                .filter(|&i| Some(self.rules[i].specificity) == best)
                .collect();
            if let Some((&first, rest)) = winners.split_first() {
                if let Some(&other) = rest
                    .iter()
                    .find(|&&i| self.rules[i].format != self.rules[first].format)
                {
                    return Err(Error::config(
                        &self.source,
                        format!(
                            "layer {name}: patterns \"{}\" and \"{}\" are equally specific but give different formats",
                            self.rules[first].pattern, self.rules[other].pattern
                        ),
                    ));
                }
                resolved.push(ResolvedLayer {
                    name: name.clone(),
                    format: self.rules[first].format,
                    rule: Some(self.rules[first].pattern.clone()),
                });
            } else if is_explicit_only(name) {
                resolved.push(ResolvedLayer {
                    name: name.clone(),
                    format: LayerFormat::Float,
                    rule: None,
                });
            } else {
                let format = self.default.ok_or_else(|| {
                    Error::config(
                        &self.source,
                        format!("layer {name} matches no pattern and the bit map has no `default`"),
                    )
                })?;
                resolved.push(ResolvedLayer {
                    name: name.clone(),
                    format,
                    rule: None,
                });
            }
        }
        Ok(resolved)
    }
}

/// Parse one rule's value; `field` names it in errors.
fn parse_format(value: &Value, field: &str) -> Result<LayerFormat> {
    let bad = |msg: String| Error::config(field, msg);
    if let Some(s) = value.as_str() {
        return match s {
            "float" => Ok(LayerFormat::Float),
            "ternary" => Ok(LayerFormat::Ternary {
                group: None,
                trits5: false,
                sparse: false,
            }),
            other => Err(bad(format!(
                "unknown format \"{other}\" (expected \"float\", \"ternary\" or a table such as {{ bits = 4, group = 64 }})"
            ))),
        };
    }
    let table = value
        .as_object()
        .ok_or_else(|| bad("expected \"float\", \"ternary\" or a table".into()))?;
    for key in table.keys() {
        if !matches!(
            key.as_str(),
            "format" | "bits" | "group" | "symmetric" | "layout"
        ) {
            return Err(bad(format!(
                "unknown field `{key}` (expected format, bits, group, symmetric, layout)"
            )));
        }
    }
    let kind = match table.get("format") {
        None => "uniform",
        Some(v) => v
            .as_str()
            .ok_or_else(|| bad("`format` must be a string".into()))?,
    };
    let group = match table.get("group") {
        None => None,
        Some(Value::String(s)) if s == "channel" => None,
        Some(v) => {
            let g = v.as_u64().ok_or_else(|| {
                bad("`group` must be a positive multiple of 32 or \"channel\"".into())
            })?;
            let g = usize::try_from(g).map_err(|_| bad(format!("`group` {g} is too large")))?;
            Granularity::Group(g)
                .validate()
                .map_err(|e| bad(format!("`group`: {e}")))?;
            Some(g)
        }
    };
    let reject = |key: &str, why: &str| -> Result<()> {
        if table.contains_key(key) {
            Err(bad(format!("`{key}` {why}")))
        } else {
            Ok(())
        }
    };
    match kind {
        "float" => {
            for key in ["bits", "group", "symmetric", "layout"] {
                reject(key, "does not apply to format \"float\"")?;
            }
            Ok(LayerFormat::Float)
        }
        "ternary" => {
            reject("bits", "does not apply to ternary (use `layout`)")?;
            reject("symmetric", "does not apply to ternary")?;
            let (trits5, sparse) = match table.get("layout").map(|v| v.as_str()) {
                None | Some(Some("2bit")) => (false, false),
                Some(Some("1.6bit")) => (true, false),
                Some(Some("sparse")) => (false, true),
                _ => {
                    return Err(bad(
                        "`layout` must be \"2bit\", \"1.6bit\" or \"sparse\"".into()
                    ))
                }
            };
            Ok(LayerFormat::Ternary {
                group,
                trits5,
                sparse,
            })
        }
        "uniform" => {
            reject("layout", "applies to ternary only")?;
            let bits = table
                .get("bits")
                .ok_or_else(|| bad("missing `bits` (2..=8)".into()))?
                .as_u64()
                .filter(|b| (2..=8).contains(b))
                .ok_or_else(|| bad("`bits` must be an integer from 2 to 8".into()))?;
            let symmetric = match table.get("symmetric") {
                None => true,
                Some(v) => v
                    .as_bool()
                    .ok_or_else(|| bad("`symmetric` must be true or false".into()))?,
            };
            Ok(LayerFormat::Uniform {
                bits: bits as u8,
                group,
                symmetric,
            })
        }
        other => Err(bad(format!(
            "unknown format \"{other}\" (expected uniform, ternary or float)"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names() -> Vec<String> {
        [
            "model.encoder.layers.0.self_attn.k_proj",
            "model.encoder.layers.0.fc1",
            "model.decoder.layers.0.fc1",
            "model.decoder.layers.1.fc1",
            "model.decoder.layers.1.self_attn.k_proj",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    fn map(text: &str) -> Result<BitMap> {
        let value: Value = toml::from_str(text).unwrap();
        BitMap::from_value(&value, "test.toml")
    }

    #[test]
    fn most_specific_rule_wins_and_default_fills_the_rest() {
        let m = map(r#"
            default = { bits = 4, group = 64 }
            [layers]
            "decoder.layers.*.fc1" = { bits = 3, group = 64 }
            "decoder.layers.1.fc1" = "float"
            "*.k_proj" = { format = "ternary", group = 64, layout = "1.6bit" }
        "#)
        .unwrap();
        let r = m.resolve(&names(), &[]).unwrap();
        let formats: Vec<_> = r.iter().map(|l| l.format.label()).collect();
        assert_eq!(
            formats,
            [
                "ternary g64 (1.6 bit)",
                "W4 g64",
                "W3 g64",
                "float",
                "ternary g64 (1.6 bit)"
            ]
        );
        assert_eq!(r[1].rule, None);
        assert_eq!(r[3].rule.as_deref(), Some("decoder.layers.1.fc1"));
    }

    #[test]
    fn token_embedding_is_quantized_only_when_named_exactly() {
        const EMBED: &str = "model.decoder.embed_tokens";
        let mut layers = names();
        layers.push(EMBED.to_string());
        let format_of_embedding = |text: &str| {
            map(text)
                .and_then(|m| m.resolve(&layers, &[EMBED]))
                .map(|r| r.last().unwrap().format.label())
        };
        assert_eq!(
            format_of_embedding("default = { bits = 4 }").unwrap(),
            "float"
        );
        assert_eq!(
            format_of_embedding("default = { bits = 4 }\n[layers]\n\"*\" = { bits = 3 }").unwrap(),
            "float"
        );
        assert_eq!(
            format_of_embedding(
                "default = { bits = 4 }\n[layers]\n\"decoder.embed_tokens\" = { bits = 8, group = 64 }"
            )
            .unwrap(),
            "W8 g64"
        );
        // A glob that could only reach the embedding matches nothing.
        let err =
            format_of_embedding("default = { bits = 4 }\n[layers]\n\"*.embed_*\" = { bits = 8 }")
                .unwrap_err()
                .to_string();
        assert!(err.contains("exact path"), "{err}");
        let cli = BitMap::uniform(LayerFormat::uniform(4, Some(64)))
            .with_rule("decoder.embed_tokens", LayerFormat::uniform(8, None))
            .unwrap();
        let r = cli.resolve(&layers, &[EMBED]).unwrap();
        assert_eq!(r.last().unwrap().format.label(), "W8 ch");
        assert_eq!(r[0].format.label(), "W4 g64");
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            ("default = { bits = 9 }", "default", "from 2 to 8"),
            ("default = { bits = 4, group = 48 }", "default", "group"),
            ("default = { bit = 4 }", "default", "unknown field `bit`"),
            ("defaults = { bits = 4 }", "defaults", "unknown key"),
            (
                "[layers]\n\"x.*\" = { bits = 4 }",
                "layers.\"x.*\"",
                "matches no",
            ),
            (
                "[layers]\n\"*.fc1\" = \"int4\"",
                "layers.\"*.fc1\"",
                "unknown format",
            ),
            (
                "[layers]\n\"*.fc1\" = { format = \"float\", bits = 4 }",
                "layers.\"*.fc1\"",
                "does not apply",
            ),
            (
                "[layers]\n\"*.fc1\" = { bits = 4 }",
                "test.toml",
                "no `default`",
            ),
        ];
        for (text, field, message) in cases {
            let err = map(text)
                .and_then(|m| m.resolve(&names(), &[]))
                .unwrap_err()
                .to_string();
            assert!(err.contains(field), "{text}: `{err}` does not name {field}");
            assert!(
                err.contains(message),
                "{text}: `{err}` does not say {message}"
            );
        }
    }

    #[test]
    fn equally_specific_conflicting_rules_are_refused() {
        let m = map(r#"
            [layers]
            "decoder.layers.0.*" = { bits = 4 }
            "*oder.layers.0.fc1" = { bits = 3 }
            "*" = "float"
        "#)
        .unwrap();
        // Both have 17 literal characters and match decoder.layers.0.fc1.
        let err = m.resolve(&names(), &[]).unwrap_err().to_string();
        assert!(err.contains("equally specific"), "{err}");
    }
}
