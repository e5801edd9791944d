"""An offline evaluator of Azure Policy's rule language, to judge the resources a stack declares against
Microsoft's built-in policy definitions.

No maintained Python library evaluates policy rules offline, so this module implements the part of the
language the pinned built-in definitions use (PINNED_FILES), following the documentation:

- conditions, fields, `[*]` aliases, `count`, and the policy functions: "Azure Policy definition structure policy
  rule", learn.microsoft.com/azure/governance/policy/concepts/definition-structure-policy-rule ("String
  comparisons are made using InvariantCultureIgnoreCase"; `match` is case-sensitive; `less`... throw on a type
  mismatch; `field()` and `current()`; `requestContext().apiVersion`; `ipRangeContains`; `addDays`);
- `[*]` in a `field` condition and in `count.where`: "Author policies for array properties on Azure resources",
  learn.microsoft.com/azure/governance/policy/how-to/author-policies-for-arrays (a field condition on a `[*]`
  alias holds when it holds for every member; inside `where`, the counted alias selects the current member);
- related resources of AuditIfNotExists / DeployIfNotExists: "Azure Policy definitions auditIfNotExists effect",
  learn.microsoft.com/azure/governance/policy/concepts/effect-audit-if-not-exists.

It judges the request a stack sends (its declared inputs, shaped as the ARM request body by `arm_resource`), plus
two documented kinds of computed state: a property the stack leaves unset takes Azure's default from
AZURE_DEFAULTS (each with its source), and a private endpoint of the stack approves its connection to a target of
the stack (see `with_private_endpoint_connections`). It sees nothing outside the stack.

The definitions themselves are never copied into the repo: `python -m infra.azure_policy fetch --into DIR`
downloads them at a pinned commit; `load(DIR)` reads them.
"""

from __future__ import annotations

import argparse
import copy
import datetime as dt
import enum
import ipaddress
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

# --- the pinned reference -------------------------------------------------------------------------------------------

# github.com/Azure/azure-policy, "Built-in Policy Release 3.2026.0417.1" (2026-04-29)
COMMIT = "f4a50bacae07ddb096943c597669bcae494a6e29"
DEFINITIONS_PREFIX = "built-in-policies/policyDefinitions/"
# the Microsoft cloud security benchmark initiative, at the same commit
MCSB_FILE = "built-in-policies/policySetDefinitions/Security Center/AzureSecurityCenter.json"
# github.com/maciejporebski/azure-policy-aliases: a periodic Get-AzPolicyAlias dump, aliases/<Namespace>/<type>.md
ALIASES_REPO = "maciejporebski/azure-policy-aliases"
ALIASES_COMMIT = "92a03715147cba9f2cb77d69ac913e84cc7c47d1"
RAW = "https://raw.githubusercontent.com/{repo}/{commit}/{path}"

# The definitions whose `if` names a resource type the stacks declare (see the reference folder's README.md).
PINNED_FILES: tuple[str, ...] = tuple(DEFINITIONS_PREFIX + name for name in (
    "Container Registry/ACR_AADAuthenticationAsArmDisabled_Modify.json",
    "Container Registry/ACR_AADAuthenticationAsArmPolicy_AuditDeny.json",
    "Container Registry/ACR_AdminAccountDisabled_AuditDeny.json",
    "Container Registry/ACR_AdminAccountDisabled_Modify.json",
    "Container Registry/ACR_AnonymousPullDisabled_AuditDeny.json",
    "Container Registry/ACR_AnonymousPullDisabled_Modify.json",
    "Container Registry/ACR_CMKEncryptionEnabled_Audit.json",
    "Container Registry/ACR_ExportPolicy_AuditDeny.json",
    "Container Registry/ACR_NetworkRulesExist_AuditDeny.json",
    "Container Registry/ACR_PrivateEndpointEnabled_Audit.json",
    "Container Registry/ACR_PublicNetworkAccess_AuditDeny.json",
    "Container Registry/ACR_PublicNetworkAccess_Modify.json",
    "Container Registry/ACR_SkuSupportsPrivateEndpoints_AuditDeny.json",
    "Key Vault/AuditDiagnosticLog_Audit.json",
    "Key Vault/FirewallEnabled_Audit.json",
    "Key Vault/FirewallEnabled_Modify.json",
    "Key Vault/PublicNetworkAccess_Audit.json",
    "Key Vault/Recoverable_Audit.json",
    "Key Vault/Should_Use_PrivateEndpoint_Audit.json",
    "Key Vault/Should_Use_RBAC.json",
    "Key Vault/SoftDeleteMustBeEnabled_Audit.json",
    "Kubernetes/AKS_AAD_Integration_Audit.json",
    "Kubernetes/AKS_Autoupgrade_Cluster_Audit.json",
    "Kubernetes/AKS_Autoupgrade_NodeOS_Audit.json",
    "Kubernetes/AKS_Autoupgrade_NodeOS_DINE.json",
    "Kubernetes/AKS_AzurePolicyAddOn_Audit.json",
    "Kubernetes/AKS_AzurePolicyAddOn_DINE.json",
    "Kubernetes/AKS_CMK_Deny.json",
    "Kubernetes/AKS_CSI.json",
    "Kubernetes/AKS_Detect_Non_Fleet_Manager_Member_Audit.json",
    "Kubernetes/AKS_DisableLocalAccounts_Deny.json",
    "Kubernetes/AKS_DisableRunCommand_Audit.json",
    "Kubernetes/AKS_DisableRunCommand_DINE.json",
    "Kubernetes/AKS_DisableSSH_Audit.json",
    "Kubernetes/AKS_EnableCNI.json",
    "Kubernetes/AKS_EnableKMS.json",
    "Kubernetes/AKS_EncryptionAtHost_Deny.json",
    "Kubernetes/AKS_ImageCleaner_Audit.json",
    "Kubernetes/AKS_ImageCleaner_DINE.json",
    "Kubernetes/AKS_ImageIntegrity_DINE.json",
    "Kubernetes/AKS_MSI_Audit.json",
    "Kubernetes/AKS_PrivateCluster_Deny.json",
    "Kubernetes/AKS_WorkloadIdentity_Audit.json",
    "Kubernetes/ASC_Azure_Defender_AKS_SecurityProfile_Audit.json",
    "Kubernetes/ASC_Azure_Defender_AKS_SecurityProfile_DINE.json",
    "Kubernetes/AuditDiagnosticLog_Audit.json",
    "Machine Learning/AuditDiagnosticLog_Audit.json",
    "Machine Learning/ComputeInstanceUpdates_Audit.json",
    "Machine Learning/DisableLocalAuth_Audit.json",
    "Machine Learning/DisableLocalAuth_Modify.json",
    "Machine Learning/IdleShutdown_Audit.json",
    "Machine Learning/ManagedNetworkIsolationMode_Audit.json",
    "Machine Learning/Vnet_Audit.json",
    "Machine Learning/Workspace_CMKEnabled_Audit.json",
    "Machine Learning/Workspace_CMKEnabled_Audit_V2.json",
    "Machine Learning/Workspace_EnableV1LegacyMode_Audit.json",
    "Machine Learning/Workspace_PrivateEndpoint_Audit_V2.json",
    "Machine Learning/Workspace_PublicNetworkAccessDisabled_Audit.json",
    "Machine Learning/Workspace_PublicNetworkAccessDisabled_Modify.json",
    "Machine Learning/Workspace_UAIEnabled_Audit.json",
    "Monitoring/AppInsightsComponents_ForceCustomerStorageForProfiler_Deny.json",
    "Monitoring/ApplicationInsightsComponent_WorkspaceAssociation_Deny.json",
    "Monitoring/ApplicationInsightsComponents_DisableLocalAuth_Deny.json",
    "Monitoring/ApplicationInsightsComponents_NetworkAccessEnabled_Deny.json",
    "Monitoring/ApplicationInsightsComponents_NetworkAccessEnabled_Modify.json",
    "Monitoring/LogAnalyticsWorkspaces_CMKBYOSQueryEnabled_Deny.json",
    "Monitoring/LogAnalyticsWorkspaces_DisableLocalAuth_Deny.json",
    "Monitoring/LogAnalyticsWorkspaces_NetworkAccessEnabled_Deny.json",
    "Monitoring/LogAnalyticsWorkspaces_NetworkAccessEnabled_Modify.json",
    "Network/ASC_All_Internet_traffic_should_be_routed_via_Azure_Firewall.json",
    "Network/NetworkSecurityGroupOnGatewaySubnet_Deny.json",
    "Network/NetworkWatcher_DINE.json",
    "Network/NetworkWatcher_Enabled_Audit.json",
    "Network/PrivateSubnetOnly_Audit.json",
    "Network/PublicIPWithFPUOnly_Audit.json",
    "Network/VirtualNetworkServiceEndpoint_ContainerRegistry_Audit.json",
    "Network/VirtualNetworkServiceEndpoint_KeyVault_Audit.json",
    "Network/VirtualNetworkServiceEndpoint_StorageAccount_Audit.json",
    "Network/VirtualNetwork_FlowLog_Audit.json",
    "Security Center/ASC_EnableIpRanges_KubernetesService_Audit.json",
    "Security Center/ASC_EnableRBAC_KubernetesService_Audit.json",
    "Security Center/ASC_UpgradeVersion_KubernetesService_Audit.json",
    "Storage/ASC_Storage_DisallowPublicBlobAccess_Audit.json",
    "Storage/Classic_AuditForClassicStorages_Audit.json",
    "Storage/EnforceStorageSasMaxExpiration7Days_Deny.json",
    "Storage/GeoRedundant_StorageAccounts_Audit.json",
    "Storage/StorageAccess_TrustedMicrosoftServices_Audit.json",
    "Storage/StorageAccountAllowCrossTenantReplication_Audit.json",
    "Storage/StorageAccountAllowSharedKeyAccessWithDatabricksExcluded_Audit.json",
    "Storage/StorageAccountAllowSharedKeyAccess_Audit.json",
    "Storage/StorageAccountCustomerManagedKeyEnabled_Audit.json",
    "Storage/StorageAccountDisablePublicBlobAccess_Modify.json",
    "Storage/StorageAccountEnableSoftDelete_DINE.json",
    "Storage/StorageAccountInfrastructureEncryptionEnabled_Audit.json",
    "Storage/StorageAccountKeysExpired_Restrict.json",
    "Storage/StorageAccountMinimumTLSVersion_Audit.json",
    "Storage/StorageAccountOnlyVnetRulesEnabledWithDatabricksExcluded_Audit.json",
    "Storage/StorageAccountOnlyVnetRulesEnabled_Audit.json",
    "Storage/StorageAccountPrivateEndpointEnabledWithDatabricksExcluded_Audit.json",
    "Storage/StorageAccountPrivateEndpointEnabled_Audit.json",
    "Storage/StorageAccountSasPolicy_Restrict.json",
    "Storage/StorageAccountSecureTransfer_Modify.json",
    "Storage/StoragePublicNetworkAccess_AuditDeny.json",
    "Storage/StoragePublicNetworkAccess_Modify.json",
    "Storage/StorageQueueCustomerManagedKeyEnabled_Audit.json",
    "Storage/StorageTableCustomerManagedKeyEnabled_Audit.json",
    "Storage/Storage_AuditForHTTPSEnabled_Audit.json",
    "Storage/Storage_NetworkAcls_Audit.json",
))

