"""The local AutoML engine (jobs/src/automl.py, FLAML) on small generated data: both tasks end to end (the
model, its metrics, the MLflow child runs), the held-out rows, the Azure-to-FLAML mapping of metrics,
algorithms, limits and specs (jobs/local/automl.py), every bad input, and its models served by score.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import yaml

from jobs.local.automl import SpecError, command_for
from jobs.local.server import LocalServer
from tests.housing_sample import housing_frame, request_records

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "jobs" / "src"
WORKLOADS = ROOT / "workloads"
sys.path.insert(0, str(SRC))  # the scripts import their siblings, as they do in a job

import automl  # noqa: E402
import automl_mapping  # noqa: E402
import tabular  # noqa: E402

# train.py's metrics.json keys (tests/test_train.py holds train.py to them)
REGRESSION_METRICS = {"MAE", "RMSE", "R2", "NRMSE"}
CLASSIFICATION_METRICS = {"accuracy", "AUC_weighted", "F1"}
# tiny budgets, from FLAML's low-cost start (train.py's 1000 trees would take the budget)
QUICK = ["--timeout-minutes", "0.05", "--max-trials", "5", "--starting-points", "none"]


def bank_frame(rows: int, classes: tuple[str, ...] = ("no", "yes"), seed: int = 0) -> pd.DataFrame:
    """Bank-marketing-like rows: numbers, categories with missing values, a label driven by both."""
    rng = np.random.default_rng(seed)
    job = rng.choice(["admin.", "technician", "services", "retired"], rows).astype(object)
    job[rng.random(rows) < 0.05] = None
    duration = rng.gamma(2.0, 150.0, rows).round()
    score = duration / 300 + (job == "retired") * 1.5 + rng.normal(0, 0.7, rows)
    edges = np.quantile(score, np.linspace(0, 1, len(classes) + 1)[1:-1])
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, rows).astype(float),
            "job": job,
            "balance": rng.normal(1500, 3000, rows).round(),
            "duration": duration,
            "month": rng.choice(["may", "jun", "jul"], rows),
            "y": np.asarray(classes, dtype=object)[np.searchsorted(edges, score)],
        }
    )


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A private SQLite MLflow store (as the local target's) with one experiment for this module's runs."""
    folder = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{folder / 'mlflow.db'}"
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(uri)
    client = mlflow.MlflowClient(uri)
    # artifacts beside the store, not in ./mlruns of wherever pytest runs
    experiment = client.create_experiment("automl-tests", artifact_location=(folder / "artifacts").as_uri())
    yield client, experiment
    mlflow.set_tracking_uri(previous)


def run_automl(store, argv: list[str]) -> tuple[dict, str]:
    """automl.main in the run the local target would hand it (MLFLOW_RUN_ID): (metrics, parent run id)."""
    client, experiment = store
    run_id = client.create_run(experiment).info.run_id
    with pytest.MonkeyPatch.context() as environment:
        environment.setenv("MLFLOW_RUN_ID", run_id)
        metrics = automl.main(argv)
    return metrics, run_id


@pytest.fixture(scope="module")
def housing_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "housing.csv"
    housing_frame(300).to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def bank_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "bank.csv"
    bank_frame(300).to_csv(path, index=False, sep=";")
    return path


@pytest.fixture(scope="module")
def regression(store, housing_csv, tmp_path_factory):
    """LightGBM or extra trees on housing, ranked by normalized RMSE: in AZUREML_MODEL_DIR's layout."""
    root = tmp_path_factory.mktemp("regressor")
    output = root / "housing-automl" / "1"
    metrics, run_id = run_automl(store, ["--data", str(housing_csv), "--target", "median_house_value",
                                         "--task", "regression", "--primary-metric", "normalized_root_mean_squared_error",
                                         "--allowed-algorithms", "LightGBM,ExtremeRandomTrees", "--output", str(output),
                                         *QUICK])  # fmt: skip
    return {"root": root, "output": output, "metrics": metrics, "run_id": run_id, "data": housing_csv}


