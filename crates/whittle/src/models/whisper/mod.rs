//! Whisper: configuration, model, checkpoint conversion, tokenizer and decoding.

pub mod batch;
pub mod config;
pub mod decode;
pub mod fallback;
mod family;
pub mod from_ct2;
pub mod ggml;
pub mod longform;
pub mod model;
pub mod search;
pub mod timestamps;
pub mod tokenizer;

pub use config::{BlockShape, LayerShapes, WhisperConfig};
pub use decode::{DecodeOptions, FrontEndPadding, NBestHypothesis, Transcriber, Transcript};
pub use fallback::FallbackOptions;
pub use longform::{LongFormOptions, LongTranscript, Segment};
pub use model::{AttentionModule, Block, FeedForward, Whisper, TOKEN_EMBEDDING};
pub use tokenizer::WhisperTokenizer;
