"""The local target: the same job specs, training code and scoring script, on this machine, with no Azure.

- Jobs run as local processes from their spec's `code:` folder, with `${{inputs.*}}`, `${{outputs.*}}` and
  `${{search_space.*}}` replaced by local paths and sampled values, and this interpreter as `python`.
- MLflow tracks everything in a local SQLite store (`<work dir>/mlflow.db`): each job or trial gets a run
  that the script resumes through MLFLOW_RUN_ID, as Azure ML hands one to a job. The registry is the same
  store.
- Sweeps sample trials from the spec's search space (random, seeded) within a small trial budget, stop
  trials by the spec's bandit policy on the metric they log every epoch, and pick the best trial by the
  spec's objective.
- The registered model is served with score.py by the Azure ML inference server (azmlinfsrv) on
  127.0.0.1, as a managed online deployment would serve it.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from jobs.catalog import CATALOG, read_catalog
from jobs.flow import HOLDOUT_METRIC, MODEL_NAME, SPECS_DIR, Endpoint, FlowError, Job, JobResult, RegisteredModel, Report

SCORING_SCRIPT = SPECS_DIR.parent / "src" / "score.py"
LOG_TAIL_LINES = 25
POLL_SECONDS = 0.5
SERVER_START_SECONDS = 120
# azmlinfsrv listens on 0.0.0.0 (right in a container); on a workstation keep the unauthenticated model local
LAUNCH_SERVER = (
    "import sys; from azureml_inference_server_http import amlserver; "
    "amlserver.DEFAULT_HOST = '127.0.0.1'; sys.argv[0] = 'azmlinfsrv'; amlserver.run()"
)
_PLACEHOLDER = re.compile(r"\$\{\{\s*(inputs|outputs|search_space)\.([A-Za-z0-9_]+)\s*\}\}")
_OPTIONAL = re.compile(r"\$\[\[(.*?)\]\]", re.S)


def load_spec(job: Job) -> dict:
    path = SPECS_DIR / job.spec
    if not path.is_file():
        raise FlowError(f"job {job.key}: spec not found: {path}")
    return yaml.safe_load(path.read_text())


def render(command: str, values: dict[str, dict[str, str]]) -> str:
    """A spec's command with its `${{...}}` placeholders replaced (shell-quoted). An optional part
    `$[[...]]` is kept only when every placeholder in it has a value, as Azure ML does."""

    def optional(match: re.Match) -> str:
        inner = match.group(1)
        present = all(name in values.get(kind, {}) for kind, name in _PLACEHOLDER.findall(inner))
        return inner if present else ""

    def substitute(match: re.Match) -> str:
        kind, name = match.groups()
        if name not in values.get(kind, {}):
            raise FlowError(f"the command uses ${{{{{kind}.{name}}}}}, which the spec does not define")
        return shlex.quote(values[kind][name])

    return _PLACEHOLDER.sub(substitute, " ".join(_OPTIONAL.sub(optional, command).split()))


# Azure ML sweep distributions (CLI v2 `search_space` types); log* bounds are natural logarithms
DISTRIBUTIONS = {
    "choice": lambda rng, d: rng.choice(d["values"]),
    "randint": lambda rng, d: rng.randrange(d["upper"]),
    "uniform": lambda rng, d: rng.uniform(d["min_value"], d["max_value"]),
    "quniform": lambda rng, d: round(rng.uniform(d["min_value"], d["max_value"]) / d["q"]) * d["q"],
    "loguniform": lambda rng, d: math.exp(rng.uniform(d["min_value"], d["max_value"])),
    "qloguniform": lambda rng, d: round(math.exp(rng.uniform(d["min_value"], d["max_value"])) / d["q"]) * d["q"],
    "normal": lambda rng, d: rng.gauss(d["mu"], d["sigma"]),
    "qnormal": lambda rng, d: round(rng.gauss(d["mu"], d["sigma"]) / d["q"]) * d["q"],
    "lognormal": lambda rng, d: math.exp(rng.gauss(d["mu"], d["sigma"])),
    "qlognormal": lambda rng, d: round(math.exp(rng.gauss(d["mu"], d["sigma"])) / d["q"]) * d["q"],
}


def sample(search_space: dict, rng: random.Random, fixed: dict) -> dict:
    """One trial's parameters: each drawn from its distribution, unless fixed on the command line."""
    params = {}
    for name, distribution in search_space.items():
        kind = distribution.get("type")
        if kind not in DISTRIBUTIONS:
            raise FlowError(f"search_space.{name}: distribution type {kind!r} is not one of {', '.join(DISTRIBUTIONS)}")
        value = DISTRIBUTIONS[kind](rng, distribution)
        params[name] = fixed.get(name, value)
    unknown = set(fixed) - set(search_space)
    if unknown:
        raise FlowError(f"fixed parameter(s) {', '.join(sorted(unknown))} are not in the sweep's search_space")
    return params


