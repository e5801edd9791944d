"""A private MLflow file store for tests that run training code in the pytest process."""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path

import mlflow
import pytest


@contextmanager
def private_mlflow_store(folder: Path):
    """Tracking and registry in `folder` until the block ends, then the previous URIs again. Both are set as
    globals: an earlier test's LocalTarget may have set them, and a set global outranks MLFLOW_TRACKING_URI, so
    runs would land in its store and their artifacts in ./mlruns of wherever pytest runs. A file store: creating a
    SQLite one runs MLflow's schema migrations, seconds that test nothing of ours."""
    previous = mlflow.get_tracking_uri(), mlflow.get_registry_uri()
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
        mlflow.set_tracking_uri(folder.as_uri())
        mlflow.set_registry_uri(folder.as_uri())
        try:
            yield environment
        finally:
            mlflow.set_tracking_uri(previous[0])
            mlflow.set_registry_uri(previous[1])
