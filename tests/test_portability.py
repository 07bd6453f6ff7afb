"""Results do not depend on the machine: not on the number of cores or of torch threads in the calling process
(every computation runs on TrainConfig.threads), and not on the CPU's vector width (osteoscreen.core.kernels pins the
AVX2 kernels). The whole suite runs under that pin (pytest's `-p osteoscreen.core.kernels`), so on any x86-64 CPU
with AVX2 it is the portability issue's AVX2 emulation; these tests vary the threads and cores themselves."""

import os
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch

from osteoscreen.core import kernels
from osteoscreen.evaluation.crossval import CVConfig
from osteoscreen.evaluation.execution import LocalBackend, default_workers
from osteoscreen.evaluation.experiment import run_folds
from osteoscreen.features.frozen import forget_frozen_features, frozen_features
from osteoscreen.reporting.runs import RunFolder
from osteoscreen.training.config import TrainConfig
from osteoscreen.training.fit import fit, predict_proba

CONFIG = TrainConfig(views=2, epochs=6)


@pytest.fixture(scope="module")
def cohort(planted_cohort):
    return planted_cohort(8, seed=11)


def _machine(monkeypatch, cores: int, torch_threads: int) -> None:
    """Pretend this process runs on `cores` cores with `torch_threads` torch threads set by its caller."""
    for module in ("osteoscreen.core.utils", "osteoscreen.evaluation.execution"):
        monkeypatch.setattr(f"{module}.available_cores", lambda: cores)
    torch.set_num_threads(torch_threads)


def test_features_are_the_same_bits_on_one_core_and_on_two(cohort, monkeypatch):
    before = torch.get_num_threads()
    found = []
    try:
        for cores, threads in ((1, 1), (2, 2), (2, 1)):
            _machine(monkeypatch, cores, threads)
            forget_frozen_features(cohort)
            found.append(frozen_features(cohort, CONFIG).clone())
    finally:
        torch.set_num_threads(before)
    assert all(torch.equal(found[0], other) for other in found[1:])
    assert torch.get_num_threads() == before


def test_a_fit_and_its_predictions_are_the_same_whatever_threads_the_caller_has(cohort, monkeypatch):
    before = torch.get_num_threads()
    results = []
    try:
        for threads in (1, 2):
            torch.set_num_threads(threads)
            model = fit(cohort, np.arange(6), CONFIG)
            results.append((model.head.state_dict(), predict_proba(model, cohort, np.arange(6, 8))[0]))
            assert torch.get_num_threads() == threads  # the caller's setting is given back
    finally:
        torch.set_num_threads(before)
    (first, p_first), (second, p_second) = results
    assert all(torch.equal(first[name], second[name]) for name in first)
    assert np.array_equal(p_first, p_second)


def test_methods_side_by_side_give_the_records_of_one_after_another(cohort, monkeypatch, tmp_path):
    """Two threads running the jobs (stacked heads seeded under a lock, baselines) against one: the same bits."""
    config = CVConfig(methods=("majority", "knn-lbp", "concat", "group-attention", "abmil"), train=CONFIG)
    records = []
    for cores in (1, 2):
        _machine(monkeypatch, cores, cores)
        store = RunFolder(tmp_path / f"cores-{cores}")
        records.append(run_folds(cohort, config, store, backend=LocalBackend(1))[0])
    torch.set_num_threads(2)
    strip = [{m: [{k: v for k, v in r.items() if k != "wall_s"} for r in rs] for m, rs in by_method.items()}
             for by_method in records]
    assert strip[0] == strip[1]
    assert strip[0]["concat"] != strip[0]["group-attention"]  # the heads really differ


def test_finetune_workers_fill_the_cores_within_memory(monkeypatch):
    _machine(monkeypatch, 16, torch.get_num_threads())
    assert default_workers("frozen") == 1
    assert default_workers("finetune", "cpu", threads=1) == min(16, os.sysconf("SC_PHYS_PAGES")
                                                                 * os.sysconf("SC_PAGE_SIZE") // 2**32)
    assert default_workers("finetune", "cpu", threads=4) <= 4


def _capability(env: dict) -> str:
    code = "import osteoscreen, torch; print(torch.backends.cpu.get_cpu_capability())"
    clean = {k: v for k, v in os.environ.items() if k not in (*kernels.PINNED, kernels.NATIVE_SWITCH,
                                                               "NPY_DISABLE_CPU_FEATURES")}
    return subprocess.run([sys.executable, "-c", code], env={**clean, **env}, capture_output=True, text=True,
                          check=True).stdout.strip()


def test_importing_osteoscreen_pins_the_avx2_kernels_unless_told_otherwise():
    pinnable = platform.machine().lower() in ("x86_64", "amd64") and "avx2" in kernels.cpu_flags()
    if pinnable:
        assert _capability({}) == "AVX2"
    assert _capability({"ATEN_CPU_CAPABILITY": "default"}) == "DEFAULT"  # the user's own setting is kept
    native = _capability({kernels.NATIVE_SWITCH: "native"})
    assert native == ("AVX512" if "avx512f" in kernels.cpu_flags() and pinnable else native)
    record = kernels.kernel_record()
    assert record["pinned"] == (pinnable and os.environ.get("ATEN_CPU_CAPABILITY") == "avx2")
    assert set(kernels.PINNED) <= set(record["variables"])


def test_the_kernel_fingerprint_is_recorded_and_does_not_follow_the_callers_threads():
    code = ("import osteoscreen, torch; torch.set_num_threads({}); from osteoscreen.core import kernels; "
            "print(kernels.fingerprint())")
    one, two = (subprocess.run([sys.executable, "-c", code.format(n)], capture_output=True, text=True, check=True)
                .stdout.strip() for n in (1, 2))
    assert one == two and len(one) == 12
    assert kernels.kernel_record()["fingerprint"] == kernels.fingerprint()
