"""Who the Azure stage signs in as, and waiting until Azure accepts it.

In a GitHub Actions job that may request ID tokens (`permissions: id-token: write`), the stage signs in as
the stack's automation identity with a fresh GitHub ID token for every Entra token it needs: the ID token
lives about 5 minutes while the stage polls for hours, and `az login --federated-token` cannot renew it
(Azure/azure-cli#28708). Elsewhere it uses DefaultAzureCredential (`az login`, workload or managed identity).

The automation identity and its role assignments are made by the same `pulumi up` minutes earlier, so the
first sign-in and the first workspace call retry, with backoff, the errors Entra ID replication and Azure
RBAC propagation cause, and nothing else. Tokens are never printed or logged.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Callable, Mapping, TypeVar

from azure.core.exceptions import HttpResponseError

from infra import outputs as keys
from jobs.flow import FlowError, Report

# set by GitHub Actions in a job with `permissions: id-token: write` (GitHub docs, "OpenID Connect reference")
GITHUB_TOKEN_URL = "ACTIONS_ID_TOKEN_REQUEST_URL"
GITHUB_TOKEN_BEARER = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"
# the audience Entra ID expects in a federated credential's assertion
ENTRA_AUDIENCE = "api://AzureADTokenExchange"
# "default" forces DefaultAzureCredential; "github" requires the GitHub variables; unset: GitHub when present
CREDENTIAL_CHOICE = "AZUREML_PLATFORM_CREDENTIAL"
CREDENTIAL_CHOICES = ("default", "github")
GITHUB_TIMEOUT_S = 30

T = TypeVar("T")


@dataclass(frozen=True)
class SignIn:
    """How the stage signs in: who, described for its messages, a factory of fresh credentials (a retry
    after an authorization failure asks for a new token), and what to check when sign-in fails."""

    who: str
    description: str
    new_credential: Callable[[], object]
    advice: str


def github_id_token(url: str, bearer: str) -> str:
    """A fresh GitHub ID token for Entra ID, from the job's OIDC token endpoint. A failure names the
    variable, never its value: the bearer token is a secret and the URL is the job's own."""
    # the URL GitHub sets already carries a query (api-version=2.0)
    audience = ("&" if "?" in url else "?") + urllib.parse.urlencode({"audience": ENTRA_AUDIENCE})
    request = urllib.request.Request(
        f"{url}{audience}",
        headers={"Authorization": f"bearer {bearer}", "Accept": "application/json; api-version=2.0"},
    )
    endpoint = f"GitHub's OIDC token endpoint (${GITHUB_TOKEN_URL})"
    try:
        with urllib.request.urlopen(request, timeout=GITHUB_TIMEOUT_S) as response:
            body = response.read()
    except urllib.error.HTTPError as error:
        # the request token lasts about 6 hours from the job's start (measured in Azure/azure-cli#28778)
        raise FlowError(
            f"{endpoint} answered HTTP {error.code} {error.reason}: the job needs `permissions: id-token: "
            f"write`, and ${GITHUB_TOKEN_BEARER} expires about 6 hours after the job started"
        ) from None
    except OSError as error:  # URLError, timeouts
        raise FlowError(f"could not reach {endpoint}: {getattr(error, 'reason', error)}") from None
    try:
        token = json.loads(body)["value"]
    except (ValueError, KeyError, TypeError):
        token = None
    if not isinstance(token, str) or not token:
        raise FlowError(f'{endpoint} answered without an ID token (no "value" field in its JSON)')
    return token


