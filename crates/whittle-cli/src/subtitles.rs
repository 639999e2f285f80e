//! `whittle transcribe --format`: text, JSON and subtitle (SubRip, WebVTT) renderings of a
//! timed transcript.
//!
//! SubRip: numbered cues `HH:MM:SS,mmm --> HH:MM:SS,mmm`, a blank line after each. WebVTT: a
//! `WEBVTT` header, then cues `HH:MM:SS.mmm --> HH:MM:SS.mmm` (hours always written, which both
//! formats allow). Times are rounded to the millisecond; segments without text are left out.

use std::path::Path;

use whittle::models::whisper::LongTranscript;

/// An output format of `transcribe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// One line of text per file.
    Txt,
    /// One JSON object per file: text, duration and segments.
    Json,
    /// SubRip subtitles.
    Srt,
    /// WebVTT subtitles.
    Vtt,
}

impl Format {
    /// Parse a `--format` value.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "txt" => Some(Self::Txt),
            "json" => Some(Self::Json),
            "srt" => Some(Self::Srt),
            "vtt" => Some(Self::Vtt),
            _ => None,
        }
    }

    /// File extension of the format.
    pub fn extension(self) -> &'static str {
        match self {
            Self::Txt => "txt",
            Self::Json => "json",
            Self::Srt => "srt",
            Self::Vtt => "vtt",
        }
    }
}

/// `HH:MM:SS` + `separator` + `mmm` of `seconds` (negative times clamp to zero).
pub fn timestamp(seconds: f64, separator: char) -> String {
    let ms = (seconds.max(0.0) * 1000.0).round() as u64;
    let (h, m, s, ms) = (ms / 3_600_000, ms / 60_000 % 60, ms / 1000 % 60, ms % 1000);
    format!("{h:02}:{m:02}:{s:02}{separator}{ms:03}")
}

fn cues(t: &LongTranscript, separator: char, numbered: bool) -> String {
    let mut out = String::new();
    let spoken = t.segments.iter().filter(|s| !s.text.trim().is_empty());
    for (i, s) in spoken.enumerate() {
        if numbered {
            out.push_str(&format!("{}\n", i + 1));
        }
        out.push_str(&format!(
            "{} --> {}\n{}\n\n",
            timestamp(s.start, separator),
            timestamp(s.end, separator),
            s.text.trim()
        ));
    }
    out
}

/// The transcript of `audio` in `format`, ending with a newline.
pub fn render(format: Format, audio: &Path, t: &LongTranscript) -> serde_json::Result<String> {
    Ok(match format {
        Format::Txt => format!("{}\n", t.text),
        Format::Json => {
            let segments: Vec<serde_json::Value> = t
                .segments
                .iter()
                .enumerate()
                .map(|(id, s)| {
                    let mut v = serde_json::to_value(s)?;
                    v["id"] = id.into();
                    Ok(v)
                })
                .collect::<serde_json::Result<_>>()?;
            let doc = serde_json::json!({
                "audio": audio.display().to_string(),
                "duration": t.duration,
                "text": t.text,
                "segments": segments,
            });
            format!("{}\n", serde_json::to_string(&doc)?)
        }
        Format::Srt => cues(t, ',', true),
        Format::Vtt => format!("WEBVTT\n\n{}", cues(t, '.', false)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use whittle::models::whisper::Segment;

    fn segment(start: f64, end: f64, text: &str) -> Segment {
        Segment {
            start,
            end,
            text: text.into(),
            tokens: vec![],
            avg_logprob: -0.25,
            no_speech_prob: 0.01,
            temperature: 0.0,
            compression_ratio: 1.3,
        }
    }

    fn transcript() -> LongTranscript {
        LongTranscript {
            text: "It was the best of times, it was the worst of times.".into(),
            segments: vec![
                segment(0.0, 2.5, " It was the best of times,"),
                segment(2.5, 2.5, "  "),
                segment(62.345, 3723.0004, " it was the worst of times."),
            ],
            window_tokens: vec![],
            duration: 3724.0,
        }
    }

    #[test]
    fn timestamps_use_the_format_separator() {
        assert_eq!(timestamp(62.345, ','), "00:01:02,345");
        assert_eq!(timestamp(62.345, '.'), "00:01:02.345");
        assert_eq!(timestamp(3723.0004, ','), "01:02:03,000");
        assert_eq!(timestamp(0.0005, '.'), "00:00:00.001");
        assert_eq!(timestamp(-1.0, ','), "00:00:00,000");
    }

    #[test]
    fn srt_numbers_cues_and_skips_empty_segments() {
        let srt = render(Format::Srt, Path::new("a.wav"), &transcript()).unwrap();
        assert_eq!(
            srt,
            "1\n00:00:00,000 --> 00:00:02,500\nIt was the best of times,\n\n\
             2\n00:01:02,345 --> 01:02:03,000\nit was the worst of times.\n\n"
        );
    }

    #[test]
    fn vtt_has_header_and_dotted_times() {
        let vtt = render(Format::Vtt, Path::new("a.wav"), &transcript()).unwrap();
        assert_eq!(
            vtt,
            "WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nIt was the best of times,\n\n\
             00:01:02.345 --> 01:02:03.000\nit was the worst of times.\n\n"
        );
    }

    #[test]
    fn json_carries_segment_scores() {
        let json = render(Format::Json, Path::new("a.wav"), &transcript()).unwrap();
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["audio"], "a.wav");
        let segs = v["segments"].as_array().unwrap();
        assert_eq!(segs.len(), 3);
        assert_eq!(segs[2]["id"], 2);
        assert_eq!(segs[2]["start"], 62.345);
        for key in [
            "end",
            "text",
            "avg_logprob",
            "no_speech_prob",
            "temperature",
            "compression_ratio",
        ] {
            assert!(segs[0].get(key).is_some(), "segment lacks {key}");
        }
        assert!(segs[0].get("tokens").is_none());
    }
}
