"""Workloads: one prediction problem each, declared in `workloads/<name>/workload.yml` and owned by its folder.

A workload holds its data (the catalog entry the jobs read), its candidate jobs (Azure ML CLI v2 specs in
its folder), the held-out metric that compares them on the same split, the registered model's name, where
the winner serves, and the request that calls it. The flow runs every workload, or those named; adding one
is adding a folder, never a code change.

    name: housing
    description: Median house value of California census districts
    data:                      # the catalog entry: file (in --data-dir), source (URL or path), target, task
      file: housing.csv
      source: https://...
      target: median_house_value
      task: regression
    candidates: [lightgbm.yml, mlp-sweep.yml, automl-regression.yml]
    compare: {metric: MAE, goal: minimize}
    model: housing-regressor
    serve:
      online: [managed, kubernetes]
      batch: true              # a batch endpoint scores folders of CSV files (jobs/specs/endpoints/batch-*.yml)
      sample_request: sample-request.json
    monitor:                   # optional; without it every request is collected and judged by Azure's defaults
      collect: true            # the data collector on the online deployments (and the local server)
      sampling_rate: 1.0
      keep_days: 90            # collected data older than this is deleted
      schedule: monitor.yml    # the monitor (CLI v2 schedule, create_monitor): signals, thresholds, who is told
      environments: {dev: {enabled: true}, prod: {enabled: true}}
      demo: {median_income: {scale: 1.5}, ocean_proximity: {value: INLAND, share: 0.3}}
    retrain:                   # optional: a retraining pipeline, and the schedule that submits it in Azure
      pipeline: retrain.yml
      schedule: retrain-schedule.yml
      environments:            # per environment (the stack's `environment` output): on or off, another cron
        dev: {enabled: false}
        prod: {enabled: true}
      when: drifted            # the pipeline's monitor step gates training (default: always, no gate)

Every problem in a workload file is reported at once, each naming the file and the key.
"""

from __future__ import annotations

import io
import json
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable
from urllib.request import urlopen

import yaml

from jobs.flow import FlowError, Job, JobResult, source_module

ROOT = Path(__file__).resolve().parent.parent
WORKLOADS_DIR = ROOT / "workloads"
WORKLOAD_FILE = "workload.yml"
TASKS = ("regression", "classification")
# every held-out metric the training scripts (train.py, train_mlp.py, automl.py) log, and which way is better
METRICS = {
    "regression": {"MAE": "minimize", "RMSE": "minimize", "NRMSE": "minimize", "R2": "maximize"},
    "classification": {"AUC_weighted": "maximize", "accuracy": "maximize", "F1": "maximize"},
}
ONLINE_KINDS = ("managed", "kubernetes")
# retrain.when: always trains; drifted trains only when the pipeline's monitor step (GATE_STEP) finds drift
RETRAIN_WHEN = ("always", "drifted")
GATE_STEP = "monitor"
PROMOTIONS = ("train", "registry")
PUBLISHING_ENVIRONMENT = "dev"  # infra/settings.py's: the one environment whose models go into the ML registry
MONITOR_KEYS = ("collect", "sampling_rate", "keep_days", "schedule", "environments", "demo")
JOB_TYPES = ("command", "sweep", "automl")
# a workload's name becomes part of Azure names (data assets, jobs, endpoints: `<name>-online-<6 hex>` must
# fit an online endpoint's 32 characters), so it is short, lower-case and starts with a letter
NAME = re.compile(r"[a-z][a-z0-9-]{0,15}[a-z0-9]")
# Azure ML asset names: letters, digits, '-', '_' and '.', starting with a letter or digit
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,254}")
DATA_FIELDS = ("file", "source", "target", "task")


class WorkloadError(FlowError):
    """A workload that cannot be run; the message names the file and every bad key."""


@dataclass(frozen=True)
class CatalogEntry:
    """A workload's data: `file` in --data-dir, else `source` (a URL, or a path in the repository)."""

    key: str  # the data asset name: the workload's name
    file: str
    source: str
    target: str
    task: str
    member: str | None = None  # path inside a zip source; nested zips separated by "/"

    @property
    def is_url(self) -> bool:
        return self.source.startswith(("https://", "http://"))


