"""Azure ML entities built from the workloads' CLI v2 specs and the stack outputs, without touching the network.

The dry run prints exactly these entities; the Azure target sends them. Specs name compute and assets
by placeholder (`azureml:cpu-cluster`, `azureml:housing@latest`); here compute comes from the stack
outputs and every asset the stage registers is pinned to the version registered for this run. Endpoint,
model and deployment names come from the workload (the stack outputs name only what `pulumi up` creates).
"""

from __future__ import annotations

import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

import yaml

from azure.ai.ml import load_job, load_online_deployment, load_online_endpoint
from azure.ai.ml.constants import AssetTypes
from azure.ai.ml.exceptions import ValidationException
from azure.ai.ml.entities import (
    Command,
    CronTrigger,
    DataAsset,
    Job as AzureJob,
    JobSchedule,
    KubernetesOnlineDeployment,
    Model,
    OnlineDeployment,
    OnlineEndpoint,
    PipelineJob,
)

# azure-ai-ml exports no load_schedule; `az ml schedule create` loads the YAML with this same function
# (azure-cli-extensions, src/machinelearningservices/azext_mlv2/manual/custom/schedule.py)
from azure.ai.ml.entities._load_functions import load_schedule

from infra import outputs as keys
from infra.naming import ENDPOINT_RULE
from jobs.azure.assets import Asset, digest_files, digest_folder, digest_text
from jobs.flow import COLLECTOR_ROOT, SPECS_DIR, FlowError, Job, JobResult, RegisteredModel, git_commit
from jobs.workloads import Workload

ENDPOINTS_DIR = SPECS_DIR / "endpoints"
# the compute placeholders the job specs use -> the output naming that compute
COMPUTE_PLACEHOLDERS = {"cpu-cluster": keys.CPU_CLUSTER, "gpu-cluster": keys.GPU_CLUSTER}
# a managed deployment's outbound access on a private stack
PRIVATE_EGRESS = "disabled"
# endpoint kind -> what its name says: `<workload>-<label>-<6 hex>`. Batch endpoint names keep the same rule
# (azure-ai-ml checks both with EndpointConfigurations.NAME_REGEX_PATTERN, 3-32 characters) and are unique per
# region too ("The endpoint's name must be unique within an Azure region", how-to-use-batch-model-deployments)
ENDPOINT_LABELS = {"managed": "online", "kubernetes": "k8s", "batch": "batch"}
ENDPOINT_SUFFIX = 6
# the registered model's tag saying it is served in its own environment (JobResult.own_environment)
OWN_ENVIRONMENT_TAG = "own_environment"
# an asset reference as written in a spec (`azureml:housing@latest`) or as loaded (`housing@latest`)
_REFERENCE = re.compile(r"^(?:azureml:)?(?P<name>[A-Za-z0-9_.-]+?)(?:@latest|:[A-Za-z0-9_.-]+)?$")


def pin(reference: str, assets: Mapping[str, Asset]) -> str:
    """`azureml:NAME@latest` (or any version of NAME) -> the version registered for this run, when NAME is
    an asset the stage registers; other references (curated environments, say) stay as written."""
    match = _REFERENCE.match(reference)
    if match and match["name"] in assets:
        return assets[match["name"]].reference
    return reference


def _pin_references(entity, assets: Mapping[str, Asset]) -> list[str]:
    """Pin the job's environment and data inputs in place; returns every reference, pinned or not."""
    references = []
    for holder in (entity, getattr(entity, "trial", None)):
        if isinstance(getattr(holder, "environment", None), str):
            holder.environment = pin(holder.environment, assets)
            references.append(holder.environment)
    inputs = list((getattr(entity, "inputs", None) or {}).values())
    inputs += [getattr(entity, name, None) for name in ("training_data", "validation_data", "test_data")]
    for job_input in inputs:
        if isinstance(_path(job_input), str):
            job_input.path = pin(job_input.path, assets)
            references.append(job_input.path)
    return references


def _path(job_input) -> str | None:
    try:
        return getattr(job_input, "path", None)
    except ValidationException:  # a pipeline's literal input (a string, a number) has no path
        return None


