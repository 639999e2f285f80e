#!/usr/bin/env bash
# Coverage-guided fuzzing of whittle's readers: runs each cargo-fuzz target in fuzz/ for SECONDS
# (default 60) from its committed seeds, and prints executions, exec/s and crashes per target.
# Needs the nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz --locked`).
# A crash is left in fuzz/artifacts/TARGET/; reproduce with `cargo +nightly fuzz run TARGET FILE`.
#
# Limits per input (issue 17): -rss_limit_mb=2048 (the 64x-size + 256 MB bound for the largest
# inputs libFuzzer makes here, -max_len=1 MiB, is 320 MB; 2 GB leaves room for the sanitizer),
# -malloc_limit_mb=320 (one allocation above the bound is a finding), -timeout=1 (no input
# slower than 1 s).
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
SECONDS_PER_TARGET="${1:-60}"
TARGETS=(ct2_whisper whittle_file hf_safetensors ggml_whisper audio bitmap_recipe gguf)
[[ -n "${FUZZ_TARGETS:-}" ]] && read -r -a TARGETS <<<"$FUZZ_TARGETS"
# cargo-fuzz's defaults: optimised, with debug assertions, overflow checks and AddressSanitizer.
for t in "${TARGETS[@]}"; do cargo +nightly fuzz build "$t"; done
mkdir -p logs
printf '%-16s %12s %10s %s\n' target execs exec/s result
for t in "${TARGETS[@]}"; do
    mkdir -p "corpus/$t" "artifacts/$t"
    seeds=()
    [[ -d "seeds/$t" ]] && seeds=("seeds/$t")
    status=ok
    cargo +nightly fuzz run "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$SECONDS_PER_TARGET" -max_len=1048576 -timeout=1 \
        -rss_limit_mb=2048 -malloc_limit_mb=320 -print_final_stats=1 \
        >"logs/$t.log" 2>&1 || status="FAILED (see fuzz/logs/$t.log, fuzz/artifacts/$t/)"
    execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo 0)
    rate=$(grep -o 'stat::average_exec_per_sec: *[0-9]*' "logs/$t.log" | grep -o '[0-9]*$' || echo 0)
    printf '%-16s %12s %10s %s\n' "$t" "${execs:-0}" "${rate:-0}" "$status"
done
