//! Text-to-speech engines run as child processes: espeak-ng, flite, festival (`text2wave`),
//! mbrola (through espeak-ng's `mb-*` voices) and pico (`pico2wave`).
//!
//! A [`Voice`] is written `engine:name`, for example `espeak-ng:en-gb-scotland+f2`, `flite:slt`,
//! `festival:slt-hts`, `mbrola:us1`, `pico:en-GB`. [`Engines::probe`] checks, before any work,
//! that every program and voice a run needs is installed (the engines themselves fall back to a
//! default voice silently, so this cannot be left to them) and records each engine's version and
//! Debian package version for `corpus.json`. A missing program or voice is a
//! [`CorpusError::EngineMissing`] / [`CorpusError::VoiceMissing`] naming the package to install.
//!
//! Speed and pitch map onto each engine's own controls:
//! - espeak-ng and mbrola: `-s` words per minute (175 x speed) and `-p` pitch (0-99, 50 + 7.5 per
//!   semitone);
//! - flite: `--setf duration_stretch=1/speed` and `--setf int_f0_target_mean=` the voice's mean F0
//!   shifted by the semitones;
//! - festival: `(Parameter.set 'Duration_Stretch 1/speed)`; its voices have no pitch control here;
//! - pico: neither (pico2wave has no options for them).
//!
//! Each call writes its text to a file in a private working directory, lets the engine write a WAV
//! file there, and is killed after [`ENGINE_TIMEOUT`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{CorpusError, IoContext, Result};
use crate::wav::{parse_wav, Wave};

/// How long one engine call may run before it is killed.
pub const ENGINE_TIMEOUT: Duration = Duration::from_secs(120);

/// A TTS engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Engine {
    /// espeak-ng (formant synthesis).
    EspeakNg,
    /// CMU flite (diphone and clustergen voices).
    Flite,
    /// festival through `text2wave` (diphone and HTS voices).
    Festival,
    /// mbrola diphone voices driven by espeak-ng.
    Mbrola,
    /// SVOX pico through `pico2wave`.
    Pico,
}

impl Engine {
    /// All engines.
    pub const ALL: [Engine; 5] = [
        Engine::EspeakNg,
        Engine::Flite,
        Engine::Festival,
        Engine::Mbrola,
        Engine::Pico,
    ];

    /// The name used in voice specifications.
    pub fn name(self) -> &'static str {
        match self {
            Engine::EspeakNg => "espeak-ng",
            Engine::Flite => "flite",
            Engine::Festival => "festival",
            Engine::Mbrola => "mbrola",
            Engine::Pico => "pico",
        }
    }

    /// The Debian package that provides the engine's program.
    pub fn debian_package(self) -> &'static str {
        match self {
            Engine::EspeakNg => "espeak-ng",
            Engine::Flite => "flite",
            Engine::Festival => "festival",
            Engine::Mbrola => "mbrola",
            Engine::Pico => "libttspico-utils",
        }
    }

    fn from_name(name: &str) -> Option<Engine> {
        Engine::ALL.into_iter().find(|e| e.name() == name)
    }
}

/// One voice of one engine.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Voice {
    /// The engine that speaks it.
    pub engine: Engine,
    /// The engine's own voice name: `en-us+m3`, `slt`, `slt-hts`, `us1`, `en-US`.
    pub name: String,
}

/// flite voices shipped by Debian's `flite` package, with the mean F0 (Hz) pitch shifts start from.
const FLITE_VOICES: [(&str, f64); 5] = [
    ("kal", 100.0),
    ("kal16", 100.0),
    ("awb", 110.0),
    ("rms", 100.0),
    ("slt", 170.0),
];

/// festival voices: (short name, festival voice, Debian package).
const FESTIVAL_VOICES: [(&str, &str, &str); 3] = [
    ("kal", "kal_diphone", "festvox-kallpc16k"),
    ("ked", "ked_diphone", "festvox-kdlpc16k"),
    ("slt-hts", "cmu_us_slt_arctic_hts", "festvox-us-slt-hts"),
];