@pytest.fixture(scope="module")
def classification(store, bank_csv, tmp_path_factory):
    """XGBoost (labels 0..k-1 inside, yes/no outside) on bank-like data, ranked by AUC_weighted."""
    root = tmp_path_factory.mktemp("classifier")
    output = root / "bank-automl" / "1"
    metrics, run_id = run_automl(store, ["--data", str(bank_csv), "--target", "y", "--task", "classification",
                                         "--primary-metric", "AUC_weighted", "--allowed-algorithms", "XGBoostClassifier",
                                         "--output", str(output), *QUICK])  # fmt: skip
    return {"root": root, "output": output, "metrics": metrics, "run_id": run_id, "data": bank_csv}


def held_out(case, target: str, task: str):
    return tabular.split(tabular.read_table(case["data"]), target, task)


def child_runs(store, parent: str) -> list:
    client, experiment = store
    return client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parent}'", max_results=1000)


# -- end to end --------------------------------------------------------------------------------------


def test_regression_end_to_end_model_metrics_and_trials(store, regression):
    client, _ = store
    output = regression["output"]
    saved = json.loads((output / "metrics.json").read_text())
    assert set(saved) == REGRESSION_METRICS and saved == regression["metrics"]

    # the model takes the raw columns, with missing numbers and unseen categories, through pyfunc
    model = mlflow.pyfunc.load_model(str(output / "model"))
    rows = pd.DataFrame(request_records(5))
    predictions = np.asarray(model.predict(rows), dtype=float)
    assert predictions.shape == (5,) and np.isfinite(predictions).all()
    pipeline = mlflow.sklearn.load_model(str(output / "model"))
    assert [name for name, _ in pipeline.steps] == ["features", "model"]
    assert type(pipeline.named_steps["features"]) is type(tabular.preprocessor(scale=False))
    assert (output / "model" / "code" / "tabular.py").is_file() and (output / "model" / "code" / "automl.py").is_file()
    requirements = (output / "model" / "requirements.txt").read_text()
    assert "skops==" in requirements and "scikit-learn==" in requirements

    # the parent run: the held-out metrics, and which estimator won
    parent = client.get_run(regression["run_id"])
    assert parent.data.metrics["MAE"] == saved["MAE"]
    assert parent.data.params["best_estimator"] in ("lgbm", "extra_tree")
    assert parent.data.params["flaml_metric"] == "rmse"

    # one child run per FLAML trial, each with its estimator, config and loss
    children = child_runs(store, regression["run_id"])
    assert len(children) == int(parent.data.params["trials"]) >= 1
    for child in children:
        assert child.data.params["estimator"] in ("lgbm", "extra_tree")
        assert json.loads(child.data.params["config"])
        assert np.isfinite(child.data.metrics["loss"])
        assert child.info.status == "FINISHED"


def test_classification_end_to_end_answers_in_the_original_labels_with_probabilities(store, classification):
    output = classification["output"]
    saved = json.loads((output / "metrics.json").read_text())
    assert set(saved) == CLASSIFICATION_METRICS and saved == classification["metrics"]
    rows = bank_frame(6, seed=5).drop(columns="y")
    labels = mlflow.pyfunc.load_model(str(output / "model")).predict(rows)
    assert set(np.asarray(labels)) <= {"no", "yes"}
    pipeline = mlflow.sklearn.load_model(str(output / "model"))
    assert list(pipeline.classes_) == ["no", "yes"]
    assert isinstance(pipeline.named_steps["model"], automl.EncodedLabelsClassifier)  # XGBoost wants 0..k-1
    probabilities = pipeline.predict_proba(rows)
    assert probabilities.shape == (6, 2) and np.allclose(probabilities.sum(axis=1), 1)
    assert "xgboost-cpu==" in (output / "model" / "requirements.txt").read_text()
    children = child_runs(store, classification["run_id"])
    assert children and all(c.data.params["estimator"] in ("xgboost", "xgb_limitdepth") for c in children)


@pytest.mark.parametrize("case, target, task", [("regression", "median_house_value", "regression"),
                                                ("classification", "y", "classification")])  # fmt: skip
