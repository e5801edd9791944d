"""Step 4 of a retraining pipeline: register the best candidate as the workload's model, only when the
evaluation found it better than the version registered now.

    python register.py --model DIR --verdict DIR --model-name NAME --output DIR

The model is logged to this step's MLflow run and registered from there (`runs:/<run>/model`), the way Azure
ML's MLflow registry takes a model (learn.microsoft.com/azure/machine-learning/how-to-manage-models-mlflow).
Writes --output/registration.json: the version registered, or why none was.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import mlflow

ARTIFACT_PATH = "model"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", required=True, type=Path, help="the best candidate's MLflow model folder")
    parser.add_argument("--verdict", required=True, type=Path, help="the evaluation's folder (verdict.json)")
    parser.add_argument("--model-name", required=True)
    parser.add_argument("--output", required=True, type=Path, help="folder for registration.json")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    verdict = json.loads((args.verdict / "verdict.json").read_text())
    if not (args.model / "MLmodel").is_file():
        raise FileNotFoundError(f"no MLflow model (MLmodel file) in {args.model}")
    metric, value = verdict["metric"], verdict["best"][verdict["metric"]]
    if verdict["better"]:
        with mlflow.start_run() as run:
            mlflow.log_artifacts(str(args.model), ARTIFACT_PATH)
            tags = {"metric": metric, metric: repr(value), "source_run": run.info.run_id, "source_job": "retrain pipeline"}
            version = mlflow.register_model(f"runs:/{run.info.run_id}/{ARTIFACT_PATH}", args.model_name, tags=tags)
        registration = {"registered": True, "name": args.model_name, "version": str(version.version), metric: value}
        print(f"registered {args.model_name}:{version.version} ({metric}={value:.6g})")
    else:
        current = verdict["registered"]
        reason = f"{metric}={value:.6g} does not beat version {current['version']} ({metric}={current[metric]:.6g})"
        registration = {"registered": False, "name": args.model_name, "reason": reason}
        print(f"not registered: {reason}")
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "registration.json").write_text(json.dumps(registration, indent=2) + "\n")
    return registration


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, KeyError, ValueError) as error:
        sys.exit(f"register.py: error: {error}")
