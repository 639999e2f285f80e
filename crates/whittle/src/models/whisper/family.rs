//! Whisper behind the model interface: the [`Transcriber`] (model, tokenizer and decoding
//! options) is the [`SpeechModel`].

use std::sync::atomic::{AtomicBool, Ordering};

use candle_core::Tensor;

use super::decode::Transcriber;
use crate::error::Result;
use crate::models::{LayerMut, LayerRef, Layers, SpeechModel};

impl Layers for Transcriber {
    fn layers(&self) -> Vec<LayerRef<'_>> {
        self.model.layers()
    }

    fn layers_mut(&mut self) -> Vec<LayerMut<'_>> {
        self.model.layers_mut()
    }

    fn held_tensors(&self) -> Result<Option<Vec<(String, Tensor)>>> {
        self.model.held_tensors()
    }

    fn config_header(&self) -> Result<Option<serde_json::Value>> {
        self.model.config_header()
    }

    fn prunable_modules(&self) -> Vec<crate::models::PrunableModule> {
        self.model.prunable_modules()
    }

    fn prune_modules(
        &mut self,
        keep: &std::collections::BTreeMap<String, crate::compress::prune::ModuleKeep>,
    ) -> Result<()> {
        self.model.prune_modules(keep)
    }
}

impl SpeechModel for Transcriber {
    fn architecture(&self) -> &'static str {
        "whisper"
    }

    fn summary(&self) -> String {
        let c = &self.model.config;
        format!(
            "Whisper ({}): d_model {}, mels {}, encoder {} layers x {} heads (ffn {}), decoder {} layers x {} heads (ffn {}), vocab {}, positions {}/{}{}",
            if c.is_multilingual() { "multilingual" } else { "English-only" },
            c.d_model, c.num_mel_bins, c.encoder_layers, c.encoder_attention_heads, c.encoder_ffn_dim,
            c.decoder_layers, c.decoder_attention_heads, c.decoder_ffn_dim, c.vocab_size,
            c.max_source_positions, c.max_target_positions,
            if c.is_uniform() { String::new() } else { format!("; pruned: {}", self.model.shape_summary()) }
        )
    }

    fn parameter_count(&self) -> usize {
        self.model.config.parameter_count()
    }

    /// One clip goes through [`Transcriber::transcribe`] (beam search, fallback and long form
    /// as configured); several through [`Transcriber::transcribe_batch`].
    fn transcribe_batch(&self, clips: &[&[f32]]) -> Result<Vec<String>> {
        let transcripts = match clips {
            [one] => vec![self.transcribe(one)?],
            _ => Transcriber::transcribe_batch(self, clips)?,
        };
        Ok(transcripts.into_iter().map(|t| t.text).collect())
    }

    /// The clip is first transcribed greedily with the observers off; then the encoder runs on
    /// the speech frames only (the mel trimmed to the audio, without the 30 s padding that would
    /// otherwise be most of every Hessian) and the decoder is teacher-forced on the prompt and
    /// the decoded tokens, with the observers on.
    fn observe_calibration(&self, samples: &[f32], observing: &AtomicBool) -> Result<()> {
        use whittle_audio::mel::{log_mel_spectrogram, HOP_LENGTH, N_FRAMES_30S};
        let transcript = self.transcribe(samples)?;
        let model = &self.model;
        let n_mels = model.config.num_mel_bins;
        let mel = log_mel_spectrogram(samples, n_mels);
        let content_frames = (samples.len() / HOP_LENGTH).max(2);
        let prompt = self.tokenizer.prompt(model.config.is_multilingual());
        observing.store(true, Ordering::Relaxed);
        let run = (|| {
            for (w, tokens) in transcript.window_tokens.iter().enumerate() {
                let seek = w * N_FRAMES_30S;
                // Even frame count: the stride-2 conv stem halves it.
                let frames = (content_frames.saturating_sub(seek).min(N_FRAMES_30S) + 1) & !1;
                let window = mel.window(seek, frames);
                let window = Tensor::from_vec(window.data, (1, n_mels, frames), model.device())?
                    .to_dtype(model.dtype)?;
                let mut input = prompt.clone();
                input.extend_from_slice(tokens);
                let input = Tensor::new(input.as_slice(), model.device())?.unsqueeze(0)?;
                self.token_log_probs(&window, &input)?;
            }
            Ok(())
        })();
        observing.store(false, Ordering::Relaxed);
        run
    }

    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }
}
