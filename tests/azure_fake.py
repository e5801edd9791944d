"""An in-memory Azure ML workspace behind a real `MLClient`: its operations (`workspaces`, `jobs`, `data`,
`environments`, `models`, `online_endpoints`, `online_deployments`, `compute`, `batch_endpoints`,
`batch_deployments`, `schedules`) are replaced by fakes that keep state like the service does and record every entity
sent. Optional latencies per operation make it the simulated client of `benchmarks/stage.py`. Failures are
raised as the SDKs raise them: the HttpResponseError of an ARM client (status and `error.code` parsed from the
body) or of azure-storage-blob (`error_code`).
"""

from __future__ import annotations

import copy
import csv
import json
import shutil
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

from azure.ai.ml import MLClient
from azure.ai.ml.constants._deployment import DEFAULT_MDC_PATH
from azure.ai.ml.entities import Data, EndpointAadToken, EndpointAuthKeys, EndpointAuthToken, JobSchedule, MonitorSchedule
from azure.ai.ml.entities._schedule.trigger import TriggerBase
from azure.core.credentials import AccessToken
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.storage.blob import StorageErrorCode

from infra import outputs as keys
from jobs.azure.credentials import Backoff
from jobs.azure.target import AUTOML_TEST_RUN_TYPE, RUN_TYPE_PROPERTY
from jobs.workloads import load_workloads

# the job statuses a run goes through, as Azure ML reports them
PROGRESS = ("Queued", "Running")


class FakeCredential:
    """Fails with `errors` in turn (or always, with `fail`), then answers a token."""

    def __init__(self, fail: bool = False, errors: tuple[Exception, ...] = ()):
        self.fail, self.errors, self.calls = fail, list(errors), 0

    def get_token(self, *scopes, **kwargs) -> AccessToken:
        self.calls += 1
        if self.fail:
            raise ClientAuthenticationError(
                "DefaultAzureCredential failed to retrieve a token from the included credentials.\n"
                "Attempted credentials:\n\tEnvironmentCredential: not configured"
            )
        if self.errors:
            raise self.errors.pop(0)
        return AccessToken("fake-token-never-printed", int(time.time()) + 3600)


class FakeClock:
    """A clock that only moves when slept on: retries and backoff without waiting."""

    def __init__(self):
        self.now, self.sleeps = 0.0, []
        self.lock = threading.Lock()

    def sleep(self, seconds: float) -> None:
        with self.lock:
            self.sleeps.append(seconds)
            self.now += seconds

    def backoff(self, first: float = 10, longest: float = 120, budget: float = 15 * 60) -> Backoff:
        return Backoff(first=first, longest=longest, budget=budget, sleep=self.sleep, clock=lambda: self.now)


class _Response:
    """What HttpResponseError reads from an HTTP response."""

    def __init__(self, status: int, reason: str, body: str):
        self.status_code, self.reason, self.body = status, reason, body
        self.headers: dict[str, str] = {}

    def text(self, encoding=None) -> str:
        return self.body


def arm_error(status: int, code: str, message: str) -> HttpResponseError:
    """An ARM client's error, e.g. 403 AuthorizationFailed while a role assignment propagates."""
    body = json.dumps({"error": {"code": code, "message": message}})
    return HttpResponseError(response=_Response(status, "Forbidden" if status == 403 else "Error", body))


def storage_error(status: int, code: str, message: str) -> HttpResponseError:
    """azure-storage-blob's error (process_storage_error): the code in `error_code`, as a StorageErrorCode."""
    error = HttpResponseError(message=f"{message}\nErrorCode:{code}", response=_Response(status, "Forbidden", ""))
    error.error_code = StorageErrorCode(code)
    return error


def entra_error(code: str, text: str) -> ClientAuthenticationError:
    """azure-identity's error for an Entra ID token request that Entra refused (aad_client_base.py)."""
    return ClientAuthenticationError(message=f"Microsoft Entra ID error '(invalid_client) {code}: {text}'")


