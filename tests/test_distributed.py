"""Ray backend (a local Ray instance with 2 CPUs, started here): the same files as a local run, a task whose
worker dies is retried, an interrupted run resumes without recomputing finished folds, predict shards keep order."""

import functools
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import ray

from osteoscreen.cli import main
from osteoscreen.core.distributed import import_ray
from osteoscreen.core.errors import InputError
from osteoscreen.data.cohort import Cohort
from osteoscreen.data.dataset import load_dataset
from osteoscreen.deploy.model import Model
from osteoscreen.deploy.screening import predict
from osteoscreen.evaluation.crossval import CVConfig, run_job
from osteoscreen.evaluation.execution import RayBackend
from osteoscreen.reporting.runs import run_cross_validation
from osteoscreen.training.config import TrainConfig
from osteoscreen.training.fit import fit

CONFIG = CVConfig(methods=("majority", "knn-lbp", "group-attention"), seeds=(0, 1),
                  train=TrainConfig(views=2, epochs=5))


@pytest.fixture(scope="module")  # `make test` sends a test file whole to one worker: one local Ray instance at a time
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the fault-injecting tasks below
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def local_run(small_png_cohort, tmp_path_factory):
    run = tmp_path_factory.mktemp("local") / "run"
    run_cross_validation(small_png_cohort, run, CONFIG)
    return run


def fold_files(run: Path) -> dict[str, int]:
    """Every fold file of a run and its modification time (ns)."""
    return {str(p.relative_to(run)): p.stat().st_mtime_ns for p in sorted((run / "folds").rglob("*.json"))}


def test_ray_and_local_runs_write_identical_metrics(local_ray, local_run, small_png_cohort, tmp_path):
    run_cross_validation(small_png_cohort, tmp_path / "ray", CONFIG, backend=RayBackend())
    assert (tmp_path / "ray" / "metrics.json").read_bytes() == (local_run / "metrics.json").read_bytes()
    assert (tmp_path / "ray" / "predictions.csv").read_bytes() == (local_run / "predictions.csv").read_bytes()
    metrics = json.loads((local_run / "metrics.json").read_text())
    assert [s["seed"] for s in metrics["seeds"]] == [0, 1] and metrics["methods"] == metrics["seeds"][0]["methods"]
    oa = [s["methods"]["group-attention"]["OA"] for s in metrics["seeds"]]
    assert metrics["spread"]["group-attention"]["OA"]["mean"] == pytest.approx(np.mean(oa))
    assert metrics["spread"]["group-attention"]["OA"]["sd"] == pytest.approx(np.std(oa, ddof=1))
    assert "Across 2 seeds" in (local_run / "report.html").read_text()


def _die_once(marker: Path, shared, job):
    """A task whose worker process dies the first time it runs (as a killed or OOM-ed worker would)."""
    if job.method == "group-attention" and job.seed == 1 and not marker.exists():
        marker.touch()
        os._exit(1)
    return run_job(shared, job)


def test_a_task_whose_worker_dies_is_retried(local_ray, local_run, small_png_cohort, tmp_path):
    marker = tmp_path / "died"
    backend = RayBackend(task=functools.partial(_die_once, marker))
    run_cross_validation(small_png_cohort, tmp_path / "run", CONFIG, backend=backend)
    assert marker.exists()  # the worker did die once
    assert fold_files(tmp_path / "run").keys() == fold_files(local_run).keys()
    assert (tmp_path / "run" / "metrics.json").read_bytes() == (local_run / "metrics.json").read_bytes()


def _fail_after_the_others(run: Path, shared, job):
    """seed 1's group-attention fails once every other job's folds are on disk (an interrupted run)."""
    if job.method == "group-attention" and job.seed == 1:
        deadline = time.monotonic() + 120
        while len(list((run / "folds").rglob("*.json"))) < 5 * 4 and time.monotonic() < deadline:
            time.sleep(0.2)
        raise RuntimeError("interrupted")
    return run_job(shared, job)


def test_an_interrupted_ray_run_resumes_without_recomputing_finished_folds(local_ray, local_run, small_png_cohort,
                                                                          tmp_path):
    run = tmp_path / "run"
    with pytest.raises(RuntimeError, match="interrupted"):
        run_cross_validation(small_png_cohort, run, CONFIG, backend=RayBackend(task=functools.partial(
            _fail_after_the_others, run)))
    finished = fold_files(run)
    assert len(finished) == 5 * 4 and not any("seed-1/group-attention" in name for name in finished)
    run_cross_validation(small_png_cohort, run, CONFIG, backend=RayBackend())  # resume (could be another cluster)
    resumed = fold_files(run)
    assert {name: resumed[name] for name in finished} == finished  # finished folds untouched
    assert resumed.keys() == fold_files(local_run).keys()
    assert (run / "metrics.json").read_bytes() == (local_run / "metrics.json").read_bytes()


def test_predict_on_ray_writes_the_local_rows_in_input_order(local_ray, small_png_cohort, tmp_path):
    dataset = load_dataset(small_png_cohort)
    config = TrainConfig(views=1, epochs=5)
    cohort = Cohort.from_dataset(dataset, config.patch)
    model = Model.load(Model(fit(cohort, np.arange(len(cohort)), config), training_data=dataset.summary())
                       .save(tmp_path / "model"))
    local = predict(model, dataset, tmp_path / "local")
    from osteoscreen.core.distributed import TaskResources

    sharded = predict(model, dataset, tmp_path / "ray", ray=TaskResources())
    assert sharded.read_bytes() == local.read_bytes()
    assert sorted(p.name for p in (tmp_path / "ray" / "figures").iterdir()) == \
        sorted(p.name for p in (tmp_path / "local" / "figures").iterdir()) != []


def test_missing_ray_is_named_with_its_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(InputError, match=r"pip install 'osteoscreen\[ray\]'"):
        import_ray()


def test_ray_options_without_the_ray_backend_are_refused(small_png_cohort, tmp_path, capsys):
    assert main(["cv", str(small_png_cohort), "--out", str(tmp_path / "r"), "--address", "auto"]) == 2
    assert "--backend ray" in capsys.readouterr().err
    assert main(["cv", str(small_png_cohort), "--out", str(tmp_path / "r"), "--seeds", "0,x"]) == 2
    assert "--seeds" in capsys.readouterr().err
    with pytest.raises(InputError, match="distinct seeds"):
        CVConfig(seeds=(1, 1))
