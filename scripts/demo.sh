#!/usr/bin/env bash
# The demo from README.md: set everything up on a fresh Debian machine, build whittle, and
# transcribe and score the 15 real utterances with Whisper tiny.en.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p whittle-cli
model=.assets/models/whisper-tiny.en
data=.assets/data/real-15.jsonl
echo "== whittle inspect (head) =="
target/release/whittle inspect "$model" | head -8
echo "== whittle transcribe jfk.wav =="
target/release/whittle transcribe "$model" .assets/data/real-15/jfk.wav
echo "== whittle eval tiny.en on real-15 =="
target/release/whittle eval "$model" "$data" --out out/demo/tiny.en-real-15
echo "per-utterance results: out/demo/tiny.en-real-15/utterances.jsonl; summary: out/demo/tiny.en-real-15/summary.json"