class Bandit:
    """Azure ML's bandit policy: at each evaluation, a trial whose best metric so far is worse than the best
    trial's at the same interval by more than the slack (factor or amount) is stopped. Each time a trial
    logs the primary metric counts as one interval."""

    def __init__(self, policy: dict, goal: str):
        self.factor = policy.get("slack_factor")
        self.amount = policy.get("slack_amount")
        if (self.factor is None) == (self.amount is None):
            raise FlowError("early_termination: a bandit policy needs exactly one of slack_factor, slack_amount")
        self.interval = int(policy.get("evaluation_interval", 1)) or 1
        self.delay = int(policy.get("delay_evaluation", 0))
        self.minimize = goal.lower() == "minimize"
        self.best: dict[int, float] = {}  # interval -> best value any trial had reached by then
        self.lock = threading.Lock()

    def _better(self, a: float, b: float) -> float:
        return min(a, b) if self.minimize else max(a, b)

    def record(self, values: list[float]) -> None:
        """Add a trial's metric history (one value per interval) to what later trials are held against."""
        with self.lock:
            running = None
            for interval, value in enumerate(values, start=1):
                running = value if running is None else self._better(running, value)
                self.best[interval] = running if interval not in self.best else self._better(self.best[interval], running)

    def verdict(self, values: list[float]) -> str | None:
        """Why the trial with this history should stop now, or None."""
        interval = len(values)
        if interval < max(self.delay, 1) or (interval - self.delay) % self.interval:
            return None
        with self.lock:
            best = self.best.get(interval)
        if best is None:
            return None
        own = min(values) if self.minimize else max(values)
        if self.factor is not None:
            bar = best * (1 + self.factor) if self.minimize else best / (1 + self.factor)
            slack = f"slack factor {self.factor}"
        else:
            bar = best + self.amount if self.minimize else best - self.amount
            slack = f"slack amount {self.amount}"
        if (own > bar) if self.minimize else (own < bar):
            return f"best {own:,.6g} at interval {interval} is outside the {slack} of the best trial ({best:,.6g})"
        return None


@dataclass
class Trial:
    number: int
    params: dict
    run_id: str
    status: str = "Running"
    metrics: dict[str, float] = field(default_factory=dict)
    model_uri: str | None = None
    error: str | None = None
    log: Path | None = None


class LocalServer:
    """A scoring script (score.py unless told) under azmlinfsrv on 127.0.0.1, in its own process group."""

    def __init__(self, model_dir: Path, port: int, log_path: Path, workers: int, script: Path = SCORING_SCRIPT):
        self.model_dir, self.port, self.log_path, self.workers = model_dir, port or free_port(), log_path, workers
        self.script = Path(script).resolve()
        self.url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None

    def start(self) -> "LocalServer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "WORKER_COUNT": str(self.workers), "AML_APP_ROOT": str(self.script.parent)}
        command = [sys.executable, "-c", LAUNCH_SERVER, "--entry_script", str(self.script),
                   "--model_dir", str(self.model_dir), "--port", str(self.port)]  # fmt: skip
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.script.parent, start_new_session=True
            )
        deadline = time.monotonic() + SERVER_START_SECONDS
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise FlowError(f"the inference server exited with {self.process.returncode}:\n{tail(self.log_path)}")
            try:
                with urllib.request.urlopen(self.url + "/", timeout=2) as answer:
                    if answer.status == 200:
                        return self
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(0.25)
        self.stop()
        raise FlowError(f"the inference server was not healthy after {SERVER_START_SECONDS}s:\n{tail(self.log_path)}")

    def wait(self) -> int:
        return self.process.wait()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # gunicorn's master and its workers
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


