#!/usr/bin/env bash
# The mixed-precision protocol of issue 11 (docs/mixed-precision.md): one-stage learned mixed
# precision against uniform QAT and two-stage mixed precision (stage A: KL sensitivity + exact
# allocation; stage B: QAT of the allocated bit map), plus GPTQ of the same bit maps as the
# no-training floor, on the same training data, steps and evaluation. Every row is compressed to a
# .whittle file (wall time recorded), evaluated from the file on the whole test sets, and compared
# with the float model by `whittle eval --compare` (scripts/eval_table.py).
#
# Resumable: finished rows, timings and evaluations under results/mp-table/<model>/ are reused
# (that folder is committed, without its .whittle files and work folders: see
# scripts/table_common.sh), and a compression whose work folder holds a checkpoint continues with
# --resume. Selection (the best
# dev checkpoint) uses DEV_SET only; the test sets are never used to choose anything.
#
# Usage: scripts/mp_table.sh [--no-build] [--no-table] [tiny.en|base]
# Environment:
#   BUDGETS ("3.0 3.5 4.0 5.0")   average stored bits per quantized weight (codes + scales)
#   UNIFORM_BITS ("8 6 5 4 3")    uniform QAT rows (group 64; `4e8` = W4 with the token embedding
#                                 at W8, as the demo's file)
#   ROWS                          rows to run, in order (default: every uniform, one-stage,
#                                 two-stage and GPTQ row); names: uniform-wB[eE], onestage-bX,
#                                 twostage-bX, gptq-bX (GPTQ of the two-stage map), pass2-bX (the
#                                 one-stage map fine-tuned with the two-stage recipe; only if asked)
#   STEPS                         override schedule.steps of every recipe (smoke runs; the
#                                 warm-up is capped at STEPS/10, settling at STEPS/5, and dev
#                                 scoring at the end)
#   TRAIN_LIMIT                   use only the first N training utterances (smoke runs)
#   SENS_UTTERANCES (16)          training utterances for the KL sensitivity of stage A
#   DEV_SET (synth-dev-other)     the selection set: dev sentences in voices held out from
#                                 training (synth-dev, in the training voices, rewarded adapting
#                                 to them: docs/evaluation.md)
#   DEV_LIMIT (80)                dev utterances scored at each evaluation (spread over DEV_SET)
#   SPEED_PROB                    speed perturbation in every recipe's [augment] at this
#                                 probability (docs/augmentation.md): another protocol, so give it
#                                 its own MP_TABLE_OUT
#   SETS ("real synth-test-clean synth-test-other"), BATCH (8), THREADS (2), MARGIN (10)
#   WHITTLE_BIN                   the whittle binary (default target/release/whittle)
# Needs scripts/setup.sh and scripts/make_splits.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD=1
TABLE=1
MODEL=tiny.en
for arg in "$@"; do
    case $arg in
        --no-build) BUILD=0 ;;
        --no-table) TABLE=0 ;;
        tiny.en|base) MODEL=$arg ;;
        *) echo "usage: $0 [--no-build] [--no-table] [tiny.en|base]" >&2; exit 2 ;;
    esac
