"""Batch scoring in Azure ML: a workload's registered model on a batch endpoint, invoked on a folder of CSV files.

The endpoint and its model batch deployment come from jobs/specs/endpoints/batch-{endpoint,deployment}.yml and
the stack outputs, as entities.py builds the online ones: the endpoint is `<workload>-batch-<6 hex>`, the
deployment runs jobs/src/batch_score.py on the stack's CPU cluster with the batch environment (tabular-batch)
registered for this run, or with the model's own (an AutoML winner: AzureTarget.serving_assets), and is named
after what it serves, so an unchanged one is left alone. It becomes the endpoint's default; invoking it uploads
the input folder and starts a batch scoring job, which is waited for like any job. Its output (predictions.csv,
batch_score.py's rows) is then downloaded and counted: rows scored, rows failed.

On a private stack the endpoint is private: "All the batch endpoints created inside of private link-enabled
workspace are deployed as private batch endpoints by default" and "It is not possible to deploy public batch
endpoints on private link-enabled workspaces" (how-to-secure-batch-endpoint), and the docs reach one only from a
machine in or peered with the VNet. Invoking goes to the endpoint's scoring URI (azure-ai-ml
BatchEndpointOperations.invoke), so from outside the deployment is made and the invoke is left to a machine
inside, which says so by setting IN_VNET.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from azure.ai.ml import Input, load_batch_endpoint
from azure.ai.ml.entities import BatchEndpoint, ModelBatchDeployment

# azure-ai-ml exports only load_batch_deployment, whose schema refuses the current format's nested `settings:`
# ("settings: Unknown field"); the model batch deployment's own loader reads it
from azure.ai.ml.entities._load_functions import load_model_batch_deployment
from azure.core.exceptions import ResourceNotFoundError

from infra import outputs as keys
from jobs import flow
from jobs.azure import entities
from jobs.azure.assets import WORK_DIR, Asset
from jobs.batch import BatchSummary, input_files, read_output
from jobs.flow import FlowError, Job, RegisteredModel, Report
from jobs.workloads import Workload

if TYPE_CHECKING:
    from jobs.azure.target import AzureTarget

ENDPOINT_SPEC = entities.ENDPOINTS_DIR / "batch-endpoint.yml"
DEPLOYMENT_SPEC = entities.ENDPOINTS_DIR / "batch-deployment.yml"
# where a batch job's scoring output lives (azure-ai-ml's BATCH_JOB_CHILD_RUN_OUTPUT_NAME)
OUTPUT_NAME = "score"
DOWNLOADS = WORK_DIR.parent / "azure-batch"
# set to 1 on a machine in (or peered with) a private stack's VNet: a self-hosted runner, a jump host
IN_VNET = "AZUREML_PLATFORM_IN_VNET"


def unreachable(workload: Workload, outputs: Mapping[str, str | None]) -> str | None:
    """Why this machine cannot invoke the workload's batch endpoint, with what to run where; None when it can."""
    if outputs[keys.NETWORK_ISOLATION] != "private" or os.environ.get(IN_VNET) == "1":
        return None
    return (f"{entities.endpoint_name(workload, 'batch', outputs)} is a private batch endpoint (a private link "
            f"workspace's are, how-to-secure-batch-endpoint), which only its VNet reaches; from a machine in it run "
            f"{IN_VNET}=1 python -m jobs batch --outputs <stack outputs JSON> --workload {workload.name} --input <folder of CSV files>")  # fmt: skip


def endpoint_entity(workload: Workload, outputs: Mapping[str, str | None]) -> BatchEndpoint:
    endpoint = load_batch_endpoint(ENDPOINT_SPEC)
    endpoint.name = entities.endpoint_name(workload, "batch", outputs)
    endpoint.description = workload.description
    endpoint.tags = {**(endpoint.tags or {}), "workload": workload.name}
    return endpoint


def deployment_entity(
    workload: Workload, outputs: Mapping[str, str | None], model: RegisteredModel, assets: Mapping[str, Asset]
) -> ModelBatchDeployment:
    """The model batch deployment of `model`, on the cluster the stack's outputs name for the spec's
    placeholder, named after everything it serves (the spec holds its settings)."""
    deployment = load_model_batch_deployment(DEPLOYMENT_SPEC)
    deployment.endpoint_name = entities.endpoint_name(workload, "batch", outputs)
    deployment.model = f"azureml:{model.name}:{model.version}"
    if isinstance(deployment.environment, str):
        deployment.environment = entities.pin(deployment.environment, assets)
    spec_job = Job(workload.name, f"{workload.name}-batch", DEPLOYMENT_SPEC)  # names the spec in errors
    deployment.compute, _ = entities.compute_for(spec_job, deployment.compute, outputs)
    deployment.tags = {**(deployment.tags or {}), "workload": workload.name}
    entities.name_after_served(deployment, DEPLOYMENT_SPEC, model, deployment.compute)
    return deployment


