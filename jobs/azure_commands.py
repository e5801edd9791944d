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
from jobs import azure_assets, azure_entities, flow, stack_outputs
from jobs.azure_target import AzureTarget, WorkspaceMlflow, connect
from jobs.flow import JOBS, Endpoint, FlowError, JobResult, RegisteredModel, Report


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


def dry_run(outputs: Mapping[str, str | None], data_dir: Path | None = None) -> str:
    """Every entity the run would send, as YAML documents, built with no credentials and no network."""
    data = azure_assets.data_assets(data_dir, offline=True)
    environments = azure_assets.environment_assets()
    assets = {asset.name: asset for asset in data + environments}
    documents = [(f"data asset {a.name}", a.entity) for a in data]
    documents += [(f"environment {a.name}", a.entity) for a in environments]
    for job in JOBS:
        built = azure_entities.build_job(job, outputs, assets)
        documents.append((f"job {job.key}" + (f" ({built.note})" if built.note else ""), built.entity))
    example = next(job for job in JOBS if job.regression_candidate)
    placeholder = JobResult(
        example, "<the winning job>", "Completed", {flow.HOLDOUT_METRIC: float("nan")},
        model_uri="azureml://jobs/<the winner's best run>/outputs/results/paths/model/",
    )
    documents.append(("model: registered from the winner once the jobs ran; version N", azure_entities.model_entity(placeholder, "N")))
    model = RegisteredModel(flow.MODEL_NAME, "N", flow.HOLDOUT_METRIC, float("nan"), placeholder.run_name)
    for kind in azure_entities.ENDPOINT_KINDS:
        documents.append((f"{kind} online endpoint", azure_entities.endpoint_entity(kind, outputs)))
        deployment = azure_entities.deployment_entity(kind, outputs, model, assets)
        documents.append((f"{kind} deployment: created at 0%, smoke-tested, then 100%", deployment))
    unresolved = [a.name for a in data if a.digest == azure_assets.UNRESOLVED]
    header = f"# dry run: {len(documents)} entities for workspace {outputs[keys.WORKSPACE]}; nothing was sent\n"
    if unresolved:
        header += f"# not on this machine (pass --data-dir), so shown with placeholder versions: {', '.join(unresolved)}\n"
    return header + "".join(f"---\n# {title}\n{to_yaml(entity)}" for title, entity in documents)


def target(outputs: Mapping[str, str | None], data_dir: Path | None = None) -> AzureTarget:
    ml_client, credential = connect(outputs)
    return AzureTarget(ml_client, outputs, WorkspaceMlflow(ml_client, credential), data_dir)


def deploy(azure: AzureTarget, version: str | None = None, report: Report = print) -> list[Endpoint]:
    """Roll out a registered version of the model (default: the latest) to both endpoints."""
    azure.prepare(flow.stamped(report, "assets"), data=False)  # the inference environment the deployments pin
    name = flow.MODEL_NAME
    try:
        model = azure.ml_client.models.get(name, version=version) if version else azure.ml_client.models.get(name, label="latest")
    except ResourceNotFoundError:
        raise FlowError(f"model {name}:{version or 'latest'} is not registered (`run` registers the best one)") from None
    registered = RegisteredModel(model.name, str(model.version), flow.HOLDOUT_METRIC, float("nan"), (model.tags or {}).get("source_job", "?"))
    endpoints = azure.deploy(registered, flow.stamped(report, "deploy"))
    for endpoint in endpoints:
        report(f"{endpoint.name}: {endpoint.scoring_uri} (swagger: {endpoint.swagger_uri})")
    return endpoints


def invoke(azure: AzureTarget, request_file: Path | None = None, report: Report = print) -> dict[str, list]:
    """Score a request (default: the sample) on both endpoints through their live traffic split."""
    payload = flow.load_request(request_file)
    predictions = {}
    for kind, key in azure_entities.ENDPOINT_KINDS.items():
        try:
            live = azure.ml_client.online_endpoints.get(azure.outputs[key])
        except ResourceNotFoundError:
            raise FlowError(f"{kind} endpoint {azure.outputs[key]} does not exist yet (`deploy` creates it)") from None
        endpoint = Endpoint(live.name, kind, live.scoring_uri, live.openapi_uri)
        predictions[endpoint.name] = azure.invoke(endpoint, payload)
        report(f"{endpoint.name}: {endpoint.scoring_uri} (swagger: {endpoint.swagger_uri})")
        report(f"{endpoint.name}: predictions {predictions[endpoint.name]}")
    return predictions


def status(azure: AzureTarget, report: Report = print) -> None:
    """Each job of the current specs and data (by its deterministic name) and each endpoint's traffic."""
    assets = {a.name: a for a in azure_assets.data_assets(azure.data_dir) + azure_assets.environment_assets()}
    for job in JOBS:
        name = azure_entities.build_job(job, azure.outputs, assets).entity.name
        try:
            found = azure.ml_client.jobs.get(name)
            report(f"job {job.key}: {name} {found.status} {found.studio_url}")
        except ResourceNotFoundError:
            report(f"job {job.key}: {name} not submitted yet")
    for kind, key in azure_entities.ENDPOINT_KINDS.items():
        try:
            live = azure.ml_client.online_endpoints.get(azure.outputs[key])
            report(f"{kind} endpoint {live.name}: {live.provisioning_state}, traffic {live.traffic}, {live.scoring_uri}")
        except ResourceNotFoundError:
            report(f"{kind} endpoint {azure.outputs[key]}: not created yet")