def schedule_settings(schedule: Path, environments: dict, environment: str) -> dict:
    """`enabled` (on unless the environment says off) and the cron expression for an environment (the schedule
    file's unless the environment gives one)."""
    trigger = (load_yaml(schedule.read_text()) or {}).get("trigger") or {}
    chosen = {"enabled": True, "cron": trigger.get("expression")}
    chosen.update(environments.get(environment) or {})
    return chosen


@dataclass(frozen=True)
class Retrain:
    """A workload's retraining pipeline (CLI v2 `type: pipeline`) and its schedule (CLI v2 schedule YAML), with
    per-environment overrides of the schedule: `enabled` and `cron`; `gated`: the pipeline's monitor step decides
    whether it trains (retrain.when: drifted)."""

    pipeline: Path
    schedule: Path
    environments: dict
    gated: bool = False

    def settings(self, environment: str) -> dict:
        return schedule_settings(self.schedule, self.environments, environment)

    def document(self, gated: bool | None = None) -> dict:
        """The pipeline spec as a mapping, for both targets to load: as written with its drift gate on (`gated`,
        default the workload's retrain.when), else without the monitor step and the steps' bindings to it, so
        that nothing reads collected data and every step runs: the pipeline inputs only the gate read go too."""
        spec = read_mapping(self.pipeline, f"pipeline spec not found: {self.pipeline}")
        if self.gated if gated is None else gated:
            return spec
        jobs = {name: dict(node) for name, node in (spec.get("jobs") or {}).items() if name != GATE_STEP}
        for node in jobs.values():
            node["inputs"] = {key: value for key, value in (node.get("inputs") or {}).items()
                              if f"parent.jobs.{GATE_STEP}." not in str(value)}  # fmt: skip
        read = str([node["inputs"] for node in jobs.values()])
        inputs = {name: value for name, value in (spec.get("inputs") or {}).items() if f"parent.inputs.{name}}}" in read}
        return {**spec, "inputs": inputs, "jobs": jobs}


@dataclass(frozen=True)
class Monitor:
    """What a workload's online endpoints collect, how long it is kept, and its monitor: the schedule file (CLI v2,
    create_monitor) holds the signals, thresholds, trigger and who is notified; per-environment `enabled`/`cron`.
    `demo`: column -> how `monitor --local --demo` drifts it ({scale: F} or {value: V, share: S})."""

    collect: bool = True
    sampling_rate: float = 1.0
    keep_days: int | None = None  # None: kept until deleted by hand
    schedule: Path | None = None
    environments: dict = field(default_factory=dict)
    demo: dict = field(default_factory=dict)

    def settings(self, environment: str) -> dict:
        return schedule_settings(self.schedule, self.environments, environment)


@dataclass(frozen=True)
class Workload:
    name: str
    folder: Path
    description: str
    data: CatalogEntry
    jobs: tuple[Job, ...]
    metric: str  # the held-out metric that picks the winner
    goal: str  # minimize | maximize
    model: str  # the registered model's name
    online: tuple[str, ...]  # the online endpoint kinds that serve the winner
    sample_request: Path
    batch: bool = False  # served by a batch endpoint too
    retrain: Retrain | None = None
    monitor: Monitor = Monitor()
    # train: every environment trains its own (the stage); registry: dev trains, the others serve what dev published
    # to the ML registry and their own comparison accepted (jobs/promotion.py)
    promotion: str = "train"

    @property
    def task(self) -> str:
        return self.data.task

    @property
    def file(self) -> Path:
        return self.folder / WORKLOAD_FILE

    def request(self) -> dict:
        return json.loads(self.sample_request.read_text())

    def best(self, results: Iterable[JobResult]) -> JobResult:
        """The candidate with the best held-out metric; every candidate must have logged it."""
        mine = [result for result in results if result.job.workload == self.name]
        if not mine:
            raise FlowError(f"workload {self.name}: no candidate ran, so there is no model to serve")
        missing = [result.job.key for result in mine if self.metric not in result.metrics]
        if missing:
            raise FlowError(f"workload {self.name}: held-out {self.metric} missing from the results of {', '.join(missing)}")
        pick = min if self.goal == "minimize" else max
        return pick(mine, key=lambda result: result.metrics[self.metric])


