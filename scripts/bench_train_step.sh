#!/usr/bin/env bash
# Training-step speed of whittle against PyTorch (CPU): one LSQ QAT step on the same weights and batch.
#
# Usage: scripts/bench_train_step.sh [--no-build] [MODEL]     (MODEL: tiny.en (default) or base)
# One invocation runs both sides on the same thread count (THREADS, default 2: --threads, torch's
# set_num_threads, OMP_NUM_THREADS and RAYON_NUM_THREADS):
#   1. the fixed batch (first BATCH utterances of real-15, log-mel capped at AUDIO_SECONDS) is written once to
#      out/bench-train/MODEL/batch.safetensors by scripts/reference/qat_step.py (its docstring defines it);
#   2. whittle bench train-step MODEL --batch-file that file --bits --group --steps --warmup --json;
#   3. scripts/reference/qat_step.py --batch-file that file with the same settings, in .venv-torch.
# The step is teacher forward + student forward with LSQ fake quantization of every linear layer +
# KL distillation loss + backward + AdamW. Prints a markdown row: median ms/step of each side, whittle's
# speed relative to PyTorch (torch_ms / whittle_ms: above 1 is faster than PyTorch; the issue's target
# is >= 0.7) and both first-step losses with their relative difference (identical weights, batch and
# hyper-parameters give the same loss up to float rounding: a correctness check, not only a timing).
# Raw JSON goes to out/bench-train/MODEL/{whittle,torch}.json. The machine (CPU model, its
# instruction-set extensions, the kernels whittle picks and PyTorch's CPU capability) is printed
# under the row and stored in whittle.json: BENCHMARKS.md keeps rows per CPU family.
# Environment: THREADS, BATCH (4), AUDIO_SECONDS (6), BITS (4), GROUP (64), STEPS (5), WARMUP (1),
#   WHITTLE_ASSETS, WHITTLE_TORCH_VENV (default .venv-torch, made by scripts/setup_torch.sh),
#   WHITTLE_BIN (default target/release/whittle; --no-build is implied when set).
# Timings are only comparable on an otherwise idle machine.
set -euo pipefail

BUILD=1
MODEL_NAME=tiny.en
for arg in "$@"; do
    case $arg in
        --no-build) BUILD=0 ;;
        tiny.en|base) MODEL_NAME=$arg ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "usage: $0 [--no-build] [tiny.en|base]" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export WHITTLE_ASSETS=${WHITTLE_ASSETS:-$ROOT/.assets}
VENV=${WHITTLE_TORCH_VENV:-$ROOT/.venv-torch}
THREADS=${THREADS:-2}
BATCH=${BATCH:-4}
AUDIO_SECONDS=${AUDIO_SECONDS:-6}
BITS=${BITS:-4}
GROUP=${GROUP:-64}
STEPS=${STEPS:-5}
WARMUP=${WARMUP:-1}
export OMP_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
MODEL=$WHITTLE_ASSETS/models/whisper-$MODEL_NAME
MANIFEST=$WHITTLE_ASSETS/data/real-15.jsonl
OUT=$ROOT/out/bench-train/$MODEL_NAME
WHITTLE=${WHITTLE_BIN:-$ROOT/target/release/whittle}
QAT_STEP=$ROOT/scripts/reference/qat_step.py

die() { echo "bench_train_step.sh: $*" >&2; exit 1; }
[[ -f $MODEL/model.bin ]] || die "no model at $MODEL: run scripts/setup.sh"
[[ -f $MANIFEST ]] || die "no manifest at $MANIFEST: run scripts/setup.sh"
[[ -x $VENV/bin/python ]] || die "no PyTorch venv at $VENV: run scripts/setup_torch.sh"
if ((BUILD)) && [[ -z ${WHITTLE_BIN:-} ]]; then
    cargo build --release -q -p whittle-cli || die "cargo build --release -p whittle-cli failed"