class Poller:
    """An LROPoller's surface: wait(timeout), done(), result(). A poller that is `stuck` never finishes."""

    def __init__(self, value=None, error: Exception | None = None, stuck: bool = False):
        self.value, self.error, self.stuck = value, error, stuck

    def wait(self, timeout: float | None = None) -> None:
        if self.stuck:
            time.sleep(min(timeout or 0.0, 0.01))
        elif self.error:
            raise self.error

    def done(self) -> bool:
        return not self.stuck

    def result(self, timeout: float | None = None):
        self.wait(timeout)
        return self.value


@dataclass
class Simulation:
    """What the fake workspace does: each candidate's held-out metric (MAE of a regressor, AUC of a
    classifier) by job key, failures, latencies (seconds)."""

    mae: dict[str, float] = field(
        default_factory=lambda: {
            "housing-lightgbm": 27000.0,
            "housing-mlp-sweep": 31000.0,
            "housing-automl-regression": 30500.0,
        }
    )
    auc: dict[str, float] = field(
        default_factory=lambda: {"bank-marketing-lightgbm": 0.93, "bank-marketing-automl-classification": 0.945}
    )
    job_seconds: dict[str, float] = field(default_factory=dict)  # per job key; default `job_default`
    job_default: float = 0.05
    latency: dict[str, float] = field(default_factory=dict)  # per operation name, e.g. "jobs.create"
    failing_jobs: tuple[str, ...] = ()
    failing_deployments: tuple[str, ...] = ()  # endpoint kinds whose deployment fails to provision
    stuck_deployments: tuple[str, ...] = ()  # endpoint kinds whose deployment never finishes provisioning
    broken_scoring: tuple[str, ...] = ()  # endpoint kinds whose new deployment answers garbage
    # the Kubernetes endpoint's scoring host: the inference router's IP, or the extension's sslCname
    kubernetes_host: str = "20.50.60.70"
    # the run-history error of every batch scoring job (None: they complete and write their output)
    failing_batch: str | None = None
    # every online endpoint's key (or token): what a test proves is sent and never printed
    endpoint_key: str = "endpoint-key-never-printed"
    # AutoML's model test run under the best child: its final status (None: AutoML never starts one),
    # how many looks at the best child's children it stays Running after the parent completed, and
    # whether run history shows its run type
    test_run_status: str | None = "Completed"
    test_run_polls: int = 0
    test_run_typed: bool = True
    # data uploads refused (403 AuthorizationFailure) before the storage firewall lets this machine in
    storage_denials: int = 0
    # what successive reads of the workspace raise before they succeed (e.g. 403 AuthorizationFailed)
    workspace_errors: list = field(default_factory=list)
    # jobs stay Running until this many were submitted: a sequential submitter never gets there
    wait_for_submissions: int = 0
    submission_deadline: float = 5.0
    calls: Counter = field(default_factory=Counter)  # operations made, by name
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def sleep(self, operation: str) -> None:
        with self._lock:
            self.calls[operation] += 1
        seconds = self.latency.get(operation, 0.0)
        if seconds:
            time.sleep(seconds)


WORKLOADS = load_workloads()
# every job's key, and each retraining pipeline's (`<workload>-retrain`)
JOB_KEYS = sorted([job.key for workload in WORKLOADS for job in workload.jobs]
                  + [f"{workload.name}-retrain" for workload in WORKLOADS if workload.retrain], key=len, reverse=True)  # fmt: skip
# the workloads whose endpoints answer as classifiers: endpoint names start with the workload's name
CLASSIFIERS = tuple(workload.name for workload in WORKLOADS if workload.task == "classification")


def fake_answer(classifier: bool, record: dict):
    """The fake workspace's model, online and in batch alike: a figure from the record's numeric fields (a CSV
    field counts when it reads as a number), so both answer the same record the same way."""
    total = 0.0
    for value in record.values():
        try:
            total += float(value) if value not in (None, "") else 0.0
        except (TypeError, ValueError):
            pass
    if not classifier:
        return round(100000.0 + total, 3)
    probability = round(total % 997 / 997, 6)
    return {"label": "yes" if probability >= 0.5 else "no", "probability": probability}


def _key(name: str) -> str:
    """The flow's job key of an Azure job name (`<key>-<digest>[-r<attempt>]`)."""
    return next(key for key in JOB_KEYS if name.startswith(f"{key}-"))


