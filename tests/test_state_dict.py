"""Frozen networks stay out of a user model's checkpoints, and old checkpoints still load."""

from __future__ import annotations

import sys
import textwrap

import pytest
import torch
from torch import nn

from perceptual_loss import (
    LPIPS,
    PerceptualLoss,
)
from perceptual_loss.frozen import copy_frozen_weights, frozen_state_dict
from processes import run_group

pytestmark = pytest.mark.usefixtures("one_thread")

# Builds the user model; run here and, verbatim, in a fresh process.
MODEL_SOURCE = textwrap.dedent("""
    import torch
    from torch import nn
    from perceptual_loss import (DISTS, LPIPS, MedicalPerceptualLoss, PerceptualLoss,
                                 VideoPerceptualLoss, VolumePerceptualLoss)

    class UserModel(nn.Module):
        # A generator with every loss of the library as a submodule (the Lightning pattern).
        def __init__(self):
            super().__init__()
            self.generator = nn.Conv2d(3, 3, 3, padding=1)
            self.perceptual = PerceptualLoss("vgg11", layers=("relu1_1",), weights=None)
            self.lpips = LPIPS("alex", weights=None)
            self.dists = DISTS(weights=None)
            self.medical = MedicalPerceptualLoss("medicalnet_resnet10", weights=None)
            self.volume = VolumePerceptualLoss(LPIPS("squeeze", weights=None,
                                                     reduction="none"))
            self.video = VideoPerceptualLoss(PerceptualLoss(
                "vgg11", layers=("relu1_1",), weights=None, reduction="none"))
""")


def _user_model() -> nn.Module:
    namespace: dict[str, object] = {}
    exec(compile(MODEL_SOURCE, "<user model>", "exec"), namespace)  # noqa: S102
    return namespace["UserModel"]()  # type: ignore[operator]


def test_a_user_models_checkpoint_holds_only_its_own_parameters(tmp_path):
    model = _user_model()
    with torch.no_grad():
        model.generator.weight.mul_(2.0)
    assert set(model.state_dict()) == {"generator.weight", "generator.bias"}
    assert len(frozen_state_dict(model)) > 150  # every trunk is still there, out of the file
    path = tmp_path / "user.pt"
    torch.save(model.state_dict(), path)
    assert path.stat().st_size < 20_000  # 84 numbers and the file format; not 60 MB
    script = MODEL_SOURCE + textwrap.dedent(f"""
        model = UserModel()
        model.load_state_dict(torch.load({str(path)!r}, weights_only=True), strict=True)
        print(float(model.generator.weight.sum()))
    """)
    result = run_group([sys.executable, "-c", script], timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    expected = float(model.generator.weight.detach().sum())
    assert float(result.stdout.split()[-1]) == pytest.approx(expected)


def _old_checkpoint(model: nn.Module) -> dict[str, torch.Tensor]:
    """A checkpoint as ``state_dict()`` wrote it before: with every frozen tensor."""
    return {**model.state_dict(), **{k: v.clone() for k, v in frozen_state_dict(model).items()}}


def test_a_checkpoint_written_before_the_change_loads_its_frozen_tensors_checked():
    model = _user_model()
    old = _old_checkpoint(model)
    assert any(k.startswith("dists.extractor.body.") for k in old)
    assert any(k.startswith("medical.extractor.body.") for k in old)
    fresh = _user_model()
    result = fresh.load_state_dict(old, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    # before the medical loss ran on the shared extractor its trunk was "medical.network."
    older = {k.replace("medical.extractor.body.", "medical.network."): v for k, v in old.items()}
    result = fresh.load_state_dict(older, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    key = next(k for k in older if k.startswith("medical.network."))
    with pytest.raises(ValueError, match="differ from this module's own"):
        fresh.load_state_dict({**older, key: older[key] + 1.0})
    changed = dict(old)
    key = next(k for k in old if k.startswith("lpips.extractor.body."))
    changed[key] = old[key] + 1.0
    with pytest.raises(ValueError, match=rf"{key}.*differ from this module's own.*weights="):
        fresh.load_state_dict(changed)


def test_copy_frozen_weights_gives_another_module_the_same_trunk():
    torch.manual_seed(0)
    a = LPIPS("alex", weights=None)
    b = LPIPS("alex", weights=None)
    with torch.no_grad():
        for value in frozen_state_dict(b).values():
            if value.is_floating_point():
                value.normal_()
    x, y = torch.rand(2, 1, 3, 40, 40)
    assert not torch.allclose(a(x, y), b(x, y))
    b.load_state_dict(a.state_dict())  # carries nothing frozen
    assert not torch.allclose(a(x, y), b(x, y))
    copy_frozen_weights(a, b)
    torch.testing.assert_close(a(x, y), b(x, y), rtol=0, atol=0)
    with pytest.raises(ValueError, match="different frozen networks"):
        copy_frozen_weights(a, LPIPS("squeeze", weights=None))


def test_frozen_weights_still_move_with_the_module():
    loss = PerceptualLoss("vgg11", layers=("relu1_1",), weights=None).to(torch.float64)
    assert all(p.dtype == torch.float64 for p in loss.extractor.parameters())
    assert all(not p.requires_grad for p in loss.extractor.parameters())
    x, y = torch.rand(2, 1, 3, 16, 16, dtype=torch.float64)
    assert loss(x, y).dtype == torch.float64
