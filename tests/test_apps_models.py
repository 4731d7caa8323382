import pytest
import torch
import torch.nn.functional as F

from perceptual_loss.apps.train.models import (
    MODEL_NAMES,
    SuperResolutionNet,
    TransformerNet,
    UNet,
    build_model,
)


@pytest.mark.parametrize("shape", [(2, 1, 30, 45), (1, 1, 16, 16), (1, 1, 7, 9)])
def test_unet_keeps_any_size_and_range(shape):
    torch.manual_seed(0)
    net = UNet(in_channels=1, base_channels=4, depth=2)
    out = net(torch.rand(shape))
    assert out.shape == shape
    assert out.min() >= 0 and out.max() <= 1


def test_residual_unet_starts_as_identity_and_learns():
    torch.manual_seed(0)
    net = UNet(in_channels=3, base_channels=4, depth=2)
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(net(x), x)  # zero-initialised head: output == input
    target = torch.zeros_like(x)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = F.mse_loss(net(x), target)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_unet_non_residual_can_change_channels():
    net = UNet(in_channels=1, out_channels=3, base_channels=4, depth=1, residual=False)
    assert net(torch.rand(1, 1, 8, 8)).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match="must equal in_channels"):
        UNet(in_channels=1, out_channels=3)


def test_unet_rejects_wrong_input():
    net = UNet(in_channels=3, base_channels=4, depth=1)
    with pytest.raises(ValueError, match="in_channels=1"):
        net(torch.rand(1, 1, 8, 8))
    with pytest.raises(ValueError, match="unsqueeze"):
        net(torch.rand(3, 8, 8))
    with pytest.raises(TypeError, match="torch.Tensor"):
        net([[0.0]])
    with pytest.raises(ValueError, match="depth"):
        UNet(depth=7)


def test_transformer_net_shapes_gradients_and_instance_norm():
    torch.manual_seed(0)
    net = TransformerNet(base_channels=4, num_residual=1)
    x = torch.rand(2, 3, 33, 21, requires_grad=True)
    out = net(x)
    assert out.shape == x.shape
    assert out.min() >= 0 and out.max() <= 1
    out.mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    norms = [m for m in net.modules() if isinstance(m, torch.nn.InstanceNorm2d)]
    assert norms and all(m.affine for m in norms)
    assert not any(isinstance(m, torch.nn.ConvTranspose2d) for m in net.modules())
    with pytest.raises(ValueError, match="at least 5x5"):
        net(torch.rand(1, 3, 4, 8))


@pytest.mark.parametrize("scale", [2, 4])
def test_sr_net_starts_at_bicubic_and_upscales(scale):
    torch.manual_seed(0)
    net = SuperResolutionNet(scale=scale, features=8, num_residual=1)
    x = torch.rand(1, 3, 10, 7)
    out = net(x)
    assert out.shape == (1, 3, 10 * scale, 7 * scale)
    bicubic = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
    torch.testing.assert_close(out, bicubic.clamp(0, 1))
    assert any(isinstance(m, torch.nn.PixelShuffle) for m in net.modules())


def test_sr_net_rejects_scale_3():
    with pytest.raises(ValueError, match="scale must be 2 or 4"):
        SuperResolutionNet(scale=3)


@pytest.mark.parametrize(
    "net",
    [
        UNet(in_channels=1, base_channels=4, depth=2),
        TransformerNet(base_channels=4, num_residual=1),
        SuperResolutionNet(scale=2, features=4, num_residual=1),
    ],
)
def test_build_model_round_trips_config_and_weights(net):
    rebuilt = build_model(net.config)
    assert type(rebuilt) is type(net) and rebuilt.config == net.config
    rebuilt.load_state_dict(net.state_dict())  # strict: same layout


pytestmark = pytest.mark.usefixtures("one_thread")


def test_build_model_errors():
    assert MODEL_NAMES == ("sr", "transformer", "unet")
    with pytest.raises(ValueError, match="unknown model 'gan'"):
        build_model({"name": "gan"})
    with pytest.raises(ValueError, match="does not fit"):
        build_model({"name": "unet", "colour": 3})
    with pytest.raises(ValueError, match="'name' key"):
        build_model({"depth": 2})
