#!/usr/bin/env bash
# Optional: a CPU PyTorch venv for the side-by-side training benchmark (scripts/bench_train_step.sh)
# and the CTC reference fixtures (scripts/reference/make_ctc_fixtures.py).
#
# Installs scripts/reference/requirements-torch.txt (torch 2.13.0 with the CUDA libraries its Python
# extension loads, numpy, safetensors, tokenizers) and scripts/reference/requirements-ctc.txt
# (transformers and its dependencies) from the package index with pip's --require-hashes,
# so every wheel is checked against the sha256 pinned there. Skipped when the venv already imports
# the pinned versions, so the script is safe to re-run. About 2.5 GB of downloads, 3.8 GB installed.
# Linux x86_64 with CPython 3.11-3.13 only (the pinned wheels). scripts/setup.sh does not call this.
#
# Usage: scripts/setup_torch.sh
# Environment: WHITTLE_TORCH_VENV (default .venv-torch), PYTHON (default python3).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REQUIREMENTS=$ROOT/scripts/reference/requirements-torch.txt
REQUIREMENTS_CTC=$ROOT/scripts/reference/requirements-ctc.txt
VENV=${WHITTLE_TORCH_VENV:-$ROOT/.venv-torch}
PYTHON=${PYTHON:-python3}

case ${1:-} in
    "") ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup_torch.sh: unknown argument '$1' (try --help)" >&2; exit 2 ;;
esac

die() {
    echo "setup_torch.sh: $*" >&2
    exit 1
}

# True when the venv imports every pinned package at its pinned version.
check_venv() {
    [[ -x $VENV/bin/python ]] && "$VENV/bin/python" - "$REQUIREMENTS" "$REQUIREMENTS_CTC" <<'EOF' 2>/dev/null
import importlib.metadata as m, re, sys
import numpy, safetensors, tokenizers, torch  # noqa: F401  (importable, not just installed)
import transformers  # noqa: F401
torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))])  # imports torch._dynamo (sympy)
for path in sys.argv[1:]:
    for line in open(path):
        pin = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line)
        if pin:
            assert m.version(pin[1]) == pin[2], pin[0]
EOF
}

[[ $(uname -s)/$(uname -m) == Linux/x86_64 ]] || die "the pinned wheels are for Linux x86_64, not $(uname -s)/$(uname -m)"
if check_venv; then
    echo "setup_torch.sh: cached ($VENV)"
    exit 0
fi
"$PYTHON" - <<'EOF' || die "$PYTHON is not CPython 3.11-3.13, which the pinned wheels need"
import sys
assert sys.implementation.name == "cpython" and (3, 11) <= sys.version_info[:2] <= (3, 13)
EOF
[[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV" || die "$PYTHON -m venv $VENV failed (is python3-venv installed?)"
for req in "$REQUIREMENTS" "$REQUIREMENTS_CTC"; do
    echo "setup_torch.sh: installing $req into $VENV"
    "$VENV/bin/pip" install -q --no-deps --require-hashes --only-binary=:all: -r "$req" \
        || die "pip install -r $req failed"
done
check_venv || die "the pinned packages are installed in $VENV but torch or transformers does not import; run $VENV/bin/python -c 'import torch, transformers'"
echo "setup_torch.sh: installed into $VENV ($(du -sh "$VENV" | cut -f1))"