def held_out(sim: Simulation, key: str, automl_names: bool = False) -> dict[str, float]:
    """The held-out metrics a job logs: as train.py names them, or as AutoML's test run does."""
    if key in sim.mae:
        mae = sim.mae[key]
        if automl_names:
            return {"mean_absolute_error": mae, "root_mean_squared_error": mae * 1.5}
        return {"MAE": mae, "RMSE": mae * 1.5}
    auc = sim.auc[key]
    if automl_names:
        return {"AUC_weighted": auc, "accuracy": 0.9, "f1_score_binary": 0.5}
    return {"AUC_weighted": auc, "accuracy": 0.9, "F1": 0.5}


class AssetOperations:
    def __init__(self, sim: Simulation, kind: str):
        self.sim, self.kind = sim, kind
        self.store: dict[tuple[str, str], object] = {}
        self.created: list = []
        self.lock = threading.Lock()

    def get(self, name: str, version: str | None = None, label: str | None = None):
        self.sim.sleep(f"{self.kind}.get")
        with self.lock:
            if label == "latest":
                versions = [entity for (n, _), entity in self.store.items() if n == name]
                if versions:
                    return versions[-1]
            elif (name, str(version)) in self.store:
                return self.store[(name, str(version))]
        raise ResourceNotFoundError(f"{self.kind} {name}:{version or label} not found")

    def list(self, name: str):
        self.sim.sleep(f"{self.kind}.list")
        with self.lock:
            return [entity for (n, _), entity in self.store.items() if n == name]

    def create_or_update(self, entity):
        self.sim.sleep(f"{self.kind}.create")
        with self.lock:
            if self.kind == "data" and self.sim.storage_denials > 0:  # data assets upload their files
                self.sim.storage_denials -= 1
                raise storage_error(403, "AuthorizationFailure", "This request is not authorized to perform this operation.")
            self.store[(entity.name, str(entity.version))] = entity
            self.created.append(entity)
        return entity


# the conda file Azure AutoML saves beside a model (its MLflow model's conda.yaml), as AutoML 1.62 writes it
AUTOML_CONDA = {
    "name": "project_environment",
    "channels": ["anaconda", "conda-forge"],
    "dependencies": [
        "python=3.10.19",
        {"pip": ["azureml-train-automl-runtime==1.62.0", "inference-schema", "azureml-interpret==1.62.0",
                 "azureml-defaults==1.62.0"]},
        "numpy==1.23.5",
        "pandas==1.5.3",
        "scikit-learn==1.5.1",
    ],
}  # fmt: skip
# what MLflow writes for a model the training scripts save
MLFLOW_CONDA = {"name": "mlflow-env", "channels": ["conda-forge"],
                "dependencies": ["python=3.11.7", "pip", {"pip": ["mlflow==3.17.2", "scikit-learn==1.9.1"]}]}  # fmt: skip


class ModelOperations(AssetOperations):
    """Models, which also download as azure-ai-ml's ModelOperations.download lays them out:
    `<download_path>/<name>/<the last folder of the model's path>/`, here its MLmodel and conda.yaml."""

    def __init__(self, sim: Simulation):
        super().__init__(sim, "models")
        self.downloads: list[tuple[str, str]] = []

    def download(self, name: str, version: str, download_path=".") -> None:
        self.sim.sleep("models.download")
        with self.lock:
            model = self.store[(name, str(version))]
        folder = Path(download_path) / name / model.path.rstrip("/").rsplit("/", 1)[-1]
        if Path(model.path).is_dir():  # registered from files on this machine (a promotion): those files
            shutil.copytree(model.path, folder, dirs_exist_ok=True)
            with self.lock:
                self.downloads.append((name, str(version)))
            return
        folder.mkdir(parents=True, exist_ok=True)
        automl = "/outputs/mlflow-model" in model.path
        flavor = {"loader_module": "mlflow.sklearn", "env": {"conda": "conda.yaml"}, "model_path": "model.pkl"}
        (folder / "MLmodel").write_text(json.dumps({"flavors": {"python_function": flavor}}))
        (folder / "conda.yaml").write_text(json.dumps(AUTOML_CONDA if automl else MLFLOW_CONDA))
        with self.lock:
            self.downloads.append((name, str(version)))


