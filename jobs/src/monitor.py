"""The model monitor: Azure ML model monitoring's signals (data drift, prediction drift, data quality), recomputed
over a data collector folder against the model's training data, here and inside Azure ML command jobs.

    python monitor.py --reference CSV --production DIR --target COLUMN --task {regression,classification}
        [--training-rows] [--since TIME] [--until TIME] [--spec MONITOR_YAML]
        [--signals data_drift prediction_drift data_quality] [--threshold SIGNAL.KIND.METRIC=VALUE ...]
        [--features NAME,...] [--numerical NAME,...] [--categorical NAME,...] --output DIR

--reference is the workload's data file (--training-rows: only the rows the models trained on, tabular.split's,
which is what the `<workload>-mltable` asset Azure's monitor reads holds). --production is a data collector
folder, laid out as Azure's collector stores it: .../model_inputs/yyyy/MM/dd/HH/<instance>.jsonl (and
model_outputs/), at any depth; each line a JSON object whose `data` list holds its rows. The window is
since <= time < until (TIME: ISO 8601 UTC, `2026-12-06T19:00:00Z`; --since also takes a duration before
--until, `P7D`, `PT6H`, `P1DT12H`; default: everything until now). --spec reads the signals, thresholds, features
and feature types of a workload's monitor schedule (the CLI v2 YAML Azure's own monitor runs: monitor_spec.py), so
both targets judge alike; the other options override it. Azure filters on the hour partition; this
monitor filters on each object's `time`, to the second (the hour folders only skip files that cannot overlap).

The metrics are Azure's own (Azure/azureml-assets, assets/model_monitoring/components/src), re-implemented with
numpy and scipy, with Azure's metric names (azure-ai-ml MonitorMetricName) and default thresholds
(entities/_monitoring/thresholds.py): drift fails when a distance is above its threshold or a test's p-value is
below it; data quality fails when the production rate is above the reference's own rate plus the threshold.

Writes DIR/signals.json and DIR/report.png and prints one line per signal. Exit code 0: every signal passed;
1: a signal failed; 2: the input cannot be used (one message naming the file, column or option). Nothing under
--production is ever written, moved or deleted.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats
from scipy.spatial import distance

import tabular
from monitor_spec import DEFAULTS, KINDS, P_VALUES, SIGNALS, SpecError, read_signals
from monitor_spec import METRICS as ALLOWED

COLLECTIONS = ("model_inputs", "model_outputs")
# the model_outputs column prediction drift reads when none is named as the target
OUTPUT_COLUMNS = {"regression": "prediction", "classification": "label"}
QUALITY_DECIMALS = 5  # compute_data_quality_metrics.py rounds each rate to 5 decimals
CHUNK_ROWS = 100_000  # collected rows turned into one DataFrame at a time
HOUR = timedelta(hours=1)
DURATION = re.compile(
    r"P(?:(?P<weeks>\d+(?:\.\d+)?)W)?(?:(?P<days>\d+(?:\.\d+)?)D)?"
    r"(?:T(?:(?P<hours>\d+(?:\.\d+)?)H)?(?:(?P<minutes>\d+(?:\.\d+)?)M)?(?:(?P<seconds>\d+(?:\.\d+)?)S)?)?"
)
TOP_CATEGORIES = 15  # bars per categorical panel of the report, the rest summed as "other"
# a numerical panel's x range and bins (display only: the metrics bin as Azure does)
DISPLAY_PERCENTILES = (0.5, 99.5)
DISPLAY_BINS = 30
PANEL_COLUMNS = 4


class InputError(Exception):
    """The input cannot be used (exit code 2): the message names the file, column or option."""


# --- options -------------------------------------------------------------------------------------------------


def parse_time(text: str) -> datetime:
    """An ISO 8601 datetime, in UTC: `Z`, an offset, or no zone (meaning UTC)."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"{text!r} is not an ISO 8601 time such as 2026-12-06T19:00:00Z") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


def parse_duration(text: str) -> timedelta:
    """An ISO 8601 duration of weeks, days, hours, minutes and seconds (`P7D`, `PT6H`, `P1DT12H`). Years and
    months are refused: their length depends on the calendar."""
    match = DURATION.fullmatch(text.strip().upper())
    if not match or not any(match.groupdict().values()) or text.strip().upper().endswith("T"):
        raise ValueError(f"{text!r} is not an ISO 8601 duration of weeks, days, hours, minutes or seconds (P7D, PT6H)")
    return timedelta(**{unit: float(value) for unit, value in match.groupdict().items() if value})


