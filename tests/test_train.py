"""train.py and train_mlp.py train for real on small generated data: outputs, MLflow logging, the engineered
features (spatial and calendar target statistics, out-of-fold), early stopping, and models that load from
their own folder and predict on raw columns with missing values and unseen categories."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "jobs" / "src"
sys.path.insert(0, str(SRC))  # the training scripts import their siblings, as they do in a job

import tabular  # noqa: E402
import train  # noqa: E402
from bank_sample import bank_frame, bank_records  # noqa: E402
from housing_sample import housing_frame, request_records  # noqa: E402
from mlflow_store import private_mlflow_store  # noqa: E402

REGRESSION_METRICS = {"MAE", "RMSE", "R2", "NRMSE"}
CLASSIFICATION_METRICS = {"accuracy", "AUC_weighted", "F1"}
PLOTS = {"predicted_vs_actual.png", "feature_importance.png"}


def awkward_rows() -> pd.DataFrame:
    """Request rows as a client sends them: missing numbers (coordinates too), a missing and an unseen
    category. Numbers are floats: pyfunc's schema check refuses int64 for a double column."""
    records = request_records(3)
    records[1]["latitude"] = None
    return pd.DataFrame(records)


@pytest.fixture(scope="module")
def tracking(tmp_path_factory):
    """A private MLflow store and experiment for this module's runs."""
    with private_mlflow_store(tmp_path_factory.mktemp("mlflow")) as environment:
        client = mlflow.MlflowClient()
        environment.setenv("MLFLOW_EXPERIMENT_ID", client.create_experiment("training-tests"))
        yield client


@pytest.fixture(scope="module")
def housing_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "housing.csv"
    housing_frame(600).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def regression(tracking, housing_csv, tmp_path_factory) -> Path:
    output = tmp_path_factory.mktemp("lightgbm")
    train.main(["--data", str(housing_csv), "--target", "median_house_value", "--task", "regression",
                "--output", str(output), "--n-estimators", "60", "--learning-rate", "0.1"])  # fmt: skip
    return output


@pytest.fixture(scope="module")
def mlp(tracking, housing_csv, tmp_path_factory) -> Path:
    import train_mlp

    output = tmp_path_factory.mktemp("mlp")
    train_mlp.main(["--data", str(housing_csv), "--target", "median_house_value", "--output", str(output),
                    "--epochs", "3", "--batch-size", "64", "--units-1", "16", "--units-2", "8"])  # fmt: skip
    return output


def last_run(client: mlflow.MlflowClient, model: str):
    runs = mlflow.search_runs(
        search_all_experiments=True, filter_string=f"params.model = '{model}'", output_format="list"
    )
    assert runs, f"no MLflow run with params.model = {model}"
    return client.get_run(runs[0].info.run_id)


def test_split_is_seeded_and_shared(housing_csv):
    frame = tabular.read_table(housing_csv)
    first = tabular.split(frame, "median_house_value", "regression")
    second = tabular.split(frame.sample(frac=1.0, random_state=1).sort_index(), "median_house_value", "regression")
    assert list(first[1].index) == list(second[1].index)
    assert len(first[1]) == round(len(frame) * tabular.TEST_SIZE)


def test_read_table_sniffs_the_delimiter_and_reads_integers_as_floats(tmp_path):
    (tmp_path / "bank.csv").write_text('"age";"job";"y"\n58;"management";"no"\n44;"technician";"yes"\n')
    frame = tabular.read_table(tmp_path / "bank.csv")
    assert list(frame.columns) == ["age", "job", "y"]
    assert frame["age"].dtype == "float64"  # so a missing age in a request is still a valid value
    with pytest.raises(FileNotFoundError, match="nowhere.csv"):
        tabular.read_table(tmp_path / "nowhere.csv")


def test_split_errors_name_the_problem(housing_csv):
    frame = tabular.read_table(housing_csv)
    with pytest.raises(ValueError, match="'price' is not in the data"):
        tabular.split(frame, "price", "regression")
    with pytest.raises(ValueError, match="'ocean_proximity' is not numeric"):
        tabular.split(frame, "ocean_proximity", "regression")


def test_write_split_gives_automl_the_same_held_out_rows(housing_csv, tmp_path):
    frame = tabular.read_table(housing_csv)
    folders = tabular.write_split(frame, "median_house_value", "regression", tmp_path)
    _, x_test, _, y_test = tabular.split(frame, "median_house_value", "regression")
    written = pd.read_csv(folders["test"] / "test.csv")
    assert "file: ./test.csv" in (folders["test"] / "MLTable").read_text()
    np.testing.assert_allclose(written["median_house_value"], y_test.to_numpy())
    assert len(pd.read_csv(folders["train"] / "train.csv")) + len(written) == len(frame)