class FakeTracking:
    """MLflow's view of the runs: metrics and tags per run id."""

    def __init__(self, sim: Simulation):
        self.sim = sim
        self.runs: dict[str, SimpleNamespace] = {}

    def add(self, run_id: str, metrics=None, tags=None, parent: str | None = None) -> None:
        tags = dict(tags or {}, **({"mlflow.parentRunId": parent} if parent else {}))
        info = SimpleNamespace(run_id=run_id, experiment_id="1")
        self.runs[run_id] = SimpleNamespace(info=info, data=SimpleNamespace(metrics=dict(metrics or {}), tags=tags))

    def get_run(self, run_id: str):
        self.sim.sleep("mlflow.get_run")
        return self.runs[run_id]


class JobOperations:
    def __init__(self, sim: Simulation, tracking: FakeTracking):
        self.sim, self.tracking = sim, tracking
        self.submitted: list = []
        self.runs: dict[str, dict] = {}
        self.children: dict[str, list[dict]] = {}  # child runs (AutoML's test run) by parent
        self.listed: Counter = Counter()  # looks at each parent's children
        self.lock = threading.Lock()
        self._runs_operations = SimpleNamespace(get_run_details=self._run_details)

    def _view(self, name: str) -> SimpleNamespace:
        run = self.runs[name]
        elapsed = time.monotonic() - run["started"]
        status = run["final"]
        waiting = self.sim.wait_for_submissions and len(self.submitted) < self.sim.wait_for_submissions
        if waiting and elapsed > self.sim.submission_deadline:
            status = "Failed"
            run["error"] = "the other jobs were never submitted while this one ran: submissions are not concurrent"
        elif waiting or elapsed < run["seconds"]:
            status = PROGRESS[0] if elapsed < run["seconds"] * 0.2 else PROGRESS[1]
        return SimpleNamespace(
            name=name,
            status=status,
            type=run["type"],
            studio_url=f"https://ml.azure.com/runs/{name}",
            properties=run["properties"] if status == "Completed" else {},
        )

    def get(self, name: str):
        self.sim.sleep("jobs.get")
        with self.lock:
            if name not in self.runs:
                raise ResourceNotFoundError(f"job {name} not found")
            return self._view(name)

    def list(self, parent_job_name: str | None = None, **kwargs):
        """The children of a run, as run history answers them (azure-ai-ml's _BaseJob: name, status,
        properties, tags). AutoML's test run logs its metrics when it completes."""
        self.sim.sleep("jobs.list")
        with self.lock:
            self.listed[parent_job_name] += 1
            views = []
            for child in self.children.get(parent_job_name, []):
                status = child["final"]
                if self.listed[parent_job_name] <= child["polls"]:
                    status = PROGRESS[1]
                elif status == "Completed":
                    self.tracking.runs[child["name"]].data.metrics.update(child["metrics"])
                properties = {RUN_TYPE_PROPERTY: AUTOML_TEST_RUN_TYPE} if self.sim.test_run_typed else {}
                views.append(SimpleNamespace(name=child["name"], status=status, properties=properties, tags={}))
            return views

    def create_or_update(self, entity):
        self.sim.sleep("jobs.create")
        key = _key(entity.name)
        final = "Failed" if key in self.sim.failing_jobs else "Completed"
        with self.lock:
            self.submitted.append(copy.copy(entity))
            self.runs[entity.name] = {
                "started": time.monotonic(),
                "seconds": self.sim.job_seconds.get(key, self.sim.job_default),
                "final": final,
                "type": entity.type,
                "properties": {},
                "error": "UserError: train.py exited with code 1" if final == "Failed" else None,
            }
            self._record_runs(key, entity)
            return self._view(entity.name)

    def _record_runs(self, key: str, entity) -> None:
        name, run = entity.name, self.runs[entity.name]
        if entity.type == "sweep":
            best = f"{name}_3"
            run["properties"] = {"best_child_run_id": best}
            self.tracking.add(best, held_out(self.sim, key), parent=name)
        elif entity.type == "automl":
            best = f"{name}_7"
            self.tracking.add(name, tags={"automl_best_child_run_id": best})
            # validation metrics on the child, better than the held-out ones (which a stage must not use);
            # the held-out ones on its model test run, once that completes
            validation = {metric: value * 0.9 if "error" in metric else min(value * 1.02, 1.0)
                          for metric, value in held_out(self.sim, key, automl_names=True).items()}  # fmt: skip
            self.tracking.add(best, validation, parent=name)
            if self.sim.test_run_status is not None:
                test = f"{best}_test"
                self.tracking.add(test, parent=best)
                self.children[best] = [{
                    "name": test,
                    "final": self.sim.test_run_status,
                    "polls": self.sim.test_run_polls,
                    "metrics": held_out(self.sim, key, automl_names=True),
                    "error": "ModelTestError: predictions failed on the test data",
                }]  # fmt: skip
        elif entity.type != "pipeline":  # a pipeline's steps log their own metrics
            self.tracking.add(name, held_out(self.sim, key))

    def start_batch_job(self, name: str, output_file: str, output: str) -> SimpleNamespace:
        """A batch endpoint's scoring job (a pipeline job tagged azureml.batchrun), with the output it writes."""
        with self.lock:
            self.runs[name] = {
                "started": time.monotonic(),
                "seconds": self.sim.job_default,
                "final": "Failed" if self.sim.failing_batch else "Completed",
                "type": "pipeline",
                "properties": {},
                "error": self.sim.failing_batch,
                "output": (output_file, output),
            }
            return self._view(name)

    def download(self, name: str, *, download_path=".", output_name: str | None = None, all: bool = False) -> None:
        """azure-ai-ml 1.35 writes a batch job's scoring output (`score`) straight into download_path; a job not
        in a terminal state is refused (JobException)."""
        job = self.get(name)
        if job.status not in ("Completed", "Failed", "Canceled"):
            raise RuntimeError(f"This job is in state {job.status}. Download is allowed only in terminal states")
        if "output" in self.runs[name] and (output_name == "score" or all):
            file_name, text = self.runs[name]["output"]
            Path(download_path).mkdir(parents=True, exist_ok=True)
            (Path(download_path) / file_name).write_text(text)

    def _run_details(self, name: str):
        run = self.runs.get(name) or next(c for runs in self.children.values() for c in runs if c["name"] == name)
        return SimpleNamespace(error=SimpleNamespace(error=SimpleNamespace(message=run["error"])))