const MBROLA_VOICES: [&str; 4] = ["us1", "us2", "us3", "en1"];
const PICO_LANGUAGES: [&str; 2] = ["en-US", "en-GB"];

impl Voice {
    /// A voice from its engine and name (not checked against what is installed).
    pub fn new(engine: Engine, name: &str) -> Self {
        Voice {
            engine,
            name: name.to_string(),
        }
    }

    /// `engine:name`.
    pub fn spec(&self) -> String {
        format!("{}:{}", self.engine.name(), self.name)
    }

    /// The Debian package that provides this voice (the engine's package if the voice is built in).
    pub fn debian_package(&self) -> String {
        match self.engine {
            Engine::Festival => FESTIVAL_VOICES
                .iter()
                .find(|(short, _, _)| *short == self.name)
                .map(|(_, _, package)| package.to_string())
                .unwrap_or_else(|| "festival".into()),
            Engine::Mbrola => format!("mbrola-{}", self.name),
            engine => engine.debian_package().to_string(),
        }
    }

    /// Whether the engine can shift this voice's pitch.
    pub fn has_pitch_control(&self) -> bool {
        matches!(
            self.engine,
            Engine::EspeakNg | Engine::Mbrola | Engine::Flite
        )
    }

    /// Whether the engine can change this voice's speed.
    pub fn has_speed_control(&self) -> bool {
        self.engine != Engine::Pico
    }
}

impl fmt::Display for Voice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.spec())
    }
}

impl FromStr for Voice {
    type Err = CorpusError;

    fn from_str(spec: &str) -> Result<Self> {
        let bad = |reason: String| CorpusError::BadVoice {
            spec: spec.to_string(),
            reason,
        };
        let (engine, name) = spec
            .split_once(':')
            .ok_or_else(|| bad("expected engine:voice, e.g. flite:slt".into()))?;
        let engine = Engine::from_name(engine).ok_or_else(|| {
            bad(format!(
                "unknown engine {engine:?} (known: espeak-ng, flite, festival, mbrola, pico)"
            ))
        })?;
        let known = match engine {
            Engine::EspeakNg => {
                let valid = !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '_'));
                return if valid {
                    Ok(Voice::new(engine, name))
                } else {
                    Err(bad(format!("bad espeak-ng voice name {name:?}")))
                };
            }
            Engine::Flite => FLITE_VOICES.iter().map(|(v, _)| *v).collect::<Vec<_>>(),
            Engine::Festival => FESTIVAL_VOICES.iter().map(|(v, _, _)| *v).collect(),
            Engine::Mbrola => MBROLA_VOICES.to_vec(),
            Engine::Pico => PICO_LANGUAGES.to_vec(),
        };
        if known.contains(&name) {
            Ok(Voice::new(engine, name))
        } else {
            Err(bad(format!(
                "unknown {} voice {name:?} (known: {})",
                engine.name(),
                known.join(", ")
            )))
        }
    }
}

/// Per-utterance prosody.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Prosody {
    /// Speaking-rate factor (1 = the engine's default).
    pub speed: f64,
    /// Pitch shift in semitones (0 = the voice's default).
    pub pitch_semitones: f64,
}

/// Where the engine programs are. Bare names are looked up on `PATH`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnginePaths {
    /// espeak-ng (also runs the mbrola voices).
    pub espeak_ng: PathBuf,
    /// flite.
    pub flite: PathBuf,
    /// festival's `text2wave` script.
    pub text2wave: PathBuf,
    /// festival itself (lists the installed voices).
    pub festival: PathBuf,
    /// The mbrola synthesiser espeak-ng calls.
    pub mbrola: PathBuf,
    /// pico2wave.
    pub pico2wave: PathBuf,
    /// Directory holding mbrola voice databases (`<dir>/us1/us1`).
    pub mbrola_voices: PathBuf,
}