DEFINITION_DEFAULT = "(definition default)"  # mcsb.json: the initiative sets no effect for this reference

# --- Azure's defaults -----------------------------------------------------------------------------------------------

_STORAGE_SPEC = ("azure-rest-api-specs specification/storage/resource-manager/Microsoft.Storage/stable/2024-01-01/"
                 "storage.json, StorageAccountPropertiesCreateParameters.")
_KEYVAULT_SPEC = ("azure-rest-api-specs specification/keyvault/resource-manager/Microsoft.KeyVault/stable/2024-11-01/"
                  "keyvault.json, VaultProperties.")
_ACR_SPEC = ("azure-rest-api-specs specification/containerregistry/resource-manager/Microsoft.ContainerRegistry/"
             "preview/2023-01-01-preview/containerregistry.json, ")
_INSIGHTS_SPEC = ("azure-rest-api-specs specification/applicationinsights/resource-manager/Microsoft.Insights/stable/"
                  "2020-02-02/components_API.json, PublicNetworkAccessType: \"By default it is Enabled\"")
_LOGS_SPEC = ("azure-rest-api-specs specification/operationalinsights/resource-manager/Microsoft.OperationalInsights/"
              "stable/2023-09-01/Workspaces.json, PublicNetworkAccessType: \"By default it is Enabled\"")

# alias -> (the value Azure gives a property the request leaves unset, where that is written). Only what a source
# states; anything else stays unset, as the request leaves it. (Not found: a default for Application Insights'
# DisableLocalAuth or Log Analytics' features.disableLocalAuth; both specs describe them without one.)
AZURE_DEFAULTS: dict[str, tuple[Any, str]] = {
    "Microsoft.Storage/storageAccounts/allowSharedKeyAccess": (
        True, _STORAGE_SPEC + "allowSharedKeyAccess: \"The default value is null, which is equivalent to true.\""),
    "Microsoft.Storage/storageAccounts/supportsHttpsTrafficOnly": (
        True, _STORAGE_SPEC + "supportsHttpsTrafficOnly: \"The default value is true since API version 2019-04-01.\""),
    "Microsoft.Storage/storageAccounts/minimumTlsVersion": (
        "TLS1_0", _STORAGE_SPEC + "minimumTlsVersion: \"The default interpretation is TLS 1.0 for this property.\""),
    "Microsoft.Storage/storageAccounts/allowBlobPublicAccess": (
        False, _STORAGE_SPEC + "allowBlobPublicAccess: \"The default interpretation is false for this property.\""),
    "Microsoft.Storage/storageAccounts/allowCrossTenantReplication": (
        False, _STORAGE_SPEC + "allowCrossTenantReplication: \"The default interpretation is false for new accounts\""),
    "Microsoft.KeyVault/vaults/enableSoftDelete": (
        True, _KEYVAULT_SPEC + "enableSoftDelete: \"default\": true (\"If it's not set ... it will be set to true\")"),
    "Microsoft.KeyVault/vaults/enableRbacAuthorization": (
        False, _KEYVAULT_SPEC + "enableRbacAuthorization: \"default\": false"),
    "Microsoft.KeyVault/vaults/publicNetworkAccess": (
        "enabled", _KEYVAULT_SPEC + "publicNetworkAccess: \"default\": \"enabled\""),
    "Microsoft.ContainerRegistry/registries/adminUserEnabled": (
        False, _ACR_SPEC + "RegistryProperties.adminUserEnabled: \"default\": false"),
    "Microsoft.ContainerRegistry/registries/anonymousPullEnabled": (
        False, _ACR_SPEC + "RegistryProperties.anonymousPullEnabled: \"default\": false"),
    "Microsoft.ContainerRegistry/registries/publicNetworkAccess": (
        "Enabled", _ACR_SPEC + "RegistryProperties.publicNetworkAccess: \"default\": \"Enabled\""),
    "Microsoft.ContainerRegistry/registries/policies.exportPolicy.status": (
        "enabled", _ACR_SPEC + "ExportPolicy.status: \"default\": \"enabled\""),
    "Microsoft.ContainerRegistry/registries/policies.azureADAuthenticationAsArmPolicy.status": (
        "enabled", _ACR_SPEC + "AzureADAuthenticationAsArmPolicy.status: \"default\": \"enabled\""),
    "Microsoft.Insights/components/publicNetworkAccessForIngestion": ("Enabled", _INSIGHTS_SPEC),
    "Microsoft.Insights/components/publicNetworkAccessForQuery": ("Enabled", _INSIGHTS_SPEC),
    "Microsoft.OperationalInsights/workspaces/publicNetworkAccessForIngestion": ("Enabled", _LOGS_SPEC),
    "Microsoft.OperationalInsights/workspaces/publicNetworkAccessForQuery": ("Enabled", _LOGS_SPEC),
}

# --- the ARM view of a stack's resources ----------------------------------------------------------------------------

# ARM's top-level body keys of a tracked resource; every other input goes under `properties`
TOP_LEVEL = frozenset({"location", "tags", "sku", "kind", "identity", "zones", "extendedLocation", "plan", "etag"})
# the keys of an array item that ARM keeps beside the item's own `properties` (a sub-resource: subnet, delegation...)
SUB_RESOURCE_KEYS = frozenset({"name", "id", "type", "etag"})


@dataclass(frozen=True)
class ArmShape:
    """How one azure-native token's inputs become its ARM request body."""

    arm_type: str
    path_params: frozenset[str]  # the inputs that form the URL (the resource ID), not body fields
    api_version: str  # what the token sends: "Uses Azure REST API version ..." in its pulumi-azure-native module
    top_level: frozenset[str] = TOP_LEVEL
    # input path (".", "[*]" for array items) -> ARM's name for the last key: azure-native names a property by the
    # spec's x-ms-client-name, ARM by its JSON name
    renames: Mapping[str, str] = dataclass_field(default_factory=dict)
    # input paths of arrays whose items ARM wraps: {name, id, ..., properties: {the rest}}
    wrapped: frozenset[str] = frozenset()
    properties_input: bool = False  # the token's `properties` input IS ARM's `properties`
    scope_param: str | None = None  # an extension resource: the input naming the resource it extends


def _shape(arm_type: str, api: str, *params: str, **options: Any) -> ArmShape:
    return ArmShape(arm_type, frozenset(params), api, **options)


_STORAGE_RENAMES = {  # storage.json 2024-01-01: x-ms-client-name of each
    "networkRuleSet": "networkAcls",
    "enableHttpsTrafficOnly": "supportsHttpsTrafficOnly",
    "enableNfsV3": "isNfsV3Enabled",
    "networkRuleSet.ipRules[*].iPAddressOrRange": "value",
    "networkRuleSet.virtualNetworkRules[*].virtualNetworkResourceId": "id",
    "encryption.keyVaultProperties": "keyvaultproperties",
    "encryption.keyVaultProperties.keyName": "keyname",
    "encryption.keyVaultProperties.keyVersion": "keyversion",
    "encryption.keyVaultProperties.keyVaultUri": "keyvaulturi",
    "encryption.encryptionIdentity": "identity",
    "encryption.encryptionIdentity.encryptionUserAssignedIdentity": "userAssignedIdentity",
    "encryption.encryptionIdentity.encryptionFederatedIdentityClientId": "federatedIdentityClientId",
}
_COMPONENT_RENAMES = {  # components_API.json 2020-02-02: ApplicationInsightsComponentProperties' JSON names
    "applicationType": "Application_Type", "flowType": "Flow_Type", "requestSource": "Request_Source",
    "disableIpMasking": "DisableIpMasking", "disableLocalAuth": "DisableLocalAuth",
    "forceCustomerStorageForProfiler": "ForceCustomerStorageForProfiler", "hockeyAppId": "HockeyAppId",
    "immediatePurgeDataOn30Days": "ImmediatePurgeDataOn30Days", "ingestionMode": "IngestionMode",
    "retentionInDays": "RetentionInDays", "samplingPercentage": "SamplingPercentage",
    "workspaceResourceId": "WorkspaceResourceId",
}
_NETWORK_TOP = TOP_LEVEL | {"id"}  # a network resource's `id` input is its ID, not a property

