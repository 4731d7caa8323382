#!/usr/bin/env bash
# The GPU check in one command, about 4-5 minutes on one GPU:
#   1. correctness on CUDA: the pytest tests marked `cuda` (tests/test_cuda.py);
#   2. training step and metric against the article's class (and lpips/piq/DISTS where they
#      import) in fp32 and bf16, time and torch.cuda.max_memory_allocated, one process each;
#      torch.compile rows for the article and ours (compilation in the warm-up call), and our
#      step without value checks (what their device synchronisation costs);
# and writes benchmarks/RESULTS-cuda-fp32.md and RESULTS-cuda-bf16.md (RESULTS.md links them).
# Needs a Python with a CUDA build of torch (and pytest); the package runs from src/.
# Peers are optional: put their wheels in .whl/ (see benchmarks/README.md).
set -uo pipefail
cd "$(dirname "$0")/.."
python="${PYTHON:-python3}"
out="${OUT:-benchmarks}"
export PYTHONPATH="$PWD/src:$PWD/benchmarks${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
if [ -d .whl ] && ls .whl/*.whl >/dev/null 2>&1; then
    "$python" -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
        && export PYTHONPATH="$PYTHONPATH:/tmp/site"
fi
"$python" -c "import torch; assert torch.cuda.is_available(), 'no CUDA device'; \
print(torch.__version__, torch.cuda.get_device_name())" || exit 1
status=0
timeout 150 "$python" -m pytest -q -p no:cacheprovider -m cuda tests/test_cuda.py \
    -o addopts="" 2>&1 | tee "$out/cuda-tests.log" || status=1
peers=(--no-peers)
if "$python" -c "import lpips, piq, DISTS_pytorch" 2>/dev/null; then
    peers=(--peers-python "$python")
fi
for dtype in fp32 bf16; do
    timeout 200 "$python" benchmarks/bench.py --gpu --device cuda --dtype "$dtype" --repeats 5 \
        "${peers[@]}" --timeout 60 --out "$out/RESULTS-cuda-$dtype.md" || status=1
done
exit $status