class LocalTarget:
    name = "local"

    def __init__(
        self,
        data_dir: Path,
        work_dir: Path = Path(".local"),
        trials: int = 3,
        fixed: dict | None = None,
        seed: int = 0,
        port: int = 0,
        workers: int = min(2, os.cpu_count() or 1),
        parallel: int = 1,
    ):
        self.data_dir, self.work_dir = Path(data_dir).resolve(), Path(work_dir).resolve()
        self.trials, self.fixed, self.seed, self.port, self.workers = trials, fixed or {}, seed, port, workers
        # LightGBM uses every core: a second training process beside it slows both on a small machine
        self.slots = threading.Semaphore(parallel)
        self.catalog = read_catalog()
        self.servers: list[LocalServer] = []
        self._client = None
        self._best_trials: dict[str, str] = {}

    # -- MLflow ---------------------------------------------------------------------------------------

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.work_dir / 'mlflow.db'}"

    @property
    def client(self):
        if self._client is None:
            import mlflow

            self.work_dir.mkdir(parents=True, exist_ok=True)
            mlflow.set_tracking_uri(self.tracking_uri)
            mlflow.set_registry_uri(self.tracking_uri)
            self._client = mlflow.MlflowClient(self.tracking_uri, self.tracking_uri)
        return self._client

    def _experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found:
            return found.experiment_id
        return self.client.create_experiment(name, artifact_location=(self.work_dir / "artifacts" / name).as_uri())

    # -- Target ---------------------------------------------------------------------------------------

    def prepare(self, report: Report) -> None:
        from jobs.flow import JOBS

        needed = sorted({name for job in JOBS if not self.unsupported(job) for name in self._data_assets(load_spec(job))})
        for name in needed:
            path = self._data_file(name)
            report(f"data {name}: {path}")
        report(f"MLflow tracking and registry: {self.tracking_uri}")
        self._experiment("housing")  # creates the store (and its tables) before any job writes to it

    def unsupported(self, job: Job) -> str | None:
        if load_spec(job).get("type") == "automl":
            return "AutoML runs only in Azure ML; the local target runs command and sweep jobs"
        return None

    def run_job(self, job: Job, report: Report) -> JobResult:
        spec = load_spec(job)
        if spec.get("type") == "sweep":
            return self._run_sweep(job, spec, report)
        return self._run_command(job, spec, report)

    def register_model(self, best: JobResult) -> RegisteredModel:
        import mlflow

        self.client  # noqa: B018  (points mlflow at the local store)
        tags = {
            "metric": HOLDOUT_METRIC,
            HOLDOUT_METRIC: repr(best.metrics[HOLDOUT_METRIC]),
            "source_job": best.job.key,
            "source_run": self._best_trials.get(best.job.key, best.run_name),
        }
        version = mlflow.register_model(best.model_uri, MODEL_NAME, tags=tags)
        return RegisteredModel(MODEL_NAME, str(version.version), HOLDOUT_METRIC, best.metrics[HOLDOUT_METRIC], best.run_name)

    def deploy(self, model: RegisteredModel, report: Report) -> list[Endpoint]:
        import mlflow

        self.client  # noqa: B018
        # the layout Azure ML mounts: AZUREML_MODEL_DIR/<name>/<version>/<model folder>
        model_dir = self.work_dir / "models" / model.name / model.version
        if not (model_dir / "model" / "MLmodel").is_file():
            shutil.rmtree(model_dir, ignore_errors=True)
            mlflow.artifacts.download_artifacts(f"models:/{model.name}/{model.version}", dst_path=str(model_dir / "model"))
        log_path = self.work_dir / "logs" / f"server-{model.name}-{model.version}.log"
        server = LocalServer(model_dir, self.port, log_path, self.workers)
        report(f"starting azmlinfsrv with score.py for {model.name}:{model.version} (log: {log_path})")
        self.servers.append(server.start())
        report(f"healthy at {server.url}")
        return [Endpoint(f"local-{model.name}", "local", f"{server.url}/score", f"{server.url}/swagger.json")]

    def invoke(self, endpoint: Endpoint, payload: dict) -> list:
        return invoke(endpoint.scoring_uri, payload)

    # -- beyond the protocol ----------------------------------------------------------------------------

    def latest_model(self) -> RegisteredModel:
        versions = self.client.search_model_versions(f"name='{MODEL_NAME}'", order_by=["version_number DESC"], max_results=1)
        if not versions:
            raise FlowError(f"no {MODEL_NAME} model in the local registry {self.tracking_uri}: run `python -m jobs run --local` first")
        found = versions[0]
        value = float(found.tags.get(HOLDOUT_METRIC, "nan"))
        return RegisteredModel(found.name, str(found.version), HOLDOUT_METRIC, value, found.tags.get("source_run", ""))

    def close(self) -> None:
        for server in self.servers:
            server.stop()
        self.servers.clear()

    # -- jobs -----------------------------------------------------------------------------------------

    def _data_assets(self, spec: dict) -> list[str]:
        names = []
        for value in (spec.get("inputs") or {}).values():
            if isinstance(value, dict) and str(value.get("path", "")).startswith("azureml:"):
                names.append(re.split(r"[@:]", value["path"].removeprefix("azureml:"))[0])
        return names

    def _data_file(self, asset: str) -> Path:
        entry = self.catalog.get(asset)
        if entry is None:
            raise FlowError(f"data asset {asset!r} is not in {CATALOG}")
        path = self.data_dir / entry.file
        if not path.is_file():
            raise FlowError(
                f"data file {entry.file} not found in {self.data_dir} (data asset {asset!r}). Download it from "
                f"{entry.source} into {self.data_dir}, or point --data-dir at the folder that holds it."
            )
        return path

    def _inputs(self, spec: dict) -> dict[str, str]:
        values = {}
        for name, value in (spec.get("inputs") or {}).items():
            if isinstance(value, dict):
                path = str(value.get("path", ""))
                if not path.startswith("azureml:"):
                    raise FlowError(f"input {name}: only data asset references (azureml:NAME) run locally, not {path!r}")
                values[name] = str(self._data_file(self._data_assets({"inputs": {name: value}})[0]))
            else:
                values[name] = str(value)
        return values

    def _start_run(self, experiment: str, name: str, tags: dict) -> str:
        return self.client.create_run(self._experiment(experiment), run_name=name, tags=tags).info.run_id

    def _execute(self, command_spec: dict, spec: dict, values: dict, run_id: str, run_dir: Path, on_poll=None) -> tuple[int, Path]:
        """Run one command as a local process; `on_poll` may return a reason to stop it early."""
        code = (SPECS_DIR / command_spec.get("code", ".")).resolve()
        outputs = {name: str(run_dir / "outputs" / name) for name in spec.get("outputs") or {}}
        command = render(command_spec["command"], {**values, "outputs": outputs})
        log_path = run_dir / "user_logs" / "std_log.txt"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        (log_path.parent / "command.txt").write_text(command + "\n")
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_RUN_ID": run_id,
            "PYTHONUNBUFFERED": "1",
        }
        with self.slots, log_path.open("w") as log:
            process = subprocess.Popen(
                ["/bin/bash", "-c", command], cwd=code, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
            while process.poll() is None:
                time.sleep(POLL_SECONDS)
                reason = on_poll() if on_poll else None
                if reason:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait()
                    raise _Stopped(reason)
        return process.returncode, log_path

    def _finish(self, run_id: str, run_dir: Path) -> tuple[dict[str, float], str]:
        """The run's metrics and the runs:/ URI of the MLflow model it saved."""
        models = sorted((run_dir / "outputs").rglob("MLmodel"), key=lambda p: len(p.parts))
        if not models:
            raise FlowError(f"the run wrote no MLflow model (no MLmodel file under {run_dir / 'outputs'})")
        relative = models[0].parent.relative_to(run_dir / "outputs")
        artifact_path = "/".join(relative.parts[1:])  # outputs/<name>/<path>: the script logs <name>'s content
        if not artifact_path or not self.client.list_artifacts(run_id, artifact_path):
            artifact_path = "/".join(("outputs", *relative.parts))
            self.client.log_artifacts(run_id, str(models[0].parent), artifact_path)
        self.client.set_terminated(run_id, "FINISHED")
        return self.client.get_run(run_id).data.metrics, f"runs:/{run_id}/{artifact_path}"

    def _failed(self, job: Job, run_id: str, code: int, log_path: Path) -> JobResult:
        self.client.set_terminated(run_id, "FAILED")
        return JobResult(job, run_id, "Failed", error=f"exit code {code}", log=f"{log_path}\n{tail(log_path)}")

    def _run_command(self, job: Job, spec: dict, report: Report) -> JobResult:
        run_id = self._start_run(spec.get("experiment_name", job.key), job.key, {"job": job.key})
        run_dir = self.work_dir / "runs" / job.key / run_id
        report(f"running as MLflow run {run_id} (log: {run_dir / 'user_logs' / 'std_log.txt'})")
        code, log_path = self._execute(spec, spec, {"inputs": self._inputs(spec)}, run_id, run_dir)
        if code != 0:
            report(f"failed with exit code {code}")
            return self._failed(job, run_id, code, log_path)
        metrics, model_uri = self._finish(run_id, run_dir)
        report(f"completed: {_shown(metrics)}")
        return JobResult(job, run_id, "Completed", metrics=metrics, model_uri=model_uri, log=str(log_path))

    def _run_trial(self, trial: Trial, spec: dict, inputs: dict, sweep_dir: Path, metric: str, bandit, report: Report):
        """Run one trial to its end, or until the bandit policy stops it; sets the trial's outcome."""
        run_dir = sweep_dir / f"trial-{trial.number}"

        def history() -> list[float]:
            return [m.value for m in sorted(self.client.get_metric_history(trial.run_id, metric), key=lambda m: m.step)]

        values = {"inputs": inputs, "search_space": {name: str(value) for name, value in trial.params.items()}}
        try:
            code, log_path = self._execute(spec["trial"], spec, values, trial.run_id, run_dir,
                                           (lambda: bandit.verdict(history())) if bandit else None)  # fmt: skip
        except _Stopped as stopped:
            trial.status = "Canceled"
            self.client.set_terminated(trial.run_id, "KILLED")
            report(f"trial {trial.number} stopped by the bandit policy: {stopped}")
        else:
            if code != 0:
                trial.status, trial.error, trial.log = "Failed", f"exit code {code}", log_path
                self.client.set_terminated(trial.run_id, "FAILED")
                report(f"trial {trial.number} failed with exit code {code} (log: {log_path})")
                return
            trial.metrics, trial.model_uri = self._finish(trial.run_id, run_dir)
            trial.status = "Completed"
            report(f"trial {trial.number} completed: {_shown(trial.metrics)}")
        if bandit:
            bandit.record(history())

    def _run_sweep(self, job: Job, spec: dict, report: Report) -> JobResult:
        objective = spec.get("objective") or {}
        metric, goal = objective.get("primary_metric"), str(objective.get("goal", "minimize"))
        if not metric:
            raise FlowError(f"job {job.key}: the sweep has no objective.primary_metric")
        policy = spec.get("early_termination") or {}
        bandit = Bandit(policy, goal) if policy.get("type") == "bandit" else None
        if policy and not bandit:
            report(f"early termination {policy.get('type')!r} is not applied locally (only bandit is)")
        if spec.get("sampling_algorithm", "random") != "random":
            report(f"sampling_algorithm {spec['sampling_algorithm']!r} runs as random sampling locally")
        budget = min(self.trials, int((spec.get("limits") or {}).get("max_total_trials", self.trials)))
        parent = self._start_run(spec.get("experiment_name", job.key), job.key, {"job": job.key, "sweep": "parent"})
        inputs = self._inputs(spec)
        rng = random.Random(self.seed)
        trials: list[Trial] = []
        report(f"sweep as MLflow run {parent}: {budget} trial(s), objective {goal} {metric}")
        for number in range(1, budget + 1):
            params = sample(spec.get("search_space") or {}, rng, self.fixed)
            run_id = self._start_run(
                spec.get("experiment_name", job.key), f"{job.key}-trial-{number}",
                {"mlflow.parentRunId": parent, "job": job.key, "trial": str(number)},
            )  # fmt: skip
            trials.append(Trial(number, params, run_id))
            report(f"trial {number}/{budget} ({run_id}): {_shown(params)}")
            self._run_trial(trials[-1], spec, inputs, self.work_dir / "runs" / job.key / parent, metric, bandit, report)
        completed = [t for t in trials if t.status == "Completed" and metric in t.metrics]
        if not completed:
            self.client.set_terminated(parent, "FAILED")
            failed = [t for t in trials if t.status == "Failed"]
            if failed:
                return JobResult(job, parent, "Failed", error=f"no trial completed; trial {failed[-1].number} {failed[-1].error}",
                                 log=f"{failed[-1].log}\n{tail(failed[-1].log)}")  # fmt: skip
            return JobResult(job, parent, "Failed", error=f"no trial completed with a {metric} (all stopped early)")
        pick = min if goal.lower() == "minimize" else max
        best = pick(completed, key=lambda t: t.metrics[metric])
        self._best_trials[job.key] = best.run_id
        self.client.set_tag(parent, "best_child_run_id", best.run_id)
        self.client.set_terminated(parent, "FINISHED")
        report(f"best trial {best.number} ({best.run_id}): {metric}={best.metrics[metric]:,.6g} {_shown(best.params)}")
        return JobResult(job, parent, "Completed", metrics=best.metrics, primary_metric=metric, model_uri=best.model_uri)


class _Stopped(Exception):
    """A trial stopped by the early termination policy."""


def invoke(scoring_uri: str, payload: dict, timeout: float = 30) -> list:
    """POST a request to a scoring URL; a non-2xx answer raises FlowError with the server's message."""
    request = urllib.request.Request(
        scoring_uri, json.dumps(payload).encode(), {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return json.loads(answer.read())
    except urllib.error.HTTPError as error:
        raise FlowError(f"{scoring_uri} answered {error.code}: {error.read().decode(errors='replace')}") from None
    except urllib.error.URLError as error:
        raise FlowError(f"{scoring_uri} is not reachable: {error.reason}") from None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"(no log at {path})"


def _shown(values: dict) -> str:
    return " ".join(f"{k}={v:,.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(values.items()))
