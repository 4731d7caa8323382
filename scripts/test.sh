#!/usr/bin/env bash
# Set up on a fresh machine and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all,test
.venv/bin/python -m pytest -q "$@"