def sign_in(outputs: Mapping[str, str | None], environ: Mapping[str, str] = os.environ) -> SignIn:
    """The GitHub OIDC sign-in as the automation identity when the job can request ID tokens (or
    AZUREML_PLATFORM_CREDENTIAL=github), else DefaultAzureCredential (or AZUREML_PLATFORM_CREDENTIAL=default)."""
    choice = environ.get(CREDENTIAL_CHOICE, "").strip().lower()
    if choice and choice not in CREDENTIAL_CHOICES:
        raise FlowError(
            f"{CREDENTIAL_CHOICE}={choice!r}: expected one of {', '.join(CREDENTIAL_CHOICES)} "
            "(or unset: GitHub OIDC when the job can request ID tokens, else DefaultAzureCredential)"
        )
    url, bearer = environ.get(GITHUB_TOKEN_URL), environ.get(GITHUB_TOKEN_BEARER)
    client_id = outputs[keys.AUTOMATION_CLIENT_ID]
    if choice == "github" or (choice != "default" and url and bearer):
        missing = [name for name, value in ((GITHUB_TOKEN_URL, url), (GITHUB_TOKEN_BEARER, bearer)) if not value]
        if missing:
            raise FlowError(
                f"{CREDENTIAL_CHOICE}=github but {' and '.join(missing)} not set: "
                "give the workflow job `permissions: id-token: write`"
            )

        def new_credential():
            from azure.identity import ClientAssertionCredential

            # azure-identity calls `func` whenever it needs a new Entra token (about every hour per scope,
            # 5 minutes before expiry), and serves its cache in between; the ID token is never kept
            return ClientAssertionCredential(
                tenant_id=outputs[keys.TENANT_ID], client_id=client_id, func=lambda: github_id_token(url, bearer)
            )

        return SignIn(
            f"the automation identity {client_id}",
            f"as the automation identity {client_id} with GitHub OIDC tokens that renew themselves",
            new_credential,
            f"check that a federated credential of the application {client_id} matches this workflow's subject "
            f"(repo:OWNER/REPO:environment:NAME, or :ref:refs/heads/BRANCH) with audience {ENTRA_AUDIENCE}",
        )

    def default_credential():
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()

    return SignIn(
        "the signed-in identity",
        "with DefaultAzureCredential (environment, workload identity, managed identity or `az login`)",
        default_credential,
        f"on a laptop run `az login`; in GitHub Actions give the job `permissions: id-token: write` and the "
        f"stage signs in as the automation identity {client_id} itself",
    )


# -- waiting for Entra ID and Azure RBAC -------------------------------------------------------------


@dataclass(frozen=True)
class Backoff:
    """Retry after `first` seconds, doubling up to `longest`, until `budget` seconds have passed."""

    first: float
    longest: float
    budget: float
    sleep: Callable[[float], None] = time.sleep
    clock: Callable[[], float] = time.monotonic


# role assignments take "up to 10 minutes" to take effect ("Troubleshoot Azure RBAC",
# learn.microsoft.com/azure/role-based-access-control/troubleshooting); Entra ID replication of a new
# application has no documented bound (the Azure CLI waits up to 3 minutes, Azure/azure-cli#2243)
PROPAGATION = Backoff(first=10.0, longest=120.0, budget=15 * 60.0)
# a storage firewall rule the deploy workflow adds for the runner just before the stage: no documented
# delay, observed in seconds
STORAGE_FIREWALL = Backoff(first=5.0, longest=30.0, budget=3 * 60.0)


@dataclass(frozen=True)
class Transient:
    """A failure that time may cure: what is awaited, and what to check when it is not cured in time."""

    waiting_for: str
    check: str


# Entra ID codes a brand-new application or federated credential answers until it has replicated:
# AADSTS700016 application not found in the directory; AADSTS70021 / AADSTS700213 no matching federated
# identity record. Not AADSTS7002138 (subject differs only in case): a mistake, not a delay.
_REPLICATION_CODES = {
    "AADSTS700016": "the automation identity {client_id}",
    "AADSTS70021": "the federated credentials of the automation identity {client_id}",
    "AADSTS700213": "the federated credentials of the automation identity {client_id}",
}
_AADSTS = re.compile(r"\bAADSTS\d+\b")