def _since(text: str) -> datetime | timedelta:
    try:
        return parse_duration(text) if text.strip().upper().startswith("P") else parse_time(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _until(text: str) -> datetime | None:
    if text.strip().lower() == "now":  # what a pipeline passes when it names no time
        return None
    try:
        return parse_time(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def parse_threshold(text: str) -> tuple[str, str, str, float]:
    """SIGNAL.KIND.METRIC=VALUE -> (signal, kind, metric, value), checked against Azure's allowed metrics."""
    key, equals, value = text.partition("=")
    parts = key.strip().split(".")
    if not equals or len(parts) != 3:
        raise argparse.ArgumentTypeError(f"{text!r}: expected SIGNAL.KIND.METRIC=VALUE")
    signal, kind, metric = parts
    if signal not in SIGNALS:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown signal {signal!r} (one of {', '.join(SIGNALS)})")
    if kind not in KINDS:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown kind {kind!r} (one of {', '.join(KINDS)})")
    allowed = ALLOWED[signal][kind]
    if metric not in allowed:
        known = {name for kinds in ALLOWED.values() for names in kinds.values() for name in names}
        problem = "is not allowed for" if metric in known else "is not a metric of"
        raise argparse.ArgumentTypeError(
            f"{text!r}: {metric!r} {problem} {signal} {kind} features (allowed: {', '.join(allowed)})"
        )
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise argparse.ArgumentTypeError(f"{text!r}: the threshold {value.strip()!r} is not a finite number")
    return signal, kind, metric, number


def _names(text: str) -> list[str]:
    return [name for name in (part.strip() for part in text.split(",")) if name]


def thresholds(given: list[tuple[str, str, str, float]] | None,
               spec: dict | None = None) -> dict[str, dict[str, dict[str, float]]]:  # fmt: skip
    """signal -> kind -> {metric: threshold}: the monitor schedule's (`spec`, monitor_spec.read_signals) or Azure's
    defaults, except that any threshold given for a (signal, kind) replaces that kind's for that signal."""
    chosen = {signal: {kind: dict(metrics) for kind, metrics in (spec or {}).get(signal, {}).get("thresholds", kinds).items()}
              for signal, kinds in DEFAULTS.items()}  # fmt: skip
    replaced = set()
    for signal, kind, metric, value in given or ():
        if (signal, kind) not in replaced:
            chosen[signal][kind] = {}
            replaced.add((signal, kind))
        chosen[signal][kind][metric] = value
    return chosen


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="monitor.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reference", required=True, type=Path, help="the training data: a CSV, any delimiter")
    parser.add_argument("--production", required=True, type=Path, help="a data collector folder")
    parser.add_argument("--target", required=True, help="the column the model predicts")
    parser.add_argument("--task", required=True, choices=tabular.TASKS)
    parser.add_argument("--training-rows", action="store_true", help="only the reference's training rows")
    parser.add_argument("--since", type=_since, help="ISO 8601 UTC time, or a duration before --until (P7D)")
    parser.add_argument("--until", type=_until, help="ISO 8601 UTC time, or now (the default)")
    parser.add_argument("--spec", type=Path, help="a monitor schedule (CLI v2, create_monitor): its signals, their "
                        "thresholds, features and feature types, which the options below override")  # fmt: skip
    parser.add_argument("--signals", nargs="+", choices=SIGNALS, help="default: the --spec's, else all three")
    parser.add_argument("--threshold", action="append", type=parse_threshold, metavar="SIGNAL.KIND.METRIC=VALUE")
    parser.add_argument("--features", type=_names, help="the features data drift and data quality look at")
    parser.add_argument("--numerical", type=_names, default=[], help="features read as numerical")
    parser.add_argument("--categorical", type=_names, default=[], help="features read as categorical")
    parser.add_argument("--output", required=True, type=Path, help="where signals.json and report.png go")
    return parser.parse_args(argv)


# --- the collected data --------------------------------------------------------------------------------------


@dataclass
class Collected:
    """One collection's rows in the window, and what was outside it."""

    collection: str
    frame: pd.DataFrame
    files: int = 0  # files with an object in the window
    objects: int = 0
    rows: int = 0
    files_outside: int = 0  # files skipped by their hour folder or with no object in the window
    objects_outside: int = 0
    rows_outside: int = 0


def collected_files(root: Path, collection: str) -> list[Path]:
    """Every *.jsonl file under root with a folder named exactly `collection` on its path (root's own name
    included, so that root may be a model_inputs folder itself)."""
    return [
        path
        for path in sorted(root.rglob("*.jsonl"))
        if path.is_file() and collection in (root.name, *path.relative_to(root).parts[:-1])
    ]


def hour_folder(path: Path, collection: str) -> datetime | None:
    """The hour a file's yyyy/MM/dd/HH folders below `collection` name, or None where they do not."""
    parts = path.parts[:-1]
    if collection not in parts:
        return None
    after = parts[len(parts) - parts[::-1].index(collection) :]
    if len(after) < 4 or not all(part.isdigit() for part in after[:4]):
        return None
    try:
        return datetime(*(int(part) for part in after[:4]), tzinfo=timezone.utc)
    except ValueError:
        return None


def read_collected(root: Path, collection: str, since: datetime | None, until: datetime) -> Collected:
    """The rows of every `collection` object whose `time` is in [since, until), as one DataFrame. A line that is
    not a JSON object with a `data` list of row objects raises InputError naming its file and line."""
    result = Collected(collection, pd.DataFrame())
    frames, rows = [], []
    times: dict[str, datetime] = {}  # objects written in the same second share their time string
    for path in collected_files(root, collection):
        hour = hour_folder(path, collection)
        if hour is not None and ((since is not None and hour + HOUR <= since) or hour >= until):
            result.files_outside += 1
            continue
        inside = 0
        try:
            handle = path.open("rb")
        except OSError as error:
            raise InputError(f"{path}: cannot be read ({error.strerror})") from None
        with handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                where = f"{path}, line {number}"
                try:
                    record = json.loads(line)
                except ValueError as error:
                    raise InputError(f"{where}: not a JSON object ({error})") from None
                if not isinstance(record, dict):
                    raise InputError(f"{where}: not a JSON object but a {type(record).__name__}")
                data = record.get("data")
                if not isinstance(data, list):
                    if "dataref" in record:
                        raise InputError(
                            f"{where}: the object has a `dataref` (a payload over 4 MB stored as a blob of its "
                            "own) instead of `data`; dataref objects are not supported here"
                        )
                    raise InputError(f"{where}: the object has no `data` list (its keys: {', '.join(record)})")
                stamp = record.get("time")
                if not isinstance(stamp, str):
                    raise InputError(f"{where}: the object has no `time` string (its keys: {', '.join(record)})")
                if stamp not in times:
                    try:
                        times[stamp] = parse_time(stamp)
                    except ValueError:
                        raise InputError(f"{where}: the object's `time` {stamp!r} is not an ISO 8601 time") from None
                moment = times[stamp]
                if (since is not None and moment < since) or moment >= until:
                    result.objects_outside += 1
                    result.rows_outside += len(data)
                    continue
                if data and set(map(type, data)) != {dict}:  # json.loads makes plain dicts
                    position = next(i for i, row in enumerate(data) if not isinstance(row, dict))
                    raise InputError(f"{where}: `data` item {position} is not an object of column values")
                inside += 1
                result.objects += 1
                rows.extend(data)
                if len(rows) >= CHUNK_ROWS:
                    frames.append(pd.DataFrame.from_records(rows))
                    rows = []
        result.files += inside > 0
        result.files_outside += inside == 0
    if rows:
        frames.append(pd.DataFrame.from_records(rows))
    if frames:
        result.frame = frames[0] if len(frames) == 1 else pd.concat(frames, ignore_index=True)
    result.rows = len(result.frame)
    return result


def _window_text(since: datetime | None, until: datetime) -> str:
    return f"[{_iso(since) if since else 'the beginning'}, {_iso(until)})"


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat().replace("+00:00", "Z")


def require_rows(collected: Collected, root: Path, since: datetime | None, until: datetime) -> None:
    if collected.rows:
        return
    total = collected.files + collected.files_outside
    if total == 0:
        raise InputError(
            f"--production {root}: no {collected.collection} files (*.jsonl under a folder named "
            f"{collected.collection})"
        )
    raise InputError(
        f"--production {root}: no {collected.collection} rows in the window {_window_text(since, until)}: "
        f"of {total} file(s), {collected.files_outside} were outside it (by their hour folder or every object's "
        f"time), and {collected.objects_outside} objects ({collected.rows_outside} rows) had a time outside it"
    )


# --- feature values ------------------------------------------------------------------------------------------


@dataclass
class Values:
    """One column read as its feature's kind: numerical values as floats (NaN where null or not a number),
    categorical ones as a categorical Series of strings (NaN where null); which were null as collected, and
    which were not null but could not be read as the reference column's type (data type errors)."""

    kind: str
    values: np.ndarray | pd.Series
    null: np.ndarray
    error: np.ndarray

    @property
    def missing(self) -> np.ndarray:
        return self.null | self.error


def is_categorical(series: pd.Series) -> bool:
    """shared_utilities/df_utils.py is_categorical: strings, booleans (and anything not a number) are categorical."""
    return pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series)


