"""Promotion's two Azure pieces (jobs/promotion.py): a workspace as an environment, and the Azure ML registry.

Three clients, each signed in as the stack whose outputs it comes from: the source workspace's (dev's automation
identity, which may publish to the ML registry: infra/ml_registry.py), the target's (prod's, which may read it), and
an MLClient on the ML registry with the same identity (`MLClient(credential, registry_name=...)`: "Both
workspace_name and registry_name cannot be used together", azure-ai-ml MLClient).

Published: the dev model's files, downloaded, as a registry model (`models.create_or_update` on the registry's
client: "The same MLClient ... can be used to create ... in either a workspace or a registry depending on the target
it was initialized with", how-to-share-models-pipelines-across-workspaces-with-registries), with the environments it
serves with created beside it: "To reference an asset in a registry, you need to create it in the registry first".
Rolled out: the registry's files registered in the target workspace and deployed from there, because azure-ai-ml
refuses a registry reference in Kubernetes and batch deployments ("Registry reference for models is not supported
for K8SDeployment", _schema/_utils/utils.py: "temporary until deployments(batch/K8S) support registry references").
The files' SHA-256 is checked on each side, so prod serves exactly what dev published.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Mapping

from azure.ai.ml import MLClient
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.entities import Model
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError

from infra import outputs as keys
from jobs.azure import assets, entities
from jobs.azure.commands import live_deployment
from jobs.azure.credentials import first_line
from jobs.azure.target import AzureTarget
from jobs.flow import FlowError, RegisteredModel, Report, model_folder
from jobs.promotion import FILES_TAG, Published, file_hashes, files_digest
from jobs.workloads import Workload

DOWNLOADS = assets.WORK_DIR.parent / "azure-promotion"
# the registry model's tag naming the environments it serves with (each in the registry too)
ENVIRONMENTS_TAG = "environments"


def check_pair(source: Mapping[str, str | None] | None, target: Mapping[str, str | None] | None) -> str:
    """The ML registry both stacks' outputs name; FlowError when they are not a publishing and a reading environment
    of one ML registry (outputs of the wrong stack, or of a stack without one)."""
    names = set()
    for outputs, role, access in ((source, "--from-outputs", "publish"), (target, "--to-outputs", "read")):
        if outputs is None:
            continue
        if not outputs.get(keys.ML_REGISTRY_NAME):
            raise FlowError(f"{role}: stack {outputs[keys.ENVIRONMENT]} exports no {keys.ML_REGISTRY_NAME}: its config names "
                            "no ML registry (azureml-platform:mlRegistry)")  # fmt: skip
        if outputs.get(keys.ML_REGISTRY_ACCESS) != access:
            raise FlowError(f"{role}: stack {outputs[keys.ENVIRONMENT]}'s {keys.ML_REGISTRY_ACCESS} is "
                            f"{outputs.get(keys.ML_REGISTRY_ACCESS)!r}; a promotion {'from' if access == 'publish' else 'to'} "
                            f"a stack needs {access!r} (dev publishes, the others read): outputs of the wrong stack?")  # fmt: skip
        names.add(outputs[keys.ML_REGISTRY_NAME])
    if source is not None and target is not None:
        if len(names) > 1:
            raise FlowError(f"--from-outputs and --to-outputs name different ML registries ({', '.join(sorted(names))})")
        if source[keys.WORKSPACE] == target[keys.WORKSPACE] and source[keys.RESOURCE_GROUP] == target[keys.RESOURCE_GROUP]:
            raise FlowError(f"--from-outputs and --to-outputs are the same workspace ({source[keys.WORKSPACE]})")
    return names.pop()


def registry_client(credential, name: str) -> MLClient:
    return MLClient(credential, registry_name=name)


def _registry_error(name: str, what: str, error: Exception, who: str) -> FlowError:
    """What a registry call's failure means: no rights (the roles of infra/ml_registry.py), or no way there."""
    if isinstance(error, ServiceRequestError):
        return FlowError(f"{who} cannot reach the ML registry {name} ({what}): {first_line(error)}; from a network-isolated "
                         "environment it goes through its private endpoints (docs/operators.md, \"Promotion\")")  # fmt: skip
    if isinstance(error, HttpResponseError) and error.status_code == 403:
        return FlowError(f"{who} may not {what} in the ML registry {name}: {first_line(error)}; dev's automation identity "
                         "publishes (its publisher role), the others read (its reader role)")  # fmt: skip
    return FlowError(f"ML registry {name}: {what}: {first_line(error)}")


