"""Local AutoML: what an Azure ML AutoML job (`type: automl`) does, run on this machine with FLAML.

    python automl.py --data CSV --target COLUMN --task regression|classification \
        --primary-metric METRIC --timeout-minutes N [--max-trials N] --output DIR

METRIC and the algorithm names are Azure ML AutoML's (normalized_root_mean_squared_error, AUC_weighted,
LightGBM, XGBoostClassifier, ...); automl_mapping.py maps them to FLAML's (its *_METRICS and ALGORITHMS tables).

It holds out the seeded split every job here uses (`tabular.split`), lets FLAML search on the training
rows only, refits the winning configuration on all training rows inside one scikit-learn Pipeline over
the raw columns (the same feature step as train.py, unless `--featurization off`), and reports the same
held-out metrics as train.py. Every FLAML trial is an MLflow child run of the active run (Azure ML
provides one; locally MLFLOW_TRACKING_URI and MLFLOW_RUN_ID choose it).

Writes DIR/model (an MLflow sklearn model with signature and input example, saved with skops),
DIR/metrics.json (held-out metrics, as train.py writes them) and DIR/flaml.log (every trial).

This module is also saved into each model (`code_paths`), for `EncodedLabelsClassifier`: importing it
needs only numpy, scikit-learn, tabular.py and automl_mapping.py (saved beside it); FLAML and MLflow are
imported when training.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone

import tabular
from automl_mapping import SCALE_SENSITIVE, AutoMLError, estimator_list, flaml_metric

# saved into each model beside this module, which imports it
MAPPING_FILE = str(Path(__file__).with_name("automl_mapping.py"))

# the types inside a saved model; skops refuses to load any other, so a tampered file cannot run code
TRUSTED_TYPES = [
    "automl.EncodedLabelsClassifier",
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "lightgbm.sklearn.LGBMRegressor",
    "numpy.dtype",
    "sklearn.compose._column_transformer.make_column_selector",
    "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neighbors._ball_tree.BallTree",
    "sklearn.neighbors._kd_tree.KDTree",
    "sklearn.tree._tree.Tree",
    "sklearn.utils._bunch.Bunch",
    "tabular.DerivedFeatures",
    "xgboost.core.Booster",
    "xgboost.sklearn.XGBClassifier",
    "xgboost.sklearn.XGBRegressor",
]

# train.py's LightGBM settings in FLAML's search space: `--starting-points train` starts lgbm there
TRAIN_PY_LGBM = {
    "n_estimators": 1000,
    "num_leaves": 31,
    "min_child_samples": 20,
    "learning_rate": 0.04,
    "log_max_bin": 8,
    "colsample_bytree": 0.7,
    "reg_alpha": 1 / 1024,
    "reg_lambda": 1.0,
}

# a numeric classification target is taken as class labels only when every value is a whole number and
# there are at most this many: a float target with fractions, or hundreds of distinct integers, is a
# quantity to regress (each class also needs two rows for the stratified split)
MAX_CLASSES = 100


# -- the saved model ---------------------------------------------------------------------------------


class EncodedLabelsClassifier(ClassifierMixin, BaseEstimator):
    """A classifier that needs labels 0..k-1 (XGBoost), trained and answering in the original labels, as
    every other classifier here does. (A stack ensemble encodes the labels itself.)"""

    def __init__(self, estimator=None):
        self.estimator = estimator

    def fit(self, X, y, **fit_params):
        self.classes_, encoded = np.unique(np.asarray(y), return_inverse=True)
        self.estimator_ = clone(self.estimator).fit(X, encoded, **fit_params)
        return self

    def predict_proba(self, X):
        return self.estimator_.predict_proba(X)

    def predict(self, X):
        return self.classes_[np.asarray(self.estimator_.predict(X), dtype=int)]


def plain_estimator(name: str, config: dict, flaml_task: str, n_jobs: int):
    """The scikit-learn-API estimator FLAML's learner `name` trains for `config`, unfitted: FLAML's own
    translation of the config (FLAML's learners wrap these and add nothing at prediction time, but for
    sgd, which normalizes each row first)."""
    from flaml.automl.state import AutoMLState
    from flaml.automl.task.factory import task_factory
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import Normalizer

    # by its module name, not __main__'s, so that the saved model refers to automl.EncodedLabelsClassifier
    from automl import EncodedLabelsClassifier

    learner = task_factory(flaml_task).estimator_class_from_str(name)(
        task=flaml_task, n_jobs=n_jobs, **AutoMLState.sanitize(config)
    )
    params = dict(learner.params)
    if name == "sgd":
        if params.get("penalty") == "None":
            params["penalty"] = None
        return Pipeline([("normalize", Normalizer()), ("sgd", learner.estimator_class(**params))])
    estimator = learner.estimator_class(**params)
    if flaml_task != "regression" and name in ("xgboost", "xgb_limitdepth"):
        return EncodedLabelsClassifier(estimator)
    return estimator


def stack_ensemble(automl, task: str, flaml_task: str, n_jobs: int):
    """FLAML's stack ensemble (`ensemble=True`), built from plain estimators: the best configuration of the
    two best estimators, plus every other whose loss is within 4x the best, stacked with the best one as the
    final estimator, on the raw features too (passthrough). None when fewer than two estimators finished."""
    from automl import EncodedLabelsClassifier
    from sklearn.ensemble import StackingClassifier, StackingRegressor

    losses = automl.best_loss_per_estimator
    configs = automl.best_config_per_estimator
    ranked = sorted((e for e in configs if configs[e] is not None and np.isfinite(losses[e])), key=losses.get)
    if len(ranked) < 2:
        return None, []
    best = losses[ranked[0]]
    chosen = ranked[:2] + [e for e in ranked[2:] if losses[e] < 4 * best]

    def member(name):
        estimator = plain_estimator(name, configs[name], flaml_task, n_jobs)
        # a stack encodes the labels itself, so XGBoost goes in bare
        return estimator.estimator if isinstance(estimator, EncodedLabelsClassifier) else estimator

    stacker = StackingClassifier if task == "classification" else StackingRegressor
    return stacker([(name, member(name)) for name in chosen], member(ranked[0]), passthrough=True), chosen


def raw_encoder():
    """`featurization: off`: the raw columns, with only what every estimator needs to take them: median-filled
    numbers (linear models and KNN take no missing values) and one-hot categories."""
    from sklearn.compose import ColumnTransformer, make_column_selector
    from sklearn.impute import SimpleImputer
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    categorical = make_pipeline(
        SimpleImputer(strategy="constant", fill_value="missing"),
        OneHotEncoder(handle_unknown="ignore", sparse_output=False),
    )
    return ColumnTransformer(
        [
            ("numeric", SimpleImputer(strategy="median"), make_column_selector(dtype_include="number")),
            ("categorical", categorical, make_column_selector(dtype_exclude="number")),
        ],
        verbose_feature_names_out=False,
    )


# -- arguments and data ------------------------------------------------------------------------------


def _boolean(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise argparse.ArgumentTypeError(f"expected true or false, not {value!r}")
    return lowered == "true"


def _names(value: str) -> list[str]:
    return [name.strip() for name in value.split(",") if name.strip()]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="automl.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", required=True, help="CSV file (any delimiter)")
    parser.add_argument("--target", required=True, help="the column to predict (target_column_name)")
    parser.add_argument("--task", required=True, choices=("regression", "classification"))
    parser.add_argument("--primary-metric", required=True, help="Azure ML's name, e.g. AUC_weighted")
    parser.add_argument("--timeout-minutes", required=True, type=tabular.positive(float), help="FLAML's time_budget")
    parser.add_argument("--output", required=True, type=Path, help="folder for the model and metrics")
    parser.add_argument("--max-trials", type=tabular.positive(int), help="FLAML's max_iter")
    parser.add_argument("--trial-timeout-minutes", type=tabular.positive(float), help="FLAML's train_time_limit")
    parser.add_argument(
        "--n-cross-validations", type=tabular.positive(int), help="k-fold cross-validation (FLAML eval_method cv); "
        "default: FLAML decides (cv for small data, a holdout for large)",
    )
    parser.add_argument("--validation-size", type=float, help="a holdout of this fraction instead (eval_method holdout)")
    parser.add_argument("--allowed-algorithms", type=_names, help="Azure ML names, comma-separated")
    parser.add_argument("--blocked-algorithms", type=_names, help="Azure ML names, comma-separated")
    parser.add_argument("--featurization", choices=("auto", "off"), default="auto")
    parser.add_argument("--enable-stack-ensemble", type=_boolean, default=False, metavar="true|false")
    parser.add_argument("--early-stop", type=_boolean, default=False, metavar="true|false",
                        help="stop when the search has converged (Azure's enable_early_termination)")  # fmt: skip
    # train: measured on housing with 1 minute, 5-fold CV (benchmarks in the notes): held-out MAE 24,822
    # starting there, 26,203 from FLAML's low-cost start; train.py's settings are its hand-set defaults
    parser.add_argument(
        "--starting-points", default="train",
        help="'train' (default: lgbm starts at train.py's LightGBM settings), 'none' (FLAML's low-cost start "
        "only) or a JSON object {estimator: config} in FLAML's search space",
    )  # fmt: skip
    parser.add_argument("--n-jobs", type=int, help="threads per trial, -1 for every core (default: OMP_NUM_THREADS, else 1)")
    parser.add_argument("--seed", type=int, help="FLAML's search seed (default: tabular.SEED)")
    args = parser.parse_args(argv)
    if args.validation_size is not None and not 0 < args.validation_size < 1:
        parser.error(f"--validation-size must be between 0 and 1, not {args.validation_size}")
    if args.validation_size is not None and args.n_cross_validations:
        parser.error("--validation-size and --n-cross-validations exclude each other")
    if args.n_cross_validations == 1:
        parser.error("--n-cross-validations must be at least 2")
    return args


def read_data(path: Path):
    try:
        return tabular.read_table(path)
    except FileNotFoundError:
        raise
    except (OSError, ValueError) as error:  # unreadable, not text, not a table
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise AutoMLError(f"cannot read data file {path}: {first}") from None


def check_target(frame, target: str, task: str) -> int:
    """AutoMLError when the target does not fit the task; the number of classes for classification."""
    import pandas as pd

    if target not in frame.columns:
        raise AutoMLError(f"target column {target!r} is not in the data; columns: {', '.join(map(str, frame.columns))}")
    labels = frame[target].dropna()
    if labels.empty:
        raise AutoMLError(f"target column {target!r} has no values")
    if task == "regression":
        if not pd.api.types.is_numeric_dtype(labels) or pd.api.types.is_bool_dtype(labels):
            raise AutoMLError(
                f"target column {target!r} is not numeric (e.g. {labels.iloc[0]!r}), so it cannot be a regression "
                "target; use --task classification"
            )
        if labels.nunique() < 2:
            raise AutoMLError(f"target column {target!r} has one value only, {labels.iloc[0]!r}: nothing to learn")
        return 0
    counts = labels.value_counts()
    if pd.api.types.is_numeric_dtype(labels) and not pd.api.types.is_bool_dtype(labels):
        values = labels.to_numpy(dtype=float)
        fractional = values[values != np.round(values)]
        if fractional.size:
            raise AutoMLError(
                f"target column {target!r} is continuous ({len(counts)} distinct values, e.g. {fractional[0]:g}), "
                "not class labels; use --task regression"
            )
    if len(counts) > MAX_CLASSES:
        raise AutoMLError(
            f"target column {target!r} has {len(counts)} distinct values; classification here takes at most "
            f"{MAX_CLASSES} classes (is it a quantity? use --task regression)"
        )
    if len(counts) < 2:
        raise AutoMLError(f"target column {target!r} has one class only, {counts.index[0]!r}: nothing to learn")
    rare = counts[counts < 2]
    if len(rare):
        raise AutoMLError(
            f"target column {target!r}: class {rare.index[0]!r} has one row; the stratified held-out split needs "
            "at least two per class"
        )
    return len(counts)


def starting_points(value: str, estimators: list[str]) -> dict | None:
    if value == "none":
        return None
    if value == "train":
        return {"lgbm": dict(TRAIN_PY_LGBM)} if "lgbm" in estimators else None
    try:
        points = json.loads(value)
    except json.JSONDecodeError as error:
        raise AutoMLError(f"--starting-points: not 'none', 'train' or a JSON object ({error})") from None
    if not isinstance(points, dict):
        raise AutoMLError("--starting-points: the JSON must be an object {estimator: config}")
    return {name: config for name, config in points.items() if name in estimators} or None


# -- the search ---------------------------------------------------------------------------------------


def in_original_units(metric: str):
    """A FLAML custom metric: `metric` on predictions of a model fitted to log1p(target), computed in the
    target's own units, so the search minimizes the error the held-out metrics report."""
    from flaml.automl.ml import sklearn_metric_loss_score

    def loss(X_val, y_val, estimator, *args, **kwargs):
        started = time.perf_counter()
        with np.errstate(over="ignore", invalid="ignore"):
            predicted = np.expm1(np.asarray(estimator.predict(X_val), dtype=float))
        # a diverged model (an SGD, say) predicts beyond float range: the worst loss, as FLAML scores it itself
        finite = bool(np.isfinite(predicted).all())
        value = sklearn_metric_loss_score(metric, predicted, np.expm1(np.asarray(y_val, dtype=float))) if finite else np.inf
        return value, {metric: value, "pred_time": (time.perf_counter() - started) / max(len(y_val), 1)}

    loss.__name__ = f"{metric}_in_original_units"
    return loss


