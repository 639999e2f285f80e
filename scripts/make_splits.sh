#!/usr/bin/env bash
# Builds whittle's standard synthetic speech splits into .assets/data/<split>/:
#   synth-train       ~2 h   train sentences (novels other than Sense and Sensibility), voice set A
#   synth-dev         15 min dev sentences, voice set A
#   synth-test-clean  40 min held-out sentences, held-out natural voices (festival us-slt-hts,
#                             flite slt/rms, pico when installed), no augmentation
#   synth-test-other  40 min held-out sentences, the same natural voices plus two held-out
#                             espeak-ng voices (en-us+klatt, en-gb+m7), noise at 12-24 dB SNR on
#                             every utterance and reverb (RT60 0.2-0.5 s) on half of them
#   synth-dev-other   15 min dev sentences, eight held-out espeak-ng voices (in no other split):
#                             the selection set of the training protocols
# plus .assets/data/leak-check.txt (Sense and Sensibility chapter 1, kept out of every split) and
# .assets/data/splits.json: words, hours and voices per split, and the check that test voices
# (by recorded speaker) and test sentences are disjoint from train/dev and that each test split has
# at least 6,000 reference words. The build fails when that check fails.
#
# Sizes and seed come from the environment: TRAIN_HOURS DEV_HOURS TEST_CLEAN_HOURS
# TEST_OTHER_HOURS DEV_OTHER_HOURS SEED JOBS OUT; extra arguments go to `whittle corpus splits` (e.g.
# --only synth-test-clean). An interrupted build resumes where it stopped; a finished split is
# reused as is. Same seed and same engine versions give identical files.
#
# Needs the Debian packages:
#   apt-get install -y r-cran-janeaustenr espeak-ng flite festival festvox-kallpc16k \
#       festvox-kdlpc16k festvox-us-slt-hts
# and optionally (contrib/non-free): mbrola mbrola-us1 mbrola-us2 mbrola-us3 mbrola-en1 libttspico-utils
set -euo pipefail
cd "$(dirname "$0")/.."

OUT="${OUT:-.assets/data}"
TRAIN_HOURS="${TRAIN_HOURS:-2}"
DEV_HOURS="${DEV_HOURS:-0.25}"
TEST_CLEAN_HOURS="${TEST_CLEAN_HOURS:-0.6666666667}"
TEST_OTHER_HOURS="${TEST_OTHER_HOURS:-0.6666666667}"
DEV_OTHER_HOURS="${DEV_OTHER_HOURS:-0.25}"
SEED="${SEED:-0}"
JOBS="${JOBS:-0}"

missing=()
for program in espeak-ng flite festival text2wave; do
    command -v "$program" >/dev/null || missing+=("$program")
done
[ -f /usr/lib/R/site-library/janeaustenr/data/Rdata.rdx ] || missing+=("janeaustenr")
if [ "${#missing[@]}" -gt 0 ]; then
    echo "make_splits.sh: missing ${missing[*]}; install with:" >&2
    echo "  apt-get install -y r-cran-janeaustenr espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts" >&2
    exit 1
fi

cargo build --release -p whittle-cli
start=$(date +%s)
target/release/whittle corpus splits \
    --out "$OUT" \
    --train-hours "$TRAIN_HOURS" \
    --dev-hours "$DEV_HOURS" \
    --test-clean-hours "$TEST_CLEAN_HOURS" \
    --test-other-hours "$TEST_OTHER_HOURS" \
    --dev-other-hours "$DEV_OTHER_HOURS" \
    --seed "$SEED" \
    --jobs "$JOBS" \
    "$@"
echo "make_splits.sh: built the splits in $OUT in $(( $(date +%s) - start )) s"
