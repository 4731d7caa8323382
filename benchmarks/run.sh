#!/usr/bin/env bash
# Run the whole benchmark with one command and rewrite benchmarks/RESULTS.md:
#
#     bash benchmarks/run.sh            # CPU, fp32, all configurations (about 20 min on 2 cores)
#     bash benchmarks/run.sh --quick    # B=4 224x224 content only
#     bash benchmarks/run.sh --device cuda --dtype bf16 --out benchmarks/RESULTS-cuda-bf16.md
#
# The peers (lpips, piq, DISTS_pytorch) need torchvision; they get their own virtual
# environment, benchmarks/.venv (ignored by git), made here on first use. The package itself
# never imports torchvision.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x benchmarks/.venv/bin/python ]; then
    python3 -m venv --system-site-packages benchmarks/.venv
    benchmarks/.venv/bin/pip install --no-deps torchvision==0.28.0 lpips==0.1.4 piq==0.8.0 \
        DISTS_pytorch==0.1
fi
echo "load before: $(uptime)"
python3 benchmarks/bench.py "$@"
echo "load after: $(uptime)"
