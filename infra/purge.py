"""Purge a torn-down stack's Azure ML workspace and Key Vault for good, so the next `pulumi up` can reuse their
names (soft delete keeps both names reserved for its retention period).

    pulumi stack output --json --stack dev > outputs.json    # the names to purge
    python -m infra.purge --stack dev --outputs outputs.json  # before destroy: deletes the workspace permanently
    pulumi destroy --stack dev --yes
    python -m infra.purge --stack dev --outputs outputs.json  # after destroy: purges the soft-deleted Key Vault

Each run does what can be done at that moment: a live workspace is deleted permanently (once its resource
group is gone, ARM cannot address a soft-deleted workspace any more), a soft-deleted one is purged by id, and
the soft-deleted vault is purged from its deleted-vault record (which outlives the resource group).
It touches only what the stack's outputs name, and only when the resource (live workspace, deleted-vault
record) carries the stack's tags; a vault must also have lived in the stack's resource group. It refuses
protected stacks (prod, or `azureml-platform:protect: true`). Exit status: 0 done or nothing to purge,
1 something was refused or could not be purged, 2 bad input. `--dry-run` lists and changes nothing.
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from azure.core.exceptions import HttpResponseError
from azure.core.pipeline.policies import (
    ContentDecodePolicy,
    HeadersPolicy,
    RequestIdPolicy,
    RetryPolicy,
    UserAgentPolicy,
)
from azure.core.polling import LROPoller
from azure.core.polling.base_polling import OperationFailed
from azure.core.rest import HttpRequest
from azure.mgmt.core import ARMPipelineClient
from azure.mgmt.core.policies import ARMChallengeAuthenticationPolicy, ARMHttpLoggingPolicy
from azure.mgmt.core.polling.arm_polling import ARMPolling

from infra import outputs as keys
from infra.settings import stack_tags
from infra.stacks import PROTECT_KEY, StackConfigError, is_protected

ARM_ENDPOINT = "https://management.azure.com"
KEY_VAULT_API = "2023-07-01"
# the version azure-ai-ml 1.35 speaks; its Workspaces_Delete takes forceToPurge
ML_API = "2025-12-01"
# seconds between polls of a long-running purge, unless ARM's Retry-After says otherwise
POLLING_INTERVAL_S = 10
NEEDED_OUTPUTS = (keys.SUBSCRIPTION_ID, keys.RESOURCE_GROUP, keys.LOCATION, keys.WORKSPACE, keys.KEY_VAULT_URI)

EXIT_OK, EXIT_REFUSED, EXIT_INVALID = 0, 1, 2


class PurgeInputError(ValueError):
    """The outputs file or the stack's config cannot be used."""


class ProtectedStackError(PurgeInputError):
    """The stack is protected: purge never runs on it."""


class PurgeFailed(RuntimeError):
    """ARM answered a request with an error."""

    def __init__(self, what: str, response):
        try:
            error = (response.json() or {}).get("error") or {}
        except (ValueError, AttributeError):
            error = {}
        detail = f"{error.get('code', '')}: {error.get('message', '')}" if error else response.reason
        super().__init__(f"{what}: HTTP {response.status_code} {detail}")
        self.status_code, self.code = response.status_code, error.get("code")


