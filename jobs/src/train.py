"""Train a LightGBM model on any tabular CSV and save it as one scikit-learn Pipeline over the raw columns.

    python train.py --data CSV --target COLUMN --task regression|classification --output DIR

The number of trees comes from early stopping on a validation share of the training rows (the held-out
test rows are only scored), after which the pipeline is refitted on every training row. Regression fits
log1p(target) when the target is non-negative, with a Huber loss by default.

Writes DIR/model (an MLflow sklearn model with signature and input example), DIR/metrics.json (held-out
metrics) and DIR/plots/; logs parameters, metrics and the same files to the active MLflow run (Azure ML
provides one; locally MLFLOW_TRACKING_URI and MLFLOW_RUN_ID choose it).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# OpenMP threads that wait for work by sleeping rather than spinning, set before anything loads the OpenMP
# runtime: where other processes keep the cores busy, spinning threads made training several times slower
# (bank marketing here: 2 min 12 s with spinning threads on a busy 2-core machine, 19 s without)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import tabular  # noqa: E402

tabular.import_skops_without_torch()  # the model is saved with skops: imported before MLflow, as it says

import mlflow  # noqa: E402
import numpy as np  # noqa: E402
from lightgbm import LGBMClassifier, LGBMRegressor  # noqa: E402
from sklearn.compose import TransformedTargetRegressor  # noqa: E402
from sklearn.pipeline import Pipeline  # noqa: E402

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

# the regression loss's default: Huber on the (log) target, quadratic within this many standard deviations of
# the target and linear beyond, so that outliers pull less and the fit leans towards the median, which is
# what minimizes MAE, while converging nearly as fast as least squares (5-fold cross-validation on the
# housing training rows: 3% lower MAE than l2; over three fold seeds 0.15 beat 0.25 by 0.6%)
HUBER_ALPHA_STDS = 0.15
OBJECTIVES = ("auto", "huber", "l2", "l1")
# fewer validation rows than this tell early stopping nothing: all --n-estimators trees are trained
MIN_VALIDATION_ROWS = 30


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="CSV file (any delimiter)")
    parser.add_argument("--target", required=True, help="the column to predict")
    parser.add_argument("--task", required=True, choices=tabular.TASKS)
    parser.add_argument("--output", required=True, type=Path, help="folder for the model, metrics and plots")
    parser.add_argument("--n-estimators", type=tabular.positive(int), default=3000,
                        help="the most trees; early stopping usually picks fewer (default 3000)")  # fmt: skip
    parser.add_argument("--learning-rate", type=tabular.positive(float), default=0.05)
    parser.add_argument("--num-leaves", type=tabular.positive(int), default=31)
    parser.add_argument("--min-child-samples", type=tabular.positive(int), default=20, help="the fewest rows in a leaf")
    parser.add_argument("--early-stopping-rounds", type=int, default=100,
                        help="stop adding trees when the validation rows' metric has not improved for this many "
                             "(0: train all --n-estimators); the model is then refitted on every training row")  # fmt: skip
    parser.add_argument("--validation-fraction", type=float, default=0.1,
                        help="share of the training rows held out for early stopping (default 0.1)")  # fmt: skip
    parser.add_argument("--objective", choices=OBJECTIVES, default="auto",
                        help="regression loss (auto: huber); classification always uses log loss")  # fmt: skip
    args = parser.parse_args(argv)
    if not 0 < args.validation_fraction < 0.5:
        parser.error(f"--validation-fraction must be between 0 and 0.5, not {args.validation_fraction}")
    if args.early_stopping_rounds < 0:
        parser.error(f"--early-stopping-rounds must be 0 (off) or positive, not {args.early_stopping_rounds}")
    return args


def objective(args: argparse.Namespace, fitted_target: np.ndarray | None) -> dict:
    """LightGBM's objective parameters for the task; Huber's threshold scales with the fitted target."""
    if args.task == "classification":
        return {}
    chosen = "huber" if args.objective == "auto" else args.objective
    if chosen != "huber":
        return {"objective": chosen}
    spread = float(np.std(fitted_target)) if fitted_target is not None and len(fitted_target) else 1.0
    return {"objective": "huber", "alpha": HUBER_ALPHA_STDS * (spread or 1.0)}


def build_model(args: argparse.Namespace, log_target: bool, y_train=None) -> Pipeline:
    """The Pipeline: tabular.preprocessor(scale=False), then LightGBM (inside a TransformedTargetRegressor
    that fits log1p(target) when `log_target`)."""
    fitted_target = None
    if args.task == "regression" and y_train is not None:
        fitted_target = np.asarray(y_train, dtype=float)
        fitted_target = np.log1p(fitted_target) if log_target else fitted_target
    params = dict(
        n_estimators=args.n_estimators,
        learning_rate=args.learning_rate,
        num_leaves=args.num_leaves,
        min_child_samples=args.min_child_samples,
        subsample=0.8,
        subsample_freq=1,
        colsample_bytree=0.7,
        reg_lambda=1.0,
        random_state=tabular.SEED,
        # every physical core, unless OMP_NUM_THREADS says otherwise: set it to 1 where other processes
        # keep the cores busy (OpenMP threads spinning for a busy core make training several times slower)
        n_jobs=int(os.environ.get("OMP_NUM_THREADS") or 0) or None,
        verbose=-1,
        **objective(args, fitted_target),
    )
    if args.task == "classification":
        model = LGBMClassifier(**params)
    elif log_target:
        # house prices and most amounts are skewed: fit the log, predict back in the original units
        model = TransformedTargetRegressor(LGBMRegressor(**params), func=np.log1p, inverse_func=np.expm1)
    else:
        model = LGBMRegressor(**params)
    return Pipeline([("features", tabular.preprocessor(scale=False)), ("model", model)])


def lightgbm_of(pipeline: Pipeline):
    """The LightGBM estimator inside the pipeline's model step (unwrapping a TransformedTargetRegressor)."""
    model = pipeline.named_steps["model"]
    return getattr(model, "regressor", model)


