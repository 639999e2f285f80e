//! Audio input for whittle: decoding files, resampling to 16 kHz, and Whisper's log-mel front end.
//!
//! - [`decode`]: any supported file to f32 samples ([`load_audio`] gives 16 kHz mono in [-1, 1]).
//! - [`resample`]: band-limited FFT resampling of mono signals.
//! - [`mel`]: openai-whisper's `log_mel_spectrogram`, bit-for-bit in algorithm.
//!
//! ```no_run
//! let samples = whittle_audio::load_audio(std::path::Path::new("jfk.wav"))?;
//! let mel = whittle_audio::mel::log_mel_spectrogram(&samples, 80);
//! let first_window = mel.window(0, whittle_audio::mel::N_FRAMES_30S);
//! assert_eq!(first_window.data.len(), 80 * 3000);
//! # Ok::<(), whittle_audio::AudioError>(())
//! ```

#![warn(missing_docs)]

pub mod decode;
mod error;
pub mod mel;
pub mod resample;

pub use decode::{
    decode_bytes, decode_file, decode_file_limited, load_audio, load_audio_bytes,
    load_audio_limited, max_audio_seconds, set_max_audio_seconds, DecodedAudio, Measured,
    DEFAULT_MAX_AUDIO_SECONDS, TARGET_SAMPLE_RATE,
};
pub use error::AudioError;
pub use mel::{log_mel_spectrogram, LogMel};
pub use resample::resample_mono;
