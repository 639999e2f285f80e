#!/usr/bin/env bash
# Forward speed of a CTC model, whittle (f32 and packed W4) against PyTorch + transformers on CPU.
#
# Usage: scripts/bench_ctc_forward.sh [--no-build] [VARIANT]   (VARIANT: wav2vec2-base (default),
#   hubert-base, wav2vec2-large, ... as scripts/reference/make_ctc_fixtures.py --full-size names them)
# One invocation, same thread count on every side (THREADS, default 2: torch.set_num_threads,
# OMP_NUM_THREADS, RAYON_NUM_THREADS):
#   1. a random checkpoint of the released size is written once to out/bench-ctc/VARIANT
#      (make_ctc_fixtures.py --full-size; no pretrained weights of these families ship anywhere);
#   2. whittle quantize it to W4 (group 64, RTN) into out/bench-ctc/VARIANT-w4.whittle, once;
#   3. time recognition of the same seeded clip of CLIP_SECONDS (default 10) s: transformers' forward
#      and argmax (scripts/reference/ctc_forward.py), `whittle bench forward` on the folder (f32) and
#      on the W4 file; median of RUNS (default 5) after one warm-up each.
# Prints a markdown row: median ms of each and whittle's speed relative to PyTorch (torch_ms /
# whittle_ms; above 1 is faster). Timings are only comparable on an otherwise idle machine.
# Environment: THREADS, CLIP_SECONDS, RUNS, WHITTLE_TORCH_VENV (default .venv-torch, made by
#   scripts/setup_torch.sh), WHITTLE_BIN (default target/release/whittle; implies --no-build).
set -euo pipefail

BUILD=1
VARIANT=wav2vec2-base
for arg in "$@"; do
    case $arg in
        --no-build) BUILD=0 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        -*) echo "usage: $0 [--no-build] [VARIANT]" >&2; exit 2 ;;
        *) VARIANT=$arg ;;
    esac
done

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=${WHITTLE_TORCH_VENV:-$ROOT/.venv-torch}
THREADS=${THREADS:-2}
CLIP_SECONDS=${CLIP_SECONDS:-10}
RUNS=${RUNS:-5}
export OMP_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS RUST_LOG=${RUST_LOG:-error}
OUT=$ROOT/out/bench-ctc
WHITTLE=${WHITTLE_BIN:-$ROOT/target/release/whittle}

die() { echo "bench_ctc_forward.sh: $*" >&2; exit 1; }
[[ -x $VENV/bin/python ]] || die "no PyTorch venv at $VENV: run scripts/setup_torch.sh"
if ((BUILD)) && [[ -z ${WHITTLE_BIN:-} ]]; then
    cargo build --release -q -p whittle-cli || die "cargo build --release -p whittle-cli failed"
fi
[[ -x $WHITTLE ]] || die "$WHITTLE not built: run cargo build --release -p whittle-cli"

MODEL=$OUT/$VARIANT
if [[ ! -f $MODEL/model.safetensors ]]; then
    "$VENV/bin/python" scripts/reference/make_ctc_fixtures.py --full-size --out "$OUT" \
        --variant "$VARIANT" >&2 || die "writing the $VARIANT checkpoint failed"
fi
W4=$OUT/$VARIANT-w4.whittle
if [[ ! -f $W4 ]]; then
    "$WHITTLE" quantize "$MODEL" --bits 4 --group 64 -o "$W4" >&2 || die "quantize failed"
fi

torch_json=$("$VENV/bin/python" scripts/reference/ctc_forward.py "$MODEL" --seconds "$CLIP_SECONDS" \
    --runs "$RUNS" --threads "$THREADS") || die "PyTorch timing failed"
f32_json=$("$WHITTLE" bench forward "$MODEL" --seconds "$CLIP_SECONDS" --runs "$RUNS" --json) \
    || die "whittle f32 timing failed"
w4_json=$("$WHITTLE" bench forward "$W4" --seconds "$CLIP_SECONDS" --runs "$RUNS" --json) \
    || die "whittle W4 timing failed"
mkdir -p "$OUT"
printf '%s\n' "$torch_json" >"$OUT/$VARIANT.torch.json"
printf '%s\n' "$f32_json" >"$OUT/$VARIANT.f32.json"
printf '%s\n' "$w4_json" >"$OUT/$VARIANT.w4.json"
python3 - "$VARIANT" "$THREADS" "$torch_json" "$f32_json" "$w4_json" <<'PY'
import json, sys
variant, threads = sys.argv[1], sys.argv[2]
torch_, f32, w4 = (json.loads(a) for a in sys.argv[3:6])
t = torch_["median_ms"]
print("| variant | threads | clip s | PyTorch f32 ms | whittle f32 ms | whittle W4 ms | f32 vs PyTorch | W4 vs PyTorch |")
print("|---|---|---|---|---|---|---|---|")
print(f"| {variant} | {threads} | {f32['seconds']} | {t:.1f} | {f32['median_ms']:.1f} | {w4['median_ms']:.1f} "
      f"| {t / f32['median_ms']:.2f}x | {t / w4['median_ms']:.2f}x |")
same = torch_["text"] == f32["text"]
print(f"\ntranscripts: PyTorch and whittle f32 {'agree' if same else 'DIFFER'}; W4 {'agrees' if w4['text'] == torch_['text'] else 'differs'}")
m = f32.get("machine", {})
print(f"machine: {m.get('cpu', 'not recorded')}, flags {' '.join(m.get('flags', [])) or 'none recorded'}; "
      f"whittle dense f32 {m.get('dense_f32_gemm', '?')}, packed {m.get('packed_kernels', '?')}")
PY