class _Problems:
    def __init__(self, path: Path):
        self.path, self.lines = path, []

    def add(self, key: str, message: str) -> None:
        self.lines.append(f"{key}: {message}")

    def raise_any(self) -> None:
        if self.lines:
            raise WorkloadError(f"{self.path}:\n  " + "\n  ".join(self.lines))


# libyaml's parser where PyYAML was built with it (its wheels are), with safe_load's constructors: the same documents,
# parsed in C. The flow and the suite read the workloads' specs thousands of times: about 10 CPU-s in pure Python.
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str):
    """The document yaml.safe_load reads from `text`."""
    return yaml.load(text, Loader=YAML_LOADER)


def read_mapping(path: Path, missing: str, what: str = "a mapping", error: type[FlowError] = FlowError) -> dict:
    """A YAML file that holds a mapping; `error` says `missing` when there is no file, and names the file when
    it is not YAML or not a mapping."""
    if not path.is_file():
        raise error(missing)
    try:
        document = load_yaml(path.read_text())
    except yaml.YAMLError as problem:
        raise error(f"{path}: not valid YAML: {problem}") from None
    if not isinstance(document, dict):
        raise error(f"{path}: expected {what}")
    return document


def load_workload(folder: Path) -> Workload:
    """The workload in `folder`, or WorkloadError naming the file and every bad key."""
    path = Path(folder) / WORKLOAD_FILE
    document = read_mapping(path, f"{folder}: no {WORKLOAD_FILE} (a workload folder declares its workload there)",
                            "a mapping of workload keys", WorkloadError)  # fmt: skip
    problems = _Problems(path)
    known = {"name", "description", "data", "candidates", "compare", "model", "serve", "monitor", "retrain", "promotion"}
    for key in sorted(set(document) - known):
        problems.add(key, f"not a workload key; known: {', '.join(sorted(known))}")

    name = str(document.get("name") or "")
    if not NAME.fullmatch(name):
        problems.add("name", f"{name!r}: 2-17 lower-case letters, digits and '-', starting with a letter")
    elif name != path.parent.name:
        problems.add("name", f"{name!r} differs from its folder's name {path.parent.name!r}")

    data = document.get("data") if isinstance(document.get("data"), dict) else {}
    if not data:
        problems.add("data", "required: file, source, target and task of the workload's data")
    for key in DATA_FIELDS:
        if data and not data.get(key):
            problems.add(f"data.{key}", "required")
    task = data.get("task")
    if task and task not in TASKS:
        problems.add("data.task", f"{task!r}; allowed: {', '.join(TASKS)}")

    compare = document.get("compare") if isinstance(document.get("compare"), dict) else {}
    metric, goal = compare.get("metric"), compare.get("goal")
    metrics = METRICS.get(task, {})
    if not metric:
        problems.add("compare.metric", "required: the held-out metric that picks the best candidate")
    elif task in METRICS and metric not in metrics:
        problems.add("compare.metric", f"{metric!r} is not a held-out metric of {task}; known: {', '.join(metrics)}")
    elif metric in metrics:
        goal = goal or metrics[metric]
        if goal != metrics[metric]:
            problems.add("compare.goal", f"{goal!r}, but a better {metric} is {'lower' if metrics[metric] == 'minimize' else 'higher'}")

    model = str(document.get("model") or "")
    if not MODEL_NAME.fullmatch(model):
        problems.add("model", f"{model!r}: the registered model's name (letters, digits, '-', '_', '.')")

    jobs = []
    candidates = document.get("candidates")
    if not isinstance(candidates, list) or not candidates:
        problems.add("candidates", "required: a list of job spec files in this folder")
        candidates = []
    for index, spec_name in enumerate(candidates):
        key = f"candidates[{index}]"
        spec = path.parent / str(spec_name)
        if not spec.is_file():
            problems.add(key, f"spec not found: {spec}")
            continue
        job_problem = _check_spec(spec, data, task)
        if job_problem:
            problems.add(key, job_problem)
        jobs.append(Job(name, f"{name}-{spec.stem}", spec))
    keys = [job.key for job in jobs]
    for duplicate in sorted({key for key in keys if keys.count(key) > 1}):
        problems.add("candidates", f"{duplicate} is listed twice")

    serve = document.get("serve") if isinstance(document.get("serve"), dict) else {}
    online = serve.get("online") or []
    if not isinstance(online, list) or not set(online) <= set(ONLINE_KINDS):
        problems.add("serve.online", f"{online!r}; a list of endpoint kinds from: {', '.join(ONLINE_KINDS)}")
    if not isinstance(serve.get("batch", False), bool):
        problems.add("serve.batch", f"{serve['batch']!r}: true or false")
    request = path.parent / str(serve.get("sample_request") or "")
    if not serve.get("sample_request") or not request.is_file():
        problems.add("serve.sample_request", f"a JSON request file in this folder, not found: {request}")
    else:
        try:
            records = json.loads(request.read_text()).get("data")
            if not isinstance(records, list) or not records:
                problems.add("serve.sample_request", f"{request}: expected {{\"data\": [records...]}}")
        except (ValueError, AttributeError) as error:
            problems.add("serve.sample_request", f"{request}: not a JSON request: {error}")
    retrain = _retrain(document.get("retrain"), path.parent, name, data, (metric, goal), model, problems)
    monitor = _monitor(document.get("monitor"), path.parent, data, problems)
    promotion = str(document.get("promotion", "train"))
    if promotion not in PROMOTIONS:
        problems.add("promotion", f"{promotion!r}; allowed: {', '.join(PROMOTIONS)} (docs/operators.md, \"Promotion\")")
    elif promotion == "registry" and retrain is not None:
        # a model that reaches the other environments through the ML registry is trained in the publishing one only
        for environment in sorted(retrain.environments):
            if environment != PUBLISHING_ENVIRONMENT and retrain.settings(environment).get("enabled"):
                problems.add(f"retrain.environments.{environment}.enabled",
                             f"true, but promotion: registry retrains in {PUBLISHING_ENVIRONMENT} only: drift in {environment} "
                             f"alerts, {PUBLISHING_ENVIRONMENT} retrains, and `promote` brings the model")  # fmt: skip
    problems.raise_any()

    entry = CatalogEntry(name, *(str(data[key]) for key in DATA_FIELDS), member=data.get("member"))
    return Workload(
        name=name,
        folder=path.parent,
        description=str(document.get("description") or name),
        data=entry,
        jobs=tuple(jobs),
        metric=metric,
        goal=goal,
        model=model,
        online=tuple(online),
        sample_request=request,
        batch=bool(serve.get("batch", False)),
        retrain=retrain,
        monitor=monitor,
        promotion=promotion,
    )