def _number_text(numbers: np.ndarray) -> np.ndarray:
    """Numbers as category text: 5.0 and 5 both read "5", so that a number collected as an integer matches the
    reference's (read_table reads integers as floats)."""
    whole = np.isfinite(numbers) & (numbers == np.round(numbers)) & (np.abs(numbers) < 2**53)
    text = numbers.astype(str).astype(object)
    text[whole] = numbers[whole].astype(np.int64).astype(str)
    return text


def read_values(series: pd.Series, kind: str, reference_numeric: bool) -> Values:
    """A column coerced to the reference column's type (compute_data_quality_metrics.py: the data type error
    count, then the cast to the baseline's type). Numerical: pd.to_numeric(errors="coerce"), a value that does
    not convert is an error and then null. Categorical: str(value), as categorical_data_drift_metrics.py
    compares them, held as a pandas categorical (a million rows of a few strings count in milliseconds); nulls
    stay null."""
    null = series.isna().to_numpy()
    if kind == "numerical":
        if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
            numbers = series.to_numpy(dtype=float, na_value=np.nan)
        else:
            numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        return Values(kind, numbers, null, ~null & np.isnan(numbers))
    if reference_numeric and not pd.api.types.is_bool_dtype(series):
        # a numerical column read as categorical: numbers as one text, whatever their type in the JSON
        numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype=float, na_value=np.nan)
        text = np.where(null, None, series.to_numpy(dtype=object)).astype(object)
        convertible = ~np.isnan(numbers)
        text[~null & ~convertible] = series[~null & ~convertible].astype(str).to_numpy(dtype=object)
        text[convertible] = _number_text(numbers[convertible])
        values = pd.Series(text, dtype="str").astype("category")
    elif pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        # JSON integers in a column with a null arrive as floats: 94110.0 still reads "94110"
        numbers = series.to_numpy(dtype=float, na_value=np.nan)
        text = np.full(len(series), None, dtype=object)
        text[~null] = _number_text(numbers[~null])
        values = pd.Series(text, dtype="str").astype("category")
    else:
        values = series.astype("str").astype("category").reset_index(drop=True)  # nulls stay null
    return Values(kind, values, null, np.zeros(len(series), dtype=bool))


# --- drift metrics (data_drift_compute_metrics/) ---------------------------------------------------------------


def _floats(values) -> np.ndarray:
    return np.asarray(values, dtype=float)


def sturges_bins(rows: int) -> int:
    """shared_utilities/histogram_utils.py _get_optimal_number_of_bins: Sturges' rule on the smaller set's rows."""
    return math.ceil(math.log2(rows) + 1)


def shared_bin_edges(reference, production) -> np.ndarray:
    """histogram_utils.py get_dual_histogram_bin_edges: equal-width edges over both sets' range, with
    Sturges' number of bins for the smaller set; one bin around the value when both sets hold one value."""
    reference, production = _floats(reference), _floats(production)
    low = min(reference.min(), production.min())
    high = max(reference.max(), production.max())
    if low == high:
        half = 0.005 if low == 0 else abs(low * 0.005)
        return np.array([low - half, low + half])
    return np.linspace(low, high, sturges_bins(min(len(reference), len(production))) + 1)


