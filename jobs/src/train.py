"""Train a LightGBM model on any tabular CSV and save it as one scikit-learn Pipeline over the raw columns.

    python train.py --data CSV --target COLUMN --task regression|classification --output DIR

Writes DIR/model (an MLflow sklearn model with signature and input example), DIR/metrics.json (held-out
metrics) and DIR/plots/; logs parameters, metrics and the same files to the active MLflow run (Azure ML
provides one; locally MLFLOW_TRACKING_URI and MLFLOW_RUN_ID choose it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import mlflow
import numpy as np
from lightgbm import LGBMClassifier, LGBMRegressor
from mlflow.models import infer_signature
from sklearn.compose import TransformedTargetRegressor
from sklearn.pipeline import Pipeline

import tabular

# the types inside the saved Pipeline; skops refuses to load any other, so a tampered file cannot run code
TRUSTED_TYPES = [
    "collections.OrderedDict",
    "lightgbm.basic.Booster",
    "lightgbm.sklearn.LGBMClassifier",
    "lightgbm.sklearn.LGBMRegressor",
    "numpy.dtype",
    "sklearn.compose._column_transformer.make_column_selector",
    "sklearn.metrics._dist_metrics.EuclideanDistance64",
    "sklearn.neighbors._kd_tree.KDTree",
    "tabular.DerivedFeatures",
]

def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="CSV file (any delimiter)")
    parser.add_argument("--target", required=True, help="the column to predict")
    parser.add_argument("--task", required=True, choices=tabular.TASKS)
    parser.add_argument("--output", required=True, type=Path, help="folder for the model, metrics and plots")
    parser.add_argument("--n-estimators", type=int, default=1000)
    parser.add_argument("--learning-rate", type=float, default=0.04)
    parser.add_argument("--num-leaves", type=int, default=31)
    return parser.parse_args(argv)


def build_model(args: argparse.Namespace, log_target: bool) -> Pipeline:
    params = dict(
        n_estimators=args.n_estimators,
        learning_rate=args.learning_rate,
        num_leaves=args.num_leaves,
        min_child_samples=20,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.7,
        reg_lambda=1.0,
        random_state=tabular.SEED,
        # every physical core, unless OMP_NUM_THREADS says otherwise: set it to 1 where other processes
        # keep the cores busy (OpenMP threads spinning for a busy core make training several times slower)
        n_jobs=int(os.environ.get("OMP_NUM_THREADS") or 0) or None,
        verbose=-1,
    )
    if args.task == "classification":
        model = LGBMClassifier(**params)
    elif log_target:
        # house prices and most amounts are skewed: fit the log, predict back in the original units
        model = TransformedTargetRegressor(LGBMRegressor(**params), func=np.log1p, inverse_func=np.expm1)
    else:
        model = LGBMRegressor(**params)
    return Pipeline([("features", tabular.preprocessor(scale=False)), ("model", model)])


def evaluate(pipeline: Pipeline, task: str, x_test, y_test) -> tuple[dict[str, float], np.ndarray]:
    if task == "classification":
        probabilities = pipeline.predict_proba(x_test)
        return tabular.classification_metrics(y_test, probabilities, pipeline.classes_), pipeline.predict(x_test)
    predictions = pipeline.predict(x_test)
    return tabular.regression_metrics(y_test, predictions), predictions


def plot(pipeline: Pipeline, task: str, y_test, predictions, plots: Path) -> None:
    plots.mkdir(parents=True, exist_ok=True)
    if task == "regression":
        tabular.plot_predictions(y_test, predictions, plots / "predicted_vs_actual.png")
    else:
        from sklearn.metrics import ConfusionMatrixDisplay

        display = ConfusionMatrixDisplay.from_predictions(y_test, predictions, colorbar=False)
        display.figure_.savefig(plots / "predicted_vs_actual.png", dpi=100)
        tabular.pyplot().close(display.figure_)
    model = pipeline.named_steps["model"]
    booster = getattr(model, "regressor_", model).booster_
    names = pipeline.named_steps["features"].get_feature_names_out()
    tabular.plot_importance(names, booster.feature_importance("gain"), plots / "feature_importance.png", "total gain")


def main(argv: list[str] | None = None) -> dict[str, float]:
    args = parse_args(argv)
    frame = tabular.read_table(args.data)
    x_train, x_test, y_train, y_test = tabular.split(frame, args.target, args.task)
    log_target = args.task == "regression" and bool(y_train.min() >= 0)
    pipeline = build_model(args, log_target)

    with mlflow.start_run():
        mlflow.log_params(
            {
                "task": args.task,
                "target": args.target,
                "model": "lightgbm",
                "n_estimators": args.n_estimators,
                "learning_rate": args.learning_rate,
                "num_leaves": args.num_leaves,
                "log_target": log_target,
                "train_rows": len(x_train),
                "test_rows": len(x_test),
            }
        )
        started = time.perf_counter()
        pipeline.fit(x_train, y_train)
        mlflow.log_metric("training_seconds", time.perf_counter() - started)
        metrics, predictions = evaluate(pipeline, args.task, x_test, y_test)
        mlflow.log_metrics(metrics)

        tabular.write_results(args.output, metrics)
        plot(pipeline, args.task, y_test, predictions, args.output / "plots")
        example = x_train.head(5)
        shutil.rmtree(args.output / "model", ignore_errors=True)  # a rerun replaces its model
        mlflow.sklearn.save_model(
            pipeline,
            args.output / "model",
            signature=infer_signature(example, pipeline.predict(example)),
            input_example=example,
            code_paths=[tabular.__file__],
            skops_trusted_types=TRUSTED_TYPES,
            pip_requirements=tabular.pinned("mlflow", "lightgbm", "scikit-learn", "pandas", "numpy", "skops"),
        )
        mlflow.log_artifacts(str(args.output))
    print(" ".join(f"{name}={value:.6g}" for name, value in metrics.items()))
    return metrics


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as error:  # bad data or arguments: the message says which
        sys.exit(f"train.py: error: {error}")
