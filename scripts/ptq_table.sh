#!/usr/bin/env bash
# The post-training quantization table (issue #4, redone for issue #10): every format x method,
# written to .whittle files, evaluated from the file on the whole test sets, with size, ratio to
# fp32, WER per set, and per set the verdict of `whittle eval --compare` against the float model
# (relative WER change with its 95 % bootstrap CI, MAPSSWE p, minimum detectable difference), the
# number of looping utterances (hypothesis longer than 2 x reference + 5 words), RTF and peak RSS.
# Prints a Markdown table (saved as out/ptq-table/<model>/table.md, and its rows as rows.json for
# `whittle report pareto`; finished files and evaluations
# there are reused, so an interrupted run resumes).
#
# Decoding: greedy, temperature 0, no fallback, without timestamps (eval's deterministic default).
# The sets are test sets only: nothing here selects on them, and dev is not reported.
#
# Usage: scripts/ptq_table.sh [--no-build] [--no-table] [tiny.en|base ...]
# Environment:
#   THREADS (2)             threads for quantization and evaluation
#   SETS ("real synth-test-clean synth-test-other")  whole sets: `real` is data/real.jsonl (every
#                           real clip with a transcript), the others the splits of make_splits.sh
#   CALIB_UTTERANCES (32)   GPTQ calibration utterances (from synth-train, disjoint from every test set)
#   ROWS                    FORMAT-METHOD rows in the order to run them (default: every FORMATS x
#                           METHODS), e.g. ROWS="w4g64e8-gptq w4g64-rtn"
#   FORMATS                 space-separated subset of: w8 w6g64 w5g64 w4g64 w4g64e8 w4 w3g64 w2g64 ternary
#                           (w4g64e8: W4 g64 with the token embedding / output projection at W8 g64)
#   METHODS ("rtn gptq")
#   BATCH (1)               utterances per `whittle eval --batch-size` batch (same transcripts)
#   MARGIN (10)             equivalence margin in % for the verdict
#   WHITTLE_BIN             the whittle binary (default target/release/whittle)
#   EXTRA                   extra rows from files compressed elsewhere, as FORMAT-METHOD=FILE entries,
#                           e.g. EXTRA="w3g64-qat=out/tiny-qat-w3.whittle" (give one model)
# Needs scripts/setup.sh and scripts/make_splits.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD=1
TABLE=1
MODELS=()
for arg in "$@"; do
    case $arg in
        --no-build) BUILD=0 ;;
        --no-table) TABLE=0 ;;
        tiny.en|base) MODELS+=("$arg") ;;
        *) echo "usage: $0 [--no-build] [--no-table] [tiny.en|base ...]" >&2; exit 2 ;;
    esac
