"""The local target: every workload's job specs, training code and scoring script, on this machine, with no
Azure.

- Command jobs and sweep trials run as local processes from their spec's `code:` folder, with
  `${{inputs.*}}`, `${{outputs.*}}` and `${{search_space.*}}` replaced by local paths and sampled values, and
  this interpreter as `python`: forked from a warm interpreter (jobs/local/prefork.py) when the command is a plain
  `python SCRIPT.py ARGS`, else under bash.
- AutoML specs run through FLAML (jobs/src/automl.py): jobs/local/automl.py maps the spec to its command line
  and reports every setting it cannot apply; the time budget is the spec's, capped by --automl-minutes.
- MLflow tracks everything in a local SQLite store (`<work dir>/mlflow.db`): each job or trial gets a run
  that the script resumes through MLFLOW_RUN_ID, as Azure ML hands one to a job. The registry is the same
  store.
- Sweeps sample trials from the spec's search space (random, seeded) within a small trial budget, stop
  trials by the spec's bandit policy on the metric they log every epoch, and pick the best trial by the
  spec's objective.
- Each workload's registered model is served with score.py by the Azure ML inference server (azmlinfsrv)
  on 127.0.0.1, as a managed online deployment would serve it, and collects what it receives and answers
  (jobs/local/collector.py) into <work dir>/collected/<workload>/, as Azure's data collector does.
"""

from __future__ import annotations

import dataclasses
import os
import random
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from jobs.batch import BatchSummary, input_files
from jobs.flow import COLLECTOR_ROOT, SOURCE_DIR, Endpoint, FlowError, Job, JobResult, RegisteredModel, Report, model_folder
from jobs.local.collector import Collection, LocalCollector
from jobs.local.prefork import Prefork
from jobs.local.server import LocalServer, invoke, tail
from jobs.local.specs import Bandit, render, sample
from jobs.workloads import CatalogEntry, Workload, catalog, load_yaml, locate_data

POLL_SECONDS = 0.5
# what the job scripts (jobs/src) import, imported once by a prefork server per thread share (jobs/local/prefork.py:
# only modules that read no per-process setting when imported, so not Keras, which reads KERAS_BACKEND); skops first
JOB_STACK = ("skops.io", "mlflow.sklearn", "mlflow.store.tracking.sqlalchemy_store", "lightgbm", "flaml",
             "matplotlib.pyplot")  # fmt: skip
_JOB_PREFORKS: dict[str, Prefork] = {}
_JOB_PREFORKS_LOCK = threading.Lock()
# `python SCRIPT ARGS` with nothing for a shell to expand, redirect or chain: what a prefork server runs; the rest, bash
SHELL_SYNTAX = frozenset("$`*?[]{}~#!;&|<>()\\'\"\n")
# the most minutes one AutoML job gets here (its spec's limit is for Azure's clusters): what keeps
# `make local`, both workloads and every candidate, within about 4 minutes on a 2-core machine
AUTOML_MINUTES = 0.75
# empty MLflow stores with every schema migration applied, one per MLflow version: a new work dir's store is a copy,
# where creating one runs the migrations again (about 2 seconds each time)
STORE_TEMPLATES = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "azureml-platform"
# an AutoML job's data inputs, and the suffixes of the MLTable assets the Azure target registers per workload
AUTOML_DATA = ("training_data", "validation_data", "test_data")
MLTABLE_SUFFIXES = ("-test-mltable", "-mltable")


def python_script(command: str) -> list[str] | None:
    """[SCRIPT, *ARGS] of a `python SCRIPT.py ARGS` command with nothing for a shell to expand, quote, redirect or
    chain (SHELL_SYNTAX), else None."""
    words = command.split()
    if SHELL_SYNTAX.isdisjoint(command) and len(words) > 1 and words[0] == "python" and words[1].endswith(".py"):
        return words[1:]
    return None


def start_job_script(argv: list[str], cwd: Path, env: dict[str, str], log_path: Path):
    """`python *argv` started as the local target starts a job's script, its output in `log_path`: forked from the
    prefork server for jobs that get env's OMP_NUM_THREADS (its libraries size their pools when it imports them, from
    its environment, as a fresh job's would from the job's)."""
    threads = env["OMP_NUM_THREADS"]
    with _JOB_PREFORKS_LOCK:
        if threads not in _JOB_PREFORKS:
            _JOB_PREFORKS[threads] = Prefork(JOB_STACK, {"OMP_NUM_THREADS": threads})
        prefork = _JOB_PREFORKS[threads]
    return prefork.start(argv, cwd, env, log_path)