class AzureMlRegistry:
    def __init__(self, client: MLClient, name: str, who: str):
        self.client, self.name, self.who = client, name, who  # who: the environment whose identity signs in

    def _call(self, what: str, call):
        try:
            return call()
        except ResourceNotFoundError:
            raise
        except (HttpResponseError, ServiceRequestError) as error:
            raise _registry_error(self.name, what, error, self.who) from None

    def reference(self, name: str, version: str) -> str:
        return f"azureml://registries/{self.name}/models/{name}/versions/{version}"

    def _published(self, model) -> Published:
        tags = dict(model.tags or {})
        return Published(model.name, str(model.version), {**tags, FILES_TAG: tags.get(FILES_TAG, "")},
                         self.reference(model.name, str(model.version)))  # fmt: skip

    def get(self, name: str, version: str) -> Published:
        try:
            return self._published(self._call("read models", lambda: self.client.models.get(name, version=version)))
        except ResourceNotFoundError:
            raise FlowError(f"ML registry {self.name}: no {name} version {version}") from None

    def newest(self, name: str) -> Published:
        versions = self._versions(name)
        if not versions:
            raise FlowError(f"ML registry {self.name}: nothing published as {name} yet (promote --from-outputs publishes)")
        return self._published(max(versions, key=lambda model: int(model.version)))

    def _versions(self, name: str) -> list:
        try:
            return [m for m in self._call("read models", lambda: list(self.client.models.list(name=name))) if str(m.version).isdigit()]
        except ResourceNotFoundError:
            return []

    def publish(self, name: str, files: Path, lineage: dict, report: Report) -> tuple[Published, bool]:
        """The files as the next registry version, with their lineage, and the environments they serve with; the same
        files published before are answered as that version (False: nothing new written)."""
        digest = files_digest(file_hashes(files))
        versions = self._versions(name)
        for model in versions:
            if (model.tags or {}).get(FILES_TAG) == digest:
                return self._published(model), False
        served_with = serving_environments(files, name, lineage)
        for environment in served_with:
            try:
                self._call("read environments", lambda e=environment: self.client.environments.get(e.name, version=e.version))
            except ResourceNotFoundError:
                self._call("create environments", lambda e=environment: self.client.environments.create_or_update(e.entity))
                report(f"environment {environment.name}:{environment.version} created in the ML registry {self.name}")
        version = str(max((int(m.version) for m in versions), default=0) + 1)
        tags = {**{key: str(value) for key, value in lineage.items()}, FILES_TAG: digest,
                ENVIRONMENTS_TAG: ",".join(f"{e.name}:{e.version}" for e in served_with)}  # fmt: skip
        entity = Model(name=name, version=version, path=str(files), type=AssetTypes.MLFLOW_MODEL, tags=tags,
                       description=f"promoted from {lineage['source_environment']} ({lineage['source_version']})")  # fmt: skip
        model = self._call("create models", lambda: self.client.models.create_or_update(entity))
        return self._published(model), True

    def download(self, published: Published) -> Path:
        """The version's files on this machine, after checking that the environments it serves with are in the registry
        and that the files are the ones published."""
        for reference in filter(None, published.lineage.get(ENVIRONMENTS_TAG, "").split(",")):
            environment, version = reference.split(":", 1)
            try:
                self._call("read environments", lambda: self.client.environments.get(environment, version=version))
            except ResourceNotFoundError:
                raise FlowError(f"ML registry {self.name}: {published.name}:{published.version} serves with environment "
                                f"{reference}, which is not in the registry: publish it again") from None  # fmt: skip
        folder = Path(tempfile.mkdtemp(prefix=f"{published.name}-{published.version}-", dir=_downloads(f"registry-{self.name}")))
        self._call("read models", lambda: self.client.models.download(published.name, published.version, download_path=str(folder)))
        files = model_folder(folder)
        if files is None or files_digest(file_hashes(files)) != published.lineage[FILES_TAG]:
            raise FlowError(f"ML registry {self.name}: the files of {published.name}:{published.version} are not the ones "
                            f"published ({FILES_TAG} {published.lineage[FILES_TAG]})")  # fmt: skip
        return files