def dry_run_documents(
    workload: Workload, outputs: Mapping[str, str | None], assets: Mapping[str, Asset], model: RegisteredModel
) -> list[tuple[str, object]]:
    """The entities score_batch sends, titled, for the dry run."""
    deployment = deployment_entity(workload, outputs, model, assets)
    return [
        (f"{workload.name}: batch endpoint", endpoint_entity(workload, outputs)),
        (f"{workload.name}: batch deployment, made the endpoint's default, then invoked on the sample request's records", deployment),
    ]


def score_latest(azure: AzureTarget, workload: Workload, input_dir: Path, report: Report = print) -> BatchSummary:
    """`python -m jobs batch --stack|--outputs`: the environments registered, then the workload's latest
    registered model over `input_dir`."""
    azure.prepare([workload], flow.stamped(report, "assets"), data=False)
    return score_batch(azure, workload, azure.registered_model(workload), input_dir, report)


def score_batch(
    azure: AzureTarget, workload: Workload, model: RegisteredModel, input_dir: Path, report: Report = print,
    download_dir: Path | None = None,
) -> BatchSummary:  # fmt: skip
    """The batch endpoint and deployment of `model` created or updated, the deployment made the default, a
    batch scoring job over the files of `input_dir`, waited for, and its output downloaded (under
    `download_dir`, default .local/azure-batch/<job>) and counted. A failed job is a FlowError with the job's
    error and where its logs are."""
    files = input_files(input_dir)
    endpoint = endpoint_entity(workload, azure.outputs)
    deployment = deployment_entity(workload, azure.outputs, model, azure.serving_assets(model, report))
    _roll_out(azure, endpoint, deployment, report)
    if why := unreachable(workload, azure.outputs):
        raise flow.NotReachableHere(f"deployment {deployment.name} is the default; {why}")
    folder = Input(type="uri_folder", path=str(Path(input_dir).resolve()))  # a local folder is uploaded
    invoked = azure.uploading(
        lambda: azure.ml_client.batch_endpoints.invoke(endpoint_name=endpoint.name, deployment_name=deployment.name, input=folder),
        report,
    )
    report(f"batch job {invoked.name}: {len(files)} files from {input_dir}")
    job = azure.wait(azure.ml_client.jobs.get(invoked.name), report)
    if job.status != "Completed":
        raise FlowError(
            f"batch job {job.name} on {endpoint.name} {job.status}: {azure.job_error(job.name)}\n"
            f"  log: {job.studio_url} (Outputs + logs: logs/user/error.txt, logs/job_progress_overview.txt), "
            f"or `az ml job download --name {job.name} --all`"
        )
    target = Path(download_dir or DOWNLOADS) / job.name
    azure.ml_client.jobs.download(job.name, output_name=OUTPUT_NAME, download_path=str(target))
    name = deployment.settings.output_file_name
    found = sorted(target.rglob(name))
    if not found:
        raise FlowError(f"batch job {job.name} completed but its output has no {name} (downloaded to {target})")
    return BatchSummary(str(found[0]), len(files), read_output(found[0]), deployment.settings.error_threshold,
                        location=job.studio_url)  # fmt: skip


def _roll_out(azure: AzureTarget, endpoint: BatchEndpoint, deployment: ModelBatchDeployment, report: Report) -> None:
    """Create the endpoint if missing and the deployment if no deployment serves exactly this yet (creating one
    uploads the scoring code), then make it the endpoint's default."""
    batch_endpoints, batch_deployments = azure.ml_client.batch_endpoints, azure.ml_client.batch_deployments
    try:
        live = batch_endpoints.get(endpoint.name)
    except ResourceNotFoundError:
        report(f"creating batch endpoint {endpoint.name}")
        live = batch_endpoints.begin_create_or_update(endpoint).result()
    try:
        batch_deployments.get(deployment.name, endpoint_name=endpoint.name)
        report(f"batch deployment {deployment.name} already serves this")
    except ResourceNotFoundError:
        report(f"creating batch deployment {deployment.name} on {deployment.compute}")
        azure.uploading(lambda: batch_deployments.begin_create_or_update(deployment).result(), report)
    if getattr(live.defaults, "deployment_name", None) != deployment.name:
        endpoint.defaults = {"deployment_name": deployment.name}
        batch_endpoints.begin_create_or_update(endpoint).result()
        report(f"{endpoint.name}: default deployment {deployment.name}")