done
ASSETS=${WHITTLE_ASSETS:-$ROOT/.assets}
THREADS=${THREADS:-2}
BATCH=${BATCH:-8}
MARGIN=${MARGIN:-10}
BUDGETS=${BUDGETS:-"3.0 3.5 4.0 5.0"}
UNIFORM_BITS=${UNIFORM_BITS:-"8 6 5 4 3"}
SENS_UTTERANCES=${SENS_UTTERANCES:-16}
read -r -a SETS <<<"${SETS:-real synth-test-clean synth-test-other}"
WHITTLE=${WHITTLE_BIN:-$ROOT/target/release/whittle}
OUT=${MP_TABLE_OUT:-$ROOT/results/mp-table}/$MODEL
die() { echo "mp_table.sh: $*" >&2; exit 1; }
((BUILD)) && [[ -z ${WHITTLE_BIN:-} ]] && { cargo build --release -q -p whittle-cli || die "cargo build failed"; }
SRC=$ASSETS/models/whisper-$MODEL
TRAIN=$ASSETS/data/synth-train/manifest.jsonl
DEV_SET=${DEV_SET:-synth-dev-other}
DEV_LIMIT=${DEV_LIMIT:-80}
DEV=$ASSETS/data/$DEV_SET/manifest.jsonl
[[ -f $SRC/model.bin ]] || die "no model at $SRC: run scripts/setup.sh"
[[ -f $TRAIN && -f $DEV ]] || die "no synth-train/$DEV_SET: run scripts/make_splits.sh"
# shellcheck source=scripts/table_common.sh
. "$ROOT/scripts/table_common.sh"
check_sets
mkdir -p "$OUT"
check_assets "$SRC"
if [[ -z ${ROWS:-} ]]; then
    ROWS=""
    for b in $UNIFORM_BITS; do ROWS+="uniform-w$b "; done
    for x in $BUDGETS; do ROWS+="onestage-b$x twostage-b$x gptq-b$x "; done
fi

compress() { # name recipe [extra args]
    local name=$1 recipe=$2 resume=() limit=()
    shift 2
    [[ -n ${TRAIN_LIMIT:-} ]] && limit=(--train-limit "$TRAIN_LIMIT")
    [[ -f $OUT/$name.whittle ]] && return
    row_done "$name" && return
    [[ -f $OUT/$name.work/state.json ]] && resume=(--resume)
    echo "== $MODEL: $name (compress)" >&2
    timed "$name" "$WHITTLE" --threads "$THREADS" compress "$SRC" --recipe "$recipe" --train "$TRAIN" \
        --dev "$DEV" --pseudo-labels "$OUT/pseudo-labels.jsonl" -o "$OUT/$name.whittle" \
        "${resume[@]}" "${limit[@]}" "$@" >"$OUT/$name.compress.txt"
}

# Stage A of the two-stage baseline, once per model (its time is added to every two-stage row).
sensitivity() {
    [[ -f $OUT/sens.json ]] && return
    echo "== $MODEL: stage A sensitivity (KL, $SENS_UTTERANCES utterances)" >&2
    timed sens "$WHITTLE" --threads "$THREADS" sensitivity "$SRC" --data "$TRAIN" --metric kl \
        --limit "$SENS_UTTERANCES" -o "$OUT/sens.json" >"$OUT/sens.txt"
}

allocate() { # budget
    local map=$OUT/twostage-b$1.allocated.toml
    [[ -f $map ]] && return
    sensitivity
    timed "allocate-b$1" "$WHITTLE" allocate "$OUT/sens.json" --budget-bits "$1" -o "$map" >"$OUT/allocate-b$1.txt"
}

# The float baseline.
evaluate float "$SRC"

