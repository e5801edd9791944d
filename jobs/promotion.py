"""Promotion of a tested model from one environment to the next through an ML registry: the four steps of
`python -m jobs promote`, the same for two local environments and for two Azure ML workspaces.

1. Publish: the source environment's champion (or --version N) goes into the ML registry with its files unchanged,
   the environments it serves with, and its lineage (where it was trained, by which run and job, on which data, its
   held-out metric, the git commit, who approved).
2. Compare: the target environment scores the candidate and its own live model on its own held-out rows with the
   retraining pipelines' evaluate step (jobs/src/evaluate.py); a candidate that would make it worse is refused,
   naming both figures, unless --force.
3. Roll out: the target registers the ML registry's files as its next version (tagged with their lineage and the
   version they replace) and rolls it out to its online endpoints (Azure: 0% -> smoke test -> 100%) and its batch
   deployment; the endpoints answer the workload's sample before the promotion counts.
4. Roll back (--rollback): the target serves again the version its live one replaced.

An environment (`Environment`) is a target (jobs/local/target.py, jobs/azure/target.py) with what promotion needs of
it; an ML registry is a folder here (`LocalMlRegistry`) or an Azure ML registry (jobs/azure/promotion.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from jobs.flow import SOURCE_DIR, FlowError, RegisteredModel, Report, answer_problem, git_commit, score_sample_in_batch, stamped
from jobs.local.target import start_job_script
from jobs.workloads import Workload

ENVIRONMENT_FILE = "conda.yaml"  # the serving environment, as MLflow saved it with the model
FILES_TAG = "files_sha256"  # one digest of every file's SHA-256 (files_digest): the published files' identity
# tags on a promoted version in the target: what it replaced (for --rollback) and where it came from
PREVIOUS_TAG = "promotion.previous"
REGISTRY_VERSION_TAG = "promotion.ml_registry_version"
APPROVED_IN_TAG = "promotion.approved_in"
LINEAGE_PREFIX = "lineage."


class PromotionRefused(FlowError):
    """The target's comparison found the candidate worse than what it serves (exit code 1, nothing changed)."""


def file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, by its path relative to it: what "unchanged" means."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}  # fmt: skip


def files_digest(hashes: dict[str, str]) -> str:
    return hashlib.sha256(json.dumps(hashes, sort_keys=True).encode()).hexdigest()


def github_run() -> str:
    """The GitHub Actions run this step is part of (its page shows who approved each environment's jobs), or ""."""
    parts = [os.environ.get(name, "") for name in ("GITHUB_SERVER_URL", "GITHUB_REPOSITORY", "GITHUB_RUN_ID")]
    return f"{parts[0]}/{parts[1]}/actions/runs/{parts[2]}" if all(parts) else ""


@dataclass(frozen=True)
class Published:
    """A model version in the ML registry and its lineage (its files' hashes included)."""

    name: str
    version: str
    lineage: dict
    reference: str  # where it is: a folder here, azureml://registries/<r>/models/<name>/versions/<v> in Azure


class MlRegistry(Protocol):
    def publish(self, name: str, files: Path, lineage: dict, report: Report) -> tuple[Published, bool]: ...

    def get(self, name: str, version: str) -> Published: ...

    def download(self, published: Published) -> Path:
        """The version's model files on this machine, its environment checked to be in the registry too."""


class Environment(Protocol):
    name: str  # dev, prod...
    target: object  # the flow's Target: deploy, invoke, score_batch, release

    def registered_model(self, workload: Workload, version: str | None = None) -> RegisteredModel: ...

    def model_files(self, model: RegisteredModel) -> Path: ...

    def model_tags(self, model: RegisteredModel) -> dict[str, str]: ...

    def data_file(self, workload: Workload) -> Path:
        """The workload's data as this environment trains on it: the rows it holds out are its comparison's."""

    def live_version(self, workload: Workload) -> str | None:
        """The registered version this environment serves now (None: nothing yet)."""

    def register_promoted(self, workload: Workload, files: Path, tags: dict[str, str], report: Report) -> RegisteredModel: ...

    def served(self, workload: Workload, model: RegisteredModel) -> None:
        """Record that `model` is what serves now (Azure: the endpoints say so themselves)."""


def lineage_of(source: Environment, workload: Workload, model: RegisteredModel) -> dict:
    data = source.data_file(workload)
    tags = source.model_tags(model)
    return {
        "model": model.name, "source_environment": source.name, "source_version": model.version,
        "source_run": model.source_run, "source_job": tags.get("job", tags.get("source_job", "")),
        "data": data.name, "data_sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
        "metric": workload.metric, workload.metric: tags.get(workload.metric, repr(model.value)),
        "own_environment": tags.get("own_environment", "false"),  # an AutoML winner serves in its own (jobs/azure/assets.py)
        "git_commit": git_commit(),
        # in CI, who started the run (its merge to main) and the run itself
        "github_actor": os.environ.get("GITHUB_ACTOR", ""), "github_run": github_run(),
    }  # fmt: skip


def publish(source: Environment, registry: MlRegistry, workload: Workload, version: str | None, report: Report) -> Published:
    """Step 1: the source's champion (its latest registered version, or `version`) into the ML registry."""
    model = source.registered_model(workload, version)
    published, new = registry.publish(workload.model, source.model_files(model), lineage_of(source, workload, model), report)
    report(f"{'published' if new else 'already in the ML registry:'} {model.name}:{model.version} of {source.name} as "
           f"{published.name}:{published.version} ({published.reference})")  # fmt: skip
    return published


