"""The model monitor (jobs/src/monitor.py): every drift and data quality metric against a value worked by hand
or by scipy on a tiny case, then the command on tiny generated data in a data collector folder: a clean
window passes, a shifted one fails on exactly the shifted features, the window picks its rows, and each input
it cannot use exits 2 with a message naming the problem, the collected files untouched."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from scipy.spatial import distance

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "jobs" / "src"
sys.path.insert(0, str(SRC))  # the job scripts import their siblings, as they do in a job

import monitor  # noqa: E402
import tabular  # noqa: E402

HOUR = datetime(2026, 12, 6, 17, tzinfo=timezone.utc)


# --- drift metrics -------------------------------------------------------------------------------------------


def test_normalized_wasserstein_divides_by_the_reference_sample_std():
    # W([0,1,2], [1,2,3]) = 1; std([0,1,2], ddof=1) = 1
    assert monitor.normalized_wasserstein_distance([0, 1, 2], [1, 2, 3]) == pytest.approx(1.0)
    # std ([0, 2, 4], ddof=1) = 2; W to [1, 3, 5] = 1
    assert monitor.normalized_wasserstein_distance([0, 2, 4], [1, 3, 5]) == pytest.approx(0.5)
    # a constant reference: the std is floored at 0.001; W([5,5,5],[5,5,6]) = 1/3
    assert monitor.normalized_wasserstein_distance([5, 5, 5], [5, 5, 6]) == pytest.approx((1 / 3) / 0.001)


@pytest.mark.parametrize("rows, bins", [(1, 1), (2, 2), (8, 4), (9, 5), (1000, 11), (36_168, 17)])
def test_sturges_bins(rows, bins):
    assert monitor.sturges_bins(rows) == bins


def test_shared_bins_span_both_sets_with_sturges_bins_of_the_smaller():
    edges, reference, production = monitor.shared_histograms([0, 1, 2, 3], [2, 3, 4, 5, 5, 5, 5, 5, 5])
    # the smaller set has 4 rows: ceil(log2(4) + 1) = 3 bins from 0 to 5, the last bin closed
    np.testing.assert_allclose(edges, [0, 5 / 3, 10 / 3, 5])
    assert reference.tolist() == [2, 2, 0]
    assert production.tolist() == [0, 2, 7]


def test_one_value_gets_one_bin_around_it():
    np.testing.assert_allclose(monitor.shared_bin_edges([0, 0], [0]), [-0.005, 0.005])
    np.testing.assert_allclose(monitor.shared_bin_edges([200, 200], [200]), [199, 201])
    np.testing.assert_allclose(monitor.shared_bin_edges([-10.0], [-10.0]), [-10.05, -9.95])


def test_numerical_jensen_shannon_by_hand():
    # bins [0, 5/3), [5/3, 10/3), [10/3, 5]: reference [.5, .5, 0], production [0, .5, .5]; M = [.25, .5, .25];
    # KL(p || M) = .5 log2(2) = .5 for each, so the divergence is .5 and the distance sqrt(.5)
    value = monitor.jensen_shannon_distance_numerical([0, 1, 2, 3], [2, 3, 4, 5])
    assert value == pytest.approx(math.sqrt(0.5))
    assert monitor.jensen_shannon_distance_numerical([0, 1, 2, 3], [0, 1, 2, 3]) == pytest.approx(0.0, abs=1e-12)
    # disjoint supports: the largest distance, 1
    assert monitor.jensen_shannon_distance_numerical([0, 0, 0, 0], [9, 9, 9, 9]) == pytest.approx(1.0)


def test_numerical_psi_by_hand():
    # 3 bins; reference counts [2, 2, 0] -> (c + 1) / (4 + 3) = [3, 3, 1] / 7; production [0, 2, 2] -> [1, 3, 3] / 7
    # psi = (1/7 - 3/7) ln(1/3) + 0 + (3/7 - 1/7) ln(3) = (4/7) ln 3
    value = monitor.population_stability_index_numerical([0, 1, 2, 3], [2, 3, 4, 5])
    assert value == pytest.approx(4 / 7 * math.log(3))
    assert monitor.population_stability_index_numerical([1, 2, 3], [1, 2, 3]) == pytest.approx(0.0)


def test_kolmogorov_smirnov_is_scipys_two_sided_pvalue():
    rng = np.random.default_rng(0)
    reference, production = rng.normal(0, 1, 300), rng.normal(0.3, 1, 200)
    assert monitor.kolmogorov_smirnov_pvalue(reference, production) == stats.ks_2samp(reference, production).pvalue
    assert monitor.kolmogorov_smirnov_pvalue([1, 2, 3, 4], [1, 2, 3, 4]) == pytest.approx(1.0)


def test_categorical_jensen_shannon():
    assert monitor.jensen_shannon_distance_categorical(["a"], ["b"]) == pytest.approx(1.0)
    assert monitor.jensen_shannon_distance_categorical(["a", "b"], ["b", "a", "a", "b"]) == pytest.approx(0.0)
    # {a: 3/4, b: 1/4} vs {a: 1/4, b: 3/4} over the union, as scipy computes it
    expected = distance.jensenshannon([0.75, 0.25], [0.25, 0.75], base=2)
    assert monitor.jensen_shannon_distance_categorical(list("aaab"), list("abbb")) == pytest.approx(expected)


def test_categorical_psi_by_hand():
    # union {a, b, c}: reference [2, 1, 0] -> (c + 1) / (3 + 3) = [3, 2, 1] / 6; production [1, 2, 1] -> [2, 3, 2] / 7
    reference_ratio = np.array([3, 2, 1]) / 6
    production_ratio = np.array([2, 3, 2]) / 7
    expected = sum((p - r) * math.log(p / r) for r, p in zip(reference_ratio, production_ratio))
    value = monitor.population_stability_index_categorical(["a", "a", "b"], ["a", "b", "b", "c"])
    assert value == pytest.approx(expected)


def test_chi_squared_expects_the_reference_frequencies_at_the_production_size():
    reference, production = ["a"] * 6 + ["b"] * 4, ["a"] * 3 + ["b"] * 7
    # expected = [6/10 * 10, 4/10 * 10] = [6, 4]; statistic = 9/6 + 9/4 = 3.75 with 1 degree of freedom
    value = monitor.chi_squared_pvalue(reference, production)
    assert value == pytest.approx(stats.chisquare([3, 7], [6, 4]).pvalue)
    assert value == pytest.approx(stats.chi2.sf(3.75, 1))


def test_chi_squared_of_a_category_the_reference_never_saw_is_zero():
    assert monitor.chi_squared_pvalue(["a", "b"], ["a", "b", "c"]) == 0.0


def test_categorical_counts_ignore_unused_categories():
    # a pandas categorical (how the monitor holds categories) with a category neither set has
    reference = pd.Categorical(["a", "a", "b"], categories=["a", "b", "z"])
    production = pd.Categorical(["a", "b", "b", "c"], categories=["a", "b", "c", "z"])
    categories, _, _ = monitor.category_counts(reference, production)
    assert sorted(categories) == ["a", "b", "c"]
    assert monitor.population_stability_index_categorical(reference, production) == pytest.approx(
        monitor.population_stability_index_categorical(["a", "a", "b"], ["a", "b", "b", "c"])
    )


def test_drift_rows_apply_the_threshold_by_kind_of_metric():
    rows = monitor.drift_rows(
        "x", "numerical", np.array([0.0, 1, 2, 3]), np.array([10.0, 11, 12, 13]),
        {"normalized_wasserstein_distance": 7.745966692414834, "two_sample_kolmogorov_smirnov_test": 0.05},
    )  # fmt: skip
    wasserstein, ks = rows
    # W = 10, std([0, 1, 2, 3], ddof=1) = sqrt(5/3): exactly at the threshold, which fails only above it
    assert wasserstein["value"] == pytest.approx(10 / math.sqrt(5 / 3)) and wasserstein["passed"]
    assert ks["value"] == pytest.approx(2 / 70) and not ks["passed"]  # exact p: 2 of C(8, 4) orders; fails below
    assert ks["n_reference"] == 4 and ks["n_production"] == 4
    empty = monitor.drift_rows("x", "numerical", np.array([1.0]), np.array([]), {"jensen_shannon_distance": 0.1})
    assert empty[0]["value"] is None and not empty[0]["passed"] and "no production rows" in empty[0]["note"]


# --- data quality --------------------------------------------------------------------------------------------


def test_numerical_quality_rates_by_hand():
    reference = monitor.read_values(pd.Series([1.0, 2.0, 3.0, None]), "numerical", True)
    production = monitor.read_values(pd.Series([0, 2, "x", None, 5], dtype=object), "numerical", True)
    assert monitor.quality_rates(reference, reference) == {
        "null_value_rate": 0.25, "data_type_error_rate": 0.0, "out_of_bounds_rate": 0.0,
    }  # fmt: skip
    # 5 rows: one null, one "x" (a type error, never out of bounds), 0 and 5 outside [1, 3]
    assert monitor.quality_rates(production, reference) == {
        "null_value_rate": 0.2, "data_type_error_rate": 0.2, "out_of_bounds_rate": 0.4,
    }  # fmt: skip


def test_categorical_quality_rates_by_hand_rounded_to_five_decimals():
    reference = monitor.read_values(pd.Series(["a", "b", None], dtype=object), "categorical", False)
    production = monitor.read_values(pd.Series(["a", "c", None, None, 7], dtype=object), "categorical", False)
    assert monitor.quality_rates(reference, reference) == {
        "null_value_rate": 0.33333, "data_type_error_rate": 0.0, "out_of_bounds_rate": 0.0,
    }  # fmt: skip
    # "c" and "7" are not among the reference's categories; any value reads as a string
    assert monitor.quality_rates(production, reference) == {
        "null_value_rate": 0.4, "data_type_error_rate": 0.0, "out_of_bounds_rate": 0.4,
    }  # fmt: skip


def test_quality_fails_only_above_the_reference_rate_plus_the_threshold():
    same = monitor.quality_row("x", "numerical", "null_value_rate", 0.25, 0.25, 0.0, 4, 8)
    assert same["passed"] and same["limit"] == 0.25
    worse = monitor.quality_row("x", "numerical", "null_value_rate", 0.25, 0.25001, 0.0, 4, 8)
    assert not worse["passed"]
    allowed = monitor.quality_row("x", "numerical", "null_value_rate", 0.7, 0.8, 0.1, 4, 8)  # 0.7 + 0.1 in floats
    assert allowed["passed"] and allowed["limit"] == 0.8
    assert not monitor.quality_row("x", "numerical", "out_of_bounds_rate", 0.0, 0.00001, 0.0, 4, 8)["passed"]


def test_a_numerical_column_read_as_categories_matches_integers_and_floats():
    reference = monitor.read_values(pd.Series([5.0, 6.0, 7.5]), "categorical", True)
    production = monitor.read_values(pd.Series([5, "6", 7.5, "x"], dtype=object), "categorical", True)
    assert list(production.values) == ["5", "6", "7.5", "x"]
    assert monitor.quality_rates(production, reference)["out_of_bounds_rate"] == 0.25


# --- options -------------------------------------------------------------------------------------------------


def test_times_and_durations():
    moment = datetime(2026, 12, 6, 19, tzinfo=timezone.utc)
    same = ("2026-12-06T19:00:00Z", "2026-12-06T19:00:00+00:00", "2026-12-06T19:00:00", "2026-12-06T20:00:00+01:00")
    for text in same:
        assert monitor.parse_time(text) == moment
    assert monitor.parse_duration("P7D") == timedelta(days=7)
    assert monitor.parse_duration("PT6H") == timedelta(hours=6)
    assert monitor.parse_duration("P1DT12H") == timedelta(hours=36)
    for bad in ("P", "PT", "P1M2", "7D", "P1Y"):
        with pytest.raises(ValueError):
            monitor.parse_duration(bad)


def test_thresholds_replace_a_kinds_defaults():
    chosen = monitor.thresholds([monitor.parse_threshold("data_drift.numerical.population_stability_index=0.2")])
    assert chosen["data_drift"]["numerical"] == {"population_stability_index": 0.2}
    assert chosen["data_drift"]["categorical"] == {"jensen_shannon_distance": 0.1}
    assert chosen["prediction_drift"]["numerical"] == {"normalized_wasserstein_distance": 0.1}
    assert chosen["data_quality"]["numerical"] == {
        "null_value_rate": 0.0, "data_type_error_rate": 0.0, "out_of_bounds_rate": 0.0,
    }  # fmt: skip


@pytest.mark.parametrize(
    "option, message",
    [
        (["--threshold", "data_drift.numerical.accuracy=0.1"], "is not a metric of"),
        (["--threshold", "data_drift.categorical.normalized_wasserstein_distance=0.1"], "is not allowed for"),
        (["--threshold", "data_quality.numerical.null_value_rate=lots"], "is not a finite number"),
        (["--threshold", "model_drift.numerical.null_value_rate=0"], "unknown signal"),
        (["--signals", "feature_attribution_drift"], "invalid choice"),
        (["--since", "yesterday"], "not an ISO 8601"),
        (["--features", "x,nope"], "'nope' not in --reference"),
    ],
)
def test_bad_options_exit_2_naming_the_option(collector, option, message, capsys):
    assert monitor.main([*collector.args, *option]) == 2
    assert message in capsys.readouterr().err


# --- the command ---------------------------------------------------------------------------------------------


def reference_frame(rows: int = 240, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(10, 2, rows).round(3),
            "z": rng.integers(0, 50, rows),
            "c": rng.choice(["a", "b", "c"], rows, p=[0.5, 0.3, 0.2]),
            "d": rng.choice(["u", "v"], rows),
            "y": rng.choice(["no", "yes"], rows, p=[0.7, 0.3]),
        }
    )


def write_objects(root: Path, collection: str, objects: list[tuple[datetime, list[dict]]], instance="i0") -> None:
    """Collector objects, each in its hour's folder, as Azure's data collector writes them."""
    for moment, rows in objects:
        folder = root / "blue" / collection / moment.strftime("%Y/%m/%d/%H")
        folder.mkdir(parents=True, exist_ok=True)
        record = {
            "specversion": "1.0",
            "id": f"{moment.isoformat()}-{len(rows)}",
            "source": "/subscriptions/test/onlineEndpoints/bank/deployments/blue",
            "type": f"azureml.inference.{collection}",
            "datacontenttype": "application/json",
            "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "data": rows,
            "correlationid": "test",
            "modelversion": "default",
            "collectdatatype": "pandas.core.frame.DataFrame",
            "agent": "monitoring-sdk/0.1.2",
        }
        with (folder / f"{instance}.jsonl").open("a") as handle:
            handle.write(json.dumps(record) + "\n")


def records(frame: pd.DataFrame) -> list[dict]:
    """Rows as JSON values (the collector's pandas records: numbers as they were, no NaN)."""
    return json.loads(frame.to_json(orient="records"))


def write_production(root: Path, frame: pd.DataFrame, moment: datetime, per_object: int = 60) -> None:
    for start in range(0, len(frame), per_object):
        part = frame.iloc[start : start + per_object]
        write_objects(root, "model_inputs", [(moment, records(part.drop(columns="y")))])
        write_objects(root, "model_outputs", [(moment, records(part[["y"]]))])
        moment += timedelta(seconds=7)


def fingerprints(root: Path) -> dict[str, str]:
    files = sorted(path for path in root.rglob("*") if path.is_file())
    return {str(path.relative_to(root)): hashlib.sha256(path.read_bytes()).hexdigest() for path in files}


class Case:
    def __init__(self, folder: Path):
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.reference = folder / "reference.csv"
        self.production = folder / "collector"
        self.output = folder / "out"
        self.frame = reference_frame()
        self.frame.to_csv(self.reference, sep=";", index=False)

    @property
    def args(self) -> list[str]:
        return [
            "--reference", str(self.reference), "--production", str(self.production), "--target", "y",
            "--task", "classification", "--until", "2026-12-07T00:00:00Z", "--output", str(self.output),
        ]  # fmt: skip

    def signals(self) -> dict:
        return json.loads((self.output / "signals.json").read_text())


@pytest.fixture
def collector(tmp_path) -> Case:
    """A reference and a collector folder whose inputs and outputs are the reference's own rows."""
    case = Case(tmp_path)
    write_production(case.production, case.frame, HOUR)
    return case


def failed_features(signals: dict, signal: str) -> set[str]:
    return {row["feature"] for row in signals["signals"][signal]["features"] if not row["passed"]}


def test_command_passes_on_the_reference_distribution_and_fails_on_exactly_the_shifted_features(tmp_path, capsys):
    clean = Case(tmp_path / "clean")
    write_production(clean.production, clean.frame, HOUR)
    shifted = Case(tmp_path / "shifted")
    moved = shifted.frame.assign(x=shifted.frame["x"] + 3 * shifted.frame["x"].std(), c="c")
    write_production(shifted.production, moved, HOUR)
    before = {"clean": fingerprints(clean.production), "shifted": fingerprints(shifted.production)}

    assert monitor.main(clean.args) == 0  # in this process: a subprocess costs seconds of imports
    signals = clean.signals()
    assert signals["passed"] and signals["failed"] == []
    assert set(signals["signals"]) == {"data_drift", "prediction_drift", "data_quality"}
    assert signals["window"]["rows"] == {"model_inputs": 240, "model_outputs": 240}
    assert {row["feature"] for row in signals["signals"]["data_drift"]["features"]} == {"x", "z", "c", "d"}
    assert "data_drift: passed" in capsys.readouterr().out

    command = [sys.executable, "jobs/src/monitor.py", *shifted.args]
    bad = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 1, bad.stderr
    signals = shifted.signals()
    assert not signals["passed"] and not signals["signals"]["data_drift"]["passed"]
    assert failed_features(signals, "data_drift") == {"x", "c"}
    drift = {row["feature"]: row for row in signals["signals"]["data_drift"]["features"]}
    # every value moved by 3 standard deviations
    assert drift["x"]["metric"] == "normalized_wasserstein_distance"
    assert drift["x"]["value"] == pytest.approx(3, rel=1e-6)
    assert drift["c"]["metric"] == "jensen_shannon_distance" and drift["c"]["value"] > 0.5
    assert signals["signals"]["prediction_drift"]["passed"]
    # x now lies above the reference's maximum: out of bounds; "c" is a known category
    assert failed_features(signals, "data_quality") == {"x"}
    assert all(line.split(": ")[1].split(" ")[0] in {"x", "c"} for line in signals["failed"])
    assert "data_drift: FAILED" in bad.stdout and "x (normalized_wasserstein_distance" in bad.stdout
    assert (shifted.output / "report.png").stat().st_size < 500_000
    assert fingerprints(clean.production) == before["clean"] and fingerprints(shifted.production) == before["shifted"]


def test_training_rows_are_the_reference_of_tabular_split(collector):
    assert monitor.main([*collector.args, "--training-rows", "--signals", "data_drift"]) in (0, 1)
    x_train, _, _, _ = tabular.split(tabular.read_table(collector.reference), "y", "classification")
    reference = collector.signals()["reference"]
    assert reference == {"file": str(collector.reference), "rows": len(x_train), "training_rows": True}
    assert collector.signals()["window"]["rows"]["model_outputs"] is None  # not read without prediction drift


def test_the_window_picks_the_rows_by_object_time(tmp_path):
    case = Case(tmp_path)
    rows = records(case.frame.drop(columns="y"))
    write_objects(case.production, "model_inputs", [
        (datetime(2026, 12, 6, 17, 30, tzinfo=timezone.utc), rows[:5]),
        (datetime(2026, 12, 6, 18, 0, tzinfo=timezone.utc), rows[5:12]),  # the window's first second
        (datetime(2026, 12, 6, 18, 59, 59, tzinfo=timezone.utc), rows[12:23]),
        (datetime(2026, 12, 6, 19, 0, tzinfo=timezone.utc), rows[23:40]),  # the window's end: outside
        (datetime(2026, 12, 6, 19, 45, tzinfo=timezone.utc), rows[40:70]),
    ])  # fmt: skip
    window = ["--signals", "data_quality", "--reference", str(case.reference), "--production", str(case.production),
              "--target", "y", "--task", "classification", "--output", str(case.output)]  # fmt: skip

    def inputs(*option: str) -> dict:
        assert monitor.main([*window, *option]) in (0, 1)
        return case.signals()["window"]

    chosen = inputs("--since", "2026-12-06T18:00:00Z", "--until", "2026-12-06T19:00:00Z")
    assert chosen["rows"]["model_inputs"] == 7 + 11 and chosen["objects"] == 2
    assert chosen["since"] == "2026-12-06T18:00:00Z" and chosen["until"] == "2026-12-06T19:00:00Z"
    # +01:00 is the same instant; no zone means UTC
    chosen = inputs("--since", "2026-12-06T19:00:00+01:00", "--until", "2026-12-06T19:00:00")
    assert chosen["rows"]["model_inputs"] == 7 + 11
    # a duration before --until
    assert inputs("--since", "PT1H", "--until", "2026-12-06T20:00:00Z")["rows"]["model_inputs"] == 17 + 30
    assert inputs("--since", "P1DT12H", "--until", "2026-12-06T19:00:00Z")["rows"]["model_inputs"] == 5 + 7 + 11
    assert inputs("--until", "2026-12-07T00:00:00Z")["rows"]["model_inputs"] == 70


@pytest.mark.parametrize(
    "problem, message",
    [
        ("missing", "missing the reference's feature column(s) 'z'"),
        ("extra", "with column(s) 'w' that --reference"),
        ("bad json", "line 5: not a JSON object"),
        ("no data", "line 5: the object has no `data` list"),
        ("dataref", "dataref objects are not supported here"),
        ("empty window", "no model_inputs rows in the window [2026-12-01T00:00:00Z, 2026-12-02T00:00:00Z)"),
        ("no target", "has no column 'y' (the --target); its columns: x, z, c, d"),
        ("no reference", "reference.csv: file not found"),
        ("no outputs", "the model_outputs have none of the columns 'y', 'label'"),
    ],
)
def test_unusable_input_exits_2_with_one_message_and_touches_nothing(collector, problem, message, capsys):
    inputs = next(collector.production.rglob("model_inputs/**/*.jsonl"))
    args = collector.args
    rows = records(collector.frame.drop(columns="y").head(3))
    later = HOUR + timedelta(minutes=30)
    if problem == "missing":
        for path in collector.production.rglob("model_inputs/**/*.jsonl"):
            objects = [json.loads(line) for line in path.read_text().splitlines()]
            for record in objects:
                record["data"] = [{k: v for k, v in row.items() if k != "z"} for row in record["data"]]
            path.write_text("".join(json.dumps(record) + "\n" for record in objects))
    elif problem == "extra":
        write_objects(collector.production, "model_inputs", [(later, [{**r, "w": 1} for r in rows])], "i1")
    elif problem in ("bad json", "no data", "dataref"):
        line = {"bad json": "{not json", "no data": '{"time": "2026-12-06T17:00:00Z"}',
                "dataref": '{"time": "2026-12-06T17:00:00Z", "dataref": "https://blob/x"}'}[problem]  # fmt: skip
        with inputs.open("a") as handle:
            handle.write(line + "\n")
        message = f"{inputs}, {message}" if problem != "dataref" else message
    elif problem == "empty window":
        args = [*args, "--since", "2026-12-01T00:00:00Z", "--until", "2026-12-02T00:00:00Z"]
    elif problem == "no target":
        collector.frame.drop(columns="y").to_csv(collector.reference, index=False)
    elif problem == "no reference":
        collector.reference.unlink()
    elif problem == "no outputs":
        for path in collector.production.rglob("model_outputs/**/*.jsonl"):
            path.write_text(path.read_text().replace('"y":', '"answer":'))
    before = fingerprints(collector.production)
    assert monitor.main(args) == 2
    error = capsys.readouterr().err
    assert error.startswith("monitor.py: ") and message in error and error.count("\n") == 1
    assert fingerprints(collector.production) == before
    assert not (collector.output / "signals.json").exists()


def test_empty_window_says_how_much_was_outside(collector, capsys):
    assert monitor.main([*collector.args, "--since", "2026-12-06T17:00:30Z", "--until", "2026-12-06T18:00:00Z"]) == 2
    error = capsys.readouterr().err
    # the one file's hour overlaps the window, but its 4 objects were written in the hour's first 21 seconds
    assert "of 1 file(s), 1 were outside it" in error and "4 objects (240 rows) had a time outside it" in error


def test_report_shows_failed_panels_first_and_stays_small(tmp_path):
    def panel(feature: str, metric: str, value: float, threshold: float) -> monitor.Panel:
        row = {"feature": feature, "metric": metric, "value": value, "threshold": threshold,
               "passed": monitor.passes(metric, value, threshold)}  # fmt: skip
        return monitor.Panel(feature, "numerical", np.zeros(1), np.zeros(1), [row])

    panels = [
        panel("calm", "normalized_wasserstein_distance", 0.01, 0.1),
        panel("close", "normalized_wasserstein_distance", 0.09, 0.1),
        panel("drifted", "normalized_wasserstein_distance", 0.2, 0.1),
        panel("far", "jensen_shannon_distance", 0.9, 0.1),
        panel("tested", "two_sample_kolmogorov_smirnov_test", 0.02, 0.05),  # 2.5 times past
    ]
    assert [p.feature for p in monitor.ordered(panels)] == ["far", "tested", "drifted", "close", "calm"]

    case = Case(tmp_path)
    write_production(case.production, case.frame.assign(z=case.frame["z"] * 3), HOUR)
    assert monitor.main([*case.args, "--signals", "data_drift", "prediction_drift"]) == 1
    signals = case.signals()
    (z,) = [row for row in signals["signals"]["data_drift"]["features"] if row["feature"] == "z"]
    assert signals["failed"] == [f"data_drift: z (normalized_wasserstein_distance {z['value']:.4g} > 0.1)"]
    report = case.output / "report.png"
    assert report.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and report.stat().st_size < 500_000


def test_prediction_drift_reads_the_prediction_column_of_every_deployment(tmp_path):
    rng = np.random.default_rng(3)
    reference = pd.DataFrame({"rooms": rng.integers(1, 8, 200), "area": rng.choice(["n", "s"], 200)})
    reference["price"] = reference["rooms"] * 50.0 + rng.normal(0, 5, 200)
    reference.to_csv(tmp_path / "houses.csv", index=False)
    endpoint = tmp_path / "endpoint"
    for deployment, part in (("blue", reference.iloc[:120]), ("green", reference.iloc[120:])):
        moment = HOUR + timedelta(minutes=5)
        for collection, rows in (("model_inputs", records(part[["rooms", "area"]])),
                                 ("model_outputs", [{"prediction": p * 2} for p in part["price"]])):  # fmt: skip
            folder = endpoint / deployment / collection / moment.strftime("%Y/%m/%d/%H")
            folder.mkdir(parents=True)
            (folder / "a1.jsonl").write_text(json.dumps({"time": moment.isoformat(), "data": rows}) + "\n")
    code = monitor.main(["--reference", str(tmp_path / "houses.csv"), "--production", str(endpoint),
                         "--target", "price", "--task", "regression", "--until", "2026-12-07T00:00:00Z",
                         "--signals", "prediction_drift", "--output", str(tmp_path / "out")])  # fmt: skip
    signals = json.loads((tmp_path / "out" / "signals.json").read_text())
    assert code == 1 and signals["window"]["rows"] == {"model_inputs": 200, "model_outputs": 200}
    (row,) = signals["signals"]["prediction_drift"]["features"]
    assert (row["feature"], row["kind"], row["reference_column"]) == ("prediction", "numerical", "price")
    # doubling moves every value by itself: W = the mean, over the std
    expected = reference["price"].mean() / reference["price"].std()
    assert row["value"] == pytest.approx(expected) and not row["passed"]
