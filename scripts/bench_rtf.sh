#!/usr/bin/env bash
# Real-time factor of whittle against CTranslate2 (faster-whisper) on the 15 real utterances.
#
# Usage: scripts/bench_rtf.sh [--no-build] [MODEL...]     (models: tiny.en base; default both)
# For each model: whittle eval f32, whittle W4 g64 (linear layers only, and with the token embedding at
# W8 g64 too), faster-whisper float32 and faster-whisper int8, all greedy (beam 1),
# the same clips and the same thread count (THREADS, default 2: --threads, OMP_NUM_THREADS and
# RAYON_NUM_THREADS). RTF = transcription wall seconds / audio seconds, with model loading and audio
# file decoding excluded on both sides (mel features, encoder and decoder included). The ratio column
# is RTF / RTF(CTranslate2 float32) of the same model: below 1 is faster than CTranslate2.
# Prints a markdown table and the machine it ran on (`whittle bench machine`: CPU model,
# instruction-set extensions, the kernels whittle picks); raw outputs go to
# out/bench-rtf/MODEL/{whittle-f32,ct2-float32,ct2-int8}/ and the machine to out/bench-rtf/machine.json.
# ROUNDS (default 1) repeats every engine in turn that many times and keeps each engine's fastest round
# (the one least disturbed by other processes on a shared machine).
# Environment: THREADS, ROUNDS, WHITTLE_ASSETS, WHITTLE_VENV, WHITTLE_BIN (default target/release/whittle;
# --no-build is implied when set). Timings are only comparable on an otherwise idle machine.
set -euo pipefail

BUILD=1
MODELS=()
for arg in "$@"; do
    case $arg in
        --no-build) BUILD=0 ;;
        tiny.en|base) MODELS+=("$arg") ;;
        *) echo "usage: $0 [--no-build] [tiny.en] [base]" >&2; exit 2 ;;
    esac
