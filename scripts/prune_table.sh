#!/usr/bin/env bash
# The structured-pruning sweep of issue 12 (docs/pruning.md): at each sparsity S of the prunable
# parameters, three ways to prune, each followed by the same distillation fine-tune from the
# unpruned model (recipes/distill.toml through `compress --teacher`):
#   mag-S     the magnitude baseline (`whittle prune --magnitude S --align 64`), no gates;
#   l0-S      L0 hard-concrete gates with layerwise distillation (recipes/prune-l0.toml, target S);
#   l0nolw-S  the same gates without the layerwise terms (recipes/prune-l0-no-layerwise.toml);
# and the combined rows, which compress a fine-tuned pruned row ROW further into one file:
#   ROW+ptqB  GPTQ of every linear layer at B bits (group 64) and the token embedding at 8 bits
#   ROW+mpX   one-stage learned mixed precision (recipes/mp-onestage.toml, budget X stored bits,
#             distilled from the unpruned model)
# (a combined row needs ROW's .whittle file, so it runs in the session that made ROW).
# Every row is written to a .whittle file, evaluated on the whole test sets and compared with the
# float model by `whittle eval --compare` (scripts/eval_table.py); `whittle bench window` times
# every row against the unpruned model in one invocation; `whittle report shapes` draws the
# surviving heads and units per layer.
#
# Resumable: finished rows and evaluations under results/prune-table/<model>/ are reused (that
# folder is committed, without its .whittle files and work folders: see scripts/table_common.sh),
# and a compression whose work folder holds a checkpoint continues with --resume. Selection (the best
# dev checkpoint) uses DEV_SET only; the test sets are never used to choose anything.
#
# Usage: scripts/prune_table.sh [--no-build] [--no-table] [tiny.en|base]
# Environment:
#   SPARSITIES ("0.2 0.35 0.5 0.6")  fractions of the prunable parameters to remove
#   ROWS                             rows to run, in order (default: mag-S and l0-S at every S;
#                                    l0nolw-S and the combined rows only when named)
#   STEPS                            override schedule.steps of every recipe (smoke runs; the
#                                    warm-up is capped at STEPS/10 and dev scoring at the end)
#   TRAIN_LIMIT                      use only the first N training utterances (smoke runs)
#   DEV_SET (synth-dev-other)        the selection set: dev sentences in voices held out from
#                                    training (synth-dev, in the training voices, rewarded adapting
#                                    to them: docs/evaluation.md)
#   DEV_LIMIT (80)                   dev utterances scored at each evaluation (spread over DEV_SET)
#   SPEED_PROB                       speed perturbation in every recipe's [augment] at this
#                                    probability (docs/augmentation.md): another protocol, so give
#                                    it its own PRUNE_TABLE_OUT
#   SETS ("real synth-test-clean synth-test-other"), BATCH (8), THREADS (2), MARGIN (10)
#   PSEUDO_LABELS                    the teacher's pseudo-label cache (default: the MP table's, so
#                                    the two protocols label the training set once)
#   WHITTLE_BIN                      the whittle binary (default target/release/whittle)
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
export WHITTLE_ASSETS=$ASSETS
THREADS=${THREADS:-2}
BATCH=${BATCH:-8}
MARGIN=${MARGIN:-10}
SPARSITIES=${SPARSITIES:-"0.2 0.35 0.5 0.6"}
read -r -a SETS <<<"${SETS:-real synth-test-clean synth-test-other}"
WHITTLE=${WHITTLE_BIN:-$ROOT/target/release/whittle}
OUT=${PRUNE_TABLE_OUT:-$ROOT/results/prune-table}/$MODEL
LABELS=${PSEUDO_LABELS:-$ROOT/results/mp-table/$MODEL/pseudo-labels.jsonl}
die() { echo "prune_table.sh: $*" >&2; exit 1; }
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
mkdir -p "$OUT" "$(dirname "$LABELS")"
check_assets "$SRC"
if [[ -z ${ROWS:-} ]]; then
    ROWS=""
    for s in $SPARSITIES; do ROWS+="mag-$s l0-$s "; done
fi

compress() { # name model recipe [extra args]
    local name=$1 model=$2 recipe=$3 resume=() limit=()
    shift 3
    [[ -n ${TRAIN_LIMIT:-} ]] && limit=(--train-limit "$TRAIN_LIMIT")
    [[ -f $OUT/$name.whittle ]] && return
    row_done "$name" && return
    [[ -f $OUT/$name.work/state.json ]] && resume=(--resume)
    echo "== $MODEL: $name (compress)" >&2
    timed "$name" "$WHITTLE" --threads "$THREADS" compress "$model" --recipe "$recipe" --train "$TRAIN" \
        --dev "$DEV" --pseudo-labels "$LABELS" -o "$OUT/$name.whittle" \
        "${resume[@]}" "${limit[@]}" "$@" >"$OUT/$name.compress.txt"
}

# The float baseline: a copy of the MP table's evaluation when it is there (same model and sets).
if [[ ! -e $OUT/float && -d $ROOT/results/mp-table/$MODEL/float ]] \
    && cmp -s "$ROOT/results/mp-table/$MODEL/assets.sha256" "$OUT/assets.sha256"; then
    cp -r "$ROOT/results/mp-table/$MODEL/float" "$OUT/float"
