import hashlib
import json

import pytest
from click.testing import CliRunner

from perceptual_loss import weights as weights_module
from perceptual_loss.cli import cli
from perceptual_loss.weights import WeightSpec, get_weight_spec, list_weights


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """Empty weights folder and torch cache, no mirror, downloads off unless a test allows."""
    monkeypatch.setenv("PERCEPTUAL_LOSS_WEIGHTS_DIR", str(tmp_path / "weights"))
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setenv("PERCEPTUAL_LOSS_OFFLINE", "1")
    monkeypatch.delenv("PERCEPTUAL_LOSS_MIRROR", raising=False)
    (tmp_path / "weights").mkdir()
    return tmp_path


@pytest.fixture
def tiny_spec(tmp_path, monkeypatch):
    """A registry entry whose 'official' file is a few bytes the test controls."""
    payload = b"tiny weights for the fetch test"
    digest = hashlib.sha256(payload).hexdigest()
    spec = WeightSpec(
        key="vgg11/tiny-test", backbone="vgg11", filename=f"tiny-{digest[:8]}.pth",
        url="https://example.invalid/tiny.pth", file_format="torch", hash_algorithm="sha256",
        hash_value=digest[:8], normalization="imagenet", license="test",
    )
    monkeypatch.setitem(weights_module._REGISTRY._items, spec.key, spec)
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / spec.filename).write_bytes(payload)
    return spec, payload, mirror


def test_list_shows_every_key_where_it_is_looked_for_and_presence(isolated_cache):
    result = CliRunner().invoke(cli, ["weights", "list", "--json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.stdout)
    assert sorted(row["key"] for row in rows) == list_weights()
    # files without a published hash are registered local-only specs, listed like the others
    medical = ["medicalnet_resnet10/medicalnet", "medicalnet_resnet10/medicalnet-23datasets",
               "medicalnet_resnet50/medicalnet", "medicalnet_resnet50/medicalnet-23datasets",
               "radimagenet_resnet50/radimagenet"]
    assert set(medical) <= set(list_weights())
    assert all(get_weight_spec(key).local_only for key in medical)
    radimagenet = next(row for row in rows if row["key"] == medical[-1])
    assert radimagenet["searched"][0] == str(isolated_cache / "weights"
                                             / "RadImageNet-ResNet50_notop.pth")
    assert radimagenet["searched"][-1].endswith("medicalnet/RadImageNet-ResNet50_notop.pth")
    resnet10 = next(row for row in rows if row["key"] == medical[1])
    assert resnet10["file"] == "medicalnet_resnet_10_23dataset.pth or resnet_10_23dataset.pth"
    assert resnet10["searched"][:2] == [
        str(isolated_cache / "weights" / "medicalnet_resnet_10_23dataset.pth"),
        str(isolated_cache / "weights" / "resnet_10_23dataset.pth")]
    vgg16 = next(row for row in rows if row["key"] == "vgg16/imagenet")
    assert vgg16["present"] is False
    assert vgg16["searched"] == [
        str(isolated_cache / "weights" / "vgg16-397923af.pth"),
        str(isolated_cache / "torch" / "hub" / "checkpoints" / "vgg16-397923af.pth"),
    ]
    keras = next(row for row in rows if row["key"] == "vgg16/keras-imagenet")
    assert keras["searched"][-1].startswith(str(isolated_cache / "keras" / "models"))

    (isolated_cache / "weights" / "vgg16-397923af.pth").write_bytes(b"x")
    result = CliRunner().invoke(cli, ["weights", "list", "--backbone", "vgg16"])
    assert result.exit_code == 0, result.output
    assert "present" in result.stdout and "missing" in result.stdout
    assert "1 of 2 present" in result.stdout
    assert "PERCEPTUAL_LOSS_OFFLINE=1" in result.stdout


def test_fetch_downloads_from_mirror_and_checks_hash(isolated_cache, tiny_spec, monkeypatch):
    spec, payload, mirror = tiny_spec
    monkeypatch.setenv("PERCEPTUAL_LOSS_MIRROR", mirror.as_uri())
    monkeypatch.delenv("PERCEPTUAL_LOSS_OFFLINE")
    result = CliRunner().invoke(cli, ["weights", "fetch", spec.key])
    assert result.exit_code == 0, result.output
    cached = isolated_cache / "torch" / "hub" / "checkpoints" / spec.filename
    assert cached.read_bytes() == payload
    assert result.stdout.strip() == f"{spec.key}: {cached}"

    (mirror / spec.filename).write_bytes(b"tampered")
    cached.unlink()
    result = CliRunner().invoke(cli, ["weights", "fetch", spec.key])
    assert result.exit_code == 1
    assert "fails its sha256 check" in result.stderr
    assert not cached.exists()


def test_fetch_offline_is_one_clear_line(isolated_cache):
    result = CliRunner().invoke(cli, ["weights", "fetch", "vgg16"])
    assert result.exit_code == 1
    assert result.stderr.count("\n") == 1
    assert "vgg16-397923af.pth" in result.stderr
    assert "https://download.pytorch.org/models/vgg16-397923af.pth" in result.stderr
    assert "PERCEPTUAL_LOSS_OFFLINE" in result.stderr
    # the advice is how to get the file, not the very command that just failed
    assert "--file PATH/vgg16-397923af.pth" in result.stderr
    assert "`perceptual weights fetch vgg16/imagenet`" not in result.stderr


def test_fetch_local_file_is_verified_and_installed(isolated_cache, tiny_spec, tmp_path):
    spec, payload, mirror = tiny_spec
    result = CliRunner().invoke(cli, ["weights", "fetch", spec.key, "--file",
                                      str(mirror / spec.filename)])
    assert result.exit_code == 0, result.output
    assert (isolated_cache / "weights" / spec.filename).read_bytes() == payload
    wrong = tmp_path / "wrong.pth"
    wrong.write_bytes(b"something else")
    result = CliRunner().invoke(cli, ["weights", "fetch", spec.key, "--file", str(wrong)])
    assert result.exit_code == 1
    assert "fails its sha256 check" in result.stderr


def test_fetch_unknown_name(isolated_cache):
    result = CliRunner().invoke(cli, ["weights", "fetch", "resnet18"])
    assert result.exit_code == 1
    assert "unknown weights 'resnet18'" in result.stderr
    assert "vgg16/imagenet" in result.stderr


def test_fetch_of_a_local_only_file_says_where_to_get_it(isolated_cache):
    result = CliRunner().invoke(cli, ["weights", "fetch", "medicalnet_resnet10/medicalnet"])
    assert result.exit_code == 1
    assert "cannot fetch medicalnet_resnet10/medicalnet (it has no published hash" in result.stderr
    assert "github.com/Tencent/MedicalNet" in result.stderr
