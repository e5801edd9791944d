"""Run the real Pulumi program (`__main__.py`) offline, under `pulumi.runtime.set_mocks`.

`run_stack("dev")` evaluates the program with `Pulumi.dev.yaml`'s real config and returns every
registered resource (type token, name, inputs, mocked state, and the options the engine would
see: parent, protect, replace_on_changes, ...) and the stack's exports as the engine stores them:
serialized the way `Stack._finish` registers them, so an export that serializes to None is gone
(pulumi/runtime/rpc.py, serialize_properties), exactly as `pulumi stack output --json` would not
show it. `stack_output_json` renders them as that command prints them. It is cached per stack, so
the suite evaluates each stack once; `evaluate` runs any config uncached.

Secrets are never committed: each operator sets them with `pulumi config set --secret`. So the
harness fakes every secret the program reads (`infra.settings.SECRET_KEYS`) and any `secure:`
value a stack file holds.

Pulumi's runtime settings, config and root stack resource are process-global; `evaluate`
resets all three before each run, so several stacks can run in one pytest process.
"""

from __future__ import annotations

import base64
import datetime
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
from google.protobuf import json_format
from pulumi.runtime import settings as runtime_settings
from pulumi.runtime.stack import massage, run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from infra import rules, settings, stacks  # noqa: E402  (needs ROOT on sys.path)
from infra.naming import COMPUTE_INSTANCE  # noqa: E402
from infra.settings import PROJECT, SECRET_KEYS  # noqa: E402

SUBSCRIPTION_ID = "00000000-0000-4000-8000-000000000001"
TENANT_ID = "00000000-0000-4000-8000-000000000002"
DEPLOYER_OBJECT_ID = "00000000-0000-4000-8000-000000000003"
DEPLOYER_CLIENT_ID = "00000000-0000-4000-8000-000000000004"
FAKE_PEM = "-----BEGIN FAKE TEST PEM-----\nbm90IGEgcmVhbCBjZXJ0aWZpY2F0ZQ==\n-----END FAKE TEST PEM-----\n"
FAKE_SECURE_VALUE = "fake-secure-config-value"
FAKE_CLIENT_SECRET = "fake-client-secret-value"

