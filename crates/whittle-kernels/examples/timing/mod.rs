//! What the kernel ratio examples share: deterministic weights, alternating minimum-time
//! measurement (robust to a busy machine) and time formatting.

use std::time::{Duration, Instant};

/// Deterministic pseudo-normal values (a sum of three uniforms), scaled like trained weights.
pub fn values(len: usize, seed: u64, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut uniform = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..len)
        .map(|_| (uniform() + uniform() + uniform() - 1.5) * scale)
        .collect()
}

/// Minimum time of each of `fs` over alternating rounds until `budget` is spent (at least
/// three rounds): the run least disturbed by other processes.
pub fn min_times(fs: &mut [Box<dyn FnMut() + '_>], budget: Duration) -> Vec<Duration> {
    let mut best = vec![Duration::MAX; fs.len()];
    let start = Instant::now();
    let mut rounds = 0;
    while rounds < 3 || start.elapsed() < budget {
        for (f, b) in fs.iter_mut().zip(best.iter_mut()) {
            let t = Instant::now();
            f();
            *b = (*b).min(t.elapsed());
        }
        rounds += 1;
    }
    best
}

/// `12.3 µs` or `4.56 ms`.
pub fn fmt(t: Duration) -> String {
    let us = t.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.1} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}
