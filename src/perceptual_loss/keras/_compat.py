"""Import Keras 3 with an error that says how to get it.

Importing :mod:`perceptual_loss` never imports Keras; only :mod:`perceptual_loss.keras` does,
through :func:`import_keras`.
"""

from __future__ import annotations

from types import ModuleType

INSTALL_HINT = 'pip install "perceptual-loss[keras]"'


def import_keras() -> ModuleType:
    """Import and return Keras 3.

    Returns:
        The ``keras`` module (version 3 or later).

    Raises:
        ImportError: Keras is absent, older than 3, or its configured backend cannot be
            imported; the message says what to install or which ``KERAS_BACKEND`` to set.
    """
    try:
        import keras
    except ModuleNotFoundError as err:
        if err.name in (None, "keras") or str(err.name).startswith("keras."):
            raise ImportError(
                f"perceptual_loss.keras needs Keras 3, which is not installed: {INSTALL_HINT} "
                "(and a backend: torch is already installed with this package)"
            ) from err
        raise ImportError(
            f"Keras is installed but its backend needs {err.name!r}, which is not installed "
            f"({err}). Choose an installed backend before importing Keras, e.g. "
            "KERAS_BACKEND=torch (torch is a dependency of this package), or install "
            f"{err.name!r}."
        ) from err
    version = getattr(keras, "__version__", "0")
    try:
        major = int(version.split(".")[0])
    except ValueError:
        major = 0
    if major < 3:
        raise ImportError(
            f"perceptual_loss.keras needs Keras 3 (multi-backend), found Keras {version}: "
            f'pip install --upgrade "keras>=3.0" or {INSTALL_HINT}'
        )
    return keras