def test_neighbour_features_never_see_their_own_target():
    # a target unrelated to location: an in-fold neighbour statistic would still correlate with it
    rng = np.random.default_rng(1)
    rows = 2000
    frame = pd.DataFrame({"latitude": rng.uniform(33, 41, rows), "longitude": rng.uniform(-124, -115, rows)})
    noise = pd.Series(rng.lognormal(12, 0.5, rows))
    features = tabular.DerivedFeatures()
    derived = features.fit_transform(frame, noise)
    correlation = np.corrcoef(derived[f"neighbours_{min(tabular.NEIGHBOURS)}_mean"], np.log1p(noise))[0, 1]
    assert abs(correlation) < 0.1
    assert list(derived.columns) == list(features.get_feature_names_out())


def test_day_of_year_reads_month_names_and_numbers():
    months = np.array(["jan", "May", "December", "feb", None, "smarch", "mar"], dtype=object)
    days = tabular.day_of_year(months, np.array([1, 5, 31, 28, 3, 1, np.nan]))
    np.testing.assert_array_equal(days[:4], [1, 125, 365, 59])
    assert np.isnan(days[4:]).all()  # no month, not a month, no day
    numbers = tabular.day_of_year(np.array([3.0, 13.0, 2.5]), np.array([1.0, 1.0, 1.0]))
    assert numbers[0] == 60 and np.isnan(numbers[1:]).all()


def test_encoded_target_for_the_target_statistics():
    np.testing.assert_array_equal(tabular.encoded_target(pd.Series(["no", "yes", "no"])), [0.0, 1.0, 0.0])
    np.testing.assert_allclose(tabular.encoded_target(pd.Series([0.0, 99.0])), [0.0, np.log(100.0)])
    np.testing.assert_array_equal(tabular.encoded_target(np.array([-1.0, 2.0])), [-1.0, 2.0])
    assert tabular.encoded_target(pd.Series(["a", "b", "c"])) is None  # more classes: no target statistics


def calendar_frame(rows: int, seed: int = 3) -> pd.DataFrame:
    """Bank-like rows called on 40 dates of the year: enough rows per date for its statistics to mean something."""
    rng = np.random.default_rng(seed)
    frame = bank_frame(rows, seed).drop(columns="y")
    frame["month"] = rng.choice(["mar", "may", "oct", "nov"], rows)
    frame["day"] = rng.integers(1, 11, rows).astype(float)
    return frame


def test_calendar_target_statistics_are_out_of_fold_and_served_from_the_whole_training_set():
    frame = calendar_frame(2000)
    noise = pd.Series(np.random.default_rng(4).choice(["no", "yes"], len(frame)))  # unrelated to the date
    features = tabular.DerivedFeatures()
    derived = features.fit_transform(frame, noise)
    assert list(derived.columns) == list(features.get_feature_names_out())
    assert {"day_of_year", "day_of_year_target_mean", "day_of_year_rows"} <= set(derived.columns)
    assert not any(name.startswith("neighbours_") for name in derived.columns)  # no coordinates here
    positive = (noise == "yes").to_numpy(dtype=float)
    out_of_fold = np.corrcoef(derived["day_of_year_target_mean"], positive)[0, 1]
    in_fold = np.corrcoef(features.transform(frame)["day_of_year_target_mean"], positive)[0, 1]
    assert abs(out_of_fold) < 0.05 < in_fold  # seeing its own target would correlate with the noise
    # a row counts the training rows on its date; serving counts all of them
    expected_rows = frame.groupby(["month", "day"])["age"].transform("size").to_numpy(dtype=float)
    np.testing.assert_allclose(features.transform(frame)["day_of_year_rows"], expected_rows)
    np.testing.assert_allclose(derived["day_of_year_rows"].mean(), expected_rows.mean(), rtol=0.05)


