#!/usr/bin/env bash
# whittle against whisper.cpp and faster-whisper on the same clips: wall time of the whole process
# (start-up, model load, audio decoding, transcription), peak RSS, file size and WER.
#
# Usage: scripts/bench_peers.sh [--no-build] [MODEL]      (tiny.en, the default, or base)
# Engines, greedy decoding without timestamps, THREADS (default 2) threads each:
#   whittle f32 (the CTranslate2 folder), and .whittle files made by `whittle quantize` (RTN):
#     W8 g32, W5 g32, W4 g32 (each with the token embedding at the same format) and W4 g64 + W8 g64
#     embedding;
#   whisper.cpp 1.8.5 (pywhispercpp 1.5.1, scripts/setup_peers.sh) on files `whittle export` wrote
#     from the same weights: f16 (from the CTranslate2 folder), q8_0 (from W8 g32), q5_0 (from W5 g32),
#     q4_0 (from W4 g32), every matrix copied code for code;
#   faster-whisper 1.2.1 (CTranslate2 4.8.5) float32 and int8 on the CTranslate2 folder.
# Timing: ROUNDS (default 3) rounds on the real set, the engines alternated within each round; each
# engine's fastest round is kept. WER: the real set (real-15, 137 words) from the timed runs, and
# synth-test-clean (SETS, default "synth-test-clean"; empty to skip) from one untimed run each.
# Prints a markdown table; raw outputs in out/bench-peers/MODEL/. Environment: THREADS, ROUNDS, SETS,
# WHITTLE_ASSETS, WHITTLE_VENV, WHITTLE_PEERS_VENV, WHITTLE_BIN (implies --no-build).
# Timings are only comparable on an otherwise idle machine.
set -euo pipefail

BUILD=1
MODEL=tiny.en
for arg in "$@"; do
    case $arg in
        --no-build) BUILD=0 ;;
        tiny.en|base) MODEL=$arg ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: $0 [--no-build] [tiny.en|base]" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export WHITTLE_ASSETS=${WHITTLE_ASSETS:-$ROOT/.assets}
VENV=${WHITTLE_VENV:-$ROOT/.venv}
PEERS=${WHITTLE_PEERS_VENV:-$ROOT/.venv-peers}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-3}
SETS=${SETS-synth-test-clean}
export OMP_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
SPELLINGS=$WHITTLE_ASSETS/text/english.json
REAL=$WHITTLE_ASSETS/data/real-15.jsonl
SOURCE=$WHITTLE_ASSETS/models/whisper-$MODEL
OUT=$ROOT/out/bench-peers/$MODEL
WHITTLE=${WHITTLE_BIN:-$ROOT/target/release/whittle}

die() { echo "bench_peers.sh: $*" >&2; exit 1; }
[[ -f $REAL ]] || die "no real set at $REAL: run scripts/setup.sh"
[[ -f $SOURCE/model.bin ]] || die "no model at $SOURCE: run scripts/setup.sh"
[[ -x $VENV/bin/python ]] || die "no faster-whisper venv at $VENV: run scripts/setup.sh"
[[ -x $PEERS/bin/python ]] || die "no whisper.cpp venv at $PEERS: run scripts/setup_peers.sh"
for set in $SETS; do
    [[ -f $WHITTLE_ASSETS/data/$set/manifest.jsonl ]] || die "no $set: run scripts/make_splits.sh"
done
if ((BUILD)) && [[ -z ${WHITTLE_BIN:-} ]]; then
    cargo build --release -q -p whittle-cli || die "cargo build --release -p whittle-cli failed"
fi
[[ -x $WHITTLE ]] || die "$WHITTLE not built: run cargo build --release -p whittle-cli"
mkdir -p "$OUT/files"

# The compressed files, untimed: .whittle files, then their whisper.cpp exports.
declare -A QUANTIZE=(
    [w8g32]="--bits 8 --group 32 --embedding-bits 8"
    [w5g32]="--bits 5 --group 32 --embedding-bits 5"
    [w4g32]="--bits 4 --group 32 --embedding-bits 4"
    [w4g64e8]="--bits 4 --group 64 --embedding-bits 8"
)
for name in "${!QUANTIZE[@]}"; do
    file=$OUT/files/$name.whittle
    [[ -f $file ]] || "$WHITTLE" quantize "$SOURCE" ${QUANTIZE[$name]} -o "$file" >&2 \
        || die "quantize $name failed"
done
declare -A EXPORT=([f16]=$SOURCE [q8_0]=$OUT/files/w8g32.whittle [q5_0]=$OUT/files/w5g32.whittle
    [q4_0]=$OUT/files/w4g32.whittle)
for type in "${!EXPORT[@]}"; do
    file=$OUT/files/ggml-$type.bin
    if [[ ! -f $file ]]; then
        "$WHITTLE" export "${EXPORT[$type]}" --ggml-type "$type" --require-exact -o "$file" \
            --report "$OUT/files/ggml-$type.json" >&2 || die "export $type failed"
    fi
done

ENGINES=(whittle-f32 whittle-w8g32 whittle-w5g32 whittle-w4g32 whittle-w4g64e8
    whispercpp-f16 whispercpp-q8_0 whispercpp-q5_0 whispercpp-q4_0 fw-float32 fw-int8)

# engine_file ENGINE: the model file or folder the engine reads.
engine_file() {
    case $1 in
        whittle-f32|fw-*) echo "$SOURCE" ;;
        whittle-*) echo "$OUT/files/${1#whittle-}.whittle" ;;
        whispercpp-*) echo "$OUT/files/ggml-${1#whispercpp-}.bin" ;;
    esac
}