def shared_histograms(reference, production) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges, reference counts, production counts) over the shared bins (the last bin is closed)."""
    reference, production = _floats(reference), _floats(production)
    edges = shared_bin_edges(reference, production)
    return edges, np.histogram(reference, edges)[0], np.histogram(production, edges)[0]


def normalized_wasserstein_distance(reference, production) -> float:
    """numerical_data_drift_metrics.py _normalized_wasserstein: the Wasserstein distance over the reference's
    sample standard deviation, that at least 0.001."""
    reference, production = _floats(reference), _floats(production)
    spread = float(np.std(reference, ddof=1)) if len(reference) > 1 else 0.0
    return float(stats.wasserstein_distance(reference, production) / max(spread, 0.001))


def jensen_shannon_distance_numerical(reference, production) -> float:
    """numerical_data_drift_metrics.py _jensen_shannon_numerical: the base-2 Jensen-Shannon distance of the
    shared histograms, each count over its set's rows, unsmoothed."""
    _, reference_counts, production_counts = shared_histograms(reference, production)
    return float(
        distance.jensenshannon(
            reference_counts / len(reference), production_counts / len(production), base=2
        )
    )


def _psi(reference_share: np.ndarray, production_share: np.ndarray) -> float:
    return float(np.sum((production_share - reference_share) * np.log(production_share / reference_share)))


def population_stability_index_numerical(reference, production) -> float:
    """numerical_data_drift_metrics.py _psi_numerical over the shared bins, every count plus one (so that no
    bin is empty), over the set's rows plus the number of bins."""
    _, reference_counts, production_counts = shared_histograms(reference, production)
    bins = len(reference_counts)
    return _psi(
        (reference_counts + 1) / (len(_floats(reference)) + bins),
        (production_counts + 1) / (len(_floats(production)) + bins),
    )


def kolmogorov_smirnov_pvalue(reference, production) -> float:
    """numerical_data_drift_metrics.py _ks2sample_pandas_impl: the two-sided two-sample test's p-value. Azure
    refuses sets of 10,000 rows or more; this computes it at any size (scipy's asymptotic method then)."""
    return float(stats.ks_2samp(_floats(reference), _floats(production)).pvalue)


def _counts(values) -> pd.Series:
    counts = pd.Series(values).value_counts()
    counts = counts[counts > 0]  # a categorical's unused categories
    counts.index = counts.index.astype(object)
    return counts


def category_counts(reference, production) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(categories, reference counts, production counts) over the union of both sets' categories, 0 where a
    set lacks one; categories by reference count, then production count."""
    reference_counts, production_counts = _counts(reference), _counts(production)
    table = pd.concat([reference_counts.rename("reference"), production_counts.rename("production")], axis=1)
    table = table.fillna(0).sort_values(["reference", "production"], ascending=False, kind="stable")
    return (
        table.index.to_numpy(dtype=object),
        table["reference"].to_numpy(dtype=float),
        table["production"].to_numpy(dtype=float),
    )


def jensen_shannon_distance_categorical(reference, production) -> float:
    """categorical_data_drift_metrics.py _jensen_shannon_categorical: the base-2 Jensen-Shannon distance of the
    categories' frequencies over their union."""
    _, reference_counts, production_counts = category_counts(reference, production)
    return float(
        distance.jensenshannon(
            reference_counts / reference_counts.sum(), production_counts / production_counts.sum(), base=2
        )
    )


def population_stability_index_categorical(reference, production) -> float:
    """categorical_data_drift_metrics.py _psi_categorical over the union of categories, every count plus one,
    over the set's rows plus the number of categories."""
    _, reference_counts, production_counts = category_counts(reference, production)
    categories = len(reference_counts)
    return _psi(
        (reference_counts + 1) / (reference_counts.sum() + categories),
        (production_counts + 1) / (production_counts.sum() + categories),
    )


def chi_squared_pvalue(reference, production) -> float:
    """categorical_data_drift_metrics.py _chisquaretest: Pearson's test of the production counts against the
    reference's frequencies scaled to the production's rows. A category the reference never saw is expected
    0 times, so the p-value is 0 (scipy would refuse the unequal sums)."""
    _, reference_counts, production_counts = category_counts(reference, production)
    expected = reference_counts / reference_counts.sum() * production_counts.sum()
    if np.any((expected == 0) & (production_counts > 0)):
        return 0.0
    return float(stats.chisquare(production_counts, expected).pvalue)


METRICS = {
    "numerical": {
        "normalized_wasserstein_distance": normalized_wasserstein_distance,
        "jensen_shannon_distance": jensen_shannon_distance_numerical,
        "population_stability_index": population_stability_index_numerical,
        "two_sample_kolmogorov_smirnov_test": kolmogorov_smirnov_pvalue,
    },
    "categorical": {
        "jensen_shannon_distance": jensen_shannon_distance_categorical,
        "population_stability_index": population_stability_index_categorical,
        "pearsons_chi_squared_test": chi_squared_pvalue,
    },
}


def passes(metric: str, value: float, threshold: float) -> bool:
    """A test passes while its p-value is at least the threshold; a distance while it is at most the threshold."""
    return value >= threshold if metric in P_VALUES else value <= threshold


