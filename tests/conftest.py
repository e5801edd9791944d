"""Fixtures shared by test modules."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from jobs import azure_assets
from tests.housing_sample import housing_frame


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    """Small generated versions of the catalog's files (the real ones are not needed here)."""
    monkeypatch.setattr(azure_assets, "WORK_DIR", tmp_path / "work")
    rng = np.random.default_rng(0)
    rows = 60
    housing = housing_frame(rows)
    bank = pd.DataFrame(
        {"age": rng.integers(18, 90, rows), "job": rng.choice(["admin.", "technician"], rows), "y": ["yes", "no"] * (rows // 2)}
    )
    folder = tmp_path / "data"
    folder.mkdir()
    housing.to_csv(folder / "housing.csv", index=False)
    bank.to_csv(folder / "bank-marketing.csv", index=False, sep=";")
    return folder
