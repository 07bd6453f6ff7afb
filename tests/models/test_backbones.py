import pytest
import torch
from skimage import data

from osteoscreen.core.errors import InputError
from osteoscreen.models import backbones
from osteoscreen.models.backbones import AlexNet, Backbone, imagenet_top5

CAT_CLASSES = set(range(281, 286))  # tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def efficientnet():
    return Backbone("efficientnet_lite0", "imagenet").eval()


def test_pretrained_efficientnet_sees_a_cat(efficientnet):
    top5 = imagenet_top5(efficientnet, data.chelsea())
    assert {index for index, _, _ in top5} & CAT_CLASSES
    assert top5[0][0] in CAT_CLASSES and top5[0][2] > 0.5
    assert efficientnet.weights_source["sha256"].startswith("579344248a93")


def test_random_init_does_not_see_a_cat():
    top5 = imagenet_top5(Backbone("efficientnet_lite0", "none"), data.chelsea())
    assert top5[0][2] < 0.5


@pytest.mark.parametrize("name, dim, texture_dim", [("efficientnet_lite0", 1280, 512), ("alexnet", 4096, 2304)])
def test_output_shapes(name, dim, texture_dim):
    backbone = Backbone(name, "none").eval()
    grey = torch.rand(3, 1, 224, 224)
    with torch.inference_mode():
        assert backbone(grey).shape == (3, dim)
        assert backbone.texture_features(grey).shape == (3, texture_dim) == (3, backbone.texture_dim)


@pytest.mark.parametrize("name", ["efficientnet_lite0", "alexnet"])
def test_the_fused_inference_copy_gives_the_same_features_and_leaves_the_backbone_alone(name, efficientnet):
    backbone = efficientnet if name == "efficientnet_lite0" else Backbone("alexnet", "none").eval()
    before = {key: value.clone() for key, value in backbone.state_dict().items()}
    fused = backbone.for_inference()
    grey = torch.rand(4, 1, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        for method in ("texture_features", "forward"):
            expected, got = getattr(backbone, method)(grey), getattr(fused, method)(grey)
            assert torch.allclose(got, expected, rtol=1e-4, atol=1e-5 * float(expected.abs().max())), method
    assert backbone.state_dict().keys() == before.keys()
    assert all(torch.equal(backbone.state_dict()[key], value) for key, value in before.items())
    if name == "efficientnet_lite0":
        assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in fused.modules())
        assert sum(isinstance(m, torch.nn.BatchNorm2d) for m in backbone.modules()) > 20
    else:
        assert fused is backbone  # nothing to fuse: no copy of its 61 M weights


def test_alexnet_loads_a_torchvision_layout_file_from_a_path(tmp_path):
    reference = AlexNet()
    torch.save(reference.state_dict(), tmp_path / "alexnet-owt-7be5be79.pth")
    backbone = Backbone("alexnet", str(tmp_path / "alexnet-owt-7be5be79.pth"))
    assert torch.equal(backbone.net.features[0].weight, reference.features[0].weight)
    assert backbone.weights_source["file"] == "alexnet-owt-7be5be79.pth"
    names = set(reference.state_dict())
    assert {"features.0.weight", "features.10.bias", "classifier.1.weight", "classifier.6.bias"} <= names


def test_alexnet_offline_without_weights_says_where_to_put_the_file(tmp_path, monkeypatch):
    monkeypatch.setattr(backbones, "hub_checkpoint_dir", lambda: tmp_path)

    def offline(url, dst, progress):
        raise OSError("network unreachable")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(InputError, match=f"place torchvision's alexnet-owt-7be5be79.pth at {tmp_path}"):
        Backbone("alexnet")


def test_mismatched_weights_are_refused(tmp_path):
    torch.save({"not": torch.zeros(1)}, tmp_path / "w.pth")
    with pytest.raises(InputError, match="does not match backbone alexnet"):
        Backbone("alexnet", str(tmp_path / "w.pth"))


def test_ill_args(tmp_path):
    with pytest.raises(InputError, match="unknown backbone"):
        Backbone("resnet50", "none")
    with pytest.raises(InputError, match="weights file not found"):
        Backbone("alexnet", str(tmp_path / "missing.pth"))
    with pytest.raises(InputError, match="unknown tap"):
        Backbone("alexnet", "none", taps=(2,))
    (tmp_path / "junk.pth").write_bytes(b"junk")
    with pytest.raises(InputError, match="not a loadable weights file"):
        Backbone("alexnet", str(tmp_path / "junk.pth"))


@pytest.mark.parametrize("name", ["alexnet", "efficientnet_lite0"])
def test_one_channel_stem_equals_the_replicated_normalised_input(name):
    torch.manual_seed(0)
    backbone = Backbone(name, "none").eval()
    grey = torch.rand(3, 1, 224, 224)
    rgb = (grey.expand(-1, 3, -1, -1) - backbone.mean) / backbone.std
    with torch.no_grad():
        expected = backbone.net.stem(rgb)
        actual = backbone.stem(grey)
    assert actual.shape == expected.shape
    torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-4)
    assert (expected[:, :, 0] - expected[:, :, 5]).abs().max() > 1e-3  # the border really differs


def test_stem_gradient_matches_the_replicated_input():
    torch.manual_seed(1)
    backbone = Backbone("alexnet", "none")
    grey = torch.rand(2, 1, 64, 64)
    rgb = (grey.expand(-1, 3, -1, -1) - backbone.mean) / backbone.std
    backbone.net.stem(rgb).square().sum().backward()
    expected = backbone.net.stem.weight.grad.clone()
    backbone.net.stem.weight.grad = None
    backbone.stem(grey).square().sum().backward()
    torch.testing.assert_close(backbone.net.stem.weight.grad, expected, rtol=1e-4, atol=1e-3)