def drift_rows(feature: str, kind: str, reference, production, metrics: dict[str, float]) -> list[dict]:
    """One row per metric: its value, threshold and verdict (reference and production without nulls)."""
    rows = []
    for metric, threshold in metrics.items():
        row = {"feature": feature, "kind": kind, "metric": metric, "value": None, "threshold": threshold,
               "passed": False, "n_reference": len(reference), "n_production": len(production)}  # fmt: skip
        if len(reference) == 0 or len(production) == 0:
            empty = "reference" if len(reference) == 0 else "production"
            row["note"] = f"no {empty} rows without a null in the compared columns: the metric is undefined"
        else:
            value = METRICS[kind][metric](reference, production)
            if math.isfinite(value):
                row["value"], row["passed"] = value, passes(metric, value, threshold)
            else:
                row["note"] = f"the metric is not finite ({value}) on these rows"
        rows.append(row)
    return rows


def complete(columns: dict[str, Values]) -> np.ndarray:
    """Rows without a null in any of the columns (compute_data_drift.py compute_data_drift_measures_tests:
    baseline_df.dropna() and production_df.dropna() over the compared columns)."""
    rows = len(next(iter(columns.values())).null)
    keep = np.ones(rows, dtype=bool)
    for values in columns.values():
        keep &= ~values.missing
    return keep


def _kept(values: Values, keep: np.ndarray) -> np.ndarray | pd.Categorical:
    kept = values.values[keep]
    return kept.array if isinstance(kept, pd.Series) else kept


def compared(reference: dict[str, Values], production: dict[str, Values]) -> dict[str, tuple]:
    """feature -> (kind, reference values, production values), each set without the rows that have a null in
    any compared feature."""
    keep_reference, keep_production = complete(reference), complete(production)
    return {
        feature: (values.kind, _kept(values, keep_reference), _kept(production[feature], keep_production))
        for feature, values in reference.items()
    }


def data_drift(features: dict[str, tuple[str, np.ndarray, np.ndarray]], metrics: dict[str, dict[str, float]]):
    """Data drift rows, per feature and metric, over `compared` values."""
    rows = []
    for feature, (kind, reference, production) in features.items():
        rows += drift_rows(feature, kind, reference, production, metrics[kind])
    return rows


# --- data quality (data_quality_compute_metrics/, data_quality_metrics_joiner/) --------------------------------


def _rate(count: int, rows: int) -> float:
    return round(count / rows, QUALITY_DECIMALS) if rows else 0.0


def quality_rates(values: Values, reference: Values) -> dict[str, float]:
    """compute_data_quality_metrics.py, each count over all rows, rounded to 5 decimals: nulls; values not null
    that do not read as the reference column's type; values outside the reference (numerical: below its min or
    above its max; categorical: not among its categories). Nulls and type errors are never out of bounds."""
    rows = len(values.null)
    present = ~values.missing
    if values.kind == "numerical":
        known = reference.values[~reference.missing]
        low, high = (known.min(), known.max()) if len(known) else (np.nan, np.nan)
        numbers = values.values
        outside = present & ((numbers < low) | (numbers > high))
    else:
        categories = np.asarray(reference.values[~reference.missing].unique(), dtype=object)
        outside = present & ~values.values.isin(categories).to_numpy()
    return {
        "null_value_rate": _rate(int(values.null.sum()), rows),
        "data_type_error_rate": _rate(int(values.error.sum()), rows),
        "out_of_bounds_rate": _rate(int(outside.sum()), rows),
    }


def quality_row(feature: str, kind: str, metric: str, reference_rate: float, production_rate: float,
                threshold: float, n_reference: int, n_production: int) -> dict:  # fmt: skip
    """data_quality_metrics_joiner/run.py: the limit is the reference's own rate plus the threshold, and the
    production rate fails above it."""
    limit = round(reference_rate + threshold, 10)  # 0.7 + 0.1 is 0.7999999999999999
    return {
        "feature": feature, "kind": kind, "metric": metric, "value": production_rate, "threshold": threshold,
        "reference_rate": reference_rate, "production_rate": production_rate, "limit": limit,
        "passed": production_rate <= limit, "n_reference": n_reference, "n_production": n_production,
    }  # fmt: skip


def data_quality(reference: dict[str, Values], production: dict[str, Values], metrics: dict[str, dict[str, float]]):
    rows = []
    for feature, values in reference.items():
        reference_rates = quality_rates(values, values)
        production_rates = quality_rates(production[feature], values)
        for metric, threshold in metrics[values.kind].items():
            rows.append(quality_row(feature, values.kind, metric, reference_rates[metric], production_rates[metric],
                                    threshold, len(values.null), len(production[feature].null)))  # fmt: skip
    return rows


# --- the report ----------------------------------------------------------------------------------------------


def _short(value: float) -> str:
    return f"{value:.3g}"


def describe(signal: str, row: dict) -> str:
    """A failed row as one line: `data_drift: age (normalized_wasserstein_distance 0.45 > 0.1)`."""
    metric, value = row["metric"], row["value"]
    if value is None:
        return f"{signal}: {row['feature']} ({metric} undefined: {row.get('note', '')})"
    if "limit" in row:
        return (f"{signal}: {row['feature']} ({metric} {value:.5g} > {row['limit']:g}: the reference's "
                f"{row['reference_rate']:g} + {row['threshold']:g})")  # fmt: skip
    sign = "<" if metric in P_VALUES else ">"
    return f"{signal}: {row['feature']} ({metric} {value:.4g} {sign} {row['threshold']:g})"


def excess(row: dict) -> float:
    """How far past its threshold a row is: above 1 when it fails (a p-value: threshold over value)."""
    value = row["value"]
    if value is None:
        return math.inf
    bound = row.get("limit", row["threshold"])
    if row["metric"] in P_VALUES:
        value, bound = bound, value
    if bound <= 0:
        return math.inf if value > bound else 0.0
    return value / bound


