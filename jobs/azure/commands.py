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
from azure.ai.ml.entities import EndpointAuthKeys, JobSchedule, Model
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from infra import outputs as keys
from jobs import flow, stack_outputs
from jobs.azure import assets, batch, entities, monitoring
from jobs.azure.credentials import first_line
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
        automl = False
        for job in workload.jobs:
            built = entities.build_job(job, outputs, registered)
            automl |= built.entity.type == "automl"
            documents.append((f"job {job.key}" + (f" ({built.note})" if built.note else ""), built.entity))
        if workload.retrain:
            built = entities.build_pipeline(workload, outputs, registered)
            gate = "gated by drift (retrain.when: drifted)" if workload.retrain.gated else "no drift gate (retrain.when: always)"
            documents.append((f"{workload.name}: retraining pipeline, {gate}" + (f" ({built.note})" if built.note else ""), built.entity))
            schedule, _ = entities.schedule_entity(workload, outputs, registered)
            state = "enabled" if schedule.is_enabled else "disabled"
            documents.append((f"{workload.name}: retraining schedule, {state} in {outputs[keys.ENVIRONMENT]}", schedule))
        placeholder = JobResult(
            workload.jobs[0], "<the winning job>", "Completed", {workload.metric: float("nan")},
            model_uri="azureml://jobs/<the winner's best run>/outputs/results/paths/model/",
        )  # fmt: skip
        title = f"model {workload.model}: registered from {workload.name}'s best candidate once the jobs ran; version N"
        if automl:
            own = ", ".join(assets.model_environment_name(workload.model, name) for name in assets.SERVING_PACKAGES)
            title += f" (an AutoML winner is served in environments built from its own conda file: {own})"
        documents.append((title, entities.model_entity(workload, placeholder, "N")))
        model = RegisteredModel(workload.model, "N", workload.metric, float("nan"), placeholder.run_name)
        for kind in workload.online:
            documents.append((f"{workload.name}: {kind} online endpoint", entities.endpoint_entity(workload, kind, outputs)))
            deployment = entities.deployment_entity(workload, kind, outputs, model, registered)
            collecting = "collects its inputs and outputs" if deployment.data_collector else "collects nothing (monitor.collect: false)"
            documents.append((f"{workload.name}: {kind} deployment: created at 0%, smoke-tested, then 100%; {collecting}", deployment))
            if workload.monitor.schedule:
                monitor, _ = monitoring.monitor_entity(workload, kind, outputs, registered, deployment.name)
                documents.append((f"{workload.name}: monitor of the {kind} endpoint, {_state(monitor, outputs)}", monitor))
        if workload.batch:
            documents += batch.dry_run_documents(workload, outputs, registered, model)
    unresolved = [a.name for a in data if a.digest == assets.UNRESOLVED]
    header = f"# dry run: {len(documents)} entities for workspace {outputs[keys.WORKSPACE]}; nothing was sent\n"
    if unresolved:
        header += f"# not on this machine (pass --data-dir), so shown with placeholder versions: {', '.join(unresolved)}\n"
    return header + "".join(f"---\n# {title}\n{to_yaml(entity)}" for title, entity in documents)


def _state(schedule, outputs: Mapping[str, str | None]) -> str:
    """What a monitor schedule is, for the dry run and the log: on or off in the environment, and where it runs."""
    state = f"{'enabled' if schedule.is_enabled else 'disabled'} in {outputs[keys.ENVIRONMENT]}"
    if isinstance(schedule, JobSchedule):
        emails = ", ".join(schedule.create_job.emails) or "nobody"
        return f"{state}: monitor.py in a scheduled pipeline on the CPU cluster (a failed signal fails it and mails {emails})"
    return f"{state}: Azure ML model monitoring on serverless Spark"


def target(outputs: Mapping[str, str | None], data_dir: Path | None = None) -> AzureTarget:
    ml_client, credential = connect(outputs)
    return AzureTarget(ml_client, outputs, WorkspaceMlflow(ml_client, credential), data_dir, credential=credential)


