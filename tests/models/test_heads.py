import pytest
import torch

from osteoscreen.core.errors import InputError
from osteoscreen.models.backbones import Backbone
from osteoscreen.models.heads import HEADS, build_head, group_sums
from osteoscreen.models.octuplet import OctupletNet


@pytest.mark.parametrize("name", HEADS)
def test_head_output_shapes(name):
    output = build_head(name, 16)(torch.randn(5, 8, 16))
    assert output.logits.shape == (5, 2)
    if name == "concat":
        assert output.attention is None
    else:
        assert output.attention.shape == (5, 4)
    if name.endswith("abmil"):  # group attention = sum of the group's patch weights: a left/right swap keeps it
        head, features = build_head(name, 16), torch.randn(5, 8, 16)
        swapped = features.view(5, 4, 2, 16).flip(2).reshape(5, 8, 16)
        torch.testing.assert_close(head(swapped).attention, head(features).attention)


@pytest.mark.parametrize("name", ["group-attention", "abmil", "gated-abmil"])
def test_softmax_attention_sums_to_one(name):
    attention = build_head(name, 16, activation="softmax")(torch.randn(7, 8, 16)).attention
    torch.testing.assert_close(attention.sum(dim=1), torch.ones(7))


def test_sigmoid_attention_is_independent_per_group():
    attention = build_head("group-attention", 16, activation="sigmoid")(torch.randn(7, 8, 16)).attention
    assert ((attention > 0) & (attention < 1)).all()
    assert not torch.allclose(attention.sum(dim=1), torch.ones(7))


def test_group_sums_add_right_and_left():
    features = torch.arange(8.0).view(1, 8, 1)
    assert group_sums(features).flatten().tolist() == [1.0, 5.0, 9.0, 13.0]


def test_group_attention_weights_scale_the_groups():
    head = build_head("group-attention", 3)
    features = torch.randn(2, 8, 3)
    output = head(features)
    phi = (group_sums(features) * output.attention.unsqueeze(-1)).flatten(1)
    torch.testing.assert_close(output.logits, head.fc(phi))


@pytest.mark.parametrize("backbone_name", ["efficientnet_lite0", "alexnet"])
def test_octuplet_shares_one_backbone_over_8_patches(backbone_name):
    backbone = Backbone(backbone_name, "none").eval()
    net = OctupletNet(backbone, build_head("group-attention", backbone.feature_dim)).eval()
    patches = torch.rand(2, 8, 1, 224, 224)
    with torch.inference_mode():
        output = net(patches)
        features = net.patch_features(patches)
        torch.testing.assert_close(features[1, 3], backbone(patches[1, 3:4])[0], atol=1e-4, rtol=1e-4)
    assert output.logits.shape == (2, 2) and output.attention.shape == (2, 4)


def test_parameter_groups_have_their_own_learning_rates():
    backbone = Backbone("alexnet", "none")
    net = OctupletNet(backbone, build_head("concat", backbone.feature_dim))
    optimizer = torch.optim.SGD(net.parameter_groups(1e-4, 1e-2, 1e-4), momentum=0.9)
    groups = {group["name"]: group for group in optimizer.param_groups}
    assert groups["backbone"]["lr"] == 1e-4 and groups["head"]["lr"] == 1e-2
    assert {id(p) for p in groups["backbone"]["params"]} == {id(p) for p in backbone.parameters()}
    assert {id(p) for p in groups["head"]["params"]} == {id(p) for p in net.head.parameters()}
    assert all(group["momentum"] == 0.9 and group["weight_decay"] == 1e-4 for group in optimizer.param_groups)


def test_ill_args():
    with pytest.raises(InputError, match="unknown head"):
        build_head("transformer", 8)
    with pytest.raises(InputError, match="attention activation"):
        build_head("group-attention", 8, activation="relu")
    with pytest.raises(InputError, match="expected features of 8 patches"):
        build_head("concat", 8)(torch.randn(2, 6, 8))