def search(args, features, y_train, task: str, n_classes: int, estimators: list[str], log_target: bool, log_file: Path):
    """FLAML over the training rows' feature matrix; returns the fitted AutoML object and its settings."""
    from flaml import AutoML

    metric = flaml_metric(args.primary_metric, task, n_classes)
    settings = {
        "task": task,
        "metric": in_original_units(metric) if log_target else metric,
        "estimator_list": estimators,
        "time_budget": args.timeout_minutes * 60,
        "log_file_name": str(log_file),
        "log_type": "all",
        "seed": tabular_seed(args),
        "n_jobs": args.n_jobs,
        "n_concurrent_trials": 1,
        "retrain_full": False,  # the winner is refitted below, inside the pipeline
        "ensemble": False,  # built below from plain estimators, when asked (stack_ensemble)
        "early_stop": args.early_stop,
        "verbose": 1,
        "mlflow_logging": False,  # the trials are logged below, as child runs of this run
    }
    if args.max_trials:
        settings["max_iter"] = args.max_trials
    if args.trial_timeout_minutes:
        settings["train_time_limit"] = args.trial_timeout_minutes * 60
    if args.n_cross_validations:
        settings |= {"eval_method": "cv", "n_splits": args.n_cross_validations}
    elif args.validation_size is not None:
        settings |= {"eval_method": "holdout", "split_ratio": args.validation_size}
    points = starting_points(args.starting_points, estimators)
    if points:
        settings["starting_points"] = points
    automl = AutoML()
    target = np.log1p(np.asarray(y_train, dtype=float)) if log_target else y_train
    automl.fit(features, target, **settings)
    if automl.best_estimator is None:
        raise AutoMLError(
            f"no trial finished within {args.timeout_minutes:g} minute(s): raise --timeout-minutes "
            "(or --trial-timeout-minutes)"
        )
    shown = {k: v for k, v in settings.items() if k not in ("metric", "log_file_name")}
    return automl, shown | {"metric": metric}