def _retrain(section, folder: Path, name: str, data: dict, compare: tuple, model: str, problems: _Problems) -> Retrain | None:
    """The retrain section, checked: the pipeline trains this workload's data, target, task, metric and model (and
    has the monitor step its gate needs, when `when` is drifted); the schedule submits that pipeline, with a cron and
    time zone Azure takes."""
    if section is None:
        return None
    if not isinstance(section, dict):
        problems.add("retrain", "a mapping: pipeline, schedule, environments, when")
        return None
    for key in sorted(set(section) - {"pipeline", "schedule", "environments", "when"}):
        problems.add(f"retrain.{key}", "not a retrain key; known: pipeline, schedule, environments, when")
    when = section.get("when", "always")
    if when not in RETRAIN_WHEN:
        problems.add("retrain.when", f"{when!r}; allowed: {', '.join(RETRAIN_WHEN)}")
    files = {}
    for key in ("pipeline", "schedule"):
        file = folder / str(section.get(key) or "")
        if not section.get(key) or not file.is_file():
            problems.add(f"retrain.{key}", f"a YAML file in this folder, not found: {file}")
            continue
        try:
            files[key] = load_yaml(file.read_text()) or {}
        except yaml.YAMLError as error:
            problems.add(f"retrain.{key}", f"{file.name}: not valid YAML: {error}")
    pipeline = files.get("pipeline")
    if pipeline is not None:
        inputs = pipeline.get("inputs") or {}
        metric, goal = compare
        expected = {"target": data.get("target"), "task": data.get("task"), "metric": metric, "goal": goal, "model_name": model}
        if pipeline.get("type") != "pipeline":
            problems.add("retrain.pipeline", f"{section['pipeline']}: type {pipeline.get('type')!r}, not pipeline")
        for key, value in expected.items():
            if value and inputs.get(key) != value:
                problems.add("retrain.pipeline", f"{section['pipeline']}: inputs.{key} is {inputs.get(key)!r}, but the workload's is {value!r}")
        asset = str((inputs.get("data") or {}).get("path", "")) if isinstance(inputs.get("data"), dict) else ""
        if not asset.startswith(f"azureml:{name}@") and not asset.startswith(f"azureml:{name}:"):
            problems.add("retrain.pipeline", f"{section['pipeline']}: inputs.data.path {asset!r} is not the workload's data (azureml:{name}@latest)")
        if when == "drifted" and GATE_STEP not in (pipeline.get("jobs") or {}):
            problems.add("retrain.when", f"drifted, but {section['pipeline']} has no {GATE_STEP!r} step (the monitor component) to gate it")
    schedule = files.get("schedule")
    if schedule is not None:
        trigger = schedule.get("trigger") or {}
        if (folder / str(schedule.get("create_job", ""))).resolve() != (folder / str(section.get("pipeline", ""))).resolve():
            problems.add("retrain.schedule", f"{section['schedule']}: create_job {schedule.get('create_job')!r} is not the pipeline {section.get('pipeline')!r}")
        _check_trigger(trigger, "retrain.schedule", section["schedule"], problems)
    environments = _environments(section.get("environments"), "retrain", problems)
    if len(files) < 2:
        return None
    return Retrain(folder / section["pipeline"], folder / section["schedule"], environments, gated=when == "drifted")