def test_held_out_rows_are_tabular_splits_and_the_search_saw_only_the_training_rows(store, request, case, target, task):
    run = request.getfixturevalue(case)
    x_train, x_test, y_train, y_test = held_out(run, target, task)
    pipeline = mlflow.sklearn.load_model(str(run["output"] / "model"))
    if task == "regression":
        expected = tabular.regression_metrics(y_test, pipeline.predict(x_test))
    else:
        expected = tabular.classification_metrics(y_test, pipeline.predict_proba(x_test), pipeline.classes_)
    assert expected == pytest.approx(run["metrics"], rel=1e-12)  # the same rows, the same definitions
    client, _ = store
    params = client.get_run(run["run_id"]).data.params
    assert (int(params["train_rows"]), int(params["test_rows"])) == (len(x_train), len(x_test))
    # FLAML's full sample is the training rows: no held-out row took part in the search
    assert max(c.data.metrics["sample_size"] for c in child_runs(store, run["run_id"])) <= len(x_train)


def test_multiclass_with_featurization_off_and_a_stack_ensemble(store, tmp_path):
    data = tmp_path / "three.csv"
    bank_frame(240, classes=("low", "mid", "high"), seed=2).to_csv(data, index=False)
    metrics, run_id = run_automl(store, ["--data", str(data), "--target", "y", "--task", "classification",
                                         "--primary-metric", "AUC_weighted", "--featurization", "off",
                                         "--enable-stack-ensemble", "true", "--allowed-algorithms",
                                         "LightGBM,RandomForest", "--output", str(tmp_path / "out"),
                                         "--timeout-minutes", "0.1", "--max-trials", "8", "--starting-points", "none"])  # fmt: skip
    assert set(metrics) == CLASSIFICATION_METRICS
    client, _ = store
    params = client.get_run(run_id).data.params
    assert params["flaml_metric"] == "roc_auc_ovr_weighted"
    # a multiclass AUC FLAML can compute: every trial has a finite loss
    assert all(np.isfinite(c.data.metrics["loss"]) for c in child_runs(store, run_id))
    pipeline = mlflow.sklearn.load_model(str(tmp_path / "out" / "model"))
    features = pipeline.named_steps["features"]
    assert "derive" not in str(features) and features.get_feature_names_out().tolist()[:4] == ["age", "balance", "duration", "job_admin."]
    model = pipeline.named_steps["model"]
    if params["model_estimators"].count(",") >= 1:  # both estimators finished a trial
        from sklearn.ensemble import StackingClassifier

        assert isinstance(model, StackingClassifier) and model.passthrough
        assert [name for name, _ in model.estimators][0] == params["best_estimator"]
    assert sorted(pipeline.classes_) == ["high", "low", "mid"]
    assert pipeline.predict_proba(bank_frame(4, seed=9).drop(columns="y")).shape == (4, 3)


# -- the mapping ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metric, task, classes, expected",
    [
        ("normalized_root_mean_squared_error", "regression", 0, "rmse"),
        ("normalized_mean_absolute_error", "regression", 0, "mae"),
        ("r2_score", "regression", 0, "r2"),
        ("AUC_weighted", "classification", 2, "roc_auc"),
        ("AUC_weighted", "classification", 3, "roc_auc_ovr_weighted"),
        ("auc_weighted", "classification", 2, "roc_auc"),
        ("accuracy", "classification", 5, "accuracy"),
        ("average_precision_score_weighted", "classification", 2, "ap"),
    ],
)
def test_azure_metrics_map_to_flamls(metric, task, classes, expected):
    assert automl_mapping.flaml_metric(metric, task, classes) == expected


@pytest.mark.parametrize(
    "metric, task, classes, message",
    [
        ("spearman_correlation", "regression", 0, "FLAML has no equivalent"),
        ("norm_macro_recall", "classification", 2, "FLAML has no equivalent"),
        ("median_error", "regression", 0, "unknown metric"),
        ("AUC_weighted", "regression", 0, "is a classification metric"),
        ("r2_score", "classification", 2, "is a regression metric"),
        ("average_precision_score_weighted", "classification", 3, "two classes only"),
    ],
)
def test_metrics_flaml_cannot_do_are_errors_listing_the_supported_ones(metric, task, classes, message):
    with pytest.raises(ValueError, match=message) as raised:
        automl_mapping.flaml_metric(metric, task, classes)
    assert repr(metric) in str(raised.value)
    assert ("r2_score" if task == "regression" else "AUC_weighted") in str(raised.value)