impl Default for EnginePaths {
    fn default() -> Self {
        EnginePaths {
            espeak_ng: "espeak-ng".into(),
            flite: "flite".into(),
            text2wave: "text2wave".into(),
            festival: "festival".into(),
            mbrola: "mbrola".into(),
            pico2wave: "pico2wave".into(),
            mbrola_voices: "/usr/share/mbrola".into(),
        }
    }
}

/// What was found for one engine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EngineInfo {
    /// Which engine.
    pub engine: Engine,
    /// The resolved program path.
    pub program: PathBuf,
    /// First line of the program's own version output (or "unknown").
    pub version: String,
    /// Debian package and its installed version, if dpkg knows it.
    pub package: String,
    /// The package version from `dpkg-query`, when dpkg knows the package.
    pub package_version: Option<String>,
}

/// Engines checked for a set of voices, ready to synthesise.
#[derive(Debug, Clone)]
pub struct Engines {
    paths: EnginePaths,
    infos: Vec<EngineInfo>,
}

/// Finds a program: a path with a separator must exist; a bare name is searched on `PATH`.
pub fn find_program(program: &Path) -> Option<PathBuf> {
    if program.components().count() > 1 {
        return program.is_file().then(|| program.to_path_buf());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| candidate.is_file())
}

fn command_output(program: &Path, args: &[&str]) -> Option<String> {
    let output = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .ok()?;
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    Some(text)
}

fn dpkg_version(package: &str) -> Option<String> {
    let output = Command::new("dpkg-query")
        .args(["-W", "-f=${Version}", package])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    let version = String::from_utf8_lossy(&output.stdout).trim().to_string();
    (output.status.success() && !version.is_empty()).then_some(version)
}

impl Engines {
    /// Checks that every engine and voice in `voices` is installed and records versions.
    pub fn probe(paths: &EnginePaths, voices: &[Voice]) -> Result<Self> {
        let mut engines: Vec<Engine> = voices.iter().map(|v| v.engine).collect();
        engines.sort();
        engines.dedup();
        let mut infos = Vec::new();
        for engine in engines {
            let program = program_for(paths, engine);
            // mbrola voices run through espeak-ng, which is then the missing program.
            let (needed, package) = match engine {
                Engine::Mbrola => ("espeak-ng (which drives mbrola)", "espeak-ng"),
                _ => (engine.name(), engine.debian_package()),
            };
            let resolved = find_program(program).ok_or_else(|| CorpusError::EngineMissing {
                engine: needed.to_string(),
                program: program.display().to_string(),
                package: package.to_string(),
            })?;
            let mut version = match engine {
                Engine::EspeakNg | Engine::Mbrola => {
                    command_output(&resolved, &["--version"]).and_then(|t| first_line(&t))
                }
                Engine::Flite => command_output(&resolved, &["--version"]).and_then(|t| {
                    t.lines()
                        .find(|l| l.contains("version"))
                        .map(|l| l.trim().to_string())
                }),
                Engine::Festival => {
                    let festival = find_program(&paths.festival).unwrap_or(resolved.clone());
                    command_output(&festival, &["--version"]).and_then(|t| first_line(&t))
                }
                Engine::Pico => None,
            };
            if engine == Engine::Mbrola {
                // The voices run in the mbrola program, which espeak-ng calls.
                let mbrola =
                    find_program(&paths.mbrola).ok_or_else(|| CorpusError::EngineMissing {
                        engine: "mbrola".into(),
                        program: paths.mbrola.display().to_string(),
                        package: "mbrola".into(),
                    })?;
                let mbrola_version = command_output(&mbrola, &["-h"]).and_then(|t| {
                    t.lines()
                        .find(|l| l.contains("MBROLA"))
                        .map(|l| l.trim().to_string())
                });
                version = Some(format!(
                    "{} + {}",
                    version.unwrap_or_else(|| "espeak-ng".into()),
                    mbrola_version.unwrap_or_else(|| "mbrola".into())
                ));
            }
            let package = engine.debian_package().to_string();
            infos.push(EngineInfo {
                engine,
                program: resolved,
                version: version.unwrap_or_else(|| "unknown".into()),
                package_version: dpkg_version(&package),
                package,
            });
        }
        let engines = Engines {
            paths: paths.clone(),
            infos,
        };
        for voice in voices {
            engines.check_voice(voice)?;
        }
        Ok(engines)
    }

