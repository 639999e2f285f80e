//! SIGKILL during `whittle quantize` and `whittle compress` (issue 17): whenever the process dies,
//! each output path is either absent or a complete file (a `.whittle` that opens and validates, a
//! bit map that parses), never a truncated file under the final name.
//!
//! Each command is first timed uninterrupted, then killed at fractions of that time, so the kills
//! spread over loading, computing and writing whatever the machine's speed.

#[path = "../../whittle/tests/common_wide.rs"]
mod common_wide;

use common_wide::common_tiny;

mod common_compress;
use common_compress::{compress_args, compress_fixture};

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Where the kills land, as fractions of the uninterrupted run time.
const KILL_AT: [f64; 14] = [
    0.1, 0.3, 0.5, 0.6, 0.7, 0.75, 0.8, 0.85, 0.88, 0.91, 0.94, 0.96, 0.98, 1.0,
];

fn spawn(args: &[&str]) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_whittle"))
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run whittle")
}

/// Each of `outputs` is absent or complete; returns how many were present.
fn check_outputs(outputs: &[PathBuf], when: &str) -> usize {
    let mut present = 0;
    for path in outputs {
        if !path.exists() {
            continue;
        }
        present += 1;
        let name = path.display();
        match path.extension().and_then(|e| e.to_str()) {
            Some("whittle") => {
                whittle::packed_file::PackedFile::open(path)
                    .unwrap_or_else(|e| panic!("{when}: {name} is not a complete file: {e}"));
            }
            Some("toml") => {
                whittle::compress::bitmap::BitMap::from_file(path)
                    .unwrap_or_else(|e| panic!("{when}: {name} does not parse: {e}"));
            }
            _ => {}
        }
    }
    present
}

/// Runs `args` once to completion (all `outputs` must then exist), then kills it at each of
/// [`KILL_AT`] of that time and checks the outputs after each kill. `scratch` (work folders) is
/// removed before each run with the outputs. Returns the kills that left no output and those
/// that left all of them.
fn kill_and_check(args: &[&str], outputs: &[PathBuf], scratch: &[PathBuf]) -> (usize, usize) {
    let remove = || {
        for path in outputs {
            let _ = std::fs::remove_file(path);
        }
        for dir in scratch {
            let _ = std::fs::remove_dir_all(dir);
        }
    };
    remove();
    let t0 = Instant::now();
    let status = spawn(args).wait().unwrap();
    let full = t0.elapsed();
    assert!(status.success(), "uninterrupted run of {args:?} failed");
    assert_eq!(check_outputs(outputs, "after a full run"), outputs.len());
    let (mut none, mut all) = (0, 0);
    for fraction in KILL_AT {
        remove();
        let delay = full.mul_f64(fraction);
        let mut child = spawn(args);
        std::thread::sleep(delay);
        // SIGKILL on Unix: no destructor, no cleanup runs.
        let _ = child.kill();
        child.wait().unwrap();
        let present = check_outputs(outputs, &format!("killed after {delay:?}"));
        none += usize::from(present == 0);
        all += usize::from(present == outputs.len());
    }
    println!(
        "{}: {full:?} uninterrupted; {} kills: {none} left no output, {all} left all",
        args[0],
        KILL_AT.len()
    );
    (none, all)
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn sigkill_during_quantize_leaves_no_truncated_file() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model");
    common_wide::write_wide_hf(&model, 3);
    let out = dir.path().join("out.whittle");
    let (none, _) = kill_and_check(
        &["quantize", p(&model), "--bits", "4", "-o", p(&out)],
        std::slice::from_ref(&out),
        &[],
    );
    // The early kills land before anything is written: the test did interrupt the command.
    assert!(none > 0, "every kill came after the output was written");
}

#[test]
fn sigkill_during_compress_leaves_no_truncated_file() {
    let (dir, model) = compress_fixture("uniform-qat-w4.toml", &[]);
    let outputs = [
        dir.path().join("out.whittle"),
        dir.path().join("out.bitmap.toml"),
    ];
    let args = compress_args(dir.path(), &model, &[]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (none, _) = kill_and_check(&args, &outputs, &[dir.path().join("out.work")]);
    assert!(none > 0, "every kill came after the outputs were written");
}
