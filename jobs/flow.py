"""The post-provision flow, for every workload: assets -> candidate jobs -> best model -> endpoints -> check -> batch.

It drives a `Target` (Azure ML or this machine) and never knows which one: everything that differs between
them lives behind the protocol below. It knows workloads (jobs/workloads.py), not housing.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Protocol

if TYPE_CHECKING:
    from jobs.batch import BatchSummary
    from jobs.workloads import Workload

# what every workload shares: the environments and the endpoint and deployment specs
SPECS_DIR = Path(__file__).parent / "specs"
# the code Azure ML jobs and endpoints run
SOURCE_DIR = Path(__file__).parent / "src"
# where the online deployments' data collector writes in Azure (azure-ai-ml's DEFAULT_MDC_PATH; each endpoint's
# collections under <workload>/<endpoint>/): the local target's stand-in is <work dir>/collected
COLLECTOR_ROOT = "azureml://datastores/workspaceblobstore/paths/modelDataCollector"

Report = Callable[[str], None]


@dataclass(frozen=True)
class Job:
    workload: str
    key: str  # `<workload>-<spec file stem>`: unique across workloads, and the Azure job's name stem
    spec: Path


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
    # its model is served only in the environment it was saved with (an Azure AutoML model: the AutoML runtime)
    own_environment: bool = False

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
    own_environment: bool = False  # as JobResult.own_environment


@dataclass(frozen=True)
class Endpoint:
    name: str
    kind: str  # "managed", "kubernetes" or "local"
    scoring_uri: str
    swagger_uri: str


class Target(Protocol):
    name: str

    def prepare(self, workloads: list[Workload], report: Report) -> None:
        """Make the workloads' data and the environments available to the jobs (register them in Azure;
        check them locally)."""

    def unsupported(self, job: Job) -> str | None:
        """Why this target cannot run `job`, or None when it can."""

    def run_job(self, job: Job, report: Report) -> JobResult:
        """Submit `job`, report each status change, wait for it and return its best model's result.

        Called concurrently for all jobs. A failed job is returned with `error` set, not raised.
        """

    def register_model(self, workload: Workload, best: JobResult) -> RegisteredModel: ...

    def deploy(self, workload: Workload, model: RegisteredModel, report: Report) -> list[Endpoint]: ...

    def invoke(self, endpoint: Endpoint, payload: dict) -> list: ...

    def release(self, endpoints: list[Endpoint]) -> None:
        """The flow is done with these endpoints (deployed and answering their sample): Azure's stay up, the
        local target stops its servers unless told to keep them."""

    def score_batch(self, workload: Workload, model: RegisteredModel, input_dir: Path, report: Report) -> BatchSummary:
        """Score every file of `input_dir` with `model` as the workload's batch deployment does, wait, and
        return where the output is and its counts (a failed job raises FlowError, naming its log)."""


class FlowError(RuntimeError):
    """A step failed; the message names what failed and where to look."""


class NotReachableHere(FlowError):
    """A step that only another machine can take (inside the stack's network): the message says what to run where."""


@functools.cache
def source_module(name: str):
    """A module of jobs/src (the code the jobs run), loaded once for the stage's own use: its definitions stay the
    jobs' own (the held-out split, AutoML's mapping, the monitor's metrics), with no second copy here."""
    spec = importlib.util.spec_from_file_location(f"jobs_src_{name}", SOURCE_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def git_commit() -> str:
    """The commit being run: GITHUB_SHA in CI, else the checkout's HEAD (+ "-dirty" with local changes)."""
    if os.environ.get("GITHUB_SHA"):
        return os.environ["GITHUB_SHA"]
    root = Path(__file__).parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True)
        dirty = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, check=True)
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")


def model_folder(root: Path) -> Path | None:
    """The MLflow model under `root`: the shallowest folder holding an MLmodel file (None when there is none)."""
    found = sorted(Path(root).rglob("MLmodel"), key=lambda path: len(path.parts))
    return found[0].parent if found else None


def answer_problem(task: str, answers: object, rows: int) -> str | None:
    """What is wrong with a scoring answer to `rows` records, or None: one number per record from a
    regressor; one object with a label and the probability (or probabilities) from a classifier."""
    if not isinstance(answers, list) or len(answers) != rows:
        return f"expected a list of {rows} answers, got {str(answers)[:200]}"
    if task == "regression":
        if all(isinstance(a, (int, float)) and not isinstance(a, bool) for a in answers):
            return None
        return f"expected {rows} numbers, got {str(answers)[:200]}"
    if all(isinstance(a, dict) and "label" in a and ("probability" in a or "probabilities" in a) for a in answers):
        return None
    return f"expected {rows} objects with a label and its probability, got {str(answers)[:200]}"


@dataclass
class WorkloadSummary:
    workload: Workload
    results: list[JobResult]
    skipped: dict[str, str]
    model: RegisteredModel
    endpoints: list[Endpoint]
    answers: dict[str, list]
    batch: BatchSummary | None = None