def compute_for(job: Job, compute: str | None, outputs: Mapping[str, str | None]) -> tuple[str, str | None]:
    """(the stack's compute for the spec's placeholder, a note when the stack lacks what the spec asks for)."""
    placeholder = str(compute or "").removeprefix("azureml:")
    if placeholder not in COMPUTE_PLACEHOLDERS:
        raise FlowError(
            f"{job.spec}: compute {compute!r} is none of the placeholders "
            f"{', '.join('azureml:' + p for p in COMPUTE_PLACEHOLDERS)}"
        )
    compute = outputs.get(COMPUTE_PLACEHOLDERS[placeholder])
    if compute is None:  # only an optional output (the GPU cluster) may be absent
        cpu = outputs[keys.CPU_CLUSTER]
        return cpu, f"no {keys.GPU_CLUSTER} output (GPU cluster off in this stack): {job.key} runs on the CPU cluster {cpu}"
    return compute, None


@dataclass
class BuiltJob:
    job: Job
    entity: AzureJob
    note: str | None  # e.g. the sweep runs on CPU because the stack has no GPU cluster


def build_job(job: Job, outputs: Mapping[str, str | None], assets: Mapping[str, Asset]) -> BuiltJob:
    """The job from its spec, on the compute the stack outputs name, with our assets pinned, and named
    after everything that determines its result, so an unchanged re-run finds the job it already ran."""
    spec = job.spec
    if not spec.is_file():
        raise FlowError(f"job {job.key}: spec not found: {spec}")
    entity = load_job(spec)
    if isinstance(entity, Command):
        # a command job spec loads as a pipeline node: make it the job it describes, with its code
        # folder resolved first (the conversion forgets the spec's folder)
        entity.code = str((spec.parent / entity.code).resolve())
        entity = entity._to_job()
    compute, note = compute_for(job, entity.compute, outputs)
    entity.compute = compute
    references = _pin_references(entity, assets)
    code = getattr(entity, "code", None) or getattr(getattr(entity, "trial", None), "code", None)
    code_digest = digest_folder((spec.parent / code).resolve()) if isinstance(code, str) else ""
    inputs = digest_text(spec.read_text(), code_digest, compute, *sorted(references))
    entity.name = f"{job.key}-{inputs[:10]}"
    entity.experiment_name = entity.experiment_name or job.workload
    entity.tags = {**(entity.tags or {}), "workload": job.workload, "job": job.key, "git_commit": git_commit()}
    return BuiltJob(job, entity, note)


def build_pipeline(workload: Workload, outputs: Mapping[str, str | None], assets: Mapping[str, Asset],
                   gated: bool | None = None) -> BuiltJob:  # fmt: skip
    """The workload's retraining pipeline, with its drift gate or without (`gated`, default: its retrain.when):
    each step on the compute the stack outputs name (the pipeline's default compute for steps that name none),
    our assets pinned, and named after everything that determines its result, as build_job names a job."""
    pipeline_file = workload.retrain.pipeline
    document = yaml.safe_dump(workload.retrain.document(gated), sort_keys=False)
    entity: PipelineJob = load_job(io.StringIO(document), relative_origin=str(pipeline_file))
    job = Job(workload.name, f"{workload.name}-retrain", pipeline_file)
    notes, references, digests = [], [], [document]
    for value in (entity.inputs or {}).values():  # a file beside the pipeline is uploaded as an input (the monitor's)
        path = _path(value)
        if isinstance(path, str) and ":" not in path and (pipeline_file.parent / path).is_file():
            digests.append(digest_files([pipeline_file.parent / path]))
    default = entity.settings.default_compute
    for name, step in entity.jobs.items():
        step.compute, note = compute_for(job, step.compute or default, outputs)
        if note:
            notes.append(note.replace(job.key, f"{job.key} step {name}"))
        component = step.component  # the step's environment is its component's; its inputs are bindings
        if isinstance(component.environment, str):
            component.environment = pin(component.environment, assets)
            references.append(component.environment)
        code = getattr(component, "code", None)
        if isinstance(code, str) and Path(code).is_dir():
            digests.append(digest_folder(Path(code)))
        digests.append(str(component._to_dict() if hasattr(component, "_to_dict") else component))
    entity.settings.default_compute, _ = compute_for(job, default, outputs)
    references += _pin_references(entity, assets)
    entity.name = f"{job.key}-{digest_text(*digests, *sorted(references))[:10]}"
    entity.experiment_name = entity.experiment_name or f"{workload.name}-retrain"
    entity.tags = {**(entity.tags or {}), "workload": workload.name, "job": job.key, "git_commit": git_commit()}
    return BuiltJob(job, entity, "; ".join(notes) or None)