def dry_run_promotion(source: Mapping[str, str | None] | None, target: Mapping[str, str | None] | None, workload: Workload,
                      data_dir: Path | None = None) -> str:
    """Every call a promotion would make across its three clients, and the entities it would send, built from the
    outputs alone (jobs/promotion.py, jobs/azure/promotion.py)."""
    from jobs.azure.promotion import ENVIRONMENTS_TAG, serving_environments

    registry = (source or target)[keys.ML_REGISTRY_NAME]
    documents: list[tuple[str, object]] = []
    environments = serving_environments(Path("."), workload.model, {})
    if source is not None:
        where = f"{source[keys.ENVIRONMENT]} workspace {source[keys.WORKSPACE]}"
        documents.append((f"[{where}] models.get {workload.model} (latest, or --version) and models.download: its files", None))
        documents += [(f"[ML registry {registry}] environments.create_or_update, unless there: {e.name}:{e.version}", e.entity)
                      for e in environments]  # fmt: skip
        published = Model(name=workload.model, version="M", path="<the files downloaded from dev>", type="mlflow_model",
                          tags={"source_environment": source[keys.ENVIRONMENT], "source_version": "<N>", "metric": workload.metric,
                                "files_sha256": "<SHA-256 of the files' hashes>", ENVIRONMENTS_TAG: ",".join(f"{e.name}:{e.version}" for e in environments)})  # fmt: skip
        documents.append((f"[ML registry {registry}] models.create_or_update {workload.model}:M (the next version), unless the same files are there", published))
    if target is not None:
        where = f"{target[keys.ENVIRONMENT]} workspace {target[keys.WORKSPACE]}"
        documents.append((f"[ML registry {registry}] environments.get, then models.download {workload.model}:M: files checked against files_sha256", None))
        documents.append((f"[{where}] its live version's files; evaluate.py on {workload.data.file}'s held-out rows: refused unless better, or --force", None))
        copy = Model(name=workload.model, version="K", path="<the ML registry's files>", type="mlflow_model",
                     tags={"promotion.ml_registry_version": "M", "promotion.previous": "<the live version>", "lineage.*": "<the registry's tags>"})  # fmt: skip
        documents.append((f"[{where}] models.create_or_update {workload.model}:K (the next version)", copy))
        model = RegisteredModel(workload.model, "K", workload.metric, float("nan"), "<promoted>")
        registered = {asset.name: asset for asset in assets.environment_assets()}
        for kind in workload.online:
            deployment = entities.deployment_entity(workload, kind, target, model, registered)
            documents.append((f"[{where}] {kind} deployment: created at 0%, smoke-tested, then 100%", deployment))
        if workload.batch:
            documents.append((f"[{where}] batch deployment, then the sample scored", batch.deployment_entity(workload, target, model, registered)))
    return "\n".join(f"# {title}\n" + (to_yaml(entity) if entity is not None else "") + "---" for title, entity in documents)


def deploy(azure: AzureTarget, workload: Workload, version: str | None = None, report: Report = print) -> list[Endpoint]:
    """Roll out a registered version of the workload's model (default: the latest) to its online endpoints."""
    azure.prepare([workload], flow.stamped(report, "assets"), data=False)  # the inference environment
    model = azure.registered_model(workload, version)
    endpoints = azure.deploy(workload, model, flow.stamped(report, f"{workload.name} deploy"))
    for endpoint in endpoints:
        report(f"{endpoint.name}: {endpoint.scoring_uri} (swagger: {endpoint.swagger_uri})")
    return endpoints


def invoke(azure: AzureTarget, workload: Workload, payload: dict, report: Report = print) -> dict[str, list]:
    """Score a request on the workload's online endpoints through their live traffic split."""
    answers = {}
    for kind in workload.online:
        live = live_endpoint(azure, workload, kind)
        endpoint = Endpoint(live.name, kind, live.scoring_uri, live.openapi_uri)
        answers[endpoint.name] = azure.invoke(endpoint, payload)
        report(f"{endpoint.name}: {endpoint.scoring_uri} (swagger: {endpoint.swagger_uri})")
        report(f"{endpoint.name}: answers {answers[endpoint.name]}")
    return answers


def live_endpoint(azure: AzureTarget, workload: Workload, kind: str):
    """The workload's `kind` online endpoint as the workspace has it; FlowError when it is not created yet."""
    name = entities.endpoint_name(workload, kind, azure.outputs)
    try:
        return azure.ml_client.online_endpoints.get(name)
    except ResourceNotFoundError:
        raise FlowError(f"{workload.name}: {kind} endpoint {name} does not exist yet (`deploy` creates it)") from None


def scoring_access(azure: AzureTarget, workload: Workload, kind: str) -> tuple[str, dict[str, str]]:
    """The scoring URI of the workload's `kind` online endpoint and the header that authorizes a request to it:
    `Authorization: Bearer <key or token>`, as the SDK's own invoke sends it (azure-ai-ml
    OnlineEndpointOperations.invoke; learn.microsoft.com/azure/machine-learning/how-to-authenticate-online-endpoint).
    The header holds the endpoint's key: never print it."""
    live = live_endpoint(azure, workload, kind)
    name = live.name
    try:
        credentials = azure.ml_client.online_endpoints.get_keys(name)
    except HttpResponseError as error:  # e.g. 403: reading keys takes the onlineEndpoints/listkeys/action permission
        raise FlowError(f"{workload.name}: cannot read the credentials of {kind} endpoint {name}: {first_line(error)}") from None
    # key auth answers EndpointAuthKeys; aml_token and aad_token auth answer a token (EndpointAuthToken, EndpointAadToken)
    secret = credentials.primary_key if isinstance(credentials, EndpointAuthKeys) else credentials.access_token
    return live.scoring_uri, {"Authorization": f"Bearer {secret}"}


