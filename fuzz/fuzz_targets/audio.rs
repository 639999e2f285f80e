//! Audio decoding to the models' 16 kHz mono input: the first byte picks the file name's
//! extension (WAV, FLAC, MP3, OGG, raw PCM; the container is sniffed from the bytes but raw is
//! chosen by name), the rest is the file.
#![no_main]

use std::path::Path;
use std::sync::Once;

use libfuzzer_sys::fuzz_target;

const NAMES: [&str; 5] = ["x.wav", "x.flac", "x.mp3", "x.ogg", "x.raw"];

fuzz_target!(|data: &[u8]| {
    static CAP: Once = Once::new();
    // The harness's cap (not the 4 h default): a few-byte FLAC may legitimately hold hours of
    // silence, and decoding hours is slow, not a bug; 10 minutes keeps each run under a second.
    //
    // whittle catches a panic inside a third-party decoder and reports it as
    // `AudioError::DecoderPanicked` (whittle_audio::decode docs); libfuzzer-sys's panic hook would
    // abort on it first. Restore the default hook so that the target sees what whittle's callers
    // see: a caught decoder panic is an error, and only a panic that escapes `load_audio_bytes`
    // (caught by libfuzzer-sys around the target) is a crash.
    CAP.call_once(|| {
        whittle::audio::set_max_audio_seconds(600.0);
        let _ = std::panic::take_hook();
    });
    let Some((&pick, file)) = data.split_first() else {
        return;
    };
    let name = NAMES[usize::from(pick) % NAMES.len()];
    let _ = whittle::audio::load_audio_bytes(file.to_vec(), Path::new(name));
});
