"""Held-out quality of the housing models: the command job's LightGBM and the best MLP of a small sweep.

    .venv/bin/python benchmarks/quality.py [--data ../shared/data/housing.csv] [--trials 4]

Runs the jobs' own scripts (jobs/src/train.py, train_mlp.py) with the arguments of their specs
(jobs/specs/housing-lightgbm.yml; MLP trials sampled from housing-mlp-sweep.yml's search space) on the
shared seeded 80/20 split, and prints test MAE and training time of each, against the goals.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "jobs" / "src")]

from jobs.flow import SPECS_DIR  # noqa: E402
from jobs.local import sample  # noqa: E402  (the local target's sweep sampler)

GOALS = {"lightgbm": 27_500, "mlp": 33_000}  # test MAE, from issue 3
BASELINES = {"lightgbm": 32_376, "mlp": 193_929}  # the seeds' AutoML LightGBM and Keras MLP


def spec(name: str) -> dict:
    return yaml.safe_load((SPECS_DIR / name).read_text())


def run(script, argv: list[str], client) -> dict:
    started = time.perf_counter()
    metrics = script.main(argv)
    wall = time.perf_counter() - started
    latest = client.search_runs([os.environ["MLFLOW_EXPERIMENT_ID"]], order_by=["attributes.start_time DESC"])[0]
    return {**metrics, "training_seconds": latest.data.metrics["training_seconds"], "wall_seconds": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "housing.csv")
    parser.add_argument("--trials", type=int, default=4, help="MLP trials sampled from the sweep's search space")
    parser.add_argument("--seed", type=int, default=0, help="seed of the trial sampling")
    args = parser.parse_args()
    if not args.data.is_file():
        sys.exit(f"housing data not found: {args.data} (see the README for where to get housing.csv)")

    with tempfile.TemporaryDirectory() as scratch:
        import mlflow

        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # a throwaway store; SQLite would only add migrations
        mlflow.set_tracking_uri(Path(scratch, "mlruns").as_uri())
        client = mlflow.MlflowClient()
        os.environ["MLFLOW_EXPERIMENT_ID"] = client.create_experiment("quality")
        import train
        import train_mlp

        lightgbm = spec("housing-lightgbm.yml")["inputs"]
        results = {
            "lightgbm": run(train, [
                "--data", str(args.data), "--target", lightgbm["target"], "--task", lightgbm["task"],
                "--output", f"{scratch}/lightgbm", "--n-estimators", str(lightgbm["n_estimators"]),
                "--learning-rate", str(lightgbm["learning_rate"]), "--num-leaves", str(lightgbm["num_leaves"]),
            ], client)  # fmt: skip
        }
        sweep = spec("housing-mlp-sweep.yml")
        rng = random.Random(args.seed)
        trials = []
        for number in range(args.trials):
            params = sample(sweep["search_space"], rng, {})
            argv = ["--data", str(args.data), "--target", sweep["inputs"]["target"]]
            argv += ["--output", f"{scratch}/mlp{number}"]
            argv += [item for name, value in params.items() for item in (f"--{name.replace('_', '-')}", str(value))]
            trials.append((params, run(train_mlp, argv, client)))
        for params, result in trials:
            shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
            print(f"mlp trial: {shown}: MAE={result['MAE']:,.0f} ({result['training_seconds']:.1f}s training)")
        results["mlp"] = min((result for _, result in trials), key=lambda r: r["MAE"])

    print(f"\nhousing, seeded 80/20 split, {args.data}")
    header = ("test MAE", 10), ("goal", 10), ("baseline", 10), ("RMSE", 10), ("R2", 7), ("train s", 9), ("script s", 10)
    print(f"{'model':<30}" + "".join(f"{name:>{width}}" for name, width in header))
    for key, label in (("lightgbm", "LightGBM command job"), ("mlp", f"best MLP of {args.trials} sweep trials")):
        r = results[key]
        verdict = "met" if r["MAE"] <= GOALS[key] else f"MISSED by {r['MAE'] - GOALS[key]:,.0f}"
        print(
            f"{label:<30}{r['MAE']:>10,.0f}{GOALS[key]:>10,}{BASELINES[key]:>10,}{r['RMSE']:>10,.0f}{r['R2']:>7.3f}"
            f"{r['training_seconds']:>9.1f}{r['wall_seconds']:>10.1f}  goal {verdict}"
        )


if __name__ == "__main__":
    main()
