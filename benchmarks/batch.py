"""Batch scoring speed: 1,000,000 bank marketing rows in 100 CSV files, three ways, in one run.

    .venv/bin/python benchmarks/batch.py [--rows 1000000] [--files 100] [--data ../shared/data/bank-marketing.csv]

1. local batch: jobs/local/batch.py's run_batch, the whole of it as `python -m jobs batch --local` runs it
   after finding the model: the worker processes' start, imports and model load, every file read and
   checked, scored by jobs/src/batch_score.py, and predictions.csv and errors.csv written, with the settings
   of jobs/specs/endpoints/batch-deployment.yml.
2. naive: a process of its own (NAIVE_SCRIPT), for each file in turn: load the model with `mlflow.pyfunc.load_model`, read the CSV
   with `pandas.read_csv` (integer columns cast to float, as the model's signature demands), `predict`
   (pyfunc's: the labels only), and append the file's rows with their predictions to one CSV
   (`to_csv(mode="a")`). What a first batch script does.
3. floor: the model loaded once (not timed), every file read and concatenated into one DataFrame (not timed),
   then the pipeline's own `predict_proba` on all the rows at once: the model's cost alone, on every core
   (LightGBM's threads), with no reading, checking or writing.

The model: train.py with the bank marketing LightGBM spec's settings (workloads/bank-marketing/lightgbm.yml),
trained in a temporary folder on --data (UCI's bank-full.csv, `;`-separated, target `y`) or, when that file is
missing, on tests/bank_sample.py's generated rows; the input files resample its rows (less the target).
Goals: local batch at least 3x the naive script's rows/s, and within 2x of the floor's time. Printed, never
asserted.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# as train.py sets it, before anything loads the OpenMP runtime (train.py runs in this process)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "jobs" / "src"
sys.path[:0] = [str(ROOT), str(SRC)]
from jobs.local.batch import BatchSettings, run_batch  # noqa: E402
from jobs.workloads import WORKLOADS_DIR  # noqa: E402

DATA = ROOT.parent / "shared" / "data" / "bank-marketing.csv"
TARGET = "y"
MODEL_NAME = "bank-marketing-classifier"


def train(data: Path, work: Path) -> Path:
    """AZUREML_MODEL_DIR as Azure lays it out (<root>/<name>/<version>/model), from train.py with the spec's inputs."""
    import mlflow

    import train as train_script

    inputs = yaml.safe_load((WORKLOADS_DIR / "bank-marketing" / "lightgbm.yml").read_text())["inputs"]
    options = [f"--{name.replace('_', '-')}={value}" for name, value in inputs.items() if not isinstance(value, dict)]
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    mlflow.set_tracking_uri((work / "mlruns").as_uri())
    train_script.main(["--data", str(data), "--output", str(work / "root" / MODEL_NAME / "1"), *options])
    return work / "root"


def source_rows(data: Path, work: Path) -> Path:
    if data.is_file():
        return data
    from tests.bank_sample import bank_frame

    print(f"{data} not found: generated rows (tests/bank_sample.py) instead")
    path = work / "bank-sample.csv"
    bank_frame(20_000).to_csv(path, sep=";", index=False)
    return path


def write_inputs(data: Path, folder: Path, rows: int, files: int) -> int:
    frame = pd.read_csv(data, sep=None, engine="python").drop(columns=TARGET)
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    per_file = [len(part) for part in np.array_split(np.arange(rows), files)]
    for number, size in enumerate(per_file):
        frame.iloc[rng.integers(0, len(frame), size)].to_csv(folder / f"part-{number:03d}.csv", index=False)
    return sum(per_file)


def local_batch(model_root: Path, inputs: Path, output: Path) -> float:
    started = time.perf_counter()
    summary = run_batch(BatchSettings.from_spec(), model_root, inputs, output, report=lambda line: None)
    elapsed = time.perf_counter() - started
    print(f"  local batch: {summary.line()}")
    return elapsed


# the naive batch script, run as a process of its own (as the local batch's workers are): argv model folder,
# input folder, output file
NAIVE_SCRIPT = """
import sys
from pathlib import Path

import mlflow
import pandas as pd

model_folder, inputs, output = sys.argv[1:4]
for index, path in enumerate(sorted(Path(inputs).iterdir())):
    model = mlflow.pyfunc.load_model(model_folder)
    frame = pd.read_csv(path)
    frame = frame.astype(dict.fromkeys(frame.select_dtypes("integer").columns, "float64"))  # the signature's doubles
    frame.assign(file=path.name, prediction=model.predict(frame)).to_csv(output, mode="a", header=index == 0, index=False)
"""


def naive(model_root: Path, inputs: Path, output: Path) -> float:
    model_folder = next(model_root.rglob("MLmodel")).parent
    started = time.perf_counter()
    subprocess.run([sys.executable, "-c", NAIVE_SCRIPT, str(model_folder), str(inputs), str(output)], check=True)
    return time.perf_counter() - started


def floor(model_root: Path, inputs: Path) -> float:
    import mlflow

    pipeline = mlflow.sklearn.load_model(str(next(model_root.rglob("MLmodel")).parent))
    frame = pd.concat([pd.read_csv(path) for path in sorted(inputs.iterdir())], ignore_index=True)
    started = time.perf_counter()
    pipeline.predict_proba(frame)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=100)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(temporary)
        data = source_rows(args.data, work)
        print(f"training the bank marketing model on {data} (train.py, lightgbm.yml's settings)...", flush=True)
        model_root = train(data, work)
        rows = write_inputs(data, work / "inputs", args.rows, args.files)
        print(f"{rows:,} rows in {args.files} files; {os.cpu_count()} cores", flush=True)
        timings = {
            "local batch": local_batch(model_root, work / "inputs", work / "batch"),
            "naive": naive(model_root, work / "inputs", work / "naive.csv"),
            "floor": floor(model_root, work / "inputs"),
        }
    for name, seconds in timings.items():
        print(f"{name:12s} {seconds:8.1f} s  {rows / seconds:12,.0f} rows/s")
    speedup = timings["naive"] / timings["local batch"]
    to_floor = timings["local batch"] / timings["floor"]
    print(f"\nlocal batch / naive rows/s: {speedup:.1f}x (goal >= 3x: {'met' if speedup >= 3 else 'missed'})")
    print(f"local batch time / floor time: {to_floor:.1f}x (goal <= 2x: {'met' if to_floor <= 2 else 'missed'})")


if __name__ == "__main__":
    main()
