"""Violations for every rule in infra/rules.py's registry, made by editing a stack as the engine received it.

A `Case` takes one stack's registered resources (their wire properties: the Struct the engine got, as JSON),
breaks one thing (an input, an option, a resource dropped or repeated) and names the rule that must catch it
and a fragment of its message. The same cases prove the rule functions (tests/test_infra_rules.py) and the
CrossGuard policies built from them (tests/test_policies.py).
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

from google.protobuf import json_format, struct_pb2
from pulumi.runtime import rpc

from infra import conformance, constraints, roles, rules, security
from stack_harness import ML_REGISTRY, POLICY_STACK, SUBSCRIPTION_ID, Resource, StackRun, revealed


@dataclass(frozen=True)
class Entry:
    """One registered resource with what a case may change: its wire properties and its options."""

    resource: Resource
    urn: str
    props: dict  # the RegisterResourceRequest's object, as JSON (secrets carry Pulumi's signature)
    protect: bool
    parent: str
    property_dependencies: dict


def entries(run: StackRun) -> list[Entry]:
    return [
        Entry(r, r.urn, json_format.MessageToDict(r.request.object), r.protect, r.parent, dict(r.property_dependencies))
        for r in run.resources
    ]


def wire_struct(props: dict) -> struct_pb2.Struct:
    return json_format.ParseDict(props, struct_pb2.Struct())


def rule_view(entry: Entry) -> rules.Resource:
    """The entry as infra/rules.py sees it (the harness's own deserialization)."""
    inputs = revealed(rpc.deserialize_properties(wire_struct(entry.props)))
    return rules.Resource(
        type=entry.resource.type, name=entry.resource.name, urn=entry.urn, inputs=inputs, protect=entry.protect,
        parent=entry.parent, property_dependencies=entry.property_dependencies,
    )  # fmt: skip


def rule_stack(items: list[Entry]) -> rules.Stack:
    return rules.Stack(tuple(rule_view(entry) for entry in items))


Edit = Callable[[list[Entry]], list[Entry]]


def _matches(entry: Entry, token: str, name: str | None) -> bool:
    return entry.resource.type == token and (name is None or entry.resource.name == name)


def _only(items: list[Entry], token: str, name: str | None) -> int:
    found = [i for i, entry in enumerate(items) if _matches(entry, token, name)]
    assert len(found) == 1, f"expected one {token} {name or '*'}, found {len(found)}"
    return found[0]


def _set_path(props: dict, path: str | tuple[str, ...], value: Any) -> None:
    *parents, leaf = path.split(".") if isinstance(path, str) else path
    target = props
    for key in parents:
        target = target.setdefault(key, {})
    if value is None:
        target.pop(leaf, None)
    else:
        target[leaf] = value


def set_input(token: str, name: str | None, path: str | tuple[str, ...], value: Any) -> Edit:
    """Set (or, with None, remove) one input by dotted path (a tuple where a key holds a dot)."""

    def edit(items: list[Entry]) -> list[Entry]:
        index = _only(items, token, name)
        props = copy.deepcopy(items[index].props)
        _set_path(props, path, value)
        return [*items[:index], dataclasses.replace(items[index], props=props), *items[index + 1:]]

    return edit


def set_options(token: str, name: str | None, **options: Any) -> Edit:
    def edit(items: list[Entry]) -> list[Entry]:
        index = _only(items, token, name)
        return [*items[:index], dataclasses.replace(items[index], **options), *items[index + 1:]]

    return edit


def drop(predicate: Callable[[Entry], bool]) -> Edit:
    return lambda items: [entry for entry in items if not predicate(entry)]


def repeat(token: str, name: str, new_name: str, **changes: Any) -> Edit:
    """Declare one more resource like `name` (a new URN), with some wire properties or dependencies changed (a
    callable change is given the stack's entries, so that a case is made without running the stack)."""

    def edit(items: list[Entry]) -> list[Entry]:
        original = items[_only(items, token, name)]
        props = copy.deepcopy(original.props)
        urn = original.resource.urn.rsplit("::", 1)[0] + f"::{new_name}"
        dependencies = dict(original.property_dependencies)
        for key, value in changes.items():
            value = value(items) if callable(value) else value
            if key.startswith("deps:"):
                dependencies[key[5:]] = value
            else:
                _set_path(props, key, value)
        resource = dataclasses.replace(original.resource, name=new_name)
        return [*items, dataclasses.replace(original, resource=resource, urn=urn, props=props, property_dependencies=dependencies)]

    return edit


def lifecycle_rule_names(*names: str) -> Edit:
    """Name the retention policy's rules `names` in turn (the last name again for any rule after them)."""

    def edit(items: list[Entry]) -> list[Entry]:
        index = _only(items, constraints.MANAGEMENT_POLICY, None)
        props = copy.deepcopy(items[index].props)
        for number, found in enumerate(props["policy"]["rules"]):
            found["name"] = names[min(number, len(names) - 1)]
        return [*items[:index], dataclasses.replace(items[index], props=props), *items[index + 1:]]

    return edit


def arm_id_of(token: str) -> Callable[[list[Entry]], str]:
    """The ARM ID of the stack's one resource of `token`, read when the case is applied."""
    return lambda items: items[_only(items, token, None)].resource.id


def urns_of(token: str) -> Callable[[list[Entry]], tuple[str]]:
    """The URN of the stack's one resource of `token` (as a dependency list), read when the case is applied."""
    return lambda items: (items[_only(items, token, None)].urn,)


def role_id(role: str) -> str:
    return f"/subscriptions/{SUBSCRIPTION_ID}/providers/Microsoft.Authorization/roleDefinitions/{role}"


@dataclass(frozen=True)
class Case:
    rule: str
    stack: str
    edit: Edit
    says: str  # a fragment of the message the rule must give

    @property
    def id(self) -> str:
        return f"{self.rule}:{self.says}"


ML = "azure-native:machinelearningservices"
ROLE = security.ROLE_ASSIGNMENT
PRIVATE_ENDPOINT = constraints.PRIVATE_ENDPOINT
OWNER = "8e3af657-a8ff-443c-a75c-2fe8c4bcb635"
CONTRIBUTOR = "b24988ac-6180-42a0-ab88-20f7382dd24c"
# a workstation (ada's) in each stack with a team (tests/stack_harness.py, TEAM_STACKS)
ADA = "workstation-ada"
INSTANCE = "properties.properties"


def _group(entry: Entry, group: str) -> bool:
    return entry.resource.type == PRIVATE_ENDPOINT and any(
        group in connection.get("groupIds", []) for connection in entry.props.get("privateLinkServiceConnections", [])
    )


def cases() -> list[Case]:
    """Every case; made without running a stack (the suite collects them in each worker), applied to one later."""
    return [
        Case("storage-tls-and-https-only", "prod", set_input(security.STORAGE, None, "minimumTlsVersion", "TLS1_0"), "TLS1_2"),
        Case("storage-tls-and-https-only", "dev", set_input(security.STORAGE, None, "enableHttpsTrafficOnly", False), "enableHttpsTrafficOnly"),
        Case("no-public-blob-access", "prod", set_input(security.STORAGE, None, "allowBlobPublicAccess", True), "allowBlobPublicAccess"),
        Case("key-vault-rbac-and-soft-delete", "prod", set_input(security.KEY_VAULT, None, "properties.enableRbacAuthorization", False), "enableRbac"),
        Case("key-vault-rbac-and-soft-delete", "dev", set_input(security.KEY_VAULT, None, "properties.enableSoftDelete", False), "soft delete"),
        Case("key-vault-rbac-and-soft-delete", "dev", set_input(security.KEY_VAULT, None, "properties.networkAcls.defaultAction", "Allow"), "defaultAction must be Deny"),
        Case("key-vault-purge-protection-in-prod", "prod", set_input(security.KEY_VAULT, None, "properties.enablePurgeProtection", None), "enablePurgeProtection"),
        Case("no-registry-admin-user", "prod", set_input(security.REGISTRY, None, "adminUserEnabled", True), "adminUserEnabled"),
        Case("no-registry-admin-user", "dev", set_input(security.REGISTRY, None, "anonymousPullEnabled", True), "anonymousPull"),
        Case("ssh-closed", "prod", set_input(security.COMPUTE, "cpu-cluster", "properties.properties.remoteLoginPortPublicAccess", "Enabled"), "remoteLoginPortPublicAccess"),
        Case("ssh-closed", "prod", set_input(security.COMPUTE, "gpu-cluster", "properties.properties.userAccountCredentials", {"adminUserName": "azureuser"}), "SSH"),
        Case("scales-to-zero", "dev", set_input(security.COMPUTE, "cpu-cluster", "properties.properties.scaleSettings.minNodeCount", 1), "minNodeCount"),
        Case("scales-to-zero", "prod", set_input(security.COMPUTE, "gpu-cluster", "properties.properties.scaleSettings.nodeIdleTimeBeforeScaleDown", None), "nodeIdleTime"),
        Case("identity-based-access", "prod", set_input(security.WORKSPACE, None, "v1LegacyMode", True), "v1LegacyMode"),
        Case("identity-based-access", "dev", set_input(security.AKS, None, "aadProfile.enableAzureRBAC", False), "enableAzureRBAC"),
        Case("aks-hardened", "dev", set_input(security.AKS, None, "autoUpgradeProfile.upgradeChannel", "none"), "upgradeChannel"),
        Case("aks-hardened", "prod", set_input(security.AKS, None, "networkProfile.networkPolicy", None), "networkPolicy"),
        Case("aks-hardened", "prod", set_input(security.AKS, None, "addonProfiles", None), "Container Insights"),
        Case("redundant-storage-in-prod", "prod", set_input(security.STORAGE, None, "sku.name", "Standard_LRS"), "locally redundant"),
        Case("zone-redundant-registry-in-prod", "prod", set_input(security.REGISTRY, None, "zoneRedundancy", "Disabled"), "zoneRedundancy"),
        Case("isolated-data-plane", "prod", set_input(security.STORAGE, None, "networkRuleSet.defaultAction", "Allow"), "must be Deny"),
        Case("isolated-data-plane", "prod", set_input(security.COMPUTE, "cpu-cluster", "properties.properties.enableNodePublicIp", True), "enableNodePublicIp"),
        Case("tls-inference-in-prod", "prod", set_input(security.EXTENSION, None, "configurationSettings.allowInsecureConnections", "True"), "allowInsecureConnections"),
        Case("least-privilege-roles", "prod", set_input(ROLE, "automation-workspace", "scope", f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-mlp-prod"), "wider than"),
        Case("least-privilege-roles", "dev", set_input(ROLE, "automation-workspace", "scope", f"/subscriptions/{SUBSCRIPTION_ID}"), "wider than"),
        Case("least-privilege-roles", "prod", set_input(ROLE, "kubelet-image-pull", "principalType", "User"), "principalType"),
        Case("least-privilege-roles", "prod", set_input(ROLE, "automation-blob-data", "roleDefinitionId", role_id(OWNER)), "Owner"),
        Case("least-privilege-roles", "dev", set_input(ROLE, "automation-blob-data", "roleDefinitionId", role_id("00000000-0000-0000-0000-00000000beef")), "not on the reviewed list"),
        Case("stateful-protected-in-prod", "prod", set_options(security.WORKSPACE, None, protect=False), "protected in prod"),
        Case("tagged", "prod", set_input(security.STORAGE, None, "tags.managed-by", None), "managed-by"),
        Case("tagged", "dev", set_input("azuread:index/application:Application", None, "tags", ["project:x"]), "stack, managed-by"),
        Case("tagged", "prod", set_input(security.COMPUTE, "kubernetes-compute", "tags", None), "project"),
        Case("belongs-to-a-component", "dev", set_options(security.STORAGE, None, parent="urn:pulumi:dev::azureml-platform::pulumi:pulumi:Stack::azureml-platform-dev"), "outside the platform's components"),
        Case("azureml-extension-needs-local-accounts", "prod", set_input(security.AKS, None, "disableLocalAccounts", True), "disableLocalAccounts"),
        Case("kubernetes-compute-outside-managed-network", "dev", set_input(security.WORKSPACE, None, "managedNetwork.isolationMode", "AllowInternetOutbound"), "managed network is AllowInternetOutbound"),
        Case(
            "no-role-azure-assigns-itself", "prod",
            repeat(ROLE, "workspace-secrets", "workspace-blob-data", roleDefinitionId=role_id(roles.STORAGE_BLOB_DATA_CONTRIBUTOR),
                   scope=arm_id_of(security.STORAGE), **{"deps:scope": urns_of(security.STORAGE)}),
            "Storage Blob Data Contributor on its storage itself",
        ),  # fmt: skip
        Case(
            "no-role-azure-assigns-itself", "dev",
            repeat(ROLE, "cpu-blob-data", "cpu-image-pull", roleDefinitionId=role_id(roles.ACR_PULL),
                   scope=arm_id_of(security.REGISTRY), **{"deps:scope": urns_of(security.REGISTRY)}),
            "AcrPull on the workspace registry itself",
        ),  # fmt: skip
        Case("one-assignment-per-role-principal-and-scope", "prod", repeat(ROLE, "kubelet-image-pull", "kubelet-image-pull-again"), "repeats RoleAssignment 'kubelet-image-pull'"),
        Case("instance-type-is-well-formed", "prod", set_input(constraints.INSTANCE_TYPE, None, "spec.resources.requests.cpu", "0"), "requests.cpu"),
        Case("instance-type-is-well-formed", "dev", set_input(constraints.INSTANCE_TYPE, None, "spec.resources.limits.memory", None), "limits.memory"),
        Case("instance-type-is-well-formed", "dev", set_input(constraints.INSTANCE_TYPE, None, ("spec", "resources", "requests", "nvidia.com/gpu"), 1), "only in limits"),
        Case("instance-type-is-well-formed", "prod", set_input(constraints.INSTANCE_TYPE, None, "metadata.name", "CPU_Standard"), "not a Kubernetes object name"),
        Case("compute-in-a-vnet-reaches-the-workspace-privately", "prod", drop(lambda e: _group(e, "amlworkspace")), "no private endpoint"),
        Case("aks-in-a-vnet-has-private-endpoints", "prod", drop(lambda e: _group(e, "vault")), "group vault"),
        Case("aks-identity-may-join-its-subnet", "prod", drop(lambda e: e.resource.name == "aks-subnet-network"), "no Network Contributor"),
        Case("aks-identity-may-join-its-subnet", "prod", set_input(security.AKS, None, "identity", {"type": "SystemAssigned"}), "user-assigned identity"),
        Case("registry-features-need-premium", "prod", set_input(security.REGISTRY, None, "sku.name", "Standard"), "Premium SKU"),
        Case("lifecycle-rules-azure-accepts", "dev", lifecycle_rule_names("collected-bank-marketing", "collectedhousing"), "not 1-256 letters and digits"),
        Case("lifecycle-rules-azure-accepts", "prod", lifecycle_rule_names("collected"), "used 2 times"),
        Case("vnet-avoids-the-docker-bridge", "prod", set_input(security.VIRTUAL_NETWORK, None, "addressSpace.addressPrefixes", ["172.17.0.0/16"]), "Docker bridge"),
        Case(
            "authorized-ranges-not-on-a-private-cluster", "prod",
            set_input(security.AKS, None, "apiServerAccessProfile", {"enablePrivateCluster": True, "authorizedIPRanges": ["203.0.113.0/24"]}),
            "private cluster",
        ),  # fmt: skip
        Case("workspace-storage-is-supported", "prod", set_input(security.STORAGE, None, "sku.name", "Premium_LRS"), "premium"),
        Case("workspace-storage-is-supported", "dev", set_input(security.STORAGE, None, "isHnsEnabled", True), "hierarchical namespace"),
        Case("tls-router-has-a-name-and-a-certificate", "prod", set_input(security.EXTENSION, None, "configurationSettings.sslCname", None), "without sslCname"),
        Case("tls-router-has-a-name-and-a-certificate", "prod", set_input(security.EXTENSION, None, "configurationProtectedSettings", None), "scoringFe.sslCert"),
        Case("highly-available-router-has-three-nodes", "prod", set_input(security.AKS, None, "agentPoolProfiles", [{"name": "system", "minCount": 2, "count": 2}]), "inferenceRouterHA"),
        Case("purge-protection-is-never-false", "dev", set_input(security.KEY_VAULT, None, "properties.enablePurgeProtection", False), "does not accept"),
        Case("extension-enables-a-workload", "dev", set_input(security.EXTENSION, None, "configurationSettings.enableInference", "False"), "neither"),
        *workstation_cases(),
        *ml_registry_cases(),
        Case("storage-reached-privately-for-batch", "prod", drop(lambda e: e.resource.name == "pe-storage-queue"), "no private endpoint for queue"),
        Case("training-subnet-allows-private-link-services", "prod", set_input(security.VIRTUAL_NETWORK, None, "subnets",
             [{"name": "snet-training", "addressPrefix": "10.60.0.0/24"}]), "privateLinkServiceNetworkPolicies None"),
        *conformance_cases(),
    ]


def conformance_cases() -> list[Case]:
    """The fixes for Microsoft's built-in Azure Policy definitions, and the findings the platform keeps."""
    logs = security.DIAGNOSTIC_SETTING
    return [
        Case("storage-sas-expires-within-a-week", "prod", set_input(security.STORAGE, None, "sasPolicy.sasExpirationPeriod", "30.00:00:00"), "at most 7.00:00:00"),
        Case("storage-sas-expires-within-a-week", "dev", set_input(security.STORAGE, None, "sasPolicy.sasExpirationPeriod", "7.00:00:01"), "at most 7.00:00:00"),
        Case("storage-sas-expires-within-a-week", "dev", set_input(security.STORAGE, None, "sasPolicy.expirationAction", "Log"), "Log passes out-of-policy SAS"),
        Case("storage-infrastructure-encryption", "dev", set_input(security.STORAGE, None, "encryption.requireInfrastructureEncryption", False), "requireInfrastructureEncryption"),
        Case("storage-soft-delete", "prod", drop(lambda e: e.resource.type == security.BLOB_SERVICE), "no blob service properties"),
        Case("storage-soft-delete", "dev", set_input(security.BLOB_SERVICE, None, "containerDeleteRetentionPolicy.enabled", False), "containerDeleteRetentionPolicy.enabled"),
        Case("aks-guarded", "dev", set_input(security.AKS, None, "addonProfiles.azurepolicy", None), "the Azure Policy add-on"),
        Case("aks-guarded", "prod", set_input(security.AKS, None, "securityProfile.defender", None), "Defender's sensor in prod"),
        Case("aks-guarded", "prod", set_input(security.AKS, None, "apiServerAccessProfile.disableRunCommand", False), "no run command"),
        Case("aks-guarded", "dev", set_input(security.AKS, None, "agentPoolProfiles", [{"name": "system", "enableEncryptionAtHost": True}]), "sshAccess Disabled"),
        Case("resource-logs-reach-log-analytics", "prod", drop(lambda e: e.resource.name == "aks-logs"), "ManagedCluster 'aks': no diagnostic setting"),
        Case("resource-logs-reach-log-analytics", "dev", set_input(logs, "blob-logs", "logs", [{"category": "StorageWrite", "enabled": True}]), "StorageDelete are not enabled"),
        Case("resource-logs-reach-log-analytics", "prod", set_input(logs, "registry-logs", "logAnalyticsDestinationType", None), "resource-specific tables"),
        Case("resource-logs-reach-log-analytics", "dev", set_input(logs, "key-vault-logs", "logs",
             [{"category": "AuditEvent", "enabled": True, "retentionPolicy": {"enabled": True, "days": 30}}]), "retentionPolicy is deprecated"),
        Case("kept-policy-findings-are-exempt", POLICY_STACK, drop(lambda e: e.resource.type == conformance.EXEMPTION
                                                                  and "8c6a50c6" in e.resource.name), "keeps 'Storage accounts should prevent shared key access'"),
    ]


def ml_registry_cases() -> list[Case]:
    """The rules on the ML registry's stack and on each environment's way to it."""
    registry = ML + ":Registry"
    definition = security.ROLE_DEFINITION
    built_in_registry_user = "1823dd4f-9b8c-4ab6-ab4e-7397a3684615"  # AzureML Registry User: registries/assets/*
    reader_of = lambda items: items[_only(items, ROLE, "automation-ml-registry")].props["roleDefinitionId"]  # noqa: E731
    return [
        Case("ml-registry-roles", "prod", set_input(ROLE, "automation-ml-registry", "roleDefinitionId", role_id(built_in_registry_user)), "only its reader and publisher roles"),
        Case("ml-registry-roles", "dev", set_input(ROLE, "automation-ml-registry", "roleDefinitionId", role_id(CONTRIBUTOR)), "only its reader and publisher roles"),
        # prod's automation identity given dev's publisher role: the role for that registry, computed as its stack does
        Case("ml-registry-roles", "prod", lambda items: set_input(ROLE, "automation-ml-registry", "roleDefinitionId", reader_of(items).rsplit("/", 1)[0] + "/"
                                                                   + roles.ml_registry_role_guid("publisher", items[_only(items, ROLE, "automation-ml-registry")].props["scope"]))(items),
             "publisher role goes to the dev stack's automation identity only"),
        Case("least-privilege-roles", "prod+team", lambda items: set_input(ROLE, "team-ml-registry", "roleDefinitionId", reader_of(items).rsplit("/", 1)[0] + "/"
                                                                            + roles.ml_registry_role_guid("publisher", items[_only(items, ROLE, "team-ml-registry")].props["scope"]))(items),
             "people only read it"),
        Case("ml-registry-role-definitions", ML_REGISTRY, set_input(definition, "publisher-role", "permissions",
             [{"actions": [*roles.ML_REGISTRY_ROLE_ACTIONS["publisher"], "Microsoft.MachineLearningServices/registries/assets/delete"]}]), "exactly"),
        Case("ml-registry-role-definitions", ML_REGISTRY, set_input(definition, "reader-role", "assignableScopes", [f"/subscriptions/{SUBSCRIPTION_ID}"]), "only at the ML registry's resource group"),
        Case("ml-registry-protected", ML_REGISTRY, set_options(registry, None, protect=False), "must be protected"),
        Case("ml-registry-reachable-from-ci", ML_REGISTRY, set_input(registry, None, "publicNetworkAccess", "Disabled"), "dev and CI publish"),
        Case("ml-registry-acr-is-premium", ML_REGISTRY, set_input(registry, None, "regionDetails", [{"location": "westeurope", "acrDetails": [{"systemCreatedAcrAccount": {"acrAccountSku": "Standard"}}]}]), "allowed: Premium"),
        Case("ml-registry-reached-privately-from-a-vnet", "prod", drop(lambda e: e.resource.name == "pe-mlregistry-storage-blob"), "no private endpoint to its storage (group blob)"),
        Case("ml-registry-reached-privately-from-a-vnet", "prod", set_input(PRIVATE_ENDPOINT, "pe-mlregistry-acr-registry", "subnet.id", "/subscriptions/x/resourceGroups/rg/providers/Microsoft.Network/virtualNetworks/vnet/subnets/snet-other"), "another subnet"),
    ]


def workstation_cases() -> list[Case]:
    """The rules on workstations and the team's grants, broken on the stacks with a team."""
    five = [{"triggerType": "Cron", "action": "Stop", "status": "Enabled", "cron": {"expression": f"0 {hour} * * *", "timeZone": "UTC"}}
            for hour in range(17, 22)]  # fmt: skip
    return [
        Case("ssh-closed", "prod+team", set_input(security.COMPUTE, ADA, f"{INSTANCE}.sshSettings.sshPublicAccess", "Enabled"), "sshPublicAccess must be Disabled"),
        Case("ssh-closed", "dev+team", set_input(security.COMPUTE, ADA, f"{INSTANCE}.sshSettings.adminPublicKey", "ssh-rsa AAAA"), "adminPublicKey"),
        Case("workstations-stop-when-idle", "dev+team", set_input(security.COMPUTE, ADA, f"{INSTANCE}.idleTimeBeforeShutdown", None), "idleTimeBeforeShutdown must be set"),
        Case("workstations-are-personal", "prod+team", set_input(security.COMPUTE, ADA, f"{INSTANCE}.personalComputeInstanceSettings", None), "assignedUser"),
        Case("workstations-are-personal", "dev+team", set_input(security.COMPUTE, ADA, f"{INSTANCE}.applicationSharingPolicy", "Shared"), "must be Personal"),
        Case("isolated-data-plane", "prod+team", set_input(security.COMPUTE, ADA, f"{INSTANCE}.enableNodePublicIp", True), "Compute 'workstation-ada': enableNodePublicIp"),
        Case("least-privilege-roles", "prod+team", set_input(ROLE, "team-workspace", "roleDefinitionId", role_id(CONTRIBUTOR)), "Contributor, a privileged role"),
        Case("least-privilege-roles", "dev+team", set_input(ROLE, "user-ada-blob-data", "roleDefinitionId", role_id(roles.STORAGE_BLOB_DATA_CONTRIBUTOR)), "people hold only the team's roles"),
        Case("least-privilege-roles", "prod+team", set_input(ROLE, "team-blob-data", "principalType", "ForeignGroup"), "principalType must be"),
        Case("least-privilege-roles", "dev+team", set_input(ROLE, "user-ada-workspace", "scope", f"/subscriptions/{SUBSCRIPTION_ID}/resourceGroups/rg-mlp-dev"), "wider than"),
        Case("one-assignment-per-role-principal-and-scope", "dev+team", repeat(ROLE, "user-ada-workspace", "user-ada-workspace-again"), "repeats RoleAssignment 'user-ada-workspace'"),
        Case("idle-shutdown-azure-accepts", "dev+team", set_input(security.COMPUTE, ADA, f"{INSTANCE}.idleTimeBeforeShutdown", "PT10M"), "allowed: 15 minutes (PT15M) to 3 days"),
        Case("idle-shutdown-azure-accepts", "prod+team", set_input(security.COMPUTE, ADA, f"{INSTANCE}.idleTimeBeforeShutdown", "30 minutes"), "ISO 8601"),
        Case("schedules-azure-accepts", "dev+team", set_input(security.COMPUTE, ADA, f"{INSTANCE}.schedules.computeStartStop", five), "at most 4"),
        Case("schedules-azure-accepts", "prod+team", set_input(security.COMPUTE, ADA, (*INSTANCE.split("."), "schedules", "computeStartStop"),
                                                                [{**five[0], "cron": {"expression": "0 19 * *", "timeZone": "UTC"}}]), "it has 4 fields"),
        Case("schedules-azure-accepts", "dev+team", set_input(security.COMPUTE, ADA, f"{INSTANCE}.schedules.computeStartStop",
                                                               [{**five[0], "cron": {"expression": "0 19 * * 1-5", "timeZone": "Europe/Berlin"}}]), "not a Windows time zone"),
        Case("idle-shutdown-without-a-managed-identity", "dev+team", set_input(security.COMPUTE, ADA, "identity", {"type": "SystemAssigned"}), "Contributor"),
        Case("compute-instance-name-azure-accepts", "prod+team", set_input(security.COMPUTE, ADA, "computeName", "ada-2024"), "every hyphen followed later by a letter"),
        Case("compute-instances-need-storage-key-access", "dev+team", set_input(security.STORAGE, None, "allowSharedKeyAccess", False), "allowSharedKeyAccess is false"),
        Case("compute-in-a-vnet-reaches-the-workspace-privately", "prod+team", drop(lambda e: _group(e, "amlworkspace")), "Compute 'workstation-ada': in a subnet"),
    ]
