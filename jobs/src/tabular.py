"""What every training script here shares: reading a CSV, the seeded held-out split, the engineered
features, the metrics and the plots. One module, so that every candidate model is compared on the same
held-out rows with the same metric definitions.

Uploaded with the job's code and saved into each MLflow model (`code_paths`), so a model loads with
nothing but its own folder and the inference environment.
"""

from __future__ import annotations

import csv
import json
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
NEIGHBOURS = (8, 32)


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


class DerivedFeatures(BaseEstimator, TransformerMixin):
    """Adds engineered columns to the raw frame: ratios, log transforms of skewed counts, rotated
    coordinates and, for a numeric target with coordinates, the target statistics of the nearest
    training rows. Those are computed out-of-fold while fitting, so a row never sees its own target.

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
        self.tree_ = None
        if self.coordinates_ is None or y is None or not pd.api.types.is_numeric_dtype(y):
            return self._frame(X, None)
        target = np.asarray(y, dtype=float)
        self.target_ = np.log1p(target) if target.min() >= 0 else target
        latitude, longitude = (X[c].to_numpy(dtype=float) for c in self.coordinates_)
        self.longitude_scale_ = float(np.cos(np.deg2rad(np.nanmean(latitude))))
        self.centre_ = np.array([np.nanmean(latitude), np.nanmean(longitude) * self.longitude_scale_])
        points = self._points(X)
        statistics = np.empty((len(X), len(self._neighbour_columns())))
        for fitted, held in KFold(self.folds, shuffle=True, random_state=SEED).split(points):
            statistics[held] = self._statistics(KDTree(points[fitted]), points[held], self.target_[fitted])
        self.tree_ = KDTree(points)
        return self._frame(X, statistics)

    def transform(self, X: pd.DataFrame):
        X = pd.DataFrame(X) if not isinstance(X, pd.DataFrame) else X
        missing = [c for c in self.feature_names_in_ if c not in X.columns]
        if missing:
            raise ValueError(f"input is missing columns: {', '.join(missing)}")
        if self.tree_ is None:
            return self._frame(X, None)
        return self._frame(X, self._statistics(self.tree_, self._points(X), self.target_))

    def transform_columns(self, columns) -> dict[str, np.ndarray]:
        """`transform` for a mapping of column name -> array, returning the same columns as a dict without
        building a frame: the scoring script's hot path (jobs/src/score.py)."""
        statistics = None if self.tree_ is None else self._statistics(self.tree_, self._points(columns), self.target_)
        return self._columns(columns, statistics)

    def get_feature_names_out(self, input_features=None):
        names = list(self.feature_names_in_) + list(self.ratios_) + [f"log_{c}" for c in self.skewed_]
        if self.coordinates_ is not None:
            names += [f"rotated_{degrees}" for degrees in ROTATIONS_DEGREES]
        if self.tree_ is not None:
            names += self._neighbour_columns()
        return np.asarray(names, dtype=object)

    def _frame(self, X: pd.DataFrame, statistics: np.ndarray | None) -> pd.DataFrame:
        return pd.DataFrame(self._columns(X, statistics), index=X.index, copy=False)

    def _columns(self, X, statistics: np.ndarray | None) -> dict[str, np.ndarray]:
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
        if self.coordinates_ is not None:
            latitude, longitude = (number[c] for c in self.coordinates_)
            for degrees in ROTATIONS_DEGREES:
                radians = np.deg2rad(degrees)
                columns[f"rotated_{degrees}"] = longitude * np.cos(radians) + latitude * np.sin(radians)
        if statistics is not None:
            columns |= dict(zip(self._neighbour_columns(), statistics.T))
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
        distances, rows = tree.query(points, k=max(self.neighbours))
        values = target[rows]
        columns = []
        for k in self.neighbours:
            columns += [values[:, :k].mean(axis=1), values[:, :k].std(axis=1)]
        columns.append(distances[:, min(self.neighbours) - 1])
        return np.column_stack(columns)


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


def write_results(output: Path, metrics: dict[str, float]) -> None:
    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")


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
