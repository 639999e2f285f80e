//! Training batches: log-mels trimmed to the longest utterance of the batch, right-padded
//! teacher-forcing token batches with the positions that carry a loss, and the teacher's
//! pseudo-labels for audio without transcripts.
//!
//! # Shapes
//! - `mel` `[b, n_mels, frames]`, `frames` = the longest utterance's frames rounded up to even;
//!   shorter utterances carry their own padded frames (the log-mel of appended silence, as at
//!   inference with openai-whisper padding);
//! - `inputs` `[b, len]` u32: `prompt + text` (without the final end-of-text), right-padded
//!   with end-of-text;
//! - `positions` `[n]` u32: flat indices into `b * len` whose next token is a target
//!   (every text token and the end-of-text), `targets` `[n]` u32 those tokens.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};

use crate::data::Utterance;
use crate::error::{Error, Result};
use crate::models::whisper::decode::{trimmed_frames, WINDOW_FRAMES};
use crate::models::whisper::{Transcriber, WhisperConfig};

/// An utterance with the text tokens the decoder is teacher-forced on.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainExample {
    /// Utterance id.
    pub id: String,
    /// Audio file.
    pub audio: PathBuf,
    /// Text tokens: for Whisper without prompt or end-of-text; for a language model the whole
    /// document, separator first (the audio path is then empty).
    pub tokens: Vec<u32>,
    /// The augmentation of its audio at this draw (the trainer sets it per step from the
    /// recipe's `[augment]`; `None`: the clean audio).
    pub augmentation: Option<super::augment::Augmentation>,
}

impl TrainExample {
    /// The utterance's audio without text tokens (what CTC models train on: they distil frame
    /// posteriors).
    pub fn audio_only(utterance: &crate::data::Utterance) -> Self {
        Self {
            id: utterance.id.clone(),
            audio: utterance.audio.clone(),
            tokens: Vec::new(),
            augmentation: None,
        }
    }
}

/// One batch, ready for the training forward.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Utterance ids, in batch order.
    pub ids: Vec<String>,
    /// Model input: log-mel `[b, n_mels, frames]` for Whisper (a waveform family batches
    /// `[b, samples]`, a language model its token ids, the same tensor as `inputs`).
    pub features: Tensor,
    /// Decoder inputs `[b, len]`.
    pub inputs: Tensor,
    /// Flat indices into `b * len` of positions with a target, `[n]`.
    pub positions: Tensor,
    /// Target token of each such position, `[n]`.
    pub targets: Tensor,
}

impl Batch {
    /// Positions that carry a loss.
    pub fn target_count(&self) -> usize {
        self.positions.elem_count()
    }
}

/// The special tokens a batch needs.
#[derive(Debug, Clone)]
pub struct Prompt {
    /// `sot [lang transcribe] notimestamps`.
    pub tokens: Vec<u32>,
    /// End of text (the last target and the padding token).
    pub eot: u32,
}

/// Mono 16 kHz samples of an utterance, with the utterance named in errors.
pub fn load_samples(audio: &Path, id: &str) -> Result<Vec<f32>> {
    whittle_audio::load_audio(audio).map_err(|e| Error::Dataset {
        path: audio.to_path_buf(),
        reason: format!("utterance `{id}`: {e}"),
    })
}

/// The samples of a batch's examples, each augmented as it carries (the batch's other clean
/// clips are the babble talkers).
pub fn load_batch_samples(examples: &[&TrainExample]) -> Result<Vec<Vec<f32>>> {
    let mut clips: Vec<Vec<f32>> = examples
        .iter()
        .map(|e| load_samples(&e.audio, &e.id))
        .collect::<Result<_>>()?;
    let augmentations: Vec<_> = examples.iter().map(|e| e.augmentation.as_ref()).collect();
    super::augment::augment_batch(&mut clips, &augmentations).map_err(|(i, e)| Error::Dataset {
        path: examples[i].audio.clone(),
        reason: format!("utterance `{}`: augmentation failed: {e}", examples[i].id),
    })?;
    Ok(clips)
}