# azure-native token -> its ARM shape: every token the stacks declare (tests/test_azure_policy.py holds them to it)
ARM_TABLE: dict[str, ArmShape] = {
    "azure-native:resources:ResourceGroup": _shape(
        "Microsoft.Resources/resourceGroups", "2024-03-01", "resourceGroupName", top_level=TOP_LEVEL | {"managedBy"}),
    "azure-native:operationalinsights:Workspace": _shape(  # its sku is a property (Workspaces.json)
        "Microsoft.OperationalInsights/workspaces", "2023-09-01", "resourceGroupName", "workspaceName",
        top_level=frozenset({"location", "tags", "identity", "etag"})),
    "azure-native:applicationinsights:Component": _shape(
        "Microsoft.Insights/components", "2020-02-02", "resourceGroupName", "resourceName", renames=_COMPONENT_RENAMES),
    "azure-native:storage:StorageAccount": _shape(
        "Microsoft.Storage/storageAccounts", "2024-01-01", "resourceGroupName", "accountName",
        renames=_STORAGE_RENAMES),
    "azure-native:storage:ManagementPolicy": _shape(
        "Microsoft.Storage/storageAccounts/managementPolicies", "2024-01-01", "resourceGroupName", "accountName",
        "managementPolicyName"),
    "azure-native:storage:BlobServiceProperties": _shape(
        "Microsoft.Storage/storageAccounts/blobServices", "2024-01-01", "resourceGroupName", "accountName",
        "blobServicesName"),
    "azure-native:keyvault:Vault": _shape(
        "Microsoft.KeyVault/vaults", "2024-11-01", "resourceGroupName", "vaultName", properties_input=True),
    "azure-native:keyvault:Secret": _shape(
        "Microsoft.KeyVault/vaults/secrets", "2024-11-01", "resourceGroupName", "vaultName", "secretName",
        properties_input=True),
    "azure-native:containerregistry:Registry": _shape(
        "Microsoft.ContainerRegistry/registries", "2023-01-01-preview", "resourceGroupName", "registryName",
        renames={"networkRuleSet.ipRules[*].iPAddressOrRange": "value"}),  # containerregistry.json: IPRule.value
    "azure-native:machinelearningservices:Workspace": _shape(
        "Microsoft.MachineLearningServices/workspaces", "2025-12-01", "resourceGroupName", "workspaceName"),
    "azure-native:machinelearningservices:Compute": _shape(  # alias computes/subnet.id: properties.properties.subnet.id
        "Microsoft.MachineLearningServices/workspaces/computes", "2025-12-01", "resourceGroupName", "workspaceName",
        "computeName", properties_input=True),
    "azure-native:machinelearningservices:Registry": _shape(
        "Microsoft.MachineLearningServices/registries", "2025-12-01", "resourceGroupName", "registryName"),
    "azure-native:containerservice:ManagedCluster": _shape(
        "Microsoft.ContainerService/managedClusters", "2025-09-01", "resourceGroupName", "resourceName"),
    "azure-native:kubernetesconfiguration:Extension": _shape(
        "Microsoft.KubernetesConfiguration/extensions", "2023-05-01", "resourceGroupName", "clusterRp",
        "clusterResourceName", "clusterName", "extensionName"),
    "azure-native:managedidentity:UserAssignedIdentity": _shape(
        "Microsoft.ManagedIdentity/userAssignedIdentities", "2023-01-31", "resourceGroupName", "resourceName"),
    "azure-native:network:VirtualNetwork": _shape(
        "Microsoft.Network/virtualNetworks", "2024-05-01", "resourceGroupName", "virtualNetworkName",
        top_level=_NETWORK_TOP, wrapped=frozenset({"subnets", "subnets[*].delegations", "virtualNetworkPeerings"})),
    "azure-native:network:NatGateway": _shape(
        "Microsoft.Network/natGateways", "2024-05-01", "resourceGroupName", "natGatewayName", top_level=_NETWORK_TOP),
    "azure-native:network:PublicIPAddress": _shape(
        "Microsoft.Network/publicIPAddresses", "2024-05-01", "resourceGroupName", "publicIpAddressName",
        top_level=_NETWORK_TOP),
    "azure-native:network:PrivateEndpoint": _shape(
        "Microsoft.Network/privateEndpoints", "2024-05-01", "resourceGroupName", "privateEndpointName",
        top_level=_NETWORK_TOP,
        wrapped=frozenset({"privateLinkServiceConnections", "manualPrivateLinkServiceConnections",
                           "ipConfigurations"})),
    "azure-native:network:PrivateDnsZoneGroup": _shape(
        "Microsoft.Network/privateEndpoints/privateDnsZoneGroups", "2024-05-01", "resourceGroupName",
        "privateEndpointName", "privateDnsZoneGroupName", top_level=_NETWORK_TOP | {"name"},
        wrapped=frozenset({"privateDnsZoneConfigs"})),
    "azure-native:privatedns:PrivateZone": _shape(
        "Microsoft.Network/privateDnsZones", "2024-06-01", "resourceGroupName", "privateZoneName"),
    "azure-native:privatedns:VirtualNetworkLink": _shape(
        "Microsoft.Network/privateDnsZones/virtualNetworkLinks", "2024-06-01", "resourceGroupName", "privateZoneName",
        "virtualNetworkLinkName"),
    "azure-native:authorization:RoleAssignment": _shape(
        "Microsoft.Authorization/roleAssignments", "2022-04-01", "scope", "roleAssignmentName", scope_param="scope"),
    "azure-native:authorization:RoleDefinition": _shape(  # authorization RoleDefinitionProperties: "type" (RoleType)
        "Microsoft.Authorization/roleDefinitions", "2022-05-01-preview", "scope", "roleDefinitionId",
        renames={"roleType": "type"}),
    "azure-native:authorization:PolicyExemption": _shape(
        "Microsoft.Authorization/policyExemptions", "2022-07-01-preview", "scope", "policyExemptionName",
        scope_param="scope"),
    "azure-native:monitor:DiagnosticSetting": _shape(
        "Microsoft.Insights/diagnosticSettings", "2021-05-01-preview", "resourceUri", "name",
        scope_param="resourceUri"),
}


@dataclass(frozen=True)
class ArmResource:
    """A resource as the ARM request body a stack sends: {id, name, type, location, kind, sku, identity, tags,
    zones, properties: {...}}."""

    id: str
    type: str
    name: str
    body: Mapping[str, Any] = dataclass_field(hash=False, compare=False)
    token: str = ""
    api_version: str | None = None
    scope: str | None = None  # an extension resource's scope (a diagnostic setting's resourceUri)

    @property
    def resource_group(self) -> str | None:
        return resource_group_of(self.id)

    @property
    def full_name(self) -> str:
        """The name prepended by the parent resources' names ("myServer/myDatabase"), as the `fullName` field."""
        return "/".join(_id_names(self.id)) or self.name


def resource_group_of(arm_id: str) -> str | None:
    match = re.search(r"/resourceGroups/([^/]+)", arm_id, re.IGNORECASE)
    return match.group(1) if match else None


def _id_tail(arm_id: str) -> list[str]:
    """The segments after the last `/providers/`: namespace, type, name, child type, child name..."""
    lower = arm_id.lower()
    at = lower.rfind("/providers/")
    if at < 0:
        return []
    return arm_id[at + len("/providers/"):].strip("/").split("/")


def _id_names(arm_id: str) -> list[str]:
    return _id_tail(arm_id)[2::2]


def type_of_id(arm_id: str) -> str:
    """An ARM ID's resource type: the namespace and the types after its last /providers/ segment."""
    tail = _id_tail(arm_id)
    if tail:
        return "/".join([tail[0], *tail[1::2]])
    if resource_group_of(arm_id):
        return "Microsoft.Resources/resourceGroups"
    return "Microsoft.Resources/subscriptions"


def _scope_of_id(arm_id: str) -> str | None:
    """The resource an extension resource extends: what precedes its last /providers/ when another precedes that."""
    lower = arm_id.lower()
    at = lower.rfind("/providers/")
    return arm_id[:at] if at > 0 and "/providers/" in lower[:at] else None