def test_algorithms_map_to_flaml_estimators_allowed_and_blocked():
    assert automl_mapping.estimator_list("regression") == list(automl_mapping.DEFAULT_ESTIMATORS)
    assert automl_mapping.estimator_list("classification", ["LightGBM", "XGBoostClassifier", "LogisticRegression"]) == [
        "lgbm", "xgboost", "xgb_limitdepth", "lrl1", "lrl2"
    ]  # fmt: skip
    assert automl_mapping.estimator_list("regression", blocked=["XGBoostRegressor", "SGD"]) == ["lgbm", "rf", "extra_tree"]
    assert automl_mapping.estimator_list("regression", ["lightgbm", "KNN"], ["KNN"]) == ["lgbm"]  # Azure's names, any case
    with pytest.raises(ValueError, match=r"'DecisionTree' cannot run locally \(FLAML has no single decision tree\)"):
        automl_mapping.estimator_list("classification", ["LightGBM", "DecisionTree"])
    with pytest.raises(ValueError, match="'XGBoostClassifier'.*it is a classification algorithm.*LightGBM"):
        automl_mapping.estimator_list("regression", blocked=["XGBoostClassifier"])
    with pytest.raises(ValueError, match="'Prophet'.*not an Azure ML AutoML algorithm"):
        automl_mapping.estimator_list("regression", ["Prophet"])
    with pytest.raises(ValueError, match="no algorithm left"):
        automl_mapping.estimator_list("regression", ["LightGBM"], ["LightGBM"])


def test_only_installed_estimators_are_tried(monkeypatch):
    monkeypatch.setattr(automl_mapping, "_installed", lambda package: package != "xgboost")
    assert automl_mapping.estimator_list("classification") == ["lgbm", "rf", "extra_tree", "sgd"]


class _Captured(Exception):
    pass


def flaml_settings(monkeypatch, store, argv: list[str]) -> dict:
    """The keyword arguments automl.py hands FLAML's AutoML.fit for `argv` (the search is not run)."""
    import flaml

    captured = {}

    def fit(self, X_train, y_train, **settings):
        captured.update(settings, rows=len(X_train))
        raise _Captured

    monkeypatch.setattr(flaml.AutoML, "fit", fit)
    with pytest.raises(_Captured):
        run_automl(store, argv)
    return captured


def spec_command(name: str, data: Path, output: Path, max_minutes: float | None = 2):
    path = WORKLOADS / name
    return command_for(yaml.safe_load(path.read_text()), path, data, output, max_minutes)


def test_housing_spec_maps_to_flaml(monkeypatch, store, housing_csv, tmp_path):
    command, notes = spec_command("housing/automl-regression.yml", housing_csv, tmp_path / "out")
    assert command == [
        "python", "automl.py", "--data", str(housing_csv), "--target", "median_house_value", "--task", "regression",
        "--primary-metric", "normalized_root_mean_squared_error", "--timeout-minutes", "2", "--output",
        str(tmp_path / "out"), "--max-trials", "40", "--trial-timeout-minutes", "20", "--early-stop", "true",
        "--n-cross-validations", "5", "--enable-stack-ensemble", "true", "--featurization", "auto",
    ]  # fmt: skip
    settings = flaml_settings(monkeypatch, store, command[2:])
    assert settings["task"] == "regression" and settings["rows"] == 240  # the 80% training rows of 300
    assert settings["time_budget"] == 120 and settings["max_iter"] == 40 and settings["train_time_limit"] == 1200
    assert (settings["eval_method"], settings["n_splits"]) == ("cv", 5)
    assert settings["early_stop"] is True and settings["n_concurrent_trials"] == 1
    assert settings["estimator_list"] == list(automl_mapping.DEFAULT_ESTIMATORS)
    # a non-negative target is fitted as log1p, as train.py does; the search still minimizes RMSE in dollars
    assert callable(settings["metric"]) and settings["metric"].__name__ == "rmse_in_original_units"
    assert settings["ensemble"] is False  # the stack is built from plain estimators after the search
    assert settings["starting_points"] == {"lgbm": automl.TRAIN_PY_LGBM}  # lgbm starts at train.py's settings
    assert any(n.startswith("limits.timeout_minutes: 90 capped at 2") for n in notes)
    assert any(n.startswith("limits.max_concurrent_trials: 4 not applied") for n in notes)
    assert any(n.startswith("training.enable_vote_ensemble: true not applied") for n in notes)
    assert any(n.startswith("test_data: not read") for n in notes)


