#!/usr/bin/env bash
# Set up on a fresh machine and run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh all,test
# The Keras loss is also tested on the JAX backend when JAX installs from the registry
# (CPU wheels); its tests skip without it.
if ! .venv/bin/python -c "import jax" 2>/dev/null; then
  .venv/bin/python -m pip install --quiet jax jaxlib \
    || echo "JAX could not be installed: the Keras-on-JAX tests will be skipped"
fi
# The HTML report of `perceptual compare --html` is tested in a headless browser: Debian's
# chromium and its driver (never a browser downloaded by a Python or npm tool).
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium \
    chromium-driver >/dev/null) \
    || echo "chromium could not be installed: the browser test of the HTML report will be skipped"
fi
.venv/bin/python -m pytest -q "$@"