def early_stopped_trees(pipeline: Pipeline, args: argparse.Namespace, x_train, y_train) -> int:
    """How many trees to fit: a copy of the pipeline trains on the training rows less a validation share
    (stratified for classification) until the validation metric stops improving; the count is scaled up
    for the full training rows. The metric: AUC for two classes, log loss for more, L1 of the fitted
    (log) target for regression. The test rows are never seen here."""
    from lightgbm import early_stopping
    from sklearn.base import clone
    from sklearn.model_selection import train_test_split

    stratify = y_train if args.task == "classification" and y_train.value_counts().min() >= 2 else None
    x_fit, x_valid, y_fit, y_valid = train_test_split(
        x_train, y_train, test_size=args.validation_fraction, random_state=tabular.SEED, stratify=stratify
    )
    if len(y_valid) < MIN_VALIDATION_ROWS or (args.task == "classification" and y_valid.nunique() < y_train.nunique()):
        print(f"too few training rows for early stopping ({len(y_valid)} validation rows): {args.n_estimators} trees")
        return args.n_estimators
    features = clone(pipeline.named_steps["features"])
    fit_matrix, valid_matrix = features.fit_transform(x_fit, y_fit), features.transform(x_valid)
    model = clone(lightgbm_of(pipeline))
    if args.task == "classification":
        metric = "auc" if y_train.nunique() == 2 else "multi_logloss"
        # class indices: LightGBM 4.7 encodes string labels given to fit, not those given as eval_y
        classes = np.unique(np.asarray(y_train))
        y_fit, y_valid = np.searchsorted(classes, np.asarray(y_fit)), np.searchsorted(classes, np.asarray(y_valid))
    else:
        metric = "l1"
        transform = pipeline.named_steps["model"]
        if isinstance(transform, TransformedTargetRegressor):
            y_fit, y_valid = transform.func(np.asarray(y_fit, dtype=float)), transform.func(np.asarray(y_valid, dtype=float))
    model.set_params(metric=metric)
    model.fit(
        fit_matrix,
        y_fit,
        eval_X=(valid_matrix,),
        eval_y=(y_valid,),
        callbacks=[early_stopping(args.early_stopping_rounds, first_metric_only=True, verbose=False)],
    )
    best = model.best_iteration_ or args.n_estimators
    return min(args.n_estimators, max(1, round(best / (1 - args.validation_fraction))))


def fit(pipeline: Pipeline, args: argparse.Namespace, x_train, y_train) -> int:
    """Fit the pipeline on every training row, with the number of trees early stopping picks (unless
    --early-stopping-rounds 0); returns the number of trees."""
    trees = args.n_estimators
    if args.early_stopping_rounds > 0:
        trees = early_stopped_trees(pipeline, args, x_train, y_train)
        lightgbm_of(pipeline).set_params(n_estimators=trees)
    pipeline.fit(x_train, y_train)
    return trees


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
    pipeline = build_model(args, log_target, y_train)

    with mlflow.start_run():
        mlflow.log_params(
            {
                "task": args.task,
                "target": args.target,
                "model": "lightgbm",
                "n_estimators": args.n_estimators,
                "learning_rate": args.learning_rate,
                "num_leaves": args.num_leaves,
                "min_child_samples": args.min_child_samples,
                "early_stopping_rounds": args.early_stopping_rounds,
                "validation_fraction": args.validation_fraction,
                "objective": lightgbm_of(pipeline).get_params()["objective"] or "log loss",
                "log_target": log_target,
                "train_rows": len(x_train),
                "test_rows": len(x_test),
            }
        )
        started = time.perf_counter()
        trees = fit(pipeline, args, x_train, y_train)
        mlflow.log_metrics({"training_seconds": time.perf_counter() - started, "trees": trees})
        metrics, predictions = evaluate(pipeline, args.task, x_test, y_test)
        mlflow.log_metrics(metrics)

        tabular.write_results(args.output, metrics)
        plot(pipeline, args.task, y_test, predictions, args.output / "plots")
        tabular.save_model(
            pipeline, args.output, args.task, x_train.head(5), [tabular.__file__], TRUSTED_TYPES,
            tabular.pinned("mlflow", "lightgbm", "scikit-learn", "pandas", "numpy", "skops"), target=args.target,
        )  # fmt: skip
    print(" ".join(f"{name}={value:.6g}" for name, value in metrics.items()))
    return metrics


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as error:  # bad data or arguments: the message says which
        sys.exit(f"train.py: error: {error}")