def test_bank_marketing_spec_maps_to_flaml(monkeypatch, store, bank_csv, tmp_path):
    command, notes = spec_command("bank-marketing/automl-classification.yml", bank_csv, tmp_path / "out", None)
    assert command[command.index("--timeout-minutes") + 1] == "90"  # not capped
    assert command[command.index("--primary-metric") + 1] == "AUC_weighted"
    assert command[command.index("--enable-stack-ensemble") + 1] == "true"  # Azure's default, said in a note
    settings = flaml_settings(monkeypatch, store, command[2:])
    assert settings["task"] == "classification" and settings["metric"] == "roc_auc"
    assert settings["time_budget"] == 90 * 60 and (settings["eval_method"], settings["n_splits"]) == ("cv", 5)
    assert any(n.startswith("training.enable_model_explainability: true not applied") for n in notes)
    assert any(n.startswith("training.enable_stack_ensemble: not set; Azure's default (true)") for n in notes)
    assert any(n.startswith("compute: not applied locally") for n in notes)


def test_limits_algorithms_featurization_and_validation_map(monkeypatch, store, housing_csv, tmp_path):
    spec = {
        "type": "automl", "task": "regression", "target_column_name": "median_house_value",
        "primary_metric": "r2_score", "validation_data_size": 0.25, "featurization": {"mode": "off"},
        "limits": {"timeout_minutes": 1, "trial_timeout_minutes": 0.5, "max_cores_per_trial": 2},
        "training": {"allowed_training_algorithms": ["LightGBM", "RandomForest", "KNN"],
                     "blocked_training_algorithms": ["KNN"], "enable_stack_ensemble": False},
    }  # fmt: skip
    command, notes = command_for(spec, Path("custom.yml"), housing_csv, tmp_path / "out", 5)
    settings = flaml_settings(monkeypatch, store, command[2:])
    assert settings["time_budget"] == 60 and settings["train_time_limit"] == 30 and "max_iter" not in settings
    assert (settings["eval_method"], settings["split_ratio"]) == ("holdout", 0.25)
    assert settings["estimator_list"] == ["lgbm", "rf"] and settings["n_jobs"] == 2
    assert settings["metric"] == "r2"  # featurization off: raw target too, no log1p
    assert settings["rows"] == 240
    assert not any(n.startswith("training.enable_stack_ensemble") for n in notes)


def test_starting_points():
    assert automl.starting_points("train", ["lgbm", "rf"]) == {"lgbm": automl.TRAIN_PY_LGBM}
    assert automl.starting_points("train", ["rf"]) is None
    assert automl.starting_points("none", ["lgbm"]) is None
    assert automl.starting_points('{"rf": {"n_estimators": 8}, "knn": {}}', ["rf"]) == {"rf": {"n_estimators": 8}}
    with pytest.raises(ValueError, match="--starting-points: not 'none', 'train' or a JSON object"):
        automl.starting_points("{rf", ["rf"])


