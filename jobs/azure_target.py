"""The Azure ML target of the post-provision flow: azure-ai-ml (v2) driven from a stack's outputs."""

from __future__ import annotations

import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Mapping, Protocol

import yaml
from azure.ai.ml import MLClient
from azure.core.exceptions import ClientAuthenticationError, ResourceNotFoundError

from infra import outputs as keys
from jobs import azure_assets, azure_entities
from jobs.azure_assets import Asset
from jobs.azure_rollout import roll_out, score
from jobs.flow import (
    HOLDOUT_METRIC,
    MODEL_NAME,
    SPECS_DIR,
    Endpoint,
    FlowError,
    Job,
    JobResult,
    RegisteredModel,
    Report,
    load_request,
)

POLL_SECONDS = 30.0
ARM_SCOPE = "https://management.azure.com/.default"
MODEL_FOLDER = "model"
TERMINAL = ("Completed", "Failed", "Canceled", "NotResponding")
RETRYABLE = ("Failed", "Canceled", "NotResponding")
# AutoML's names for the metrics train.py and the MLP log (all four computed the same way)
AUTOML_REGRESSION_METRICS = {
    "mean_absolute_error": "MAE",
    "root_mean_squared_error": "RMSE",
    "r2_score": "R2",
    "normalized_root_mean_squared_error": "NRMSE",
}


class Tracking(Protocol):
    """The slice of `mlflow.MlflowClient` the target reads run metrics and tags through."""

    def get_run(self, run_id: str): ...

    def search_runs(self, experiment_ids: list[str], filter_string: str = ""): ...


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

    def search_runs(self, experiment_ids: list[str], filter_string: str = ""):
        return self._call("search_runs", experiment_ids, filter_string)


def connect(outputs: Mapping[str, str | None], credential=None) -> tuple[MLClient, object]:
    """An MLClient on the stack's workspace. DefaultAzureCredential covers OIDC in CI (an azure/login
    step, or AZURE_CLIENT_ID + AZURE_TENANT_ID + AZURE_FEDERATED_TOKEN_FILE), `az login` on a laptop and
    managed identity."""
    if credential is None:
        from azure.identity import DefaultAzureCredential

        credential = DefaultAzureCredential()
    try:
        credential.get_token(ARM_SCOPE)  # fail here, with one clear message, rather than mid-run
    except ClientAuthenticationError as error:
        first_line = str(error.message or error).strip().splitlines()[0]
        raise FlowError(
            "could not authenticate to Azure with DefaultAzureCredential: "
            f"{first_line}\n  on a laptop run `az login`; in CI log in first (azure/login with OIDC) as the "
            f"automation identity {outputs[keys.AUTOMATION_CLIENT_ID]}"
        ) from None
    ml_client = MLClient(
        credential,
        subscription_id=outputs[keys.SUBSCRIPTION_ID],
        resource_group_name=outputs[keys.RESOURCE_GROUP],
        workspace_name=outputs[keys.WORKSPACE],
    )
    return ml_client, credential


def in_parallel(tasks: list[Callable[[], object]]) -> list:
    """Run every task to its end; report all failures together (one endpoint's rollout failing does
    not stop the other's)."""
    with ThreadPoolExecutor(max_workers=max(len(tasks), 1)) as pool:
        futures = [pool.submit(task) for task in tasks]
    errors = [future.exception() for future in futures if future.exception()]
    if errors and all(isinstance(error, FlowError) for error in errors):
        raise FlowError("\n".join(str(error) for error in errors))
    if errors:
        raise errors[0]
    return [future.result() for future in futures]