done
((${#MODELS[@]})) || MODELS=(tiny.en base)

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export WHITTLE_ASSETS=${WHITTLE_ASSETS:-$ROOT/.assets}
VENV=${WHITTLE_VENV:-$ROOT/.venv}
THREADS=${THREADS:-2}
ROUNDS=${ROUNDS:-1}
export OMP_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
MANIFEST=$WHITTLE_ASSETS/data/real-15.jsonl
OUT=$ROOT/out/bench-rtf
WHITTLE=${WHITTLE_BIN:-$ROOT/target/release/whittle}

die() { echo "bench_rtf.sh: $*" >&2; exit 1; }
[[ -f $MANIFEST ]] || die "no manifest at $MANIFEST: run scripts/setup.sh"
[[ -x $VENV/bin/python ]] || die "no reference venv at $VENV: run scripts/setup.sh (without --no-reference)"
if ((BUILD)) && [[ -z ${WHITTLE_BIN:-} ]]; then
    cargo build --release -q -p whittle-cli || die "cargo build --release -p whittle-cli failed"
fi
[[ -x $WHITTLE ]] || die "$WHITTLE not built: run cargo build --release -p whittle-cli"

# Field of a JSON file: `json_field FILE KEY[.KEY...]`.
json_field() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
value = json.load(open(sys.argv[1]))
for key in sys.argv[2].split("."):
    value = value[key]
print(value)
EOF
}

# "x.xx%" from `whittle wer` ("N utterances: WER x.xx% (e/n)  CER ...").
wer() {
    { "$WHITTLE" wer --ref "$MANIFEST" --hyp "$1" | grep -o 'WER [0-9.]*%' | sed 's/^WER //'; } || echo "n/a"
}

ROWS=()
for name in "${MODELS[@]}"; do
    model=$WHITTLE_ASSETS/models/whisper-$name
    [[ -f $model/model.bin ]] || die "no model at $model: run scripts/setup.sh"
    dir=$OUT/$name

    # run_round ENGINE ROUND: one timed run of ENGINE into $dir/ENGINE-rROUND.
    run_round() {
        local engine=$1 out=$dir/$1-r$2
        mkdir -p "$out"
        echo "== $name: $engine, round $2 ($THREADS threads)" >&2
        case $engine in
            ct2-*)
                "$VENV/bin/python" scripts/reference/transcribe.py --model "$model" --manifest "$MANIFEST" \
                    --compute-type "${engine#ct2-}" --beam-size 1 --threads "$THREADS" \
                    --out "$out/utterances.jsonl" >"$out/summary.json" ;;
            whittle-f32)
                "$WHITTLE" --threads "$THREADS" eval "$model" "$MANIFEST" --out "$out" --dtype f32 --beam-size 1 >&2 ;;
            whittle-w4g64)
                "$WHITTLE" --threads "$THREADS" eval "$model" "$MANIFEST" --out "$out" --dtype f32 --beam-size 1 \
                    --quantize 4 --group 64 >&2 ;;
            whittle-w4g64-e8)
                "$WHITTLE" --threads "$THREADS" eval "$model" "$MANIFEST" --out "$out" --dtype f32 --beam-size 1 \
                    --quantize 4 --group 64 --embedding-bits 8 >&2 ;;
        esac || die "$engine on $name failed"
    }
    ENGINES=(whittle-f32 whittle-w4g64 whittle-w4g64-e8 ct2-float32 ct2-int8)
    for ((round = 1; round <= ROUNDS; round++)); do
        for engine in "${ENGINES[@]}"; do run_round "$engine" "$round"; done
    done
    # Keep each engine's fastest round as $dir/ENGINE.
    for engine in "${ENGINES[@]}"; do
        best=$(for ((round = 1; round <= ROUNDS; round++)); do
            echo "$(json_field "$dir/$engine-r$round/summary.json" rtf) $round"
        done | sort -g | head -1 | cut -d' ' -f2)
        rm -rf "${dir:?}/$engine"
        mv "$dir/$engine-r$best" "$dir/$engine"
        rm -rf "$dir/$engine"-r*
    done
    base_rtf=$(json_field "$dir/ct2-float32/summary.json" rtf)
    add_row() { # engine precision rtf seconds utterances-file
        local ratio
        ratio=$(python3 -c "print(f'{$3 / $base_rtf:.2f}')")
        ROWS+=("$(printf '| %-8s | %-15s | %-9s | %6.3f | %7.1f | %9s | %7s |' \
            "$name" "$1" "$2" "$3" "$4" "$ratio" "$(wer "$5")")")
    }
    add_row whittle f32 "$(json_field "$dir/whittle-f32/summary.json" rtf)" \
        "$(json_field "$dir/whittle-f32/summary.json" totals.transcribe_seconds)" "$dir/whittle-f32/utterances.jsonl"
    add_row whittle "W4 g64 (packed)" "$(json_field "$dir/whittle-w4g64/summary.json" rtf)" \
        "$(json_field "$dir/whittle-w4g64/summary.json" totals.transcribe_seconds)" "$dir/whittle-w4g64/utterances.jsonl"
    add_row whittle "W4 g64 + emb W8" "$(json_field "$dir/whittle-w4g64-e8/summary.json" rtf)" \
        "$(json_field "$dir/whittle-w4g64-e8/summary.json" totals.transcribe_seconds)" "$dir/whittle-w4g64-e8/utterances.jsonl"
    for ct in float32 int8; do
        add_row faster-whisper "$ct" "$(json_field "$dir/ct2-$ct/summary.json" rtf)" \
            "$(json_field "$dir/ct2-$ct/summary.json" wall_seconds)" "$dir/ct2-$ct/utterances.jsonl"
    done
done

audio=$(python3 - "$MANIFEST" <<'EOF'
import json, os, pathlib, sys, wave
manifest = pathlib.Path(sys.argv[1])
seconds = 0.0
for line in manifest.read_text().splitlines():
    path = manifest.parent / json.loads(line)["audio"]
    if path.suffix == ".raw":
        seconds += os.path.getsize(path) / 32000
    else:
        with wave.open(str(path)) as w:
            seconds += w.getnframes() / w.getframerate()
print(f"{seconds:.1f}")
EOF
)
echo
echo "Real-time factor on real-15 ($(wc -l <"$MANIFEST") utterances, $audio s), greedy, $THREADS threads, $(nproc) cores, fastest of $ROUNDS round(s)"
echo
echo "Machine: $("$WHITTLE" bench machine)"
"$WHITTLE" bench machine --json >"$OUT/machine.json"
echo
echo "| model    | engine          | precision |    RTF | seconds | x CT2 f32 |     WER |"
echo "|----------|-----------------|-----------|--------|---------|-----------|---------|"
printf '%s\n' "${ROWS[@]}"
