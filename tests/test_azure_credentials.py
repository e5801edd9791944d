"""Who the Azure stage signs in as (jobs/azure/credentials.py), offline: a local HTTP server stands in for
GitHub's OIDC token endpoint, Entra ID's token call is faked, and the workspace is the in-memory fake.
Retries run on a fake clock: nothing sleeps."""

from __future__ import annotations

import json
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from azure.core.credentials import AccessTokenInfo
from azure.identity import ClientAssertionCredential

from infra import outputs as keys
from jobs.azure import credentials as azure_credentials
from jobs.azure.credentials import SignIn, sign_in
from jobs.azure.target import connect
from jobs.flow import FlowError
from tests.azure_fake import FakeClock, FakeCredential, FakeWorkspace, Simulation, arm_error, entra_error
from tests.local_server import LocalServer
from tests.test_azure_stage import OUTPUTS

BEARER = "request-token-that-must-never-show"
CLIENT_ID = OUTPUTS[keys.AUTOMATION_CLIENT_ID]


def github_token_endpoint(server):
    """GitHub's OIDC token endpoint: a new ID token per request, or the (status, JSON) `server.fixed` says."""
    status, payload = server.fixed or (200, {"value": f"github-id-token-{len(server.requests)}"})
    return status, "application/json", json.dumps(payload)


@pytest.fixture
def github():
    with LocalServer(github_token_endpoint) as server:
        server.fixed = None
        # the URL GitHub sets already carries a query (api-version); the audience is appended with `&`
        environ = {
            "ACTIONS_ID_TOKEN_REQUEST_URL": f"{server.url}/idtoken?api-version=2.0",
            "ACTIONS_ID_TOKEN_REQUEST_TOKEN": BEARER,
        }
        yield server, environ


def test_github_sign_in_asks_github_for_a_fresh_id_token_for_every_entra_token(github):
    server, environ = github
    how = sign_in(OUTPUTS, environ)
    assert how.description == f"as the automation identity {CLIENT_ID} with GitHub OIDC tokens that renew themselves"
    credential = how.new_credential()
    assert isinstance(credential, ClientAssertionCredential)

    assertions = []

    def entra(scopes, assertion, **kwargs):  # Entra ID's token endpoint, faked: the token expires at once
        assertions.append(assertion)
        return AccessTokenInfo(f"entra-token-{len(assertions)}", int(time.time()) - 1)

    credential._client.obtain_token_by_jwt_assertion = entra
    first = credential.get_token("https://management.azure.com/.default")
    second = credential.get_token("https://management.azure.com/.default")  # hours later: a new token

    assert (first.token, second.token) == ("entra-token-1", "entra-token-2")
    assert assertions == ["github-id-token-1", "github-id-token-2"]
    assert len(server.requests) == 2
    for path, authorization in server.requests:
        query = parse_qs(urlsplit(path).query)
        assert query == {"api-version": ["2.0"], "audience": ["api://AzureADTokenExchange"]}
        assert authorization == f"bearer {BEARER}"


@pytest.mark.parametrize(
    "answer, says",
    [((403, {"message": "no id-token permission"}), "answered HTTP 403"), ((200, {"count": 0}), 'no "value" field')],
)
def test_a_failing_token_endpoint_is_named_without_the_bearer_token(github, answer, says):
    server, environ = github
    server.fixed = answer
    with pytest.raises(FlowError) as failure:
        connect(OUTPUTS, sign_in(OUTPUTS, environ), report=lambda line: None)
    message = str(failure.value)
    assert says in message and "$ACTIONS_ID_TOKEN_REQUEST_URL" in message
    assert BEARER not in message and environ["ACTIONS_ID_TOKEN_REQUEST_URL"] not in message
    assert len(server.requests) == 1  # a broken endpoint is not a propagation delay: no retry


def test_the_audience_is_the_whole_query_of_an_endpoint_url_without_one(github):
    server, environ = github
    url = environ["ACTIONS_ID_TOKEN_REQUEST_URL"].split("?")[0]
    assert azure_credentials.github_id_token(url, BEARER) == "github-id-token-1"
    [(path, authorization)] = server.requests
    assert parse_qs(urlsplit(path).query) == {"audience": ["api://AzureADTokenExchange"]}
    assert authorization == f"bearer {BEARER}"


