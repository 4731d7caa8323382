import pytest
import torch

from perceptual_loss.backbones import BackboneSpec, get_backbone, list_backbones, register_backbone

# Parameter counts published for torchvision's VGG models.
TORCHVISION_PARAMS = {
    "vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544, "vgg19": 143_667_240,
    "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736, "vgg16_bn": 138_365_992,
    "vgg19_bn": 143_678_248,
}

VGG16_CONV_INDICES = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]
VGG16_BN_CONV_INDICES = [0, 3, 7, 10, 14, 17, 20, 24, 27, 30, 34, 37, 40]


def _meta_state(name):
    with torch.device("meta"):
        return get_backbone(name).build().state_dict()


@pytest.mark.parametrize("name", sorted(TORCHVISION_PARAMS))
def test_parameter_count_matches_torchvision(name):
    with torch.device("meta"):
        model = get_backbone(name).build()
    assert sum(p.numel() for p in model.parameters()) == TORCHVISION_PARAMS[name]


def test_vgg16_state_dict_keys_are_torchvision_keys():
    expected = [f"features.{i}.{k}" for i in VGG16_CONV_INDICES for k in ("weight", "bias")]
    expected += [f"classifier.{i}.{k}" for i in (0, 3, 6) for k in ("weight", "bias")]
    assert list(_meta_state("vgg16")) == expected


def test_vgg16_bn_state_dict_keys_are_torchvision_keys():
    expected = []
    for i in VGG16_BN_CONV_INDICES:
        expected += [f"features.{i}.weight", f"features.{i}.bias"]
        expected += [f"features.{i + 1}.{k}" for k in
                     ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")]
    expected += [f"classifier.{i}.{k}" for i in (0, 3, 6) for k in ("weight", "bias")]
    assert list(_meta_state("vgg16_bn")) == expected


def test_layer_names_match_the_article_slices_and_esrgan_tap():
    vgg16 = get_backbone("vgg16")
    # The article's blocks features[:4], [4:9], [9:16], [16:23] end at these layers.
    assert [vgg16.index(n) for n in ("relu1_2", "relu2_2", "relu3_3", "relu4_3")] == [3, 8, 15, 22]
    # ESRGAN takes VGG19 features[:35]: conv5_4, before its ReLU.
    assert get_backbone("vgg19").index("conv5_4") == 34
    assert get_backbone("vgg16_bn").layer_names[:4] == ("conv1_1", "bn1_1", "relu1_1", "conv1_2")


def test_keras_aliases():
    vgg16 = get_backbone("vgg16")
    assert vgg16.canonical("block3_conv3") == "relu3_3"
    assert vgg16.canonical("block3_pool") == "pool3"
    assert vgg16.canonical("block5_conv3") == "relu5_3"


def test_unknown_layer_lists_valid_names_and_suggests():
    with pytest.raises(ValueError, match=r"unknown layer 'relu3_4'.*Did you mean.*relu1_1"):
        get_backbone("vgg16").canonical("relu3_4")


def test_unknown_backbone_lists_registered_ones():
    with pytest.raises(ValueError, match="vgg19_bn"):
        get_backbone("vgg17")
    assert {"vgg11", "vgg16", "vgg19_bn"} <= set(list_backbones())


def test_registry_refuses_duplicates():
    spec = get_backbone("vgg11")
    with pytest.raises(ValueError, match="already registered"):
        register_backbone(BackboneSpec(name="vgg11", build=spec.build,
                                       build_features=spec.build_features,
                                       layer_names=spec.layer_names))


def test_classifier_forward_shape():
    model = get_backbone("vgg11").build().eval()
    with torch.no_grad():
        assert model(torch.rand(1, 3, 32, 32)).shape == (1, 1000)