/// Build a batch from examples: the audio is read (and augmented, see [`TrainExample`]) and the
/// log-mel computed here. `trim` cuts the frames to the longest utterance, else every batch has
/// the full 30 s window.
pub fn make_batch(
    examples: &[&TrainExample],
    trim: bool,
    config: &WhisperConfig,
    prompt: &Prompt,
    device: &Device,
    dtype: DType,
) -> Result<Batch> {
    let clips = load_batch_samples(examples)?;
    let mels: Vec<(whittle_audio::mel::LogMel, usize)> = examples
        .iter()
        .zip(clips)
        .map(|(e, samples)| {
            let content = samples.len() / whittle_audio::mel::HOP_LENGTH;
            if content > WINDOW_FRAMES {
                return Err(Error::Dataset {
                    path: e.audio.clone(),
                    reason: format!(
                        "utterance `{}` is {:.1} s long; training takes utterances of up to 30 s",
                        e.id,
                        samples.len() as f64 / f64::from(whittle_audio::mel::SAMPLE_RATE)
                    ),
                });
            }
            Ok((
                whittle_audio::mel::log_mel_spectrogram(&samples, config.num_mel_bins),
                content,
            ))
        })
        .collect::<Result<_>>()?;
    let frames = if trim {
        trimmed_frames(mels.iter().map(|(_, c)| *c).max().unwrap_or(0))
    } else {
        WINDOW_FRAMES
    };
    let mut data = Vec::with_capacity(examples.len() * config.num_mel_bins * frames);
    for (mel, _) in &mels {
        data.extend(mel.window(0, frames).data);
    }
    let mel = Tensor::from_vec(data, (examples.len(), config.num_mel_bins, frames), device)?
        .to_dtype(dtype)?;
    let sequences: Vec<&[u32]> = examples.iter().map(|e| e.tokens.as_slice()).collect();
    let (inputs, positions, targets) = token_batch(&sequences, config, prompt, device)?;
    Ok(Batch {
        ids: examples.iter().map(|e| e.id.clone()).collect(),
        features: mel,
        inputs,
        positions,
        targets,
    })
}

/// Teacher-forcing tensors for text token sequences (truncated to the decoder's context).
pub fn token_batch(
    texts: &[&[u32]],
    config: &WhisperConfig,
    prompt: &Prompt,
    device: &Device,
) -> Result<(Tensor, Tensor, Tensor)> {
    let max_text = config
        .max_target_positions
        .saturating_sub(prompt.tokens.len() + 1);
    let texts: Vec<&[u32]> = texts.iter().map(|t| &t[..t.len().min(max_text)]).collect();
    let len = prompt.tokens.len() + texts.iter().map(|t| t.len()).max().unwrap_or(0);
    let mut inputs = Vec::with_capacity(texts.len() * len);
    let mut positions = Vec::new();
    let mut targets = Vec::new();
    for (row, text) in texts.iter().enumerate() {
        let mut seq: Vec<u32> = prompt.tokens.iter().chain(text.iter()).copied().collect();
        seq.push(prompt.eot);
        // Position i predicts seq[i + 1]; targets start at the last prompt token.
        for i in prompt.tokens.len() - 1..seq.len() - 1 {
            positions.push((row * len + i) as u32);
            targets.push(seq[i + 1]);
        }
        seq.pop();
        seq.resize(len, prompt.eot);
        inputs.extend(seq);
    }
    let n = targets.len();
    Ok((
        Tensor::from_vec(inputs, (texts.len(), len), device)?,
        Tensor::from_vec(positions, n, device)?,
        Tensor::from_vec(targets, n, device)?,
    ))
}

/// A deterministic synthetic batch for benchmarks, reproducible outside whittle:
/// `mel[b, m, t] = 0.5 sin(0.37 (m + 1) + 0.011 (b + 1) t)` and text token `i` of row `b`
/// `= 220 + (1009 b + 97 i) mod 20000`, `tokens` text tokens per row (all rows equally long, so
/// every position after the prompt carries a loss).
pub fn synthetic_batch(
    batch: usize,
    frames: usize,
    tokens: usize,
    config: &WhisperConfig,
    prompt: &Prompt,
    device: &Device,
) -> Result<Batch> {
    let frames = trimmed_frames(frames);
    let n_mels = config.num_mel_bins;
    let mut data = Vec::with_capacity(batch * n_mels * frames);
    for b in 0..batch {
        for m in 0..n_mels {
            for t in 0..frames {
                data.push(0.5 * (0.37 * (m + 1) as f32 + 0.011 * (b + 1) as f32 * t as f32).sin());
            }
        }
    }
    let texts: Vec<Vec<u32>> = (0..batch)
        .map(|b| {
            (0..tokens)
                .map(|i| (220 + (1009 * b + 97 * i) % 20000) as u32 % prompt.eot.max(1))
                .collect()
        })
        .collect();
    let refs: Vec<&[u32]> = texts.iter().map(|t| t.as_slice()).collect();
    let (inputs, positions, targets) = token_batch(&refs, config, prompt, device)?;
    Ok(Batch {
        ids: (0..batch).map(|b| format!("synthetic-{b}")).collect(),
        features: Tensor::from_vec(data, (batch, n_mels, frames), device)?,
        inputs,
        positions,
        targets,
    })
}

