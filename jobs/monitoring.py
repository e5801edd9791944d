"""The production loop on the local target: the monitor over what a served model collected, and a demonstration of
the whole loop (`python -m jobs monitor --local [--demo]`).

The monitor is jobs/src/monitor.py, the script the retraining pipeline's drift gate and (where Azure's own monitor
cannot run) the scheduled monitor run in Azure, judged by the workload's monitor schedule (`monitor.schedule`) or
Azure's defaults. Its exit code is the answer: 0 every signal passed, 1 one failed, 2 the input cannot be used.

The demonstration serves the workload's latest model, sends its held-out rows (window 1), then the same rows with
the columns workload.yml's `monitor.demo` names drifted as it says (window 2), and runs the drift-gated retraining
pipeline on each window: its first step is the monitor, whose signals decide whether the rest trains. Nothing in
it is decided in advance: each verdict is the computed signals', and the demonstration says whether they came out
as the drift it made predicts.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from jobs.flow import SOURCE_DIR, FlowError, Report, source_module, stamped
from jobs.local.server import invoke
from jobs.workloads import GATE_STEP, Workload

MONITOR_SCRIPT = SOURCE_DIR / "monitor.py"
# the gate's outputs and the files in them (jobs/specs/components/monitor.yml, gate.py, monitor.py)
GATE_FILES = (("signals", "signals.json"), ("decision", "decision.json"))
# records per request the demonstration sends: requests of a few rows, as an application scores them
DEMO_ROWS_PER_REQUEST = 20
DEMO_SEED = 0
# how long the served model may take to get what it collected to the collector (it posts from a background thread)
COLLECTED_TIMEOUT_S = 120


def utc(moment: float) -> str:
    """A POSIX time as the ISO 8601 UTC time monitor.py takes, to the second."""
    return datetime.fromtimestamp(moment, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def run_local(target, workload: Workload, report: Report, production: Path | None = None, since: str | None = None,
              until: str | None = None) -> int:  # fmt: skip
    """monitor.py over `production` (default: everything the workload's served models collected here) against the
    workload's training rows, with its monitor schedule's signals, into <work dir>/monitor/<workload>/<time>; its
    exit code."""
    target.prepare([workload], stamped(report, "assets"))
    production = Path(production) if production else target.collected_dir / workload.name
    output = target.work_dir / "monitor" / workload.name / time.strftime("%Y%m%d-%H%M%S")
    command = [sys.executable, str(MONITOR_SCRIPT), "--reference", str(target.data_files[workload.data.key]),
               "--training-rows", "--production", str(production), "--target", workload.data.target,
               "--task", workload.task, "--output", str(output)]  # fmt: skip
    if workload.monitor.schedule:
        command += ["--spec", str(workload.monitor.schedule)]
    command += [*(["--since", since] if since else []), *(["--until", until] if until else [])]
    report(f"monitor: {production} against {workload.data.file}'s training rows" + (f", {since} to {until or 'now'}" if since else ""))
    finished = subprocess.run(command, cwd=SOURCE_DIR, capture_output=True, text=True)
    for line in (finished.stdout + finished.stderr).splitlines():
        report(line)
    return finished.returncode


def drifted(frame, changes: dict, seed: int = DEMO_SEED):
    """`frame` with only the columns `changes` names drifted: {scale: F} multiplies a number column; {value: V,
    share: S} sets a seeded share S of the rows to the category V."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    frame = frame.copy()
    for column, change in changes.items():
        if column not in frame.columns:
            raise FlowError(f"monitor.demo.{column}: the data has no such column (its columns: {', '.join(frame.columns)})")
        if "scale" in change:
            if not pd.api.types.is_numeric_dtype(frame[column]):
                raise FlowError(f"monitor.demo.{column}: scale applies to a number column; {column} holds {frame[column].dtype}")
            frame[column] = frame[column] * change["scale"]
        else:
            chosen = rng.random(len(frame)) < change["share"]
            frame[column] = frame[column].astype(object).where(~chosen, change["value"])
    return frame


def records(frame) -> list[dict]:
    """Rows as the request's records: JSON values, a missing value as null."""
    return [{column: (None if isinstance(value, float) and math.isnan(value) else value) for column, value in row.items()}
            for row in frame.astype(object).to_dict("records")]  # fmt: skip


def _send(scoring_uri: str, rows: list[dict], collector, collected: int) -> float:
    """Send `rows` in requests of DEMO_ROWS_PER_REQUEST and wait until the collector holds them (`collected` rows
    in all, in both collections: the client posts from a background thread); returns the first whole second after
    that, once it has begun: the window's end, which the next window's requests come after."""
    for start in range(0, len(rows), DEMO_ROWS_PER_REQUEST):
        invoke(scoring_uri, {"data": rows[start : start + DEMO_ROWS_PER_REQUEST]})
    for collection in ("model_inputs", "model_outputs"):
        collector.wait_for_rows(collection, collected, COLLECTED_TIMEOUT_S)
    end = math.floor(time.time()) + 1
    time.sleep(max(0.0, end - time.time()))
    return float(end)


def _failed_features(signals: dict, signal: str) -> list[str]:
    return sorted({row["feature"] for row in signals["signals"].get(signal, {}).get("features", []) if not row["passed"]})


def _verdict(signals: dict, signal: str) -> str:
    if signal not in signals["signals"]:
        return "not computed"
    failed = _failed_features(signals, signal)
    return "passed" if not failed else f"FAILED on {', '.join(failed)}"


def demo(target, workload: Workload, report: Report, inputs: dict) -> int:
    """The loop on two windows; 0 when the signals came out as the drift made predicts (window 1 passes data and
    prediction drift, window 2 fails data drift on exactly the drifted columns) and the gated pipeline skipped
    window 1 and trained on window 2; 1 otherwise. `inputs` override the pipeline's inputs."""
    from jobs.local.pipeline import LocalPipelineRunner

    if not workload.monitor.demo:
        raise FlowError(f"{workload.file}: monitor.demo names no column to drift, so there is no second window to send")
    if not workload.retrain:
        raise FlowError(f"{workload.file}: the demonstration runs the drift-gated retraining pipeline, and there is none (retrain)")
    target.prepare([workload], stamped(report, "assets"))
    tabular = source_module("tabular")
    frame = tabular.read_table(target.data_files[workload.data.key])
    held_out = tabular.split(frame, workload.data.target, workload.task)[1]
    windows = {1: records(held_out), 2: records(drifted(held_out, workload.monitor.demo))}
    model = target.latest_model(workload)
    say = stamped(report, "demo")
    endpoint = target.deploy(workload, model, say)[0]
    collector = target.collectors.get(endpoint.name)
    if collector is None:
        raise FlowError(f"{workload.file}: monitor.collect is false, so the served model collects nothing to monitor")
    bounds, sent = [float(math.floor(time.time()))], 0
    try:
        for number, rows in windows.items():
            say(f"window {number}: {len(rows):,} {'held-out' if number == 1 else 'drifted'} rows to {endpoint.scoring_uri}, "
                f"{DEMO_ROWS_PER_REQUEST} per request")  # fmt: skip
            sent += len(rows)
            bounds.append(_send(endpoint.scoring_uri, rows, collector, sent))
    finally:
        target.release([endpoint])
    runner, runs = LocalPipelineRunner(target), {}
    for number in windows:  # the monitor on each window: the drift-gated pipeline's first step
        overrides = {"automl_minutes": target.automl_minutes, **inputs, "since": utc(bounds[number - 1]), "until": utc(bounds[number])}
        run = runner.run(workload, stamped(report, f"window {number} pipeline"), overrides, gated=True)
        outputs = next(step for step in run.steps if step.name == GATE_STEP).outputs
        signals, decision = (json.loads((Path(outputs[name]) / file).read_text()) for name, file in GATE_FILES)
        runs[number] = (signals, decision, run, Path(outputs["signals"]) / "report.png")
    drifted_columns = sorted(workload.monitor.demo)
    (first, skip, *_), (second, train, *_) = runs[1], runs[2]
    expected = {
        "window 1 passes data drift": _verdict(first, "data_drift") == "passed",
        "window 1 passes prediction drift": _verdict(first, "prediction_drift") == "passed",
        f"window 2 fails data drift on exactly {', '.join(drifted_columns)}": _failed_features(second, "data_drift") == drifted_columns,
        "the gated pipeline skips window 1": skip["train"] is False,
        "the gated pipeline trains on window 2": train["train"] is True,
    }  # fmt: skip
    lines = [f"{workload.name}: the production loop on {model.name}:{model.version}"]
    for number, (signals, decision, pipeline, picture) in runs.items():
        lines.append(f"window {number} ({'held-out rows' if number == 1 else 'drifted: ' + ', '.join(drifted_columns)}; "
                     f"{signals['window']['rows']['model_inputs']:,} rows, {utc(bounds[number - 1])} to {utc(bounds[number])})")  # fmt: skip
        for signal in ("data_drift", "prediction_drift", "data_quality"):
            lines.append(f"  {signal:<17} {_verdict(signals, signal)}")
        lines.append(f"  report           {picture}")
        lines.append(f"  gated pipeline   {'trained' if decision['train'] else 'skipped'} ({decision['reason']}; "
                     f"run {pipeline.run_id}, {pipeline.folder})")  # fmt: skip
    lines += [f"{'as expected' if held else 'NOT as expected'}: {what}" for what, held in expected.items()]
    report("\n".join(lines))
    return 0 if all(expected.values()) else 1
