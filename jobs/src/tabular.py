"""What every training script here shares: reading a CSV, the seeded held-out split, the engineered
features, the metrics and the plots. One module, so that every candidate model is compared on the same
held-out rows with the same metric definitions.

Uploaded with the job's code and saved into each MLflow model (`code_paths`), so a model loads with
nothing but its own folder and the inference environment.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer, make_column_selector
from sklearn.impute import SimpleImputer
from sklearn.model_selection import KFold, train_test_split
from sklearn.neighbors import KDTree
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

SEED = 42
TEST_SIZE = 0.2
TASKS = ("regression", "classification")

# ratios that carry more signal than their parts, added when the CSV has both columns (census-style data)
RATIOS = {
    "rooms_per_household": ("total_rooms", "households"),
    "bedrooms_per_room": ("total_bedrooms", "total_rooms"),
    "population_per_household": ("population", "households"),
    "income_per_room": ("median_income", "total_rooms"),
}
# (latitude, longitude) column names that switch on the spatial features
COORDINATES = (("latitude", "longitude"), ("lat", "lon"), ("lat", "lng"))
ROTATIONS_DEGREES = (15, 30, 45, 60, 75)
# the nearest training rows whose target statistics become features; small ones matter most (cross-validated
# on the housing training rows: (4, 16, 64) beat (8, 32) by about 1% MAE)
NEIGHBOURS = (4, 16, 64)
# (month, day of month) column names that switch on the calendar features (UCI bank marketing has both)
CALENDAR = (("month", "day"), ("month", "day_of_month"), ("month", "dayofmonth"), ("month", "mday"))
MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
DAYS_BEFORE_MONTH = np.array([0, 0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334], dtype=float)  # by month 1-12
# the share of rows whose (month, day) must read as a date for the calendar features to switch on
CALENDAR_VALID_SHARE = 0.9
# weight, in rows, of the overall target mean in a calendar day's smoothed target mean
CALENDAR_SMOOTHING = 20.0


def positive(kind):
    """An argparse type: a positive number of `kind` (int or float). The training scripts share it."""

    def parse(value: str):
        number = kind(value)
        if number <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, not {value}")
        return number

    return parse


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV whatever its delimiter (UCI files use ';'); integer columns become float so that a
    missing value in a request is still a valid value of the column's type."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"data file not found: {path}")
    with path.open(newline="") as handle:
        try:
            delimiter = csv.Sniffer().sniff(handle.readline(), delimiters=",;\t|").delimiter
        except csv.Error:  # one column: nothing to sniff
            delimiter = ","
    frame = pd.read_csv(path, sep=delimiter)
    integers = frame.select_dtypes("integer").columns
    return frame.astype(dict.fromkeys(integers, "float64"))


def split(frame: pd.DataFrame, target: str, task: str):
    """The seeded held-out split every job uses: (X_train, X_test, y_train, y_test)."""
    if task not in TASKS:
        raise ValueError(f"--task must be one of {', '.join(TASKS)}, not {task!r}")
    if target not in frame.columns:
        raise ValueError(f"target column {target!r} is not in the data; columns: {', '.join(frame.columns)}")
    frame = frame.dropna(subset=[target])
    features, labels = frame.drop(columns=[target]), frame[target]
    if task == "regression" and not pd.api.types.is_numeric_dtype(labels):
        raise ValueError(f"target column {target!r} is not numeric, so it cannot be a regression target")
    stratify = labels if task == "classification" else None
    return train_test_split(features, labels, test_size=TEST_SIZE, random_state=SEED, stratify=stratify)


def write_split(frame: pd.DataFrame, target: str, task: str, out_dir: str | Path) -> dict[str, Path]:
    """Write the split as two MLTable folders (`train/`, `test/`), so AutoML trains and tests on the same
    rows as the other jobs. Returns the folders by name."""
    x_train, x_test, y_train, y_test = split(frame, target, task)
    folders = {}
    for name, features, labels in (("train", x_train, y_train), ("test", x_test, y_test)):
        folder = Path(out_dir) / name
        folder.mkdir(parents=True, exist_ok=True)
        features.assign(**{target: labels}).to_csv(folder / f"{name}.csv", index=False)
        (folder / "MLTable").write_text(
            f"paths:\n  - file: ./{name}.csv\ntransformations:\n  - read_delimited:\n"
            "      delimiter: ','\n      encoding: utf8\n      header: all_files_same_headers\n"
        )
        folders[name] = folder
    return folders


def day_of_year(month, day) -> np.ndarray:
    """The day of the year (1-365, no leap day) of month and day-of-month arrays; NaN where either does not
    read as a date. A month is a number 1-12 or an English name, any case, abbreviated or not ("may",
    "March"). Works on numpy arrays without pandas: the scoring script calls it once per request."""
    month = np.asarray(month)
    if month.dtype.kind in "biuf":
        number = month.astype(float)
    else:
        numbers = {value: _month_number(value) for value in set(month.tolist())}  # a few distinct values
        number = np.array([numbers[value] for value in month.tolist()], dtype=float)
    day = np.asarray(day, dtype=float)
    valid = (number >= 1) & (number <= 12) & (number == np.round(number)) & (day >= 1) & (day <= 31)
    index = np.where(valid, number, 0).astype(int)
    return np.where(valid, DAYS_BEFORE_MONTH[index] + np.round(day), np.nan)


def _month_number(value) -> float:
    if value is None or value != value:  # None or NaN
        return np.nan
    text = str(value).strip().lower()
    if text[:3] in MONTHS:
        return float(MONTHS.index(text[:3]) + 1)
    try:
        return float(text)
    except ValueError:
        return np.nan


def encoded_target(y) -> np.ndarray | None:
    """The target as one number per row, for the target statistics: log1p of a non-negative numeric target,
    a numeric target as it is, or for two classes the indicator of the second (sorted, as a classifier's
    `classes_`); None for more classes or no target."""
    if y is None:
        return None
    values = np.asarray(y)
    if pd.api.types.is_numeric_dtype(values.dtype) and values.dtype.kind != "b":
        values = values.astype(float)
        return np.log1p(values) if np.nanmin(values) >= 0 else values
    classes = np.unique(values.astype(str))
    return (values.astype(str) == classes[1]).astype(float) if len(classes) == 2 else None


class DerivedFeatures(BaseEstimator, TransformerMixin):
    """Adds engineered columns to the raw frame: ratios, log transforms of skewed counts, rotated
    coordinates, the day of the year, and target statistics: for coordinates, those of the nearest training
    rows; for a calendar day, the smoothed target mean of the training rows on that day and their count.
    The target statistics are computed out-of-fold while fitting, so a row never sees its own target. The
    target is numeric (its log when non-negative) or binary (the rate of the second class); a target with
    more classes gets no target statistics.

    Serving calls `transform` once per request, so it works on numpy columns and builds one frame."""

    def __init__(self, neighbours: tuple[int, ...] = NEIGHBOURS, folds: int = 5):
        self.neighbours = neighbours
        self.folds = folds

    def fit(self, X: pd.DataFrame, y=None):
        self.fit_transform(X, y)
        return self

    def fit_transform(self, X: pd.DataFrame, y=None, **fit_params):
        X = pd.DataFrame(X)
        self.feature_names_in_ = np.asarray(X.columns, dtype=object)
        numeric = X.select_dtypes("number")
        self.numeric_ = list(numeric.columns)
        self.ratios_ = {name: parts for name, parts in RATIOS.items() if set(parts) <= set(numeric.columns)}
        self.skewed_ = [c for c in numeric.columns if numeric[c].min() >= 0 and numeric[c].skew() > 1]
        lowered = {c.lower(): c for c in numeric.columns}
        self.coordinates_ = next(
            ((lowered[a], lowered[b]) for a, b in COORDINATES if a in lowered and b in lowered), None
        )
        self.calendar_ = self._find_calendar(X)
        self.tree_ = None
        self.calendar_means_ = self.calendar_rows_ = None
        target = encoded_target(y)
        if target is None or np.isnan(target).any():
            return self._frame(X, None, None)
        folds = list(KFold(self.folds, shuffle=True, random_state=SEED).split(np.arange(len(X))))
        neighbour_statistics = calendar_statistics = None
        if self.coordinates_ is not None:
            latitude, longitude = (X[c].to_numpy(dtype=float) for c in self.coordinates_)
            self.longitude_scale_ = float(np.cos(np.deg2rad(np.nanmean(latitude))))
            self.centre_ = np.array([np.nanmean(latitude), np.nanmean(longitude) * self.longitude_scale_])
            points = self._points(X)
            neighbour_statistics = np.empty((len(X), len(self._neighbour_columns())))
            for fitted, held in folds:
                neighbour_statistics[held] = self._statistics(KDTree(points[fitted]), points[held], target[fitted])
            self.tree_, self.target_ = KDTree(points), target
        if self.calendar_ is not None:
            days = day_of_year(*(X[c].to_numpy() for c in self.calendar_))
            calendar_statistics = np.empty((len(X), 2))
            for fitted, held in folds:
                means, rows = self._calendar_tables(days[fitted], target[fitted])
                # a fold's counts cover (folds - 1) / folds of the rows: scaled to the whole training set's
                calendar_statistics[held] = self._calendar_lookup(means, rows * self.folds / (self.folds - 1), days[held])
            self.calendar_means_, self.calendar_rows_ = self._calendar_tables(days, target)
        return self._frame(X, neighbour_statistics, calendar_statistics)

    def transform(self, X: pd.DataFrame):
        X = pd.DataFrame(X) if not isinstance(X, pd.DataFrame) else X
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise ValueError(f"input is missing columns: {', '.join(missing)}")
        return self._frame(X, *self._fitted_statistics(X))

    def transform_columns(self, columns) -> dict[str, np.ndarray]:
        """`transform` for a mapping of column name -> array, returning the same columns as a dict without
        building a frame: the scoring script's hot path (jobs/src/score.py)."""
        return self._columns(columns, *self._fitted_statistics(columns))

    def get_feature_names_out(self, input_features=None):
        names = list(self.feature_names_in_) + list(self.ratios_) + [f"log_{c}" for c in self.skewed_]
        if self.calendar_ is not None:
            names.append("day_of_year")
        if self.coordinates_ is not None:
            names += [f"rotated_{degrees}" for degrees in ROTATIONS_DEGREES]
        if self.tree_ is not None:
            names += self._neighbour_columns()
        if self.calendar_means_ is not None:
            names += ["day_of_year_target_mean", "day_of_year_rows"]
        return np.asarray(names, dtype=object)

    def _find_calendar(self, X: pd.DataFrame) -> tuple[str, str] | None:
        """The (month, day) columns, when the data has both and most of their rows read as dates."""
        lowered = {str(c).lower(): c for c in X.columns}
        for month, day in CALENDAR:
            if month in lowered and day in lowered and pd.api.types.is_numeric_dtype(X[lowered[day]]):
                columns = (lowered[month], lowered[day])
                present = X[list(columns)].notna().all(axis=1).to_numpy()
                dates = day_of_year(*(X[c].to_numpy() for c in columns))
                if present.any() and np.isfinite(dates[present]).mean() >= CALENDAR_VALID_SHARE:
                    return columns
        return None

    def _fitted_statistics(self, X) -> tuple[np.ndarray | None, np.ndarray | None]:
        neighbours = None if self.tree_ is None else self._statistics(self.tree_, self._points(X), self.target_)
        calendar = None
        if self.calendar_means_ is not None:
            days = day_of_year(*(X[c] for c in self.calendar_))
            calendar = self._calendar_lookup(self.calendar_means_, self.calendar_rows_, days)
        return neighbours, calendar

    def _frame(self, X: pd.DataFrame, neighbours: np.ndarray | None, calendar: np.ndarray | None) -> pd.DataFrame:
        return pd.DataFrame(self._columns(X, neighbours, calendar), index=X.index, copy=False)

    def _columns(self, X, neighbours: np.ndarray | None, calendar: np.ndarray | None) -> dict[str, np.ndarray]:
        """The output columns from a frame or a mapping of column arrays."""
        # numeric columns stay numeric when a request has only nulls in one (an object column)
        number = {c: np.asarray(X[c], dtype=float) for c in self.numeric_}
        columns = {c: number[c] if c in number else np.asarray(X[c]) for c in self.feature_names_in_}
        rows = len(columns[self.feature_names_in_[0]])
        for name, (a, b) in self.ratios_.items():
            denominator = number[b]
            columns[name] = np.divide(number[a], denominator, out=np.full(rows, np.nan), where=denominator != 0)
        for c in self.skewed_:
            columns[f"log_{c}"] = np.log1p(np.clip(number[c], 0, None))
        if self.calendar_ is not None:
            columns["day_of_year"] = day_of_year(*(columns[c] for c in self.calendar_))
        if self.coordinates_ is not None:
            latitude, longitude = (number[c] for c in self.coordinates_)
            for degrees in ROTATIONS_DEGREES:
                radians = np.deg2rad(degrees)
                columns[f"rotated_{degrees}"] = longitude * np.cos(radians) + latitude * np.sin(radians)
        if neighbours is not None:
            columns |= dict(zip(self._neighbour_columns(), neighbours.T))
        if calendar is not None:
            columns["day_of_year_target_mean"], columns["day_of_year_rows"] = calendar.T
        return columns

    def _points(self, X) -> np.ndarray:
        # a degree of longitude is shorter than one of latitude; missing coordinates go to the centre
        latitude, longitude = (np.asarray(X[c], dtype=float) for c in self.coordinates_)
        points = np.column_stack([latitude, longitude * self.longitude_scale_])
        return np.where(np.isnan(points), self.centre_, points)

    def _neighbour_columns(self) -> list[str]:
        return [f"neighbours_{k}_{s}" for k in self.neighbours for s in ("mean", "std")] + [
            f"neighbours_{min(self.neighbours)}_distance"
        ]

    def _statistics(self, tree: KDTree, points: np.ndarray, target: np.ndarray) -> np.ndarray:
        distances, rows = tree.query(points, k=min(max(self.neighbours), tree.data.shape[0]))
        values = target[rows]
        columns = []
        for k in self.neighbours:
            columns += [values[:, :k].mean(axis=1), values[:, :k].std(axis=1)]
        columns.append(distances[:, min(min(self.neighbours), distances.shape[1]) - 1])
        return np.column_stack(columns)

    @staticmethod
    def _calendar_tables(days: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per day of the year (index 1-365; 0 stands for no date): the target mean smoothed towards the
        overall mean, and the number of rows."""
        index = np.where(np.isfinite(days), days, 0).astype(int)
        rows = np.bincount(index, minlength=366).astype(float)
        sums = np.bincount(index, weights=target, minlength=366)
        prior = float(target.mean())
        means = (sums + CALENDAR_SMOOTHING * prior) / (rows + CALENDAR_SMOOTHING)
        means[0], rows[0] = prior, 0.0
        return means, rows

    @staticmethod
    def _calendar_lookup(means: np.ndarray, rows: np.ndarray, days: np.ndarray) -> np.ndarray:
        index = np.where(np.isfinite(days), days, 0).astype(int)
        return np.column_stack([means[index], rows[index]])


def preprocessor(scale: bool) -> Pipeline:
    """Raw columns -> a numeric matrix: derived features, imputation (with missing-value indicators) and
    one-hot categories (unseen ones encode as all zeros). `scale` standardizes the numbers, for networks."""
    numeric = [SimpleImputer(strategy="median", add_indicator=True)] + ([StandardScaler()] if scale else [])
    categorical = [
        SimpleImputer(strategy="constant", fill_value="missing"),
        OneHotEncoder(handle_unknown="ignore", min_frequency=10, sparse_output=False),
    ]
    encode = ColumnTransformer(
        [
            ("numeric", make_pipeline(*numeric), make_column_selector(dtype_include="number")),
            ("categorical", make_pipeline(*categorical), make_column_selector(dtype_exclude="number")),
        ],
        verbose_feature_names_out=False,
    )
    return Pipeline([("derive", DerivedFeatures()), ("encode", encode)])


def regression_metrics(y_true, y_pred) -> dict[str, float]:
    y_true, y_pred = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    errors = y_pred - y_true
    rmse = float(np.sqrt(np.mean(errors**2)))
    spread = float(y_true.max() - y_true.min()) or 1.0
    return {
        "MAE": float(np.mean(np.abs(errors))),
        "RMSE": rmse,
        "R2": float(1 - np.sum(errors**2) / np.sum((y_true - y_true.mean()) ** 2)),
        # normalized by the target's range, as Azure ML AutoML defines it
        "NRMSE": rmse / spread,
    }


def classification_metrics(y_true, probabilities: np.ndarray, classes) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    predicted = np.asarray(classes)[probabilities.argmax(axis=1)]
    binary = len(classes) == 2
    auc = (
        roc_auc_score(y_true, probabilities[:, 1])
        if binary
        else roc_auc_score(y_true, probabilities, average="weighted", multi_class="ovr", labels=classes)
    )
    return {
        "accuracy": float(accuracy_score(y_true, predicted)),
        "AUC_weighted": float(auc),
        # binary: the F1 of the second (positive) class, e.g. "yes"; more classes: weighted by support
        "F1": float(
            f1_score(y_true, predicted, pos_label=classes[1])
            if binary
            else f1_score(y_true, predicted, average="weighted")
        ),
    }


def pinned(*packages: str) -> list[str]:
    """The installed versions of `packages` as pip pins: a model's requirements, stated rather than
    inferred (inference imports the model in a subprocess, slow, and picks up whatever is installed)."""
    from importlib.metadata import PackageNotFoundError, version

    def installed(package: str) -> str:
        try:
            return version(package)
        except PackageNotFoundError:
            if package != "mlflow":
                raise
            # Azure ML training environments carry mlflow-skinny: azureml-mlflow caps it at 3.15
            return version("mlflow-skinny")

    return [f"{package}=={installed(package).split('+')[0]}" for package in packages]


def model_metadata(task: str, classes=None, target: str | None = None) -> dict:
    """The MLflow model's metadata that the scoring script reads (jobs/src/score.py): the task, the target
    column the model predicts (the name its collected outputs carry) and, for a classifier, its classes in the
    model's order (the positive class of two is the second)."""
    metadata = {"task": task} if target is None else {"task": task, "target": str(target)}
    if task != "classification":
        return metadata
    return {**metadata, "classes": [value.item() if hasattr(value, "item") else value for value in classes]}


def write_results(output: Path, metrics: dict[str, float]) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


def import_skops_without_torch() -> None:
    """Import skops.io without PyTorch, where nothing has imported PyTorch yet. skops lists scikit-learn's
    estimators (`all_estimators`), and that walk over scikit-learn's modules imports its array-API shim for
    PyTorch and so PyTorch itself: +180 MB and +2 s in each process that saves a model (measured), for
    models that hold no PyTorch. The walk skips a module that fails to import (pkgutil.walk_packages).
    Call it before importing MLflow: skops' import also looks up each of SciPy's ufuncs in every loaded module
    (pickle's whichmodule), so it costs less the fewer are loaded (0.50 s of CPU instead of 0.71 s after MLflow
    and LightGBM, measured)."""
    if "torch" in sys.modules or "skops.io" in sys.modules:
        return
    sys.modules["torch"] = None  # `import torch` raises ImportError meanwhile
    try:
        import skops.io  # noqa: F401
    finally:
        if "torch" in sys.modules and sys.modules["torch"] is None:
            del sys.modules["torch"]


def save_model(pipeline, output: Path, task: str, example: pd.DataFrame, code_paths: list[str],
               trusted_types: list[str], requirements: list[str], target: str | None = None) -> None:  # fmt: skip
    """OUTPUT/model: the MLflow sklearn model every training script writes (skops with trusted types, a
    signature and input example, the task, target and classes as metadata, pinned requirements), replacing
    one from an earlier run; then the whole output folder is logged to the active MLflow run."""
    import shutil

    import mlflow.sklearn
    from mlflow.models import infer_signature

    import_skops_without_torch()
    shutil.rmtree(output / "model", ignore_errors=True)
    mlflow.sklearn.save_model(
        pipeline,
        output / "model",
        signature=infer_signature(example, pipeline.predict(example)),
        input_example=example,
        metadata=model_metadata(task, getattr(pipeline, "classes_", None), target),
        code_paths=code_paths,
        skops_trusted_types=trusted_types,
        pip_requirements=requirements,
    )
    mlflow.log_artifacts(str(output))


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    return plt


def plot_predictions(y_true, y_pred, path: Path) -> None:
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(5, 5))
    axes.scatter(y_true, y_pred, s=3, alpha=0.3)
    low, high = float(np.min(y_true)), float(np.max(y_true))
    axes.plot([low, high], [low, high], color="black", linewidth=1)
    axes.set(xlabel="actual", ylabel="predicted", title="held-out predictions")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def plot_importance(names, values, path: Path, measure: str, top: int = 20) -> None:
    plt = pyplot()
    order = np.argsort(values)[-top:]
    figure, axes = plt.subplots(figsize=(7, 6))
    axes.barh(np.asarray(names, dtype=object)[order], np.asarray(values)[order])
    axes.set(xlabel=measure, title=f"feature importance (top {min(top, len(order))})")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