def tabular_seed(args) -> int:
    return tabular.SEED if args.seed is None else args.seed


def trials(log_file: Path) -> list[dict]:
    """Every trial FLAML logged (log_type 'all'): estimator, config, loss, times."""
    records = []
    if not log_file.is_file():
        return records
    for line in log_file.read_text().splitlines():
        record = json.loads(line)
        if "learner" in record:  # not a checkpoint line
            records.append(record)
    return records


def log_trials(records: list[dict], started: float) -> None:
    """Each trial as a finished MLflow child run of the active run: params estimator, config (JSON) and the
    config's values; metrics loss (what FLAML minimized), trial_seconds, sample_size."""
    import mlflow
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.utils.mlflow_tags import MLFLOW_PARENT_RUN_ID

    parent = mlflow.active_run()
    client = mlflow.MlflowClient()
    for number, record in enumerate(records, start=1):
        end = started + record["wall_clock_time"]
        start_ms, end_ms = int((end - record["trial_time"]) * 1000), int(end * 1000)
        run = client.create_run(
            parent.info.experiment_id,
            start_time=start_ms,
            tags={MLFLOW_PARENT_RUN_ID: parent.info.run_id, "trial": str(number)},
            run_name=f"trial-{number}-{record['learner']}",
        )
        config = dict(record["config"])
        params = {"estimator": record["learner"], "config": json.dumps(config, sort_keys=True)}
        params |= {f"config.{k}": v for k, v in config.items()}
        metrics = {"trial_seconds": record["trial_time"], "sample_size": record["sample_size"]}
        if np.isfinite(record["validation_loss"]):
            metrics["loss"] = record["validation_loss"]
        client.log_batch(
            run.info.run_id,
            metrics=[Metric(k, float(v), end_ms, 0) for k, v in metrics.items()],
            params=[Param(k, str(v)[:6000]) for k, v in params.items()],
            tags=[RunTag("estimator", record["learner"])],
        )
        client.set_terminated(run.info.run_id, "FINISHED" if "loss" in metrics else "FAILED", end_time=end_ms)