done
[[ ${#MODELS[@]} -gt 0 ]] || MODELS=(tiny.en base)
ASSETS=${WHITTLE_ASSETS:-$ROOT/.assets}
THREADS=${THREADS:-2}
read -r -a SETS <<<"${SETS:-real synth-test-clean synth-test-other}"
CALIB_UTTERANCES=${CALIB_UTTERANCES:-32}
EXTRA=${EXTRA:-}
FORMATS=${FORMATS:-"w8 w6g64 w5g64 w4g64 w4g64e8 w4 w3g64 w2g64 ternary"}
METHODS=${METHODS:-"rtn gptq"}
BATCH=${BATCH:-1}
MARGIN=${MARGIN:-10}
WHITTLE=${WHITTLE_BIN:-$ROOT/target/release/whittle}
OUT=${PTQ_TABLE_OUT:-$ROOT/out/ptq-table}
die() { echo "ptq_table.sh: $*" >&2; exit 1; }
((BUILD)) && [[ -z ${WHITTLE_BIN:-} ]] && { cargo build --release -q -p whittle-cli || die "cargo build failed"; }
CALIB=$ASSETS/data/synth-train/manifest.jsonl
[[ -f $CALIB ]] || die "no $CALIB: run scripts/make_splits.sh"

manifest() {
    case $1 in
        real) echo "$ASSETS/data/real.jsonl" ;;
        *) echo "$ASSETS/data/$1/manifest.jsonl" ;;
    esac
}
for set in "${SETS[@]}"; do
    [[ -f $(manifest "$set") ]] || die "no manifest for set $set ($(manifest "$set")): run scripts/setup.sh and scripts/make_splits.sh"
done
if [[ -z ${ROWS:-} ]]; then
    ROWS=""
    for format in $FORMATS; do
        for method in $METHODS; do
            [[ $format == ternary && $method == gptq ]] && continue # ternary is TWN only
            ROWS+="$format-$method "
        done
    done
fi
mkdir -p "$OUT"

format_args() {
    case $1 in
        w8) echo "--bits 8" ;;
        w6g64) echo "--bits 6 --group 64" ;;
        w5g64) echo "--bits 5 --group 64" ;;
        w4g64) echo "--bits 4 --group 64" ;;
        w4g64e8) echo "--bits 4 --group 64 --embedding-bits 8" ;;
        w4) echo "--bits 4" ;;
        w3g64) echo "--bits 3 --group 64" ;;
        w2g64) echo "--bits 2 --group 64" ;;
        ternary) echo "--bit-map $OUT/ternary-1.6bit.toml" ;;
        *) die "unknown format $1" ;;
    esac
}
printf 'default = { format = "ternary", group = 64, layout = "1.6bit" }\n' >"$OUT/ternary-1.6bit.toml"

evaluate() { # name model-path
    local name=$1 model=$2 batch=()
    ((BATCH > 1)) && batch=(--batch-size "$BATCH")
    for set in "${SETS[@]}"; do
        local dir=$OUT/$name/$set
        if [[ ! -f $dir/summary.json ]]; then
            echo "   eval $name on $set" >&2
            "$WHITTLE" --threads "$THREADS" eval "$model" "$(manifest "$set")" "${batch[@]}" --out "$dir" >/dev/null \
                || die "eval $name on $set failed"
        fi
    done
}

for model in "${MODELS[@]}"; do
    src=$ASSETS/models/whisper-$model
    [[ -f $src/model.bin ]] || die "no model at $src"
    echo "== $model: float (shipped fp16 weights, f32 compute)" >&2
    evaluate "$model/float" "$src"
    for row in $ROWS; do
        format=${row%-*} method=${row##*-}
        name=$model/$row
        file=$OUT/$name.whittle
        if [[ ! -f $file ]]; then
            echo "== $model: $format $method" >&2
            calib=()
            [[ $method == gptq ]] && calib=(--calib "$CALIB" --calib-limit "$CALIB_UTTERANCES")
            mkdir -p "$(dirname "$file")"
            # shellcheck disable=SC2046
            "$WHITTLE" --threads "$THREADS" quantize "$src" $(format_args "$format") \
                --method "$method" "${calib[@]}" -o "$file" >"$OUT/$name.quantize.txt" \
                || die "quantize $name failed"
        fi
        evaluate "$name" "$file"
    done
    # Extra rows: already compressed files of this model (QAT outputs), `FORMAT-METHOD=FILE`.
    for entry in $EXTRA; do
        [[ $entry == *=* ]] || die "EXTRA entry $entry: expected FORMAT-METHOD=FILE"
        [[ -f ${entry#*=} ]] || die "EXTRA entry $entry: no file ${entry#*=}"
        echo "== $model: ${entry%%=*} (${entry#*=})" >&2
        evaluate "$model/${entry%%=*}" "${entry#*=}"
    done
    ((TABLE)) || continue
    python3 scripts/eval_table.py --whittle "$WHITTLE" --margin "$MARGIN" --root "$OUT/$model" \
        --sets "${SETS[@]}" --json "$OUT/$model/rows.json" | tee "$OUT/$model/table.md"
done