class EndpointOperations:
    def __init__(self, sim: Simulation, deployments: "DeploymentOperations"):
        self.sim, self.deployments = sim, deployments
        self.store: dict[str, object] = {}
        self.sent: list = []  # every endpoint entity sent, as sent
        # ("traffic", endpoint, traffic sent) and ("invoke", endpoint, deployment), in order
        self.events: list[tuple[str, str, object]] = []
        self.lock = threading.Lock()

    def get(self, name: str):
        self.sim.sleep("online_endpoints.get")
        with self.lock:
            if name not in self.store:
                raise ResourceNotFoundError(f"online endpoint {name} not found")
            return copy.copy(self.store[name])

    def begin_create_or_update(self, endpoint):
        self.sim.sleep("online_endpoints.create")
        sent = copy.copy(endpoint)
        sent.traffic = dict(endpoint.traffic or {})
        with self.lock:
            self.sent.append(sent)
            self.events.append(("traffic", endpoint.name, sent.traffic))
            if getattr(endpoint, "compute", None):  # Kubernetes: the inference router's address
                scheme = "http" if self.sim.kubernetes_host[0].isdigit() else "https"
                host = f"{scheme}://{self.sim.kubernetes_host}/api/v1/endpoint/{endpoint.name}"
            else:
                host = f"https://{endpoint.name}.westeurope.inference.ml.azure.com"
            live = SimpleNamespace(
                name=endpoint.name,
                auth_mode=endpoint.auth_mode,
                tags=dict(endpoint.tags or {}),
                traffic=sent.traffic,
                scoring_uri=f"{host}/score",
                openapi_uri=f"{host}/swagger.json",
                provisioning_state="Succeeded",
            )
            self.store[endpoint.name] = live
        return Poller(copy.copy(live))

    def get_keys(self, name: str):
        """The endpoint's credentials as the SDK answers them for its auth mode (OnlineEndpointOperations.get_keys):
        the keys under `key`, a token under `aml_token`, the caller's Entra token under `aad_token`."""
        self.sim.sleep("online_endpoints.get_keys")
        with self.lock:
            if name not in self.store:
                raise ResourceNotFoundError(f"online endpoint {name} not found")
            auth_mode = self.store[name].auth_mode
        if auth_mode == "key":
            return EndpointAuthKeys(primary_key=self.sim.endpoint_key, secondary_key=f"{self.sim.endpoint_key}-secondary")
        if auth_mode == "aml_token":
            return EndpointAuthToken(access_token=self.sim.endpoint_key, token_type="Bearer")
        return EndpointAadToken(AccessToken(self.sim.endpoint_key, int(time.time()) + 3600))

    def invoke(self, endpoint_name: str, request_file: str, deployment_name: str | None = None, **kwargs):
        self.sim.sleep("online_endpoints.invoke")
        with self.lock:
            self.events.append(("invoke", endpoint_name, deployment_name))
        rows = json.loads(Path(request_file).read_text())["data"]
        deployment = self.deployments.store.get((endpoint_name, deployment_name))
        if deployment is not None and self.deployments.kind_of(deployment) in self.sim.broken_scoring:
            return json.dumps({"message": "model failed to load"})
        return json.dumps([fake_answer(endpoint_name.startswith(CLASSIFIERS), row) for row in rows])