/// A batch written by `scripts/reference/qat_step.py --write-batch` (format
/// `whittle-qat-batch-v1`): `mel` f32 `[b, n_mels, frames]`, `tokens` i64 `[b, len]` (prompt, text,
/// end-of-text, right padding) and `mask` f32 `[b, len]`, 1 where position `i` is scored against
/// `tokens[i + 1]`. Lets whittle and PyTorch time the same step on identical tensors.
pub fn batch_from_file(path: &Path, config: &WhisperConfig, device: &Device) -> Result<Batch> {
    let context = path.display().to_string();
    let tensors = candle_core::safetensors::load(path, device)
        .map_err(|e| Error::config(&context, format!("cannot read the batch: {e}")))?;
    let get = |name: &str, rank: usize| -> Result<&Tensor> {
        let t = tensors
            .get(name)
            .ok_or_else(|| Error::config(&context, format!("no tensor `{name}`")))?;
        if t.rank() != rank {
            return Err(Error::config(
                &context,
                format!("`{name}` has shape {:?}, expected rank {rank}", t.dims()),
            ));
        }
        Ok(t)
    };
    let mel = get("mel", 3)?.to_dtype(DType::F32)?;
    let tokens = get("tokens", 2)?.to_dtype(DType::I64)?;
    let mask = get("mask", 2)?.to_dtype(DType::F32)?;
    let (b, n_mels, frames) = mel.dims3()?;
    let (tb, len) = tokens.dims2()?;
    if n_mels != config.num_mel_bins || tb != b || mask.dims() != tokens.dims() || frames % 2 != 0 {
        return Err(Error::config(
            &context,
            format!(
                "mel {:?}, tokens {:?}, mask {:?} do not fit a batch for {} mel bins (even frames)",
                mel.dims(),
                tokens.dims(),
                mask.dims(),
                config.num_mel_bins
            ),
        ));
    }
    let token_values: Vec<i64> = tokens.flatten_all()?.to_vec1()?;
    let mask_values: Vec<f32> = mask.flatten_all()?.to_vec1()?;
    let vocab = config.vocab_size as i64;
    if let Some(bad) = token_values.iter().find(|&&t| t < 0 || t >= vocab) {
        return Err(Error::config(
            &context,
            format!("token {bad} outside the vocabulary"),
        ));
    }
    let (mut positions, mut targets) = (Vec::new(), Vec::new());
    for (flat, &m) in mask_values.iter().enumerate() {
        if m != 0.0 {
            if flat % len + 1 >= len {
                return Err(Error::config(
                    &context,
                    "the last position of a row cannot be scored",
                ));
            }
            positions.push(flat as u32);
            targets.push(token_values[flat + 1] as u32);
        }
    }
    let n = targets.len();
    Ok(Batch {
        ids: (0..b).map(|i| format!("{context}#{i}")).collect(),
        features: mel,
        inputs: Tensor::from_vec(
            token_values.iter().map(|&t| t as u32).collect::<Vec<_>>(),
            (b, len),
            device,
        )?,
        positions: Tensor::from_vec(positions, n, device)?,
        targets: Tensor::from_vec(targets, n, device)?,
    })
}

/// One cached pseudo-label.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct PseudoLabel {
    id: String,
    audio: String,
    tokens: Vec<u32>,
    text: String,
}