for row in $ROWS; do
    kind=${row%-*} arg=${row##*-}
    case $kind in
        uniform)
            # wB: every linear layer at B bits, the embedding float; wBeE: the embedding at E bits too.
            spec=${arg#w} embedding=()
            bits=${spec%%e*}
            sed -e "s/^bits = .*/bits = $bits/" -e "s/^name = .*/name = \"uniform-qat-w$bits\"/" \
                recipes/uniform-qat-w4.toml >"$OUT/$row.source.toml"
            recipe "$OUT/$row.source.toml" "$OUT/$row.recipe.toml"
            if [[ $spec == *e* ]]; then
                printf 'default = { bits = %s, group = 64 }\n[layers]\n"decoder.embed_tokens" = { bits = %s, group = 64 }\n' \
                    "$bits" "${spec#*e}" >"$OUT/$row.map.toml"
                embedding=(--bit-map "$OUT/$row.map.toml")
            fi
            compress "$row" "$OUT/$row.recipe.toml" "${embedding[@]}"
            ;;
        onestage)
            budget=${arg#b}
            sed -e "s/^budget_bits = .*/budget_bits = $budget/" recipes/mp-onestage.toml >"$OUT/$row.source.toml"
            recipe "$OUT/$row.source.toml" "$OUT/$row.recipe.toml"
            compress "$row" "$OUT/$row.recipe.toml"
            ;;
        twostage)
            budget=${arg#b}
            allocate "$budget"
            recipe recipes/mp-twostage.toml "$OUT/$row.recipe.toml"
            compress "$row" "$OUT/$row.recipe.toml" --bit-map "$OUT/twostage-b$budget.allocated.toml"
            ;;
        gptq)
            budget=${arg#b}
            allocate "$budget"
            if [[ ! -f $OUT/$row.whittle ]] && ! row_done "$row"; then
                echo "== $MODEL: $row (GPTQ of the two-stage map)" >&2
                timed "$row" "$WHITTLE" --threads "$THREADS" quantize "$SRC" \
                    --bit-map "$OUT/twostage-b$budget.allocated.toml" --method gptq --calib "$TRAIN" \
                    --calib-limit 32 -o "$OUT/$row.whittle" >"$OUT/$row.quantize.txt"
            fi
            ;;
        pass2)
            budget=${arg#b}
            # Every compression writes its formats beside the file as a bit map.
            map=$OUT/onestage-b$budget.bitmap.toml
            [[ -f $map ]] || die "$row needs onestage-b$budget first"
            recipe recipes/mp-twostage.toml "$OUT/$row.recipe.toml"
            compress "$row" "$OUT/$row.recipe.toml" --bit-map "$map"
            ;;
        *) die "unknown row $row" ;;
    esac
    row_done "$row" || evaluate "$row" "$OUT/$row.whittle"
done

((TABLE)) || exit 0
# shellcheck disable=SC2086
python3 scripts/eval_table.py --whittle "$WHITTLE" --margin "$MARGIN" --root "$OUT" --sets "${SETS[@]}" \
    --rows $ROWS --json "$OUT/rows.json" | tee "$OUT/table.md"
echo | tee -a "$OUT/table.md"
python3 scripts/lossless_ratios.py "$OUT/rows.json" --compare onestage:uniform onestage:twostage \
    | tee -a "$OUT/table.md"
# The figures: each learned or allocated bit map (from the kept bit map where the file was made
# on another machine), and WER against size for every row.
files=()
for row in $ROWS; do
    if [[ -f $OUT/$row.whittle ]]; then
        files+=("$OUT/$row.whittle")
    elif [[ -f $OUT/$row.bitmap.toml ]]; then
        files+=("$OUT/$row.bitmap.toml")
    fi
done
"$WHITTLE" report bits --model "$SRC" "${files[@]}" -o "$OUT/figures"
"$WHITTLE" report pareto "$OUT/rows.json" --name "$MODEL-mixed-precision" -o "$OUT/figures"
echo
echo "Compression time, wall s / CPU s (two-stage rows add stage A's sensitivity once per row):"
for row in $ROWS; do
    t="$(cat "$OUT/$row.seconds" 2>/dev/null || echo "?") / $(cat "$OUT/$row.cpu-seconds" 2>/dev/null || echo "?")"
    case $row in
        twostage-*|gptq-*)
            t="$t + sens $(cat "$OUT/sens.seconds" 2>/dev/null || echo "?") / $(cat "$OUT/sens.cpu-seconds" 2>/dev/null || echo "?")"
            ;;
    esac
    bits=$(grep -o 'quantized layers [0-9.]* bits' "$OUT/$row.compress.txt" 2>/dev/null | awk '{print $3}' || true)
    echo "  $row: $t${bits:+, $bits bits per quantized weight}"
done | tee -a "$OUT/table.md"
