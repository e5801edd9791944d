"""Run the real Pulumi program (`__main__.py`) offline, under `pulumi.runtime.set_mocks`.

`run_stack("dev")` evaluates the program with `Pulumi.dev.yaml`'s real config and returns every
registered resource (type token, name, inputs, mocked state, and the options the engine would
see: parent, protect, replace_on_changes, ...) and the stack's exports as plain values. It is
cached per stack, so the suite evaluates each stack once; `evaluate` runs any config uncached.

Secrets are never committed: each operator sets them with `pulumi config set --secret`. So the
harness fakes every secret the program reads (`infra.settings.SECRET_KEYS`) and any `secure:`
value a stack file holds.

Pulumi's runtime settings, config and root stack resource are process-global; `evaluate`
resets all three before each run, so several stacks can run in one pytest process.
"""

from __future__ import annotations

import functools
import json
import runpy
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.stack import run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra import stacks  # noqa: E402  (needs ROOT on sys.path)
from infra.settings import PROJECT, SECRET_KEYS  # noqa: E402

SUBSCRIPTION_ID = "00000000-0000-4000-8000-000000000001"
TENANT_ID = "00000000-0000-4000-8000-000000000002"
DEPLOYER_OBJECT_ID = "00000000-0000-4000-8000-000000000003"
DEPLOYER_CLIENT_ID = "00000000-0000-4000-8000-000000000004"
FAKE_PEM = "-----BEGIN FAKE TEST PEM-----\nbm90IGEgcmVhbCBjZXJ0aWZpY2F0ZQ==\n-----END FAKE TEST PEM-----\n"
FAKE_SECURE_VALUE = "fake-secure-config-value"
FAKE_CLIENT_SECRET = "fake-client-secret-value"

# the input that carries each Azure resource's own name, and its ARM resource type
_AZURE = {
    "azure-native:resources:ResourceGroup": ("resourceGroupName", None),
    "azure-native:operationalinsights:Workspace": ("workspaceName", "Microsoft.OperationalInsights/workspaces"),
    "azure-native:applicationinsights:Component": ("resourceName", "Microsoft.Insights/components"),
    "azure-native:storage:StorageAccount": ("accountName", "Microsoft.Storage/storageAccounts"),
    "azure-native:keyvault:Vault": ("vaultName", "Microsoft.KeyVault/vaults"),
    "azure-native:containerregistry:Registry": ("registryName", "Microsoft.ContainerRegistry/registries"),
    "azure-native:machinelearningservices:Workspace": (
        "workspaceName",
        "Microsoft.MachineLearningServices/workspaces",
    ),
    "azure-native:containerservice:ManagedCluster": ("resourceName", "Microsoft.ContainerService/managedClusters"),
}


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


def _group_id(group: str) -> str:
    return f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{group}"