def _worst(rows: list[dict]) -> dict:
    return min(rows, key=lambda row: (row["passed"], -excess(row)))


@dataclass
class Panel:
    feature: str
    kind: str
    reference: np.ndarray
    production: np.ndarray
    rows: list[dict]
    notes: list[str] = field(default_factory=list)  # other failures of the feature (data quality)
    label: str = ""

    @property
    def headline(self) -> dict | None:
        return _worst(self.rows) if self.rows else None


def ordered(panels: list[Panel]) -> list[Panel]:
    """Failed panels first, the furthest past its threshold first; then the passed ones, the closest first."""

    def order(panel: Panel) -> tuple[bool, float]:
        row = panel.headline
        return (True, 0.0) if row is None else (row["passed"], -excess(row))

    return sorted(panels, key=order)


def plot_report(panels: list[Panel], path: Path, heading: str) -> None:
    """One panel per feature, failed ones first (by how far past the threshold), each overlaying the reference's
    and the production's distributions: densities over the shared bins, or the frequencies of the reference's
    top categories (the rest as "other")."""
    plt = tabular.pyplot()
    panels = ordered(panels)
    columns = max(1, min(PANEL_COLUMNS, len(panels)))
    lines = max(1, math.ceil(len(panels) / columns))
    figure, axes = plt.subplots(lines, columns, figsize=(4.6 * columns, 3.1 * lines + 0.7), squeeze=False)
    for axis in axes.flat[len(panels) :]:
        axis.set_visible(False)
    for axis, panel in zip(axes.flat, panels):
        _plot_panel(axis, panel)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="upper right", fontsize=8, ncols=2)
    figure.suptitle(heading, fontsize=10, x=0.01, ha="left")
    # fixed margins: tight_layout would draw the whole figure once more
    height = 3.1 * lines + 0.7
    figure.subplots_adjust(left=0.05, right=0.99, bottom=0.9 / height, top=1 - 0.9 / height, wspace=0.25,
                           hspace=0.85)  # fmt: skip
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _display_histograms(reference, production) -> tuple[np.ndarray, np.ndarray, np.ndarray, bool]:
    """Histograms to look at (the metrics use shared_histograms): over both sets' DISPLAY_PERCENTILES, with values
    beyond them counted in the end bins, so that a long tail (bank balances) does not flatten the rest into one
    bar; DISPLAY_BINS equal bins, or Sturges' when that is more. The last item says whether anything was clipped."""
    reference, production = _floats(reference), _floats(production)
    both = np.concatenate([reference, production])
    low, high = np.percentile(both, DISPLAY_PERCENTILES)
    if not low < high:
        return (*shared_histograms(reference, production), False)
    edges = np.linspace(low, high, max(DISPLAY_BINS, sturges_bins(min(len(reference), len(production)))) + 1)
    clipped = bool(both.min() < low or both.max() > high)
    counts = [np.histogram(np.clip(values, low, high), bins=edges)[0] for values in (reference, production)]
    return edges, counts[0], counts[1], clipped


def _plot_panel(axis, panel: Panel) -> None:
    reference, production = panel.reference, panel.production
    if len(reference) and len(production):
        if panel.kind == "numerical":
            edges, reference_counts, production_counts, clipped = _display_histograms(reference, production)
            widths = np.diff(edges)
            if clipped:
                axis.text(0.99, 0.98, f"x: {DISPLAY_PERCENTILES[0]:g}th-{DISPLAY_PERCENTILES[1]:g}th percentile,\nthe rest in the end bins",
                          transform=axis.transAxes, ha="right", va="top", fontsize=6, color="dimgray")  # fmt: skip
            axis.stairs(reference_counts / (len(reference) * widths), edges, fill=True, alpha=0.4,
                        color="tab:blue", label="reference")  # fmt: skip
            axis.stairs(production_counts / (len(production) * widths), edges, linewidth=1.6,
                        color="tab:orange", label="production")  # fmt: skip
            axis.set_ylabel("density", fontsize=7)
        else:
            categories, reference_counts, production_counts = category_counts(reference, production)
            reference_share = reference_counts / reference_counts.sum()
            production_share = production_counts / production_counts.sum()
            names = [str(name) if len(str(name)) <= 14 else str(name)[:13] + "…" for name in categories]
            if len(categories) > TOP_CATEGORIES:
                names = names[:TOP_CATEGORIES] + ["other"]
                reference_share = np.append(reference_share[:TOP_CATEGORIES], reference_share[TOP_CATEGORIES:].sum())
                production_share = np.append(production_share[:TOP_CATEGORIES], production_share[TOP_CATEGORIES:].sum())
            x = np.arange(len(names))
            axis.bar(x - 0.2, reference_share, 0.4, color="tab:blue", alpha=0.6, label="reference")
            axis.bar(x + 0.2, production_share, 0.4, color="tab:orange", alpha=0.9, label="production")
            axis.set_xticks(x, names, rotation=45, ha="right", fontsize=6)
            axis.set_ylabel("frequency", fontsize=7)
    else:
        axis.text(0.5, 0.5, "no rows to compare", ha="center", va="center", transform=axis.transAxes)
    axis.tick_params(labelsize=6)
    row = panel.headline
    failed = row is not None and not row["passed"]
    if row is None:
        title = panel.label or panel.feature
    else:
        value = "undefined" if row["value"] is None else _short(row["value"])
        threshold = f"{row['limit']:g}" if "limit" in row else f"{row['threshold']:g}"
        verdict = "FAIL" if failed else "PASS"
        title = f"{panel.label or panel.feature} — {row['metric']} {value} ({threshold}) {verdict}"
        if len(title) > 58:
            title = title.replace(" — ", " —\n", 1)
    axis.set_title(title, fontsize=8, color="red" if failed else "black", fontweight="bold" if failed else "normal")
    if failed:
        for spine in axis.spines.values():
            spine.set_edgecolor("red")
            spine.set_linewidth(2)
    if panel.notes:
        axis.text(0.01, 0.98, "\n".join(panel.notes), transform=axis.transAxes, va="top", fontsize=6, color="red")