    /// The probed engines.
    pub fn infos(&self) -> &[EngineInfo] {
        &self.infos
    }

    fn program(&self, engine: Engine) -> &Path {
        self.infos
            .iter()
            .find(|i| i.engine == engine)
            .map(|i| i.program.as_path())
            .unwrap_or_else(|| program_for(&self.paths, engine))
    }

    fn check_voice(&self, voice: &Voice) -> Result<()> {
        let missing = || CorpusError::VoiceMissing {
            voice: voice.spec(),
            package: voice.debian_package(),
        };
        match voice.engine {
            Engine::EspeakNg => {
                let program = self.program(Engine::EspeakNg);
                let (language, variant) = match voice.name.split_once('+') {
                    Some((l, v)) => (l, Some(v)),
                    None => (voice.name.as_str(), None),
                };
                let languages = command_output(program, &["--voices"]).unwrap_or_default();
                let known_language = languages.lines().skip(1).any(|line| {
                    let cols: Vec<&str> = line.split_whitespace().collect();
                    cols.get(1)
                        .is_some_and(|l| l.eq_ignore_ascii_case(language))
                });
                let known_variant = variant.is_none_or(|variant| {
                    command_output(program, &["--voices=variant"])
                        .unwrap_or_default()
                        .lines()
                        .skip(1)
                        .any(|line| {
                            line.split_whitespace()
                                .nth(4)
                                .is_some_and(|file| file.trim_start_matches("!v/") == variant)
                        })
                });
                if known_language && known_variant {
                    Ok(())
                } else {
                    Err(CorpusError::BadVoice {
                        spec: voice.spec(),
                        reason: format!(
                            "espeak-ng has no {} (see `espeak-ng --voices` and `espeak-ng --voices=variant`)",
                            if known_language { "such variant" } else { "such language" }
                        ),
                    })
                }
            }
            Engine::Flite => {
                let listing =
                    command_output(self.program(Engine::Flite), &["-lv"]).unwrap_or_default();
                let available = listing
                    .split(':')
                    .nth(1)
                    .unwrap_or_default()
                    .split_whitespace()
                    .any(|v| v == voice.name);
                available.then_some(()).ok_or_else(missing)
            }
            Engine::Festival => {
                let festival = find_program(&self.paths.festival).ok_or_else(|| {
                    CorpusError::EngineMissing {
                        engine: "festival".into(),
                        program: self.paths.festival.display().to_string(),
                        package: "festival".into(),
                    }
                })?;
                let listing = command_output(&festival, &["--batch", "(print (voice.list))"])
                    .unwrap_or_default();
                let wanted = festival_voice(&voice.name).ok_or_else(missing)?;
                listing
                    .split(|c: char| c.is_whitespace() || c == '(' || c == ')')
                    .any(|v| v == wanted)
                    .then_some(())
                    .ok_or_else(missing)
            }
            Engine::Mbrola => {
                let dir = &self.paths.mbrola_voices;
                let found = dir.join(&voice.name).join(&voice.name).is_file()
                    || dir.join(&voice.name).is_file();
                found.then_some(()).ok_or_else(missing)
            }
            Engine::Pico => PICO_LANGUAGES
                .contains(&voice.name.as_str())
                .then_some(())
                .ok_or_else(missing),
        }
    }