# token -> (the input that carries the resource's ARM name, its ARM ID below the resource group). A resource's
# `name` output is that ARM name, as Azure answers, never the Pulumi logical name.
_ARM = {
    "azure-native:resources:ResourceGroup": ("resourceGroupName", lambda i, n: ""),
    "azure-native:operationalinsights:Workspace": (
        "workspaceName", lambda i, n: f"/providers/Microsoft.OperationalInsights/workspaces/{n}"),
    "azure-native:applicationinsights:Component": ("resourceName", lambda i, n: f"/providers/Microsoft.Insights/components/{n}"),
    "azure-native:storage:StorageAccount": ("accountName", lambda i, n: f"/providers/Microsoft.Storage/storageAccounts/{n}"),
    "azure-native:storage:ManagementPolicy": (
        "managementPolicyName",
        lambda i, n: f"/providers/Microsoft.Storage/storageAccounts/{i['accountName']}/managementPolicies/{n}",
    ),
    "azure-native:storage:BlobServiceProperties": (
        "blobServicesName",
        lambda i, n: f"/providers/Microsoft.Storage/storageAccounts/{i['accountName']}/blobServices/{n}",
    ),
    "azure-native:keyvault:Vault": ("vaultName", lambda i, n: f"/providers/Microsoft.KeyVault/vaults/{n}"),
    "azure-native:keyvault:Secret": (
        "secretName", lambda i, n: f"/providers/Microsoft.KeyVault/vaults/{i['vaultName']}/secrets/{n}"),
    "azure-native:containerregistry:Registry": (
        "registryName", lambda i, n: f"/providers/Microsoft.ContainerRegistry/registries/{n}"),
    "azure-native:machinelearningservices:Workspace": (
        "workspaceName", lambda i, n: f"/providers/Microsoft.MachineLearningServices/workspaces/{n}"),
    "azure-native:machinelearningservices:Compute": (
        "computeName",
        lambda i, n: f"/providers/Microsoft.MachineLearningServices/workspaces/{i['workspaceName']}/computes/{n}",
    ),
    "azure-native:containerservice:ManagedCluster": (
        "resourceName", lambda i, n: f"/providers/Microsoft.ContainerService/managedClusters/{n}"),
    "azure-native:kubernetesconfiguration:Extension": (
        "extensionName",
        lambda i, n: f"/providers/Microsoft.ContainerService/managedClusters/{i['clusterName']}"
        f"/providers/Microsoft.KubernetesConfiguration/extensions/{n}",
    ),
    "azure-native:managedidentity:UserAssignedIdentity": (
        "resourceName", lambda i, n: f"/providers/Microsoft.ManagedIdentity/userAssignedIdentities/{n}"),
    "azure-native:network:VirtualNetwork": ("virtualNetworkName", lambda i, n: f"/providers/Microsoft.Network/virtualNetworks/{n}"),
    "azure-native:network:NatGateway": ("natGatewayName", lambda i, n: f"/providers/Microsoft.Network/natGateways/{n}"),
    "azure-native:network:PublicIPAddress": (
        "publicIpAddressName", lambda i, n: f"/providers/Microsoft.Network/publicIPAddresses/{n}"),
    "azure-native:network:PrivateEndpoint": (
        "privateEndpointName", lambda i, n: f"/providers/Microsoft.Network/privateEndpoints/{n}"),
    "azure-native:network:PrivateDnsZoneGroup": (
        "privateDnsZoneGroupName",
        lambda i, n: f"/providers/Microsoft.Network/privateEndpoints/{i['privateEndpointName']}/privateDnsZoneGroups/{n}",
    ),
    "azure-native:privatedns:PrivateZone": ("privateZoneName", lambda i, n: f"/providers/Microsoft.Network/privateDnsZones/{n}"),
    "azure-native:machinelearningservices:Registry": (
        "registryName", lambda i, n: f"/providers/Microsoft.MachineLearningServices/registries/{n}"),
    "azure-native:privatedns:VirtualNetworkLink": (
        "virtualNetworkLinkName",
        lambda i, n: f"/providers/Microsoft.Network/privateDnsZones/{i['privateZoneName']}/virtualNetworkLinks/{n}",
    ),
}

# token -> (the input holding the scope's ARM ID, the input holding the ARM name, the provider path below the scope)
_EXTENSIONS = {
    "azure-native:monitor:DiagnosticSetting": ("resourceUri", "name", "Microsoft.Insights/diagnosticSettings"),
    "azure-native:authorization:PolicyExemption": ("scope", "policyExemptionName", "Microsoft.Authorization/policyExemptions"),
}


def _uuid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "/".join(parts)))


def _group_id(group: str) -> str:
    return f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/{group}"


def _identity(arm_id: str, *, client: bool = False) -> dict:
    """A managed identity as Entra ID issues it: its own principal (and client) ID, distinct per identity."""
    issued = {"principalId": _uuid(arm_id, "principal"), "tenantId": TENANT_ID}
    return {**issued, "clientId": _uuid(arm_id, "client")} if client else issued


def fake_kubeconfig(cluster: str) -> str:
    """The admin kubeconfig `listClusterAdminCredential` returns (base64 of this text), with a fake token."""
    return (
        "apiVersion: v1\nkind: Config\n"
        f"clusters:\n- name: {cluster}\n  cluster:\n    server: https://{cluster}.hcp.westeurope.azmk8s.io:443\n"
        f"contexts:\n- name: {cluster}-admin\n  context:\n    cluster: {cluster}\n    user: clusterAdmin\n"
        f"current-context: {cluster}-admin\n"
        "users:\n- name: clusterAdmin\n  user:\n    token: fake-admin-token\n"
    )


class RoleAssignmentExists(Exception):
    """What ARM answers a second assignment of one role to one principal at one scope (HTTP 409)."""


class ArmRefused(Exception):
    """What ARM answers a request it refuses (HTTP 400 or 409), with its error code first."""


