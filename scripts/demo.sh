#!/usr/bin/env bash
# The demo from README.md: set everything up on a fresh Debian machine, build whittle, and run the
# main job on Whisper tiny.en:
#   1. transcribe a clip, and a 44 s reading as subtitles (Whisper's standard long-form decoding);
#   2. build the synth-test-clean test split (40 min of held-out sentences and voices, > 7,000
#      words) and measure the float model on it and on the real set (WER with its 95 % CI);
#   3. synthesise a small calibration set from Jane Austen (train sentences and voices only) and
#      compress every linear layer to 4 bits and the token embedding (also the output projection)
#      to 8 bits (GPTQ, groups of 64) into one packed .whittle file;
#   4. evaluate the packed file with the low-bit kernels on the same sets, and give the verdict of
#      `whittle eval --compare` on each: significantly worse/better, equivalent within 10 %, or
#      inconclusive. A model is lossless only when it is equivalent on every test set.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --release --locked -p whittle-cli
whittle=target/release/whittle
model=.assets/models/whisper-tiny.en
out=out/demo
mkdir -p "$out"
echo "== whittle inspect (head) =="
"$whittle" inspect "$model" >"$out/inspect-tiny.en.txt"
head -8 "$out/inspect-tiny.en.txt"
echo "== 1. whittle transcribe jfk.wav; two_cities.wav (44 s) as subtitles =="
"$whittle" transcribe "$model" .assets/data/real-15/jfk.wav
"$whittle" transcribe "$model" .assets/data/real/two_cities.wav --format srt >"$out/two_cities.srt"
head -8 "$out/two_cities.srt"
echo "== 2. the synth-test-clean split, and the float model on it and on the real set =="
scripts/make_splits.sh --only synth-test-clean
sets=(real:.assets/data/real.jsonl synth-test-clean:.assets/data/synth-test-clean/manifest.jsonl)
for entry in "${sets[@]}"; do
    "$whittle" eval "$model" "${entry#*:}" --batch-size 8 --out "$out/float-${entry%%:*}"
done
echo "== 3. calibration audio (synthetic, train sentences and voices) and GPTQ: 4-bit linears, 8-bit embedding =="
"$whittle" corpus synth --text austen-except:sensesensibility --sentences train --voices A \
    --hours 0.04 --seed 7 --out "$out/calibration"
packed=$out/tiny.en-w4g64-e8-gptq.whittle
"$whittle" quantize "$model" --bits 4 --group 64 --embedding-bits 8 --method gptq \
    --calib "$out/calibration" --calib-limit 24 -o "$packed"
"$whittle" inspect "$packed" >"$out/inspect-w4g64-e8-gptq.txt"
head -4 "$out/inspect-w4g64-e8-gptq.txt"
echo "== 4. the packed file on the same sets, and the verdict against float on each =="
verdicts=()
for entry in "${sets[@]}"; do
    name=${entry%%:*}
    "$whittle" eval "$packed" "${entry#*:}" --batch-size 8 --out "$out/w4g64-e8-gptq-$name"
    echo "-- $name: float vs W4 g64 + W8 embedding (GPTQ)"
    "$whittle" eval --compare "$out/float-$name" "$out/w4g64-e8-gptq-$name"
    verdicts+=("$name: $("$whittle" eval --compare "$out/float-$name" "$out/w4g64-e8-gptq-$name" --json \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["verdict"])')")
done
echo "== verdicts (lossless only if 'equivalent' on every test set): ${verdicts[*]}"
echo "outputs: $out/ (utterances.jsonl and summary.json per evaluation; the .whittle file)"