    /// The exact command-line arguments (after the program) used for a voice and prosody; the
    /// text file and output file are `IN` and `OUT`.
    pub fn arguments(
        voice: &Voice,
        prosody: &Prosody,
        text_file: &str,
        wav_file: &str,
    ) -> Vec<String> {
        let stretch = format!("{:.4}", 1.0 / prosody.speed);
        match voice.engine {
            Engine::EspeakNg | Engine::Mbrola => {
                let name = if voice.engine == Engine::Mbrola {
                    format!("mb-{}", voice.name)
                } else {
                    voice.name.clone()
                };
                let wpm = (175.0 * prosody.speed).round() as i64;
                let pitch = (50.0 + 7.5 * prosody.pitch_semitones)
                    .round()
                    .clamp(0.0, 99.0) as i64;
                vec![
                    "-v".into(),
                    name,
                    "-s".into(),
                    wpm.to_string(),
                    "-p".into(),
                    pitch.to_string(),
                    "-f".into(),
                    text_file.into(),
                    "-w".into(),
                    wav_file.into(),
                ]
            }
            Engine::Flite => {
                let base = FLITE_VOICES
                    .iter()
                    .find(|(v, _)| *v == voice.name)
                    .map_or(100.0, |(_, f0)| *f0);
                let f0 = base * 2f64.powf(prosody.pitch_semitones / 12.0);
                vec![
                    "-voice".into(),
                    voice.name.clone(),
                    "--setf".into(),
                    format!("duration_stretch={stretch}"),
                    "--setf".into(),
                    format!("int_f0_target_mean={f0:.1}"),
                    "-f".into(),
                    text_file.into(),
                    "-o".into(),
                    wav_file.into(),
                ]
            }
            Engine::Festival => vec![
                "-eval".into(),
                format!(
                    "({})",
                    festival_voice(&voice.name)
                        .map_or_else(|| "voice_kal_diphone".to_string(), |v| format!("voice_{v}"))
                ),
                "-eval".into(),
                format!("(Parameter.set 'Duration_Stretch {stretch})"),
                text_file.into(),
                "-o".into(),
                wav_file.into(),
            ],
            Engine::Pico => vec![
                "-l".into(),
                voice.name.clone(),
                "-w".into(),
                wav_file.into(),
                "--".into(),
                "TEXT".into(),
            ],
        }
    }

    /// Synthesises `text` (one sentence) with a voice and prosody; `utterance` names it in errors
    /// and `workdir` is a private scratch directory. Returns the engine's own sample rate.
    pub fn synthesize(
        &self,
        voice: &Voice,
        prosody: &Prosody,
        text: &str,
        utterance: &str,
        workdir: &Path,
    ) -> Result<Wave> {
        let fail = |reason: String| CorpusError::EngineFailed {
            engine: voice.engine.name().to_string(),
            voice: voice.spec(),
            utterance: utterance.to_string(),
            reason,
        };
        let text_path = workdir.join("in.txt");
        let wav_path = workdir.join("out.wav");
        let log_path = workdir.join("engine.log");
        std::fs::write(&text_path, format!("{text}\n")).at(&text_path)?;
        let _ = std::fs::remove_file(&wav_path);
        let mut args = Engines::arguments(
            voice,
            prosody,
            &text_path.to_string_lossy(),
            &wav_path.to_string_lossy(),
        );
        if voice.engine == Engine::Pico {
            // pico2wave reads its text from the command line.
            if let Some(last) = args.last_mut() {
                *last = text.to_string();
            }
        }
        let log = std::fs::File::create(&log_path).at(&log_path)?;
        let log_err = log.try_clone().at(&log_path)?;
        let program = self.program(voice.engine);
        let mut child = Command::new(program)
            .args(&args)
            .current_dir(workdir)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err)
            .spawn()
            .map_err(|err| fail(format!("cannot start {}: {err}", program.display())))?;
        let started = Instant::now();
        let status = loop {
            match child.try_wait() {
                Ok(Some(status)) => break status,
                Ok(None) if started.elapsed() > ENGINE_TIMEOUT => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!(
                        "timed out after {} s",
                        ENGINE_TIMEOUT.as_secs()
                    )));
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(5)),
                Err(err) => return Err(fail(format!("waiting for the engine: {err}"))),
            }
        };
        let log_text = std::fs::read_to_string(&log_path).unwrap_or_default();
        let log_tail: String = log_text
            .trim()
            .chars()
            .rev()
            .take(400)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        if !status.success() {
            return Err(fail(format!("exited with {status}: {log_tail}")));
        }
        if log_text.contains("SIOD ERROR") {
            return Err(fail(format!("festival reported an error: {log_tail}")));
        }
        let bytes = std::fs::read(&wav_path)
            .map_err(|err| fail(format!("no WAV output ({err}); engine said: {log_tail}")))?;
        let wave = parse_wav(
            &bytes,
            &format!("{} for utterance {utterance}", voice.spec()),
        )?;
        let min_samples = wave.sample_rate as usize / 10;
        if wave.samples.len() < min_samples || wave.samples.iter().all(|&s| s == 0.0) {
            return Err(fail(format!(
                "produced {} samples of silence or almost nothing",
                wave.samples.len()
            )));
        }
        Ok(wave)
    }
}