def schedule_entity(
    workload: Workload, outputs: Mapping[str, str | None], assets: Mapping[str, Asset]
) -> tuple[JobSchedule, str]:
    """The workload's retraining schedule for the stack's environment (its cron and on/off from workload.yml's
    retrain.environments), submitting the retraining pipeline; and the digest of everything it holds, which the stage
    compares with the live schedule's to leave an unchanged one alone.

    Azure ML resolves a data input's `@latest` when the schedule is created (azure-ai-ml
    _job_operations._resolve_job_input -> _resolve_name_version_from_name_label), so each scheduled run
    trains on the data version the stage registered last; the pinned version is in the digest, so new data
    updates the schedule."""
    environment = outputs[keys.ENVIRONMENT]
    pipeline = build_pipeline(workload, outputs, assets).entity
    loaded = load_schedule(workload.retrain.schedule)
    settings = workload.retrain.settings(environment)
    trigger = CronTrigger(expression=settings["cron"], time_zone=loaded.trigger.time_zone,
                          start_time=loaded.trigger.start_time, end_time=loaded.trigger.end_time)  # fmt: skip
    digest = digest_text(pipeline.name, settings["cron"], str(loaded.trigger.time_zone), str(settings["enabled"]),
                         workload.retrain.schedule.read_text())[:12]  # fmt: skip
    tags = {**(loaded.tags or {}), "workload": workload.name, "environment": environment, "digest": digest}
    pipeline.name = None  # every run the schedule starts gets a name of its own
    schedule = JobSchedule(
        name=loaded.name, display_name=loaded.display_name, description=loaded.description, tags=tags,
        trigger=trigger, create_job=pipeline, is_enabled=settings["enabled"],
    )  # fmt: skip
    return schedule, digest


def model_entity(workload: Workload, best: JobResult, version: str) -> Model:
    own = {OWN_ENVIRONMENT_TAG: "true"} if best.own_environment else {}
    return Model(
        name=workload.model,
        version=version,
        path=best.model_uri,
        type=AssetTypes.MLFLOW_MODEL,
        description=f"{workload.description}: the best of its candidates on held-out {workload.metric}, from {best.job.key}",
        tags={
            "workload": workload.name,
            "metric": workload.metric,
            workload.metric: f"{best.metrics[workload.metric]:.6g}",
            "source_job": best.run_name,
            "job": best.job.key,
            "git_commit": git_commit(),
            **own,
        },
    )


def endpoint_name(workload: Workload, kind: str, outputs: Mapping[str, str | None]) -> str:
    """`<workload>-<online|k8s|batch>-<6 hex>`: endpoint names are unique per Azure region, so the suffix is
    derived from the workspace's identity (subscription, resource group, workspace); the workload's name is
    short enough for the whole to keep the endpoint rule (infra/naming.py)."""
    workspace = "/".join(outputs[key] for key in (keys.SUBSCRIPTION_ID, keys.RESOURCE_GROUP, keys.WORKSPACE))
    suffix = hashlib.sha256(workspace.lower().encode()).hexdigest()[:ENDPOINT_SUFFIX]
    name = f"{workload.name}-{ENDPOINT_LABELS[kind]}-{suffix}"
    problem = ENDPOINT_RULE.check(name)
    if problem:
        raise FlowError(f"{workload.file}: name {workload.name!r} {problem}")
    return name


def _spec(kind: str, role: str) -> Path:
    spec = ENDPOINTS_DIR / f"{kind}-{role}.yml"
    if not spec.is_file():
        raise FlowError(f"{kind} online {role} spec not found: {spec}")
    return spec


def endpoint_entity(workload: Workload, kind: str, outputs: Mapping[str, str | None]) -> OnlineEndpoint:
    endpoint = load_online_endpoint(_spec(kind, "endpoint"))
    endpoint.name = endpoint_name(workload, kind, outputs)
    endpoint.description = workload.description
    endpoint.tags = {**(endpoint.tags or {}), "workload": workload.name}
    endpoint.auth_mode = "key"
    if kind == "kubernetes":
        endpoint.compute = outputs[keys.KUBERNETES_COMPUTE]
    return endpoint


