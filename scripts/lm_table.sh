#!/usr/bin/env bash
# The language-model table of issue 13 (docs/language-models.md): SmolLM2-135M-Instruct (the
# dequantized Q4_1 GGUF is the float teacher) compressed by post-training RTN, LSQ and ADMM over
# uniform, KL-allocated and Hessian-allocated bit maps, and by the mixed-precision search; each
# row's perplexity on three held-out texts (the written sentences of synth-test-clean and
# synth-test-other, and Hamlet, by another author) compared with float by
# `whittle perplexity --compare` (95 % bootstrap over texts, margin MARGIN %).
#
# Rows (ROWS, in order):
#   float
#   ptq-MAP    RTN of MAP (`perplexity --bit-map`)
#   lsq-MAP    recipes/lm-lsq.toml over MAP (`compress --bit-map`)
#   admm-MAP   recipes/lm-admm.toml over MAP
#   search     recipes/lm-mp-search.toml (the literature's search variant; no map)
# where MAP is wB (every matrix B bits, group 64, the token embedding 8 bits), kl-bX or hess-bX
# (`whittle allocate` of the KL or Hessian-trace sensitivity at X average stored bits, each
# sensitivity measured once on dev sentences).
#
# Resumable across machines: results/lm-table/smollm2-135m/ is committed without its .whittle files
# and work folders (as scripts/table_common.sh describes for the Whisper tables); finished rows,
# sensitivities and maps are reused, a compression whose work folder holds a checkpoint continues
# with --resume. Selection (the best dev checkpoint) uses synth-dev sentences only.
#
# Usage: scripts/lm_table.sh [--no-build] [--no-table]
# Environment: ROWS, THREADS (1), MARGIN (5), SENS_LIMIT (16), PROBES (32), STEPS (override
#   schedule.steps) and LIMIT (score the first N texts only) for smoke runs, LM_TABLE_OUT
#   (results/lm-table; smoke runs belong elsewhere), WHITTLE_BIN.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD=1
TABLE=1
for arg in "$@"; do
    case $arg in
        --no-build) BUILD=0 ;;
        --no-table) TABLE=0 ;;
        *) echo "usage: $0 [--no-build] [--no-table]" >&2; exit 2 ;;
    esac
done
ASSETS=${WHITTLE_ASSETS:-$ROOT/.assets}
THREADS=${THREADS:-1}
MARGIN=${MARGIN:-5}
SENS_LIMIT=${SENS_LIMIT:-16}
PROBES=${PROBES:-32}
ROWS=${ROWS:-"float ptq-w8 ptq-w6 ptq-w4 ptq-w3 lsq-w4 lsq-w3 admm-w4 ptq-hess-b4.0 lsq-hess-b4.0 ptq-hess-b3.0 lsq-hess-b3.0 search"}
WHITTLE=${WHITTLE_BIN:-$ROOT/target/release/whittle}
OUT=${LM_TABLE_OUT:-$ROOT/results/lm-table}/smollm2-135m
MODEL=$ASSETS/models/smollm2-135m-instruct/SmolLM2-135M-Instruct.Q4_1.gguf
TEXTS=(test-clean test-other hamlet)
die() { echo "lm_table.sh: $*" >&2; exit 1; }
((BUILD)) && [[ -z ${WHITTLE_BIN:-} ]] && { cargo build --release -q -p whittle-cli || die "cargo build failed"; }
[[ -f $MODEL ]] || die "no model at $MODEL: run scripts/setup.sh"
mkdir -p "$OUT"

# The sentence files (derived from the built splits, so not kept in results/).
text_file() { # name
    local f=$ROOT/out/lm-texts/$1.txt manifest
    if [[ ! -f $f ]]; then
        mkdir -p "$(dirname "$f")"
        case $1 in
            hamlet) cp "$ASSETS/text/hamlet-sentences.txt" "$f" ;;
            train) manifest=$ASSETS/data/synth-train/manifest.jsonl ;;
            dev) manifest=$ASSETS/data/synth-dev/manifest.jsonl ;;
            test-clean) manifest=$ASSETS/data/synth-test-clean/manifest.jsonl ;;
            test-other) manifest=$ASSETS/data/synth-test-other/manifest.jsonl ;;
        esac
        if [[ -n ${manifest:-} ]]; then
            [[ -f $manifest ]] || die "no $manifest: run scripts/make_splits.sh"
            "$WHITTLE" corpus texts "$manifest" -o "$f" >/dev/null
        fi
    fi
    echo "$f"
}

# The model and every text hashed into OUT/assets.sha256 on the first run; later runs must match.
now=$(for name in train dev "${TEXTS[@]}"; do sha256sum "$(text_file "$name")" | sed "s|  .*|  $name.txt|"; done
    sha256sum "$MODEL" | sed 's|  .*|  model.gguf|')