def _wire(value: Any) -> Any:
    """Pulumi sends every number as a float; ARM's integers are integers."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, Mapping):
        return {key: _wire(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_wire(item) for item in value]
    return value


def _to_arm(value: Any, path: str, shape: ArmShape) -> Any:
    """Rename azure-native's property names to ARM's and wrap sub-resource array items, recursively."""
    if isinstance(value, Mapping):
        out = {}
        for key, item in value.items():
            child = f"{path}.{key}" if path else key
            out[shape.renames.get(child, key)] = _to_arm(item, child, shape)
        return out
    if isinstance(value, list):
        items = [_to_arm(item, f"{path}[*]", shape) for item in value]
        if path in shape.wrapped:
            items = [_wrap(item) if isinstance(item, Mapping) else item for item in items]
        return items
    return value


def _wrap(item: Mapping[str, Any]) -> dict[str, Any]:
    outer = {key: value for key, value in item.items() if key in SUB_RESOURCE_KEYS}
    inner = {key: value for key, value in item.items() if key not in SUB_RESOURCE_KEYS}
    return {**outer, "properties": inner} if inner else outer


def _arm_identity(identity: Any) -> Any:
    """azure-native takes user-assigned identities as a list of IDs; ARM as a map of ID -> {}."""
    if isinstance(identity, Mapping) and isinstance(identity.get("userAssignedIdentities"), list):
        return {**identity, "userAssignedIdentities": {uid: {} for uid in identity["userAssignedIdentities"]}}
    return identity


def _default_shape(arm_id: str, inputs: Mapping[str, Any]) -> ArmShape:
    """An unknown azure-native token: the inputs that name a segment of its ID form the URL; the rest is the body."""
    segments = {segment.lower() for segment in arm_id.split("/")}
    params = {key for key, value in inputs.items()
              if isinstance(value, str) and (value.lower() in segments or value == arm_id[: len(value)])
              and (key.endswith("Name") or key in ("scope", "resourceUri", "name"))}
    return ArmShape(type_of_id(arm_id), frozenset(params), "")


def arm_resource(token: str, arm_id: str, inputs: Mapping[str, Any]) -> ArmResource | None:
    """The ARM request body of a pulumi-azure-native resource (its type token, its ID, its camelCase inputs as Pulumi
    sends them, secrets revealed); None for anything else (azuread, kubernetes, providers, components)."""
    if not token.startswith("azure-native:"):
        return None
    inputs = _wire(dict(inputs))
    shape = ARM_TABLE.get(token) or _default_shape(arm_id, inputs)
    names = _id_names(arm_id)
    name = names[-1] if names else arm_id.rstrip("/").rsplit("/", 1)[-1]
    body: dict[str, Any] = {"id": arm_id, "name": name, "type": shape.arm_type}
    properties: dict[str, Any] = {}
    for key, value in inputs.items():
        if key in shape.path_params or value is None:
            continue
        if key == "properties" and shape.properties_input:
            properties.update(value)
        elif key in shape.top_level:
            body.setdefault(key, _arm_identity(value) if key == "identity" else value)
        else:
            properties[key] = value
    body["properties"] = _to_arm(properties, "", shape)
    scope = inputs.get(shape.scope_param) if shape.scope_param else _scope_of_id(arm_id)
    return ArmResource(arm_id, shape.arm_type, name, body, token, shape.api_version or None, scope)


def with_private_endpoint_connections(resources: Sequence[ArmResource]) -> list[ArmResource]:
    """The resources with the state a private endpoint of the stack gives its target: an Approved connection.

    "Automatically approve: Use this method when you own or have permissions for the specific private-link
    resource" ("What is a private endpoint?", learn.microsoft.com/azure/private-link/private-endpoint-overview,
    "Access to a private-link resource using approval workflow"). The deployer owns both the endpoint and its target
    in the same stack, and `privateLinkServiceConnections` (not the manual ones) asks for automatic approval. So the
    target gets a `privateEndpointConnections[*]` entry and a `<type>/privateEndpointConnections` child resource,
    both with privateLinkServiceConnectionState.status "Approved".
    """
    by_id = {resource.id.lower(): resource for resource in resources}
    added: dict[str, list[dict[str, Any]]] = {}
    for endpoint in resources:
        if endpoint.type.lower() != "microsoft.network/privateendpoints":
            continue
        for connection in _props(endpoint.body).get("privateLinkServiceConnections") or []:
            target = str(_props(connection).get("privateLinkServiceId") or "").lower()
            if target in by_id:
                added.setdefault(target, []).append({
                    "name": endpoint.name,
                    "properties": {
                        "privateEndpoint": {"id": endpoint.id},
                        "groupIds": _props(connection).get("groupIds"),
                        "privateLinkServiceConnectionState": {"status": "Approved", "description": "Auto-Approved"},
                    },
                })
    result = []
    for resource in resources:
        connections = added.get(resource.id.lower())
        if not connections:
            result.append(resource)
            continue
        body = copy.deepcopy(dict(resource.body))
        properties = body.setdefault("properties", {})
        properties["privateEndpointConnections"] = [*(properties.get("privateEndpointConnections") or []), *[
            {"id": f"{resource.id}/privateEndpointConnections/{entry['name']}", **entry} for entry in connections]]
        result.append(ArmResource(resource.id, resource.type, resource.name, body, resource.token,
                                  resource.api_version, resource.scope))
        for entry in connections:
            child_id = f"{resource.id}/privateEndpointConnections/{entry['name']}"
            child_type = f"{resource.type}/privateEndpointConnections"
            child_body = {"id": child_id, "name": entry["name"], "type": child_type, "properties": entry["properties"]}
            result.append(ArmResource(child_id, child_type, entry["name"], child_body, "", resource.api_version))
    return result


def _props(value: Any) -> Mapping[str, Any]:
    return (value.get("properties") or {}) if isinstance(value, Mapping) else {}


# --- the catalog ----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class McsbAssignment:
    reference_id: str
    effect: str  # the initiative's default for this reference, or the definition's own when it sets none


@dataclass(frozen=True)
class Definition:
    id: str  # the definition's GUID (its `name`)
    resource_id: str  # /providers/Microsoft.Authorization/policyDefinitions/<GUID>
    display_name: str
    file: str  # <Category>/<file>.json
    mode: str
    effect: str  # its default effect
    mcsb: McsbAssignment | None
    related_type: str | None  # then.details.type of AuditIfNotExists / DeployIfNotExists
    target_types: frozenset[str] | None  # the lower-case types its `if` tests for; None: any
    aliases: tuple[str, ...]  # the properties its `if` reads (not type, kind, name, fullName, id)
    parameters: Mapping[str, Any] = dataclass_field(hash=False, compare=False)  # name -> defaultValue
    rule: Mapping[str, Any] = dataclass_field(hash=False, compare=False)

    @property
    def existence(self) -> bool:
        return self.effect.lower() in ("auditifnotexists", "deployifnotexists")


@dataclass(frozen=True)
class Catalog:
    definitions: tuple[Definition, ...]
    aliases: Mapping[str, str] = dataclass_field(hash=False, compare=False)  # lower-case alias -> defaultPath
    folder: Path | None = None


def load(folder: Path) -> Catalog:
    """Every `<Category>/*.json` definition of the folder, with MCSB's assignments (mcsb.json) and the aliases'
    paths (aliases.json)."""
    mcsb = json.loads((folder / "mcsb.json").read_text())["definitions"]
    aliases = json.loads((folder / "aliases.json").read_text())["aliases"]
    definitions = tuple(parse_definition(json.loads(path.read_text()), path.relative_to(folder).as_posix(), mcsb)
                        for path in sorted(folder.glob("*/*.json")))
    return Catalog(definitions, {alias.lower(): path for alias, path in aliases.items()}, folder)


def parse_definition(data: Mapping[str, Any], file: str, mcsb: Mapping[str, Mapping[str, str]]) -> Definition:
    """A definition file's content; `mcsb` is mcsb.json's `definitions` (GUID -> file, referenceId, effect)."""
    properties = data.get("properties", data)
    parameters = {name: spec["defaultValue"] for name, spec in (properties.get("parameters") or {}).items()
                  if "defaultValue" in spec}
    rule = properties["policyRule"]
    effect = default_effect(rule, parameters)
    details = rule["then"].get("details")
    related = details.get("type") if isinstance(details, Mapping) else None
    assigned = mcsb.get(data["name"])
    assignment = None
    if assigned:
        chosen = effect if assigned["effect"] == DEFINITION_DEFAULT else assigned["effect"]
        assignment = McsbAssignment(assigned["referenceId"], chosen)
    existence = effect.lower() in ("auditifnotexists", "deployifnotexists")
    return Definition(
        id=data["name"], resource_id=data.get("id", ""), display_name=properties.get("displayName", ""), file=file,
        mode=properties.get("mode", ""), effect=effect, mcsb=assignment, related_type=related if existence else None,
        target_types=_target_types(rule["if"]), aliases=_rule_aliases(rule["if"]), parameters=parameters, rule=rule,
    )


def effect_parameter(rule: Mapping[str, Any]) -> str | None:
    """The parameter that sets a rule's effect (`[parameters('effect')]`), or None for a literal effect."""
    match = re.fullmatch(r"\[\s*parameters\(\s*'([^']*)'\s*\)\s*\]", str(rule["then"]["effect"]).strip())
    return match.group(1) if match else None


def default_effect(rule: Mapping[str, Any], parameters: Mapping[str, Any]) -> str:
    parameter = effect_parameter(rule)
    return str(parameters.get(parameter) if parameter else rule["then"]["effect"])


def _ci(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """Policy JSON keys are case-insensitive ("anyof", "Like", "notin" appear in the built-ins)."""
    return {key.lower(): value for key, value in mapping.items()}


def _target_types(condition: Any) -> frozenset[str] | None:
    """The types a rule's `field: type` conditions name (equals, in): a cheap pre-filter. None when it names none or
    tests the type otherwise (it may apply to any type)."""
    found: set[str] = set()
    other = False

    def walk(node: Any) -> None:
        nonlocal other
        if isinstance(node, Mapping):
            keys = _ci(node)
            if keys.get("field") == "type":
                if "equals" not in keys and "in" not in keys:
                    other = True
                for value in (keys.get("equals"), *(keys.get("in") or [])):
                    if isinstance(value, str):
                        found.add(value.lower())
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(condition)
    return None if other or not found else frozenset(found)


_NOT_PROPERTIES = {"type", "kind", "name", "fullname", "id"}
_ALIAS_CALL = re.compile(r"(?:field|current)\(\s*'([^']*)'\s*\)", re.IGNORECASE)


def _rule_aliases(condition: Any) -> tuple[str, ...]:
    """The properties a condition reads: `field`s, `count.field`s, and field()/current() of aliases."""
    found: dict[str, None] = {}

    def add(name: str) -> None:
        if name.lower() not in _NOT_PROPERTIES and ("/" in name or name.lower().startswith(("tags", "identity."))):
            found.setdefault(name)

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if key.lower() == "field" and isinstance(value, str) and not value.startswith("["):
                    add(value)
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)
        elif isinstance(node, str) and node.startswith("["):
            for name in _ALIAS_CALL.findall(node):
                add(name)

    walk(condition)
    return tuple(found)


# --- the expression language ([function(...)]) ---------------------------------------------------------------------

class Unresolved(Exception):
    """Something the evaluator cannot resolve (an alias missing from aliases.json, an unknown function, an error):
    the condition's outcome is unknown."""


_TOKEN = re.compile(r"\s*(?:(?P<string>'(?:[^']|'')*')|(?P<number>-?\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][\w]*)"
                    r"|(?P<punct>[(),.\[\]]))")


def _tokens(text: str) -> list[tuple[str, str]]:
    tokens, at = [], 0
    while at < len(text):
        match = _TOKEN.match(text, at)
        if not match:
            if text[at:].strip():
                raise Unresolved(f"cannot parse expression near {text[at:at + 20]!r}")
            break
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        at = match.end()
    return tokens


@dataclass(frozen=True)
class _Call:
    name: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class _Index:
    target: Any
    key: Any  # an expression; `.name` becomes a string key


@dataclass(frozen=True)
class _Literal:
    value: Any


class _Parser:
    """`[expr]`: strings in single quotes ('' escapes one), numbers, calls, `[index]` and `.property` access."""

    def __init__(self, text: str):
        self.tokens = _tokens(text)
        self.at = 0

    def parse(self) -> Any:
        node = self.expression()
        if self.at != len(self.tokens):
            raise Unresolved(f"unexpected {self.tokens[self.at][1]!r} in expression")
        return node

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (value is not None and token[1] != value):
            raise Unresolved(f"expected {value or 'more'} in expression")
        self.at += 1
        return token

    def expression(self) -> Any:
        kind, text = self.take()
        if kind == "string":
            node: Any = _Literal(text[1:-1].replace("''", "'"))
        elif kind == "number":
            node = _Literal(float(text) if "." in text else int(text))
        elif kind == "name":
            if self.peek() == ("punct", "("):
                self.take("(")
                args = []
                while self.peek() != ("punct", ")"):
                    args.append(self.expression())
                    if self.peek() == ("punct", ","):
                        self.take(",")
                self.take(")")
                node = _Call(text, tuple(args))
            elif text.lower() in ("true", "false", "null"):
                node = _Literal({"true": True, "false": False, "null": None}[text.lower()])
            else:
                raise Unresolved(f"unknown name {text!r} in expression")
        elif (kind, text) == ("punct", "("):
            node = self.expression()
            self.take(")")
        else:
            raise Unresolved(f"unexpected {text!r} in expression")
        while self.peek() in (("punct", "["), ("punct", ".")):
            if self.take()[1] == "[":
                node = _Index(node, self.expression())
                self.take("]")
            else:
                node = _Index(node, _Literal(self.take()[1]))
        return node


