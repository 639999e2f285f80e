//! Timing of the log-mel front end on Whisper's 30 s window. Ignored by default; run with
//! `cargo test --release -p whittle-audio --test mel_speed -- --ignored --nocapture`.
//! It prints figures and asserts only on shapes: timings vary with the machine.

use std::time::Instant;

use whittle_audio::mel::{
    log_mel_spectrogram, log_mel_spectrogram_with_padding, N_FRAMES_30S, N_SAMPLES_30S,
};

const RUNS: usize = 15;

fn speech_like_signal(len: usize) -> Vec<f32> {
    let mut state: u32 = 1;
    (0..len)
        .map(|n| {
            state = state.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
            let noise = (state >> 8) as f32 / 16_777_216.0 - 0.5;
            let t = n as f32 / 16_000.0;
            0.3 * (2.0 * std::f32::consts::PI * 220.0 * t).sin() + 0.05 * noise
        })
        .collect()
}

fn median_ms(mut run: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..RUNS)
        .map(|_| {
            let start = Instant::now();
            run();
            start.elapsed().as_secs_f64() * 1e3
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[RUNS / 2]
}

#[test]
#[ignore = "timing; run explicitly in release mode"]
fn log_mel_30s_window_timing() {
    let full_window = speech_like_signal(N_SAMPLES_30S);
    let ten_seconds = speech_like_signal(N_SAMPLES_30S / 3);
    let single = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    for n_mels in [80, 128] {
        // 3000 frames of non-silent audio: every frame needs its FFT.
        let check = log_mel_spectrogram_with_padding(&full_window, n_mels, 0);
        assert_eq!(check.n_frames, N_FRAMES_30S);
        let one_core = single.install(|| {
            median_ms(|| {
                log_mel_spectrogram_with_padding(&full_window, n_mels, 0);
            })
        });
        let all_cores = median_ms(|| {
            log_mel_spectrogram_with_padding(&full_window, n_mels, 0);
        });
        // A 10 s clip with whisper's 30 s padding: 4000 frames, 3000 of them silent.
        let padded = single.install(|| {
            median_ms(|| {
                log_mel_spectrogram(&ten_seconds, n_mels);
            })
        });
        println!(
            "{n_mels} mels, 30 s of audio (3000 frames): {one_core:.2} ms on 1 thread, \
             {all_cores:.2} ms on {} threads; 10 s clip + 30 s padding: {padded:.2} ms on 1 thread",
            rayon::current_num_threads()
        );
    }
}
