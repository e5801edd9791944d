"""Held-out quality of every candidate of both workloads, on the seeded 80/20 split (tabular.split).

    .venv/bin/python benchmarks/quality.py [--data ../shared/data/housing.csv]
        [--bank-data ../shared/data/bank-marketing.csv] [--trials 4] [--automl-minutes 3]
        [--workloads housing,bank-marketing]

Runs the jobs' own scripts with the arguments of their specs (workloads/<name>/*.yml):
- housing (MAE, lower is better): train.py with lightgbm.yml's inputs; the best of --trials MLP trials
  sampled from mlp-sweep.yml's search space with the local target's sampler; local AutoML (automl.py,
  FLAML) for automl-regression.yml. Goal: the best model's MAE at most 24,000.
- bank marketing (AUC_weighted, higher is better): train.py with lightgbm.yml's inputs (goal at least
  0.952) and local AutoML for automl-classification.yml (goal at least 0.953).

Local AutoML runs as the local target runs it (jobs/local/automl.py maps the spec to automl.py's command
line), its time budget capped at --automl-minutes (0 leaves it out). Prints each candidate's held-out
metric, training seconds (as the script logs them) and script seconds (wall clock, start to end).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# as train.py sets it, before anything loads the OpenMP runtime (train.py runs in this process)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "jobs" / "src"
sys.path[:0] = [str(ROOT), str(SRC)]
from jobs.local.automl import command_for  # noqa: E402
from jobs.local.specs import sample  # noqa: E402  (the local target's sweep sampler)
from jobs.workloads import WORKLOADS_DIR, load_workloads  # noqa: E402

DATA_DIR = ROOT.parent / "shared" / "data"

WORKLOADS = ("housing", "bank-marketing")
# the goals on the held-out rows: (metric, which candidate, bound); "best" is the best candidate
GOALS = {
    "housing": ("MAE", "best", 24_000),
    "bank-marketing": ("AUC_weighted", {"lightgbm": 0.952, "automl": 0.953}, None),
}
LOWER_IS_BETTER = {"MAE": True, "AUC_weighted": False}


def spec_file(workload: str, name: str) -> Path:
    return WORKLOADS_DIR / workload / name


def spec(workload: str, name: str) -> dict:
    return yaml.safe_load(spec_file(workload, name).read_text())


def script_argv(inputs: dict) -> list[str]:
    """A command job's inputs (less `data`) as the script's options: n_estimators: 1000 -> --n-estimators 1000."""
    return [item for key, value in inputs.items() if key != "data" for item in (f"--{key.replace('_', '-')}", str(value))]


class Runs:
    """A throwaway MLflow store; each candidate logs into an experiment of its own."""

    def __init__(self, folder: str):
        import mlflow

        os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # a throwaway store; SQLite would only add migrations
        os.environ["MLFLOW_TRACKING_URI"] = Path(folder, "mlruns").as_uri()
        mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])
        self.client = mlflow.MlflowClient()

    def experiment(self, name: str) -> str:
        os.environ["MLFLOW_EXPERIMENT_ID"] = self.client.create_experiment(name)
        return os.environ["MLFLOW_EXPERIMENT_ID"]

    def training_seconds(self, experiment: str) -> float | None:
        for run in self.client.search_runs([experiment], order_by=["attributes.start_time DESC"]):
            if "mlflow.parentRunId" not in run.data.tags and "training_seconds" in run.data.metrics:
                return run.data.metrics["training_seconds"]
        return None


def in_process(script, argv: list[str], runs: Runs, name: str) -> dict:
    experiment = runs.experiment(name)
    started = time.perf_counter()
    metrics = script.main(argv)
    wall = time.perf_counter() - started
    return {**metrics, "training_seconds": runs.training_seconds(experiment), "wall_seconds": wall}


def automl_command(workload: str, data: Path, output: Path, minutes: float) -> list[str]:
    """automl.py's command line for the workload's AutoML spec, as the local target builds it."""
    (declared,) = load_workloads([workload])
    # the workload's AutoML candidate: its spec of `type: automl`
    path = next(job.spec for job in declared.jobs if yaml.safe_load(job.spec.read_text())["type"] == "automl")
    command, _notes = command_for(yaml.safe_load(path.read_text()), path, data, output, minutes)
    return [sys.executable if part == "python" else part for part in command]


def automl(workload: str, data: Path, scratch: str, runs: Runs, minutes: float) -> dict | str:
    """Local AutoML on the workload, or why it did not run."""
    output = Path(scratch, f"{workload}-automl")
    command = automl_command(workload, data, output, minutes)
    experiment = runs.experiment(f"{workload}-automl")
    started = time.perf_counter()
    done = subprocess.run(command, cwd=SRC, env=os.environ.copy(), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0 or not (output / "metrics.json").is_file():
        return f"FAILED (exit {done.returncode}): {(done.stderr or done.stdout).strip()[-500:]}"
    metrics = json.loads((output / "metrics.json").read_text())
    return {**metrics, "training_seconds": runs.training_seconds(experiment), "wall_seconds": wall}


def mlp_sweep(workload: str, data: Path, scratch: str, runs: Runs, trials: int, seed: int) -> dict:
    import train_mlp

    sweep = spec(workload, "mlp-sweep.yml")
    rng = random.Random(seed)
    results = []
    for number in range(trials):
        params = sample(sweep["search_space"], rng, {})
        argv = ["--data", str(data), "--target", sweep["inputs"]["target"], "--output", f"{scratch}/mlp{number}"]
        argv += [item for name, value in params.items() for item in (f"--{name.replace('_', '-')}", str(value))]
        result = in_process(train_mlp, argv, runs, f"{workload}-mlp-{number}")
        shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in params.items())
        print(f"mlp trial: {shown}: MAE={result['MAE']:,.0f} ({result['training_seconds']:.1f}s training)", flush=True)
        results.append(result)
    return min(results, key=lambda r: r["MAE"])


def evaluate(workload: str, data: Path, args, scratch: str, runs: Runs) -> dict[str, tuple[str, dict | str]]:
    """Each candidate of the workload: key -> (label, metrics or why there are none)."""
    import train

    lightgbm = spec(workload, "lightgbm.yml")["inputs"]
    candidates = {
        "lightgbm": (
            "LightGBM (train.py, lightgbm.yml)",
            in_process(train, ["--data", str(data), *script_argv(lightgbm), "--output", f"{scratch}/{workload}-lightgbm"],
                       runs, f"{workload}-lightgbm"),
        )
    }  # fmt: skip
    print(f"{workload}: train.py done", flush=True)
    if workload == "housing" and args.trials > 0:
        label = f"best MLP of {args.trials} sweep trials"
        candidates["mlp"] = (label, mlp_sweep(workload, data, scratch, runs, args.trials, args.seed))
    if args.automl_minutes > 0:
        label = f"local AutoML (FLAML, {args.automl_minutes:g} min)"
        candidates["automl"] = (label, automl(workload, data, scratch, runs, args.automl_minutes))
        print(f"{workload}: AutoML done", flush=True)
    else:
        candidates["automl"] = ("local AutoML", "skipped: --automl-minutes 0")
    return candidates


def verdict(metric: str, value: float, goal: float) -> str:
    lower = LOWER_IS_BETTER[metric]
    if (value <= goal) if lower else (value >= goal):
        return "goal met"
    return f"goal MISSED by {abs(value - goal):,.4g}"


def report(workload: str, data: Path, candidates: dict[str, tuple[str, dict | str]]) -> None:
    metric, which, bound = GOALS[workload]
    lower = LOWER_IS_BETTER[metric]
    shown = (lambda v: f"{v:,.0f}") if metric == "MAE" else (lambda v: f"{v:.4f}")
    relation = "<=" if lower else ">="
    print(f"\n{workload}, seeded 80/20 split of {data}: held-out {metric} ({'lower' if lower else 'higher'} is better)")
    print(f"{'model':<36}{metric:>14}{'goal':>12}{'train s':>9}{'script s':>10}")
    for key, (label, result) in candidates.items():
        if isinstance(result, str):
            print(f"{label:<36}  {result}")
            continue
        goal = which.get(key) if isinstance(which, dict) else None
        training = result.get("training_seconds")
        print(
            f"{label:<36}{shown(result[metric]):>14}"
            f"{f'{relation} {shown(goal)}' if goal else '':>12}"
            f"{f'{training:.1f}' if training is not None else '?':>9}{result['wall_seconds']:>10.1f}"
            + (f"  {verdict(metric, result[metric], goal)}" if goal else "")
        )
    if which == "best":
        scored = {key: r for key, (_, r) in candidates.items() if not isinstance(r, str)}
        best = (min if lower else max)(scored, key=lambda key: scored[key][metric])
        value = scored[best][metric]
        print(f"best: {candidates[best][0]}, {metric} {shown(value)} vs goal {relation} {shown(bound)}: "
              f"{verdict(metric, value, bound)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", "--housing-data", dest="data", type=Path, default=DATA_DIR / "housing.csv",
                        help="housing.csv (default: ../shared/data/ beside the checkout)")  # fmt: skip
    parser.add_argument("--bank-data", type=Path, default=DATA_DIR / "bank-marketing.csv",
                        help="bank-marketing.csv, UCI's bank-full.csv (default: ../shared/data/ beside the checkout)")  # fmt: skip
    parser.add_argument("--trials", type=int, default=4, help="MLP trials sampled from the sweep's search space")
    parser.add_argument("--seed", type=int, default=0, help="seed of the trial sampling")
    parser.add_argument("--automl-minutes", type=float, default=3.0,
                        help="local AutoML's time budget per workload, in minutes (0: leave AutoML out)")  # fmt: skip
    parser.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated, from: " + ", ".join(WORKLOADS))
    args = parser.parse_args()
    chosen = [name.strip() for name in args.workloads.split(",") if name.strip()]
    unknown = sorted(set(chosen) - set(WORKLOADS))
    if unknown:
        parser.error(f"unknown workload(s) {', '.join(unknown)}; choose from {', '.join(WORKLOADS)}")
    files = {"housing": args.data, "bank-marketing": args.bank_data}
    for name in chosen:
        if not files[name].is_file():
            sys.exit(f"{name} data not found: {files[name]} (README.md, Quick start, says where to get it)")

    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        runs = Runs(scratch)
        for name in chosen:
            results[name] = evaluate(name, files[name], args, scratch, runs)
    for name in chosen:
        report(name, files[name], results[name])


if __name__ == "__main__":
    main()
