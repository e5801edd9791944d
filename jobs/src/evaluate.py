"""Step 3 of a retraining pipeline: every candidate, and the model version registered now, scored on the
same held-out rows of today's data (tabular.split: the split train.py holds out), with the same metrics.

    python evaluate.py --data CSV --target COLUMN --task TASK --metric METRIC --goal minimize|maximize \
        --model-name NAME --candidate DIR [--candidate DIR ...] --best DIR --verdict DIR

Writes the best candidate's MLflow model to --best and --verdict/verdict.json: each model's metric, the best
candidate, and `better`: whether it beats the registered version (true when none is registered). The
registry is MLflow's (the workspace's in Azure ML; MLFLOW_TRACKING_URI locally).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import tabular

tabular.import_skops_without_torch()  # the models are skops files: imported before MLflow, as it says

import mlflow.pyfunc  # noqa: E402
import mlflow.sklearn  # noqa: E402
import numpy as np  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, type=Path, help="CSV file (any delimiter)")
    parser.add_argument("--target", required=True)
    parser.add_argument("--task", required=True, choices=tabular.TASKS)
    parser.add_argument("--metric", required=True, help="the held-out metric that compares the models")
    parser.add_argument("--goal", required=True, choices=("minimize", "maximize"))
    parser.add_argument("--model-name", required=True, help="the registered model to beat")
    parser.add_argument("--candidate", action="append", required=True, type=Path,
                        help="a training step's output folder (holding an MLflow model)")  # fmt: skip
    parser.add_argument("--best", required=True, type=Path, help="folder for the best candidate's MLflow model")
    parser.add_argument("--verdict", required=True, type=Path, help="folder for verdict.json")
    # a promotion compares against the target's live version, downloaded, instead of the registry's newest
    parser.add_argument("--registered-model", type=Path, help="the model to beat as a folder, not from the registry")
    parser.add_argument("--registered-version", help="its version (with --registered-model)")
    parser.add_argument("--registered-metric", type=float, help="its metric at registration, if it cannot be loaded here")
    return parser.parse_args(argv)


def model_folder(folder: Path) -> Path:
    """The MLflow model in a step's output: the shallowest folder holding an MLmodel file."""
    found = sorted(folder.rglob("MLmodel"), key=lambda path: len(path.parts))
    if not found:
        raise FileNotFoundError(f"no MLflow model (MLmodel file) under {folder}")
    return found[0].parent


def held_out_metrics(model_uri: str, task: str, x_test, y_test) -> dict[str, float]:
    """The model's metrics on the held-out rows, as the training scripts compute them."""
    if task == "classification":
        model = mlflow.sklearn.load_model(model_uri)  # the classifiers here are scikit-learn pipelines
        return tabular.classification_metrics(y_test, model.predict_proba(x_test), list(model.classes_))
    predictions = np.asarray(mlflow.pyfunc.load_model(model_uri).predict(x_test)).ravel()
    return tabular.regression_metrics(y_test, predictions)


def registered_version(name: str):
    """The newest version of the registered model, or None when none is registered yet."""
    versions = mlflow.MlflowClient().search_model_versions(f"name='{name}'")
    return max(versions, key=lambda version: int(version.version), default=None)


def registered_metric(name: str, version: str, uri: str, recorded, task: str, metric: str, x_test, y_test) -> dict:
    """The registered version's metric on the held-out rows. A version this environment cannot load (an Azure
    AutoML model needs the AutoML runtime: jobs/azure/assets.py) counts with the held-out metric it was
    registered with (`recorded`, its `metric` tag), and the verdict says so."""
    try:
        value = held_out_metrics(uri, task, x_test, y_test)[metric]
        return {"version": version, metric: value}
    except ImportError as error:  # its pickle names a package this environment lacks
        if recorded is None:
            raise ValueError(
                f"registered {name}:{version} cannot be loaded here ({error}) and has no {metric} tag to compare with"
            ) from None
        why = f"this environment cannot load it ({error}), so its {metric} from registration, on that day's held-out rows"
        return {"version": version, metric: float(recorded), "measured": why}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    _, x_test, _, y_test = tabular.split(tabular.read_table(args.data), args.target, args.task)
    better_of = min if args.goal == "minimize" else max
    with mlflow.start_run():
        candidates = []
        for number, folder in enumerate(args.candidate, start=1):
            model = model_folder(folder)
            value = held_out_metrics(str(model), args.task, x_test, y_test)[args.metric]
            candidates.append({"candidate": number, "model": str(model), args.metric: value})
            mlflow.log_metric(f"candidate_{number}_{args.metric}", value)
            print(f"candidate {number} ({folder}): {args.metric}={value:.6g}")
        best = better_of(candidates, key=lambda candidate: candidate[args.metric])
        if args.registered_model:
            current = (str(args.registered_version), str(model_folder(args.registered_model)), args.registered_metric)
        elif (newest := registered_version(args.model_name)) is not None:
            version = str(newest.version)
            current = (version, f"models:/{args.model_name}/{version}", (newest.tags or {}).get(args.metric))
        else:
            current = None
        registered = None
        if current is not None:
            registered = registered_metric(args.model_name, *current, args.task, args.metric, x_test, y_test)
            value = registered[args.metric]
            mlflow.log_metric(f"registered_{args.metric}", value)
            measured = f" ({registered['measured']})" if "measured" in registered else ""
            print(f"registered {args.model_name}:{current[0]}: {args.metric}={value:.6g}{measured}")
        # strictly better: an equal model is no reason for a new version
        new, old = best[args.metric], registered and registered[args.metric]
        better = registered is None or (new < old if args.goal == "minimize" else new > old)
        verdict = {
            "metric": args.metric, "goal": args.goal, "held_out_rows": len(x_test), "candidates": candidates,
            "best": best, "registered": registered, "better": better,
        }  # fmt: skip
        mlflow.log_metric(f"best_{args.metric}", best[args.metric])
        mlflow.set_tag("better_than_registered", str(better).lower())
    shutil.rmtree(args.best, ignore_errors=True)
    shutil.copytree(best["model"], args.best)
    args.verdict.mkdir(parents=True, exist_ok=True)
    (args.verdict / "verdict.json").write_text(json.dumps(verdict, indent=2) + "\n")
    against = f"registered version {registered['version']}" if registered else f"no registered {args.model_name}"
    print(f"best: candidate {best['candidate']} ({args.metric}={best[args.metric]:.6g}); against {against}: "
          f"{'better' if better else 'not better'}")  # fmt: skip
    return verdict


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, ValueError) as error:
        sys.exit(f"evaluate.py: error: {error}")
