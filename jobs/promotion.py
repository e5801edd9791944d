"""Promotion of a tested model from one environment to the next through an ML registry, on this machine: the four
steps of `python -m jobs promote --local --workload NAME --from dev --to prod`.

1. Publish: the source environment's champion (or --version N) goes into the ML registry, unchanged, with its
   lineage (where it was trained, by which run and job, on which data, its held-out metric, the git commit).
2. Compare: the target environment scores the candidate and its own live model on its own held-out rows, with the
   retraining pipelines' evaluate step (jobs/src/evaluate.py); a candidate that would make it worse is refused,
   naming both figures, unless --force.
3. Roll out: the target registers the ML registry's files as its next version and serves them; the served model
   answers the workload's sample before the promotion counts.
4. Roll back (--rollback): the target serves again the version it served before the last promotion.

Each local environment (`--env NAME`) keeps its MLflow store, runs and served models under `<work dir>/<NAME>/`; the
ML registry is the folder `<work dir>/ml-registry/<model>/<version>/`: the model's files, lineage.json and the
conda spec it serves with.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from jobs.flow import SOURCE_DIR, FlowError, RegisteredModel, Report, answer_problem, model_folder
from jobs.workloads import Workload

ML_REGISTRY_FOLDER = "ml-registry"
LINEAGE_FILE = "lineage.json"
ENVIRONMENT_FILE = "conda.yaml"  # the serving environment, as MLflow saved it with the model


class PromotionRefused(FlowError):
    """The target's comparison found the candidate worse than what it serves (exit code 1, nothing changed)."""


def file_hashes(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under `folder`, by its path relative to it: what "unchanged" means."""
    return {str(path.relative_to(folder)): hashlib.sha256(path.read_bytes()).hexdigest()
            for path in sorted(folder.rglob("*")) if path.is_file()}  # fmt: skip


def git_commit() -> str:
    done = subprocess.run(["git", "rev-parse", "HEAD"], cwd=SOURCE_DIR, capture_output=True, text=True, check=False)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


@dataclass(frozen=True)
class Published:
    name: str
    version: str
    folder: Path  # <registry>/<name>/<version>: model/, lineage.json, conda.yaml

    @property
    def model_dir(self) -> Path:
        return self.folder / "model"

    @property
    def lineage(self) -> dict:
        return json.loads((self.folder / LINEAGE_FILE).read_text())


class LocalMlRegistry:
    """The ML registry on this machine: a folder of published model versions, never changed once written."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def versions(self, name: str) -> list[Published]:
        found = [Published(name, path.name, path) for path in (self.root / name).glob("*") if (path / LINEAGE_FILE).is_file()]
        return sorted(found, key=lambda published: int(published.version))

    def get(self, name: str, version: str) -> Published:
        for published in self.versions(name):
            if published.version == str(version):
                return published
        known = ", ".join(p.version for p in self.versions(name)) or "none"
        raise FlowError(f"ML registry {self.root}: no {name} version {version} (published: {known})")

    def publish(self, name: str, model_dir: Path, lineage: dict) -> tuple[Published, bool]:
        """The model's files as the next version, with its lineage and its conda spec; a model already published
        (the same files) is answered as that version, and False says nothing new was written."""
        environment = model_dir / ENVIRONMENT_FILE
        if not environment.is_file():
            raise FlowError(f"{model_dir}: the model has no {ENVIRONMENT_FILE}, so the ML registry could not hold the "
                            "environment it serves with")  # fmt: skip
        hashes = file_hashes(model_dir)
        for published in self.versions(name):
            if file_hashes(published.model_dir) == hashes:
                return published, False
        version = str(int(self.versions(name)[-1].version) + 1 if self.versions(name) else 1)
        folder = self.root / name / version
        partial = folder.with_name(f".{version}.partial")
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(model_dir, partial / "model")
        shutil.copy2(environment, partial / ENVIRONMENT_FILE)
        (partial / LINEAGE_FILE).write_text(json.dumps({**lineage, "files": hashes}, indent=2) + "\n")
        partial.rename(folder)  # a version appears whole or not at all
        return Published(name, version, folder), True


def _history_file(target, workload: Workload) -> Path:
    return target.work_dir / "promotions" / f"{workload.name}.json"


def history(target, workload: Workload) -> list[dict]:
    """What the target served after each promotion or rollback, oldest first."""
    path = _history_file(target, workload)
    return json.loads(path.read_text()) if path.is_file() else []


def _record(target, workload: Workload, entry: dict) -> None:
    path = _history_file(target, workload)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps([*history(target, workload), entry], indent=2) + "\n")


