#!/usr/bin/env bash
# Set up on a fresh machine and run the demo; results land in demo-output/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh cli
.venv/bin/perceptual demo --out demo-output "$@"
