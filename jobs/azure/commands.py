"""The Azure side of `python -m jobs`: the target built from the stack outputs, the dry run, and the
steps only Azure has (deploy a registered model, invoke the live endpoints, status). `run` and
`submit` are the flow's own, the same for both targets.

The stack outputs are read first, so missing or malformed outputs fail before anything else, dry run
or not. Every failure is a FlowError whose message names what failed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import yaml
from azure.core.exceptions import ResourceNotFoundError

from infra import outputs as keys
from jobs import flow, stack_outputs
from jobs.azure import assets, entities
from jobs.azure.target import AzureTarget, WorkspaceMlflow, connect
from jobs.flow import Endpoint, FlowError, JobResult, RegisteredModel, Report
from jobs.workloads import Workload


def load_outputs(stack: str | None, outputs_file: str | Path | None) -> Mapping[str, str | None]:
    if outputs_file:
        return stack_outputs.from_file(outputs_file)
    if stack:
        return stack_outputs.from_stack(stack)
    raise stack_outputs.OutputsError("name a stack (--stack NAME) or an outputs file (--outputs FILE)")


def to_yaml(entity) -> str:
    """The entity as the YAML azure-ai-ml builds its request from (its own schema dump)."""
    plain = json.loads(json.dumps(entity._to_dict(), default=str))
    return yaml.safe_dump(plain, sort_keys=False)


def dry_run(outputs: Mapping[str, str | None], workloads: list[Workload], data_dir: Path | None = None) -> str:
    """Every entity the run would send for the workloads, as YAML documents, built with no credentials and
    no network."""
    data = assets.data_assets(workloads, data_dir, offline=True)
    environments = assets.environment_assets()
    registered = {asset.name: asset for asset in data + environments}
    documents = [(f"data asset {a.name}", a.entity) for a in data]
    documents += [(f"environment {a.name}", a.entity) for a in environments]
    for workload in workloads:
        for job in workload.jobs:
            built = entities.build_job(job, outputs, registered)
            documents.append((f"job {job.key}" + (f" ({built.note})" if built.note else ""), built.entity))
        placeholder = JobResult(
            workload.jobs[0], "<the winning job>", "Completed", {workload.metric: float("nan")},
            model_uri="azureml://jobs/<the winner's best run>/outputs/results/paths/model/",
        )  # fmt: skip
        title = f"model {workload.model}: registered from {workload.name}'s best candidate once the jobs ran; version N"
        documents.append((title, entities.model_entity(workload, placeholder, "N")))
        model = RegisteredModel(workload.model, "N", workload.metric, float("nan"), placeholder.run_name)
        for kind in workload.online:
            documents.append((f"{workload.name}: {kind} online endpoint", entities.endpoint_entity(workload, kind, outputs)))
            deployment = entities.deployment_entity(workload, kind, outputs, model, registered)
            documents.append((f"{workload.name}: {kind} deployment: created at 0%, smoke-tested, then 100%", deployment))
    unresolved = [a.name for a in data if a.digest == assets.UNRESOLVED]
    header = f"# dry run: {len(documents)} entities for workspace {outputs[keys.WORKSPACE]}; nothing was sent\n"
    if unresolved:
        header += f"# not on this machine (pass --data-dir), so shown with placeholder versions: {', '.join(unresolved)}\n"
    return header + "".join(f"---\n# {title}\n{to_yaml(entity)}" for title, entity in documents)


def target(outputs: Mapping[str, str | None], data_dir: Path | None = None) -> AzureTarget:
    ml_client, credential = connect(outputs)
    return AzureTarget(ml_client, outputs, WorkspaceMlflow(ml_client, credential), data_dir)


def deploy(azure: AzureTarget, workload: Workload, version: str | None = None, report: Report = print) -> list[Endpoint]:
    """Roll out a registered version of the workload's model (default: the latest) to its online endpoints."""
    azure.prepare([workload], flow.stamped(report, "assets"), data=False)  # the inference environment
    name = workload.model
    try:
        model = azure.ml_client.models.get(name, version=version) if version else azure.ml_client.models.get(name, label="latest")
    except ResourceNotFoundError:
        raise FlowError(f"model {name}:{version or 'latest'} is not registered (`run` registers the best one)") from None
    source = (model.tags or {}).get("source_job", "?")
    registered = RegisteredModel(model.name, str(model.version), workload.metric, float("nan"), source)
    endpoints = azure.deploy(workload, registered, flow.stamped(report, f"{workload.name} deploy"))
    for endpoint in endpoints:
        report(f"{endpoint.name}: {endpoint.scoring_uri} (swagger: {endpoint.swagger_uri})")
    return endpoints


def invoke(azure: AzureTarget, workload: Workload, payload: dict, report: Report = print) -> dict[str, list]:
    """Score a request on the workload's online endpoints through their live traffic split."""
    answers = {}
    for kind in workload.online:
        name = entities.endpoint_name(workload, kind, azure.outputs)
        try:
            live = azure.ml_client.online_endpoints.get(name)
        except ResourceNotFoundError:
            raise FlowError(f"{workload.name}: {kind} endpoint {name} does not exist yet (`deploy` creates it)") from None
        endpoint = Endpoint(live.name, kind, live.scoring_uri, live.openapi_uri)
        answers[endpoint.name] = azure.invoke(endpoint, payload)
        report(f"{endpoint.name}: {endpoint.scoring_uri} (swagger: {endpoint.swagger_uri})")
        report(f"{endpoint.name}: answers {answers[endpoint.name]}")
    return answers


def status(azure: AzureTarget, workloads: list[Workload], report: Report = print) -> None:
    """Each job of the workloads' current specs and data (by its deterministic name), each endpoint's
    traffic, and each data scientist's workstation with its state (Running, Stopped...)."""
    registered = {a.name: a for a in assets.data_assets(workloads, azure.data_dir) + assets.environment_assets()}
    for workload in workloads:
        for job in workload.jobs:
            name = entities.build_job(job, azure.outputs, registered).entity.name
            try:
                found = azure.ml_client.jobs.get(name)
                report(f"job {job.key}: {name} {found.status} {found.studio_url}")
            except ResourceNotFoundError:
                report(f"job {job.key}: {name} not submitted yet")
        for kind in workload.online:
            name = entities.endpoint_name(workload, kind, azure.outputs)
            try:
                live = azure.ml_client.online_endpoints.get(name)
                report(f"{workload.name}: {kind} endpoint {live.name}: {live.provisioning_state}, traffic {live.traffic}, {live.scoring_uri}")
            except ResourceNotFoundError:
                report(f"{workload.name}: {kind} endpoint {name}: not created yet")
    workstations = azure.outputs.get(keys.WORKSTATIONS) or {}
    if not workstations:
        report("workstations: none in this stack (azureml-platform:workstations.users lists no one)")
    for user, name in sorted(workstations.items()):
        try:
            report(f"workstation {name} ({user}): {azure.ml_client.compute.get(name).state}")
        except ResourceNotFoundError:
            report(f"workstation {name} ({user}): not created yet")