def test_unreachable_token_endpoint_is_named():
    environ = {"ACTIONS_ID_TOKEN_REQUEST_URL": "http://127.0.0.1:9/idtoken?x=1", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": BEARER}
    with pytest.raises(FlowError, match=r"could not reach GitHub's OIDC token endpoint \(\$ACTIONS_ID_TOKEN_REQUEST_URL\)"):
        azure_credentials.github_id_token(environ["ACTIONS_ID_TOKEN_REQUEST_URL"], BEARER)


@pytest.mark.parametrize(
    "environ, chosen",
    [
        ({}, "DefaultAzureCredential"),
        ({"ACTIONS_ID_TOKEN_REQUEST_URL": "https://x/?a=1"}, "DefaultAzureCredential"),  # no id-token permission
        ({"ACTIONS_ID_TOKEN_REQUEST_URL": "https://x/?a=1", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t"}, "ClientAssertionCredential"),
        ({"ACTIONS_ID_TOKEN_REQUEST_URL": "https://x/?a=1", "ACTIONS_ID_TOKEN_REQUEST_TOKEN": "t",
          "AZUREML_PLATFORM_CREDENTIAL": "default"}, "DefaultAzureCredential"),
    ],
    ids=["laptop", "job without id-token permission", "job with OIDC", "forced default"],
)
def test_the_credential_follows_the_environment(environ, chosen, monkeypatch):
    monkeypatch.setattr("azure.identity.DefaultAzureCredential", lambda: FakeCredential())
    credential = sign_in(OUTPUTS, environ).new_credential()
    assert type(credential).__name__ == {"DefaultAzureCredential": "FakeCredential"}.get(chosen, chosen)


@pytest.mark.parametrize(
    "environ, message",
    [
        ({"AZUREML_PLATFORM_CREDENTIAL": "github"},
         "AZUREML_PLATFORM_CREDENTIAL=github but ACTIONS_ID_TOKEN_REQUEST_URL and ACTIONS_ID_TOKEN_REQUEST_TOKEN not set"),
        ({"AZUREML_PLATFORM_CREDENTIAL": "cli"}, "AZUREML_PLATFORM_CREDENTIAL='cli': expected one of default, github"),
    ],
)
def test_a_bad_credential_choice_names_the_variable(environ, message):
    with pytest.raises(FlowError, match=message):
        sign_in(OUTPUTS, environ)


def connect_on(workspace: FakeWorkspace, credential: FakeCredential, clock: FakeClock, monkeypatch, budget=15 * 60):
    """connect() on the fake workspace with `credential`; returns its report lines and credentials made."""
    monkeypatch.setattr("jobs.azure.target.MLClient", lambda credential, **ids: workspace.client(OUTPUTS, credential))
    made = []

    def new_credential():
        made.append(credential)
        return credential

    how = SignIn(f"the automation identity {CLIENT_ID}", "with a fake", new_credential, "check the fake")
    lines = []
    ml_client, _ = connect(OUTPUTS, how, lines.append, clock.backoff(budget=budget))
    return lines, made, ml_client


def test_sign_in_waits_while_entra_id_replicates_a_new_application(monkeypatch):
    clock = FakeClock()
    not_yet = entra_error("AADSTS700016", f"Application with identifier '{CLIENT_ID}' was not found in the directory")
    credential = FakeCredential(errors=(not_yet, not_yet))
    lines, made, ml_client = connect_on(FakeWorkspace(), credential, clock, monkeypatch)
    assert credential.calls == 3 and clock.sleeps == [10, 20]
    waiting = f"waiting for Entra ID to replicate the automation identity {CLIENT_ID} (AADSTS700016)"
    assert lines[1:] == [f"{waiting}; retry 1 in 10s", f"{waiting}; retry 2 in 20s"]
    assert ml_client.workspace_name == OUTPUTS[keys.WORKSPACE]


def test_first_workspace_call_waits_for_role_assignments_with_a_fresh_token(monkeypatch):
    clock = FakeClock()
    denied = arm_error(403, "AuthorizationFailed", f"The client '{CLIENT_ID}' does not have authorization to perform "
                                                   "action 'Microsoft.MachineLearningServices/workspaces/read'")
    workspace = FakeWorkspace(Simulation(workspace_errors=[denied, denied]))
    lines, made, _ = connect_on(workspace, FakeCredential(), clock, monkeypatch)
    assert workspace.sim.calls["workspaces.get"] == 3 and clock.sleeps == [10, 20]
    assert len(made) == 3  # a new credential, so a new token, per attempt
    assert f"waiting for the role assignments on workspace {OUTPUTS[keys.WORKSPACE]} to take effect " \
           "(403 AuthorizationFailed); retry 2 in 20s" in lines


@pytest.mark.parametrize(
    "credential_error, workspace_error, message",
    [
        (entra_error("AADSTS7002138", "The subject matches with case-insensitive comparison only"), None,
         "could not authenticate to Azure with a fake: Microsoft Entra ID error '(invalid_client) AADSTS7002138"),
        (None, arm_error(404, "ResourceNotFound", "The Resource 'workspaces/mlw-test' was not found."),
         f"workspace {OUTPUTS[keys.WORKSPACE]} (resource group {OUTPUTS[keys.RESOURCE_GROUP]}"),
    ],
    ids=["subject differs in case", "no such workspace"],
)
def test_other_failures_fail_at_once(credential_error, workspace_error, message, monkeypatch):
    clock = FakeClock()
    workspace = FakeWorkspace(Simulation(workspace_errors=[workspace_error] if workspace_error else []))
    credential = FakeCredential(errors=(credential_error,) if credential_error else ())
    with pytest.raises(FlowError) as failure:
        connect_on(workspace, credential, clock, monkeypatch)
    assert message in str(failure.value)
    assert ("check the fake" in str(failure.value)) is (credential_error is not None)  # the sign-in's advice
    assert clock.sleeps == []


def test_waiting_gives_up_after_the_budget_and_says_what_to_check(monkeypatch):
    clock = FakeClock()
    not_yet = entra_error("AADSTS70021", "No matching federated identity record found for presented assertion.")
    credential = FakeCredential(errors=(not_yet,) * 10)
    with pytest.raises(FlowError) as failure:
        connect_on(FakeWorkspace(), credential, clock, monkeypatch, budget=60)
    assert clock.sleeps == [10, 20]  # 30 s waited; the next 40 s would pass the 60 s budget
    message = str(failure.value)
    assert message.startswith(
        f"gave up after 0.5 min waiting for Entra ID to replicate the federated credentials of the automation "
        f"identity {CLIENT_ID} (AADSTS70021): Microsoft Entra ID error '(invalid_client) AADSTS70021"
    )
    assert f"check that automation_client_id {CLIENT_ID} is an application in tenant {OUTPUTS[keys.TENANT_ID]}" in message
