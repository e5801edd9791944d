"""Azure ML AutoML settings -> FLAML: the primary metrics and training algorithms automl.py can run, and the
checks that name what it cannot. Standard library only, so the local target checks an AutoML spec with it
(jobs/local/automl.py) without loading FLAML, scikit-learn or pandas into the flow's process; automl.py
imports it, and saves it into each model's `code_paths` with itself.
"""

from __future__ import annotations

# -- Azure ML AutoML -> FLAML ------------------------------------------------------------------------

# Azure ML primary metric (lower-cased) -> FLAML metric. FLAML minimizes a loss: for a score it takes
# 1 - score, for an error the error itself. Where Azure normalizes (by the target's range), FLAML's
# unnormalized metric ranks the trials the same way on the same validation rows.
REGRESSION_METRICS = {
    "normalized_root_mean_squared_error": "rmse",
    "normalized_mean_absolute_error": "mae",
    "r2_score": "r2",
}
# classification: (binary, multiclass); None: FLAML has no such metric for that case.
# AUC_weighted: for two classes the weighted one-vs-rest AUC is the AUC of either class (they are equal),
# so FLAML's roc_auc; for more, FLAML's roc_auc_ovr_weighted. (Its roc_auc_weighted does not set
# multi_class, so scikit-learn raises on three or more classes and FLAML scores every trial inf.)
# average_precision_score_weighted: FLAML's ap is the average precision of the positive class, which
# Azure's class-weighted average only approximates; binary only.
CLASSIFICATION_METRICS = {
    "accuracy": ("accuracy", "accuracy"),
    "auc_weighted": ("roc_auc", "roc_auc_ovr_weighted"),
    "average_precision_score_weighted": ("ap", None),
}
# Azure ML primary metrics that FLAML has no equivalent for
UNSUPPORTED_METRICS = {"spearman_correlation", "norm_macro_recall", "precision_score_weighted"}
# as Azure spells them, for messages
METRIC_NAMES = {
    "normalized_root_mean_squared_error": "normalized_root_mean_squared_error",
    "normalized_mean_absolute_error": "normalized_mean_absolute_error",
    "r2_score": "r2_score",
    "accuracy": "accuracy",
    "auc_weighted": "AUC_weighted",
    "average_precision_score_weighted": "average_precision_score_weighted",
}

# Azure ML training algorithm -> FLAML estimators, per task. XGBoost is two FLAML estimators (leaf-wise
# and depth-limited search spaces over the same library), logistic regression two (L1, L2 penalty).
# GradientBoosting runs as scikit-learn's histogram gradient boosting (FLAML's histgb): the same family,
# the faster implementation. Every estimator here saves as plain scikit-learn / LightGBM / XGBoost.
ALGORITHMS = {
    "regression": {
        "LightGBM": ("lgbm",),
        "XGBoostRegressor": ("xgboost", "xgb_limitdepth"),
        "RandomForest": ("rf",),
        "ExtremeRandomTrees": ("extra_tree",),
        "GradientBoosting": ("histgb",),
        "KNN": ("kneighbor",),
        "SGD": ("sgd",),
        "ElasticNet": ("enet",),
        "LassoLars": ("lassolars",),
    },
    "classification": {
        "LightGBM": ("lgbm",),
        "XGBoostClassifier": ("xgboost", "xgb_limitdepth"),
        "RandomForest": ("rf",),
        "ExtremeRandomTrees": ("extra_tree",),
        "GradientBoosting": ("histgb",),
        "KNN": ("kneighbor",),
        "SGD": ("sgd",),
        "LogisticRegression": ("lrl1", "lrl2"),
    },
}
# Azure ML algorithms with no FLAML estimator that saves as a model this project can serve
UNSUPPORTED_ALGORITHMS = {
    "DecisionTree": "FLAML has no single decision tree",
    "MultinomialNaiveBayes": "FLAML has no naive Bayes outside Spark",
    "BernoulliNaiveBayes": "FLAML has no naive Bayes outside Spark",
    "SVM": "FLAML has no kernel SVM",
    "LinearSVM": "FLAML's svc (LinearSVC) has no predict_proba, which the classifier pipelines must expose",
    "TabnetClassifier": "FLAML has no TabNet",
    "TabnetRegressor": "FLAML has no TabNet",
}
# FLAML's default list for tabular tasks (less Spark and CatBoost, whose models this project does not serve)
DEFAULT_ESTIMATORS = ("lgbm", "rf", "xgboost", "extra_tree", "xgb_limitdepth", "sgd")
# the Python package each estimator needs
PACKAGES = {"lgbm": "lightgbm", "xgboost": "xgboost", "xgb_limitdepth": "xgboost"}
# estimators that need standardized inputs (distances, gradients, penalties on the coefficients)
SCALE_SENSITIVE = {"kneighbor", "sgd", "lrl1", "lrl2", "enet", "lassolars"}


