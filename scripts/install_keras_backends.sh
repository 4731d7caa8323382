#!/usr/bin/env bash
# Install the Keras backends the Keras tests run on, beyond the package itself: JAX (CPU) and
# TensorFlow (tensorflow-cpu). Each is optional: a failed install prints why, and the tests
# of that backend skip. The installed torch is pinned (a constraint), so neither install can
# replace it, and tensorflow-cpu pulls no CUDA packages.
# Usage: bash scripts/install_keras_backends.sh [python]   (default: .venv/bin/python)
set -uo pipefail
cd "$(dirname "$0")/.."
python="${1:-.venv/bin/python}"
if ! "$python" -m pip show keras >/dev/null 2>&1; then  # (importing it needs a backend)
  echo "Keras is not installed (pip install \"perceptual-loss[keras]\"): no Keras backends installed"
  exit 0
fi
constraints="$(mktemp)"
trap 'rm -f "$constraints"' EXIT
"$python" - >"$constraints" <<'PY' 2>/dev/null || true
import importlib.metadata as m
try:
    print(f"torch=={m.version('torch')}")
except m.PackageNotFoundError:
    pass
PY

install() {  # install <import name> <what to tell the user> <pip requirements...>
  local module="$1" label="$2"
  shift 2
  if "$python" -c "import $module" 2>/dev/null; then
    return 0
  fi
  local log
  log="$(mktemp)"
  if "$python" -m pip install --quiet --constraint "$constraints" "$@" >"$log" 2>&1 \
      && "$python" -c "import $module" >>"$log" 2>&1; then
    echo "installed $label"
  else
    echo "$label could not be installed: the Keras-on-$label tests will be skipped. Reason:"
    tail -n 5 "$log" | sed 's/^/  /'
  fi
  rm -f "$log"
}

install jax JAX jax jaxlib
install tensorflow TensorFlow tensorflow-cpu
exit 0