/// The teacher's greedy transcripts of `utterances`, read from `cache` where present and
/// decoded (then cached, atomically, every few utterances) where not. `progress(done, total)`
/// is called after each decoded utterance.
pub fn pseudo_labels(
    teacher: &Transcriber,
    utterances: &[Utterance],
    cache: &Path,
    mut progress: impl FnMut(usize, usize),
) -> Result<HashMap<String, Vec<u32>>> {
    let mut cached: Vec<PseudoLabel> = Vec::new();
    if cache.is_file() {
        let text = std::fs::read_to_string(cache).map_err(|e| Error::io(cache, e))?;
        for (n, line) in text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty())
        {
            cached.push(serde_json::from_str(line).map_err(|e| Error::Json {
                context: format!("{} line {}", cache.display(), n + 1),
                source: e,
            })?);
        }
    }
    let mut labels: HashMap<String, Vec<u32>> = cached
        .iter()
        .map(|p| (p.id.clone(), p.tokens.clone()))
        .collect();
    let missing: Vec<&Utterance> = utterances
        .iter()
        .filter(|u| !labels.contains_key(&u.id))
        .collect();
    let save = |cached: &[PseudoLabel]| -> Result<()> {
        let mut out = String::new();
        for p in cached {
            out.push_str(&serde_json::to_string(p).expect("strings and integers"));
            out.push('\n');
        }
        crate::fsutil::write_atomic(cache, out.as_bytes())
    };
    for (i, u) in missing.iter().enumerate() {
        let samples = load_samples(&u.audio, &u.id)?;
        let transcript = teacher.transcribe(&samples)?;
        let tokens: Vec<u32> = transcript.window_tokens.concat();
        labels.insert(u.id.clone(), tokens.clone());
        cached.push(PseudoLabel {
            id: u.id.clone(),
            audio: u.audio.display().to_string(),
            tokens,
            text: transcript.text,
        });
        if (i + 1) % 25 == 0 {
            save(&cached)?;
        }
        progress(i + 1, missing.len());
    }
    if !missing.is_empty() {
        save(&cached)?;
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> WhisperConfig {
        WhisperConfig {
            vocab_size: 64,
            num_mel_bins: 8,
            encoder_layers: 1,
            encoder_attention_heads: 2,
            decoder_layers: 1,
            decoder_attention_heads: 2,
            d_model: 16,
            encoder_ffn_dim: 32,
            decoder_ffn_dim: 32,
            max_source_positions: 1500,
            max_target_positions: 10,
            suppress_tokens: vec![],
            begin_suppress_tokens: vec![],
            activation_function: "gelu".into(),
            layer_shapes: None,
        }
    }

    /// A PyTorch-written batch file: scored positions predict the next token; bad files name
    /// what is wrong.
    #[test]
    fn batch_file_gives_next_token_targets() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("batch.safetensors");
        let dev = Device::Cpu;
        let mel = Tensor::zeros((2, 8, 4), DType::F32, &dev).unwrap();
        let tokens = Tensor::new(&[[60i64, 61, 5, 6, 50], [60, 61, 7, 50, 50]], &dev).unwrap();
        let mask = Tensor::new(&[[0f32, 1., 1., 1., 0.], [0., 1., 1., 0., 0.]], &dev).unwrap();
        let save = |tensors: Vec<(&str, &Tensor)>| {
            let map: HashMap<String, Tensor> = tensors
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            candle_core::safetensors::save(&map, &path).unwrap();
        };
        save(vec![("mel", &mel), ("tokens", &tokens), ("mask", &mask)]);
        let batch = batch_from_file(&path, &config(), &dev).unwrap();
        assert_eq!(batch.positions.to_vec1::<u32>().unwrap(), [1, 2, 3, 6, 7]);
        assert_eq!(batch.targets.to_vec1::<u32>().unwrap(), [5, 6, 50, 7, 50]);
        assert_eq!(batch.inputs.dims(), &[2, 5]);

        save(vec![("mel", &mel), ("tokens", &tokens)]);
        let err = batch_from_file(&path, &config(), &dev)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no tensor `mask`"), "{err}");
        let last = Tensor::new(&[[0f32, 0., 0., 0., 1.], [0., 0., 0., 0., 0.]], &dev).unwrap();
        save(vec![("mel", &mel), ("tokens", &tokens), ("mask", &last)]);
        let err = batch_from_file(&path, &config(), &dev)
            .unwrap_err()
            .to_string();
        assert!(err.contains("last position"), "{err}");
    }

    /// Right padding with end-of-text; targets are the text and one end-of-text per row.
    #[test]
    fn token_batch_pads_right_and_marks_targets() {
        let prompt = Prompt {
            tokens: vec![60, 61],
            eot: 50,
        };
        let (inputs, positions, targets) =
            token_batch(&[&[1, 2, 3], &[4]], &config(), &prompt, &Device::Cpu).unwrap();
        assert_eq!(
            inputs.to_vec2::<u32>().unwrap(),
            vec![vec![60, 61, 1, 2, 3], vec![60, 61, 4, 50, 50]]
        );
        assert_eq!(positions.to_vec1::<u32>().unwrap(), vec![1, 2, 3, 4, 6, 7]);
        assert_eq!(targets.to_vec1::<u32>().unwrap(), vec![1, 2, 3, 50, 4, 50]);
        // Too long for 10 positions: truncated to 10 - 2 - 1 = 7 text tokens.
        let long: Vec<u32> = (1..20).collect();
        let (inputs, _, targets) = token_batch(&[&long], &config(), &prompt, &Device::Cpu).unwrap();
        assert_eq!(inputs.dims(), &[1, 9]);
        assert_eq!(*targets.to_vec1::<u32>().unwrap().last().unwrap(), 50);
    }
}