if [[ -f $OUT/assets.sha256 ]]; then
    [[ $now == "$(cat "$OUT/assets.sha256")" ]] || die "$OUT holds results made on another model or texts \
(assets.sha256 differs); move that folder away or rebuild the assets with scripts/setup.sh and scripts/make_splits.sh"
else
    echo "$now" >"$OUT/assets.sha256"
fi

# `timed`: a command's wall and CPU seconds into OUT/NAME.seconds and OUT/NAME.cpu-seconds.
# shellcheck source=scripts/table_common.sh
. "$ROOT/scripts/table_common.sh"

# (table_common.sh's row_done counts speech evaluations; an LM row is done once every text is
# scored.)
row_done() { # row
    local t
    for t in "${TEXTS[@]}"; do [[ -f $OUT/$1/$t.json ]] || return 1; done
}

# The bit map file of MAP (written once).
bit_map() { # map
    local map=$1 f=$OUT/maps/$1.toml
    mkdir -p "$OUT/maps"
    if [[ ! -f $f ]]; then
        case $map in
            w[2-8])
                printf 'default = { bits = %s, group = 64 }\n[layers]\n"token_embd" = { bits = 8, group = 64 }\n' "${map#w}" >"$f"
                ;;
            kl-b* | hess-b*)
                local metric=${map%%-*} budget=${map#*-b} extra=()
                [[ $metric == hess ]] && { metric=hessian; extra=(--probes "$PROBES" --batch-size 8); }
                if [[ ! -f $OUT/sens-$metric.json ]]; then
                    echo "== sensitivity ($metric, $SENS_LIMIT dev sentences)" >&2
                    timed "sens-$metric" "$WHITTLE" --threads "$THREADS" sensitivity "$MODEL" --data "$(text_file dev)" \
                        --metric "$metric" --candidates 2,3,4,8 --limit "$SENS_LIMIT" "${extra[@]}" \
                        -o "$OUT/sens-$metric.json" >"$OUT/sens-$metric.txt"
                fi
                "$WHITTLE" allocate "$OUT/sens-$metric.json" --budget-bits "$budget" -o "$f.tmp" >"$OUT/maps/$map.txt"
                mv "$f.tmp" "$f"
                ;;
            *) die "unknown map $map (wB, kl-bX or hess-bX)" ;;
        esac
    fi
    echo "$f"
}

# A recipe with the step override applied.
recipe() { # source output
    if [[ -n ${STEPS:-} ]]; then
        sed -e "s/^steps = .*/steps = $STEPS/" -e "s/^warmup_steps = .*/warmup_steps = $((STEPS / 10))/" \
            -e "s/^eval_every = .*/eval_every = 0/" "$1" >"$2"
    else
        cp "$1" "$2"
    fi
}

compress() { # row recipe [extra args]
    local row=$1 recipe=$2 resume=()
    shift 2
    [[ -f $OUT/$row.whittle ]] && return
    [[ -f $OUT/$row.work/state.json ]] && resume=(--resume)
    echo "== $row (compress)" >&2
    timed "$row" "$WHITTLE" --threads "$THREADS" compress "$MODEL" --recipe "$recipe" \
        --train "$(text_file train)" --dev "$(text_file dev)" -o "$OUT/$row.whittle" "${resume[@]}" "$@" \
        >"$OUT/$row.compress.txt"
}

# Perplexity of row $1 on every text; the remaining arguments give the model (and PTQ options).
score() { # row model [options]
    local row=$1 t limit=()
    shift
    [[ -n ${LIMIT:-} ]] && limit=(--limit "$LIMIT")
    mkdir -p "$OUT/$row"
    for t in "${TEXTS[@]}"; do
        [[ -f $OUT/$row/$t.json ]] && continue
        echo "   perplexity $row on $t" >&2
        "$WHITTLE" --threads "$THREADS" perplexity "$@" "${limit[@]}" "$(text_file "$t")" -o "$OUT/$row/$t.json" >/dev/null \
            || die "perplexity of $row on $t failed"
    done
}

for row in $ROWS; do
    row_done "$row" && continue
    case $row in
        float) score float "$MODEL" ;;
        ptq-*) score "$row" "$MODEL" --bit-map "$(bit_map "${row#ptq-}")" ;;
        lsq-* | admm-*)
            trainer=${row%%-*} map=$(bit_map "${row#*-}")
            recipe "recipes/lm-$trainer.toml" "$OUT/$row.recipe.toml"
            compress "$row" "$OUT/$row.recipe.toml" --bit-map "$map"
            score "$row" "$OUT/$row.whittle"
            ;;
        search)
            recipe recipes/lm-mp-search.toml "$OUT/$row.recipe.toml"
            compress "$row" "$OUT/$row.recipe.toml"
            score "$row" "$OUT/$row.whittle"
            ;;
        *) die "unknown row $row" ;;
    esac
done

((TABLE)) || exit 0
# shellcheck disable=SC2086
python3 scripts/lm_table.py --whittle "$WHITTLE" --root "$OUT" --margin "$MARGIN" --texts "${TEXTS[@]}" \
    --rows $ROWS | tee "$OUT/table.md"
