"""Model monitor speed: N collected bank marketing rows (default 1,000,000) through jobs/src/monitor.py, end to end.

    .venv/bin/python benchmarks/monitor.py [--rows 1000000] [--data ../shared/data/bank-marketing.csv]

Writes a data collector folder in Azure's layout and format into a temporary folder:
<deployment>/model_inputs/yyyy/MM/dd/HH/<instance>.jsonl and model_outputs/ beside it, one JSON object per line
with ~100 rows in its `data` list, spread over a few hour folders and two instances. The inputs are the 16
feature columns of --data (UCI's bank-full.csv, `;`-separated, target `y`), rows sampled with replacement, or,
when that file is missing, tests/bank_sample.py's generated rows; the outputs a `y` label and a `probability`.
Then times `python jobs/src/monitor.py ... --training-rows` (all three signals) as a subprocess and prints the
rows, files, objects, wall seconds, peak RSS of the child, its exit code and whether the goal (1,000,000 rows in
at most 60 s on 2 cores) was met. Printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "bank-marketing.csv"
MONITOR = ROOT / "jobs" / "src" / "monitor.py"
TARGET = "y"
GOAL_SECONDS = 60.0
GOAL_ROWS = 1_000_000
ROWS_PER_OBJECT = 100
CHUNK_OBJECTS = 1_000  # objects made at a time
HOURS = 4
INSTANCES = 2
START = datetime(2026, 12, 6, 16, tzinfo=timezone.utc)


def source_frame(data: Path, work: Path) -> tuple[pd.DataFrame, Path]:
    if not data.is_file():
        sys.path.insert(0, str(ROOT))
        from tests.bank_sample import bank_frame

        print(f"{data} not found: generated rows (tests/bank_sample.py) instead")
        data = work / "bank-sample.csv"
        bank_frame(45_000).to_csv(data, sep=";", index=False)
    return pd.read_csv(data, sep=None, engine="python"), data


def envelope(collection: str, data: str, moment: datetime) -> str:
    """One collector object around `data` (its rows as JSON text), as Azure's data collector writes it
    (learn.microsoft.com how-to-collect-production-data)."""
    head = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": "/subscriptions/bench/resourceGroups/bench/providers/Microsoft.MachineLearningServices/"
        "workspaces/bench/onlineEndpoints/bank-marketing/deployments/blue",
        "type": f"azureml.inference.{collection}",
        "datacontenttype": "application/json",
        "time": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "data": None,
        "correlationid": str(uuid.uuid4()),
        "xrequestid": str(uuid.uuid4()),
        "modelversion": "default",
        "collectdatatype": "pandas.core.frame.DataFrame",
        "agent": "monitoring-sdk/0.1.2",
        "contentrange": f"bytes 0-{len(data) - 1}/{len(data)}",
    }
    return json.dumps(head).replace('"data": null', f'"data": {data}', 1)


def write_collector(frame: pd.DataFrame, folder: Path, rows: int) -> tuple[int, int]:
    """The sampled rows as collector files; returns (files, objects). Rows become JSON a chunk at a time, so that
    this process stays small: the monitor's peak RSS is read from getrusage(RUSAGE_CHILDREN), which counts a
    forked child's pages from before its exec."""
    rng = np.random.default_rng(0)
    numbers = frame.drop(columns=TARGET).select_dtypes("number").columns
    frame = frame.astype(dict.fromkeys(numbers, float))  # the JSON a request carries: numbers as floats
    objects = -(-rows // ROWS_PER_OBJECT)
    handles = {}
    try:
        for first in range(0, objects, CHUNK_OBJECTS):
            chunk = range(first, min(first + CHUNK_OBJECTS, objects))
            size = min(rows, chunk.stop * ROWS_PER_OBJECT) - first * ROWS_PER_OBJECT
            sample = frame.iloc[rng.integers(0, len(frame), size)]
            inputs = sample.drop(columns=TARGET).to_dict(orient="records")
            labels = sample[TARGET].tolist()
            yes = np.asarray(labels) == "yes"
            probability = np.round(np.where(yes, rng.uniform(0.5, 1, size), rng.uniform(0, 0.5, size)), 4).tolist()
            outputs = [{TARGET: label, "probability": p} for label, p in zip(labels, probability)]
            for index in chunk:
                hour, instance = index * HOURS // objects, index % INSTANCES
                moment = START + timedelta(hours=hour, seconds=int(index * HOURS * 3600 // objects) % 3600)
                part = slice((index - first) * ROWS_PER_OBJECT, (index - first + 1) * ROWS_PER_OBJECT)
                for collection, records in (("model_inputs", inputs), ("model_outputs", outputs)):
                    key = (collection, hour, instance)
                    if key not in handles:
                        hour_start = START + timedelta(hours=hour)
                        hour_folder = folder / "blue" / collection / hour_start.strftime("%Y/%m/%d/%H")
                        hour_folder.mkdir(parents=True, exist_ok=True)
                        handles[key] = (hour_folder / f"instance-{instance}.jsonl").open("w")
                    handles[key].write(envelope(collection, json.dumps(records[part]), moment) + "\n")
    finally:
        for handle in handles.values():
            handle.close()
    return len(handles), 2 * objects


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=GOAL_ROWS)
    parser.add_argument("--data", type=Path, default=DATA)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="monitor-bench-") as temporary:
        work = Path(temporary)
        frame, data = source_frame(args.data, work)
        started = time.perf_counter()
        files, objects = write_collector(frame, work / "collector", args.rows)
        size = sum(path.stat().st_size for path in (work / "collector").rglob("*.jsonl"))
        print(f"wrote {args.rows:,} rows (inputs and outputs) in {files} files, {objects:,} objects, "
              f"{size / 2**20:.0f} MiB, in {time.perf_counter() - started:.1f} s")  # fmt: skip
        command = [
            sys.executable, str(MONITOR), "--reference", str(data), "--production", str(work / "collector"),
            "--target", TARGET, "--task", "classification", "--training-rows",
            "--since", START.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "--until", (START + timedelta(hours=HOURS)).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "--output", str(work / "monitor"),
        ]  # fmt: skip
        started = time.perf_counter()
        completed = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - started
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # kilobytes on Linux
        print(completed.stdout.rstrip())
        if completed.stderr.strip():
            print(completed.stderr.rstrip())
        report = work / "monitor" / "report.png"
        met = wall <= GOAL_SECONDS and args.rows >= GOAL_ROWS
        print(f"cores: {os.cpu_count()}")
        print(f"rows: {args.rows:,}  files: {files}  objects: {objects:,}")
        print(f"monitor wall: {wall:.1f} s  peak RSS: {peak:.0f} MB  exit code: {completed.returncode}")
        if report.is_file():
            print(f"report.png: {report.stat().st_size / 1024:.0f} KB")
        scale = "" if args.rows >= GOAL_ROWS else f" (only {args.rows:,} rows: rerun with --rows {GOAL_ROWS})"
        print(f"goal (<= {GOAL_SECONDS:.0f} s for {GOAL_ROWS:,} rows): {'met' if met else 'missed'}{scale}")


if __name__ == "__main__":
    main()
