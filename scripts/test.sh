#!/usr/bin/env bash
# Set up on a fresh machine and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all,test
# Conformance tests compare with the lpips and piq packages themselves. Both declare torchvision,
# which this project never needs (and which has no CPU build here): they are installed without
# their dependencies, and the tests import them with a torchvision stand-in.
.venv/bin/python -m pip install --quiet --no-deps lpips==0.1.4 piq==0.8.0 \
  || echo "lpips/piq could not be installed: their conformance tests will be skipped"
# The Keras loss is tested on every backend: torch (installed), and JAX and TensorFlow
# (tensorflow-cpu) when they install from the registry; a backend's tests skip without it.
bash scripts/install_keras_backends.sh
# The HTML report of `perceptual compare --html` is tested in a headless browser: Debian's
# chromium and its driver (never a browser downloaded by a Python or npm tool).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
    chromium-driver >/dev/null) \
    || echo "chromium could not be installed: the browser test of the HTML report will be skipped"
fi
.venv/bin/python -m pytest -q "$@"
