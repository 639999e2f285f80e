//! Learning-rate schedule: linear warm-up, then cosine decay (Loshchilov and Hutter 2017,
//! "SGDR", without restarts) to a floor.

use super::recipe::ScheduleRecipe;

/// Multiplier of the peak learning rate for optimizer step `step` (0-based).
pub fn lr_factor(schedule: &ScheduleRecipe, step: usize) -> f64 {
    let warmup = schedule.warmup_steps;
    if step < warmup {
        return (step + 1) as f64 / warmup as f64;
    }
    let decay_steps = (schedule.steps - warmup).max(1);
    let progress = ((step - warmup) as f64 / decay_steps as f64).min(1.0);
    let floor = schedule.min_lr_ratio;
    floor + (1.0 - floor) * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_cosine_to_the_floor() {
        let s = ScheduleRecipe {
            steps: 110,
            warmup_steps: 10,
            min_lr_ratio: 0.1,
        };
        assert!((lr_factor(&s, 0) - 0.1).abs() < 1e-12);
        assert!((lr_factor(&s, 9) - 1.0).abs() < 1e-12);
        assert!((lr_factor(&s, 10) - 1.0).abs() < 1e-12);
        assert!((lr_factor(&s, 60) - 0.55).abs() < 1e-12);
        assert!((lr_factor(&s, 110) - 0.1).abs() < 1e-12);
        let mut prev = f64::INFINITY;
        for step in 10..110 {
            let f = lr_factor(&s, step);
            assert!(f <= prev, "not decreasing at {step}");
            prev = f;
        }
    }
}