class AzureTarget:
    name = "azure"

    def __init__(
        self,
        ml_client: MLClient,
        outputs: Mapping[str, str | None],
        tracking: Tracking,
        data_dir: Path | None = None,
        poll_seconds: float = POLL_SECONDS,
    ):
        self.ml_client, self.outputs, self.tracking = ml_client, outputs, tracking
        self.data_dir, self.poll_seconds = data_dir, poll_seconds
        self.assets: dict[str, Asset] = {}

    # -- assets ---------------------------------------------------------------------------------
    def prepare(self, report: Report, data: bool = True) -> None:
        """Register the catalog's data (unless `data` is False) and the environments, all at once."""
        registered = [(self.ml_client.environments, asset) for asset in azure_assets.environment_assets()]
        if data:
            registered += [(self.ml_client.data, asset) for asset in azure_assets.data_assets(self.data_dir)]
        in_parallel([lambda o=operations, a=asset: self._register(o, a, report) for operations, asset in registered])
        self.assets = {asset.name: asset for _, asset in registered}

    @staticmethod
    def _register(operations, asset: Asset, report: Report) -> None:
        try:
            operations.get(asset.name, version=asset.version)
            report(f"{asset.name}:{asset.version} unchanged")
        except ResourceNotFoundError:
            operations.create_or_update(asset.entity)
            report(f"{asset.name}:{asset.version} registered")

    # -- jobs -----------------------------------------------------------------------------------
    def unsupported(self, job: Job) -> str | None:
        return None

    def run_job(self, job: Job, report: Report) -> JobResult:
        built = azure_entities.build_job(job, self.outputs, self.assets)
        if built.note:
            report(built.note)
        submitted = self._submit(built.entity, report)
        name = submitted.name
        done = self._wait(submitted, report)
        if done.status != "Completed":
            return JobResult(
                job, name, done.status, url=done.studio_url, error=self._error(name),
                log=f"{done.studio_url} (Outputs + logs), or `az ml job download --name {name} --all`",
            )
        try:
            return self._best_model(job, built.entity, done)
        except FlowError as error:
            return JobResult(job, name, done.status, url=done.studio_url, error=str(error))

    def _submit(self, entity, report: Report):
        """Reuse the job already run under this name (an unchanged re-run); resubmit one that failed
        under the next attempt's name."""
        base = entity.name
        for attempt in range(1, 100):
            entity.name = base if attempt == 1 else f"{base}-r{attempt}"
            try:
                existing = self.ml_client.jobs.get(entity.name)
            except ResourceNotFoundError:
                submitted = self.ml_client.jobs.create_or_update(entity)
                report(f"submitted {submitted.name} on {entity.compute}: {submitted.studio_url}")
                return submitted
            if existing.status in RETRYABLE:
                report(f"{entity.name} {existing.status} earlier; submitting it again")
                continue
            report(f"reusing {existing.name} ({existing.status}): {existing.studio_url}")
            return existing
        raise FlowError(f"job {base}: too many failed attempts; fix the job or change its inputs")

    def _wait(self, job, report: Report):
        status = job.status
        report(status)
        while status not in TERMINAL:
            time.sleep(self.poll_seconds)
            job = self.ml_client.jobs.get(job.name)
            if job.status != status:
                status = job.status
                report(status)
        return job

    def _error(self, name: str) -> str:
        try:  # the run's error lives in run history; azure-ai-ml's Job entity does not carry it
            details = self.ml_client.jobs._runs_operations.get_run_details(name)
            return str(details.error.error.message)
        except Exception:
            return "no error details in run history; see the log"

    def _best_model(self, job: Job, entity, done) -> JobResult:
        name = done.name
        if entity.type == "automl":
            best = self.tracking.get_run(name).data.tags.get("automl_best_child_run_id")
            if not best:
                raise FlowError(f"AutoML job {name}: no automl_best_child_run_id tag")
            model_uri = f"azureml://jobs/{best}/outputs/artifacts/paths/outputs/mlflow-model/"
            if job.regression_candidate:
                metrics = self._automl_held_out(name, best)
                return JobResult(job, name, done.status, metrics, None, model_uri, done.studio_url)
            # as the spec spells it, which is the name AutoML logs it under (the entity holds an enum)
            metric = yaml.safe_load((SPECS_DIR / job.spec).read_text())["primary_metric"]
            value = self.tracking.get_run(best).data.metrics.get(metric)
            if value is None:
                raise FlowError(f"AutoML job {name}: best child {best} has no {metric}")
            return JobResult(job, name, done.status, {metric: value}, metric, model_uri, done.studio_url)
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

    def _automl_held_out(self, name: str, best: str) -> dict[str, float]:
        """The best child's metrics on test_data (the held-out rows of the shared split), from the model
        test run AutoML starts under the best child. Validation metrics are never used in their place."""
        experiment = self.tracking.get_run(best).info.experiment_id
        for run in self.tracking.search_runs([experiment], f"tags.mlflow.parentRunId = '{best}'"):
            metrics = {ours: run.data.metrics[theirs] for theirs, ours in AUTOML_REGRESSION_METRICS.items() if theirs in run.data.metrics}
            if HOLDOUT_METRIC in metrics:
                return metrics
        raise FlowError(f"AutoML job {name}: no test-data metrics under best child {best} (is test_data set in the spec?)")

    # -- model and endpoints --------------------------------------------------------------------
    def register_model(self, best: JobResult) -> RegisteredModel:
        """The winner as an MLflow model; an unchanged re-run finds the version already made from this job."""
        versions = list(self.ml_client.models.list(name=MODEL_NAME))
        same = [m for m in versions if (m.tags or {}).get("source_job") == best.run_name]
        if same:
            model = same[0]
        else:
            numbers = [int(m.version) for m in versions if str(m.version).isdigit()]
            entity = azure_entities.model_entity(best, str(max(numbers, default=0) + 1))
            model = self.ml_client.models.create_or_update(entity)
        return RegisteredModel(model.name, str(model.version), HOLDOUT_METRIC, best.metrics[HOLDOUT_METRIC], best.run_name)

    def deploy(self, model: RegisteredModel, report: Report) -> list[Endpoint]:
        payload = load_request()
        return in_parallel(
            [
                lambda kind=kind: roll_out(
                    self.ml_client,
                    kind,
                    azure_entities.endpoint_entity(kind, self.outputs),
                    azure_entities.deployment_entity(kind, self.outputs, model, self.assets),
                    payload,
                    report,
                )
                for kind in azure_entities.ENDPOINT_KINDS
            ]
        )

    def invoke(self, endpoint: Endpoint, payload: dict) -> list:
        return score(self.ml_client, endpoint.name, payload)