def load_spec(job: Job) -> dict:
    if not job.spec.is_file():
        raise FlowError(f"job {job.key}: spec not found: {job.spec}")
    return load_yaml(job.spec.read_text())


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
        parallel: int | None = None,
        automl_minutes: float = AUTOML_MINUTES,
        keep_serving: bool = False,
    ):
        self.data_dir, self.work_dir = Path(data_dir).resolve(), Path(work_dir).resolve()
        self.trials, self.fixed, self.seed, self.port, self.workers = trials, fixed or {}, seed, port, workers
        self.automl_minutes = automl_minutes
        # `run` stops each workload's server once its answer is checked (each holds its model and the
        # libraries in memory while the other workloads train); tests and callers may keep them up
        self.keep_serving = keep_serving
        # one training process per core by default, each with its share of the cores' threads (OpenMP's
        # OMP_NUM_THREADS, which train.py and automl.py read): processes that each take every core only
        # slow each other down
        if parallel is not None and parallel < 1:
            raise FlowError(f"--parallel must be at least 1, not {parallel}")
        cores = os.cpu_count() or 1
        self.parallel = parallel or cores
        self.threads = str(max(1, cores // self.parallel))
        self.slots = threading.Semaphore(self.parallel)
        self.catalog: dict[str, CatalogEntry] = {}
        self.data_files: dict[str, Path] = {}
        self.servers: dict[str, LocalServer] = {}  # by endpoint name
        self.collectors: dict[str, LocalCollector] = {}  # by endpoint name: what each server's score.py collects into
        self.held_slots: set[str] = set()  # endpoints whose server holds a training slot until released
        self._taking_slots = threading.Lock()  # one taker of several slots at a time: two could deadlock
        self._client = None
        self._best_trials: dict[str, str] = {}

    # -- MLflow ---------------------------------------------------------------------------------------

    @property
    def collected_dir(self) -> Path:
        """What the served models collect: the local stand-in for Azure's data collector folder (COLLECTOR_ROOT)."""
        return self.work_dir / "collected"

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.work_dir / 'mlflow.db'}"

    @property
    def client(self):
        if self._client is None:
            import mlflow

            self.work_dir.mkdir(parents=True, exist_ok=True)
            store = self.work_dir / "mlflow.db"
            if not store.exists():
                new_store(store)
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

    def prepare(self, workloads: list[Workload], report: Report) -> None:
        """Each workload's data file: in --data-dir, or downloaded there once from its source."""
        self.catalog = catalog(workloads)
        problems = []
        for workload in workloads:
            entry = workload.data
            for job in workload.jobs:  # every data asset a spec names belongs to a workload
                self._data_assets(load_spec(job))
            if entry.is_url and not (self.data_dir / entry.file).is_file():
                report(f"{workload.name}: {entry.file} is not in {self.data_dir}: downloading {entry.source}")
            try:
                self.data_files[entry.key] = locate_data(workload, self.data_dir, self.data_dir)
            except FlowError as error:
                problems.append(str(error))
            else:
                report(f"{workload.name}: data {entry.key}: {self.data_files[entry.key]}")
        for workload in workloads:  # an AutoML spec that cannot run here fails before any job starts
            for job in workload.jobs:
                spec = load_spec(job)
                if spec.get("type") == "automl" and workload.data.key in self.data_files:
                    try:
                        self._automl_command(job, spec, self.work_dir / "runs")
                    except FlowError as error:
                        problems.append(str(error))
        if problems:  # every problem at once
            raise FlowError("\n".join(problems))
        report(f"MLflow tracking and registry: {self.tracking_uri}")
        for workload in workloads:  # creates the store (and its tables) before any job writes to it
            self._experiment(workload.name)

    def unsupported(self, job: Job) -> str | None:
        return None

    def run_job(self, job: Job, report: Report) -> JobResult:
        spec = load_spec(job)
        kind = spec.get("type")
        if kind == "sweep":
            return self._run_sweep(job, spec, report)
        if kind == "automl":
            return self._run_automl(job, spec, report)
        return self._run_command(job, spec, report)

    def register_model(self, workload: Workload, best: JobResult) -> RegisteredModel:
        import mlflow

        self.client  # noqa: B018  (points mlflow at the local store)
        value = best.metrics[workload.metric]
        tags = {
            "metric": workload.metric,
            workload.metric: repr(value),
            "workload": workload.name,
            "source_job": best.job.key,
            "source_run": self._best_trials.get(best.job.key, best.run_name),
        }
        version = mlflow.register_model(best.model_uri, workload.model, tags=tags)
        return RegisteredModel(workload.model, str(version.version), workload.metric, value, best.run_name)

    def deploy(self, workload: Workload, model: RegisteredModel, report: Report) -> list[Endpoint]:
        model_dir = self.model_dir(model)
        log_path = self.work_dir / "logs" / f"server-{model.name}-{model.version}.log"
        name = f"local-{workload.name}"
        collector = None
        if workload.monitor.collect:
            collection = Collection(self.collected_dir / workload.name, name, f"v{model.version}",
                                    workload.monitor.sampling_rate, workload.monitor.keep_days)  # fmt: skip
            collector = self.collectors[name] = LocalCollector(collection, report).start()
            report(f"collecting its inputs and outputs into {collection.folder}")
        server = LocalServer(model_dir, self.port, log_path, self.workers, collector=collector)
        report(f"starting azmlinfsrv with score.py for {model.name}:{model.version} (log: {log_path})")
        endpoint = Endpoint(name, "local", f"{server.url}/score", f"{server.url}/swagger.json")
        if not self.keep_serving:
            # a server that is released once its answer is checked takes a training process's place
            # meanwhile: it holds as much memory as one, and the run's peak is the processes at once
            self.slots.acquire()
            self.held_slots.add(endpoint.name)
        try:
            self.servers[endpoint.name] = server.start()
        except BaseException:
            self._free_slot(endpoint.name)
            raise
        report(f"healthy at {server.url}")
        return [endpoint]

    def invoke(self, endpoint: Endpoint, payload: dict) -> list:
        return invoke(endpoint.scoring_uri, payload)

    def release(self, endpoints: list[Endpoint]) -> None:
        if self.keep_serving:
            return
        for endpoint in endpoints:
            self._stop(endpoint.name)

    def _stop(self, endpoint: str) -> None:
        """Stop an endpoint's server, then its collector (which takes what the server's client still sends)."""
        if server := self.servers.pop(endpoint, None):
            server.stop()
        if collector := self.collectors.pop(endpoint, None):
            collector.close()
        self._free_slot(endpoint)

    def _free_slot(self, endpoint: str) -> None:
        if endpoint in self.held_slots:
            self.held_slots.discard(endpoint)
            self.slots.release()

    def score_batch(self, workload: Workload, model: RegisteredModel, input_dir: Path, report: Report,
                    output_dir: Path | None = None) -> BatchSummary:  # fmt: skip
        """The batch deployment's script and settings over `input_dir` (jobs/local/batch.py), into `output_dir`
        (default .local/batch/<workload>/<time>). Its worker processes take training slots meanwhile, as a
        server does."""
        from jobs.local.batch import BatchSettings, run_batch

        settings = BatchSettings.from_spec()
        output_dir = output_dir or self.work_dir / "batch" / workload.name / time.strftime("%Y%m%d-%H%M%S")
        report(f"scoring {input_dir} with {model.name}:{model.version} into {output_dir}")
        model_dir = self.model_dir(model)
        slots = min(settings.workers(len(input_files(input_dir))), self.parallel)
        with self._taking_slots:
            for _ in range(slots):
                self.slots.acquire()
        try:
            return run_batch(dataclasses.replace(settings, max_concurrency_per_instance=slots), model_dir, input_dir,
                             output_dir, report)  # fmt: skip
        finally:
            for _ in range(slots):
                self.slots.release()

    # -- beyond the protocol ----------------------------------------------------------------------------

    def model_dir(self, model: RegisteredModel) -> Path:
        """The registered model downloaded once, in the layout Azure ML mounts for online and batch
        deployments alike: AZUREML_MODEL_DIR/<name>/<version>/<model folder>; returns that version's folder."""
        import mlflow

        folder = self.work_dir / "models" / model.name / model.version
        if not (folder / "model" / "MLmodel").is_file():
            shutil.rmtree(folder, ignore_errors=True)
            # through this target's own registry, not mlflow's global one: environments (jobs/promotion.py) each have theirs
            source = self.client.get_model_version_download_uri(model.name, model.version)
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(folder / "model"), tracking_uri=self.tracking_uri)
        return folder

    def latest_model(self, workload: Workload) -> RegisteredModel:
        return self.registered_model(workload)

    def registered_model(self, workload: Workload, version: str | None = None) -> RegisteredModel:
        """The workload's registered model: its latest version, or `version`."""
        query = f"name='{workload.model}'" + (f" and version_number={int(version)}" if version else "")
        found = self.client.search_model_versions(query, order_by=["version_number DESC"], max_results=1)
        if not found:
            what = f"{workload.model} version {version}" if version else f"{workload.model} model"
            raise FlowError(
                f"no {what} in the local registry {self.tracking_uri}: run "
                f"`python -m jobs run --local --workload {workload.name}` first"
            )
        found = found[0]
        value = float(found.tags.get(workload.metric, "nan"))
        return RegisteredModel(found.name, str(found.version), workload.metric, value, found.tags.get("source_run", ""))

    def close(self) -> None:
        for name in list(self.servers) + list(self.collectors):
            self._stop(name)

    # -- data -----------------------------------------------------------------------------------------

    def _data_assets(self, spec: dict) -> list[str]:
        """The data assets a spec reads (`azureml:NAME@latest`), as catalog keys: an AutoML job's MLTable
        assets are its workload's data, which the script splits itself the same way."""
        values = list((spec.get("inputs") or {}).values()) + [spec.get(name) for name in AUTOML_DATA]
        names = []
        for value in values:
            if isinstance(value, dict) and str(value.get("path", "")).startswith("azureml:"):
                asset = re.split(r"[@:]", value["path"].removeprefix("azureml:"))[0]
                names.append(self._catalog_key(asset))
        return names

    def _catalog_key(self, asset: str) -> str:
        if asset in self.catalog:
            return asset
        for suffix in MLTABLE_SUFFIXES:
            if asset.endswith(suffix) and asset.removesuffix(suffix) in self.catalog:
                return asset.removesuffix(suffix)
        raise FlowError(f"data asset {asset!r} belongs to no workload's data (known: {', '.join(self.catalog)})")

    def _data_file(self, key: str) -> Path:
        if key not in self.data_files:
            raise FlowError(f"data {key!r} was not prepared: run the workload through the flow (prepare first)")
        return self.data_files[key]

    def _inputs(self, spec: dict, folder: Path | None = None) -> dict[str, str]:
        """A spec's inputs as local values: a data asset is its workload's data file; the online endpoints' collected
        data (Azure's data collector folder) is this target's; a relative path is a file beside the spec (`folder`)."""
        values = {}
        for name, value in (spec.get("inputs") or {}).items():
            if isinstance(value, dict):
                path = str(value.get("path", ""))
                if path.startswith(COLLECTOR_ROOT + "/"):
                    values[name] = str(self.collected_dir / path.removeprefix(COLLECTOR_ROOT + "/"))
                elif folder is not None and path and ":" not in path:
                    values[name] = str((folder / path).resolve())
                elif not path.startswith("azureml:"):
                    raise FlowError(f"input {name}: only data asset references (azureml:NAME), the data collector's folder "
                                    f"({COLLECTOR_ROOT}/...) and files beside the spec run locally, not {path!r}")  # fmt: skip
                else:
                    values[name] = str(self._data_file(self._data_assets({"inputs": {name: value}})[0]))
            else:
                values[name] = str(value)
        return values

    # -- processes ------------------------------------------------------------------------------------

    def _start_run(self, experiment: str, name: str, tags: dict) -> str:
        return self.client.create_run(self._experiment(experiment), run_name=name, tags=tags).info.run_id

    def _execute(self, command: str, code: Path, run_id: str, run_dir: Path, on_poll=None) -> tuple[int, Path]:
        """Run one command as a local process in `code`; `on_poll` may return a reason to stop it early."""
        log_path = run_dir / "user_logs" / "std_log.txt"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        (log_path.parent / "command.txt").write_text(command + "\n")
        env = {
            **os.environ,
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "MLFLOW_RUN_ID": run_id,
            "PYTHONUNBUFFERED": "1",
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS") or self.threads,
        }
        with self.slots:
            script = python_script(command)
            if script:  # forked from a warm interpreter: the stack's imports are done
                process = start_job_script(script, code, env, log_path)
            else:
                with log_path.open("w") as log:
                    process = subprocess.Popen(["/bin/bash", "-c", command], cwd=code, env=env, stdout=log,
                                               stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
            while True:
                try:  # back as soon as the process ends; the early-termination check every POLL_SECONDS meanwhile
                    process.wait(timeout=POLL_SECONDS)
                    break
                except subprocess.TimeoutExpired:
                    pass
                reason = on_poll() if on_poll else None
                if reason:
                    os.killpg(process.pid, signal.SIGTERM)
                    process.wait()
                    raise _Stopped(reason)
        return process.returncode, log_path

    def _spec_command(self, job: Job, command_spec: dict, spec: dict, values: dict, run_dir: Path) -> tuple[str, Path]:
        """A spec's command with its placeholders filled in, and its code folder (relative to the spec)."""
        outputs = {name: str(run_dir / "outputs" / name) for name in spec.get("outputs") or {}}
        code = (job.spec.parent / command_spec.get("code", ".")).resolve()
        return render(command_spec["command"], {**values, "outputs": outputs}), code

    def _finish(self, run_id: str, run_dir: Path) -> tuple[dict[str, float], str]:
        """The run's metrics and the runs:/ URI of the MLflow model it saved."""
        saved = model_folder(run_dir / "outputs")
        if saved is None:
            raise FlowError(f"the run wrote no MLflow model (no MLmodel file under {run_dir / 'outputs'})")
        relative = saved.relative_to(run_dir / "outputs")
        artifact_path = "/".join(relative.parts[1:])  # outputs/<name>/<path>: the script logs <name>'s content
        if not artifact_path or not self.client.list_artifacts(run_id, artifact_path):
            artifact_path = "/".join(("outputs", *relative.parts))
            self.client.log_artifacts(run_id, str(saved), artifact_path)
        self.client.set_terminated(run_id, "FINISHED")
        return self.client.get_run(run_id).data.metrics, f"runs:/{run_id}/{artifact_path}"

    def _failed(self, job: Job, run_id: str, code: int, log_path: Path) -> JobResult:
        self.client.set_terminated(run_id, "FAILED")
        return JobResult(job, run_id, "Failed", error=f"exit code {code}", log=f"{log_path}\n{tail(log_path)}")

    def _run_process(self, job: Job, spec: dict, build: Callable[[Path], tuple[str, Path]], report: Report) -> JobResult:
        """One job as one process and one MLflow run: its held-out metrics and model, or its failure. `build`
        makes the command and its code folder for the run's folder."""
        run_id = self._start_run(spec.get("experiment_name", job.workload), job.key, {"job": job.key, "workload": job.workload})
        run_dir = self.work_dir / "runs" / job.key / run_id
        report(f"running as MLflow run {run_id} (log: {run_dir / 'user_logs' / 'std_log.txt'})")
        exit_code, log_path = self._execute(*build(run_dir), run_id, run_dir)
        if exit_code != 0:
            report(f"failed with exit code {exit_code}")
            return self._failed(job, run_id, exit_code, log_path)
        metrics, model_uri = self._finish(run_id, run_dir)
        report(f"completed: {_shown(metrics)}")
        return JobResult(job, run_id, "Completed", metrics=metrics, model_uri=model_uri, log=str(log_path))

    def _run_command(self, job: Job, spec: dict, report: Report) -> JobResult:
        values = {"inputs": self._inputs(spec)}
        return self._run_process(job, spec, lambda run_dir: self._spec_command(job, spec, spec, values, run_dir), report)

    def _automl_command(self, job: Job, spec: dict, output: Path) -> tuple[list[str], list[str]]:
        """automl.py's command line for an AutoML spec, and a note for each setting it cannot apply here; a
        spec that cannot run here at all is a FlowError naming the file and the key."""
        from jobs.local.automl import SpecError, command_for

        (data,) = set(self._data_assets(spec)) or {None}
        if data is None:
            raise FlowError(f"job {job.key}: {job.spec}: training_data: names no data asset of the workload")
        try:
            return command_for(spec, job.spec, self._data_file(data), output, self.automl_minutes)
        except SpecError as error:
            raise FlowError(f"job {job.key}: {error}") from None

    def _run_automl(self, job: Job, spec: dict, report: Report) -> JobResult:
        """An AutoML spec through FLAML: the workload's data file (automl.py holds out the same split),
        the spec's settings mapped, and what cannot be mapped said rather than ignored."""

        def build(run_dir: Path) -> tuple[str, Path]:
            argv, notes = self._automl_command(job, spec, run_dir / "outputs" / "results")
            for note in notes:
                report(f"AutoML here: {note}")
            return shlex.join(argv), SOURCE_DIR

        return self._run_process(job, spec, build, report)

    def _run_trial(self, job: Job, trial: Trial, spec: dict, inputs: dict, sweep_dir: Path, metric: str, bandit, report: Report):
        """Run one trial to its end, or until the bandit policy stops it; sets the trial's outcome."""
        run_dir = sweep_dir / f"trial-{trial.number}"

        def history() -> list[float]:
            return [m.value for m in sorted(self.client.get_metric_history(trial.run_id, metric), key=lambda m: m.step)]

        values = {"inputs": inputs, "search_space": {name: str(value) for name, value in trial.params.items()}}
        try:
            command, folder = self._spec_command(job, spec["trial"], spec, values, run_dir)
            code, log_path = self._execute(command, folder, trial.run_id, run_dir,
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
        parent = self._start_run(spec.get("experiment_name", job.workload), job.key, {"job": job.key, "sweep": "parent"})
        inputs = self._inputs(spec)
        rng = random.Random(self.seed)
        trials: list[Trial] = []
        report(f"sweep as MLflow run {parent}: {budget} trial(s), objective {goal} {metric}")
        for number in range(1, budget + 1):
            params = sample(spec.get("search_space") or {}, rng, self.fixed)
            run_id = self._start_run(
                spec.get("experiment_name", job.workload), f"{job.key}-trial-{number}",
                {"mlflow.parentRunId": parent, "job": job.key, "trial": str(number)},
            )  # fmt: skip
            trials.append(Trial(number, params, run_id))
            report(f"trial {number}/{budget} ({run_id}): {_shown(params)}")
            self._run_trial(job, trials[-1], spec, inputs, self.work_dir / "runs" / job.key / parent, metric, bandit, report)
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


def new_store(path: Path) -> None:
    """An empty MLflow store at `path`: a copy of this MLflow version's migrated template (made once, atomically, so
    that processes may race for it). Its Default experiment keeps its artifacts beside the store, not in the current
    directory's ./mlruns, where MLflow would put them."""
    import sqlite3

    import mlflow

    from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

    template = STORE_TEMPLATES / f"mlflow-{mlflow.__version__}.db"
    try:
        if not template.is_file():
            template.parent.mkdir(parents=True, exist_ok=True)
            partial = template.with_name(f"{template.name}.{os.getpid()}.{threading.get_ident()}.partial")
            partial.unlink(missing_ok=True)
            SqlAlchemyStore(f"sqlite:///{partial}", str(template.parent / "artifacts")).engine.dispose()
            os.replace(partial, template)
        shutil.copyfile(template, path)
    except OSError:  # no writable cache folder: the store is made in place, migrations and all
        SqlAlchemyStore(f"sqlite:///{path}", str(path.parent / "artifacts")).engine.dispose()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE experiments SET artifact_location = ? WHERE experiment_id = 0",
                   ((path.parent / "artifacts" / "Default").as_uri(),))  # fmt: skip
    db.close()


class _Stopped(Exception):
    """A trial stopped by the early termination policy."""


def _shown(values: dict) -> str:
    return " ".join(f"{k}={v:,.6g}" if isinstance(v, float) else f"{k}={v}" for k, v in sorted(values.items()))
