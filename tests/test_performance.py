"""The performance paths give the results of the plain ones: stacked fold heads, chunked fine-tune steps,
worker processes, native resolution, precision choice."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from osteoscreen.errors import InputError
from osteoscreen.evaluation.crossval import CVConfig, LocalBackend, run_folds
from osteoscreen.models.backbones import Backbone
from osteoscreen.models.heads import build_head
from osteoscreen.models.octuplet import OctupletNet
from osteoscreen.precision import bf16_native, resolve_precision
from osteoscreen.training import Cohort, TrainConfig, finetune_step, fit, fit_frozen_folds

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


def test_precision_auto_follows_the_hardware():
    assert resolve_precision("auto") == ("bf16" if bf16_native() else "fp32")
    assert TrainConfig(precision="fp32").precision == "fp32"
    with pytest.raises(InputError, match="precision"):
        TrainConfig(precision="fp16")


def test_native_res_feeds_patches_at_their_own_size(cohort, monkeypatch):
    sizes = []
    original = Cohort.render

    def spy(self, indices, out_size, generator=None):
        sizes.append(out_size)
        return original(self, indices, out_size, generator)

    monkeypatch.setattr(Cohort, "render", spy)
    config = TrainConfig(mode="finetune", backbone="alexnet", weights="none", epochs=1, batch_size=8,
                         native_res=True)
    fit(cohort, np.arange(8), config)
    assert set(sizes) == {config.patch.patch_px} == {100}


def test_finetune_workers_give_the_same_records_and_a_projection(planted_cohort, tmp_path):
    small = planted_cohort(6, seed=2)
    ids = [p.subject_id for p in small.patches]
    config = CVConfig(methods=("majority", "concat"), train=TrainConfig(
        mode="finetune", backbone="alexnet", weights="none", epochs=1, batch_size=8, native_res=True))
    messages = []
    alone = run_folds(small, ids, config, tmp_path / "one", backend=LocalBackend(1), log=messages.append)[0]
    # majority here, concat in 2 worker processes
    parallel = run_folds(small, ids, config, tmp_path / "two", backend=LocalBackend(2))[0]
    for method in config.methods:
        strip = [{k: v for k, v in r.items() if k != "wall_s"} for r in alone[method]]
        assert strip == [{k: v for k, v in r.items() if k != "wall_s"} for r in parallel[method]]
    assert len(messages) == 1 and "projected" in messages[0]
    record = json.loads(next((tmp_path / "two" / "folds" / "seed-0" / "concat").glob("*.json")).read_text())
    assert record["wall_s"] > 0


def test_frozen_folds_of_a_head_run_as_one_batch(cohort, tmp_path):
    ids = [p.subject_id for p in cohort.patches]
    records = run_folds(cohort, ids, CVConfig(methods=("abmil",), train=FROZEN), tmp_path)[0]["abmil"]
    assert len(records) == 14 and {r["batched_with"] for r in records} == {14}
