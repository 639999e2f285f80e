#!/usr/bin/env bash
# Optional: the whisper.cpp peer (PyPI pywhispercpp 1.5.1, which ships whisper.cpp 1.8.5 and ggml's
# CPU backend in its wheel) in a venv of its own, for the ggml export checks and scripts/bench_peers.sh.
#
# Installs scripts/reference/requirements-peers.txt with pip's --require-hashes, so every wheel is
# checked against the sha256 pinned there. Skipped when the venv already imports the pinned versions,
# so the script is safe to re-run. About 45 MB of downloads. Linux x86_64 with CPython 3.11 only
# (the pinned wheels). scripts/setup.sh does not call this; the tests that need the peer run when
# WHITTLE_PEERS_VENV (or .venv-peers) holds it and are skipped otherwise.
#
# Usage: scripts/setup_peers.sh
# Environment: WHITTLE_PEERS_VENV (default .venv-peers), PYTHON (default python3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REQUIREMENTS=$ROOT/scripts/reference/requirements-peers.txt
VENV=${WHITTLE_PEERS_VENV:-$ROOT/.venv-peers}
PYTHON=${PYTHON:-python3}

case ${1:-} in
    "") ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup_peers.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac

die() {
    echo "setup_peers.sh: $*" >&2
    exit 1
}

# True when the venv imports every pinned package at its pinned version.
check_venv() {
    [[ -x $VENV/bin/python ]] && "$VENV/bin/python" - "$REQUIREMENTS" <<'PY' 2>/dev/null
import importlib.metadata as m, re, sys
import av, numpy, _pywhispercpp  # noqa: F401  (importable, not just installed)
for line in open(sys.argv[1]):
    pin = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line)
    if pin:
        assert m.version(pin[1]) == pin[2], pin[0]
PY
}

[[ $(uname -s)/$(uname -m) == Linux/x86_64 ]] || die "the pinned wheels are for Linux x86_64, not $(uname -s)/$(uname -m)"
if check_venv; then
    echo "setup_peers.sh: cached ($VENV)"
    exit 0
fi
"$PYTHON" -c 'import sys; assert sys.version_info[:2] == (3, 11)' 2>/dev/null \
    || die "the pinned wheels need CPython 3.11 (PYTHON=$PYTHON is $("$PYTHON" --version 2>&1))"
[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV" || die "python3 -m venv $VENV failed (is python3-venv installed?)"
"$VENV/bin/pip" install -q --require-hashes --only-binary=:all: -r "$REQUIREMENTS" \
    || die "pip install -r $REQUIREMENTS failed"
check_venv || die "the pinned packages are not importable from $VENV"
echo "setup_peers.sh: installed into $VENV"
