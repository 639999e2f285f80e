#!/usr/bin/env bash
# The post-training quantization table (issue #4): every format x method, written to .whittle
# files, evaluated from the file, with size, ratio to fp32, WER on real-15 and synthetic subsets,
# RTF and peak RSS. Prints a Markdown table (saved as out/ptq-table/synthN/<model>/table.md;
# finished files and evaluations there are reused, so an interrupted run resumes).
#
# Usage: scripts/ptq_table.sh [--no-build] [tiny.en|base ...]
# Environment:
#   THREADS (2)             threads for quantization and evaluation
#   SYNTH_UTTERANCES (20)   utterances drawn evenly from each of synth-dev/test-clean/test-other
#                           (0 = real-15 only)
#   CALIB_UTTERANCES (32)   GPTQ calibration utterances (from synth-train, disjoint from every test set)
#   FORMATS                 space-separated subset of: w8 w6g64 w5g64 w4g64 w4g64e8 w4 w3g64 w2g64 ternary
#                           (w4g64e8: W4 g64 with the token embedding / output projection at W8 g64)
#   WHITTLE_BIN             the whittle binary (default target/release/whittle)
#   EXTRA                   extra rows from files compressed elsewhere, as FORMAT-METHOD=FILE entries,
#                           e.g. EXTRA="w3g64-qat=out/tiny-qat-w3.whittle" (give one model)
#   METHODS ("rtn gptq")
# Needs scripts/setup.sh and scripts/make_splits.sh.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
BUILD=1
MODELS=()
for arg in "$@"; do
    case $arg in
        --no-build) BUILD=0 ;;
        tiny.en|base) MODELS+=("$arg") ;;
        *) echo "usage: $0 [--no-build] [tiny.en|base ...]" >&2; exit 2 ;;
    esac
