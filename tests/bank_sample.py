"""Small generated data with the columns of UCI bank marketing (bank-full.csv: ';'-separated, target `y`),
for the tests that train, serve and compare classifiers: the real file's schema, none of its rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

JOBS = ("admin.", "technician", "services", "management", "retired", "blue-collar", "student")
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")


def bank_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    duration = rng.gamma(2.0, 130.0, rows).round()
    month = rng.choice(MONTHS, rows)
    pdays = np.where(rng.random(rows) < 0.8, -1, rng.integers(1, 400, rows))
    poutcome = np.where(pdays < 0, "unknown", rng.choice(["success", "failure", "other"], rows))
    # subscribing grows with the call's length and a past success, as in the real data
    score = duration / 300 + 2.0 * (poutcome == "success") + 0.8 * np.isin(month, ("mar", "sep", "oct", "dec"))
    subscribed = rng.random(rows) < 1 / (1 + np.exp(-(score - 2.5)))
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, rows),
            "job": rng.choice(JOBS, rows),
            "marital": rng.choice(["married", "single", "divorced"], rows),
            "education": rng.choice(["primary", "secondary", "tertiary", "unknown"], rows),
            "default": rng.choice(["no", "yes"], rows, p=[0.98, 0.02]),
            "balance": rng.normal(1400, 3000, rows).round(),
            "housing": rng.choice(["yes", "no"], rows),
            "loan": rng.choice(["no", "yes"], rows, p=[0.85, 0.15]),
            "contact": rng.choice(["cellular", "telephone", "unknown"], rows),
            "day": rng.integers(1, 32, rows),
            "month": month,
            "duration": duration,
            "campaign": rng.integers(1, 10, rows),
            "pdays": pdays,
            "previous": np.where(pdays < 0, 0, rng.integers(1, 6, rows)),
            "poutcome": poutcome,
            "y": np.where(subscribed, "yes", "no"),
        }
    )


def bank_records(rows: int, seed: int = 1) -> list[dict]:
    """Request records (no target) as JSON values, numbers as floats."""
    frame = bank_frame(rows, seed).drop(columns="y")
    numbers = frame.select_dtypes("number").columns
    return frame.astype(dict.fromkeys(numbers, float)).to_dict(orient="records")
