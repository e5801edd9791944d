"""Fixtures shared by test modules."""

from __future__ import annotations

import pytest

from jobs.azure import assets as azure_assets
from tests.bank_sample import bank_frame
from tests.housing_sample import housing_frame


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
    monkeypatch.setattr(azure_assets, "WORK_DIR", tmp_path / "work")
    folder = tmp_path / "data"
    folder.mkdir()
    housing_frame(60).to_csv(folder / "housing.csv", index=False)
    bank_frame(60).to_csv(folder / "bank-marketing.csv", index=False, sep=";")
    return folder
