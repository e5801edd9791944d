"""Safe rollout of one online deployment: new deployment at 0% -> smoke test through the deployment-specific
header -> 100% -> the old deployments removed. A failure at any step leaves the traffic where it was."""

from __future__ import annotations

import copy
import ipaddress
import json
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

from azure.ai.ml import MLClient
from azure.ai.ml.entities import OnlineDeployment, OnlineEndpoint
from azure.core.exceptions import ResourceNotFoundError

from jobs.flow import Endpoint, FlowError, Report, answer_problem

LOG_LINES = 50
# azure-ai-ml's pollers have no timeout of their own: `.result()` waits until the service reaches a
# terminal state (LROPoller.result(timeout=None); research note ci-credentials.md §6). A deployment pulls
# its image and model and passes its probes in 10-15 minutes; an hour means it is stuck.
DEPLOYMENT_TIMEOUT_S = 60 * 60
# an endpoint's creation, a traffic change or a deletion: minutes
ENDPOINT_TIMEOUT_S = 20 * 60


@dataclass(frozen=True)
class RolloutOptions:
    """How long to wait for each step, and how to resolve a scoring host (injectable for tests)."""

    deployment_timeout_s: float = DEPLOYMENT_TIMEOUT_S
    endpoint_timeout_s: float = ENDPOINT_TIMEOUT_S
    resolve: Callable[..., object] = socket.getaddrinfo


def _finish(poller, timeout_s: float, what: str):
    """The poller's result, or FlowError once `timeout_s` has passed; its operation's error is raised."""
    poller.wait(timeout_s)
    if not poller.done():
        limit = f"{timeout_s / 60:g} min" if timeout_s >= 60 else f"{timeout_s:g} s"
        raise FlowError(f"{what} did not finish within {limit}")
    return poller.result()


def unresolved_host(scoring_uri: str | None, resolve: Callable[..., object]) -> str | None:
    """The scoring URI's host when DNS does not resolve it; None when it does, or is an IP address."""
    host = urlsplit(scoring_uri or "").hostname
    if not host:
        return None
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    try:
        resolve(host, None)
    except OSError:  # socket.gaierror
        return host
    return None


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


def _smoke_test(ml_client: MLClient, deployment: OnlineDeployment, payload: dict, task: str) -> list:
    try:
        answers = score(ml_client, deployment.endpoint_name, payload, deployment.name)
    except Exception as error:  # any failure to answer is a failed smoke test
        raise FlowError(f"no valid answer: {error}") from None
    problem = answer_problem(task, answers, len(payload.get("data", [])))
    if problem:
        raise FlowError(problem)
    return answers


def _logs(ml_client: MLClient, deployment: OnlineDeployment) -> str:
    try:
        return ml_client.online_deployments.get_logs(
            name=deployment.name, endpoint_name=deployment.endpoint_name, lines=LOG_LINES
        )
    except Exception as error:  # the logs are a courtesy; the failure itself is what we report
        return f"(logs unavailable: {error})"


def _set_traffic(
    ml_client: MLClient, endpoint: OnlineEndpoint, traffic: dict[str, int], options: RolloutOptions, report: Report
) -> OnlineEndpoint:
    update = copy.copy(endpoint)  # one entity per step, so each step's traffic stays as it was sent
    update.traffic = traffic
    poller = ml_client.online_endpoints.begin_create_or_update(update)
    updated = _finish(poller, options.endpoint_timeout_s, f"endpoint {endpoint.name}: traffic change to {traffic}")
    report(f"{endpoint.name}: traffic {traffic}")
    return updated


def roll_out(
    ml_client: MLClient,
    kind: str,
    endpoint: OnlineEndpoint,
    deployment: OnlineDeployment,
    payload: dict,
    task: str,
    report: Report,
    options: RolloutOptions = RolloutOptions(),
) -> Endpoint:
    """Roll `deployment` out on `endpoint` (created when missing); `payload` smoke-tests it, its answers
    checked as the workload's `task` answers."""
    try:
        live = ml_client.online_endpoints.get(endpoint.name)
    except ResourceNotFoundError:
        report(f"{endpoint.name}: creating {kind} endpoint (auth {endpoint.auth_mode})")
        poller = ml_client.online_endpoints.begin_create_or_update(endpoint)
        live = _finish(poller, options.endpoint_timeout_s, f"creating {kind} endpoint {endpoint.name}")
    before = dict(live.traffic or {})
    if before.get(deployment.name) == 100:
        report(f"{endpoint.name}: {deployment.name} already serves {deployment.model} at 100%, nothing to do")
        return _described(kind, live)

    report(f"{endpoint.name}: creating deployment {deployment.name} ({deployment.model})")
    try:
        poller = ml_client.online_deployments.begin_create_or_update(deployment)
        _finish(poller, options.deployment_timeout_s, "its provisioning")
    except Exception as error:
        raise FlowError(
            f"deployment {deployment.name} on endpoint {endpoint.name} failed: {error}\n"
            f"  traffic left at {before or 'none'}\n  last {LOG_LINES} log lines:\n{_logs(ml_client, deployment)}"
        ) from None
    endpoint.tags = {**(live.tags or {}), **(endpoint.tags or {})}
    routed = _set_traffic(ml_client, endpoint, {**before, deployment.name: 0}, options, report)

    # Azure names managed endpoints itself; a Kubernetes endpoint with TLS answers on the extension's
    # sslCname, a name only the operator's DNS can resolve (how-to-secure-kubernetes-online-endpoint)
    host = unresolved_host(routed.scoring_uri, options.resolve) if kind == "kubernetes" else None
    if host:
        raise FlowError(
            f"{kind} endpoint {endpoint.name}: its scoring host {host} does not resolve, so deployment "
            f"{deployment.name} cannot be smoke-tested\n"
            f"  fix: create a DNS A record for {host} pointing at the EXTERNAL-IP of "
            f"`kubectl get service azureml-fe --namespace azureml` (the inference router's load balancer)\n"
            f"  traffic left at {before or 'none'}; the deployment stays, and a re-run after the fix smoke-tests it"
        )

    try:
        predictions = _smoke_test(ml_client, deployment, payload, task)
    except FlowError as error:
        raise FlowError(
            f"smoke test of deployment {deployment.name} on endpoint {endpoint.name} failed: {error}\n"
            f"  traffic left at {before or 'none'}; the deployment stays for inspection\n"
            f"  last {LOG_LINES} log lines:\n{_logs(ml_client, deployment)}"
        ) from None
    report(f"{endpoint.name}: smoke test of {deployment.name} passed: {predictions}")

    old = [d.name for d in ml_client.online_deployments.list(endpoint_name=endpoint.name) if d.name != deployment.name]
    _set_traffic(ml_client, endpoint, {deployment.name: 100, **dict.fromkeys(old, 0)}, options, report)
    for name in old:
        report(f"{endpoint.name}: deleting old deployment {name}")
        poller = ml_client.online_deployments.begin_delete(name=name, endpoint_name=endpoint.name)
        _finish(poller, options.endpoint_timeout_s, f"endpoint {endpoint.name}: deleting old deployment {name}")
    return _described(kind, ml_client.online_endpoints.get(endpoint.name))


def _described(kind: str, endpoint: OnlineEndpoint) -> Endpoint:
    return Endpoint(endpoint.name, kind, endpoint.scoring_uri, endpoint.openapi_uri)
