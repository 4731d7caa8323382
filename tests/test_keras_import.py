"""Keras is optional: the package imports without it, and the Keras front end says how to get it.

Each case runs in a fresh interpreter, so the state of this process (Keras already imported
by other tests) cannot hide an import.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from processes import run_group

SRC = Path(__file__).resolve().parents[1] / "src"


def run_python(code: str, **env: str) -> subprocess.CompletedProcess[str]:
    environment = {**os.environ, **env}
    environment["PYTHONPATH"] = os.pathsep.join(
        [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])])
    return run_group([sys.executable, "-c", textwrap.dedent(code)], env=environment,
                     timeout=300)


def test_importing_the_package_never_imports_keras_or_its_backends() -> None:
    result = run_python("""
        import sys
        import perceptual_loss
        loaded = sorted(m for m in sys.modules
                        if m.split(".")[0] in ("keras", "tensorflow", "jax", "h5py"))
        assert not loaded, loaded
        print("ok")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


def test_keras_front_end_without_keras_says_how_to_install_it() -> None:
    result = run_python("""
        import sys
        sys.modules["keras"] = None  # as if Keras were not installed
        import perceptual_loss  # still works
        try:
            import perceptual_loss.keras
        except ImportError as err:
            print(err)
        else:
            raise SystemExit("perceptual_loss.keras imported without Keras")
    """)
    assert result.returncode == 0, result.stderr
    assert 'pip install "perceptual-loss[keras]"' in result.stdout
    assert "needs Keras 3" in result.stdout


@pytest.mark.skipif(importlib.util.find_spec("keras") is None, reason="Keras not installed")
def test_a_keras_backend_that_is_not_installed_names_the_fix() -> None:
    result = run_python("""
        import sys
        sys.modules["tensorflow"] = None  # as if TensorFlow were not installed
        try:
            import perceptual_loss.keras
        except ImportError as err:
            print(err)
        else:
            raise SystemExit("imported with a missing backend")
    """, KERAS_BACKEND="tensorflow")
    assert result.returncode == 0, result.stderr
    assert "KERAS_BACKEND=torch" in result.stdout
    assert "'tensorflow'" in result.stdout