def _chain(error: BaseException):
    """The error and the errors it was raised from (azure-ai-ml wraps storage errors)."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        yield error
        error = error.__cause__ or error.__context__


def _status(error: HttpResponseError) -> tuple[int | None, str]:
    """The HTTP status and the service's error code: azure-storage-blob sets `error_code` (a
    StorageErrorCode), ARM clients parse the body's `error.code`."""
    code = getattr(error, "error_code", None) or getattr(getattr(error, "error", None), "code", None) or ""
    return error.status_code, str(getattr(code, "value", code))


def first_line(error: BaseException) -> str:
    """The error's first line: Azure's messages go on with request ids and tracebacks."""
    text = str(getattr(error, "message", None) or error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def access_transient(error: BaseException, outputs: Mapping[str, str | None], who: str) -> Transient | None:
    """Whether signing in as `who`, or its first call on the workspace, failed only because Entra ID or
    Azure RBAC has not caught up with the `pulumi up` that made the identity and its roles."""
    client_id, workspace = outputs[keys.AUTOMATION_CLIENT_ID], outputs[keys.WORKSPACE]
    for cause in _chain(error):
        if not isinstance(cause, HttpResponseError):  # ClientAuthenticationError is one too
            continue
        codes = _AADSTS.findall(str(cause))
        if codes:  # Entra ID's answer: only replication is worth waiting for
            code = next((code for code in codes if code in _REPLICATION_CODES), None)
            if code is None:
                return None
            return Transient(
                f"Entra ID to replicate {_REPLICATION_CODES[code].format(client_id=client_id)} ({code})",
                f"that automation_client_id {client_id} is an application in tenant {outputs[keys.TENANT_ID]} "
                "with a federated credential for this workflow",
            )
        status, code = _status(cause)
        # ARM: 401 while a role assignment is not detected yet ("Troubleshoot Azure RBAC"), 403
        # AuthorizationFailed while it has not taken effect (research note ci-credentials.md §7)
        if status == 401 or (status == 403 and code == "AuthorizationFailed"):
            return Transient(
                f"the role assignments on workspace {workspace} to take effect ({status} {code or 'Unauthorized'})",
                f"that {who} has the AzureML Data Scientist role on workspace {workspace} "
                "(pulumi up grants it to the automation identity)",
            )
        return None
    return None


def storage_transient(error: BaseException, outputs: Mapping[str, str | None]) -> Transient | None:
    """Whether an upload failed because the storage account does not let this machine in yet: its
    firewall (AuthorizationFailure) or the data role (AuthorizationPermissionMismatch)."""
    account = outputs[keys.STORAGE_ACCOUNT]
    for cause in _chain(error):
        if isinstance(cause, HttpResponseError):
            status, code = _status(cause)
            if status == 403 and code in ("AuthorizationFailure", "AuthorizationPermissionMismatch"):
                return Transient(
                    f"storage account {account} to let this machine in (403 {code})",
                    f"that storage account {account}'s firewall allows this machine's public IP (a private stack's "
                    "storage denies the internet: the deploy workflow adds the runner's IP before the stage) and "
                    "that the identity has Storage Blob Data Contributor on it",
                )
    return None


def with_retries(
    call: Callable[[], T], transient: Callable[[BaseException], Transient | None], backoff: Backoff, report: Report
) -> T:
    """`call()`, repeated after each failure `transient` recognises, with exponential backoff, until
    `backoff.budget` is spent; any other failure is raised at once."""
    started, delay, retries = backoff.clock(), backoff.first, 0
    while True:
        try:
            return call()
        except Exception as error:
            cause = transient(error)
            if cause is None:
                raise
            waited = backoff.clock() - started
            if waited + delay > backoff.budget:
                raise FlowError(
                    f"gave up after {waited / 60:.1f} min waiting for {cause.waiting_for}: {first_line(error)}\n"
                    f"  check {cause.check}"
                ) from None
            retries += 1
            report(f"waiting for {cause.waiting_for}; retry {retries} in {delay:.0f}s")
            backoff.sleep(delay)
            delay = min(delay * 2, backoff.longest)