class DeploymentOperations:
    def __init__(self, sim: Simulation, data: "AssetOperations"):
        self.sim, self.data = sim, data
        self.store: dict[tuple[str, str], object] = {}
        self.sent: list = []
        self.deleted: list[tuple[str, str]] = []
        self.lock = threading.Lock()

    @staticmethod
    def kind_of(deployment) -> str:
        return "kubernetes" if str(deployment.type).lower() == "kubernetes" else "managed"

    def begin_create_or_update(self, deployment):
        self.sim.sleep("online_deployments.create")
        self._register_collections(deployment)
        with self.lock:
            self.sent.append(copy.copy(deployment))
        if self.kind_of(deployment) in self.sim.failing_deployments:
            return Poller(error=HttpResponseError("Deployment failed: ResourceNotReady: container crashed"))
        if self.kind_of(deployment) in self.sim.stuck_deployments:
            return Poller(stuck=True)
        with self.lock:
            self.store[(deployment.endpoint_name, deployment.name)] = deployment
        return Poller(deployment)

    def _register_collections(self, deployment) -> None:
        """What azure-ai-ml does before it sends a deployment with a data collector
        (OnlineDeploymentOperations._register_collection_data_assets): a uri_folder data asset per collection, named
        and placed as the collection says, else `<endpoint>-<deployment>-<collection>` under DEFAULT_MDC_PATH, version 1;
        one that exists already is left as it is."""
        for name, collection in (deployment.data_collector.collections.items() if deployment.data_collector else ()):
            data = collection.data
            asset = Data(name=(data and data.name) or f"{deployment.endpoint_name}-{deployment.name}-{name}",
                         version=str((data and data.version) or "1"), type="uri_folder",
                         path=(data and data.path) or f"{DEFAULT_MDC_PATH}/{deployment.endpoint_name}/{deployment.name}/{name}")  # fmt: skip
            try:
                self.data.get(asset.name, asset.version)
            except ResourceNotFoundError:
                self.data.create_or_update(asset)

    def list(self, endpoint_name: str):
        self.sim.sleep("online_deployments.list")
        with self.lock:
            return [d for (e, _), d in self.store.items() if e == endpoint_name]

    def get(self, name: str, endpoint_name: str):
        self.sim.sleep("online_deployments.get")
        with self.lock:
            if (endpoint_name, name) not in self.store:
                raise ResourceNotFoundError(f"deployment {name} of {endpoint_name} not found")
            return self.store[(endpoint_name, name)]

    def begin_delete(self, name: str, endpoint_name: str):
        self.sim.sleep("online_deployments.delete")
        with self.lock:
            self.store.pop((endpoint_name, name), None)
            self.deleted.append((endpoint_name, name))
        return Poller()

    def get_logs(self, name: str, endpoint_name: str, lines: int = 50, **kwargs) -> str:
        return f"Traceback: {name} failed to load the model"