def _check_trigger(trigger: dict, key: str, file_name: str, problems: _Problems) -> None:
    """A schedule file's trigger: cron, with a cron expression and time zone Azure takes (infra/schedules.py)."""
    from infra.schedules import cron_problem, time_zone_problem

    if trigger.get("type") != "cron":
        problems.add(key, f"{file_name}: trigger.type {trigger.get('type')!r}; the stage sets cron triggers")
    elif problem := cron_problem(str(trigger.get("expression", ""))):
        problems.add(key, f"{file_name}: trigger.expression {problem}")
    if problem := time_zone_problem(str(trigger.get("time_zone", "UTC"))):
        problems.add(key, f"{file_name}: trigger.time_zone {problem}")


def _environments(section, prefix: str, problems: _Problems) -> dict:
    """A schedule's per-environment overrides, checked: {environment: {enabled, cron}}."""
    from infra.schedules import cron_problem

    environments = section or {}
    if not isinstance(environments, dict):
        problems.add(f"{prefix}.environments", "a mapping: environment name -> {enabled, cron}")
        return {}
    for environment, override in environments.items():
        key = f"{prefix}.environments.{environment}"
        if not isinstance(override, dict) or set(override) - {"enabled", "cron"}:
            problems.add(key, f"{override!r}: a mapping of enabled (true/false) and cron")
            continue
        if "enabled" in override and not isinstance(override["enabled"], bool):
            problems.add(f"{key}.enabled", f"{override['enabled']!r}: true or false")
        if "cron" in override and (problem := cron_problem(str(override["cron"]))):
            problems.add(f"{key}.cron", problem)
    return environments