class AutoMLError(ValueError):
    """Bad input: the message names it."""


def _lookup(name: str) -> str:
    return name.strip().lower()


def flaml_metric(primary_metric: str, task: str, n_classes: int = 2) -> str:
    """The FLAML metric for an Azure ML primary metric, or AutoMLError naming it and what is supported."""
    key = _lookup(primary_metric)
    supported = supported_metrics(task)
    if task == "regression" and key in REGRESSION_METRICS:
        return REGRESSION_METRICS[key]
    if task == "classification" and key in CLASSIFICATION_METRICS:
        binary, multiclass = CLASSIFICATION_METRICS[key]
        found = binary if n_classes <= 2 else multiclass
        if found is None:
            raise AutoMLError(
                f"primary metric {primary_metric!r} works locally for two classes only (the target has {n_classes}); "
                f"use one of: {', '.join(m for m in supported if CLASSIFICATION_METRICS[_lookup(m)][1])}"
            )
        return found
    if key in REGRESSION_METRICS or key in CLASSIFICATION_METRICS:
        other = "classification" if task == "regression" else "regression"
        raise AutoMLError(
            f"primary metric {primary_metric!r} is a {other} metric; for {task} use one of: {', '.join(supported)}"
        )
    why = "FLAML has no equivalent" if key in UNSUPPORTED_METRICS else "unknown metric"
    raise AutoMLError(f"primary metric {primary_metric!r} cannot run locally ({why}); for {task} use one of: {', '.join(supported)}")


def supported_metrics(task: str) -> list[str]:
    table = REGRESSION_METRICS if task == "regression" else CLASSIFICATION_METRICS
    return [METRIC_NAMES[key] for key in table]


def estimator_list(task: str, allowed: list[str] | None = None, blocked: list[str] | None = None) -> list[str]:
    """FLAML estimators from Azure ML algorithm names: the allowed ones (else FLAML's default list), less the
    blocked ones, less those whose package is not installed. AutoMLError for a name FLAML cannot run."""
    names = ALGORITHMS[task]
    by_key = {_lookup(name): name for name in names}

    def resolve(algorithms: list[str], option: str) -> list[str]:
        found = []
        for algorithm in algorithms:
            name = by_key.get(_lookup(algorithm))
            if name is None:
                unsupported = {_lookup(n): why for n, why in UNSUPPORTED_ALGORITHMS.items()}
                other = next((n for n in ALGORITHMS[_other(task)] if _lookup(n) == _lookup(algorithm)), None)
                why = (
                    unsupported.get(_lookup(algorithm))
                    or (other and f"it is a {_other(task)} algorithm")
                    or "not an Azure ML AutoML algorithm"
                )
                raise AutoMLError(
                    f"{option}: algorithm {algorithm!r} cannot run locally ({why}); for {task} the supported ones "
                    f"are: {', '.join(names)}"
                )
            found += [e for e in names[name] if e not in found]
        return found

    chosen = resolve(allowed, "allowed algorithms") if allowed else list(DEFAULT_ESTIMATORS)
    excluded = set(resolve(blocked, "blocked algorithms")) if blocked else set()
    chosen = [e for e in chosen if e not in excluded and _installed(PACKAGES.get(e, "sklearn"))]
    if not chosen:
        raise AutoMLError(f"no algorithm left to try: allowed {allowed or 'all'}, blocked {blocked or 'none'}")
    return chosen


def _other(task: str) -> str:
    return "classification" if task == "regression" else "regression"


def _installed(package: str) -> bool:
    from importlib.util import find_spec

    return find_spec(package) is not None