# run ENGINE MANIFEST DIR: transcribe MANIFEST into DIR/utterances.jsonl, measured into DIR/measure.json.
run() {
    local engine=$1 manifest=$2 dir=$3 model
    model=$(engine_file "$engine")
    mkdir -p "$dir"
    local cmd
    case $engine in
        whittle-*) cmd=("$WHITTLE" --threads "$THREADS" eval "$model" "$manifest" --out "$dir"
                        --spellings "$SPELLINGS") ;;
        whispercpp-*) cmd=("$PEERS/bin/python" scripts/reference/whispercpp_transcribe.py --model "$model"
                           --manifest "$manifest" --threads "$THREADS" --out "$dir/utterances.jsonl") ;;
        fw-*) cmd=("$VENV/bin/python" scripts/reference/transcribe.py --model "$model" --manifest "$manifest"
                   --compute-type "${engine#fw-}" --beam-size 1 --threads "$THREADS"
                   --out "$dir/utterances.jsonl") ;;
    esac
    python3 scripts/reference/measure.py -- "${cmd[@]}" >"$dir/measure.json.tmp" 2>"$dir/log.txt" \
        || die "$engine on $manifest failed (log: $dir/log.txt)"
    tail -1 "$dir/measure.json.tmp" >"$dir/measure.json"
    rm -f "$dir/measure.json.tmp"
}

for ((round = 1; round <= ROUNDS; round++)); do
    for engine in "${ENGINES[@]}"; do
        echo "== $MODEL: $engine, real-15, round $round ($THREADS threads)" >&2
        run "$engine" "$REAL" "$OUT/real/$engine/r$round"
    done
done
for set in $SETS; do
    for engine in "${ENGINES[@]}"; do
        if [[ ! -f $OUT/$set/$engine/utterances.jsonl ]]; then
            echo "== $MODEL: $engine, $set (WER only)" >&2
            run "$engine" "$WHITTLE_ASSETS/data/$set/manifest.jsonl" "$OUT/$set/$engine"
        fi
    done
done

python3 - "$OUT" "$WHITTLE" "$SPELLINGS" "$REAL" "$WHITTLE_ASSETS" "$SOURCE" "$ROUNDS" "$SETS" "${ENGINES[@]}" <<'PY'
import json, os, re, subprocess, sys
out, whittle, spellings, real, assets, source, rounds, sets, *engines = sys.argv[1:]
rounds, sets = int(rounds), sets.split()

def hyp(path):
    # whittle eval writes `hypothesis`; the peers' scripts write `text`.
    rows = [json.loads(l) for l in open(path) if l.strip()]
    fixed = path + ".hyp.jsonl"
    with open(fixed, "w") as f:
        for r in rows:
            f.write(json.dumps({"id": r["id"], "text": r.get("hypothesis", r.get("text", ""))}) + "\n")
    return fixed

def wer(manifest, utterances):
    o = subprocess.run([whittle, "wer", "--ref", manifest, "--hyp", hyp(utterances), "--spellings", spellings],
                       capture_output=True, text=True)
    m = re.search(r"WER ([0-9.]+)% \((\d+)/(\d+)\)", o.stdout)
    return f"{m[1]} % ({m[2]}/{m[3]})" if m else "n/a"

def size_mb(engine):
    name = engine.split("-", 1)[1]
    if engine == "whittle-f32" or engine.startswith("fw-"):
        path = os.path.join(source, "model.bin")
    elif engine.startswith("whittle-"):
        path = f"{out}/files/{name}.whittle"
    else:
        path = f"{out}/files/ggml-{name}.bin"
    return os.path.getsize(path) / 1e6

best = {}
for e in engines:
    runs = [(json.load(open(f"{out}/real/{e}/r{r}/measure.json")), r) for r in range(1, rounds + 1)]
    m, r = min(runs, key=lambda x: x[0]["wall_seconds"])
    best[e] = (m, r)
base = best["whispercpp-q4_0"][0]["wall_seconds"]
labels = {
    "whittle-f32": ("whittle", "f32"), "whittle-w8g32": ("whittle", "W8 g32"),
    "whittle-w5g32": ("whittle", "W5 g32"), "whittle-w4g32": ("whittle", "W4 g32"),
    "whittle-w4g64e8": ("whittle", "W4 g64 + emb W8"),
    "whispercpp-f16": ("whisper.cpp", "f16"), "whispercpp-q8_0": ("whisper.cpp", "q8_0"),
    "whispercpp-q5_0": ("whisper.cpp", "q5_0"), "whispercpp-q4_0": ("whisper.cpp", "q4_0"),
    "fw-float32": ("faster-whisper", "float32"), "fw-int8": ("faster-whisper", "int8"),
}
head = "| engine | format | file MB | wall s (real-15, whole process) | x whisper.cpp q4_0 | peak RSS MB | WER real-15 |"
head += "".join(f" WER {s} |" for s in sets)
print(head)
print("|" + "---|" * (7 + len(sets)))
for e in engines:
    m, r = best[e]
    size = size_mb(e)
    cells = [*labels[e], f"{size:.1f}", f"{m['wall_seconds']:.2f}",
             f"{m['wall_seconds'] / base:.2f}", f"{m['peak_rss_mb']:.0f}",
             wer(real, f"{out}/real/{e}/r{r}/utterances.jsonl")]
    for s in sets:
        cells.append(wer(os.path.join(assets, "data", s, "manifest.jsonl"), f"{out}/{s}/{e}/utterances.jsonl"))
    print("| " + " | ".join(cells) + " |")
PY