class PlatformMocks(pulumi.runtime.Mocks):
    """Answers as ARM and Entra ID do: the ARM name from the name input, ARM IDs, a distinct principal per
    identity, the computed fields the program reads, and a 409 for a role assignment that exists. A resource
    type it has no answer for fails the run, so a new type cannot pass on an echo of its own inputs."""

    def __init__(self, stack_references: Mapping[str, Mapping[str, Any]] | None = None):
        # fully qualified stack name -> its outputs as the engine stores them: what a StackReference reads
        self.stack_references = dict(stack_references or {})
        self.role_assignments: dict[tuple[str, str, str], str] = {}
        # (region, lower-case name) -> logical name: a compute instance's name is unique in its region
        self.compute_instances: dict[tuple[str, str], str] = {}
        self.invokes: list[str] = []  # every invoke token the program called, in order

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str, dict]:
        inputs, token = dict(args.inputs), args.typ
        if token in _ARM:
            name_key, path = _ARM[token]
            name = inputs[name_key]
            group = inputs.get("resourceGroupName", name)
            arm_id = _group_id(group) + path(inputs, name)
            if token == "azure-native:machinelearningservices:Compute" and inputs["properties"]["computeType"] == "ComputeInstance":
                self._check_compute_instance(args.name, name, inputs)
            return arm_id, {**inputs, "name": name, **self._computed(token, name, arm_id, inputs)}
        if token == "azure-native:authorization:RoleAssignment":
            key = (inputs["scope"].lower(), inputs["principalId"], inputs["roleDefinitionId"].lower())
            if key in self.role_assignments:
                raise RoleAssignmentExists(
                    f"RoleAssignmentExists: The role assignment already exists. ({args.name} repeats "
                    f"{self.role_assignments[key]}: role {key[2].rsplit('/', 1)[-1]} for {key[1]} at {key[0]})"
                )
            self.role_assignments[key] = args.name
            name = _uuid(*key)  # Pulumi names a role assignment with a new GUID
            return f"{inputs['scope']}/providers/Microsoft.Authorization/roleAssignments/{name}", {**inputs, "name": name}
        if token == "azure-native:authorization:RoleDefinition":
            # a custom role's ID is the subscription's, wherever it was created (its scope: a resource group here)
            arm_id = f"/subscriptions/{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/{inputs['roleDefinitionId']}"
            return arm_id, {**inputs, "name": inputs["roleDefinitionId"], "type": "Microsoft.Authorization/roleDefinitions"}
        if token in _EXTENSIONS:
            # an extension resource lives below the resource it extends (its scope), whose ID the program passes
            scope_key, name_key, provider_path = _EXTENSIONS[token]
            name = inputs[name_key]
            return f"{inputs[scope_key]}/providers/{provider_path}/{name}", {**inputs, "name": name}
        if token == "pulumi:pulumi:StackReference":
            # read, not created: the engine answers with the referenced stack's outputs, or fails as `pulumi` does
            stack = args.name
            if stack not in self.stack_references:
                raise ArmRefused(f"unknown stack {stack!r} (a StackReference reads only a stack that exists)")
            return stack, {"name": stack, "outputs": dict(self.stack_references[stack]), "secretOutputNames": []}
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
        if token == "kubernetes:amlarc.azureml.com/v1alpha1:InstanceType":
            # cluster-scoped: the Kubernetes provider's ID is the object's name
            metadata = inputs["metadata"]
            return metadata["name"], {**inputs, "metadata": {**metadata, "uid": _uuid("instancetype", metadata["name"])}}
        if token.startswith("pulumi:providers:") or token.startswith("azureml-platform:"):
            return f"{args.name}-id", inputs  # providers and the platform's own components
        raise NotImplementedError(f"PlatformMocks has no ARM-like answer for {token} ({args.name}): add one")

    def _check_compute_instance(self, logical: str, name: str, inputs: dict) -> None:
        """A compute instance's name follows Azure's rule and is unique in the region ("Name needs to be unique
        across all existing computes within an Azure region"); ARM refuses it otherwise."""
        if COMPUTE_INSTANCE.check(name) is not None:
            raise ArmRefused(f"ValidationError: {logical}: compute instance name {name!r} is invalid ({COMPUTE_INSTANCE.allowed})")
        key = (inputs["location"], name.lower())
        if key in self.compute_instances:
            raise ArmRefused(f"Conflict: {logical}: compute instance name {name!r} is taken in {key[0]} (by {self.compute_instances[key]})")
        self.compute_instances[key] = logical

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
        if token in ("azure-native:machinelearningservices:Workspace", "azure-native:machinelearningservices:Compute"):
            computed = {"identity": {**inputs["identity"], **_identity(arm_id)}} if "identity" in inputs else {}
            if token.endswith(":Workspace"):  # its GUID: the name of its default container, azureml-blobstore-<GUID>
                computed["workspaceId"] = _uuid(arm_id, "workspace")
            if token.endswith(":Compute") and inputs["properties"]["computeType"] == "ComputeInstance":
                # a new instance starts: "Running" (GET .../computes/{name}: properties.properties.state)
                instance = inputs["properties"]
                computed["properties"] = {**instance, "provisioningState": "Succeeded",
                                          "properties": {**instance.get("properties", {}), "state": "Running"}}  # fmt: skip
            return computed
        if token == "azure-native:managedidentity:UserAssignedIdentity":
            return _identity(arm_id, client=True)
        if token == "azure-native:network:VirtualNetwork":
            return {"subnets": [{**subnet, "id": f"{arm_id}/subnets/{subnet['name']}"} for subnet in inputs.get("subnets", [])]}
        if token == "azure-native:containerservice:ManagedCluster":
            identity = dict(inputs["identity"])
            if identity["type"] == "UserAssigned":  # the cluster runs as the identities it was given
                identity["userAssignedIdentities"] = {uai: _identity(uai, client=True) for uai in identity["userAssignedIdentities"]}
            else:
                identity.update(_identity(arm_id))
            # AKS makes the kubelet's identity itself, in the node resource group
            kubelet = {"objectId": _uuid(arm_id, "kubelet"), "clientId": _uuid(arm_id, "kubelet-client"),
                       "resourceId": f"{arm_id}-agentpool"}  # fmt: skip
            return {"identity": identity, "identityProfile": {"kubeletidentity": kubelet},
                    "fqdn": f"{inputs.get('dnsPrefix', name)}.hcp.{inputs['location']}.azmk8s.io"}  # fmt: skip
        if token == "azure-native:kubernetesconfiguration:Extension":
            return {"provisioningState": "Succeeded"}
        if token == "azure-native:machinelearningservices:Registry":
            return PlatformMocks._registry(name, arm_id, inputs)
        return {}

    @staticmethod
    def _registry(name: str, arm_id: str, inputs: dict) -> dict:
        """Azure creates the registry's storage and container registry in a managed resource group
        ("azureml-rg-<name-of-your-registry>_<GUID>", how-to-registry-network-isolation) and fills in their IDs
        ("This is populated once the storage account is created", registries.json)."""
        managed = _group_id(f"azureml-rg-{name}_{_uuid(arm_id, 'managed')}")
        acr = f"{managed}/providers/Microsoft.ContainerRegistry/registries/{name.replace('-', '').replace('_', '')}acr"
        regions = []
        for index, region in enumerate(inputs["regionDetails"]):
            storage = f"{managed}/providers/Microsoft.Storage/storageAccounts/{_uuid(arm_id, region['location']).replace('-', '')[:24]}"
            regions.append({
                **region,
                "storageAccountDetails": [{"systemCreatedStorageAccount": {
                    **region["storageAccountDetails"][0]["systemCreatedStorageAccount"], "armResourceId": {"resourceId": storage}}}],
                "acrDetails": [{"systemCreatedAcrAccount": {
                    **region["acrDetails"][0]["systemCreatedAcrAccount"], "armResourceId": {"resourceId": acr}}}],
            })  # fmt: skip
        location = inputs["location"]
        return {
            "regionDetails": regions,
            "identity": {**inputs["identity"], **_identity(arm_id)},
            "managedResourceGroup": {"resourceId": managed},
            "discoveryUrl": f"https://{location}.api.azureml.ms/registrymanagement/v1.0/registries/{name}/discovery",
            "mlFlowRegistryUri": f"azureml://{location}.api.azureml.ms/mlflow/v1.0{arm_id}",
        }

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict, list]:
        self.invokes.append(args.token)
        if args.token == "azure-native:authorization:getClientConfig":
            return {
                "clientId": DEPLOYER_CLIENT_ID,
                "objectId": DEPLOYER_OBJECT_ID,
                "subscriptionId": SUBSCRIPTION_ID,
                "tenantId": TENANT_ID,
            }, []
        if args.token == "azure-native:containerservice:listManagedClusterAdminCredentials":
            kubeconfig = base64.b64encode(fake_kubeconfig(args.args["resourceName"]).encode()).decode()
            return {"kubeconfigs": [{"name": "clusterAdmin", "value": kubeconfig}]}, []
        raise NotImplementedError(f"no mock answer for the invoke {args.token}")


