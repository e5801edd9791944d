"""Safe rollout of one online deployment: new deployment at 0% -> smoke test through the deployment-specific
header -> 100% -> the old deployments removed. A failure at any step leaves the traffic where it was."""

from __future__ import annotations

import copy
import json
import tempfile
from pathlib import Path

from azure.ai.ml import MLClient
from azure.ai.ml.entities import OnlineDeployment, OnlineEndpoint
from azure.core.exceptions import ResourceNotFoundError

from jobs.flow import Endpoint, FlowError, Report

LOG_LINES = 50


def score(ml_client: MLClient, endpoint_name: str, payload: dict, deployment_name: str | None = None) -> list:
    """Predictions for `payload` from the endpoint (or from one of its deployments, via the
    `azureml-model-deployment` header the SDK sets). The SDK fetches the key itself; it is never shown."""
    with tempfile.TemporaryDirectory() as folder:
        request = Path(folder) / "request.json"
        request.write_text(json.dumps(payload))
        answer = ml_client.online_endpoints.invoke(
            endpoint_name=endpoint_name, request_file=str(request), deployment_name=deployment_name
        )
    predictions = json.loads(answer) if isinstance(answer, (str, bytes)) else answer
    if isinstance(predictions, dict) and isinstance(predictions.get("predictions"), list):
        predictions = predictions["predictions"]
    if not isinstance(predictions, list):
        raise ValueError(f"expected a list of predictions, got {str(answer)[:200]}")
    return predictions


def _smoke_test(ml_client: MLClient, deployment: OnlineDeployment, payload: dict) -> list:
    rows = len(payload.get("data", []))
    try:
        predictions = score(ml_client, deployment.endpoint_name, payload, deployment.name)
    except Exception as error:  # any failure to answer is a failed smoke test
        raise FlowError(f"no valid answer: {error}") from None
    if len(predictions) != rows or not all(isinstance(p, (int, float)) for p in predictions):
        raise FlowError(f"expected {rows} numeric predictions, got {str(predictions)[:200]}")
    return predictions


def _logs(ml_client: MLClient, deployment: OnlineDeployment) -> str:
    try:
        return ml_client.online_deployments.get_logs(
            name=deployment.name, endpoint_name=deployment.endpoint_name, lines=LOG_LINES
        )
    except Exception as error:  # the logs are a courtesy; the failure itself is what we report
        return f"(logs unavailable: {error})"


def _set_traffic(ml_client: MLClient, endpoint: OnlineEndpoint, traffic: dict[str, int], report: Report) -> None:
    update = copy.copy(endpoint)  # one entity per step, so each step's traffic stays as it was sent
    update.traffic = traffic
    ml_client.online_endpoints.begin_create_or_update(update).result()
    report(f"{endpoint.name}: traffic {traffic}")


def roll_out(
    ml_client: MLClient,
    kind: str,
    endpoint: OnlineEndpoint,
    deployment: OnlineDeployment,
    payload: dict,
    report: Report,
) -> Endpoint:
    try:
        live = ml_client.online_endpoints.get(endpoint.name)
    except ResourceNotFoundError:
        report(f"{endpoint.name}: creating {kind} endpoint (auth {endpoint.auth_mode})")
        live = ml_client.online_endpoints.begin_create_or_update(endpoint).result()
    before = dict(live.traffic or {})
    if before.get(deployment.name) == 100:
        report(f"{endpoint.name}: {deployment.name} already serves {deployment.model} at 100%, nothing to do")
        return _described(kind, live)

    report(f"{endpoint.name}: creating deployment {deployment.name} ({deployment.model})")
    try:
        ml_client.online_deployments.begin_create_or_update(deployment).result()
    except Exception as error:
        raise FlowError(
            f"deployment {deployment.name} on endpoint {endpoint.name} failed: {error}\n"
            f"  traffic left at {before or 'none'}\n  last {LOG_LINES} log lines:\n{_logs(ml_client, deployment)}"
        ) from None
    endpoint.tags = {**(live.tags or {}), **(endpoint.tags or {})}
    _set_traffic(ml_client, endpoint, {**before, deployment.name: 0}, report)

    try:
        predictions = _smoke_test(ml_client, deployment, payload)
    except FlowError as error:
        raise FlowError(
            f"smoke test of deployment {deployment.name} on endpoint {endpoint.name} failed: {error}\n"
            f"  traffic left at {before or 'none'}; the deployment stays for inspection\n"
            f"  last {LOG_LINES} log lines:\n{_logs(ml_client, deployment)}"
        ) from None
    report(f"{endpoint.name}: smoke test of {deployment.name} passed: {predictions}")

    old = [d.name for d in ml_client.online_deployments.list(endpoint_name=endpoint.name) if d.name != deployment.name]
    _set_traffic(ml_client, endpoint, {deployment.name: 100, **dict.fromkeys(old, 0)}, report)
    for name in old:
        report(f"{endpoint.name}: deleting old deployment {name}")
        ml_client.online_deployments.begin_delete(name=name, endpoint_name=endpoint.name).result()
    return _described(kind, ml_client.online_endpoints.get(endpoint.name))


def _described(kind: str, endpoint: OnlineEndpoint) -> Endpoint:
    return Endpoint(endpoint.name, kind, endpoint.scoring_uri, endpoint.openapi_uri)
