#!/usr/bin/env bash
# The demo from README.md: set everything up on a fresh Debian machine, build whittle, and run the
# main job on Whisper tiny.en and the 15 real utterances:
#   1. measure the float model (WER/CER, RTF);
#   2. synthesise a small calibration set from Jane Austen (train sentences only, never the
#      sentences the real clips read) and compress every linear layer to 4 bits and the token
#      embedding (also the output projection) to 8 bits (GPTQ, groups of 64) into one packed
#      .whittle file;
#   3. evaluate the packed file with the low-bit kernels, and test whether its WER differs
#      significantly from the float model's (matched-pairs test).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p whittle-cli
whittle=target/release/whittle
model=.assets/models/whisper-tiny.en
data=.assets/data/real-15.jsonl
out=out/demo
mkdir -p "$out"
echo "== whittle inspect (head) =="
"$whittle" inspect "$model" >"$out/inspect-tiny.en.txt"
head -8 "$out/inspect-tiny.en.txt"
echo "== whittle transcribe jfk.wav =="
"$whittle" transcribe "$model" .assets/data/real-15/jfk.wav
echo "== 1. whittle eval tiny.en (float) on real-15 =="
"$whittle" eval "$model" "$data" --out "$out/tiny.en-real-15"
echo "== 2. calibration audio (synthetic, train sentences) and GPTQ: 4-bit linears, 8-bit embedding =="
"$whittle" corpus synth --text austen-except:sensesensibility --sentences train --voices A \
    --hours 0.04 --seed 7 --out "$out/calibration"
"$whittle" quantize "$model" --bits 4 --group 64 --embedding-bits 8 --method gptq \
    --calib "$out/calibration" --calib-limit 24 -o "$out/tiny.en-w4g64-e8-gptq.whittle"
"$whittle" inspect "$out/tiny.en-w4g64-e8-gptq.whittle" >"$out/inspect-w4g64-e8-gptq.txt"
head -4 "$out/inspect-w4g64-e8-gptq.txt"
echo "== 3. whittle eval of the packed file, and the significance test against float =="
"$whittle" eval "$out/tiny.en-w4g64-e8-gptq.whittle" "$data" --out "$out/tiny.en-w4g64-e8-gptq-real-15"
"$whittle" eval --compare "$out/tiny.en-real-15" "$out/tiny.en-w4g64-e8-gptq-real-15"
echo "outputs: $out/ (utterances.jsonl and summary.json per evaluation; the .whittle file)"