def deployment_entity(
    workload: Workload, kind: str, outputs: Mapping[str, str | None], model: RegisteredModel, assets: Mapping[str, Asset]
) -> OnlineDeployment:
    """The deployment of `model`, named after everything it serves (model, spec, scoring code,
    environment, egress), so a deployment that already serves exactly this is recognised on a re-run."""
    spec = _spec(kind, "deployment")
    deployment = load_online_deployment(spec)
    deployment.endpoint_name = endpoint_name(workload, kind, outputs)
    deployment.model = f"azureml:{model.name}:{model.version}"
    if isinstance(deployment.environment, str):
        deployment.environment = pin(deployment.environment, assets)
    if kind == "managed":
        deployment.app_insights_enabled = True
        if outputs[keys.NETWORK_ISOLATION] == "private":
            # the legacy network isolation method: model, code and image come through the workspace's
            # private endpoints, as the stack's storage, Key Vault and registry deny the internet
            # (learn.microsoft.com/azure/machine-learning/concept-secure-online-endpoint)
            deployment.egress_public_network_access = PRIVATE_EGRESS
    if isinstance(deployment, KubernetesOnlineDeployment):
        deployment.instance_type = outputs[keys.KUBERNETES_INSTANCE_TYPE]
    collect(deployment, workload)
    served = [str(deployment.instance_type), str(deployment.data_collector and deployment.data_collector._to_dict())]
    if getattr(deployment, "egress_public_network_access", None):
        # egress cannot change on an existing deployment ("You cannot update (enable or disable) the
        # egress_public_network_access flag after creating the deployment", how-to-secure-online-endpoint),
        # so a change must make a new one; left out when unset, so public stacks keep their names
        served.append(f"egress={deployment.egress_public_network_access}")
    name_after_served(deployment, spec, model, *served)
    return deployment


def collected_asset(endpoint: str, collection: str) -> str:
    """The data asset of one endpoint's collection: fixed per endpoint, whichever deployment serves."""
    return f"{endpoint}-{collection}"


def collected_path(workload: Workload, endpoint: str, collection: str | None = None) -> str:
    """Where an endpoint's collected data lives: COLLECTOR_ROOT/<workload>/<endpoint>[/<collection>]. Under the
    workload, so that its retraining gate (retrain.yml's `production`) reads all its endpoints at once."""
    return "/".join((COLLECTOR_ROOT, workload.name, endpoint, *([collection] if collection else [])))


def collect(deployment: OnlineDeployment, workload: Workload) -> None:
    """The spec's data collector as the workload wants it: none when monitor.collect is off; else its sampling
    rate, and for each collection a data asset name and path fixed per endpoint. Azure would otherwise register
    `<endpoint>-<deployment>-<collection>` at `.../<endpoint>/<deployment>/<collection>` (azure-ai-ml
    OnlineDeploymentOperations._register_collection_data_assets), new on every rollout, as deployments are
    renamed. Version "1": the SDK registers that version once and tolerates it existing."""
    collector = deployment.data_collector
    if collector is None:
        return
    if not workload.monitor.collect:
        deployment.data_collector = None
        return
    collector.sampling_rate = workload.monitor.sampling_rate
    for name, collection in collector.collections.items():
        collection.data = DataAsset(name=collected_asset(deployment.endpoint_name, name),
                                    path=collected_path(workload, deployment.endpoint_name, name), version="1")  # fmt: skip


def name_after_served(deployment, spec: Path, model: RegisteredModel, *served: str) -> None:
    """Resolve the deployment's code folder (relative to its spec) and name it `v<model version>-<digest>` of
    everything it serves: the spec, the scoring code, the environment, the model and `served`, so a
    deployment that already serves exactly this is recognised on a re-run."""
    code_digest = ""
    if deployment.code_configuration and isinstance(deployment.code_configuration.code, str):
        code = (spec.parent / deployment.code_configuration.code).resolve()
        deployment.code_configuration.code = str(code)
        code_digest = digest_folder(code)
    inputs = [spec.read_text(), code_digest, str(deployment.environment), deployment.model, *served]
    deployment.name = f"v{model.version}-{digest_text(*inputs)[:8]}"[:32]
