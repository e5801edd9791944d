"""Azure Policy conformance: the findings of Microsoft's built-in definitions that the platform keeps on purpose, and
the exemptions that declare them.

Enterprises judge the stacks by Azure Policy: most assign the Microsoft cloud security benchmark (MCSB) initiative,
some single definitions too. The platform meets every built-in definition for its resource types that it can meet
without breaking Azure ML (tests/test_azure_policy.py evaluates the stacks against them); each finding it keeps is a
KeptFinding below, with the documented reason, its source and what fixing it would cost. The test holds this list to
what the evaluation finds, in both directions.

The assignments belong to the enterprise, so the stack config lists them (`policy.assignments`, settings.py). For
each one that covers a kept finding, the stack declares a `Microsoft.Authorization/policyExemptions` of category
Waiver, scoped to the resource, expiring on `policy.exemptionsExpireOn`: for the MCSB initiative it names the
definition by its policyDefinitionReferenceId, for a single-definition assignment by the assignment alone. With no
assignment configured it declares none, and the policy pack reports each kept finding as an advisory violation in
`pulumi preview`.

The deployer needs two rights for that: "Beyond requiring the Microsoft.Authorization/policyExemptions/write operation
on the resource hierarchy or individual resource, the creator of an exemption must have the exempt/Action verb on the
target assignment" (Azure Policy exemption structure; docs/security.md, "Roles each actor needs").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import pulumi
from pulumi_azure_native import authorization

from infra.rules import Stack, rule
from infra.settings import PolicyAssignment, PolicySettings

EXEMPTION = "azure-native:authorization:PolicyExemption"
CATEGORY = "Waiver"  # "usually means the scope is not applicable for the policy" (policyExemptions REST spec)
BOTH = ("dev", "prod")
DEV = ("dev",)
# the limits of an exemption's texts ("displayName has a maximum length of 128 characters and description a maximum
# length of 512", Azure Policy exemption structure)
DISPLAY_NAME_LIMIT, DESCRIPTION_LIMIT = 128, 512
DEFINITION_ID = "/providers/Microsoft.Authorization/policyDefinitions/{}"

# the stack's resources a finding can be about, by their ARM type (__main__.py gives each one's IDs)
TARGETS = {
    "workspace": "Microsoft.MachineLearningServices/workspaces", "storage": "Microsoft.Storage/storageAccounts",
    "key-vault": "Microsoft.KeyVault/vaults", "registry": "Microsoft.ContainerRegistry/registries",
    "aks": "Microsoft.ContainerService/managedClusters", "app-insights": "Microsoft.Insights/components",
    "log-analytics": "Microsoft.OperationalInsights/workspaces", "vnet": "Microsoft.Network/virtualNetworks",
    "nat-public-ip": "Microsoft.Network/publicIPAddresses", "training-computes": "Microsoft.MachineLearningServices/workspaces/computes",
}  # fmt: skip


@dataclass(frozen=True)
class KeptFinding:
    definition: str  # the built-in definition's name (a GUID)
    title: str  # its displayName
    target: str  # one of TARGETS
    reason: str  # why Azure ML, or the platform's design, keeps it
    source: str  # where that reason is documented
    fix_cost: str  # what meeting the definition would take
    mcsb_reference: str | None = None  # its policyDefinitionReferenceId in the MCSB initiative (v57.56.0)
    environments: tuple[str, ...] = BOTH
    # False: the finding turns on what Azure fills in after the request (tests/test_azure_policy.py judges requests)
    in_request: bool = True

    @property
    def key(self) -> str:
        return f"{self.target}-{self.definition[:8]}"


_PUBLIC_API = ("the post-provision stage runs on GitHub-hosted runners, which reach the workspace API over the internet; "
               "the VNet reaches it through its private endpoint")  # fmt: skip
_AMPLS = "an Azure Monitor Private Link Scope, its private endpoint and five DNS zones; portal queries from outside the VNet stop"
_CMK = "a Key Vault key, an identity that may use it, and a new resource: the key is set when the resource is created"
_SHARED_KEY = ("the workspace's default datastores and compute instances authenticate with the account key; a workspace on a "
               "storage account without shared keys is preview")
_SHARED_KEY_SOURCE = "how-to-disable-local-auth-storage: \"Use of your workspace with a shared key disabled storage account is currently in preview\""
_SHARED_KEY_FIX = "systemDatastoresAuthMode identity, Storage File Data Privileged Contributor for every user and compute, a preview feature in production"
_ARM_TOKENS = "AKS pulls the deployment images with ARM-audience tokens"
_ARM_TOKENS_SOURCE = "Azure/AKS#4560 (open): registries with ARM audience tokens disabled are not supported"
_REGISTRY_PUBLIC = ("Azure ML reaches the registry as a trusted service; that it still does with public access disabled is not "
                    "documented for Azure ML")
_REGISTRY_PUBLIC_SOURCE = "how-to-secure-workspace-vnet: \"Configure the ACR for the workspace to Allow access by trusted services\""
_REGISTRY_PUBLIC_FIX = "a live test of image builds and deployments with publicNetworkAccess Disabled"
_STORAGE_PUBLIC = "the stage uploads data from GitHub-hosted runners through the firewall (an IP rule for the deploy job's length)"
_STORAGE_PUBLIC_SOURCE = "infra/firewall.py; how-to-secure-workspace-vnet (storage firewall rules)"
_MONITOR_PUBLIC_SOURCE = "private-link-configure (Azure Monitor): without a Private Link Scope, clients outside it cannot send or query"
_WORKSPACE_CMK = "Microsoft-managed keys; a CMK workspace keeps extra, billed resources (Cosmos DB, AI Search) for its metadata"
_STORAGE_CMK = "Microsoft-managed keys, with infrastructure encryption as the second layer"
_SERVICE_ENDPOINT = "a private endpoint instead, as Azure ML's secure workspace uses"
_SERVICE_ENDPOINT_FIX = "a service endpoint beside the private endpoint, for nothing"
_NO_VNET = "dev has no VNet: a NAT gateway and private endpoints cost money around the clock, and dev holds nothing it can't rebuild"
_VNET_COST = "network.isolated: true (a NAT gateway, ten private endpoints, eight private DNS zones) and a Premium registry"

KEPT: tuple[KeptFinding, ...] = (
    # MCSB: the three prod keeps (docs/security.md, "Azure Policy")
    KeptFinding("438c38d2-3772-465a-a9cc-7a6666a275ce", "Azure Machine Learning Workspaces should disable public network access",
                "workspace", _PUBLIC_API,
                "how-to-configure-private-link: with public access disabled the workspace answers only through its private endpoints",
                "self-hosted runners in the VNet for every deploy job (workspace.publicNetworkAccess: Disabled then)",
                "azureMachineLearningWorkspacesShouldDisablePublicNetworkAccess"),
    KeptFinding("a10ee784-7409-4941-b091-663697637c0f", "Configure Azure Machine Learning Workspaces to disable public network access",
                "workspace", _PUBLIC_API, "how-to-configure-private-link", "self-hosted runners in the VNet for every deploy job"),
    KeptFinding("8c6a50c6-9ffd-4ae7-986f-5fa6111f9a54", "Storage accounts should prevent shared key access", "storage",
                _SHARED_KEY, _SHARED_KEY_SOURCE, _SHARED_KEY_FIX,
                "storageAccountsShouldPreventSharedKeyAccess"),
    KeptFinding("fd9903f1-38c2-4d36-8e44-5c1c20c561e8", "Storage accounts should prevent shared key access (excluding storage accounts created by Databricks)", "storage",
                _SHARED_KEY, _SHARED_KEY_SOURCE, _SHARED_KEY_FIX,
                "storageAccountsShouldPreventSharedKeyAccessExDataBricks"),
    KeptFinding("0e246bcf-5f6f-4f87-bc6f-775d4712c7ea", "Authorized IP ranges should be defined on Kubernetes Services", "aks",
                "the deployer applies the instance types from GitHub-hosted runners, whose addresses change, and the Azure ML "
                "extension needs its control plane's ranges in both paired regions",
                "how-to-deploy-kubernetes-extension, Limitations: \"enable the Azure Machine Learning control plane IP ranges for the AKS cluster\"",
                "a fixed egress for the deployer (self-hosted runners) and the AzureMachineLearning service tag's ranges in aks.authorizedIpRanges",
                "kubernetesServiceAuthorizedIPRangesEnabledMonitoring"),
    # the definitions MCSB assigns Disabled: customer-managed keys
    KeptFinding("ba769a63-b8cc-4b2d-abf6-ac33c7204be8", "Azure Machine Learning workspaces should be encrypted with a customer-managed key",
                "workspace", _WORKSPACE_CMK, "concept-customer-managed-keys", _CMK,
                "azureMachineLearningWorkspacesShouldBeEncryptedWithACustomerManagedKeyMonitoringEffect"),
    KeptFinding("7f40cee6-e933-4d0f-a782-b96615e0f4a6", "Azure Machine Learning workspaces should be encrypted with the use of a customer-managed key",
                "workspace", _WORKSPACE_CMK, "concept-customer-managed-keys", _CMK),
    KeptFinding("6fac406b-40ca-413b-bf8e-0bf964659c25", "Storage accounts should use customer-managed key for encryption", "storage",
                _STORAGE_CMK, "customer-managed-keys-overview (Azure Storage)", _CMK,
                "storageAccountsShouldUseCustomerManagedKeyForEncryptionMonitoringEffect"),
    KeptFinding("5b9159ae-1701-4a6f-9a7a-aa9c8ddd0580", "Container registries should be encrypted with a customer-managed key", "registry",
                "Microsoft-managed keys", "container-registry-customer-managed-keys: set when the registry is created", _CMK,
                "containerRegistriesShouldBeEncryptedWithACustomerManagedKeyMonitoringEffect"),
    # outside MCSB: where Azure ML needs what the definition forbids
    KeptFinding("993c2fcd-2b29-49d2-9eb0-df2c3a730c32", "Azure Kubernetes Service Clusters should have local authentication methods disabled", "aks",
                "the Azure ML extension needs local accounts",
                "how-to-deploy-kubernetes-extension, Limitations: \"Disabling local accounts for AKS is not supported by Azure Machine Learning\"",
                "none while Azure ML serves from the cluster"),
    KeptFinding("e413671a-dd10-4cc1-a943-45b598596cb7", "Azure Machine Learning workspaces should enable V1LegacyMode to support network isolation backward compatibility", "workspace",
                "V1 legacy mode turns off the v2 API the platform runs on (online and batch endpoints, registries, schedules)",
                "the definition's own text: \"you won't have use of the new V2 features\"", "the platform's v2 jobs and endpoints"),
    KeptFinding("5f0c7d88-c7de-45b8-ac49-db49e72eaa78", "Azure Machine Learning workspaces should use user-assigned managed identity",
                "workspace", "Azure grants the system identity its own roles; soft delete and recovery need it",
                "concept-soft-delete: \"Soft-deletion and recovery is not supported when a workspace uses only user-assigned managed identity\"",
                "a user-assigned identity with every role Azure grants the system one, declared by the stack"),
    KeptFinding("040732e8-d947-40b8-95d6-854c95024bf8", "Azure Kubernetes Service Private Clusters should be enabled", "aks",
                "the deployer applies the instance types through the API server from GitHub-hosted runners",
                "infra/inference.py: the instance type is a Kubernetes object the Pulumi program creates",
                "self-hosted runners in the VNet (a private cluster's API server answers only there)"),
    KeptFinding("7d7be79c-23ba-4033-84dd-45e2a5ccdd67", "Both operating systems and data disks in Azure Kubernetes Service clusters should be encrypted by customer-managed keys", "aks",
                "platform-managed keys, with encryption at host", "azure-disk-customer-managed-keys (AKS): a disk encryption set is set at creation", _CMK),
    KeptFinding("dbbdc317-9734-4dd8-9074-993b29c69008", "Azure Kubernetes Clusters should enable Key Management Service (KMS)", "aks",
                "no Kubernetes secrets hold platform credentials: workloads sign in with managed identities", "use-kms-etcd-encryption (AKS)",
                "a Key Vault key and an identity for KMS, and its rotation"),
    KeptFinding("c7f49635-e3f0-4986-b072-90d0c7c3d4cd", "Azure Kubernetes Service clusters should be a member of an Azure Kubernetes Fleet Manager.", "aks",
                "one cluster per environment, managed by its own stack", "the definition's own text: fleets manage clusters at scale",
                "a Fleet Manager hub and its membership"),
    KeptFinding("5dc99dae-cfb2-42cc-8762-9aae02b74e27", "[Preview]: Deploy Image Integrity on Azure Kubernetes Service", "aks",
                "a preview feature that verifies image signatures; Azure ML's inference images are not signed for it",
                "the definition's own \"[Preview]\"; image-integrity (AKS): preview", "signed images, and a preview feature in production"),
    KeptFinding("42781ec6-6127-4c30-bdfa-fb423a0047d3", "Container registries should have ARM audience token authentication disabled.",
                "registry", _ARM_TOKENS, _ARM_TOKENS_SOURCE, "none until AKS supports it"),
    KeptFinding("785596ed-054f-41bc-aaec-7f3d0ba05725", "Configure container registries to disable ARM audience token authentication.",
                "registry", _ARM_TOKENS, _ARM_TOKENS_SOURCE, "none until AKS supports it"),
    KeptFinding("524b0254-c285-4903-bee6-bb8126cde579", "Container registries should have exports disabled", "registry",
                "exports can be disabled only with public network access disabled, which the registry keeps (next)",
                "data-loss-prevention (Container Registry): \"public access to the registry must also be disabled\"", _REGISTRY_PUBLIC_FIX),
    KeptFinding("0fdf0491-d080-4575-b627-ad0e843cba0f", "Public network access should be disabled for Container registries", "registry",
                _REGISTRY_PUBLIC, _REGISTRY_PUBLIC_SOURCE, _REGISTRY_PUBLIC_FIX),
    KeptFinding("a3701552-92ea-433e-9d17-33b7f1208fc9", "Configure Container registries to disable public network access", "registry",
                _REGISTRY_PUBLIC, _REGISTRY_PUBLIC_SOURCE, _REGISTRY_PUBLIC_FIX),
    KeptFinding("405c5871-3e91-4644-8a63-58e19d68ff5b", "Azure Key Vault should disable public network access", "key-vault",
                "the firewall denies the internet and lets Azure ML in as a trusted service, which applies only while public access is enabled",
                "network-security (Key Vault): trusted services bypass the firewall", "the workspace's access through the private endpoint only, untested"),
    KeptFinding("b2982f36-99f2-4db5-8eff-283140c09693", "Storage accounts should disable public network access", "storage",
                _STORAGE_PUBLIC, _STORAGE_PUBLIC_SOURCE, "self-hosted runners in the VNet"),
    KeptFinding("a06d0189-92e8-4dba-b0c4-08d7669fce7d", "Configure storage accounts to disable public network access", "storage",
                _STORAGE_PUBLIC, _STORAGE_PUBLIC_SOURCE, "self-hosted runners in the VNet"),
    KeptFinding("bf045164-79ba-4215-8f95-f8048dc1780b", "Geo-redundant storage should be enabled for Storage Accounts", "storage",
                "zone-redundant: Azure ML does not fail its default storage over to the secondary region",
                "how-to-high-availability-machine-learning: \"Azure Machine Learning doesn't support default storage-account failover using geo-redundant storage\"",
                "twice the storage price for a copy Azure ML cannot use"),
    KeptFinding("60d21c4f-21a3-4d94-85f4-b924e6aeeda4", "Storage Accounts should use a virtual network service endpoint", "storage",
                _SERVICE_ENDPOINT, "how-to-secure-workspace-vnet", _SERVICE_ENDPOINT_FIX),
    KeptFinding("ea4d6841-2173-4317-9747-ff522a45120f", "Key Vault should use a virtual network service endpoint", "key-vault",
                _SERVICE_ENDPOINT, "how-to-secure-workspace-vnet", _SERVICE_ENDPOINT_FIX),
    KeptFinding("c4857be7-912a-4c75-87e6-e30292bcdf78", "[Preview]: Container Registry should use a virtual network service endpoint", "registry",
                _SERVICE_ENDPOINT, "how-to-secure-workspace-vnet", _SERVICE_ENDPOINT_FIX),
    KeptFinding("199d5677-e4d9-4264-9465-efe1839c06bd", "Application Insights components should block non-Azure Active Directory based ingestion.",
                "app-insights", "the Azure ML inference server sends endpoint telemetry with the instrumentation key",
                "azureml-inference-server-http appinsights_client.py (AzureLogHandler(instrumentation_key=...)); no Entra ID option",
                "no endpoint telemetry (app_insights_enabled: false)"),
    KeptFinding("1bc02227-0cb6-4e11-8f53-eb0b22eab7e8", "Application Insights components should block log ingestion and querying from public networks",
                "app-insights", "managed online endpoints and the portal reach it over public networks", _MONITOR_PUBLIC_SOURCE, _AMPLS),
    KeptFinding("dddfa1af-dcd6-42f4-b5b0-e1db01e0b405", "Configure Azure Application Insights components to disable public network access for log ingestion and querying", "app-insights",
                "managed online endpoints and the portal reach it over public networks", _MONITOR_PUBLIC_SOURCE, _AMPLS),
    KeptFinding("0c4bd2e8-8872-4f37-a654-03f6f38ddc76", "Application Insights components with Private Link enabled should use Bring Your Own Storage accounts for profiler and debugger.",
                "app-insights", "no profiler and no private link on Application Insights", "profiler-bring-your-own-storage (Azure Monitor)",
                "a storage account for profiler data"),
    KeptFinding("e15effd4-2278-4c65-a0da-4d6f6d1890e2", "Log Analytics Workspaces should block non-Azure Active Directory based ingestion.",
                "log-analytics", "Defender for Containers' sensor is not documented to send without the workspace key",
                "defender-for-containers-enable: the sensor reports to the Log Analytics workspace", "a live test of the sensor with local auth off"),
    KeptFinding("6c53d030-cc64-46f0-906d-2bc061cd1334", "Log Analytics workspaces should block log ingestion and querying from public networks",
                "log-analytics", "the portal, CI and the AKS agents reach it over public networks", _MONITOR_PUBLIC_SOURCE, _AMPLS),
    KeptFinding("d3ba9c42-9dd5-441a-957c-274031c750c0", "Configure Azure Log Analytics workspaces to disable public network access for log ingestion and querying", "log-analytics",
                "the portal, CI and the AKS agents reach it over public networks", _MONITOR_PUBLIC_SOURCE, _AMPLS),
    KeptFinding("fa298e57-9444-42ba-bf04-86e8470e32c7", "Saved-queries in Azure Monitor should be saved in customer storage account for logs encryption",
                "log-analytics", "no saved queries hold secrets", "private-storage (Azure Monitor Logs)", "a linked storage account and CMK"),
    KeptFinding("fc5e4038-4584-4632-8c85-c0448d374b2c", "[Preview]: All Internet traffic should be routed via your deployed Azure Firewall",
                "vnet", "egress leaves through the NAT gateway (training) and AKS's load balancer, not an Azure Firewall; the definition "
                "looks at subnets with two or more IP configurations, which Azure adds as nodes and private endpoints join",
                "how-to-access-azureml-behind-firewall: an Azure Firewall is one way to control Azure ML's outbound traffic",
                "an Azure Firewall, its subnet and a route table on every subnet, billed per hour and per GB",
                "AzureFirewallEffect", ("prod",), in_request=False),
    KeptFinding("4c3c6c5f-0d47-4402-99b8-aa543dd8bcee", "Audit flow logs configuration for every virtual network", "vnet",
                "Network Watcher lives outside the stack (NetworkWatcherRG)", "vnet-flow-logs-overview", "a flow log, a storage account and its ingestion",
                environments=("prod",)),
    KeptFinding("fe8a9af4-a003-4c7d-b7a4-b9808310c4f8", "Public IPs and Public IP prefixes should have FirstPartyUsage tag", "nat-public-ip",
                "the NAT gateway's address is the platform's, not a Microsoft first-party service's", "the definition's own text", "none",
                environments=("prod",)),
    # dev only: what its cheaper network costs (docs/platform-engineers.md, "What each environment differs in")
    KeptFinding("a1840de2-8088-4ea8-b153-b4c723e9cb01", "Azure Kubernetes Service clusters should have Defender profile enabled", "aks",
                "Defender for Containers bills per vCore; dev holds no production data", "defender-for-containers-introduction (pricing: per vCore)",
                "aks.defender: true, and the plan's price for dev's nodes",
                "azureKubernetesServiceClustersShouldHaveSecurityProfileEnabled", DEV),
    KeptFinding("64def556-fbad-4622-930e-72d1d5589bf5", "Configure Azure Kubernetes Service clusters to enable Defender profile", "aks",
                "Defender for Containers bills per vCore; dev holds no production data", "defender-for-containers-introduction (pricing: per vCore)",
                "aks.defender: true, and the plan's price for dev's nodes", None, DEV),
    KeptFinding("0b60c0b2-2dc2-4e1c-b5c9-abbed971de53", "Key vaults should have deletion protection enabled", "key-vault",
                "dev tears down freely: a purge-protected vault holds its name for its retention after `pulumi destroy`",
                "Key Vault soft-delete overview: a purge-protected vault cannot be purged before its retention ends",
                "keyVault.purgeProtection: true, and a new name (nameGeneration) after every destroy",
                "keyVaultsShouldHavePurgeProtectionEnabledMonitoringEffect", DEV),
    *(KeptFinding(definition, title, target, _NO_VNET, "Pulumi.dev.yaml, network.isolated", _VNET_COST, reference, DEV)
      for definition, title, target, reference in (
        ("45e05259-1eb5-4f70-9574-baf73e9d219b", "Azure Machine Learning workspaces should use private link", "workspace",
         "azureMachineLearningWorkspacesShouldUsePrivateLinkMonitoringEffect"),
        ("a6abeaec-4d90-4a02-805f-6b26c4d3fbe9", "Azure Key Vaults should use private link", "key-vault",
         "privateEndpointShouldBeConfiguredForKeyVaultMonitoringEffect"),
        ("6edd7eda-6dd8-40f7-810d-67160c639cd9", "Storage accounts should use private link", "storage",
         "storageAccountShouldUseAPrivateLinkConnectionMonitoringEffect"),
        ("1604f626-4d8d-4124-8bb8-b1e5f95562de", "Storage accounts should use private link (excluding storage accounts created by Databricks)", "storage",
         "storageAccountShouldUseAPrivateLinkConnectionExDataBricksMonitoringEffect"),
        ("2a1a9cdf-e04d-429a-8416-3bfb72a1b26f", "Storage accounts should restrict network access using virtual network rules", "storage",
         "storageAccountsShouldRestrictNetworkAccessUsingVirtualNetworkRulesMonitoringEffect"),
        ("db4f9b05-5ffd-4b34-b714-3c710dbb3fd6", "Storage accounts should restrict network access using virtual network rules (excluding storage accounts created by Databricks)",
         "storage", "storageAccountsShouldRestrictNetworkAccessUsingVirtualNetworkRulesExDataBricksMonitoringEffect"),
        ("34c877ad-507e-4c82-993e-3452a6e0ad3c", "Storage accounts should restrict network access", "storage",
         "disableUnrestrictedNetworkToStorageAccountMonitoring"),
        ("7804b5c7-01dc-4723-969b-ae300cc07ff1", "Azure Machine Learning Computes should be in a virtual network", "training-computes",
         "azureMachineLearningComputesShouldBeInAVirtualNetwork"),
      )),
    *(KeptFinding(definition, title, "registry", "a Basic registry has no private endpoint or firewall (Premium features), at a tenth of the price",
                  "container-registry-skus: private link and firewall rules are Premium", "registrySku: Premium", reference, DEV)
      for definition, title, reference in (
        ("bd560fc0-3c69-498a-ae9f-aa8eb7de0e13", "Container registries should have SKUs that support Private Links", None),
        ("d0793b48-0edc-4296-a390-4c75d1bdfd71", "Container registries should not allow unrestricted network access",
         "containerRegistriesShouldNotAllowUnrestrictedNetworkAccessMonitoringEffect"),
        ("e8eef0a8-67cf-4eb4-9386-14b0e78733d4", "Container registries should use private link", "containerRegistriesShouldUsePrivateLinkMonitoringEffect"),
      )),
)


def kept(environment: str) -> list[KeptFinding]:
    return [finding for finding in KEPT if environment in finding.environments]


def exempted(finding: KeptFinding, assignment: PolicyAssignment) -> bool:
    """Whether `assignment` covers `finding`: the MCSB initiative through its reference IDs, a single definition by its ID."""
    if assignment.kind == "initiative":
        return finding.mcsb_reference is not None
    return (assignment.definition_id or "").lower().endswith(finding.definition.lower())


def exemption_name(finding: KeptFinding, assignment: PolicyAssignment) -> str:
    """Unique per resource and assignment, within the characters an exemption name takes."""
    digest = hashlib.sha256(assignment.id.lower().encode()).hexdigest()[:8]
    return f"waive-{finding.key}-{digest}"


def description(finding: KeptFinding) -> str:
    text = f"{finding.reason}. Source: {finding.source}. To fix: {finding.fix_cost}."
    return text if len(text) <= DESCRIPTION_LIMIT else text[: DESCRIPTION_LIMIT - 1] + "…"


@dataclass(frozen=True)
class PolicyExemptionsArgs:
    environment: str
    policy: PolicySettings
    # target -> the ARM IDs of the stack's resources it names (none: the stack has no such resource)
    targets: Mapping[str, Sequence[pulumi.Input[str]]]


class PolicyExemptions(pulumi.ComponentResource):
    """One Waiver exemption per kept finding, resource and configured assignment that covers it."""

    def __init__(self, name: str, args: PolicyExemptionsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("azureml-platform:infra:PolicyExemptions", name, None, opts)
        expires = f"{args.policy.exemptions_expire_on}T00:00:00Z" if args.policy.exemptions_expire_on else None
        self.exemptions = []
        for finding in kept(args.environment):
            for assignment in args.policy.assignments:
                if not exempted(finding, assignment):
                    continue
                for index, scope in enumerate(args.targets.get(finding.target, ())):
                    logical = exemption_name(finding, assignment) + (f"-{index}" if index else "")
                    self.exemptions.append(authorization.PolicyExemption(
                        logical,
                        policy_exemption_name=logical,
                        scope=scope,
                        policy_assignment_id=assignment.id,
                        policy_definition_reference_ids=[finding.mcsb_reference] if assignment.kind == "initiative" else None,
                        exemption_category=CATEGORY,
                        expires_on=expires,
                        display_name=f"Kept by azureml-platform: {finding.title}"[:DISPLAY_NAME_LIMIT],
                        description=description(finding),
                        metadata={"policyDefinitionId": DEFINITION_ID.format(finding.definition), "reason": finding.reason,
                                  "source": finding.source, "fixCost": finding.fix_cost, "managedBy": "pulumi"},
                        opts=pulumi.ResourceOptions(parent=self),
                    ))  # fmt: skip
        self.register_outputs({})


@rule("conformance", whole_stack=True)
def kept_policy_findings_are_exempt(stack: Stack) -> Iterator[str]:
    """Each Azure Policy finding the platform keeps is declared: an exemption, or this advisory in `pulumi preview`."""
    environment = stack.environment
    if environment is None:
        return
    exempt = {
        str(resource.get("metadata.policyDefinitionId", "")).rsplit("/", 1)[-1].lower() for resource in stack.of_type(EXEMPTION)
    }
    for finding in kept(environment):
        if finding.definition not in exempt:
            yield (f"{finding.target} keeps '{finding.title}' (built-in definition {finding.definition}): {finding.reason}; "
                   "no exemption declares it (policy.assignments, docs/security.md, \"Azure Policy\")")  # fmt: skip
