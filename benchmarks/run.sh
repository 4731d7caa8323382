#!/usr/bin/env bash
# Run the whole benchmark with one command and rewrite benchmarks/RESULTS.md:
#
#     bash benchmarks/run.sh            # CPU, fp32, all configurations, two timing passes (about 40 min on 2 cores)
#     bash benchmarks/run.sh --quick    # B=4 224x224 content only
#     bash benchmarks/run.sh --device cuda --dtype bf16 --out benchmarks/RESULTS-cuda-bf16.md
#     bash benchmarks/run.sh --compiled  # torch.compile and bf16 rows (RESULTS-compiled.md)
#
# The package runs from .venv (made by scripts/setup.sh). The peers (lpips, piq,
# DISTS_pytorch) need torchvision; they get their own virtual environment, benchmarks/.venv
# (ignored by git), made here on first use. The package itself never imports torchvision.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all
torch_spec="${TORCH_SPEC:-torch==2.13.0}"
if [ ! -x benchmarks/.venv/bin/python ]; then
    python3 -m venv benchmarks/.venv
    benchmarks/.venv/bin/pip install --quiet "$torch_spec" numpy pillow scipy tqdm \
        && benchmarks/.venv/bin/pip install --quiet --no-deps torchvision==0.28.0 lpips==0.1.4 \
            piq==0.8.0 DISTS_pytorch==0.1 \
        || echo "the peers could not be installed: they are skipped"
fi
echo "load before: $(uptime)"
if [ "${1:-}" = "--compiled" ]; then
    shift
    .venv/bin/python benchmarks/compiled.py "$@"
else
    .venv/bin/python benchmarks/bench.py "$@"
fi
echo "load after: $(uptime)"