fi
[[ -x $WHITTLE ]] || die "$WHITTLE not built: run cargo build --release -p whittle-cli"
help=$("$WHITTLE" bench train-step --help 2>&1) \
    || die "$WHITTLE has no 'bench train-step' command (the training engine of issue 5); nothing to compare yet"
grep -q -- '--batch-file' <<<"$help" \
    || die "'whittle bench train-step' has no --batch-file option, so both sides cannot be given the same batch"

mkdir -p "$OUT"
BATCH_FILE=$OUT/batch.safetensors
"$VENV/bin/python" "$QAT_STEP" --model "$MODEL" --manifest "$MANIFEST" --batch "$BATCH" --seconds "$AUDIO_SECONDS" \
    --write-batch "$BATCH_FILE" >"$OUT/batch.json" || die "could not build the batch (see above)"

COMMON=(--bits "$BITS" --group "$GROUP" --steps "$STEPS" --warmup "$WARMUP")
echo "whittle: bench train-step ($MODEL_NAME, $THREADS threads)" >&2
"$WHITTLE" --threads "$THREADS" bench train-step "$MODEL" --batch-file "$BATCH_FILE" "${COMMON[@]}" --json \
    >"$OUT/whittle.json" || die "whittle bench train-step failed"
echo "pytorch: qat_step.py ($MODEL_NAME, $THREADS threads)" >&2
"$VENV/bin/python" "$QAT_STEP" --model "$MODEL" --batch-file "$BATCH_FILE" "${COMMON[@]}" --threads "$THREADS" \
    >"$OUT/torch.json" || die "qat_step.py failed"

python3 - "$OUT/whittle.json" "$OUT/torch.json" "$OUT/batch.json" "$MODEL_NAME" "$THREADS" "$BITS" "$GROUP" <<'EOF'
import json, sys

def load(path, keys):
    try:
        value = json.load(open(path))
        return [float(value[k]) for k in keys] + [value]
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"bench_train_step.sh: {path}: expected JSON with {keys} ({e})")

w_ms, w_loss, whittle_json = load(sys.argv[1], ["ms_per_step", "loss_first"])
t_ms, t_loss, torch_json = load(sys.argv[2], ["ms_per_step", "loss_first"])
batch = json.load(open(sys.argv[3]))
model, threads, bits, group = sys.argv[4:8]
rel = abs(w_loss - t_loss) / abs(t_loss)
mel = "x".join(map(str, batch["mel"]))

def fastest(side):  # the fastest timed step, when the side reports it: less sensitive to other load
    return f" (min {side['ms_per_step_min']:.0f})" if "ms_per_step_min" in side else ""

print("| model | batch (mel, tokens) | W/g | threads | whittle ms/step | PyTorch ms/step "
      "| whittle speed vs PyTorch | loss_first whittle | loss_first PyTorch | loss rel. diff |")
print("|---|---|---|---|---|---|---|---|---|---|")
print(f"| {model} | {mel}, {'x'.join(map(str, batch['tokens']))} | W{bits} g{group} | {threads} "
      f"| {w_ms:.0f}{fastest(whittle_json)} | {t_ms:.0f}{fastest(torch_json)} | {t_ms / w_ms:.2f}x "
      f"| {w_loss:.6f} | {t_loss:.6f} | {rel:.1e} |")
phases = ", ".join(f"{k} {v:.0f}" for k, v in torch_json["phases_ms"].items())
print(f"\nPyTorch {torch_json['torch']} phases (median ms): {phases}")
machine = whittle_json.get("machine", {})
print(f"machine: {machine.get('cpu', 'not recorded')}, {machine.get('logical_cpus', '?')} logical CPUs, "
      f"flags {' '.join(machine.get('flags', [])) or 'none recorded'}; whittle dense f32 "
      f"{machine.get('dense_f32_gemm', '?')}, packed {machine.get('packed_kernels', '?')}; "
      f"PyTorch CPU capability {torch_json.get('cpu_capability', 'not recorded')}")
print(f"load average after the runs: {open('/proc/loadavg').read().split()[0]} (timings need an idle machine)")
EOF
