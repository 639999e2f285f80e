#!/usr/bin/env bash
# Side-by-side check of whittle against the reference implementation (faster-whisper / CTranslate2)
# on the same Whisper model and the 15 real utterances.
#
# Usage: scripts/compare_reference.sh tiny.en|base [--no-build]
#   1. faster-whisper, float32, greedy (beam 1)          -> out/compare-NAME/reference/utterances.jsonl
#   2. whittle eval, f32, greedy                           -> out/compare-NAME/whittle/{utterances,summary}.json*
#   3. whittle wer: whittle vs the reference's output (agreement), and each system vs the truth.
# Both decoders run at temperature 0, English, without timestamps; scoring uses whittle's
# Whisper-style English normaliser. Needs scripts/setup.sh (models, data, .venv) to have run.
# Environment: THREADS (default 2), WHITTLE_ASSETS (default .assets), WHITTLE_VENV (default .venv),
# WHITTLE_BIN (default target/release/whittle; --no-build is implied when set).
set -euo pipefail

usage() { echo "usage: $0 tiny.en|base [--no-build]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
NAME=$1
shift
BUILD=1
for arg in "$@"; do
    case $arg in
        --no-build) BUILD=0 ;;
        *) usage ;;
    esac
done
case $NAME in tiny.en|base) ;; *) usage ;; esac

# shellcheck source=scripts/compare_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/compare_common.sh"
MANIFEST=$WHITTLE_ASSETS/data/real-15.jsonl
OUT=$ROOT/out/compare-$NAME

mkdir -p "$OUT/reference"
REF_HYP=$OUT/reference/utterances.jsonl

echo "== faster-whisper float32, beam 1 ($THREADS threads)"
"$VENV/bin/python" scripts/reference/transcribe.py --model "$MODEL" --manifest "$MANIFEST" \
    --compute-type float32 --beam-size 1 --threads "$THREADS" --out "$REF_HYP" >"$OUT/reference/summary.json" \
    || die "reference transcription failed"

echo "== whittle eval f32, beam 1 ($THREADS threads)"
"$WHITTLE" --threads "$THREADS" eval "$MODEL" "$MANIFEST" --out "$OUT/whittle" --dtype f32 --beam-size 1 \
    || die "whittle eval failed"

echo "== whittle eval f32, beam 1, faster-whisper front-end padding ($THREADS threads)"
"$WHITTLE" --threads "$THREADS" eval "$MODEL" "$MANIFEST" --out "$OUT/whittle-fwpad" --dtype f32 --beam-size 1 --padding faster-whisper \
    || die "whittle eval --padding faster-whisper failed"

REF_VS_TRUTH=$(wer "$MANIFEST" "$REF_HYP")
FWPAD_VS_TRUTH=$(wer "$MANIFEST" "$OUT/whittle-fwpad/utterances.jsonl")
FWPAD_VS_REF=$(wer "$REF_HYP" "$OUT/whittle-fwpad/utterances.jsonl")
WHITTLE_VS_TRUTH=$(wer "$MANIFEST" "$OUT/whittle/utterances.jsonl")
WHITTLE_VS_REF=$(wer "$REF_HYP" "$OUT/whittle/utterances.jsonl")

echo
echo "Whisper $NAME on real-15, greedy, $THREADS threads"
echo
printf '| %-26s | %-18s | %-24s |\n' "system" "WER vs truth" "WER vs faster-whisper"
printf '|%s|%s|%s|\n' "$(printf -- '-%.0s' {1..28})" "$(printf -- '-%.0s' {1..20})" "$(printf -- '-%.0s' {1..26})"
printf '| %-26s | %-18s | %-24s |\n' "faster-whisper float32" "$REF_VS_TRUTH" "-"
printf '| %-26s | %-18s | %-24s |\n' "whittle f32" "$WHITTLE_VS_TRUTH" "$WHITTLE_VS_REF"
printf '| %-26s | %-18s | %-24s |\n' "whittle f32, --padding faster-whisper" "$FWPAD_VS_TRUTH" "$FWPAD_VS_REF"
echo
echo "outputs: $OUT/{reference,whittle}/"