def is_secret(value: Any) -> bool:
    """Whether a registered input is a Pulumi secret (the engine sees it wrapped, never as plain text)."""
    return isinstance(value, dict) and value.get(rpc._special_sig_key) == rpc._special_secret_sig


def reveal(value: Any) -> Any:
    return value["value"] if is_secret(value) else value


def revealed(value: Any) -> Any:
    """`value` with every secret inside it unwrapped, as a policy pack sees inputs (deserialize_properties)."""
    value = reveal(value)
    if isinstance(value, dict):
        return {key: revealed(item) for key, item in value.items()}
    if isinstance(value, list):
        return [revealed(item) for item in value]
    return value


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
    property_dependencies: dict  # input -> URNs its value comes from
    request: Any  # the RegisterResourceRequest the engine received: what a policy pack is built from

    @property
    def custom(self) -> bool:
        """A cloud resource, not a component."""
        return not self.type.startswith("azureml-platform:")

    @property
    def role_name(self) -> str:
        """A role assignment's role: a built-in one's name (infra/roles.py), or "ML registry reader"/"publisher"."""
        from infra import roles, security

        guid = self.inputs["roleDefinitionId"].rsplit("/", 1)[-1]
        return roles.NAMES.get(guid) or f"ML registry {security.ml_registry_role(self.rule_view())}"

    def rule_view(self) -> rules.Resource:
        """This resource as the rules in infra/ see it."""
        return rules.Resource(
            type=self.type, name=self.name, urn=self.urn, inputs=revealed(self.inputs), protect=self.protect,
            parent=self.parent, property_dependencies=self.property_dependencies,
        )  # fmt: skip


