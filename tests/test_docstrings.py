"""The examples in the docstrings run and print what they claim: every module that has one."""

import doctest
import importlib
from pathlib import Path

import pytest

import perceptual_loss

PACKAGE = Path(perceptual_loss.__file__).resolve().parent
#: Every module whose source shows an example (``>>>``), found by reading the package.
EXAMPLE_MODULES = sorted(
    "perceptual_loss." + ".".join(path.relative_to(PACKAGE).with_suffix("").parts)
    for path in PACKAGE.rglob("*.py") if ">>>" in path.read_text(encoding="utf-8")
)
#: Modules whose examples need a package that is optional (``pip install`` extras).
NEEDS = {"perceptual_loss.keras": "keras"}


def test_the_example_modules_are_found():
    assert {"perceptual_loss.functional", "perceptual_loss.recipe",
            "perceptual_loss.apps.train.loss_mix"} <= set(EXAMPLE_MODULES)


@pytest.mark.parametrize("name", EXAMPLE_MODULES)
def test_docstring_examples(name):
    for prefix, package in NEEDS.items():
        if name.startswith(prefix):
            pytest.importorskip(package)
    module = importlib.import_module(name)
    result = doctest.testmod(module, extraglobs={"torch": importlib.import_module("torch")},
                             optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


def test_public_api_resolves_every_exported_name():
    import perceptual_loss

    assert sorted(perceptual_loss.__all__) == sorted([*perceptual_loss._EXPORTS, "__version__"])
    for name in perceptual_loss.__all__:
        assert getattr(perceptual_loss, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        perceptual_loss.nope  # noqa: B018