def is_expression(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("[") and not value.startswith("[[") and value.endswith("]")


def _literal_text(value: Any) -> Any:
    """A string starting with `[[` is the literal string starting with `[`."""
    return value[1:] if isinstance(value, str) and value.startswith("[[") else value


# --- evaluation state -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Binding:
    """The member a `count` is at: a field count binds its array's path, a value count its name."""

    key: str  # lower-case: the counted alias (field count) or the index name (value count)
    path: str | None  # field count: the lower-case defaultPath of the counted array, ending in [*]
    value: Any


@dataclass
class _Stack:
    """What an evaluation sees: the stack's resources (with computed state) and the functions' context."""

    resources: list[ArmResource]
    aliases: Mapping[str, str]
    now: dt.datetime
    defaulted: dict[str, set[str]]  # resource ID -> the aliases that took Azure's default


@dataclass
class _Context:
    stack: _Stack
    definition: Definition
    subject: ArmResource  # what `field` conditions read (the related resource inside an existenceCondition)
    evaluated: ArmResource  # what field() reads: always the resource the `if` evaluated
    bindings: tuple[_Binding, ...] = ()

    def bind(self, binding: _Binding) -> "_Context":
        return _Context(self.stack, self.definition, self.subject, self.evaluated, (*self.bindings, binding))


# --- fields and aliases ---------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Selected:
    values: tuple[Any, ...]
    many: bool  # a [*] collection (a condition must hold for each member) rather than one value


def _get(value: Any, key: str) -> Any:
    """A JSON property, case-insensitively (ARM property names are)."""
    if not isinstance(value, Mapping):
        return None
    if key in value:
        return value[key]
    lower = key.lower()
    return next((item for name, item in value.items() if name.lower() == lower), None)


def _walk(root: Any, path: str) -> _Selected:
    values, many = [root], False
    for segment in filter(None, path.split(".")):
        star = segment.endswith("[*]")
        name = segment[:-3] if star else segment
        following = []
        for value in values:
            child = _get(value, name) if name else value
            if star:
                following.extend(child if isinstance(child, list) else [])
            else:
                following.append(child)
        values, many = following, many or star
    return _Selected(tuple(values), many)


def _alias_path(alias: str, stack: _Stack) -> str:
    path = stack.aliases.get(alias.lower())
    if path is None:
        raise Unresolved(f"alias {alias!r} is not in aliases.json")
    return path


def _applies(alias: str, resource_type: str) -> bool:
    """An alias is `<type>/<property>`: it reads a resource of that type only."""
    prefix = resource_type.lower() + "/"
    return alias.lower().startswith(prefix) and "/" not in alias[len(prefix):]


def _select(name: str, ctx: _Context, resource: ArmResource, bindings: Sequence[_Binding]) -> _Selected:
    """A field's value(s) on a resource: a built-in field, a tag, or an alias (through the counts' current members)."""
    lower = name.lower()
    body = resource.body
    if lower == "type":
        return _Selected((resource.type,), False)
    if lower == "name":
        return _Selected((resource.name,), False)
    if lower == "fullname":
        return _Selected((resource.full_name,), False)
    if lower == "id":
        return _Selected((resource.id,), False)
    if lower == "location":  # "East US 2" equals "eastus2"
        location = body.get("location")
        return _Selected((location.replace(" ", "").lower() if isinstance(location, str) else location,), False)
    if lower in ("kind", "tags", "identity.type"):
        return _Selected((_walk(body, name).values[0],), False)
    tag = re.fullmatch(r"tags(?:\[(?:'(.*)'|(.*))\]|\.(.*))", name, re.IGNORECASE | re.DOTALL)
    if tag:
        key = next(group for group in tag.groups() if group is not None).replace("''", "'")
        return _Selected((_get(body.get("tags") or {}, key),), False)
    path = _alias_path(name, ctx.stack)
    if not _applies(name, resource.type):
        return _Selected((None,), False)
    bound = [b for b in bindings if b.path and (path.lower() == b.path or path.lower().startswith(b.path + "."))]
    if bound:
        binding = max(bound, key=lambda b: len(b.path or ""))  # the innermost count
        return _walk(binding.value, path[len(binding.path or ""):])
    return _walk(body, path)


def _field_value(name: str, ctx: _Context) -> Any:
    """field(): the value on the evaluated resource; a [*] alias gives the array of its selected values."""
    bindings = ctx.bindings if ctx.subject is ctx.evaluated else ()
    selected = _select(name, ctx, ctx.evaluated, bindings)
    return list(selected.values) if selected.many else selected.values[0]


def _current(args: Sequence[Any], ctx: _Context) -> Any:
    if not ctx.bindings:
        raise Unresolved("current() outside a count")
    if not args:
        return ctx.bindings[-1].value
    key = str(args[0]).lower()
    for binding in reversed(ctx.bindings):
        if binding.key == key:
            return binding.value
    selected = _select(str(args[0]), ctx, ctx.subject, ctx.bindings)  # a property of the counted member
    return list(selected.values) if selected.many else selected.values[0]


# --- template functions ---------------------------------------------------------------------------------------------

def _string(value: Any) -> str:
    """ARM's string(): True/False for booleans, JSON for objects and arrays."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if value is None:
        return ""
    if isinstance(value, (Mapping, list)):
        return json.dumps(value, separators=(",", ":"))
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, (str, list, Mapping)) and len(value) == 0)


def _to_int(value: Any) -> int:
    try:
        return int(str(value).strip()) if not isinstance(value, (int, float)) else int(value)
    except ValueError as error:
        raise Unresolved(f"int({value!r}) fails") from error


def _split(text: Any, delimiters: Any) -> list[str]:
    if not isinstance(text, str):
        raise Unresolved(f"split() of {text!r}")
    parts = delimiters if isinstance(delimiters, list) else [delimiters]
    return re.split("|".join(re.escape(str(part)) for part in parts), text)


def _pad_left(value: Any, length: Any, char: Any = " ") -> str:
    if value is None or isinstance(value, (Mapping, list, bool)):
        raise Unresolved(f"padLeft() of {value!r}")
    return _string(value).rjust(_to_int(length), str(char)[:1] or " ")


def _concat(*args: Any) -> Any:
    if args and all(isinstance(arg, list) for arg in args):
        return [item for arg in args for item in arg]
    return "".join(_string(arg) for arg in args)


def _first(value: Any) -> Any:
    if isinstance(value, (str, list)):
        return value[0] if value else None
    raise Unresolved(f"first() of {value!r}")


def _last(value: Any) -> Any:
    if isinstance(value, (str, list)):
        return value[-1] if value else None
    raise Unresolved(f"last() of {value!r}")


def _length(value: Any) -> int:
    if isinstance(value, (str, list, Mapping)):
        return len(value)
    raise Unresolved(f"length() of {value!r}")


def _contains(container: Any, item: Any) -> bool:
    if isinstance(container, str):
        return _string(item) in container
    if isinstance(container, list):
        return item in container
    if isinstance(container, Mapping):
        return _get(container, str(item)) is not None or str(item) in container
    raise Unresolved(f"contains() on {container!r}")


_UTC_FORMAT = "%Y-%m-%dT%H:%M:%S.%f"


def _utc_text(moment: dt.datetime) -> str:
    """ISO 8601 `yyyy-MM-ddTHH:mm:ss.fffffffZ`, as utcNow() gives it."""
    return moment.astimezone(dt.timezone.utc).strftime(_UTC_FORMAT) + "0Z"


def _parse_utc(text: Any) -> dt.datetime:
    """An ISO 8601 date-time (7 fractional digits allowed, as utcNow() gives); UTC when it names no zone."""
    match = re.fullmatch(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(?::\d{2})?)(?:\.(\d+))?(Z|[+-]\d{2}:\d{2})?",
                         str(text).strip())
    if not match:
        raise Unresolved(f"{text!r} is not an ISO 8601 date-time")
    zone = match.group(3) if match.group(3) not in (None, "Z") else "+00:00"
    moment = dt.datetime.fromisoformat(match.group(1) + zone)
    return moment + dt.timedelta(microseconds=int((match.group(2) or "0")[:6].ljust(6, "0")))


def _add_days(moment: Any, days: Any) -> str:
    return _utc_text(_parse_utc(moment) + dt.timedelta(days=_to_int(days)))


def _ip_range(text: Any) -> tuple[Any, Any]:
    value = str(text).strip()
    try:
        if "-" in value:
            start, end = (ipaddress.ip_address(part.strip()) for part in value.split("-", 1))
            return start, end
        network = ipaddress.ip_network(value, strict=False)
        return network[0], network[-1]
    except ValueError as error:
        raise Unresolved(f"ipRangeContains() of {text!r}") from error


def _ip_range_contains(outer: Any, inner: Any) -> bool:
    (start, end), (inner_start, inner_end) = _ip_range(outer), _ip_range(inner)
    if start.version != inner_start.version:
        raise Unresolved("ipRangeContains() mixes IP families")
    return start <= inner_start and inner_end <= end


def _compare_values(left: Any, right: Any) -> int:
    """-1, 0 or 1; numbers with numbers, strings with strings (case-insensitively); anything else is an error, as
    Azure throws for `less`... when the types differ."""
    if isinstance(left, bool) or isinstance(right, bool):
        raise Unresolved(f"cannot order {left!r} and {right!r}")
    if isinstance(left, (int, float)) and isinstance(right, (int, float)):
        return (left > right) - (left < right)
    if isinstance(left, str) and isinstance(right, str):
        a, b = left.lower(), right.lower()
        return (a > b) - (a < b)
    raise Unresolved(f"cannot order {left!r} and {right!r} (types differ)")


def _resource_group(ctx: _Context) -> dict[str, Any]:
    """resourceGroup(): the evaluated resource's group as the stack declares it (managedBy "" when it sets none)."""
    name = ctx.evaluated.resource_group or ""
    group = next((r for r in ctx.stack.resources
                  if r.type.lower() == "microsoft.resources/resourcegroups" and r.name.lower() == name.lower()), None)
    subscription = _subscription(ctx)["id"]
    body = group.body if group else {}
    return {"id": f"{subscription}/resourceGroups/{name}", "name": name, "type": "Microsoft.Resources/resourceGroups",
            "location": body.get("location"), "managedBy": body.get("managedBy") or "", "tags": body.get("tags") or {},
            "properties": {"provisioningState": "Succeeded"}}


def _subscription(ctx: _Context) -> dict[str, Any]:
    match = re.search(r"/subscriptions/([^/]+)", ctx.evaluated.id, re.IGNORECASE)
    subscription_id = match.group(1) if match else ""
    return {"id": f"/subscriptions/{subscription_id}", "subscriptionId": subscription_id}


def _parameter(ctx: _Context, name: Any) -> Any:
    parameters = ctx.definition.parameters
    key = next((k for k in parameters if k.lower() == str(name).lower()), None)
    if key is None:
        raise Unresolved(f"parameter {name!r} has no default")
    return parameters[key]


def _request_context(ctx: _Context) -> dict[str, Any]:
    """requestContext(): the API version of the request for the evaluated resource (the token's, ARM_TABLE)."""
    if not ctx.evaluated.api_version:
        raise Unresolved(f"requestContext().apiVersion: no API version known for {ctx.evaluated.type}")
    return {"apiVersion": ctx.evaluated.api_version}


# name -> (ctx, evaluated arguments) -> value; `if` is evaluated lazily (see _evaluate)
_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "parameters": lambda ctx, name: _parameter(ctx, name),
    "field": lambda ctx, name: _field_value(str(name), ctx),
    "current": lambda ctx, *args: _current(args, ctx),
    "resourcegroup": lambda ctx: _resource_group(ctx),
    "subscription": lambda ctx: _subscription(ctx),
    "requestcontext": lambda ctx: _request_context(ctx),
    "utcnow": lambda ctx, *fmt: _utc_text(ctx.stack.now),
    "adddays": lambda ctx, moment, days: _add_days(moment, days),
    "iprangecontains": lambda ctx, outer, inner: _ip_range_contains(outer, inner),
    "empty": lambda ctx, value: _empty(value),
    "not": lambda ctx, value: not _truth(value),
    "and": lambda ctx, *values: all(_truth(value) for value in values),
    "or": lambda ctx, *values: any(_truth(value) for value in values),
    "bool": lambda ctx, value: _truth(value),
    "int": lambda ctx, value: _to_int(value),
    "string": lambda ctx, value: _string(value),
    "split": lambda ctx, text, delimiters: _split(text, delimiters),
    "createarray": lambda ctx, *items: list(items),
    "concat": lambda ctx, *args: _concat(*args),
    "padleft": lambda ctx, value, length, char=" ": _pad_left(value, length, char),
    "tolower": lambda ctx, text: _string(text).lower(),
    "toupper": lambda ctx, text: _string(text).upper(),
    "first": lambda ctx, value: _first(value),
    "last": lambda ctx, value: _last(value),
    "length": lambda ctx, value: _length(value),
    "coalesce": lambda ctx, *values: next((value for value in values if value is not None), None),
    "contains": lambda ctx, container, item: _contains(container, item),
    "replace": lambda ctx, text, old, new: _string(text).replace(_string(old), _string(new)),
    "substring": lambda ctx, text, start, length=None: _string(text)[
        _to_int(start): None if length is None else _to_int(start) + _to_int(length)],
    "indexof": lambda ctx, text, item: _string(text).lower().find(_string(item).lower()),
    "startswith": lambda ctx, text, item: _string(text).lower().startswith(_string(item).lower()),
    "endswith": lambda ctx, text, item: _string(text).lower().endswith(_string(item).lower()),
    "equals": lambda ctx, left, right: left == right,
    "less": lambda ctx, left, right: _compare_values(left, right) < 0,
    "lessorequals": lambda ctx, left, right: _compare_values(left, right) <= 0,
    "greater": lambda ctx, left, right: _compare_values(left, right) > 0,
    "greaterorequals": lambda ctx, left, right: _compare_values(left, right) >= 0,
    "true": lambda ctx: True,
    "false": lambda ctx: False,
}


