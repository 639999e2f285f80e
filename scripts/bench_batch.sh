#!/usr/bin/env bash
# Utterances per second of batched vs sequential evaluation, whittle and faster-whisper, in one invocation.
#
# Usage: scripts/bench_batch.sh [--no-build]
# Set: the first 48 utterances of $WHITTLE_ASSETS/data/synth-test-clean/manifest.jsonl when it exists,
# else real-15. Models: Whisper tiny.en f32, and tiny.en W4 g64 + W8 g64 token embedding (RTN), packed
# with `whittle quantize` into a .whittle file. Engines, all greedy (beam 1), temperature 0, no
# timestamps, on THREADS threads (default 2):
#   - whittle eval --batch-size 1 (sequential) and each of BATCHES (default "8 16");
#   - faster-whisper WhisperModel.transcribe per utterance (sequential) and BatchedInferencePipeline
#     with clip_timestamps (no VAD) at each of BATCHES (scripts/reference/batched.py), float32 beside
#     whittle f32 and int8 beside whittle W4.
# utt/s = utterances / transcription seconds (audio decoding and model loading excluded on both sides).
# The ratio column is utt/s over the same engine's sequential utt/s, measured in this invocation;
# "differ" counts transcripts that differ from the sequential run's. For whittle batched runs, the
# encoder and decoder seconds per utterance come from the `batch timing` debug events.
# Environment: THREADS, BATCHES, LIMIT (synthetic utterances, default 48), WHITTLE_ASSETS, WHITTLE_VENV, WHITTLE_BIN (implies --no-build).
# Outputs under out/bench-batch/. Timings are only comparable on an otherwise quiet machine: the load
# average is printed with the table.
set -euo pipefail

BUILD=1
for arg in "$@"; do
    case $arg in
        --no-build) BUILD=0 ;;
        *) echo "usage: $0 [--no-build]" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export WHITTLE_ASSETS=${WHITTLE_ASSETS:-$ROOT/.assets}
VENV=${WHITTLE_VENV:-$ROOT/.venv}
THREADS=${THREADS:-2}
BATCHES=${BATCHES:-8 16}
export OMP_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
OUT=$ROOT/out/bench-batch
WHITTLE=${WHITTLE_BIN:-$ROOT/target/release/whittle}
MODEL=$WHITTLE_ASSETS/models/whisper-tiny.en

die() { echo "bench_batch.sh: $*" >&2; exit 1; }
[[ -f $MODEL/model.bin ]] || die "no model at $MODEL: run scripts/setup.sh"
[[ -x $VENV/bin/python ]] || die "no reference venv at $VENV: run scripts/setup.sh (without --no-reference)"
if ((BUILD)) && [[ -z ${WHITTLE_BIN:-} ]]; then
    cargo build --release -q -p whittle-cli || die "cargo build --release -p whittle-cli failed"
fi
[[ -x $WHITTLE ]] || die "$WHITTLE not built: run cargo build --release -p whittle-cli"
mkdir -p "$OUT"

# The set, with absolute audio paths.
SYNTH=$WHITTLE_ASSETS/data/synth-test-clean/manifest.jsonl
if [[ -f $SYNTH ]]; then
    SET_NAME="synth-test-clean, first ${LIMIT:-48}"
    SOURCE=$SYNTH
    COUNT=${LIMIT:-48}
else
    SET_NAME="real-15"
    SOURCE=$WHITTLE_ASSETS/data/real-15.jsonl
    COUNT=0
fi
[[ -f $SOURCE ]] || die "no manifest at $SOURCE: run scripts/setup.sh"
SET=$OUT/set.jsonl
python3 - "$SOURCE" "$SET" "$COUNT" <<'EOF'
import json, os, sys
src, dst, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
rows = [json.loads(line) for line in open(src) if line.strip()]
rows = rows[:count] if count else rows
base = os.path.dirname(os.path.abspath(src))
with open(dst + ".tmp", "w") as f:
    for row in rows:
        f.write(json.dumps({"id": row["id"], "audio": os.path.join(base, row["audio"]), "text": row["text"]}) + "\n")
os.replace(dst + ".tmp", dst)
EOF

W4=$OUT/tiny.en-w4g64-e8.whittle
"$WHITTLE" quantize "$MODEL" --bits 4 --group 64 --embedding-bits 8 --method rtn -o "$W4" >&2 \
    || die "whittle quantize failed"