def retrained(workloads: list[Workload]) -> list[Workload]:
    found = [workload for workload in workloads if workload.retrain]
    if not found:
        raise FlowError(f"no retraining pipeline in {', '.join(w.name for w in workloads)} (workload.yml: retrain)")
    return found


def schedule(azure: AzureTarget, workloads: list[Workload], report: Report = print) -> dict[str, str]:
    """Create or update each workload's retraining schedule and the monitor of each of its online endpoints, for
    the stack's environment; one whose digest (what it runs, its data versions, cron, time zone, on/off) is the live
    schedule's is left as it is. A monitor watches its endpoint's live deployment, so an endpoint not created yet
    has none (the next run after `run` or `deploy` creates it). Returns what happened to each schedule, by name."""
    workloads = [workload for workload in workloads if workload.retrain or workload.monitor.schedule]
    if not workloads:
        raise FlowError("no workload declares a retraining pipeline or a monitor (workload.yml: retrain, monitor.schedule)")
    environment = azure.outputs[keys.ENVIRONMENT]
    azure.prepare(workloads, flow.stamped(report, "assets"))  # the data versions the pipelines and monitors read
    done = {}
    for workload in workloads:
        wanted = []
        if workload.retrain and workload.promotion == "registry" and azure.outputs.get(keys.ML_REGISTRY_ACCESS) == "read":
            # its models come from dev through the ML registry: retraining runs in dev, and reaches here by promotion
            report(f"{workload.name}: no retraining schedule in {environment} (promotion: registry): dev retrains, `promote` brings it")
        elif workload.retrain:
            wanted.append(("retraining", *entities.schedule_entity(workload, azure.outputs, azure.assets)))
        for kind in workload.online if workload.monitor.schedule else ():
            deployment = live_deployment(azure, workload, kind)
            if deployment is None:
                report(f"{workload.name}: no monitor of the {kind} endpoint yet: it serves no deployment (`run` or `deploy` first)")
                continue
            monitor, digest = monitoring.monitor_entity(workload, kind, azure.outputs, azure.assets, deployment)
            wanted.append((f"{kind} endpoint monitor", monitor, digest))
        for what, entity, digest in wanted:
            done[entity.name] = _apply_schedule(azure, entity, digest, report)
            report(f"{workload.name}: {what} schedule {entity.name} {done[entity.name]} ({'enabled' if entity.is_enabled else 'disabled'} "
                   f"in {environment}; cron {entity.trigger.expression!r} {entity.trigger.time_zone})")  # fmt: skip
    return done


def live_deployment(azure: AzureTarget, workload: Workload, kind: str) -> str | None:
    """The deployment the workload's `kind` endpoint sends its traffic to, or None when there is none yet."""
    try:
        traffic = azure.ml_client.online_endpoints.get(entities.endpoint_name(workload, kind, azure.outputs)).traffic or {}
    except ResourceNotFoundError:
        return None
    serving = {name: share for name, share in traffic.items() if share}
    return max(serving, key=serving.get) if serving else None


def _apply_schedule(azure: AzureTarget, wanted, digest: str, report: Report) -> str:
    """Create or update a schedule unless the live one has the same digest and state: created, updated or unchanged."""
    try:
        live = azure.ml_client.schedules.get(wanted.name)
    except ResourceNotFoundError:
        live = None
    if live is not None and (live.tags or {}).get("digest") == digest and live.is_enabled == wanted.is_enabled:
        return "unchanged"
    # submitting resolves a pipeline's components and uploads their code (and a monitor's data references), as a job does
    azure.uploading(lambda: azure.ml_client.schedules.begin_create_or_update(wanted).result(), report)
    return "created" if live is None else "updated"


def run_pipeline(azure: AzureTarget, workloads: list[Workload], report: Report = print,
                 gated: bool | None = None) -> list[JobResult]:  # fmt: skip
    """Submit each workload's retraining pipeline now (an unchanged one already run is reused), with its drift gate
    or without (`gated`, default: its retrain.when), and wait for it; a failed pipeline is reported with its log."""
    workloads = retrained(workloads)
    azure.prepare(workloads, flow.stamped(report, "assets"))
    results = []
    for workload in workloads:
        built = entities.build_pipeline(workload, azure.outputs, azure.assets, gated)
        stamped = flow.stamped(report, built.job.key)
        if built.note:
            stamped(built.note)
        submitted = azure.submit(built.entity, stamped)
        done = azure.wait(submitted, stamped)
        error = None if done.status == "Completed" else azure.job_error(done.name)
        log = f"{done.studio_url} (each step's Outputs + logs), or `az ml job download --name {done.name} --all`"
        results.append(JobResult(built.job, done.name, done.status, url=done.studio_url, error=error, log=log))
    failed = [r for r in results if not r.succeeded]
    if failed:
        raise FlowError("\n".join(f"pipeline {r.job.key} ({r.run_name}) {r.status}: {r.error}\n  log: {r.log}" for r in failed))
    return results


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