class ComputeOperations:
    """The workspace's computes by name; `instances` holds the compute instances' states (Running, Stopped...)."""

    def __init__(self, sim: Simulation):
        self.sim = sim
        self.instances: dict[str, str] = {}

    def get(self, name: str):
        self.sim.sleep("compute.get")
        if name not in self.instances:
            raise ResourceNotFoundError(f"compute {name} not found")
        # what azure-ai-ml's ComputeInstance shows of it
        return SimpleNamespace(name=name, type="computeinstance", state=self.instances[name])


class WorkspaceOperations:
    def __init__(self, sim: Simulation):
        self.sim = sim

    def get(self, name: str):
        self.sim.sleep("workspaces.get")
        if self.sim.workspace_errors:
            raise self.sim.workspace_errors.pop(0)
        uri = f"azureml://westeurope.api.azureml.ms/mlflow/v1.0/subscriptions/s/resourceGroups/rg/providers/Microsoft.MachineLearningServices/workspaces/{name}"
        return SimpleNamespace(name=name, mlflow_tracking_uri=uri)


class BatchDeploymentOperations:
    def __init__(self, sim: Simulation):
        self.sim = sim
        self.store: dict[tuple[str, str], object] = {}
        self.sent: list = []
        self.lock = threading.Lock()

    def get(self, name: str, endpoint_name: str):
        self.sim.sleep("batch_deployments.get")
        with self.lock:
            if (endpoint_name, name) not in self.store:
                raise ResourceNotFoundError(f"batch deployment {name} not found under {endpoint_name}")
            return self.store[(endpoint_name, name)]

    def begin_create_or_update(self, deployment):
        self.sim.sleep("batch_deployments.create")
        with self.lock:
            self.sent.append(copy.copy(deployment))
            live = copy.copy(deployment)
            live._provisioning_state = "Succeeded"  # read-only on the entity: ARM computes it
            self.store[(deployment.endpoint_name, deployment.name)] = live
        return Poller(live)


class BatchEndpointOperations:
    """Batch endpoints; invoking one starts a scoring job whose output is what batch_score.py answers for the
    input folder's files, written as the service appends it (space-separated, no header)."""

    def __init__(self, sim: Simulation, deployments: BatchDeploymentOperations, jobs: JobOperations):
        self.sim, self.deployments, self.jobs = sim, deployments, jobs
        self.store: dict[str, SimpleNamespace] = {}
        self.sent: list = []
        self.invoked: list[dict] = []
        self.lock = threading.Lock()

    def get(self, name: str):
        self.sim.sleep("batch_endpoints.get")
        with self.lock:
            if name not in self.store:
                raise ResourceNotFoundError(f"batch endpoint {name} not found")
            return copy.copy(self.store[name])

    def begin_create_or_update(self, endpoint):
        self.sim.sleep("batch_endpoints.create")
        defaults = dict(endpoint.defaults or {})
        with self.lock:
            self.sent.append(copy.copy(endpoint))
            live = SimpleNamespace(
                name=endpoint.name,
                auth_mode=endpoint.auth_mode,
                tags=dict(endpoint.tags or {}),
                # the REST BatchEndpointDefaults the SDK passes through (batch_endpoint._from_rest_object)
                defaults=SimpleNamespace(deployment_name=defaults.get("deployment_name")),
                scoring_uri=f"https://{endpoint.name}.westeurope.inference.ml.azure.com/jobs",
                provisioning_state="Succeeded",
            )
            self.store[endpoint.name] = live
        return Poller(copy.copy(live))

    def invoke(self, endpoint_name: str, *, deployment_name: str | None = None, input=None, **kwargs):
        self.sim.sleep("batch_endpoints.invoke")
        with self.lock:
            if endpoint_name not in self.store:
                raise ResourceNotFoundError(f"batch endpoint {endpoint_name} not found")
            self.invoked.append({"endpoint": endpoint_name, "deployment": deployment_name, "input": input})
            deployment_name = deployment_name or self.store[endpoint_name].defaults.deployment_name
        # as the SDK's _validate_deployment_name refuses an unknown deployment
        deployment = self.deployments.get(deployment_name, endpoint_name=endpoint_name)
        name = f"batchjob-{len(self.invoked):04d}"
        output = _batch_output(Path(input.path), endpoint_name.startswith(CLASSIFIERS)) if not self.sim.failing_batch else ""
        self.jobs.start_batch_job(name, deployment.settings.output_file_name, output)
        return SimpleNamespace(name=name, status="Queued")