def _downloads(where: str) -> Path:
    folder = DOWNLOADS / where
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def serving_environments(files: Path, model_name: str, lineage: dict) -> list[assets.Asset]:
    """The environments a model serves with: the stage's own (tabular-inference, tabular-batch), or for a model that
    brings its own (an AutoML winner) those built from its conda file (jobs/azure/assets.py)."""
    if lineage.get("own_environment") == "true":
        return list(assets.model_environments(files, model_name).values())
    return [asset for asset in assets.environment_assets() if asset.name in assets.SERVING_PACKAGES]


class AzureEnvironment:
    """A workspace as promotion's environment; what serves now is what its endpoints send their traffic to."""

    def __init__(self, target: AzureTarget):
        self.target, self.name = target, target.outputs[keys.ENVIRONMENT]
        self.ml_client, self.outputs = target.ml_client, target.outputs

    def registered_model(self, workload: Workload, version: str | None = None) -> RegisteredModel:
        return self.target.registered_model(workload, version)

    def model_files(self, model: RegisteredModel) -> Path:
        # a fresh folder per download: a workspace deleted and made again under its name numbers its versions anew
        folder = Path(tempfile.mkdtemp(prefix=f"{model.name}-{model.version}-", dir=_downloads(self.outputs[keys.WORKSPACE])))
        self.target.uploading(lambda: self.ml_client.models.download(model.name, model.version, download_path=str(folder)), print)
        files = model_folder(folder)
        if files is None:
            raise FlowError(f"model {model.name}:{model.version} in {self.name}: no MLflow model (MLmodel) in its files ({folder})")
        return files

    def model_tags(self, model: RegisteredModel) -> dict[str, str]:
        tags = dict(self.ml_client.models.get(model.name, version=model.version).tags or {})
        return {**tags, "own_environment": tags.get(entities.OWN_ENVIRONMENT_TAG, "false")}

    def data_file(self, workload: Workload) -> Path:
        if self.target.data_dir is None or not (self.target.data_dir / workload.data.file).is_file():
            raise FlowError(f"{workload.name}: {workload.data.file} is not in --data-dir {self.target.data_dir}: the comparison "
                            "runs on the rows this environment holds out of its own data")  # fmt: skip
        return self.target.data_dir / workload.data.file

    def live_version(self, workload: Workload) -> str | None:
        """The model version of the deployment the workload's first online endpoint sends most of its traffic to."""
        for kind in workload.online[:1]:
            name = live_deployment(self.target, workload, kind)
            if name is None:
                return None
            deployment = self.ml_client.online_deployments.get(name, endpoint_name=entities.endpoint_name(workload, kind, self.outputs))
            # azureml:<name>:<version> as sent, or .../models/<name>/versions/<version> as Azure answers
            return str(deployment.model).rstrip("/").rsplit(":", 1)[-1].rsplit("/", 1)[-1]
        return None

    def register_promoted(self, workload: Workload, files: Path, tags: dict[str, str], report: Report) -> RegisteredModel:
        versions = [int(m.version) for m in self.ml_client.models.list(name=workload.model) if str(m.version).isdigit()]
        own = {entities.OWN_ENVIRONMENT_TAG: "true"} if tags.get("lineage.own_environment") == "true" else {}
        entity = Model(name=workload.model, version=str(max(versions, default=0) + 1), path=str(files),
                       type=AssetTypes.MLFLOW_MODEL, tags={**tags, **own},
                       description=f"{workload.description}: promoted through the ML registry")  # fmt: skip
        model = self.target.uploading(lambda: self.ml_client.models.create_or_update(entity), report)
        report(f"registered as {model.name}:{model.version} in {self.name}")
        return RegisteredModel(model.name, str(model.version), workload.metric, float(tags[workload.metric]),
                               tags.get("lineage.source_run", ""), bool(own))  # fmt: skip

    def served(self, workload: Workload, model: RegisteredModel) -> None:
        """Nothing to record: the endpoints' traffic says what serves."""
