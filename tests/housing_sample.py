"""Small generated data with the columns of the California housing data (housing.csv), for the tests that
run the local flow and serve its model: the real file's schema, none of its rows."""

from __future__ import annotations

import numpy as np
import pandas as pd

CATEGORIES = ("<1H OCEAN", "INLAND", "NEAR OCEAN", "NEAR BAY")


def housing_frame(rows: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    households = rng.integers(20, 1500, rows).astype(float)
    rooms = households * rng.uniform(3, 7, rows)
    income = rng.gamma(2.0, 2.0, rows)
    coast = rng.choice(CATEGORIES, rows)
    latitude, longitude = rng.uniform(32.5, 42, rows), rng.uniform(-124.3, -114.3, rows)
    value = 40_000 + 35_000 * income + 60_000 * (coast != "INLAND") + 8_000 * (latitude - 32.5)
    frame = pd.DataFrame(
        {
            "longitude": longitude.round(2),
            "latitude": latitude.round(2),
            "housing_median_age": rng.integers(1, 52, rows).astype(float),
            "total_rooms": rooms.round(),
            "total_bedrooms": (rooms * rng.uniform(0.15, 0.25, rows)).round(),
            "population": (households * rng.uniform(2, 4, rows)).round(),
            "households": households,
            "median_income": income.round(4),
            "median_house_value": (value * rng.lognormal(0, 0.1, rows)).round(),
            "ocean_proximity": coast,
        }
    )
    frame.loc[rng.random(rows) < 0.02, "total_bedrooms"] = np.nan  # as in the real file
    return frame


def request_records(rows: int, seed: int = 1) -> list[dict]:
    """Request records (no target) as JSON values; from 3 rows on, with a missing number, a missing and an
    unseen category."""
    frame = housing_frame(rows, seed).drop(columns="median_house_value").astype(object)
    records = frame.where(frame.notna(), None).to_dict(orient="records")
    for index, column, value in ((0, "median_income", None), (1, "ocean_proximity", None), (2, "ocean_proximity", "ISLAND")):
        if index < rows:
            records[index][column] = value
    return records
