"""The Azure ML target of the post-provision flow: azure-ai-ml (v2) driven from a stack's outputs."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import Callable, Mapping, Protocol

from azure.ai.ml import MLClient
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError

from infra import outputs as keys
from jobs.azure import assets, batch, credentials, entities
from jobs.azure.assets import Asset
from jobs.azure.credentials import PROPAGATION, STORAGE_FIREWALL, Backoff, SignIn, first_line, with_retries
from jobs.azure.rollout import RolloutOptions, roll_out, score
from jobs.batch import BatchSummary
from jobs.flow import Endpoint, FlowError, Job, JobResult, RegisteredModel, Report, in_parallel, model_folder
from jobs.workloads import Workload

POLL_SECONDS = 30.0
ARM_SCOPE = "https://management.azure.com/.default"
MODEL_FOLDER = "model"
# where a model served in its own environment is downloaded to read its conda file (git-ignored)
MODEL_DOWNLOADS = assets.WORK_DIR.parent / "azure-models"
TERMINAL = ("Completed", "Failed", "Canceled", "NotResponding")
RETRYABLE = ("Failed", "Canceled", "NotResponding")
# AutoML starts its model test run under the best child once training ends, and it may still run after the
# parent completes (v1 docs: `test_run = next(best_run.get_children(type='automl.model_test'));
# test_run.wait_for_completion()`, how-to-configure-auto-train); it scores one model on the test rows
AUTOML_TEST_RUN_TYPE = "automl.model_test"
TEST_RUN_WAIT_S = 30 * 60
# where run history keeps a run's type when azure-ai-ml's Job entity drops `run_type` (azureml-core reads
# `run_type`, falling back to this property)
RUN_TYPE_PROPERTY = "azureml.runsource"
# AutoML's names for the held-out metrics the training scripts log, per task (computed the same way: for two
# classes, AUC_weighted averages two equal one-vs-rest AUCs, so it is the AUC tabular.py computes)
AUTOML_METRICS = {
    "regression": {
        "mean_absolute_error": "MAE",
        "root_mean_squared_error": "RMSE",
        "r2_score": "R2",
        "normalized_root_mean_squared_error": "NRMSE",
    },
    "classification": {"AUC_weighted": "AUC_weighted", "accuracy": "accuracy", "f1_score_binary": "F1"},
}


class Tracking(Protocol):
    """The slice of `mlflow.MlflowClient` the target reads run metrics and tags through."""

    def get_run(self, run_id: str): ...


class WorkspaceMlflow:
    """MLflow client on the workspace's tracking server, authenticated with the stage's Entra token.

    The `azureml://` tracking URI is the same server over https; MLflow sends MLFLOW_TRACKING_TOKEN as a
    bearer token, refreshed before each call (azure-identity caches it), so no azureml-mlflow plugin is needed.
    """

    _lock = threading.Lock()

    def __init__(self, ml_client: MLClient, credential):
        self._ml_client, self._credential, self._client = ml_client, credential, None

    def _call(self, method: str, *args, **kwargs):
        from mlflow import MlflowClient

        with self._lock:
            if self._client is None:
                workspace = self._ml_client.workspaces.get(self._ml_client.workspace_name)
                uri = workspace.mlflow_tracking_uri.replace("azureml://", "https://", 1)
                self._client = MlflowClient(tracking_uri=uri)
            os.environ["MLFLOW_TRACKING_TOKEN"] = self._credential.get_token(ARM_SCOPE).token
            return getattr(self._client, method)(*args, **kwargs)

    def get_run(self, run_id: str):
        return self._call("get_run", run_id)


def connect(
    outputs: Mapping[str, str | None],
    how: SignIn | None = None,
    report: Report = print,
    backoff: Backoff = PROPAGATION,
) -> tuple[MLClient, object]:
    """An MLClient on the stack's workspace, signed in as jobs/azure/credentials.py chooses (or `how`), and
    the credential. The first token and a read of the workspace fail here, with one clear message, rather
    than mid-run; while Entra ID and Azure RBAC catch up with the `pulumi up` that made the identity and
    its roles, they are retried, each time with a new credential (a fresh token sees new roles)."""
    how = how or credentials.sign_in(outputs)
    report(f"signing in {how.description}")

    def attempt() -> tuple[MLClient, object]:
        credential = how.new_credential()
        credential.get_token(ARM_SCOPE)
        ml_client = MLClient(
            credential,
            subscription_id=outputs[keys.SUBSCRIPTION_ID],
            resource_group_name=outputs[keys.RESOURCE_GROUP],
            workspace_name=outputs[keys.WORKSPACE],
        )
        ml_client.workspaces.get(outputs[keys.WORKSPACE])
        return ml_client, credential

    try:
        return with_retries(attempt, lambda e: credentials.access_transient(e, outputs, how.who), backoff, report)
    except ClientAuthenticationError as error:
        raise FlowError(f"could not authenticate to Azure {how.description}: {first_line(error)}\n  {how.advice}") from None
    except HttpResponseError as error:
        raise FlowError(
            f"workspace {outputs[keys.WORKSPACE]} (resource group {outputs[keys.RESOURCE_GROUP]}, subscription "
            f"{outputs[keys.SUBSCRIPTION_ID]}): {first_line(error)}"
        ) from None


class AzureTarget:
    name = "azure"

    def __init__(
        self,
        ml_client: MLClient,
        outputs: Mapping[str, str | None],
        tracking: Tracking,
        data_dir: Path | None = None,
        poll_seconds: float = POLL_SECONDS,
        test_run_wait_s: float = TEST_RUN_WAIT_S,
        storage_backoff: Backoff = STORAGE_FIREWALL,
        rollout: RolloutOptions = RolloutOptions(),
        credential=None,
    ):
        self.ml_client, self.outputs, self.tracking = ml_client, outputs, tracking
        self.credential = credential  # the stack's identity, for other clients it signs (the ML registry's)
        self.data_dir, self.poll_seconds, self.test_run_wait_s = data_dir, poll_seconds, test_run_wait_s
        self.storage_backoff, self.rollout = storage_backoff, rollout
        self.assets: dict[str, Asset] = {}
        self.workloads: dict[str, Workload] = {}
        self._serving: dict[tuple[str, str], Mapping[str, Asset]] = {}
        self._serving_lock = threading.Lock()

    # -- assets ---------------------------------------------------------------------------------
    def prepare(self, workloads: list[Workload], report: Report, data: bool = True) -> None:
        """Register the workloads' data (unless `data` is False) and the environments, all at once."""
        self.workloads = {workload.name: workload for workload in workloads}
        registered = [(self.ml_client.environments, asset) for asset in assets.environment_assets()]
        if data:
            registered += [(self.ml_client.data, asset) for asset in assets.data_assets(workloads, self.data_dir)]
        in_parallel([lambda o=operations, a=asset: self._register(o, a, report) for operations, asset in registered])
        self.assets = {asset.name: asset for _, asset in registered}

    def _register(self, operations, asset: Asset, report: Report) -> None:
        try:
            operations.get(asset.name, version=asset.version)
            report(f"{asset.name}:{asset.version} unchanged")
        except ResourceNotFoundError:
            self.uploading(lambda: operations.create_or_update(asset.entity), report)
            report(f"{asset.name}:{asset.version} registered")

    def uploading(self, call: Callable[[], object], report: Report):
        """`call()`, which uploads to (or downloads from) the workspace's storage, retried while the storage does
        not let this machine in yet (a private stack's firewall rule for the CI runner takes a moment to apply)."""
        return with_retries(
            call, lambda error: credentials.storage_transient(error, self.outputs), self.storage_backoff, report
        )

    # -- jobs -----------------------------------------------------------------------------------
    def unsupported(self, job: Job) -> str | None:
        return None

    def run_job(self, job: Job, report: Report) -> JobResult:
        built = entities.build_job(job, self.outputs, self.assets)
        if built.note:
            report(built.note)
        submitted = self.submit(built.entity, report)
        name = submitted.name
        done = self.wait(submitted, report)
        if done.status != "Completed":
            return JobResult(
                job, name, done.status, url=done.studio_url, error=self.job_error(name),
                log=f"{done.studio_url} (Outputs + logs), or `az ml job download --name {name} --all`",
            )
        try:
            return self._best_model(job, built.entity, done, report)
        except FlowError as error:
            return JobResult(job, name, done.status, url=done.studio_url, error=str(error))

    def submit(self, entity, report: Report):
        """Reuse the job already run under this name (an unchanged re-run); resubmit one that failed
        under the next attempt's name."""
        base = entity.name
        for attempt in range(1, 100):
            entity.name = base if attempt == 1 else f"{base}-r{attempt}"
            try:
                existing = self.ml_client.jobs.get(entity.name)
            except ResourceNotFoundError:
                # submitting uploads the job's code folder
                submitted = self.uploading(lambda: self.ml_client.jobs.create_or_update(entity), report)
                report(f"submitted {submitted.name} on {entity.compute}: {submitted.studio_url}")
                return submitted
            if existing.status in RETRYABLE:
                report(f"{entity.name} {existing.status} earlier; submitting it again")
                continue
            report(f"reusing {existing.name} ({existing.status}): {existing.studio_url}")
            return existing
        raise FlowError(f"job {base}: too many failed attempts; fix the job or change its inputs")

    def wait(self, job, report: Report):
        status = job.status
        report(status)
        while status not in TERMINAL:
            time.sleep(self.poll_seconds)
            job = self.ml_client.jobs.get(job.name)
            if job.status != status:
                status = job.status
                report(status)
        return job

    def job_error(self, name: str) -> str:
        try:  # the run's error lives in run history; azure-ai-ml's Job entity does not carry it
            details = self.ml_client.jobs._runs_operations.get_run_details(name)
            return str(details.error.error.message)
        except Exception:
            return "no error details in run history; see the log"

    def _best_model(self, job: Job, entity, done, report: Report) -> JobResult:
        name = done.name
        if entity.type == "automl":
            best = self.tracking.get_run(name).data.tags.get("automl_best_child_run_id")
            if not best:
                raise FlowError(f"AutoML job {name}: no automl_best_child_run_id tag")
            model_uri = f"azureml://jobs/{best}/outputs/artifacts/paths/outputs/mlflow-model/"
            metrics = self._automl_held_out(name, best, self.workloads[job.workload], report)
            return JobResult(job, name, done.status, metrics, None, model_uri, done.studio_url, own_environment=True)
        best = name
        if entity.type == "sweep":
            best = (done.properties or {}).get("best_child_run_id")
            if not best:
                raise FlowError(f"sweep job {name}: no best_child_run_id (did every trial fail?)")
        metrics = dict(self.tracking.get_run(best).data.metrics)
        output = next(iter(entity.outputs or {}), None)
        if output is None:
            raise FlowError(f"job {job.key}: its spec declares no output to take the model from")
        # train.py and train_mlp.py save the MLflow model under model/ of their one output folder
        model_uri = f"azureml://jobs/{best}/outputs/{output}/paths/{MODEL_FOLDER}/"
        return JobResult(job, name, done.status, metrics, None, model_uri, done.studio_url)

    def _automl_held_out(self, name: str, best: str, workload: Workload, report: Report) -> dict[str, float]:
        """The best child's metrics on test_data (the held-out rows of the shared split), from the model
        test run AutoML starts under the best child, once that run has finished. Validation metrics are
        never used in their place: a test run that fails, or does not finish in time, fails the job."""
        started, waiting = time.monotonic(), None
        while True:
            children = list(self.ml_client.jobs.list(parent_job_name=best))
            # the run whose type says so; when none does, any child may be it: wait for them all
            marked = [child for child in children if _run_type(child) == AUTOML_TEST_RUN_TYPE]
            candidates = marked or children
            running = [child for child in candidates if child.status not in TERMINAL]
            if candidates and not running:
                for child in candidates:
                    metrics = self._test_metrics(child, workload.task)
                    if workload.metric in metrics:
                        return metrics
                failed = [child for child in candidates if child.status != "Completed"]
                if failed:
                    run = failed[0]
                    raise FlowError(
                        f"AutoML job {name}: its model test run {run.name} under best child {best} {run.status}: "
                        f"{self.job_error(run.name)}"
                    )
                if marked:
                    raise FlowError(f"AutoML job {name}: model test run {marked[0].name} logged no test metrics")
            if time.monotonic() - started > self.test_run_wait_s:
                state = ", ".join(f"{c.name} {c.status}" for c in children) or "no child runs"
                raise FlowError(
                    f"AutoML job {name}: no finished model test run under best child {best} after "
                    f"{self.test_run_wait_s / 60:g} min ({state}); is test_data set in the spec?"
                )
            line = (
                f"waiting for AutoML's test run {running[0].name} under best child {best} ({running[0].status})"
                if running
                else f"waiting for AutoML to start its test run under best child {best}"
            )
            if line != waiting:
                report(line)
                waiting = line
            time.sleep(self.poll_seconds)

    def _test_metrics(self, run, task: str) -> dict[str, float]:
        """The run's metrics under our names (empty unless it completed)."""
        if run.status != "Completed":
            return {}
        logged = self.tracking.get_run(run.name).data.metrics
        return {ours: logged[theirs] for theirs, ours in AUTOML_METRICS[task].items() if theirs in logged}

    # -- model and endpoints --------------------------------------------------------------------
    def register_model(self, workload: Workload, best: JobResult) -> RegisteredModel:
        """The winner as an MLflow model; an unchanged re-run finds the version already made from this job."""
        versions = list(self.ml_client.models.list(name=workload.model))
        same = [m for m in versions if (m.tags or {}).get("source_job") == best.run_name]
        if same:
            model = same[0]
        else:
            numbers = [int(m.version) for m in versions if str(m.version).isdigit()]
            entity = entities.model_entity(workload, best, str(max(numbers, default=0) + 1))
            model = self.ml_client.models.create_or_update(entity)
        value = best.metrics[workload.metric]
        return RegisteredModel(model.name, str(model.version), workload.metric, value, best.run_name, _own_environment(model))

    def deploy(self, workload: Workload, model: RegisteredModel, report: Report) -> list[Endpoint]:
        """The model rolled out on each online endpoint the workload serves from, side by side."""
        payload = workload.request()
        serving = self.serving_assets(model, report)
        return in_parallel(
            [
                lambda kind=kind: roll_out(
                    self.ml_client,
                    kind,
                    entities.endpoint_entity(workload, kind, self.outputs),
                    entities.deployment_entity(workload, kind, self.outputs, model, serving),
                    payload,
                    workload.task,
                    report,
                    self.rollout,
                )
                for kind in workload.online
            ]
        )

    def invoke(self, endpoint: Endpoint, payload: dict) -> list:
        return score(self.ml_client, endpoint.name, payload)

    def score_batch(self, workload: Workload, model: RegisteredModel, input_dir: Path, report: Report) -> BatchSummary:
        """The model on the workload's batch endpoint, invoked on `input_dir` and waited for (jobs/azure/batch.py)."""
        return batch.score_batch(self, workload, model, input_dir, report)

    def registered_model(self, workload: Workload, version: str | None = None) -> RegisteredModel:
        """A registered version of the workload's model (default: the latest)."""
        name = workload.model
        try:
            model = self.ml_client.models.get(name, version=version) if version else self.ml_client.models.get(name, label="latest")
        except ResourceNotFoundError:
            raise FlowError(f"model {name}:{version or 'latest'} is not registered (`run` registers the best one)") from None
        source = (model.tags or {}).get("source_job", "?")
        return RegisteredModel(model.name, str(model.version), workload.metric, float("nan"), source, _own_environment(model))

    def serving_assets(self, model: RegisteredModel, report: Report) -> Mapping[str, Asset]:
        """The assets a deployment of `model` pins its environment from: the registered ones, but for a model
        served in its own environment, the environments built from its conda file in place of the stage's
        (jobs/azure/assets.py `model_environments`), registered once per model version."""
        if not model.own_environment:
            return self.assets
        with self._serving_lock:
            key = (model.name, model.version)
            if key not in self._serving:
                folder = MODEL_DOWNLOADS / model.name / model.version
                self.uploading(
                    lambda: self.ml_client.models.download(model.name, model.version, download_path=str(folder)), report
                )
                saved = model_folder(folder)
                if saved is None:
                    raise FlowError(f"model {model.name}:{model.version}: no MLflow model (MLmodel) in its files ({folder})")
                try:
                    built = assets.model_environments(saved, model.name)
                except ValueError as error:
                    raise FlowError(f"model {model.name}:{model.version}: {error}") from None
                report(f"{model.name}:{model.version} is served in its own environment: {', '.join(a.name for a in built.values())}")
                for asset in built.values():
                    self._register(self.ml_client.environments, asset, report)
                self._serving[key] = {**self.assets, **built}
            return self._serving[key]

    def release(self, endpoints: list[Endpoint]) -> None:
        """Azure's endpoints stay up: serving is what they are for."""


def _own_environment(model) -> bool:
    return (model.tags or {}).get(entities.OWN_ENVIRONMENT_TAG) == "true"


def _run_type(run) -> str | None:
    return (getattr(run, "properties", None) or {}).get(RUN_TYPE_PROPERTY)