def _batch_output(folder: Path, classifier: bool) -> str:
    """batch_score.py's rows for a folder of CSV files, as fake_answer scores them: every data row scored, or
    one error row (its row empty) for a file that is not UTF-8 text."""
    import pandas as pd

    predictions = ["label", "probability"] if classifier else ["prediction"]
    rows = []
    for path in sorted(folder.iterdir()):
        try:
            records = list(csv.DictReader(path.read_text(encoding="utf-8").splitlines()))
        except UnicodeDecodeError as error:
            rows.append([path.name, None, "error", *[None] * len(predictions), f"cannot be read as UTF-8 CSV text: {error}"])
            continue
        for number, record in enumerate(records):
            answer = fake_answer(classifier, record)
            rows.append([path.name, number, "ok", *(answer.values() if classifier else [answer]), None])
    frame = pd.DataFrame(rows, columns=["file", "row", "status", *predictions, "error"]).astype({"row": "Int64"})
    return frame.to_csv(sep=" ", header=False, index=False)


class ScheduleOperations:
    """The workspace's schedules as ARM keeps them: the schedule's REST body as azure-ai-ml sends it, read back
    through the SDK's own translation with the provisioning state ARM sets. (A job schedule's pipeline is kept as
    sent: ARM would hold it with its components registered.)"""

    def __init__(self, sim: Simulation):
        self.sim = sim
        self.stored, self.writes = {}, []

    def get(self, name: str):
        self.sim.sleep("schedules.get")
        if name not in self.stored:
            raise ResourceNotFoundError(f"schedule {name} not found")
        body, job = self.stored[name]
        if job is None:
            return MonitorSchedule._from_rest_object(body)
        properties = body.properties
        return JobSchedule(
            name=name, trigger=TriggerBase._from_rest_object(properties.trigger), create_job=job,
            display_name=properties.display_name, description=properties.description, tags=properties.tags,
            is_enabled=properties.is_enabled, provisioning_state=properties.provisioning_state,
        )  # fmt: skip

    def begin_create_or_update(self, schedule):
        self.sim.sleep("schedules.create")
        if isinstance(schedule, JobSchedule):  # azure-ai-ml validates job schedules only (a monitor's has no schema)
            schedule._validate(raise_error=True)
        body = schedule._to_rest_object()
        body.properties.provisioning_state = "Succeeded"
        self.stored[schedule.name] = (body, schedule.create_job if isinstance(schedule, JobSchedule) else None)
        self.writes.append(schedule.name)
        return Poller(self.get(schedule.name))


class FakeWorkspace:
    def __init__(self, sim: Simulation | None = None):
        self.sim = sim or Simulation()
        self.workspaces = WorkspaceOperations(self.sim)
        self.tracking = FakeTracking(self.sim)
        self.data = AssetOperations(self.sim, "data")
        self.environments = AssetOperations(self.sim, "environments")
        self.models = ModelOperations(self.sim)
        self.jobs = JobOperations(self.sim, self.tracking)
        self.online_deployments = DeploymentOperations(self.sim, self.data)
        self.online_endpoints = EndpointOperations(self.sim, self.online_deployments)
        self.compute = ComputeOperations(self.sim)
        self.batch_deployments = BatchDeploymentOperations(self.sim)
        self.batch_endpoints = BatchEndpointOperations(self.sim, self.batch_deployments, self.jobs)
        self.schedules = ScheduleOperations(self.sim)

    def client(self, outputs, credential=None) -> MLClient:
        ml_client = MLClient(
            credential or FakeCredential(),
            subscription_id=outputs[keys.SUBSCRIPTION_ID],
            resource_group_name=outputs[keys.RESOURCE_GROUP],
            workspace_name=outputs[keys.WORKSPACE],
        )
        for name in ("workspaces", "jobs", "data", "environments", "models", "online_endpoints", "online_deployments",
                     "compute", "batch_endpoints", "batch_deployments", "schedules"):  # fmt: skip
            setattr(ml_client, f"_{name}", getattr(self, name))
        return ml_client
