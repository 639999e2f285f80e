//! Model families. Each architecture is written once and loaded by tensor name.

pub mod whisper;