@dataclass(frozen=True)
class StackRun:
    stack: str
    config: Mapping[str, str]
    resources: tuple[Resource, ...]
    outputs: Mapping[str, Any]  # as the engine stores them, secrets revealed
    secret_outputs: frozenset[str]  # the export keys that are Pulumi secrets
    dropped_outputs: frozenset[str]  # exported in Python, gone on the wire (their value was None)
    reads: tuple[tuple[str, str], ...] = ()  # (type, name) of what the program read: its StackReferences

    def of_type(self, token: str) -> list[Resource]:
        return [resource for resource in self.resources if resource.type == token]

    def rule_resources(self) -> tuple[rules.Resource, ...]:
        return tuple(resource.rule_view() for resource in self.resources)

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
        self.reads: list[tuple[str, str]] = []  # (type, name) of every resource read, not created (StackReference)

    def ReadResource(self, request):
        self.reads.append((request.type, request.name))
        return super().ReadResource(request)

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
                    property_dependencies={key: tuple(deps.urns) for key, deps in request.propertyDependencies.items()},
                    request=request,
                )
            )
        return tuple(found)


def problems_for(config: Mapping[str, str], stack: str = "dev") -> list[str]:
    """The settings problems a stack config is refused with (it must be refused)."""
    import pytest

    with pytest.raises(settings.SettingsError) as raised:
        settings.parse(config, stack)
    return raised.value.problems


def only_problem(config: Mapping[str, str], stack: str = "dev") -> str:
    problems = problems_for(config, stack)
    assert len(problems) == 1, problems
    return problems[0]