fn first_line(text: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .map(str::to_string)
}

fn festival_voice(short: &str) -> Option<&'static str> {
    FESTIVAL_VOICES
        .iter()
        .find(|(s, _, _)| *s == short)
        .map(|(_, full, _)| *full)
}

fn program_for(paths: &EnginePaths, engine: Engine) -> &Path {
    match engine {
        Engine::EspeakNg | Engine::Mbrola => &paths.espeak_ng,
        Engine::Flite => &paths.flite,
        Engine::Festival => &paths.text2wave,
        Engine::Pico => &paths.pico2wave,
    }
}

/// Every voice this machine can synthesise among `candidates` (probing each engine once).
pub fn installed_voices(paths: &EnginePaths, candidates: &[Voice]) -> Vec<Voice> {
    candidates
        .iter()
        .filter(|voice| Engines::probe(paths, std::slice::from_ref(voice)).is_ok())
        .cloned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_voice_specs() {
        let v: Voice = "espeak-ng:en-gb-scotland+f2".parse().unwrap();
        assert_eq!(v, Voice::new(Engine::EspeakNg, "en-gb-scotland+f2"));
        assert_eq!(v.spec(), "espeak-ng:en-gb-scotland+f2");
        assert_eq!(
            "festival:slt-hts"
                .parse::<Voice>()
                .unwrap()
                .debian_package(),
            "festvox-us-slt-hts"
        );
        assert_eq!(
            "mbrola:us1".parse::<Voice>().unwrap().debian_package(),
            "mbrola-us1"
        );
        assert_eq!(
            "pico:en-GB".parse::<Voice>().unwrap().debian_package(),
            "libttspico-utils"
        );
        for bad in [
            "slt",
            "flite:bogus",
            "say:alex",
            "espeak-ng:en us",
            "festival:",
        ] {
            assert!(bad.parse::<Voice>().is_err(), "{bad}");
        }
    }

    #[test]
    fn maps_prosody_to_engine_arguments() {
        let prosody = Prosody {
            speed: 1.1,
            pitch_semitones: -2.0,
        };
        let args = Engines::arguments(
            &"espeak-ng:en-us+m3".parse().unwrap(),
            &prosody,
            "IN",
            "OUT",
        );
        assert_eq!(
            args,
            ["-v", "en-us+m3", "-s", "193", "-p", "35", "-f", "IN", "-w", "OUT"]
        );
        let args = Engines::arguments(&"flite:slt".parse().unwrap(), &prosody, "IN", "OUT");
        assert_eq!(args[3], "duration_stretch=0.9091");
        assert_eq!(args[5], "int_f0_target_mean=151.5");
        let args = Engines::arguments(&"festival:ked".parse().unwrap(), &prosody, "IN", "OUT");
        assert_eq!(args[1], "(voice_ked_diphone)");
        assert_eq!(args[3], "(Parameter.set 'Duration_Stretch 0.9091)");
        let args = Engines::arguments(&"mbrola:us1".parse().unwrap(), &prosody, "IN", "OUT");
        assert_eq!(args[1], "mb-us1");
    }

    #[test]
    fn missing_engine_names_the_debian_package() {
        let paths = EnginePaths {
            espeak_ng: "/nonexistent/bin/espeak-ng".into(),
            flite: "/nonexistent/bin/flite".into(),
            text2wave: "/nonexistent/bin/text2wave".into(),
            pico2wave: "definitely-not-installed-pico2wave".into(),
            ..EnginePaths::default()
        };
        let cases = [
            ("espeak-ng:en-us", "apt-get install espeak-ng"),
            ("flite:slt", "apt-get install flite"),
            ("festival:kal", "apt-get install festival"),
            ("pico:en-US", "apt-get install libttspico-utils"),
        ];
        for (spec, expected) in cases {
            let voice: Voice = spec.parse().unwrap();
            let err = Engines::probe(&paths, &[voice]).unwrap_err().to_string();
            assert!(err.contains(expected), "{spec}: {err}");
        }
    }

    #[test]
    fn missing_voice_names_the_debian_package() {
        let paths = EnginePaths {
            mbrola_voices: "/nonexistent/mbrola".into(),
            ..EnginePaths::default()
        };
        if find_program(&paths.espeak_ng).is_none() || find_program(&paths.mbrola).is_none() {
            eprintln!("skipping: espeak-ng or mbrola is not installed");
            return;
        }
        let err = Engines::probe(&paths, &["mbrola:us3".parse().unwrap()]).unwrap_err();
        assert!(err.to_string().contains("mbrola-us3"), "{err}");
    }

    #[test]
    fn unknown_espeak_variant_is_refused() {
        let paths = EnginePaths::default();
        if find_program(&paths.espeak_ng).is_none() {
            crate::skip_missing("espeak-ng is not installed");
            return;
        }
        let err = Engines::probe(&paths, &["espeak-ng:en-us+nosuchvariant".parse().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such variant"), "{err}");
        let err = Engines::probe(&paths, &["espeak-ng:xx-nowhere".parse().unwrap()])
            .unwrap_err()
            .to_string();
        assert!(err.contains("no such language"), "{err}");
    }

    #[test]
    fn each_installed_engine_speaks() {
        let paths = EnginePaths::default();
        let dir = tempfile::tempdir().unwrap();
        for spec in [
            "espeak-ng:en-us+m3",
            "flite:slt",
            "festival:kal",
            "festival:slt-hts",
            "pico:en-US",
            "mbrola:us1",
        ] {
            let voice: Voice = spec.parse().unwrap();
            let engines = match Engines::probe(&paths, std::slice::from_ref(&voice)) {
                Ok(e) => e,
                // pico and mbrola are optional (non-free); the others are setup.sh packages.
                Err(err) if spec.starts_with("pico") || spec.starts_with("mbrola") => {
                    eprintln!("skipping {spec}: {err}");
                    continue;
                }
                Err(err) => {
                    crate::skip_missing(&format!("{spec}: {err}"));
                    continue;
                }
            };
            let prosody = Prosody {
                speed: 1.0,
                pitch_semitones: 0.0,
            };
            let wave = engines
                .synthesize(
                    &voice,
                    &prosody,
                    "Hello there, my friend.",
                    "test-0",
                    dir.path(),
                )
                .unwrap();
            let seconds = wave.samples.len() as f64 / f64::from(wave.sample_rate);
            assert!((0.5..5.0).contains(&seconds), "{spec}: {seconds} s");
            assert!(!engines.infos()[0].version.is_empty());
        }
    }
}