def publish(source, registry: LocalMlRegistry, workload: Workload, version: str | None, environment: str, report: Report) -> Published:
    """Step 1: the source's champion (the latest registered version, or `version`) into the ML registry."""
    model = source.registered_model(workload, version)
    model_dir = model_folder(source.model_dir(model))
    data = source.data_files[workload.data.key]
    lineage = {
        "model": model.name, "source_environment": environment, "source_version": model.version,
        "source_run": model.source_run, "source_job": source.model_tags(model).get("source_job", ""),
        "data": data.name, "data_sha256": hashlib.sha256(data.read_bytes()).hexdigest(),
        "metric": model.metric, model.metric: model.value, "git_commit": git_commit(),
        "approved_by": os.environ.get("GITHUB_ACTOR", ""),  # in CI: who approved the run (README, "Promotion")
    }  # fmt: skip
    published, new = registry.publish(workload.model, model_dir, lineage)
    report(f"{'published' if new else 'already in the ML registry:'} {model.name}:{model.version} of {environment} as "
           f"{published.name}:{published.version} ({published.folder})")  # fmt: skip
    return published


def compare(target, published: Published, workload: Workload, report: Report) -> dict:
    """Step 2: evaluate.py in the target, the candidate against the target's live model on the target's own
    held-out rows (the retraining pipelines' fair comparison); its verdict."""
    verdict_dir = target.work_dir / "promotions" / f"{workload.name}-{published.version}-{time.strftime('%Y%m%d-%H%M%S')}"
    command = [sys.executable, str(SOURCE_DIR / "evaluate.py"), "--data", str(target.data_files[workload.data.key]),
               "--target", workload.data.target, "--task", workload.task, "--metric", workload.metric,
               "--goal", workload.goal, "--model-name", workload.model, "--candidate", str(published.model_dir),
               "--best", str(verdict_dir / "best"), "--verdict", str(verdict_dir)]  # fmt: skip
    environment = {**os.environ, "MLFLOW_TRACKING_URI": target.tracking_uri, "MLFLOW_REGISTRY_URI": target.tracking_uri}
    done = subprocess.run(command, cwd=SOURCE_DIR, env=environment, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise FlowError(f"the comparison in {target.work_dir} failed: {done.stderr.strip()[-2000:]}")
    verdict = json.loads((verdict_dir / "verdict.json").read_text())
    report(f"compared on {target.work_dir.name}'s held-out rows: candidate {workload.metric}={verdict['best'][workload.metric]:g}"
           + (f", live version {verdict['registered']['version']} {workload.metric}={verdict['registered'][workload.metric]:g}"
              if verdict.get("registered") else ", nothing live yet"))  # fmt: skip
    return verdict


def roll_out(target, workload: Workload, model: RegisteredModel, report: Report) -> list:
    """Step 3 (and 4): serve `model` in the target and check that it answers the workload's sample."""
    endpoints = target.deploy(workload, model, report)
    try:
        for endpoint in endpoints:
            answers = target.invoke(endpoint, workload.request())
            if problem := answer_problem(workload.task, answers, len(workload.request()["data"])):
                raise FlowError(f"{endpoint.name} serves {model.name}:{model.version} but its answer is wrong: {problem}")
            report(f"{endpoint.name} answers the sample with {model.name}:{model.version}: {answers}")
        return endpoints
    finally:
        target.release(endpoints)


def promote(source, target, registry: LocalMlRegistry, workload: Workload, report: Report, *, environments: tuple[str, str],
            version: str | None = None, force: bool = False) -> RegisteredModel:
    """The four steps' first three: publish, compare, roll out. Answers the target's new served version."""
    source.prepare([workload], report)
    target.prepare([workload], report)
    published = publish(source, registry, workload, version, environments[0], report)
    verdict = compare(target, published, workload, report)
    measured = verdict["best"][workload.metric]
    if not verdict["better"]:
        live = verdict["registered"]
        message = (f"{environments[1]} keeps version {live['version']}: the candidate {published.name}:{published.version} "
                   f"scores {workload.metric}={measured:g} on {environments[1]}'s held-out rows against the live model's "
                   f"{workload.metric}={live[workload.metric]:g} ({workload.goal})")  # fmt: skip
        if not force:
            raise PromotionRefused(message + "; --force promotes it all the same")
        report(f"--force: {message}, promoted all the same")
    model = target.register_published(workload, published, measured)
    roll_out(target, workload, model, report)
    _record(target, workload, {"version": model.version, "ml_registry_version": published.version, "action": "promote",
                               "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})  # fmt: skip
    return model


def rollback(target, workload: Workload, report: Report) -> RegisteredModel:
    """Step 4: serve again what the target served before its last promotion or rollback."""
    served = history(target, workload)
    if len(served) < 2:
        raise FlowError(f"{target.work_dir}: {workload.name} has {len(served)} promotion(s) on record; nothing to roll back to")
    previous = served[-2]
    model = target.registered_model(workload, previous["version"])
    roll_out(target, workload, model, report)
    _record(target, workload, {**previous, "action": "rollback", "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    report(f"rolled back {workload.name} to {model.name}:{model.version} (ML registry version {previous['ml_registry_version']})")
    return model
