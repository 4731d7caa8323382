"""The examples in the core docstrings run and print what they claim."""

import doctest
import importlib

import pytest

CORE_MODULES = ["perceptual_loss.functional", "perceptual_loss.losses",
                "perceptual_loss.extractor"]


@pytest.mark.parametrize("name", CORE_MODULES)
def test_docstring_examples(name):
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