done
[[ ${#MODELS[@]} -gt 0 ]] || MODELS=(tiny.en base)
ASSETS=${WHITTLE_ASSETS:-$ROOT/.assets}
THREADS=${THREADS:-2}
SYNTH_UTTERANCES=${SYNTH_UTTERANCES:-20}
CALIB_UTTERANCES=${CALIB_UTTERANCES:-32}
EXTRA=${EXTRA:-}
FORMATS=${FORMATS:-"w8 w6g64 w5g64 w4g64 w4g64e8 w4 w3g64 w2g64 ternary"}
METHODS=${METHODS:-"rtn gptq"}
WHITTLE=${WHITTLE_BIN:-$ROOT/target/release/whittle}
OUT=${PTQ_TABLE_OUT:-$ROOT/out/ptq-table/synth$SYNTH_UTTERANCES}
die() { echo "ptq_table.sh: $*" >&2; exit 1; }
((BUILD)) && { cargo build --release -q -p whittle-cli || die "cargo build failed"; }
CALIB=$ASSETS/data/synth-train/manifest.jsonl
[[ -f $CALIB ]] || die "no $CALIB: run scripts/make_splits.sh"

# Evaluation sets: real-15 plus an evenly spaced subset of each synthetic split (absolute paths).
mkdir -p "$OUT/sets"
SETS=(real-15)
subset() { python3 scripts/subset_manifest.py "$@" || die "cannot subset $1"; }
subset "$ASSETS/data/real-15.jsonl" "$OUT/sets/real-15.jsonl" 0
if ((SYNTH_UTTERANCES > 0)); then
    for split in synth-dev synth-test-clean synth-test-other; do
        subset "$ASSETS/data/$split/manifest.jsonl" "$OUT/sets/$split.jsonl" "$SYNTH_UTTERANCES"
        SETS+=("$split")
    done
fi

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
    local name=$1 model=$2
    for set in "${SETS[@]}"; do
        local dir=$OUT/$name/$set
        if [[ ! -f $dir/summary.json ]]; then
            "$WHITTLE" --threads "$THREADS" eval "$model" "$OUT/sets/$set.jsonl" --out "$dir" >/dev/null \
                || die "eval $name on $set failed"
        fi
    done
}

for model in "${MODELS[@]}"; do
    src=$ASSETS/models/whisper-$model
    [[ -f $src/model.bin ]] || die "no model at $src"
    echo "== $model: float (shipped fp16 weights, f32 compute)" >&2
    evaluate "$model/float" "$src"
    for format in $FORMATS; do
        for method in $METHODS; do
            [[ $format == ternary && $method == gptq ]] && continue # ternary is TWN only
            name=$model/$format-$method
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
    done
    # Extra rows: already compressed files of this model (QAT outputs), `FORMAT-METHOD=FILE`.
    for entry in $EXTRA; do
        [[ $entry == *=* ]] || die "EXTRA entry $entry: expected FORMAT-METHOD=FILE"
        [[ -f ${entry#*=} ]] || die "EXTRA entry $entry: no file ${entry#*=}"
        echo "== $model: ${entry%%=*} (${entry#*=})" >&2
        evaluate "$model/${entry%%=*}" "${entry#*=}"
    done
    python3 - "$OUT" "$model" "$WHITTLE" "${SETS[@]}" <<'PY' | tee "$OUT/$model/table.md"
import json, os, subprocess, sys
out, model, whittle, sets = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
root = os.path.join(out, model)
rows = sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d)))
rows = ["float"] + [r for r in rows if r != "float"]
float_summary = json.load(open(os.path.join(root, "float", sets[0], "summary.json")))
fp32 = float_summary["model"]["parameters"] * 4
def pooled(row):
    """All sets' utterances of one row in one file, for the significance test."""
    path = os.path.join(root, row, "all-sets.jsonl")
    with open(path, "w") as f:
        for x in sets:
            for line in open(os.path.join(root, row, x, "utterances.jsonl")):
                r = json.loads(line)
                r["id"] = x + "/" + r["id"]
                f.write(json.dumps(r) + "\n")
    return path
def versus_float(row):
    if row == "float":
        return "-"
    o = subprocess.run([whittle, "eval", "--compare", pooled("float"), pooled(row), "--json"],
                       capture_output=True, text=True, check=True)
    v = json.loads(o.stdout)
    return f"{100 * (v['wer_b'] - v['wer_a']):+.2f} (p {v['p_value']:.2f}{', sig.' if v['significant_at_05'] else ''})"
print("| format | method | file MB | x fp32 | " + " | ".join(f"WER {s}" for s in sets) + " | all sets vs float: WER points (MAPSSWE p) | RTF real-15 | peak RSS MB |")
print("|---|---|---|---|" + "---|" * len(sets) + "---|---|---|")
for r in rows:
    s = {x: json.load(open(os.path.join(root, r, x, "summary.json"))) for x in sets}
    first = s[sets[0]]
    size = first["model"]["weights_bytes"]
    fmt, _, method = r.partition("-")
    label = {"float": "fp16 file, f32 compute"}.get(fmt, fmt.upper().replace("G", " g").replace("TERNARY", "ternary g64 (1.6 bit)").replace("E8", " + embedding W8 g64"))
    if method == "rtn" and fmt == "ternary":
        method = "twn"
    wers = " | ".join(f"{100 * s[x]['wer']:.2f} %" for x in sets)
    rss = first.get("peak_rss_bytes")
    print(f"| {label} | {method or '-'} | {size / 1e6:.1f} | {fp32 / size:.2f} | {wers} | {versus_float(r)} | {first['rtf']:.3f} | {rss / 1e6 if rss else float('nan'):.0f} |")
words = {x: float_summary if x == sets[0] else json.load(open(os.path.join(root, 'float', x, 'summary.json'))) for x in sets}
print()
print("Words per set: " + ", ".join(f"{x} {words[x]['totals']['words']['reference_len']}" for x in sets))
PY
done