def test_settings_that_do_not_apply_locally_are_reported():
    spec = {
        "type": "automl", "task": "classification", "target_column_name": "y", "compute": "azureml:cpu-cluster",
        "validation_data": {"type": "mltable", "path": "azureml:v@latest"}, "weight_column_name": "w",
        "positive_label": "yes", "n_cross_validations": "auto", "log_verbosity": "debug", "mystery": 1,
        "limits": {"max_concurrent_trials": 4, "exit_score": 0.9, "max_nodes": 2},
        "featurization": {"mode": "custom", "transformer_params": {"imputer": []}, "blocked_transformers": ["TfIdf"],
                          "column_name_and_types": {"age": "Numeric"}},
        "training": {"enable_vote_ensemble": True, "enable_onnx_compatible_models": True,
                     "stack_ensemble_settings": {"stack_meta_learner_type": "logistic_regression"}},
    }  # fmt: skip
    command, notes = command_for(spec, Path("s.yml"), Path("d.csv"), Path("o"), None)
    assert command[command.index("--primary-metric") + 1] == "accuracy"  # Azure's default for classification
    assert "--n-cross-validations" not in command  # auto: FLAML decides
    assert command[command.index("--featurization") + 1] == "auto"
    reported = {note.split(":")[0] for note in notes}
    assert reported >= {
        "primary_metric", "compute", "validation_data", "weight_column_name", "positive_label", "log_verbosity",
        "mystery", "limits.max_concurrent_trials", "limits.exit_score", "limits.max_nodes", "featurization.mode",
        "featurization.transformer_params", "featurization.blocked_transformers",
        "featurization.column_name_and_types", "training.enable_vote_ensemble",
        "training.enable_onnx_compatible_models", "training.stack_ensemble_settings",
    }  # fmt: skip
    assert "mystery: not applied locally: unknown to the local AutoML" in notes


@pytest.mark.parametrize(
    "change, key, message",
    [
        ({"task": "forecasting"}, "task", "'forecasting' cannot run locally"),
        ({"primary_metric": "spearman_correlation"}, "primary_metric", "FLAML has no equivalent"),
        ({"primary_metric": "AUC_weighted"}, "primary_metric", "is a classification metric"),
        ({"target_column_name": None}, "target_column_name", "missing"),
        ({"n_cross_validations": 1}, "n_cross_validations", "at least 2"),
        ({"limits": {"timeout_minutes": 0}}, "limits.timeout_minutes", "positive"),
        ({"training": {"allowed_training_algorithms": ["DecisionTree"]}}, "training.allowed_training_algorithms", "DecisionTree"),
        ({"training": {"blocked_training_algorithms": ["Arima"]}}, "training.blocked_training_algorithms", "Arima"),
        ({"featurization": {"mode": "on"}}, "featurization.mode", "auto, off or custom"),
    ],
)
def test_a_spec_that_cannot_run_locally_names_the_file_and_the_key(change, key, message):
    spec = yaml.safe_load((WORKLOADS / "housing" / "automl-regression.yml").read_text()) | change
    with pytest.raises(SpecError, match=message) as raised:
        command_for(spec, Path("workloads/housing/bad.yml"), Path("d.csv"), Path("o"), None)
    assert str(raised.value).startswith(f"workloads/housing/bad.yml: {key}: ")


# -- bad input -------------------------------------------------------------------------------------------


def _frame_error(tmp_path, frame: pd.DataFrame, *argv: str) -> str:
    data = tmp_path / "data.csv"
    frame.to_csv(data, index=False)
    with pytest.raises(ValueError) as raised:
        automl.main(["--data", str(data), "--output", str(tmp_path / "out"), "--timeout-minutes", "1", *argv])
    return str(raised.value)


def test_bad_targets_are_errors_naming_the_column(tmp_path):
    housing = housing_frame(60)
    assert "target column 'price' is not in the data; columns: longitude" in _frame_error(
        tmp_path, housing, "--target", "price", "--task", "regression", "--primary-metric", "r2_score"
    )
    assert "target column 'ocean_proximity' is not numeric" in _frame_error(
        tmp_path, housing, "--target", "ocean_proximity", "--task", "regression", "--primary-metric", "r2_score"
    )
    # a float target with fractions is a quantity, however few its values
    assert "target column 'median_income' is continuous" in _frame_error(
        tmp_path, housing, "--target", "median_income", "--task", "classification", "--primary-metric", "accuracy"
    )
    # whole numbers, but far too many distinct ones to be classes
    many = pd.DataFrame({"x": np.arange(400.0), "count": np.arange(400) % 150})
    assert "has 150 distinct values" in _frame_error(
        tmp_path, many, "--target", "count", "--task", "classification", "--primary-metric", "accuracy"
    )
    lonely = pd.DataFrame({"x": np.arange(30.0), "label": ["a"] * 15 + ["b"] * 14 + ["c"]})
    assert "class 'c' has one row" in _frame_error(
        tmp_path, lonely, "--target", "label", "--task", "classification", "--primary-metric", "accuracy"
    )
    assert "unknown metric" in _frame_error(
        tmp_path, housing, "--target", "median_house_value", "--task", "regression", "--primary-metric", "median_error"
    )


