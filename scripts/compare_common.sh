# Set-up shared by scripts/compare_reference.sh and scripts/compare_longform.sh (sourced, not run).
# Needs NAME (tiny.en|base) and BUILD (0|1); sets ROOT, VENV, THREADS, MODEL, WHITTLE, and
# defines die and wer. Environment: THREADS (default 2), WHITTLE_ASSETS (default .assets),
# WHITTLE_VENV (default .venv), WHITTLE_BIN (default target/release/whittle; implies no build).

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
export WHITTLE_ASSETS=${WHITTLE_ASSETS:-$ROOT/.assets}
VENV=${WHITTLE_VENV:-$ROOT/.venv}
THREADS=${THREADS:-2}
export OMP_NUM_THREADS=$THREADS RAYON_NUM_THREADS=$THREADS
MODEL=$WHITTLE_ASSETS/models/whisper-$NAME
WHITTLE=${WHITTLE_BIN:-$ROOT/target/release/whittle}

die() { echo "$(basename "$0"): $*" >&2; exit 1; }
[[ -f $MODEL/model.bin ]] || die "no model at $MODEL: run scripts/setup.sh"
[[ -f $WHITTLE_ASSETS/data/real-15.jsonl ]] || die "no real-15 manifest under $WHITTLE_ASSETS/data: run scripts/setup.sh --models-only"
[[ -x $VENV/bin/python ]] || die "no reference venv at $VENV: run scripts/setup.sh (without --no-reference)"
if ((BUILD)) && [[ -z ${WHITTLE_BIN:-} ]]; then
    cargo build --release -q -p whittle-cli || die "cargo build --release -p whittle-cli failed"
fi
[[ -x $WHITTLE ]] || die "$WHITTLE not built: run cargo build --release -p whittle-cli"

# `whittle wer` prints "N utterances: WER x.xx% (e/n)  CER ..."; keep the WER part.
wer() {
    local line
    line=$("$WHITTLE" wer --ref "$1" --hyp "$2") || die "whittle wer --ref $1 --hyp $2 failed"
    grep -o 'WER [0-9.]*% ([0-9]*/[0-9]*)' <<<"$line" | sed 's/^WER //' || die "unexpected output from whittle wer: $line"
}
