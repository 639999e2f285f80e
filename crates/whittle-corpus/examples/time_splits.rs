//! Builds the standard splits without the CLI and prints how long each took.
//! Usage: time_splits ROOT TRAIN_H DEV_H CLEAN_H OTHER_H [JOBS]
use std::path::Path;
use whittle_corpus::engine::EnginePaths;
use whittle_corpus::splits::{build_standard_splits, SplitSizes};
use whittle_corpus::synth::NoProgress;
use whittle_corpus::text::JANEAUSTENR_DATA_DIR;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let hours = |i: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(0.01);
    let sizes = SplitSizes {
        train: hours(2),
        dev: hours(3),
        test_clean: hours(4),
        test_other: hours(5),
    };
    let jobs = args.get(6).and_then(|s| s.parse().ok()).unwrap_or(0);
    let reports = build_standard_splits(
        Path::new(&args[1]),
        sizes,
        0,
        Path::new(JANEAUSTENR_DATA_DIR),
        &EnginePaths::default(),
        jobs,
        None,
        &NoProgress,
    )?;
    for (name, r) in reports {
        println!(
            "{name}: {} utts, {:.3} h, dropped {}, {:.1} s",
            r.utterances, r.hours, r.dropped_out_of_range, r.elapsed_s
        );
    }
    Ok(())
}