class PlatformMocks(pulumi.runtime.Mocks):
    """Answers like Azure and Entra ID would: real-looking IDs and the state the program reads back."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        inputs, token = dict(args.inputs), args.typ
        if token in _AZURE:
            name_key, arm_type = _AZURE[token]
            name = inputs.get(name_key) or f"{args.name}{_uuid(args.name)[:8]}"
            group = inputs.get("resourceGroupName", name)
            arm_id = _group_id(group) + (f"/providers/{arm_type}/{name}" if arm_type else "")
            state = {**inputs, "name": name, **self._computed(token, name, arm_id, inputs)}
            return arm_id, state
        if token == "azure-native:machinelearningservices:Compute":
            name = inputs["computeName"]
            arm_id = (
                f"{_group_id(inputs['resourceGroupName'])}/providers/Microsoft.MachineLearningServices"
                f"/workspaces/{inputs['workspaceName']}/computes/{name}"
            )
            state = {**inputs, "name": name}
            if "identity" in inputs:
                state["identity"] = {**inputs["identity"], "principalId": _uuid(arm_id), "tenantId": TENANT_ID}
            return arm_id, state
        if token == "azure-native:kubernetesconfiguration:Extension":
            name = inputs["extensionName"]
            arm_id = (
                f"{_group_id(inputs['resourceGroupName'])}/providers/Microsoft.ContainerService/managedClusters/"
                f"{inputs['clusterName']}/providers/Microsoft.KubernetesConfiguration/extensions/{name}"
            )
            return arm_id, {**inputs, "name": name, "provisioningState": "Succeeded"}
        if token == "azure-native:keyvault:Secret":
            arm_id = (
                f"{_group_id(inputs['resourceGroupName'])}/providers/Microsoft.KeyVault/vaults/"
                f"{inputs['vaultName']}/secrets/{inputs['secretName']}"
            )
            return arm_id, {**inputs, "name": inputs["secretName"]}
        if token == "azure-native:authorization:RoleAssignment":
            name = _uuid(inputs["scope"], inputs["principalId"], inputs["roleDefinitionId"])
            return f"{inputs['scope']}/providers/Microsoft.Authorization/roleAssignments/{name}", {**inputs, "name": name}
        if token == "azuread:index/application:Application":
            object_id = _uuid("application", inputs["displayName"])
            state = {**inputs, "objectId": object_id, "clientId": _uuid("client", inputs["displayName"])}
            return f"/applications/{object_id}", state
        if token == "azuread:index/servicePrincipal:ServicePrincipal":
            object_id = _uuid("service-principal", inputs["clientId"])
            return f"/servicePrincipals/{object_id}", {**inputs, "objectId": object_id}
        if token == "azuread:index/applicationPassword:ApplicationPassword":
            key_id = _uuid("password", inputs["applicationId"])
            return f"{inputs['applicationId']}/password/{key_id}", {**inputs, "keyId": key_id, "value": FAKE_CLIENT_SECRET}
        if token == "azuread:index/applicationFederatedIdentityCredential:ApplicationFederatedIdentityCredential":
            credential_id = _uuid("federated", inputs["applicationId"], inputs["subject"])
            return f"{inputs['applicationId']}/federatedIdentityCredential/{credential_id}", {
                **inputs,
                "credentialId": credential_id,
            }
        return f"{args.name}-id", inputs  # components and anything the program adds later

    @staticmethod
    def _computed(token: str, name: str, arm_id: str, inputs: dict) -> dict:
        """The read-only properties Azure fills in that the program (or its exports) reads."""
        if token == "azure-native:keyvault:Vault":
            return {"properties": {**inputs["properties"], "vaultUri": f"https://{name}.vault.azure.net/"}}
        if token == "azure-native:containerregistry:Registry":
            return {"loginServer": f"{name.lower()}.azurecr.io"}
        if token == "azure-native:storage:StorageAccount":
            return {"primaryEndpoints": {"blob": f"https://{name}.blob.core.windows.net/"}}
        if token == "azure-native:operationalinsights:Workspace":
            return {"customerId": _uuid(arm_id)}
        if token == "azure-native:applicationinsights:Component":
            return {"instrumentationKey": _uuid(arm_id), "connectionString": f"InstrumentationKey={_uuid(arm_id)}"}
        if token == "azure-native:machinelearningservices:Workspace":
            return {"identity": {**inputs["identity"], "principalId": _uuid(arm_id), "tenantId": TENANT_ID}}
        if token == "azure-native:containerservice:ManagedCluster":
            kubelet = {
                "objectId": _uuid(arm_id, "kubelet"),
                "clientId": _uuid(arm_id, "kubelet-client"),
                "resourceId": f"{arm_id}-agentpool",
            }
            return {
                "identity": {**inputs["identity"], "principalId": _uuid(arm_id), "tenantId": TENANT_ID},
                "identityProfile": {"kubeletidentity": kubelet},
                "fqdn": f"{inputs.get('dnsPrefix', name)}.hcp.westeurope.azmk8s.io",
            }
        return {}

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list]:
        if args.token == "azure-native:authorization:getClientConfig":
            return {
                "clientId": DEPLOYER_CLIENT_ID,
                "objectId": DEPLOYER_OBJECT_ID,
                "subscriptionId": SUBSCRIPTION_ID,
                "tenantId": TENANT_ID,
            }, []
        raise NotImplementedError(f"no mock answer for the invoke {args.token}")


def is_secret(value: Any) -> bool:
    """Whether a registered input is a Pulumi secret (the engine sees it wrapped, never as plain text)."""
    return isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


def reveal(value: Any) -> Any:
    return value["value"] if is_secret(value) else value


@dataclass(frozen=True)
class Resource:
    urn: str
    type: str
    name: str  # the Pulumi logical name
    id: str  # the mocked Azure resource ID
    inputs: dict
    state: dict  # inputs plus what the mock computed (ids, names, principal IDs...)
    parent: str  # the parent's URN
    protect: bool
    dependencies: tuple[str, ...]
    replace_on_changes: tuple[str, ...]
    delete_before_replace: bool
    ignore_changes: tuple[str, ...]
    additional_secret_outputs: tuple[str, ...]

    @property
    def custom(self) -> bool:
        """A cloud resource, not a component."""
        return not self.type.startswith("azureml-platform:")


@dataclass(frozen=True)
class StackRun:
    stack: str
    config: Mapping[str, str]
    resources: tuple[Resource, ...]
    outputs: Mapping[str, Any]
    secret_outputs: frozenset[str]  # the export keys that are Pulumi secrets

    def of_type(self, token: str) -> list[Resource]:
        return [resource for resource in self.resources if resource.type == token]

    def one(self, token: str, name: str | None = None) -> Resource:
        found = [r for r in self.of_type(token) if name is None or r.name == name]
        if len(found) != 1:
            raise LookupError(f"{self.stack}: expected one {token} named {name or '*'}, found {len(found)}")
        return found[0]


class RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock monitor, plus the resource options it is otherwise blind to."""

    def __init__(self, mocks: pulumi.runtime.Mocks):
        super().__init__(mocks)
        self.requests: dict[str, Any] = {}

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.requests[response.urn] = request
        return response

    def resources_registered(self) -> tuple[Resource, ...]:
        found = []
        for urn, request in self.requests.items():
            registration = self.resources[urn]
            found.append(
                Resource(
                    urn=urn,
                    type=request.type,
                    name=request.name,
                    id=registration.id,
                    # secret inputs stay wrapped (see is_secret), as the engine receives them
                    inputs=rpc.deserialize_properties(request.object),
                    state=registration.state,
                    parent=request.parent,
                    protect=bool(request.protect),
                    dependencies=tuple(request.dependencies),
                    replace_on_changes=tuple(request.replaceOnChanges),
                    delete_before_replace=bool(request.deleteBeforeReplace),
                    ignore_changes=tuple(request.ignoreChanges),
                    additional_secret_outputs=tuple(request.additionalSecretOutputs),
                )
            )
        return tuple(found)