# --- the run -------------------------------------------------------------------------------------------------


def read_spec(args: argparse.Namespace) -> dict:
    """The --spec's signals, folded into the options it stands for where they are not given: the signals to
    compute, the features (data drift's, else data quality's) and the feature types (every signal's overrides)."""
    spec = {}
    if args.spec is not None:
        try:
            spec = read_signals(args.spec)
        except SpecError as error:
            raise InputError(f"--spec {error}") from None
    args.signals = args.signals or (list(spec) if spec else list(SIGNALS))
    if not args.features:
        args.features = next((spec[s]["features"] for s in ("data_drift", "data_quality") if s in spec and spec[s]["features"]), None)
    for signal in spec.values():
        for name, kind in signal["types"].items():
            chosen = args.numerical if kind == "numerical" else args.categorical
            if name not in args.numerical + args.categorical:
                chosen.append(name)
    return spec


def read_reference(args: argparse.Namespace) -> pd.DataFrame:
    path = args.reference
    if not path.is_file():
        raise InputError(f"--reference {path}: file not found")
    try:
        frame = tabular.read_table(path)
    except (OSError, ValueError) as error:  # pandas' ParserError, EmptyDataError and UnicodeDecodeError too
        raise InputError(f"--reference {path}: cannot be read as a CSV file ({error})") from None
    if args.target not in frame.columns:
        raise InputError(
            f"--reference {path} has no column {args.target!r} (the --target); its columns: "
            + ", ".join(map(str, frame.columns))
        )
    if args.training_rows:
        try:
            x_train, _, y_train, _ = tabular.split(frame, args.target, args.task)
        except ValueError as error:
            raise InputError(f"--reference {path}: {error}") from None
        frame = x_train.assign(**{args.target: y_train}).reset_index(drop=True)
    return frame


def choose_features(args: argparse.Namespace, reference: pd.DataFrame) -> dict[str, str]:
    """feature -> kind, checked against the reference."""
    columns = [str(c) for c in reference.columns]
    for option in ("features", "numerical", "categorical"):
        unknown = [name for name in getattr(args, option) or () if name not in columns]
        if unknown:
            raise InputError(
                f"--{option}: {', '.join(map(repr, unknown))} not in --reference {args.reference} "
                f"(its columns: {', '.join(columns)})"
            )
    both = sorted(set(args.numerical) & set(args.categorical))
    if both:
        raise InputError(f"--numerical and --categorical both name {', '.join(map(repr, both))}")
    if args.features and args.target in args.features:
        raise InputError(f"--features: {args.target!r} is the target, not a feature")
    features = args.features or [c for c in columns if c != args.target]
    if not features:
        raise InputError(f"--reference {args.reference}: no feature columns besides the target {args.target!r}")
    kinds = {}
    for name in features:
        if name in args.numerical:
            kinds[name] = "numerical"
        elif name in args.categorical:
            kinds[name] = "categorical"
        else:
            kinds[name] = "categorical" if is_categorical(reference[name]) else "numerical"
    return kinds


def check_columns(inputs: pd.DataFrame, reference: pd.DataFrame, features: list[str], args) -> None:
    collected = [str(c) for c in inputs.columns]
    missing = [name for name in features if name not in collected]
    extra = [name for name in collected if name not in set(map(str, reference.columns))]
    problems = []
    if missing:
        problems.append(f"missing the reference's feature column(s) {', '.join(map(repr, missing))}")
    if extra:
        problems.append(f"with column(s) {', '.join(map(repr, extra))} that --reference {args.reference} lacks")
    if problems:
        raise InputError(
            f"--production {args.production}: the collected model_inputs are " + "; and ".join(problems)
            + f" (collected columns: {', '.join(collected)})"
        )


def _values(frame: pd.DataFrame, reference: pd.DataFrame, kinds: dict[str, str]) -> dict[str, Values]:
    return {
        name: read_values(frame[name], kind, pd.api.types.is_numeric_dtype(reference[name]))
        for name, kind in kinds.items()
    }