def _monitor(section, folder: Path, data: dict, problems: _Problems) -> Monitor:
    """The monitor section, checked: collection, retention, the monitor schedule (its signals and thresholds as
    the monitor reads them, its task and target the workload's) and the demo's drift; absent, the defaults."""
    spec = source_module("monitor_spec")
    if section is None:
        return Monitor()
    if not isinstance(section, dict):
        problems.add("monitor", f"a mapping: {', '.join(MONITOR_KEYS)}")
        return Monitor()
    for key in sorted(set(section) - set(MONITOR_KEYS)):
        problems.add(f"monitor.{key}", f"not a monitor key; known: {', '.join(MONITOR_KEYS)}")
    collect = section.get("collect", True)
    if not isinstance(collect, bool):
        problems.add("monitor.collect", f"{collect!r}: true or false")
    rate = section.get("sampling_rate", 1.0)
    # the deployment's data_collector.sampling_rate: "a number in range (0.0-1.0)" (azure-ai-ml DataCollectorSchema)
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= 1:
        problems.add("monitor.sampling_rate", f"{rate!r}: the share of requests collected, above 0 and at most 1")
    keep = section.get("keep_days")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        problems.add("monitor.keep_days", f"{keep!r}: a whole number of days, at least 1 (or leave it out: kept until deleted)")
    schedule = None
    if section.get("schedule") is not None:
        schedule = folder / str(section["schedule"])
        if not schedule.is_file():
            problems.add("monitor.schedule", f"a YAML file in this folder, not found: {schedule}")
            schedule = None
    if schedule is not None:
        try:
            spec.read_signals(schedule)  # the file reads as YAML with signals: its other keys can be checked
        except spec.SpecError as error:
            problems.add("monitor.schedule", str(error))
        else:
            document = load_yaml(schedule.read_text())
            definition = document.get("create_monitor") or {}
            task = (definition.get("monitoring_target") or {}).get("ml_task")
            if data.get("task") and task != data["task"]:
                problems.add("monitor.schedule", f"{schedule.name}: monitoring_target.ml_task {task!r}, but the workload's task is {data['task']!r}")
            for signal_name, signal in definition["monitoring_signals"].items():
                columns = (signal.get("reference_data") or {}).get("data_column_names") or {}
                if data.get("target") and columns.get("target_column", data["target"]) != data["target"]:
                    problems.add("monitor.schedule", f"{schedule.name}: {signal_name}.reference_data.data_column_names.target_column "
                                 f"{columns['target_column']!r}, but the workload's target is {data['target']!r}")  # fmt: skip
            _check_trigger(document.get("trigger") or {}, "monitor.schedule", schedule.name, problems)
    environments = _environments(section.get("environments"), "monitor", problems)
    if environments and schedule is None:
        problems.add("monitor.environments", "per-environment settings of a monitor with no schedule file (monitor.schedule)")
    demo = section.get("demo") or {}
    if not isinstance(demo, dict):
        problems.add("monitor.demo", "a mapping: column -> {scale: number} or {value: category, share: 0-1}")
        demo = {}
    for column, change in demo.items():
        key = f"monitor.demo.{column}"
        if column == data.get("target"):
            problems.add(key, "the target: the demo drifts what the endpoint receives, which has no target")
        elif not isinstance(change, dict) or set(change) not in ({"scale"}, {"value", "share"}):
            problems.add(key, f"{change!r}: {{scale: number}} (a number column) or {{value: category, share: 0-1}}")
        elif "scale" in change and (isinstance(change["scale"], bool) or not isinstance(change["scale"], (int, float))):
            problems.add(f"{key}.scale", f"{change['scale']!r}: a number")
        elif "share" in change and (isinstance(change["share"], bool) or not isinstance(change["share"], (int, float)) or not 0 < change["share"] <= 1):
            problems.add(f"{key}.share", f"{change['share']!r}: the share of rows relabelled, above 0 and at most 1")
    return Monitor(collect=collect is True, sampling_rate=float(rate) if isinstance(rate, (int, float)) else 1.0,
                   keep_days=keep if isinstance(keep, int) else None, schedule=schedule, environments=environments,
                   demo=demo)  # fmt: skip