def test_calendar_features_learn_a_date_effect_and_serve_awkward_rows_alike():
    frame = calendar_frame(1500)
    day_of_year = tabular.day_of_year(frame["month"].to_numpy(), frame["day"].to_numpy())
    rng = np.random.default_rng(5)
    busy_days = np.isin(day_of_year, rng.choice(np.unique(day_of_year), 10, replace=False))
    subscribed = pd.Series(np.where(rng.random(len(frame)) < np.where(busy_days, 0.6, 0.1), "yes", "no"))
    features = tabular.DerivedFeatures()
    derived = features.fit_transform(frame, subscribed)
    assert np.corrcoef(derived["day_of_year_target_mean"], subscribed == "yes")[0, 1] > 0.3
    # the scoring script's hot path (transform_columns) computes what transform does, also for a missing
    # month, an unknown month name and a missing day
    rows = calendar_frame(4, seed=6).astype({"day": float, "month": object})
    rows.loc[0, "month"], rows.loc[1, "month"], rows.loc[2, "day"] = None, "smarch", np.nan
    expected = features.transform(rows)
    columns = features.transform_columns({c: rows[c].to_numpy() for c in rows.columns})
    assert list(columns) == list(expected.columns)
    for name in ("day_of_year", "day_of_year_target_mean", "day_of_year_rows"):
        np.testing.assert_array_equal(columns[name], expected[name].to_numpy(dtype=float))
    assert np.isnan(expected["day_of_year"][:3]).all() and (expected["day_of_year_rows"][:3] == 0).all()


def test_no_calendar_features_when_month_and_day_are_not_dates():
    frame = calendar_frame(200)
    frame["month"] = np.random.default_rng(7).choice(["red", "green"], len(frame))  # a "month" that is no month
    names = tabular.DerivedFeatures().fit(frame, pd.Series(np.zeros(len(frame)))).get_feature_names_out()
    assert not any(name.startswith("day_of_year") for name in names)


def test_train_regression_writes_model_metrics_and_plots(regression, tracking):
    metrics = json.loads((regression / "metrics.json").read_text())
    assert set(metrics) == REGRESSION_METRICS
    assert metrics["R2"] > 0.5  # the generated value is mostly income and coast: learnable
    assert {p.name for p in (regression / "plots").iterdir()} == PLOTS
    assert all(p.stat().st_size > 1000 for p in (regression / "plots").iterdir())
    run = last_run(tracking, "lightgbm")
    assert run.data.params["task"] == "regression" and run.data.params["log_target"] == "True"
    assert run.data.params["objective"] == "huber"  # the default regression loss, on log1p(target)
    assert run.data.metrics["MAE"] == pytest.approx(metrics["MAE"])
    assert 1 <= run.data.metrics["trees"] <= 60
    artifacts = {a.path for a in tracking.list_artifacts(run.info.run_id)}
    assert {"model", "metrics.json", "plots"} <= artifacts  # azureml://jobs/<run>/outputs/artifacts/paths/model/


def test_train_classification_on_a_semicolon_csv(tracking, tmp_path):
    frame = housing_frame(500, seed=2)
    frame["y"] = np.where(frame.pop("median_house_value") > 200_000, "yes", "no")
    data = tmp_path / "bank.csv"
    frame.to_csv(data, sep=";", index=False)  # as UCI ships bank marketing
    metrics = train.main(["--data", str(data), "--target", "y", "--task", "classification",
                          "--output", str(tmp_path / "out"), "--n-estimators", "40"])  # fmt: skip
    assert set(metrics) == CLASSIFICATION_METRICS
    assert json.loads((tmp_path / "out" / "metrics.json").read_text()) == metrics
    assert 0.5 < metrics["AUC_weighted"] <= 1.0
    assert {p.name for p in (tmp_path / "out" / "plots").iterdir()} == PLOTS
    model = mlflow.pyfunc.load_model(str(tmp_path / "out" / "model"))
    assert set(model.predict(awkward_rows())) <= {"yes", "no"}
    # a binary target gets the spatial target statistics too: the rate of "yes" among the nearest rows
    pipeline = mlflow.sklearn.load_model(str(tmp_path / "out" / "model"))
    assert f"neighbours_{min(tabular.NEIGHBOURS)}_mean" in pipeline.named_steps["features"].get_feature_names_out()