def stack_config(stack_name: str, root: Path = ROOT) -> dict[str, str]:
    """The stack file's config as the Pulumi engine hands it to the program: every value a string."""
    raw = stacks.stack_config(stack_name, root)
    config = {key: FAKE_PEM for key in SECRET_KEYS}
    for key, value in raw.items():
        if isinstance(value, dict) and set(value) == {"secure"}:  # encrypted for a secrets provider we lack
            value = FAKE_PEM if key in SECRET_KEYS else FAKE_SECURE_VALUE
        config[key] = value if isinstance(value, str) else json.dumps(value)
    return config


def evaluate(
    stack_name: str, config: Mapping[str, str], monitor: RecordingMonitor | None = None, preview: bool = False,
    program: Path = ROOT, project: str = PROJECT,
) -> StackRun:
    """Run `<program>/__main__.py` once for `stack_name` of `project` with `config`, as `pulumi up` (or `pulumi
    preview` with `preview`) would; raises what the program raises. Pass a `monitor` to see what was registered
    before a failure. By default the platform's program, its StackReference answered by the ML registry's stack.
    """
    monitor = monitor or RecordingMonitor(PlatformMocks())
    if project == PROJECT and isinstance(monitor.mocks, PlatformMocks) and not monitor.mocks.stack_references:
        monitor.mocks.stack_references = ml_registry_references()  # evaluated first: the runtime is process-global
    runtime_settings.ROOT.set(None)  # set_mocks only builds a fresh root stack when none is set
    _drop_what_a_failed_evaluation_left()
    secret_keys = [key for key, value in config.items() if key in SECRET_KEYS or value == FAKE_SECURE_VALUE]
    pulumi.runtime.set_all_config(dict(config), secret_keys)
    pulumi.runtime.set_mocks(monitor.mocks, project=project, stack=stack_name, preview=preview, monitor=monitor)

    _sync_await(run_pulumi_func(lambda: runpy.run_path(str(program / "__main__.py"), run_name="__main__")))

    exports = runtime_settings.get_root_resource().outputs
    outputs, secret = engine_outputs(exports)
    dropped = frozenset(set(exports) - set(outputs))
    return StackRun(stack_name, dict(config), monitor.resources_registered(), outputs, secret, dropped, tuple(monitor.reads))


def _drop_what_a_failed_evaluation_left() -> None:
    """An evaluation that raised (a test expecting it to) leaves its output tasks, failed ones among them, in Pulumi's
    process-wide settings; the next one would await them and raise their error as its own
    (pulumi.runtime.stack.wait_for_rpcs awaits every task in SETTINGS.outputs)."""
    with runtime_settings.SETTINGS.lock:
        runtime_settings.SETTINGS.outputs.clear()
    runtime_settings._get_rpc_manager().clear()


def engine_outputs(exports: Mapping[str, Any]) -> tuple[dict[str, Any], frozenset[str]]:
    """The exports as the engine receives them when the program ends (`Stack._finish`: massage, then
    serialize_properties, which drops every value that serializes to None), secrets revealed, and the
    keys that are secrets. Under mocks the root stack registered its outputs before the program ran,
    so this serializes them itself, while the mock monitor (which supports secrets) is still set."""
    serialized = _sync_await(rpc.serialize_properties(massage(dict(exports), []), {}))
    plain = json_format.MessageToDict(serialized)
    secret = frozenset(key for key, value in plain.items() if is_secret(value))
    return {key: reveal(value) for key, value in plain.items()}, secret


def stack_output_json(run: StackRun, show_secrets: bool = False) -> str:
    """What `pulumi stack output --json [--show-secrets]` prints for this run."""
    shown = {key: value if show_secrets or key not in run.secret_outputs else "[secret]" for key, value in run.outputs.items()}
    return json.dumps(shown, indent=2)


# The stack files list no data scientist (object IDs are a tenant's own). "<stack>+team" is the stack with a team:
# TEAM_USERS, granted directly in dev and through TEAM_GROUP in prod, so that each way of granting is registered
TEAM_USERS = (
    ("ada", "00000000-0000-4000-8000-00000000a001"),
    ("grace.hopper", "00000000-0000-4000-8000-00000000a002"),
    ("Alan_Turing", "00000000-0000-4000-8000-00000000a003"),
)
TEAM_GROUP = "00000000-0000-4000-8000-00000000a0a0"
TEAM_STACKS = {"dev+team": ("dev", None), "prod+team": ("prod", TEAM_GROUP)}