def test_whole_number_labels_are_classes(tmp_path):
    frame = pd.DataFrame({"x": np.arange(40.0), "label": [0, 1] * 20})
    assert automl.check_target(tabular_frame(tmp_path, frame), "label", "classification") == 2


def tabular_frame(tmp_path, frame: pd.DataFrame) -> pd.DataFrame:
    frame.to_csv(tmp_path / "f.csv", index=False)
    return tabular.read_table(tmp_path / "f.csv")  # integers read as floats, as every script reads them


def test_unreadable_data_is_an_error_naming_the_file(tmp_path):
    base = ["--target", "y", "--task", "classification", "--primary-metric", "accuracy", "--output",
            str(tmp_path / "out"), "--timeout-minutes", "1"]  # fmt: skip
    with pytest.raises(FileNotFoundError, match="data file not found"):
        automl.main(["--data", str(tmp_path / "missing.csv"), *base])
    binary = tmp_path / "data.csv"
    binary.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ValueError, match=f"cannot read data file {binary}"):
        automl.main(["--data", str(binary), *base])


def test_the_script_exits_with_one_line_naming_the_problem(housing_csv, tmp_path):
    result = subprocess.run(
        [sys.executable, "automl.py", "--data", str(housing_csv), "--target", "median_house_value", "--task",
         "regression", "--primary-metric", "AUC_weighted", "--timeout-minutes", "1", "--output", str(tmp_path)],
        cwd=SRC, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1].startswith(
        "automl.py: error: primary metric 'AUC_weighted' is a classification metric; for regression use one of: "
    )


# -- served by score.py ---------------------------------------------------------------------------------


def post(url: str, payload: dict) -> tuple[int, object]:
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url + "/score", json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture(scope="module")
def servers(regression, classification, tmp_path_factory):
    """score.py under azmlinfsrv for each model, started side by side (each start imports the serving stack)."""
    from concurrent.futures import ThreadPoolExecutor

    logs = tmp_path_factory.mktemp("logs")
    pending = {name: LocalServer(case["root"], 0, logs / f"{name}.log", workers=1)
               for name, case in (("regressor", regression), ("classifier", classification))}  # fmt: skip
    with ThreadPoolExecutor(len(pending)) as pool:
        started = {name: pool.submit(server.start) for name, server in pending.items()}
    try:
        yield {name: future.result() for name, future in started.items()}
    finally:
        with ThreadPoolExecutor(len(pending)) as pool:
            list(pool.map(LocalServer.stop, pending.values()))


def test_score_py_serves_a_flaml_regressor_unchanged(servers, regression):
    url = servers["regressor"].url
    records = request_records(8)  # a missing number, a missing and an unseen category
    status, predictions = post(url, {"data": records})
    assert status == 200, predictions
    pipeline = mlflow.sklearn.load_model(str(regression["output"] / "model"))
    expected = pipeline.predict(pd.DataFrame(records).astype({"ocean_proximity": "str"}))
    assert predictions == pytest.approx(expected.tolist(), rel=1e-9)
    status, answer = post(url, {"data": [{"longitude": 1.0}]})
    assert status == 400 and "missing column(s)" in answer["message"]


def test_score_py_serves_a_flaml_classifier_and_stays_up(servers):
    url = servers["classifier"].url
    frame = bank_frame(4, seed=7).drop(columns="y").astype(object)
    records = frame.where(frame.notna(), None).to_dict(orient="records")
    status, answer = post(url, {"data": records})
    assert status == 200, answer
    assert len(answer) == 4  # one answer per record (labels, or label and probability)
    assert post(url, {"data": records[:1]})[0] == 200  # still up