fi
evaluate float "$SRC"

recipe recipes/distill.toml "$OUT/distill.recipe.toml"
# A fine-tuned pruned row compressed further (ROW+ptqB, ROW+mpX).
combined() { # row
    local row=$1 base=${1%%+*} combo=${1#*+}
    [[ -f $OUT/$base.whittle ]] || die "$row needs $base.whittle: run $base in the same session \
(its file is not kept in results/)"
    case $combo in
        ptq[2-8])
            if [[ ! -f $OUT/$row.whittle ]]; then
                echo "== $MODEL: $row (GPTQ of $base)" >&2
                timed "$row" "$WHITTLE" --threads "$THREADS" quantize "$OUT/$base.whittle" --bits "${combo#ptq}" \
                    --group 64 --embedding-bits 8 --method gptq --calib "$TRAIN" --calib-limit 32 \
                    -o "$OUT/$row.whittle" >"$OUT/$row.quantize.txt"
            fi
            ;;
        mp*)
            sed -e "s/^budget_bits = .*/budget_bits = ${combo#mp}/" recipes/mp-onestage.toml >"$OUT/$row.source.toml"
            recipe "$OUT/$row.source.toml" "$OUT/$row.recipe.toml"
            compress "$row" "$OUT/$base.whittle" "$OUT/$row.recipe.toml" --teacher "$SRC"
            ;;
        *) die "unknown combined row $row (ROW+ptqB or ROW+mpX)" ;;
    esac
}

for row in $ROWS; do
    row_done "$row" && continue
    if [[ $row == *+* ]]; then
        combined "$row"
        evaluate "$row" "$OUT/$row.whittle"
        continue
    fi
    kind=${row%-*} s=${row##*-}
    case $kind in
        mag)
            if [[ ! -f $OUT/$row.pruned.whittle ]]; then
                echo "== $MODEL: $row (magnitude pruning)" >&2
                timed "$row.prune" "$WHITTLE" prune "$SRC" --magnitude "$s" --align 64 -o "$OUT/$row.pruned.whittle" \
                    >"$OUT/$row.prune.txt"
            fi
            ;;
        l0 | l0nolw)
            source_recipe=recipes/prune-l0.toml
            [[ $kind == l0nolw ]] && source_recipe=recipes/prune-l0-no-layerwise.toml
            recipe "$source_recipe" "$OUT/$row.gates.recipe.toml" "s/^target_sparsity = .*/target_sparsity = $s/"
            compress "$row.pruned" "$SRC" "$OUT/$row.gates.recipe.toml"
            ;;
        *) die "unknown row $row (mag-S, l0-S or l0nolw-S)" ;;
    esac
    # The same fine-tune for every row: distilled from the unpruned model.
    compress "$row" "$OUT/$row.pruned.whittle" "$OUT/distill.recipe.toml" --teacher "$SRC"
    evaluate "$row" "$OUT/$row.whittle"
done

((TABLE)) || exit 0
# shellcheck disable=SC2086
python3 scripts/eval_table.py --whittle "$WHITTLE" --margin "$MARGIN" --root "$OUT" --sets "${SETS[@]}" \
    --rows $ROWS --json "$OUT/rows.json" | tee "$OUT/table.md"
echo | tee -a "$OUT/table.md"
python3 scripts/lossless_ratios.py "$OUT/rows.json" --compare l0:mag l0:l0nolw | tee -a "$OUT/table.md"
# (combined rows are their own methods there, e.g. `mag+ptq4` or `l0+mp3.5`.)
files=()
for row in $ROWS; do [[ -f $OUT/$row.whittle ]] && files+=("$OUT/$row.whittle"); done
for f in "${files[@]}"; do "$WHITTLE" report shapes "$f" -o "$OUT/figures"; done
"$WHITTLE" report pareto "$OUT/rows.json" --name "$MODEL-pruning" -o "$OUT/figures"
echo
echo "One 30 s window, pruned rows against the unpruned model (whittle bench window):" | tee -a "$OUT/table.md"
"$WHITTLE" --threads "$THREADS" bench window "$SRC" "${files[@]}" --runs 5 --tokens 40 | tee -a "$OUT/table.md"
echo
echo "Compression time, wall s / CPU s (pruning or gates, then the fine-tune):" | tee -a "$OUT/table.md"
for row in $ROWS; do
    [[ $row == *+* ]] && { echo "  $row: $(cat "$OUT/$row.seconds" 2>/dev/null || echo "?") / $(cat "$OUT/$row.cpu-seconds" 2>/dev/null || echo "?") after ${row%%+*}"; continue; }
    first=$row.prune
    [[ -f $OUT/$first.seconds ]] || first=$row.pruned
    echo "  $row: $(cat "$OUT/$first.seconds" 2>/dev/null || echo "?") / $(cat "$OUT/$first.cpu-seconds" 2>/dev/null || echo "?") + fine-tune $(cat "$OUT/$row.seconds" 2>/dev/null || echo "?") / $(cat "$OUT/$row.cpu-seconds" 2>/dev/null || echo "?")"
done | tee -a "$OUT/table.md"