@dataclass
class Summary:
    workloads: list[WorkloadSummary]

    def table(self, servers_stopped: bool = False) -> str:
        """One row per job and batch sample; with `servers_stopped` (the local target: its servers end with the run)
        the URL column says so, and a last line says how to serve a model again."""
        url = "scoring URL, stopped with the run" if servers_stopped else "scoring URL"
        rows = [("workload", "job", "held-out metric", "model", f"{url} (batch: its output)")]
        for done in self.workloads:
            metric = done.workload.metric
            for result in done.results:
                value = result.metrics.get(metric)
                shown = f"{metric}={value:,.6g}" if value is not None else "-"
                won = result.run_name == done.model.source_run
                model = f"{done.model.name}:{done.model.version}" if won else "-"
                urls = ", ".join(e.scoring_uri for e in done.endpoints) if won else "-"
                rows.append((done.workload.name, result.job.key, shown, model, urls))
            rows += [(done.workload.name, key, "not run", "-", reason) for key, reason in done.skipped.items()]
            if done.batch:
                tally, model = done.batch.tally, f"{done.model.name}:{done.model.version}"
                counts = f"{tally.scored:,} scored, {tally.failed + tally.unreadable:,} failed"
                rows.append((done.workload.name, "batch (sample)", counts, model, done.batch.location or done.batch.output))
        widths = [max(len(row[i]) for row in rows) for i in range(4)]
        table = "\n".join(
            "  ".join(cell.ljust(width) for cell, width in zip(row[:4], widths)) + "  " + row[4] for row in rows
        )
        if servers_stopped:
            serve = ", ".join(f"`make serve WORKLOAD={done.workload.name}`" for done in self.workloads)
            table += f"\nThe scoring servers stopped with the run. To serve a workload's model again until Ctrl-C: {serve}."
        return table


def stamped(report: Report, prefix: str) -> Report:
    start = time.monotonic()
    return lambda line: report(f"[{time.monotonic() - start:7.1f}s] {prefix}: {line}")


def in_parallel(tasks: list[Callable[[], object]]) -> list:
    """Run every task to its end and return their results in order; report all failures together (one
    rollout, or one workload, failing does not stop the others)."""
    with ThreadPoolExecutor(max_workers=max(len(tasks), 1)) as pool:
        futures = [pool.submit(task) for task in tasks]
    errors = [future.exception() for future in futures if future.exception()]
    if errors and all(isinstance(error, FlowError) for error in errors):
        raise FlowError("\n".join(str(error) for error in errors))
    if errors:
        raise errors[0]
    return [future.result() for future in futures]


def run_jobs(target: Target, jobs: list[Job], report: Report) -> tuple[list[JobResult], dict[str, str]]:
    """Every job at once (the target decides how many really run side by side); a failed job fails the
    step after all have ended, naming each failure and its log."""
    skipped = {job.key: reason for job in jobs if (reason := target.unsupported(job))}
    for key, reason in skipped.items():
        report(f"{key}: not run: {reason}")
    runnable = [job for job in jobs if job.key not in skipped]
    results = in_parallel([lambda job=job: target.run_job(job, stamped(report, job.key)) for job in runnable])
    failed = [result for result in results if not result.succeeded]
    if failed:
        raise FlowError(
            "\n".join(f"job {r.job.key} ({r.run_name}) {r.status}: {r.error}\n  log: {r.log or 'none'}" for r in failed)
        )
    return results, skipped


def serve(target: Target, workload: Workload, results: list[JobResult], report: Report) -> tuple[RegisteredModel, list[Endpoint], dict[str, list]]:
    """The workload's best candidate registered, deployed, and called with its sample request."""
    best = workload.best(results)
    report(f"{workload.name}: best model from {best.job.key} ({workload.metric}={best.metrics[workload.metric]:,.6g})")
    model = target.register_model(workload, best)
    report(f"{workload.name}: registered model {model.name}:{model.version}")
    endpoints = target.deploy(workload, model, stamped(report, f"{workload.name} deploy"))
    payload = workload.request()
    answers = {}
    for endpoint in endpoints:
        answers[endpoint.name] = target.invoke(endpoint, payload)
        problem = answer_problem(workload.task, answers[endpoint.name], len(payload["data"]))
        if problem:
            raise FlowError(f"{workload.name}: endpoint {endpoint.name} ({endpoint.scoring_uri}): {problem}")
        report(f"{endpoint.name}: {endpoint.scoring_uri} (swagger: {endpoint.swagger_uri})")
        report(f"{endpoint.name}: answers {answers[endpoint.name]}")
    target.release(endpoints)
    return model, endpoints, answers


def score_sample_in_batch(target: Target, workload: Workload, model: RegisteredModel, answers: list | None, report: Report) -> BatchSummary:
    """The sample request's records as a folder of CSV files, scored by the batch deployment: each must come
    back scored, as the online endpoint (if any) answered it."""
    from jobs.batch import sample_problem, write_sample

    with tempfile.TemporaryDirectory(prefix=f"{workload.name}-batch-sample-") as folder:
        files = write_sample(workload.request(), Path(folder))
        stamp = stamped(report, f"{workload.name} batch")
        stamp(f"scoring the sample request's {files} records, one CSV file each")
        summary = target.score_batch(workload, model, Path(folder), stamp)
    summary.report(stamp)
    if problem := sample_problem(summary, files, answers):
        raise FlowError(f"{workload.name}: batch scoring of the sample ({summary.output}): {problem}")
    return summary


def run_workload(target: Target, workload: Workload, report: Report) -> WorkloadSummary:
    results, skipped = run_jobs(target, list(workload.jobs), report)
    model, endpoints, answers = serve(target, workload, results, report)
    batch = None
    if workload.batch:
        online = next(iter(answers.values()), None)
        try:
            batch = score_sample_in_batch(target, workload, model, online, report)
        except NotReachableHere as error:
            report(f"{workload.name}: batch scoring not run here: {error}")
            skipped = {**skipped, "batch (sample)": str(error).splitlines()[0]}
    return WorkloadSummary(workload, results, skipped, model, endpoints, answers, batch)


def run(target: Target, workloads: list[Workload], report: Report = print) -> Summary:
    """Every workload at once, each from its jobs to its endpoints: a workload serves as soon as its own
    candidates end, and one failing does not stop the others."""
    report(f"target: {target.name}; workloads: {', '.join(workload.name for workload in workloads)}")
    target.prepare(workloads, stamped(report, "assets"))
    return Summary(in_parallel([lambda w=w: run_workload(target, w, report) for w in workloads]))
