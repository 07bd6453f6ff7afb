"""The performance paths give the results of the plain ones: stacked fold heads, chunked fine-tune steps,
batched rendering on the device, worker processes, native resolution, precision choice."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from osteoscreen.core.errors import InputError
from osteoscreen.data.cohort import Cohort
from osteoscreen.data.patches import random_augmentation, render_views
from osteoscreen.data.subject_patches import SubjectPatches
from osteoscreen.evaluation.crossval import CVConfig
from osteoscreen.evaluation.execution import LocalBackend
from osteoscreen.evaluation.experiment import run_folds
from osteoscreen.models.backbones import Backbone
from osteoscreen.models.heads import build_head
from osteoscreen.models.octuplet import OctupletNet
from osteoscreen.reporting.runs import RunFolder
from osteoscreen.training.config import TrainConfig
from osteoscreen.training.finetune import finetune_step
from osteoscreen.training.fit import fit, predict_proba
from osteoscreen.training.stacked import fit_frozen_folds

FROZEN = TrainConfig(head="group-attention", views=2, epochs=8, precision="fp32")


@pytest.fixture(scope="module")
def cohort(planted_cohort):
    return planted_cohort(14, seed=5)


def assert_same_heads(first, second):
    for (name, a), b in zip(first.head.state_dict().items(), second.head.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5, msg=name)
    torch.testing.assert_close(first.feature_mean, second.feature_mean)


@pytest.mark.parametrize("head", ["group-attention", "gated-abmil"])
def test_folds_trained_together_equal_each_fold_trained_alone(cohort, head):
    config = replace(FROZEN, head=head)
    train_sets = [np.delete(np.arange(14), i) for i in range(4)] + [np.arange(10)]  # two sizes, interleaved
    together = fit_frozen_folds(cohort, train_sets, config)
    for train, model in zip(train_sets, together, strict=True):
        assert_same_heads(model, fit(cohort, train, config))
    assert not torch.equal(together[0].head.fc.weight, together[1].head.fc.weight)  # folds really differ


def test_a_fold_without_both_classes_is_refused(cohort):
    with pytest.raises(InputError, match="one subject of each class"):
        fit_frozen_folds(cohort, [np.arange(10), np.array([0, 2, 4])], FROZEN)


def test_chunked_finetune_step_gives_the_whole_batch_gradient():
    torch.manual_seed(0)
    backbone = Backbone("efficientnet_lite0", "none")
    net = OctupletNet(backbone, build_head("group-attention", backbone.feature_dim, 16))
    net.eval()  # no drop-connect: its random draws depend on the chunking; BatchNorm is frozen in training anyway
    patches, labels = torch.rand(4, 8, 1, 64, 64), torch.tensor([0, 1, 1, 0])
    gradients = []
    for chunk in (32, 8):  # the whole batch at once, then one subject per chunk
        backbone.net.train_chunk = chunk
        optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
        finetune_step(net, optimizer, patches, labels, torch.tensor([1.0, 3.0]), "fp32")
        gradients.append(torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None]))
    torch.testing.assert_close(gradients[1], gradients[0], rtol=1e-4, atol=1e-6)


def test_training_mode_keeps_batchnorm_statistics_frozen():
    backbone = Backbone("efficientnet_lite0", "none")
    net = OctupletNet(backbone, build_head("concat", backbone.feature_dim)).train()
    norms = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms) and net.head.training


@pytest.mark.parametrize("native", [True, False])
def test_the_default_precision_does_not_follow_the_hardware(monkeypatch, native):
    monkeypatch.setattr("osteoscreen.core.precision.bf16_native", lambda device="cpu": native)
    assert TrainConfig().precision == "fp32"
    if native:
        assert TrainConfig(precision="bf16").precision == "bf16"
    else:
        with pytest.warns(UserWarning, match="no native bf16"):
            assert TrainConfig(precision="bf16").precision == "bf16"
    for bad in ("fp16", "auto"):
        with pytest.raises(InputError, match="precision: expected one of fp32, bf16"):
            TrainConfig(precision=bad)
    with pytest.raises(InputError, match=r"threads: expected a value in \[1, 256\]"):
        TrainConfig(threads=0)


def test_native_res_feeds_patches_at_their_own_size(cohort, monkeypatch):
    sizes = []
    original = Cohort.render

    def spy(self, indices, out_size, generator=None, device="cpu"):
        sizes.append(out_size)
        return original(self, indices, out_size, generator, device)

    monkeypatch.setattr(Cohort, "render", spy)
    config = TrainConfig(mode="finetune", backbone="alexnet", weights="none", epochs=1, batch_size=8,
                         native_res=True)
    fit(cohort, np.arange(8), config)
    assert set(sizes) == {config.patch.patch_px} == {100}


def test_finetune_workers_give_the_same_records_and_a_projection(planted_cohort, tmp_path):
    small = planted_cohort(6, seed=2)
    config = CVConfig(methods=("majority", "concat"), protocol="kfold", folds=3, repeats=1, train=TrainConfig(
        mode="finetune", backbone="alexnet", weights="none", epochs=1, batch_size=8, native_res=True))
    messages = []
    alone = run_folds(small, config, RunFolder(tmp_path / "one"), backend=LocalBackend(1), log=messages.append)[0]
    # majority here, concat in 2 worker processes
    parallel = run_folds(small, config, RunFolder(tmp_path / "two"), backend=LocalBackend(2))[0]
    for method in config.methods:
        strip = [{k: v for k, v in r.items() if k != "wall_s"} for r in alone[method]]
        assert strip == [{k: v for k, v in r.items() if k != "wall_s"} for r in parallel[method]]
    assert len(messages) == 1 and "projected" in messages[0]
    record = json.loads(next((tmp_path / "two" / "folds" / "seed-0" / "concat").glob("*.json")).read_text())
    assert record["wall_s"] > 0
    assert len(record["history"]["loss"]) == len(record["history"]["accuracy"]) == 1  # one epoch


def test_frozen_folds_of_a_head_run_as_one_batch(cohort, tmp_path):
    records = run_folds(cohort, CVConfig(methods=("abmil",), train=FROZEN), RunFolder(tmp_path))[0]["abmil"]
    assert len(records) == 14 and {r["batched_with"] for r in records} == {14}


def test_batched_rendering_reproduces_each_subject_rendered_alone(cohort):
    """One resampling of the whole batch on the device = the former renderer (`render_views` subject by
    subject) for the same draws, exactly up to 1e-6 (float32 grid arithmetic), also for crops of mixed sizes."""
    odd = SubjectPatches("odd", 1, np.random.default_rng(0).random((8, 90, 90), dtype=np.float32), 72, 0)
    mixed = Cohort([*cohort.patches[:5], odd, *cohort.patches[5:8]], cohort.patch_config)
    indices = [5, 0, 3, 5, 8]  # unordered, repeated, the odd size in between
    for size in (100, 224):
        batched = mixed.render(indices, size, torch.Generator().manual_seed(7))
        generator = torch.Generator().manual_seed(7)
        for position, index in enumerate(indices):
            stretch, flip = random_augmentation(8, mixed.patch_config, generator)
            alone = render_views(torch.from_numpy(mixed.patches[index].crops), mixed.patch_config.context, size,
                                 stretch, flip)
            torch.testing.assert_close(batched[position, :, 0], alone, rtol=0, atol=1e-6)
    plain = mixed.render(indices, 64)
    assert torch.equal(plain[0], plain[3]) and plain.shape == (5, 8, 1, 64, 64)


def test_finetune_records_its_training_curve_and_is_reproducible(cohort):
    config = TrainConfig(mode="finetune", backbone="alexnet", weights="none", epochs=3, batch_size=4,
                         native_res=True, precision="fp32")
    first, again = fit(cohort, np.arange(10), config), fit(cohort, np.arange(10), config)
    assert first.history == again.history
    assert len(first.history["loss"]) == 3 and all(np.isfinite(first.history["loss"]))
    assert all(0 <= a <= 1 for a in first.history["accuracy"])
    probabilities = [predict_proba(model, cohort, [10, 11])[0] for model in (first, again)]
    np.testing.assert_array_equal(*probabilities)


def test_texture_feature_is_standardised_by_the_training_patches():
    torch.manual_seed(0)
    backbone = Backbone("efficientnet_lite0").eval()  # ImageNet weights: features that vary as real ones do
    net = OctupletNet(backbone, build_head("concat", backbone.texture_dim), "texture").eval()
    patches = torch.rand(12, 1, 48, 48)
    net.set_feature_scale(patches)
    with torch.no_grad():
        features = net.per_patch(patches)
    with torch.no_grad():
        raw_std = backbone.texture_features(patches).std(dim=0)
    floored = raw_std < raw_std.median()  # the less varying half: divided by the median deviation instead
    torch.testing.assert_close(features.mean(dim=0), torch.zeros(backbone.texture_dim), atol=1e-4, rtol=0)
    torch.testing.assert_close(features.std(dim=0)[~floored], torch.ones(int((~floored).sum())), atol=1e-3, rtol=0)
    assert (features.std(dim=0)[floored] < 1).all()
    assert {"feature_mean", "feature_std"} <= set(net.state_dict())  # saved with the weights
