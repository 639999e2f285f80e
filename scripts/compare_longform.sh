#!/usr/bin/env bash
# Agreement of whittle's standard decoding with faster-whisper's, on long-form audio and real-15.
#
# Usage: scripts/compare_longform.sh tiny.en|base [--beam-size N] [--no-build]
# Both engines decode with Whisper's standard settings, the same for both: temperature fallback
# 0.0, 0.2, ..., 1.0 (best_of 5; thresholds: compression ratio 2.4, log-prob -1.0, no-speech 0.6),
# timestamps, seeking by the last timestamp, conditioning on previous text; English, float32,
# beam 1 by default (5 with --beam-size 5). Sets:
#   two_cities: the 44 s reading of A Tale of Two Cities ($WHITTLE_ASSETS/data/real.jsonl);
#   real-15:    the 15 real utterances.
# For each set it prints the WER of each engine against the truth, and the WER between the
# engines' transcripts (whittle scored against faster-whisper), all with `whittle wer`.
# Sampling above temperature 0 uses different generators in the two engines, so windows that
# fall back may differ by chance. whittle runs `eval --fallback --padding faster-whisper`, the
# same code path as `whittle transcribe` with faster-whisper's front-end padding.
# Environment: THREADS (default 2), WHITTLE_ASSETS (default .assets), WHITTLE_VENV (default
# .venv), WHITTLE_BIN (default target/release/whittle; --no-build is implied when set).
set -euo pipefail

usage() { echo "usage: $0 tiny.en|base [--beam-size N] [--no-build]" >&2; exit 2; }
[[ $# -ge 1 ]] || usage
NAME=$1
shift
BUILD=1
BEAM=1
while [[ $# -gt 0 ]]; do
    case $1 in
        --no-build) BUILD=0 ;;
        --beam-size) [[ $# -ge 2 ]] || usage; BEAM=$2; shift ;;
        *) usage ;;
    esac
    shift
done
case $NAME in tiny.en|base) ;; *) usage ;; esac

# shellcheck source=scripts/compare_common.sh
source "$(dirname "${BASH_SOURCE[0]}")/compare_common.sh"
OUT=$ROOT/out/longform-$NAME-beam$BEAM
[[ -f $WHITTLE_ASSETS/data/real.jsonl ]] || die "no real.jsonl (two_cities): run scripts/setup.sh --models-only"

mkdir -p "$OUT"
# The two_cities line of real.jsonl, with its audio path made absolute.
TWO_CITIES=$OUT/two_cities.jsonl
"$VENV/bin/python" - "$WHITTLE_ASSETS/data/real.jsonl" >"$TWO_CITIES" <<'PY' \
    || die "two_cities is not in $WHITTLE_ASSETS/data/real.jsonl: rerun scripts/setup.sh"
import json, pathlib, sys
manifest = pathlib.Path(sys.argv[1])
rows = [json.loads(l) for l in manifest.read_text().splitlines() if l.strip()]
row = next(r for r in rows if r.get("id") == "two_cities")
row["audio"] = str((manifest.parent / row["audio"]).resolve())
print(json.dumps(row))
PY

ROWS=()
for SET in two_cities real-15; do
    if [[ $SET == two_cities ]]; then MANIFEST=$TWO_CITIES; else MANIFEST=$WHITTLE_ASSETS/data/real-15.jsonl; fi
    mkdir -p "$OUT/$SET"
    echo "== $SET: faster-whisper standard decoding, beam $BEAM ($THREADS threads)"
    "$VENV/bin/python" scripts/reference/transcribe.py --model "$MODEL" --manifest "$MANIFEST" --standard \
        --compute-type float32 --beam-size "$BEAM" --threads "$THREADS" --out "$OUT/$SET/reference.jsonl" \
        >"$OUT/$SET/reference-summary.json" || die "reference transcription of $SET failed"
    echo "== $SET: whittle eval --fallback, beam $BEAM ($THREADS threads)"
    "$WHITTLE" --threads "$THREADS" eval "$MODEL" "$MANIFEST" --out "$OUT/$SET/whittle" --dtype f32 \
        --beam-size "$BEAM" --padding faster-whisper --fallback || die "whittle eval of $SET failed"
    ROWS+=("$SET|$(wer "$MANIFEST" "$OUT/$SET/reference.jsonl")|$(wer "$MANIFEST" "$OUT/$SET/whittle/utterances.jsonl")|$(wer "$OUT/$SET/reference.jsonl" "$OUT/$SET/whittle/utterances.jsonl")")
done

echo
echo "Whisper $NAME, standard decoding (fallback, timestamps, previous-text prompt), beam $BEAM, $THREADS threads"
echo
printf '| %-10s | %-22s | %-22s | %-26s |\n' "set" "faster-whisper vs truth" "whittle vs truth" "whittle vs faster-whisper"
printf '|%s|%s|%s|%s|\n' "------------" "-------------------------" "------------------------" "----------------------------"
for row in "${ROWS[@]}"; do
    IFS='|' read -r set a b c <<<"$row"
    printf '| %-10s | %-23s | %-22s | %-26s |\n' "$set" "$a" "$b" "$c"
done
