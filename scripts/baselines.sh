#!/usr/bin/env bash
# The "uncompressed" baseline table (issue #3): whittle eval of Whisper tiny.en and base on every
# evaluation split, side by side with the faster-whisper (CTranslate2 float32) reference on the
# same clips, greedy, without timestamps, temperature 0.
#
# Usage: scripts/baselines.sh [--no-build] [--models "tiny.en base"] [--splits "real synth-test-clean ..."]
# Writes out/baselines/<model>/<split>/{whittle,reference}/ and prints a Markdown table (also saved
# as out/baselines/table.md). Needs scripts/setup.sh and scripts/make_splits.sh to have run.
# Environment: THREADS (default 2), WHITTLE_ASSETS (default .assets), WHITTLE_VENV (default .venv),
# WHITTLE_BIN (default target/release/whittle). Sets are always whole: `real` is data/real.jsonl
# (every real clip with a transcript), the others are make_splits.sh's splits.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD=1
MODELS="tiny.en base"
SPLITS="real synth-test-clean synth-test-other"
while [[ $# -gt 0 ]]; do
    case $1 in
        --no-build) BUILD=0 ;;
        --models) MODELS=$2; shift ;;
        --splits) SPLITS=$2; shift ;;
        *) echo "usage: $0 [--no-build] [--models LIST] [--splits LIST]" >&2; exit 2 ;;
    esac
    shift
done
ASSETS=${WHITTLE_ASSETS:-$ROOT/.assets}
VENV=${WHITTLE_VENV:-$ROOT/.venv}
THREADS=${THREADS:-2}
export OMP_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
WHITTLE=${WHITTLE_BIN:-$ROOT/target/release/whittle}
OUT=$ROOT/out/baselines
die() { echo "baselines.sh: $*" >&2; exit 1; }

[[ -x $VENV/bin/python ]] || die "no reference venv at $VENV: run scripts/setup.sh"
if ((BUILD)) && [[ -z ${WHITTLE_BIN:-} ]]; then cargo build --release -q -p whittle-cli || die "cargo build failed"; fi

manifest() {
    case $1 in
        real) echo "$ASSETS/data/real.jsonl" ;;
        *) echo "$ASSETS/data/$1/manifest.jsonl" ;;
    esac
}

for model in $MODELS; do
    dir=$ASSETS/models/whisper-$model
    [[ -f $dir/model.bin ]] || die "no model at $dir: run scripts/setup.sh"
    for split in $SPLITS; do
        m=$(manifest "$split")
        [[ -f $m ]] || die "no manifest $m: run scripts/make_splits.sh"
        o=$OUT/$model/$split
        mkdir -p "$o/reference"
        # Finished runs are kept, so an interrupted table resumes (delete out/baselines to redo).
        if [[ -f $o/reference/score.json && -f $o/whittle/summary.json ]]; then continue; fi
        echo "== $model / $split: whittle f32" >&2
        "$WHITTLE" --threads "$THREADS" eval "$dir" "$m" --out "$o/whittle" --dtype f32 --beam-size 1 >/dev/null \
            || die "whittle eval $model $split failed"
        echo "== $model / $split: faster-whisper float32" >&2
        "$VENV/bin/python" scripts/reference/transcribe.py --model "$dir" --manifest "$m" --compute-type float32 \
            --beam-size 1 --threads "$THREADS" --out "$o/reference/utterances.jsonl" >"$o/reference/summary.json" \
            || die "reference $model $split failed"
        "$WHITTLE" wer --ref "$m" --hyp "$o/reference/utterances.jsonl" --json >"$o/reference/score.json" \
            || die "whittle wer on the reference output failed"
    done
done

python3 - "$OUT" "$MODELS" "$SPLITS" <<'PY' | tee "$OUT/table.md"
import json, sys, os
out, models, splits = sys.argv[1], sys.argv[2].split(), sys.argv[3].split()
def loops(path):
    """Utterances whose normalised hypothesis is longer than 2 x reference + 5 words."""
    n = 0
    for line in open(path):
        u = json.loads(line)
        n += len(u["hypothesis_normalized"].split()) > 2 * len(u["reference_normalized"].split()) + 5
    return n
print("| model | split | hours | words | whittle WER | whittle CER | whittle looping utterances | faster-whisper WER | faster-whisper CER | whittle RTF | faster-whisper RTF | fp16 size (MB) |")
print("|---|---|---|---|---|---|---|---|---|---|---|---|")
for model in models:
    for split in splits:
        d = os.path.join(out, model, split)
        w = json.load(open(os.path.join(d, "whittle", "summary.json")))
        r = json.load(open(os.path.join(d, "reference", "summary.json")))
        s = json.load(open(os.path.join(d, "reference", "score.json")))
        t = w["totals"]
        print(f"| {model} | {split} | {t['audio_seconds']/3600:.2f} | {t['words']['reference_len']} | "
              f"{100*w['wer']:.2f} % | {100*w['cer']:.2f} % | {loops(os.path.join(d, 'whittle', 'utterances.jsonl'))} | {100*s['wer']:.2f} % | {100*s['cer']:.2f} % | "
              f"{w['rtf']:.3f} | {r['rtf']:.3f} | {w['model']['weights_bytes']/1e6:.1f} |")
PY
