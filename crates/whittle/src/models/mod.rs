//! Model families. Each architecture is written once and loaded by tensor name.

pub mod wav2vec2;
pub mod whisper;