def _truth(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    if isinstance(value, (int, float)):
        return value != 0
    raise Unresolved(f"{value!r} is not a boolean")


def _evaluate(node: Any, ctx: _Context) -> Any:
    if isinstance(node, _Literal):
        return node.value
    if isinstance(node, _Index):
        target, key = _evaluate(node.target, ctx), _evaluate(node.key, ctx)
        if isinstance(target, list) and isinstance(key, int):
            if not -len(target) <= key < len(target):
                raise Unresolved(f"index {key} out of range of {target!r}")
            return target[key]
        if isinstance(target, Mapping):
            return _get(target, str(key))
        raise Unresolved(f"cannot index {target!r} with {key!r}")
    name = node.name.lower()
    if name == "if":  # only the chosen branch is evaluated (ARM template functions, logical: if)
        if len(node.args) != 3:
            raise Unresolved("if() takes three arguments")
        return _evaluate(node.args[1] if _truth(_evaluate(node.args[0], ctx)) else node.args[2], ctx)
    function = _FUNCTIONS.get(name)
    if function is None:
        raise Unresolved(f"function {node.name!r} is not implemented")
    args = [_evaluate(arg, ctx) for arg in node.args]
    try:
        return function(ctx, *args)
    except TypeError as error:  # a wrong number or kind of arguments: ARM fails the evaluation
        raise Unresolved(f"{node.name}() fails on {args!r}: {error}") from error


_PARSED: dict[str, Any] = {}


def expression_value(value: Any, ctx: _Context) -> Any:
    """A rule's value: an `[expression]` evaluated, anything else as written."""
    if not is_expression(value):
        return _literal_text(value)
    if value not in _PARSED:
        _PARSED[value] = _Parser(value[1:-1]).parse()
    return _evaluate(_PARSED[value], ctx)


# --- conditions -----------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Unknown:
    """A condition whose outcome is unknown, and why."""

    why: tuple[str, ...]


Tri = bool | _Unknown


def _canonical(value: Any) -> Any:
    """How `equals` sees a value: booleans and numbers as their text ("true" equals true, per the doc's
    `"value": "[less(...)]", "equals": "true"` example), strings case-insensitively."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, str):
        return value.lower()
    if isinstance(value, Mapping):
        return {str(key).lower(): _canonical(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_canonical(item) for item in value]
    return value


def _equals(left: Any, right: Any) -> bool:
    if left is None or right is None:
        return left is None and right is None
    return _canonical(left) == _canonical(right)


def _wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if char == "*" else re.escape(char) for char in pattern), re.IGNORECASE | re.DOTALL)


def _match_pattern(pattern: str, flags: int) -> re.Pattern[str]:
    """`#` a digit, `?` a letter, `.` any character, anything else itself."""
    parts = {"#": "[0-9]", "?": "[A-Za-z]", ".": "."}
    return re.compile("".join(parts.get(char, re.escape(char)) for char in pattern), flags | re.DOTALL)


def _text(value: Any) -> str | None:
    """A value as the string conditions compare: none for a missing value, an object or an array."""
    if value is None or isinstance(value, (Mapping, list)):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return _string(value)


def _fits(value: Any, pattern: re.Pattern[str]) -> bool:
    text = _text(value)
    return text is not None and pattern.fullmatch(text) is not None


def _in(value: Any, options: Any) -> bool:
    if not isinstance(options, list):
        raise Unresolved(f"`in` needs an array, not {options!r}")
    return value is not None and any(_equals(value, option) for option in options)


def _contains_condition(value: Any, item: Any) -> bool:
    if isinstance(value, list):
        return any(_equals(member, item) for member in value)
    if isinstance(value, Mapping):
        return _get(value, str(item)) is not None
    text = _text(value)
    return text is not None and _string(item).lower() in text.lower()


def _exists(value: Any, wanted: Any) -> bool:
    if isinstance(wanted, str) and wanted.lower() in ("true", "false"):
        wanted = wanted.lower() == "true"
    if not isinstance(wanted, bool):
        raise Unresolved(f"exists needs true or false, not {wanted!r}")
    return (value is not None) == wanted


def _order(op: Callable[[int], bool]) -> Callable[[Any, Any], bool]:
    return lambda value, target: value is not None and op(_compare_values(value, target))


_OPERATORS: dict[str, Callable[[Any, Any], bool]] = {
    "equals": _equals,
    "notequals": lambda value, target: not _equals(value, target),
    "like": lambda value, target: _fits(value, _wildcard(_string(target))),
    "notlike": lambda value, target: not _fits(value, _wildcard(_string(target))),
    "match": lambda value, target: _fits(value, _match_pattern(_string(target), 0)),
    "matchinsensitively": lambda value, target: _fits(value, _match_pattern(_string(target), re.IGNORECASE)),
    "notmatch": lambda value, target: not _fits(value, _match_pattern(_string(target), 0)),
    "notmatchinsensitively": lambda value, target: not _fits(value, _match_pattern(_string(target), re.IGNORECASE)),
    "contains": _contains_condition,
    "notcontains": lambda value, target: not _contains_condition(value, target),
    "in": _in,
    "notin": lambda value, target: not _in(value, target),
    "containskey": lambda value, target: isinstance(value, Mapping) and _get(value, str(target)) is not None,
    "notcontainskey": lambda value, target: not (isinstance(value, Mapping) and _get(value, str(target)) is not None),
    "less": _order(lambda c: c < 0),
    "lessorequals": _order(lambda c: c <= 0),
    "greater": _order(lambda c: c > 0),
    "greaterorequals": _order(lambda c: c >= 0),
    "exists": _exists,
}


def _kleene(results: Iterable[Tri], decisive: bool) -> Tri:
    """Kleene's and (decisive False) or or (decisive True): one decisive result settles it; an unknown only matters
    when none does."""
    unknown: list[str] = []
    for result in results:
        if result is decisive:
            return decisive
        if isinstance(result, _Unknown):
            unknown.extend(result.why)
    return _Unknown(tuple(dict.fromkeys(unknown))) if unknown else not decisive


def _all(results: Iterable[Tri]) -> Tri:
    return _kleene(results, False)


def _any(results: Iterable[Tri]) -> Tri:
    return _kleene(results, True)


def _not(result: Tri) -> Tri:
    return result if isinstance(result, _Unknown) else not result


def _operator(node: Mapping[str, Any]) -> tuple[str, Any]:
    found = [(key, value) for key, value in node.items() if key in _OPERATORS]
    if len(found) != 1:
        raise Unresolved(f"a condition needs one operator, has {sorted(node)}")
    return found[0]


def condition(node: Mapping[str, Any], ctx: _Context) -> Tri:
    """A policy condition or logical operator, for ctx.subject."""
    keys = _ci(node)
    if "allof" in keys:
        return _all(condition(child, ctx) for child in keys["allof"])
    if "anyof" in keys:
        return _any(condition(child, ctx) for child in keys["anyof"])
    if "not" in keys:
        return _not(condition(keys["not"], ctx))
    try:
        op, target = _operator(keys)
        test = _OPERATORS[op]
        if "count" in keys:
            return _count(keys["count"], op, target, ctx)
        target = expression_value(target, ctx)
        if "field" in keys:
            name = expression_value(keys["field"], ctx)
            selected = _select(str(name), ctx, ctx.subject, ctx.bindings)
            values = selected.values if (selected.values or not selected.many) else (None,)
            return all(test(value, target) for value in values)
        if "value" in keys:
            return test(expression_value(keys["value"], ctx), target)
        raise Unresolved(f"a condition needs field, value or count, has {sorted(keys)}")
    except Unresolved as error:
        return _Unknown((str(error),))


def _count(spec: Mapping[str, Any], op: str, target: Any, ctx: _Context) -> Tri:
    """A field count or value count, compared with `op`: when members are unknown, it is known only if every
    possible count gives the same answer."""
    spec = _ci(spec)
    if "field" in spec:
        alias = str(spec["field"])
        path = _alias_path(alias, ctx.stack)
        if not path.endswith("[*]"):
            raise Unresolved(f"count.field {alias!r} is not a [*] alias")
        selected = _select(alias, ctx, ctx.subject, ctx.bindings)  # not `many`: another type's alias, no members
        members = [_Binding(alias.lower(), path.lower(), value) for value in selected.values if selected.many]
    else:
        values = expression_value(spec.get("value"), ctx)
        if not isinstance(values, list):
            raise Unresolved(f"count.value is not an array: {values!r}")
        name = str(spec.get("name", "default")).lower()
        members = [_Binding(name, None, value) for value in values]
    where = spec.get("where")
    results = [condition(where, ctx.bind(member)) if where is not None else True for member in members]
    low = sum(1 for result in results if result is True)
    high = low + sum(1 for result in results if isinstance(result, _Unknown))
    target = expression_value(target, ctx)
    answers = {_OPERATORS[op](count, target) for count in range(low, high + 1)}
    if len(answers) == 1:
        return answers.pop()
    return _Unknown(tuple(dict.fromkeys(why for result in results if isinstance(result, _Unknown)
                                        for why in result.why)))


# --- effects and findings -------------------------------------------------------------------------------------------

class Outcome(str, enum.Enum):
    COMPLIANT = "COMPLIANT"
    NON_COMPLIANT = "NON_COMPLIANT"
    UNRESOLVED = "UNRESOLVED"
    NOT_EVALUABLE = "NOT_EVALUABLE"


@dataclass(frozen=True)
class ResourceRef:
    id: str
    type: str
    name: str


@dataclass(frozen=True)
class Finding:
    definition: Definition
    resource: ResourceRef
    outcome: Outcome
    reason: str
    aliases: tuple[str, ...]  # the properties the definition's `if` reads: what it judges


# types whose resources are extensions of the resource they describe (their ID is under the scope's ID)
EXTENSION_TYPES = frozenset({"microsoft.insights/diagnosticsettings"})
# types that live at subscription scope: never in a resource group the stack declares
SUBSCRIPTION_TYPES = frozenset({"microsoft.security/pricings", "microsoft.resources/subscriptions"})


def evaluate(catalog: Catalog, resources: Sequence[ArmResource], now: dt.datetime | None = None) -> list[Finding]:
    """Every definition against every resource whose type its `if` tests for (with the private endpoints'
    approved connections and Azure's defaults as computed state)."""
    stack = _prepare(catalog, resources, now or dt.datetime.now(dt.timezone.utc))
    findings = []
    for definition in catalog.definitions:
        for resource in stack.resources:
            if definition.target_types is None or resource.type.lower() in definition.target_types:
                findings.append(_judge(definition, resource, stack))
    return findings


def _prepare(catalog: Catalog, resources: Sequence[ArmResource], now: dt.datetime) -> _Stack:
    stack = _Stack([], catalog.aliases, now, {})
    for resource in with_private_endpoint_connections(resources):
        stack.resources.append(_with_defaults(resource, stack))
    return stack


def _with_defaults(resource: ArmResource, stack: _Stack) -> ArmResource:
    """The resource with Azure's default for each AZURE_DEFAULTS property it leaves unset."""
    body: dict[str, Any] | None = None
    for alias in AZURE_DEFAULTS:
        path = stack.aliases.get(alias.lower())
        if not path or "[*]" in path or not _applies(alias, resource.type):
            continue
        if _walk(resource.body, path).values[0] is not None:
            continue
        body = body if body is not None else copy.deepcopy(dict(resource.body))
        if _put(body, path, AZURE_DEFAULTS[alias][0]):
            stack.defaulted.setdefault(resource.id, set()).add(alias.lower())
    if body is None:
        return resource
    return ArmResource(resource.id, resource.type, resource.name, body, resource.token, resource.api_version,
                       resource.scope)


def _put(body: dict[str, Any], path: str, value: Any) -> bool:
    """Set a value at a dotted path, creating the objects on the way; False when a non-object is in the way."""
    *parents, last = path.split(".")
    node = body
    for key in parents:
        child = _get(node, key)
        if child is None:
            child = node[key] = {}
        if not isinstance(child, dict):
            return False
        node = child
    node[last] = value
    return True


def _judge(definition: Definition, resource: ArmResource, stack: _Stack) -> Finding:
    ctx = _Context(stack, definition, resource, resource)
    result = condition(definition.rule["if"], ctx)
    ref = ResourceRef(resource.id, resource.type, resource.name)

    def finding(outcome: Outcome, reason: str) -> Finding:
        return Finding(definition, ref, outcome, reason, definition.aliases)

    if isinstance(result, _Unknown):
        return finding(Outcome.UNRESOLVED, "unresolved: " + "; ".join(result.why))
    values = _shown_values(definition.aliases, ctx)
    if result is False:
        return finding(Outcome.COMPLIANT, "if does not match" + (f": {values}" if values else ""))
    if not definition.existence:
        return finding(Outcome.NON_COMPLIANT, "if matches" + (f": {values}" if values else ""))
    outcome, reason = _existence(definition, ctx)
    return finding(outcome, reason)


def _existence(definition: Definition, ctx: _Context) -> tuple[Outcome, str]:
    """AuditIfNotExists / DeployIfNotExists: compliant when a related resource meets the existenceCondition."""
    details = _ci(definition.rule["then"]["details"])
    kind = str(details["type"])
    resource = ctx.evaluated
    try:
        related = _related(details, kind, ctx)
    except Unresolved as error:
        return Outcome.UNRESOLVED, f"unresolved: {error}"
    if isinstance(related, str):
        return Outcome.NOT_EVALUABLE, related
    if not related:
        return Outcome.NON_COMPLIANT, f"no related {kind}{_named(details, ctx)} for this resource in the stack"
    existence = details.get("existencecondition")
    if existence is None:
        return Outcome.COMPLIANT, f"related {kind} {related[0].name} exists"
    results = [condition(existence, _Context(ctx.stack, definition, candidate, resource)) for candidate in related]
    met = [candidate for candidate, result in zip(related, results) if result is True]
    if met:
        return Outcome.COMPLIANT, f"related {kind} {met[0].name} meets the existenceCondition"
    unknown = [why for result in results if isinstance(result, _Unknown) for why in result.why]
    if unknown:
        return Outcome.UNRESOLVED, "unresolved: " + "; ".join(dict.fromkeys(unknown))
    shown = _shown_values(_rule_aliases(existence), _Context(ctx.stack, definition, related[0], resource))
    return Outcome.NON_COMPLIANT, (f"{len(related)} related {kind}, none meets the existenceCondition"
                                   + (f" ({related[0].name}: {shown})" if shown else ""))


def _named(details: Mapping[str, Any], ctx: _Context) -> str:
    return f" named {expression_value(details['name'], ctx)!r}" if "name" in details else ""


def _related(details: Mapping[str, Any], kind: str, ctx: _Context) -> list[ArmResource] | str:
    """The stack's resources of details.type that the effect looks at, or why they are outside the stack."""
    resource = ctx.evaluated
    lower = kind.lower()
    candidates = [r for r in ctx.stack.resources if r.type.lower() == lower]
    if lower in EXTENSION_TYPES:  # extensions of this resource: their scope is its ID
        candidates = [r for r in candidates if str(r.scope).lower() == resource.id.lower()]
    elif lower.startswith(resource.type.lower() + "/"):  # its children
        candidates = [r for r in candidates if r.id.lower().startswith(resource.id.lower() + "/")]
    else:
        if lower in SUBSCRIPTION_TYPES:
            return f"related {kind} live at subscription scope, outside the stack"
        if str(details.get("existencescope", "resourceGroup")).lower() == "subscription":
            return f"related {kind} are looked up in the whole subscription, beyond the stack"
        group = expression_value(details["resourcegroupname"], ctx) if "resourcegroupname" in details \
            else resource.resource_group
        if str(group).lower() != str(resource.resource_group).lower():
            return f"related {kind} are looked up in resource group {group!r}, outside the stack"
        candidates = [r for r in candidates if str(r.resource_group).lower() == str(group).lower()]
    if "name" in details:
        name = str(expression_value(details["name"], ctx))
        candidates = [r for r in candidates if _name_matches(r, name)]
    return candidates


def _name_matches(resource: ArmResource, name: str) -> bool:
    """details.name: the resource's name, or parent/child names with `?` for any last segment."""
    if "/" not in name:
        return resource.name.lower() == name.lower()
    pattern = re.escape(name.lower()).replace(r"\?", "[^/]+")
    return re.fullmatch(pattern, resource.full_name.lower()) is not None


def _short(alias: str) -> str:
    """An alias without its type: `Microsoft.Storage/storageAccounts/minimumTlsVersion` -> `minimumTlsVersion`."""
    return alias.rsplit("/", 1)[-1]


def _shown_values(aliases: Sequence[str], ctx: _Context) -> str:
    """`property=value` for each alias the rule reads on the subject, marking Azure's defaults."""
    shown = []
    defaulted = ctx.stack.defaulted.get(ctx.subject.id, set())
    for alias in aliases:
        if "/" in alias and not _applies(alias, ctx.subject.type):
            continue
        try:
            selected = _select(alias, ctx, ctx.subject, ())
        except Unresolved:
            continue
        value = list(selected.values) if selected.many else selected.values[0]
        text = "unset" if value is None else json.dumps(value, separators=(",", ":"), default=str)
        if len(text) > 60:
            text = text[:57] + "..."
        mark = " (Azure default)" if alias.lower() in defaulted else ""
        shown.append(f"{_short(alias)}={text}{mark}")
    return "; ".join(dict.fromkeys(shown))


# --- summaries ------------------------------------------------------------------------------------------------------

def property_key(finding: Finding) -> tuple[str, ...]:
    """What a finding judges: the sorted aliases its `if` reads, plus the related type of AINE/DINE."""
    judged = {alias.lower() for alias in finding.aliases}
    if finding.definition.related_type:
        judged.add(finding.definition.related_type.lower())
    return tuple(sorted(judged))


def deny_findings(findings: Iterable[Finding]) -> list[Finding]:
    """The non-compliant findings of definitions whose default effect is Deny."""
    return [f for f in findings if f.outcome is Outcome.NON_COMPLIANT and f.definition.effect.lower() == "deny"]


def mcsb_findings(findings: Iterable[Finding]) -> list[Finding]:
    """The non-compliant findings of definitions MCSB assigns with an effect other than Disabled, once per (resource,
    property judged): definitions that judge the same property of the same resource (an audit and its
    Databricks-excluded twin) count once, represented by the first in file order."""
    merged: dict[tuple[str, tuple[str, ...]], Finding] = {}
    for finding in sorted(findings, key=lambda f: (f.definition.file, f.resource.id)):
        mcsb = finding.definition.mcsb
        if finding.outcome is not Outcome.NON_COMPLIANT or mcsb is None or mcsb.effect.lower() == "disabled":
            continue
        merged.setdefault((finding.resource.id.lower(), property_key(finding)), finding)
    return list(merged.values())


_ORDER = (Outcome.NON_COMPLIANT, Outcome.UNRESOLVED, Outcome.NOT_EVALUABLE, Outcome.COMPLIANT)


def report(findings: Sequence[Finding]) -> str:
    """A table of the findings grouped by outcome: effect, MCSB reference, resource, definition, reason."""
    counts = {outcome: sum(1 for f in findings if f.outcome is outcome) for outcome in _ORDER}
    lines = [
        f"{len(findings)} findings: " + ", ".join(f"{outcome.value} {count}" for outcome, count in counts.items()),
        f"non-compliant with a Deny default: {len(deny_findings(findings))}; "
        f"non-compliant under MCSB (once per resource and property): {len(mcsb_findings(findings))}",
    ]
    for outcome in _ORDER:
        group = sorted((f for f in findings if f.outcome is outcome),
                       key=lambda f: (f.resource.type.lower(), f.resource.name, f.definition.display_name))
        if not group:
            continue
        lines += ["", f"{outcome.value} ({len(group)})"]
        for f in group:
            mcsb = f"{f.definition.mcsb.reference_id} ({f.definition.mcsb.effect})" if f.definition.mcsb else "-"
            lines.append(f"  {f.definition.effect:<17} {mcsb} | {f.resource.type}/{f.resource.name} | "
                         f"{f.definition.display_name} | {f.reason}")
    return "\n".join(lines)


# --- fetching the reference -----------------------------------------------------------------------------------------

def raw_url(repo: str, commit: str, path: str) -> str:
    return RAW.format(repo=repo, commit=commit, path=urllib.parse.quote(path))


def _download(url: str) -> bytes | None:
    """The file's bytes, or None when the server has no such file (404)."""
    try:
        with urllib.request.urlopen(url, timeout=60) as response:
            return response.read()
    except urllib.error.HTTPError as error:
        if error.code == 404:
            return None
        raise


def mcsb_entries(initiative: Mapping[str, Any], definitions: Mapping[str, tuple[str, str | None]]) -> dict[str, Any]:
    """mcsb.json from the initiative: for each of `definitions` (GUID -> (file, its effect parameter)) it references,
    the reference ID and the effect its parameters give: the initiative parameter's default the reference passes
    (or the literal it passes), DEFINITION_DEFAULT when it passes none."""
    properties = initiative.get("properties", initiative)
    parameters = properties.get("parameters") or {}
    entries: dict[str, dict[str, str]] = {}
    for reference in properties.get("policyDefinitions") or []:
        guid = str(reference.get("policyDefinitionId", "")).rsplit("/", 1)[-1].lower()
        known = next((key for key in definitions if key.lower() == guid), None)
        if known is None:
            continue
        file, effect_parameter_name = definitions[known]
        passed = (reference.get("parameters") or {}).get(effect_parameter_name, {}) if effect_parameter_name else {}
        effect = DEFINITION_DEFAULT
        if "value" in passed:
            match = re.fullmatch(r"\[\s*parameters\(\s*'([^']*)'\s*\)\s*\]", str(passed["value"]).strip())
            effect = str((parameters.get(match.group(1)) or {}).get("defaultValue")) if match else str(passed["value"])
        reference_id = reference.get("policyDefinitionReferenceId", "")
        entries[known] = {"file": file, "referenceId": reference_id, "effect": effect}
    metadata = properties.get("metadata") or {}
    return {"initiative": properties.get("displayName", ""), "version": metadata.get("version", ""),
            "definitions": entries}


def parse_alias_markdown(text: str) -> dict[str, str]:
    """An aliases/*.md table of the alias dump: `| \\`defaultPath\\` | \\`alias\\` |` rows -> {alias: defaultPath}."""
    found = {}
    for match in re.finditer(r"^\|\s*`([^`]+)`\s*\|\s*`([^`]+)`\s*\|", text, re.MULTILINE):
        found[match.group(2)] = match.group(1)
    return found


def alias_files(types: Iterable[str]) -> list[str]:
    """The alias dump's file for each resource type: aliases/<Namespace>/<type>-<child type>.md."""
    files = []
    for resource_type in types:
        namespace, *rest = resource_type.split("/")
        if rest:
            files.append(f"aliases/{namespace}/{'-'.join(rest)}.md")
    return sorted(set(files))


def rule_types(rule: Mapping[str, Any]) -> set[str]:
    """The types a rule names, as spelled: `field: type` values and details.type."""
    types: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            keys = _ci(node)
            if keys.get("field") == "type":
                for op in ("equals", "in"):
                    value = keys.get(op)
                    types.update(v for v in (value if isinstance(value, list) else [value]) if isinstance(v, str))
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(rule["if"])
    details = rule["then"].get("details")
    if isinstance(details, Mapping) and isinstance(details.get("type"), str):
        types.add(details["type"])
    return types


def rule_alias_names(rule: Mapping[str, Any]) -> set[str]:
    """Every alias a rule reads, in its `if` and in its effect's details (existenceCondition, operations)."""
    names = set(_rule_aliases(rule["if"]))
    details = rule["then"].get("details")
    if isinstance(details, Mapping):
        names.update(_rule_aliases({k: v for k, v in details.items() if k.lower() != "deployment"}))
    return {name for name in names if "/" in name}


def fetch(into: Path) -> None:
    """Download PINNED_FILES and the MCSB initiative at COMMIT and the aliases they use from the alias dump at
    ALIASES_COMMIT, into the folder `load` reads."""
    definitions: dict[str, tuple[str, str | None]] = {}
    rules = []
    for path in PINNED_FILES:
        data = _download(raw_url("Azure/azure-policy", COMMIT, path))
        if data is None:
            raise SystemExit(f"not found at {COMMIT}: {path}")
        relative = path[len(DEFINITIONS_PREFIX):]
        target = into / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        parsed = json.loads(data)
        rule = parsed["properties"]["policyRule"]
        definitions[parsed["name"]] = (relative, effect_parameter(rule))
        rules.append(rule)
        print(f"fetched {relative}")
    initiative = _download(raw_url("Azure/azure-policy", COMMIT, MCSB_FILE))
    if initiative is None:
        raise SystemExit(f"not found at {COMMIT}: {MCSB_FILE}")
    (into / "mcsb.json").write_text(json.dumps(mcsb_entries(json.loads(initiative), definitions), indent=1) + "\n")
    needed = set().union(*(rule_alias_names(rule) for rule in rules))
    dumped: dict[str, str] = {}
    for file in alias_files(set().union(*(rule_types(rule) for rule in rules))):
        text = _download(raw_url(ALIASES_REPO, ALIASES_COMMIT, file))  # None: no such type in the dump
        table = parse_alias_markdown(text.decode()) if text else {}
        dumped.update({alias.lower(): path for alias, path in table.items()})
    aliases = {alias: dumped[alias.lower()] for alias in sorted(needed) if alias.lower() in dumped}
    for alias in sorted(needed - set(aliases)):
        print(f"warning: {alias} is not in the alias dump (an evaluation reading it is UNRESOLVED)", file=sys.stderr)
    source = (f"github.com/{ALIASES_REPO}@{ALIASES_COMMIT} (Get-AzPolicyAlias dump, aliases/*.md): alias -> "
              "defaultPath")
    (into / "aliases.json").write_text(json.dumps({"source": source, "aliases": aliases}, indent=1) + "\n")
    print(f"wrote {len(PINNED_FILES)} definitions, mcsb.json and aliases.json ({len(aliases)} aliases) to {into}")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.azure_policy", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    fetching = commands.add_parser(
        "fetch", help="download the pinned definitions, mcsb.json and aliases.json",
        description=f"Downloads PINNED_FILES and {MCSB_FILE} from github.com/Azure/azure-policy at {COMMIT}, builds "
                    f"mcsb.json from the initiative, and aliases.json from github.com/{ALIASES_REPO} at "
                    f"{ALIASES_COMMIT} (aliases/<Namespace>/<type>.md tables).")
    fetching.add_argument("--into", type=Path, required=True,
                          help="the folder to write (e.g. ../shared/azure_policies)")
    args = parser.parse_args(argv)
    fetch(args.into)
    return 0


if __name__ == "__main__":
    sys.exit(main())
