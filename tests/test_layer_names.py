"""Unknown layer names: the hint names the layer a user most likely meant."""

import pytest

from perceptual_loss import PerceptualLoss
from perceptual_loss.backbones import get_backbone, nearest_layer


@pytest.mark.parametrize(("backbone", "asked", "meant"), [
    ("vgg11", "relu1_2", "relu1_1"),         # block 1 of VGG11 has one convolution
    ("vgg11", "conv4_3", "conv4_2"),
    ("vgg16", "relu9_9", "relu5_3"),         # no block 9: the deepest block, its last layer
    ("vgg16", "relu5_4", "relu5_3"),         # VGG19's name on VGG16
    ("vgg11", "block1_conv2", "block1_conv1"),
    ("vgg16", "pool6", "pool5"),
    ("vgg11_bn", "bn1_2", "bn1_1"),
    ("alexnet", "relu6", "relu5"),
    ("vgg16", "rleu1_2", "relu1_2"),         # a typo: the spelling decides
])
def test_the_hint_names_the_nearest_layer_by_block_and_position(backbone, asked, meant):
    with pytest.raises(ValueError, match=rf"Did you mean '{meant}'\?"):
        get_backbone(backbone).canonical(asked)


def test_the_hint_reaches_the_user_through_the_loss():
    with pytest.raises(ValueError, match=r"unknown layer 'relu1_2' .*Did you mean 'relu1_1'"):
        PerceptualLoss("vgg11", layers=("relu1_2",), weights=None)


def test_nothing_close_gives_no_hint():
    assert nearest_layer("zzz", ["relu1_1", "pool1"]) is None