def test_early_stopping_picks_the_trees_on_training_rows_and_the_model_keeps_predict_proba(tracking, tmp_path):
    frame = bank_frame(800)
    # long calls subscribe: learnable from 640 training rows
    frame["y"] = np.where(frame["duration"] * np.random.default_rng(8).lognormal(0, 0.3, len(frame)) > 400, "yes", "no")
    data = tmp_path / "bank.csv"
    frame.to_csv(data, sep=";", index=False)
    argv = ["--data", str(data), "--target", "y", "--task", "classification", "--n-estimators", "300",
            "--learning-rate", "0.3", "--early-stopping-rounds", "10"]  # fmt: skip
    metrics = train.main([*argv, "--output", str(tmp_path / "stopped")])
    assert metrics["AUC_weighted"] > 0.8
    stopped = last_run(tracking, "lightgbm")
    assert stopped.data.params["early_stopping_rounds"] == "10"
    assert 1 <= stopped.data.metrics["trees"] < 300
    pipeline = mlflow.sklearn.load_model(str(tmp_path / "stopped" / "model"))
    assert lightgbm_trees(pipeline) == stopped.data.metrics["trees"]
    assert "day_of_year_target_mean" in pipeline.named_steps["features"].get_feature_names_out()
    rows = pd.DataFrame(bank_records(3)).astype({"month": object})
    rows.loc[0, "month"], rows.loc[1, "month"], rows.loc[2, "day"] = None, "smarch", np.nan
    probabilities = pipeline.predict_proba(rows)
    assert probabilities.shape == (3, 2) and np.allclose(probabilities.sum(axis=1), 1)
    assert set(mlflow.pyfunc.load_model(str(tmp_path / "stopped" / "model")).predict(rows)) <= {"yes", "no"}

    train.main([*argv[:-2], "--early-stopping-rounds", "0", "--output", str(tmp_path / "all")])
    assert last_run(tracking, "lightgbm").data.metrics["trees"] == 300


def lightgbm_trees(pipeline) -> int:
    return train.lightgbm_of(pipeline).booster_.num_trees()


def test_regression_objective_and_arguments():
    args = train.parse_args(["--data", "x.csv", "--target", "t", "--task", "regression", "--output", "out"])
    assert (args.n_estimators, args.early_stopping_rounds, args.objective) == (3000, 100, "auto")
    target = pd.Series(np.random.default_rng(0).lognormal(12, 0.5, 100))
    huber = train.lightgbm_of(train.build_model(args, True, target)).get_params()
    assert huber["objective"] == "huber"
    assert huber["alpha"] == pytest.approx(train.HUBER_ALPHA_STDS * np.std(np.log1p(target)))
    args.objective = "l2"
    assert train.lightgbm_of(train.build_model(args, True, target)).get_params()["objective"] == "l2"
    classifier = train.parse_args(["--data", "x.csv", "--target", "y", "--task", "classification", "--output", "out"])
    assert train.lightgbm_of(train.build_model(classifier, False)).get_params()["objective"] is None  # log loss
    with pytest.raises(SystemExit):
        train.parse_args(["--data", "x", "--target", "t", "--task", "regression", "--output", "o", "--validation-fraction", "0.7"])


def test_mlp_logs_held_out_mae_every_epoch(mlp, tracking):
    metrics = json.loads((mlp / "metrics.json").read_text())
    assert set(metrics) == REGRESSION_METRICS
    assert {p.name for p in (mlp / "plots").iterdir()} == PLOTS
    run = last_run(tracking, "keras-mlp")
    history = tracking.get_metric_history(run.info.run_id, "MAE")
    assert [m.step for m in history] == [1, 2, 3]
    assert history[-1].value == pytest.approx(metrics["MAE"], rel=1e-4)  # the final MAE is the last epoch's
    assert run.data.params["backend"] == "jax"  # the lock's CPU backend (keras_model.choose_backend)


def test_models_load_from_their_folder_alone(regression, mlp, tmp_path):
    """In a fresh interpreter, away from jobs/src: everything a model needs is in its folder."""
    rows = tmp_path / "rows.json"
    awkward_rows().to_json(rows, orient="records")
    script = (
        "import json, sys, mlflow, pandas as pd\n"
        "rows = pd.DataFrame(json.load(open(sys.argv[1])))\n"
        "print(json.dumps([mlflow.pyfunc.load_model(p).predict(rows).tolist() for p in sys.argv[2:]]))\n"
    )
    models = [str(regression / "model"), str(mlp / "model")]
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", script, str(rows), *models], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    predictions = json.loads(done.stdout.strip().splitlines()[-1])
    for values in predictions:
        assert len(values) == len(awkward_rows())
        assert all(np.isfinite(values)) and all(v > 0 for v in values)
    # the sklearn flavor is one Pipeline over the raw columns
    pipeline = mlflow.sklearn.load_model(models[0])
    assert list(pipeline.feature_names_in_) == list(awkward_rows().columns)
    np.testing.assert_allclose(pipeline.predict(awkward_rows()), predictions[0])