def _plain(value):
    """numpy scalars as JSON numbers; NaN never reaches the JSON (rows carry a note and null instead)."""
    if isinstance(value, dict):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_plain(item) for item in value]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def run(args: argparse.Namespace) -> dict:
    """Compute the signals asked for, write signals.json and report.png, and return what signals.json holds."""
    until = args.until or datetime.now(timezone.utc).replace(microsecond=0)
    since = until - args.since if isinstance(args.since, timedelta) else args.since
    if since is not None and since >= until:
        raise InputError(f"--since {_iso(since)} is not before --until {_iso(until)}")
    root = args.production
    if not root.is_dir():
        raise InputError(f"--production {root}: no such folder")
    output = args.output.resolve()
    if output == root.resolve() or root.resolve() in output.parents:
        raise InputError(f"--output {args.output} is inside --production {root}, which the monitor never writes to")
    spec = read_spec(args)
    reference = read_reference(args)
    kinds = choose_features(args, reference)
    chosen = thresholds(args.threshold, spec)

    inputs = read_collected(root, "model_inputs", since, until)
    require_rows(inputs, root, since, until)
    check_columns(inputs.frame, reference, list(kinds), args)
    outputs = None
    if "prediction_drift" in args.signals:
        outputs = read_collected(root, "model_outputs", since, until)
        require_rows(outputs, root, since, until)

    reference_values = _values(reference, reference, kinds)
    production_values = _values(inputs.frame, reference, kinds)
    features = compared(reference_values, production_values)
    panels = {name: Panel(name, kind, ref, prod, []) for name, (kind, ref, prod) in features.items()}
    signals = {}
    if "data_drift" in args.signals:
        rows = data_drift(features, chosen["data_drift"])
        signals["data_drift"] = {"passed": all(row["passed"] for row in rows), "features": rows}
        for row in rows:
            panels[row["feature"]].rows.append(row)
    if "prediction_drift" in args.signals:
        rows, panel = prediction_drift(args, reference, outputs.frame, chosen["prediction_drift"])
        signals["prediction_drift"] = {"passed": all(row["passed"] for row in rows), "features": rows}
        panels[None] = panel
    if "data_quality" in args.signals:
        rows = data_quality(reference_values, production_values, chosen["data_quality"])
        signals["data_quality"] = {"passed": all(row["passed"] for row in rows), "features": rows}
        for row in rows:
            panel = panels[row["feature"]]
            if "data_drift" not in args.signals:
                panel.rows.append(row)
            elif not row["passed"]:
                panel.notes.append(f"data quality: {row['metric']} {row['value']:g} > {row['limit']:g}")
    failed = [
        describe(signal, row) for signal, result in signals.items() for row in result["features"] if not row["passed"]
    ]
    window = {
        "since": _iso(since) if since else None,
        "until": _iso(until),
        "files": inputs.files + (outputs.files if outputs else 0),
        "objects": inputs.objects + (outputs.objects if outputs else 0),
        "rows": {"model_inputs": inputs.rows, "model_outputs": outputs.rows if outputs else None},
        "outside": {
            "files": inputs.files_outside + (outputs.files_outside if outputs else 0),
            "objects": inputs.objects_outside + (outputs.objects_outside if outputs else 0),
        },
    }
    if outputs is None:
        window["note"] = "model_outputs were not read: prediction_drift was not asked for"
    result = _plain({
        "window": window,
        "reference": {"file": str(args.reference), "rows": len(reference), "training_rows": args.training_rows},
        "signals": signals,
        "passed": not failed,
        "failed": failed,
    })  # fmt: skip
    output.mkdir(parents=True, exist_ok=True)
    (output / "signals.json").write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    verdicts = "; ".join(
        f"{name.replace('_', ' ')} {'passed' if outcome['passed'] else 'FAILED'}" for name, outcome in signals.items()
    )
    heading = (f"{inputs.rows:,} production rows, {window['since'] or 'the beginning'} to {window['until']}, "
               f"against {len(reference):,} reference rows: {verdicts}")  # fmt: skip
    plot_report(list(panels.values()), output / "report.png", heading)
    return result


def prediction_drift(args, reference: pd.DataFrame, outputs: pd.DataFrame, metrics: dict[str, dict[str, float]]):
    """Drift of the model's outputs from the reference's target: the outputs' target column when they have
    one, else `prediction` (regression) or `label` (classification)."""
    candidates = [args.target, OUTPUT_COLUMNS[args.task]]
    column = next((name for name in candidates if name in outputs.columns), None)
    if column is None:
        raise InputError(
            f"--production {args.production}: the model_outputs have none of the columns "
            f"{', '.join(map(repr, dict.fromkeys(candidates)))} for prediction drift (collected columns: "
            f"{', '.join(map(str, outputs.columns))})"
        )
    kind = "numerical" if args.task == "regression" else "categorical"
    target = reference[args.target]
    numeric = pd.api.types.is_numeric_dtype(target)
    reference_values = read_values(target, kind, numeric)
    production_values = read_values(outputs[column], kind, numeric)
    kept_reference = _kept(reference_values, ~reference_values.missing)
    kept_production = _kept(production_values, ~production_values.missing)
    rows = drift_rows(column, kind, kept_reference, kept_production, metrics[kind])
    for row in rows:
        row["reference_column"] = args.target
    label = f"prediction {column}" if column == args.target else f"prediction ({column})"
    return rows, Panel(column, kind, kept_reference, kept_production, rows, label=label)


def summary(result: dict, output: Path) -> str:
    lines = []
    for signal, outcome in result["signals"].items():
        failed = [row for row in outcome["features"] if not row["passed"]]
        if not failed:
            checks = len(outcome["features"])
            lines.append(f"{signal}: passed ({checks} check{'' if checks == 1 else 's'})")
        else:
            lines.append(f"{signal}: FAILED " + "; ".join(describe(signal, row).split(": ", 1)[1] for row in failed))
    window = result["window"]
    rows = window["rows"]
    outputs = "" if rows["model_outputs"] is None else f", {rows['model_outputs']} output rows"
    lines.append(
        f"window {window['since'] or 'the beginning'} to {window['until']}: {rows['model_inputs']} input rows{outputs} "
        f"({window['objects']} objects in {window['files']} files); reference: {result['reference']['rows']} rows"
    )
    lines.append(f"outputs: {output / 'signals.json'}, {output / 'report.png'}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    try:
        args = parse_args(argv)
    except SystemExit as exit:  # argparse has printed its message (bad option values: code 2)
        return exit.code if isinstance(exit.code, int) else 2
    try:
        result = run(args)
    except InputError as error:
        print(f"monitor.py: {error}", file=sys.stderr)
        return 2
    print(summary(result, args.output))
    return 0 if result["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
