"""The post-provision flow: assets -> jobs -> best model -> endpoints -> check.

It drives a `Target` (Azure ML or this machine) and never knows which one: everything that
differs between them lives behind the protocol below.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

SPECS_DIR = Path(__file__).parent / "specs"
# the request each target calls its endpoints with, and each rollout smoke-tests with
SAMPLE_REQUEST = SPECS_DIR / "sample-request.json"

# the regression candidates are compared on this metric, computed on the same held-out split
HOLDOUT_METRIC = "MAE"
# the registered name of the model the endpoints serve, in either target's registry
MODEL_NAME = "housing-regressor"

Report = Callable[[str], None]


@dataclass(frozen=True)
class Job:
    key: str
    spec: str  # file name under jobs/specs/
    regression_candidate: bool  # competes for the housing endpoint on held-out MAE


JOBS = (
    Job("housing-lightgbm", "housing-lightgbm.yml", True),
    Job("housing-mlp-sweep", "housing-mlp-sweep.yml", True),
    Job("housing-automl-regression", "housing-automl-regression.yml", True),
    Job("bank-marketing-automl-classification", "bank-marketing-automl-classification.yml", False),
)


@dataclass
class JobResult:
    job: Job
    run_name: str  # the target's name for the run: the Azure job name, or the local MLflow run id
    status: str
    # held-out metrics of the job's best model (the best trial of a sweep, the best AutoML child)
    metrics: dict[str, float] = field(default_factory=dict)
    primary_metric: str | None = None
    model_uri: str | None = None
    url: str | None = None
    error: str | None = None
    log: str | None = None  # the log's location or its tail

    @property
    def succeeded(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class RegisteredModel:
    name: str
    version: str
    metric: str
    value: float
    source_run: str


@dataclass(frozen=True)
class Endpoint:
    name: str
    kind: str  # "managed", "kubernetes" or "local"
    scoring_uri: str
    swagger_uri: str


class Target(Protocol):
    name: str

    def prepare(self, report: Report) -> None:
        """Make data and environments available to the jobs (register them in Azure; check them locally)."""

    def unsupported(self, job: Job) -> str | None:
        """Why this target cannot run `job`, or None when it can."""

    def run_job(self, job: Job, report: Report) -> JobResult:
        """Submit `job`, report each status change, wait for it and return its best model's result.

        Called concurrently for all jobs. A failed job is returned with `error` set, not raised.
        """

    def register_model(self, best: JobResult) -> RegisteredModel: ...

    def deploy(self, model: RegisteredModel, report: Report) -> list[Endpoint]: ...

    def invoke(self, endpoint: Endpoint, payload: dict) -> list: ...


class FlowError(RuntimeError):
    """A step failed; the message names what failed and where to look."""


def load_request(path: Path | None = None) -> dict:
    """A scoring request: the file given, or the sample request."""
    path = Path(path or SAMPLE_REQUEST)
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise FlowError(f"cannot read the request {path}: {error}") from None


@dataclass
class Summary:
    results: list[JobResult]
    skipped: dict[str, str]
    model: RegisteredModel
    endpoints: list[Endpoint]
    predictions: dict[str, list]

    def table(self) -> str:
        rows = [("job", "metric", "model", "scoring URL")]
        for result in self.results:
            metric = result.primary_metric or HOLDOUT_METRIC
            value = result.metrics.get(metric)
            shown = f"{metric}={value:,.6g}" if value is not None else "-"
            won = result.run_name == self.model.source_run
            model = f"{self.model.name}:{self.model.version}" if won else "-"
            urls = ", ".join(e.scoring_uri for e in self.endpoints) if won else "-"
            rows.append((result.job.key, shown, model, urls))
        rows += [(key, "not run", "-", reason) for key, reason in self.skipped.items()]
        widths = [max(len(row[i]) for row in rows) for i in range(3)]
        return "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)) + "  " + row[3]
            for row in rows
        )


def stamped(report: Report, prefix: str) -> Report:
    start = time.monotonic()
    return lambda line: report(f"[{time.monotonic() - start:7.1f}s] {prefix}: {line}")


def run_jobs(target: Target, jobs: tuple[Job, ...], report: Report) -> tuple[list[JobResult], dict[str, str]]:
    skipped = {job.key: reason for job in jobs if (reason := target.unsupported(job))}
    for key, reason in skipped.items():
        report(f"{key}: not run: {reason}")
    runnable = [job for job in jobs if job.key not in skipped]
    with ThreadPoolExecutor(max_workers=max(len(runnable), 1)) as pool:
        futures = [pool.submit(target.run_job, job, stamped(report, job.key)) for job in runnable]
        results = [future.result() for future in futures]
    failed = [result for result in results if not result.succeeded]
    if failed:
        raise FlowError(
            "\n".join(
                f"job {r.job.key} ({r.run_name}) {r.status}: {r.error}\n  log: {r.log or 'none'}"
                for r in failed
            )
        )
    return results, skipped


def pick_best(results: list[JobResult]) -> JobResult:
    candidates = [r for r in results if r.job.regression_candidate]
    if not candidates:
        raise FlowError("no regression candidate ran, so there is no model to serve")
    missing = [r.job.key for r in candidates if HOLDOUT_METRIC not in r.metrics]
    if missing:
        raise FlowError(f"held-out {HOLDOUT_METRIC} missing from the results of: {', '.join(missing)}")
    return min(candidates, key=lambda r: r.metrics[HOLDOUT_METRIC])


def run(target: Target, payload: dict, report: Report = print, jobs: tuple[Job, ...] = JOBS) -> Summary:
    report(f"target: {target.name}")
    target.prepare(stamped(report, "assets"))
    results, skipped = run_jobs(target, jobs, report)
    best = pick_best(results)
    report(f"best model: {best.job.key} ({HOLDOUT_METRIC}={best.metrics[HOLDOUT_METRIC]:,.6g})")
    model = target.register_model(best)
    report(f"registered model {model.name}:{model.version}")
    endpoints = target.deploy(model, stamped(report, "deploy"))
    predictions = {endpoint.name: target.invoke(endpoint, payload) for endpoint in endpoints}
    for endpoint in endpoints:
        report(f"{endpoint.name}: {endpoint.scoring_uri} (swagger: {endpoint.swagger_uri})")
        report(f"{endpoint.name}: predictions {predictions[endpoint.name]}")
    return Summary(results, skipped, model, endpoints, predictions)