@dataclass(frozen=True)
class StackNames:
    """The names a stack's outputs give to what a teardown leaves soft-deleted."""

    subscription_id: str
    resource_group: str
    location: str
    workspace: str
    key_vault: str

    def vault_id(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.KeyVault/vaults/{self.key_vault}")

    def deleted_vault_path(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/providers/Microsoft.KeyVault"
                f"/locations/{self.location}/deletedVaults/{self.key_vault}")

    def workspace_path(self) -> str:
        return (f"/subscriptions/{self.subscription_id}/resourceGroups/{self.resource_group}"
                f"/providers/Microsoft.MachineLearningServices/workspaces/{self.workspace}")


@dataclass(frozen=True)
class Outcome:
    resource: str
    action: str  # purged | would purge | nothing to purge | refused
    detail: str

    @property
    def refused(self) -> bool:
        return self.action == "refused"


def load_names(path: Path) -> StackNames:
    """The names to purge, from a saved `pulumi stack output --json`."""
    try:
        values = json.loads(Path(path).read_text())
    except OSError as error:
        raise PurgeInputError(f"{path}: cannot read stack outputs: {error.strerror}") from error
    except json.JSONDecodeError as error:
        raise PurgeInputError(f"{path}: not the JSON of `pulumi stack output --json`: {error.msg}") from error
    if not isinstance(values, dict):
        raise PurgeInputError(f"{path}: expected a JSON object of stack outputs")
    for key in NEEDED_OUTPUTS:
        if not isinstance(values.get(key), str) or not values[key]:
            raise PurgeInputError(f"{path}: stack output '{key}' is missing or empty")
    host = urlparse(values[keys.KEY_VAULT_URI]).hostname or ""
    if not host.endswith(".vault.azure.net"):
        raise PurgeInputError(f"{path}: stack output '{keys.KEY_VAULT_URI}' is not a Key Vault URI")
    return StackNames(values[keys.SUBSCRIPTION_ID], values[keys.RESOURCE_GROUP], values[keys.LOCATION],
                      values[keys.WORKSPACE], host.split(".")[0])


def refuse_protected(stack: str, config_dir: Path) -> None:
    try:
        protected = is_protected(stack, config_dir)
    except StackConfigError as error:
        raise PurgeInputError(str(error)) from error
    if protected:
        raise ProtectedStackError(f"stack '{stack}' is protected (prod or '{PROTECT_KEY}: true'): purge refuses it")


def arm_client(credential, transport=None) -> ARMPipelineClient:
    policies = [
        RequestIdPolicy(),  # the LRO poller reads x-ms-client-request-id back
        HeadersPolicy(),
        UserAgentPolicy("azureml-platform-purge"),
        RetryPolicy(),
        ARMChallengeAuthenticationPolicy(credential, f"{ARM_ENDPOINT}/.default"),
        ContentDecodePolicy(),
        ARMHttpLoggingPolicy(),
    ]
    return ARMPipelineClient(ARM_ENDPOINT, policies=policies, **({"transport": transport} if transport else {}))


class Purger:
    """Finds and purges one stack's soft-deleted Key Vault and workspace through the ARM REST API."""

    def __init__(self, client: ARMPipelineClient, stack: str, names: StackNames, dry_run: bool):
        self.client, self.stack, self.names, self.dry_run = client, stack, names, dry_run

    def run(self):
        """Yields each outcome as soon as it is known, so a later failure does not hide an earlier purge."""
        yield self.key_vault()
        yield self.workspace()

    def _send(self, method: str, path: str, api_version: str, **params):
        request = HttpRequest(method, f"{ARM_ENDPOINT}{path}", params={"api-version": api_version, **params})
        return self.client.send_request(request, _return_pipeline_response=True)

    def _complete(self, method: str, path: str, api_version: str, what: str, **params) -> None:
        """Send a long-running ARM operation and wait for it to finish."""
        initial = self._send(method, path, api_version, **params)
        if initial.http_response.status_code not in (200, 202, 204):
            raise PurgeFailed(what, initial.http_response)
        if initial.http_response.status_code == 202:
            poller = LROPoller(self.client, initial, lambda *_: None, ARMPolling(POLLING_INTERVAL_S))
            poller.result()

    def _foreign(self, tags: dict | None) -> str | None:
        """Why a resource with these tags is not this stack's, or None when it is."""
        tags = tags or {}
        wrong = {key: tags.get(key) for key, value in stack_tags(self.stack).items() if tags.get(key) != value}
        return f"it does not carry stack '{self.stack}' tags (found {wrong})" if wrong else None

    def key_vault(self) -> Outcome:
        name = self.names.key_vault
        resource = f"Key Vault {name}"
        response = self._send("GET", self.names.deleted_vault_path(), KEY_VAULT_API).http_response
        if response.status_code == 404:
            return Outcome(resource, "nothing to purge", f"no soft-deleted vault of that name in {self.names.location}")
        if response.status_code != 200:
            raise PurgeFailed(f"{resource}: reading its deleted-vault record", response)
        properties = response.json().get("properties", {})
        vault_id = properties.get("vaultId", "")
        if vault_id.lower() != self.names.vault_id().lower():
            return Outcome(resource, "refused", f"the deleted vault of that name was {vault_id or 'elsewhere'}, "
                                                f"not in resource group {self.names.resource_group}")
        if foreign := self._foreign(properties.get("tags")):
            return Outcome(resource, "refused", foreign)
        if properties.get("purgeProtectionEnabled"):
            return Outcome(resource, "refused", "purge protection is on: Azure purges it itself on "
                                                f"{properties.get('scheduledPurgeDate', 'its scheduled date')}")
        deleted = f"soft-deleted {properties.get('deletionDate', '')}".strip()
        if self.dry_run:
            return Outcome(resource, "would purge", deleted)
        self._complete("POST", f"{self.names.deleted_vault_path()}/purge", KEY_VAULT_API, resource)
        return Outcome(resource, "purged", deleted)

    def workspace(self) -> Outcome:
        name = self.names.workspace
        resource = f"Azure ML workspace {name}"
        path = self.names.workspace_path()
        live = self._send("GET", path, ML_API).http_response
        if live.status_code == 200:
            # Run before `pulumi destroy`: deleting the resource group would leave a soft-deleted workspace that
            # ARM can no longer address, so the teardown deletes the stack's own workspace for good first.
            if foreign := self._foreign(live.json().get("tags")):
                return Outcome(resource, "refused", foreign)
            if self.dry_run:
                return Outcome(resource, "would purge", "live: would delete it permanently, skipping soft delete")
            self._complete("DELETE", path, ML_API, resource, forceToPurge="true")
            return Outcome(resource, "purged", "deleted permanently, skipping soft delete")
        if live.status_code != 404:
            raise PurgeFailed(f"{resource}: reading the workspace", live)
        # ARM has no public listing of soft-deleted workspaces: a purge by exact id is the documented way
        where = f"in {self.names.resource_group}, subscription {self.names.subscription_id}"
        if self.dry_run:
            return Outcome(resource, "would purge", f"if soft-deleted, {where}")
        try:
            self._complete("DELETE", path, ML_API, resource, forceToPurge="true")
        except PurgeFailed as error:
            if error.code == "ResourceGroupNotFound":
                gone = f"resource group {self.names.resource_group} is gone, so ARM cannot address the workspace"
                return Outcome(resource, "refused", f"{gone}: recreate the group and run purge again")
            if error.status_code == 404:
                return Outcome(resource, "nothing to purge", f"no soft-deleted workspace {where}")
            raise
        return Outcome(resource, "purged", where)


def main(argv: list[str] | None = None, credential=None, transport=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.purge", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, help="the torn-down stack (never prod)")
    parser.add_argument("--outputs", required=True, type=Path,
                        help="`pulumi stack output --json`, saved before destroy")
    parser.add_argument("--config-dir", type=Path, default=Path("."), help="where Pulumi.<stack>.yaml lives")
    parser.add_argument("--dry-run", action="store_true", help="list what would be purged; change nothing")
    args = parser.parse_args(argv)
    try:
        refuse_protected(args.stack, args.config_dir)
        names = load_names(args.outputs)
    except PurgeInputError as error:
        print(f"purge: {error}", file=sys.stderr)
        return EXIT_REFUSED if isinstance(error, ProtectedStackError) else EXIT_INVALID
    if credential is None:
        from azure.identity import DefaultAzureCredential  # the azure/login session in CI, `az login` locally

        credential = DefaultAzureCredential()
    purger = Purger(arm_client(credential, transport), args.stack, names, args.dry_run)
    refused = False
    try:
        for outcome in purger.run():
            print(f"{outcome.resource}: {outcome.action} ({outcome.detail})")
            refused |= outcome.refused
    except (PurgeFailed, HttpResponseError, OperationFailed) as error:
        print(f"purge: {error}", file=sys.stderr)
        return EXIT_REFUSED
    return EXIT_REFUSED if refused else EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