def stack_config(stack_name: str) -> dict[str, str]:
    """The stack file's config as the Pulumi engine hands it to the program: every value a string."""
    raw = stacks.stack_config(stack_name, ROOT)
    config = {key: FAKE_PEM for key in SECRET_KEYS}
    for key, value in raw.items():
        if isinstance(value, dict) and set(value) == {"secure"}:  # encrypted for a secrets provider we lack
            value = FAKE_PEM if key in SECRET_KEYS else FAKE_SECURE_VALUE
        config[key] = value if isinstance(value, str) else json.dumps(value)
    return config


def evaluate(stack_name: str, config: Mapping[str, str], monitor: RecordingMonitor | None = None) -> StackRun:
    """Run `__main__.py` once for `stack_name` with `config`; raises what the program raises.

    Pass a `monitor` to see what was registered before a failure.
    """
    monitor = monitor or RecordingMonitor(PlatformMocks())
    runtime_settings.ROOT.set(None)  # set_mocks only builds a fresh root stack when none is set
    secret_keys = [key for key, value in config.items() if key in SECRET_KEYS or value == FAKE_SECURE_VALUE]
    pulumi.runtime.set_all_config(dict(config), secret_keys)
    pulumi.runtime.set_mocks(monitor.mocks, project=PROJECT, stack=stack_name, preview=False, monitor=monitor)

    _sync_await(run_pulumi_func(lambda: runpy.run_path(str(ROOT / "__main__.py"), run_name="__main__")))

    exports = runtime_settings.get_root_resource().outputs
    outputs, secret = {}, set()
    for key, value in exports.items():
        output = pulumi.Output.from_input(value)
        outputs[key] = _sync_await(output.future())
        if _sync_await(output.is_secret()):
            secret.add(key)
    return StackRun(stack_name, dict(config), monitor.resources_registered(), outputs, frozenset(secret))


@functools.lru_cache(maxsize=None)
def run_stack(stack_name: str) -> StackRun:
    """The stack file's program evaluation, once per stack per process."""
    return evaluate(stack_name, stack_config(stack_name))


def stack_names() -> list[str]:
    """Every stack file in the repo."""
    return sorted(path.name.split(".")[1] for path in ROOT.glob("Pulumi.*.yaml"))


def with_setting(config: Mapping[str, str], key: str, value: Any = None, *, remove: bool = False) -> dict[str, str]:
    """A copy of `config` with one setting changed or removed; `key` may reach into objects:
    `azureml-platform:cpuCluster.maxNodes`."""
    changed = dict(config)
    top, *path = key.split(".")
    if not path:
        if remove:
            changed.pop(top, None)
        else:
            changed[top] = value if isinstance(value, str) else json.dumps(value)
        return changed
    root = json.loads(changed[top])
    section = root
    for field in path[:-1]:
        section = section[field]
    if remove:
        section.pop(path[-1], None)
    else:
        section[path[-1]] = value
    changed[top] = json.dumps(root)
    return changed
