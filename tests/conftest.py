"""Fixtures shared by test modules, and the order the suite's files start in."""

from __future__ import annotations

import os
import sys

# One thread of numerical work per process, set before anything loads NumPy's OpenBLAS or an OpenMP runtime: the
# suite runs a worker per core (pytest.ini), each starting training jobs and servers, and threads that wait spinning
# for a core another process holds cost CPU time for nothing (the suite, measured: 351 s of CPU instead of 394 s,
# 188 s instead of 210 s). Inherited by every process the suite starts; a value already set is kept.
for variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
    os.environ.setdefault(variable, "1")

import pytest  # noqa: E402


def pytest_configure(config):
    """skops before the test modules: the workers train and load models in-process, and skops' import looks up each
    of SciPy's ufuncs in every loaded module (jobs/src/tabular.py), thousands once Pulumi and azure-ai-ml are loaded.
    Not in pytest-xdist's controller, which runs no test: what this file imports there delays every worker's start
    (so the fixtures below import what they need themselves). Then azure-ai-ml's check for its experimental
    entities, made cheap."""
    if getattr(config.option, "numprocesses", None) and not hasattr(config, "workerinput"):
        return
    from jobs.flow import SOURCE_DIR

    sys.path.insert(0, str(SOURCE_DIR))  # as the test modules that run the job scripts in-process do
    import tabular

    tabular.import_skops_without_torch()
    from azure.ai.ml._utils import _experimental

    _called_from_a_rest_object.replaces = _experimental._should_skip_warning
    _experimental._should_skip_warning = _called_from_a_rest_object


def _called_from_a_rest_object() -> bool:
    """azure-ai-ml's _experimental._should_skip_warning (whether to warn that an entity is experimental: not when a
    `_from_rest_object` frame is on the stack), without the inspect.stack() it calls each time such an entity is built,
    which reads the source of every frame: under pytest's deep stacks, 8 CPU-seconds of the suite (494 calls)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code.co_name == "_from_rest_object":
            return True
        frame = frame.f_back
    return False


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    """The suite never downloads a workload's data: a missing file fails as it would with no network."""

    def refuse(url, *args, **kwargs):
        raise OSError(f"no network in the tests: {url}")

    monkeypatch.setattr("jobs.workloads.urlopen", refuse)


@pytest.fixture(autouse=True)
def azure_downloads(tmp_path, monkeypatch):
    """What the Azure target downloads (models, batch outputs) lands under the test's folder, not the repo's."""
    monkeypatch.setattr("jobs.azure.target.MODEL_DOWNLOADS", tmp_path / "azure-models")
    monkeypatch.setattr("jobs.azure.batch.DOWNLOADS", tmp_path / "azure-batch")


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """Small generated versions of the catalog's files (the real ones are not needed here)."""
    from tests.bank_sample import bank_frame
    from tests.housing_sample import housing_frame

    monkeypatch.setattr("jobs.azure.assets.WORK_DIR", tmp_path / "work")
    folder = tmp_path / "data"
    folder.mkdir()
    housing_frame(60).to_csv(folder / "housing.csv", index=False)
    bank_frame(60).to_csv(folder / "bank-marketing.csv", index=False, sep=";")
    return folder


# The files that take longest (each trains, serves or runs whole pipelines), started first: pytest-xdist gives each
# worker whole files (--dist loadfile, in the order collected: --no-loadscope-reorder, pytest.ini), so starting the
# longest first keeps one worker from being left with a long file at the end while the other has finished.
SLOWEST_FIRST = ("test_drift_loop.py", "test_local.py", "test_promotion.py", "test_train.py", "test_azure_cli.py",
                 "test_pipeline.py", "test_collect.py", "test_azure_stage.py", "test_automl.py", "test_batch.py",
                 "test_score.py")  # fmt: skip


def pytest_collection_modifyitems(items):
    rank = {name: place for place, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its own order