def _check_spec(spec: Path, data: dict, task: str | None) -> str | None:
    """Why a candidate's spec does not fit its workload, or None: a job type the flow runs, and an AutoML
    job on the workload's task and target."""
    try:
        content = load_yaml(spec.read_text())
    except yaml.YAMLError as error:
        return f"{spec.name}: not valid YAML: {error}"
    kind = content.get("type") if isinstance(content, dict) else None
    if kind not in JOB_TYPES:
        return f"{spec.name}: job type {kind!r}; the flow runs {', '.join(JOB_TYPES)} jobs"
    if kind == "automl":
        if task and content.get("task") != task:
            return f"{spec.name}: an AutoML {content.get('task')} job in a {task} workload"
        if data.get("target") and content.get("target_column_name") != data["target"]:
            return f"{spec.name}: target_column_name {content.get('target_column_name')!r}, but the data's target is {data['target']!r}"
    return None


def load_workloads(names: Iterable[str] = (), root: Path = WORKLOADS_DIR) -> list[Workload]:
    """Every workload under `root` (or those named), in name order; a name given twice, a name two folders
    declare, or a name that is not there is an error."""
    folders = sorted(folder for folder in Path(root).iterdir() if (folder / WORKLOAD_FILE).is_file()) if Path(root).is_dir() else []
    if not folders:
        raise WorkloadError(f"{root}: no workloads (folders with a {WORKLOAD_FILE})")
    workloads = [load_workload(folder) for folder in folders]
    declared = [workload.name for workload in workloads]
    twice = sorted({name for name in declared if declared.count(name) > 1})
    if twice:
        raise WorkloadError(f"{root}: workload name(s) declared twice: {', '.join(twice)}")
    wanted = list(names)
    unknown = sorted(set(wanted) - set(declared))
    if unknown:
        raise WorkloadError(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(declared)}")
    return [workload for workload in workloads if not wanted or workload.name in wanted]


def _extract(archive: bytes, member: str) -> bytes:
    *nested, name = member.split("/")
    for inner in nested:
        archive = zipfile.ZipFile(io.BytesIO(archive)).read(inner)
    return zipfile.ZipFile(io.BytesIO(archive)).read(name)


def locate_data(workload: Workload, data_dir: Path | None, download_dir: Path, offline: bool = False) -> Path | None:
    """The workload's data file on this machine: `<data_dir>/<file>`, a source inside the repository, or the
    source downloaded once (its archive member extracted) to `<download_dir>/<file>`. None when only a
    download could get it and `offline` forbids that."""
    entry = workload.data
    if data_dir is not None and (Path(data_dir) / entry.file).is_file():
        return Path(data_dir) / entry.file
    if not entry.is_url:
        source = (workload.folder / entry.source).resolve()
        if not source.is_file():
            raise WorkloadError(f"{workload.file}: data.source: file not found: {source}")
        return source
    downloaded = Path(download_dir) / entry.file
    if downloaded.is_file():
        return downloaded
    if offline:
        return None
    try:
        with urlopen(entry.source, timeout=120) as response:
            content = response.read()
        if entry.member:
            content = _extract(content, entry.member)
    except (OSError, zipfile.BadZipFile, KeyError) as error:
        member = f" (the archive member {entry.member})" if entry.member else ""
        raise FlowError(
            f"data file {entry.file} not found in {data_dir}, and downloading it from {entry.source} failed: "
            f"{error}. Download it{member} into {data_dir} yourself, or point --data-dir at the folder that "
            f"holds it (workload {workload.name}: {workload.file})"
        ) from None
    downloaded.parent.mkdir(parents=True, exist_ok=True)
    partial = downloaded.with_name(downloaded.name + ".part")  # never a half-written file under the real name
    partial.write_bytes(content)
    partial.replace(downloaded)
    return downloaded


def catalog(workloads: Iterable[Workload]) -> dict[str, CatalogEntry]:
    """The data the workloads read, by data asset name."""
    return {workload.data.key: workload.data for workload in workloads}