LOAD_BEFORE=$(uptime)
ROWS=()
# whittle_runs LABEL MODEL: sequential and batched evals, one table row each.
whittle_runs() {
    local label=$1 model=$2 seq_ups
    for b in 1 $BATCHES; do
        local dir=$OUT/whittle-$label-b$b
        echo "== whittle $label, batch $b ($THREADS threads)" >&2
        RUST_LOG=warn,whittle::models::whisper::batch=debug "$WHITTLE" --threads "$THREADS" eval "$model" "$SET" \
            --out "$dir" --batch-size "$b" 2>"$dir.log" >&2 || die "whittle eval $label --batch-size $b failed (see $dir.log)"
        local row
        row=$(python3 - "$dir" "$OUT/whittle-$label-b1" "$b" "${seq_ups:-0}" <<'EOF'
import json, re, sys
out, seq_dir, batch, seq_ups = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
s = json.load(open(f"{out}/summary.json"))
n = s["totals"]["utterances"]
ups = n / s["totals"]["transcribe_seconds"]
hyp = lambda d: [json.loads(l)["hypothesis"] for l in open(f"{d}/utterances.jsonl")]
differ = sum(a != b for a, b in zip(hyp(out), hyp(seq_dir)))
enc = dec = 0.0
for line in open(f"{out}.log"):
    line = re.sub(r"\x1b\[[0-9;]*m", "", line)
    if "batch timing" in line:
        enc += float(re.search(r"encoder_seconds=([0-9.e-]+)", line).group(1))
        dec += float(re.search(r"decoder_seconds=([0-9.e-]+)", line).group(1))
ratio = ups / seq_ups if seq_ups else 1.0
split = f"{enc / n:.3f} / {dec / n:.3f}" if enc else "-"
print(f"{ups:.3f} {ratio:.2f} {differ} {split}")
EOF
)
        read -r ups ratio differ split <<<"$row"
        [[ $b == 1 ]] && seq_ups=$ups
        ROWS+=("$(printf '| whittle        | %-17s | %-10s | %7s | %6sx | %6s | %-15s |' \
            "$label" "$([[ $b == 1 ]] && echo sequential || echo "batch $b")" "$ups" "$ratio" "$differ" "$split")")
    done
}

# fw_runs LABEL COMPUTE_TYPE: faster-whisper sequential and batched, one table row each.
fw_runs() {
    local label=$1 compute=$2 json
    echo "== faster-whisper $compute ($THREADS threads)" >&2
    # shellcheck disable=SC2086
    json=$("$VENV/bin/python" scripts/reference/batched.py --model "$MODEL" --manifest "$SET" \
        --compute-type "$compute" --threads "$THREADS" --batch-sizes $BATCHES --out "$OUT/fw-$compute") \
        || die "scripts/reference/batched.py ($compute) failed"
    echo "$json" >"$OUT/fw-$compute.json"
    while read -r line; do ROWS+=("$line"); done < <(python3 - "$json" "$label" <<'EOF'
import json, sys
s, label = json.loads(sys.argv[1]), sys.argv[2]
seq = s["sequential"]["utterances_per_second"]
for name, run in s.items():
    if not isinstance(run, dict):
        continue
    how = "sequential" if name == "sequential" else "batch " + name.split("-")[1]
    print(f"| faster-whisper | {label:<17} | {how:<10} | {run['utterances_per_second']:7.3f} | "
          f"{run['utterances_per_second'] / seq:6.2f}x | {run['transcripts_differing_from_sequential']:>6} | {'-':<15} |")
EOF
)
}

whittle_runs "tiny.en f32" "$MODEL"
fw_runs "tiny.en float32" float32
whittle_runs "tiny.en W4g64+e8" "$W4"
fw_runs "tiny.en int8" int8
LOAD_AFTER=$(uptime)

echo
echo "Utterances/s on $SET_NAME ($(wc -l <"$SET") utterances), greedy, $THREADS threads, $(nproc) cores"
echo "load before: $LOAD_BEFORE"
echo "load after:  $LOAD_AFTER"
echo
echo "| engine         | model             | run        |   utt/s |   x seq | differ | enc / dec s/utt |"
echo "|----------------|-------------------|------------|---------|---------|--------|-----------------|"
printf '%s\n' "${ROWS[@]}"
