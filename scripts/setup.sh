#!/usr/bin/env bash
# Create .venv and install the package with the extras named in $1 (default: cli).
# Torch is installed first from a pinned version (a CPU build where the machine provides one),
# so the package's own range (torch>=2.1) never pulls a different build.
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-cli}"
python="${PYTHON:-python3}"
torch_spec="${TORCH_SPEC:-torch==2.13.0}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
if ! .venv/bin/python -c "import torch" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet "$torch_spec"
fi
.venv/bin/python -m pip install --quiet -e ".[${extras}]"