# -- main ---------------------------------------------------------------------------------------------


def build_pipeline(automl, args, task: str, n_classes: int, estimators: list[str], log_target: bool, n_jobs: int):
    """The saved model: one Pipeline over the raw columns (features, then the chosen estimator or stack)."""
    from sklearn.compose import TransformedTargetRegressor
    from sklearn.pipeline import Pipeline

    flaml_task = "regression" if task == "regression" else "binary" if n_classes == 2 else "multiclass"
    chosen = [automl.best_estimator]
    model = None
    if args.enable_stack_ensemble:
        model, members = stack_ensemble(automl, task, flaml_task, n_jobs)
        if model is not None:
            chosen = members
    if model is None:
        model = plain_estimator(automl.best_estimator, automl.best_config, flaml_task, n_jobs)
    if log_target:
        model = TransformedTargetRegressor(model, func=np.log1p, inverse_func=np.expm1)
    if args.featurization == "off":
        features = raw_encoder()
    else:
        features = tabular.preprocessor(scale=bool(SCALE_SENSITIVE & set(estimators)))
    return Pipeline([("features", features), ("model", model)]), chosen


def requirements(pipeline) -> list[str]:
    """The model's pip requirements: what loading it imports, pinned to the installed versions."""
    modules = {type(value).__module__.split(".")[0] for value in pipeline.get_params(deep=True).values()}
    packages = ["mlflow", "scikit-learn", "pandas", "numpy", "skops"]
    if "lightgbm" in modules:
        packages.append("lightgbm")
    pins = tabular.pinned(*packages)
    if "xgboost" in modules:
        try:
            pins += tabular.pinned("xgboost-cpu")  # the CPU-only wheel the project's lock installs
        except Exception:  # noqa: BLE001  (the full xgboost distribution instead)
            pins += tabular.pinned("xgboost")
    return pins


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    # every check of the arguments and the data before the slow imports (MLflow, FLAML)
    flaml_metric(args.primary_metric, args.task)
    estimators = estimator_list(args.task, args.allowed_algorithms, args.blocked_algorithms)
    starting_points(args.starting_points, estimators)
    frame = read_data(args.data)
    n_classes = check_target(frame, args.target, args.task)
    flaml_metric(args.primary_metric, args.task, n_classes)  # a metric for two classes only, say

    tabular.import_skops_without_torch()  # the model is saved with skops: imported before MLflow, as it says
    import mlflow

    x_train, x_test, y_train, y_test = tabular.split(frame, args.target, args.task)
    log_target = args.task == "regression" and args.featurization == "auto" and bool(y_train.min() >= 0)
    # one thread per trial unless told: FLAML's trials are short, and on a shared or small machine OpenMP
    # threads spinning for a busy core make each fit many times slower (2.7 s vs 41 s measured for one
    # 1000-tree LightGBM fit on housing with 2 threads on 2 busy cores)
    n_jobs = args.n_jobs or int(os.environ.get("OMP_NUM_THREADS") or 0) or 1
    args.n_jobs = n_jobs
    args.output.mkdir(parents=True, exist_ok=True)
    log_file = args.output / "flaml.log"
    log_file.unlink(missing_ok=True)

    with mlflow.start_run():
        started = time.time()
        clock = time.perf_counter()
        # FLAML searches on the training rows' features, computed once (a trial refits only its estimator)
        if args.featurization == "off":
            featurizer = raw_encoder()
        else:
            featurizer = tabular.preprocessor(scale=bool(SCALE_SENSITIVE & set(estimators)))
        matrix = featurizer.fit_transform(x_train, y_train)
        import pandas as pd

        # XGBoost takes no [, ] or < in a feature name (a one-hot "<1H OCEAN" has one)
        names = [re.sub(r"[\[\]<]", "_", str(c)) for c in featurizer.get_feature_names_out()]
        matrix = pd.DataFrame(np.asarray(matrix, dtype=float), columns=names)
        automl, settings = search(args, matrix, y_train, args.task, n_classes, estimators, log_target, log_file)
        search_seconds = time.perf_counter() - clock
        records = trials(log_file)
        log_trials(records, started)

        pipeline, chosen = build_pipeline(automl, args, args.task, n_classes, estimators, log_target, n_jobs)
        pipeline.fit(x_train, y_train)
        training_seconds = time.perf_counter() - clock
        if args.task == "classification":
            metrics = tabular.classification_metrics(y_test, pipeline.predict_proba(x_test), pipeline.classes_)
        else:
            metrics = tabular.regression_metrics(y_test, pipeline.predict(x_test))

        mlflow.log_params(
            {
                "task": args.task,
                "target": args.target,
                "model": "flaml-automl",
                "primary_metric": args.primary_metric,
                "flaml_metric": settings["metric"],
                "estimator_list": ",".join(estimators),
                "time_budget": settings["time_budget"],
                "max_iter": settings.get("max_iter"),
                "train_time_limit": settings.get("train_time_limit"),
                "eval_method": settings.get("eval_method", "auto"),
                "n_splits": settings.get("n_splits"),
                "featurization": args.featurization,
                "stack_ensemble": args.enable_stack_ensemble,
                "best_estimator": automl.best_estimator,
                "best_config": json.dumps(automl.best_config, sort_keys=True)[:6000],
                "model_estimators": ",".join(chosen),
                "log_target": log_target,
                "trials": len(records),
                "train_rows": len(x_train),
                "test_rows": len(x_test),
            }
        )
        mlflow.log_metrics(
            metrics | {"training_seconds": training_seconds, "search_seconds": search_seconds,
                       "best_validation_loss": float(automl.best_loss)}  # fmt: skip
        )
        mlflow.set_tag("best_estimator", automl.best_estimator)

        tabular.write_results(args.output, metrics)
        tabular.save_model(pipeline, args.output, args.task, x_train.head(5), [tabular.__file__, __file__, MAPPING_FILE],
                           TRUSTED_TYPES, requirements(pipeline), target=args.target)  # fmt: skip
    print(
        f"best {automl.best_estimator} of {len(records)} trial(s) -> model {'+'.join(chosen)}; held-out "
        + " ".join(f"{name}={value:.6g}" for name, value in metrics.items())
    )
    return metrics


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as error:  # bad data or arguments: the message says which
        sys.exit(f"automl.py: error: {error}")