def compare(target: Environment, candidate: Path, live: str | None, workload: Workload, report: Report) -> dict:
    """Step 2: evaluate.py on this machine, the candidate against the target's live model (version `live`, None when
    nothing serves) on the target's own held-out rows (the retraining pipelines' fair comparison); its verdict."""
    with tempfile.TemporaryDirectory(prefix=f"promote-{workload.name}-") as folder:
        work = Path(folder)
        command = [str(SOURCE_DIR / "evaluate.py"), "--data", str(target.data_file(workload)),
                   "--target", workload.data.target, "--task", workload.task, "--metric", workload.metric,
                   "--goal", workload.goal, "--model-name", workload.model, "--candidate", str(candidate),
                   "--best", str(work / "best"), "--verdict", str(work / "verdict")]  # fmt: skip
        if live is not None:
            model = target.registered_model(workload, live)
            recorded = target.model_tags(model).get(workload.metric)
            command += ["--registered-model", str(target.model_files(model)), "--registered-version", live,
                        *(["--registered-metric", recorded] if recorded else [])]  # fmt: skip
        # evaluate.py logs an MLflow run, and looks for a registered model when it is given none: a throwaway store
        # for both (mlflow.set_tracking_uri and set_registry_uri export their URIs to child processes)
        store = (work / "mlruns").as_uri()
        environment = {**os.environ, "MLFLOW_TRACKING_URI": store, "MLFLOW_REGISTRY_URI": store, "MLFLOW_ALLOW_FILE_STORE": "true",
                       "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or str(os.cpu_count() or 1)}  # fmt: skip
        log = work / "evaluate.log"
        if start_job_script(command, SOURCE_DIR, environment, log).wait() != 0:  # as a local job runs: imports done already
            raise FlowError(f"the comparison in {target.name} failed: {log.read_text().strip()[-2000:]}")
        verdict = json.loads((work / "verdict" / "verdict.json").read_text())
    against = (f"its live version {live} {workload.metric}={verdict['registered'][workload.metric]:g}" if live is not None
               else "nothing live yet")  # fmt: skip
    report(f"compared on {target.name}'s held-out rows: candidate {workload.metric}={verdict['best'][workload.metric]:g}, {against}")
    return verdict


def roll_out(target: Environment, workload: Workload, model: RegisteredModel, report: Report) -> None:
    """Step 3 (and 4): `model` on the target's online endpoints and batch deployment, each answering the sample."""
    serving = target.target
    endpoints = serving.deploy(workload, model, stamped(report, f"{target.name} deploy"))
    answers = None
    try:
        for endpoint in endpoints:
            answers = serving.invoke(endpoint, workload.request())
            if problem := answer_problem(workload.task, answers, len(workload.request()["data"])):
                raise FlowError(f"{endpoint.name} serves {model.name}:{model.version} but its answer is wrong: {problem}")
            report(f"{endpoint.name} answers the sample with {model.name}:{model.version}: {answers}")
        if workload.batch:
            score_sample_in_batch(serving, workload, model, answers, report)
    finally:
        serving.release(endpoints)
    target.served(workload, model)


def promote(source: Environment, target: Environment, registry: MlRegistry, workload: Workload, report: Report, *,
            version: str | None = None, force: bool = False) -> RegisteredModel:
    """Publish, compare, roll out. Answers the target's new served version."""
    return adopt(target, registry, publish(source, registry, workload, version, report), workload, report, force=force)


def adopt(target: Environment, registry: MlRegistry, published: Published, workload: Workload, report: Report, *,
          force: bool = False) -> RegisteredModel:
    """Compare and roll out an ML registry version in the target (CI runs this as the target's identity, after its
    reviewers approved)."""
    candidate = registry.download(published)
    live = target.live_version(workload)
    verdict = compare(target, candidate, live, workload, report)
    measured = verdict["best"][workload.metric]
    if not verdict["better"]:
        serving = verdict["registered"]
        message = (f"{target.name} keeps version {serving['version']}: the candidate {published.name}:{published.version} "
                   f"scores {workload.metric}={measured:g} on {target.name}'s held-out rows against the live model's "
                   f"{workload.metric}={serving[workload.metric]:g} ({workload.goal})")  # fmt: skip
        if not force:
            raise PromotionRefused(message + "; --force promotes it all the same")
        report(f"--force: {message}, promoted all the same")
    tags = {f"{LINEAGE_PREFIX}{key}": str(value) for key, value in published.lineage.items() if key != "files"}
    tags.update({"workload": workload.name, "metric": workload.metric, workload.metric: repr(measured),
                 PREVIOUS_TAG: live or "", REGISTRY_VERSION_TAG: published.version,
                 # in CI, the run whose prod job its reviewers approved before this ran: its page names them
                 APPROVED_IN_TAG: github_run(),
                 FILES_TAG: published.lineage[FILES_TAG]})  # fmt: skip
    model = target.register_promoted(workload, candidate, tags, report)
    roll_out(target, workload, model, report)
    return model


def rollback(target: Environment, workload: Workload, report: Report) -> RegisteredModel:
    """Step 4: serve again the version the live one replaced."""
    live = target.live_version(workload)
    if live is None:
        raise FlowError(f"{target.name}: {workload.name} serves nothing; nothing to roll back")
    previous = target.model_tags(target.registered_model(workload, live)).get(PREVIOUS_TAG)
    if not previous:
        raise FlowError(f"{target.name}: {workload.model}:{live} replaced nothing (no {PREVIOUS_TAG} tag); nothing to roll back to")
    model = target.registered_model(workload, previous)
    roll_out(target, workload, model, report)
    report(f"rolled back {workload.name} in {target.name} from {workload.model}:{live} to {model.name}:{model.version}")
    return model