def team_users(count: int) -> tuple[tuple[str, str], ...]:
    """`count` made-up data scientists (name, object ID)."""
    return tuple((f"scientist{i:03d}", f"00000000-0000-4000-8000-{0xb000 + i:012x}") for i in range(count))


def with_team(config: Mapping[str, str], users=TEAM_USERS, group: str | None = None) -> dict[str, str]:
    """`config` with these data scientists listed under workstations.users, and their group when given."""
    listed = [{"name": name, "objectId": object_id} for name, object_id in users]
    changed = with_setting(config, f"{PROJECT}:workstations.users", listed)
    return with_setting(changed, f"{PROJECT}:dataScientistsGroup", group) if group else changed


# prod under an enterprise's Azure Policy: the MCSB initiative at a management group, and each other built-in definition
# whose finding the platform keeps assigned on its own at the subscription (infra/conformance.py exempts them all)
MCSB_ASSIGNMENT = "/providers/Microsoft.Management/managementGroups/contoso/providers/Microsoft.Authorization/policyAssignments/mcsb"
POLICY_STACK = "prod+policy"


def policy_config(expires_on: str) -> dict:
    """The `policy` setting of POLICY_STACK, its exemptions expiring on `expires_on` (YYYY-MM-DD)."""
    from infra import conformance

    single = sorted({finding.definition for finding in conformance.kept("prod") if finding.mcsb_reference is None})
    return {
        "assignments": [
            {"id": MCSB_ASSIGNMENT, "kind": "initiative"},
            *({"id": f"/subscriptions/{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/policyAssignments/{guid[:8]}",
               "kind": "definition", "definitionId": f"/providers/Microsoft.Authorization/policyDefinitions/{guid}"} for guid in single),
        ],
        "exemptionsExpireOn": expires_on,
    }  # fmt: skip


@functools.lru_cache(maxsize=None)
def run_stack(stack_name: str) -> StackRun:
    """The stack file's program evaluation (or a TEAM_STACKS variant's, or the ML registry's), once per stack per
    process."""
    if stack_name == ML_REGISTRY:
        return evaluate(ML_REGISTRY_STACK, stack_config(ML_REGISTRY_STACK, ML_REGISTRY_DIR), program=ML_REGISTRY_DIR,
                        project=settings.ML_REGISTRY_PROJECT, monitor=RecordingMonitor(PlatformMocks()))  # fmt: skip
    if stack_name in TEAM_STACKS:
        base, group = TEAM_STACKS[stack_name]
        return evaluate(base, with_team(stack_config(base), group=group))
    if stack_name == POLICY_STACK:
        expires = (datetime.date.today() + datetime.timedelta(days=180)).isoformat()
        return evaluate("prod", with_setting(stack_config("prod"), f"{PROJECT}:policy", policy_config(expires)))
    return evaluate(stack_name, stack_config(stack_name))


ML_REGISTRY_DIR = ROOT / "ml-registry"
ML_REGISTRY_STACK = "shared"
# run_stack's name for the ML registry's stack (ml-registry/Pulumi.shared.yaml), beside the platform's stacks
ML_REGISTRY = "ml-registry"


def every_stack() -> list[str]:
    """Every stack the rules hold: the platform's stack files, each with a team, and the ML registry's."""
    return stack_names() + sorted(TEAM_STACKS) + [ML_REGISTRY]


@functools.lru_cache(maxsize=None)
def ml_registry_references() -> dict[str, Mapping[str, Any]]:
    """What each environment's StackReference reads: the registry stack's outputs as the engine stores them, under
    the name every stack file gives it (the one stack, whatever organization the files name)."""
    outputs = run_stack(ML_REGISTRY).outputs
    names = {json.loads(config[f"{PROJECT}:mlRegistry"])["stack"] for config in map(stack_config, stack_names())
             if f"{PROJECT}:mlRegistry" in config}  # fmt: skip
    return {name: outputs for name in names}


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
